//! Issue 2: the integration lifecycle over gRPC, validation, auth, the users table, secrets.
use capydb_auth_sync_client::{ClientError, ConfigureIntegrationRequest, Credentials, Provider};
use test_harness::*;
use tonic::Code;
use tonic_types::StatusExt;

fn clerk_request(project: &str, db: &str, secret_key: &str, whsec: &str) -> ConfigureIntegrationRequest {
    ConfigureIntegrationRequest {
        project_id: project.into(),
        provider: Provider::Clerk as i32,
        database_url: db.into(),
        credentials: Some(Credentials { secret_key: secret_key.into(), webhook_signing_secret: whsec.into() }),
    }
}

fn status_of(e: ClientError) -> tonic::Status {
    let text = e.to_string();
    e.into_status().unwrap_or_else(|| panic!("expected a gRPC status, got {text}"))
}

async fn fake_clerk(users: usize) -> FakeClerk {
    FakeClerk::start(FakeClerkConfig { users, rate_limit: None, ..Default::default() }).await.unwrap()
}

#[tokio::test]
async fn configure_status_list_delete_round_trip() {
    let clerk = fake_clerk(3).await;
    let app = TestApp::spawn_with(TestOptions { clerk_url: Some(clerk.url()), ..Default::default() }).await;
    let whsec = new_whsec();
    let key = clerk.secret_key().to_string();

    let integration =
        app.client.configure_raw_request(clerk_request("proj_1", &app.project_url, &key, &whsec)).await.unwrap();
    assert_eq!(integration.project_id, "proj_1");
    assert_eq!(integration.provider, Provider::Clerk as i32);
    assert!(integration.has_credentials && integration.has_webhook_secret);
    assert_eq!(integration.secret_key_hint, format!("sk_test_…{}", &key[key.len() - 4..]));
    assert_eq!(integration.webhook_receiver, app.webhook_url("clerk", "proj_1"));
    assert!(integration.created_at.is_some() && integration.updated_at.is_some());

    let status = app.client.get_sync_status("proj_1", Provider::Unspecified).await.unwrap();
    assert_eq!(status.integration.as_ref().unwrap().id, integration.id);
    assert_eq!(status.mode, capydb_auth_sync_client::SyncMode::Live as i32);
    assert!(!status.verdict.is_empty());

    let listed = app.client.list_integrations(None).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![integration.id.as_str()]);
    assert!(app.client.list_integrations(Some("other")).await.unwrap().is_empty());

    // Deleting leaves the table and its rows.
    app.wait_backfill_done("proj_1").await;
    let before = users_table(&app.project().await).await.len();
    assert_eq!(before, 3, "the initial backfill filled the table");
    let deleted = app.client.delete_integration("proj_1", Provider::Clerk).await.unwrap();
    assert_eq!(deleted.id, integration.id);
    assert!(app.client.list_integrations(None).await.unwrap().is_empty());
    let err = status_of(app.client.get_sync_status("proj_1", Provider::Clerk).await.unwrap_err());
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(users_table(&app.project().await).await.len(), before);

    // Nothing secret came back in any response.
    for text in [format!("{integration:?}"), format!("{status:?}"), format!("{listed:?}"), format!("{deleted:?}")] {
        assert!(!text.contains(&key) && !text.contains(&whsec) && !text.contains(&app.project_url));
    }
    assert_no_leaks(&app, &[&key, &whsec]).await;
}

