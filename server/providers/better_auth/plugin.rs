//! Better Auth's official webhooks plugin, `@better-auth/webhooks` (SPEC §4 "Better Auth";
//! in beta): what a Better Auth app sends once the plugin is installed.
//!
//! - Headers: `x-better-auth-webhook-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//!   "{t}.{raw body}">`, keyed with the UTF-8 bytes of the secret, and
//!   `x-better-auth-webhook-id` (a UUID, equal to the body's `id`). Retries re-sign the same
//!   body with a fresh `t`, so the id is what identifies a delivery across retries.
//! - Body: `{"id", "type", "timestamp" (ISO 8601), "data"}`, `data` being the row the
//!   database hook saw, minus secrets.
//! - `user.created` / `user.updated` upsert `data`; `user.deleted` soft-deletes `data.id` at
//!   the body's `timestamp`; `session.created` is a sign-in that moves `last_sign_in_at` of
//!   `data.userId` forward to `data.createdAt` (and never invents a user); every other type
//!   (`session.updated|deleted`, `account.*`) is unhandled.
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{record_from, required_id, PLUGIN_LABELS};
use crate::providers::timestamps::from_json;
use crate::providers::{Delivery, ParseError, VerifyError};
use crate::users::{UserChange, UserDeletion, UserSighting};

/// The signature header (`WEBHOOK_SIGNATURE_HEADER` in the plugin).
pub const SIGNATURE_HEADER: &str = "x-better-auth-webhook-signature";

/// The delivery id header (`WEBHOOK_ID_HEADER` in the plugin). Not covered by the
/// signature; the body's `id`, which is, must equal it.
pub const ID_HEADER: &str = "x-better-auth-webhook-id";

/// How far `t` may be from the receiver's clock, either way, in seconds (the plugin's
/// own verifier uses the same default).
pub const TOLERANCE_SECS: u64 = 300;

/// Longest delivery id returned (the plugin sends 36-character UUIDs).
const MAX_ID_LEN: usize = 128;

pub const USER_CREATED: &str = "user.created";
pub const USER_UPDATED: &str = "user.updated";
pub const USER_DELETED: &str = "user.deleted";
pub const SESSION_CREATED: &str = "session.created";

/// Verifies a plugin delivery on its raw bytes and returns its delivery id.
///
/// The signature header is a comma-separated list of `key=value` parts (whitespace around
/// parts ignored): exactly one `t` (decimal seconds) and one or more `v1` (hex, either
/// case); other keys are ignored. `t` is checked against `now` before any HMAC is computed;
/// any `v1` equal to the HMAC (constant-time compare) authenticates the body. The delivery id
/// returned is the signed body's `id`; an `x-better-auth-webhook-id` header that differs
/// from it is refused. `None` when the body carries no usable id.
///
/// Errors: [`VerifyError::BadSecret`] for an empty secret; [`VerifyError::MissingHeader`]
/// `"x-better-auth-webhook-signature"`; [`VerifyError::MalformedSignatureHeader`] `"t"` /
/// `"v1"` when one is missing (or `t` repeated); [`VerifyError::BadTimestamp`] when `t` is
/// not decimal seconds; [`VerifyError::TimestampOutOfTolerance`] beyond ±300 s;
/// [`VerifyError::NoMatchingSignature`]; [`VerifyError::DeliveryIdMismatch`].
pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<String>, VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::BadSecret);
    }
    let header = headers.get(SIGNATURE_HEADER).ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
    let signature = SignatureHeader::parse(header.as_bytes())?;
    if now.timestamp().abs_diff(signature.timestamp) > TOLERANCE_SECS {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    let expected = sign(secret, signature.timestamp, body);
    let matched = signature
        .v1
        .iter()
        .filter_map(|candidate| hex::decode(candidate).ok())
        .fold(subtle::Choice::from(0), |any, candidate| any | candidate.as_slice().ct_eq(&expected));
    if !bool::from(matched) {
        return Err(VerifyError::NoMatchingSignature);
    }
    let signed_id = body_id(body);
    match headers.get(ID_HEADER) {
        Some(header) if signed_id.as_deref().is_some_and(|id| id.as_bytes() != header.as_bytes().trim_ascii()) => {
            Err(VerifyError::DeliveryIdMismatch)
        }
        _ => Ok(signed_id),
    }
}

