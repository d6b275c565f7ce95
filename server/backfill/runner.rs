//! Runs one backfill job: claim the lease, count users, then fetch pages and write them
//! pipelined (the next page is fetched while the previous one is written), checkpointing
//! after every committed page. The lease is renewed by checkpoints and a heartbeat; losing
//! it (another replica took over, or the integration was deleted) stops the runner.
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::clerk_api::{ClerkApi, ClerkApiError};
use super::cursor::{BackfillCursor, Listed, PagePlan};
use super::BackfillContext;
use crate::crypto::CryptoError;
use crate::project_db::ProjectDbError;
use crate::providers::clerk::user_from_clerk;
use crate::store::jobs::JobProgress;
use crate::store::{JobRow, JobState, StoreError};
use crate::users::{UserRecord, UsersWriter};

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("{0} — update the key with ConfigureIntegration, then run the backfill again")]
    KeyRejected(ClerkApiError),
    #[error(transparent)]
    Clerk(ClerkApiError),
    #[error(transparent)]
    Project(#[from] ProjectDbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored credentials cannot be decrypted: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the integration has no Clerk secret key")]
    NoSecretKey,
}

impl From<ClerkApiError> for JobError {
    fn from(e: ClerkApiError) -> Self {
        if e.is_key_rejected() {
            JobError::KeyRejected(e)
        } else {
            JobError::Clerk(e)
        }
    }
}

/// How a runner stopped without failing.
enum Stop {
    Finished,
    /// Graceful shutdown: give the lease back so the job resumes at once elsewhere.
    Released,
    /// Someone else owns the job now, or it is gone.
    LeaseLost,
}

pub(super) async fn run(ctx: &BackfillContext, job_id: &str) {
    let owner = ctx.settings.instance_id.as_str();
    let ttl = ctx.settings.backfill.lease_ttl;
    let job = match ctx.store.claim_job(job_id, owner, ttl).await {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "could not claim backfill job");
            return;
        }
    };
    let span = tracing::info_span!("backfill", job_id = %job_id, project_id = %job.project_id);
    async {
        tracing::info!(resumes = job.resumes, resumed = job.checkpoint.is_some(), "backfill started");
        metrics::gauge!("capydb_auth_sync_backfills_running").increment(1.0);
        let heartbeat = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match ctx.store.heartbeat_job(job_id, owner, ttl).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(error = %e, "backfill heartbeat failed"),
                }
            }
        };
        let result = tokio::select! {
            r = execute(ctx, &job) => r,
            _ = heartbeat => Ok(Stop::LeaseLost),
        };
        metrics::gauge!("capydb_auth_sync_backfills_running").decrement(1.0);
        let end = match result {
            Ok(Stop::Finished) => ctx.store.finish_job(job_id, owner, JobState::Succeeded, None).await.map(|_| ()),
            Ok(Stop::Released) => ctx.store.release_job(job_id, owner).await,
            Ok(Stop::LeaseLost) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(error = %message, "backfill failed");
                ctx.store.finish_job(job_id, owner, JobState::Failed, Some(&message)).await.map(|_| ())
            }
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "could not record the end of the backfill; the lease will expire and it resumes");
        }
        tracing::info!("backfill runner stopped");
    }
    .instrument(span)
    .await
}

/// One fetched page, ready to write.
struct FetchedPage {
    plan: PagePlan,
    records: Vec<UserRecord>,
    fetched: i64,
}

async fn execute(ctx: &BackfillContext, job: &JobRow) -> Result<Stop, JobError> {
    let keyring = &ctx.settings.keyring;
    let Some(integration) = ctx.store.get_integration_by_id(&job.integration_id).await? else {
        return Ok(Stop::LeaseLost);
    };
    let api = ctx.clerk.client(integration.secret_key(keyring)?.ok_or(JobError::NoSecretKey)?);
    let db = ProjectDb { pools: &ctx.pools, integration_id: &integration.id, url: integration.database_url(keyring)? };
    let owner = ctx.settings.instance_id.as_str();

    let mut pass_started_at = match job.pass_started_at {
        Some(t) => t,
        None => {
            let expected = api.count_users().await?;
            let now = Utc::now();
            if !ctx.store.start_pass(&job.id, owner, now, expected).await? {
                return Ok(Stop::LeaseLost);
            }
            now
        }
    };
    let mut cursor: BackfillCursor =
        job.checkpoint.clone().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    loop {
        if !cursor.done {
            match run_pass(ctx, job, &api, &db, cursor.clone(), pass_started_at).await? {
                Stop::Finished => {}
                other => return Ok(other),
            }
        }
        // The pass is complete. If Clerk's count and the table's live rows disagree, users
        // were deleted behind the cursor (or created after the last page): pass again.
        if cursor.pass + 1 >= MAX_PASSES {
            return Ok(Stop::Finished);
        }
        let in_clerk = api.count_users().await?;
        let live = live_rows(&db.pool()?).await?;
        if in_clerk == live {
            return Ok(Stop::Finished);
        }
        tracing::info!(in_clerk, live, pass = cursor.pass + 1, "counts differ after a pass; running another");
        cursor = cursor.next_pass();
        pass_started_at = Utc::now();
        let checkpoint = serde_json::to_value(&cursor).expect("cursor serialises");
        if !ctx.store.start_pass(&job.id, owner, pass_started_at, in_clerk).await?
            || !ctx
                .store
                .checkpoint_job(&job.id, owner, JobProgress::default(), &checkpoint, ctx.settings.backfill.lease_ttl)
                .await?
        {
            return Ok(Stop::LeaseLost);
        }
    }
}

