//! Integration tests: the real server, real Postgres, the real client crate, real HTTP.
mod helpers;

mod backfill;
mod ingest;
mod lifecycle;
mod operations;
mod providers;
mod tls;
mod webhooks;
