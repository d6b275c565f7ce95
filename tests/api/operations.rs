//! Running it: the real binary's start-up checks and SIGTERM, the control database going
//! away, graceful shutdown handing a backfill over.
use capydb_auth_sync_client::{BackfillState, Provider};
use std::process::Stdio;
use std::time::Duration;
use test_harness::*;

fn server_binary() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CAPYDB_AUTH_SYNC_") {
            c.env_remove(k);
        }
    }
    c
}

#[tokio::test]
async fn the_binary_refuses_to_start_without_keys_and_says_what_to_set() {
    let control = new_control_db().await;
    let out = tokio::task::spawn_blocking(move || {
        server_binary()
            .env("CAPYDB_AUTH_SYNC_DATABASE_URL", control)
            .env("CAPYDB_AUTH_SYNC_ADMIN_TOKENS", TEST_TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAPYDB_AUTH_SYNC_MASTER_KEYS") && err.contains("--dev"), "{err}");

    let out = tokio::task::spawn_blocking(|| {
        server_binary().env("CAPYDB_AUTH_SYNC_MASTER_KEYS", "k1:short").output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAPYDB_AUTH_SYNC_DATABASE_URL"), "{err}");
}

#[tokio::test]
async fn the_binary_serves_without_a_subcommand_and_exits_0_on_sigterm() {
    let control = new_control_db().await;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (grpc, http) = (free(), free());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync"))
        .env("CAPYDB_AUTH_SYNC_DATABASE_URL", &control)
        .env("CAPYDB_AUTH_SYNC_MASTER_KEYS", test_keyring_spec("k1"))
        .env("CAPYDB_AUTH_SYNC_ADMIN_TOKENS", TEST_TOKEN)
        .env("CAPYDB_AUTH_SYNC_GRPC_ADDR", grpc.to_string())
        .env("CAPYDB_AUTH_SYNC_HTTP_ADDR", http.to_string())
        .env("CAPYDB_AUTH_SYNC_METRICS_ADDR", "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    eventually("the binary serves /readyz", || async {
        let r = client.get(format!("http://{http}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let c = capydb_auth_sync_client::AuthSyncClient::connect(
        capydb_auth_sync_client::ClientConfig::new(format!("http://{grpc}")).with_token(TEST_TOKEN),
    )
    .await
    .unwrap();
    assert!(c.list_integrations(None).await.unwrap().is_empty());

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err).await.unwrap();
    assert!(err.contains("shutdown requested") && err.contains("stopped"), "{err}");
    assert!(!err.contains(TEST_TOKEN));
}

#[tokio::test]
async fn a_control_database_outage_is_503_on_readyz_and_unavailable_on_grpc_while_webhooks_keep_applying() {
    let control = new_control_db().await;
    let mut proxy = TcpProxy::start(pg_addr(&control)).await;
    let app =
        TestApp::spawn_with(TestOptions { control_url: Some(proxy.url_through(&control)), ..Default::default() }).await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("ctl", &whsec).await;
    // The integration reaches the replica's cache (by notification) before the outage.
    let warm = clerk_event("user.created", serde_json::json!({"id": "user_w", "object": "user", "updated_at": 1}), 1);
    eventually("the integration is cached", || async {
        (app.send_clerk("ctl", &whsec, &warm).await.0 == 200).then_some(())
    })
    .await;

    proxy.cut().await;
    let r = app.http.get(format!("http://{}/readyz", app.http_addr)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = app.http.get(format!("http://{}/healthz", app.http_addr)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the process is alive");
    let body = clerk_event("user.created", serde_json::json!({"id": "user_c", "object": "user", "updated_at": 1}), 1);
    // Integrations are cached and the project database is up: deliveries still land.
    let (status, answer) = app.send_clerk("ctl", &whsec, &body).await;
    assert_eq!((status, answer), (200, serde_json::json!({"status": "applied"})));
    assert!(users_table(&app.project().await).await.contains_key("user_c"));
    // Junk is still told apart without the control database: a wrong signature, a made-up project.
    assert_eq!(app.send_clerk("ctl", &new_whsec(), &body).await.0, 401);
    assert_eq!(app.send_clerk("made_up", &whsec, &body).await.0, 404);
    let err = app.client_with_token(Some(TEST_TOKEN)).list_integrations(None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    proxy.restore().await;
    eventually("/readyz recovers", || async {
        (app.http.get(format!("http://{}/readyz", app.http_addr)).send().await.unwrap().status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        app.send_clerk("ctl", &whsec, &body).await,
        (200, serde_json::json!({"status": "ignored", "reason": "duplicate"}))
    );
    let stats = app.webhook_stats("ctl").await;
    assert_eq!((stats.applied, stats.ignored_duplicate, stats.rejected), (2, 1, 1), "counts kept through the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_a_running_backfill_to_the_next_server_at_once() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 900, rate_limit: None, ..Default::default() }).await.unwrap();
    let keyring = test_keyring_spec("k1");
    let control = new_control_db().await;
    let project = new_project_db().await;
    let opts = || TestOptions {
        control_url: Some(control.clone()),
        project_url: Some(project.clone()),
        keyring: Some(keyring.clone()),
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 100;
            // A lease far longer than the test: only a released lease lets the next server in.
            s.backfill.lease_ttl = Duration::from_secs(600);
        }),
    };
    let app = TestApp::spawn_with(opts()).await;
    let gate = clerk.pause_users_request(5);
    app.configure_clerk_backfill("handover", clerk.secret_key(), &project).await;
    gate.wait_arrived().await;
    let shutting_down = tokio::spawn(app.shutdown());
    gate.release();
    shutting_down.await.unwrap().expect("clean shutdown");
    let row = connect(&control)
        .await
        .query_one("SELECT state, lease_owner FROM capydb_auth_sync.backfill_jobs", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "running");
    assert_eq!(row.get::<_, Option<String>>(1), None, "the lease was handed back");

    let app = TestApp::spawn_with(opts()).await;
    let job = app.wait_backfill_done("handover").await;
    assert_eq!(job.state, BackfillState::Succeeded as i32, "{}", job.error);
    assert_eq!(job.users_written, 900);
    assert_eq!(job.resumes, 1, "resumed once, from the checkpoint");
}

#[tokio::test]
async fn watch_streams_end_when_the_server_drains_so_clients_can_move_on() {
    use futures::StreamExt;
    let clerk = FakeClerk::start(FakeClerkConfig { users: 300, rate_limit: None, ..Default::default() }).await.unwrap();
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| s.clerk.page_size = 50),
        ..Default::default()
    })
    .await;
    let gate = clerk.pause_users_request(3);
    app.configure_clerk_backfill("drain", clerk.secret_key(), &app.project_url).await;
    gate.wait_arrived().await;
    let mut stream = app.client.watch_backfill("drain", Provider::Clerk).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let shutting_down = tokio::spawn(app.shutdown());
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e.code()),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends during shutdown");
    assert_eq!(ended, Some(tonic::Code::Unavailable), "the client is told to watch again elsewhere");
    gate.release();
    shutting_down.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn the_control_database_can_require_tls() {
    let control = new_control_db().await;
    let ssl: String = connect(&control).await.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let url = format!("{control}?sslmode=require");
    if ssl != "on" {
        // A server without TLS (the harness's throwaway cluster): refuse, never plaintext.
        let keyring =
            capydb_auth_sync::crypto::Keyring::parse(&secrecy::SecretString::from(test_keyring_spec("k1"))).unwrap();
        let settings = capydb_auth_sync::config::Settings::new(
            secrecy::SecretString::from(url),
            keyring,
            vec![secrecy::SecretString::from(TEST_TOKEN.to_string())],
        );
        let listeners = capydb_auth_sync::app::Listeners {
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            metrics: None,
        };
        let run = capydb_auth_sync::app::run(settings, listeners, tokio_util::sync::CancellationToken::new());
        assert!(run.await.is_err());
        return;
    }
    let app = TestApp::spawn_with(TestOptions { control_url: Some(url), ..Default::default() }).await;
    app.configure_clerk_webhooks("tls_ctl", &new_whsec()).await;
    assert_eq!(app.client.list_integrations(None).await.unwrap().len(), 1);
    let encrypted: bool = connect(&control)
        .await
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = $1 AND a.application_name = 'capydb-auth-sync'",
            &[&control.rsplit('/').next().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "every service connection to the control database is TLS");
}

#[tokio::test]
async fn during_the_drain_period_health_is_not_serving_and_deliveries_still_apply() {
    let app = TestApp::spawn_with(TestOptions {
        tweak: Box::new(|s| s.shutdown_drain = Duration::from_secs(30)),
        ..Default::default()
    })
    .await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("drainhealth", &whsec).await;
    app.begin_shutdown();

    let health_status = || async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status
    };
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    eventually("health turns NOT_SERVING while the listeners stay open", || async {
        (health_status().await == not_serving).then_some(())
    })
    .await;
    let r = app.http.get(format!("http://{}/readyz", app.http_addr)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body =
        clerk_event("user.created", serde_json::json!({"id": "user_late", "object": "user", "updated_at": 1}), 1);
    assert_eq!(app.send_clerk("drainhealth", &whsec, &body).await.0, 200, "in-flight traffic is still served");
}

#[tokio::test]
async fn metrics_export_the_webhook_latency_as_a_histogram_after_deliveries_and_a_backfill() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 30, rate_limit: None, ..Default::default() }).await.unwrap();
    let app = TestApp::spawn_with(TestOptions { clerk_url: Some(clerk.url()), ..Default::default() }).await;
    let whsec = new_whsec();
    app.client
        .configure_integration("metered", Provider::Clerk)
        .database_url(app.project_url.clone())
        .secret_key(clerk.secret_key())
        .webhook_signing_secret(whsec.clone())
        .await
        .unwrap();
    assert_eq!(app.wait_backfill_done("metered").await.state, BackfillState::Succeeded as i32);
    let user = serde_json::json!({"id": "user_metered", "object": "user", "created_at": 1, "updated_at": 1,
        "email_addresses": [], "primary_email_address_id": null});
    let (status, body) = app.send_clerk("metered", &whsec, &clerk_event("user.created", user, 1)).await;
    assert_eq!(status, 200, "{body}");

    let text = app.metrics().await;
    let bucket = "capydb_auth_sync_webhook_duration_seconds_bucket{";
    for le in ["0.001", "15", "+Inf"] {
        assert!(text.lines().any(|l| l.starts_with(bucket) && l.contains(&format!("le=\"{le}\""))), "le={le}\n{text}");
    }
    assert!(text.contains("# TYPE capydb_auth_sync_webhook_duration_seconds histogram"), "{text}");
    assert!(!text.contains("capydb_auth_sync_webhook_duration_seconds{quantile"), "still a summary:\n{text}");
    for series in [
        "capydb_auth_sync_webhook_duration_seconds_count",
        "capydb_auth_sync_webhook_duration_seconds_sum",
        "capydb_auth_sync_webhook_deliveries_total{",
        "capydb_auth_sync_backfill_users_total{stage=\"fetched\"}",
        "capydb_auth_sync_backfill_users_total{stage=\"written\"}",
        "capydb_auth_sync_backfills_running",
    ] {
        assert!(text.contains(series), "missing {series}\n{text}");
    }
}
