//! Auth0 webhooks (SPEC §4 "Auth0"): authentication by a shared secret in `Authorization`
//! (bare, Bearer or Basic), and three body shapes turned into provider-neutral [`UserChange`]s.
//!
//! - **Event Streams** CloudEvent `{specversion, type, id, time, data: {object: profile}}`:
//!   `user.created` / `user.updated` upsert the profile, `user.deleted` soft-deletes it at the
//!   profile's `deleted_at`, else the event `time`, else the time of receipt. Types may carry
//!   the `com.auth0.` prefix. Other types are unhandled.
//! - **Action envelope** `{"event": "user.created" | "user.updated" | "user.deleted", "user":
//!   profile}`: the same, with `deleted_at` from the profile or the time of receipt.
//! - **Log Stream** batch (Custom Webhook): a JSON array, JSON lines, or one record, each
//!   `{log_id, data: {type, date, user_id, …}}`. `sdu` soft-deletes `user_id` at `date`; `ss`
//!   (signup) inserts the user if absent; `s` (login) moves `last_sign_in_at` forward. Other
//!   codes are ignored; a batch with nothing usable is unhandled. A record that cannot be
//!   used is skipped and counted, never refuses the batch (see `log_batch`).
//!
//! `raw` is always what the provider sent (the profile, or a log record's `data`), moved out
//! of the parsed body and written as JSON text once (`users::RawJson::from_value`).
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::fields::{optional_string, optional_time};
use super::timestamps::from_json;
use super::{check_shared_secret, Delivery, ParseError, Provider, VerifyError};
use crate::pb;
use crate::users::{UserChange, UserDeletion, UserRecord, UserSighting};

/// Auth0 (SPEC §1): webhook-only, authenticated by a shared secret in `Authorization`.
pub struct Auth0;

impl Provider for Auth0 {
    fn name(&self) -> &'static str {
        "auth0"
    }

    fn path_segment(&self) -> &'static str {
        "auth0"
    }

    fn proto(&self) -> pb::Provider {
        pb::Provider::Auth0
    }

    fn supports_backfill(&self) -> bool {
        false
    }

    /// Auth0 user ids are always `{connection}|{id}` (`auth0|…`, `google-oauth2|…`), and no
    /// Clerk or Better Auth id has a `|`.
    fn table_rows(&self) -> &'static str {
        "strpos(id, '|') > 0"
    }

    fn check_webhook_secret(&self, secret: &str) -> Result<(), String> {
        check_shared_secret(secret)
    }

    /// No delivery id: neither Log Streams nor Event Streams put one in a header.
    fn verify(
        &self,
        secret: &str,
        headers: &HeaderMap,
        _body: &[u8],
        _now: DateTime<Utc>,
    ) -> Result<Option<String>, VerifyError> {
        verify(secret, headers).map(|()| None)
    }

    fn parse(&self, body: &bytes::Bytes, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
        parse(body, received_at)
    }
}

pub const USER_CREATED: &str = "user.created";
pub const USER_UPDATED: &str = "user.updated";
pub const USER_DELETED: &str = "user.deleted";

/// Event Streams type names may be fully qualified (`com.auth0.user.created`).
pub const TYPE_PREFIX: &str = "com.auth0.";

/// Tenant log codes the sync uses.
pub const LOG_SIGNUP: &str = "ss";
pub const LOG_LOGIN: &str = "s";
pub const LOG_USER_DELETED: &str = "sdu";

/// The `event_type` of a Log Stream batch (followed by its distinct codes).
pub const LOG_STREAM: &str = "log_stream";

/// At most this many distinct log codes are named in a batch's `event_type`.
const MAX_CODES_NAMED: usize = 8;

