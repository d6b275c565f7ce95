//! The users-table writer: the only code that changes `capydb_auth.users`, and so the one
//! place the merge rules of SPEC §2 live. Webhooks and backfill both write through here.
//!
//! Each rule is a set-based statement that decides row by row inside Postgres, so concurrent
//! writers for the same user cannot interleave badly (Postgres serialises `INSERT … ON
//! CONFLICT` on the row), and every rule is convergent: the final row does not depend on the
//! order changes arrive in.
//! 1. newer wins: objects are ordered by (`updated_at`, md5 of the canonical `raw`); an
//!    object replaces the stored one only if it is greater, so equal `updated_at` ties break
//!    the same way in every order; the identical object is a duplicate and writes nothing;
//! 2. deletion is a soft delete and sticky: `deleted_at` is set and never cleared — an
//!    object keeps the stored `deleted_at`; of two delete times the earliest stays; a delete of an
//!    unknown user inserts a tombstone; a late update may fill a tombstone's other columns
//!    (its `updated_at` is NULL, the oldest possible);
//! 3. `raw` is stored as given, made storable first (`users::storable`); typed columns were
//!    derived from it by the provider module;
//! 4. `last_sign_in_at` only moves forward, whoever brings it: a newer object, an older one
//!    that lost rule 1, or a sighting (an activity-log fact, which touches only what it
//!    knows: a signup inserts a minimal row if none exists, a login never invents a user).
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::{ToSql, Type};

use super::raw::RawJson;
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

/// Rule 1's order of objects as a SQL row value: newer `updated_at` first (no `updated_at`
/// is oldest), then a hash of the canonical `raw` (jsonb's text form is canonical), so two
/// different objects with the same `updated_at` end the same whatever their arrival order.
macro_rules! object_key {
    ($t:literal) => {
        concat!("(COALESCE(", $t, ".updated_at, '-infinity'::timestamptz), COALESCE(md5(", $t, ".raw::text), ''))")
    };
}

/// A column an object brings: set from a winning object, kept by a deletion.
macro_rules! object_column {
    ($c:literal) => {
        concat!("\n    ", $c, " = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.", $c, " ELSE u.", $c, " END,")
    };
}

/// Rules 1, 2 and 4 for an `INSERT … SELECT` into `capydb_auth.users AS u` of user objects
/// (`deleted_at` NULL) and deletions (`deleted_at` set, the other columns NULL):
/// - a greater object replaces every column but `deleted_at` (sticky);
/// - a deletion sets `deleted_at` on a live row and changes nothing else (moving an earlier
///   delete time onto a deleted row is [`DELETED_EARLIER`]'s);
/// - `last_sign_in_at` never moves back (a deletion brings none: `GREATEST` ignores NULL).
///
/// Shared by the webhook merge and the backfill's page merge (objects only).
macro_rules! merge_on_conflict {
    () => {
        concat!(
            "ON CONFLICT (id) DO UPDATE SET",
            object_column!("email"),
            object_column!("first_name"),
            object_column!("last_name"),
            object_column!("username"),
            object_column!("image_url"),
            object_column!("created_at"),
            object_column!("updated_at"),
            object_column!("raw"),
            "
    last_sign_in_at = GREATEST(u.last_sign_in_at, EXCLUDED.last_sign_in_at),
    deleted_at = COALESCE(EXCLUDED.deleted_at, u.deleted_at)
  WHERE CASE WHEN EXCLUDED.deleted_at IS NULL THEN ",
            object_key!("EXCLUDED"),
            " > ",
            object_key!("u"),
            " ELSE u.deleted_at IS NULL END"
        )
    };
}

/// One layer (distinct ids) of objects and deletions, in one statement: arrays in
/// (`deleted_at` NULL: an object; set: a deletion, whose `raw` is stored only as a
/// tombstone's). Returns the rows it wrote and whether each was inserted.
///
/// Several transactions may write one table at once (group commits run side by side, the
/// backfill, other replicas): `ON CONFLICT` waits for a concurrent writer of a row and
/// decides against its committed version, and rows are taken in id order, so two batches
/// cannot deadlock on each other. What was not written (stale, duplicate, deleted already)
/// is rare and classified afterwards ([`CLASSIFY_UNWRITTEN`]).
const MERGE: &str = concat!(
    "
INSERT INTO capydb_auth.users AS u
  (id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, deleted_at, raw)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::jsonb[])
  AS t(id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, deleted_at, raw)
