//! Connections to customers' project databases: one small pool per integration, created
//! lazily, bounded in number (least recently used pools are evicted), with TLS per the URL's
//! `sslmode` (`disable`, `prefer` (default), `require`, `verify-ca`, `verify-full`).
//!
//! `sslrootcert` (a CA file, an inline URL-encoded PEM, or `system`) replaces the web PKI
//! roots; `verify-ca` checks the chain only and `verify-full` the chain and the host name, as
//! libpq does. New connections to project databases pass the outbound policy
//! ([`crate::outbound`]) and go to the address it checked. Connection errors are summarised
//! ("could not connect: connection refused", "authentication failed", ...): the server's own
//! text never reaches a caller.
//!
//! Every connection runs with a statement timeout so a slow project database turns into a
//! quick 503 for webhooks instead of a hung delivery.
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::outbound::{Destination, OutboundPolicy, Refusal};

#[derive(Debug, Clone)]
pub struct ProjectDbSettings {
    pub pool_size: usize,
    pub max_pools: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Where project databases may be (checked at Configure and on every new connection).
    pub outbound: Arc<OutboundPolicy>,
}

impl Default for ProjectDbSettings {
    fn default() -> Self {
        ProjectDbSettings {
            pool_size: 4,
            max_pools: 256,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            outbound: Arc::new(OutboundPolicy::default()),
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
    /// Two transactions crossed (deadlock, serialization failure): this one was rolled back
    /// and may be retried at once.
    #[error("project database conflict: {0}")]
    Conflict(String),
    /// The database answered with an error.
    #[error("project database error: {0}")]
    Query(String),
    /// The pool was closed under its user: the integration was deleted, or the pool evicted.
    #[error("project database pool closed: the integration was deleted, or its pool was evicted")]
    Closed,
}

impl From<tokio_postgres::Error> for ProjectDbError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.as_db_error() {
            // 40: two writers crossed (deadlock, serialization failure); rolled back, and
            // trying again at once is the cure.
            Some(db) if db.code().code().starts_with("40") => ProjectDbError::Conflict(summarize(&e)),
            // 08 connection, 28 authorization, 3D catalog, 57 operator intervention (57014 =
            // statement timeout), 53 insufficient
            // resources, 55P03 lock not available: the database cannot take it now; trying
            // again (or fixing the integration) may succeed. Their text is the server's: it is
            // summarised.
            Some(db)
                if ["08", "28", "3D", "57", "53"].iter().any(|c| db.code().code().starts_with(c))
                    || db.code() == &SqlState::LOCK_NOT_AVAILABLE =>
            {
                ProjectDbError::Unavailable(summarize(&e))
            }
            Some(db) => ProjectDbError::Query(format!("{}: {}", db.code().code(), db.message())),
            None => ProjectDbError::Unavailable(summarize(&e)),
        }
    }
}

/// What went wrong with a project database, in words of our own: never the server's text
/// (which may name roles, hosts or settings), never an address.
pub fn summarize(e: &tokio_postgres::Error) -> String {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let class = &code.code()[..2];
        return match class {
            _ if code == &SqlState::QUERY_CANCELED => "statement timed out".into(),
            _ if code == &SqlState::LOCK_NOT_AVAILABLE => "lock not available".into(),
            _ if code == &SqlState::CANNOT_CONNECT_NOW => "the server is starting up or shutting down".into(),
            "28" => "authentication failed".into(),
            "3D" => "the database does not exist".into(),
            "53" => "the server is out of resources (too many connections?)".into(),
            "57" => "the server is shutting down".into(),
            "40" => "a deadlock or serialization failure; retry".into(),
            "08" => "connection failure".into(),
            _ => format!("the server answered with error {}", code.code()),
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut tls = e.to_string().starts_with("error performing TLS handshake");
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return format!("TLS handshake failed: {r}");
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<Refusal>() {
                    return format!("could not connect: {r}");
                }
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return format!("TLS handshake failed: {r}");
                }
            }
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "could not connect: connection refused".into(),
                TimedOut => return "could not connect: timed out".into(),
                NotFound if !tls => return "could not connect: no such socket".into(),
                _ => {}
            }
        }
        if err.to_string().contains("server does not support TLS") {
            return "TLS handshake failed: the server does not support TLS".into();
        }
        tls |= err.to_string().starts_with("error performing TLS handshake");
        source = err.source();
    }
    if tls {
        "TLS handshake failed".into()
    } else if e.is_closed() {
        "the connection was closed".into()
    } else {
        "could not connect".into()
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
    /// The CA certificates of `sslrootcert` (they replace the web PKI roots).
    roots: Option<Arc<rustls::RootCertStore>>,
    /// `host:port/dbname`, no credentials.
    pub display: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    /// Encrypt when the server offers it, without verifying the certificate (libpq `prefer`).
    Prefer,
    /// Encrypt, don't verify (libpq `require`; with `sslrootcert`, libpq verifies the chain,
    /// and so do we).
    Require,
    /// Encrypt and verify the chain, not the host name (libpq `verify-ca`).
    VerifyCa,
    /// Encrypt and verify the chain and the host name (libpq `verify-full`).
    VerifyFull,
}

