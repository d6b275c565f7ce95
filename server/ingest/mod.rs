//! The ingest service: everything between the public HTTP surface and the users-table writer
//! for one webhook delivery, in the order that keeps bad input harmless:
//! find the integration (cache; 404) → verify on the raw bytes (401; the body is not parsed
//! before) → parse (400) → make storable → apply in the next group commit of the project
//! database (200, with this delivery's exact outcome) — or, when that database cannot commit
//! within the deadline, park it durably in the inbox (202) — or, when nothing durable is
//! reachable, refuse (503, the sender retries).
//!
//! Protocol-free: it returns an [`IngestOutcome`] or an [`IngestError`]; `webhook` maps them
//! to HTTP once. Counters are kept here (in memory, flushed once a second).
//!
//! - `cache`: integrations with decrypted credentials, kept fresh by LISTEN/NOTIFY;
//! - `batcher`: group commit per project database, with isolation of a failing row;
//! - `inbox`: parking and draining when a project database is down or slow;
//! - `counters`: webhook counters off the response path.
pub mod batcher;
pub mod cache;
pub mod counters;
pub mod inbox;

use chrono::Utc;
use http::HeaderMap;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::lifecycle::Shutdown;
use crate::project_db::{ProjectDbError, ProjectPools};
use crate::providers::{self, ParseError, ProviderKind, VerifyError};
use crate::store::{ControlStore, ParkedDelivery, StoreError, WebhookOutcome};
use crate::users::{MergeOutcome, UserChange};
use batcher::{BatchSettings, Batchers};
use cache::{CachedIntegration, IntegrationCache};
use counters::Counters;
use inbox::Inbox;

/// Settings of the delivery path.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub batch: BatchSettings,
    /// How long a delivery waits for its project database's commit before it is parked.
    pub apply_timeout: Duration,
    /// Parked deliveries per project at most (beyond: 503).
    pub inbox_max_per_project: i64,
    /// Full re-read of the integration cache, in case a notification was missed.
    pub cache_revalidate: Duration,
    /// How long an unknown (project, provider) is remembered while the cache is incomplete.
    pub negative_ttl: Duration,
    /// How often counters are written to the control database.
    pub counters_flush: Duration,
    /// How often the per-integration metrics are read from the control database.
    pub metrics_refresh: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            batch: BatchSettings::default(),
            apply_timeout: Duration::from_secs(4),
            inbox_max_per_project: 10_000,
            cache_revalidate: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(5),
            counters_flush: Duration::from_secs(1),
            metrics_refresh: Duration::from_secs(15),
        }
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Applied,
    IgnoredStale,
    IgnoredDuplicate,
    IgnoredUnhandled,
    /// Parked in the inbox; applied when the project database is back.
    Queued,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    pub disposition: Disposition,
    /// The provider's id for the delivery, when it has one.
    pub delivery_id: Option<String>,
    pub event_type: String,
    /// Records of the delivery skipped as unusable (Auth0 Log Streams); the rest applied.
    pub skipped: usize,
    /// A dry run: verified, parsed and applied in a transaction that was rolled back.
    pub dry_run: bool,
}