ORDER BY id
",
    merge_on_conflict!(),
    "
RETURNING u.id, (xmax = 0)"
);

/// For objects the merge did not write: whether the stored object is this very object (a
/// duplicate) rather than a greater one (this one is stale). Rows only grow under rule 1, so
/// reading after the merge classifies exactly as reading at it would — or as if this object
/// had arrived after the newer one, which it did not beat.
const CLASSIFY_UNWRITTEN: &str = "
SELECT COALESCE(u.updated_at IS NOT DISTINCT FROM i.updated_at AND md5(u.raw::text) = md5(i.raw::text), false)
FROM unnest($1::text[], $2::timestamptz[], $3::jsonb[]) WITH ORDINALITY AS i(id, updated_at, raw, ord)
LEFT JOIN capydb_auth.users u ON u.id = i.id
ORDER BY i.ord";

/// Rule 2 for deletions of rows deleted already: of two delete times the earliest stays, so
/// the column converges whatever the arrival order.
const DELETED_EARLIER: &str = "
UPDATE capydb_auth.users AS u SET deleted_at = i.at
FROM unnest($1::text[], $2::timestamptz[]) AS i(id, at)
WHERE u.id = i.id AND u.deleted_at > i.at";

/// Rule 4 for objects that lost rule 1: an older object's sign-in time still moves
/// `last_sign_in_at` forward, so the column converges to the latest sign-in whatever the
/// arrival order.
const SIGN_IN_FORWARD: &str = "
UPDATE capydb_auth.users AS u SET last_sign_in_at = i.at
FROM unnest($1::text[], $2::timestamptz[]) AS i(id, at)
WHERE u.id = i.id AND (u.last_sign_in_at IS NULL OR u.last_sign_in_at < i.at)
RETURNING u.id";

/// Signups (insert a minimal row if absent; a sign-in time only moves forward), one layer.
const SIGHTING_INSERT: &str = "
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[]) WITH ORDINALITY
    AS t(id, email, at, raw, ord)
),
written AS (
  INSERT INTO capydb_auth.users AS u (id, email, last_sign_in_at, raw)
  SELECT id, email, at, raw FROM input ORDER BY id
  ON CONFLICT (id) DO UPDATE SET last_sign_in_at = EXCLUDED.last_sign_in_at
  WHERE EXCLUDED.last_sign_in_at IS NOT NULL
    AND (u.last_sign_in_at IS NULL OR u.last_sign_in_at < EXCLUDED.last_sign_in_at)
  RETURNING u.id, (xmax = 0) AS inserted
)
SELECT i.ord, w.id IS NOT NULL, COALESCE(w.inserted, false)
FROM input i LEFT JOIN written w ON w.id = i.id ORDER BY i.ord";

/// Logins of known users: `last_sign_in_at` only moves forward; unknown users are not
/// invented. One layer.
const SIGHTING_LOGIN: &str = "
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS t(id, at, ord)
),
prev AS (SELECT u.id FROM capydb_auth.users u JOIN input i ON i.id = u.id),
written AS (
  UPDATE capydb_auth.users AS u SET last_sign_in_at = i.at FROM input i
  WHERE u.id = i.id AND (u.last_sign_in_at IS NULL OR u.last_sign_in_at < i.at)
  RETURNING u.id
)
SELECT i.ord, w.id IS NOT NULL, p.id IS NOT NULL
FROM input i LEFT JOIN written w ON w.id = i.id LEFT JOIN prev p ON p.id = i.id ORDER BY i.ord";

/// Rows a Clerk backfill answers for: Clerk user objects. Other providers' users may share
/// the table (several integrations on one database) and are never reconciled by Clerk.
const CLERK_ROWS: &str = "raw->>'object' = 'user' AND id LIKE 'user\\_%'";

/// Backfill reconciliation, step 1: live Clerk rows created in a window Clerk has just listed
/// in full (and before the pass began) that the listing did not contain. Only candidates:
/// each is asked of Clerk by id before anything is deleted (SPEC §5).
const RECONCILE_CANDIDATES: &str = "
SELECT id FROM capydb_auth.users
WHERE deleted_at IS NULL
  AND raw->>'object' = 'user' AND id LIKE 'user\\_%'
  AND created_at >= $1
  AND ($2::timestamptz IS NULL OR created_at < $2)
  AND created_at < $3
  AND NOT (id = ANY($4::text[]))
