//! A client of Clerk's Backend API for what the sync needs: list users (a bare JSON array),
//! get one user by id (reconciliation asks before it deletes), count users, check a secret
//! key. It owns the client-side rate limit and sorts failures for the one retry policy
//! (`backfill::retry`):
//!
//! - a limiter per secret key, sized by key type (`sk_test_`: development instance,
//!   `sk_live_`: production), at Clerk's documented rate and backing off on 429s (AIMD, see
//!   `backfill::limiter`);
//! - 429: wait `Retry-After` seconds (Clerk's own word), slow the limiter, retry;
//! - 5xx, timeouts, connection errors and truncated bodies: jittered exponential backoff, up
//!   to `max_attempts`;
//! - 401/403: fail at once — the secret key was rejected; other 4xx: fail with Clerk's message.
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::limiter::AdaptiveLimiter;
use super::page::RawPage;
use super::retry::{with_retries, Retry, RetryPolicy};
use crate::config::ClerkSettings;

/// The Backend API version this client speaks (sent as `Clerk-API-Version`).
pub const CLERK_API_VERSION: &str = "2025-04-10";

#[derive(Debug, thiserror::Error)]
pub enum ClerkApiError {
    #[error("Clerk rejected the secret key (HTTP {status}): {message}")]
    KeyRejected { status: u16, message: String },
    #[error("Clerk API unreachable after {attempts} attempts: {last}")]
    Unreachable { attempts: u32, last: String },
    #[error("Clerk API error (HTTP {status}, {code}): {message}")]
    Api { status: u16, code: String, message: String },
}

impl ClerkApiError {
    pub fn is_key_rejected(&self) -> bool {
        matches!(self, ClerkApiError::KeyRejected { .. })
    }
}

/// Makes API clients; shares one limiter per secret key across all jobs of this process.
#[derive(Clone)]
pub struct ClerkApiFactory {
    http: reqwest::Client,
    settings: ClerkSettings,
    limiters: Arc<Mutex<HashMap<[u8; 32], Arc<AdaptiveLimiter>>>>,
}

impl ClerkApiFactory {
    pub fn new(settings: ClerkSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5).min(settings.timeout))
            .user_agent(concat!("capydb-auth-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client with static settings");
        ClerkApiFactory { http, settings, limiters: Arc::new(Mutex::new(HashMap::new())) }
    }

    pub fn client(&self, secret_key: SecretString) -> ClerkApi {
        let fingerprint: [u8; 32] = Sha256::digest(secret_key.expose_secret().as_bytes()).into();
        let per_window = if secret_key.expose_secret().starts_with("sk_live_") {
            self.settings.rate_limit_live
        } else {
            self.settings.rate_limit_test
        };
        let limiter = self
            .limiters
            .lock()
            .expect("limiter map poisoned")
            .entry(fingerprint)
            .or_insert_with(|| Arc::new(AdaptiveLimiter::new(per_window, self.settings.rate_window)))
            .clone();
        ClerkApi { http: self.http.clone(), settings: self.settings.clone(), key: secret_key, limiter }
    }

    pub fn settings(&self) -> &ClerkSettings {
        &self.settings
    }
}

/// One secret key's view of the Backend API.
pub struct ClerkApi {
    http: reqwest::Client,
    settings: ClerkSettings,
    key: SecretString,
    limiter: Arc<AdaptiveLimiter>,
}

/// One try's failure, sorted for the retry policy.
#[derive(Debug)]
enum Failure {
    Transient(String),
    Throttled(Duration),
    Fatal(ClerkApiError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(reason) => f.write_str(reason),
            Failure::Throttled(wait) => write!(f, "Clerk answered 429; Retry-After {:.1} s", wait.as_secs_f64()),
            Failure::Fatal(e) => e.fmt(f),
        }
    }
}

/// 429s tolerated in a row before a call gives up.
const MAX_THROTTLED: u32 = 100;

