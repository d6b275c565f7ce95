//! Integration rows: one per (project, provider), credentials stored as ciphertexts only.
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{ControlStore, StoreError};
use crate::providers::ProviderKind;

/// An integration as stored. Secret fields hold ciphertexts (see `crypto`), never plaintext.
#[derive(Clone)]
pub struct IntegrationRow {
    pub id: String,
    pub project_id: String,
    /// Parsed once here, from the stored control-plane name; typed from here on.
    pub provider: ProviderKind,
    pub database_url_enc: String,
    pub secret_key_enc: Option<String>,
    pub webhook_secret_enc: Option<String>,
    pub secret_key_hint: Option<String>,
    pub database_target: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The webhook secret a rotation replaced, and until when it still verifies (SPEC §8).
    pub previous_webhook_secret_enc: Option<String>,
    pub previous_webhook_secret_until: Option<DateTime<Utc>>,
    /// Bumped by every write; a write based on an older version is refused (no lost updates).
    /// 0 for a row not stored yet.
    pub version: i64,
}

impl std::fmt::Debug for IntegrationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRow")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, project_id, provider, database_url_enc, secret_key_enc, webhook_secret_enc, \
     secret_key_hint, database_target, created_at, updated_at, previous_webhook_secret_enc, \
     previous_webhook_secret_until, version";

impl IntegrationRow {
    /// The stored provider name is checked by the table (`CHECK provider IN (…)`); a name
    /// this build does not know is reported, never guessed.
    fn from_row(r: &Row) -> Result<Self, StoreError> {
        let name: String = r.get(2);
        let provider = ProviderKind::from_name(&name)
            .ok_or_else(|| StoreError::Query(format!("unknown provider {name:?} in the integrations table")))?;
        Ok(IntegrationRow {
            id: r.get(0),
            project_id: r.get(1),
            provider,
            database_url_enc: r.get(3),
            secret_key_enc: r.get(4),
            webhook_secret_enc: r.get(5),
            secret_key_hint: r.get(6),
            database_target: r.get(7),
            created_at: r.get(8),
            updated_at: r.get(9),
            previous_webhook_secret_enc: r.get(10),
            previous_webhook_secret_until: r.get(11),
            version: r.get(12),
        })
    }
}

impl ControlStore {
    pub async fn get_integration(
        &self,
        project_id: &str,
        provider: ProviderKind,
    ) -> Result<Option<IntegrationRow>, StoreError> {
        let c = self.client().await?;
        let sql =
            format!("SELECT {COLUMNS} FROM capydb_auth_sync.integrations WHERE project_id = $1 AND provider = $2");
        c.query_opt(&sql, &[&project_id, &provider.name()]).await?.map(|r| IntegrationRow::from_row(&r)).transpose()
    }

