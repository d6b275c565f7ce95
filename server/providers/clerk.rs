//! Clerk payload parsing: turns an authenticated Clerk webhook body, or a user object from the
//! Clerk Backend API, into provider-neutral [`UserChange`]s (SPEC §2 column mapping, §4 events).
//!
//! Handled events: `user.created` / `user.updated` (upsert), `user.deleted` (soft delete at
//! the envelope `timestamp`), `session.created` whose `data.user` is a full user (upsert).
//! Every other type is acknowledged as unhandled. `raw` is the provider's object as
//! received: the text of the user in the body (see `users::RawJson`), rebuilt only when a
//! body needs the `Value` path or Postgres could not store the text.
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;

use super::fields::{optional_epoch_ms, optional_string};
use super::timestamps::{clerk_envelope_timestamp, json_integer};
use super::{json_text, svix, Delivery, ParseError, Provider, VerifyError};
use crate::pb;
use crate::users::{RawJson, UserChange, UserDeletion, UserRecord};

/// The rows of Clerk users in `capydb_auth.users` (see [`Provider::table_rows`]).
const CLERK_TABLE_ROWS: &str = "id LIKE 'user\\_%' AND raw->>'object' = 'user'";

/// Clerk (SPEC §1): webhooks signed by Svix (see [`svix`]), and a Backend API the service
/// backfills from (`backfill/`).
pub struct Clerk;

impl Provider for Clerk {
    fn name(&self) -> &'static str {
        "clerk"
    }

    fn path_segment(&self) -> &'static str {
        "clerk"
    }

    fn proto(&self) -> pb::Provider {
        pb::Provider::Clerk
    }

    fn supports_backfill(&self) -> bool {
        true
    }

    /// Clerk user objects: ids `user_…` and `raw.object = "user"` (delete events carry both).
    fn table_rows(&self) -> &'static str {
        CLERK_TABLE_ROWS
    }

    /// `whsec_` followed by non-empty standard base64 (the Svix key).
    fn check_webhook_secret(&self, secret: &str) -> Result<(), String> {
        let key = secret.strip_prefix(svix::SECRET_PREFIX).map(|b| BASE64.decode(b));
        match key {
            Some(Ok(key)) if !key.is_empty() => Ok(()),
            _ => Err("a Clerk webhook signing secret is whsec_ followed by base64".into()),
        }
    }

    fn verify(
        &self,
        secret: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<String>, VerifyError> {
        svix::verify(secret, headers, body, now).map(Some)
    }

    fn parse(&self, body: &Bytes, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
        parse_event(body, received_at)
    }
}

pub const USER_CREATED: &str = "user.created";
pub const USER_UPDATED: &str = "user.updated";
pub const USER_DELETED: &str = "user.deleted";
pub const SESSION_CREATED: &str = "session.created";

/// Parses an authenticated Clerk event body.
///
/// The body must be a JSON object with a string `type` and an object `data`
/// ([`ParseError::Field`] `"type"` / `"data"` otherwise; [`ParseError::NotJson`] when it is
/// not JSON). `received_at` is the `deleted_at` of a `user.deleted` without a timestamp.
///
/// The envelope and the user are read with [`json_text::read_object`]: only the fields the
/// columns need are built, and a user's `raw` is its text in `body` (no copy). A body that
/// reader refuses takes the `Value` path, which says why.
pub fn parse_event(body: &Bytes, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    parse_event_text(body, received_at).unwrap_or_else(|| parse_event_value(body, received_at))
}

