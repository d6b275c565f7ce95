//! A Better Auth app without the webhooks plugin posts from its `databaseHooks` with
//! CapyDB's envelope `{"event": "user.created" | "user.updated" | "user.deleted", "user":
//! {…}}`, signed with `X-Better-Auth-Signature` = hex HMAC-SHA256 of the raw body, keyed with
//! the UTF-8 bytes of the configured secret.
//!
//! There is no timestamp header; replays are harmless under the merge rules. Deletions in
//! Better Auth are hard deletes, so the time of receipt is the deletion time.
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::{record_from, required_id, ENVELOPE_LABELS};
use crate::providers::{Delivery, ParseError, VerifyError};
use crate::users::{UserChange, UserDeletion};

pub const USER_CREATED: &str = "user.created";
pub const USER_UPDATED: &str = "user.updated";
pub const USER_DELETED: &str = "user.deleted";

/// The signature header (matched case-insensitively, as every HTTP header name).
pub const SIGNATURE_HEADER: &str = "x-better-auth-signature";

/// Verifies `X-Better-Auth-Signature`: the hex (lower- or upper-case) HMAC-SHA256 of `body`
/// keyed with the UTF-8 bytes of `secret` exactly as configured, compared in constant time.
///
/// Errors: [`VerifyError::BadSecret`] for an empty secret; [`VerifyError::MissingHeader`]
/// `"x-better-auth-signature"`; [`VerifyError::NoMatchingSignature`] when the value is not
/// 64 hex digits (surrounding whitespace aside) or does not match.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::BadSecret);
    }
    let header = headers.get(SIGNATURE_HEADER).ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
    let signature = hex::decode(header.as_bytes().trim_ascii()).map_err(|_| VerifyError::NoMatchingSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| VerifyError::BadSecret)?;
    mac.update(body);
    // Constant time; a signature of the wrong length is simply a mismatch.
    mac.verify_slice(&signature).map_err(|_| VerifyError::NoMatchingSignature)
}

