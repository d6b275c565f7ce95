//! Runs one backfill job: claim the lease, count users, then fetch pages and write them
//! pipelined (the next pages are fetched and parsed while the previous ones are written),
//! checkpointing with every committed batch of pages. The lease is renewed by checkpoints and
//! a heartbeat; losing it (another replica took over, the job was cancelled or superseded, or
//! the integration was deleted) stops the runner.
//!
//! # Batches of pages (a group commit)
//!
//! Each write is one project-database transaction with a durable commit, plus a fenced
//! checkpoint on the control database: a fixed cost per write that a 500-user page pays in
//! full. So when the writer has fallen behind the fetcher (unthrottled, the usual case: the
//! writer is the bottleneck), it takes every page already parsed, up to [`MAX_BATCH_PAGES`],
//! and writes them as one: one transaction, one probe and `COPY` of all their users (a user
//! the cursor's overlap lists on two pages of the batch is written once), one commit and one
//! checkpoint, which is the batch's last page's cursor. When the fetcher is the slower side
//! (a rate limit), batches are single pages, as before. Everything that holds per page still
//! holds per batch, because a batch is just a longer page: the fence covers the whole batch
//! (it commits entirely under the lease or not at all); a resume starts after the last
//! committed batch and writes nothing twice but the overlap; each page's reconciliation
//! window keeps its own candidates (the rows *its* listing lacks), looked up in the batch's
//! transaction after all its rows are written, so a row written meanwhile (a back-dated
//! import's webhook) is asked of Clerk like before; a poison user is skipped from the batch.
//! Memory stays bounded: at most `MAX_BATCH_PAGES` pages written, as many queued and one
//! being fetched.
//!
//! Overlapping a batch's commit and checkpoint with the next batch's write (on a second
//! connection) was considered and not done: once batched, the commit and checkpoint are a
//! few milliseconds per four pages, and the next write would have to wait for the previous
//! commit anyway where their rows meet (the overlap user), and be rolled back with it if the
//! lease was lost.
//!
//! # Fenced writes
//!
//! A runner that lost its lease must not commit: a superseded runner's in-flight page from a
//! development instance could otherwise reconcile away production rows. Every batch of pages
//! — their upserts and their reconciliation, in one project-database transaction — commits only
//! inside [`crate::store::ControlStore::checkpoint_fenced`]: a control-database transaction first updates
//! the job row *where this runner still owns the lease* (recording the page's counters and
//! cursor), and only if that row matched does the project transaction commit, while the
//! control transaction still holds the job row's lock; then the checkpoint commits.
//!
//! We chose this over a fencing token stored in the project database because it needs no
//! extra table or column in the customer's database (SPEC §2: the sync touches nothing but
//! `capydb_auth.users`) and the lock makes it exact rather than "checked just before": every
//! way of taking a lease away (cancel, supersede, another replica's claim after expiry) is an
//! UPDATE of that same row, so it waits until the page's commit has finished — the page
//! either committed while the lease was held, or the lease was gone and the page was rolled
//! back. The only window left is the control commit failing after the project commit (or,
//! since the checkpoint commits without waiting for the control database's disk, being lost
//! in a crash of that database): the page is then committed without its checkpoint and
//! written again on resume, which the idempotent upsert makes harmless.
//!
//! # Confirmed reconciliation, poison-proof pages
//!
//! A listed window's missing rows are candidates; each is asked of Clerk by id
//! (`GET /v1/users/{id}`) under the same rate limiter: a 404 soft-deletes the row, a user
//! Clerk still returns is upserted with the page (see `cursor`'s module docs for why). Every
//! parsed user is made storable (`users::storable`); a user that still cannot be parsed or
//! stored is skipped, counted (`users_skipped`) and named in the job's error list, and the
//! page commits without it.
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::clerk_api::{ClerkApi, ClerkApiError};
use super::cursor::{BackfillCursor, Listed, PagePlan, ReconcileWindow};
use super::page::{read_user, RawPage, ReadUser};
use super::retry::{with_retries, Retry, RetryPolicy};
use super::BackfillContext;
use crate::crypto::CryptoError;
use crate::project_db::ProjectDbError;
use crate::providers::clerk::user_from_clerk;
use crate::store::jobs::JobProgress;
use crate::store::{JobRow, JobState, StoreError};
use crate::users::writer::BatchOutcome;
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
    #[error("internal error: {0}")]
    Internal(String),
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
    let span =
        tracing::info_span!("backfill", project_id = %job.project_id, provider = %job.provider, job_id = %job_id);
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
            Ok(Stop::Finished) => finish(ctx, job_id, JobState::Succeeded, None).await,
            Ok(Stop::Released) => {
                let released = ctx.store.release_job(job_id, owner).await;
                if released.is_ok() {
                    tracing::info!("backfill paused for shutdown; it resumes from its checkpoint");
                }
                released
            }
            Ok(Stop::LeaseLost) => {
                tracing::info!("backfill runner stopped: the job was cancelled, superseded or taken over");
                Ok(())
            }
            Err(e) => finish(ctx, job_id, JobState::Failed, Some(&e.to_string())).await,
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "could not record the end of the backfill; the lease will expire and it resumes");
        }
    }
    .instrument(span)
    .await
}

