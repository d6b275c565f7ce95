//! Better Auth (SPEC §4 "Better Auth"): two senders, told apart by their headers, both
//! keyed with the UTF-8 bytes of the configured secret and both mapping the Better Auth user
//! row the same way (SPEC §2, [`user_from_better_auth`]):
//!
//! - [`plugin`]: the official `@better-auth/webhooks` plugin — `x-better-auth-webhook-*`
//!   headers, a signed timestamp (±300 s), a delivery id, body `{id, type, timestamp, data}`,
//!   user, session and account events;
//! - [`envelope`]: a `databaseHooks` snippet for apps without the plugin — CapyDB's envelope
//!   `{"event", "user"}` signed with `X-Better-Auth-Signature`, no timestamp.
//!
//! The signature header picks the verifier. Once a body is authenticated (by either, with
//! the same secret), its shape picks the parser: `event` is the envelope, `type` the
//! plugin's. `raw` is always the user object as received, moved out of the body and written
//! as JSON text once (`users::RawJson::from_value`).
pub mod envelope;
pub mod plugin;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{Map, Value};

use super::fields::{optional_string, optional_time};
use super::{check_shared_secret, Delivery, ParseError, Provider, VerifyError};
use crate::pb;
use crate::users::UserRecord;

/// Better Auth (SPEC §1): webhook-only, HMAC-signed with the configured secret.
pub struct BetterAuth;

impl Provider for BetterAuth {
    fn name(&self) -> &'static str {
        "better_auth"
    }

    fn path_segment(&self) -> &'static str {
        "better-auth"
    }

    fn proto(&self) -> pb::Provider {
        pb::Provider::BetterAuth
    }

    fn supports_backfill(&self) -> bool {
        false
    }

    /// Better Auth ids have no shape of their own: every row that is neither Clerk's nor
    /// Auth0's (see their `table_rows`).
    fn table_rows(&self) -> &'static str {
        "NOT (id LIKE 'user\\_%' AND COALESCE(raw->>'object', '') = 'user') AND strpos(id, '|') = 0"
    }

    /// At least 16 characters, as the plugin itself requires of an endpoint secret.
    fn check_webhook_secret(&self, secret: &str) -> Result<(), String> {
        check_shared_secret(secret)
    }

    /// The plugin's signature header when present, else the envelope's; with neither, the
    /// missing header named is the plugin's. Only the plugin has a delivery id.
    fn verify(
        &self,
        secret: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<String>, VerifyError> {
        if headers.contains_key(plugin::SIGNATURE_HEADER) {
            plugin::verify(secret, headers, body, now)
        } else if headers.contains_key(envelope::SIGNATURE_HEADER) {
            envelope::verify(secret, headers, body).map(|()| None)
        } else {
            Err(VerifyError::MissingHeader(plugin::SIGNATURE_HEADER))
        }
    }

    /// Errors: [`ParseError::NotJson`]; [`ParseError::Field`] `"event"` for a body that is
    /// neither shape; otherwise those of [`envelope::parse`] and [`plugin::parse`].
    fn parse(&self, body: &bytes::Bytes, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
        match value {
            Value::Object(object) if !object.contains_key("event") && object.contains_key("type") => {
                plugin::parse(object)
            }
            Value::Object(object) => envelope::parse(object, received_at),
            _ => Err(ParseError::Field("event")),
        }
    }
}

/// Field names for parse errors, by where the user row sits in the body.
pub(crate) struct Labels {
    id: &'static str,
    email: &'static str,
    first_name: &'static str,
    name: &'static str,
    last_name: &'static str,
    username: &'static str,
    image: &'static str,
    created_at: &'static str,
    updated_at: &'static str,
    last_sign_in_at: &'static str,
    last_login_at: &'static str,
}

macro_rules! labels {
    ($prefix:literal) => {
        Labels {
            id: concat!($prefix, ".id"),
            email: concat!($prefix, ".email"),
            first_name: concat!($prefix, ".firstName"),
            name: concat!($prefix, ".name"),
            last_name: concat!($prefix, ".lastName"),
            username: concat!($prefix, ".username"),
            image: concat!($prefix, ".image"),
            created_at: concat!($prefix, ".createdAt"),
            updated_at: concat!($prefix, ".updatedAt"),
            last_sign_in_at: concat!($prefix, ".lastSignInAt"),
            last_login_at: concat!($prefix, ".lastLoginAt"),
        }
    };
}

/// The envelope's user row is `user`, the plugin's `data`.
pub(crate) const ENVELOPE_LABELS: Labels = labels!("user");
pub(crate) const PLUGIN_LABELS: Labels = labels!("data");

/// Maps one Better Auth user row (as `JSON.stringify` emits it from a database hook) to a
/// [`UserRecord`] per the SPEC §2 Better Auth column; `raw` is a copy of `user`.
///
/// `first_name` is `firstName` when it has a value, else `name`; `last_name` is `lastName`
/// or NULL; `last_sign_in_at` is `lastSignInAt`, else `lastLoginAt`, else NULL; times are
/// ISO 8601 strings or epoch milliseconds. `id` is a non-empty string, or an integer (numeric
/// id setups) stored as its decimal text.
///
/// Errors: [`ParseError::Field`] `"user.id"` without a usable id (or when `user` is not an
/// object); `"user.<field>"` when a mapped field has the wrong JSON type or an unreadable time.
pub fn user_from_better_auth(user: &Value) -> Result<UserRecord, ParseError> {
    record_from(user.clone(), &ENVELOPE_LABELS)
}

/// [`user_from_better_auth`] on an owned object, so it becomes `raw` without a copy.
pub(crate) fn record_from(user: Value, labels: &Labels) -> Result<UserRecord, ParseError> {
    let Value::Object(fields) = &user else {
        return Err(ParseError::Field(labels.id));
    };
    let first_name = match optional_string(fields, "firstName", labels.first_name)? {
        Some(first) => Some(first),
        None => optional_string(fields, "name", labels.name)?,
    };
    let last_sign_in_at = match optional_time(fields, "lastSignInAt", labels.last_sign_in_at)? {
        Some(at) => Some(at),
        None => optional_time(fields, "lastLoginAt", labels.last_login_at)?,
    };
    Ok(UserRecord {
        id: required_id(fields, labels)?,
        email: optional_string(fields, "email", labels.email)?,
        first_name,
        last_name: optional_string(fields, "lastName", labels.last_name)?,
        username: optional_string(fields, "username", labels.username)?,
        image_url: optional_string(fields, "image", labels.image)?,
        created_at: optional_time(fields, "createdAt", labels.created_at)?,
        updated_at: optional_time(fields, "updatedAt", labels.updated_at)?,
        last_sign_in_at,
        raw: user.into(),
    })
}

/// A non-empty string `id`, or an integer one (numeric id setups) as its decimal text.
pub(crate) fn required_id(fields: &Map<String, Value>, labels: &Labels) -> Result<String, ParseError> {
    match fields.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err(ParseError::Field(labels.id)),
    }
}
