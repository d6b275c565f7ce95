//! The benchmark of the webhook path against the obvious implementation, on loopback:
//!
//!     cargo run --release --example bench
//!     cargo run --release --example bench -- --deliveries 0 --backfill-users 50000
//!
//! It builds and starts the release server binary as a user would (environment
//! configuration, free loopback ports, its log in `target/bench-server.log`), configures a
//! Clerk integration through the client crate, and for 1, 8 and 64 in flight runs the same
//! events twice on the same Postgres: as signed Clerk deliveries to the service, and as the
//! baseline — the same rows straight from tokio-postgres, one transaction per event. It prints
//! a markdown table (events/s, p50/p99/p99.9, CPU per event, server peak RSS) and the issue's
//! targets. Backfill: serves `--backfill-users` users from the fake Clerk (no rate limit) and
//! times a full backfill.
//!
//! Options: `--deliveries N` per run at 8 and 64 in flight (a quarter at 1; default 20000),
//! `--users N` population (default 2000), `--in-flight 1,8,64`, `--seconds N` time budget
//! per run (default 60, at most 200: the Svix timestamps signed before a run must stay fresh),
//! `--server-bin PATH` (skip the build). Everything is bounded in count and time, talks only to
//! 127.0.0.1, and drops its databases.
mod load;
mod pgcpu;
mod report;
mod server;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capydb_auth_sync::local_postgres::{self, LocalPostgres};
use capydb_auth_sync::project_db::{ProjectDbSettings, ProjectPools};
use capydb_auth_sync_client::{
    AuthSyncClient, ClientConfig, ClientError, ConfigureIntegrationRequest, Credentials, Provider, SignedRequest,
};
use futures::StreamExt;
use secrecy::SecretString;

use load::Delivery;
use report::{Context, Pair};
use server::Server;
use workload::{Event, Kind, Workload};

const TOKEN: &str = "bench-admin-token-0123456789";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PROJECT: &str = "bench";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("gRPC: {0}")]
    Client(#[from] ClientError),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

struct Options {
    deliveries: usize,
    users: usize,
    in_flight: Vec<usize>,
    budget: Duration,
    backfill_users: usize,
    server_bin: Option<PathBuf>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let number = |name: &str, default: usize| value(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    Options {
        deliveries: number("--deliveries", 20_000).min(200_000),
        users: number("--users", 2_000).clamp(1, 1_000_000),
        in_flight: value("--in-flight")
            .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).map(|c: usize| c.clamp(1, 80)).collect())
            .unwrap_or_else(|| vec![1, 8, 64]),
        budget: Duration::from_secs(number("--seconds", 60).clamp(1, 200) as u64),
        backfill_users: number("--backfill-users", 0).min(500_000),
        server_bin: value("--server-bin").map(PathBuf::from),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = options();
    let pg = match local_postgres::ensure(std::path::Path::new("target/bench-pg")).await {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("error: no Postgres: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dbs = Databases {
        control: format!("capybench_{stamp}_ctl"),
        project: format!("capybench_{stamp}_prj"),
        baseline: format!("capybench_{stamp}_base"),
    };
    let result = run(&pg, &dbs, &opts).await;
    dbs.drop_all(&pg).await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Databases {
    control: String,
    project: String,
    baseline: String,
}

impl Databases {
    async fn drop_all(&self, pg: &LocalPostgres) {
        let Ok((admin, conn)) = tokio_postgres::connect(&pg.url_for("postgres"), tokio_postgres::NoTls).await else {
            eprintln!("could not connect to drop the benchmark databases");
            return;
        };
        tokio::spawn(conn);
        for db in [&self.control, &self.project, &self.baseline] {
            if let Err(e) = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await {
                eprintln!("could not drop {db}: {e}");
            }
        }
    }
}

async fn run(pg: &LocalPostgres, dbs: &Databases, opts: &Options) -> Result<(), BenchError> {
    for db in [&dbs.control, &dbs.project, &dbs.baseline] {
        capydb_auth_sync::dev::create_database(pg, db).await.map_err(|e| BenchError::Setup(e.to_string()))?;
    }
    let bin = server::binary(opts.server_bin.clone())?;
    let master_keys = server::generate_key(&bin).await?;
    let clerk = if opts.backfill_users > 0 {
        let config = fake_clerk::FakeClerkConfig { users: opts.backfill_users, rate_limit: None, ..Default::default() };
        Some(fake_clerk::FakeClerk::start(config).await.map_err(|e| BenchError::Setup(format!("fake Clerk: {e}")))?)
    } else {
        None
    };
    let mut env = Vec::new();
    if let Some(c) = &clerk {
        env.push(("CAPYDB_AUTH_SYNC_CLERK_API_URL", c.url()));
        env.push(("CAPYDB_AUTH_SYNC_CLERK_RATE_LIMIT_TEST", "1000000".to_string()));
    }
    let log = PathBuf::from("target/bench-server.log");
    let control_url = format!("{}?sslmode=disable", pg.url_for(&dbs.control));
    let server = Server::start(&bin, &control_url, &master_keys, TOKEN, &env, log).await?;
    eprintln!("server {} started (pid {}), log in {}", bin.display(), server.pid(), server.log.display());
    let result = drive(pg, dbs, opts, &server, clerk.as_ref()).await;
    let stopped = server.stop().await;
    result.and(stopped)
}

async fn drive(
    pg: &LocalPostgres,
    dbs: &Databases,
    opts: &Options,
    server: &Server,
    clerk: Option<&fake_clerk::FakeClerk>,
) -> Result<(), BenchError> {
    let client = AuthSyncClient::connect(ClientConfig::new(server.grpc_url.clone()).with_token(TOKEN)).await?;
    let started = Instant::now();
    client
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: PROJECT.into(),
            provider: Provider::Clerk as i32,
            // No TLS, like the baseline's connections: the same transport for both.
            database_url: format!(
                "{}?sslmode=disable{}",
                pg.url_for(&dbs.project),
                std::env::var("BENCH_PG_OPTS").unwrap_or_default()
            ),
            credentials: Some(Credentials {
                secret_key: clerk.map(|c| c.secret_key().to_string()).unwrap_or_default(),
                webhook_signing_secret: WHSEC.into(),
            }),
        })
        .await?;
    if clerk.is_some() {
        backfill(&client, started).await?;
    }
    if opts.deliveries > 0 {
        webhooks(pg, dbs, opts, server).await?;
    }
    Ok(())
}

async fn backfill(client: &AuthSyncClient, started: Instant) -> Result<(), BenchError> {
    let mut stream = client.watch_backfill(PROJECT, Provider::Clerk).await?;
    let mut last = None;
    while let Some(Ok(job)) = tokio::time::timeout(Duration::from_secs(600), stream.next())
        .await
        .map_err(|_| BenchError::Setup("the backfill did not finish within 10 minutes".into()))?
    {
        last = Some(job);
    }
    let job = last.ok_or_else(|| BenchError::Setup("the backfill stream ended without a job".into()))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backfill: {} users written in {:.2} s = {:.0} users/s ({} pages, state {})",
        job.users_written,
        secs,
        job.users_written as f64 / secs,
        job.pages,
        job.state
    );
    Ok(())
}

