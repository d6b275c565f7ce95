//! Connections to customers' project databases: one small pool per integration, created
//! lazily, bounded in number (least recently used pools are evicted), with TLS per the URL's
//! `sslmode` (`disable`, `prefer` (default), `require`, `verify-ca`, `verify-full`).
//!
//! Every connection runs with a statement timeout so a slow project database turns into a
//! quick 503 for webhooks instead of a hung delivery.
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ProjectDbSettings {
    pub pool_size: usize,
    pub max_pools: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for ProjectDbSettings {
    fn default() -> Self {
        ProjectDbSettings {
            pool_size: 4,
            max_pools: 256,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectDbError {
    /// The URL is not a Postgres URL. The message never contains the URL itself.
    #[error("database_url is not a valid Postgres URL: {0}")]
    InvalidUrl(String),
    /// Unreachable, refused, timed out: nothing was applied and the caller may retry.
    #[error("project database unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error.
    #[error("project database error: {0}")]
    Query(String),
    /// The pool was closed under its user: the integration was deleted, or the pool evicted.
    #[error("project database pool closed: the integration was deleted, or its pool was evicted")]
    Closed,
}

impl From<tokio_postgres::Error> for ProjectDbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            // 57014 = query_canceled (statement timeout): treat as unavailable, retryable.
            Some(db) if db.code() == &tokio_postgres::error::SqlState::QUERY_CANCELED => {
                ProjectDbError::Unavailable("statement timed out".into())
            }
            // 08 connection, 57 operator intervention, 40 deadlock / serialization failure,
            // 53 insufficient resources, 55P03 lock not available: the database cannot take
            // it now; trying again later may succeed.
            Some(db)
                if ["08", "57", "40", "53"].iter().any(|c| db.code().code().starts_with(c))
                    || db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE =>
            {
                ProjectDbError::Unavailable(db.message().to_string())
            }
            Some(db) => ProjectDbError::Query(format!("{}: {}", db.code().code(), db.message())),
            None => ProjectDbError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ProjectDbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Closed => ProjectDbError::Closed,
            other => ProjectDbError::Unavailable(other.to_string()),
        }
    }
}

/// A parsed project database URL: what to connect to, how, and a printable target.
#[derive(Clone)]
pub struct ProjectDbTarget {
    config: tokio_postgres::Config,
    tls: TlsMode,
    /// `host:port/dbname`, no credentials.
    pub display: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    /// Encrypt when the server offers it, without verifying the certificate (libpq `prefer`).
    Prefer,
    /// Encrypt, don't verify (libpq `require`).
    Require,
    /// Encrypt and verify the chain against the web PKI roots (and the host name for `verify-full`).
    Verify,
}

impl ProjectDbTarget {
    pub fn parse(url: &SecretString) -> Result<Self, ProjectDbError> {
        let raw = url.expose_secret();
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err(ProjectDbError::InvalidUrl("must start with postgres:// or postgresql://".into()));
        }
        // tokio-postgres knows disable/prefer/require; map the verifying modes ourselves.
        let mut tls = TlsMode::Prefer;
        let mut cleaned = raw.to_string();
        if let Some((base, query)) = raw.split_once('?') {
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("sslmode", mode)) => {
                        tls = match mode {
                            "disable" => TlsMode::Disable,
                            "allow" | "prefer" => TlsMode::Prefer,
                            "require" => TlsMode::Require,
                            "verify-ca" | "verify-full" => TlsMode::Verify,
                            other => return Err(ProjectDbError::InvalidUrl(format!("unknown sslmode `{other}`"))),
                        }
                    }
                    Some(("sslrootcert", _)) | Some(("sslcert", _)) | Some(("sslkey", _)) => {}
                    _ => kept.push(pair),
                }
            }
            cleaned = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        }
        let mut config: tokio_postgres::Config = cleaned
            .parse()
            .map_err(|e: tokio_postgres::Error| ProjectDbError::InvalidUrl(redact_error(&e.to_string(), raw)))?;
        config.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify => tokio_postgres::config::SslMode::Require,
        });
        if config.get_dbname().is_none() {
            return Err(ProjectDbError::InvalidUrl("no database name in the URL path".into()));
        }
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => return Err(ProjectDbError::InvalidUrl("no host in the URL".into())),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let display = format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default());
        Ok(ProjectDbTarget { config, tls, display })
    }

    /// The connection settings (the control store shares this URL handling).
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// A pool manager for `cfg`, with this target's TLS.
    pub fn manager(&self, cfg: tokio_postgres::Config) -> Manager {
        let mgr_cfg = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        match self.tls {
            TlsMode::Disable => Manager::from_config(cfg, tokio_postgres::NoTls, mgr_cfg),
            TlsMode::Prefer | TlsMode::Require => Manager::from_config(cfg, tls::unverified(), mgr_cfg),
            TlsMode::Verify => Manager::from_config(cfg, tls::verified(), mgr_cfg),
        }
    }

    /// One connection outside any pool (migrations), its connection task spawned.
    pub async fn connect_once(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
        where
            S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok(match self.tls {
            TlsMode::Disable => {
                let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                drive(conn);
                c
            }
            TlsMode::Prefer | TlsMode::Require => {
                let (c, conn) = cfg.connect(tls::unverified()).await?;
                drive(conn);
                c
            }
            TlsMode::Verify => {
                let (c, conn) = cfg.connect(tls::verified()).await?;
                drive(conn);
                c
            }
        })
    }

    /// One connection outside any pool whose notifications (`LISTEN`) arrive on the returned
    /// channel; the channel closes when the connection ends.
    pub async fn connect_listening(
        &self,
        cfg: &tokio_postgres::Config,
    ) -> Result<
        (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>),
        tokio_postgres::Error,
    > {
        fn drive<S, T>(
            mut conn: tokio_postgres::Connection<S, T>,
        ) -> tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>
        where
            S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            if tx.send(n).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            rx
        }
        Ok(match self.tls {
            TlsMode::Disable => {
                let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                (c, drive(conn))
            }
            TlsMode::Prefer | TlsMode::Require => {
                let (c, conn) = cfg.connect(tls::unverified()).await?;
                (c, drive(conn))
            }
            TlsMode::Verify => {
                let (c, conn) = cfg.connect(tls::verified()).await?;
                (c, drive(conn))
            }
        })
    }

    /// A fresh pool for this target.
    fn pool(&self, settings: &ProjectDbSettings) -> Result<Pool, ProjectDbError> {
        let mut cfg = self.config.clone();
        cfg.connect_timeout(settings.connect_timeout);
        cfg.application_name("capydb-auth-sync");
        let mgr = self.manager(cfg);
        let timeout_ms = settings.statement_timeout.as_millis() as i64;
        Pool::builder(mgr)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .post_create(Hook::async_fn(move |client, _| {
                Box::pin(async move {
                    client
                        .simple_query(&format!("SET statement_timeout = {timeout_ms}; SET lock_timeout = {timeout_ms}"))
                        .await
                        .map_err(|e| HookError::message(e.to_string()))?;
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| ProjectDbError::Unavailable(e.to_string()))
    }
}

/// Errors from URL parsing may echo parts of the URL; never let the password through.
fn redact_error(msg: &str, url: &str) -> String {
    let mut out = msg.to_string();
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        if let Some((userinfo, _)) = rest.split_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                if !pw.is_empty() {
                    out = out.replace(pw, "***");
                }
            }
        }
    }
    out
}

