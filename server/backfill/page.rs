//! One `GET /v1/users` page, read with as little work as the columns need.
//!
//! A page is ~1.5 MB of JSON for 500 users, and a backfill reads hundreds of them, so the
//! parse is where the service's CPU goes. It is read in two passes and never built into a
//! `serde_json::Value` tree:
//!
//! 1. [`RawPage::split`], when the answer arrives: the body is validated as a JSON array (a
//!    truncated body fails here and is fetched again by the retry policy) and each user's
//!    object is located in it, without allocating per user;
//! 2. [`read_user`], on the blocking pool: each object is scanned once more and only the
//!    fields the typed columns and the cursor read ([`USER_COLUMN_FIELDS`]) are built; every
//!    other field is skipped unparsed. `raw` is then written as the bytes Clerk sent, never
//!    re-serialised.
//!
//! The typed columns come from the same [`user_from_clerk`] as webhooks, given just those
//! fields, so the mapping cannot drift. A user whose text holds a `\u0000` escape takes the
//! full path (a `Value`, made storable, SPEC §2 rule 3), since only that can carry it to
//! Postgres.
use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use crate::providers::clerk::{user_from_clerk, user_from_clerk_owned, USER_COLUMN_FIELDS};
use crate::providers::ParseError;
use crate::users::UserRecord;

/// A listed page as Clerk sent it: the body and where each user's object lies in it.
#[derive(Debug, Clone)]
pub struct RawPage {
    body: Bytes,
    users: Vec<Range<usize>>,
}