/// Verifies the `Authorization` header: the configured secret, either bare (Log Streams
/// "Authorization Token"), as `Bearer <secret>` (Event Streams bearer auth), or as HTTP
/// Basic (Event Streams basic auth: the password of `Basic base64(user:password)` is the
/// secret; the user name is not checked). Schemes are case-insensitive. Every form is
/// compared on SHA-256 digests in constant time, all of them on every request, so neither
/// the secret's content nor its length nor the form that matched leaks through timing.
///
/// Errors: [`VerifyError::BadSecret`] for an empty secret, [`VerifyError::MissingHeader`]
/// `"authorization"`, [`VerifyError::NoMatchingSignature`] when no form matches.
pub fn verify(secret: &str, headers: &HeaderMap) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::BadSecret);
    }
    let value = headers.get(http::header::AUTHORIZATION).ok_or(VerifyError::MissingHeader("authorization"))?.as_bytes();
    let expected = Sha256::digest(secret.as_bytes());
    let matches = |candidate: Option<&[u8]>| match candidate {
        Some(candidate) => Sha256::digest(candidate).ct_eq(&expected),
        None => Choice::from(0),
    };
    let bare = matches(Some(value));
    let bearer = matches(scheme_credentials(value, b"bearer"));
    let basic = matches(basic_password(value).as_deref());
    if bool::from(bare | bearer | basic) {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// The credentials of a `<scheme> <credentials>` header value (scheme case-insensitive,
/// one or more spaces or tabs after it); `None` for any other value.
fn scheme_credentials<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let (name, rest) = value.split_at_checked(scheme.len())?;
    if !name.eq_ignore_ascii_case(scheme) || !rest.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        return None;
    }
    let start = rest.iter().position(|b| !matches!(b, b' ' | b'\t'))?;
    Some(&rest[start..])
}

/// The password of a `Basic base64(user:password)` header value (RFC 7617: the user name
/// ends at the first colon; the password may contain colons). `None` when the value is not
/// Basic, not base64 or has no colon.
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = scheme_credentials(value, b"basic")?.trim_ascii_end();
    let mut decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded.split_off(colon + 1))
}

/// Parses an authenticated Auth0 body (any of the three shapes in the module docs).
///
/// Errors: [`ParseError::NotJson`] when the body is not JSON (or JSON lines), or is empty;
/// [`ParseError::Field`] naming the first field that is missing or has the wrong type.
/// `received_at` is the `deleted_at` of a deletion that carries no time of its own.
pub fn parse(body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let values = json_values(body)?;
    match <[Value; 1]>::try_from(values) {
        Ok([Value::Array(records)]) => log_batch(records),
        Ok([Value::Object(object)]) => parse_object(object, received_at),
        Ok([_]) => Err(ParseError::Field("type")),
        // Several values: JSON lines, one log record per line.
        Err(values) => log_batch(values),
    }
}

/// Every JSON value in the body, in order: one for a JSON document, one per line for JSON
/// lines (any whitespace separates values).
fn json_values(body: &[u8]) -> Result<Vec<Value>, ParseError> {
    let values = serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ParseError::NotJson(e.to_string()))?;
    if values.is_empty() {
        return Err(ParseError::NotJson("empty body".into()));
    }
    Ok(values)
}

/// One JSON object: an Action envelope (`event`), a CloudEvent (`type` / `specversion`), or a
/// single log record (`log_id`).
fn parse_object(object: Map<String, Value>, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    if object.contains_key("event") {
        action_envelope(object, received_at)
    } else if object.contains_key("type") || object.contains_key("specversion") {
        cloud_event(object, received_at)
    } else if object.contains_key("log_id") {
        log_batch(vec![Value::Object(object)])
    } else {
        Err(ParseError::Field("type"))
    }
}

/// What a user event asks for.
#[derive(Clone, Copy)]
enum UserEvent {
    Upsert,
    Delete,
}

fn user_event(normalized_type: &str) -> Option<UserEvent> {
    match normalized_type {
        USER_CREATED | USER_UPDATED => Some(UserEvent::Upsert),
        USER_DELETED => Some(UserEvent::Delete),
        _ => None,
    }
}

/// The event type without the `com.auth0.` prefix.
fn normalize(event_type: &str) -> String {
    event_type.strip_prefix(TYPE_PREFIX).unwrap_or(event_type).to_owned()
}

fn unhandled(event_type: String) -> Delivery {
    Delivery::unhandled(event_type)
}

fn handled(event_type: String, changes: Vec<UserChange>) -> Delivery {
    Delivery::handled(event_type, changes)
}

