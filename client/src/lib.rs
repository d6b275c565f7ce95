//! Client library for the capydb-auth-sync gRPC API (`capydb.auth_sync.v1.AuthSyncService`).
//!
//! Owns: the generated protobuf/tonic code ([`pb`]), the typed [`AuthSyncClient`] wrapper
//! (bearer token, timeouts, retries), provider-name parsing ([`provider`]), webhook signers
//! for the three providers ([`signing`]), realistic test webhook events and a small HTTP
//! sender ([`webhook`]), and human/JSON renderings of the API messages ([`display`]).
//! The `capydb-auth-sync-admin` CLI (src/main.rs, src/cli/) is built on top of it.

pub mod client;
pub mod display;
pub mod error;
pub mod provider;
pub mod signing;
pub mod webhook;

/// Code generated from `proto/capydb/auth_sync/v1/auth_sync.proto` (messages, enums, and the
/// tonic client `auth_sync_service_client::AuthSyncServiceClient`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("capydb.auth_sync.v1");
}

pub use client::{AuthSyncClient, BearerInterceptor, ClientConfig, RawClient};
pub use error::ClientError;
pub use pb::auth_sync_service_client::AuthSyncServiceClient;
pub use pb::*;
pub use provider::{parse_provider, provider_name, webhook_segment, ParseProviderError, ProviderArg};
pub use signing::{SignedRequest, SigningError};
