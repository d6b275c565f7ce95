//! Startup and shutdown: builds the shared state and runs the gRPC server, the webhook
//! listener, the metrics listener and the backfill supervisor until the shutdown token
//! fires. The caller binds the listeners (tests pass port 0) and chooses the shutdown.
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backfill::{Backfills, ClerkApiFactory};
use crate::config::Settings;
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

/// Runs the service until `shutdown` is cancelled, then drains: health NOT_SERVING and
/// /readyz 503 at once, backfills checkpoint and give their leases back; after the drain
/// period the listeners stop accepting and in-flight requests finish. If this future is dropped instead (abrupt stop), backfill runners stop dead at once
/// and their leases expire — exactly what a crash looks like to the other replicas.
pub async fn run(settings: Settings, listeners: Listeners, shutdown: CancellationToken) -> Result<(), RunError> {
    let store =
        ControlStore::connect(settings.control_database_url.expose_secret(), settings.control_pool_size).await?;
    let kill = CancellationToken::new();
    let _kill_on_drop = kill.clone().drop_guard();
    let pools = ProjectPools::new(settings.project_db.clone());
    let clerk = ClerkApiFactory::new(settings.clerk.clone());
    let backfills =
        Backfills::new(settings.clone(), store.clone(), pools.clone(), clerk.clone(), shutdown.clone(), kill.clone());
    let ingest = crate::ingest::IngestService::new(&settings, store.clone(), pools.clone());
    let state = Arc::new(AppState {
        settings: settings.clone(),
        ingest,
        store,
        pools,
        clerk,
        backfills: backfills.clone(),
        shutdown: shutdown.clone(),
    });
    let grace = settings.shutdown_grace;
    // `shutdown` starts draining (health NOT_SERVING, /readyz 503, backfills hand over);
    // `stop` closes the listeners once the drain period has passed.
    let stop = CancellationToken::new();
    tokio::spawn({
        let (shutdown, stop, kill, drain) = (shutdown.clone(), stop.clone(), kill.clone(), settings.shutdown_drain);
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = kill.cancelled() => return,
            }
            if !drain.is_zero() {
                tracing::info!(
                    drain_secs = drain.as_secs_f64(),
                    "draining: health is NOT_SERVING, listeners stay open"
                );
                tokio::time::sleep(drain).await;
            }
            stop.cancel();
        }
    });

    // The recorder is installed even without a listener, so metric calls cost nothing extra.
    let handle = crate::metrics::install();
    // Histogram samples are folded into their buckets here, not only when /metrics is
    // scraped: without a scraper memory would grow with every delivery.
    tokio::spawn({
        let (handle, stop, kill) = (handle.clone(), shutdown.clone(), kill.clone());
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    _ = stop.cancelled() => return,
                    _ = kill.cancelled() => return,
                }
            }
        }
    });
    let metrics = listeners.metrics.map(|l| {
        let stop = stop.clone();
        let kill = kill.clone();
        let limits = settings.http_limits.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = crate::metrics::serve(l, handle, limits, stop) => {}
                _ = kill.cancelled() => {}
            }
        })
    });
    let supervisor = tokio::spawn(backfills.clone().supervise());
    // The delivery path's background work stops after the listeners close, so the last
    // counters are flushed and the inbox's last parking answered.
    let ingest_stop = CancellationToken::new();
    let ingest = tokio::spawn({
        let (state, stop, kill) = (state.clone(), ingest_stop.clone(), kill.clone());
        async move {
            tokio::select! {
                _ = state.ingest.run(stop) => {}
                _ = kill.cancelled() => {}
            }
        }
    });
    tokio::spawn(evict_idle_pools(state.pools.clone(), shutdown.clone(), kill.clone()));
    let webhooks = crate::webhook::serve(state.clone(), listeners.http, stop.clone(), grace);
    let grpc = crate::grpc::serve(state.clone(), listeners.grpc, shutdown.clone(), stop.clone(), grace);
    tracing::info!(instance = %settings.instance_id, "capydb-auth-sync serving");

    let (grpc_result, ()) = tokio::join!(grpc, webhooks);
    ingest_stop.cancel();
    let _ = ingest.await;
    // Listeners are closed; let backfills reach a checkpoint and release their leases.
    shutdown.cancel();
    let _ = tokio::time::timeout(grace, backfills.wait_stopped()).await;
    let _ = supervisor.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    tracing::info!("capydb-auth-sync stopped");
    grpc_result.map_err(RunError::from)
}

/// Closes project pools nobody used for ten minutes, once a minute.
async fn evict_idle_pools(pools: ProjectPools, shutdown: CancellationToken, kill: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.cancelled() => return,
            _ = kill.cancelled() => return,
        }
        let closed = pools.evict_idle(std::time::Duration::from_secs(600));
        if closed > 0 {
            tracing::debug!(closed, "closed idle project database pools");
        }
    }
}