/// Records the job's end and logs its outcome and totals in one line: `backfill finished`
/// (info) or `backfill failed` (warn, with the error).
async fn finish(ctx: &BackfillContext, job_id: &str, state: JobState, error: Option<&str>) -> Result<(), StoreError> {
    if !ctx.store.finish_job(job_id, ctx.settings.instance_id.as_str(), state, error).await? {
        tracing::info!("backfill runner stopped: the job was cancelled, superseded or taken over");
        return Ok(());
    }
    let totals = match ctx.store.get_job(job_id).await {
        Ok(Some(job)) => JobTotals::of(&job),
        Ok(None) => JobTotals::default(),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the finished job's totals");
            JobTotals::default()
        }
    };
    macro_rules! outcome_line {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                outcome = %state.as_str(),
                pages = totals.pages,
                users_fetched = totals.users_fetched,
                users_written = totals.users_written,
                users_unchanged = totals.users_unchanged,
                deletions_reconciled = totals.deletions_reconciled,
                users_skipped = totals.users_skipped,
                duration_ms = totals.duration_ms,
                error,
                $message
            )
        };
    }
    match state {
        JobState::Succeeded => outcome_line!(info, "backfill finished"),
        _ => outcome_line!(warn, "backfill failed"),
    }
    Ok(())
}

/// The counts a finished job's outcome line reports (zeros when the job cannot be read).
#[derive(Default)]
struct JobTotals {
    pages: i64,
    users_fetched: i64,
    users_written: i64,
    /// What the API calls `users_stale`: users found already up to date.
    users_unchanged: i64,
    deletions_reconciled: i64,
    users_skipped: i64,
    /// From the first start to the end, in whole milliseconds.
    duration_ms: i64,
}

impl JobTotals {
    fn of(job: &JobRow) -> Self {
        let duration_ms = match (job.started_at, job.finished_at) {
            (Some(start), Some(end)) => (end - start).num_milliseconds().max(0),
            _ => 0,
        };
        JobTotals {
            pages: job.pages,
            users_fetched: job.users_fetched,
            users_written: job.users_written,
            users_unchanged: job.users_stale,
            deletions_reconciled: job.deletions_reconciled,
            users_skipped: job.users_skipped,
            duration_ms,
        }
    }
}

