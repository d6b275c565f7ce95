//! Webhook counters per integration (shown by GetSyncStatus).
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

#[derive(Debug, Clone, Default)]
pub struct WebhookStatsRow {
    pub applied: i64,
    pub ignored_stale: i64,
    pub ignored_duplicate: i64,
    pub ignored_unhandled: i64,
    pub rejected: i64,
    pub malformed: i64,
    pub unavailable: i64,
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
            self.last_error = Some((e, at));
        }
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
    }
}

impl ControlStore {
    /// Adds the deltas of many integrations in one statement. Integrations deleted meanwhile
    /// are skipped.
    pub async fn flush_webhook_stats(&self, deltas: &[(String, StatsDelta)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&StatsDelta) -> i64| deltas.iter().map(|(_, d)| f(d)).collect::<Vec<i64>>();
        let ids: Vec<&str> = deltas.iter().map(|(id, _)| id.as_str()).collect();
        let last_event: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|(_, d)| d.last_event_at).collect();
        let last_error: Vec<Option<&str>> =
            deltas.iter().map(|(_, d)| d.last_error.as_ref().map(|(e, _)| e.as_str())).collect();
        let last_error_at: Vec<Option<DateTime<Utc>>> =
            deltas.iter().map(|(_, d)| d.last_error.as_ref().map(|(_, at)| *at)).collect();
        let c = self.counters_client().await?;
        let counts: Vec<Vec<i64>> = [
            col(|d| d.applied),
            col(|d| d.ignored_stale),
            col(|d| d.ignored_duplicate),
            col(|d| d.ignored_unhandled),
            col(|d| d.rejected),
            col(|d| d.malformed),
            col(|d| d.unavailable),
        ]
        .into();
        let result = c.execute(
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
        .await;
        match result {
            Ok(_) => Ok(()),
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
                applied: r.get(0),
                ignored_stale: r.get(1),
                ignored_duplicate: r.get(2),
                ignored_unhandled: r.get(3),
                rejected: r.get(4),
                malformed: r.get(5),
                unavailable: r.get(6),
                last_event_at: r.get(7),
                last_error: r.get(8),
                last_error_at: r.get(9),
            })
            .unwrap_or_default())
    }
}