/// What a 2xx body turned out to be, for the retry policy.
enum Body<T> {
    /// Read.
    Ok(T),
    /// Not JSON (truncated on the way): a transport failure, fetched again.
    Truncated,
    /// JSON, but not what the endpoint returns: Clerk's answer, not retried.
    Unexpected(&'static str),
}

/// An answer: the body read, or Clerk's 404.
enum Answer<T> {
    Found(T),
    NotFound(Bytes),
}

impl ClerkApi {
    /// `GET /v1/users` with the given query: the page as the bytes Clerk sent, split into
    /// its users' objects (a bare JSON array; see `backfill::page`).
    pub async fn list_users_page(&self, query: &[(&str, String)]) -> Result<RawPage, ClerkApiError> {
        let read = |body: &Bytes| match RawPage::split(body) {
            Some(page) => Body::Ok(page),
            None => not_json_or("GET /v1/users did not return a JSON array", body),
        };
        match self.get("/v1/users", query, self.settings.max_attempts, read).await? {
            Answer::Found(page) => Ok(page),
            Answer::NotFound(body) => Err(api_error(404, &body)),
        }
    }

    /// `GET /v1/users/{id}`: the user, or `None` when Clerk answers 404 (the user is gone).
    pub async fn get_user(&self, id: &str) -> Result<Option<Value>, ClerkApiError> {
        let path = format!("/v1/users/{}", urlencode_path(id));
        let read = |body: &Bytes| match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => Body::Ok(v),
            Ok(_) => Body::Unexpected("GET /v1/users/{id} did not return a user object"),
            Err(_) => Body::Truncated,
        };
        match self.get(&path, &[], self.settings.max_attempts, read).await? {
            Answer::Found(user) => Ok(Some(user)),
            Answer::NotFound(_) => Ok(None),
        }
    }

    /// `GET /v1/users/count`.
    pub async fn count_users(&self) -> Result<i64, ClerkApiError> {
        let read = |body: &Bytes| match serde_json::from_slice::<Value>(body) {
            Ok(v) => match v.get("total_count").and_then(Value::as_i64) {
                Some(n) => Body::Ok(n),
                None => Body::Unexpected("GET /v1/users/count has no total_count"),
            },
            Err(_) => Body::Truncated,
        };
        match self.get("/v1/users/count", &[], self.settings.max_attempts, read).await? {
            Answer::Found(n) => Ok(n),
            Answer::NotFound(body) => Err(api_error(404, &body)),
        }
    }

    /// Checks the key with the cheapest call there is.
    /// Someone is waiting on this one (ConfigureIntegration), so it tries only twice.
    pub async fn verify_key(&self) -> Result<(), ClerkApiError> {
        let read = |body: &Bytes| not_json_or_ok(body);
        match self.get("/v1/users", &[("limit", "1".to_string())], 2, read).await? {
            Answer::Found(()) => Ok(()),
            Answer::NotFound(body) => Err(api_error(404, &body)),
        }
    }

    /// A GET under the limiter and the retry policy. A 2xx body is handed to `read`; a 404
    /// is returned (the caller decides what it means); everything else is retried or becomes
    /// an error.
    async fn get<T>(
        &self,
        path: &str,
        query: &[(&str, String)],
        max_attempts: u32,
        read: impl Fn(&Bytes) -> Body<T>,
    ) -> Result<Answer<T>, ClerkApiError> {
        let url = format!("{}{}", self.settings.api_url, path);
        let policy = RetryPolicy {
            base: self.settings.retry_base,
            max_attempts: max_attempts.max(1),
            max_throttled: MAX_THROTTLED,
        };
        let result = with_retries(
            &policy,
            path,
            || self.try_once(&url, query, &read),
            |f| match f {
                Failure::Transient(_) => Retry::Backoff,
                Failure::Throttled(wait) => Retry::After(*wait),
                Failure::Fatal(_) => Retry::No,
            },
        )
        .await;
        result.map_err(|e| match e.error {
            Failure::Fatal(e) => e,
            Failure::Transient(last) => ClerkApiError::Unreachable { attempts: e.attempts, last },
            Failure::Throttled(_) => ClerkApiError::Unreachable {
                attempts: e.attempts,
                last: format!("rate limited {MAX_THROTTLED} times in a row"),
            },
        })
    }

