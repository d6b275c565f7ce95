//! The public HTTP listener: webhook deliveries (`/api/capydb/v1/integrations/{provider}/webhook/{project}`),
//! `/healthz` and `/readyz`. HTTP concerns only — limits, routing, status codes; the delivery
//! itself (integration, verification, parsing, writing) belongs to the `ingest` service.
mod delivery;
pub mod error;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::providers::ProviderKind;
use crate::state::AppState;
use error::{json, WebhookError};

const WEBHOOK_PREFIX: &str = "/api/capydb/v1/integrations/";

/// Serves the webhook listener until the listeners close (limits and draining:
/// `crate::listener`); `/readyz` answers 503 from the moment draining begins.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, grace: Duration) {
    let limits = state.settings.http_limits.clone();
    let shutdown = state.shutdown.clone();
    crate::listener::serve("webhooks", listener, limits, move |req| handle(state.clone(), req), shutdown, grace).await
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") if state.shutdown.is_draining() => {
            WebhookError::NotReady("draining: the server is shutting down").into_response()
        }
        (&Method::GET, "/readyz") if !state.ingest.ready() => {
            WebhookError::NotReady("starting: integrations are not loaded yet").into_response()
        }
        (&Method::GET, "/readyz") => match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
            Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Ok(Err(e)) => {
                crate::metrics::control_store_error("readiness", &e);
                tracing::warn!(error = %e, "readiness: control database unreachable");
                WebhookError::NotReady("control database unreachable").into_response()
            }
            Err(_) => WebhookError::NotReady("control database did not answer within 2 s").into_response(),
        },
        (_, "/healthz") | (_, "/readyz") => WebhookError::MethodNotAllowed.into_response(),
        _ => match parse_webhook_path(&path) {
            Some((provider, project_id)) => {
                if req.method() != Method::POST {
                    WebhookError::MethodNotAllowed.into_response()
                } else {
                    delivery::deliver(&state, provider, &project_id, req).await
                }
            }
            None => WebhookError::NoRoute.into_response(),
        },
    };
    response
}

/// `/api/capydb/v1/integrations/{segment}/webhook/{project}` → (provider, project).
/// An unknown provider segment is "no such route".
fn parse_webhook_path(path: &str) -> Option<(ProviderKind, String)> {
    let rest = path.strip_prefix(WEBHOOK_PREFIX)?;
    let mut parts = rest.trim_end_matches('/').split('/');
    let (segment, literal, project) = (parts.next()?, parts.next()?, parts.next()?);
    if literal != "webhook" || parts.next().is_some() || project.is_empty() {
        return None;
    }
    Some((ProviderKind::from_path_segment(segment)?, project.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_webhook_paths() {
        assert_eq!(
            parse_webhook_path("/api/capydb/v1/integrations/clerk/webhook/p1"),
            Some((ProviderKind::Clerk, "p1".into()))
        );
        assert_eq!(
            parse_webhook_path("/api/capydb/v1/integrations/better-auth/webhook/p1/"),
            Some((ProviderKind::BetterAuth, "p1".into()))
        );
        assert_eq!(parse_webhook_path("/api/capydb/v1/integrations/better_auth/webhook/p1"), None);
        assert_eq!(parse_webhook_path("/api/capydb/v1/integrations/clerk/webhook/"), None);
        assert_eq!(parse_webhook_path("/api/capydb/v1/integrations/clerk/webhook/p1/x"), None);
        assert_eq!(parse_webhook_path("/other"), None);
    }
}
