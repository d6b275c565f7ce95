//! One webhook delivery, in the order that keeps bad input harmless: route → integration
//! (404) → body within the limit (413) → verify on the raw bytes (401, the body is not parsed
//! before) → parse (400) → apply every change in one project-database transaction (503 when
//! the database is unreachable or slow, so the sender retries) → count → answer. A 2xx goes
//! out only after the commit.
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::time::Instant;

use super::error::{json, WebhookError};
use crate::app::AppState;
use crate::domain::ProjectId;
use crate::project_db::ProjectDbError;
use crate::providers::{self, Delivery, ProviderKind};
use crate::store::{IntegrationRow, StoreError, WebhookOutcome};
use crate::users::{MergeOutcome, UsersWriter};

pub async fn deliver(
    state: &AppState,
    provider: ProviderKind,
    project_id: String,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let delivery_id = header_str(&req, "svix-id").or_else(|| header_str(&req, "webhook-id"));
    let mut integration_id = None;
    let mut event_type = String::new();
    let mut skipped = 0;
    let result = tokio::time::timeout(
        state.settings.webhook_timeout,
        process(state, provider, &project_id, req, &mut integration_id, &mut event_type, &mut skipped),
    )
    .await
    .unwrap_or_else(|_| Err(WebhookError::Unavailable("the delivery took too long".into())));

    let (response, outcome_label, counted) = match result {
        Ok(outcome) => {
            let mut body = match outcome {
                WebhookOutcome::Applied => serde_json::json!({"status": "applied"}),
                WebhookOutcome::IgnoredStale => serde_json::json!({"status": "ignored", "reason": "stale"}),
                WebhookOutcome::IgnoredDuplicate => serde_json::json!({"status": "ignored", "reason": "duplicate"}),
                _ => serde_json::json!({"status": "ignored", "reason": "unhandled_event"}),
            };
            // Log Stream records skipped as unusable; the rest of the batch was applied.
            if skipped > 0 {
                body["skipped"] = skipped.into();
            }
            (json(StatusCode::OK, &body), outcome.as_str(), Some((outcome, None)))
        }
        Err(e) => {
            let counted = match &e {
                WebhookError::Unauthorized(_) => Some((WebhookOutcome::Rejected, Some(e.to_string()))),
                WebhookError::Malformed(_) => Some((WebhookOutcome::Malformed, Some(e.to_string()))),
                WebhookError::Unavailable(_) => Some((WebhookOutcome::Unavailable, Some(e.to_string()))),
                _ => None,
            };
            let label = e.outcome();
            (e.into_response(), label, counted)
        }
    };
    if let (Some(id), Some((outcome, error))) = (&integration_id, counted) {
        if let Err(e) = state.store.record_webhook(id, outcome, error.as_deref()).await {
            tracing::warn!(error = %e, "could not update webhook counters");
        }
    }
    let elapsed = started.elapsed();
    metrics::counter!("capydb_auth_sync_webhook_deliveries_total", "provider" => provider.name(), "outcome" => outcome_label)
        .increment(1);
    metrics::histogram!("capydb_auth_sync_webhook_duration_seconds").record(elapsed.as_secs_f64());
    tracing::info!(
        project_id = %project_id,
        provider = provider.name(),
        delivery_id = delivery_id.as_deref().unwrap_or("-"),
        event_type = %event_type,
        outcome = outcome_label,
        status = response.status().as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "webhook delivery"
    );
    response
}

