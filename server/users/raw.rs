//! `raw`: a provider's object as JSON text (SPEC §2 rule 3, "stored as given").
//!
//! A Clerk user arrives as 2–4 KB of JSON and leaves for Postgres as `jsonb` input, which is
//! JSON text again. Building a `serde_json::Value` tree of it and serialising the tree back
//! was most of the service's CPU per delivery, so the text a provider sent is kept as a
//! zero-copy slice of the received body ([`RawJson::received`]) and written as it is. Objects
//! a provider module builds itself (Auth0, Better Auth) become text once
//! ([`RawJson::from_value`]).
//!
//! The text is always one valid JSON value. A received text is stored as it is unless
//! [`RawJson::needs_rewrite`] says Postgres may refuse it — a `\u0000` escape (no NUL in
//! `jsonb`) or a number beyond `numeric`'s range, such as `1e-20000`, which serde_json reads
//! as `0.0` — and then [`RawJson::make_storable`] rebuilds it through a `Value` (NUL → U+FFFD,
//! numbers as serde_json reads them), as `users::storable` does for every other value. A text
//! that some provider path rebuilds anyway (a body only a `Value` could read) is serialised
//! once, by [`RawJson::from_value`].
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::storable::storable_json;

/// One JSON value as text (see the module docs).
#[derive(Clone)]
pub struct RawJson {
    text: Bytes,
    /// Known to be storable as written (checked by its reader, or made so).
    storable: bool,
}

/// How a NUL character is written in JSON text (the only way it can be).
const NUL_ESCAPE: &[u8] = b"\\u0000";

/// Exponent digits from which a number may be outside what Postgres' `numeric` (so `jsonb`)
/// holds: Postgres 15 refuses beyond about ±16383, earlier versions beyond ±1000.
const LONG_EXPONENT: usize = 4;

/// Fractional digits `numeric` holds at most; only a text longer than this can exceed it.
const NUMERIC_MAX_SCALE: usize = 16383;

impl RawJson {
    /// The part of `body` that `text` borrows, without a copy. `text` must be a slice of
    /// `body` that serde_json has read as one whole JSON value (a `&RawValue` of it, or the
    /// text a strict reader accepted); anything else is a bug and panics.
    pub fn received(body: &Bytes, text: &str) -> Self {
        RawJson { text: body.slice_ref(text.as_bytes()), storable: false }
    }

    /// [`RawJson::received`] for a text its reader has found storable as written (no
    /// [`RawJson::may_hold_nul`], [`RawJson::numbers_storable`]): `make_storable` has nothing
    /// to check.
    pub fn received_storable(body: &Bytes, text: &str) -> Self {
        RawJson { storable: true, ..Self::received(body, text) }
    }

    /// The text of an object built in memory.
    pub fn from_value(value: &Value) -> Self {
        RawJson { text: Bytes::from(value.to_string()), storable: false }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // Always valid UTF-8: a slice serde_json read as JSON, or its own output.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The value, parsed (for the rare reader that needs a tree: tests, the inbox).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.text).unwrap_or(Value::Null)
    }

    /// Whether Postgres may refuse the text as `jsonb`: it may hold a NUL character (a
    /// `\u0000` escape) or a number beyond `numeric`'s range (an exponent of four or more
    /// digits, or more fractional digits than `numeric` keeps). The test looks at bytes, not
    /// tokens, so a string that merely looks like one (`"\\u0000"`, `"x1e1234"`) also
    /// matches and only takes the slow path.
    pub fn needs_rewrite(text: &[u8]) -> bool {
        Self::may_hold_nul(text) || !Self::numbers_storable(text, true)
    }

    /// Whether the text may hold a NUL character (a `\u0000` escape, the only way JSON can
    /// write one).
    pub fn may_hold_nul(text: &[u8]) -> bool {
        memchr::memmem::find(text, NUL_ESCAPE).is_some()
    }

    /// Whether every number in the text is storable as written, for a reader that knows
    /// whether any float in it read as zero (`json_text::ObjectFields::float_read_as_zero`):
    /// a number Postgres refuses that serde_json accepts has an exponent below -16383 (or
    /// beyond ±1000 before Postgres 15), which reads as zero unless its mantissa has hundreds
    /// of digits, or more fractional digits than `numeric` keeps, which needs a longer text.
    /// Otherwise the text is scanned.
    pub fn numbers_storable(text: &[u8], float_read_as_zero: bool) -> bool {
        let may_refuse = float_read_as_zero || text.len() > NUMERIC_MAX_SCALE;
        !may_refuse || !(has_long_exponent(text) || has_long_digit_run(text))
    }

    /// Makes the value storable in `jsonb` (see `users::storable`): untouched unless
    /// [`RawJson::needs_rewrite`], then rebuilt through a `Value` with NUL replaced.
    pub fn make_storable(&mut self) {
        if !self.storable && Self::needs_rewrite(&self.text) {
            let mut value = self.to_value();
            storable_json(&mut value);
            *self = Self::from_value(&value);
        }
        self.storable = true;
    }
}