    async fn try_once<T>(
        &self,
        url: &str,
        query: &[(&str, String)],
        read: &impl Fn(&Bytes) -> Body<T>,
    ) -> Result<Answer<T>, Failure> {
        // Held until the whole answer is in: the limiter dates the request from then.
        let permit = self.limiter.acquire().await;
        let resp = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(self.key.expose_secret())
            .header("Clerk-API-Version", CLERK_API_VERSION)
            .send()
            .await
            .map_err(|e| Failure::Transient(describe_transport(&e)))?;
        let status = resp.status().as_u16();
        if status == 429 {
            metrics::counter!("capydb_auth_sync_clerk_throttled_total").increment(1);
            let wait = retry_after(&resp).unwrap_or(Duration::from_secs(1));
            self.limiter.on_throttled(wait);
            return Err(Failure::Throttled(wait));
        }
        if let Some(reset) = window_spent(&resp) {
            self.limiter.on_exhausted(reset);
        }
        let body = resp.bytes().await.map_err(|e| Failure::Transient(describe_transport(&e)))?;
        drop(permit);
        match status {
            200..=299 => {
                self.limiter.on_success();
                match read(&body) {
                    Body::Ok(value) => Ok(Answer::Found(value)),
                    // A truncated body is a transport failure, not an answer.
                    Body::Truncated => Err(Failure::Transient("truncated or invalid JSON body".into())),
                    Body::Unexpected(message) => Err(Failure::Fatal(unexpected(message))),
                }
            }
            404 => Ok(Answer::NotFound(body)),
            401 | 403 => Err(Failure::Fatal(ClerkApiError::KeyRejected { status, message: clerk_message(&body).1 })),
            500..=599 => Err(Failure::Transient(format!("HTTP {status}: {}", clerk_message(&body).1))),
            _ => Err(Failure::Fatal(api_error(status, &body))),
        }
    }
}

/// A body that is not what was expected: truncated (not JSON) or Clerk's unexpected answer.
fn not_json_or<T>(message: &'static str, body: &[u8]) -> Body<T> {
    match not_json_or_ok(body) {
        Body::Ok(()) => Body::Unexpected(message),
        _ => Body::Truncated,
    }
}

fn not_json_or_ok(body: &[u8]) -> Body<()> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => Body::Ok(()),
        Err(_) => Body::Truncated,
    }
}

fn api_error(status: u16, body: &[u8]) -> ClerkApiError {
    let (code, message) = clerk_message(body);
    ClerkApiError::Api { status, code, message }
}

fn unexpected(message: &str) -> ClerkApiError {
    ClerkApiError::Api { status: 200, code: "unexpected_body".into(), message: message.into() }
}

/// A user id as one path segment (Clerk ids are `user_` + base62; anything else is escaped).
fn urlencode_path(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` (seconds): the window is spent.
fn window_spent(resp: &reqwest::Response) -> Option<Duration> {
    let header = |name: &str| resp.headers().get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let remaining = header("x-ratelimit-remaining")?;
    let reset = header("x-ratelimit-reset")?;
    (remaining <= 0.0 && reset.is_finite() && reset > 0.0).then(|| Duration::from_secs_f64(reset.min(60.0)))
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

/// `(code, message)` from Clerk's `{"errors":[{message,long_message,code}]}`.
fn clerk_message(body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let first = parsed.as_ref().and_then(|v| v.get("errors")).and_then(|e| e.get(0));
    let text = |k: &str| first.and_then(|f| f.get(k)).and_then(Value::as_str).map(str::to_string);
    let code = text("code").unwrap_or_else(|| "unknown".into());
    let message = text("long_message").or_else(|| text("message")).unwrap_or_else(|| "no error message".into());
    (code, message)
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // Without the URL: only the error kind and its cause.
        let mut msg = "transport error".to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_clerk_error_bodies() {
        let body = br#"{"errors":[{"message":"short","long_message":"The provided Clerk Secret Key is invalid.","code":"clerk_key_invalid"}]}"#;
        assert_eq!(
            clerk_message(body),
            ("clerk_key_invalid".into(), "The provided Clerk Secret Key is invalid.".into())
        );
        assert_eq!(clerk_message(b"<html>").0, "unknown");
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(urlencode_path("user_2abcXYZ"), "user_2abcXYZ");
        assert_eq!(urlencode_path("a/b?c"), "a%2Fb%3Fc");
    }
}
