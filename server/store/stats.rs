//! Webhook counters per integration (shown by GetSyncStatus): totals since the integration
//! was created, the same counts per minute for the recent window ("in the last hour"), and
//! the most recent errors of authenticated deliveries. All of it is written by one flush
//! (see `ingest::counters`), never on a delivery's response path.
use chrono::{DateTime, Utc};

use super::{ControlStore, StoreError};

/// How one delivery ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied,
    IgnoredStale,
    IgnoredDuplicate,
    IgnoredUnhandled,
    Rejected,
    Malformed,
    Unavailable,
}

impl WebhookOutcome {
    /// The metric label and the counter column.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Applied => "applied",
            WebhookOutcome::IgnoredStale => "ignored_stale",
            WebhookOutcome::IgnoredDuplicate => "ignored_duplicate",
            WebhookOutcome::IgnoredUnhandled => "ignored_unhandled",
            WebhookOutcome::Rejected => "rejected",
            WebhookOutcome::Malformed => "malformed",
            WebhookOutcome::Unavailable => "unavailable",
        }
    }

    /// Whether the delivery was authenticated and understood (sets `last_event_at`).
    pub fn is_event(self) -> bool {
        matches!(
            self,
            WebhookOutcome::Applied
                | WebhookOutcome::IgnoredStale
                | WebhookOutcome::IgnoredDuplicate
                | WebhookOutcome::IgnoredUnhandled
        )
    }
}

/// Recent errors kept per integration (in the delta and in the control database).
pub const RECENT_ERRORS: usize = 10;

/// One error of an authenticated delivery, as the status lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    pub at: DateTime<Utc>,
    /// `malformed`, `unavailable` (the counter it was counted under), or `backfill`.
    pub kind: String,
    /// Already free of secrets, personal data and driver text.
    pub message: String,
}

/// Deliveries counted over a window, per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    pub applied: i64,
    pub ignored_stale: i64,
    pub ignored_duplicate: i64,
    pub ignored_unhandled: i64,
    pub rejected: i64,
    pub malformed: i64,
    pub unavailable: i64,
}

impl WebhookCounts {
    /// Deliveries that verified and were understood (applied or ignored).
    pub fn verified(&self) -> i64 {
        self.applied + self.ignored_stale + self.ignored_duplicate + self.ignored_unhandled
    }

    /// Deliveries whose signature verified, whatever became of them after.
    pub fn authenticated(&self) -> i64 {
        self.verified() + self.malformed + self.unavailable
    }

    /// The seven counts in `by_outcome` order, from columns `first..first + 7` of `row`.
    fn from_row(row: &tokio_postgres::Row, first: usize) -> Self {
        WebhookCounts {
            applied: row.get(first),
            ignored_stale: row.get(first + 1),
            ignored_duplicate: row.get(first + 2),
            ignored_unhandled: row.get(first + 3),
            rejected: row.get(first + 4),
            malformed: row.get(first + 5),
            unavailable: row.get(first + 6),
        }
    }

    /// Each count with its outcome's name ([`WebhookOutcome::as_str`]).
    pub fn by_outcome(&self) -> [(WebhookOutcome, i64); 7] {
        [
            (WebhookOutcome::Applied, self.applied),
            (WebhookOutcome::IgnoredStale, self.ignored_stale),
            (WebhookOutcome::IgnoredDuplicate, self.ignored_duplicate),
            (WebhookOutcome::IgnoredUnhandled, self.ignored_unhandled),
            (WebhookOutcome::Rejected, self.rejected),
            (WebhookOutcome::Malformed, self.malformed),
            (WebhookOutcome::Unavailable, self.unavailable),
        ]
    }
}

