//! Integration tests: the real server, real Postgres, the real client crate, real HTTP.
//! The shared harness (server, databases, signing, polling) is the `test_harness` crate.
mod backfill;
mod hardening;
mod ingest;
mod lifecycle;
mod listener;
mod logs;
mod operations;
mod ops;
mod providers;
mod replicas;
mod rotation;
mod status;
mod tls;
mod webhooks;
