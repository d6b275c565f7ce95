//! Logs and traces: the `tracing` subscriber the binary installs.
//!
//! - **JSON lines** (`CAPYDB_AUTH_SYNC_LOG_FORMAT=json`, the default outside dev mode): one
//!   object per line, the event's fields at the top level next to `timestamp`, `level`,
//!   `target` and `message`, its innermost span as `span` and every open span as `spans` —
//!   so a delivery's lines carry `webhook_delivery {project_id, provider, delivery_id,
//!   outcome}` and a backfill's carry `backfill {project_id, provider, job_id}` and
//!   `backfill_page {page, pass, from_ms, users}`.
//! - **Text** (the default in dev mode), with colours only when stderr is a terminal: a file or
//!   a collector never gets ANSI codes.
//! - The level comes from `RUST_LOG` (default `info`, chatty dependencies at `warn`).
//! - **OpenTelemetry**: built with the `otel` cargo feature and run with
//!   `CAPYDB_AUTH_SYNC_OTLP_ENDPOINT`, every span is also exported over OTLP/gRPC (batched, on
//!   a background thread; flushed by [`LogGuard::shutdown`]).
//!
//! Nothing logged carries a secret: fields are chosen where they are logged (ids, counts,
//! outcomes), never bodies, credentials or database URLs.
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event (a person at a terminal).
    Text,
    /// One JSON object per line (log collectors).
    Json,
}

impl LogFormat {
    /// The format asked for, else JSON in production and text in dev mode.
    pub fn resolve(explicit: Option<LogFormat>, dev: bool) -> LogFormat {
        explicit.unwrap_or(if dev { LogFormat::Text } else { LogFormat::Json })
    }
}

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,tower=warn,hyper=warn,h2=warn,tokio_postgres=warn";

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("CAPYDB_AUTH_SYNC_OTLP_ENDPOINT must be an http(s) URL")]
    BadEndpoint,
    #[error("cannot set up the OTLP exporter: {0}")]
    Otlp(String),
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// The formatting layer for `format`, writing through `writer` (colours only with `ansi`, and
/// only in text).
pub fn fmt_layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => {
            layer.json().flatten_event(true).with_current_span(true).with_span_list(true).with_ansi(false).boxed()
        }
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
    }
}

/// Keeps the OpenTelemetry pipeline (when there is one) until [`LogGuard::shutdown`].
#[must_use = "dropping the guard without shutdown() may lose the last spans"]
pub struct LogGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl LogGuard {
    /// Exports the spans still buffered and stops the exporter (blocks up to its timeout).
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                eprintln!("warning: OpenTelemetry export did not flush: {e}");
            }
        }
    }
}

/// Installs the process-wide subscriber: `format` lines on stderr, plus OTLP export of spans
/// to `otlp_endpoint` when the `otel` feature is built in. Call inside the Tokio runtime (the
/// exporter's connection lives there).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<LogGuard, LoggingError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let endpoint = otlp_endpoint.map(str::trim).filter(|e| !e.is_empty());
    if endpoint.is_some_and(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(LoggingError::BadEndpoint);
    }
    #[cfg(feature = "otel")]
    {
        let provider = endpoint.map(otel::provider).transpose()?;
        let otel_layer = provider.as_ref().map(otel::layer);
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer(format, std::io::stderr, ansi))
            .with(otel_layer)
            .try_init()
            .map_err(|_| LoggingError::AlreadyInstalled)?;
        if provider.is_some() {
            tracing::info!("exporting spans over OTLP");
        }
        Ok(LogGuard { provider })
    }
    #[cfg(not(feature = "otel"))]
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer(format, std::io::stderr, ansi))
            .try_init()
            .map_err(|_| LoggingError::AlreadyInstalled)?;
        if endpoint.is_some() {
            tracing::warn!(
                "CAPYDB_AUTH_SYNC_OTLP_ENDPOINT is set, but this build has no OpenTelemetry export \
                 (build with `--features otel`); spans are only logged"
            );
        }
        Ok(LogGuard {})
    }
}

