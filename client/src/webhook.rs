//! Owns realistic test webhook events for each provider (what `send-test-webhook` sends) and a
//! small HTTP sender for signed deliveries, plus the receiver URL layout
//! `{base}/api/capydb/v1/integrations/{segment}/webhook/{project_id}`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use crate::pb::Provider;
use crate::provider::webhook_segment;
use crate::signing::{unique_suffix, SignedRequest};

/// Where the server's webhook receiver listens by default (`HTTP_ADDR`).
pub const DEFAULT_WEBHOOK_BASE: &str = "http://127.0.0.1:8080";

/// `{base}/api/capydb/v1/integrations/{segment}/webhook/{project_id}`; `None` for
/// `Provider::Unspecified`.
pub fn webhook_url(base: &str, provider: Provider, project_id: &str) -> Option<String> {
    let segment = webhook_segment(provider)?;
    Some(format!("{}/api/capydb/v1/integrations/{segment}/webhook/{project_id}", base.trim_end_matches('/')))
}

/// Which user event to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestEventKind {
    #[default]
    Created,
    Updated,
    Deleted,
}

impl TestEventKind {
    /// The event type name: `user.created`, `user.updated`, `user.deleted`.
    pub fn event_type(self) -> &'static str {
        match self {
            TestEventKind::Created => "user.created",
            TestEventKind::Updated => "user.updated",
            TestEventKind::Deleted => "user.deleted",
        }
    }
}

impl fmt::Display for TestEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.event_type())
    }
}

/// An unknown event kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}: expected user.created, user.updated or user.deleted")]
pub struct ParseEventKindError(pub String);

impl FromStr for TestEventKind {
    type Err = ParseEventKindError;
    /// `user.created` / `created` (and likewise for updated, deleted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase();
        match norm.strip_prefix("user.").unwrap_or(&norm) {
            "created" => Ok(TestEventKind::Created),
            "updated" => Ok(TestEventKind::Updated),
            "deleted" => Ok(TestEventKind::Deleted),
            _ => Err(ParseEventKindError(s.to_string())),
        }
    }
}

/// A built test event.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEvent {
    pub provider: Provider,
    pub kind: TestEventKind,
    /// The provider user id the event is about (`user_test_…`, `auth0|test…`, or 32
    /// alphanumerics for Better Auth), as it lands in `capydb_auth.users.id`.
    pub user_id: String,
    /// The whole event body.
    pub event: Value,
}

impl TestEvent {
    /// The body as compact JSON bytes (sign and send exactly these).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.event).expect("a serde_json::Value always serializes")
    }
}

/// A fresh user id in the provider's format.
pub fn new_test_user_id(provider: Provider) -> String {
    match provider {
        Provider::Auth0 => format!("auth0|test{}", unique_suffix(20).to_ascii_lowercase()),
        Provider::BetterAuth => unique_suffix(32),
        Provider::Clerk | Provider::Unspecified => format!("user_test_{}", unique_suffix(22)),
    }
}

/// Builds a realistic `kind` event for `provider` about `user_id` (fresh id when `None`),
/// timestamped now. `None` for `Provider::Unspecified`.
pub fn test_event(provider: Provider, kind: TestEventKind, user_id: Option<&str>) -> Option<TestEvent> {
    test_event_at(provider, kind, user_id, Utc::now().timestamp_millis())
}

/// [`test_event`] at a fixed time (`now_ms`, Unix milliseconds): deterministic apart from the
/// generated ids.
pub fn test_event_at(provider: Provider, kind: TestEventKind, user_id: Option<&str>, now_ms: i64) -> Option<TestEvent> {
    if provider == Provider::Unspecified {
        return None;
    }
    let user_id = user_id.map(str::to_string).unwrap_or_else(|| new_test_user_id(provider));
    // Updated/deleted users were created a day earlier.
    let created_ms = match kind {
        TestEventKind::Created => now_ms,
        _ => now_ms - 86_400_000,
    };
    let handle = handle_of(&user_id);
    let email = format!("{handle}@example.com");
    let event = match provider {
        Provider::Clerk => clerk_event(kind, &user_id, &handle, &email, created_ms, now_ms),
        Provider::Auth0 => auth0_event(kind, &user_id, &handle, &email, created_ms, now_ms),
        Provider::BetterAuth => better_auth_event(kind, &user_id, &handle, &email, created_ms, now_ms),
        Provider::Unspecified => unreachable!("checked above"),
    };
    Some(TestEvent { provider, kind, user_id, event })
}

/// A lower-case username derived from the id (`user_test_AbC` → `test_abc`).
fn handle_of(user_id: &str) -> String {
    let tail = user_id.rsplit(['|', '_']).next().unwrap_or(user_id).to_ascii_lowercase();
    let tail: String = tail.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("test_{tail}")
}