ORDER BY id";

/// Backfill reconciliation, step 2: soft-deletes rows Clerk confirmed gone (404 by id).
/// Sticky like every delete: an already deleted row keeps its earlier time.
const DELETE_CONFIRMED: &str = "
UPDATE capydb_auth.users SET deleted_at = $2
WHERE id = ANY($1::text[]) AND deleted_at IS NULL";

/// A backfill page's staging table: binary COPY lands here, one set-based merge moves it
/// into `capydb_auth.users`. Temporary, so it costs no WAL and lives in no schema of the
/// customer's; dropped when the page's transaction commits (or by the next page write of the
/// same transaction: a page's reconciliation upserts the candidates Clerk kept after it; the
/// notice of a DROP that finds nothing is not sent).
const PAGE_STAGING: &str = "
SET LOCAL client_min_messages = warning;
DROP TABLE IF EXISTS pg_temp.capydb_auth_page;
CREATE TEMP TABLE capydb_auth_page (
  id text, email text, first_name text, last_name text, username text, image_url text,
  created_at timestamptz, updated_at timestamptz, last_sign_in_at timestamptz, raw jsonb
) ON COMMIT DROP";

const PAGE_COPY: &str = "COPY capydb_auth_page FROM STDIN (FORMAT binary)";

/// Which of a page's ids have a row already (none or few: the rest is COPYed straight in).
const PAGE_EXISTING: &str = "SELECT id FROM capydb_auth.users WHERE id = ANY($1::text[])";

/// Pages with at most one in this many users already stored take the direct path: the new
/// users are COPYed straight into the table and the stored ones merged by the webhook
/// statement. A keyset page re-lists the previous page's last millisecond, so even a first
/// backfill meets a few stored users on every page; a second backfill meets all of them and
/// takes the staging path.
const PAGE_DIRECT_MAX_STORED_SHARE: usize = 10;

/// The fast path of a page none of whose users has a row: straight into the table.
const PAGE_COPY_DIRECT: &str = "COPY capydb_auth.users \
  (id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, raw) \
  FROM STDIN (FORMAT binary)";

/// The page merge: the same rules and SET list as [`MERGE`] (rule 1 by object key, `deleted_at`
/// untouched, `last_sign_in_at` never back), for a staging table of distinct ids.
const PAGE_MERGE: &str = concat!(
    "
WITH written AS (
  INSERT INTO capydb_auth.users AS u
    (id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, raw)
  SELECT id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, raw
  FROM capydb_auth_page ORDER BY id
  ",
    merge_on_conflict!(),
    "
  RETURNING 1
)
SELECT count(*) FROM written"
);

/// Rule 4 for the page's objects that lost rule 1 (see [`SIGN_IN_FORWARD`]).
const PAGE_SIGN_IN_FORWARD: &str = "
UPDATE capydb_auth.users AS u SET last_sign_in_at = s.last_sign_in_at
FROM capydb_auth_page s
WHERE u.id = s.id AND s.last_sign_in_at IS NOT NULL
  AND (u.last_sign_in_at IS NULL OR u.last_sign_in_at < s.last_sign_in_at)";

/// Column types of [`PAGE_STAGING`], in order, for the binary COPY.
const PAGE_TYPES: [Type; 10] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::JSONB,
];

/// Stateless: the merge rules are SQL; the writer just runs them on a caller's connection or
/// transaction.
pub struct UsersWriter;

impl UsersWriter {
    /// Applies one change.
    pub async fn apply(c: &impl GenericClient, change: &UserChange) -> Result<MergeOutcome, ProjectDbError> {
        let outcomes = Self::apply_batch(c, &[change]).await?;
        Ok(outcomes[0])
    }

