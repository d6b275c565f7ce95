//! The durable inbox (SPEC §2 rule 6, §4): when a project database cannot commit a verified
//! delivery within the delivery deadline, the delivery is parked in the control database
//! and answered 202; a drain applies parked deliveries, oldest first and under the same
//! merge rules, as soon as the database answers again — no restart, no resend.
//!
//! - Parking is group-committed too: one task gathers what is waiting into one insert.
//! - While a project has parked deliveries, new ones for it are parked behind them.
//!   Each replica learns of a backlog when it parks and from a scan every second (another
//!   replica's parking shows up there).
//! - One drain per project across all replicas: a drain holds the project's advisory lock in
//!   the control-database transaction that takes and then deletes the deliveries, after the
//!   project-database commit. A crash between the two re-applies them later: at least once,
//!   which the merge rules make harmless.
//! - The drain probes a database that is still down with backoff (100 ms doubling to 5 s).
//! - Bounded: at most `max_per_project` parked deliveries per project; beyond, 503.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::task::TaskTracker;

use super::batcher;
use super::cache::IntegrationCache;
use crate::lifecycle::{Phase, Shutdown};
use crate::project_db::{ProjectDbError, ProjectPools};
use crate::store::{ControlStore, ParkedDelivery, StoreError};
use crate::users::UserChange;

/// Parked deliveries a drain takes per transaction.
const DRAIN_BATCH: i64 = 200;
/// Deliveries parked per control-database transaction at most.
const PARK_BATCH: usize = 256;