/// (integration id, SHA-256 of the database URL).
type PoolKey = (String, [u8; 32]);

struct CachedPool {
    pool: Pool,
    last_used: Instant,
}

/// Pools of all project databases, keyed by integration id and URL fingerprint, so a job
/// still using an old URL and webhooks using the new one never close each other's pool (the
/// old one is closed as idle).
#[derive(Clone)]
pub struct ProjectPools {
    settings: ProjectDbSettings,
    pools: Arc<Mutex<HashMap<PoolKey, CachedPool>>>,
}

impl ProjectPools {
    pub fn new(settings: ProjectDbSettings) -> Self {
        ProjectPools { settings, pools: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// The pool of an integration's database, creating it on first use. Creating a pool does
    /// not connect; the first `get()` does.
    pub fn pool(&self, integration_id: &str, url: &SecretString) -> Result<Pool, ProjectDbError> {
        let key = (integration_id.to_string(), Sha256::digest(url.expose_secret().as_bytes()).into());
        let mut pools = self.pools.lock().expect("project pool map poisoned");
        if let Some(cached) = pools.get_mut(&key) {
            cached.last_used = Instant::now();
            return Ok(cached.pool.clone());
        }
        let pool = ProjectDbTarget::parse(url)?.pool(&self.settings)?;
        if pools.len() >= self.settings.max_pools {
            if let Some(oldest) = pools.iter().min_by_key(|(_, p)| p.last_used).map(|(k, _)| k.clone()) {
                if let Some(evicted) = pools.remove(&oldest) {
                    evicted.pool.close();
                }
            }
        }
        pools.insert(key, CachedPool { pool: pool.clone(), last_used: Instant::now() });
        Ok(pool)
    }

    /// Closes every pool of a deleted integration.
    pub fn forget(&self, integration_id: &str) {
        self.pools.lock().expect("project pool map poisoned").retain(|(id, _), p| {
            let keep = id != integration_id;
            if !keep {
                p.pool.close();
            }
            keep
        });
    }

    /// Closes pools unused for longer than `max_idle`; returns how many.
    pub fn evict_idle(&self, max_idle: Duration) -> usize {
        let mut pools = self.pools.lock().expect("project pool map poisoned");
        let before = pools.len();
        pools.retain(|_, p| {
            let keep = p.last_used.elapsed() <= max_idle;
            if !keep {
                p.pool.close();
            }
            keep
        });
        before - pools.len()
    }

    pub fn len(&self) -> usize {
        self.pools.lock().expect("project pool map poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod tls {
    //! rustls connectors for tokio-postgres.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;
    use tokio_postgres_rustls::MakeRustlsConnect;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Verifies against the web PKI roots (`verify-ca` / `verify-full`).
    pub fn verified() -> MakeRustlsConnect {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        MakeRustlsConnect::new(config)
    }

    /// Encrypts without verifying the server certificate, as libpq's `require` does.
    pub fn unverified() -> MakeRustlsConnect {
        let provider = provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        MakeRustlsConnect::new(config)
    }

    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ProjectDbTarget, ProjectDbError> {
        ProjectDbTarget::parse(&SecretString::from(url.to_string()))
    }

    #[test]
    fn parses_targets_without_keeping_the_password_in_display() {
        let t = parse("postgres://app:hunter2secret@db.example.com:6543/shop?sslmode=verify-full").unwrap();
        assert_eq!(t.display, "db.example.com:6543/shop");
        assert_eq!(t.tls, TlsMode::Verify);
        assert_eq!(parse("postgresql://u@localhost/x?sslmode=disable").unwrap().tls, TlsMode::Disable);
        assert_eq!(parse("postgres://u@localhost/x").unwrap().tls, TlsMode::Prefer);
        assert_eq!(parse("postgres://u@localhost/x?sslmode=require&application_name=a").unwrap().tls, TlsMode::Require);
    }

    #[tokio::test]
    async fn pools_are_bounded_and_idle_ones_are_evicted() {
        let pools = ProjectPools::new(ProjectDbSettings { max_pools: 2, ..Default::default() });
        let url = |db: &str| SecretString::from(format!("postgres://u@127.0.0.1:9/{db}"));
        pools.pool("a", &url("a")).unwrap();
        pools.pool("b", &url("b")).unwrap();
        pools.pool("a", &url("a")).unwrap(); // a is now the most recently used
        pools.pool("c", &url("c")).unwrap();
        assert_eq!(pools.len(), 2, "the least recently used pool (b) was closed");
        let a_again = pools.pool("a", &url("a")).unwrap();
        assert!(!a_again.is_closed());
        assert_eq!(pools.evict_idle(Duration::from_secs(3600)), 0);
        assert_eq!(pools.evict_idle(Duration::ZERO), 2);
        assert!(pools.is_empty());
        assert!(a_again.is_closed());
    }

    #[test]
    fn rejects_bad_urls_without_echoing_the_password() {
        for bad in [
            "mysql://u:hunter2secret@h/db",
            "postgres://u:hunter2secret@h/db?sslmode=bogus",
            "postgres://u:hunter2secret@h:notaport/db",
            "postgres://u:hunter2secret@h",
        ] {
            let err = parse(bad).err().expect(bad).to_string();
            assert!(!err.contains("hunter2secret"), "{err}");
        }
    }
}
