//! One webhook delivery, HTTP side only: the integration first (404 before reading a byte of
//! body), the body within the limit (413), then the ingest service, whose outcome or error is
//! answered once here. A 2xx goes out only after the delivery is durable (applied, or parked).
//!
//! Each delivery runs in one `webhook_delivery` span (project, provider, the provider's
//! delivery id once verified, outcome, status), which every log line of the delivery
//! inherits, and ends with one `webhook delivery` line.
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::time::{Duration, Instant};
use tracing::field::Empty;
use tracing::Instrument as _;

use super::error::{json, WebhookError};
use crate::ingest::{Disposition, IngestOutcome, IngestRequest};
use crate::providers::ProviderKind;
use crate::state::AppState;

pub async fn deliver(
    state: &AppState,
    provider: ProviderKind,
    project_id: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let span = tracing::info_span!(
        "webhook_delivery",
        project_id = %loggable_project(project_id),
        provider = %provider,
        delivery_id = Empty,
        outcome = Empty,
        status = Empty,
    );
    respond(state, provider, project_id, req).instrument(span).await
}

async fn respond(
    state: &AppState,
    provider: ProviderKind,
    project_id: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let dry_run = req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "dry_run=true" || p == "dry_run=1"));
    let result =
        tokio::time::timeout(state.settings.webhook_timeout, process(state, provider, project_id, req, dry_run))
            .await
            .unwrap_or(Err(WebhookError::Timeout));
    let (response, label, event_type, error) = match result {
        Ok(outcome) => {
            let mut body = match outcome.disposition {
                Disposition::Applied => serde_json::json!({"status": "applied"}),
                Disposition::IgnoredStale => serde_json::json!({"status": "ignored", "reason": "stale"}),
                Disposition::IgnoredDuplicate => serde_json::json!({"status": "ignored", "reason": "duplicate"}),
                Disposition::IgnoredUnhandled => serde_json::json!({"status": "ignored", "reason": "unhandled_event"}),
                Disposition::Queued => serde_json::json!({"status": "queued"}),
            };
            // Log Stream records skipped as unusable; the rest of the batch was applied.
            if outcome.skipped > 0 {
                body["skipped"] = outcome.skipped.into();
            }
            if outcome.dry_run {
                body["dry_run"] = true.into();
            }
            let status = if outcome.disposition == Disposition::Queued { StatusCode::ACCEPTED } else { StatusCode::OK };
            (json(status, &body), disposition_label(&outcome), outcome.event_type, None)
        }
        Err(e) => {
            // What the sender is told (never a secret or a database's own text).
            let (label, error) = (e.outcome(), e.to_string());
            (e.into_response(), label, String::new(), Some(error))
        }
    };
    let elapsed = started.elapsed();
    metrics::counter!("capydb_auth_sync_webhook_deliveries_total", "provider" => provider.name(), "outcome" => label)
        .increment(1);
    metrics::histogram!("capydb_auth_sync_webhook_duration_seconds").record(elapsed.as_secs_f64());
    let span = tracing::Span::current();
    span.record("outcome", tracing::field::display(label));
    span.record("status", response.status().as_u16());
    // Outcome and status are on the span (above), which this line carries.
    tracing::info!(
        event_type = %event_type,
        dry_run,
        latency_ms = whole_ms(elapsed),
        error = error.as_deref(),
        "webhook delivery"
    );
    response
}

/// The project id as the URL gave it when it is a valid one; anything else is logged as
/// `(invalid)` (a path segment is the sender's text, not ours to echo).
fn loggable_project(project_id: &str) -> &str {
    if crate::domain::ProjectId::parse(project_id).is_ok() {
        project_id
    } else {
        "(invalid)"
    }
}

/// A latency in whole milliseconds, rounded to the nearest.
fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros().saturating_add(500) / 1000).unwrap_or(u64::MAX)
}

fn disposition_label(o: &IngestOutcome) -> &'static str {
    match o.disposition {
        Disposition::Applied => "applied",
        Disposition::IgnoredStale => "ignored_stale",
        Disposition::IgnoredDuplicate => "ignored_duplicate",
        Disposition::IgnoredUnhandled => "ignored_unhandled",
        Disposition::Queued => "queued",
    }
}

async fn process(
    state: &AppState,
    provider: ProviderKind,
    project_id: &str,
    req: Request<Incoming>,
    dry_run: bool,
) -> Result<IngestOutcome, WebhookError> {
    let integration = state.ingest.integration(provider, project_id).await?;
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body, state.settings.webhook_body_limit).await?;
    Ok(state.ingest.deliver(&integration, IngestRequest { headers: &parts.headers, body: &body, dry_run }).await?)
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
