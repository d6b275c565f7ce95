//! Test harness: a real server in-process on port 0 (gRPC + webhooks + metrics), a fresh
//! control database cloned from a migrated template and a fresh project database per test,
//! the real client crate, a fake Clerk over real HTTP, and a log capture.
//!
//! Postgres: `CAPYDB_TEST_PG_URL` (a base URL such as `postgres://postgres@127.0.0.1:5432`),
//! else 127.0.0.1:5432 if it answers, else a throwaway cluster in `target/test-pg` started
//! from the installed Postgres binaries.
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use capydb_auth_sync::app::{self, Listeners};
use capydb_auth_sync::config::Settings;
use capydb_auth_sync::crypto::Keyring;
use capydb_auth_sync::local_postgres::{self, LocalPostgres};
use capydb_auth_sync_client::{AuthSyncClient, ClientConfig, SignedRequest};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use capydb_auth_sync_client as client;
pub use fake_clerk::{FakeClerk, FakeClerkConfig};

// ---------------------------------------------------------------------------------------
// Logs: everything the service logs in this test process, for secret-leak checks.

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(buf.clone());
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,tokio_postgres=info,h2=info,hyper=info,hyper_util=info,tower=info,reqwest=info,rustls=info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buf
    })
    .clone()
}

/// Everything logged so far by any server in this process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&init_logs().lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------
// Databases.

static PG: OnceCell<(LocalPostgres, String)> = OnceCell::const_new();

/// The server and the name of the migrated control-database template.
async fn postgres() -> &'static (LocalPostgres, String) {
    PG.get_or_init(|| async {
        let pg = match std::env::var("CAPYDB_TEST_PG_URL") {
            Ok(url) => LocalPostgres { base_url: url.trim_end_matches('/').to_string(), throwaway: false },
            Err(_) => {
                let dir = repo_root().join("target").join("test-pg");
                local_postgres::ensure(&dir).await.expect("a Postgres server for the tests")
            }
        };
        let template = prepare_template(&pg).await;
        (pg, template)
    })
    .await
}

async fn admin(pg: &LocalPostgres) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&pg.url_for("postgres"), tokio_postgres::NoTls).await.expect("connect to postgres");
    tokio::spawn(conn);
    client
}

/// Drops leftovers of earlier runs and builds the migrated control template once.
async fn prepare_template(pg: &LocalPostgres) -> String {
    let c = admin(pg).await;
    // One harness at a time prepares (several test binaries may start together).
    c.execute("SELECT pg_advisory_lock(7312001)", &[]).await.unwrap();
    let stale = c.query("SELECT datname::text FROM pg_database WHERE datname LIKE 'capytest\\_%'", &[]).await.unwrap();
    // Older than 15 minutes: no run in progress still uses it.
    let cutoff = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 900;
    for row in stale {
        let name: String = row.get(0);
        let created: u64 = name.split('_').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if created < cutoff {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
    let template = format!("capytpl_control_{}", migrations_fingerprint());
    let exists = c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template]).await.unwrap().is_some();
    if !exists {
        let building = format!("{template}_building");
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{building}\"")).await;
        c.batch_execute(&format!("CREATE DATABASE \"{building}\"")).await.unwrap();
        let store =
            capydb_auth_sync::store::ControlStore::connect(&pg.url_for(&building), 1).await.expect("migrate template");
        drop(store);
        c.batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
        c.batch_execute(&format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\"")).await.unwrap();
        c.batch_execute(&format!("ALTER DATABASE \"{template}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"))
            .await
            .unwrap();
    }
    c.execute("SELECT pg_advisory_unlock(7312001)", &[]).await.unwrap();
    template
}

fn migrations_fingerprint() -> String {
    use sha2::Digest;
    let dir = repo_root().join("server/store/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update(std::fs::read(f).unwrap());
    }
    hex::encode(&h.finalize()[..6])
}

