//! Throughput benchmark on loopback: the real server in-process, real Postgres, real HTTP.
//!
//!     cargo run --release --example bench -- --deliveries 20000 --concurrency 64 --users 2000
//!     cargo run --release --example bench -- --backfill-users 50000
//!
//! Webhooks: pre-signs `--deliveries` Clerk `user.updated` events spread over `--users` users
//! (versions increase, so most apply and some race), sends them with `--concurrency` in
//! flight, and prints deliveries per second and latency percentiles. Backfill: serves
//! `--backfill-users` users from the fake Clerk (no rate limit) and times a full backfill.
//! Everything is bounded in count and time, talks only to 127.0.0.1, and drops its databases.
use std::time::{Duration, Instant};

use capydb_auth_sync::app::{self, Listeners};
use capydb_auth_sync::config::Settings;
use capydb_auth_sync::crypto::Keyring;
use capydb_auth_sync::local_postgres;
use capydb_auth_sync_client::{
    AuthSyncClient, ClientConfig, ConfigureIntegrationRequest, Credentials, Provider, SignedRequest,
};
use futures::StreamExt;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-admin-token-0123456789";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let deliveries = arg("--deliveries", 10_000).min(200_000);
    let concurrency = arg("--concurrency", 32).clamp(1, 512);
    let users = arg("--users", 1_000).max(1);
    let backfill_users = arg("--backfill-users", 0).min(500_000);

    let pg = local_postgres::ensure(std::path::Path::new("target/bench-pg")).await.expect("postgres");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (control_db, project_db) = (format!("capybench_{stamp}_ctl"), format!("capybench_{stamp}_prj"));
    for db in [&control_db, &project_db] {
        capydb_auth_sync::dev::create_database(&pg, db).await.expect("create database");
    }
    let clerk = if backfill_users > 0 {
        Some(
            fake_clerk::FakeClerk::start(fake_clerk::FakeClerkConfig {
                users: backfill_users,
                rate_limit: None,
                ..Default::default()
            })
            .await
            .unwrap(),
        )
    } else {
        None
    };

    let keyring = Keyring::parse(&Keyring::generate_spec("bench")).unwrap();
    let mut settings = Settings::new(
        SecretString::from(pg.url_for(&control_db)),
        keyring,
        vec![SecretString::from(TOKEN.to_string())],
    );
    settings.project_db.pool_size = 16;
    // The project databases are on loopback, which only dev mode allows by default.
    settings.project_db.outbound = std::sync::Arc::new(capydb_auth_sync::outbound::OutboundPolicy::dev());
    if let Some(c) = &clerk {
        settings.clerk.api_url = c.url();
        settings.clerk.rate_limit_test = 1_000_000;
    }
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app::run(settings, Listeners { grpc, http, metrics: None }, shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client =
        AuthSyncClient::connect(ClientConfig::new(format!("http://{grpc_addr}")).with_token(TOKEN)).await.unwrap();

    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let started = Instant::now();
    client
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: "bench".into(),
            provider: Provider::Clerk as i32,
            database_url: pg.url_for(&project_db),
            credentials: Some(Credentials {
                secret_key: clerk.as_ref().map(|c| c.secret_key().to_string()).unwrap_or_default(),
                webhook_signing_secret: whsec.into(),
            }),
        })
        .await
        .expect("configure");

    if clerk.is_some() {
        let mut stream = client.watch_backfill("bench", Provider::Clerk).await.unwrap();
        let mut last = None;
        while let Some(Ok(job)) =
            tokio::time::timeout(Duration::from_secs(600), stream.next()).await.expect("backfill within 10 min")
        {
            last = Some(job);
        }
        let job = last.unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "backfill: {} users written in {:.2} s = {:.0} users/s ({} pages, state {})",
            job.users_written,
            secs,
            job.users_written as f64 / secs,
            job.pages,
            job.state
        );
    }

    if deliveries > 0 {
        let url = format!("http://{http_addr}/api/capydb/v1/integrations/clerk/webhook/bench");
        let signed: Vec<SignedRequest> = (0..deliveries)
            .map(|i| {
                let user = i % users;
                let version = (i / users) as i64;
                let body = serde_json::json!({
                    "type": "user.updated", "object": "event", "timestamp": 1_700_000_000_000i64,
                    "data": {"id": format!("user_bench_{user}"), "object": "user", "first_name": format!("v{version}"),
                             "primary_email_address_id": "idn_1",
                             "email_addresses": [{"id": "idn_1", "email_address": format!("u{user}@example.com")}],
                             "created_at": 1_700_000_000_000i64, "updated_at": 1_700_000_000_000i64 + version}
                });
                SignedRequest::clerk(
                    whsec,
                    &format!("msg_{i}"),
                    capydb_auth_sync_client::signing::unix_now(),
                    body.to_string().into_bytes(),
                )
                .unwrap()
            })
            .collect();
        let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
        let t0 = Instant::now();
        let mut latencies: Vec<Duration> = futures::stream::iter(signed.iter())
            .map(|req| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let t = Instant::now();
                    let r =
                        http.post(&url).headers(req.header_map()).body(req.body.clone()).send().await.expect("send");
                    assert_eq!(r.status(), 200);
                    t.elapsed()
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let secs = t0.elapsed().as_secs_f64();
        latencies.sort();
        let p =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
        println!(
            "webhooks: {deliveries} deliveries over {users} users, {concurrency} in flight: {:.0} deliveries/s; latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            deliveries as f64 / secs,
            p(0.50),
            p(0.95),
            p(0.99),
            p(1.0)
        );
    }

    shutdown.cancel();
    let _ = server.await;
    let (admin, conn) = tokio_postgres::connect(&pg.url_for("postgres"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for db in [&control_db, &project_db] {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
    }
}
