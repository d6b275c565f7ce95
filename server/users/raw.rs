//! `raw`: a provider's object as JSON text (SPEC §2 rule 3, "stored as given").
//!
//! A Clerk user arrives as 2–4 KB of JSON and leaves for Postgres as `jsonb` input, which is
//! JSON text again. Building a `serde_json::Value` tree of it and serialising the tree back
//! was most of the service's CPU per delivery, so the text a provider sent is kept as a
//! zero-copy slice of the received body ([`RawJson::received`]) and written as it is. Objects
//! a provider module builds itself (Auth0, Better Auth) become text once
//! ([`RawJson::from_value`]).
//!
//! The text is always one valid JSON value; [`RawJson::make_storable`] is the only change it
//! ever sees (a `\u0000` escape, which Postgres cannot store, takes the `Value` path of
//! `users::storable`).
use bytes::Bytes;
use serde_json::Value;
use std::fmt;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::storable::storable_json;

/// One JSON value as text (see the module docs).
#[derive(Clone)]
pub struct RawJson(Bytes);

/// How a NUL character is written in JSON text (the only way it can be).
const NUL_ESCAPE: &[u8] = b"\\u0000";

impl RawJson {
    /// The part of `body` that `text` borrows, without a copy. `text` must be a slice of
    /// `body` that serde_json has read as one whole JSON value (a `&RawValue` of it, or the
    /// text a strict reader accepted); anything else is a bug and panics.
    pub fn received(body: &Bytes, text: &str) -> Self {
        RawJson(body.slice_ref(text.as_bytes()))
    }

    /// The text of an object built in memory.
    pub fn from_value(value: &Value) -> Self {
        RawJson(Bytes::from(value.to_string()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // Always valid UTF-8: a slice serde_json read as JSON, or its own output.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The value, parsed (for the rare reader that needs a tree: tests, the inbox).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// Whether the text may hold a NUL character (a `\u0000` escape; an escaped backslash
    /// followed by `u0000` also matches, and merely takes the slow path).
    pub fn may_hold_nul(text: &[u8]) -> bool {
        memchr::memmem::find(text, NUL_ESCAPE).is_some()
    }

    /// Makes the value storable in `jsonb` (see `users::storable`): untouched unless it holds
    /// a NUL, which is replaced through a `Value`.
    pub fn make_storable(&mut self) {
        if Self::may_hold_nul(&self.0) {
            let mut value = self.to_value();
            storable_json(&mut value);
            *self = Self::from_value(&value);
        }
    }
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

/// Equal when the texts are, or when they are the same JSON value written differently.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for RawJson {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the JSON value it holds (the inbox parks changes as `jsonb`).
impl serde::Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(RawJson::from)
    }
}

/// Bound as `jsonb` (or `json`) input: the text itself, never re-serialised.
impl ToSql for RawJson {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]); // jsonb binary format version
        }
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_received_slice_is_the_text_as_sent() {
        let body = Bytes::from_static(br#"{"data": {"b": 1,  "a": [true]}, "type": "x"}"#);
        let envelope: std::collections::BTreeMap<&str, &serde_json::value::RawValue> =
            serde_json::from_slice(&body).expect("an object");
        let raw = RawJson::received(&body, envelope["data"].get());
        assert_eq!(raw.as_str(), r#"{"b": 1,  "a": [true]}"#);
        assert_eq!(raw, json!({"a": [true], "b": 1}));
        assert_eq!(raw, RawJson::from_value(&json!({"a": [true], "b": 1})), "equal as values");
    }

    #[test]
    fn a_nul_is_replaced_and_nothing_else_changes() {
        let mut clean = RawJson::received(&Bytes::from_static(br#"{"k": "v\\u0000"}"#), r#"{"k": "v\\u0000"}"#);
        clean.make_storable();
        assert_eq!(clean, json!({"k": "v\\u0000"}), "an escaped backslash is no NUL and stays");
        let mut nul = RawJson::from_value(&json!({"k\u{0}": ["a\u{0}b"]}));
        assert!(RawJson::may_hold_nul(nul.as_str().as_bytes()));
        nul.make_storable();
        assert_eq!(nul, json!({"k\u{FFFD}": ["a\u{FFFD}b"]}));
        assert!(!RawJson::may_hold_nul(nul.as_str().as_bytes()));
    }

    #[test]
    fn it_travels_through_serde_as_its_value() {
        let raw = RawJson::from_value(&json!({"id": "user_1", "n": [1, 2.5]}));
        let parked = serde_json::to_value(&raw).expect("serialises");
        assert_eq!(parked, json!({"id": "user_1", "n": [1, 2.5]}));
        let back: RawJson = serde_json::from_value(parked).expect("deserialises");
        assert_eq!(back, raw);
    }
}
