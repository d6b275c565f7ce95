//! The provider seam: everything that makes a provider what it is lives behind one trait,
//! [`Provider`] — its names and webhook path segment, its proto value, which webhook secrets
//! it accepts, how it verifies a delivery on the raw bytes, how it parses one into
//! provider-neutral [`UserChange`]s, and whether it has an API to backfill from — and every
//! provider is listed once, in the `registry!` invocation below. The rest of the service
//! holds a [`ProviderKind`] (parsed once where a name enters: the control store, a webhook
//! path segment, a proto enum value) and asks the registry; nothing outside this module
//! matches on providers. Nothing here touches a database.
//!
//! # Adding a provider
//! 1. One module, `providers/<name>.rs` (or a folder), with a unit struct implementing
//!    [`Provider`]: names, path segment, proto value, secret check, `verify`, `parse`,
//!    backfill or not.
//! 2. One registry line in `registry!` below, `Variant => module::Struct`: it declares the
//!    [`ProviderKind`] variant and its implementation together, so they cannot drift apart.
//! 3. The proto enum value `PROVIDER_<NAME>` in `proto/capydb/auth_sync/v1/auth_sync.proto`,
//!    returned by the new `Provider::proto` (a test fails while a proto value has no
//!    provider, or two).
//! 4. The client's name for it in `client/src/provider.rs` (and a test signer in
//!    `client/src/signing.rs`).
//!
//! Plus a control-store migration that admits the name in `integrations.provider`'s
//! `CHECK (provider IN (…))`. `supports_backfill` is true only for Clerk: the backfill runner
//! speaks Clerk's Backend API, so a backfill from another API is more than one module.
pub mod auth0;
pub mod better_auth;
pub mod clerk;
pub mod fields;
pub mod json_text;
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

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;

use crate::pb;
use crate::users::UserChange;

/// Everything one auth provider is. Implementations are stateless unit structs; the
/// registry hands out `&'static dyn Provider`.
pub trait Provider: Send + Sync + 'static {
    /// The control-plane name (SPEC §1), also the name stored in the control database.
    fn name(&self) -> &'static str;

    /// The segment of the public webhook path `/api/capydb/v1/integrations/{segment}/…`.
    fn path_segment(&self) -> &'static str;

    /// The proto enum value callers use for this provider.
    fn proto(&self) -> pb::Provider;

    /// Whether the provider has an API the service can page through (a backfill).
    fn supports_backfill(&self) -> bool;

    /// An SQL condition on `capydb_auth.users` that holds for the rows of this provider's
    /// users, told apart by their id (and `raw`): several integrations of a project may share
    /// one table, and the status counts each integration's rows only. The conditions of
    /// all providers never hold for the same row.
    fn table_rows(&self) -> &'static str;

    /// Checks a webhook secret as ConfigureIntegration receives it. The error says what
    /// is wrong in words a caller can act on, and never contains the secret.
    fn check_webhook_secret(&self, secret: &str) -> Result<(), String>;

    /// Verifies a delivery on its raw bytes, before anything parses the body. Returns the
    /// provider's delivery id when it has one that identifies a delivery across retries.
    fn verify(
        &self,
        secret: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<String>, VerifyError>;

    /// Parses an authenticated delivery into the changes it asks for.
    /// `body` is the received body itself, so a `raw` can be a slice of it (no copy).
    fn parse(&self, body: &Bytes, received_at: DateTime<Utc>) -> Result<Delivery, ParseError>;
}

/// Declares the providers: each line `Variant => module::Struct` is one [`ProviderKind`]
/// variant and its registry entry, so the two cannot drift apart.
macro_rules! registry {
    ($($variant:ident => $provider:path),+ $(,)?) => {
        /// The providers the service knows; [`ProviderKind::provider`] is the registry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProviderKind {
            $($variant),+
        }

        impl ProviderKind {
            /// Every provider, in registry order.
            pub const ALL: &'static [ProviderKind] = &[$(ProviderKind::$variant),+];

            /// The registry: the implementation of this provider.
            pub fn provider(self) -> &'static dyn Provider {
                match self {
                    $(ProviderKind::$variant => &$provider),+
                }
            }
        }
    };
}

registry! {
    Clerk => clerk::Clerk,
    Auth0 => auth0::Auth0,
    BetterAuth => better_auth::BetterAuth,
}