#[tokio::test]
async fn partial_update_keeps_stored_secrets() {
    let clerk = fake_clerk(0).await;
    let app = TestApp::spawn_with(TestOptions { clerk_url: Some(clerk.url()), ..Default::default() }).await;
    let key = clerk.secret_key().to_string();
    let first = app.client.configure_raw_request(clerk_request("p2", &app.project_url, &key, "")).await.unwrap();
    assert!(first.has_credentials && !first.has_webhook_secret);
    app.wait_backfill_done("p2").await;
    let status = app.client.get_sync_status("p2", Provider::Clerk).await.unwrap();
    assert_eq!(status.mode, capydb_auth_sync_client::SyncMode::BackfillOnly as i32);
    assert!(status.verdict.contains("backfill-only"), "{}", status.verdict);

    // Add the webhook secret later without resending the key or the database URL.
    let whsec = new_whsec();
    let second = app.client.configure_raw_request(clerk_request("p2", "", "", &whsec)).await.unwrap();
    assert_eq!(second.id, first.id);
    assert!(second.has_credentials && second.has_webhook_secret);
    assert_eq!(second.secret_key_hint, first.secret_key_hint);
    assert_eq!(second.database_target, first.database_target);
    let status = app.client.get_sync_status("p2", Provider::Clerk).await.unwrap();
    assert_eq!(status.mode, capydb_auth_sync_client::SyncMode::Live as i32);

    // The stored key still works (a backfill runs) and the new secret verifies webhooks.
    let job = app.client.run_backfill("p2", Provider::Clerk).await.unwrap();
    assert!(!job.id.is_empty());
    let done = app.wait_backfill_done("p2").await;
    assert_eq!(done.state, capydb_auth_sync_client::BackfillState::Succeeded as i32, "{}", done.error);
    let body = r#"{"type":"user.created","object":"event","timestamp":1700000000000,"data":{"id":"user_a","object":"user","updated_at":1,"created_at":1,"email_addresses":[]}}"#;
    assert_eq!(app.send_clerk("p2", &whsec, body).await.0, 200);
}