async fn process(
    state: &AppState,
    provider: ProviderKind,
    project_id: &str,
    req: Request<Incoming>,
    integration_id: &mut Option<String>,
    event_type: &mut String,
    skipped: &mut usize,
) -> Result<WebhookOutcome, WebhookError> {
    let not_found =
        || WebhookError::NotFound(format!("no {provider} integration with a webhook secret for this project"));
    let project = ProjectId::parse(project_id).map_err(|_| not_found())?;
    let integration =
        state.store.get_integration(project.as_str(), provider).await.map_err(store_error)?.ok_or_else(not_found)?;
    let keyring = &state.settings.keyring;
    let secret = integration.webhook_secret(keyring).map_err(|e| internal(&integration, &e))?.ok_or_else(not_found)?;
    *integration_id = Some(integration.id.clone());

    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, state.settings.webhook_body_limit).await?;
    let now = chrono::Utc::now();
    {
        use secrecy::ExposeSecret;
        providers::verify(provider, secret.expose_secret(), &parts.headers, &body, now)?;
    }
    let delivery = providers::parse(provider, &body, now)?;
    *event_type = delivery.event_type.clone();
    *skipped = delivery.skipped;
    if delivery.unhandled {
        return Ok(WebhookOutcome::IgnoredUnhandled);
    }
    apply(state, &integration, &delivery).await
}

/// Applies every change of the delivery in one transaction.
async fn apply(
    state: &AppState,
    integration: &IntegrationRow,
    delivery: &Delivery,
) -> Result<WebhookOutcome, WebhookError> {
    let url = integration.database_url(&state.settings.keyring).map_err(|e| internal(integration, &e))?;
    let pool = state.pools.pool(&integration.id, &url).map_err(project_error)?;
    let mut client = pool.get().await.map_err(|e| project_error(e.into()))?;
    if let [change] = delivery.changes.as_slice() {
        // One change is one atomic statement: no explicit transaction, two round trips fewer.
        let outcome = UsersWriter::apply(&client, change).await.map_err(project_error)?;
        return Ok(summarise(&[outcome]));
    }
    let tx = client.transaction().await.map_err(|e| project_error(e.into()))?;
    let mut outcomes = Vec::with_capacity(delivery.changes.len());
    for change in &delivery.changes {
        outcomes.push(UsersWriter::apply(&tx, change).await.map_err(project_error)?);
    }
    tx.commit().await.map_err(|e| project_error(e.into()))?;
    Ok(summarise(&outcomes))
}

/// A delivery that changed anything counts as applied; otherwise stale beats duplicate.
fn summarise(outcomes: &[MergeOutcome]) -> WebhookOutcome {
    if outcomes.iter().any(|o| o.changed()) {
        WebhookOutcome::Applied
    } else if outcomes.iter().any(|o| matches!(o, MergeOutcome::Stale | MergeOutcome::UnknownUser)) {
        WebhookOutcome::IgnoredStale
    } else {
        WebhookOutcome::IgnoredDuplicate
    }
}

/// Reads the body, refusing more than `limit` bytes while reading (and up front when
/// Content-Length already says so).
async fn read_body(headers: &http::HeaderMap, body: Incoming, limit: usize) -> Result<Bytes, WebhookError> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(WebhookError::PayloadTooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(WebhookError::PayloadTooLarge(limit))
        }
        Err(_) => Err(WebhookError::BadBody),
    }
}

fn header_str<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(128).collect())
}

fn store_error(e: StoreError) -> WebhookError {
    match e {
        StoreError::Unavailable(m) => WebhookError::Unavailable(format!("control database unavailable: {m}")),
        other => {
            tracing::error!(error = %other, "control store error during a webhook delivery");
            WebhookError::Internal
        }
    }
}

fn project_error(e: ProjectDbError) -> WebhookError {
    match e {
        ProjectDbError::Unavailable(m) => WebhookError::Unavailable(format!("project database unavailable: {m}")),
        ProjectDbError::Closed => WebhookError::Unavailable(ProjectDbError::Closed.to_string()),
        other => {
            tracing::error!(error = %other, "project database error during a webhook delivery");
            WebhookError::Internal
        }
    }
}

fn internal(integration: &IntegrationRow, e: &dyn std::fmt::Display) -> WebhookError {
    tracing::error!(project_id = %integration.project_id, provider = %integration.provider, error = %e, "cannot use stored credentials");
    WebhookError::Internal
}