/// The OTLP pipeline (feature `otel`): a batch exporter over gRPC (tonic), service name
/// `capydb-auth-sync`. The standard `OTEL_EXPORTER_OTLP_HEADERS` / `_TIMEOUT` variables apply.
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::registry::LookupSpan;

    use super::LoggingError;

    pub const SERVICE_NAME: &str = "capydb-auth-sync";

    /// Must run inside the Tokio runtime: the exporter's channel connects lazily from there.
    pub fn provider(endpoint: &str) -> Result<SdkTracerProvider, LoggingError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| LoggingError::Otlp(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(SERVICE_NAME).build();
        Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
    }

    pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Runs `f` with a subscriber of `format` writing into the returned capture.
    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(fmt_layer(format, move || writer.clone(), true));
        tracing::subscriber::with_default(subscriber, f);
        out.text()
    }

    fn a_delivery() {
        let span = tracing::info_span!(
            "webhook_delivery",
            project_id = "shop",
            provider = "clerk",
            delivery_id = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let _entered = span.enter();
        tracing::info!("before verification");
        span.record("delivery_id", "msg_2abc");
        span.record("outcome", "applied");
        tracing::info!(status = 200u16, latency_ms = 3u64, "webhook delivery");
    }

    #[test]
    fn production_defaults_to_json_and_dev_mode_to_text() {
        assert_eq!(LogFormat::resolve(None, false), LogFormat::Json);
        assert_eq!(LogFormat::resolve(None, true), LogFormat::Text);
        assert_eq!(LogFormat::resolve(Some(LogFormat::Text), false), LogFormat::Text);
        assert_eq!(LogFormat::resolve(Some(LogFormat::Json), true), LogFormat::Json);
    }

    #[test]
    fn json_lines_parse_and_carry_the_span_fields_recorded_later() {
        let text = capture(LogFormat::Json, a_delivery);
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let last = &lines[1];
        assert_eq!(last["message"], "webhook delivery");
        assert_eq!(last["status"], 200);
        assert_eq!(last["latency_ms"], 3);
        assert_eq!(last["span"]["name"], "webhook_delivery");
        assert_eq!(last["span"]["project_id"], "shop");
        assert_eq!(last["span"]["provider"], "clerk");
        assert_eq!(last["span"]["delivery_id"], "msg_2abc");
        assert_eq!(last["span"]["outcome"], "applied");
        assert_eq!(lines[0]["span"]["project_id"], "shop");
        assert!(lines[0]["span"].get("delivery_id").is_none(), "not known before verification: {text}");
        assert!(!text.contains('\u{1b}'), "no ANSI codes in JSON: {text}");
    }

    #[test]
    fn text_lines_name_the_span_and_its_fields() {
        let text = capture(LogFormat::Text, a_delivery);
        let last = text.lines().last().unwrap();
        for needle in ["webhook_delivery", "project_id", "shop", "delivery_id", "msg_2abc", "latency_ms", "3"] {
            assert!(last.contains(needle), "{needle:?} missing in {last}");
        }
    }

    /// A collector on loopback receives the spans with the fields recorded on them.
    #[cfg(feature = "otel")]
    mod otlp_export {
        use super::*;
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
            TraceService, TraceServiceServer,
        };
        use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
        use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

        #[derive(Clone, Default)]
        struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

        #[tonic::codegen::async_trait]
        impl TraceService for Collector {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                self.0.lock().unwrap().push(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn spans_reach_an_otlp_collector_with_the_fields_recorded_on_them() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let collector = Collector::default();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector.clone()))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            let provider = otel::provider(&format!("http://{addr}")).unwrap();
            let subscriber = tracing_subscriber::registry().with(otel::layer(&provider));
            tracing::subscriber::with_default(subscriber, a_delivery);
            // Shutdown exports what the batch holds (bounded by the exporter's timeout).
            tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().expect("flushed");
            server.abort();

            let requests = collector.0.lock().unwrap().clone();
            let spans: Vec<_> = requests
                .iter()
                .flat_map(|r| &r.resource_spans)
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .collect();
            let span = spans.iter().find(|s| s.name == "webhook_delivery").expect("the delivery span was exported");
            let attribute = |key: &str| {
                span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(v) => Some(v.clone()),
                    _ => None,
                })
            };
            assert_eq!(attribute("project_id").as_deref(), Some("shop"));
            assert_eq!(attribute("provider").as_deref(), Some("clerk"));
            assert_eq!(attribute("delivery_id").as_deref(), Some("msg_2abc"));
            assert_eq!(attribute("outcome").as_deref(), Some("applied"));
            let service = requests[0].resource_spans[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|a| a.key == "service.name");
            assert!(format!("{service:?}").contains("capydb-auth-sync"), "{service:?}");
        }
    }
}
