//! Group commit per project database. Concurrent deliveries for one database are gathered
//! into one transaction of set-based statements (the writer's layered batches) and each is
//! answered, after the commit, with its own exact outcome.
//!
//! One task per database owns a bounded queue: it waits for a free lane (at most
//! `lanes` transactions of one database in flight, no more than its pool has connections),
//! takes what is queued (up to a batch's worth), lingers for more only when a linger is
//! configured and the previous batch had company (so a lone delivery never waits), and hands the batch to a lane
//! that commits and answers. While the lanes are busy the next batch gathers, so the batch
//! size follows the load. A full queue makes senders wait — overload turns into backpressure
//! (and, past the delivery deadline, into the inbox), not memory. Lanes may hold changes to
//! the same user: the writer's statements lock in id order and classify against the latest
//! committed row, so outcomes stay exact and batches cannot deadlock each other.
//!
//! Isolation: when a statement fails because of one row (the database refused a value, a
//! constraint or trigger fired), the batch is split in halves and each half retried on its
//! own, down to the single delivery that fails alone; everyone else lands.
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::project_db::{ProjectDbError, ProjectPools};
use crate::users::{MergeOutcome, UserChange, UsersWriter};

use super::cache::CachedIntegration;

/// How batches are formed.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Changes per transaction at most.
    pub max_changes: usize,
    /// How long a batch waits for company when deliveries are arriving together.
    pub linger: Duration,
    /// Deliveries queued per database before senders wait.
    pub queue_depth: usize,
    /// A database's task ends after this long without deliveries.
    pub idle: Duration,
    /// Transactions of one database in flight at once.
    pub lanes: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_changes: 512,
            // With several lanes a free lane is better used at once than held for company.
            linger: Duration::ZERO,
            queue_depth: 1024,
            idle: Duration::from_secs(60),
            lanes: 3,
        }
    }
}

/// Changes of one delivery, shared with the caller (which parks them if the commit fails).
pub type Changes = Arc<Vec<UserChange>>;

struct Job {
    changes: Changes,
    reply: oneshot::Sender<Result<Vec<MergeOutcome>, ProjectDbError>>,
}

/// The group committers of this replica, one per project database in use.
#[derive(Clone)]
pub struct Batchers {
    pools: ProjectPools,
    settings: BatchSettings,
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<Job>>>>,
}

impl Batchers {
    pub fn new(pools: ProjectPools, settings: BatchSettings) -> Self {
        Batchers { pools, settings, queues: Arc::default() }
    }

    /// Applies one delivery's changes in the next group commit of its database; returns each
    /// change's outcome once that transaction has committed.
    pub async fn submit(
        &self,
        integration: &CachedIntegration,
        changes: Changes,
    ) -> Result<Vec<MergeOutcome>, ProjectDbError> {
        // A queue can close between lookup and send (its task went idle): one more try.
        for _ in 0..2 {
            let queue = self.queue(integration)?;
            let (reply, answer) = oneshot::channel();
            if queue.send(Job { changes: changes.clone(), reply }).await.is_err() {
                self.forget_closed(&integration.pool_key);
                continue;
            }
            return answer.await.unwrap_or_else(|_| Err(ProjectDbError::Unavailable("the commit task stopped".into())));
        }
        Err(ProjectDbError::Unavailable("the commit task stopped".into()))
    }

    fn queue(&self, integration: &CachedIntegration) -> Result<mpsc::Sender<Job>, ProjectDbError> {
        let mut queues = self.queues.lock().expect("batcher map poisoned");
        if let Some(q) = queues.get(&integration.pool_key).filter(|q| !q.is_closed()) {
            return Ok(q.clone());
        }
        let pool = self.pools.pool(&integration.row.id, &integration.database_url)?;
        let (tx, rx) = mpsc::channel(self.settings.queue_depth);
        queues.insert(integration.pool_key.clone(), tx.clone());
        tokio::spawn(run(pool, rx, self.settings.clone()));
        Ok(tx)
    }

    fn forget_closed(&self, key: &str) {
        let mut queues = self.queues.lock().expect("batcher map poisoned");
        if queues.get(key).is_some_and(|q| q.is_closed()) {
            queues.remove(key);
        }
    }
}