    /// Applies `changes` with set-based statements and returns each one's outcome, exactly as
    /// if they had been applied one by one in this order (the caller wraps them in one
    /// transaction when they must commit together).
    ///
    /// The changes are cut into layers: layer *k* holds the *k*-th change of every user, so
    /// the ids in a layer are distinct, and one multi-row statement applies its objects and
    /// deletions (`MERGE`), one its signups and one its logins (`ON CONFLICT` may touch a
    /// row only once per statement). Layers run in order, so two
    /// changes to one user meet the merge rules in their arrival order; most batches are a
    /// single layer.
    pub async fn apply_batch(
        c: &impl GenericClient,
        changes: &[&UserChange],
    ) -> Result<Vec<MergeOutcome>, ProjectDbError> {
        let mut outcomes = vec![MergeOutcome::Duplicate; changes.len()];
        for layer in layers(changes) {
            let mut merges = Vec::new();
            let mut signups = Vec::new();
            let mut logins = Vec::new();
            for &i in &layer {
                match changes[i] {
                    UserChange::Upsert(_) | UserChange::Delete(_) => merges.push((i, changes[i])),
                    UserChange::Sighting(s) if s.insert_if_absent => signups.push((i, s)),
                    UserChange::Sighting(s) => logins.push((i, s)),
                }
            }
            for (i, outcome) in Self::merge_layer(c, &merges).await? {
                outcomes[i] = outcome;
            }
            for (i, outcome) in Self::signup_layer(c, &signups).await? {
                outcomes[i] = outcome;
            }
            for (i, outcome) in Self::login_layer(c, &logins).await? {
                outcomes[i] = outcome;
            }
        }
        Ok(outcomes)
    }

    /// Whether `changes` apply as one statement (one layer of one kind of change), which is
    /// atomic without a transaction. What follows the merge for the few changes it did not
    /// write needs no atomicity with it: classifying reads, and the sign-in and delete-time
    /// moves are monotonic on their own.
    pub fn is_one_statement(changes: &[&UserChange]) -> bool {
        let kind = |c: &UserChange| match c {
            UserChange::Upsert(_) | UserChange::Delete(_) => 1,
            UserChange::Sighting(s) if s.insert_if_absent => 2,
            UserChange::Sighting(_) => 3,
        };
        let mut ids = HashSet::with_capacity(changes.len());
        changes.first().is_none_or(|first| changes.iter().all(|c| kind(c) == kind(first) && ids.insert(c.user_id())))
    }

    /// Objects and deletions of one layer, in one statement.
    async fn merge_layer(
        c: &impl GenericClient,
        layer: &[(usize, &UserChange)],
    ) -> Result<Vec<(usize, MergeOutcome)>, ProjectDbError> {
        if layer.is_empty() {
            return Ok(Vec::new());
        }
        let written: HashMap<String, bool> =
            Self::run_merge(c, layer).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut outcomes = Vec::with_capacity(layer.len());
        // Objects not written: duplicates or stale, told apart below.
        let mut unwritten: Vec<(usize, &UserRecord)> = Vec::new();
        // Deletions of rows deleted already: at most their delete time moves earlier.
        let mut deleted_already: Vec<&UserDeletion> = Vec::new();
        for &(i, change) in layer {
            let outcome = match (change, written.get(change.user_id())) {
                (UserChange::Delete(_), Some(true)) => MergeOutcome::Tombstoned,
                (UserChange::Delete(_), Some(false)) => MergeOutcome::Deleted,
                (UserChange::Delete(d), None) => {
                    deleted_already.push(d);
                    MergeOutcome::AlreadyDeleted
                }
                (_, Some(true)) => MergeOutcome::Inserted,
                (_, Some(false)) => MergeOutcome::Updated,
                (change, None) => {
                    if let UserChange::Upsert(record) = change {
                        unwritten.push((outcomes.len(), record));
                    }
                    MergeOutcome::Stale
                }
            };
            outcomes.push((i, outcome));
        }
        if !deleted_already.is_empty() {
            let ids: Vec<&str> = deleted_already.iter().map(|d| d.id.as_str()).collect();
            let at: Vec<DateTime<Utc>> = deleted_already.iter().map(|d| d.deleted_at).collect();
            let stmt = c.prepare_cached(DELETED_EARLIER).await?;
            c.execute(&stmt, &[&ids, &at]).await?;
        }
        // Positions in `outcomes` of objects that lost rule 1 but carry a sign-in time.
        let mut lost_with_sign_in: Vec<(usize, &UserRecord)> = Vec::new();
        if !unwritten.is_empty() {
            let ids: Vec<&str> = unwritten.iter().map(|(_, r)| r.id.as_str()).collect();
            let updated: Vec<Option<DateTime<Utc>>> = unwritten.iter().map(|(_, r)| r.updated_at).collect();
            let raws: Vec<&RawJson> = unwritten.iter().map(|(_, r)| &r.raw).collect();
            let stmt = c.prepare_cached(CLASSIFY_UNWRITTEN).await?;
            let same = c.query(&stmt, &[&ids, &updated, &raws]).await?;
            for (row, &(pos, record)) in same.iter().zip(&unwritten) {
                if row.get::<_, bool>(0) {
                    outcomes[pos].1 = MergeOutcome::Duplicate;
                } else if record.last_sign_in_at.is_some() {
                    lost_with_sign_in.push((pos, record));
                }
            }
        }
        if !lost_with_sign_in.is_empty() {
            // Rule 4 for the objects rule 1 turned away: their sign-in times still count.
            let ids: Vec<&str> = lost_with_sign_in.iter().map(|(_, r)| r.id.as_str()).collect();
            let at: Vec<Option<DateTime<Utc>>> = lost_with_sign_in.iter().map(|(_, r)| r.last_sign_in_at).collect();
            let stmt = c.prepare_cached(SIGN_IN_FORWARD).await?;
            let moved: HashSet<String> = c.query(&stmt, &[&ids, &at]).await?.iter().map(|r| r.get(0)).collect();
            for (pos, record) in lost_with_sign_in {
                if moved.contains(&record.id) {
                    outcomes[pos].1 = MergeOutcome::Updated;
                }
            }
        }
        Ok(outcomes)
    }