impl ProviderKind {
    /// The control-plane name, also stored in the control database.
    pub fn name(self) -> &'static str {
        self.provider().name()
    }

    /// The segment of the public webhook path.
    pub fn path_segment(self) -> &'static str {
        self.provider().path_segment()
    }

    /// Whether the provider has an API the service can page through.
    pub fn supports_backfill(self) -> bool {
        self.provider().supports_backfill()
    }

    /// The SQL condition selecting this provider's rows of `capydb_auth.users`.
    pub fn table_rows(self) -> &'static str {
        self.provider().table_rows()
    }

    /// The proto enum value of this provider.
    pub fn proto(self) -> pb::Provider {
        self.provider().proto()
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.name() == s)
    }

    pub fn from_path_segment(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.path_segment() == s)
    }

    /// The provider of a proto enum value; `None` for `PROVIDER_UNSPECIFIED`.
    pub fn from_proto(value: pb::Provider) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.proto() == value)
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
    /// Records of a batch that were skipped as unusable (Auth0 Log Streams: a record of a
    /// known code without a `user_id` or a readable `date`). The rest of the batch applies;
    /// the answer says how many were skipped and the counters count them as malformed.
    pub skipped: usize,
    /// The delivery's id when the provider puts it in the signed body rather than a header
    /// (an Auth0 Event Streams CloudEvent's `id`); for logs and the inbox.
    pub delivery_id: Option<String>,
}

impl Delivery {
    /// A delivery of a type the sync uses, asking for `changes`.
    pub fn handled(event_type: impl Into<String>, changes: Vec<UserChange>) -> Self {
        Delivery { event_type: event_type.into(), changes, unhandled: false, skipped: 0, delivery_id: None }
    }

    /// A delivery of a type the sync does not use.
    pub fn unhandled(event_type: impl Into<String>) -> Self {
        Delivery { event_type: event_type.into(), changes: Vec::new(), unhandled: true, skipped: 0, delivery_id: None }
    }
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
    #[error("signature header is malformed: {0}")]
    MalformedSignatureHeader(&'static str),
    #[error("no signature matched")]
    NoMatchingSignature,
    #[error("the delivery id header does not match the signed body")]
    DeliveryIdMismatch,
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

/// Verifies a delivery on its raw bytes. Returns the provider's delivery id when it has one
/// (Svix `svix-id`, the Better Auth plugin's `x-better-auth-webhook-id`).
pub fn verify(
    provider: ProviderKind,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<String>, VerifyError> {
    provider.provider().verify(secret, headers, body, now)
}

/// Parses an authenticated delivery.
pub fn parse(provider: ProviderKind, body: &Bytes, received_at: DateTime<Utc>) -> Result<Delivery, ParseError> {
    provider.provider().parse(body, received_at)
}

/// The SPEC §8 check of the webhook secrets of providers that use the secret as given
/// (Auth0, Better Auth): at least 16 characters, no control characters.
pub fn check_shared_secret(secret: &str) -> Result<(), String> {
    if secret.chars().count() < 16 {
        return Err("must be at least 16 characters".into());
    }
    if secret.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_segments_are_the_spec_ones_and_round_trip() {
        let table: Vec<_> =
            ProviderKind::ALL.iter().map(|p| (p.name(), p.path_segment(), p.supports_backfill())).collect();
        assert_eq!(table, [("clerk", "clerk", true), ("auth0", "auth0", false), ("better_auth", "better-auth", false)]);
        for &p in ProviderKind::ALL {
            assert_eq!(ProviderKind::from_name(p.name()), Some(p));
            assert_eq!(ProviderKind::from_path_segment(p.path_segment()), Some(p));
            assert_eq!(ProviderKind::from_proto(p.proto()), Some(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(ProviderKind::from_name("better-auth"), None);
        assert_eq!(ProviderKind::from_path_segment("better_auth"), None);
    }

    #[test]
    fn every_proto_value_but_unspecified_has_exactly_one_provider() {
        let values: Vec<pb::Provider> = (0..64).filter_map(|n| pb::Provider::try_from(n).ok()).collect();
        assert!(values.len() > 1);
        for value in values {
            let providers: Vec<_> = ProviderKind::ALL.iter().filter(|p| p.proto() == value).collect();
            let expected = usize::from(value != pb::Provider::Unspecified);
            assert_eq!(providers.len(), expected, "{value:?}");
        }
    }

    #[test]
    fn shared_secrets() {
        assert!(check_shared_secret("a-long-enough-secret").is_ok());
        assert!(check_shared_secret("short").is_err());
        assert!(check_shared_secret("sixteen-chars\n-with-newline\n").is_err());
    }
}
