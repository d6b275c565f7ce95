//! The `capydb_auth.users` table: the provider-neutral record and the one writer that
//! enforces the merge rules (SPEC §2) for webhooks and backfill alike.
pub mod raw;
pub mod record;
pub mod schema;
pub mod storable;
pub mod writer;

pub use raw::RawJson;
pub use record::{UserChange, UserDeletion, UserRecord, UserSighting};
pub use writer::{MergeOutcome, UsersWriter};