#[tokio::test]
async fn every_validation_rule_names_the_field() {
    let app = TestApp::spawn().await;
    let db = app.project_url.clone();
    let cases: Vec<(ConfigureIntegrationRequest, &str)> = vec![
        (clerk_request("", &db, "", &new_whsec()), "project_id"),
        (clerk_request("bad project!", &db, "", &new_whsec()), "project_id"),
        (clerk_request(&"x".repeat(65), &db, "", &new_whsec()), "project_id"),
        (
            ConfigureIntegrationRequest {
                provider: Provider::Unspecified as i32,
                ..clerk_request("p", &db, "", &new_whsec())
            },
            "provider",
        ),
        (ConfigureIntegrationRequest { provider: 42, ..clerk_request("p", &db, "", &new_whsec()) }, "provider"),
        (clerk_request("p", "", "", &new_whsec()), "database_url"),
        (clerk_request("p", "mysql://u:p@h/db", "", &new_whsec()), "database_url"),
        (clerk_request("p", "postgres://u:p@h/db?sslmode=bogus", "", &new_whsec()), "database_url"),
        (clerk_request("p", &db, "pk_live_abcdef", ""), "credentials.secret_key"),
        (clerk_request("p", &db, "sk_prod_abcdef", ""), "credentials.secret_key"),
        (clerk_request("p", &db, "", ""), "credentials.secret_key"),
        (clerk_request("p", &db, "", "not-a-whsec"), "credentials.webhook_signing_secret"),
        (clerk_request("p", &db, "", "whsec_***notbase64***"), "credentials.webhook_signing_secret"),
        (
            ConfigureIntegrationRequest {
                provider: Provider::Auth0 as i32,
                ..clerk_request("p", &db, "", "too-short")
            },
            "credentials.webhook_signing_secret",
        ),
        (
            ConfigureIntegrationRequest { provider: Provider::BetterAuth as i32, ..clerk_request("p", &db, "", "") },
            "credentials.webhook_signing_secret",
        ),
        (
            ConfigureIntegrationRequest {
                provider: Provider::BetterAuth as i32,
                ..clerk_request("p", &db, "sk_test_abcdef", "long-enough-secret-123")
            },
            "credentials.secret_key",
        ),
    ];
    for (request, field) in cases {
        let status = status_of(app.client.configure_raw_request(request.clone()).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let details = status.get_error_details();
        let violations = details.bad_request().expect("field violations attached").field_violations.clone();
        assert!(violations.iter().any(|v| v.field == field), "expected a violation of {field}, got {violations:?}");
        assert!(!status.message().contains(":p@h"), "the database password must not be echoed");
    }
    assert!(app.client.list_integrations(None).await.unwrap().is_empty(), "nothing was stored");
}

#[tokio::test]
async fn a_rejected_clerk_key_is_a_clear_invalid_argument() {
    let clerk = fake_clerk(0).await;
    let app = TestApp::spawn_with(TestOptions { clerk_url: Some(clerk.url()), ..Default::default() }).await;
    let req = clerk_request("p", &app.project_url, "sk_test_wrongkeywrongkey", "");
    let status = status_of(app.client.configure_raw_request(req).await.unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("Clerk rejected"), "{}", status.message());
    let violations = status.get_error_details().bad_request().unwrap().field_violations.clone();
    assert_eq!(violations[0].field, "credentials.secret_key");
    assert!(app.client.list_integrations(None).await.unwrap().is_empty());
    // The key check used the documented endpoint.
    let requests = clerk.users_requests();
    assert!(!requests.is_empty() && requests.iter().all(|r| r.status == 401), "a rejected key never got a page");
    assert!(requests.iter().any(|r| r.param("limit") == Some("1")), "the key check is GET /v1/users?limit=1");
    assert_no_leaks(&app, &["sk_test_wrongkeywrongkey"]).await;
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated_while_health_and_reflection_answer() {
    let app = TestApp::spawn().await;
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let c = app.client_with_token(token);
        let status = status_of(c.list_integrations(None).await.unwrap_err());
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        assert!(!status.message().contains(TEST_TOKEN));
    }

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest { service: "capydb.auth_sync.v1.AuthSyncService".into() })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    let services = reflection_list(channel).await;
    assert!(services.contains(&"capydb.auth_sync.v1.AuthSyncService".to_string()), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health".to_string()), "{services:?}");
}

async fn reflection_list(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(futures::stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_describes_every_rpc() {
    use prost::Message;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let app = TestApp::spawn().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("capydb.auth_sync.v1.AuthSyncService".into())),
    };
    let mut stream = client.server_reflection_info(futures::stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = resp.message_response else { panic!("no descriptor") };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .find(|f| f.package() == "capydb.auth_sync.v1")
        .expect("our file");
    let service = file.service.iter().find(|s| s.name() == "AuthSyncService").unwrap();
    let mut rpcs: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    rpcs.sort();
    assert_eq!(
        rpcs,
        [
            "ConfigureIntegration",
            "DeleteIntegration",
            "GetSyncStatus",
            "ListIntegrations",
            "RunBackfill",
            "WatchBackfill"
        ]
    );
    let watch = service.method.iter().find(|m| m.name() == "WatchBackfill").unwrap();
    assert!(watch.server_streaming());
}

#[tokio::test]
async fn the_users_table_has_exactly_the_spec_shape_and_creating_twice_is_a_no_op() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("shape", &whsec).await;
    let db = app.project().await;
    db.batch_execute("INSERT INTO capydb_auth.users (id, email) VALUES ('keep_me', 'k@example.com')").await.unwrap();
    // Configure again (and a second project on the same database): nothing changes.
    app.configure_clerk_webhooks("shape", &whsec).await;
    app.configure_clerk_webhooks("shape2", &new_whsec()).await;
    let columns: Vec<(String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'capydb_auth' AND table_name = 'users' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [
        ("id", "text"),
        ("email", "text"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("username", "text"),
        ("image_url", "text"),
        ("created_at", "timestamp with time zone"),
        ("updated_at", "timestamp with time zone"),
        ("last_sign_in_at", "timestamp with time zone"),
        ("deleted_at", "timestamp with time zone"),
        ("raw", "jsonb"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(columns, expected);
    let pk: Vec<String> = db
        .query(
            "SELECT kcu.column_name::text FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema \
             WHERE tc.table_schema = 'capydb_auth' AND tc.table_name = 'users' AND tc.constraint_type = 'PRIMARY KEY'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pk, ["id"]);
    let rows = users_table(&db).await;
    assert_eq!(rows["keep_me"].email.as_deref(), Some("k@example.com"));
    // Only the capydb_auth schema was touched.
    let tables: Vec<String> = db
        .query("SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema')", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["capydb_auth.users"]);
}

#[tokio::test]
async fn a_users_table_of_another_shape_is_a_failed_precondition() {
    let app = TestApp::spawn().await;
    let db = app.project().await;
    db.batch_execute("CREATE SCHEMA capydb_auth; CREATE TABLE capydb_auth.users (id integer primary key, email text)")
        .await
        .unwrap();
    let err =
        app.client.configure_raw_request(clerk_request("p", &app.project_url, "", &new_whsec())).await.unwrap_err();
    let status = status_of(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("different shape") && status.message().contains("id is integer"),
        "{}",
        status.message()
    );
    assert!(app.client.list_integrations(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_project_database_is_unavailable() {
    let app = TestApp::spawn().await;
    let dead = "postgres://postgres:pw-should-not-leak@127.0.0.1:9/nope";
    let status =
        status_of(app.client.configure_raw_request(clerk_request("p", dead, "", &new_whsec())).await.unwrap_err());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("pw-should-not-leak"));
    assert_no_leaks(&app, &["pw-should-not-leak"]).await;
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_project_fails_to_decrypt() {
    let app = TestApp::spawn().await;
    let (secret_a, secret_b) = (new_whsec(), new_whsec());
    app.configure_clerk_webhooks("proj_a", &secret_a).await;
    app.configure_clerk_webhooks("proj_b", &secret_b).await;
    let control = connect(&app.control_url).await;
    let stored: Vec<String> = control
        .query("SELECT webhook_secret_enc FROM capydb_auth_sync.integrations ORDER BY project_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored
        .iter()
        .all(|c| c.starts_with("v1:k1:") && !c.contains(&secret_a[6..]) && !c.contains(&secret_b[6..])));
    // An attacker with write access to the control table copies A's ciphertext onto B.
    control
        .execute(
            "UPDATE capydb_auth_sync.integrations SET webhook_secret_enc = $1 WHERE project_id = 'proj_b'",
            &[&stored[0]],
        )
        .await
        .unwrap();
    let body = r#"{"type":"user.created","object":"event","timestamp":1700000000000,"data":{"id":"user_x","object":"user","updated_at":1,"created_at":1}}"#;
    // The change reaches the integration cache through the control database's notification.
    eventually("B's tampered row reaches the cache", || async {
        let (status, _) = app.send_clerk("proj_b", &secret_a, body).await;
        assert!(status == 401 || status == 500, "the moved ciphertext must not decrypt as B's secret: {status}");
        (status == 500).then_some(())
    })
    .await;
    assert!(users_table(&app.project().await).await.is_empty());
    // A itself still works.
    assert_eq!(app.send_clerk("proj_a", &secret_a, body).await.0, 200);
}

#[tokio::test]
async fn rotate_keys_leaves_everything_readable_with_only_the_new_key() {
    let old = test_keyring_spec("old");
    let control_url = new_control_db().await;
    let project_url = new_project_db().await;
    let whsec = new_whsec();
    let app = TestApp::spawn_with(TestOptions {
        control_url: Some(control_url.clone()),
        project_url: Some(project_url.clone()),
        keyring: Some(old.clone()),
        ..Default::default()
    })
    .await;
    app.configure_clerk_webhooks("rot", &whsec).await;
    app.shutdown().await.unwrap();

    // rotate-keys with the new key in front.
    let new = test_keyring_spec("new");
    // The real command, as an operator runs it.
    let (url, keys) = (control_url.clone(), format!("{new},{old}"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync"))
            .arg("rotate-keys")
            .env_remove("CAPYDB_AUTH_SYNC_ADMIN_TOKENS")
            .env("CAPYDB_AUTH_SYNC_DATABASE_URL", url)
            .env("CAPYDB_AUTH_SYNC_MASTER_KEYS", keys)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("1 integration(s) with key `new`"), "{printed}");
    assert!(!printed.contains(&new[4..]) && !String::from_utf8_lossy(&out.stderr).contains(&new[4..]));
    let enc: String = connect(&control_url)
        .await
        .query_one("SELECT webhook_secret_enc FROM capydb_auth_sync.integrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(enc.starts_with("v1:new:"));

    // Restart with only the new key: status reads the database, webhooks verify.
    let app = TestApp::spawn_with(TestOptions {
        control_url: Some(control_url),
        project_url: Some(project_url),
        keyring: Some(new),
        ..Default::default()
    })
    .await;
    let status = app.client.get_sync_status("rot", Provider::Clerk).await.unwrap();
    assert!(status.database_error.is_empty(), "{}", status.database_error);
    let body = r#"{"type":"user.created","object":"event","timestamp":1700000000000,"data":{"id":"user_r","object":"user","updated_at":1,"created_at":1}}"#;
    assert_eq!(app.send_clerk("rot", &whsec, body).await.0, 200);
}

#[tokio::test]
async fn graceful_shutdown_stops_listeners_and_returns_ok() {
    let app = TestApp::spawn().await;
    let http_addr = app.http_addr;
    let grpc_addr = app.grpc_addr;
    app.shutdown().await.expect("clean exit");
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_err(), "webhook listener closed");
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err(), "gRPC listener closed");
}

#[tokio::test]
async fn project_databases_can_require_tls() {
    // The test server is expected to offer TLS (Debian's default cluster does, with a
    // self-signed certificate): `require` encrypts without verifying, like libpq.
    let probe = connect(&new_project_db().await).await;
    let ssl_on: String = probe.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl_on != "on" {
        // A throwaway cluster started by the harness has no certificate; then the same URL
        // must fail clearly instead of silently falling back to plaintext.
        let app = TestApp::spawn().await;
        let url = format!("{}?sslmode=require", app.project_url);
        let err = app.client.configure_raw_request(clerk_request("tls", &url, "", &new_whsec())).await.unwrap_err();
        assert_eq!(status_of(err).code(), Code::Unavailable);
        return;
    }
    let app = TestApp::spawn().await;
    let url = format!("{}?sslmode=require", app.project_url);
    let whsec = new_whsec();
    app.configure_clerk_on("tls", &whsec, &url).await;
    let body = r#"{"type":"user.created","object":"event","timestamp":1,"data":{"id":"user_tls","object":"user","updated_at":1}}"#;
    assert_eq!(app.send_clerk("tls", &whsec, body).await.0, 200);
    let db_name = app.project_url.rsplit('/').next().unwrap().to_string();
    let encrypted: bool = probe
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = $1 AND a.application_name = 'capydb-auth-sync'",
            &[&db_name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "every service connection to the project database is TLS");
}

#[tokio::test]
async fn a_database_password_never_comes_back() {
    let app = TestApp::spawn().await;
    // The test server trusts local connections, so the password is carried but not checked.
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let url = app.project_url.replace("postgres@", &format!("postgres:{password}@"));
    let whsec = new_whsec();
    let configured = app.configure_clerk_on("pw", &whsec, &url).await;
    let body = r#"{"type":"user.created","object":"event","timestamp":1,"data":{"id":"user_pw","object":"user","updated_at":1}}"#;
    assert_eq!(app.send_clerk("pw", &whsec, body).await.0, 200);
    let status = app.client.get_sync_status("pw", Provider::Clerk).await.unwrap();
    let listed = app.client.list_integrations(None).await.unwrap();
    assert!(status.database_error.is_empty(), "{}", status.database_error);
    for text in [format!("{configured:?}"), format!("{status:?}"), format!("{listed:?}")] {
        assert!(!text.contains(&password));
    }
    assert!(configured.database_target.ends_with(&app.project_url.rsplit('/').next().unwrap().to_string()));
    let stored: String = connect(&app.control_url)
        .await
        .query_one("SELECT database_url_enc FROM capydb_auth_sync.integrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains(&password), "stored encrypted");
    assert_no_leaks(&app, &[&password]).await;
}

#[tokio::test]
async fn an_unreachable_clerk_api_is_unavailable_and_stores_nothing() {
    // TestApp points CLERK_API_URL at a closed port unless told otherwise.
    let app = TestApp::spawn().await;
    let req = clerk_request("noclerk", &app.project_url, "sk_test_0123456789abcdef", "");
    let status = status_of(app.client.configure_raw_request(req).await.unwrap_err());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("Clerk"), "{}", status.message());
    assert!(app.client.list_integrations(None).await.unwrap().is_empty());
}