/// [`parse_event`] by [`json_text::read_object`]; `None` for a body it cannot take as a whole
/// (not JSON, not an envelope, a user that cannot be mapped): the `Value` path then says why.
fn parse_event_text(body: &Bytes, received_at: DateTime<Utc>) -> Option<Result<Delivery, ParseError>> {
    let envelope = json_text::read_object(body, &["type", "timestamp"], Some("data"))?;
    let Some(Value::String(event_type)) = envelope.fields.get("type") else { return None };
    let data = envelope.kept.map(RawValue::get).filter(|d| d.starts_with('{'))?;
    let change = match event_type.as_str() {
        USER_CREATED | USER_UPDATED => Some(UserChange::Upsert(user_from_clerk_text(body, data).ok()?)),
        USER_DELETED => {
            let fields: Map<String, Value> = serde_json::from_str(data).ok()?;
            Some(UserChange::Delete(
                deletion(&envelope.fields, &fields, RawJson::received(body, data), received_at).ok()?,
            ))
        }
        SESSION_CREATED => {
            // The session's other fields are checked as strictly as a `Value` would be.
            let user = json_text::read_object(data.as_bytes(), &[], Some("user"))?.kept.map(RawValue::get);
            match user {
                Some(user) if user.starts_with('{') => {
                    // A user only a `Value` can make storable takes the `Value` path.
                    let read = read_storable(user, &SESSION_USER_FIELDS)?;
                    if is_full_user(&read.fields) {
                        Some(UserChange::Upsert(
                            record_with(&read.fields, RawJson::received_storable(body, user)).ok()?,
                        ))
                    } else {
                        None
                    }
                }
                Some(_) => return None,
                None => None,
            }
        }
        _ => {
            json_text::read_object(data.as_bytes(), &[], None)?;
            None
        }
    };
    Some(Ok(match change {
        Some(change) => Delivery::handled(event_type.clone(), vec![change]),
        None => Delivery::unhandled(event_type.clone()),
    }))
}

/// [`parse_event`] on a `Value` tree: for the bodies the text reader refuses, to name the
/// error exactly (and to parse the rare body it refuses that a `Value` takes).
fn parse_event_value(body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let envelope: Value = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(mut envelope) = envelope else {
        return Err(ParseError::Field("type"));
    };
    let event_type = match envelope.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(ParseError::Field("type")),
    };
    let data = match envelope.remove("data") {
        Some(Value::Object(data)) => data,
        _ => return Err(ParseError::Field("data")),
    };

    let change = match event_type.as_str() {
        USER_CREATED | USER_UPDATED => Some(UserChange::Upsert(user_from_clerk(&Value::Object(data))?)),
        USER_DELETED => {
            let raw = RawJson::from_value(&Value::Object(data.clone()));
            Some(UserChange::Delete(deletion(&envelope, &data, raw, received_at)?))
        }
        SESSION_CREATED => session_user(data)?.map(UserChange::Upsert),
        _ => None,
    };
    Ok(match change {
        Some(change) => Delivery::handled(event_type, vec![change]),
        None => Delivery::unhandled(event_type),
    })
}

/// The top-level fields of a Clerk user object that [`user_from_clerk`] reads (the typed
/// columns); everything else only travels in `raw`. The backfill parses just these (keep the
/// list in step with `record_with`; the tests compare the text and `Value` paths).
pub const USER_COLUMN_FIELDS: [&str; 10] = [
    "id",
    "primary_email_address_id",
    "email_addresses",
    "first_name",
    "last_name",
    "username",
    "image_url",
    "created_at",
    "updated_at",
    "last_sign_in_at",
];

/// Reads `wanted` of the object `text` when the text is storable as written (no NUL, no
/// number Postgres refuses; see `RawJson`); `None` sends the caller to its `Value` path.
fn read_storable<'a>(text: &'a str, wanted: &[&str]) -> Option<json_text::ObjectFields<'a>> {
    if RawJson::may_hold_nul(text.as_bytes()) {
        return None;
    }
    json_text::read_object(text.as_bytes(), wanted, None)
        .filter(|read| RawJson::numbers_storable(text.as_bytes(), read.float_read_as_zero))
}

/// What a `session.created` reads of its `user`: the columns, and `object` to tell a full
/// user from a stub.
const SESSION_USER_FIELDS: [&str; USER_COLUMN_FIELDS.len() + 1] = {
    let mut fields = ["object"; USER_COLUMN_FIELDS.len() + 1];
    let mut i = 0;
    while i < USER_COLUMN_FIELDS.len() {
        fields[i + 1] = USER_COLUMN_FIELDS[i];
        i += 1;
    }
    fields
};