/// libpq's `sslrootcert`: a CA file, an inline PEM (URL-encoded, from the control plane), or
/// `system` (the web PKI roots, the default for the verifying modes).
fn load_roots(value: &str) -> Result<Option<rustls::RootCertStore>, ProjectDbError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |m: &str| ProjectDbError::InvalidUrl(format!("sslrootcert: {m}"));
    // Percent-decoding only, as libpq (a `+` stays a `+`: PEM bodies are base64).
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| bad("not valid UTF-8 once URL-decoded"))?;
    if decoded == "system" {
        return Ok(None);
    }
    let pem = if decoded.trim_start().starts_with("-----BEGIN") {
        decoded.as_bytes().to_vec()
    } else {
        std::fs::read(decoded.as_ref()).map_err(|_| bad("the CA file cannot be read"))?
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| bad("not a PEM certificate list"))?;
        roots.add(cert).map_err(|_| bad("a certificate is not a valid CA certificate"))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate"));
    }
    Ok(Some(roots))
}

impl ProjectDbTarget {
    pub fn parse(url: &SecretString) -> Result<Self, ProjectDbError> {
        let raw = url.expose_secret();
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err(ProjectDbError::InvalidUrl("must start with postgres:// or postgresql://".into()));
        }
        // tokio-postgres knows disable/prefer/require and no sslrootcert; do those ourselves.
        let mut tls = TlsMode::Prefer;
        let mut roots = None;
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
                            "verify-ca" => TlsMode::VerifyCa,
                            "verify-full" => TlsMode::VerifyFull,
                            other => return Err(ProjectDbError::InvalidUrl(format!("unknown sslmode `{other}`"))),
                        }
                    }
                    Some(("sslrootcert", value)) => roots = load_roots(value)?,
                    Some(("sslcert", _)) | Some(("sslkey", _)) => {
                        return Err(ProjectDbError::InvalidUrl(
                            "client certificates (sslcert, sslkey) are not supported".into(),
                        ))
                    }
                    _ => kept.push(pair),
                }
            }
            cleaned = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        }
        // As libpq: `require` with a root certificate verifies the chain.
        if tls == TlsMode::Require && roots.is_some() {
            tls = TlsMode::VerifyCa;
        }
        let mut config: tokio_postgres::Config = cleaned
            .parse()
            .map_err(|e: tokio_postgres::Error| ProjectDbError::InvalidUrl(redact_error(&e.to_string(), raw)))?;
        config.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => tokio_postgres::config::SslMode::Require,
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
        Ok(ProjectDbTarget { config, tls, roots: roots.map(Arc::new), display })
    }

    /// The connection settings (the control store shares this URL handling).
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// The rustls connector of this target, `None` for `sslmode=disable`.
    fn connector(&self) -> Option<tokio_postgres_rustls::MakeRustlsConnect> {
        let roots = || {
            self.roots
                .clone()
                .unwrap_or_else(|| Arc::new(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }))
        };
        match self.tls {
            TlsMode::Disable => None,
            TlsMode::Prefer | TlsMode::Require => Some(tls::unverified()),
            TlsMode::VerifyCa => Some(tls::chain_only(roots())),
            TlsMode::VerifyFull => Some(tls::chain_and_host(roots())),
        }
    }

    /// A pool manager for `cfg`, with this target's TLS (the control database: no outbound
    /// policy, the operator chose it).
    pub fn manager(&self, cfg: tokio_postgres::Config) -> Manager {
        let mgr_cfg = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        match self.connector() {
            None => Manager::from_config(cfg, tokio_postgres::NoTls, mgr_cfg),
            Some(tls) => Manager::from_config(cfg, tls, mgr_cfg),
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
        Ok(match self.connector() {
            None => {
                let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                drive(conn);
                c
            }
            Some(tls) => {
                let (c, conn) = cfg.connect(tls).await?;
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
        Ok(match self.connector() {
            None => {
                let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                (c, drive(conn))
            }
            Some(tls) => {
                let (c, conn) = cfg.connect(tls).await?;
                (c, drive(conn))
            }
        })
    }

    /// A fresh pool for this target; every new connection passes the outbound policy first.
    fn pool(&self, settings: &ProjectDbSettings) -> Result<Pool, ProjectDbError> {
        let mut cfg = self.config.clone();
        cfg.connect_timeout(settings.connect_timeout);
        cfg.application_name("capydb-auth-sync");
        let mgr_cfg = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let connect = checked::CheckedConnect { tls: self.connector(), policy: settings.outbound.clone() };
        let mgr = Manager::from_connect(cfg, connect, mgr_cfg);
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
                        .map_err(|e| HookError::message(summarize(&e)))?;
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

/// Each entry of the pool map is one open pool of `capydb_auth_sync_project_pools_open`:
/// counted when it enters the map, uncounted when it leaves it (closed, evicted, or the map
/// dropped with its server).
impl CachedPool {
    fn new(pool: Pool) -> Self {
        metrics::gauge!("capydb_auth_sync_project_pools_open").increment(1.0);
        CachedPool { pool, last_used: Instant::now() }
    }
}

impl Drop for CachedPool {
    fn drop(&mut self) {
        metrics::gauge!("capydb_auth_sync_project_pools_open").decrement(1.0);
    }
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
        // The cap is on idle pools: a pool with a connection checked out (or a caller waiting
        // for one) is never closed under its user; beyond the cap the least recently used
        // idle pools go. Busy pools may thus exceed the cap for as long as they are busy.
        let idle = |p: &CachedPool| {
            let status = p.pool.status();
            status.size == status.available && status.waiting == 0
        };
        let mut idle_count = pools.values().filter(|p| idle(p)).count();
        while idle_count >= self.settings.max_pools {
            let Some(oldest) =
                pools.iter().filter(|(_, p)| idle(p)).min_by_key(|(_, p)| p.last_used).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(evicted) = pools.remove(&oldest) {
                evicted.pool.close();
            }
            idle_count -= 1;
        }
        pools.insert(key, CachedPool::new(pool.clone()));
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

    /// Closes pools unused for longer than `max_idle` and with no connection checked out;
    /// returns how many.
    pub fn evict_idle(&self, max_idle: Duration) -> usize {
        let mut pools = self.pools.lock().expect("project pool map poisoned");
        let before = pools.len();
        pools.retain(|_, p| {
            let status = p.pool.status();
            let busy = status.size > status.available || status.waiting > 0;
            let keep = busy || p.last_used.elapsed() <= max_idle;
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

mod checked {
    //! The pool's connect step: the outbound policy, then a connection to the checked address.
    use super::{Destination, OutboundPolicy, Refusal};
    use deadpool_postgres::Connect;
    use futures::future::BoxFuture;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::task::JoinHandle;
    use tokio_postgres_rustls::MakeRustlsConnect;

    pub struct CheckedConnect {
        pub tls: Option<MakeRustlsConnect>,
        pub policy: Arc<OutboundPolicy>,
    }

    impl Connect for CheckedConnect {
        fn connect(
            &self,
            pg_config: &tokio_postgres::Config,
        ) -> BoxFuture<'_, Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>> {
            let mut cfg = pg_config.clone();
            Box::pin(async move {
                match self.policy.destination(&cfg).await {
                    Ok(Destination::Tcp(ip)) => {
                        if cfg.get_hostaddrs().is_empty() {
                            cfg.hostaddr(ip);
                        }
                    }
                    Ok(Destination::Unix) => {}
                    Err(refusal) => return Err(refused(cfg, refusal).await),
                }
                match self.tls.clone() {
                    None => {
                        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                        Ok((client, tokio::spawn(async move { drop(conn.await) })))
                    }
                    Some(tls) => {
                        let (client, conn) = cfg.connect(tls).await?;
                        Ok((client, tokio::spawn(async move { drop(conn.await) })))
                    }
                }
            })
        }
    }

    /// The driver's errors cannot be built from outside, so a refusal is turned into one by
    /// handing the driver a stream whose first write fails with it: the caller finds the
    /// [`Refusal`] inside the I/O error (see `summarize`).
    async fn refused(mut cfg: tokio_postgres::Config, refusal: Refusal) -> tokio_postgres::Error {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        match cfg.connect_raw(RefusedStream(refusal), tokio_postgres::NoTls).await {
            Err(e) => e,
            Ok(_) => unreachable!("a stream whose every read and write fails completes no handshake"),
        }
    }

    struct RefusedStream(Refusal);

    impl RefusedStream {
        fn error(&self) -> std::io::Error {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, self.0.clone())
        }
    }

    impl AsyncRead for RefusedStream {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(self.error()))
        }
    }

    impl AsyncWrite for RefusedStream {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Err(self.error()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(self.error()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

mod tls {
    //! rustls connectors for tokio-postgres.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::verify_server_cert_signed_by_trust_anchor;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::ParsedCertificate;
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use std::sync::Arc;
    use tokio_postgres_rustls::MakeRustlsConnect;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    }

    /// Verifies the chain against `roots` and the host name (`verify-full`).
    pub fn chain_and_host(roots: Arc<RootCertStore>) -> MakeRustlsConnect {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        MakeRustlsConnect::new(config)
    }

    /// Verifies the chain against `roots` but not the host name (`verify-ca`).
    pub fn chain_only(roots: Arc<RootCertStore>) -> MakeRustlsConnect {
        MakeRustlsConnect::new(client_config(Arc::new(HostAgnostic { roots: Some(roots), provider: provider() })))
    }

    /// Encrypts without verifying the server certificate, as libpq's `require` does.
    pub fn unverified() -> MakeRustlsConnect {
        MakeRustlsConnect::new(client_config(Arc::new(HostAgnostic { roots: None, provider: provider() })))
    }

    /// The libpq modes that never check the host name: `verify-ca` (with `roots`: the
    /// certificate must chain to a trusted root, be valid now and be meant for servers) and
    /// `require` (without: anything is accepted; the handshake's signatures are still checked,
    /// so the connection is encrypted to whoever holds the presented key).
    #[derive(Debug)]
    struct HostAgnostic {
        roots: Option<Arc<RootCertStore>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    }

    impl ServerCertVerifier for HostAgnostic {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if let Some(roots) = &self.roots {
                let cert = ParsedCertificate::try_from(end_entity)?;
                verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
            }
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
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
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert_eq!(parse("postgres://u@localhost/x?sslmode=verify-ca").unwrap().tls, TlsMode::VerifyCa);
        assert_eq!(parse("postgresql://u@localhost/x?sslmode=disable").unwrap().tls, TlsMode::Disable);
        assert_eq!(parse("postgres://u@localhost/x").unwrap().tls, TlsMode::Prefer);
        assert_eq!(parse("postgres://u@localhost/x?sslmode=require&application_name=a").unwrap().tls, TlsMode::Require);
    }

    #[tokio::test]
    async fn pools_are_bounded_and_idle_ones_are_evicted() {
        let pools = ProjectPools::new(ProjectDbSettings { max_pools: 2, ..Default::default() });
        // (Nothing connects here, so the outbound policy is not consulted.)
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

    #[tokio::test]
    async fn eviction_never_closes_a_pool_in_use_and_caps_idle_pools() {
        // A "server" that accepts and never answers: a pool.get() on it stays pending, which
        // is a user of that pool, as a checked-out connection is.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let pools = ProjectPools::new(ProjectDbSettings {
            max_pools: 2,
            connect_timeout: Duration::from_secs(60),
            outbound: Arc::new(OutboundPolicy::dev()),
            ..Default::default()
        });
        let url = |db: &str| SecretString::from(format!("postgres://u@127.0.0.1:{port}/{db}?sslmode=disable"));
        let busy = pools.pool("busy", &url("busy")).unwrap();
        let user = tokio::spawn({
            let busy = busy.clone();
            async move { busy.get().await.map(drop) }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while busy.status().waiting == 0 {
            assert!(Instant::now() < deadline, "the pool never saw its user");
            tokio::task::yield_now().await;
        }
        for db in ["a", "b", "c", "d"] {
            pools.pool(db, &url(db)).unwrap();
        }
        assert!(!busy.is_closed(), "the pool in use (least recently used) survived eviction");
        assert_eq!(pools.len(), 3, "two idle pools (the cap) plus the busy one");
        assert_eq!(pools.evict_idle(Duration::ZERO), 2, "idle-time eviction spares the busy pool too");
        assert!(!busy.is_closed());
        user.abort();
        let _ = user.await;
        assert_eq!(pools.evict_idle(Duration::ZERO), 1, "once its user is gone it is idle");
        assert!(busy.is_closed());
        holder.abort();
    }

    #[tokio::test]
    async fn every_new_connection_passes_the_outbound_policy_again() {
        // Configure checked the URL under some policy; the policy (or what the name resolves
        // to) changed since: the connection is refused before any packet leaves.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pools = ProjectPools::new(ProjectDbSettings::default());
        let url = SecretString::from(format!("postgres://u:hunter2secret@127.0.0.1:{port}/db"));
        let err = ProjectDbError::from(pools.pool("strict", &url).unwrap().get().await.unwrap_err()).to_string();
        assert!(err.contains("could not connect: the host is (or resolves to) a loopback address"), "{err}");
        assert!(!err.contains("hunter2secret"));
        let nothing_came = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(nothing_came.is_err(), "no connection was attempted");
    }

    #[test]
    fn sslrootcert_takes_a_file_or_an_inline_pem_and_says_what_is_wrong() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let pem = ca.cert.pem();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, &pem).unwrap();
        let from_file = parse(&format!("postgres://u@h/x?sslmode=verify-ca&sslrootcert={}", file.display())).unwrap();
        assert_eq!(from_file.roots.as_ref().map(|r| r.len()), Some(1));
        let inline: String = percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).collect();
        let from_pem = parse(&format!("postgres://u@h/x?sslmode=require&sslrootcert={inline}")).unwrap();
        assert_eq!(from_pem.tls, TlsMode::VerifyCa, "require with a root certificate verifies, as libpq");
        assert_eq!(from_pem.roots.as_ref().map(|r| r.len()), Some(1));
        assert!(parse("postgres://u@h/x?sslmode=verify-full&sslrootcert=system").unwrap().roots.is_none());
        for (bad, says) in [
            ("sslrootcert=/nonexistent/ca.pem", "cannot be read"),
            ("sslrootcert=-----BEGIN%20CERTIFICATE-----%0Anope%0A-----END%20CERTIFICATE-----", "certificate"),
            ("sslcert=/tmp/c.pem", "not supported"),
        ] {
            let err = parse(&format!("postgres://u@h/x?sslmode=verify-ca&{bad}")).err().expect(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
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