/// Event Streams: `{specversion, type, id, time, data: {object: profile}}`. The event's `id`
/// (the same on every retry) is the delivery id.
fn cloud_event(event: Map<String, Value>, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let id = match event.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control) => {
            Some(id.clone())
        }
        _ => None,
    };
    Ok(Delivery { delivery_id: id, ..cloud_event_changes(event, received_at)? })
}

fn cloud_event_changes(mut event: Map<String, Value>, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let event_type = match event.get("type") {
        Some(Value::String(t)) => normalize(t),
        _ => return Err(ParseError::Field("type")),
    };
    let Some(kind) = user_event(&event_type) else {
        return Ok(unhandled(event_type));
    };
    let mut data = match event.remove("data") {
        Some(Value::Object(data)) => data,
        _ => return Err(ParseError::Field("data")),
    };
    let profile = match data.remove("object") {
        Some(profile @ Value::Object(_)) => profile,
        _ => return Err(ParseError::Field("data.object")),
    };
    let change = user_change(kind, profile, event.get("time"), received_at)?;
    Ok(handled(event_type, vec![change]))
}

/// An Action (or any custom sender): `{"event": type, "user": profile}`.
fn action_envelope(mut envelope: Map<String, Value>, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let event_type = match envelope.get("event") {
        Some(Value::String(t)) => normalize(t),
        _ => return Err(ParseError::Field("event")),
    };
    let Some(kind) = user_event(&event_type) else {
        return Ok(unhandled(event_type));
    };
    let profile = match envelope.remove("user") {
        Some(profile @ Value::Object(_)) => profile,
        _ => return Err(ParseError::Field("user")),
    };
    let change = user_change(kind, profile, None, received_at)?;
    Ok(handled(event_type, vec![change]))
}

/// The change of a user event. A deletion happens at the profile's `deleted_at`, else at the
/// event's `time`, else at `received_at`; a present but unreadable time is an error (a wrong
/// deletion time must not be stored silently).
fn user_change(
    kind: UserEvent,
    profile: Value,
    event_time: Option<&Value>,
    received_at: DateTime<Utc>,
) -> Result<UserChange, ParseError> {
    match kind {
        UserEvent::Upsert => Ok(UserChange::Upsert(record_from(profile)?)),
        UserEvent::Delete => {
            let Value::Object(fields) = &profile else {
                return Err(ParseError::Field("user_id"));
            };
            let id = required_user_id(fields)?;
            let deleted_at = match (fields.get("deleted_at"), event_time) {
                (Some(value), _) if !value.is_null() => from_json(value).ok_or(ParseError::Field("deleted_at"))?,
                (_, Some(time)) if !time.is_null() => from_json(time).ok_or(ParseError::Field("time"))?,
                _ => received_at,
            };
            Ok(UserChange::Delete(UserDeletion { id, deleted_at, raw: profile.into() }))
        }
    }
}

