//! Clerk backfill: lists every user through the Backend API and writes them through the same
//! users-table writer as webhooks. Jobs live in the control store; a lease keeps one runner
//! per job across replicas, and a checkpoint after every committed write (a page, or a batch
//! of the pages already fetched when the writer falls behind) lets an interrupted job resume
//! where it stopped.
//!
//! - `clerk_api`: HTTP client, sorting failures for the retry policy;
//! - `limiter`: the per-key rate limit at Clerk's documented rate, backing off on 429s;
//! - `page`: reading a listed page with as little work as the columns need;
//! - `retry`: the one retry policy (Clerk calls and page writes);
//! - `cursor`: the paging strategy (and why it is complete under churn);
//! - `runner`: one job from claim to finish, fetch and write pipelined, pages batched when the
//!   writer falls behind, fenced by the lease;
//! - this module: starting jobs and picking up queued or orphaned ones, at most
//!   `backfill.concurrency` at once in this replica (the rest stay queued, visibly, for this
//!   replica's next free slot or another replica).
pub mod clerk_api;
pub mod cursor;
pub mod limiter;
pub mod page;
pub mod retry;
mod runner;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, Semaphore};

use crate::config::Settings;
use crate::lifecycle::Shutdown;
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
    /// From draining on, runners checkpoint, give their lease back and stop. Runners are
    /// spawned into its task set, so a kill (the process going away without ceremony) stops
    /// them dead, mid-page, with the lease left to expire.
    pub shutdown: Shutdown,
}

/// Starts and supervises backfill jobs in this replica.
#[derive(Clone)]
pub struct Backfills {
    ctx: Arc<BackfillContext>,
    /// Jobs with a runner task in this process (the lease decides who really runs).
    local: Arc<Mutex<HashSet<String>>>,
    /// One permit per backfill this replica may run at once.
    slots: Arc<Semaphore>,
    /// Wakes the supervisor when a slot frees up.
    slot_freed: Arc<Notify>,
}

impl Backfills {
    pub fn new(
        settings: Settings,
        store: ControlStore,
        pools: ProjectPools,
        clerk: ClerkApiFactory,
        shutdown: Shutdown,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.backfill.concurrency.max(1)));
        Backfills {
            ctx: Arc::new(BackfillContext { settings, store, pools, clerk, shutdown }),
            local: Arc::new(Mutex::new(HashSet::new())),
            slots,
            slot_freed: Arc::new(Notify::new()),
        }
    }

    /// Queues a backfill for the integration (or finds the active one) and runs it here if
    /// a slot is free (else it stays queued until one is, here or on another replica).
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

    /// Runs a job in this process unless a local runner already has it or every slot is
    /// taken (the job then stays queued), or this replica is draining.
    fn spawn(&self, job_id: String) {
        if self.ctx.shutdown.is_draining() {
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        if !self.local.lock().expect("backfill set poisoned").insert(job_id.clone()) {
            return;
        }
        let ctx = self.ctx.clone();
        let local = self.local.clone();
        let slot_freed = self.slot_freed.clone();
        // A kill drops this task mid-run (its permit with it): the lease is left to expire.
        self.ctx.shutdown.spawn(async move {
            runner::run(&ctx, &job_id).await;
            local.lock().expect("backfill set poisoned").remove(&job_id);
            drop(slot);
            slot_freed.notify_one();
        });
    }

    /// Picks up queued jobs and jobs whose runner died (expired lease), as many as there
    /// are free slots, until draining begins; looks again when a slot frees up.
    pub async fn supervise(self) {
        let interval = self.ctx.settings.backfill.poll_interval;
        let draining = self.ctx.shutdown.draining();
        tokio::pin!(draining);
        loop {
            let free = self.slots.available_permits();
            if free > 0 {
                match self.ctx.store.claimable_jobs(free as i64).await {
                    Ok(ids) => ids.into_iter().for_each(|id| self.spawn(id)),
                    Err(e) => {
                        crate::metrics::control_store_error("backfill_claim", &e);
                        tracing::warn!(error = %e, "could not look for backfill jobs to resume")
                    }
                }
            }
            tokio::select! {
                _ = &mut draining => break,
                _ = self.slot_freed.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
