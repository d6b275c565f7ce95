//! Dev mode (`--dev`): a working service on a fresh machine with nothing configured. It
//! keeps a generated master key and admin token in the dev folder (created 0600, ignored
//! by git), uses the local Postgres (or starts a throwaway cluster there) and writes its
//! base URL to `postgres-url` in the folder, and creates a control database and one project
//! database per walkthrough of the README (`capydb_dev_shop`, `capydb_dev_blog`).
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;

use crate::config::{DevDefaults, ServeOptions};
use crate::crypto::Keyring;
use crate::local_postgres::{self, LocalPostgres};

pub const CONTROL_DB: &str = "capydb_auth_sync_dev";
/// The project databases of the README's walkthroughs, one each, so neither touches the
/// other's table.
pub const EXAMPLE_PROJECT_DBS: [&str; 2] = ["capydb_dev_shop", "capydb_dev_blog"];
/// The file in the dev folder holding the base URL of the Postgres dev mode uses.
pub const POSTGRES_URL_FILE: &str = "postgres-url";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev folder {0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Postgres(#[from] local_postgres::LocalPostgresError),
    #[error("could not create dev databases: {0}")]
    CreateDb(String),
}

pub struct DevSetup {
    pub defaults: DevDefaults,
    /// The Postgres dev mode runs on, when it chose it (not with `--database-url`).
    pub postgres: Option<LocalPostgres>,
}

pub async fn prepare(o: &ServeOptions) -> Result<DevSetup, DevError> {
    let dir = &o.dev_dir;
    std::fs::create_dir_all(dir).map_err(|e| DevError::Io(dir.display().to_string(), e))?;
    let master_keys =
        read_or_create(&dir.join("master-keys"), || Keyring::generate_spec("dev").expose_secret().to_string())?;
    let admin_token = read_or_create(&dir.join("admin-token"), || {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        format!("dev_{}", hex::encode(bytes))
    })?;
    let (database_url, postgres) = match &o.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let pg = local_postgres::ensure(&dir.join("pg")).await?;
            for db in std::iter::once(CONTROL_DB).chain(EXAMPLE_PROJECT_DBS) {
                create_database(&pg, db).await?;
            }
            // Trust auth on loopback: the URL holds no password.
            let url_file = dir.join(POSTGRES_URL_FILE);
            std::fs::write(&url_file, format!("{}\n", pg.base_url))
                .map_err(|e| DevError::Io(url_file.display().to_string(), e))?;
            (pg.url_for(CONTROL_DB), Some(pg))
        }
    };
    Ok(DevSetup {
        defaults: DevDefaults {
            database_url,
            master_keys: SecretString::from(master_keys),
            admin_token: SecretString::from(admin_token),
        },
        postgres,
    })
}

fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> Result<String, DevError> {
    let io = |e| DevError::Io(path.display().to_string(), e);
    if let Ok(existing) = std::fs::read_to_string(path) {
        if !existing.trim().is_empty() {
            return Ok(existing.trim().to_string());
        }
    }
    let value = make();
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
        f.write_all(value.as_bytes()).map_err(io)?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, &value).map_err(io)?;
    Ok(value)
}

/// `CREATE DATABASE` if it does not exist (tolerating a concurrent creator).
pub async fn create_database(pg: &LocalPostgres, name: &str) -> Result<(), DevError> {
    let (client, conn) = tokio_postgres::connect(&pg.url_for("postgres"), tokio_postgres::NoTls)
        .await
        .map_err(|e| DevError::CreateDb(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| DevError::CreateDb(e.to_string()))?
        .is_some();
    if !exists {
        if let Err(e) = client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(DevError::CreateDb(e.to_string()));
            }
        }
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}