struct ParkJob {
    delivery: ParkedDelivery,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

pub struct Inbox {
    store: ControlStore,
    max_per_project: i64,
    apply_timeout: Duration,
    park_tx: mpsc::Sender<ParkJob>,
    park_rx: Mutex<Option<mpsc::Receiver<ParkJob>>>,
    /// Integrations known (to this replica) to have parked deliveries.
    backlog: Mutex<HashSet<String>>,
    /// Integrations this replica is draining now.
    draining: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Inbox {
    pub fn new(store: ControlStore, max_per_project: i64, apply_timeout: Duration) -> Self {
        let (park_tx, park_rx) = mpsc::channel(4096);
        Inbox {
            store,
            max_per_project,
            apply_timeout,
            park_tx,
            park_rx: Mutex::new(Some(park_rx)),
            backlog: Mutex::default(),
            draining: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// Whether deliveries of this integration must queue behind parked ones.
    pub fn has_backlog(&self, integration_id: &str) -> bool {
        self.backlog.lock().expect("inbox lock poisoned").contains(integration_id)
    }

    /// Parks one delivery durably. `Ok(false)`: the project's inbox is full.
    pub async fn park(&self, delivery: ParkedDelivery) -> Result<bool, StoreError> {
        let id = delivery.integration_id.clone();
        let (reply, answer) = oneshot::channel();
        self.park_tx
            .send(ParkJob { delivery, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the inbox is shutting down".into()))?;
        let parked = answer.await.map_err(|_| StoreError::Unavailable("the inbox is shutting down".into()))??;
        if parked {
            self.backlog.lock().expect("inbox lock poisoned").insert(id);
            self.wake.notify_one();
        }
        Ok(parked)
    }

    /// Runs the parking task and the drain supervisor until the lifecycle reaches `Stopping`;
    /// drains in flight finish their current transaction. The parking task and the drains
    /// are spawned into the service's task set and tracked here too, to be waited for.
    pub async fn run(self: Arc<Self>, cache: Arc<IntegrationCache>, pools: ProjectPools, shutdown: Shutdown) {
        let Some(rx) = self.park_rx.lock().expect("inbox lock poisoned").take() else { return };
        let tasks = TaskTracker::new();
        shutdown.spawn(tasks.track_future(self.clone().park_loop(rx, shutdown.stopping())));
        let stop = shutdown.stopping();
        tokio::pin!(stop);
        loop {
            self.scan(&cache, &pools, &tasks, &shutdown).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.wake.notified() => {}
                _ = &mut stop => break,
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    async fn park_loop(self: Arc<Self>, mut rx: mpsc::Receiver<ParkJob>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let first = tokio::select! {
                job = rx.recv() => match job { Some(j) => j, None => return },
                _ = &mut stop => {
                    // Deliveries still waiting are answered "not kept": the sender retries.
                    rx.close();
                    while let Ok(job) = rx.try_recv() {
                        let _ = job.reply.send(Err(StoreError::Unavailable("shutting down".into())));
                    }
                    return;
                }
            };
            let mut jobs = vec![first];
            while jobs.len() < PARK_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.park_jobs(jobs).await;
        }
    }

    /// Parks `jobs` in one statement and answers each. When the statement fails on a row (the
    /// control database refused a value), each delivery is parked on its own, so one cannot
    /// fail the others.
    async fn park_jobs(&self, jobs: Vec<ParkJob>) {
        let deliveries: Vec<ParkedDelivery> = jobs.iter().map(|j| j.delivery.clone()).collect();
        match self.store.park(&deliveries, self.max_per_project).await {
            Ok(parked) => {
                for (job, ok) in jobs.into_iter().zip(parked) {
                    let _ = job.reply.send(Ok(ok));
                }
            }
            Err(StoreError::Query(e)) if jobs.len() > 1 => {
                tracing::debug!(error = %e, deliveries = jobs.len(), "a park failed on a row; parking one by one");
                for job in jobs {
                    Box::pin(self.park_jobs(vec![job])).await;
                }
            }
            Err(e) => {
                crate::metrics::control_store_error("inbox_park", &e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Learns which projects have parked deliveries and starts a drain for each.
    async fn scan(
        self: &Arc<Self>,
        cache: &Arc<IntegrationCache>,
        pools: &ProjectPools,
        tasks: &TaskTracker,
        shutdown: &Shutdown,
    ) {
        let backlog = match self.store.inbox_backlog().await {
            Ok(b) => b,
            Err(e) => {
                crate::metrics::control_store_error("inbox_scan", &e);
                tracing::debug!(error = %e, "cannot read the inbox backlog");
                return;
            }
        };
        metrics::gauge!("capydb_auth_sync_inbox_deliveries").set(backlog.iter().map(|b| b.count).sum::<i64>() as f64);
        let oldest = backlog.iter().filter_map(|b| b.oldest).min();
        let age = oldest.map_or(0.0, |t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        metrics::gauge!("capydb_auth_sync_inbox_oldest_age_seconds").set(age);
        for b in backlog {
            self.backlog.lock().expect("inbox lock poisoned").insert(b.integration_id.clone());
            if self.draining.lock().expect("inbox lock poisoned").insert(b.integration_id.clone()) {
                let (inbox, cache, pools, life) = (self.clone(), cache.clone(), pools.clone(), shutdown.clone());
                shutdown.spawn(tasks.track_future(async move {
                    inbox.drain(&b.integration_id, &cache, &pools, &life).await;
                    inbox.draining.lock().expect("inbox lock poisoned").remove(&b.integration_id);
                }));
            }
        }
    }

    /// Applies the project's parked deliveries until none are left, another replica drains
    /// it, or the lifecycle reaches `Stopping`.
    async fn drain(&self, integration_id: &str, cache: &IntegrationCache, pools: &ProjectPools, shutdown: &Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut applied = 0usize;
        loop {
            if shutdown.phase() >= Phase::Stopping {
                return;
            }
            match self.drain_once(integration_id, cache, pools).await {
                Ok(Some(0)) => {
                    self.backlog.lock().expect("inbox lock poisoned").remove(integration_id);
                    if applied > 0 {
                        tracing::info!(integration_id, deliveries = applied, "inbox drained");
                    }
                    return;
                }
                Ok(Some(n)) => {
                    applied += n;
                    backoff = Duration::from_millis(100);
                    continue;
                }
                // Another replica holds the drain.
                Ok(None) => return,
                Err(e) => {
                    if let DrainError::Store(e) = &e {
                        crate::metrics::control_store_error("inbox_drain", e);
                    }
                    tracing::debug!(integration_id, error = %e, retry_in_ms = backoff.as_millis() as u64, "inbox drain waits for the project database");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.stopping() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One transaction's worth: returns how many deliveries were applied (0: none left), or
    /// `None` when another replica is draining.
    async fn drain_once(
        &self,
        integration_id: &str,
        cache: &IntegrationCache,
        pools: &ProjectPools,
    ) -> Result<Option<usize>, DrainError> {
        let mut client = self.store.drain_client().await?;
        let Some(batch) = self.store.take_parked(&mut client, integration_id, DRAIN_BATCH).await? else {
            return Ok(None);
        };
        if batch.ids.is_empty() {
            return Ok(Some(0));
        }
        let integration = cache.by_id(integration_id).ok_or(DrainError::NotServed)?;
        let pool = pools.pool(&integration.row.id, &integration.database_url)?;
        let n = batch.ids.len();
        let all: Vec<&UserChange> = batch.deliveries.iter().flatten().collect();
        match tokio::time::timeout(self.apply_timeout, batcher::commit(&pool, &all)).await {
            Ok(Ok(_)) => {}
            Ok(Err(ProjectDbError::Query(e))) => {
                // A row the database refuses even though it was made storable: apply the
                // deliveries one by one so only the offender stays behind, logged.
                tracing::warn!(integration_id, error = %e, "a parked batch failed on a row; applying one by one");
                for changes in &batch.deliveries {
                    let refs: Vec<&UserChange> = changes.iter().collect();
                    if let Err(e) = batcher::commit(&pool, &refs).await {
                        match e {
                            ProjectDbError::Query(m) => {
                                tracing::error!(integration_id, error = %m, "dropping a parked delivery the project database refuses")
                            }
                            other => return Err(other.into()),
                        }
                    }
                }
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(DrainError::Project(ProjectDbError::Unavailable("timed out".into()))),
        }
        batch.finish().await?;
        Ok(Some(n))
    }
}

#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Project(#[from] ProjectDbError),
    #[error("the integration is not in this replica's cache yet")]
    NotServed,
}
