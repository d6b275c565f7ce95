//! The provider seam: every auth provider verifies a webhook delivery on its raw bytes and
//! parses it into provider-neutral [`UserChange`]s. Nothing here touches a database.
//!
//! Adding a provider means: a variant of [`ProviderKind`], a module with `verify` and
//! `parse`, and one arm in each dispatch function below.
pub mod auth0;
pub mod better_auth;
pub mod clerk;
pub mod fields;
pub mod svix;
pub mod timestamps;

/// Fixture access for the provider modules' tests: `../shared/fixtures` beside the repo.
#[cfg(test)]
pub(crate) mod test_fixtures {
    use super::Delivery;
    use crate::users::UserChange;
    use chrono::{DateTime, Utc};
    use std::path::PathBuf;

    pub fn dir() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"))
    }

    pub fn bytes(provider: &str, name: &str) -> Vec<u8> {
        let path = dir().join(provider).join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub fn json(provider: &str, name: &str) -> serde_json::Value {
        serde_json::from_slice(&bytes(provider, name)).expect("fixture is JSON")
    }

    pub fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("test timestamp")
    }

    /// A fixed receive time for parsing.
    pub fn received() -> DateTime<Utc> {
        utc("2030-01-01T00:00:00Z")
    }

    /// `Some(text.to_owned())`, for expected columns.
    pub fn s(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    pub fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("{key} is a string"))
    }

    /// The one change of a handled delivery of `event_type`.
    pub fn single(delivery: Delivery, event_type: &str) -> UserChange {
        assert_eq!(delivery.event_type, event_type);
        assert!(!delivery.unhandled);
        match <[UserChange; 1]>::try_from(delivery.changes) {
            Ok([change]) => change,
            Err(changes) => panic!("expected one change, got {changes:?}"),
        }
    }

    pub fn assert_unhandled(delivery: &Delivery, event_type: &str) {
        assert_eq!(delivery.event_type, event_type);
        assert!(delivery.unhandled);
        assert!(delivery.changes.is_empty());
    }
}

use chrono::{DateTime, Utc};
use http::HeaderMap;

use crate::users::UserChange;

/// The providers the service knows. The string forms are part of the contract (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Clerk,
    Auth0,
    BetterAuth,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [ProviderKind::Clerk, ProviderKind::Auth0, ProviderKind::BetterAuth];

    /// The control-plane name, also stored in the control database.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Clerk => "clerk",
            ProviderKind::Auth0 => "auth0",
            ProviderKind::BetterAuth => "better_auth",
        }
    }

    /// The segment of the public webhook path.
    pub fn path_segment(self) -> &'static str {
        match self {
            ProviderKind::Clerk => "clerk",
            ProviderKind::Auth0 => "auth0",
            ProviderKind::BetterAuth => "better-auth",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    pub fn from_path_segment(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.path_segment() == s)
    }

    /// Whether the provider has an API the service can page through.
    pub fn supports_backfill(self) -> bool {
        matches!(self, ProviderKind::Clerk)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one authenticated delivery asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The provider's event type (`user.created`, …), for logs and counters.
    pub event_type: String,
    /// The changes to apply, in order. Empty when the event type is not one the sync uses.
    pub changes: Vec<UserChange>,
    /// True when the event type is not one the sync uses (answered 200 "unhandled_event").
    pub unhandled: bool,
}

/// Why a delivery failed authentication. Always answered 401; the body is never parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp header is not a number")]
    BadTimestamp,
    #[error("timestamp is outside the tolerance window")]
    TimestampOutOfTolerance,
    #[error("no signature matched")]
    NoMatchingSignature,
    #[error("webhook secret is not usable")]
    BadSecret,
}

/// Why an authenticated body is not the provider's event shape. Answered 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("missing or invalid field `{0}`")]
    Field(&'static str),
}

/// Verifies a delivery on its raw bytes. Returns the provider's delivery id when it has one.
pub fn verify(
    provider: ProviderKind,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<String>, VerifyError> {
    match provider {
        ProviderKind::Clerk => svix::verify(secret, headers, body, now).map(Some),
        ProviderKind::Auth0 => auth0::verify(secret, headers).map(|()| None),
        ProviderKind::BetterAuth => better_auth::verify(secret, headers, body).map(|()| None),
    }
}

/// Parses an authenticated delivery.
pub fn parse(provider: ProviderKind, body: &[u8], received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    match provider {
        ProviderKind::Clerk => clerk::parse_event(body, received_at),
        ProviderKind::Auth0 => auth0::parse(body, received_at),
        ProviderKind::BetterAuth => better_auth::parse(body, received_at),
    }
}