    async fn signup_layer(
        c: &impl GenericClient,
        layer: &[(usize, &UserSighting)],
    ) -> Result<Vec<(usize, MergeOutcome)>, ProjectDbError> {
        if layer.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = layer.iter().map(|(_, s)| s.id.as_str()).collect();
        let emails: Vec<Option<&str>> = layer.iter().map(|(_, s)| s.email.as_deref()).collect();
        let at: Vec<Option<DateTime<Utc>>> = layer.iter().map(|(_, s)| s.signed_in_at).collect();
        let raws: Vec<&RawJson> = layer.iter().map(|(_, s)| &s.raw).collect();
        let stmt = c.prepare_cached(SIGHTING_INSERT).await?;
        let rows = c.query(&stmt, &[&ids, &emails, &at, &raws]).await?;
        Ok(rows
            .iter()
            .zip(layer)
            .map(|(row, &(i, _))| {
                let outcome = match (row.get::<_, bool>(1), row.get::<_, bool>(2)) {
                    (true, true) => MergeOutcome::Inserted,
                    (true, false) => MergeOutcome::Updated,
                    (false, _) => MergeOutcome::Duplicate,
                };
                (i, outcome)
            })
            .collect())
    }

    async fn login_layer(
        c: &impl GenericClient,
        layer: &[(usize, &UserSighting)],
    ) -> Result<Vec<(usize, MergeOutcome)>, ProjectDbError> {
        // A login without a time says nothing.
        let (timed, untimed): (Vec<_>, Vec<_>) = layer.iter().partition(|(_, s)| s.signed_in_at.is_some());
        let mut outcomes: Vec<(usize, MergeOutcome)> =
            untimed.iter().map(|&&(i, _)| (i, MergeOutcome::Duplicate)).collect();
        if timed.is_empty() {
            return Ok(outcomes);
        }
        let ids: Vec<&str> = timed.iter().map(|(_, s)| s.id.as_str()).collect();
        let at: Vec<Option<DateTime<Utc>>> = timed.iter().map(|(_, s)| s.signed_in_at).collect();
        let stmt = c.prepare_cached(SIGHTING_LOGIN).await?;
        let rows = c.query(&stmt, &[&ids, &at]).await?;
        outcomes.extend(rows.iter().zip(&timed).map(|(row, &&(i, _))| {
            let outcome = match (row.get::<_, bool>(1), row.get::<_, bool>(2)) {
                (true, _) => MergeOutcome::Updated,
                (false, true) => MergeOutcome::Stale,
                (false, false) => MergeOutcome::UnknownUser,
            };
            (i, outcome)
        }));
        Ok(outcomes)
    }

