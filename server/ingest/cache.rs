//! The integration cache: each replica keeps the integrations it may serve in memory, with
//! their credentials decrypted, so a delivery costs no control-database round trip of its
//! own and a flood of junk to real or made-up project ids reaches no database at all.
//!
//! Freshness: the control database announces every change of an integration on a channel
//! (`LISTEN/NOTIFY`, migration V2); the cache reloads that one row at once, so Configure and
//! Delete reach every replica within moments. The listening connection also drives a
//! periodic revalidation (a full re-read, decrypting only rows whose `updated_at` moved) in
//! case a notification was missed, and a reconnect re-reads everything.
//!
//! While the cache holds every integration (`complete`), an id it does not know is unknown
//! without asking anyone — also while the control database is unreachable, so junk is told
//! apart from real deliveries during an outage. Before the first load, lookups fall through
//! to the control database and misses are remembered for a short time (negative entries,
//! bounded in number).
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::crypto::Keyring;
use crate::project_db::ProjectPools;
use crate::providers::ProviderKind;
use crate::store::{ControlStore, IntegrationRow, StoreError};

/// Negative entries kept at most (made-up ids cannot grow memory without bound).
const MAX_NEGATIVE: usize = 10_000;

/// One integration, ready to serve deliveries.
pub struct CachedIntegration {
    pub row: IntegrationRow,
    pub provider: ProviderKind,
    pub webhook_secret: Option<SecretString>,
    /// A replaced webhook secret that still verifies until the given time (SPEC §8).
    pub previous_webhook_secret: Option<(SecretString, chrono::DateTime<chrono::Utc>)>,
    pub database_url: SecretString,
    /// Identifies the project database (integration id + URL fingerprint): deliveries with
    /// the same key are group-committed together.
    pub pool_key: String,
    /// False when the stored credentials cannot be decrypted (a wrong key, a tampered row):
    /// deliveries are refused as an internal error, never verified against anything.
    pub usable: bool,
}

impl CachedIntegration {
    fn decrypt(row: IntegrationRow, keyring: &Keyring) -> Option<Self> {
        let provider = row.provider;
        let secrets = row.webhook_secret(keyring).and_then(|w| {
            let url = row.database_url(keyring)?;
            Ok((w, url, row.previous_webhook_secret(keyring)?))
        });
        match secrets {
            Ok((webhook_secret, database_url, previous_webhook_secret)) => {
                let fingerprint = Sha256::digest(database_url.expose_secret().as_bytes());
                let pool_key = format!("{}:{}", row.id, hex::encode(&fingerprint[..8]));
                Some(CachedIntegration {
                    row,
                    provider,
                    webhook_secret,
                    previous_webhook_secret,
                    database_url,
                    pool_key,
                    usable: true,
                })
            }
            Err(e) => {
                tracing::error!(project_id = %row.project_id, provider = %row.provider, error = %e, "cannot decrypt stored credentials");
                let pool_key = row.id.clone();
                Some(CachedIntegration {
                    row,
                    provider,
                    webhook_secret: None,
                    previous_webhook_secret: None,
                    database_url: SecretString::from(String::new()),
                    pool_key,
                    usable: false,
                })
            }
        }
    }
}

type Key = (String, ProviderKind);

#[derive(Default)]
struct CacheState {
    entries: HashMap<Key, Arc<CachedIntegration>>,
    /// True while `entries` holds every integration and changes are being heard.
    complete: bool,
    negative: HashMap<Key, Instant>,
}

pub struct IntegrationCache {
    store: ControlStore,
    keyring: Arc<Keyring>,
    pools: ProjectPools,
    revalidate_every: Duration,
    negative_ttl: Duration,
    state: RwLock<CacheState>,
    /// Reloads of one row read and apply under this lock, so they apply in the order they
    /// read (a notification and a local change of the same row cannot cross).
    reloading: tokio::sync::Mutex<()>,
    /// Set by the first complete load.
    loaded: std::sync::atomic::AtomicBool,
}

impl IntegrationCache {
    pub fn new(
        store: ControlStore,
        keyring: Arc<Keyring>,
        pools: ProjectPools,
        revalidate_every: Duration,
        negative_ttl: Duration,
    ) -> Self {
        IntegrationCache {
            store,
            keyring,
            pools,
            revalidate_every,
            negative_ttl,
            state: RwLock::default(),
            reloading: tokio::sync::Mutex::default(),
            loaded: Default::default(),
        }
    }

    /// The integration of (project, provider), or `None` when there is none.
    pub async fn get(
        &self,
        project_id: &str,
        provider: ProviderKind,
    ) -> Result<Option<Arc<CachedIntegration>>, StoreError> {
        let key = (project_id.to_string(), provider);
        {
            let state = self.state.read().expect("cache lock poisoned");
            if let Some(hit) = state.entries.get(&key) {
                metrics::counter!("capydb_auth_sync_integration_cache_total", "result" => "hit").increment(1);
                return Ok(Some(hit.clone()));
            }
            let fresh_miss = state.negative.get(&key).is_some_and(|at| at.elapsed() < self.negative_ttl);
            if state.complete || fresh_miss {
                metrics::counter!("capydb_auth_sync_integration_cache_total", "result" => "negative").increment(1);
                return Ok(None);
            }
        }
        metrics::counter!("capydb_auth_sync_integration_cache_total", "result" => "miss").increment(1);
        let row = self
            .store
            .get_integration(project_id, provider)
            .await
            .inspect_err(|e| crate::metrics::control_store_error("integration_lookup", e))?;
        let found = row.and_then(|r| CachedIntegration::decrypt(r, &self.keyring)).map(Arc::new);
        let mut state = self.state.write().expect("cache lock poisoned");
        match &found {
            Some(entry) => {
                state.entries.insert(key, entry.clone());
            }
            None => {
                if state.negative.len() >= MAX_NEGATIVE {
                    let ttl = self.negative_ttl;
                    state.negative.retain(|_, at| at.elapsed() < ttl);
                    if state.negative.len() >= MAX_NEGATIVE {
                        state.negative.clear();
                    }
                }
                state.negative.insert(key, Instant::now());
            }
        }
        Ok(found)
    }