/// A digit followed by `e`/`E`, an optional sign and [`LONG_EXPONENT`] or more digits.
fn has_long_exponent(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'e', b'E', text).any(|at| {
        let after_digit = at > 0 && text[at - 1].is_ascii_digit();
        let rest = &text[at + 1..];
        let rest = rest.strip_prefix(b"-").or_else(|| rest.strip_prefix(b"+")).unwrap_or(rest);
        after_digit && rest.iter().take_while(|b| b.is_ascii_digit()).count() >= LONG_EXPONENT
    })
}

/// A run of more digits than `numeric` keeps after the point (never in a text shorter).
fn has_long_digit_run(text: &[u8]) -> bool {
    text.len() > NUMERIC_MAX_SCALE && text.split(|b| !b.is_ascii_digit()).any(|run| run.len() > NUMERIC_MAX_SCALE)
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

/// Equal when the texts are, or when they are the same JSON value written differently.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text || self.to_value() == other.to_value()
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

/// As the JSON text it holds, verbatim (the inbox parks changes as `jsonb` text, so a parked
/// `raw` reaches the project database exactly as a directly applied one would).
impl serde::Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = RawValue::from_string(self.as_str().to_owned()).map_err(serde::ser::Error::custom)?;
        text.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Box::<RawValue>::deserialize(deserializer)?;
        Ok(RawJson { text: Bytes::from(String::from(Box::<str>::from(text))), storable: false })
    }
}

/// Bound as `jsonb` (or `json`) input: the text itself, never re-serialised.
impl ToSql for RawJson {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]); // jsonb binary format version
        }
        out.extend_from_slice(&self.text);
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
        let body = Bytes::from_static(br#"{"k": "v\\u0000"}"#);
        let mut clean = RawJson::received(&body, std::str::from_utf8(&body).expect("UTF-8"));
        clean.make_storable();
        assert_eq!(clean, json!({"k": "v\\u0000"}), "an escaped backslash is no NUL and stays");
        let mut nul = RawJson::from_value(&json!({"k\u{0}": ["a\u{0}b"]}));
        assert!(RawJson::needs_rewrite(nul.as_str().as_bytes()));
        nul.make_storable();
        assert_eq!(nul, json!({"k\u{FFFD}": ["a\u{FFFD}b"]}));
        assert!(!RawJson::needs_rewrite(nul.as_str().as_bytes()));
    }

    #[test]
    fn it_travels_through_serde_as_its_text() {
        let text = r#"{"id": "user_1", "n": [1, 2.50, 1E2, 123456789012345678901234567890]}"#;
        let raw = RawJson::received(&Bytes::from_static(text.as_bytes()), text);
        let parked = serde_json::to_string(&vec![raw.clone()]).expect("serialises");
        assert_eq!(parked, format!("[{text}]"), "the text itself, numbers as written");
        let back: Vec<RawJson> = serde_json::from_str(&parked).expect("deserialises");
        assert_eq!(back[0].as_str(), text);
        let as_value = serde_json::to_value(&raw).expect("serialises to a Value too");
        assert_eq!(as_value["id"], "user_1");
        let from_value: RawJson = serde_json::from_value(as_value).expect("and back");
        assert_eq!(from_value.to_value()["id"], "user_1");
    }

    #[test]
    fn a_number_postgres_cannot_hold_is_rewritten_as_serde_json_reads_it() {
        for (text, stored) in [
            (r#"{"x": 1e-20000}"#, json!({"x": 0.0})),
            (r#"{"x": [0E+99999]}"#, json!({"x": [0.0]})),
            (r#"{"x": 2.5e-1000}"#, json!({"x": 0.0})),
        ] {
            assert!(RawJson::needs_rewrite(text.as_bytes()), "{text}");
            assert!(!RawJson::numbers_storable(text.as_bytes(), true), "{text}");
            assert!(RawJson::numbers_storable(text.as_bytes(), false), "a reader that saw no zero is trusted");
            let mut raw = RawJson::received(&Bytes::from_static(text.as_bytes()), text);
            raw.make_storable();
            assert_eq!(raw, stored, "{text}");
            assert!(!RawJson::needs_rewrite(raw.as_str().as_bytes()), "{text} is stored as {raw:?}");
        }
        let long = format!(r#"{{"x": 0.{}1}}"#, "0".repeat(NUMERIC_MAX_SCALE));
        assert!(RawJson::needs_rewrite(long.as_bytes()));
        let mut raw = RawJson::from_value(&serde_json::from_str(&long).expect("serde_json reads it"));
        raw.make_storable();
        assert!(!RawJson::needs_rewrite(raw.as_str().as_bytes()));
        for ordinary in [r#"{"x": 1e308, "y": 1.5E-300, "email": "e1234@x", "n": 12345}"#, r#"{"id":"user_2e1"}"#] {
            assert!(!RawJson::needs_rewrite(ordinary.as_bytes()), "{ordinary}");
        }
    }
}
