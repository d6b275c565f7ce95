//! Backfill benchmark on loopback: the release server started as a user would (its own
//! process, configured by environment), the fake Clerk in this process, real Postgres.
//!
//!     cargo build --release --bins && cargo run --release --example bench_backfill
//!     cargo run --release --example bench_backfill -- --users 200000 --throttled-users 50000
//!
//! Runs, in one go and on the same machine:
//! 1. `--users` users (default 200,000) from a fake Clerk without a rate limit, timed from
//!    the ConfigureIntegration call to the job's `finished_at` (the server's clock, the same
//!    machine), against a binary `COPY` of the same rows (the
//!    same typed columns and `raw`) into an empty `capydb_auth.users`;
//! 2. `--throttled-users` users (default 50,000) behind Clerk's development limit (100
//!    requests / 10 s), against the ceiling that limit allows (500 users a request);
//! 3. the server's peak RSS (VmHWM) for a backfill of `--throttled-users` and of `--users`
//!    users (each in a fresh server process).
//!
//! Prints a markdown table with ratios. Talks only to 127.0.0.1, bounded in count and time,
//! drops its databases.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capydb_auth_sync::local_postgres::{self, LocalPostgres};
use capydb_auth_sync::providers::clerk::user_from_clerk;
use capydb_auth_sync_client::{
    AuthSyncClient, BackfillJob, ClientConfig, ConfigureIntegrationRequest, Credentials, Provider,
};
use fake_clerk::{FakeClerk, FakeClerkConfig, RateLimit};
use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const TOKEN: &str = "bench-admin-token-0123456789";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Db<'a> {
    pg: &'a LocalPostgres,
    names: Vec<String>,
}

