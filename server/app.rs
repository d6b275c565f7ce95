//! Startup and shutdown: builds the shared state and runs the gRPC server, the webhook
//! listener, the metrics listener, the delivery path's background work and the backfill
//! supervisor, each spawned into the one task set of a [`Lifecycle`], until the caller's
//! shutdown token fires; then walks the lifecycle's phases (see `crate::lifecycle`) and
//! returns once every task has ended. The caller binds the listeners (tests pass port 0) and
//! chooses when to shut down.
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backfill::{Backfills, ClerkApiFactory};
use crate::config::Settings;
use crate::lifecycle::{Lifecycle, Phase, Shutdown};
use crate::project_db::ProjectPools;
use crate::state::AppState;
use crate::store::{ControlStore, StoreError};

/// The bound listeners.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs the service until `shutdown` is cancelled, then shuts down gracefully: draining
/// (health NOT_SERVING, /readyz 503, backfills hand their lease over) for the drain period,
/// then the listeners close and in-flight requests finish, then the delivery path flushes
/// and stops, and the remaining work gets the grace period. Returns when every task has
/// ended. If this future is dropped instead (abrupt stop), every task stops dead at once —
/// backfill leases simply expire, exactly what a crash looks like to the other replicas.
pub async fn run(settings: Settings, listeners: Listeners, shutdown: CancellationToken) -> Result<(), RunError> {
    let store =
        ControlStore::connect(settings.control_database_url.expose_secret(), settings.control_pool_size).await?;
    let lifecycle = Lifecycle::new();
    let life = lifecycle.handle();
    let pools = ProjectPools::new(settings.project_db.clone());
    let clerk = ClerkApiFactory::new(settings.clerk.clone());
    let backfills = Backfills::new(settings.clone(), store.clone(), pools.clone(), clerk.clone(), life.clone());
    let ingest = crate::ingest::IngestService::new(&settings, store.clone(), pools.clone());
    let state = Arc::new(AppState {
        settings: settings.clone(),
        ingest,
        store,
        pools,
        clerk,
        backfills: backfills.clone(),
        shutdown: life.clone(),
    });
    let grace = settings.shutdown_grace;

    // The recorder is installed even without a listener, so metric calls cost nothing extra.
    let handle = crate::metrics::install();
    // Histogram samples are folded into their buckets here, not only when /metrics is
    // scraped: without a scraper memory would grow with every delivery.
    life.spawn({
        let (handle, draining) = (handle.clone(), life.draining());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tokio::pin!(draining);
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    _ = &mut draining => return,
                }
            }
        }
    });
    if let Some(l) = listeners.metrics {
        life.spawn(crate::metrics::serve(l, handle, settings.http_limits.clone(), life.clone()));
    }
    life.spawn(evict_idle_pools(state.pools.clone(), life.clone()));
    life.spawn(backfills.supervise());
    let ingest = life.spawn({
        let (state, life) = (state.clone(), life.clone());
        async move { state.ingest.run(&life).await }
    });
    let webhooks = life.spawn(crate::webhook::serve(state.clone(), listeners.http, grace));
    let mut grpc = life.spawn(crate::grpc::serve(state.clone(), listeners.grpc, grace));
    tracing::info!(instance = %settings.instance_id, "capydb-auth-sync serving");

    // A gRPC server that fails on its own (it cannot serve) shuts the service down too.
    let failed = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut grpc => Some(r),
    };
    lifecycle.enter(Phase::Draining);
    let drain = settings.shutdown_drain;
    if failed.is_none() && !drain.is_zero() {
        tracing::info!(
            drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
            "draining: health is NOT_SERVING, listeners stay open"
        );
        tokio::time::sleep(drain).await;
    }
    lifecycle.enter(Phase::Closing);
    let grpc_result = match failed {
        Some(r) => r,
        None => grpc.await,
    };
    joined(webhooks.await);
    // No request is left: the delivery path flushes its counters and answers the inbox's
    // last parkings; then backfills finish handing over (bounded by the grace period).
    lifecycle.enter(Phase::Stopping);
    joined(ingest.await);
    lifecycle.finish(grace).await;
    tracing::info!("capydb-auth-sync stopped");
    // `None`: the task was killed, which happens here only after the grace period.
    joined(grpc_result).flatten().unwrap_or(Ok(())).map_err(RunError::from)
}

/// A task's result; a panic in it is a panic of `run`, as when the task ran inline.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

/// Closes project pools nobody used for ten minutes, once a minute, until draining.
async fn evict_idle_pools(pools: ProjectPools, life: Shutdown) {
    let draining = life.draining();
    tokio::pin!(draining);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = &mut draining => return,
        }
        let closed = pools.evict_idle(Duration::from_secs(600));
        if closed > 0 {
            tracing::debug!(closed, "closed idle project database pools");
        }
    }
}
