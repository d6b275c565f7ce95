//! The integration lifecycle behind the gRPC API: configure (validate, create the users
//! table, check the Clerk key, encrypt, store, start the first backfill), resolve, list,
//! delete, status. Protocol-free: the gRPC layer maps these types to and from protobuf.
use secrecy::{ExposeSecret, SecretString};

use crate::backfill::ClerkApiError;
use crate::domain::{ClerkSecretKey, FieldViolation, ProjectId, WebhookSecret};
use crate::project_db::{ProjectDbError, ProjectDbTarget};
use crate::providers::ProviderKind;
use crate::state::AppState;
use crate::store::integrations::fields;
use crate::store::{
    InboxBacklog, IntegrationRow, JobRow, JobState, RecentError, StoreError, WebhookCounts, WebhookStatsRow,
    RECENT_ERRORS,
};
use crate::users::schema::{ensure_users_table, SchemaError};

/// Errors of the control API, mapped once to `tonic::Status` in `grpc::error`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// A concurrent change won; the caller may send the request again.
    #[error("{0}")]
    Aborted(String),
    /// Logged with context; answered opaquely.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        crate::metrics::control_store_error("api", &e);
        match e {
            // The driver's text (host names, roles) stays in the log; callers learn what to do.
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "control database unavailable");
                ApiError::Unavailable("the service's control database is unavailable; retry shortly".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::crypto::CryptoError> for ApiError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        ApiError::Internal(format!("stored credentials: {e}"))
    }
}

impl From<ProjectDbError> for ApiError {
    fn from(e: ProjectDbError) -> Self {
        match e {
            ProjectDbError::InvalidUrl(m) => ApiError::InvalidArgument(vec![FieldViolation::new("database_url", m)]),
            ProjectDbError::Unavailable(m) => ApiError::Unavailable(format!("project database unreachable: {m}")),
            ProjectDbError::Conflict(m) => ApiError::Unavailable(format!("project database busy: {m}; retry")),
            ProjectDbError::Closed => ApiError::Unavailable(ProjectDbError::Closed.to_string()),
            ProjectDbError::Query(m) => ApiError::FailedPrecondition(format!("project database refused: {m}")),
        }
    }
}

impl From<SchemaError> for ApiError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::WrongShape(m) => ApiError::FailedPrecondition(format!(
                "capydb_auth.users already exists with a different shape ({m}); rename or drop it, then configure again"
            )),
            SchemaError::Db(e) => e.into(),
        }
    }
}

/// A ConfigureIntegration request after protocol decoding; empty strings mean "keep".
pub struct ConfigureInput {
    pub project_id: String,
    pub provider: Option<ProviderKind>,
    pub database_url: String,
    pub secret_key: String,
    pub webhook_secret: String,
}

/// Everything GetSyncStatus reports.
pub struct StatusReport {
    /// When the report was put together (lag and ages are measured to it).
    pub generated_at: chrono::DateTime<chrono::Utc>,
    pub integration: IntegrationRow,
    pub current: Option<JobRow>,
    pub last: Option<JobRow>,
    pub webhooks: WebhookStatsRow,
    /// Deliveries of the last hour, per outcome.
    pub last_hour: WebhookCounts,
    /// The newest errors (authenticated deliveries, a failed last backfill), newest first.
    pub recent_errors: Vec<RecentError>,
    /// Deliveries parked in the durable inbox.
    pub inbox: InboxBacklog,
    pub users_total: i64,
    pub users_deleted: i64,
    pub database_error: Option<String>,
}

fn violation(field: &'static str, msg: &str) -> ApiError {
    ApiError::InvalidArgument(vec![FieldViolation::new(field, msg)])
}

