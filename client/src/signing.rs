//! Owns the webhook signers of the three providers, as the providers themselves sign:
//! Clerk/Svix (`svix-id`, `svix-timestamp`, `svix-signature: v1,<base64 HMAC-SHA256>`), Auth0
//! (the shared secret in `Authorization`: bare, Bearer or Basic), and Better Auth's two
//! senders: the official `@better-auth/webhooks` plugin (`x-better-auth-webhook-id`,
//! `x-better-auth-webhook-signature: t=<seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`) and
//! the `databaseHooks` snippet (`X-Better-Auth-Signature`, lowercase hex HMAC-SHA256 of the
//! body). Used by tests and by `send-test-webhook`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::pb::Provider;

type HmacSha256 = Hmac<Sha256>;

/// Header names.
pub const SVIX_ID: &str = "svix-id";
pub const SVIX_TIMESTAMP: &str = "svix-timestamp";
pub const SVIX_SIGNATURE: &str = "svix-signature";
pub const AUTHORIZATION: &str = "authorization";
pub const BETTER_AUTH_SIGNATURE: &str = "x-better-auth-signature";
pub const BETTER_AUTH_WEBHOOK_ID: &str = "x-better-auth-webhook-id";
pub const BETTER_AUTH_WEBHOOK_SIGNATURE: &str = "x-better-auth-webhook-signature";
pub const USER_AGENT: &str = "user-agent";
/// What the Better Auth webhooks plugin sends as `user-agent` and `content-type`.
pub const BETTER_AUTH_WEBHOOKS_USER_AGENT: &str = "Better-Auth-Webhooks/1.0";
pub const BETTER_AUTH_WEBHOOKS_CONTENT_TYPE: &str = "application/json; charset=utf-8";
pub const CONTENT_TYPE: &str = "content-type";

/// Which of Better Auth's two senders a test delivery imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BetterAuthSender {
    /// The official `@better-auth/webhooks` plugin (`x-better-auth-webhook-signature`).
    #[default]
    Plugin,
    /// A `databaseHooks` snippet posting the CapyDB envelope (`x-better-auth-signature`).
    DatabaseHooks,
}

/// A secret that cannot be used to sign. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The Clerk/Svix secret is not `whsec_` followed by standard base64.
    #[error("invalid Clerk webhook signing secret: expected whsec_ followed by base64")]
    InvalidSvixSecret,
    /// `Provider::Unspecified` was given where a provider is needed.
    #[error("a provider is required (clerk, auth0 or better_auth)")]
    UnspecifiedProvider,
}

