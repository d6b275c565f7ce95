//! Backfill jobs: state, counters, the checkpoint to resume from, and the lease that keeps one
//! runner per job across replicas.
//!
//! A runner owns a job while `lease_owner` is its instance id and `lease_expires_at` is in the
//! future; it renews the lease with every checkpoint and heartbeat. A job whose lease expired
//! (the replica crashed or was killed) is claimable by anyone and resumes from `checkpoint`.
//!
//! The lease also fences the runner's writes to the project database:
//! [`ControlStore::checkpoint_fenced`] renews the lease and records the page in a control
//! transaction that holds the job's row lock while the project transaction commits, so a
//! runner that lost the lease commits nothing (see the backfill runner's module docs).
use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::Row;

use super::{ControlStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => JobState::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub integration_id: String,
    pub project_id: String,
    pub provider: String,
    pub state: JobState,
    pub pages: i64,
    pub users_fetched: i64,
    pub users_written: i64,
    pub users_stale: i64,
    pub deletions_reconciled: i64,
    pub users_expected: i64,
    pub reconcile_checks: i64,
    pub reconcile_kept: i64,
    pub users_skipped: i64,
    /// Per-user problems (skipped users, by id), oldest first, at most [`MAX_JOB_ERRORS`].
    pub errors: Vec<String>,
    pub checkpoint: Option<serde_json::Value>,
    pub pass_started_at: Option<DateTime<Utc>>,
    pub resumes: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What one committed page adds to a job's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub pages: i64,
    pub users_fetched: i64,
    pub users_written: i64,
    pub users_stale: i64,
    pub deletions_reconciled: i64,
    pub reconcile_checks: i64,
    pub reconcile_kept: i64,
    pub users_skipped: i64,
    /// Appended to the job's error list (which keeps its first [`MAX_JOB_ERRORS`]).
    pub errors: Vec<String>,
}

/// Per-user problems a job keeps (the count in `users_skipped` is exact).
pub const MAX_JOB_ERRORS: i64 = 100;

const COLUMNS: &str = "id, integration_id, project_id, provider, state, pages, users_fetched, users_written, \
     users_stale, deletions_reconciled, users_expected, checkpoint, pass_started_at, resumes, error, created_at, \
     started_at, finished_at, updated_at, reconcile_checks, reconcile_kept, users_skipped, errors";

/// Adds a page's counters, stores the cursor and renews the lease — only for the lease owner.
const CHECKPOINT: &str = "UPDATE capydb_auth_sync.backfill_jobs SET pages = pages + $3, \
       users_fetched = users_fetched + $4, users_written = users_written + $5, users_stale = users_stale + $6, \
       deletions_reconciled = deletions_reconciled + $7, checkpoint = $8, \
       lease_expires_at = now() + make_interval(secs => $9), updated_at = now(), \
       reconcile_checks = reconcile_checks + $10, reconcile_kept = reconcile_kept + $11, \
       users_skipped = users_skipped + $12, \
       errors = CASE WHEN jsonb_array_length($13::jsonb) = 0 THEN errors ELSE ( \
         SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb) FROM ( \
           SELECT e, o FROM jsonb_array_elements(errors || $13::jsonb) WITH ORDINALITY AS t(e, o) \
           ORDER BY o LIMIT $14) kept) END \
     WHERE id = $1 AND lease_owner = $2 AND state = 'running'";