/// Test databases are named `capytest_<unix seconds>_<kind>_<random>`, so a later run can
/// drop leftovers by age without touching a run in progress.
fn unique(prefix: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!("capytest_{secs}_{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The repository root (this crate lives in its `test-harness/` directory).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("test-harness/ has a parent").to_path_buf()
}

/// A fresh control database (migrated, from the template).
pub async fn new_control_db() -> String {
    let (pg, template) = postgres().await;
    let name = unique("ctl");
    admin(pg).await.batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")).await.unwrap();
    pg.url_for(&name)
}

/// A fresh, empty project database.
pub async fn new_project_db() -> String {
    let (pg, _) = postgres().await;
    let name = unique("prj");
    admin(pg).await.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
    pg.url_for(&name)
}

/// Drops a database made by [`new_control_db`] or [`new_project_db`] for a test that runs
/// no `TestApp` (its connections are closed by force).
pub async fn drop_database(url: &str) {
    let (pg, _) = postgres().await;
    let name = db_name(url);
    let _ = admin(pg).await.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

// ---------------------------------------------------------------------------------------
// The server.

pub const TEST_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A random Svix-style webhook secret.
pub fn new_whsec() -> String {
    let mut key = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub control_url: String,
    pub project_url: String,
    pub client: AuthSyncClient,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), app::RunError>>>,
    /// Databases this app created (dropped with it); ones passed in belong to the test.
    owned_dbs: Vec<String>,
}

/// Knobs a test may turn before the server starts.
pub struct TestOptions {
    pub control_url: Option<String>,
    pub project_url: Option<String>,
    pub keyring: Option<String>,
    pub clerk_url: Option<String>,
    pub tweak: Box<dyn FnOnce(&mut Settings) + Send>,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions { control_url: None, project_url: None, keyring: None, clerk_url: None, tweak: Box::new(|_| {}) }
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(TestOptions::default()).await
    }

    pub async fn spawn_with(o: TestOptions) -> TestApp {
        init_logs();
        let mut owned_dbs = Vec::new();
        let control_url = match o.control_url {
            Some(u) => u,
            None => {
                let u = new_control_db().await;
                owned_dbs.push(db_name(&u));
                u
            }
        };
        let project_url = match o.project_url {
            Some(u) => u,
            None => {
                let u = new_project_db().await;
                owned_dbs.push(db_name(&u));
                u
            }
        };
        let keys = o.keyring.unwrap_or_else(|| test_keyring_spec("k1"));
        let keyring = Keyring::parse(&SecretString::from(keys)).unwrap();
        let mut settings = Settings::new(
            SecretString::from(control_url.clone()),
            keyring,
            vec![SecretString::from(TEST_TOKEN.to_string())],
        );
        settings.clerk.api_url = o.clerk_url.unwrap_or_else(|| "http://127.0.0.1:9".into());
        settings.clerk.retry_base = Duration::from_millis(20);
        settings.clerk.timeout = Duration::from_secs(5);
        settings.backfill.poll_interval = Duration::from_millis(200);
        settings.backfill.watch_interval = Duration::from_millis(50);
        settings.backfill.lease_ttl = Duration::from_secs(2);
        settings.shutdown_grace = Duration::from_secs(5);
        settings.project_db.connect_timeout = Duration::from_secs(2);
        // The test databases are on loopback, which the default outbound policy refuses.
        settings.project_db.outbound = Arc::new(capydb_auth_sync::outbound::OutboundPolicy {
            allow: capydb_auth_sync::outbound::OutboundPolicy::parse_allow("127.0.0.0/8,localhost").unwrap(),
            ..Default::default()
        });
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr, metrics_addr) =
            (grpc.local_addr().unwrap(), http.local_addr().unwrap(), metrics.local_addr().unwrap());
        // The receiver URLs the API hands out point at this test server, as dev mode's do.
        settings.public_base_url = format!("http://{http_addr}");
        (o.tweak)(&mut settings);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app::run(
            settings.clone(),
            Listeners { grpc, http, metrics: Some(metrics) },
            shutdown.clone(),
        ));
        let client = AuthSyncClient::connect(ClientConfig::new(format!("http://{grpc_addr}")).with_token(TEST_TOKEN))
            .await
            .unwrap();
        let app = TestApp {
            grpc_addr,
            http_addr,
            metrics_addr,
            control_url,
            project_url,
            client,
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            shutdown,
            handle: Some(handle),
            owned_dbs,
        };
        app.wait_ready().await;
        app
    }

    /// Waits until the webhook listener answers /readyz (the control store is migrated).
    async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.http_addr);
        eventually("the server answers /readyz", || async {
            let r = self.http.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// Graceful shutdown; returns the server's result.
    pub async fn shutdown(mut self) -> Result<(), app::RunError> {
        self.shutdown.cancel();
        self.handle.take().unwrap().await.expect("server task")
    }

    /// Starts a graceful shutdown without waiting for it (to observe the drain period).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Abrupt stop, like a crash: the server future is dropped mid-flight.
    pub async fn kill(mut self) {
        let h = self.handle.take().unwrap();
        h.abort();
        let _ = h.await;
    }

    pub fn client_with_token(&self, token: Option<&str>) -> AuthSyncClient {
        let mut cfg = ClientConfig::new(format!("http://{}", self.grpc_addr));
        cfg.token = token.map(str::to_string);
        cfg.retries = 0;
        AuthSyncClient::connect_lazy(cfg).unwrap()
    }

    pub async fn project(&self) -> tokio_postgres::Client {
        connect(&self.project_url).await
    }

    /// Configures a live Clerk integration (webhook secret only, no backfill).
    pub async fn configure_clerk_webhooks(&self, project: &str, whsec: &str) -> client::Integration {
        self.configure_clerk_with(project, "", whsec, &self.project_url).await
    }

    pub fn webhook_url(&self, segment: &str, project: &str) -> String {
        format!("http://{}/api/capydb/v1/integrations/{segment}/webhook/{project}", self.http_addr)
    }

    /// Sends a signed request; returns the status and JSON body.
    pub async fn send(&self, url: &str, req: &SignedRequest) -> (u16, serde_json::Value) {
        let resp =
            self.http.post(url).headers(req.header_map()).body(req.body.clone()).send().await.expect("send webhook");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Signs `body` for Clerk with `whsec` and delivers it to `project`.
    pub async fn send_clerk(&self, project: &str, whsec: &str, body: &str) -> (u16, serde_json::Value) {
        let req = SignedRequest::clerk_now(whsec, body.as_bytes().to_vec()).unwrap();
        self.send(&self.webhook_url("clerk", project), &req).await
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("http://{}/metrics", self.metrics_addr)).send().await.unwrap().text().await.unwrap()
    }

    /// Waits (polling the control store through the API, bounded) until the project's
    /// backfill reaches a terminal state; returns the job.
    pub async fn wait_backfill_done(&self, project: &str) -> client::BackfillJob {
        backfill_done(&self.client, project).await
    }
}

/// Watches the project's Clerk backfill through `client` until it reaches a terminal state
/// (bounded); returns the last snapshot.
pub async fn backfill_done(client: &AuthSyncClient, project: &str) -> client::BackfillJob {
    use futures::StreamExt;
    let mut stream = client.watch_backfill(project, client::Provider::Clerk).await.expect("watch");
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(item) = tokio::time::timeout_at(deadline, stream.next()).await.expect("backfill finished in time") {
        last = Some(item.expect("watch item"));
    }
    last.expect("at least one snapshot")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        // Drop this app's databases now (a run leaves no clutter); anything a crashed run
        // leaves behind is swept by age when the next run starts.
        let (Some((pg, _)), dbs) = (PG.get(), std::mem::take(&mut self.owned_dbs)) else { return };
        let admin_url = pg.url_for("postgres");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok((c, conn)) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await else { return };
                tokio::spawn(conn);
                for db in dbs {
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

pub fn test_keyring_spec(id: &str) -> String {
    use secrecy::ExposeSecret;
    Keyring::generate_spec(id).expose_secret().to_string()
}

/// The users table as (id → row as JSON), for comparisons.
pub async fn users_table(db: &tokio_postgres::Client) -> std::collections::BTreeMap<String, UserRow> {
    db.query(
        "SELECT id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, deleted_at, raw \
         FROM capydb_auth.users ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            UserRow {
                email: r.get(1),
                first_name: r.get(2),
                last_name: r.get(3),
                username: r.get(4),
                image_url: r.get(5),
                created_at: r.get(6),
                updated_at: r.get(7),
                last_sign_in_at: r.get(8),
                deleted_at: r.get(9),
                raw: r.get(10),
            },
        )
    })
    .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_sign_in_at: Option<chrono::DateTime<chrono::Utc>>,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub raw: Option<serde_json::Value>,
}

