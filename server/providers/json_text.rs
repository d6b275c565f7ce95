//! Reading a few fields of a JSON object without building the rest of it.
//!
//! A Clerk user is 2–4 KB of JSON of which the typed columns read ten fields; a backfill page
//! is 500 of them. Building a `serde_json::Value` tree of everything (and dropping it) was
//! most of the service's CPU per delivery, so the provider modules read objects with
//! [`read_object`]: the wanted fields are built as `Value`s, one field may be kept as its
//! text (the `raw` to store), and every other field is read and checked, not built.
//!
//! The check of the skipped fields is as strict as building a `Value` would be (serde_json's
//! own parser visits every string, escape and number: a lone surrogate or a number out of
//! range fails the read just as it fails `serde_json::from_slice::<Value>`). The kept field
//! is only delimited, not checked: a caller that stores it reads it again with
//! [`read_object`] (as the Clerk module does), which also gives it a fresh nesting budget —
//! so an object nested nearly 128 deep inside an envelope is read here and refused by a
//! `Value` of the whole body, a difference Postgres does not mind. A repeated key keeps its
//! last value, as a `Value` (and Postgres' `jsonb`) would.
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// What [`read_object`] read: the wanted fields, and the kept field's text if it was there.
#[derive(Debug, Default)]
pub struct ObjectFields<'a> {
    pub fields: Map<String, Value>,
    pub kept: Option<&'a RawValue>,
    /// Whether a number with a fraction or an exponent (or a `-0`) read as zero anywhere
    /// outside the kept field, repeated keys included: a `0.0`, or a `1e-20000` that
    /// serde_json rounds down and Postgres' `numeric` refuses as written. Only then can such a number be in the text, so only then does a
    /// caller storing the text need `RawJson::needs_rewrite`'s scan.
    pub float_read_as_zero: bool,
}

/// Reads `text` as one JSON object (nothing may follow it): the fields named in `wanted` are
/// built, the field named `keep` (if any) is kept as its text, the rest is checked and
/// skipped. `None` when `text` is not a JSON object (callers take their `Value` path to say
/// exactly why).
pub fn read_object<'a>(text: &'a [u8], wanted: &[&str], keep: Option<&str>) -> Option<ObjectFields<'a>> {
    let zero = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(text);
    let mut fields = de.deserialize_map(FieldsVisitor { wanted, keep, zero: Checked(&zero) }).ok()?;
    de.end().ok()?;
    fields.float_read_as_zero = zero.get();
    Some(fields)
}

fn holds_float_zero(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64() && n.as_f64() == Some(0.0),
        Value::Array(items) => items.iter().any(holds_float_zero),
        Value::Object(map) => map.values().any(holds_float_zero),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

struct FieldsVisitor<'w> {
    wanted: &'w [&'w str],
    keep: Option<&'w str>,
    zero: Checked<'w>,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = ObjectFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut read = ObjectFields::default();
        while let Some(key) = map.next_key_seed(Key)? {
            if self.keep == Some(key.as_ref()) {
                read.kept = Some(map.next_value()?);
            } else if self.wanted.contains(&key.as_ref()) {
                let value: Value = map.next_value()?;
                // Checked as read: a repeated key replaces its value below.
                if holds_float_zero(&value) {
                    self.zero.0.set(true);
                }
                read.fields.insert(key.into_owned(), value);
            } else {
                map.next_value_seed(self.zero)?;
            }
        }
        Ok(read)
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// Any JSON value, read as strictly as a `Value` is and not built (serde's `IgnoredAny`
/// would let serde_json skip strings and numbers without checking them); notes a float read
/// as zero (see [`ObjectFields::float_read_as_zero`]).
#[derive(Clone, Copy)]
struct Checked<'c>(&'c Cell<bool>);

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        if v == 0.0 {
            self.0.set(true);
        }
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read<'a>(text: &'a str, wanted: &[&str], keep: Option<&str>) -> Option<ObjectFields<'a>> {
        read_object(text.as_bytes(), wanted, keep)
    }

    #[test]
    fn wanted_fields_are_built_the_kept_one_is_text_and_repeats_keep_the_last() {
        let text =
            r#"{"a": 1, "skip": {"x": [1, "y", null, true, 2.5]}, "data": {"k" : [1]}, "b": "x", "\u0062": "y"}"#;
        let got = read(text, &["a", "b"], Some("data")).expect("an object");
        assert_eq!(Value::Object(got.fields), json!({"a": 1, "b": "y"}));
        assert_eq!(got.kept.expect("kept").get(), r#"{"k" : [1]}"#);
        assert!(read(text, &[], None).expect("an object").kept.is_none());
    }

    #[test]
    fn it_refuses_whatever_a_value_refuses() {
        let refused = [
            r#"{"skip": "\ud800"}"#, // a lone surrogate in a skipped string
            r#"{"skip": 1e400}"#,    // a number out of range in a skipped field
            r#"{"\udc00": 1}"#,      // in a key
            r#"{"skip": [1, 2}"#,    // broken
            r#"{"a": 1} trailing"#,  // something after the object
            r#"[1, 2]"#,             // not an object
            r#""text""#,
        ];
        for text in refused {
            assert!(serde_json::from_str::<Value>(text).map_or(true, |v| !v.is_object()), "{text}");
            assert!(read(text, &["a"], Some("data")).is_none(), "{text}");
        }
        let nested_deep = format!("{{\"skip\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&nested_deep).is_err());
        assert!(read(&nested_deep, &[], None).is_none(), "the same depth limit");
    }

    #[test]
    fn a_float_read_as_zero_is_noted_wherever_it_is_outside_the_kept_field() {
        for (text, zero) in [
            (r#"{"skip": {"x": [1e-20000]}}"#, true),
            (r#"{"a": [{"b": 0.0}]}"#, true),
            (r#"{"skip": -0E+5}"#, true),
            (r#"{"a": [1e-20000], "a": "replaced"}"#, true),
            (r#"{"a": 0, "skip": [0, 1.5, 1e-300], "data": {"x": 1e-20000}}"#, false),
        ] {
            assert_eq!(read(text, &["a"], Some("data")).expect("an object").float_read_as_zero, zero, "{text}");
        }
    }
}
