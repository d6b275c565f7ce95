//! One `GET /v1/users` page, read with as little work as the columns need.
//!
//! A page is ~1.5 MB of JSON for 500 users, and a backfill reads hundreds of them, so the
//! parse is where the service's CPU goes. It is read in two passes and never built into a
//! `serde_json::Value` tree:
//!
//! 1. [`RawPage::split`], when the answer arrives: the body is validated as a JSON array (a
//!    truncated body fails here and is fetched again by the retry policy) and each user's
//!    object is located in it, without allocating per user;
//! 2. [`read_user`], on the blocking pool: each object is read once more
//!    (`providers::json_text`) and only the fields the typed columns and the cursor read
//!    ([`USER_COLUMN_FIELDS`](crate::providers::clerk::USER_COLUMN_FIELDS)) are built; every other field is checked, not built. `raw` is
//!    the user's slice of the page (no copy), written as the bytes Clerk sent.
//!
//! The user is read by the same [`read_user_text`] as webhooks, so the mapping cannot
//! drift. A user whose text Postgres could not store as written (a `\u0000` escape, a number
//! `numeric` refuses) takes the full path (a `Value`, made storable, SPEC §2 rule 3).
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::ops::Range;

use crate::providers::clerk::read_user_text;
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
    /// The user mapped to a record, made storable (`raw` is its text in the page unless
    /// Postgres could not store that as written: a NUL, a number `numeric` refuses), or why
    /// not.
    pub record: Result<UserRecord, ParseError>,
}

/// Reads the `i`-th user of `page` (see the module docs).
pub fn read_user(page: &RawPage, i: usize) -> ReadUser {
    let (fields, record) = read_user_text(&page.body, page.user(i));
    let (id, created_ms) = cursor_fields(&fields);
    let record = record.map(|mut r| {
        r.make_storable();
        r
    });
    ReadUser { id, created_ms, record }
}

fn cursor_fields(fields: &Map<String, Value>) -> (String, i64) {
    let id = fields.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let created_ms = fields.get("created_at").and_then(Value::as_i64).unwrap_or(0);
    (id, created_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::clerk::user_from_clerk;
    use crate::users::RawJson;
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

    /// Reads `text` as the one user of a page.
    fn read(text: &str) -> ReadUser {
        let page = RawPage::split(&Bytes::from(format!("[{text}]"))).expect("a page");
        read_user(&page, 0)
    }

    #[test]
    fn the_columns_are_the_ones_the_full_parse_gives_and_raw_is_the_text_as_sent() {
        let text = serde_json::to_string_pretty(&user()).unwrap();
        let read = read(&text);
        let record = read.record.unwrap();
        assert_eq!(record, user_from_clerk(&user()).unwrap());
        assert_eq!(record.raw.as_str(), text, "raw is the page's bytes, not re-serialised");
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
        assert_eq!(read_user(&page, 1).id, "user_A");
        assert!(RawPage::split(&body.slice(..body.len() / 2)).is_none(), "a truncated page is refused");
        assert!(RawPage::split(&Bytes::from_static(b"{\"data\":[]}")).is_none());
    }

    #[test]
    fn escaped_keys_repeats_and_wrong_types_read_as_the_full_parse_does() {
        let read_back = read(r#"{"id":"user_1","first_name":"A","first_\u006eame":"B","updated_at":"soon"}"#);
        assert_eq!(read_back.id, "user_1");
        let full = user_from_clerk(&json!({"id":"user_1","first_name":"B","updated_at":"soon"}));
        assert_eq!(read_back.record.unwrap_err().to_string(), full.unwrap_err().to_string());
        let read_back = read(r#"{"id":"user_1","first_name":"A","first_\u006eame":"B"}"#);
        assert_eq!(read_back.record.unwrap().first_name.as_deref(), Some("B"));
    }

    #[test]
    fn a_nul_takes_the_full_path_and_is_made_storable() {
        let text = r#"{"id":"user_1","first_name":"a\u0000b","public_metadata":{"k\u0000":"v\u0000"}}"#;
        let record = read(text).record.unwrap();
        assert_eq!(record.first_name.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(record.raw.to_value()["public_metadata"], json!({"k\u{FFFD}": "v\u{FFFD}"}));
        assert!(!RawJson::needs_rewrite(record.raw.as_str().as_bytes()));
    }

    #[test]
    fn what_is_not_a_user_is_named_not_fatal() {
        for text in [r#""a string""#, "[1,2]", r#"{"first_name":"no id"}"#, r#"{"id":7,"created_at":1}"#] {
            assert!(read(text).record.is_err(), "{text}");
        }
        assert_eq!(read(r#"{"id":7,"created_at":5}"#).created_ms, 5);
    }

    #[test]
    fn a_user_with_what_a_value_refuses_is_named_not_stored() {
        // A lone surrogate passes the page split (which only locates users) but not the
        // read, which is as strict as a `Value`: the user is skipped with a reason, never
        // sent to Postgres (which would refuse it).
        let read_back = read(r#"{"id":"user_1","created_at":9,"public_metadata":{"k":"\ud800"}}"#);
        assert!(read_back.record.is_err());
    }
}