/// HMAC-SHA256 of `"{t}.{body}"` keyed with the UTF-8 bytes of `secret`, as the plugin's
/// `signWebhookPayload` computes it (`t` in canonical decimal).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The parts of `t=<seconds>,v1=<hex>[,v1=<hex>…]`.
struct SignatureHeader<'a> {
    timestamp: i64,
    v1: Vec<&'a [u8]>,
}

impl<'a> SignatureHeader<'a> {
    fn parse(value: &'a [u8]) -> Result<Self, VerifyError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let Some(eq) = part.iter().position(|&b| b == b'=') else { continue };
            let (key, value) = (&part[..eq], &part[eq + 1..]);
            match key {
                b"t" if timestamp.is_some() => return Err(VerifyError::MalformedSignatureHeader("t")),
                b"t" => timestamp = Some(value),
                b"v1" => v1.push(value),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(VerifyError::MalformedSignatureHeader("t"))?;
        if v1.is_empty() {
            return Err(VerifyError::MalformedSignatureHeader("v1"));
        }
        let digits = !timestamp.is_empty() && timestamp.len() <= 18 && timestamp.iter().all(u8::is_ascii_digit);
        let timestamp = std::str::from_utf8(timestamp)
            .ok()
            .filter(|_| digits)
            .and_then(|t| t.parse().ok())
            .ok_or(VerifyError::BadTimestamp)?;
        Ok(SignatureHeader { timestamp, v1 })
    }
}

/// The body's `id` when it is a non-empty string of at most [`MAX_ID_LEN`] bytes.
fn body_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        id: Option<Value>,
    }
    match serde_json::from_slice::<Payload>(body).ok()?.id? {
        Value::String(id) if !id.is_empty() && id.len() <= MAX_ID_LEN => Some(id),
        _ => None,
    }
}

/// Parses an authenticated plugin body `{"id", "type", "timestamp", "data"}` (see the module
/// docs for what each type asks). Errors: [`ParseError::Field`] `"type"` (missing or not a
/// string), `"data"` (a handled type without an object `data`), `"timestamp"` (a
/// `user.deleted` without a readable one), `"data.<field>"` for a bad field.
pub fn parse(mut payload: Map<String, Value>) -> Result<Delivery, ParseError> {
    let event_type = match payload.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(ParseError::Field("type")),
    };
    if !matches!(event_type.as_str(), USER_CREATED | USER_UPDATED | USER_DELETED | SESSION_CREATED) {
        return Ok(Delivery::unhandled(event_type));
    }
    let data = match payload.remove("data") {
        Some(Value::Object(data)) => data,
        _ => return Err(ParseError::Field("data")),
    };
    let change = match event_type.as_str() {
        USER_DELETED => {
            let deleted_at = payload.get("timestamp").and_then(from_json).ok_or(ParseError::Field("timestamp"))?;
            UserChange::Delete(UserDeletion {
                id: required_id(&data, &PLUGIN_LABELS)?,
                deleted_at,
                raw: Value::Object(data).into(),
            })
        }
        SESSION_CREATED => UserChange::Sighting(sign_in(data)?),
        _ => UserChange::Upsert(record_from(Value::Object(data), &PLUGIN_LABELS)?),
    };
    Ok(Delivery::handled(event_type, vec![change]))
}