/// Fails if any of `secrets` (or the admin token) appears in the captured logs or the metrics.
pub async fn assert_no_leaks(app: &TestApp, secrets: &[&str]) {
    let logs = captured_logs();
    let metrics = app.metrics().await;
    for s in secrets.iter().chain(&[TEST_TOKEN]) {
        assert!(!s.is_empty());
        assert!(!logs.contains(s), "a secret appears in the logs");
        assert!(!metrics.contains(s), "a secret appears in the metrics");
    }
}

/// Reads a fixture from ../shared/fixtures.
pub fn fixture(path: &str) -> String {
    let p = repo_root().join("../shared/fixtures").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A TCP proxy in front of Postgres that a test can cut and restore, to make a project
/// database unreachable without touching the real server.
pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = TcpProxy { addr, target, task: None, conns: Arc::new(Mutex::new(Vec::new())) };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        let conns = self.conns.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(h);
            }
        }));
    }

    /// Refuses new connections and cuts the open ones.
    pub async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind the proxy port");
        self.serve(listener);
    }

    /// `url` with its host:port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        url.replace(&self.target.to_string(), &self.addr.to_string())
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// The host:port of a postgres:// URL built by this harness.
pub fn pg_addr(url: &str) -> SocketAddr {
    let after = url.split('@').nth(1).unwrap();
    let hostport = after.split('/').next().unwrap();
    hostport.parse().unwrap()
}

