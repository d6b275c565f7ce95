//! Configuration: every setting is a flag with a `CAPYDB_AUTH_SYNC_*` environment variable,
//! validated once at start-up into [`Settings`], which the rest of the service receives.
//! Outside dev mode the service refuses to start without master keys and admin tokens.
use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::Keyring;
use crate::project_db::ProjectDbSettings;

/// Where the webhook receiver URLs point outside dev mode (`CAPYDB_AUTH_SYNC_PUBLIC_BASE_URL`).
pub const DEFAULT_PUBLIC_BASE_URL: &str = "https://capydb.dev";

#[derive(Debug, Parser)]
#[command(name = "capydb-auth-sync", version, about = "Mirrors auth-provider users into capydb_auth.users")]
pub struct Cli {
    #[command(flatten)]
    pub opts: ServeOptions,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API and the webhook receiver (the default).
    Serve,
    /// Re-encrypt every stored secret with the active (first) master key.
    RotateKeys,
    /// Print a new random master key in `id:base64` form.
    GenerateKey {
        /// The key id to print.
        #[arg(long, default_value = "k1")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeOptions {
    /// Dev mode: local Postgres (or a throwaway cluster), generated key and token kept in
    /// --dev-dir, loopback only.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_DEV", global = true)]
    pub dev: bool,
    /// Where dev mode keeps its key, token and throwaway cluster.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_DEV_DIR", default_value = ".capydb-dev", global = true)]
    pub dev_dir: PathBuf,
    /// The service's own control database.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// gRPC listener (API, health, reflection).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Public webhook listener.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Prometheus metrics listener (`/metrics`); empty disables it.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Base of the webhook URLs shown to users [default: `https://capydb.dev`; in dev mode
    /// `http://HTTP_ADDR`, so the receiver URLs it hands out work on this machine].
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Master keys `id:base64key,…` (32-byte keys); the first encrypts, all decrypt.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_MASTER_KEYS", hide_env_values = true, global = true)]
    pub master_keys: Option<String>,
    /// Admin bearer tokens, comma-separated (several allow rotation).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_ADMIN_TOKENS", hide_env_values = true)]
    pub admin_tokens: Option<String>,
    /// Clerk Backend API base URL.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_CLERK_API_URL", default_value = "https://api.clerk.com")]
    pub clerk_api_url: String,
    /// Clerk requests per 10 s for development keys (sk_test_).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_CLERK_RATE_LIMIT_TEST", default_value_t = 100)]
    pub clerk_rate_limit_test: u32,
    /// Clerk requests per 10 s for production keys (sk_live_).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_CLERK_RATE_LIMIT_LIVE", default_value_t = 1000)]
    pub clerk_rate_limit_live: u32,
    /// Users per Clerk page (1–500).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_CLERK_PAGE_SIZE", default_value_t = 500)]
    pub clerk_page_size: u32,
    /// Timeout of one Clerk API request, in seconds.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_CLERK_TIMEOUT_SECS", default_value_t = 30)]
    pub clerk_timeout_secs: u64,
    /// Largest accepted webhook body, in bytes.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_WEBHOOK_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub webhook_body_limit: usize,
    /// Deadline of one webhook delivery, in milliseconds (Svix gives up after 15 s).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// Statement timeout on project databases, in milliseconds.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PROJECT_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub project_statement_timeout_ms: u64,
    /// Connect / pool wait timeout for project databases, in milliseconds.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PROJECT_CONNECT_TIMEOUT_MS", default_value_t = 3_000)]
    pub project_connect_timeout_ms: u64,
    /// Connections per project database pool.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PROJECT_POOL_SIZE", default_value_t = 4)]
    pub project_pool_size: usize,
    /// Project pools kept open at once (least recently used are closed beyond this).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PROJECT_MAX_POOLS", default_value_t = 256)]
    pub project_max_pools: usize,
    /// Connections to the control database.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_CONTROL_POOL_SIZE", default_value_t = 16)]
    pub control_pool_size: usize,
    /// Backfill lease length in seconds; a crashed replica's job resumes after this.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_BACKFILL_LEASE_SECS", default_value_t = 30)]
    pub backfill_lease_secs: u64,
    /// Backfills one replica runs at once; more stay queued (visible as queued in the status)
    /// until a slot frees up here or on another replica.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_BACKFILL_CONCURRENCY", default_value_t = 4)]
    pub backfill_concurrency: usize,
    /// Deadline of one gRPC request, in seconds (streams excepted).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_GRPC_TIMEOUT_SECS", default_value_t = 60)]
    pub grpc_timeout_secs: u64,
    /// gRPC requests served at once.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_GRPC_CONCURRENCY", default_value_t = 256)]
    pub grpc_concurrency: usize,
    /// How long shutdown waits for in-flight work, in seconds.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, keep serving this many seconds with health NOT_SERVING and /readyz 503, so
    /// load balancers move traffic away before the listeners close.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_SHUTDOWN_DRAIN_SECS", default_value_t = 0)]
    pub shutdown_drain_secs: u64,
    /// After ConfigureIntegration replaces a webhook secret, the previous one keeps verifying
    /// for this many seconds (Svix does the same on its own rotation).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_WEBHOOK_SECRET_GRACE_SECS", default_value_t = 86_400)]
    pub webhook_secret_grace_secs: u64,
    /// Open connections the webhook listener (and the metrics listener) keeps at most; beyond,
    /// new connections wait in the backlog.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// A connection must complete a request's headers within this many milliseconds of
    /// connecting (and each later request's headers within it), or it is closed.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_HTTP_HEADER_TIMEOUT_MS", default_value_t = 5_000)]
    pub http_header_timeout_ms: u64,
    /// A connection with no request in flight for this many seconds is closed.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// How long a webhook delivery waits for its project database's commit before it is
    /// parked in the durable inbox and answered 202, in milliseconds.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PROJECT_APPLY_TIMEOUT_MS", default_value_t = 4_000)]
    pub project_apply_timeout_ms: u64,
    /// Deliveries parked per project at most while its database is unavailable (beyond: 503).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_INBOX_MAX_PER_PROJECT", default_value_t = 10_000)]
    pub inbox_max_per_project: i64,
    /// How long a group commit waits for more deliveries when the previous one had company,
    /// in microseconds (0: take only what is already queued).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_BATCH_LINGER_US", default_value_t = 0)]
    pub batch_linger_us: u64,
    /// Group commits of one project database in flight at once (at most the pool's size).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_BATCH_LANES", default_value_t = 3)]
    pub batch_lanes: usize,
    /// Project database destinations allowed even where the default or DATABASE_DENY refuses
    /// them: CIDRs, IPs, host names (as written in the URL) or `unix`, comma-separated.
    /// Outside dev mode loopback, link-local, unspecified and Unix sockets are refused.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_DATABASE_ALLOW", default_value = "")]
    pub database_allow: String,
    /// Project database destinations refused: CIDRs or IPs, comma-separated (`0.0.0.0/0,::/0`
    /// makes DATABASE_ALLOW the only destinations permitted).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_DATABASE_DENY", default_value = "")]
    pub database_deny: String,
    /// PEM certificate chain of the gRPC listener; with GRPC_TLS_KEY it serves TLS only.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC listener.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): gRPC clients must present a certificate signed by one (mTLS).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_GRPC_TLS_CLIENT_CA")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// Log format on stderr [default: json; text in dev mode]. Level via RUST_LOG (default
    /// info).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<crate::logging::LogFormat>,
    /// OpenTelemetry collector (OTLP/gRPC, e.g. `http://127.0.0.1:4317`) to export spans to;
    /// needs a build with the `otel` cargo feature.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_OTLP_ENDPOINT", hide_env_values = true, global = true)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Clerk API client settings.
#[derive(Debug, Clone)]
pub struct ClerkSettings {
    pub api_url: String,
    pub timeout: Duration,
    pub rate_limit_test: u32,
    pub rate_limit_live: u32,
    pub rate_window: Duration,
    pub page_size: u32,
    /// Base delay of the exponential backoff on 5xx and timeouts.
    pub retry_base: Duration,
    /// Attempts per request before the job fails.
    pub max_attempts: u32,
}

/// Backfill runner settings.
#[derive(Debug, Clone)]
pub struct BackfillSettings {
    pub lease_ttl: Duration,
    /// How often a replica looks for queued jobs and expired leases.
    pub poll_interval: Duration,
    /// How often WatchBackfill reads the job.
    pub watch_interval: Duration,
    /// Backfills this replica runs at once.
    pub concurrency: usize,
}

/// Everything the running service needs, validated.
#[derive(Clone)]
pub struct Settings {
    pub control_database_url: SecretString,
    pub public_base_url: String,
    pub keyring: Arc<Keyring>,
    pub admin_tokens: Vec<SecretString>,
    pub clerk: ClerkSettings,
    pub backfill: BackfillSettings,
    pub project_db: ProjectDbSettings,
    pub ingest: crate::ingest::IngestSettings,
    /// How long a replaced webhook secret keeps verifying.
    pub webhook_secret_grace: Duration,
    /// Defences of the HTTP listeners.
    pub http_limits: crate::listener::ListenerLimits,
    pub webhook_body_limit: usize,
    pub webhook_timeout: Duration,
    pub grpc_timeout: Duration,
    pub grpc_concurrency: usize,
    pub control_pool_size: usize,
    pub shutdown_grace: Duration,
    /// Time between "draining" (health NOT_SERVING) and closing the listeners.
    pub shutdown_drain: Duration,
    /// Identifies this replica in backfill leases.
    pub instance_id: String,
    /// TLS (and mTLS) of the gRPC listener; `None` serves plaintext.
    pub grpc_tls: Option<GrpcTlsSettings>,
}

/// The gRPC listener's TLS material, read at start-up (PEM).
#[derive(Clone)]
pub struct GrpcTlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: SecretString,
    /// Clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl GrpcTlsSettings {
    /// Reads the files named by GRPC_TLS_CERT / _KEY / _CLIENT_CA (all unset: plaintext).
    pub fn from_files(
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
        client_ca: Option<&std::path::Path>,
    ) -> Result<Option<Self>, ConfigError> {
        let read = |name: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| invalid(format!("{name}: cannot read {}: {e}", path.display())))
        };
        match (cert, key) {
            (None, None) if client_ca.is_none() => Ok(None),
            (Some(cert), Some(key)) => {
                let key_pem = String::from_utf8(read("CAPYDB_AUTH_SYNC_GRPC_TLS_KEY", key)?)
                    .map_err(|_| invalid("CAPYDB_AUTH_SYNC_GRPC_TLS_KEY is not a PEM file"))?;
                Ok(Some(GrpcTlsSettings {
                    cert_pem: read("CAPYDB_AUTH_SYNC_GRPC_TLS_CERT", cert)?,
                    key_pem: SecretString::from(key_pem),
                    client_ca_pem: client_ca.map(|p| read("CAPYDB_AUTH_SYNC_GRPC_TLS_CLIENT_CA", p)).transpose()?,
                }))
            }
            _ => Err(invalid(
                "CAPYDB_AUTH_SYNC_GRPC_TLS_CERT and CAPYDB_AUTH_SYNC_GRPC_TLS_KEY go together (GRPC_TLS_CLIENT_CA needs both)",
            )),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("public_base_url", &self.public_base_url)
            .field("keyring", &self.keyring)
            .field("admin_tokens", &format!("{} token(s)", self.admin_tokens.len()))
            .field("clerk", &self.clerk)
            .field("backfill", &self.backfill)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings with every default, for the given control database, keyring and tokens.
    pub fn new(control_database_url: SecretString, keyring: Keyring, admin_tokens: Vec<SecretString>) -> Self {
        Settings {
            control_database_url,
            public_base_url: DEFAULT_PUBLIC_BASE_URL.into(),
            keyring: Arc::new(keyring),
            admin_tokens,
            clerk: ClerkSettings {
                api_url: "https://api.clerk.com".into(),
                timeout: Duration::from_secs(30),
                rate_limit_test: 100,
                rate_limit_live: 1000,
                rate_window: Duration::from_secs(10),
                page_size: 500,
                retry_base: Duration::from_millis(500),
                max_attempts: 8,
            },
            backfill: BackfillSettings {
                lease_ttl: Duration::from_secs(30),
                poll_interval: Duration::from_secs(5),
                watch_interval: Duration::from_millis(500),
                concurrency: 4,
            },
            project_db: ProjectDbSettings::default(),
            ingest: crate::ingest::IngestSettings::default(),
            http_limits: crate::listener::ListenerLimits::default(),
            webhook_secret_grace: Duration::from_secs(86_400),
            webhook_body_limit: 1024 * 1024,
            webhook_timeout: Duration::from_secs(10),
            grpc_timeout: Duration::from_secs(60),
            grpc_concurrency: 256,
            control_pool_size: 16,
            shutdown_grace: Duration::from_secs(20),
            shutdown_drain: Duration::ZERO,
            instance_id: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
            grpc_tls: None,
        }
    }

    /// Validates flags/env (dev mode fills the control database, key and token first).
    pub fn from_options(o: &ServeOptions, dev: Option<&DevDefaults>) -> Result<Self, ConfigError> {
        let url = o.database_url.clone().or_else(|| dev.map(|d| d.database_url.clone())).ok_or_else(|| {
            invalid("no control database: set CAPYDB_AUTH_SYNC_DATABASE_URL (or --database-url), or run with --dev")
        })?;
        let keys = o
            .master_keys
            .clone()
            .or_else(|| dev.map(|d| d.master_keys.expose_secret().to_string()))
            .ok_or_else(|| {
                invalid("no master key: set CAPYDB_AUTH_SYNC_MASTER_KEYS to `id:base64key` (make one with `capydb-auth-sync generate-key`), or run with --dev")
            })?;
        let keyring = Keyring::parse(&SecretString::from(keys))
            .map_err(|e| invalid(format!("CAPYDB_AUTH_SYNC_MASTER_KEYS: {e}")))?;
        let tokens_raw =
            o.admin_tokens.clone().or_else(|| dev.map(|d| d.admin_token.expose_secret().to_string())).ok_or_else(
                || invalid("no admin token: set CAPYDB_AUTH_SYNC_ADMIN_TOKENS (comma-separated), or run with --dev"),
            )?;
        let tokens: Vec<SecretString> = tokens_raw
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_string()))
            .collect();
        if tokens.is_empty() {
            return Err(invalid("CAPYDB_AUTH_SYNC_ADMIN_TOKENS holds no token"));
        }
        if tokens.iter().any(|t| t.expose_secret().len() < 16) {
            return Err(invalid("every admin token must be at least 16 characters"));
        }
        if !(1..=500).contains(&o.clerk_page_size) {
            return Err(invalid("CAPYDB_AUTH_SYNC_CLERK_PAGE_SIZE must be 1–500 (Clerk ignores larger limits)"));
        }
        if o.clerk_rate_limit_test == 0 || o.clerk_rate_limit_live == 0 {
            return Err(invalid("Clerk rate limits must be positive"));
        }
        let public_base_url = match (&o.public_base_url, dev) {
            (Some(url), _) => url.clone(),
            (None, Some(_)) => format!("http://{}", o.http_addr),
            (None, None) => DEFAULT_PUBLIC_BASE_URL.to_string(),
        };
        for (name, value) in [
            ("CAPYDB_AUTH_SYNC_PUBLIC_BASE_URL", &public_base_url),
            ("CAPYDB_AUTH_SYNC_CLERK_API_URL", &o.clerk_api_url),
        ] {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(invalid(format!("{name} must be an http(s) URL")));
            }
        }
        if o.webhook_timeout_ms == 0 || o.webhook_timeout_ms > 14_000 {
            return Err(invalid("CAPYDB_AUTH_SYNC_WEBHOOK_TIMEOUT_MS must be 1–14000 (Svix gives up after 15 s)"));
        }
        let mut s = Settings::new(SecretString::from(url), keyring, tokens);
        s.public_base_url = public_base_url.trim_end_matches('/').to_string();
        s.clerk.api_url = o.clerk_api_url.trim_end_matches('/').to_string();
        s.clerk.rate_limit_test = o.clerk_rate_limit_test;
        s.clerk.rate_limit_live = o.clerk_rate_limit_live;
        s.clerk.page_size = o.clerk_page_size;
        s.clerk.timeout = Duration::from_secs(o.clerk_timeout_secs.max(1));
        s.webhook_body_limit = o.webhook_body_limit;
        s.webhook_timeout = Duration::from_millis(o.webhook_timeout_ms);
        s.project_db = ProjectDbSettings {
            pool_size: o.project_pool_size.max(1),
            max_pools: o.project_max_pools.max(1),
            connect_timeout: Duration::from_millis(o.project_connect_timeout_ms.max(100)),
            statement_timeout: Duration::from_millis(o.project_statement_timeout_ms.max(100)),
            outbound: Arc::new(crate::outbound::OutboundPolicy {
                allow_local: dev.is_some(),
                allow: crate::outbound::OutboundPolicy::parse_allow(&o.database_allow)
                    .map_err(|e| invalid(format!("CAPYDB_AUTH_SYNC_DATABASE_ALLOW: {e}")))?,
                deny: crate::outbound::OutboundPolicy::parse_deny(&o.database_deny)
                    .map_err(|e| invalid(format!("CAPYDB_AUTH_SYNC_DATABASE_DENY: {e}")))?,
            }),
        };
        s.grpc_tls = GrpcTlsSettings::from_files(
            o.grpc_tls_cert.as_deref(),
            o.grpc_tls_key.as_deref(),
            o.grpc_tls_client_ca.as_deref(),
        )?;
        s.control_pool_size = o.control_pool_size.max(2);
        if o.project_apply_timeout_ms == 0 || o.project_apply_timeout_ms >= o.webhook_timeout_ms {
            return Err(invalid(
                "CAPYDB_AUTH_SYNC_PROJECT_APPLY_TIMEOUT_MS must be positive and below CAPYDB_AUTH_SYNC_WEBHOOK_TIMEOUT_MS (parking needs the rest)",
            ));
        }
        if o.inbox_max_per_project < 1 {
            return Err(invalid("CAPYDB_AUTH_SYNC_INBOX_MAX_PER_PROJECT must be at least 1"));
        }
        s.ingest.apply_timeout = Duration::from_millis(o.project_apply_timeout_ms);
        s.webhook_secret_grace = Duration::from_secs(o.webhook_secret_grace_secs);
        s.http_limits.max_connections = o.http_max_connections.max(1);
        s.http_limits.header_timeout = Duration::from_millis(o.http_header_timeout_ms.max(100));
        s.http_limits.idle_timeout = Duration::from_secs(o.http_idle_timeout_secs.max(1));
        s.ingest.inbox_max_per_project = o.inbox_max_per_project;
        if o.batch_linger_us > 100_000 {
            return Err(invalid("CAPYDB_AUTH_SYNC_BATCH_LINGER_US must be at most 100000 (0.1 s)"));
        }
        s.ingest.batch.linger = Duration::from_micros(o.batch_linger_us);
        s.ingest.batch.lanes = o.batch_lanes.clamp(1, o.project_pool_size.max(1));
        s.backfill.lease_ttl = Duration::from_secs(o.backfill_lease_secs.max(2));
        s.backfill.concurrency = o.backfill_concurrency.max(1);
        s.grpc_timeout = Duration::from_secs(o.grpc_timeout_secs.max(1));
        s.grpc_concurrency = o.grpc_concurrency.max(1);
        s.shutdown_grace = Duration::from_secs(o.shutdown_grace_secs);
        s.shutdown_drain = Duration::from_secs(o.shutdown_drain_secs);
        Ok(s)
    }
}

