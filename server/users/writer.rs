//! The users-table writer: the only code that changes `capydb_auth.users`, and so the one
//! place the merge rules of SPEC §2 live. Webhooks and backfill both write through here.
//!
//! Each rule is one atomic statement, so concurrent deliveries for the same user cannot
//! interleave badly (Postgres serialises `INSERT … ON CONFLICT` on the row):
//! 1. newer wins: an object is applied only if its `updated_at` >= the stored one (or
//!    nothing is stored); an identical object with the same `updated_at` is a duplicate and
//!    writes nothing;
//! 2. deletion is a soft delete and sticky: `deleted_at` is set once and never cleared — the
//!    upsert below does not name the column; a delete of an unknown user inserts a tombstone;
//!    a late update may fill a tombstone's other columns (its `updated_at` is NULL);
//! 3. `raw` is stored as given; typed columns were derived from it by the provider module;
//! 4. a sighting (an activity-log fact) touches only what it knows: a signup inserts a
//!    minimal row if none exists, a login moves `last_sign_in_at` forward, never back.
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use std::collections::HashMap;

use super::record::{UserChange, UserDeletion, UserRecord, UserSighting};
use crate::project_db::ProjectDbError;

/// What one change did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// A new row.
    Inserted,
    /// An existing row took the newer object.
    Updated,
    /// The stored row is newer; nothing changed.
    Stale,
    /// The stored row already is this object; nothing changed.
    Duplicate,
    /// A live row was soft-deleted.
    Deleted,
    /// A delete for an unknown user inserted a tombstone.
    Tombstoned,
    /// The row was already deleted; nothing changed.
    AlreadyDeleted,
    /// A login of a user the table does not know; nothing changed.
    UnknownUser,
}

impl MergeOutcome {
    /// Whether the table changed.
    pub fn changed(self) -> bool {
        matches!(
            self,
            MergeOutcome::Inserted | MergeOutcome::Updated | MergeOutcome::Deleted | MergeOutcome::Tombstoned
        )
    }
}

/// Result of a batch upsert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub written: u64,
    /// Skipped because the stored row was the same or newer.
    pub unchanged: u64,
}

/// The upsert, shared by single changes and batches: arrays in, one row per user.
const UPSERT: &str = "
INSERT INTO capydb_auth.users AS u
  (id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, raw)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::jsonb[])
ON CONFLICT (id) DO UPDATE SET
  email = EXCLUDED.email,
  first_name = EXCLUDED.first_name,
  last_name = EXCLUDED.last_name,
  username = EXCLUDED.username,
  image_url = EXCLUDED.image_url,
  created_at = EXCLUDED.created_at,
  updated_at = EXCLUDED.updated_at,
  last_sign_in_at = EXCLUDED.last_sign_in_at,
  raw = EXCLUDED.raw
WHERE u.updated_at IS NULL
   OR EXCLUDED.updated_at > u.updated_at
   OR (EXCLUDED.updated_at = u.updated_at AND u.raw IS DISTINCT FROM EXCLUDED.raw)
RETURNING u.id, (xmax = 0) AS inserted";

/// Signup: insert a minimal row if absent; a sign-in time only moves forward.
const SIGHTING_INSERT: &str = "
INSERT INTO capydb_auth.users AS u (id, email, last_sign_in_at, raw) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET last_sign_in_at = EXCLUDED.last_sign_in_at
WHERE EXCLUDED.last_sign_in_at IS NOT NULL
  AND (u.last_sign_in_at IS NULL OR u.last_sign_in_at < EXCLUDED.last_sign_in_at)
RETURNING (xmax = 0) AS inserted";

/// Login of a known user: `last_sign_in_at` only moves forward.
const SIGHTING_LOGIN: &str = "
UPDATE capydb_auth.users SET last_sign_in_at = $2
WHERE id = $1 AND (last_sign_in_at IS NULL OR last_sign_in_at < $2)";

const DELETE: &str = "
INSERT INTO capydb_auth.users AS u (id, deleted_at, raw) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at
WHERE u.deleted_at IS NULL
RETURNING (xmax = 0) AS inserted";

/// Rows a Clerk backfill answers for: Clerk user objects. Other providers' users may share
/// the table (several integrations on one database) and are never reconciled by Clerk.
const CLERK_ROWS: &str = "raw->>'object' = 'user' AND id LIKE 'user\\_%'";

/// Soft-deletes Clerk rows whose users Clerk no longer returns (backfill reconciliation),
/// within one window of creation times that Clerk has just listed in full.
const RECONCILE: &str = "
UPDATE capydb_auth.users SET deleted_at = $5
WHERE deleted_at IS NULL
  AND raw->>'object' = 'user' AND id LIKE 'user\\_%'
  AND created_at >= $1
  AND ($2::timestamptz IS NULL OR created_at < $2)
  AND created_at < $3
  AND NOT (id = ANY($4::text[]))";

/// Stateless: the merge rules are SQL; the writer just runs them on a caller's connection or
/// transaction.
pub struct UsersWriter;

impl UsersWriter {
    /// Applies one change.
    pub async fn apply(c: &impl GenericClient, change: &UserChange) -> Result<MergeOutcome, ProjectDbError> {
        match change {
            UserChange::Upsert(record) => Self::upsert_one(c, record).await,
            UserChange::Delete(deletion) => Self::delete(c, deletion).await,
            UserChange::Sighting(sighting) => Self::sighting(c, sighting).await,
        }
    }