/// Creates or updates an integration. See the module docs for the steps.
pub async fn configure(state: &AppState, input: ConfigureInput) -> Result<IntegrationRow, ApiError> {
    let mut violations = Vec::new();
    let project = ProjectId::parse(&input.project_id).map_err(|v| violations.push(v)).ok();
    let provider = input.provider;
    if provider.is_none() {
        let names: Vec<&str> = ProviderKind::ALL.iter().map(|p| p.proto().as_str_name()).collect();
        violations.push(FieldViolation::new("provider", format!("must be one of {}", names.join(", "))));
    }
    let target = if input.database_url.is_empty() {
        None
    } else {
        match ProjectDbTarget::parse(&SecretString::from(input.database_url.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                violations.push(FieldViolation::new("database_url", e.to_string()));
                None
            }
        }
    };
    if let Some(t) = &target {
        // The outbound policy (no loopback, link-local or Unix sockets outside dev mode unless
        // allowed); checked again on every connection, see `outbound`.
        if let Err(refusal) = state.settings.project_db.outbound.destination(&t.config()).await {
            violations.push(FieldViolation::new("database_url", refusal.to_string()));
        }
    }
    let secret_key = match (provider, input.secret_key.is_empty()) {
        (_, true) => None,
        (Some(ProviderKind::Clerk), false) => {
            ClerkSecretKey::parse(&input.secret_key).map_err(|v| violations.push(v)).ok()
        }
        (Some(p), false) => {
            violations.push(FieldViolation::new(
                "credentials.secret_key",
                format!("{p} is webhook-only and takes no secret key; set credentials.webhook_signing_secret"),
            ));
            None
        }
        (None, false) => None,
    };
    let webhook_secret = match (provider, input.webhook_secret.is_empty()) {
        (Some(p), false) => WebhookSecret::parse(p, &input.webhook_secret).map_err(|v| violations.push(v)).ok(),
        _ => None,
    };
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument(violations));
    }
    let (project, provider) = (project.expect("validated"), provider.expect("validated"));
    // Optimistic: read, merge, write only if nobody wrote in between; else read again and
    // merge again, so concurrent Configure calls (and `rotate-keys`) both take effect.
    let mut attempt = 0;
    let (existing, saved) = loop {
        attempt += 1;
        let existing = state.store.get_integration(project.as_str(), provider).await?;
        let row = merge(
            state,
            &input,
            &project,
            provider,
            existing.as_ref(),
            target.as_ref(),
            secret_key.as_ref(),
            webhook_secret.as_ref(),
        )
        .await?;
        if let Some(saved) = state.store.save_integration(&row).await? {
            break (existing, saved);
        }
        if attempt == 3 {
            return Err(ApiError::Aborted(
                "the integration was changed by several calls at once; send the request again".into(),
            ));
        }
        tracing::debug!(project_id = %project.as_str(), attempt, "integration changed meanwhile; merging again");
    };
    state.ingest.integration_changed(&saved.id).await;
    let is_new = existing.is_none();
    let keyring = &state.settings.keyring;
    tracing::info!(project_id = %saved.project_id, provider = %saved.provider, created = is_new, "integration configured");

    // A new Clerk key or a new database starts a backfill: the initial fill, or a re-fill from
    // the new instance into the new table. A backfill still running on the old ones is
    // cancelled first (its runner stops at its next checkpoint).
    let key_changed = secret_key.is_some()
        && existing
            .as_ref()
            .and_then(|e| e.secret_key(keyring).ok().flatten())
            .map(|k| k.expose_secret() != input.secret_key)
            != Some(false);
    let url_changed = target.is_some()
        && existing
            .as_ref()
            .and_then(|e| e.database_url(keyring).ok())
            .map(|u| u.expose_secret() != input.database_url)
            != Some(false);
    let source_changed = key_changed || url_changed;
    if provider.supports_backfill() && saved.secret_key_enc.is_some() && source_changed {
        if !is_new {
            let reason = "cancelled: the secret key or the database changed; a new backfill replaces it";
            if let Some(old) = state.store.cancel_active_job(&saved.id, reason).await? {
                tracing::info!(project_id = %saved.project_id, job_id = %old, "running backfill superseded");
            }
        }
        let (job, created) = state.backfills.start(&saved).await?;
        tracing::info!(project_id = %saved.project_id, job_id = %job.id, created, "backfill queued");
    }
    Ok(saved)
}