/// What dev mode supplies when nothing is configured.
pub struct DevDefaults {
    pub database_url: String,
    pub master_keys: SecretString,
    pub admin_token: SecretString,
}

/// Parses `METRICS_ADDR` (empty = disabled).
pub fn metrics_addr(o: &ServeOptions) -> Result<Option<SocketAddr>, ConfigError> {
    if o.metrics_addr.trim().is_empty() {
        return Ok(None);
    }
    o.metrics_addr.parse().map(Some).map_err(|_| invalid("CAPYDB_AUTH_SYNC_METRICS_ADDR must be host:port"))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "replica".into())
}

#[cfg(test)]
mod public_base_url_tests {
    use super::*;
    use base64::Engine as _;

    fn settings(args: &[&str], dev: bool) -> Settings {
        let keys = format!("k1:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        let defaults = DevDefaults {
            database_url: "postgres://127.0.0.1/control".into(),
            master_keys: SecretString::from(keys),
            admin_token: SecretString::from("dev-token-0123456789".to_string()),
        };
        let cli = Cli::try_parse_from(args).unwrap();
        Settings::from_options(&cli.opts, Some(&defaults).filter(|_| dev)).unwrap()
    }

    #[test]
    fn dev_mode_hands_out_receiver_urls_on_its_own_http_address() {
        assert_eq!(settings(&["x", "--dev"], true).public_base_url, "http://127.0.0.1:8080");
        assert_eq!(
            settings(&["x", "--dev", "--http-addr", "127.0.0.1:9999"], true).public_base_url,
            "http://127.0.0.1:9999"
        );
        let explicit = settings(&["x", "--dev", "--public-base-url", "https://hooks.example.com/"], true);
        assert_eq!(explicit.public_base_url, "https://hooks.example.com");
    }
}