/// One database's commit loop.
async fn run(pool: Pool, mut rx: mpsc::Receiver<Job>, settings: BatchSettings) {
    let lanes = Arc::new(tokio::sync::Semaphore::new(settings.lanes.max(1)));
    let mut had_company = false;
    loop {
        let first = match tokio::time::timeout(settings.idle, rx.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                // Idle: refuse new work, finish what slipped in, end.
                rx.close();
                let mut rest = Vec::new();
                while let Ok(job) = rx.try_recv() {
                    rest.push(job);
                }
                if !rest.is_empty() {
                    commit_jobs(&pool, rest).await;
                }
                return;
            }
        };
        // A free lane first: while all are busy, deliveries pile up into the next batch.
        let lane = lanes.clone().acquire_owned().await.expect("the lane semaphore is never closed");
        let mut size = first.changes.len();
        let mut jobs = vec![first];
        while size < settings.max_changes {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.changes.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Not even a zero linger: tokio's timer rounds a deadline up to its next millisecond
        // tick, so `timeout_at(now)` waits up to a millisecond when nothing else is queued.
        if had_company && !settings.linger.is_zero() && size < settings.max_changes {
            let deadline = tokio::time::Instant::now() + settings.linger;
            while size < settings.max_changes {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => {
                        size += job.changes.len();
                        jobs.push(job);
                    }
                    _ => break,
                }
            }
        }
        had_company = jobs.len() > 1;
        metrics::histogram!("capydb_auth_sync_group_commit_deliveries").record(jobs.len() as f64);
        let pool = pool.clone();
        tokio::spawn(async move {
            commit_jobs(&pool, jobs).await;
            drop(lane);
        });
    }
}

/// Commits `jobs` together and answers each; a row-level failure splits the batch.
fn commit_jobs(pool: &Pool, mut jobs: Vec<Job>) -> BoxFuture<'_, ()> {
    async move {
        // A sender that gave up (its deadline passed) still gets its changes applied: it
        // has parked them, and applying twice is harmless under the merge rules.
        let changes: Vec<&UserChange> = jobs.iter().flat_map(|j| j.changes.iter()).collect();
        match commit(pool, &changes).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for job in jobs {
                    let mine: Vec<MergeOutcome> = outcomes.by_ref().take(job.changes.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e @ ProjectDbError::Query(_)) if jobs.len() > 1 => {
                tracing::debug!(error = %e, deliveries = jobs.len(), "a batch failed on a row; splitting it");
                let right = jobs.split_off(jobs.len() / 2);
                commit_jobs(pool, jobs).await;
                commit_jobs(pool, right).await;
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
    .boxed()
}

/// Applies `changes` in one transaction; outcomes in order.
pub async fn commit(pool: &Pool, changes: &[&UserChange]) -> Result<Vec<MergeOutcome>, ProjectDbError> {
    // Lanes, the backfill and other replicas write side by side; a statement touching several
    // kinds of change can still cross another transaction (a deadlock Postgres breaks by
    // rolling one back). That one is simply run again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match commit_once(pool, changes).await {
            Err(ProjectDbError::Conflict(m)) if attempt < 4 => {
                tracing::debug!(attempt, reason = %m, "group commit crossed another writer; running it again");
            }
            other => return other,
        }
    }
}

async fn commit_once(pool: &Pool, changes: &[&UserChange]) -> Result<Vec<MergeOutcome>, ProjectDbError> {
    let mut client = pool.get().await?;
    if UsersWriter::is_one_statement(changes) {
        // One set-based statement is atomic on its own: no BEGIN/COMMIT round trips.
        return UsersWriter::apply_batch(&client, changes).await;
    }
    let tx = client.transaction().await?;
    let outcomes = UsersWriter::apply_batch(&tx, changes).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Applies `changes` in a transaction that is rolled back: a dry run that checks route,
/// database and permissions end to end and writes nothing.
pub async fn rehearse(pool: &Pool, changes: &[&UserChange]) -> Result<Vec<MergeOutcome>, ProjectDbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let outcomes = UsersWriter::apply_batch(&tx, changes).await?;
    tx.rollback().await?;
    Ok(outcomes)
}