/// One fetched page, parsed, ready to write.
struct FetchedPage {
    plan: PagePlan,
    /// The page's users; each `raw` is a slice of the page as Clerk sent it.
    records: Vec<UserRecord>,
    /// Users of the page listed again because of the cursor's overlap.
    overlap: i64,
    /// `user_… : why` for users that could not be parsed.
    skipped: Vec<String>,
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
    // Pages the job has committed, over every run and pass (numbers the page spans).
    let mut pages = job.pages;
    loop {
        // Users this pass skipped exist at Clerk but not in the table: the count check
        // allows for them instead of passing again (and naming them again).
        let mut skipped = 0;
        if !cursor.done {
            match run_pass(ctx, job, &api, &db, cursor.clone(), pass_started_at, &mut pages).await? {
                (Stop::Finished, n) => skipped = n,
                (other, _) => return Ok(other),
            }
        }
        // The pass is complete. If Clerk's count and the table's live rows disagree, users
        // were deleted behind the cursor (or created after the last page): pass again.
        if cursor.pass + 1 >= MAX_PASSES {
            return Ok(Stop::Finished);
        }
        let in_clerk = api.count_users().await?;
        let live = live_rows(&db.pool()?).await?;
        if (live..=live + skipped).contains(&in_clerk) {
            return Ok(Stop::Finished);
        }
        tracing::info!(in_clerk, live, pass = cursor.pass + 1, "counts differ after a pass; running another");
        cursor = cursor.next_pass();
        pass_started_at = Utc::now();
        let checkpoint = serde_json::to_value(&cursor).expect("cursor serialises");
        if !ctx.store.start_pass(&job.id, owner, pass_started_at, in_clerk).await?
            || !ctx
                .store
                .checkpoint_job(&job.id, owner, &JobProgress::default(), &checkpoint, ctx.settings.backfill.lease_ttl)
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

/// A parsed page on its way from the fetcher to the writer, with its span (open from the
/// request to the commit).
type PageInFlight = (tracing::Span, FetchedPage);

/// One pass from `cursor` to its last page, fetch and write pipelined. Each page runs in a
/// `backfill_page` span (job page number, pass, cursor position, users new to the pass;
/// written and unchanged once committed), inside the job's `backfill` span; `pages` counts the job's
/// committed pages.
async fn run_pass(
    ctx: &BackfillContext,
    job: &JobRow,
    api: &ClerkApi,
    db: &ProjectDb<'_>,
    cursor: BackfillCursor,
    pass_started_at: DateTime<Utc>,
    pages: &mut i64,
) -> Result<(Stop, i64), JobError> {
    let limit = ctx.clerk.settings().page_size;
    // Parsed pages between the fetcher and the writer, in order, each with its span (open
    // from the request to the commit). The writer takes every page that is ready, up to
    // `MAX_BATCH_PAGES`, so with the batch it is writing and the page the fetcher holds, at
    // most `2 × MAX_BATCH_PAGES + 1` pages are in memory whatever the number of users.
    let (tx, mut rx) = mpsc::channel::<PageInFlight>(MAX_BATCH_PAGES);

    // The fetcher asks for a page, parses it on the blocking pool (a few milliseconds: see
    // `page`) and asks for the next one while the writer writes the previous ones.
    let mut number = *pages;
    let fetcher = async move {
        let mut cursor = cursor;
        loop {
            number += 1;
            let span = tracing::info_span!(
                "backfill_page",
                page = number,
                pass = cursor.pass,
                from_ms = cursor.from_ms,
                users = tracing::field::Empty,
                written = tracing::field::Empty,
                unchanged = tracing::field::Empty,
            );
            let query = cursor.query(limit);
            let page = tokio::select! {
                r = api.list_users_page(&query).instrument(span.clone()) => r?,
                _ = ctx.shutdown.draining() => return Ok::<(), JobError>(()),
            };
            let (c, parsing) = (cursor.clone(), span.clone());
            let parsed = tokio::task::spawn_blocking(move || parsing.in_scope(|| prepare(&c, page, limit)))
                .await
                .map_err(|e| JobError::Internal(format!("page parser stopped: {e}")))?;
            let next = parsed.plan.next.clone();
            if tx.send((span, parsed)).await.is_err() || next.done {
                return Ok(());
            }
            cursor = next;
        }
    };

    // The writer owns the receiver, so when it stops early (lease lost, an error, shutdown)
    // the channel closes and a fetcher waiting to hand over a page stops too.
    let mut skipped = 0;
    let pass_skipped = &mut skipped;
    let writer = async move {
        let mut waited = std::time::Instant::now();
        let mut batch: Vec<PageInFlight> = Vec::with_capacity(MAX_BATCH_PAGES);
        while let Some(first) = rx.recv().await {
            let started = std::time::Instant::now();
            // Adaptive batching (a group commit of pages): when the writer has fallen behind,
            // every page already parsed goes into this one transaction, up to the cap; when
            // the fetcher is the slower side (a rate limit), batches are single pages.
            batch.push(first);
            while batch.len() < MAX_BATCH_PAGES && !batch[batch.len() - 1].1.plan.next.done {
                match rx.try_recv() {
                    Ok(page) => batch.push(page),
                    Err(_) => break,
                }
            }
            for (span, page) in &batch {
                // Users new to the pass: the overlap with the previous page is not counted twice.
                span.record("users", page.plan.fetched);
            }
            let last_span = batch[batch.len() - 1].0.clone();
            let pages_of_batch: Vec<&FetchedPage> = batch.iter().map(|(_, page)| page).collect();
            let reconcile = Reconcile {
                api,
                windows: pages_of_batch.iter().filter_map(|p| p.plan.reconcile.as_ref()).collect(),
                pass_started_at,
            };
            let committed =
                write_batch(ctx, job, db, &pages_of_batch, &reconcile).instrument(last_span.clone()).await?;
            let Some(progress) = committed else {
                return Ok(Stop::LeaseLost);
            };
            let finished = pages_of_batch[pages_of_batch.len() - 1].plan.next.done;
            // The batch's counts go on its last page's span (the commit is the batch's).
            last_span.record("written", progress.users_written);
            last_span.record("unchanged", progress.users_stale);
            // One line per page, with where the batch's time went: waiting for the fetcher,
            // then writing (with its reconciliation) and committing; counts are the batch's.
            for (span, _) in &batch {
                *pages += 1;
                span.in_scope(|| {
                    tracing::debug!(
                        batch_pages = batch.len(),
                        written = progress.users_written,
                        unchanged = progress.users_stale,
                        reconciled = progress.deletions_reconciled,
                        skipped = progress.users_skipped,
                        wait_ms = (started - waited).as_secs_f64() * 1e3,
                        write_ms = started.elapsed().as_secs_f64() * 1e3,
                        "backfill page committed"
                    )
                });
            }
            batch.clear();
            waited = std::time::Instant::now();
            *pass_skipped += progress.users_skipped;
            metrics::counter!("capydb_auth_sync_backfill_users_total", "stage" => "fetched")
                .increment(progress.users_fetched as u64);
            metrics::counter!("capydb_auth_sync_backfill_users_total", "stage" => "written")
                .increment(progress.users_written as u64);
            if finished {
                return Ok(Stop::Finished);
            }
            if ctx.shutdown.is_draining() {
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
    Ok((stop, skipped))
}

/// Parses a page (see `page`) and plans the cursor from it: converts every user and makes
/// it storable; users that cannot be parsed are named, not written.
fn prepare(cursor: &BackfillCursor, page: RawPage, limit: u32) -> FetchedPage {
    let users: Vec<ReadUser> = (0..page.len()).map(|i| read_user(&page, i)).collect();
    let listed: Vec<Listed> = users.iter().map(|u| Listed { id: u.id.clone(), created_ms: u.created_ms }).collect();
    let plan = cursor.plan(&listed, limit);
    let mut records = Vec::with_capacity(users.len());
    let mut skipped = Vec::new();
    for user in users {
        match user.record {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "skipping a user Clerk returned in an unexpected shape");
                skipped.push(format!("{}: skipped, cannot be parsed: {e}", display_id(&user.id)));
            }
        }
    }
    let overlap = (listed.len() as i64 - plan.fetched as i64).max(0);
    FetchedPage { plan, records, overlap, skipped }
}

/// An id for the error list (ids come from Clerk; bounded and printable).
fn display_id(id: &str) -> String {
    if id.is_empty() {
        return "(no id)".into();
    }
    id.chars().take(64).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

/// What Clerk said about a window's reconciliation candidates.
#[derive(Default)]
struct Confirmed {
    /// Candidates asked by id.
    checked: i64,
    /// Answered 404: to soft-delete.
    gone: Vec<String>,
    /// Still at Clerk: upserted instead.
    kept: Vec<UserRecord>,
    /// Still at Clerk but unparseable: neither deleted nor written.
    skipped: Vec<String>,
}

/// Requests by id in flight at once (they share the key's rate limiter anyway).
const CONFIRM_CONCURRENCY: usize = 4;

/// Asks Clerk about every candidate of a batch's listed windows (SPEC §5: delete only on a
/// 404). The candidates are looked up on the batch's transaction, after its rows are written.
async fn confirm_candidates(
    api: &ClerkApi,
    tx: &deadpool_postgres::Transaction<'_>,
    windows: &[&ReconcileWindow],
    pass_started_at: DateTime<Utc>,
) -> Result<Confirmed, JobError> {
    // One statement per window (each a range scan of the `created_at` index with its own
    // bounds), sent together: one round trip.
    let seen: Vec<Vec<&str>> = windows.iter().map(|w| w.ids.iter().map(String::as_str).collect()).collect();
    let lookups = windows
        .iter()
        .zip(&seen)
        .map(|(w, seen)| UsersWriter::reconcile_candidates(tx, w.from, w.to, pass_started_at, seen));
    let candidates: Vec<String> = futures::future::try_join_all(lookups).await?.into_iter().flatten().collect();
    let mut confirmed = Confirmed { checked: candidates.len() as i64, ..Confirmed::default() };
    if candidates.is_empty() {
        return Ok(confirmed);
    }
    let answers: Vec<(String, Result<Option<Value>, ClerkApiError>)> = futures::stream::iter(candidates)
        .map(|id| async move {
            let answer = api.get_user(&id).await;
            (id, answer)
        })
        .buffer_unordered(CONFIRM_CONCURRENCY)
        .collect()
        .await;
    for (id, answer) in answers {
        match answer? {
            None => confirmed.gone.push(id),
            Some(user) => match user_from_clerk(&user) {
                Ok(mut r) => {
                    r.make_storable();
                    confirmed.kept.push(r);
                }
                Err(e) => confirmed.skipped.push(format!("{}: kept, cannot be parsed: {e}", display_id(&id))),
            },
        }
    }
    if !confirmed.gone.is_empty() || !confirmed.kept.is_empty() {
        tracing::info!(
            checked = confirmed.checked,
            gone = confirmed.gone.len(),
            kept = confirmed.kept.len(),
            "reconciliation candidates confirmed with Clerk"
        );
    }
    Ok(confirmed)
}

/// Retries of a page write while the project database is unavailable.
fn write_policy() -> RetryPolicy {
    RetryPolicy { base: Duration::from_millis(400), max_attempts: 5, max_throttled: 0 }
}

/// A batch's reconciliation: the listed windows of its pages, and how to ask Clerk about
/// them.
struct Reconcile<'a> {
    api: &'a ClerkApi,
    windows: Vec<&'a ReconcileWindow>,
    pass_started_at: DateTime<Utc>,
}

impl Reconcile<'_> {
    async fn confirm(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<Confirmed, JobError> {
        if self.windows.is_empty() {
            return Ok(Confirmed::default());
        }
        confirm_candidates(self.api, tx, &self.windows, self.pass_started_at).await
    }
}

/// Pages written in one project-database transaction at most: when the writer falls behind
/// the fetcher, the pages already parsed are written together, paying the transaction, the
/// durable commit and the fenced checkpoint once. Also bounds the pages in memory (see
/// `run_pass`).
const MAX_BATCH_PAGES: usize = 4;

/// Writes a batch of consecutive pages and their reconciliation in one project-database
/// transaction that commits only under the lease (see the module docs), retrying while the
/// project database is unavailable; the checkpoint is the last page's cursor. `None` = the
/// lease is lost and nothing was committed.
async fn write_batch(
    ctx: &BackfillContext,
    job: &JobRow,
    db: &ProjectDb<'_>,
    batch: &[&FetchedPage],
    reconcile: &Reconcile<'_>,
) -> Result<Option<JobProgress>, JobError> {
    with_retries(
        &write_policy(),
        "backfill page write",
        || write_batch_once(ctx, job, db, batch, reconcile),
        |e| {
            if matches!(e, JobError::Project(ProjectDbError::Unavailable(_) | ProjectDbError::Conflict(_))) {
                Retry::Backoff
            } else {
                Retry::No
            }
        },
    )
    .await
    .map_err(|e| e.error)
}

/// The rows of a batch, each user once where pages repeat it with the same object (the
/// cursor's overlap: a page lists the previous page's last millisecond again), and how many
/// repeats were dropped. A user listed again *changed* (it was updated between the two
/// requests) keeps both rows: `upsert_page` then applies them in order, as separate pages
/// would have.
fn batch_rows<'a>(batch: &[&'a FetchedPage]) -> (Vec<&'a UserRecord>, usize) {
    let capacity = batch.iter().map(|p| p.records.len()).sum();
    let mut rows: Vec<&'a UserRecord> = Vec::with_capacity(capacity);
    let mut seen: HashMap<&'a str, usize> = HashMap::with_capacity(capacity);
    let mut repeats = 0;
    for page in batch {
        for record in &page.records {
            if seen.get(record.id.as_str()).is_some_and(|&at| rows[at] == record) {
                repeats += 1;
                continue;
            }
            seen.insert(record.id.as_str(), rows.len());
            rows.push(record);
        }
    }
    (rows, repeats)
}

async fn write_batch_once(
    ctx: &BackfillContext,
    job: &JobRow,
    db: &ProjectDb<'_>,
    batch: &[&FetchedPage],
    reconcile: &Reconcile<'_>,
) -> Result<Option<JobProgress>, JobError> {
    let mut client = db.pool()?.get().await.map_err(ProjectDbError::from)?;
    let mut tx = client.transaction().await.map_err(ProjectDbError::from)?;
    let mut skipped: Vec<String> = batch.iter().flat_map(|p| p.skipped.iter().cloned()).collect();
    let (rows, repeats) = batch_rows(batch);
    let outcome = upsert_poison_proof(&mut tx, &rows, &mut skipped).await?;
    // The windows' candidates are looked for once the pages are written, in the same
    // transaction, and asked of Clerk: a user that reached the table while its page waited
    // (a back-dated import whose webhook landed, even during this write) is asked about,
    // never deleted unseen. The batch's own rows are listed, so never candidates.
    let confirmed = reconcile.confirm(&tx).await?;
    skipped.extend(confirmed.skipped.iter().cloned());
    let kept_rows: Vec<&UserRecord> = confirmed.kept.iter().collect();
    let kept_outcome = upsert_poison_proof(&mut tx, &kept_rows, &mut skipped).await?;
    let written = (outcome.written + kept_outcome.written) as i64;
    let unchanged = (outcome.unchanged + kept_outcome.unchanged) as i64;
    let gone: Vec<&str> = confirmed.gone.iter().map(String::as_str).collect();
    let reconciled =
        if gone.is_empty() { 0 } else { UsersWriter::delete_confirmed(&tx, &gone, Utc::now()).await? as i64 };
    let kept = confirmed.kept.len() as i64;
    let fetched: i64 = batch.iter().map(|p| p.plan.fetched as i64).sum();
    // Overlap users written by an earlier page of this batch were dropped, not written again.
    let overlap = batch.iter().map(|p| p.overlap).sum::<i64>() - repeats as i64;
    let progress = JobProgress {
        pages: batch.len() as i64,
        users_fetched: fetched,
        users_written: written,
        // Overlap users and kept candidates are not "stale" pages of the listing.
        users_stale: (unchanged - overlap).clamp(0, fetched),
        deletions_reconciled: reconciled,
        reconcile_checks: confirmed.checked,
        reconcile_kept: kept,
        users_skipped: skipped.len() as i64,
        errors: skipped,
    };
    let last = batch.last().expect("a batch has a page");
    let checkpoint = serde_json::to_value(&last.plan.next).expect("cursor serialises");
    let owner = ctx.settings.instance_id.as_str();
    let committed = ctx
        .store
        .checkpoint_fenced(&job.id, owner, &progress, &checkpoint, ctx.settings.backfill.lease_ttl, async {
            tx.commit().await.map_err(|e| JobError::Project(e.into()))
        })
        .await?;
    Ok(committed.map(|()| progress))
}

/// Upserts the page (binary COPY and one merge); if the batch is refused (a value Postgres
/// will not store despite `make_storable`), writes the users one by one under savepoints and
/// skips, names and counts the ones refused, so one user never stops the page.
async fn upsert_poison_proof(
    tx: &mut deadpool_postgres::Transaction<'_>,
    rows: &[&UserRecord],
    skipped: &mut Vec<String>,
) -> Result<BatchOutcome, ProjectDbError> {
    if rows.is_empty() {
        return Ok(BatchOutcome::default());
    }
    {
        let sp = tx.savepoint("page").await?;
        match UsersWriter::upsert_page(&sp, rows).await {
            Ok(outcome) => {
                sp.commit().await?;
                return Ok(outcome);
            }
            Err(ProjectDbError::Query(e)) if refused_value(&e) => {
                tracing::warn!(error = %e, "a page was refused; writing its users one by one");
                sp.rollback().await?;
            }
            Err(other) => return Err(other),
        }
    }
    let mut total = BatchOutcome::default();
    for &record in rows {
        let sp = tx.savepoint("user").await?;
        match UsersWriter::upsert_batch(&sp, &[record]).await {
            Ok(outcome) => {
                sp.commit().await?;
                total.written += outcome.written;
                total.unchanged += outcome.unchanged;
            }
            Err(ProjectDbError::Query(e)) if refused_value(&e) => {
                sp.rollback().await?;
                tracing::warn!(user_id = %record.id, error = %e, "skipping a user the project database refused");
                skipped.push(format!("{}: skipped, cannot be stored: {e}", display_id(&record.id)));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(total)
}

/// Whether the database refused a *value* (SQLSTATE class 22, data exception, e.g. text it
/// cannot encode; or 54, program limit exceeded, e.g. an index row too large) — the errors
/// one user's data can cause. Anything else (permissions, a missing table) is about the
/// database and fails the page as before.
fn refused_value(message: &str) -> bool {
    message.starts_with("22") || message.starts_with("54")
}