#[derive(Debug, Clone, Default)]
pub struct WebhookStatsRow {
    /// Every delivery counted since the integration was created.
    pub totals: WebhookCounts,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Counts gathered in memory for one integration since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDelta {
    pub applied: i64,
    pub ignored_stale: i64,
    pub ignored_duplicate: i64,
    pub ignored_unhandled: i64,
    pub rejected: i64,
    pub malformed: i64,
    pub unavailable: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    /// Already free of secrets and personal data.
    pub last_error: Option<(String, DateTime<Utc>)>,
    /// The newest errors, oldest first, at most [`RECENT_ERRORS`].
    pub errors: Vec<RecentError>,
}

impl StatsDelta {
    /// Counts one delivery.
    pub fn count(&mut self, outcome: WebhookOutcome, at: DateTime<Utc>, error: Option<String>) {
        let n = match outcome {
            WebhookOutcome::Applied => &mut self.applied,
            WebhookOutcome::IgnoredStale => &mut self.ignored_stale,
            WebhookOutcome::IgnoredDuplicate => &mut self.ignored_duplicate,
            WebhookOutcome::IgnoredUnhandled => &mut self.ignored_unhandled,
            WebhookOutcome::Rejected => &mut self.rejected,
            WebhookOutcome::Malformed => &mut self.malformed,
            WebhookOutcome::Unavailable => &mut self.unavailable,
        };
        *n += 1;
        if outcome.is_event() {
            self.last_event_at = self.last_event_at.max(Some(at));
        }
        if let Some(e) = error {
            self.errors.push(RecentError { at, kind: outcome.as_str().to_string(), message: e.clone() });
            self.keep_recent_errors();
            self.last_error = Some((e, at));
        }
    }

    fn keep_recent_errors(&mut self) {
        let excess = self.errors.len().saturating_sub(RECENT_ERRORS);
        self.errors.drain(..excess);
    }

    /// Folds a later delta into this one.
    pub fn absorb(&mut self, later: StatsDelta) {
        self.applied += later.applied;
        self.ignored_stale += later.ignored_stale;
        self.ignored_duplicate += later.ignored_duplicate;
        self.ignored_unhandled += later.ignored_unhandled;
        self.rejected += later.rejected;
        self.malformed += later.malformed;
        self.unavailable += later.unavailable;
        self.last_event_at = self.last_event_at.max(later.last_event_at);
        if later.last_error.is_some() {
            self.last_error = later.last_error;
        }
        self.errors.extend(later.errors);
        self.keep_recent_errors();
    }
}

impl ControlStore {
    /// Adds the deltas of many integrations in one transaction: the totals, the current
    /// minute of the recent window (dropping the integrations' minutes older than two hours)
    /// and the recent errors (keeping the newest [`RECENT_ERRORS`] of each integration).
    /// Integrations deleted meanwhile are skipped.
    pub async fn flush_webhook_stats(&self, deltas: &[(String, StatsDelta)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut c = self.counters_client().await?;
        match write_deltas(&mut c, deltas).await {
            Ok(()) => Ok(()),
            // An integration deleted between the join and the insert: its counts go with it.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn webhook_stats(&self, integration_id: &str) -> Result<WebhookStatsRow, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT applied, ignored_stale, ignored_duplicate, ignored_unhandled, rejected, malformed, unavailable, \
                 last_event_at, last_error, last_error_at FROM capydb_auth_sync.webhook_stats WHERE integration_id = $1",
                &[&integration_id],
            )
            .await?;
        Ok(row
            .map(|r| WebhookStatsRow {
                totals: WebhookCounts::from_row(&r, 0),
                last_event_at: r.get(7),
                last_error: r.get(8),
                last_error_at: r.get(9),
            })
            .unwrap_or_default())
    }

    /// The deliveries of the last hour (the current minute and the 59 before it).
    pub async fn webhook_last_hour(&self, integration_id: &str) -> Result<WebhookCounts, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT COALESCE(sum(applied), 0)::bigint, COALESCE(sum(ignored_stale), 0)::bigint, \
                   COALESCE(sum(ignored_duplicate), 0)::bigint, COALESCE(sum(ignored_unhandled), 0)::bigint, \
                   COALESCE(sum(rejected), 0)::bigint, COALESCE(sum(malformed), 0)::bigint, \
                   COALESCE(sum(unavailable), 0)::bigint \
                 FROM capydb_auth_sync.webhook_minutes \
                 WHERE integration_id = $1 AND minute >= date_trunc('minute', now()) - interval '59 minutes'",
                &[&integration_id],
            )
            .await?;
        Ok(WebhookCounts::from_row(&r, 0))
    }