/// The stored row (if any) with the request merged in: empty fields keep the stored value;
/// the first configuration needs the basics. Checks what the row will use and seals secrets.
#[allow(clippy::too_many_arguments)]
async fn merge(
    state: &AppState,
    input: &ConfigureInput,
    project: &ProjectId,
    provider: ProviderKind,
    existing: Option<&IntegrationRow>,
    target: Option<&ProjectDbTarget>,
    secret_key: Option<&ClerkSecretKey>,
    webhook_secret: Option<&WebhookSecret>,
) -> Result<IntegrationRow, ApiError> {
    let is_new = existing.is_none();
    if is_new {
        if target.is_none() {
            return Err(violation("database_url", "required when the integration is first configured"));
        }
        if provider.supports_backfill() {
            if secret_key.is_none() && webhook_secret.is_none() {
                return Err(violation(
                    "credentials.secret_key",
                    "a Clerk integration needs a secret key (backfill) and/or a webhook signing secret (live sync)",
                ));
            }
        } else if webhook_secret.is_none() {
            return Err(violation("credentials.webhook_signing_secret", "required for a webhook-only provider"));
        }
    }
    let keyring = &state.settings.keyring;
    let id =
        existing.as_ref().map(|e| e.id.clone()).unwrap_or_else(|| format!("int_{}", uuid::Uuid::new_v4().simple()));
    let mut row = existing.cloned().unwrap_or_else(|| IntegrationRow {
        id: id.clone(),
        project_id: project.as_str().to_string(),
        provider,
        database_url_enc: String::new(),
        secret_key_enc: None,
        webhook_secret_enc: None,
        secret_key_hint: None,
        database_target: String::new(),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        previous_webhook_secret_enc: None,
        previous_webhook_secret_until: None,
        version: 0,
    });
    let database_url = match target {
        Some(t) => {
            row.database_target = t.display.clone();
            let url = SecretString::from(input.database_url.clone());
            row.database_url_enc = keyring.encrypt(&url, row.secret_context(fields::DATABASE_URL));
            url
        }
        None => row.database_url(keyring)?,
    };

    let checked = check_and_seal(state, &mut row, &database_url, secret_key, webhook_secret).await;
    if checked.is_err() && is_new {
        // Nothing was stored: do not keep a pool for an integration that does not exist.
        state.pools.forget(&row.id);
    }
    checked?;
    Ok(row)
}

/// Checks what the integration will use — the project database (reachable, table created or
/// of the right shape) and the Clerk key — and seals the new secrets into `row`.
async fn check_and_seal(
    state: &AppState,
    row: &mut IntegrationRow,
    database_url: &SecretString,
    secret_key: Option<&ClerkSecretKey>,
    webhook_secret: Option<&WebhookSecret>,
) -> Result<(), ApiError> {
    let keyring = &state.settings.keyring;
    // The project database: reachable, and the table there (or created) with the SPEC shape.
    let pool = state.pools.pool(&row.id, database_url)?;
    let mut client = pool.get().await.map_err(ProjectDbError::from)?;
    ensure_users_table(&mut client).await?;
    drop(client);

    if let Some(key) = secret_key {
        state.clerk.client(key.secret().clone()).verify_key().await.map_err(|e| match e {
            ClerkApiError::KeyRejected { .. } => violation(
                "credentials.secret_key",
                "Clerk rejected this secret key (401); copy it again from the Clerk dashboard, API keys page",
            ),
            ClerkApiError::Unreachable { .. } => {
                ApiError::Unavailable(format!("could not check the secret key with Clerk: {e}"))
            }
            ClerkApiError::Api { .. } => ApiError::FailedPrecondition(format!("Clerk refused the key check: {e}")),
        })?;
        row.secret_key_enc = Some(keyring.encrypt(key.secret(), row.secret_context(fields::SECRET_KEY)));
        row.secret_key_hint = Some(key.hint());
    }
    if let Some(secret) = webhook_secret {
        // A replaced secret keeps verifying for the grace period (SPEC §8), so deliveries
        // signed before the rotation — and the sender's retries of them — are not lost.
        let old = row.webhook_secret(keyring)?;
        if let Some(old) = old.filter(|o| o.expose_secret() != secret.secret().expose_secret()) {
            row.previous_webhook_secret_enc =
                Some(keyring.encrypt(&old, row.secret_context(fields::PREVIOUS_WEBHOOK_SECRET)));
            row.previous_webhook_secret_until = Some(chrono::Utc::now() + state.settings.webhook_secret_grace);
        }
        row.webhook_secret_enc = Some(keyring.encrypt(secret.secret(), row.secret_context(fields::WEBHOOK_SECRET)));
    }
    Ok(())
}

