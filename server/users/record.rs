//! The provider-neutral shape of a user, and of one change to the users table.
//!
//! Every provider module parses its payloads into these types; the writer
//! (`users::writer`) is the only code that turns them into SQL.
use chrono::{DateTime, Utc};

use super::raw::RawJson;

/// One user as the provider last described it: the typed columns of `capydb_auth.users`
/// derived from `raw`, plus `raw` itself, unmodified.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// The provider's user object, byte-for-byte semantics preserved (stored as jsonb).
    pub raw: RawJson,
}

/// A deletion: the row is soft-deleted (or a tombstone inserted) and stays deleted forever.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserDeletion {
    pub id: String,
    pub deleted_at: DateTime<Utc>,
    /// What the delete event carried (stored as `raw` only when no row exists yet).
    pub raw: RawJson,
}

/// A partial fact from an activity log (Auth0 Log Streams): it changes only the columns it
/// knows. A signup inserts a minimal row if the user is unknown; a login moves
/// `last_sign_in_at` forward.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserSighting {
    pub id: String,
    /// Insert `(id, email, raw)` when no row exists (signup).
    pub insert_if_absent: bool,
    pub email: Option<String>,
    /// Moves `last_sign_in_at` forward, never back (login).
    pub signed_in_at: Option<DateTime<Utc>>,
    /// What the log record carried; stored as `raw` only when a row is inserted.
    pub raw: RawJson,
}

/// One change a delivery or a backfill page asks of the users table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserChange {
    Upsert(UserRecord),
    Delete(UserDeletion),
    Sighting(UserSighting),
}

impl UserChange {
    pub fn user_id(&self) -> &str {
        match self {
            UserChange::Upsert(r) => &r.id,
            UserChange::Delete(d) => &d.id,
            UserChange::Sighting(s) => &s.id,
        }
    }
}
