//! Webhook counters off the response path: deliveries are counted in memory and the counts
//! flushed to the control database about once a second (and at shutdown) in one statement,
//! so no response waits for a counter and a flood of junk costs at most one write a second.
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{ControlStore, StatsDelta, WebhookOutcome};

#[derive(Default)]
pub struct Counters {
    pending: Mutex<HashMap<String, StatsDelta>>,
}

impl Counters {
    /// Counts one delivery of an integration. `error` becomes its `last_error`: only ever
    /// pass an error of an authenticated delivery, so outsiders cannot write it.
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

    /// Flushes every `every` until `stop`, then once more.
    pub async fn run(&self, store: ControlStore, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&store).await,
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
        assert!(a.last_event_at.is_some());
        assert_eq!(pending["b"].ignored_stale, 1);
    }

    #[test]
    fn a_rejected_delivery_is_not_an_event() {
        let c = Counters::default();
        c.count("a", WebhookOutcome::Rejected, None);
        assert_eq!(c.pending.lock().unwrap()["a"].last_event_at, None);
    }
}