#[cfg(test)]
mod outbound_and_tls_tests {
    use super::*;
    use base64::Engine as _;

    fn settings(args: &[&str], dev: bool) -> Result<Settings, ConfigError> {
        let keys = format!("k1:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        let defaults = DevDefaults {
            database_url: "postgres://127.0.0.1/control".into(),
            master_keys: SecretString::from(keys.clone()),
            admin_token: SecretString::from("dev-token-0123456789".to_string()),
        };
        let mut all = vec!["x", "--database-url", "postgres://h/c", "--master-keys", &keys];
        all.extend(["--admin-tokens", "admin-token-0123456789"]);
        all.extend(args);
        let cli = Cli::try_parse_from(all).unwrap();
        Settings::from_options(&cli.opts, Some(&defaults).filter(|_| dev))
    }

    #[test]
    fn dev_mode_allows_local_databases_and_production_lists_its_exceptions() {
        assert!(settings(&[], true).unwrap().project_db.outbound.allow_local);
        let prod = settings(&["--database-allow", "127.0.0.1/32, db.internal", "--database-deny", "10.0.0.0/8"], false)
            .unwrap();
        assert!(!prod.project_db.outbound.allow_local);
        assert_eq!(prod.project_db.outbound.allow.len(), 2);
        assert_eq!(prod.project_db.outbound.deny.len(), 1);
        let err = settings(&["--database-deny", "db.internal"], false).unwrap_err().to_string();
        assert!(err.contains("CAPYDB_AUTH_SYNC_DATABASE_DENY"), "{err}");
    }

    #[test]
    fn grpc_tls_needs_a_certificate_and_a_key_together() {
        assert!(settings(&[], false).unwrap().grpc_tls.is_none());
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "cert").unwrap();
        std::fs::write(&key, "key").unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let err = settings(&["--grpc-tls-cert", cert], false).unwrap_err().to_string();
        assert!(err.contains("GRPC_TLS_KEY"), "{err}");
        let err = settings(&["--grpc-tls-client-ca", cert], false).unwrap_err().to_string();
        assert!(err.contains("GRPC_TLS_CLIENT_CA"), "{err}");
        let tls = settings(&["--grpc-tls-cert", cert, "--grpc-tls-key", key, "--grpc-tls-client-ca", cert], false)
            .unwrap()
            .grpc_tls
            .expect("TLS configured");
        assert_eq!(tls.cert_pem, b"cert");
        assert_eq!(tls.client_ca_pem.as_deref(), Some(&b"cert"[..]));
        let err = settings(&["--grpc-tls-cert", "/nonexistent.pem", "--grpc-tls-key", key], false).unwrap_err();
        assert!(err.to_string().contains("cannot read /nonexistent.pem"), "{err}");
    }
}