    /// The newest errors of the integration's authenticated deliveries, newest first.
    pub async fn recent_webhook_errors(&self, integration_id: &str) -> Result<Vec<RecentError>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT at, kind, message FROM capydb_auth_sync.webhook_errors WHERE integration_id = $1 \
                 ORDER BY id DESC LIMIT $2",
                &[&integration_id, &(RECENT_ERRORS as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| RecentError { at: r.get(0), kind: r.get(1), message: r.get(2) }).collect())
    }
}

/// One integration as the per-integration metrics show it (see `ingest::counters`).
#[derive(Debug, Clone)]
pub struct IntegrationMetricsRow {
    pub project_id: String,
    /// The stored provider name (`clerk`, `auth0`, `better_auth`).
    pub provider: String,
    /// Configured with a webhook secret.
    pub live: bool,
    /// The last verified delivery, else when the integration was last configured.
    pub last_event_or_configured_at: DateTime<Utc>,
    /// Deliveries counted by every replica since the integration was created.
    pub totals: WebhookCounts,
    /// The most recent backfill failed (and so none runs after it).
    pub backfill_failed: bool,
}

impl ControlStore {
    /// Every integration with its totals, last event and last backfill's outcome, in one
    /// read (the per-integration metrics, refreshed every few seconds).
    pub async fn integration_metrics(&self) -> Result<Vec<IntegrationMetricsRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT i.project_id, i.provider, i.webhook_secret_enc IS NOT NULL, \
                   COALESCE(s.last_event_at, i.updated_at), \
                   COALESCE(s.applied, 0), COALESCE(s.ignored_stale, 0), COALESCE(s.ignored_duplicate, 0), \
                   COALESCE(s.ignored_unhandled, 0), COALESCE(s.rejected, 0), COALESCE(s.malformed, 0), \
                   COALESCE(s.unavailable, 0), \
                   COALESCE((SELECT j.state = 'failed' FROM capydb_auth_sync.backfill_jobs j \
                             WHERE j.integration_id = i.id ORDER BY j.created_at DESC LIMIT 1), false) \
                 FROM capydb_auth_sync.integrations i \
                 LEFT JOIN capydb_auth_sync.webhook_stats s ON s.integration_id = i.id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| IntegrationMetricsRow {
                project_id: r.get(0),
                provider: r.get(1),
                live: r.get(2),
                last_event_or_configured_at: r.get(3),
                totals: WebhookCounts::from_row(r, 4),
                backfill_failed: r.get(11),
            })
            .collect())
    }
}