/// `session.created`: a sign-in of `data.userId` at `data.createdAt`. Only moves
/// `last_sign_in_at` forward; a user the table does not know is not inserted.
fn sign_in(session: Map<String, Value>) -> Result<UserSighting, ParseError> {
    let id = match session.get("userId") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return Err(ParseError::Field("data.userId")),
    };
    let signed_in_at = session.get("createdAt").and_then(from_json).ok_or(ParseError::Field("data.createdAt"))?;
    Ok(UserSighting {
        id,
        insert_if_absent: false,
        email: None,
        signed_in_at: Some(signed_in_at),
        raw: Value::Object(session).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::better_auth::BetterAuth;
    use crate::providers::test_fixtures::{assert_unhandled, received, s, single, str_field, utc};
    use crate::providers::Provider;
    use crate::users::UserRecord;
    use http::{HeaderName, HeaderValue};
    use serde_json::json;

    /// The known-answer vector computed with the plugin's own signing code.
    struct Vector {
        secret: String,
        body: String,
        tampered: String,
        t: i64,
        headers: HeaderMap,
        id: String,
    }

    fn vector() -> Vector {
        let v =
            crate::providers::test_fixtures::json("better-auth", "better-auth-webhooks-plugin.vector.COMPUTED.json");
        assert_eq!(v["upstream_verify_result"], json!(true));
        assert_eq!(v["upstream_verify_result_for_tampered_body"], json!(false));
        let mut headers = HeaderMap::new();
        for (name, value) in v["headers"].as_object().expect("headers") {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
            headers.insert(name, HeaderValue::from_str(value.as_str().expect("string")).expect("value"));
        }
        Vector {
            secret: str_field(&v, "secret").to_owned(),
            body: str_field(&v, "body").to_owned(),
            tampered: str_field(&v, "tampered_body").to_owned(),
            t: v["timestamp_seconds"].as_i64().expect("t"),
            id: str_field(&v["headers"], ID_HEADER).to_owned(),
            headers,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("test time")
    }

    fn with_signature(headers: &HeaderMap, value: &str) -> HeaderMap {
        let mut headers = headers.clone();
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(value).expect("value"));
        headers
    }

    fn parse_json(body: &Value) -> Result<Delivery, ParseError> {
        BetterAuth.parse(&body.to_string().into_bytes().into(), received())
    }

    // ---- verify ----------------------------------------------------------------------

    #[test]
    fn the_known_answer_vector_verifies_with_the_clock_anywhere_in_the_window() {
        let v = vector();
        assert_eq!(
            hex::encode(sign(&v.secret, v.t, v.body.as_bytes())),
            v.headers[SIGNATURE_HEADER].to_str().unwrap()[16..]
        );
        for now in [v.t, v.t - 300, v.t + 300, v.t + 42] {
            assert_eq!(verify(&v.secret, &v.headers, v.body.as_bytes(), at(now)), Ok(Some(v.id.clone())), "{now}");
        }
        // Through the provider: the plugin's header picks the plugin's verifier.
        assert_eq!(BetterAuth.verify(&v.secret, &v.headers, v.body.as_bytes(), at(v.t)), Ok(Some(v.id.clone())));
    }

    #[test]
    fn tampered_bodies_other_secrets_and_stale_or_future_timestamps_reject() {
        let v = vector();
        let body = v.body.as_bytes();
        let check = |secret: &str, headers: &HeaderMap, body: &[u8], now: i64| verify(secret, headers, body, at(now));
        assert_eq!(check(&v.secret, &v.headers, v.tampered.as_bytes(), v.t), Err(VerifyError::NoMatchingSignature));
        for other in [format!("{}x", v.secret), v.secret.to_uppercase(), v.secret[1..].to_owned()] {
            assert_eq!(check(&other, &v.headers, body, v.t), Err(VerifyError::NoMatchingSignature), "{other}");
        }
        assert_eq!(check(&v.secret, &v.headers, body, v.t + 301), Err(VerifyError::TimestampOutOfTolerance));
        assert_eq!(check(&v.secret, &v.headers, body, v.t - 301), Err(VerifyError::TimestampOutOfTolerance));
        // Re-signing with a fresh t (as a retry does) verifies at that time; the old
        // signature with the new t does not.
        let signature = v.headers[SIGNATURE_HEADER].to_str().unwrap().to_owned();
        let v1 = &signature[signature.find("v1=").unwrap() + 3..];
        let retry = format!("t={},v1={}", v.t + 600, hex::encode(sign(&v.secret, v.t + 600, body)));
        assert_eq!(check(&v.secret, &with_signature(&v.headers, &retry), body, v.t + 600), Ok(Some(v.id.clone())));
        let moved = format!("t={},v1={v1}", v.t + 600);
        assert_eq!(
            check(&v.secret, &with_signature(&v.headers, &moved), body, v.t + 600),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn signature_header_forms() {
        let v = vector();
        let body = v.body.as_bytes();
        let hex = hex::encode(sign(&v.secret, v.t, body));
        let t = v.t;
        let accepted = [
            format!("t={t},v1={}", hex.to_uppercase()),
            format!(" t={t} , v1={hex} "),
            format!("v1={hex},t={t}"),
            format!("t={t},v1={},v1={hex}", "0".repeat(64)),
            format!("t={t},v0=abc,v1={hex},x"),
            // The plugin reads t as a number and signs its decimal form, so does this.
            format!("t=0{t},v1={hex}"),
        ];
        for value in accepted {
            assert_eq!(
                verify(&v.secret, &with_signature(&v.headers, &value), body, at(t)),
                Ok(Some(v.id.clone())),
                "{value}"
            );
        }
        let rejected = [
            (format!("t={t}"), VerifyError::MalformedSignatureHeader("v1")),
            (format!("t={t},v2={hex}"), VerifyError::MalformedSignatureHeader("v1")),
            (format!("v1={hex}"), VerifyError::MalformedSignatureHeader("t")),
            (hex.clone(), VerifyError::MalformedSignatureHeader("t")),
            (String::new(), VerifyError::MalformedSignatureHeader("t")),
            (format!("t={t},t={t},v1={hex}"), VerifyError::MalformedSignatureHeader("t")),
            (format!("t=,v1={hex}"), VerifyError::BadTimestamp),
            (format!("t={t}.5,v1={hex}"), VerifyError::BadTimestamp),
            (format!("t=-{t},v1={hex}"), VerifyError::BadTimestamp),
            (format!("t={}000,v1={hex}", t), VerifyError::TimestampOutOfTolerance),
            (format!("t=99999999999999999999,v1={hex}"), VerifyError::BadTimestamp),
            (format!("t={t},v1={}", &hex[..63]), VerifyError::NoMatchingSignature),
            (format!("t={t},v1={hex}00"), VerifyError::NoMatchingSignature),
            (format!("t={t},v1=sha256={hex}"), VerifyError::NoMatchingSignature),
            (format!("t={t},v1="), VerifyError::NoMatchingSignature),
        ];
        for (value, error) in rejected {
            assert_eq!(verify(&v.secret, &with_signature(&v.headers, &value), body, at(t)), Err(error), "{value:?}");
        }
    }

    #[test]
    fn missing_header_unusable_secret_and_delivery_ids() {
        let v = vector();
        let body = v.body.as_bytes();
        let mut without = v.headers.clone();
        without.remove(SIGNATURE_HEADER);
        assert_eq!(verify(&v.secret, &without, body, at(v.t)), Err(VerifyError::MissingHeader(SIGNATURE_HEADER)));
        // Through the provider, with neither signature header, the plugin's is named.
        assert_eq!(
            BetterAuth.verify(&v.secret, &without, body, at(v.t)),
            Err(VerifyError::MissingHeader("x-better-auth-webhook-signature"))
        );
        let empty_keyed = format!("t={},v1={}", v.t, hex::encode(sign("", v.t, body)));
        assert_eq!(verify("", &with_signature(&v.headers, &empty_keyed), body, at(v.t)), Err(VerifyError::BadSecret));

        // The id header is not signed: it must agree with the signed body's id.
        let mut other_id = v.headers.clone();
        other_id.insert(ID_HEADER, HeaderValue::from_static("6ba7b810-9dad-11d1-80b4-00c04fd430c8"));
        assert_eq!(verify(&v.secret, &other_id, body, at(v.t)), Err(VerifyError::DeliveryIdMismatch));
        let mut no_id = v.headers.clone();
        no_id.remove(ID_HEADER);
        assert_eq!(verify(&v.secret, &no_id, body, at(v.t)), Ok(Some(v.id.clone())));
        // A body without a usable id has no delivery id.
        for body in
            [json!({"type": "user.created"}), json!({"id": 7}), json!({"id": ""}), json!({"id": "x".repeat(129)})]
        {
            let body = body.to_string();
            let signature = format!("t={},v1={}", v.t, hex::encode(sign(&v.secret, v.t, body.as_bytes())));
            let headers = with_signature(&no_id, &signature);
            assert_eq!(verify(&v.secret, &headers, body.as_bytes(), at(v.t)), Ok(None), "{body}");
        }
    }

    // ---- parse -----------------------------------------------------------------------

    #[test]
    fn the_vector_body_upserts_its_data() {
        let v = vector();
        let delivery = BetterAuth.parse(&v.body.clone().into_bytes().into(), received()).expect("parses");
        let UserChange::Upsert(record) = single(delivery, USER_CREATED) else { panic!("an upsert") };
        let body: Value = serde_json::from_str(&v.body).expect("json");
        assert_eq!(
            record,
            UserRecord {
                id: "5rKxZkVqLf8JmPwY3sTnHd2GcA9bE7uQ".into(),
                email: s("ada@example.com"),
                first_name: s("Ada Lovelace"),
                last_name: None,
                username: None,
                image_url: None,
                created_at: Some(utc("2025-12-01T11:59:59.512Z")),
                updated_at: Some(utc("2025-12-01T11:59:59.512Z")),
                last_sign_in_at: None,
                raw: body["data"].clone().into(),
            }
        );
    }

    fn payload(event_type: &str, data: Value) -> Value {
        json!({"id": "550e8400-e29b-41d4-a716-446655440000", "type": event_type,
               "timestamp": "2026-03-30T12:00:00.000Z", "data": data})
    }

    #[test]
    fn user_updated_and_deleted() {
        let user = json!({"id": "u1", "name": "Ada", "firstName": "Ada", "lastName": "King", "email": "a@x.io",
                          "createdAt": "2026-03-01T00:00:00Z", "updatedAt": 1774872000000_i64});
        let UserChange::Upsert(record) =
            single(parse_json(&payload(USER_UPDATED, user.clone())).unwrap(), USER_UPDATED)
        else {
            panic!("an upsert")
        };
        assert_eq!((record.first_name, record.last_name), (s("Ada"), s("King")));
        assert_eq!(record.updated_at, Some(utc("2026-03-30T12:00:00Z")));
        // A delete is dated at the body's timestamp, not at receipt; raw is the row.
        let change = single(parse_json(&payload(USER_DELETED, user.clone())).unwrap(), USER_DELETED);
        assert_eq!(
            change,
            UserChange::Delete(UserDeletion {
                id: "u1".into(),
                deleted_at: utc("2026-03-30T12:00:00Z"),
                raw: user.into()
            })
        );
    }

    #[test]
    fn session_created_is_a_sign_in_of_its_user() {
        let session = json!({"id": "s1", "userId": "u1", "expiresAt": "2026-04-06T12:00:00.000Z",
                             "createdAt": "2026-03-30T11:59:58.250Z", "updatedAt": "2026-03-30T11:59:58.250Z",
                             "ipAddress": "203.0.113.9", "userAgent": "Mozilla/5.0"});
        let change = single(parse_json(&payload(SESSION_CREATED, session.clone())).unwrap(), SESSION_CREATED);
        assert_eq!(
            change,
            UserChange::Sighting(UserSighting {
                id: "u1".into(),
                insert_if_absent: false,
                email: None,
                signed_in_at: Some(utc("2026-03-30T11:59:58.250Z")),
                raw: session.clone().into(),
            })
        );
        let mut bad = session.clone();
        bad.as_object_mut().unwrap().remove("userId");
        assert_eq!(parse_json(&payload(SESSION_CREATED, bad)), Err(ParseError::Field("data.userId")));
        let mut bad = session;
        bad["createdAt"] = json!("soon");
        assert_eq!(parse_json(&payload(SESSION_CREATED, bad)), Err(ParseError::Field("data.createdAt")));
    }

    #[test]
    fn other_event_types_are_unhandled() {
        for event_type in [
            "session.updated",
            "session.deleted",
            "account.created",
            "account.updated",
            "account.deleted",
            "user.banned",
        ] {
            // Their data is not inspected.
            assert_unhandled(&parse_json(&payload(event_type, json!({"id": "x"}))).unwrap(), event_type);
            assert_unhandled(&parse_json(&json!({"type": event_type})).unwrap(), event_type);
        }
    }

    #[test]
    fn malformed_bodies() {
        let user = json!({"id": "u1"});
        let cases = [
            (json!({"type": 1, "data": user}), "type"),
            (json!({"type": null, "data": user}), "type"),
            (json!({"type": "user.created"}), "data"),
            (json!({"type": "user.created", "data": [user]}), "data"),
            (json!({"type": "user.created", "data": {}}), "data.id"),
            (json!({"type": "user.updated", "data": {"id": "u1", "updatedAt": "yesterday"}}), "data.updatedAt"),
            (json!({"type": "user.updated", "data": {"id": "u1", "email": 5}}), "data.email"),
            (json!({"type": "user.deleted", "data": user}), "timestamp"),
            (json!({"type": "user.deleted", "timestamp": "noon", "data": user}), "timestamp"),
            (json!({"type": "user.deleted", "timestamp": "2026-03-30T12:00:00Z", "data": {"id": ""}}), "data.id"),
        ];
        for (body, field) in cases {
            assert_eq!(parse_json(&body), Err(ParseError::Field(field)), "{body}");
        }
    }
}
