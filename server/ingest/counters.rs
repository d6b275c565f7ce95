//! Webhook counters off the response path: deliveries are counted in memory and the counts
//! flushed to the control database about once a second (and at shutdown) in one transaction
//! — totals, the current minute of the recent window, the recent errors — so no response
//! waits for a counter and a flood of junk costs at most one write a second.
//!
//! The same task refreshes the per-integration metrics from what every replica flushed
//! (`capydb_auth_sync_integration_*{project_id,provider}`): one read every few seconds.
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{ControlStore, StatsDelta, WebhookOutcome};

#[derive(Default)]
pub struct Counters {
    pending: Mutex<HashMap<String, StatsDelta>>,
    /// (project_id, provider) of the integrations the per-integration metrics show.
    exported: Mutex<HashSet<(String, String)>>,
}

impl Counters {
    /// Counts one delivery of an integration. `error` becomes its `last_error` and one of its
    /// recent errors: only ever pass an error of an authenticated delivery, so outsiders
    /// cannot write them.
    pub fn count(&self, integration_id: &str, outcome: WebhookOutcome, error: Option<String>) {
        let mut pending = self.pending.lock().expect("counters poisoned");
        let delta = match pending.get_mut(integration_id) {
            Some(d) => d,
            None => pending.entry(integration_id.to_string()).or_default(),
        };
        delta.count(outcome, Utc::now(), error);
    }

    /// Writes what was counted; on failure the counts stay for the next flush.
    pub async fn flush(&self, store: &ControlStore) {
        let taken: Vec<(String, StatsDelta)> =
            std::mem::take(&mut *self.pending.lock().expect("counters poisoned")).into_iter().collect();
        if taken.is_empty() {
            return;
        }
        if let Err(e) = store.flush_webhook_stats(&taken).await {
            crate::metrics::control_store_error("counters_flush", &e);
            tracing::warn!(error = %e, integrations = taken.len(), "could not flush webhook counters; keeping them");
            let mut pending = self.pending.lock().expect("counters poisoned");
            for (id, older) in taken {
                let newer = pending.remove(&id).unwrap_or_default();
                let mut merged = older;
                merged.absorb(newer);
                pending.insert(id, merged);
            }
        }
    }

    /// Sets the per-integration metrics from the control database. An integration that
    /// went away (or stopped being live) keeps its series with `live` 0, so alerts that
    /// join on `capydb_auth_sync_integration_live == 1` forget it.
    pub async fn refresh_metrics(&self, store: &ControlStore) {
        let rows = match store.integration_metrics().await {
            Ok(rows) => rows,
            Err(e) => {
                crate::metrics::control_store_error("integration_metrics", &e);
                tracing::debug!(error = %e, "could not refresh the per-integration metrics");
                return;
            }
        };
        let mut seen = HashSet::with_capacity(rows.len());
        for r in rows {
            let labels = [("project_id", r.project_id.clone()), ("provider", r.provider.clone())];
            metrics::gauge!("capydb_auth_sync_integration_live", &labels).set(if r.live { 1.0 } else { 0.0 });
            metrics::gauge!("capydb_auth_sync_integration_last_event_timestamp_seconds", &labels)
                .set(r.last_event_or_configured_at.timestamp() as f64);
            metrics::gauge!("capydb_auth_sync_integration_backfill_failed", &labels).set(if r.backfill_failed {
                1.0
            } else {
                0.0
            });
            for (outcome, n) in r.totals.by_outcome() {
                metrics::counter!(
                    "capydb_auth_sync_integration_webhooks_total",
                    "project_id" => r.project_id.clone(),
                    "provider" => r.provider.clone(),
                    "outcome" => outcome.as_str()
                )
                .absolute(n.max(0) as u64);
            }
            seen.insert((r.project_id, r.provider));
        }
        let mut exported = self.exported.lock().expect("counters poisoned");
        for (project_id, provider) in exported.difference(&seen) {
            let labels = [("project_id", project_id.clone()), ("provider", provider.clone())];
            metrics::gauge!("capydb_auth_sync_integration_live", &labels).set(0.0);
            metrics::gauge!("capydb_auth_sync_integration_backfill_failed", &labels).set(0.0);
        }
        exported.extend(seen);
    }

    /// Flushes every `every` and refreshes the per-integration metrics every `metrics_every`
    /// until `stop`, then flushes once more.
    pub async fn run(
        &self,
        store: ControlStore,
        every: Duration,
        metrics_every: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics_tick = tokio::time::interval(metrics_every);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&store).await,
                _ = metrics_tick.tick() => self.refresh_metrics(&store).await,
                _ = &mut stop => break,
            }
        }
        self.flush(&store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aggregate_per_integration_and_errors_keep_the_latest() {
        let c = Counters::default();
        c.count("a", WebhookOutcome::Applied, None);
        c.count("a", WebhookOutcome::Applied, None);
        c.count("a", WebhookOutcome::Malformed, Some("first".into()));
        c.count("a", WebhookOutcome::Rejected, None);
        c.count("b", WebhookOutcome::IgnoredStale, Some("second".into()));
        let pending = c.pending.lock().unwrap();
        let a = &pending["a"];
        assert_eq!((a.applied, a.malformed, a.rejected), (2, 1, 1));
        assert_eq!(a.last_error.as_ref().map(|(e, _)| e.as_str()), Some("first"));
        assert_eq!(
            a.errors.iter().map(|e| (e.kind.as_str(), e.message.as_str())).collect::<Vec<_>>(),
            [("malformed", "first")]
        );
        assert!(a.last_event_at.is_some());
        assert_eq!(pending["b"].ignored_stale, 1);
    }

    #[test]
    fn a_rejected_delivery_is_not_an_event() {
        let c = Counters::default();
        c.count("a", WebhookOutcome::Rejected, None);
        assert_eq!(c.pending.lock().unwrap()["a"].last_event_at, None);
    }

    #[test]
    fn recent_errors_keep_the_newest_ten_oldest_first_also_across_failed_flushes() {
        let c = Counters::default();
        for i in 0..25 {
            c.count("a", WebhookOutcome::Malformed, Some(format!("error {i}")));
        }
        let mut older = c.pending.lock().unwrap().remove("a").unwrap();
        let messages = |d: &StatsDelta| d.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(messages(&older), (15..25).map(|i| format!("error {i}")).collect::<Vec<_>>());
        let mut newer = StatsDelta::default();
        newer.count(WebhookOutcome::Unavailable, Utc::now(), Some("newest".into()));
        older.absorb(newer);
        assert_eq!(older.errors.len(), 10);
        assert_eq!(older.errors.first().unwrap().message, "error 16");
        assert_eq!(older.errors.last().map(|e| (e.kind.as_str(), e.message.as_str())), Some(("unavailable", "newest")));
        assert_eq!((older.malformed, older.unavailable), (25, 1));
    }
}