/// The statements of one flush, in one transaction (all counted, or none).
async fn write_deltas(
    c: &mut deadpool_postgres::Object,
    deltas: &[(String, StatsDelta)],
) -> Result<(), tokio_postgres::Error> {
    let col = |f: fn(&StatsDelta) -> i64| deltas.iter().map(|(_, d)| f(d)).collect::<Vec<i64>>();
    let ids: Vec<&str> = deltas.iter().map(|(id, _)| id.as_str()).collect();
    let last_event: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|(_, d)| d.last_event_at).collect();
    let last_error: Vec<Option<&str>> =
        deltas.iter().map(|(_, d)| d.last_error.as_ref().map(|(e, _)| e.as_str())).collect();
    let last_error_at: Vec<Option<DateTime<Utc>>> =
        deltas.iter().map(|(_, d)| d.last_error.as_ref().map(|(_, at)| *at)).collect();
    let counts: [Vec<i64>; 7] = [
        col(|d| d.applied),
        col(|d| d.ignored_stale),
        col(|d| d.ignored_duplicate),
        col(|d| d.ignored_unhandled),
        col(|d| d.rejected),
        col(|d| d.malformed),
        col(|d| d.unavailable),
    ];
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO capydb_auth_sync.webhook_stats AS s (integration_id, applied, ignored_stale, ignored_duplicate, \
           ignored_unhandled, rejected, malformed, unavailable, last_event_at, last_error, last_error_at) \
         SELECT d.* FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
           $7::bigint[], $8::bigint[], $9::timestamptz[], $10::text[], $11::timestamptz[]) \
           AS d(integration_id, applied, ignored_stale, ignored_duplicate, ignored_unhandled, rejected, malformed, \
                unavailable, last_event_at, last_error, last_error_at) \
         JOIN capydb_auth_sync.integrations i ON i.id = d.integration_id \
         ON CONFLICT (integration_id) DO UPDATE SET \
           applied = s.applied + EXCLUDED.applied, ignored_stale = s.ignored_stale + EXCLUDED.ignored_stale, \
           ignored_duplicate = s.ignored_duplicate + EXCLUDED.ignored_duplicate, \
           ignored_unhandled = s.ignored_unhandled + EXCLUDED.ignored_unhandled, \
           rejected = s.rejected + EXCLUDED.rejected, malformed = s.malformed + EXCLUDED.malformed, \
           unavailable = s.unavailable + EXCLUDED.unavailable, \
           last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at), \
           last_error = COALESCE(EXCLUDED.last_error, s.last_error), \
           last_error_at = COALESCE(EXCLUDED.last_error_at, s.last_error_at)",
        &[
            &ids,
            &counts[0],
            &counts[1],
            &counts[2],
            &counts[3],
            &counts[4],
            &counts[5],
            &counts[6],
            &last_event,
            &last_error,
            &last_error_at,
        ],
    )
    .await?;
    // The recent window: this flush's counts land in the current minute (by the database's
    // clock, which the status reads with too).
    tx.execute(
        "INSERT INTO capydb_auth_sync.webhook_minutes AS m (integration_id, minute, applied, ignored_stale, \
           ignored_duplicate, ignored_unhandled, rejected, malformed, unavailable) \
         SELECT d.integration_id, date_trunc('minute', now()), d.applied, d.ignored_stale, d.ignored_duplicate, \
           d.ignored_unhandled, d.rejected, d.malformed, d.unavailable \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
           $7::bigint[], $8::bigint[]) \
           AS d(integration_id, applied, ignored_stale, ignored_duplicate, ignored_unhandled, rejected, malformed, \
                unavailable) \
         JOIN capydb_auth_sync.integrations i ON i.id = d.integration_id \
         ON CONFLICT (integration_id, minute) DO UPDATE SET \
           applied = m.applied + EXCLUDED.applied, ignored_stale = m.ignored_stale + EXCLUDED.ignored_stale, \
           ignored_duplicate = m.ignored_duplicate + EXCLUDED.ignored_duplicate, \
           ignored_unhandled = m.ignored_unhandled + EXCLUDED.ignored_unhandled, \
           rejected = m.rejected + EXCLUDED.rejected, malformed = m.malformed + EXCLUDED.malformed, \
           unavailable = m.unavailable + EXCLUDED.unavailable",
        &[&ids, &counts[0], &counts[1], &counts[2], &counts[3], &counts[4], &counts[5], &counts[6]],
    )
    .await?;
    tx.execute(
        "DELETE FROM capydb_auth_sync.webhook_minutes \
         WHERE integration_id = ANY($1) AND minute < date_trunc('minute', now()) - interval '2 hours'",
        &[&ids],
    )
    .await?;
    let errors: Vec<(&str, &RecentError)> =
        deltas.iter().flat_map(|(id, d)| d.errors.iter().map(move |e| (id.as_str(), e))).collect();
    if !errors.is_empty() {
        let error_ids: Vec<&str> = errors.iter().map(|(id, _)| *id).collect();
        let at: Vec<DateTime<Utc>> = errors.iter().map(|(_, e)| e.at).collect();
        let kind: Vec<&str> = errors.iter().map(|(_, e)| e.kind.as_str()).collect();
        let message: Vec<&str> = errors.iter().map(|(_, e)| e.message.as_str()).collect();
        tx.execute(
            "INSERT INTO capydb_auth_sync.webhook_errors (integration_id, at, kind, message) \
             SELECT d.integration_id, d.at, d.kind, d.message \
             FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]) WITH ORDINALITY \
               AS d(integration_id, at, kind, message, ord) \
             JOIN capydb_auth_sync.integrations i ON i.id = d.integration_id \
             ORDER BY d.ord",
            &[&error_ids, &at, &kind, &message],
        )
        .await?;
        tx.execute(
            "DELETE FROM capydb_auth_sync.webhook_errors WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT id, row_number() OVER (PARTITION BY integration_id ORDER BY id DESC) AS newer \
                 FROM capydb_auth_sync.webhook_errors WHERE integration_id = ANY($1)) r \
               WHERE r.newer > $2)",
            &[&error_ids, &(RECENT_ERRORS as i64)],
        )
        .await?;
    }
    tx.commit().await
}