    /// The cached integration with this id, if any (the inbox drain).
    pub fn by_id(&self, integration_id: &str) -> Option<Arc<CachedIntegration>> {
        let state = self.state.read().expect("cache lock poisoned");
        state.entries.values().find(|e| e.row.id == integration_id).cloned()
    }

    /// Keeps the cache fresh until `stop`: listen, load everything, then apply notifications
    /// and revalidate periodically; on a lost connection, start over with backoff.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(200);
        loop {
            let listening = tokio::select! {
                l = self.store.listen_integrations() => l,
                _ = &mut stop => return,
            };
            match listening {
                Ok((client, mut notifications)) => {
                    // Subscribed first, then loaded: a change in between is heard, not lost.
                    if let Err(e) = self.reload_all().await {
                        tracing::warn!(error = %e, "could not load integrations into the cache");
                    } else {
                        backoff = Duration::from_millis(200);
                        let mut tick = tokio::time::interval(self.revalidate_every);
                        tick.tick().await;
                        loop {
                            tokio::select! {
                                n = notifications.recv() => match n {
                                    Some(n) => self.reload_one(n.payload()).await,
                                    None => break,
                                },
                                _ = tick.tick() => {
                                    if let Err(e) = self.reload_all().await {
                                        tracing::warn!(error = %e, "integration cache revalidation failed");
                                        break;
                                    }
                                }
                                _ = &mut stop => return,
                            }
                        }
                    }
                    // The cache stays as complete as it was when the connection went: while the
                    // control database is unreachable nothing can change there, and a replica cut
                    // off alone re-reads everything when it reconnects (backoff at most 10 s).
                    drop(client);
                    tracing::warn!("lost the control database's integration notifications; reconnecting");
                }
                Err(e) => {
                    crate::metrics::control_store_error("integration_cache", &e);
                    tracing::warn!(error = %e, "cannot listen for integration changes")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = &mut stop => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Re-reads every integration, decrypting only rows that changed.
    async fn reload_all(&self) -> Result<(), StoreError> {
        let rows = self
            .store
            .list_integrations(None)
            .await
            .inspect_err(|e| crate::metrics::control_store_error("integration_cache", e))?;
        let old = {
            let state = self.state.read().expect("cache lock poisoned");
            state.entries.clone()
        };
        let mut entries = HashMap::with_capacity(rows.len());
        for row in rows {
            let key = (row.project_id.clone(), row.provider);
            let entry = match old.get(&key) {
                Some(e) if same_row(&e.row, &row) => Some(e.clone()),
                _ => CachedIntegration::decrypt(row, &self.keyring).map(Arc::new),
            };
            if let Some(e) = entry {
                entries.insert(key, e);
            }
        }
        for (key, gone) in &old {
            if entries.get(key).is_none_or(|e| e.row.id != gone.row.id) {
                self.pools.forget(&gone.row.id);
            }
        }
        let mut state = self.state.write().expect("cache lock poisoned");
        state.entries = entries;
        state.negative.clear();
        state.complete = true;
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether every integration has been loaded once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Re-reads one integration this replica just changed (Configure, Delete), so its own
    /// next delivery sees the change without waiting for the notification.
    pub async fn changed(&self, integration_id: &str) {
        self.reload_one(integration_id).await;
    }

    /// Applies one notification: the row changed or is gone.
    async fn reload_one(&self, integration_id: &str) {
        let _in_order = self.reloading.lock().await;
        match self.store.get_integration_by_id(integration_id).await {
            Ok(row) => {
                let entry = row.and_then(|r| CachedIntegration::decrypt(r, &self.keyring)).map(Arc::new);
                let mut state = self.state.write().expect("cache lock poisoned");
                state.entries.retain(|_, e| e.row.id != integration_id);
                if let Some(e) = entry {
                    let key = (e.row.project_id.clone(), e.provider);
                    state.negative.remove(&key);
                    state.entries.insert(key, e);
                } else {
                    drop(state);
                    self.pools.forget(integration_id);
                }
            }
            Err(e) => {
                crate::metrics::control_store_error("integration_cache", &e);
                // The row changed but cannot be read (the control database is going away):
                // keep serving what is cached — dropping it would turn the integration's
                // deliveries into 503s for as long as the outage lasts. The next full re-read
                // (on reconnect, or the periodic revalidation) brings the change.
                tracing::warn!(error = %e, "could not reload a changed integration; keeping the cached one until the next full re-read");
            }
        }
    }
}

/// Whether a cached entry is still right for `row`: the same id, ciphertexts and version.
fn same_row(cached: &IntegrationRow, row: &IntegrationRow) -> bool {
    cached.id == row.id
        && cached.updated_at == row.updated_at
        && cached.database_url_enc == row.database_url_enc
        && cached.webhook_secret_enc == row.webhook_secret_enc
        && cached.previous_webhook_secret_enc == row.previous_webhook_secret_enc
        && cached.version == row.version
}
