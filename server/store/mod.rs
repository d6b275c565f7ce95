//! The control store: the service's own Postgres database (schema `capydb_auth_sync`) with
//! integrations, webhook counters and backfill jobs. Migrations are versioned (refinery) and
//! applied at start-up under an advisory lock, so replicas starting together are safe.
pub mod inbox;
pub mod integrations;
pub mod jobs;
pub mod stats;

use deadpool_postgres::{Pool, Runtime};
use secrecy::SecretString;

use crate::project_db::ProjectDbTarget;
use std::time::Duration;

pub use inbox::{InboxBacklog, ParkedDelivery};
pub use integrations::{Ciphertexts, IntegrationRow};
pub use jobs::{JobRow, JobState};
pub use stats::{
    IntegrationMetricsRow, RecentError, StatsDelta, WebhookCounts, WebhookOutcome, WebhookStatsRow, RECENT_ERRORS,
};

mod embedded {
    refinery::embed_migrations!("server/store/migrations");
}

/// Advisory lock key serialising migrations across replicas ("capydb_m" as ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7079_6462_5f6d;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The control database cannot be reached (or timed out); callers answer UNAVAILABLE/503.
    #[error("control database unavailable: {0}")]
    Unavailable(String),
    #[error("control database error: {0}")]
    Query(String),
    #[error("control database migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// `unavailable`, `query` or `migration`: the metric label of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Query(_) => "query",
            StoreError::Migration(_) => "migration",
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            StoreError::Query(e.to_string())
        } else {
            StoreError::Unavailable(e.to_string())
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Handle to the control database.
#[derive(Clone)]
pub struct ControlStore {
    pool: Pool,
    counters: Pool,
    /// For connections outside the pools (`LISTEN`).
    target: ProjectDbTarget,
    cfg: tokio_postgres::Config,
}

/// Channel on which the control database announces integration changes (see V2 migration).
pub const INTEGRATIONS_CHANNEL: &str = "capydb_auth_sync_integrations";

fn build_pool(target: &ProjectDbTarget, cfg: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    Pool::builder(target.manager(cfg))
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl ControlStore {
    /// Connects (lazily, pooled) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        // Same URL handling as project databases, including sslmode and TLS.
        let target = ProjectDbTarget::parse(&SecretString::from(url.to_string()))
            .map_err(|e| StoreError::Unavailable(format!("control database URL: {e}")))?;
        let mut cfg = target.config();
        cfg.connect_timeout(Duration::from_secs(5));
        cfg.application_name("capydb-auth-sync");
        migrate(&target, &cfg).await?;
        let pool = build_pool(&target, cfg.clone(), max_connections)?;
        // Counters are bumped on every delivery and are not worth an fsync each: their own
        // connections commit asynchronously (a crash may lose the last few increments, never
        // anything else).
        let mut counters_cfg = cfg.clone();
        counters_cfg.options("-c synchronous_commit=off");
        let counters = build_pool(&target, counters_cfg, (max_connections / 2).max(2))?;
        Ok(ControlStore { pool, counters, target, cfg })
    }

    /// A dedicated connection listening for integration changes; each notification's payload
    /// is an integration id. The receiver closes when the connection is lost.
    pub async fn listen_integrations(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>), StoreError>
    {
        let (client, notifications) = self.target.connect_listening(&self.cfg).await?;
        client.batch_execute(&format!("LISTEN {INTEGRATIONS_CHANNEL}")).await?;
        Ok((client, notifications))
    }

    pub(crate) async fn counters_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.counters.get().await?)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Is the control database reachable? (`/readyz`)
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

async fn migrate(target: &ProjectDbTarget, cfg: &tokio_postgres::Config) -> Result<(), StoreError> {
    let mut client = target.connect_once(cfg).await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = async {
        client.batch_execute("CREATE SCHEMA IF NOT EXISTS capydb_auth_sync").await?;
        embedded::migrations::runner()
            .set_migration_table_name("capydb_auth_sync.schema_history")
            .run_async(&mut client)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok::<_, StoreError>(())
    }
    .await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    drop(client);
    result
}
