//! capydb-auth-sync mirrors auth-provider users (Clerk, Auth0, Better Auth) into
//! `capydb_auth.users` in each customer's own Postgres database.
//!
//! Module map, outside in:
//! - `cli`, `config`, `dev`, `app`: command line, validated settings, dev mode, startup and
//!   graceful shutdown; `lifecycle`: the phases from serving to stopped and the one task set;
//!   `state`: what the surfaces and services share;
//! - `grpc`: the control API (thin: auth, mapping, one error mapping);
//! - `webhook`: the public HTTP listener (limits, routing, status codes);
//! - `ingest`: one delivery from integration lookup (cached) to durable outcome: verify,
//!   parse, group commit per project database, the durable inbox, counters;
//! - `integrations`: the integration lifecycle behind the API; `verdict`: what GetSyncStatus
//!   says of an integration's health; `domain`: validated input;
//! - `providers`: per-provider webhook verification and parsing into [`users::UserChange`];
//! - `users`: the provider-neutral record, the table schema, and the writer that owns the
//!   merge rules (webhooks and backfill both write through it);
//! - `backfill`: Clerk Backend API client, paging cursor, job runner with leases;
//! - `store`: the control database (integrations, counters, jobs, migrations);
//! - `project_db`: pools to customers' databases (TLS); `outbound`: where they may be;
//!   `crypto`: secrets at rest;
//! - `listener`: the one HTTP serve loop (connection cap, header and idle deadlines, drain);
//! - `logging`: the tracing subscriber (JSON or text lines, optional OpenTelemetry export);
//! - `metrics`, `local_postgres`: Prometheus exporter; a Postgres for dev mode and tests.
pub mod app;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod domain;
pub mod grpc;
pub mod ingest;
pub mod integrations;
pub mod lifecycle;
pub mod listener;
pub mod local_postgres;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod project_db;
pub mod providers;
pub mod state;
pub mod store;
pub mod users;
pub mod verdict;
pub mod webhook;

/// Generated protobuf and gRPC server code.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("capydb.auth_sync.v1");
    /// Served by the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_sync_descriptor");
}