/// Svix / Standard Webhooks signature: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`
/// where key = base64-decode of the secret after `whsec_` (a secret without the prefix is
/// decoded as a whole, like the Svix libraries do). `timestamp` is in seconds.
pub fn svix_signature(secret_whsec: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, SigningError> {
    let encoded = secret_whsec.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    let key = BASE64.decode(encoded).map_err(|_| SigningError::InvalidSvixSecret)?;
    if key.is_empty() {
        return Err(SigningError::InvalidSvixSecret);
    }
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| SigningError::InvalidSvixSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// Better Auth signature: lowercase hex HMAC-SHA256 of `body`, keyed with the UTF-8 bytes of
/// `secret` exactly as configured.
pub fn better_auth_signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Better Auth webhooks plugin signature (its `signWebhookPayload`): lowercase hex
/// HMAC-SHA256 of `"{timestamp}.{body}"` keyed with the UTF-8 bytes of `secret`; `timestamp`
/// in seconds.
pub fn better_auth_plugin_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The plugin's `x-better-auth-webhook-signature` value: `t=<timestamp>,v1=<hex>`.
pub fn better_auth_plugin_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", better_auth_plugin_signature(secret, timestamp, body))
}

/// A fresh delivery id shaped like the plugin's (`crypto.randomUUID()`, a version-4 UUID).
/// Unique, not cryptographically random.
pub fn new_webhook_id() -> String {
    let digest = Sha256::digest(unique_suffix(32).as_bytes());
    let mut b: [u8; 16] = digest[..16].try_into().expect("32-byte digest");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A fresh Svix-style message id (`msg_` + 27 base62 characters).
pub fn new_message_id() -> String {
    format!("msg_{}", unique_suffix(27))
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `n` base62 characters that differ on every call (hash of the clock, the process id and a
/// counter; unique, not cryptographically random).
pub(crate) fn unique_suffix(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut out = String::with_capacity(n);
    let mut round = 0u32;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update(nanos.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        h.update(round.to_le_bytes());
        for b in h.finalize() {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
        round += 1;
    }
    out
}

/// A webhook body with the headers a provider would send with it (including
/// `content-type: application/json`). `Debug` redacts the `authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Lower-case header names and their values, in sending order.
    pub headers: Vec<(String, String)>,
    /// The exact bytes that were signed; send them unmodified.
    pub body: Vec<u8>,
}

impl SignedRequest {
    fn new(body: Vec<u8>, auth_headers: Vec<(&str, String)>) -> Self {
        let mut headers = vec![(CONTENT_TYPE.to_string(), "application/json".to_string())];
        headers.extend(auth_headers.into_iter().map(|(k, v)| (k.to_string(), v)));
        SignedRequest { headers, body }
    }

    /// Clerk (Svix): `svix-id`, `svix-timestamp` (seconds), `svix-signature`.
    pub fn clerk(
        secret_whsec: &str,
        msg_id: &str,
        timestamp: i64,
        body: impl Into<Vec<u8>>,
    ) -> Result<Self, SigningError> {
        let body = body.into();
        let sig = svix_signature(secret_whsec, msg_id, timestamp, &body)?;
        Ok(Self::new(
            body,
            vec![(SVIX_ID, msg_id.to_string()), (SVIX_TIMESTAMP, timestamp.to_string()), (SVIX_SIGNATURE, sig)],
        ))
    }

    /// Clerk (Svix) with a fresh message id and the current time.
    pub fn clerk_now(secret_whsec: &str, body: impl Into<Vec<u8>>) -> Result<Self, SigningError> {
        Self::clerk(secret_whsec, &new_message_id(), unix_now(), body)
    }

    /// Auth0 Event Streams bearer auth: `authorization: Bearer <secret>`.
    pub fn auth0(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(body.into(), vec![(AUTHORIZATION, format!("Bearer {secret}"))])
    }

    /// Auth0 Log Streams "Authorization Token": `authorization: <secret>` (bare).
    pub fn auth0_bare(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(body.into(), vec![(AUTHORIZATION, secret.to_string())])
    }

    /// Auth0 Event Streams basic auth: `authorization: Basic base64(user:secret)` (the
    /// receiver checks the password only).
    pub fn auth0_basic(user: &str, secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let credentials = BASE64.encode(format!("{user}:{secret}"));
        Self::new(body.into(), vec![(AUTHORIZATION, format!("Basic {credentials}"))])
    }

    /// Better Auth's `databaseHooks` snippet (the CapyDB envelope):
    /// `x-better-auth-signature: <lowercase hex HMAC-SHA256 of the body>`.
    pub fn better_auth(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let sig = better_auth_signature(secret, &body);
        Self::new(body, vec![(BETTER_AUTH_SIGNATURE, sig)])
    }

    /// Better Auth's official webhooks plugin, with the headers it sends:
    /// `content-type: application/json; charset=utf-8`, `x-better-auth-webhook-id`,
    /// `x-better-auth-webhook-signature: t=<timestamp>,v1=<hex>`, `user-agent`.
    /// `webhook_id` should equal the body's `id`, as the plugin's does.
    pub fn better_auth_plugin(secret: &str, webhook_id: &str, timestamp: i64, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let signature = better_auth_plugin_header(secret, timestamp, &body);
        let headers = vec![
            (CONTENT_TYPE.to_string(), BETTER_AUTH_WEBHOOKS_CONTENT_TYPE.to_string()),
            (BETTER_AUTH_WEBHOOK_ID.to_string(), webhook_id.to_string()),
            (BETTER_AUTH_WEBHOOK_SIGNATURE.to_string(), signature),
            (USER_AGENT.to_string(), BETTER_AUTH_WEBHOOKS_USER_AGENT.to_string()),
        ];
        SignedRequest { headers, body }
    }

    /// [`SignedRequest::better_auth_plugin`] signed now, with the body's `id` as the delivery
    /// id (a fresh one when the body has none), as the plugin sends a first attempt and
    /// each retry (a retry re-signs the same body with a fresh `t`).
    pub fn better_auth_plugin_now(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
            .unwrap_or_else(new_webhook_id);
        Self::better_auth_plugin(secret, &id, unix_now(), body)
    }

    /// Signs `body` as `provider` would (Clerk: fresh id, current time; Auth0: bearer;
    /// Better Auth: its official webhooks plugin, signed now).
    pub fn for_provider(provider: Provider, secret: &str, body: impl Into<Vec<u8>>) -> Result<Self, SigningError> {
        match provider {
            Provider::Clerk => Self::clerk_now(secret, body),
            Provider::Auth0 => Ok(Self::auth0(secret, body)),
            Provider::BetterAuth => Ok(Self::better_auth_plugin_now(secret, body)),
            Provider::Unspecified => Err(SigningError::UnspecifiedProvider),
        }
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The headers as a `reqwest`/`http` header map.
    pub fn header_map(&self) -> reqwest::header::HeaderMap {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(name), Ok(mut value)) =
                (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
            {
                if k == AUTHORIZATION {
                    value.set_sensitive(true);
                }
                map.append(name, value);
            }
        }
        map
    }
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case(AUTHORIZATION) {
                    (k.as_str(), "<redacted>")
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        f.debug_struct("SignedRequest")
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture(rel: &str) -> Value {
        let path = format!("{}/../../shared/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("{key} missing in {v}"))
    }

    /// `payload`, or `payload_repeat: {char, count}`.
    fn payload(v: &Value) -> Vec<u8> {
        if let Some(p) = v["payload"].as_str() {
            return p.as_bytes().to_vec();
        }
        let rep = &v["payload_repeat"];
        let c = s(rep, "char");
        let count = rep["count"].as_u64().expect("payload_repeat.count") as usize;
        c.repeat(count).into_bytes()
    }

    #[test]
    fn svix_verbatim_vectors() {
        let doc = fixture("clerk/svix_test_vectors.json");
        let vectors = doc["verbatim"].as_array().expect("verbatim");
        assert_eq!(vectors.len(), 5);
        let mut repeat_seen = 0;
        for v in vectors {
            if v.get("payload_repeat").is_some() {
                repeat_seen += 1;
            }
            let got =
                svix_signature(s(v, "secret"), s(v, "msg_id"), v["timestamp"].as_i64().unwrap(), &payload(v)).unwrap();
            assert_eq!(got, s(v, "expected_signature"), "{}", s(v, "name"));
        }
        assert_eq!(repeat_seen, 3);
    }

    #[test]
    fn svix_derived_vector_and_rotation_header() {
        let doc = fixture("clerk/svix_test_vectors.json");
        let d = &doc["derived_not_from_source"];
        let ts: i64 = s(d, "svix-timestamp").parse().unwrap();
        let body = s(d, "body").as_bytes();
        let got = svix_signature(s(d, "secret"), s(d, "svix-id"), ts, body).unwrap();
        assert_eq!(got, s(d, "svix-signature"));
        assert!(s(d, "svix-signature_rotation").split(' ').any(|entry| entry == got));
        let tampered =
            svix_signature(s(d, "secret"), s(d, "svix-id"), ts, s(d, "tampered_body_expect_reject").as_bytes())
                .unwrap();
        assert_ne!(tampered, got);

        let req = SignedRequest::clerk(s(d, "secret"), s(d, "svix-id"), ts, body).unwrap();
        assert_eq!(req.header("svix-id"), Some(s(d, "svix-id")));
        assert_eq!(req.header("Svix-Timestamp"), Some(s(d, "svix-timestamp")));
        assert_eq!(req.header("svix-signature"), Some(s(d, "svix-signature")));
        assert_eq!(req.body, body);
    }

    #[test]
    fn svix_negative_vectors_do_not_match() {
        let doc = fixture("clerk/svix_test_vectors.json");
        let verbatim = doc["verbatim"].as_array().unwrap();
        for n in doc["verbatim_negative"].as_array().unwrap() {
            let bad = s(n, "bad_signature_header");
            let Some(secret) = n["secret"].as_str() else {
                // Headers without their own inputs: no positive vector may appear in them.
                for v in verbatim {
                    assert!(!bad.split(' ').any(|e| e == s(v, "expected_signature")));
                }
                continue;
            };
            // The Rust negative has no timestamp of its own: use the matching positive one.
            let ts = n["timestamp"].as_i64().unwrap_or_else(|| {
                verbatim
                    .iter()
                    .find(|v| s(v, "secret") == secret && s(v, "msg_id") == s(n, "msg_id"))
                    .and_then(|v| v["timestamp"].as_i64())
                    .unwrap()
            });
            let got = svix_signature(secret, s(n, "msg_id"), ts, &payload(n)).unwrap();
            assert!(!bad.split(' ').any(|e| e == got), "{}", s(n, "source"));
        }
    }

    #[test]
    fn standard_webhooks_vectors() {
        let doc = fixture("better-auth/standard-webhooks.test-vectors.json");
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 2);
        for v in vectors {
            let got = svix_signature(
                s(v, "secret"),
                s(v, "webhook-id"),
                v["webhook-timestamp"].as_i64().unwrap(),
                &payload(v),
            )
            .unwrap();
            assert_eq!(got, s(v, "expected_signature"), "{}", s(v, "source"));
        }
        let must_not = s(&doc["negative"], "signature_that_must_not_verify");
        let first = &vectors[0];
        let got = svix_signature(
            s(first, "secret"),
            s(first, "webhook-id"),
            first["webhook-timestamp"].as_i64().unwrap(),
            &payload(first),
        )
        .unwrap();
        assert_ne!(got, must_not);
    }

    #[test]
    fn better_auth_vector() {
        let v = fixture("better-auth/x-better-auth-signature.vector.COMPUTED.json");
        let got = better_auth_signature(s(&v, "secret"), s(&v, "body").as_bytes());
        assert_eq!(got, s(&v, "expected_signature_hex"));
        assert_eq!(got, got.to_ascii_lowercase());
        let tampered = better_auth_signature(s(&v, "secret"), s(&v, "tampered_body").as_bytes());
        assert_ne!(tampered, got);

        let req = SignedRequest::better_auth(s(&v, "secret"), s(&v, "body"));
        assert_eq!(req.header("X-Better-Auth-Signature"), Some(got.as_str()));
        assert_eq!(req.header("content-type"), Some("application/json"));
    }

    #[test]
    fn better_auth_plugin_vector() {
        let v = fixture("better-auth/better-auth-webhooks-plugin.vector.COMPUTED.json");
        let (secret, body, t) = (s(&v, "secret"), s(&v, "body"), v["timestamp_seconds"].as_i64().unwrap());
        let sent = &v["headers"];
        assert_eq!(better_auth_plugin_header(secret, t, body.as_bytes()), s(sent, "x-better-auth-webhook-signature"));
        let tampered = better_auth_plugin_header(secret, t, s(&v, "tampered_body").as_bytes());
        assert_ne!(tampered, s(sent, "x-better-auth-webhook-signature"));
        // Another timestamp is another signature.
        assert_ne!(
            better_auth_plugin_header(secret, t + 1, body.as_bytes()),
            s(sent, "x-better-auth-webhook-signature")
        );

        // The request carries exactly the headers the plugin sends.
        let req = SignedRequest::better_auth_plugin(secret, s(sent, "x-better-auth-webhook-id"), t, body);
        let mut headers: Vec<(String, String)> = req.headers.clone();
        headers.sort();
        let mut expected: Vec<(String, String)> =
            sent.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
        expected.sort();
        assert_eq!(headers, expected);
        assert_eq!(req.body, body.as_bytes());
        // The delivery id is taken from the body, as the plugin's equals it.
        let body_id = serde_json::from_str::<Value>(body).unwrap()["id"].as_str().unwrap().to_string();
        assert_eq!(SignedRequest::better_auth_plugin_now(secret, body).header(BETTER_AUTH_WEBHOOK_ID), Some(&*body_id));
    }

    #[test]
    fn webhook_ids_are_fresh_v4_uuids() {
        let (a, b) = (new_webhook_id(), new_webhook_id());
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        // A body without an id gets a fresh one.
        assert_eq!(
            SignedRequest::better_auth_plugin_now("secret", "{}").header(BETTER_AUTH_WEBHOOK_ID).unwrap().len(),
            36
        );
    }

    #[test]
    fn invalid_svix_secret_is_an_error_without_the_secret() {
        for bad in ["whsec_not*base64!", "whsec_", "sk_test_abc$"] {
            let err = svix_signature(bad, "msg_1", 1, b"{}").unwrap_err();
            assert_eq!(err, SigningError::InvalidSvixSecret);
            assert_eq!(err.to_string(), "invalid Clerk webhook signing secret: expected whsec_ followed by base64");
        }
        // Without the prefix the whole string is the base64 key.
        assert_eq!(
            svix_signature(
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                b"{\"test\": 2432232314}"
            )
            .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn auth0_headers_and_redacted_debug() {
        let req = SignedRequest::auth0("a-shared-secret-0123", "{}");
        assert_eq!(req.header("Authorization"), Some("Bearer a-shared-secret-0123"));
        assert!(!format!("{req:?}").contains("a-shared-secret"));
        let bare = SignedRequest::auth0_bare("a-shared-secret-0123", "{}");
        assert_eq!(bare.header("authorization"), Some("a-shared-secret-0123"));
        let basic = SignedRequest::auth0_basic("auth0", "a-shared-secret-0123", "{}");
        assert_eq!(basic.header("authorization"), Some("Basic YXV0aDA6YS1zaGFyZWQtc2VjcmV0LTAxMjM="));
        assert!(!format!("{basic:?}").contains("YXV0aDA6"));
        let map = req.header_map();
        assert_eq!(map.get("authorization").unwrap(), "Bearer a-shared-secret-0123");
        assert_eq!(map.get("content-type").unwrap(), "application/json");
    }

    #[test]
    fn for_provider_signs_like_each_provider() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let clerk = SignedRequest::for_provider(Provider::Clerk, secret, "{}").unwrap();
        let id = clerk.header("svix-id").unwrap();
        let ts: i64 = clerk.header("svix-timestamp").unwrap().parse().unwrap();
        assert!(id.starts_with("msg_") && id.len() == 31);
        assert!((unix_now() - ts).abs() < 5);
        assert_eq!(clerk.header("svix-signature").unwrap(), svix_signature(secret, id, ts, b"{}").unwrap());
        assert!(SignedRequest::for_provider(Provider::Auth0, "x", "{}").unwrap().header("authorization").is_some());
        let better_auth = SignedRequest::for_provider(Provider::BetterAuth, "x", r#"{"id":"evt-1"}"#).unwrap();
        assert_eq!(better_auth.header(BETTER_AUTH_WEBHOOK_ID), Some("evt-1"));
        let signature = better_auth.header(BETTER_AUTH_WEBHOOK_SIGNATURE).unwrap();
        let t: i64 = signature.strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
        assert!((unix_now() - t).abs() < 5);
        assert_eq!(signature, better_auth_plugin_header("x", t, br#"{"id":"evt-1"}"#));
        assert!(better_auth.header(BETTER_AUTH_SIGNATURE).is_none());
        assert_eq!(
            SignedRequest::for_provider(Provider::Unspecified, "x", "{}"),
            Err(SigningError::UnspecifiedProvider)
        );
        assert_ne!(new_message_id(), new_message_id());
    }
}
