//! Client library for the capydb-auth-sync gRPC API (`capydb.auth_sync.v1.AuthSyncService`).
//!
//! Owns: the generated protobuf/tonic code ([`pb`], re-exported at the crate root), the typed
//! [`AuthSyncClient`] wrapper (bearer token, connect and request timeouts, retries only where
//! safe), the typed [`ClientError`], serde for the messages ([`json`]), provider-name parsing
//! ([`provider`]) and human renderings of the messages ([`display`]). With the `webhook`
//! feature: webhook signers for the three providers (`signing`) and realistic test events with
//! a small HTTP sender (`webhook`). The `capydb-auth-sync-admin` CLI (src/main.rs, src/cli/) is
//! built on top of it behind the `cli` feature (on by default); a service that only wants the
//! client depends on this crate with `default-features = false` and compiles none of clap,
//! indicatif, reqwest, hmac or hex.
//!
//! ```no_run
//! use capydb_auth_sync_client::{AuthSyncClient, ClientConfig, ClientError, Provider};
//!
//! # async fn demo() -> Result<(), ClientError> {
//! let client = AuthSyncClient::connect(ClientConfig::new("http://127.0.0.1:50051").with_token("admin-token")).await?;
//! let integration = client
//!     .configure_integration("shop", Provider::Clerk)
//!     .database_url("postgres://app:pw@127.0.0.1:5432/shop")
//!     .secret_key("sk_test_…")
//!     .await?;
//! let status = client.get_sync_status("shop", Provider::Clerk).await?;
//! println!("{}: {}", integration.webhook_receiver, status.verdict);
//! println!("{}", serde_json::to_string_pretty(&status).unwrap());
//! # Ok(()) }
//! ```

pub mod client;
pub mod display;
pub mod error;
pub mod json;
pub mod provider;
#[cfg(feature = "webhook")]
pub mod signing;
#[cfg(feature = "webhook")]
pub mod webhook;

/// Code generated from `proto/capydb/auth_sync/v1/auth_sync.proto` (messages, enums, and the
/// tonic client `auth_sync_service_client::AuthSyncServiceClient`). Every message implements
/// `serde::Serialize` (see [`crate::json`] for the conventions).
pub mod pb {
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    tonic::include_proto!("capydb.auth_sync.v1");

    // `Debug` of the two messages that carry secrets is written by hand (build.rs turns the
    // generated one off): it says whether a secret is set, never what it is.
    impl std::fmt::Debug for Credentials {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Credentials")
                .field("secret_key", &redacted(&self.secret_key))
                .field("webhook_signing_secret", &redacted(&self.webhook_signing_secret))
                .finish()
        }
    }

    impl std::fmt::Debug for ConfigureIntegrationRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ConfigureIntegrationRequest")
                .field("project_id", &self.project_id)
                .field("provider", &crate::json::enum_str::<Provider>(self.provider))
                .field("database_url", &redacted(&self.database_url))
                .field("credentials", &self.credentials)
                .finish()
        }
    }

    fn redacted(s: &str) -> &'static str {
        if s.is_empty() {
            ""
        } else {
            "<redacted>"
        }
    }
}

pub use client::{AuthSyncClient, BearerInterceptor, ClientConfig, ConfigureIntegration, RawClient, TlsIdentity};
pub use error::{ClientError, FieldViolation};
pub use pb::auth_sync_service_client::AuthSyncServiceClient;
pub use pb::*;
pub use provider::{parse_provider, provider_name, webhook_segment, ParseProviderError, ProviderArg};
#[cfg(feature = "webhook")]
pub use signing::{SignedRequest, SigningError};