/// Finds the integration a request names; `provider` may be omitted when the project has
/// exactly one.
pub async fn resolve(
    state: &AppState,
    project_id: &str,
    provider: Option<ProviderKind>,
) -> Result<IntegrationRow, ApiError> {
    let project = ProjectId::parse(project_id).map_err(|v| ApiError::InvalidArgument(vec![v]))?;
    match provider {
        Some(p) => state
            .store
            .get_integration(project.as_str(), p)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no {p} integration for project {}", project.as_str()))),
        None => {
            let mut all = state.store.list_integrations(Some(project.as_str())).await?;
            match all.len() {
                0 => Err(ApiError::NotFound(format!("no integration for project {}", project.as_str()))),
                1 => Ok(all.remove(0)),
                _ => Err(violation("provider", "the project has several integrations; name the provider")),
            }
        }
    }
}

pub async fn list(state: &AppState, project_id: &str) -> Result<Vec<IntegrationRow>, ApiError> {
    if project_id.is_empty() {
        return Ok(state.store.list_integrations(None).await?);
    }
    let project = ProjectId::parse(project_id).map_err(|v| ApiError::InvalidArgument(vec![v]))?;
    Ok(state.store.list_integrations(Some(project.as_str())).await?)
}

/// Forgets the credentials and stops syncing (a running backfill loses its lease and
/// stops); the table and its rows stay.
pub async fn delete(
    state: &AppState,
    project_id: &str,
    provider: Option<ProviderKind>,
) -> Result<IntegrationRow, ApiError> {
    let row = resolve(state, project_id, provider).await?;
    state.store.delete_integration(&row.id).await?;
    state.ingest.integration_changed(&row.id).await;
    state.pools.forget(&row.id);
    tracing::info!(project_id = %row.project_id, provider = %row.provider, "integration deleted");
    Ok(row)
}

/// Starts a backfill (or returns the active one).
pub async fn run_backfill(
    state: &AppState,
    project_id: &str,
    provider: Option<ProviderKind>,
) -> Result<JobRow, ApiError> {
    let row = resolve(state, project_id, provider).await?;
    let kind = row.provider;
    if !kind.supports_backfill() {
        return Err(ApiError::FailedPrecondition(format!(
            "{kind} is webhook-only: it has no API to backfill from; users arrive through webhooks"
        )));
    }
    if row.secret_key_enc.is_none() {
        return Err(ApiError::FailedPrecondition(
            "this Clerk integration has no secret key; add credentials.secret_key with ConfigureIntegration first"
                .into(),
        ));
    }
    Ok(state.backfills.start(&row).await?.0)
}