/// A Log Stream batch: each record `{log_id, data: {type, …}}`. Records are independent
/// facts: one that cannot be used — not an object with an object `data` and a string
/// `data.type`, or of a used code without a `user_id` (or, for `s` / `sdu`, a readable
/// `date`) — is skipped and counted in [`Delivery::skipped`]; the rest apply. Records of
/// codes the sync does not use are ignored. A body in which no element is a log record at
/// all is not a log batch: [`ParseError::Field`] `"data"`.
fn log_batch(records: Vec<Value>) -> Result<Delivery, ParseError> {
    let mut changes = Vec::new();
    let mut codes: Vec<String> = Vec::new();
    let mut skipped = 0;
    for record in records {
        let data = match record {
            Value::Object(mut record) => match record.remove("data") {
                Some(Value::Object(data)) => data,
                _ => {
                    skipped += 1;
                    continue;
                }
            },
            _ => {
                skipped += 1;
                continue;
            }
        };
        let code = match data.get("type") {
            Some(Value::String(code)) => code.clone(),
            _ => {
                skipped += 1;
                continue;
            }
        };
        match log_change(&code, data) {
            Ok(Some(change)) => changes.push(change),
            Ok(None) => {}
            Err(_) => skipped += 1,
        }
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    if codes.is_empty() && skipped > 0 {
        return Err(ParseError::Field("data"));
    }
    let event_type = log_event_type(&codes);
    let delivery = if changes.is_empty() { unhandled(event_type) } else { handled(event_type, changes) };
    Ok(Delivery { skipped, ..delivery })
}

/// The change one log record asks for, if its code is one the sync uses.
fn log_change(code: &str, data: Map<String, Value>) -> Result<Option<UserChange>, ParseError> {
    let change = match code {
        LOG_USER_DELETED => UserChange::Delete(UserDeletion {
            id: log_user_id(&data)?,
            deleted_at: log_date(&data)?,
            raw: Value::Object(data).into(),
        }),
        LOG_SIGNUP => UserChange::Sighting(UserSighting {
            id: log_user_id(&data)?,
            insert_if_absent: true,
            email: signup_email(&data),
            signed_in_at: None,
            raw: Value::Object(data).into(),
        }),
        LOG_LOGIN => UserChange::Sighting(UserSighting {
            id: log_user_id(&data)?,
            insert_if_absent: false,
            email: None,
            signed_in_at: Some(log_date(&data)?),
            raw: Value::Object(data).into(),
        }),
        _ => return Ok(None),
    };
    Ok(Some(change))
}

fn log_user_id(data: &Map<String, Value>) -> Result<String, ParseError> {
    match data.get("user_id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(ParseError::Field("data.user_id")),
    }
}

fn log_date(data: &Map<String, Value>) -> Result<DateTime<Utc>, ParseError> {
    data.get("date").and_then(from_json).ok_or(ParseError::Field("data.date"))
}

/// A signup's address: `details.body.email`, else `user_name` (SPEC §4).
fn signup_email(data: &Map<String, Value>) -> Option<String> {
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    non_empty(data.get("details").and_then(|d| d.get("body")).and_then(|b| b.get("email")))
        .or_else(|| non_empty(data.get("user_name")))
}

/// `log_stream:ss,s,sv` — the batch's distinct codes (bounded), for logs.
fn log_event_type(codes: &[String]) -> String {
    if codes.is_empty() {
        return LOG_STREAM.to_owned();
    }
    let mut named: Vec<String> = codes.iter().take(MAX_CODES_NAMED).map(|c| c.chars().take(32).collect()).collect();
    if codes.len() > MAX_CODES_NAMED {
        named.push("…".to_owned());
    }
    format!("{LOG_STREAM}:{}", named.join(","))
}

/// Maps one Auth0 user profile (Event Streams `data.object`, an Action's `user`, or a
/// Management API user) to a [`UserRecord`] per the SPEC §2 Auth0 column; `raw` is a copy of
/// `profile`.
///
/// Errors: [`ParseError::Field`] `"user_id"` when there is no non-empty string `user_id` (or
/// the profile is not an object); the column's source name when a typed column has the wrong
/// JSON type or an unreadable time.
pub fn user_from_profile(profile: &Value) -> Result<UserRecord, ParseError> {
    record_from(profile.clone())
}

/// [`user_from_profile`] on an owned profile, so it becomes `raw` without a copy.
fn record_from(profile: Value) -> Result<UserRecord, ParseError> {
    let Value::Object(fields) = &profile else {
        return Err(ParseError::Field("user_id"));
    };
    Ok(UserRecord {
        id: required_user_id(fields)?,
        email: optional_string(fields, "email", "email")?,
        first_name: optional_string(fields, "given_name", "given_name")?,
        last_name: optional_string(fields, "family_name", "family_name")?,
        username: optional_string(fields, "username", "username")?,
        image_url: optional_string(fields, "picture", "picture")?,
        created_at: optional_time(fields, "created_at", "created_at")?,
        updated_at: optional_time(fields, "updated_at", "updated_at")?,
        last_sign_in_at: optional_time(fields, "last_login", "last_login")?,
        raw: profile.into(),
    })
}

fn required_user_id(fields: &Map<String, Value>) -> Result<String, ParseError> {
    match fields.get("user_id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(ParseError::Field("user_id")),
    }
}

#[cfg(test)]
mod tests;
