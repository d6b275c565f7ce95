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
    fn is_event(self) -> bool {
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

impl ControlStore {
    /// Counts one delivery. `error` (already free of secrets and personal data) becomes
    /// `last_error`.
    pub async fn record_webhook(
        &self,
        integration_id: &str,
        outcome: WebhookOutcome,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let c = self.counters_client().await?;
        // The column name comes from a closed enum, never from input.
        let col = outcome.as_str();
        let sql = format!(
            "INSERT INTO capydb_auth_sync.webhook_stats AS s (integration_id, {col}, last_event_at, last_error, last_error_at) \
             VALUES ($1, 1, CASE WHEN $2 THEN now() END, $3, CASE WHEN $3::text IS NOT NULL THEN now() END) \
             ON CONFLICT (integration_id) DO UPDATE SET {col} = s.{col} + 1, \
               last_event_at = COALESCE(EXCLUDED.last_event_at, s.last_event_at), \
               last_error = COALESCE(EXCLUDED.last_error, s.last_error), \
               last_error_at = COALESCE(EXCLUDED.last_error_at, s.last_error_at)"
        );
        // The integration may have been deleted meanwhile: a foreign-key error is not news.
        match c.execute(&sql, &[&integration_id, &outcome.is_event(), &error]).await {
            Ok(_) => Ok(()),
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
