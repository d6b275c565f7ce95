//! Creates `capydb_auth.users` (SPEC §2) in a project database, idempotently, and refuses
//! to work with a table of another shape.
use deadpool_postgres::GenericClient;

use crate::project_db::ProjectDbError;

/// The exact columns and types of `capydb_auth.users`, as `information_schema` names them.
pub const USERS_COLUMNS: [(&str, &str); 11] = [
    ("id", "text"),
    ("email", "text"),
    ("first_name", "text"),
    ("last_name", "text"),
    ("username", "text"),
    ("image_url", "text"),
    ("created_at", "timestamp with time zone"),
    ("updated_at", "timestamp with time zone"),
    ("last_sign_in_at", "timestamp with time zone"),
    ("deleted_at", "timestamp with time zone"),
    ("raw", "jsonb"),
];

const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS capydb_auth;
CREATE TABLE IF NOT EXISTS capydb_auth.users (
  id              text PRIMARY KEY,
  email           text,
  first_name      text,
  last_name       text,
  username        text,
  image_url       text,
  created_at      timestamptz,
  updated_at      timestamptz,
  last_sign_in_at timestamptz,
  deleted_at      timestamptz,
  raw             jsonb
);
";

/// Backfill reconciliation scans by creation time (created after the shape check).
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS users_created_at_idx ON capydb_auth.users (created_at)";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("capydb_auth.users exists with a different shape: {0}")]
    WrongShape(String),
    #[error(transparent)]
    Db(#[from] ProjectDbError),
}

/// Creates the schema and table if absent, then checks the table has exactly the SPEC
/// columns and primary key.
pub async fn ensure_users_table(client: &mut deadpool_postgres::Object) -> Result<(), SchemaError> {
    let tx = client.transaction().await.map_err(ProjectDbError::from)?;
    // Concurrent CREATE … IF NOT EXISTS can still collide in the catalog; serialise.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('capydb_auth.users'))", &[])
        .await
        .map_err(ProjectDbError::from)?;
    tx.batch_execute(CREATE).await.map_err(ProjectDbError::from)?;
    check_shape(&tx).await?;
    tx.batch_execute(INDEXES).await.map_err(ProjectDbError::from)?;
    tx.commit().await.map_err(ProjectDbError::from)?;
    Ok(())
}

async fn check_shape(c: &impl GenericClient) -> Result<(), SchemaError> {
    let rows = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'capydb_auth' AND table_name = 'users' ORDER BY ordinal_position",
            &[],
        )
        .await
        .map_err(ProjectDbError::from)?;
    let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut problems = Vec::new();
    for (name, ty) in USERS_COLUMNS {
        match found.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("column {name} is missing")),
            Some((_, t)) if t != ty => problems.push(format!("column {name} is {t}, expected {ty}")),
            Some(_) => {}
        }
    }
    for (name, _) in &found {
        if !USERS_COLUMNS.iter().any(|(n, _)| n == name) {
            problems.push(format!("unexpected column {name}"));
        }
    }
    let pk: Vec<String> = c
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'capydb_auth.users'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .map_err(ProjectDbError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if pk != ["id"] {
        problems.push(format!("primary key is ({}), expected (id)", pk.join(", ")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::WrongShape(problems.join("; ")))
    }
}