/// Why a delivery was not taken. Every variant is safe to show to the sender.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no {0} integration with a webhook secret for this project")]
    NotFound(ProviderKind),
    #[error("webhook verification failed: {0}")]
    Unauthorized(#[from] VerifyError),
    #[error("not a valid event: {0}")]
    Malformed(#[from] ParseError),
    /// Nothing was kept; the sender must retry.
    #[error("the service cannot take deliveries right now ({0}); nothing was kept, retry later")]
    Unavailable(&'static str),
    #[error("the project's inbox is full while its database is unavailable; nothing was kept, retry later")]
    InboxFull,
    /// Logged with context where it happens; answered opaquely.
    #[error("internal error")]
    Internal,
}

/// A delivery as the HTTP surface hands it over.
pub struct IngestRequest<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a bytes::Bytes,
    /// Verify, parse and apply in a rolled-back transaction; write nothing.
    pub dry_run: bool,
}

pub struct IngestService {
    settings: IngestSettings,
    store: ControlStore,
    pools: ProjectPools,
    cache: Arc<IntegrationCache>,
    batchers: Batchers,
    inbox: Arc<Inbox>,
    counters: Arc<Counters>,
}

impl IngestService {
    pub fn new(settings: &Settings, store: ControlStore, pools: ProjectPools) -> Self {
        let s = settings.ingest.clone();
        let cache = Arc::new(IntegrationCache::new(
            store.clone(),
            settings.keyring.clone(),
            pools.clone(),
            s.cache_revalidate,
            s.negative_ttl,
        ));
        IngestService {
            batchers: Batchers::new(pools.clone(), s.batch.clone()),
            inbox: Arc::new(Inbox::new(store.clone(), s.inbox_max_per_project, s.apply_timeout)),
            counters: Arc::default(),
            cache,
            store,
            pools,
            settings: s,
        }
    }

    /// Runs the background work (cache freshness, counter flushes, the inbox) until the
    /// lifecycle reaches `Stopping` — after the listeners closed, so the last counters are
    /// flushed and the last parkings answered.
    pub async fn run(&self, shutdown: &Shutdown) {
        tokio::join!(
            self.cache.clone().run(shutdown.stopping()),
            self.counters.run(
                self.store.clone(),
                self.settings.counters_flush,
                self.settings.metrics_refresh,
                shutdown.stopping()
            ),
            self.inbox.clone().run(self.cache.clone(), self.pools.clone(), shutdown.clone()),
        );
    }

    /// The integration a delivery is for: it must exist and have a webhook secret.
    pub async fn integration(
        &self,
        provider: ProviderKind,
        project_id: &str,
    ) -> Result<Arc<CachedIntegration>, IngestError> {
        if crate::domain::ProjectId::parse(project_id).is_err() {
            return Err(IngestError::NotFound(provider));
        }
        match self.cache.get(project_id, provider).await {
            Ok(Some(i)) if !i.usable => Err(IngestError::Internal),
            Ok(Some(i)) if i.webhook_secret.is_some() => Ok(i),
            Ok(_) => Err(IngestError::NotFound(provider)),
            Err(e) => {
                tracing::warn!(error = %e, "integration lookup failed");
                Err(IngestError::Unavailable("control database unreachable"))
            }
        }
    }

    /// Whether the integration cache has loaded every integration once: until then unknown
    /// ids cost a control-database lookup, and the replica is not ready.
    pub fn ready(&self) -> bool {
        self.cache.loaded()
    }

    /// This replica changed the integration with this id: its next delivery sees the change
    /// at once (other replicas hear of it by notification).
    pub async fn integration_changed(&self, integration_id: &str) {
        self.cache.changed(integration_id).await;
    }

    /// Writes the counters gathered so far (GetSyncStatus reads its own replica's counts).
    pub async fn flush_counters(&self) {
        self.counters.flush(&self.store).await;
    }

    /// Takes one delivery for `integration`; counts it.
    pub async fn deliver(
        &self,
        integration: &CachedIntegration,
        req: IngestRequest<'_>,
    ) -> Result<IngestOutcome, IngestError> {
        let result = self.process(integration, &req).await;
        let id = &integration.row.id;
        match &result {
            Ok(o) if o.dry_run => {}
            Ok(o) => {
                let outcome = match o.disposition {
                    Disposition::Applied => Some(WebhookOutcome::Applied),
                    Disposition::IgnoredStale => Some(WebhookOutcome::IgnoredStale),
                    Disposition::IgnoredDuplicate => Some(WebhookOutcome::IgnoredDuplicate),
                    Disposition::IgnoredUnhandled => Some(WebhookOutcome::IgnoredUnhandled),
                    // Shown by the inbox backlog (`webhooks.queued`) until drained.
                    Disposition::Queued => None,
                };
                if let Some(outcome) = outcome {
                    self.counters.count(id, outcome, None);
                }
                for _ in 0..o.skipped {
                    self.counters.count(
                        id,
                        WebhookOutcome::Malformed,
                        Some("a log record without a usable user_id or date was skipped".into()),
                    );
                }
            }
            // Unauthenticated: counted, but never allowed to write `last_error`.
            Err(IngestError::Unauthorized(_)) => self.counters.count(id, WebhookOutcome::Rejected, None),
            Err(e @ IngestError::Malformed(_)) => {
                self.counters.count(id, WebhookOutcome::Malformed, Some(e.to_string()))
            }
            Err(e @ (IngestError::Unavailable(_) | IngestError::InboxFull)) => {
                self.counters.count(id, WebhookOutcome::Unavailable, Some(e.to_string()))
            }
            Err(IngestError::Internal) => self.counters.count(
                id,
                WebhookOutcome::Unavailable,
                Some("the project database refused a change; see the service log".into()),
            ),
            Err(IngestError::NotFound(_)) => {}
        }
        result
    }

    async fn process(
        &self,
        integration: &CachedIntegration,
        req: &IngestRequest<'_>,
    ) -> Result<IngestOutcome, IngestError> {
        let secret = integration.webhook_secret.as_ref().ok_or(IngestError::NotFound(integration.provider))?;
        let received_at = Utc::now();
        let verify = |secret: &secrecy::SecretString| {
            providers::verify(integration.provider, secret.expose_secret(), req.headers, req.body, received_at)
        };
        // During a rotation's grace period the replaced secret verifies too (SPEC §8).
        let delivery_id = verify(secret).or_else(|e| match &integration.previous_webhook_secret {
            Some((previous, until)) if received_at < *until => verify(previous).map_err(|_| e),
            _ => Err(e),
        })?;
        // Recorded on the HTTP surface's `webhook_delivery` span: every later line carries it.
        let record = |id: &Option<String>| {
            if let Some(id) = id {
                tracing::Span::current().record("delivery_id", tracing::field::display(id));
            }
        };
        record(&delivery_id);
        let mut delivery = providers::parse(integration.provider, req.body, received_at)?;
        let delivery_id = match delivery_id {
            Some(id) => Some(id),
            None => {
                let from_body = delivery.delivery_id.take();
                record(&from_body);
                from_body
            }
        };
        let outcome = |disposition| IngestOutcome {
            disposition,
            delivery_id: delivery_id.clone(),
            event_type: delivery.event_type.clone(),
            skipped: delivery.skipped,
            dry_run: req.dry_run,
        };
        if delivery.unhandled || delivery.changes.is_empty() {
            return Ok(outcome(Disposition::IgnoredUnhandled));
        }
        delivery.changes.iter_mut().for_each(UserChange::make_storable);
        if req.dry_run {
            let pool = self
                .pools
                .pool(&integration.row.id, &integration.database_url)
                .map_err(|e| project_failure(integration, e))?;
            let refs: Vec<&UserChange> = delivery.changes.iter().collect();
            let outcomes = batcher::rehearse(&pool, &refs).await.map_err(|e| project_failure(integration, e))?;
            return Ok(outcome(summarise(&outcomes)));
        }
        let changes = Arc::new(std::mem::take(&mut delivery.changes));
        if !self.inbox.has_backlog(&integration.row.id) {
            match tokio::time::timeout(self.settings.apply_timeout, self.batchers.submit(integration, changes.clone()))
                .await
            {
                Ok(Ok(outcomes)) => return Ok(outcome(summarise(&outcomes))),
                Ok(Err(e @ ProjectDbError::Query(_))) => return Err(project_failure(integration, e)),
                Ok(Err(e)) => {
                    tracing::info!(project_id = %integration.row.project_id, error = %e, "project database cannot take the delivery; parking it");
                }
                Err(_) => {
                    tracing::info!(project_id = %integration.row.project_id, "project database did not commit in time; parking the delivery");
                }
            }
        }
        let parked = self
            .inbox
            .park(ParkedDelivery {
                integration_id: integration.row.id.clone(),
                received_at,
                delivery_id: delivery_id.clone(),
                event_type: delivery.event_type.clone(),
                changes: Arc::unwrap_or_clone(changes),
            })
            .await;
        match parked {
            Ok(true) => Ok(outcome(Disposition::Queued)),
            Ok(false) => Err(IngestError::InboxFull),
            Err(e) => {
                let why = match e {
                    StoreError::Query(_) => {
                        "the project database is unreachable and the service's own database refused to park this delivery"
                    }
                    _ => "the project database and the service's own database are unreachable",
                };
                tracing::warn!(project_id = %integration.row.project_id, error = %e, "cannot park a delivery: {why}");
                Err(IngestError::Unavailable(why))
            }
        }
    }
}

/// A project-database failure that parking does not cure (the database refused a change).
fn project_failure(integration: &CachedIntegration, e: ProjectDbError) -> IngestError {
    match e {
        ProjectDbError::Unavailable(_) | ProjectDbError::Conflict(_) | ProjectDbError::Closed => {
            IngestError::Unavailable("project database unreachable")
        }
        other => {
            tracing::error!(project_id = %integration.row.project_id, provider = %integration.provider, error = %other, "the project database refused a delivery");
            IngestError::Internal
        }
    }
}

/// A delivery that changed anything counts as applied; otherwise stale beats duplicate.
fn summarise(outcomes: &[MergeOutcome]) -> Disposition {
    if outcomes.iter().any(|o| o.changed()) {
        Disposition::Applied
    } else if outcomes.iter().any(|o| matches!(o, MergeOutcome::Stale | MergeOutcome::UnknownUser)) {
        Disposition::IgnoredStale
    } else {
        Disposition::IgnoredDuplicate
    }
}
