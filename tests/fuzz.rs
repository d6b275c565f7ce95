//! Property-based fuzzing of everything that reads untrusted bytes before authentication or
//! right after it: the Svix, Auth0 and Better Auth verifiers (signature headers included),
//! the three body parsers and the project id parser. Properties: no panic on any input;
//! a correctly signed request verifies and any change to its body does not; parsers answer
//! `Ok` or a typed error for any JSON and any bytes.
//!
//! The default run is quick (256 cases a property, part of `cargo test`). For a long run:
//!
//!     PROPTEST_CASES=200000 cargo test --release --test fuzz
use capydb_auth_sync::domain::ProjectId;
use capydb_auth_sync::providers::{self, ProviderKind};
use capydb_auth_sync_client::signing;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SHARED: &str = "a-shared-secret-of-some-length";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(value) {
            map.append(HeaderName::from_static(name), v);
        }
    }
    map
}

/// Header names the verifiers read, with arbitrary values.
fn arbitrary_headers() -> impl Strategy<Value = HeaderMap> {
    let names = prop::sample::select(vec![
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "authorization",
        "x-better-auth-signature",
        "x-better-auth-webhook-id",
        "x-better-auth-webhook-signature",
    ]);
    prop::collection::vec((names, "\\PC{0,120}"), 0..8)
        .prop_map(|pairs| headers(&pairs.iter().map(|(n, v)| (*n, v.clone())).collect::<Vec<_>>()))
}

/// Arbitrary JSON, nested a few levels, with the field names providers look at.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "type",
        "event",
        "data",
        "user",
        "id",
        "object",
        "updated_at",
        "created_at",
        "timestamp",
        "email",
        "email_addresses",
        "primary_email_address_id",
        "user_id",
        "profile",
        "specversion",
        "time",
        "date",
        "log_id",
        "details",
        "userId",
        "createdAt",
        "updatedAt",
        "deleted",
        "last_login",
        "name",
    ])
    .prop_map(str::to_string);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "\\PC{0,24}".prop_map(Value::String),
        prop::sample::select(vec!["user.created", "user.updated", "user.deleted", "session.created", "s", "ss", "sdu"])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn verifiers_never_panic_on_arbitrary_headers_and_bodies(h in arbitrary_headers(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        for &kind in ProviderKind::ALL {
            let secret = if kind == ProviderKind::Clerk { WHSEC } else { SHARED };
            // Random input never verifies against a secret it was not signed with.
            prop_assert!(providers::verify(kind, secret, &h, &body, now()).is_err());
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_json(v in arbitrary_json()) {
        let body = v.to_string();
        for &kind in ProviderKind::ALL {
            let _ = providers::parse(kind, &bytes::Bytes::from(body.clone()), now());
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        for &kind in ProviderKind::ALL {
            let _ = providers::parse(kind, &bytes::Bytes::from(body.clone()), now());
        }
    }

    #[test]
    fn svix_signed_bodies_verify_and_any_change_does_not(body in prop::collection::vec(any::<u8>(), 1..512), flip in any::<prop::sample::Index>()) {
        let ts = now().timestamp();
        let sig = signing::svix_signature(WHSEC, "msg_1", ts, &body).unwrap();
        let h = headers(&[("svix-id", "msg_1".into()), ("svix-timestamp", ts.to_string()), ("svix-signature", sig)]);
        prop_assert!(providers::verify(ProviderKind::Clerk, WHSEC, &h, &body, now()).is_ok());
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x01;
        prop_assert!(providers::verify(ProviderKind::Clerk, WHSEC, &h, &tampered, now()).is_err());
    }

    #[test]
    fn better_auth_signed_bodies_verify_and_any_change_does_not(body in prop::collection::vec(any::<u8>(), 1..512), flip in any::<prop::sample::Index>()) {
        let ts = now().timestamp();
        let envelope = headers(&[("x-better-auth-signature", signing::better_auth_signature(SHARED, &body))]);
        prop_assert!(providers::verify(ProviderKind::BetterAuth, SHARED, &envelope, &body, now()).is_ok());
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x01;
        prop_assert!(providers::verify(ProviderKind::BetterAuth, SHARED, &envelope, &tampered, now()).is_err());
        // The plugin's scheme: any change to the body is refused too (the id header must match
        // the body's id, so an arbitrary body never passes both checks).
        let plugin = headers(&[
            ("x-better-auth-webhook-id", "00000000-0000-0000-0000-000000000000".into()),
            ("x-better-auth-webhook-signature", signing::better_auth_plugin_header(SHARED, ts, &tampered)),
        ]);
        let _ = providers::verify(ProviderKind::BetterAuth, SHARED, &plugin, &body, now());
    }

    #[test]
    fn project_ids_parse_exactly_the_documented_alphabet(s in "\\PC{0,80}") {
        let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(ProjectId::parse(&s).is_ok(), ok);
    }
}