fn iso(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn clerk_event(kind: TestEventKind, user_id: &str, handle: &str, email: &str, created_ms: i64, now_ms: i64) -> Value {
    let data = if kind == TestEventKind::Deleted {
        json!({ "deleted": true, "id": user_id, "object": "user" })
    } else {
        let email_id = format!("idn_test_{}", unique_suffix(22));
        json!({
            "id": user_id,
            "object": "user",
            "username": handle,
            "first_name": "Test",
            "last_name": if kind == TestEventKind::Updated { "User (updated)" } else { "User" },
            "image_url": "https://img.clerk.com/capydb-test-avatar.png",
            "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
            "has_image": false,
            "primary_email_address_id": email_id,
            "primary_phone_number_id": null,
            "primary_web3_wallet_id": null,
            "email_addresses": [{
                "id": email_id,
                "object": "email_address",
                "email_address": email,
                "linked_to": [],
                "verification": { "status": "verified", "strategy": "email_code" }
            }],
            "phone_numbers": [],
            "web3_wallets": [],
            "external_accounts": [],
            "external_id": null,
            "password_enabled": true,
            "two_factor_enabled": false,
            "banned": false,
            "locked": false,
            "public_metadata": {},
            "private_metadata": {},
            "unsafe_metadata": {},
            "created_at": created_ms,
            "updated_at": now_ms,
            "last_sign_in_at": null,
            "last_active_at": null
        })
    };
    json!({
        "data": data,
        "instance_id": "ins_capydb_test",
        "object": "event",
        "timestamp": now_ms,
        "type": kind.event_type()
    })
}

fn auth0_event(kind: TestEventKind, user_id: &str, handle: &str, email: &str, created_ms: i64, now_ms: i64) -> Value {
    let local_id = user_id.split_once('|').map_or(user_id, |(_, id)| id);
    let mut profile = json!({
        "user_id": user_id,
        "email": email,
        "email_verified": true,
        "username": handle,
        "given_name": "Test",
        "family_name": if kind == TestEventKind::Updated { "User (updated)" } else { "User" },
        "name": "Test User",
        "nickname": handle,
        "picture": "https://s.gravatar.com/avatar/capydb-test?s=480&r=pg&d=mp",
        "created_at": iso(created_ms),
        "updated_at": iso(now_ms),
        "identities": [{
            "connection": "Username-Password-Authentication",
            "provider": "auth0",
            "user_id": local_id,
            "isSocial": false
        }],
        "app_metadata": {},
        "user_metadata": {}
    });
    if kind == TestEventKind::Deleted {
        profile["deleted_at"] = json!(iso(now_ms));
    }
    json!({
        "specversion": "1.0",
        "type": kind.event_type(),
        "source": "urn:auth0:capydb-test.us.auth0.com",
        "id": format!("evt_{}", unique_suffix(22)),
        "time": iso(now_ms),
        "data": { "object": profile },
        "a0tenant": "capydb-test",
        "a0stream": "est_capydbtest"
    })
}

/// What Better Auth's official webhooks plugin posts: `{id, type, timestamp, data}`, `data`
/// being the user row as `JSON.stringify` emits it.
fn better_auth_event(
    kind: TestEventKind,
    user_id: &str,
    handle: &str,
    email: &str,
    created_ms: i64,
    now_ms: i64,
) -> Value {
    json!({
        "id": crate::signing::new_webhook_id(),
        "type": kind.event_type(),
        "timestamp": iso(now_ms),
        "data": {
            "id": user_id,
            "name": if kind == TestEventKind::Updated { "Test User (updated)" } else { "Test User" },
            "email": email,
            "emailVerified": true,
            "image": null,
            "createdAt": iso(created_ms),
            "updatedAt": iso(now_ms),
            "username": handle,
            "displayUsername": handle
        }
    })
}

impl TestEvent {
    /// A Better Auth event as a `databaseHooks` snippet posts it instead of the plugin:
    /// the CapyDB envelope `{"event", "user"}`. `None` for other providers.
    pub fn better_auth_envelope(&self) -> Option<TestEvent> {
        if self.provider != Provider::BetterAuth {
            return None;
        }
        let event = json!({ "event": self.kind.event_type(), "user": self.event["data"] });
        Some(TestEvent { event, ..self.clone() })
    }
}

/// The answer of the webhook receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub body: String,
    /// The `Retry-After` header, if any (sent with 503).
    pub retry_after: Option<String>,
}

impl WebhookResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A delivery that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error("POST {url} failed: {reason}")]
pub struct WebhookSendError {
    pub url: String,
    pub reason: String,
}

