//! The durable inbox (SPEC §4): verified deliveries whose project database could not take
//! them, parked in the control database until a drain applies them. Rows hold the parsed,
//! storable changes (no secrets, no raw body), so a drain needs neither the webhook secret
//! nor the provider.
use chrono::{DateTime, Utc};

use super::{ControlStore, StoreError};
use crate::users::UserChange;

/// One delivery to park.
#[derive(Debug, Clone)]
pub struct ParkedDelivery {
    pub integration_id: String,
    pub received_at: DateTime<Utc>,
    pub delivery_id: Option<String>,
    pub event_type: String,
    pub changes: Vec<UserChange>,
}

/// What waits in the inbox for one integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxBacklog {
    pub integration_id: String,
    pub count: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Parked deliveries taken by a drain, oldest first; committed or rolled back as one.
pub struct DrainBatch<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    pub ids: Vec<i64>,
    pub deliveries: Vec<Vec<UserChange>>,
}

impl DrainBatch<'_> {
    /// Removes the taken deliveries (after their changes committed in the project database).
    pub async fn finish(self) -> Result<(), StoreError> {
        self.tx.execute("DELETE FROM capydb_auth_sync.inbox WHERE id = ANY($1)", &[&self.ids]).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Per-integration advisory locks of drains live in their own key space.
const DRAIN_LOCK_SPACE: i32 = 0x6361_7079; // "capy"

impl ControlStore {
    /// Parks `deliveries` in one transaction. Each integration may hold at most `max_per_project`
    /// parked deliveries; returns, per input, whether it was parked (false: the inbox is full).
    pub async fn park(&self, deliveries: &[ParkedDelivery], max_per_project: i64) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<&str> = deliveries.iter().map(|d| d.integration_id.as_str()).collect();
        let received: Vec<DateTime<Utc>> = deliveries.iter().map(|d| d.received_at).collect();
        let delivery_ids: Vec<Option<&str>> = deliveries.iter().map(|d| d.delivery_id.as_deref()).collect();
        let types: Vec<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
        // As JSON text, so each `raw` is parked as the text received (a `Value` would rewrite
        // its numbers).
        let changes: Vec<String> = deliveries
            .iter()
            .map(|d| serde_json::to_string(&d.changes))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Query(format!("cannot encode parked changes: {e}")))?;
        let c = self.client().await?;
        // Room per integration is counted once, before this batch; rank within the batch
        // keeps the bound exact for the batch's own rows.
        let rows = c
            .query(
                "WITH input AS (
                   SELECT *, row_number() OVER (PARTITION BY integration_id ORDER BY ord) AS rank
                   FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY
                     AS t(integration_id, received_at, delivery_id, event_type, changes, ord)
                 ),
                 room AS (
                   SELECT i.integration_id, $6::bigint - count(b.id) AS free
                   FROM (SELECT DISTINCT integration_id FROM input) i
                   LEFT JOIN capydb_auth_sync.inbox b ON b.integration_id = i.integration_id
                   GROUP BY i.integration_id
                 ),
                 parked AS (
                   INSERT INTO capydb_auth_sync.inbox (integration_id, received_at, delivery_id, event_type, changes)
                   SELECT t.integration_id, t.received_at, t.delivery_id, t.event_type, t.changes::jsonb
                   FROM input t JOIN room r ON r.integration_id = t.integration_id
                   WHERE t.rank <= r.free
                   ORDER BY t.ord
                   RETURNING 1
                 )
                 SELECT t.ord, t.rank <= r.free FROM input t JOIN room r ON r.integration_id = t.integration_id
                 ORDER BY t.ord",
                &[&ids, &received, &delivery_ids, &types, &changes, &max_per_project],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(1)).collect())
    }

    /// Every integration with parked deliveries: how many, and since when.
    pub async fn inbox_backlog(&self) -> Result<Vec<InboxBacklog>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT integration_id, count(*), min(received_at) FROM capydb_auth_sync.inbox GROUP BY integration_id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| InboxBacklog { integration_id: r.get(0), count: r.get(1), oldest: r.get(2) }).collect())
    }

    /// The backlog of one integration (GetSyncStatus).
    pub async fn inbox_backlog_of(&self, integration_id: &str) -> Result<InboxBacklog, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT count(*), min(received_at) FROM capydb_auth_sync.inbox WHERE integration_id = $1",
                &[&integration_id],
            )
            .await?;
        Ok(InboxBacklog { integration_id: integration_id.to_string(), count: r.get(0), oldest: r.get(1) })
    }

    /// Takes up to `limit` of the integration's oldest parked deliveries, holding the
    /// integration's drain lock so only one replica drains it at a time. `Ok(None)`: another
    /// replica is draining it. The caller applies the changes, then [`DrainBatch::finish`]es;
    /// dropping the batch instead puts the deliveries back.
    pub async fn take_parked<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
        integration_id: &str,
        limit: i64,
    ) -> Result<Option<DrainBatch<'a>>, StoreError> {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", &[&DRAIN_LOCK_SPACE, &integration_id])
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let rows = tx
            .query(
                "SELECT id, changes::text FROM capydb_auth_sync.inbox WHERE integration_id = $1 ORDER BY id LIMIT $2",
                &[&integration_id, &limit],
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut deliveries = Vec::with_capacity(rows.len());
        for r in rows {
            ids.push(r.get::<_, i64>(0));
            let changes: &str = r.get(1);
            deliveries.push(
                serde_json::from_str(changes)
                    .map_err(|e| StoreError::Query(format!("a parked delivery cannot be decoded: {e}")))?,
            );
        }
        Ok(Some(DrainBatch { tx, ids, deliveries }))
    }

    /// A pooled connection for a drain (see [`ControlStore::take_parked`]).
    pub async fn drain_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.client().await
    }
}