impl Db<'_> {
    async fn create(&mut self, label: &str) -> String {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let name = format!("capybench_bf_{stamp}_{label}");
        capydb_auth_sync::dev::create_database(self.pg, &name).await.expect("create database");
        self.names.push(name.clone());
        self.pg.url_for(&name)
    }

    async fn drop_all(&self) {
        let (admin, conn) = tokio_postgres::connect(&self.pg.url_for("postgres"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        for db in &self.names {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
        }
    }
}

/// The release server in its own process.
struct Server {
    child: Child,
    client: AuthSyncClient,
}

impl Server {
    async fn start(control_url: &str, clerk_url: &str, rate_limit_test: u32, port: u16) -> Server {
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/capydb-auth-sync");
        assert!(bin.exists(), "build the server first: cargo build --release --bins");
        let keys = capydb_auth_sync::crypto::Keyring::generate_spec("bench");
        // The server's log (level: BENCH_SERVER_LOG, default warn), appended per run.
        let log_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-backfill-server.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("server log file");
        let child = Command::new(bin)
            .env("CAPYDB_AUTH_SYNC_DATABASE_URL", control_url)
            .env("CAPYDB_AUTH_SYNC_MASTER_KEYS", keys.expose_secret())
            .env("CAPYDB_AUTH_SYNC_ADMIN_TOKENS", TOKEN)
            // The benchmark's project database is on loopback, which production refuses by default.
            .env("CAPYDB_AUTH_SYNC_DATABASE_ALLOW", "127.0.0.0/8,localhost")
            .env("CAPYDB_AUTH_SYNC_GRPC_ADDR", format!("127.0.0.1:{port}"))
            .env("CAPYDB_AUTH_SYNC_HTTP_ADDR", format!("127.0.0.1:{}", port + 1))
            .env("CAPYDB_AUTH_SYNC_METRICS_ADDR", "")
            .env("CAPYDB_AUTH_SYNC_CLERK_API_URL", clerk_url)
            .env("CAPYDB_AUTH_SYNC_CLERK_RATE_LIMIT_TEST", rate_limit_test.to_string())
            .env("RUST_LOG", std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the server");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let config = ClientConfig::new(format!("http://127.0.0.1:{port}")).with_token(TOKEN);
            match AuthSyncClient::connect(config).await {
                Ok(c) if c.list_integrations(None).await.is_ok() => break c,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("server did not come up: {e}"),
                Ok(_) => panic!("server did not answer"),
            }
        };
        Server { child, client }
    }

    /// Configures a Clerk integration and waits for its backfill: (job, seconds from the
    /// ConfigureIntegration call to the job's `finished_at`; WatchBackfill's polling interval
    /// is the watcher's delay, not the backfill's, and is left out).
    async fn backfill(&self, project_url: &str, key: &str) -> (BackfillJob, f64) {
        let started = std::time::SystemTime::now();
        self.client
            .configure_raw_request(ConfigureIntegrationRequest {
                project_id: "bench".into(),
                provider: Provider::Clerk as i32,
                database_url: project_url.into(),
                credentials: Some(Credentials { secret_key: key.into(), webhook_signing_secret: String::new() }),
            })
            .await
            .expect("configure");
        let mut stream = self.client.watch_backfill("bench", Provider::Clerk).await.unwrap();
        let mut last = None;
        while let Some(Ok(job)) =
            tokio::time::timeout(Duration::from_secs(900), stream.next()).await.expect("backfill within 15 min")
        {
            last = Some(job);
        }
        let job = last.expect("a snapshot");
        let finished = job.finished_at.as_ref().expect("a finished job has finished_at");
        let finished = std::time::UNIX_EPOCH + Duration::new(finished.seconds as u64, finished.nanos as u32);
        let secs = finished.duration_since(started).expect("the job ended after it was configured").as_secs_f64();
        (job, secs)
    }

    /// Peak resident set size (VmHWM) so far, in MB.
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// CPU time (user + system) the server used so far, in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Binary COPY of the users' rows (typed columns + raw) into an empty users table: seconds.
async fn copy_baseline(url: &str, users: &[serde_json::Value]) -> f64 {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // The table exactly as ConfigureIntegration creates it (SPEC §2, plus its created_at index).
    c.batch_execute(
        "CREATE SCHEMA capydb_auth; CREATE TABLE capydb_auth.users (id text PRIMARY KEY, email text, \
         first_name text, last_name text, username text, image_url text, created_at timestamptz, \
         updated_at timestamptz, last_sign_in_at timestamptz, deleted_at timestamptz, raw jsonb); \
         CREATE INDEX users_created_at_idx ON capydb_auth.users (created_at)",
    )
    .await
    .expect("users table");
    let records: Vec<_> = users.iter().map(|u| user_from_clerk(u).expect("fake users parse")).collect();
    let started = Instant::now();
    let sink = c
        .copy_in(
            "COPY capydb_auth.users (id, email, first_name, last_name, username, image_url, created_at, updated_at, \
             last_sign_in_at, raw) FROM STDIN (FORMAT binary)",
        )
        .await
        .unwrap();
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::JSONB,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for r in &records {
        writer
            .as_mut()
            .write(&[
                &r.id,
                &r.email,
                &r.first_name,
                &r.last_name,
                &r.username,
                &r.image_url,
                &r.created_at,
                &r.updated_at,
                &r.last_sign_in_at,
                &r.raw,
            ])
            .await
            .unwrap();
    }
    writer.finish().await.unwrap();
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let users = arg("--users", 200_000).clamp(1, 500_000);
    let throttled = arg("--throttled-users", 50_000).clamp(1, 200_000);
    let pg = local_postgres::ensure(std::path::Path::new("target/bench-pg")).await.expect("postgres");
    let mut dbs = Db { pg: &pg, names: Vec::new() };

    // 1. Unthrottled backfill of `users`, then a binary COPY of the same rows.
    let clerk = FakeClerk::start(FakeClerkConfig { users, ..Default::default() }).await.unwrap();
    let (control, project) = (dbs.create("ctl1").await, dbs.create("prj1").await);
    let server = Server::start(&control, &clerk.url(), 1_000_000, 50_071).await;
    let (job, secs) = server.backfill(&project, clerk.secret_key()).await;
    assert_eq!(job.users_written as usize, users, "every user landed: {job:?}");
    let rss_big = server.peak_rss_mb();
    let cpu = server.cpu_secs();
    server.stop();
    let backfill_rate = users as f64 / secs;
    let snapshot = clerk.users_snapshot();
    let copy_secs = copy_baseline(&dbs.create("copy").await, &snapshot).await;
    let copy_rate = users as f64 / copy_secs;
    drop(snapshot);
    drop(clerk);

    // 2. Throttled: Clerk's development limit, 100 requests / 10 s (a bucket of 100).
    let clerk = FakeClerk::start(FakeClerkConfig {
        users: throttled,
        rate_limit: Some(RateLimit::DEVELOPMENT),
        ..Default::default()
    })
    .await
    .unwrap();
    let (control, project) = (dbs.create("ctl2").await, dbs.create("prj2").await);
    let server = Server::start(&control, &clerk.url(), 100, 50_081).await;
    let (job, throttled_secs) = server.backfill(&project, clerk.secret_key()).await;
    assert_eq!(job.users_written as usize, throttled, "every user landed: {job:?}");
    server.stop();
    let natural_429 = clerk.rate_limited_count();
    let throttled_rate = throttled as f64 / throttled_secs;
    let ceiling = 5_000.0;
    drop(clerk);

    // 3. Peak RSS for `throttled` users unthrottled (the `users` figure came from run 1).
    let clerk = FakeClerk::start(FakeClerkConfig { users: throttled, ..Default::default() }).await.unwrap();
    let (control, project) = (dbs.create("ctl3").await, dbs.create("prj3").await);
    let server = Server::start(&control, &clerk.url(), 1_000_000, 50_091).await;
    let (job, _) = server.backfill(&project, clerk.secret_key()).await;
    assert_eq!(job.users_written as usize, throttled);
    let rss_small = server.peak_rss_mb();
    server.stop();
    drop(clerk);
    dbs.drop_all().await;

    let date = chrono::Utc::now().format("%Y-%m-%d");
    println!("Backfill benchmark, {date}, {} CPUs, loopback, fake Clerk in the bench process", cpus());
    println!();
    println!("| figure | measured | ratio | target |");
    println!("|---|---|---|---|");
    println!(
        "| {users} users unthrottled vs binary COPY of the same rows | {backfill_rate:.0} users/s ({secs:.1} s, server CPU {cpu:.1} s) vs {copy_rate:.0} rows/s ({copy_secs:.1} s) | {:.2}× | ≥ 0.7× |",
        backfill_rate / copy_rate
    );
    println!(
        "| {throttled} users at 100 requests / 10 s vs the 5,000 users/s ceiling | {throttled_rate:.0} users/s ({throttled_secs:.1} s), {natural_429} natural 429s | {:.2} | ≥ 0.95, ≤ 1 natural 429 |",
        throttled_rate / ceiling
    );
    println!(
        "| server peak RSS, {throttled} vs {users} users | {rss_small:.0} MB vs {rss_big:.0} MB | {:.2}× | < 150 MB, within 10 % |",
        rss_big / rss_small.max(1.0)
    );
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