/// The project database of the job. The pool is looked up for every page, which keeps it
/// from being evicted as idle during a long backfill and follows a changed URL.
struct ProjectDb<'a> {
    pools: &'a crate::project_db::ProjectPools,
    integration_id: &'a str,
    url: secrecy::SecretString,
}

impl ProjectDb<'_> {
    fn pool(&self) -> Result<deadpool_postgres::Pool, ProjectDbError> {
        self.pools.pool(self.integration_id, &self.url)
    }
}

/// Passes per job at most: the first, plus repairs while the provider churned.
const MAX_PASSES: u32 = 3;

async fn live_rows(pool: &deadpool_postgres::Pool) -> Result<i64, ProjectDbError> {
    UsersWriter::live_clerk_rows(&pool.get().await?).await
}

/// One pass from `cursor` to its last page, fetch and write pipelined.
async fn run_pass(
    ctx: &BackfillContext,
    job: &JobRow,
    api: &ClerkApi,
    db: &ProjectDb<'_>,
    cursor: BackfillCursor,
    pass_started_at: DateTime<Utc>,
) -> Result<Stop, JobError> {
    let owner = ctx.settings.instance_id.as_str();
    let ttl = ctx.settings.backfill.lease_ttl;
    let limit = ctx.clerk.settings().page_size;
    let (tx, mut rx) = mpsc::channel::<FetchedPage>(1);

    let fetcher = async move {
        let mut cursor = cursor;
        loop {
            let query = cursor.query(limit);
            let users = tokio::select! {
                r = api.list_users(&query) => r?,
                _ = ctx.shutdown.cancelled() => return Ok::<(), JobError>(()),
            };
            let page = prepare(&cursor, users, limit);
            let next = page.plan.next.clone();
            if tx.send(page).await.is_err() || next.done {
                return Ok(());
            }
            cursor = next;
        }
    };

    // The writer owns the receiver, so when it stops early (lease lost, an error, shutdown)
    // the channel closes and a fetcher waiting to hand over a page stops too.
    let writer = async move {
        while let Some(page) = rx.recv().await {
            let (written, stale, reconciled) = write_page(db, &page, pass_started_at).await?;
            let progress = JobProgress {
                pages: 1,
                users_fetched: page.fetched,
                users_written: written,
                users_stale: stale,
                deletions_reconciled: reconciled,
            };
            let checkpoint = serde_json::to_value(&page.plan.next).expect("cursor serialises");
            if !ctx.store.checkpoint_job(&job.id, owner, progress, &checkpoint, ttl).await? {
                return Ok(Stop::LeaseLost);
            }
            metrics::counter!("capydb_auth_sync_backfill_users_total", "stage" => "fetched")
                .increment(page.fetched as u64);
            metrics::counter!("capydb_auth_sync_backfill_users_total", "stage" => "written").increment(written as u64);
            if page.plan.next.done {
                return Ok(Stop::Finished);
            }
            if ctx.shutdown.is_cancelled() {
                return Ok(Stop::Released);
            }
        }
        Ok::<_, JobError>(Stop::Released)
    };

    let (fetched, written) = tokio::join!(fetcher, writer);
    let stop = written?;
    if matches!(stop, Stop::Released) {
        // The fetcher ended early: either shutdown (fine) or an error (the job fails).
        fetched?;
    }
    Ok(stop)
}

/// Parses a page: plans the cursor and converts the users not seen before.
fn prepare(cursor: &BackfillCursor, users: Vec<Value>, limit: u32) -> FetchedPage {
    let listed: Vec<Listed> = users
        .iter()
        .map(|u| Listed {
            id: u.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
            created_ms: u.get("created_at").and_then(Value::as_i64).unwrap_or(0),
        })
        .collect();
    let plan = cursor.plan(&listed, limit);
    let mut records = Vec::with_capacity(plan.new_users.len());
    for &i in &plan.new_users {
        match user_from_clerk(&users[i]) {
            Ok(r) => records.push(r),
            // Kept in the page's id list (never reconciled away), just not written.
            Err(e) => {
                tracing::warn!(user_id = %listed[i].id, error = %e, "skipping a user Clerk returned in an unexpected shape")
            }
        }
    }
    FetchedPage { fetched: plan.new_users.len() as i64, plan, records }
}

/// Writes one page and its reconciliation in one project-database transaction, retrying
/// briefly while the database is unavailable. Returns (written, stale, reconciled).
async fn write_page(
    db: &ProjectDb<'_>,
    page: &FetchedPage,
    pass_started_at: DateTime<Utc>,
) -> Result<(i64, i64, i64), ProjectDbError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match write_page_once(&db.pool()?, page, pass_started_at).await {
            Err(ProjectDbError::Unavailable(msg)) if attempt < 5 => {
                tracing::warn!(attempt, error = %msg, "project database unavailable during backfill; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
            other => return other,
        }
    }
}

async fn write_page_once(
    pool: &deadpool_postgres::Pool,
    page: &FetchedPage,
    pass_started_at: DateTime<Utc>,
) -> Result<(i64, i64, i64), ProjectDbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let batch = UsersWriter::upsert_batch(&tx, &page.records).await?;
    let reconciled = match &page.plan.reconcile {
        Some(w) => {
            let ids: Vec<&str> = w.ids.iter().map(String::as_str).collect();
            UsersWriter::reconcile_window(&tx, w.from, w.to, pass_started_at, &ids, Utc::now()).await?
        }
        None => 0,
    };
    tx.commit().await?;
    Ok((batch.written as i64, batch.unchanged as i64, reconciled as i64))
}