/// Parses an authenticated envelope `{"event", "user"}`.
///
/// `user.created` / `user.updated` upsert the user; `user.deleted` soft-deletes it at
/// `received_at`; any other event is unhandled (its `user` is not inspected). Errors:
/// [`ParseError::Field`] `"event"` (missing or not a string), `"user"` (a handled event
/// without an object `user`), or `"user.<field>"` for a bad field.
pub fn parse(mut envelope: Map<String, Value>, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    let event_type = match envelope.get("event") {
        Some(Value::String(event)) => event.clone(),
        _ => return Err(ParseError::Field("event")),
    };
    if !matches!(event_type.as_str(), USER_CREATED | USER_UPDATED | USER_DELETED) {
        return Ok(Delivery::unhandled(event_type));
    }
    let user = match envelope.remove("user") {
        Some(Value::Object(user)) => user,
        _ => return Err(ParseError::Field("user")),
    };
    let change = if event_type == USER_DELETED {
        // A hard delete in Better Auth: the time of receipt is the deletion time.
        let id = required_id(&user, &ENVELOPE_LABELS)?;
        UserChange::Delete(UserDeletion { id, deleted_at: received_at, raw: Value::Object(user).into() })
    } else {
        UserChange::Upsert(record_from(Value::Object(user), &ENVELOPE_LABELS)?)
    };
    Ok(Delivery::handled(event_type, vec![change]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::better_auth::{user_from_better_auth, BetterAuth};
    use crate::providers::test_fixtures::{assert_unhandled, received, s, single, str_field, utc};
    use crate::providers::Provider;
    use crate::users::UserRecord;
    use http::HeaderValue;
    use serde_json::json;

    fn fixture_bytes(name: &str) -> Vec<u8> {
        crate::providers::test_fixtures::bytes("better-auth", name)
    }

    fn fixture_json(name: &str) -> Value {
        crate::providers::test_fixtures::json("better-auth", name)
    }

    fn signature_headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(value).expect("header value"));
        headers
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// (secret, body, expected signature, tampered body) of the COMPUTED vector.
    fn vector() -> (String, String, String, String) {
        let v = fixture_json("x-better-auth-signature.vector.COMPUTED.json");
        assert_eq!(str_field(&v, "header").to_ascii_lowercase(), SIGNATURE_HEADER);
        assert_eq!(v["tampered_body_must_fail"], json!(true));
        (
            str_field(&v, "secret").to_owned(),
            str_field(&v, "body").to_owned(),
            str_field(&v, "expected_signature_hex").to_owned(),
            str_field(&v, "tampered_body").to_owned(),
        )
    }

    /// Through the provider, as a delivery is parsed: the body's shape picks the envelope.
    fn parse(body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
        BetterAuth.parse(&bytes::Bytes::copy_from_slice(body), received_at)
    }

    fn parse_fixture(name: &str) -> Delivery {
        parse(&fixture_bytes(name), received()).expect("fixture parses")
    }

    fn parse_json(body: &Value) -> Result<Delivery, ParseError> {
        parse(body.to_string().as_bytes(), received())
    }

    // ---- verify ----------------------------------------------------------------------

    #[test]
    fn computed_vector_verifies() {
        let (secret, body, expected, _) = vector();
        // Our HMAC agrees with the independently computed one...
        assert_eq!(sign(&secret, body.as_bytes()), expected);
        // ...and verify accepts it, in lower, upper and mixed case, with stray whitespace.
        let mixed: String =
            expected.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
        for sig in [expected.clone(), expected.to_ascii_uppercase(), mixed, format!(" {expected}\t")] {
            assert_eq!(verify(&secret, &signature_headers(&sig), body.as_bytes()), Ok(()), "{sig:?}");
        }
        // Header names are case-insensitive on the wire; `http` lower-cases them.
        let mut headers = HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(b"X-Better-Auth-Signature").expect("name"),
            HeaderValue::from_str(&expected).expect("value"),
        );
        assert_eq!(verify(&secret, &headers, body.as_bytes()), Ok(()));
    }

    #[test]
    fn computed_vector_tampered_body_rejects() {
        let (secret, body, expected, tampered) = vector();
        assert_ne!(body, tampered);
        for sig in [expected.clone(), expected.to_ascii_uppercase()] {
            assert_eq!(
                verify(&secret, &signature_headers(&sig), tampered.as_bytes()),
                Err(VerifyError::NoMatchingSignature)
            );
        }
        // Re-serialising the same JSON (e.g. pretty-printed) is a different body too.
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).expect("json")).expect("json");
        assert_eq!(
            verify(&secret, &signature_headers(&expected), pretty.as_bytes()),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn computed_vector_body_parses_like_the_created_fixture() {
        let (_, body, _, tampered) = vector();
        let delivery = parse(body.as_bytes(), received()).expect("parses");
        assert_eq!(delivery, parse_fixture("capydb-envelope.user.created.CONSTRUCTED.json"));
        let UserChange::Upsert(record) = single(parse(tampered.as_bytes(), received()).expect("parses"), USER_CREATED)
        else {
            panic!("an upsert")
        };
        assert_eq!(record.first_name, s("Ada Lovelacf"));
    }

    #[test]
    fn wrong_secret_or_bad_signatures_reject() {
        let (secret, body, expected, _) = vector();
        let body = body.as_bytes();
        let other_secret = format!("{secret}x");
        assert_eq!(verify(&other_secret, &signature_headers(&expected), body), Err(VerifyError::NoMatchingSignature));
        // The secret is its UTF-8 text, not the bytes its hex spells.
        let hex_key = hex::decode(&secret).expect("the made-up secret happens to be hex");
        let mut mac = Hmac::<Sha256>::new_from_slice(&hex_key).expect("key");
        mac.update(body);
        let hex_keyed = hex::encode(mac.finalize().into_bytes());
        assert_eq!(verify(&secret, &signature_headers(&hex_keyed), body), Err(VerifyError::NoMatchingSignature));

        let mut flipped = expected.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        for sig in [
            flipped,
            expected[..62].to_owned(),
            expected[..63].to_owned(),
            format!("{expected}00"),
            format!("sha256={expected}"),
            format!("v1,{expected}"),
            expected.replace('a', "g"),
            "".to_owned(),
            "zz".to_owned(),
            "0".repeat(64),
        ] {
            assert_eq!(
                verify(&secret, &signature_headers(&sig), body),
                Err(VerifyError::NoMatchingSignature),
                "{sig:?}"
            );
        }
        // Non-ASCII bytes in the header are not hex.
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_bytes(b"\xffab").expect("value"));
        assert_eq!(verify(&secret, &headers, body), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn standard_webhooks_signatures_are_not_better_auth_signatures() {
        // A Standard Webhooks `v1,<base64>` signature, even of the right secret and payload,
        // is not what this header carries.
        let vectors = fixture_json("standard-webhooks.test-vectors.json");
        for v in vectors["vectors"].as_array().expect("vectors") {
            let (secret, payload) = (str_field(v, "secret"), str_field(v, "payload"));
            let headers = signature_headers(str_field(v, "expected_signature"));
            assert_eq!(verify(secret, &headers, payload.as_bytes()), Err(VerifyError::NoMatchingSignature));
            // The same secret and payload signed the Better Auth way verifies.
            let headers = signature_headers(&sign(secret, payload.as_bytes()));
            assert_eq!(verify(secret, &headers, payload.as_bytes()), Ok(()));
        }
        let multi = str_field(&vectors, "multi_signature_header_example_from_spec");
        assert_eq!(
            verify("some-secret-0123456789", &signature_headers(multi), b"{}"),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn missing_header_or_unusable_secret() {
        let (secret, body, expected, _) = vector();
        assert_eq!(
            verify(&secret, &HeaderMap::new(), body.as_bytes()),
            Err(VerifyError::MissingHeader("x-better-auth-signature"))
        );
        // The community plugin's header is not ours.
        let mut headers = HeaderMap::new();
        headers.insert("x-signature", HeaderValue::from_str(&format!("sha256={expected}")).expect("value"));
        assert_eq!(
            verify(&secret, &headers, body.as_bytes()),
            Err(VerifyError::MissingHeader("x-better-auth-signature"))
        );
        // An empty configured secret never authenticates, even with a matching empty-key HMAC.
        let empty_keyed = sign("", body.as_bytes());
        assert_eq!(verify("", &signature_headers(&empty_keyed), body.as_bytes()), Err(VerifyError::BadSecret));
    }

    #[test]
    fn the_secret_is_used_exactly_as_configured() {
        let body = b"{\"event\":\"user.created\",\"user\":{\"id\":\"u1\"}}";
        for secret in ["  spaced secret 0123456789  ", "\u{e9}t\u{e9}-secret-\u{1f510}-0123456789", "short"] {
            let headers = signature_headers(&sign(secret, body));
            assert_eq!(verify(secret, &headers, body), Ok(()), "{secret:?}");
        }
        // Surrounding whitespace is part of the key: trimming it changes the HMAC.
        let spaced = "  spaced secret 0123456789  ";
        let headers = signature_headers(&sign(spaced, body));
        assert_eq!(verify(spaced.trim(), &headers, body), Err(VerifyError::NoMatchingSignature));
    }

    // ---- parse -----------------------------------------------------------------------

    #[test]
    fn created_fixture() {
        let name = "capydb-envelope.user.created.CONSTRUCTED.json";
        let UserChange::Upsert(record) = single(parse_fixture(name), USER_CREATED) else { panic!("an upsert") };
        assert_eq!(
            record,
            UserRecord {
                id: "Xk3pQ9vL2mN7rT4wY8zA1bC5dE6fG0hJ".into(),
                email: s("ada@example.com"),
                // No firstName: the whole `name`.
                first_name: s("Ada Lovelace"),
                last_name: None,
                username: s("ada_l"),
                image_url: None,
                created_at: Some(utc("2025-03-14T09:26:53.589Z")),
                updated_at: Some(utc("2025-03-14T09:26:53.589Z")),
                last_sign_in_at: None,
                raw: fixture_json(name)["user"].clone().into(),
            }
        );
    }

    #[test]
    fn updated_fixture() {
        let name = "capydb-envelope.user.updated.CONSTRUCTED.json";
        let UserChange::Upsert(record) = single(parse_fixture(name), USER_UPDATED) else { panic!("an upsert") };
        assert_eq!(
            record,
            UserRecord {
                id: "Xk3pQ9vL2mN7rT4wY8zA1bC5dE6fG0hJ".into(),
                email: s("ada@example.com"),
                first_name: s("Ada King"),
                last_name: None,
                username: s("ada_l"),
                image_url: s("https://lh3.googleusercontent.com/a/ACg8ocExample=s96-c"),
                created_at: Some(utc("2025-03-14T09:26:53.589Z")),
                updated_at: Some(utc("2025-03-15T18:02:11.034Z")),
                last_sign_in_at: None,
                raw: fixture_json(name)["user"].clone().into(),
            }
        );
    }

    #[test]
    fn deleted_fixture_is_deleted_at_the_time_of_receipt() {
        let name = "capydb-envelope.user.deleted.CONSTRUCTED.json";
        let change = single(parse_fixture(name), USER_DELETED);
        assert_eq!(
            change,
            UserChange::Delete(UserDeletion {
                id: "Xk3pQ9vL2mN7rT4wY8zA1bC5dE6fG0hJ".into(),
                deleted_at: received(),
                raw: fixture_json(name)["user"].clone().into(),
            })
        );
        // Whatever times the user object carries.
        let mut body = fixture_json(name);
        body["user"]["deletedAt"] = json!("2025-01-01T00:00:00Z");
        let UserChange::Delete(d) = single(parse_json(&body).expect("parses"), USER_DELETED) else { panic!("delete") };
        assert_eq!(d.deleted_at, received());
        // A delete needs only an id.
        let UserChange::Delete(d) =
            single(parse_json(&json!({"event": "user.deleted", "user": {"id": "u1"}})).expect("parses"), USER_DELETED)
        else {
            panic!("delete")
        };
        assert_eq!(d, UserDeletion { id: "u1".into(), deleted_at: received(), raw: json!({"id": "u1"}).into() });
    }

    #[test]
    fn other_events_are_unhandled() {
        let user = fixture_json("capydb-envelope.user.created.CONSTRUCTED.json")["user"].clone();
        for event in ["session.created", "user.create", "USER.CREATED", "com.auth0.user.created", ""] {
            assert_unhandled(&parse_json(&json!({"event": event, "user": user})).expect("parses"), event);
        }
        // The user of an unhandled event is not inspected.
        assert_unhandled(
            &parse_json(&json!({"event": "account.linked", "user": 5})).expect("parses"),
            "account.linked",
        );
    }

    #[test]
    fn community_plugin_payload_is_not_this_shape() {
        // Its `type` makes it look like the official plugin's, whose `data` is the user row.
        let body = fixture_bytes("community-better-auth-webhooks.user.created.json");
        assert_eq!(parse(&body, received()), Err(ParseError::Field("data.id")));
    }

    #[test]
    fn malformed_bodies() {
        for body in [&b""[..], b"not json", b"{\"event\": \"user.created\",", b"{\"event\":\"user.created\"} {}"] {
            assert!(
                matches!(parse(body, received()), Err(ParseError::NotJson(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let user = json!({"id": "u1"});
        let cases = [
            (json!([{"event": "user.created", "user": user}]), "event"),
            (json!("user.created"), "event"),
            (json!({"user": user}), "event"),
            (json!({"event": null, "user": user}), "event"),
            (json!({"event": 1, "user": user}), "event"),
            (json!({"type": "user.created", "user": user}), "data"),
            (json!({"event": "user.created"}), "user"),
            (json!({"event": "user.updated", "user": null}), "user"),
            (json!({"event": "user.deleted", "user": "u1"}), "user"),
            (json!({"event": "user.created", "user": {}}), "user.id"),
            (json!({"event": "user.deleted", "user": {"id": ""}}), "user.id"),
            (json!({"event": "user.deleted", "user": {"id": 1.5}}), "user.id"),
            (json!({"event": "user.updated", "user": {"id": "u1", "email": 7}}), "user.email"),
            (json!({"event": "user.updated", "user": {"id": "u1", "updatedAt": "yesterday"}}), "user.updatedAt"),
        ];
        for (body, field) in cases {
            assert_eq!(parse_json(&body), Err(ParseError::Field(field)), "{body}");
        }
    }

    // ---- user_from_better_auth -------------------------------------------------------

    #[test]
    fn user_from_better_auth_agrees_with_webhook_parse() {
        for name in ["capydb-envelope.user.created.CONSTRUCTED.json", "capydb-envelope.user.updated.CONSTRUCTED.json"] {
            let record = user_from_better_auth(&fixture_json(name)["user"]).expect("maps");
            assert_eq!(parse_fixture(name).changes, vec![UserChange::Upsert(record)], "{name}");
        }
    }

    #[test]
    fn name_fields() {
        let base = json!({"id": "u1", "name": "Ada King"});
        let map = |extra: Value| {
            let mut user = base.clone();
            user.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
            let r = user_from_better_auth(&user).expect("maps");
            (r.first_name, r.last_name)
        };
        assert_eq!(map(json!({})), (s("Ada King"), None));
        assert_eq!(map(json!({"firstName": "Ada", "lastName": "Lovelace"})), (s("Ada"), s("Lovelace")));
        assert_eq!(map(json!({"lastName": "Lovelace"})), (s("Ada King"), s("Lovelace")));
        // A null firstName is no firstName.
        assert_eq!(map(json!({"firstName": null, "lastName": null})), (s("Ada King"), None));
        assert_eq!(map(json!({"name": null})), (None, None));
    }

    #[test]
    fn times_and_sign_ins() {
        let user = json!({
            "id": "u1",
            "createdAt": 1_716_883_200_000_i64,
            "updatedAt": "2024-05-28T10:05:00+02:00",
            "lastLoginAt": "2024-05-28T08:03:20Z"
        });
        let r = user_from_better_auth(&user).expect("maps");
        assert_eq!(r.created_at, Some(utc("2024-05-28T08:00:00Z")));
        assert_eq!(r.updated_at, Some(utc("2024-05-28T08:05:00Z")));
        assert_eq!(r.last_sign_in_at, Some(utc("2024-05-28T08:03:20Z")));
        // lastSignInAt wins over lastLoginAt.
        let mut both = user.clone();
        both["lastSignInAt"] = json!(1_716_883_300_000_i64);
        assert_eq!(user_from_better_auth(&both).expect("maps").last_sign_in_at, Some(utc("2024-05-28T08:01:40Z")));
        both["lastSignInAt"] = Value::Null;
        assert_eq!(user_from_better_auth(&both).expect("maps").last_sign_in_at, Some(utc("2024-05-28T08:03:20Z")));
        for (key, label) in [
            ("createdAt", "user.createdAt"),
            ("updatedAt", "user.updatedAt"),
            ("lastSignInAt", "user.lastSignInAt"),
            ("lastLoginAt", "user.lastLoginAt"),
        ] {
            let mut bad = json!({"id": "u1"});
            bad[key] = json!("2024-05-28");
            assert_eq!(user_from_better_auth(&bad), Err(ParseError::Field(label)), "{key}");
        }
    }

    #[test]
    fn ids() {
        assert_eq!(user_from_better_auth(&json!({"id": "abc"})).expect("maps").id, "abc");
        // Numeric ids (`useNumberId` / serial ids) are stored as text.
        let r = user_from_better_auth(&json!({"id": 42})).expect("maps");
        assert_eq!((r.id.as_str(), r.raw.to_value()), ("42", json!({"id": 42})));
        assert_eq!(user_from_better_auth(&json!({"id": -7})).expect("maps").id, "-7");
        for bad in
            [json!({}), json!({"id": null}), json!({"id": ""}), json!({"id": 4.2}), json!({"id": [1]}), json!("u1")]
        {
            assert_eq!(user_from_better_auth(&bad), Err(ParseError::Field("user.id")), "{bad}");
        }
    }

    #[test]
    fn raw_keeps_every_key_and_value() {
        let mut body = fixture_json("capydb-envelope.user.updated.CONSTRUCTED.json");
        body["user"]["role"] = json!("admin");
        body["user"]["banned"] = json!(false);
        body["user"]["metadata"] = json!({"nested": [1, 2.5, "x", null, true], "huge": u64::MAX});
        let UserChange::Upsert(record) = single(parse_json(&body).expect("parses"), USER_UPDATED) else {
            panic!("an upsert")
        };
        assert_eq!(record.raw, body["user"]);
        for (key, label) in [("email", "user.email"), ("username", "user.username"), ("image", "user.image")] {
            let mut bad = json!({"id": "u1"});
            bad[key] = json!({"not": "a string"});
            assert_eq!(user_from_better_auth(&bad), Err(ParseError::Field(label)), "{key}");
        }
    }
}