async fn webhooks(pg: &LocalPostgres, dbs: &Databases, opts: &Options, server: &Server) -> Result<(), BenchError> {
    let template_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/clerk/user.updated.json");
    let template: serde_json::Value = serde_json::from_slice(&std::fs::read(template_path)?)
        .map_err(|e| BenchError::Setup(format!("{template_path}: {e}")))?;
    let baseline_url = pg.url_for(&dbs.baseline);
    {
        // The baseline's table is the service's: same DDL, same index.
        // The baseline database is on loopback, which the default outbound policy refuses.
        let settings = ProjectDbSettings {
            outbound: std::sync::Arc::new(capydb_auth_sync::outbound::OutboundPolicy::dev()),
            ..Default::default()
        };
        let pools = ProjectPools::new(settings);
        let pool = pools
            .pool("baseline", &SecretString::from(baseline_url.clone()))
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let mut conn = pool.get().await.map_err(|e| BenchError::Setup(e.to_string()))?;
        capydb_auth_sync::users::schema::ensure_users_table(&mut conn)
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
    }
    let url = format!("{}/api/capydb/v1/integrations/clerk/webhook/{PROJECT}", server.http_base);
    let (service_db, baseline_db) = (connect(&pg.url_for(&dbs.project)).await?, connect(&baseline_url).await?);

    // Warm both up (connections, prepared statements, caches); not measured.
    let mut warm = Workload::new(template.clone(), "w", 200, 7);
    let events = Arc::new(warm.take(1_000));
    load::run_baseline(&baseline_url, events.clone(), 8, opts.budget).await?;
    load::run_service(&url, Arc::new(sign(&events, "w")?), 8, opts.budget).await?;

    let load_before = load_average();
    let mut pairs = Vec::new();
    let (mut sizes, mut mix) = (Vec::new(), (0, 0, 0));
    let mut peak_rss_c64 = None;
    for (run, &in_flight) in opts.in_flight.iter().enumerate() {
        let count = if in_flight == 1 { (opts.deliveries / 4).max(1) } else { opts.deliveries };
        let prefix = format!("r{run}c{in_flight}");
        let events = Arc::new(Workload::new(template.clone(), &prefix, opts.users, 42 + run as u64).take(count));
        sizes.extend(events.iter().filter(|e| e.kind != Kind::Deleted).map(|e| e.body.len()));
        for e in events.iter() {
            match e.kind {
                Kind::Created => mix.0 += 1,
                Kind::Updated => mix.1 += 1,
                Kind::Deleted => mix.2 += 1,
            }
        }

        let cpu_before = server::cpu_time(std::process::id())?;
        let pg_cpu = pgcpu::PgCpu::start(&pg.url_for("postgres"), &dbs.baseline).await?;
        let baseline = load::run_baseline(&baseline_url, events.clone(), in_flight, opts.budget).await?;
        let baseline_pg_cpu = pg_cpu.finish().await?;
        let baseline_client_cpu = server::cpu_time(std::process::id())?.saturating_sub(cpu_before);

        let deliveries = Arc::new(sign(&events, &prefix)?);
        if in_flight == 64 {
            server.reset_peak_rss()?;
        }
        let commits_before = server.group_commits().await?;
        let cpu_before = server.cpu_time()?;
        let sender_cpu_before = server::cpu_time(std::process::id())?;
        let pg_cpu = pgcpu::PgCpu::start(&pg.url_for("postgres"), &dbs.project).await?;
        let service = load::run_service(&url, deliveries, in_flight, opts.budget).await?;
        let service_pg_cpu = pg_cpu.finish().await?;
        let service_sender_cpu = server::cpu_time(std::process::id())?.saturating_sub(sender_cpu_before);
        let service_cpu = server.cpu_time()?.saturating_sub(cpu_before);
        let commits_after = server.group_commits().await?;
        let group_commits = (commits_after.0 - commits_before.0, commits_after.1 - commits_before.1);
        if in_flight == 64 {
            peak_rss_c64 = Some(server.peak_rss()?);
        }
        let tables_equal = if baseline.sent == service.sent {
            digest(&service_db, &prefix).await? == digest(&baseline_db, &prefix).await?
        } else {
            false // a run cut by its time budget: different rows were sent
        };
        eprintln!(
            "{in_flight} in flight: baseline {:.0}/s, service {:.0}/s",
            baseline.per_second(),
            service.per_second()
        );
        pairs.push(Pair {
            in_flight,
            baseline,
            baseline_client_cpu,
            baseline_pg_cpu,
            service,
            service_sender_cpu,
            service_pg_cpu,
            service_cpu,
            group_commits,
            tables_equal,
        });
    }

    sizes.sort_unstable();
    let postgres: String = service_db.query_one("SELECT current_setting('server_version')", &[]).await?.get(0);
    let sync: String = service_db.query_one("SELECT current_setting('synchronous_commit')", &[]).await?.get(0);
    let ctx = Context {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        postgres: format!("PostgreSQL {postgres} on loopback (synchronous_commit={sync})"),
        users: opts.users,
        body_bytes: (
            sizes.first().copied().unwrap_or(0),
            sizes.iter().sum::<usize>() / sizes.len().max(1),
            sizes.last().copied().unwrap_or(0),
        ),
        mix,
        load: (load_before, load_average()),
    };
    println!("{}", report::render(&ctx, &pairs, peak_rss_c64));
    println!("server peak RSS over the whole benchmark: {:.0} MB", server.peak_rss()? as f64 / 1_048_576.0);
    Ok(())
}

/// Signs every event now, so signing is off the clock and the Svix timestamps are fresh.
fn sign(events: &[Event], label: &str) -> Result<Vec<Delivery>, BenchError> {
    let now = capydb_auth_sync_client::signing::unix_now();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            SignedRequest::clerk(WHSEC, &format!("msg_bench{label}x{i}"), now, e.body.clone())
                .map(Delivery::from)
                .map_err(|e| BenchError::Setup(format!("signing: {e}")))
        })
        .collect()
}

/// The 1-minute load average (other work competing for the CPUs).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The rows of one run as one hash: what must be equal when both applied the same events.
async fn digest(db: &tokio_postgres::Client, prefix: &str) -> Result<(i64, i64, Option<String>), BenchError> {
    let row = db
        .query_one(
            "SELECT count(*), count(deleted_at), md5(string_agg(id || '|' || coalesce(updated_at::text, '') || '|' \
             || coalesce(deleted_at::text, '') || '|' || md5(raw::text), ',' ORDER BY id)) \
             FROM capydb_auth.users WHERE id LIKE $1",
            &[&format!("user\\_2b{prefix}%")],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}