    /// Upserts many users under the same rules (a backfill page). A user appearing twice is
    /// applied in order, so its newest object wins.
    pub async fn upsert_batch(c: &impl GenericClient, records: &[&UserRecord]) -> Result<BatchOutcome, ProjectDbError> {
        let changes: Vec<UserChange> = records.iter().map(|&r| UserChange::Upsert(r.clone())).collect();
        let outcomes = Self::apply_batch(c, &changes.iter().collect::<Vec<_>>()).await?;
        let written = outcomes.iter().filter(|o| o.changed()).count() as u64;
        Ok(BatchOutcome { written, unchanged: records.len() as u64 - written })
    }

    async fn run_merge(
        c: &impl GenericClient,
        layer: &[(usize, &UserChange)],
    ) -> Result<Vec<tokio_postgres::Row>, ProjectDbError> {
        fn record(change: &UserChange) -> Option<&UserRecord> {
            match change {
                UserChange::Upsert(r) => Some(r),
                _ => None,
            }
        }
        fn deletion(change: &UserChange) -> Option<&UserDeletion> {
            match change {
                UserChange::Delete(d) => Some(d),
                _ => None,
            }
        }
        let col = |f: fn(&UserRecord) -> Option<&str>| {
            layer.iter().map(|(_, c)| record(c).and_then(f)).collect::<Vec<Option<&str>>>()
        };
        let ts = |f: fn(&UserRecord) -> Option<DateTime<Utc>>| {
            layer.iter().map(|(_, c)| record(c).and_then(f)).collect::<Vec<Option<DateTime<Utc>>>>()
        };
        let ids: Vec<&str> = layer.iter().map(|(_, c)| c.user_id()).collect();
        let emails = col(|r| r.email.as_deref());
        let first = col(|r| r.first_name.as_deref());
        let last = col(|r| r.last_name.as_deref());
        let usernames = col(|r| r.username.as_deref());
        let images = col(|r| r.image_url.as_deref());
        let created = ts(|r| r.created_at);
        let updated = ts(|r| r.updated_at);
        let signed_in = ts(|r| r.last_sign_in_at);
        let deleted: Vec<Option<DateTime<Utc>>> =
            layer.iter().map(|(_, c)| deletion(c).map(|d| d.deleted_at)).collect();
        let raws: Vec<&RawJson> = layer
            .iter()
            .map(|(_, c)| match c {
                UserChange::Upsert(r) => &r.raw,
                UserChange::Delete(d) => &d.raw,
                UserChange::Sighting(s) => &s.raw,
            })
            .collect();
        let stmt = c.prepare_cached(MERGE).await?;
        Ok(c.query(
            &stmt,
            &[&ids, &emails, &first, &last, &usernames, &images, &created, &updated, &signed_in, &deleted, &raws],
        )
        .await?)
    }

