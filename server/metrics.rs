//! Prometheus metrics on their own listener (`METRICS_ADDR`), never on the public one.
//! The recorder is process-wide (the `metrics` facade has one global recorder), installed
//! once; several in-process servers (tests) share it.
use bytes::Bytes;
use http_body_util::Full;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tokio::net::TcpListener;

use crate::lifecycle::Shutdown;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call; returns the handle that renders the metrics.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("capydb_auth_sync_webhook_duration_seconds".into()),
                    // 1 ms to 15 s: a delivery answered after 15 s is lost to Svix's timeout anyway.
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0],
                )
                .expect("static bucket list is non-empty")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("capydb_auth_sync_group_commit_deliveries".into()),
                    // Deliveries per project-database transaction: 1 (no company) up to a full batch.
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; metrics will not be exported");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "capydb_auth_sync_webhook_deliveries_total",
        "Webhook deliveries by provider and outcome"
    );
    metrics::describe_histogram!("capydb_auth_sync_webhook_duration_seconds", "Time to answer a webhook delivery");
    metrics::describe_histogram!(
        "capydb_auth_sync_group_commit_deliveries",
        "Deliveries committed together in one project-database transaction"
    );
    metrics::describe_counter!("capydb_auth_sync_backfill_users_total", "Users fetched from and written by backfills");
    metrics::describe_gauge!("capydb_auth_sync_backfills_running", "Backfill jobs running in this replica");
    metrics::describe_gauge!("capydb_auth_sync_inbox_deliveries", "Deliveries parked in the durable inbox now");
    metrics::describe_gauge!(
        "capydb_auth_sync_inbox_oldest_age_seconds",
        "Age of the oldest delivery parked in the durable inbox (0 when empty)"
    );
    metrics::describe_counter!(
        "capydb_auth_sync_clerk_throttled_total",
        "429 Too Many Requests answers received from the Clerk Backend API"
    );
    metrics::describe_gauge!("capydb_auth_sync_project_pools_open", "Project database connection pools open");
    metrics::describe_counter!(
        "capydb_auth_sync_control_store_errors_total",
        "Errors of the service's own control database, by what the service was doing and kind"
    );
    metrics::describe_counter!(
        "capydb_auth_sync_integration_cache_total",
        "Integration lookups of the delivery path: hit, miss (read from the control database) or negative"
    );
    metrics::describe_gauge!(
        "capydb_auth_sync_integration_live",
        "1 while the integration is configured with a webhook secret (live), 0 once it is not"
    );
    metrics::describe_gauge!(
        "capydb_auth_sync_integration_last_event_timestamp_seconds",
        "Unix time of the integration's last verified delivery (or of its configuration, before any)"
    );
    metrics::describe_counter!(
        "capydb_auth_sync_integration_webhooks_total",
        "Webhook deliveries of an integration by outcome, as counted by all replicas in the control database"
    );
    metrics::describe_gauge!(
        "capydb_auth_sync_integration_backfill_failed",
        "1 when the integration's last backfill failed and none is running"
    );
    // Counters without labels exist from the start, so `rate()` and `increase()` see their
    // first increment.
    metrics::counter!("capydb_auth_sync_clerk_throttled_total").increment(0);
}

/// Counts an error of the control database. `operation` names what the service was doing
/// (`api`, `counters_flush`, `inbox_park`, …): a fixed word, never request data.
pub fn control_store_error(operation: &'static str, e: &crate::store::StoreError) {
    metrics::counter!("capydb_auth_sync_control_store_errors_total", "operation" => operation, "kind" => e.kind())
        .increment(1);
}

/// Serves `GET /metrics` until the listeners close, with the same defences as every listener.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    limits: crate::listener::ListenerLimits,
    shutdown: Shutdown,
) {
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let handle = handle.clone();
        async move {
            let resp = if req.uri().path() == "/metrics" {
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(handle.render())))
            } else {
                http::Response::builder().status(404).body(Full::new(Bytes::from_static(b"not found")))
            };
            resp.expect("static response parts are valid")
        }
    };
    crate::listener::serve("metrics", listener, limits, handler, shutdown, std::time::Duration::from_secs(1)).await
}
