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
    /// What is known of the text's storability (so `make_storable` checks nothing twice).
    known: Known,
}

/// What is known to be storable in a [`RawJson`]'s text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Nothing: a received text no reader has checked.
    Nothing,
    /// Its numbers (serde_json's own output: at most 17 digits, exponents within ±324).
    Numbers,
    /// All of it: checked by its reader, made storable, or read back from `jsonb`.
    Storable,
}

/// How a NUL character is written in JSON text (the only way it can be).
const NUL_ESCAPE: &[u8] = b"\\u0000";

/// Digits after the point Postgres' `numeric` (so `jsonb`) keeps at most.
const NUMERIC_MAX_SCALE: i64 = 16383;

/// Digits before the point `numeric` keeps at most.
const NUMERIC_MAX_WEIGHT: i64 = 131_072;

/// The largest exponent `numeric` read before Postgres 15.
const OLD_MAX_EXPONENT: i64 = 1000;

/// Below this length a text cannot hold a number serde_json reads as nonzero and `numeric`
/// refuses (see [`RawJson::numbers_storable`]).
const NONZERO_REFUSED_LEN: usize = 16_000;

impl RawJson {
    /// The part of `body` that `text` borrows, without a copy. `text` must be a slice of
    /// `body` that serde_json has read as one whole JSON value (a `&RawValue` of it, or the
    /// text a strict reader accepted); anything else is a bug and panics.
    pub fn received(body: &Bytes, text: &str) -> Self {
        RawJson { text: body.slice_ref(text.as_bytes()), known: Known::Nothing }
    }

    /// [`RawJson::received`] for a text its reader has found storable as written (no
    /// [`RawJson::may_hold_nul`], [`RawJson::numbers_storable`]): `make_storable` has nothing
    /// to check.
    pub fn received_storable(body: &Bytes, text: &str) -> Self {
        RawJson { known: Known::Storable, ..Self::received(body, text) }
    }