/// POSTs a signed delivery to `url` and returns the receiver's answer (any HTTP status).
pub async fn post_signed(
    url: &str,
    request: &SignedRequest,
    timeout: Duration,
) -> Result<WebhookResponse, WebhookSendError> {
    // The URL is already in the message; reqwest would repeat it.
    let fail = |e: reqwest::Error| WebhookSendError { url: url.to_string(), reason: chain(&e.without_url()) };
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("capydb-auth-sync-admin/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(fail)?;
    let resp = http.post(url).headers(request.header_map()).body(request.body.clone()).send().await.map_err(fail)?;
    let status = resp.status().as_u16();
    let retry_after =
        resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.text().await.map_err(fail)?;
    Ok(WebhookResponse { status, body, retry_after })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_717_000_000_123;

    #[test]
    fn urls() {
        assert_eq!(
            webhook_url(DEFAULT_WEBHOOK_BASE, Provider::BetterAuth, "p1").unwrap(),
            "http://127.0.0.1:8080/api/capydb/v1/integrations/better-auth/webhook/p1"
        );
        assert_eq!(
            webhook_url("https://capydb.dev/", Provider::Clerk, "p1").unwrap(),
            "https://capydb.dev/api/capydb/v1/integrations/clerk/webhook/p1"
        );
        assert!(webhook_url("x", Provider::Unspecified, "p1").is_none());
    }

    #[test]
    fn clerk_created_event_shape() {
        let ev = test_event_at(Provider::Clerk, TestEventKind::Created, None, NOW).unwrap();
        assert!(ev.user_id.starts_with("user_test_"));
        let e = &ev.event;
        assert_eq!(e["type"], "user.created");
        assert_eq!(e["object"], "event");
        assert_eq!(e["timestamp"], NOW);
        let d = &e["data"];
        assert_eq!(d["id"], ev.user_id.as_str());
        assert_eq!(d["created_at"], NOW);
        assert_eq!(d["updated_at"], NOW);
        assert_eq!(d["email_addresses"][0]["id"], d["primary_email_address_id"]);
        assert!(d["email_addresses"][0]["email_address"].as_str().unwrap().ends_with("@example.com"));
        assert_eq!(d["first_name"], "Test");
    }

    #[test]
    fn clerk_deleted_event_is_minimal() {
        let ev = test_event_at(Provider::Clerk, TestEventKind::Deleted, Some("user_x"), NOW).unwrap();
        assert_eq!(ev.event["data"], json!({"deleted": true, "id": "user_x", "object": "user"}));
        assert_eq!(ev.event["type"], "user.deleted");
    }

    #[test]
    fn auth0_cloudevent_shape() {
        let ev = test_event_at(Provider::Auth0, TestEventKind::Updated, None, NOW).unwrap();
        assert!(ev.user_id.starts_with("auth0|test"));
        let e = &ev.event;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "user.updated");
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(e["time"], "2024-05-29T16:26:40.123Z");
        let p = &e["data"]["object"];
        assert_eq!(p["user_id"], ev.user_id.as_str());
        assert_eq!(p["updated_at"], "2024-05-29T16:26:40.123Z");
        assert_eq!(p["created_at"], "2024-05-28T16:26:40.123Z");
    }

    #[test]
    fn better_auth_plugin_and_envelope_shapes() {
        let ev = test_event_at(Provider::BetterAuth, TestEventKind::Created, None, NOW).unwrap();
        assert_eq!(ev.user_id.len(), 32);
        assert!(ev.user_id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(ev.event["type"], "user.created");
        assert_eq!(ev.event["timestamp"], "2024-05-29T16:26:40.123Z");
        assert_eq!(ev.event["id"].as_str().unwrap().len(), 36);
        assert_eq!(ev.event["data"]["id"], ev.user_id.as_str());
        assert_eq!(ev.event["data"]["createdAt"], "2024-05-29T16:26:40.123Z");
        let body = ev.body();
        let back: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, ev.event);

        let envelope = ev.better_auth_envelope().unwrap();
        assert_eq!(envelope.event, json!({"event": "user.created", "user": ev.event["data"]}));
        assert_eq!(envelope.user_id, ev.user_id);
        let clerk = test_event_at(Provider::Clerk, TestEventKind::Created, None, NOW).unwrap();
        assert!(clerk.better_auth_envelope().is_none());
    }

    #[test]
    fn event_kinds_parse() {
        assert_eq!("user.created".parse(), Ok(TestEventKind::Created));
        assert_eq!("updated".parse(), Ok(TestEventKind::Updated));
        assert_eq!("USER.DELETED".parse(), Ok(TestEventKind::Deleted));
        assert!("user.banned".parse::<TestEventKind>().is_err());
        assert!(test_event(Provider::Unspecified, TestEventKind::Created, None).is_none());
    }
}