impl TestApp {
    /// Configures a live Clerk integration on another database.
    pub async fn configure_clerk_on(&self, project: &str, whsec: &str, database_url: &str) -> client::Integration {
        self.configure_clerk_with(project, "", whsec, database_url).await
    }

    /// Configures a backfill-only Clerk integration (no webhook secret) on `database_url`.
    pub async fn configure_clerk_backfill(
        &self,
        project: &str,
        secret_key: &str,
        database_url: &str,
    ) -> client::Integration {
        self.configure_clerk_with(project, secret_key, "", database_url).await
    }

    /// Configures a Clerk integration with exactly these credentials (empty: none).
    pub async fn configure_clerk_with(
        &self,
        project: &str,
        secret_key: &str,
        whsec: &str,
        database_url: &str,
    ) -> client::Integration {
        self.client
            .configure_raw_request(client::ConfigureIntegrationRequest {
                project_id: project.into(),
                provider: client::Provider::Clerk as i32,
                database_url: database_url.into(),
                credentials: Some(client::Credentials {
                    secret_key: secret_key.into(),
                    webhook_signing_secret: whsec.into(),
                }),
            })
            .await
            .expect("configure")
    }

    pub async fn webhook_stats(&self, project: &str) -> client::WebhookStats {
        self.client.get_sync_status(project, client::Provider::Clerk).await.unwrap().webhooks.unwrap()
    }
}

/// A Clerk event envelope around `data`.
pub fn clerk_event(event_type: &str, data: serde_json::Value, timestamp_ms: i64) -> String {
    serde_json::json!({"type": event_type, "object": "event", "timestamp": timestamp_ms, "instance_id": "ins_test", "data": data})
        .to_string()
}

pub fn ms(t: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(t).unwrap()
}

/// Polls `probe` every 25 ms until it returns `Some`, for at most 15 s; panics naming `what`
/// otherwise. For effects that land asynchronously by design (cache invalidation across
/// replicas, the inbox drain), never to paper over a race.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(15), probe).await
}

/// [`eventually`] with another bound, for the few waits that are long by design (a
/// rate-limited backfill, the soak's drain).
pub async fn eventually_within<T, F, Fut>(what: &str, bound: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what} ({bound:?})");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