    /// The text of an object built in memory.
    pub fn from_value(value: &Value) -> Self {
        RawJson { text: Bytes::from(value.to_string()), known: Known::Numbers }
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
    /// `\u0000` escape) or a number `numeric` cannot hold as written (see
    /// [`RawJson::numbers_storable`]). The test looks at bytes, not tokens, so a string that
    /// merely looks like one (`"\\u0000"`, `"x1e1234"`) also matches and only takes the slow
    /// path.
    pub fn needs_rewrite(text: &[u8]) -> bool {
        Self::may_hold_nul(text) || has_unstorable_number(text)
    }

    /// Whether the text may hold a NUL character (a `\u0000` escape, the only way JSON can
    /// write one).
    pub fn may_hold_nul(text: &[u8]) -> bool {
        memchr::memmem::find(text, NUL_ESCAPE).is_some()
    }

    /// Whether every number in the text is storable as written, for a reader that knows
    /// whether any float in it read as zero (`json_text::ObjectFields::float_read_as_zero`).
    ///
    /// Postgres' `numeric` keeps at most 16383 digits after the point, so it refuses a
    /// number whose fractional digits minus its exponent exceed that (`1e-20000`); serde_json
    /// reads any such number as zero unless it has more than ~16,060 digits, since the
    /// smallest nonzero `f64` is about 4.9e-324. So only a text with a float read as zero, or
    /// a text longer than 16,000 bytes, can hold one, and only those are scanned. (Before
    /// Postgres 15, `numeric` also refused any exponent beyond ±1000; the scan rewrites those
    /// too, but a nonzero one — a mantissa of hundreds of digits — in a short text is not
    /// looked for.)
    pub fn numbers_storable(text: &[u8], float_read_as_zero: bool) -> bool {
        let may_refuse = float_read_as_zero || text.len() > NONZERO_REFUSED_LEN;
        !may_refuse || !has_unstorable_number(text)
    }

    /// Makes the value storable in `jsonb` (see `users::storable`): untouched unless
    /// [`RawJson::needs_rewrite`], then rebuilt through a `Value` with NUL replaced.
    pub fn make_storable(&mut self) {
        let rewrite = match self.known {
            Known::Nothing => Self::needs_rewrite(&self.text),
            Known::Numbers => Self::may_hold_nul(&self.text),
            Known::Storable => false,
        };
        if rewrite {
            let mut value = self.to_value();
            storable_json(&mut value);
            *self = Self::from_value(&value);
        }
        self.known = Known::Storable;
    }
}

/// Whether a number in `text` is one Postgres' `numeric` refuses as written: more than
/// [`NUMERIC_MAX_SCALE`] digits after the point once the exponent is applied, more than
/// [`NUMERIC_MAX_WEIGHT`] before it, or an exponent beyond ±[`OLD_MAX_EXPONENT`] (refused
/// before Postgres 15). Every digit run is taken for a number, strings included: a false
/// match only takes the slow path.
fn has_unstorable_number(text: &[u8]) -> bool {
    let digits = |from: usize| text[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let int = digits(i);
        i += int;
        let mut frac = 0;
        if text.get(i) == Some(&b'.') {
            frac = digits(i + 1);
            i += 1 + frac;
        }
        let mut exponent: i64 = 0;
        if matches!(text.get(i), Some(b'e' | b'E')) {
            let signed = matches!(text.get(i + 1), Some(b'-' | b'+'));
            let start = i + 1 + usize::from(signed);
            let n = digits(start);
            if n > 0 {
                exponent =
                    text[start..start + n].iter().fold(0i64, |e, d| (e * 10 + i64::from(d - b'0')).min(1_000_000_000));
                if text[i + 1] == b'-' {
                    exponent = -exponent;
                }
                i = start + n;
            }
        }
        let (int, frac) = (int as i64, frac as i64);
        if frac - exponent > NUMERIC_MAX_SCALE
            || int + exponent > NUMERIC_MAX_WEIGHT
            || exponent.abs() > OLD_MAX_EXPONENT
        {
            return true;
        }
    }
    false
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
        // Read back from the inbox: Postgres accepted (and printed) it as `jsonb`.
        Ok(RawJson { text: Bytes::from(String::from(Box::<str>::from(text))), known: Known::Storable })
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
            (r#"{"x": 2.5e-1001}"#, json!({"x": 0.0})), // refused before Postgres 15
        ] {
            assert!(RawJson::needs_rewrite(text.as_bytes()), "{text}");
            assert!(!RawJson::numbers_storable(text.as_bytes(), true), "{text}");
            assert!(RawJson::numbers_storable(text.as_bytes(), false), "a reader that saw no zero is trusted");
            let mut raw = RawJson::received(&Bytes::from_static(text.as_bytes()), text);
            raw.make_storable();
            assert_eq!(raw, stored, "{text}");
            assert!(!RawJson::needs_rewrite(raw.as_str().as_bytes()), "{text} is stored as {raw:?}");
        }
        let long = format!(r#"{{"x": 0.{}1}}"#, "0".repeat(NUMERIC_MAX_SCALE as usize));
        assert!(RawJson::needs_rewrite(long.as_bytes()));
        let mut raw = RawJson::from_value(&serde_json::from_str(&long).expect("serde_json reads it"));
        raw.make_storable();
        assert!(!RawJson::needs_rewrite(raw.as_str().as_bytes()));
        // Nonzero as f64 yet refused (16384 digits after the point): only in a long text.
        let nonzero = format!(r#"{{"x": 0.{}e-1}}"#, "1".repeat(NUMERIC_MAX_SCALE as usize));
        assert!(!RawJson::numbers_storable(nonzero.as_bytes(), false), "a long text is scanned");
        let fits = format!(r#"{{"x": 0.{}e1}}"#, "1".repeat(NUMERIC_MAX_SCALE as usize));
        assert!(RawJson::numbers_storable(fits.as_bytes(), false));
        for ordinary in [r#"{"x": 1e308, "y": 1.5E-300, "email": "e1234@x", "n": 12345}"#, r#"{"id":"user_2e1"}"#] {
            assert!(!RawJson::needs_rewrite(ordinary.as_bytes()), "{ordinary}");
        }
    }
}