impl RawPage {
    /// The page, if `body` is a JSON array (else `None`: truncated, or not a list at all).
    pub fn split(body: &Bytes) -> Option<RawPage> {
        let users: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
        let base = body.as_ptr() as usize;
        let users = users
            .iter()
            .map(|u| {
                let start = u.get().as_ptr() as usize - base;
                start..start + u.get().len()
            })
            .collect();
        Some(RawPage { body: body.clone(), users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The users' JSON texts, in the order Clerk listed them.
    pub fn users(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.users.len()).map(|i| self.user(i))
    }

    /// The `i`-th user's JSON text.
    pub fn user(&self, i: usize) -> &str {
        // The spans are whole JSON values of a body serde_json read as UTF-8.
        std::str::from_utf8(&self.body[self.users[i].clone()]).unwrap_or_default()
    }
}

/// One listed user, read.
#[derive(Debug)]
pub struct ReadUser {
    /// `id` when it is a string, else empty (for the cursor).
    pub id: String,
    /// `created_at` when it is an integer, else 0 (for the cursor).
    pub created_ms: i64,
    /// The user mapped to a record (`raw` is `Null` when `raw_json` holds it), or why not.
    pub record: Result<UserRecord, ParseError>,
    /// Whether `raw` is to be written as the text Clerk sent: true unless the text holds a
    /// `\u0000` escape, in which case `record.raw` is the full object, made storable.
    pub raw_as_sent: bool,
}

/// Reads one user's object (see the module docs); the record is made storable.
pub fn read_user(text: &str) -> ReadUser {
    if text.contains("\\u0000") {
        return read_user_fully(text);
    }
    let fields = match serde_json::Deserializer::from_str(text).deserialize_map(ColumnFields) {
        Ok(fields) => fields,
        // Not an object, or a field that is not JSON we can hold: the full path says why.
        Err(_) => return read_user_fully(text),
    };
    let (id, created_ms) = cursor_fields(&fields);
    let record = user_from_clerk_fields(fields).map(|mut r| {
        r.make_storable();
        r
    });
    ReadUser { id, created_ms, record, raw_as_sent: true }
}

/// The old way, for the rare user that needs it: the whole object as a `Value`.
fn read_user_fully(text: &str) -> ReadUser {
    let user: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let (id, created_ms) = user.as_object().map(cursor_fields).unwrap_or_default();
    let record = user_from_clerk(&user).map(|mut r| {
        r.make_storable();
        r
    });
    ReadUser { id, created_ms, record, raw_as_sent: false }
}

fn cursor_fields(fields: &Map<String, Value>) -> (String, i64) {
    let id = fields.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let created_ms = fields.get("created_at").and_then(Value::as_i64).unwrap_or(0);
    (id, created_ms)
}

/// [`user_from_clerk`] on the column fields only; `raw` is left `Null` (the text is kept).
fn user_from_clerk_fields(fields: Map<String, Value>) -> Result<UserRecord, ParseError> {
    let mut record = user_from_clerk_owned(Value::Object(fields))?;
    record.raw = Value::Null;
    Ok(record)
}

/// Builds a map of the [`USER_COLUMN_FIELDS`] of an object, skipping every other field
/// unparsed. A repeated key keeps its last value, as a `Value` (and Postgres' jsonb) would.
struct ColumnFields;

impl<'de> Visitor<'de> for ColumnFields {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a user object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if USER_COLUMN_FIELDS.contains(&key.as_ref()) {
                let value: Value = map.next_value()?;
                fields.insert(key.into_owned(), value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "user_2x", "object": "user", "created_at": 1_700_000_000_123_i64,
            "updated_at": 1_700_000_000_456_i64, "last_sign_in_at": null,
            "first_name": "Ada", "last_name": "Lovelace", "username": "ada", "image_url": "https://img/x",
            "primary_email_address_id": "idn_b",
            "email_addresses": [{"id": "idn_a", "email_address": "a@x.org"}, {"id": "idn_b", "email_address": "b@x.org"}],
            "public_metadata": {"nested": [1, 2, {"deep": "yes"}]}, "banned": false
        })
    }

    #[test]
    fn the_columns_are_the_ones_the_full_parse_gives() {
        let text = serde_json::to_string(&user()).unwrap();
        let read = read_user(&text);
        let mut full = user_from_clerk(&user()).unwrap();
        full.raw = Value::Null;
        assert_eq!(read.record.unwrap(), full);
        assert!(read.raw_as_sent);
        assert_eq!((read.id.as_str(), read.created_ms), ("user_2x", 1_700_000_000_123));
    }

    #[test]
    fn a_page_is_split_into_its_users_texts() {
        let body =
            Bytes::from(format!(" [ {} ,\n{{\"id\":\"user_\\u0041\"}} ] ", serde_json::to_string(&user()).unwrap()));
        let page = RawPage::split(&body).unwrap();
        let texts: Vec<&str> = page.users().collect();
        assert_eq!(texts.len(), 2);
        assert_eq!(serde_json::from_str::<Value>(texts[0]).unwrap(), user());
        assert_eq!(texts[1], "{\"id\":\"user_\\u0041\"}");
        assert_eq!(read_user(texts[1]).id, "user_A");
        assert!(RawPage::split(&body.slice(..body.len() / 2)).is_none(), "a truncated page is refused");
        assert!(RawPage::split(&Bytes::from_static(b"{\"data\":[]}")).is_none());
    }

    #[test]
    fn escaped_keys_repeats_and_wrong_types_read_as_the_full_parse_does() {
        let read = read_user(r#"{"id":"user_1","first_name":"A","first_\u006eame":"B","updated_at":"soon"}"#);
        assert_eq!(read.id, "user_1");
        let full = user_from_clerk(&json!({"id":"user_1","first_name":"B","updated_at":"soon"}));
        assert_eq!(read.record.unwrap_err().to_string(), full.unwrap_err().to_string());
        let read = read_user(r#"{"id":"user_1","first_name":"A","first_\u006eame":"B"}"#);
        assert_eq!(read.record.unwrap().first_name.as_deref(), Some("B"));
    }

    #[test]
    fn a_nul_takes_the_full_path_and_is_made_storable() {
        let read = read_user(r#"{"id":"user_1","first_name":"a\u0000b","public_metadata":{"k\u0000":"v\u0000"}}"#);
        assert!(!read.raw_as_sent);
        let record = read.record.unwrap();
        assert_eq!(record.first_name.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(record.raw["public_metadata"], json!({"k\u{FFFD}": "v\u{FFFD}"}));
    }

    #[test]
    fn what_is_not_a_user_is_named_not_fatal() {
        for text in [r#""a string""#, "[1,2]", r#"{"first_name":"no id"}"#, r#"{"id":7,"created_at":1}"#] {
            let read = read_user(text);
            assert!(read.record.is_err(), "{text}");
        }
        assert_eq!(read_user(r#"{"id":7,"created_at":5}"#).created_ms, 5);
    }
}