    pub async fn get_integration_by_id(&self, id: &str) -> Result<Option<IntegrationRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM capydb_auth_sync.integrations WHERE id = $1");
        c.query_opt(&sql, &[&id]).await?.map(|r| IntegrationRow::from_row(&r)).transpose()
    }

    /// Every integration, or those of one project, ordered by project then provider.
    pub async fn list_integrations(&self, project_id: Option<&str>) -> Result<Vec<IntegrationRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM capydb_auth_sync.integrations WHERE ($1::text IS NULL OR project_id = $1) \
             ORDER BY project_id, provider"
        );
        c.query(&sql, &[&project_id]).await?.iter().map(IntegrationRow::from_row).collect()
    }

    /// Writes the row, optimistically: a new row (`version` 0) is inserted unless (project,
    /// provider) exists meanwhile; an existing row is updated only if it still has the
    /// `version` it was read at. `Ok(None)`: someone else wrote first — re-read, merge again.
    /// `created_at` and `id` survive an update; `version` goes up by one.
    pub async fn save_integration(&self, row: &IntegrationRow) -> Result<Option<IntegrationRow>, StoreError> {
        let c = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
            &row.id,
            &row.project_id,
            &row.provider.name(),
            &row.database_url_enc,
            &row.secret_key_enc,
            &row.webhook_secret_enc,
            &row.secret_key_hint,
            &row.database_target,
            &row.previous_webhook_secret_enc,
            &row.previous_webhook_secret_until,
            &row.version,
        ];
        let saved = if row.version == 0 {
            let sql = format!(
                "INSERT INTO capydb_auth_sync.integrations AS i ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now(), $9, $10, $11::bigint + 1) \
                 ON CONFLICT (project_id, provider) DO NOTHING RETURNING {COLUMNS}"
            );
            c.query_opt(&sql, &params).await?
        } else {
            let sql = format!(
                "UPDATE capydb_auth_sync.integrations SET database_url_enc = $4, secret_key_enc = $5, \
                   webhook_secret_enc = $6, secret_key_hint = $7, database_target = $8, \
                   previous_webhook_secret_enc = $9, previous_webhook_secret_until = $10, \
                   version = version + 1, updated_at = now() \
                 WHERE id = $1 AND project_id = $2 AND provider = $3 AND version = $11 RETURNING {COLUMNS}"
            );
            c.query_opt(&sql, &params).await?
        };
        let Some(r) = saved else { return Ok(None) };
        let saved = IntegrationRow::from_row(&r)?;
        c.execute(
            "INSERT INTO capydb_auth_sync.webhook_stats (integration_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&saved.id],
        )
        .await?;
        Ok(Some(saved))
    }

    /// Deletes the integration (and, by cascade, its counters and job history).
    pub async fn delete_integration(&self, id: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM capydb_auth_sync.integrations WHERE id = $1", &[&id]).await? == 1)
    }

    /// Replaces the ciphertexts of every integration in one transaction (`rotate-keys`),
    /// bumping each row's version so a Configure that read a row before the rotation cannot
    /// write old-key ciphertexts back (its write finds another version and merges again).
    /// `reencrypt` maps a row to its new ciphertexts.
    pub async fn reencrypt_all<F>(&self, mut reencrypt: F) -> Result<usize, StoreError>
    where
        F: FnMut(&IntegrationRow) -> Result<Ciphertexts, String>,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let sql = format!("SELECT {COLUMNS} FROM capydb_auth_sync.integrations ORDER BY id FOR UPDATE");
        let rows: Vec<IntegrationRow> =
            tx.query(&sql, &[]).await?.iter().map(IntegrationRow::from_row).collect::<Result<_, _>>()?;
        for row in &rows {
            let new = reencrypt(row).map_err(StoreError::Query)?;
            tx.execute(
                "UPDATE capydb_auth_sync.integrations SET database_url_enc = $2, secret_key_enc = $3, \
                   webhook_secret_enc = $4, previous_webhook_secret_enc = $5, version = version + 1 WHERE id = $1",
                &[&row.id, &new.database_url, &new.secret_key, &new.webhook_secret, &new.previous_webhook_secret],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// The ciphertexts of one integration, as `rotate-keys` rewrites them.
pub struct Ciphertexts {
    pub database_url: String,
    pub secret_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub previous_webhook_secret: Option<String>,
}

/// Field names bound into each ciphertext (SPEC §6).
pub mod fields {
    pub const DATABASE_URL: &str = "database_url";
    pub const SECRET_KEY: &str = "secret_key";
    pub const WEBHOOK_SECRET: &str = "webhook_signing_secret";
    pub const PREVIOUS_WEBHOOK_SECRET: &str = "previous_webhook_signing_secret";
}

impl IntegrationRow {
    pub fn secret_context<'a>(&'a self, field: &'a str) -> crate::crypto::SecretContext<'a> {
        crate::crypto::SecretContext { project_id: &self.project_id, provider: self.provider.name(), field }
    }

    pub fn database_url(
        &self,
        keyring: &crate::crypto::Keyring,
    ) -> Result<secrecy::SecretString, crate::crypto::CryptoError> {
        keyring.decrypt(&self.database_url_enc, self.secret_context(fields::DATABASE_URL))
    }

    pub fn secret_key(
        &self,
        keyring: &crate::crypto::Keyring,
    ) -> Result<Option<secrecy::SecretString>, crate::crypto::CryptoError> {
        self.secret_key_enc.as_deref().map(|c| keyring.decrypt(c, self.secret_context(fields::SECRET_KEY))).transpose()
    }

    pub fn webhook_secret(
        &self,
        keyring: &crate::crypto::Keyring,
    ) -> Result<Option<secrecy::SecretString>, crate::crypto::CryptoError> {
        self.webhook_secret_enc
            .as_deref()
            .map(|c| keyring.decrypt(c, self.secret_context(fields::WEBHOOK_SECRET)))
            .transpose()
    }

    /// The replaced webhook secret, while its grace period lasts (it still verifies).
    pub fn previous_webhook_secret(
        &self,
        keyring: &crate::crypto::Keyring,
    ) -> Result<Option<(secrecy::SecretString, DateTime<Utc>)>, crate::crypto::CryptoError> {
        match (&self.previous_webhook_secret_enc, self.previous_webhook_secret_until) {
            (Some(c), Some(until)) => {
                Ok(Some((keyring.decrypt(c, self.secret_context(fields::PREVIOUS_WEBHOOK_SECRET))?, until)))
            }
            _ => Ok(None),
        }
    }
}