/// The job WatchBackfill follows: the active one, else the most recent.
pub async fn watched_job(
    state: &AppState,
    project_id: &str,
    provider: Option<ProviderKind>,
) -> Result<JobRow, ApiError> {
    let row = resolve(state, project_id, provider).await?;
    if let Some(job) = state.store.active_job(&row.id).await? {
        return Ok(job);
    }
    state
        .store
        .latest_job(&row.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {} has no backfill yet", row.project_id)))
}

pub async fn status(
    state: &AppState,
    project_id: &str,
    provider: Option<ProviderKind>,
) -> Result<StatusReport, ApiError> {
    let integration = resolve(state, project_id, provider).await?;
    let current = state.store.active_job(&integration.id).await?;
    let last = state.store.last_finished_job(&integration.id).await?;
    // What this replica has counted is shown at once; other replicas' within a second.
    state.ingest.flush_counters().await;
    let webhooks = state.store.webhook_stats(&integration.id).await?;
    let last_hour = state.store.webhook_last_hour(&integration.id).await?;
    let mut recent_errors = state.store.recent_webhook_errors(&integration.id).await?;
    if let Some(failed) = last.as_ref().filter(|j| j.state == JobState::Failed) {
        recent_errors.push(RecentError {
            at: failed.finished_at.unwrap_or(failed.updated_at),
            kind: "backfill".into(),
            message: failed.error.clone().unwrap_or_else(|| "the backfill failed".into()),
        });
        recent_errors.sort_by_key(|e| std::cmp::Reverse(e.at));
        recent_errors.truncate(RECENT_ERRORS);
    }
    let inbox = state.store.inbox_backlog_of(&integration.id).await?;
    let (users_total, users_deleted, database_error) = match count_users(state, &integration).await {
        Ok((t, d)) => (t, d, None),
        Err(e) => (0, 0, Some(e.to_string())),
    };
    Ok(StatusReport {
        generated_at: chrono::Utc::now(),
        integration,
        current,
        last,
        webhooks,
        last_hour,
        recent_errors,
        inbox,
        users_total,
        users_deleted,
        database_error,
    })
}

/// Rows (all, soft-deleted) of the integration's provider in its users table: the table
/// may hold other providers' users too (integrations of one project sharing a database).
async fn count_users(state: &AppState, row: &IntegrationRow) -> Result<(i64, i64), ApiError> {
    let url = row.database_url(&state.settings.keyring)?;
    let pool = state.pools.pool(&row.id, &url)?;
    let client = pool.get().await.map_err(ProjectDbError::from)?;
    let sql = format!(
        "SELECT count(*), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM capydb_auth.users WHERE {}",
        row.provider.table_rows()
    );
    let r = client.query_one(&sql, &[]).await.map_err(ProjectDbError::from)?;
    Ok((r.get(0), r.get(1)))
}

/// Re-encrypts every stored secret with the active key (`capydb-auth-sync rotate-keys`).
pub async fn rotate_keys(
    store: &crate::store::ControlStore,
    keyring: &crate::crypto::Keyring,
) -> Result<usize, ApiError> {
    let n = store
        .reencrypt_all(|row| {
            let db = row.database_url(keyring).map_err(|e| format!("{} ({}): {e}", row.project_id, row.provider))?;
            let sk = row.secret_key(keyring).map_err(|e| format!("{} ({}): {e}", row.project_id, row.provider))?;
            let wh = row.webhook_secret(keyring).map_err(|e| format!("{} ({}): {e}", row.project_id, row.provider))?;
            let previous = row
                .previous_webhook_secret(keyring)
                .map_err(|e| format!("{} ({}): {e}", row.project_id, row.provider))?;
            Ok(crate::store::Ciphertexts {
                database_url: keyring.encrypt(&db, row.secret_context(fields::DATABASE_URL)),
                secret_key: sk.map(|s| keyring.encrypt(&s, row.secret_context(fields::SECRET_KEY))),
                webhook_secret: wh.map(|s| keyring.encrypt(&s, row.secret_context(fields::WEBHOOK_SECRET))),
                previous_webhook_secret: previous
                    .map(|(s, _)| keyring.encrypt(&s, row.secret_context(fields::PREVIOUS_WEBHOOK_SECRET))),
            })
        })
        .await?;
    Ok(n)
}