/// Maps one Clerk user object (a webhook `data`, or an element of `GET /v1/users`) to a
/// [`UserRecord`] per the SPEC §2 Clerk column; `raw` is a copy of `user`.
///
/// Errors name the offending field as `data.<field>`: `data.id` when there is no non-empty
/// string `id`, or a typed column whose value has the wrong JSON type.
pub fn user_from_clerk(user: &Value) -> Result<UserRecord, ParseError> {
    let Value::Object(fields) = user else {
        return Err(ParseError::Field("data"));
    };
    record_with(fields, RawJson::from_value(user))
}

/// Maps a Clerk user object given as its text, a slice of `body` (a webhook body or a
/// listed page): the columns are built from [`USER_COLUMN_FIELDS`] alone and `raw` is the
/// text itself. A text the field reader refuses, or one Postgres could not store as written
/// (a `\u0000` escape, a number beyond `numeric`; only a `Value` can make those storable),
/// takes [`user_from_clerk`]'s path.
pub fn user_from_clerk_text(body: &Bytes, text: &str) -> Result<UserRecord, ParseError> {
    read_user_text(body, text).1
}

/// [`user_from_clerk_text`], and the user's [`USER_COLUMN_FIELDS`] as read (empty when the
/// text is not an object), for a caller that needs them even when the user cannot be
/// mapped (the backfill's cursor).
pub fn read_user_text(body: &Bytes, text: &str) -> (Map<String, Value>, Result<UserRecord, ParseError>) {
    match read_storable(text, &USER_COLUMN_FIELDS) {
        Some(read) => {
            let record = record_with(&read.fields, RawJson::received_storable(body, text));
            (read.fields, record)
        }
        None => {
            let user: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let record = user_from_clerk(&user);
            let mut fields = match user {
                Value::Object(fields) => fields,
                _ => Map::new(),
            };
            fields.retain(|k, _| USER_COLUMN_FIELDS.contains(&k.as_str()));
            (fields, record)
        }
    }
}

/// The record of a user object whose column fields are `fields` and whose text is `raw`.
fn record_with(fields: &Map<String, Value>, raw: RawJson) -> Result<UserRecord, ParseError> {
    let id = required_id(fields)?;
    let email = primary_email(fields)?;
    let first_name = optional_string(fields, "first_name", "data.first_name")?;
    let last_name = optional_string(fields, "last_name", "data.last_name")?;
    let username = optional_string(fields, "username", "data.username")?;
    let image_url = optional_string(fields, "image_url", "data.image_url")?;
    let created_at = optional_epoch_ms(fields, "created_at", "data.created_at")?;
    let updated_at = optional_epoch_ms(fields, "updated_at", "data.updated_at")?;
    let last_sign_in_at = optional_epoch_ms(fields, "last_sign_in_at", "data.last_sign_in_at")?;
    Ok(UserRecord {
        id,
        email,
        first_name,
        last_name,
        username,
        image_url,
        created_at,
        updated_at,
        last_sign_in_at,
        raw,
    })
}

/// `user.deleted`: `data` is only `{id, object, deleted, …}`; `deleted_at` is the envelope
/// `timestamp` (seconds or ms), or the time of receipt when the envelope has none.
fn deletion(
    envelope: &Map<String, Value>,
    data: &Map<String, Value>,
    raw: RawJson,
    received_at: DateTime<Utc>,
) -> Result<UserDeletion, ParseError> {
    let id = required_id(data)?;
    let deleted_at = match envelope.get("timestamp") {
        None | Some(Value::Null) => received_at,
        Some(value) => json_integer(value).and_then(clerk_envelope_timestamp).ok_or(ParseError::Field("timestamp"))?,
    };
    Ok(UserDeletion { id, deleted_at, raw })
}

/// `session.created`: the embedded `data.user`, when it is a full user object (a string `id`
/// and `object == "user"`); `None` (unhandled) otherwise.
fn session_user(mut data: Map<String, Value>) -> Result<Option<UserRecord>, ParseError> {
    match data.remove("user") {
        Some(Value::Object(user)) if is_full_user(&user) => user_from_clerk(&Value::Object(user)).map(Some),
        _ => Ok(None),
    }
}