    async fn sighting(c: &impl GenericClient, s: &UserSighting) -> Result<MergeOutcome, ProjectDbError> {
        if s.insert_if_absent {
            let row = c.query_opt(SIGHTING_INSERT, &[&s.id, &s.email, &s.signed_in_at, &s.raw]).await?;
            return Ok(match row {
                Some(r) if r.get::<_, bool>(0) => MergeOutcome::Inserted,
                Some(_) => MergeOutcome::Updated,
                None => MergeOutcome::Duplicate,
            });
        }
        let Some(at) = s.signed_in_at else { return Ok(MergeOutcome::Duplicate) };
        if c.execute(SIGHTING_LOGIN, &[&s.id, &at]).await? == 1 {
            return Ok(MergeOutcome::Updated);
        }
        let known = c.query_opt("SELECT 1 FROM capydb_auth.users WHERE id = $1", &[&s.id]).await?.is_some();
        Ok(if known { MergeOutcome::Stale } else { MergeOutcome::UnknownUser })
    }

    async fn upsert_one(c: &impl GenericClient, record: &UserRecord) -> Result<MergeOutcome, ProjectDbError> {
        let rows = Self::run_upsert(c, std::slice::from_ref(record)).await?;
        if let Some(row) = rows.first() {
            return Ok(if row.get::<_, bool>(1) { MergeOutcome::Inserted } else { MergeOutcome::Updated });
        }
        // Not written: tell a duplicate from a stale object (for counters only).
        let stored: Option<DateTime<Utc>> = c
            .query_opt("SELECT updated_at FROM capydb_auth.users WHERE id = $1", &[&record.id])
            .await?
            .and_then(|r| r.get(0));
        Ok(if stored.is_some() && stored == record.updated_at { MergeOutcome::Duplicate } else { MergeOutcome::Stale })
    }

    async fn delete(c: &impl GenericClient, d: &UserDeletion) -> Result<MergeOutcome, ProjectDbError> {
        let row = c.query_opt(DELETE, &[&d.id, &d.deleted_at, &d.raw]).await?;
        Ok(match row {
            Some(r) if r.get::<_, bool>(0) => MergeOutcome::Tombstoned,
            Some(_) => MergeOutcome::Deleted,
            None => MergeOutcome::AlreadyDeleted,
        })
    }

    /// Upserts many users in one statement under the same rules. A user appearing twice
    /// keeps its newest object.
    pub async fn upsert_batch(c: &impl GenericClient, records: &[UserRecord]) -> Result<BatchOutcome, ProjectDbError> {
        if records.is_empty() {
            return Ok(BatchOutcome::default());
        }
        // ON CONFLICT cannot touch one row twice in a statement: keep the newest per id.
        let mut newest: HashMap<&str, &UserRecord> = HashMap::with_capacity(records.len());
        for r in records {
            newest
                .entry(&r.id)
                .and_modify(|cur| {
                    if r.updated_at >= cur.updated_at {
                        *cur = r;
                    }
                })
                .or_insert(r);
        }
        let unique: Vec<UserRecord> =
            if newest.len() == records.len() { records.to_vec() } else { newest.into_values().cloned().collect() };
        let written = Self::run_upsert(c, &unique).await?.len() as u64;
        Ok(BatchOutcome { written, unchanged: records.len() as u64 - written })
    }

    async fn run_upsert(
        c: &impl GenericClient,
        records: &[UserRecord],
    ) -> Result<Vec<tokio_postgres::Row>, ProjectDbError> {
        let col = |f: fn(&UserRecord) -> Option<String>| records.iter().map(f).collect::<Vec<_>>();
        let ts = |f: fn(&UserRecord) -> Option<DateTime<Utc>>| records.iter().map(f).collect::<Vec<_>>();
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let emails = col(|r| r.email.clone());
        let first = col(|r| r.first_name.clone());
        let last = col(|r| r.last_name.clone());
        let usernames = col(|r| r.username.clone());
        let images = col(|r| r.image_url.clone());
        let created = ts(|r| r.created_at);
        let updated = ts(|r| r.updated_at);
        let signed_in = ts(|r| r.last_sign_in_at);
        let raws: Vec<&serde_json::Value> = records.iter().map(|r| &r.raw).collect();
        Ok(c.query(UPSERT, &[&ids, &emails, &first, &last, &usernames, &images, &created, &updated, &signed_in, &raws])
            .await?)
    }

    /// Soft-deletes live Clerk rows created in `[from, to)` (to = None: no upper bound) and
    /// before `pass_started_at` whose ids are not in `seen`. Returns how many rows it deleted.
    pub async fn reconcile_window(
        c: &impl GenericClient,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
        pass_started_at: DateTime<Utc>,
        seen: &[&str],
        deleted_at: DateTime<Utc>,
    ) -> Result<u64, ProjectDbError> {
        Ok(c.execute(RECONCILE, &[&from, &to, &pass_started_at, &seen, &deleted_at]).await?)
    }

    /// Live rows a Clerk backfill answers for (the count check after a pass).
    pub async fn live_clerk_rows(c: &impl GenericClient) -> Result<i64, ProjectDbError> {
        let sql = format!("SELECT count(*) FROM capydb_auth.users WHERE deleted_at IS NULL AND {CLERK_ROWS}");
        Ok(c.query_one(&sql, &[]).await?.get(0))
    }
}
