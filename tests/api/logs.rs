//! Issue 12, logs: the server binary as an operator runs it (configured by environment, no
//! `--dev`, stderr to a file) writes JSON lines by default; a delivery's line carries its
//! `webhook_delivery` span (project, provider, delivery id, outcome, status), each backfill
//! page its `backfill_page` span inside the job's `backfill` span, and the end of a backfill
//! one line with its outcome and counts. Logs are read after the server has stopped (the
//! process exited, or the in-process server shut down), so no assertion waits on log text.
use capydb_auth_sync_client::{
    AuthSyncClient, BackfillState, ClientConfig, ConfigureIntegrationRequest, Credentials, Provider, SignedRequest,
};
use futures::StreamExt;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use test_harness::*;

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The server binary, configured the way a deployment is, with its stderr in `log`.
fn start_binary(control_url: &str, clerk_url: &str, master_keys: &str, log: &std::path::Path) -> ServerProcess {
    let (grpc, http) = (free_addr(), free_addr());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAPYDB_AUTH_SYNC_DATABASE_URL", control_url)
        .env("CAPYDB_AUTH_SYNC_MASTER_KEYS", master_keys)
        .env("CAPYDB_AUTH_SYNC_ADMIN_TOKENS", TEST_TOKEN)
        .env("CAPYDB_AUTH_SYNC_GRPC_ADDR", grpc.to_string())
        .env("CAPYDB_AUTH_SYNC_HTTP_ADDR", http.to_string())
        .env("CAPYDB_AUTH_SYNC_METRICS_ADDR", "")
        .env("CAPYDB_AUTH_SYNC_PUBLIC_BASE_URL", format!("http://{http}"))
        .env("CAPYDB_AUTH_SYNC_CLERK_API_URL", clerk_url)
        .env("CAPYDB_AUTH_SYNC_CLERK_PAGE_SIZE", "100")
        .env("CAPYDB_AUTH_SYNC_DATABASE_ALLOW", "127.0.0.0/8")
        .env("CAPYDB_AUTH_SYNC_SHUTDOWN_GRACE_SECS", "5")
        // Page lines are debug; everything else at the default level.
        .env("RUST_LOG", "info,tower=warn,hyper=warn,h2=warn,tokio_postgres=warn,capydb_auth_sync::backfill=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary");
    ServerProcess { child, grpc, http }
}

struct ServerProcess {
    child: tokio::process::Child,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

impl ServerProcess {
    /// SIGTERM, then the graceful exit (bounded): every line is written by then.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(status.success(), "kill -TERM {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .unwrap();
        assert!(exit.success(), "graceful exit, got {exit}");
    }
}

/// The first line whose `message` is `message` and that satisfies `pick`.
fn find<'a>(lines: &'a [Value], message: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == message && pick(l))
        .unwrap_or_else(|| panic!("no {message:?} line matches in:\n{}", render(lines)))
}

