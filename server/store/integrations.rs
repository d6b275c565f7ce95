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
     secret_key_hint, database_target, created_at, updated_at";

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

    /// Inserts or replaces the row of (project_id, provider); `created_at` and `id` survive
    /// an update. The caller has already merged partial updates.
    pub async fn save_integration(&self, row: &IntegrationRow) -> Result<IntegrationRow, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "INSERT INTO capydb_auth_sync.integrations AS i ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now()) \
             ON CONFLICT (project_id, provider) DO UPDATE SET \
               database_url_enc = EXCLUDED.database_url_enc, secret_key_enc = EXCLUDED.secret_key_enc, \
               webhook_secret_enc = EXCLUDED.webhook_secret_enc, secret_key_hint = EXCLUDED.secret_key_hint, \
               database_target = EXCLUDED.database_target, updated_at = now() \
             RETURNING {COLUMNS}"
        );
        let r = c
            .query_one(
                &sql,
                &[
                    &row.id,
                    &row.project_id,
                    &row.provider.name(),
                    &row.database_url_enc,
                    &row.secret_key_enc,
                    &row.webhook_secret_enc,
                    &row.secret_key_hint,
                    &row.database_target,
                ],
            )
            .await?;
        let saved = IntegrationRow::from_row(&r)?;
        c.execute(
            "INSERT INTO capydb_auth_sync.webhook_stats (integration_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&saved.id],
        )
        .await?;
        Ok(saved)
    }

    /// Deletes the integration (and, by cascade, its counters and job history).
    pub async fn delete_integration(&self, id: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM capydb_auth_sync.integrations WHERE id = $1", &[&id]).await? == 1)
    }

    /// Replaces the ciphertexts of every integration in one transaction (`rotate-keys`).
    /// `reencrypt` maps a row to its new ciphertexts.
    pub async fn reencrypt_all<F>(&self, mut reencrypt: F) -> Result<usize, StoreError>
    where
        F: FnMut(&IntegrationRow) -> Result<(String, Option<String>, Option<String>), String>,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let sql = format!("SELECT {COLUMNS} FROM capydb_auth_sync.integrations ORDER BY id FOR UPDATE");
        let rows: Vec<IntegrationRow> =
            tx.query(&sql, &[]).await?.iter().map(IntegrationRow::from_row).collect::<Result<_, _>>()?;
        for row in &rows {
            let (db, sk, wh) = reencrypt(row).map_err(StoreError::Query)?;
            tx.execute(
                "UPDATE capydb_auth_sync.integrations SET database_url_enc = $2, secret_key_enc = $3, webhook_secret_enc = $4 WHERE id = $1",
                &[&row.id, &db, &sk, &wh],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// Field names bound into each ciphertext (SPEC §6).
pub mod fields {
    pub const DATABASE_URL: &str = "database_url";
    pub const SECRET_KEY: &str = "secret_key";
    pub const WEBHOOK_SECRET: &str = "webhook_signing_secret";
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
}
