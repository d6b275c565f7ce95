//! Clerk backfill: lists every user through the Backend API and writes them through the same
//! users-table writer as webhooks. Jobs live in the control store; a lease keeps one runner
//! per job across replicas, and a checkpoint after every committed page lets an interrupted
//! job resume where it stopped.
//!
//! - `clerk_api`: HTTP client, rate limit, retries;
//! - `cursor`: the paging strategy (and why it is complete under churn);
//! - `runner`: one job from claim to finish, fetch and write pipelined;
//! - this module: starting jobs and picking up queued or orphaned ones.
pub mod clerk_api;
pub mod cursor;
mod runner;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::project_db::ProjectPools;
use crate::store::{ControlStore, IntegrationRow, JobRow, StoreError};
pub use clerk_api::{ClerkApiError, ClerkApiFactory};
pub use cursor::BackfillCursor;

/// Everything a runner needs.
pub(crate) struct BackfillContext {
    pub settings: Settings,
    pub store: ControlStore,
    pub pools: ProjectPools,
    pub clerk: ClerkApiFactory,
    /// Graceful shutdown: runners checkpoint, give their lease back and stop.
    pub shutdown: CancellationToken,
    /// Abrupt stop (the process is going away without ceremony): runners stop dead.
    pub kill: CancellationToken,
}

/// Starts and supervises backfill jobs in this replica.
#[derive(Clone)]
pub struct Backfills {
    ctx: Arc<BackfillContext>,
    /// Jobs with a runner task in this process (the lease decides who really runs).
    local: Arc<Mutex<HashSet<String>>>,
    tasks: TaskTracker,
}

impl Backfills {
    pub fn new(
        settings: Settings,
        store: ControlStore,
        pools: ProjectPools,
        clerk: ClerkApiFactory,
        shutdown: CancellationToken,
        kill: CancellationToken,
    ) -> Self {
        Backfills {
            ctx: Arc::new(BackfillContext { settings, store, pools, clerk, shutdown, kill }),
            local: Arc::new(Mutex::new(HashSet::new())),
            tasks: TaskTracker::new(),
        }
    }

    /// Queues a backfill for the integration (or finds the active one) and runs it here.
    /// Returns the job and whether it was newly created.
    pub async fn start(&self, integration: &IntegrationRow) -> Result<(JobRow, bool), StoreError> {
        let (job, created) = self
            .ctx
            .store
            .create_or_get_active_job(&integration.id, &integration.project_id, integration.provider.name())
            .await?;
        self.spawn(job.id.clone());
        Ok((job, created))
    }

    /// Runs a job in this process unless a local runner already has it.
    fn spawn(&self, job_id: String) {
        if self.ctx.shutdown.is_cancelled() {
            return;
        }
        if !self.local.lock().expect("backfill set poisoned").insert(job_id.clone()) {
            return;
        }
        let ctx = self.ctx.clone();
        let local = self.local.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                // Abrupt stop: drop everything mid-flight, like a crash. The lease expires.
                _ = ctx.kill.cancelled() => {}
                _ = runner::run(&ctx, &job_id) => {}
            }
            local.lock().expect("backfill set poisoned").remove(&job_id);
        });
    }

    /// Picks up queued jobs and jobs whose runner died (expired lease) until shutdown.
    pub async fn supervise(self) {
        let interval = self.ctx.settings.backfill.poll_interval;
        loop {
            match self.ctx.store.claimable_jobs().await {
                Ok(ids) => ids.into_iter().for_each(|id| self.spawn(id)),
                Err(e) => tracing::warn!(error = %e, "could not look for backfill jobs to resume"),
            }
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => break,
                _ = self.ctx.kill.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Waits for local runners to checkpoint and stop (after shutdown was signalled).
    pub async fn wait_stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