fn render(lines: &[Value]) -> String {
    lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn the_binary_logs_json_lines_carrying_delivery_and_backfill_spans() {
    let control_url = new_control_db().await;
    let project_url = new_project_db().await;
    let clerk = FakeClerk::start(FakeClerkConfig { users: 250, rate_limit: None, ..Default::default() }).await.unwrap();
    let master_keys = test_keyring_spec("k1");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = start_binary(&control_url, &clerk.url(), &master_keys, &log);

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let readyz = format!("http://{}/readyz", server.http);
    eventually("the server binary answers /readyz", || async {
        http.get(&readyz).send().await.ok().filter(|r| r.status() == 200)
    })
    .await;
    let client = AuthSyncClient::connect(ClientConfig::new(format!("http://{}", server.grpc)).with_token(TEST_TOKEN))
        .await
        .unwrap();
    let whsec = new_whsec();
    client
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: "logs".into(),
            provider: Provider::Clerk as i32,
            database_url: project_url.clone(),
            credentials: Some(Credentials {
                secret_key: clerk.secret_key().to_string(),
                webhook_signing_secret: whsec.clone(),
            }),
        })
        .await
        .expect("configure starts the initial backfill");
    let mut stream = client.watch_backfill("logs", Provider::Clerk).await.unwrap();
    let mut job = None;
    while let Some(snapshot) =
        tokio::time::timeout(Duration::from_secs(60), stream.next()).await.expect("the backfill ends in time")
    {
        job = Some(snapshot.unwrap());
    }
    let job = job.expect("a snapshot");
    assert_eq!(job.state, BackfillState::Succeeded as i32, "{job:?}");

    let receiver = format!("http://{}/api/capydb/v1/integrations/clerk/webhook/logs", server.http);
    let user = json!({"id": "user_logs_1", "object": "user", "created_at": 1, "updated_at": 1,
                      "email_addresses": [], "first_name": "Log"});
    let signed = SignedRequest::clerk_now(&whsec, clerk_event("user.created", user, 1)).unwrap();
    let delivery_id = signed.header("svix-id").expect("a Svix message id").to_string();
    let resp = http.post(&receiver).headers(signed.header_map()).body(signed.body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let forged = SignedRequest::clerk_now(&new_whsec(), b"{}".to_vec()).unwrap();
    let resp = http.post(&receiver).headers(forged.header_map()).body(forged.body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    server.stop().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(!text.contains('\u{1b}'), "no ANSI codes in a log file");
    for secret in [whsec.as_str(), clerk.secret_key(), TEST_TOKEN, master_keys.as_str()] {
        assert!(!text.contains(secret), "a secret is in the log");
    }

    // The delivery: its span carries project, provider, the Svix id, outcome and status.
    let applied = find(&lines, "webhook delivery", |l| l["span"]["delivery_id"] == delivery_id.as_str());
    assert_eq!(applied["span"]["name"], "webhook_delivery");
    assert_eq!(applied["span"]["project_id"], "logs");
    assert_eq!(applied["span"]["provider"], "clerk");
    assert_eq!(applied["span"]["outcome"], "applied");
    assert_eq!(applied["span"]["status"], 200);
    assert_eq!(applied["event_type"], "user.created");
    assert_eq!(applied["level"], "INFO");
    assert!(applied["latency_ms"].is_u64(), "latency in whole ms: {applied}");
    let rejected = find(&lines, "webhook delivery", |l| l["span"]["status"] == 401);
    assert_eq!(rejected["span"]["outcome"], "rejected");
    assert_eq!(rejected["span"]["project_id"], "logs");
    assert!(rejected["span"].get("delivery_id").is_none(), "an unverified id is not logged: {rejected}");
    assert!(rejected["error"].as_str().unwrap().contains("verification failed"), "{rejected}");

    // Each page: a backfill_page span (job page number, users) inside the job's span.
    let pages: Vec<&Value> = lines.iter().filter(|l| l["message"] == "backfill page committed").collect();
    assert_eq!(pages.len(), 3, "250 users in pages of 100:\n{}", render(&lines));
    let mut users = 0;
    for (n, page) in pages.iter().enumerate() {
        assert_eq!(page["span"]["name"], "backfill_page");
        assert_eq!(page["span"]["page"], n as u64 + 1);
        users += page["span"]["users"].as_u64().expect("users on the page span");
        let job_span = &page["spans"][0];
        assert_eq!(job_span["name"], "backfill");
        assert_eq!(job_span["project_id"], "logs");
        assert_eq!(job_span["job_id"], job.id.as_str());
    }
    assert_eq!(users, 250, "each user counted on one page");

    // The end of the backfill: one line, outcome and counts.
    let finished: Vec<&Value> = lines.iter().filter(|l| l["message"] == "backfill finished").collect();
    assert_eq!(finished.len(), 1, "{}", render(&lines));
    let finished = finished[0];
    assert_eq!(finished["level"], "INFO");
    assert_eq!(finished["outcome"], "succeeded");
    assert_eq!(finished["span"]["job_id"], job.id.as_str());
    assert_eq!(finished["span"]["project_id"], "logs");
    assert_eq!(finished["pages"], 3);
    assert_eq!(finished["users_fetched"], 250);
    assert_eq!(finished["users_written"], 250);
    assert_eq!(finished["users_unchanged"], 0);
    assert!(finished["duration_ms"].is_u64(), "{finished}");

    drop_database(&project_url).await;
    drop_database(&control_url).await;
}

#[tokio::test]
async fn a_failed_backfill_logs_one_warning_with_its_outcome_counts_and_error() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 50, rate_limit: None, ..Default::default() }).await.unwrap();
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| s.clerk.page_size = 10),
        ..Default::default()
    })
    .await;
    // Requests: the key check, page 1, then page 2, answered 401 (the key was revoked): the
    // job fails with page 1 committed.
    let gate = clerk.pause_users_request(3);
    app.configure_clerk_backfill("revoked-logs", clerk.secret_key(), &app.project_url).await;
    gate.wait_arrived().await;
    clerk.inject_fault(fake_clerk::Fault::Status(401));
    gate.release();
    let job = app.wait_backfill_done("revoked-logs").await;
    assert_eq!(job.state, BackfillState::Failed as i32);
    // Shutdown waits for the runner, so its last line is written by now.
    app.shutdown().await.unwrap();

    let job_field = format!("job_id={}", job.id);
    let logs = captured_logs();
    let ends: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&job_field) && (l.contains("backfill failed") || l.contains("backfill finished")))
        .collect();
    assert_eq!(ends.len(), 1, "one line for the end of the job:\n{}", ends.join("\n"));
    let line = ends[0];
    for needle in [" WARN ", "backfill failed", "outcome=failed", "pages=1", "users_fetched=10", "users_written=10"] {
        assert!(line.contains(needle), "{needle:?} missing in {line}");
    }
    assert!(line.contains("error=") && line.contains("Clerk rejected the secret key"), "{line}");
    assert!(!line.contains(clerk.secret_key()), "no secret in the line");
}