    /// Reconciliation candidates of one listed window: live Clerk rows created in `[from, to)`
    /// (to = None: no upper bound) and before `pass_started_at` whose ids are not in `seen`.
    pub async fn reconcile_candidates(
        c: &impl GenericClient,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
        pass_started_at: DateTime<Utc>,
        seen: &[&str],
    ) -> Result<Vec<String>, ProjectDbError> {
        let rows = c.query(RECONCILE_CANDIDATES, &[&from, &to, &pass_started_at, &seen]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Soft-deletes the rows of users the provider confirmed gone. Returns how many rows it
    /// deleted (rows already deleted keep their time).
    pub async fn delete_confirmed(
        c: &impl GenericClient,
        ids: &[&str],
        deleted_at: DateTime<Utc>,
    ) -> Result<u64, ProjectDbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(c.execute(DELETE_CONFIRMED, &[&ids, &deleted_at]).await?)
    }

    /// Upserts a backfill page under the merge rules at COPY speed: the rows are
    /// binary-COPYed into a temporary staging table, then one set-based merge (the same rule
    /// expressions as [`UsersWriter::apply_batch`]'s upsert) and rule 4 for the objects that
    /// lost. Must run in a transaction (the staging table lives until its commit). A page
    /// naming one id twice takes the layered path of `apply_batch` instead, which applies
    /// repeats in order.
    pub async fn upsert_page(
        tx: &deadpool_postgres::Transaction<'_>,
        rows: &[&UserRecord],
    ) -> Result<BatchOutcome, ProjectDbError> {
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut ids = HashSet::with_capacity(rows.len());
        if !rows.iter().all(|r| ids.insert(r.id.as_str())) {
            return Self::upsert_batch(tx, rows).await;
        }
        // Fast path: (almost) no row of the page exists yet (a first backfill), so the new
        // users are inserts under the rules and are COPYed straight into the table, and the
        // few stored ones (the previous page's last millisecond, listed again) take the
        // webhook merge. A writer that inserts one of the new ids meanwhile makes the COPY
        // fail on the primary key; the page then takes the staging path below, which decides
        // row by row.
        // The probe and the savepoint travel together (pipelined: one round trip).
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let params: [&(dyn ToSql + Sync); 1] = [&ids];
        let (stored, ()) =
            tokio::try_join!(tx.query(PAGE_EXISTING, &params), tx.batch_execute("SAVEPOINT capydb_page_direct"))?;
        let stored: HashSet<String> = stored.iter().map(|r| r.get(0)).collect();
        if stored.len() * PAGE_DIRECT_MAX_STORED_SHARE <= rows.len() {
            let (merge, copy): (Vec<&UserRecord>, Vec<&UserRecord>) =
                rows.iter().partition(|r| stored.contains(r.id.as_str()));
            match Self::copy_rows(tx, PAGE_COPY_DIRECT, &copy).await {
                Ok(copied) => {
                    let release = tx.batch_execute("RELEASE SAVEPOINT capydb_page_direct");
                    let merged = if merge.is_empty() {
                        release.await?;
                        BatchOutcome::default()
                    } else {
                        tokio::try_join!(
                            async { release.await.map_err(ProjectDbError::from) },
                            Self::upsert_batch(tx, &merge)
                        )?
                        .1
                    };
                    let written = copied + merged.written;
                    return Ok(BatchOutcome { written, unchanged: rows.len() as u64 - written.min(rows.len() as u64) });
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT capydb_page_direct").await?;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            tx.batch_execute("RELEASE SAVEPOINT capydb_page_direct").await?;
        }
        tx.batch_execute(PAGE_STAGING).await?;
        Self::copy_rows(tx, PAGE_COPY, rows).await?;
        let merged: i64 = tx.query_one(PAGE_MERGE, &[]).await?.get(0);
        let moved = tx.execute(PAGE_SIGN_IN_FORWARD, &[]).await?;
        let written = merged as u64 + moved;
        Ok(BatchOutcome { written, unchanged: rows.len() as u64 - written.min(rows.len() as u64) })
    }

    /// Binary-COPYs `rows` with `copy` (into the staging table or the users table).
    async fn copy_rows(
        tx: &deadpool_postgres::Transaction<'_>,
        copy: &str,
        rows: &[&UserRecord],
    ) -> Result<u64, tokio_postgres::Error> {
        let sink = tx.copy_in(copy).await?;
        let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &PAGE_TYPES);
        futures::pin_mut!(writer);
        for r in rows {
            writer
                .as_mut()
                .write(&[
                    &r.id,
                    &r.email,
                    &r.first_name,
                    &r.last_name,
                    &r.username,
                    &r.image_url,
                    &r.created_at,
                    &r.updated_at,
                    &r.last_sign_in_at,
                    &r.raw,
                ])
                .await?;
        }
        writer.finish().await
    }

    /// Live rows a Clerk backfill answers for (the count check after a pass).
    pub async fn live_clerk_rows(c: &impl GenericClient) -> Result<i64, ProjectDbError> {
        let sql = format!("SELECT count(*) FROM capydb_auth.users WHERE deleted_at IS NULL AND {CLERK_ROWS}");
        Ok(c.query_one(&sql, &[]).await?.get(0))
    }
}

/// Positions of `changes` cut into layers of distinct user ids, in arrival order: layer *k*
/// holds each user's *k*-th change.
fn layers(changes: &[&UserChange]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(changes.len());
    let mut layers: Vec<Vec<usize>> = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let k = seen.entry(change.user_id()).or_insert(0);
        if layers.len() <= *k {
            layers.push(Vec::new());
        }
        layers[*k].push(i);
        *k += 1;
    }
    layers
}
