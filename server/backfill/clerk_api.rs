//! A client of Clerk's Backend API for what the sync needs: list users (a bare JSON array),
//! count users, check a secret key. It owns the client-side rate limit and the retry policy:
//!
//! - a limiter per secret key, sized by key type (`sk_test_`: development instance,
//!   `sk_live_`: production), running at 90 % of Clerk's documented rate with a small burst,
//!   so Clerk's own limiter should never fire;
//! - 429: wait `Retry-After` seconds (Clerk's own word), then retry;
//! - 5xx, timeouts, connection errors and truncated bodies: exponential backoff with jitter,
//!   up to `max_attempts`;
//! - 401/403: fail at once — the secret key was rejected; other 4xx: fail with Clerk's message.
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    limiters: Arc<Mutex<HashMap<[u8; 32], Arc<DefaultDirectRateLimiter>>>>,
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
            .or_insert_with(|| Arc::new(limiter(per_window, self.settings.rate_window)))
            .clone();
        ClerkApi { http: self.http.clone(), settings: self.settings.clone(), key: secret_key, limiter }
    }

    pub fn settings(&self) -> &ClerkSettings {
        &self.settings
    }
}

/// 90 % of `per_window` requests per window, burst of a tenth of that.
fn limiter(per_window: u32, window: Duration) -> DefaultDirectRateLimiter {
    let effective = ((per_window as u64 * 9) / 10).max(1) as u32;
    let period = window / effective;
    let burst = NonZeroU32::new((effective / 10).max(1)).expect("max(1) is non-zero");
    let quota = Quota::with_period(period.max(Duration::from_micros(1))).expect("non-zero period").allow_burst(burst);
    RateLimiter::direct(quota)
}

/// One secret key's view of the Backend API.
pub struct ClerkApi {
    http: reqwest::Client,
    settings: ClerkSettings,
    key: SecretString,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl ClerkApi {
    /// `GET /v1/users` with the given query; the page as raw user objects.
    pub async fn list_users(&self, query: &[(&str, String)]) -> Result<Vec<Value>, ClerkApiError> {
        let body = self.get("/v1/users", query).await?;
        match body {
            Value::Array(users) => Ok(users),
            _ => Err(ClerkApiError::Api {
                status: 200,
                code: "unexpected_body".into(),
                message: "GET /v1/users did not return a JSON array".into(),
            }),
        }
    }

    /// `GET /v1/users/count`.
    pub async fn count_users(&self) -> Result<i64, ClerkApiError> {
        let body = self.get("/v1/users/count", &[]).await?;
        body.get("total_count").and_then(Value::as_i64).ok_or_else(|| ClerkApiError::Api {
            status: 200,
            code: "unexpected_body".into(),
            message: "GET /v1/users/count has no total_count".into(),
        })
    }

    /// Checks the key with the cheapest call there is.
    /// Someone is waiting on this one (ConfigureIntegration), so it tries only twice.
    pub async fn verify_key(&self) -> Result<(), ClerkApiError> {
        self.get_with_attempts("/v1/users", &[("limit", "1".to_string())], 2).await.map(|_| ())
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClerkApiError> {
        self.get_with_attempts(path, query, self.settings.max_attempts).await
    }

    async fn get_with_attempts(
        &self,
        path: &str,
        query: &[(&str, String)],
        max_attempts: u32,
    ) -> Result<Value, ClerkApiError> {
        let url = format!("{}{}", self.settings.api_url, path);
        let mut failures = 0u32;
        let mut throttles = 0u32;
        loop {
            self.limiter.until_ready().await;
            let sent = self
                .http
                .get(&url)
                .query(query)
                .bearer_auth(self.key.expose_secret())
                .header("Clerk-API-Version", CLERK_API_VERSION)
                .send()
                .await;
            let retry_reason = match sent {
                Err(e) => describe_transport(&e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 429 {
                        throttles += 1;
                        if throttles > 100 {
                            return Err(ClerkApiError::Unreachable {
                                attempts: throttles,
                                last: "rate limited 100 times in a row".into(),
                            });
                        }
                        let wait = retry_after(&resp).unwrap_or(Duration::from_secs(1));
                        tracing::warn!(
                            path,
                            wait_secs = wait.as_secs_f64(),
                            "Clerk answered 429; honouring Retry-After"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    match resp.bytes().await {
                        Err(e) => describe_transport(&e),
                        Ok(bytes) => match status {
                            200..=299 => match serde_json::from_slice::<Value>(&bytes) {
                                Ok(v) => return Ok(v),
                                Err(e) => format!("truncated or invalid JSON body: {e}"),
                            },
                            401 | 403 => {
                                return Err(ClerkApiError::KeyRejected { status, message: clerk_message(&bytes).1 });
                            }
                            500..=599 => format!("HTTP {status}: {}", clerk_message(&bytes).1),
                            _ => {
                                let (code, message) = clerk_message(&bytes);
                                return Err(ClerkApiError::Api { status, code, message });
                            }
                        },
                    }
                }
            };
            failures += 1;
            if failures >= max_attempts {
                return Err(ClerkApiError::Unreachable { attempts: failures, last: retry_reason });
            }
            let delay = backoff(self.settings.retry_base, failures);
            tracing::warn!(path, attempt = failures, delay_ms = delay.as_millis() as u64, reason = %retry_reason, "Clerk request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Exponential backoff with "equal jitter": uniform in [c/2, c] for c = base·2^(n-1), capped
/// at 30 s — never hammering, never waiting much longer than needed.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(Duration::from_secs(30));
    let ms = ceiling.as_millis().max(2) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
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
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            let d = backoff(base, attempt);
            assert!(d <= Duration::from_secs(30));
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(10)).min(Duration::from_secs(30));
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn reads_clerk_error_bodies() {
        let body = br#"{"errors":[{"message":"short","long_message":"The provided Clerk Secret Key is invalid.","code":"clerk_key_invalid"}]}"#;
        assert_eq!(
            clerk_message(body),
            ("clerk_key_invalid".into(), "The provided Clerk Secret Key is invalid.".into())
        );
        assert_eq!(clerk_message(b"<html>").0, "unknown");
    }
}