/// A session's `user` is a full user object (not just an id or a stub).
fn is_full_user(user: &Map<String, Value>) -> bool {
    user.get("object").and_then(Value::as_str) == Some("user")
        && user.get("id").and_then(Value::as_str).is_some_and(|id| !id.is_empty())
}

fn required_id(fields: &Map<String, Value>) -> Result<String, ParseError> {
    match fields.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(ParseError::Field("data.id")),
    }
}

/// `email_addresses[i].email_address` where `email_addresses[i].id == primary_email_address_id`;
/// `None` when there is no primary id or no address carries it.
fn primary_email(fields: &Map<String, Value>) -> Result<Option<String>, ParseError> {
    let primary_id = match fields.get("primary_email_address_id") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(id)) => id,
        Some(_) => return Err(ParseError::Field("data.primary_email_address_id")),
    };
    let addresses = match fields.get("email_addresses") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(addresses)) => addresses,
        Some(_) => return Err(ParseError::Field("data.email_addresses")),
    };
    let Some(primary) = addresses.iter().find(|a| a.get("id").and_then(Value::as_str) == Some(primary_id.as_str()))
    else {
        return Ok(None);
    };
    match primary.get("email_address") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(email)) => Ok(Some(email.clone())),
        Some(_) => Err(ParseError::Field("data.email_addresses")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::test_fixtures::{assert_unhandled, received, s, utc};
    use serde_json::json;

    fn fixture_bytes(name: &str) -> Vec<u8> {
        crate::providers::test_fixtures::bytes("clerk", name)
    }

    fn fixture_json(name: &str) -> Value {
        crate::providers::test_fixtures::json("clerk", name)
    }

    /// [`super::parse_event`] on a copy of `body`, checked against the `Value` path on every
    /// call: the two must give the same changes (and errors always come from the latter).
    fn parse_event(body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
        let text = super::parse_event(&Bytes::copy_from_slice(body), received_at);
        assert_eq!(text, parse_event_value(body, received_at), "{}", String::from_utf8_lossy(body));
        text
    }

    fn parse_fixture(name: &str) -> Delivery {
        parse_event(&fixture_bytes(name), received()).expect("fixture parses")
    }

    fn single_upsert(delivery: Delivery, event_type: &str) -> UserRecord {
        assert_eq!(delivery.event_type, event_type);
        assert!(!delivery.unhandled);
        match <[UserChange; 1]>::try_from(delivery.changes) {
            Ok([UserChange::Upsert(record)]) => record,
            other => panic!("expected one upsert, got {other:?}"),
        }
    }

    fn single_delete(delivery: Delivery) -> UserDeletion {
        assert_eq!(delivery.event_type, USER_DELETED);
        assert!(!delivery.unhandled);
        match <[UserChange; 1]>::try_from(delivery.changes) {
            Ok([UserChange::Delete(deletion)]) => deletion,
            other => panic!("expected one delete, got {other:?}"),
        }
    }

    #[test]
    fn user_created_docs_example() {
        let record = single_upsert(parse_fixture("user.created.json"), USER_CREATED);
        let expected = UserRecord {
            id: "user_29w83sxmDNGwOuEthce5gg56FcC".into(),
            email: s("example@example.org"),
            first_name: s("Example"),
            last_name: s("Example"),
            username: None,
            image_url: s("https://img.clerk.com/xxxxxx"),
            created_at: Some(utc("2022-05-31T15:56:31.514Z")),
            updated_at: Some(utc("2022-05-31T15:56:31.835Z")),
            last_sign_in_at: Some(utc("2022-05-31T15:56:31.514Z")),
            raw: fixture_json("user.created.json")["data"].clone().into(),
        };
        assert_eq!(record, expected);
    }

    #[test]
    fn user_created_openapi_example() {
        let record = single_upsert(parse_fixture("user.created.openapi.json"), USER_CREATED);
        let expected = UserRecord {
            id: "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
            // `email_addresses` is empty: the primary id matches nothing.
            email: None,
            first_name: s("John"),
            last_name: s("Doe"),
            username: None,
            image_url: s("https://img.clerk.com/xxxxxx"),
            created_at: Some(utc("2024-05-28T08:00:00Z")),
            updated_at: Some(utc("2024-05-28T08:00:00Z")),
            last_sign_in_at: Some(utc("2024-05-28T08:00:00Z")),
            raw: fixture_json("user.created.openapi.json")["data"].clone().into(),
        };
        assert_eq!(record, expected);
    }

    #[test]
    fn user_updated_openapi_example() {
        let record = single_upsert(parse_fixture("user.updated.json"), USER_UPDATED);
        let expected = UserRecord {
            id: "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
            email: None,
            first_name: s("John"),
            last_name: s("Doe Updated"),
            username: s("johndoe"),
            image_url: s("https://img.clerk.com/yyyyy"),
            created_at: Some(utc("2024-05-28T08:00:00Z")),
            updated_at: Some(utc("2024-05-28T08:05:00Z")),
            last_sign_in_at: Some(utc("2024-05-28T08:03:20Z")),
            raw: fixture_json("user.updated.json")["data"].clone().into(),
        };
        assert_eq!(record, expected);
    }

    #[test]
    fn user_updated_dashboard_catalog_example() {
        let record = single_upsert(parse_fixture("user.updated.dashboard-catalog.json"), USER_UPDATED);
        let expected = UserRecord {
            id: "user_29w83sxmDNGwOuEthce5gg56FcC".into(),
            email: s("example@example.org"),
            first_name: s("Example"),
            last_name: None,
            username: None,
            image_url: s("https://img.clerk.com/xxxxxx"),
            created_at: Some(utc("2022-05-31T15:56:31.514Z")),
            updated_at: Some(utc("2022-05-31T16:00:24.306Z")),
            last_sign_in_at: None,
            raw: fixture_json("user.updated.dashboard-catalog.json")["data"].clone().into(),
        };
        assert_eq!(record, expected);
    }

    #[test]
    fn user_deleted_with_seconds_timestamp() {
        let deletion = single_delete(parse_fixture("user.deleted.json"));
        let expected = UserDeletion {
            id: "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
            // Envelope timestamp 1716883200 is seconds.
            deleted_at: utc("2024-05-28T08:00:00Z"),
            raw: json!({
                "object": "user",
                "id": "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
                "deleted": true,
                "external_id": "ex_123456789"
            })
            .into(),
        };
        assert_eq!(deletion, expected);
        assert_eq!(deletion.raw, fixture_json("user.deleted.json")["data"]);
    }

    #[test]
    fn user_deleted_dashboard_catalog_with_ms_timestamp() {
        let deletion = single_delete(parse_fixture("user.deleted.dashboard-catalog.json"));
        assert_eq!(
            deletion,
            UserDeletion {
                id: "user_29wBMCtzATuFJut8jO2VNTVekS4".into(),
                // Envelope timestamp 1661861640000 is milliseconds.
                deleted_at: utc("2022-08-30T12:14:00Z"),
                raw: json!({
                    "deleted": true,
                    "id": "user_29wBMCtzATuFJut8jO2VNTVekS4",
                    "object": "user"
                })
                .into(),
            }
        );
    }

    #[test]
    fn user_deleted_without_timestamp_uses_receipt_time() {
        for body in [
            json!({"type": "user.deleted", "data": {"id": "user_1", "deleted": true}}),
            json!({"type": "user.deleted", "timestamp": null, "data": {"id": "user_1"}}),
        ] {
            let deletion = single_delete(parse_event(body.to_string().as_bytes(), received()).expect("parses"));
            assert_eq!(deletion.id, "user_1");
            assert_eq!(deletion.deleted_at, received());
            assert_eq!(deletion.raw, body["data"]);
        }
    }

    #[test]
    fn user_deleted_errors() {
        let cases = [
            (json!({"type": "user.deleted", "timestamp": 1, "data": {"deleted": true}}), "data.id"),
            (json!({"type": "user.deleted", "timestamp": 1, "data": {"id": 7}}), "data.id"),
            (json!({"type": "user.deleted", "timestamp": 1, "data": {"id": ""}}), "data.id"),
            (json!({"type": "user.deleted", "timestamp": "yesterday", "data": {"id": "user_1"}}), "timestamp"),
            (json!({"type": "user.deleted", "timestamp": 1.5, "data": {"id": "user_1"}}), "timestamp"),
            (json!({"type": "user.deleted", "timestamp": i64::MAX, "data": {"id": "user_1"}}), "timestamp"),
        ];
        for (body, field) in cases {
            assert_eq!(parse_event(body.to_string().as_bytes(), received()), Err(ParseError::Field(field)), "{body}");
        }
    }

    #[test]
    fn session_created_with_full_user_upserts_it() {
        let record = single_upsert(parse_fixture("session.created.json"), SESSION_CREATED);
        let expected = UserRecord {
            id: "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
            email: None,
            first_name: s("John"),
            last_name: s("Doe"),
            username: None,
            image_url: s("https://img.clerk.com/xxxxxx"),
            created_at: Some(utc("2024-05-28T08:00:00Z")),
            updated_at: Some(utc("2024-05-28T08:00:00Z")),
            last_sign_in_at: Some(utc("2024-05-28T08:00:00Z")),
            raw: fixture_json("session.created.json")["data"]["user"].clone().into(),
        };
        assert_eq!(record, expected);
    }

    #[test]
    fn a_number_postgres_cannot_hold_is_made_storable_not_fatal() {
        // serde_json reads 1e-20000 as 0.0; Postgres' numeric refuses it as written.
        for event_type in [USER_UPDATED, SESSION_CREATED] {
            let mut user = fixture_json("user.updated.json")["data"].clone();
            user["object"] = json!("user");
            let user = user.to_string().replacen('{', r#"{"capydb_numbers":{"ratio":1e-20000},"#, 1);
            let data = if event_type == SESSION_CREATED { format!(r#"{{"user":{user}}}"#) } else { user };
            let body = format!(r#"{{"type":"{event_type}","timestamp":1,"data":{data}}}"#);
            let mut record = single_upsert(parse_event(body.as_bytes(), received()).expect("parses"), event_type);
            record.make_storable();
            assert_eq!(record.raw.to_value()["capydb_numbers"], json!({"ratio": 0.0}), "{event_type}");
            assert!(!RawJson::needs_rewrite(record.raw.as_str().as_bytes()), "{event_type}");
        }
    }

    #[test]
    fn session_created_without_full_user_is_unhandled() {
        let mut event = fixture_json("session.created.json");
        let full_user = event["data"]["user"].clone();
        let variants = [
            None,
            Some(Value::Null),
            Some(json!({"id": "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S"})),
            Some(json!({"object": "user"})),
            Some(json!({"object": "user", "id": ""})),
            Some(json!({"object": "user_summary", "id": "user_1"})),
            Some(json!("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S")),
            Some({
                let mut u = full_user;
                u["object"] = json!(null);
                u
            }),
        ];
        for user in variants {
            let data = event["data"].as_object_mut().expect("data");
            match &user {
                Some(u) => data.insert("user".into(), u.clone()),
                None => data.remove("user"),
            };
            let delivery = parse_event(event.to_string().as_bytes(), received()).expect("parses");
            assert_unhandled(&delivery, SESSION_CREATED);
        }
    }

    #[test]
    fn list_users_page_maps_each_user() {
        let page = fixture_json("list_users_page.json");
        let users = page.as_array().expect("bare JSON array");
        assert_eq!(users.len(), 2);
        let records: Vec<UserRecord> = users.iter().map(|u| user_from_clerk(u).expect("user maps")).collect();
        assert_eq!(
            records[0],
            UserRecord {
                id: "user_1skey1AXIL5UvH5B6XdMWawkEsj".into(),
                email: s("developer@clerk.dev"),
                first_name: s("test"),
                last_name: s("test"),
                username: None,
                // This older field set has only `profile_image_url`, which is not mapped.
                image_url: None,
                created_at: Some(utc("2021-05-19T10:47:45Z")),
                updated_at: Some(utc("2021-05-19T10:48:46Z")),
                last_sign_in_at: None,
                raw: users[0].clone().into(),
            }
        );
        assert_eq!(
            records[1],
            UserRecord {
                id: "user_1skey1AXIL5UvH5B6XdMWawkEsX".into(),
                // primary_email_address_id ...OKwJ matches no address (...OKwi).
                email: None,
                first_name: s("test"),
                last_name: s("test"),
                username: None,
                image_url: None,
                created_at: Some(utc("2021-05-19T10:47:45.123Z")),
                updated_at: Some(utc("2021-05-19T10:48:46.678Z")),
                last_sign_in_at: Some(utc("2023-12-04T08:12:44.411Z")),
                raw: users[1].clone().into(),
            }
        );
    }

    #[test]
    fn user_from_clerk_agrees_with_webhook_parse() {
        for name in [
            "user.created.json",
            "user.created.openapi.json",
            "user.updated.json",
            "user.updated.dashboard-catalog.json",
        ] {
            let event = fixture_json(name);
            let from_api = user_from_clerk(&event["data"]).expect("maps");
            let delivery = parse_fixture(name);
            assert_eq!(delivery.changes, vec![UserChange::Upsert(from_api)], "{name}");
        }
    }

    #[test]
    fn svix_derived_body_parses_like_the_docs_example() {
        let vectors = fixture_json("svix_test_vectors.json");
        let body = vectors["derived_not_from_source"]["body"].as_str().expect("body");
        let minified = parse_event(body.as_bytes(), received()).expect("parses");
        assert_eq!(minified, parse_fixture("user.created.json"));
    }

    #[test]
    fn raw_keeps_every_key_and_value() {
        let mut event = fixture_json("user.created.json");
        event["data"]["future_field"] = json!({"nested": [1, 2.5, "x", null, true]});
        event["data"]["private_metadata"] = json!({"plan": "pro", "seats": 12});
        event["data"]["huge"] = json!(u64::MAX);
        let record =
            single_upsert(parse_event(event.to_string().as_bytes(), received()).expect("parses"), USER_CREATED);
        assert_eq!(record.raw, event["data"]);
        assert_eq!(record.raw.to_value()["future_field"]["nested"][1], json!(2.5));
    }

    #[test]
    fn primary_email_selection() {
        let base = json!({
            "id": "user_1",
            "primary_email_address_id": "idn_b",
            "email_addresses": [
                {"id": "idn_a", "email_address": "a@example.org"},
                {"id": "idn_b", "email_address": "b@example.org"},
                "not an object"
            ]
        });
        assert_eq!(user_from_clerk(&base).expect("maps").email, s("b@example.org"));

        let mut no_primary = base.clone();
        no_primary["primary_email_address_id"] = Value::Null;
        assert_eq!(user_from_clerk(&no_primary).expect("maps").email, None);

        let mut unmatched = base.clone();
        unmatched["primary_email_address_id"] = json!("idn_c");
        assert_eq!(user_from_clerk(&unmatched).expect("maps").email, None);

        let mut no_addresses = base.clone();
        no_addresses.as_object_mut().expect("object").remove("email_addresses");
        assert_eq!(user_from_clerk(&no_addresses).expect("maps").email, None);

        let mut null_address = base.clone();
        null_address["email_addresses"][1]["email_address"] = Value::Null;
        assert_eq!(user_from_clerk(&null_address).expect("maps").email, None);
    }

    #[test]
    fn minimal_user_has_only_an_id() {
        let record = user_from_clerk(&json!({"id": "user_1"})).expect("maps");
        assert_eq!(
            record,
            UserRecord {
                id: "user_1".into(),
                email: None,
                first_name: None,
                last_name: None,
                username: None,
                image_url: None,
                created_at: None,
                updated_at: None,
                last_sign_in_at: None,
                raw: json!({"id": "user_1"}).into(),
            }
        );
        // Empty strings are kept as the provider sent them.
        let record = user_from_clerk(&json!({"id": "user_1", "first_name": ""})).expect("maps");
        assert_eq!(record.first_name, s(""));
    }

    #[test]
    fn user_objects_with_bad_fields_are_rejected() {
        let cases = [
            (json!({"object": "user"}), "data.id"),
            (json!({"id": null}), "data.id"),
            (json!({"id": 42}), "data.id"),
            (json!({"id": ""}), "data.id"),
            (json!("user_1"), "data"),
            (json!({"id": "u", "first_name": 1}), "data.first_name"),
            (json!({"id": "u", "last_name": ["x"]}), "data.last_name"),
            (json!({"id": "u", "username": true}), "data.username"),
            (json!({"id": "u", "image_url": {}}), "data.image_url"),
            (json!({"id": "u", "created_at": "2024-05-28T08:00:00Z"}), "data.created_at"),
            (json!({"id": "u", "updated_at": 1.5}), "data.updated_at"),
            (json!({"id": "u", "last_sign_in_at": "soon"}), "data.last_sign_in_at"),
            (json!({"id": "u", "primary_email_address_id": 3}), "data.primary_email_address_id"),
            (json!({"id": "u", "primary_email_address_id": "i", "email_addresses": {}}), "data.email_addresses"),
            (
                json!({
                    "id": "u",
                    "primary_email_address_id": "i",
                    "email_addresses": [{"id": "i", "email_address": 5}]
                }),
                "data.email_addresses",
            ),
        ];
        // A well-formed epoch no calendar holds is a time Postgres cannot store: NULL, and the
        // user still lands (SPEC §2 rule 3).
        let absurd = user_from_clerk(&json!({"id": "u", "updated_at": i64::MAX, "created_at": -i64::MAX})).unwrap();
        assert_eq!((absurd.updated_at, absurd.created_at), (None, None));
        for (user, field) in cases {
            assert_eq!(user_from_clerk(&user), Err(ParseError::Field(field)), "{user}");
            let body = json!({"type": "user.updated", "data": user});
            let expected = if user.is_object() { field } else { "data" };
            assert_eq!(
                parse_event(body.to_string().as_bytes(), received()),
                Err(ParseError::Field(expected)),
                "{body}"
            );
        }
    }

    #[test]
    fn envelope_errors() {
        let cases: [(&[u8], ParseError); 9] = [
            (br#"{"data": {"id": "user_1"}}"#, ParseError::Field("type")),
            (br#"{"type": null, "data": {"id": "user_1"}}"#, ParseError::Field("type")),
            (br#"{"type": 5, "data": {"id": "user_1"}}"#, ParseError::Field("type")),
            (br#"[{"type": "user.created"}]"#, ParseError::Field("type")),
            (br#""user.created""#, ParseError::Field("type")),
            (br#"{"type": "user.created"}"#, ParseError::Field("data")),
            (br#"{"type": "user.created", "data": null}"#, ParseError::Field("data")),
            (br#"{"type": "user.created", "data": [1]}"#, ParseError::Field("data")),
            (br#"{"type": "user.created", "data": {}}"#, ParseError::Field("data.id")),
        ];
        for (body, expected) in cases {
            assert_eq!(parse_event(body, received()), Err(expected), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn non_json_bodies() {
        for body in [&b""[..], b"not json", b"{\"type\": \"user.created\",", b"\xff\xfe", b"type=user.created"] {
            match parse_event(body, received()) {
                Err(ParseError::NotJson(message)) => assert!(!message.is_empty()),
                other => panic!("{:?}: expected NotJson, got {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn unknown_event_types_are_unhandled() {
        for event_type in ["email.created", "organization.created", "session.ended", "user.banned", ""] {
            let body = json!({
                "type": event_type,
                "object": "event",
                "timestamp": 1_716_883_200,
                "data": {"id": "x"}
            });
            let delivery = parse_event(body.to_string().as_bytes(), received()).expect("parses");
            assert_unhandled(&delivery, event_type);
        }
    }
}