fn job(r: &Row) -> JobRow {
    JobRow {
        id: r.get(0),
        integration_id: r.get(1),
        project_id: r.get(2),
        provider: r.get(3),
        state: JobState::parse(r.get(4)),
        pages: r.get(5),
        users_fetched: r.get(6),
        users_written: r.get(7),
        users_stale: r.get(8),
        deletions_reconciled: r.get(9),
        users_expected: r.get(10),
        checkpoint: r.get(11),
        pass_started_at: r.get(12),
        resumes: r.get(13),
        error: r.get(14),
        created_at: r.get(15),
        started_at: r.get(16),
        finished_at: r.get(17),
        updated_at: r.get(18),
        reconcile_checks: r.get(19),
        reconcile_kept: r.get(20),
        users_skipped: r.get(21),
        errors: serde_json::from_value(r.get(22)).unwrap_or_default(),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl ControlStore {
    /// Queues a job for the integration, or returns the one already queued or running
    /// (`false` = it already existed). Safe under concurrent callers on any replica.
    pub async fn create_or_get_active_job(
        &self,
        integration_id: &str,
        project_id: &str,
        provider: &str,
    ) -> Result<(JobRow, bool), StoreError> {
        let c = self.client().await?;
        let insert = format!(
            "INSERT INTO capydb_auth_sync.backfill_jobs (id, integration_id, project_id, provider, state) \
             VALUES ($1, $2, $3, $4, 'queued') \
             ON CONFLICT (integration_id) WHERE state IN ('queued', 'running') DO NOTHING RETURNING {COLUMNS}"
        );
        let select = format!(
            "SELECT {COLUMNS} FROM capydb_auth_sync.backfill_jobs \
             WHERE integration_id = $1 AND state IN ('queued', 'running')"
        );
        // The active job can finish between the two statements; a few tries always settle.
        for _ in 0..5 {
            let id = format!("bf_{}", uuid::Uuid::new_v4().simple());
            if let Some(r) = c.query_opt(&insert, &[&id, &integration_id, &project_id, &provider]).await? {
                return Ok((job(&r), true));
            }
            if let Some(r) = c.query_opt(&select, &[&integration_id]).await? {
                return Ok((job(&r), false));
            }
        }
        Err(StoreError::Query("could not queue a backfill job: the active job kept changing".into()))
    }

    /// Takes the lease of a queued job, or of a running job whose lease expired (a resume).
    /// `None` when someone else holds it or the job ended.
    pub async fn claim_job(&self, job_id: &str, owner: &str, ttl: Duration) -> Result<Option<JobRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "UPDATE capydb_auth_sync.backfill_jobs SET \
               resumes = resumes + CASE WHEN state = 'running' AND lease_owner IS DISTINCT FROM $2 THEN 1 ELSE 0 END, \
               state = 'running', lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), \
               started_at = COALESCE(started_at, now()), updated_at = now() \
             WHERE id = $1 AND state IN ('queued', 'running') \
               AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now()) \
             RETURNING {COLUMNS}"
        );
        Ok(c.query_opt(&sql, &[&job_id, &owner, &secs(ttl)]).await?.map(|r| job(&r)))
    }

    /// Up to `limit` jobs that need a runner, oldest first: queued without a live lease, or
    /// running with an expired one.
    pub async fn claimable_jobs(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id FROM capydb_auth_sync.backfill_jobs \
                 WHERE state IN ('queued', 'running') AND (lease_owner IS NULL OR lease_expires_at < now()) \
                 ORDER BY created_at LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records the start of a pass and the users it expects to list. A repair pass adds its
    /// count to what earlier passes fetched, so progress stays a fraction of the whole job.
    pub async fn start_pass(
        &self,
        job_id: &str,
        owner: &str,
        pass_started_at: DateTime<Utc>,
        users_expected: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE capydb_auth_sync.backfill_jobs SET pass_started_at = $3, updated_at = now(), \
                   users_expected = CASE WHEN pass_started_at IS NULL THEN $4 ELSE users_fetched + $4 END \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                &[&job_id, &owner, &pass_started_at, &users_expected],
            )
            .await?;
        Ok(n == 1)
    }

    /// Adds one committed page's counters, stores the cursor to resume from and renews the
    /// lease. `false` = the lease is lost (or the job was cancelled/deleted): stop.
    pub async fn checkpoint_job(
        &self,
        job_id: &str,
        owner: &str,
        progress: &JobProgress,
        checkpoint: &serde_json::Value,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let errors = serde_json::json!(progress.errors);
        let n = c
            .execute(CHECKPOINT, &checkpoint_params(&job_id, &owner, progress, checkpoint, &secs(ttl), &errors))
            .await?;
        Ok(n == 1)
    }

    /// The fence of a page: checkpoints like [`Self::checkpoint_job`] inside a control
    /// transaction, and only if that found the lease still ours runs `commit` (the project
    /// transaction's COMMIT) while the job's row stays locked, then commits the checkpoint.
    ///
    /// The row lock is what makes this a fence and not just a check: a cancel, a supersede or
    /// another replica's claim is an UPDATE of the same row and waits until the project commit
    /// has happened (or failed), so no page commits after its runner lost the lease. `None` =
    /// the lease was lost: `commit` is dropped unpolled, which rolls the project transaction back.
    /// If the checkpoint's own commit fails after the page committed, the page is simply
    /// written again on resume (the upsert is idempotent).
    pub async fn checkpoint_fenced<T, E, F>(
        &self,
        job_id: &str,
        owner: &str,
        progress: &JobProgress,
        checkpoint: &serde_json::Value,
        ttl: Duration,
        commit: F,
    ) -> Result<Option<T>, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<StoreError>,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(StoreError::from)?;
        let errors = serde_json::json!(progress.errors);
        // The checkpoint's commit does not wait for the control database's disk: a checkpoint
        // lost in a crash of that database only makes a resume write its page again
        // (idempotent), and the fence is the row lock, which holds until the commit either
        // way. Sent pipelined with the update (one round trip).
        let ttl_secs = secs(ttl);
        let params = checkpoint_params(&job_id, &owner, progress, checkpoint, &ttl_secs, &errors);
        let (_, n) =
            tokio::try_join!(tx.batch_execute("SET LOCAL synchronous_commit = off"), tx.execute(CHECKPOINT, &params),)
                .map_err(StoreError::from)?;
        if n != 1 {
            return Ok(None);
        }
        let out = commit.await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some(out))
    }

    /// Renews the lease. `false` = lost.
    pub async fn heartbeat_job(&self, job_id: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE capydb_auth_sync.backfill_jobs SET lease_expires_at = now() + make_interval(secs => $3) \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                &[&job_id, &owner, &secs(ttl)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends the job (succeeded / failed / cancelled).
    pub async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        state: JobState,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE capydb_auth_sync.backfill_jobs SET state = $3, error = $4, finished_at = now(), updated_at = now(), \
                   lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                &[&job_id, &owner, &state.as_str(), &error],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends the integration's queued or running job as cancelled (its runner notices at its
    /// next checkpoint or heartbeat and stops). Returns the cancelled job's id.
    pub async fn cancel_active_job(&self, integration_id: &str, reason: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE capydb_auth_sync.backfill_jobs SET state = 'cancelled', error = $2, finished_at = now(), \
                   updated_at = now(), lease_owner = NULL, lease_expires_at = NULL \
                 WHERE integration_id = $1 AND state IN ('queued', 'running') RETURNING id",
                &[&integration_id, &reason],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Gives the lease up without ending the job (graceful shutdown): another replica, or
    /// this one after a restart, resumes it from its checkpoint at once.
    pub async fn release_job(&self, job_id: &str, owner: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE capydb_auth_sync.backfill_jobs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now() \
             WHERE id = $1 AND lease_owner = $2",
            &[&job_id, &owner],
        )
        .await?;
        Ok(())
    }

    pub async fn get_job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM capydb_auth_sync.backfill_jobs WHERE id = $1");
        Ok(c.query_opt(&sql, &[&job_id]).await?.map(|r| job(&r)))
    }

    /// The queued or running job of an integration.
    pub async fn active_job(&self, integration_id: &str) -> Result<Option<JobRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM capydb_auth_sync.backfill_jobs \
             WHERE integration_id = $1 AND state IN ('queued', 'running')"
        );
        Ok(c.query_opt(&sql, &[&integration_id]).await?.map(|r| job(&r)))
    }

    /// The most recently created job that has ended.
    pub async fn last_finished_job(&self, integration_id: &str) -> Result<Option<JobRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM capydb_auth_sync.backfill_jobs \
             WHERE integration_id = $1 AND state IN ('succeeded', 'failed', 'cancelled') \
             ORDER BY created_at DESC LIMIT 1"
        );
        Ok(c.query_opt(&sql, &[&integration_id]).await?.map(|r| job(&r)))
    }

    /// The most recently created job, whatever its state.
    pub async fn latest_job(&self, integration_id: &str) -> Result<Option<JobRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM capydb_auth_sync.backfill_jobs WHERE integration_id = $1 \
             ORDER BY created_at DESC LIMIT 1"
        );
        Ok(c.query_opt(&sql, &[&integration_id]).await?.map(|r| job(&r)))
    }
}

fn checkpoint_params<'a>(
    job_id: &'a &'a str,
    owner: &'a &'a str,
    p: &'a JobProgress,
    checkpoint: &'a serde_json::Value,
    ttl_secs: &'a f64,
    errors: &'a serde_json::Value,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 14] {
    [
        job_id,
        owner,
        &p.pages,
        &p.users_fetched,
        &p.users_written,
        &p.users_stale,
        &p.deletions_reconciled,
        checkpoint,
        ttl_secs,
        &p.reconcile_checks,
        &p.reconcile_kept,
        &p.users_skipped,
        errors,
        &MAX_JOB_ERRORS,
    ]
}
