//! The ingest pipeline (issues 7 and 8) over real signed HTTP and real Postgres: exact
//! per-delivery outcomes under group commit, isolation of a poisoned row, the integration
//! cache across replicas, the durable inbox through project-database outages, locks and
//! replicas, poison-proof values, convergent ties and forward-only sign-in times.
use capydb_auth_sync_client::SignedRequest;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use test_harness::*;

use client::Provider;

fn secret(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A Clerk user object at version `v` (its `updated_at`), with a name that changes per version.
fn clerk_user(id: &str, v: i64) -> Value {
    json!({
        "id": id, "object": "user", "first_name": format!("v{v}"), "last_name": "Tester",
        "primary_email_address_id": "e1",
        "email_addresses": [{"id": "e1", "email_address": format!("{id}@example.com")}],
        "created_at": 1_700_000_000_000i64, "updated_at": 1_700_000_000_000i64 + v,
    })
}

async fn configure_on(app: &TestApp, project: &str, provider: Provider, secret: &str, db: &str) {
    app.client
        .configure_raw_request(client::ConfigureIntegrationRequest {
            project_id: project.into(),
            provider: provider as i32,
            database_url: db.into(),
            credentials: Some(client::Credentials { secret_key: String::new(), webhook_signing_secret: secret.into() }),
        })
        .await
        .expect("configure");
}

/// Deliveries must be applied now, never parked, also on a busy CI machine.
fn patient() -> TestOptions {
    TestOptions { tweak: Box::new(|s| s.ingest.apply_timeout = Duration::from_secs(9)), ..Default::default() }
}

fn quick_parking() -> TestOptions {
    TestOptions { tweak: Box::new(|s| s.ingest.apply_timeout = Duration::from_millis(1000)), ..Default::default() }
}

async fn row(db: &tokio_postgres::Client, id: &str) -> Option<UserRow> {
    users_table(db).await.remove(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_get_the_outcome_each_would_get_alone_and_the_table_ends_newest() {
    let app = Arc::new(TestApp::spawn_with(patient()).await);
    let whsec = new_whsec();
    app.configure_clerk_webhooks("many", &whsec).await;
    let url = app.webhook_url("clerk", "many");
    let ids: Vec<String> = (0..60).map(|i| format!("user_{i:03}")).collect();

    // Round 1: every user created at v1, 24 in flight.
    let creates: Vec<String> = ids.iter().map(|id| clerk_event("user.created", clerk_user(id, 1), 1)).collect();
    let answers = send_all(&app, &url, &whsec, creates, 24).await;
    assert!(answers.iter().all(|a| a == &json!({"status": "applied"})), "{answers:?}");

    // Round 2: per group, deliveries whose outcomes do not depend on arrival order.
    // A: the stored v1 twice (duplicate, duplicate); B: v0 twice (stale, stale);
    // C: v5 and v0 (applied, stale); D: two deletes and v0 (applied, duplicate, stale).
    let mut bodies = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match i % 4 {
            0 => bodies.extend([
                clerk_event("user.updated", clerk_user(id, 1), 2),
                clerk_event("user.updated", clerk_user(id, 1), 2),
            ]),
            1 => bodies.extend([
                clerk_event("user.updated", clerk_user(id, 0), 2),
                clerk_event("user.updated", clerk_user(id, 0), 2),
            ]),
            2 => bodies.extend([
                clerk_event("user.updated", clerk_user(id, 5), 2),
                clerk_event("user.updated", clerk_user(id, 0), 2),
            ]),
            _ => bodies.extend([
                clerk_event("user.deleted", json!({"id": id, "object": "user", "deleted": true}), 1_700_000_100_000),
                clerk_event("user.deleted", json!({"id": id, "object": "user", "deleted": true}), 1_700_000_100_000),
                clerk_event("user.updated", clerk_user(id, 0), 2),
            ]),
        }
    }
    let total = bodies.len();
    let answers = send_all(&app, &url, &whsec, bodies, 32).await;
    let tally = |want: Value| answers.iter().filter(|a| **a == want).count();
    let groups = ids.len() / 4;
    assert_eq!(tally(json!({"status": "applied"})), 2 * groups, "C's v5 and D's first delete");
    assert_eq!(tally(json!({"status": "ignored", "reason": "stale"})), 2 * groups + groups + groups);
    assert_eq!(tally(json!({"status": "ignored", "reason": "duplicate"})), 2 * groups + groups);
    assert_eq!(answers.len(), total);

    let table = users_table(&app.project().await).await;
    for (i, id) in ids.iter().enumerate() {
        let r = &table[id];
        let want_version = if i % 4 == 2 { 5 } else { 1 };
        assert_eq!(r.first_name.as_deref(), Some(format!("v{want_version}").as_str()), "{id}");
        assert_eq!(r.deleted_at.is_some(), i % 4 == 3, "{id}");
    }
    // The service's own tally agrees with the sender's.
    let stats = app.webhook_stats("many").await;
    assert_eq!(stats.applied as usize, ids.len() + 2 * groups);
    assert_eq!(stats.ignored_stale as usize, 4 * groups);
    assert_eq!(stats.ignored_duplicate as usize, 3 * groups);
}

/// Sends every body (signed now) with `in_flight` at once; answers in input order.
async fn send_all(app: &Arc<TestApp>, url: &str, whsec: &str, bodies: Vec<String>, in_flight: usize) -> Vec<Value> {
    futures::stream::iter(bodies.into_iter().map(|body| {
        let (app, url, whsec) = (app.clone(), url.to_string(), whsec.to_string());
        async move {
            let req = SignedRequest::clerk_now(&whsec, body.into_bytes()).unwrap();
            let (status, answer) = app.send(&url, &req).await;
            assert!(status == 200 || status == 500, "{status} {answer}");
            answer
        }
    }))
    .buffered(in_flight)
    .collect()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_fails_alone_and_its_batch_neighbours_land() {
    let app = Arc::new(TestApp::spawn_with(patient()).await);
    let whsec = new_whsec();
    app.configure_clerk_webhooks("poison", &whsec).await;
    // A test-only trigger that refuses one user, as a customer's own constraint might.
    app.project()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.id = 'user_poison' THEN RAISE EXCEPTION 'refused by the customer'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON capydb_auth.users
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .unwrap();
    let url = app.webhook_url("clerk", "poison");
    let mut ids: Vec<String> = (0..40).map(|i| format!("user_ok{i}")).collect();
    ids.insert(17, "user_poison".into());
    let bodies: Vec<String> = ids.iter().map(|id| clerk_event("user.created", clerk_user(id, 1), 1)).collect();
    let answers = send_all(&app, &url, &whsec, bodies, 41).await;
    for (id, answer) in ids.iter().zip(&answers) {
        if id == "user_poison" {
            assert_eq!(answer["error"], "internal error", "{answer}");
        } else {
            assert_eq!(answer, &json!({"status": "applied"}), "{id}");
        }
    }
    let table = users_table(&app.project().await).await;
    assert_eq!(table.len(), 40);
    assert!(!table.contains_key("user_poison"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_and_delete_reach_a_second_replica_within_seconds() {
    // Replicas share the control database and the master keys.
    let keys = test_keyring_spec("k1");
    let a = TestApp::spawn_with(TestOptions { keyring: Some(keys.clone()), ..Default::default() }).await;
    let b = TestApp::spawn_with(TestOptions {
        control_url: Some(a.control_url.clone()),
        project_url: Some(a.project_url.clone()),
        keyring: Some(keys),
        ..Default::default()
    })
    .await;
    let body = clerk_event("user.created", clerk_user("user_r", 1), 1);
    // B knows every integration (none): a made-up project is unknown without a lookup.
    assert_eq!(b.send_clerk("rep", &new_whsec(), &body).await.0, 404);

    let first = new_whsec();
    a.configure_clerk_webhooks("rep", &first).await;
    eventually("B serves the new integration", || async {
        (b.send_clerk("rep", &first, &body).await.0 == 200).then_some(())
    })
    .await;

    // A new secret configured on A replaces the one B verifies with.
    let second = new_whsec();
    a.configure_clerk_webhooks("rep", &second).await;
    eventually("B verifies with the new secret", || async {
        (b.send_clerk("rep", &second, &body).await.0 == 200).then_some(())
    })
    .await;

    a.client.delete_integration("rep", Provider::Clerk).await.unwrap();
    eventually("B forgets the deleted integration", || async {
        (b.send_clerk("rep", &second, &body).await.0 == 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_never_touch_last_error_and_need_no_control_database() {
    let control = new_control_db().await;
    let mut proxy = TcpProxy::start(pg_addr(&control)).await;
    let app =
        TestApp::spawn_with(TestOptions { control_url: Some(proxy.url_through(&control)), ..Default::default() }).await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("flood", &whsec).await;
    let body = clerk_event("user.created", clerk_user("user_f", 1), 1);
    eventually("the integration is cached", || async {
        (app.send_clerk("flood", &new_whsec(), &body).await.0 == 401).then_some(())
    })
    .await;
    // The control database goes away: whatever the flood does cannot involve it.
    proxy.cut().await;
    for i in 0..200 {
        let project = if i % 2 == 0 { "flood".to_string() } else { format!("made_up_{i}") };
        let (status, answer) = app.send_clerk(&project, &new_whsec(), &body).await;
        assert_eq!(status, if i % 2 == 0 { 401 } else { 404 }, "{answer}");
    }
    assert_eq!(app.send_clerk("flood", &whsec, &body).await.0, 200, "signed deliveries still land");
    proxy.restore().await;
    let stats = eventually("the control database is back", || async {
        app.client.get_sync_status("flood", Provider::Clerk).await.ok()
    })
    .await
    .webhooks
    .unwrap();
    assert!(stats.rejected >= 101 && stats.applied == 1, "{stats:?}");
    assert_eq!(stats.last_error, "", "outsiders cannot write last_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_database_outage_parks_every_provider_and_the_drain_applies_them_without_a_resend() {
    let app = TestApp::spawn_with(quick_parking()).await;
    let mut proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let db_url = proxy.url_through(&app.project_url);
    let (whsec, auth0, better) = (new_whsec(), secret("auth0"), secret("better"));
    configure_on(&app, "out", Provider::Clerk, &whsec, &db_url).await;
    configure_on(&app, "out", Provider::Auth0, &auth0, &db_url).await;
    configure_on(&app, "out", Provider::BetterAuth, &better, &db_url).await;
    let clerk_url = app.webhook_url("clerk", "out");
    let db = app.project().await;
    // user_1 at v3 before the outage.
    let v3 =
        SignedRequest::clerk_now(&whsec, clerk_event("user.updated", clerk_user("user_1", 3), 1).into_bytes()).unwrap();
    assert_eq!(app.send(&clerk_url, &v3).await.0, 200);

    proxy.cut().await;
    let queued = (202, json!({"status": "queued"}));
    // Clerk: a stale v2 and a duplicate v3 of user_1, and a new user_2.
    for body in [
        clerk_event("user.updated", clerk_user("user_1", 2), 1),
        clerk_event("user.updated", clerk_user("user_1", 3), 1),
        clerk_event("user.created", clerk_user("user_2", 1), 1),
    ] {
        let req = SignedRequest::clerk_now(&whsec, body.into_bytes()).unwrap();
        assert_eq!(app.send(&clerk_url, &req).await, queued);
    }
    // Auth0: an Action envelope.
    let profile = json!({"user_id": "auth0|9", "email": "nine@example.com", "updated_at": "2024-05-01T00:00:00.000Z", "created_at": "2024-05-01T00:00:00.000Z"});
    let a0 = SignedRequest::auth0(&auth0, json!({"event": "user.created", "user": profile}).to_string().into_bytes());
    assert_eq!(app.send(&app.webhook_url("auth0", "out"), &a0).await, queued);
    // Better Auth (CapyDB envelope): a create, then a delete dated at receipt.
    let ba_user = json!({"id": "ba_1", "email": "ba@example.com", "name": "Bea", "createdAt": "2024-05-01T00:00:00.000Z", "updatedAt": "2024-05-01T00:00:00.000Z"});
    let ba_url = app.webhook_url("better-auth", "out");
    let create =
        SignedRequest::better_auth(&better, json!({"event": "user.created", "user": ba_user}).to_string().into_bytes());
    assert_eq!(app.send(&ba_url, &create).await, queued);
    let before_delete = chrono::Utc::now();
    let delete = SignedRequest::better_auth(
        &better,
        json!({"event": "user.deleted", "user": {"id": "ba_1"}}).to_string().into_bytes(),
    );
    assert_eq!(app.send(&ba_url, &delete).await, queued);
    let after_delete = chrono::Utc::now();

    let status = app.client.get_sync_status("out", Provider::Clerk).await.unwrap().webhooks.unwrap();
    assert_eq!(status.queued, 3);
    assert!(status.oldest_queued_at.is_some());
    let status = app.client.get_sync_status("out", Provider::BetterAuth).await.unwrap().webhooks.unwrap();
    assert_eq!(status.queued, 2);
    assert!(users_table(&db).await.len() == 1, "nothing applied while down");

    // Later than the receipt, so a delete dated at replay would show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore().await;
    eventually("every parked delivery is applied", || async {
        let t = users_table(&db).await;
        (t.len() == 4 && t["ba_1"].deleted_at.is_some()).then_some(())
    })
    .await;
    for provider in [Provider::Clerk, Provider::Auth0, Provider::BetterAuth] {
        eventually("the inbox is empty", || async {
            (app.client.get_sync_status("out", provider).await.unwrap().webhooks.unwrap().queued == 0).then_some(())
        })
        .await;
    }
    let t = users_table(&db).await;
    assert_eq!(
        t["user_1"].first_name.as_deref(),
        Some("v3"),
        "stale and duplicate parked deliveries did not regress it"
    );
    assert_eq!(t["user_2"].first_name.as_deref(), Some("v1"));
    assert_eq!(t["auth0|9"].email.as_deref(), Some("nine@example.com"));
    let deleted_at = t["ba_1"].deleted_at.unwrap();
    assert!(
        deleted_at >= before_delete - chrono::Duration::milliseconds(1) && deleted_at <= after_delete,
        "dated at receipt"
    );
    assert_eq!(t["ba_1"].email.as_deref(), Some("ba@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_users_table_parks_the_delivery_until_the_lock_goes() {
    let app = TestApp::spawn_with(quick_parking()).await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("lock", &whsec).await;
    let mut locker = app.project().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE capydb_auth.users IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let body = clerk_event("user.created", clerk_user("user_l", 1), 1);
    assert_eq!(app.send_clerk("lock", &whsec, &body).await, (202, json!({"status": "queued"})));
    tx.rollback().await.unwrap();
    let db = app.project().await;
    eventually("applied after the lock goes", || async { row(&db, "user_l").await.map(|_| ()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_control_database_down_too_nothing_is_kept_and_the_answer_is_503() {
    let control = new_control_db().await;
    let mut control_proxy = TcpProxy::start(pg_addr(&control)).await;
    let mut opts = quick_parking();
    opts.control_url = Some(control_proxy.url_through(&control));
    let app = TestApp::spawn_with(opts).await;
    let mut project_proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let whsec = new_whsec();
    app.configure_clerk_on("both", &whsec, &project_proxy.url_through(&app.project_url)).await;
    project_proxy.cut().await;
    control_proxy.cut().await;
    let req =
        SignedRequest::clerk_now(&whsec, clerk_event("user.created", clerk_user("user_b", 1), 1).into_bytes()).unwrap();
    let resp = app
        .http
        .post(app.webhook_url("clerk", "both"))
        .headers(req.header_map())
        .body(req.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let answer: Value = resp.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("retry"), "{answer}");
    assert!(!answer.to_string().contains("postgres"), "no internals in the answer: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_draining_one_project_apply_every_parked_delivery() {
    let keys = test_keyring_spec("k1");
    let mut a_opts = quick_parking();
    a_opts.keyring = Some(keys.clone());
    let a = TestApp::spawn_with(a_opts).await;
    let mut b_opts = quick_parking();
    b_opts.control_url = Some(a.control_url.clone());
    b_opts.project_url = Some(a.project_url.clone());
    b_opts.keyring = Some(keys);
    let b = TestApp::spawn_with(b_opts).await;
    let mut proxy = TcpProxy::start(pg_addr(&a.project_url)).await;
    let whsec = new_whsec();
    a.configure_clerk_on("pair", &whsec, &proxy.url_through(&a.project_url)).await;
    eventually("B serves the integration", || async {
        (b.send_clerk("pair", &new_whsec(), "{}").await.0 == 401).then_some(())
    })
    .await;
    proxy.cut().await;
    for i in 0..12 {
        let app = if i % 2 == 0 { &a } else { &b };
        let body = clerk_event("user.created", clerk_user(&format!("user_p{i}"), 1), 1);
        assert_eq!(app.send_clerk("pair", &whsec, &body).await.0, 202);
    }
    proxy.restore().await;
    let db = a.project().await;
    eventually("both replicas' parked deliveries are applied", || async {
        (users_table(&db).await.len() == 12).then_some(())
    })
    .await;
    eventually("the inbox is empty", || async { (a.webhook_stats("pair").await.queued == 0).then_some(()) }).await;
    assert!(users_table(&db).await.values().all(|r| r.first_name.as_deref() == Some("v1")));
}

#[tokio::test]
async fn a_nul_character_and_an_absurd_timestamp_land_instead_of_failing() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("odd", &whsec).await;
    let mut user = clerk_user("user_odd", 1);
    user["first_name"] = json!("A\u{0000}B");
    user["created_at"] = json!(-300_000_000_000_000i64);
    user["unsafe_metadata"] = json!({"note\u{0000}": "x\u{0000}y"});
    let (status, answer) = app.send_clerk("odd", &whsec, &clerk_event("user.created", user, 1)).await;
    assert_eq!((status, answer), (200, json!({"status": "applied"})));
    let r = row(&app.project().await, "user_odd").await.unwrap();
    assert_eq!(r.first_name.as_deref(), Some("A\u{FFFD}B"));
    assert_eq!(r.created_at, None);
    let raw = r.raw.unwrap();
    assert_eq!(raw["first_name"], "A\u{FFFD}B");
    assert_eq!(raw["unsafe_metadata"], json!({"note\u{FFFD}": "x\u{FFFD}y"}));

    // A number Postgres' numeric cannot hold as written (serde_json reads it as 0.0).
    let event = clerk_event("user.created", clerk_user("user_tiny", 1), 1);
    let event = event.replacen(r#""id":"user_tiny""#, r#""id":"user_tiny","capydb_numbers":{"tiny":1e-20000}"#, 1);
    assert!(event.contains("1e-20000"));
    let (status, answer) = app.send_clerk("odd", &whsec, &event).await;
    assert_eq!((status, answer), (200, json!({"status": "applied"})));
    let raw = row(&app.project().await, "user_tiny").await.unwrap().raw.unwrap();
    assert_eq!(raw["capydb_numbers"], json!({"tiny": 0.0}));
}

#[tokio::test]
async fn two_objects_with_the_same_updated_at_converge_in_both_orders() {
    let app = TestApp::spawn().await;
    let other_db = new_project_db().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("tie1", &whsec).await;
    app.configure_clerk_on("tie2", &whsec, &other_db).await;
    let mut a = clerk_user("user_tie", 7);
    a["first_name"] = json!("Alpha");
    let mut b = clerk_user("user_tie", 7);
    b["first_name"] = json!("Beta");
    let (ea, eb) = (clerk_event("user.updated", a, 1), clerk_event("user.updated", b, 1));
    for (project, first, second) in [("tie1", &ea, &eb), ("tie2", &eb, &ea)] {
        assert_eq!(app.send_clerk(project, &whsec, first).await.0, 200);
        assert_eq!(app.send_clerk(project, &whsec, second).await.0, 200);
        // Retries of both change nothing more.
        assert_eq!(app.send_clerk(project, &whsec, first).await.0, 200);
    }
    let one = row(&app.project().await, "user_tie").await.unwrap();
    let two = row(&connect(&other_db).await, "user_tie").await.unwrap();
    assert_eq!(one, two, "the same final row whatever the order");
}

#[tokio::test]
async fn an_auth0_login_is_kept_when_a_later_profile_has_no_last_login() {
    let app = TestApp::spawn().await;
    let auth0 = secret("auth0");
    configure_on(&app, "login", Provider::Auth0, &auth0, &app.project_url).await;
    let url = app.webhook_url("auth0", "login");
    let profile = |last_login: Value| {
        json!({"event": "user.updated", "user": {"user_id": "auth0|5", "email": "five@example.com",
            "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-06-01T00:00:00.000Z", "last_login": last_login}})
    };
    assert_eq!(
        app.send(&url, &SignedRequest::auth0(&auth0, profile(Value::Null).to_string().into_bytes())).await.0,
        200
    );
    let login =
        json!([{"log_id": "l1", "data": {"type": "s", "date": "2024-07-01T12:00:00.000Z", "user_id": "auth0|5"}}]);
    assert_eq!(app.send(&url, &SignedRequest::auth0(&auth0, login.to_string().into_bytes())).await.0, 200);
    let mut later = profile(Value::Null);
    later["user"]["updated_at"] = json!("2024-08-01T00:00:00.000Z");
    assert_eq!(app.send(&url, &SignedRequest::auth0(&auth0, later.to_string().into_bytes())).await.0, 200);
    let r = row(&app.project().await, "auth0|5").await.unwrap();
    assert_eq!(r.updated_at, Some("2024-08-01T00:00:00Z".parse().unwrap()), "the later profile applied");
    assert_eq!(r.last_sign_in_at, Some("2024-07-01T12:00:00Z".parse().unwrap()), "the login time stayed");
}

/// A throwaway Postgres cluster of the test's own, stopped and removed on drop.
struct OwnCluster {
    dir: std::path::PathBuf,
    base_url: String,
}

impl OwnCluster {
    async fn start() -> OwnCluster {
        let dir = repo_root().join("target").join(format!("test-pg-restart-{}", uuid::Uuid::new_v4().simple()));
        let started = dir.clone();
        let base_url =
            tokio::task::spawn_blocking(move || capydb_auth_sync::local_postgres::start_cluster_with(&started, ""))
                .await
                .unwrap()
                .expect("a throwaway Postgres cluster");
        OwnCluster { dir: dir.canonicalize().unwrap(), base_url }
    }

    async fn stop(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || capydb_auth_sync::local_postgres::stop_cluster(&dir))
            .await
            .unwrap()
            .unwrap();
    }

    /// Starts it again on the same port with the same data.
    async fn restart(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || capydb_auth_sync::local_postgres::start_cluster_with(&dir, ""))
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = capydb_auth_sync::local_postgres::stop_cluster(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_database_that_is_stopped_and_restarted_loses_no_delivery_of_any_provider() {
    let cluster = OwnCluster::start().await;
    connect(&format!("{}/postgres", cluster.base_url))
        .await
        .batch_execute("CREATE DATABASE restart_prj")
        .await
        .unwrap();
    let db_url = format!("{}/restart_prj", cluster.base_url);
    let app = TestApp::spawn_with(quick_parking()).await;
    let (whsec, auth0, better) = (new_whsec(), secret("auth0"), secret("better"));
    configure_on(&app, "restart", Provider::Clerk, &whsec, &db_url).await;
    configure_on(&app, "restart", Provider::Auth0, &auth0, &db_url).await;
    configure_on(&app, "restart", Provider::BetterAuth, &better, &db_url).await;
    let clerk_url = app.webhook_url("clerk", "restart");
    let first =
        SignedRequest::clerk_now(&whsec, clerk_event("user.created", clerk_user("user_a", 1), 1).into_bytes()).unwrap();
    assert_eq!(app.send(&clerk_url, &first).await.0, 200);

    // The throwaway cluster commits asynchronously and stops immediately: flush first, so the
    // restart brings back what was committed before the outage.
    connect(&db_url).await.batch_execute("CHECKPOINT").await.unwrap();
    cluster.stop().await;
    let queued = (202, json!({"status": "queued"}));
    let clerk =
        SignedRequest::clerk_now(&whsec, clerk_event("user.created", clerk_user("user_b", 1), 1).into_bytes()).unwrap();
    assert_eq!(app.send(&clerk_url, &clerk).await, queued);
    let profile = json!({"user_id": "auth0|r", "email": "r@example.com", "updated_at": "2024-05-01T00:00:00.000Z"});
    let a0 = SignedRequest::auth0(&auth0, json!({"event": "user.created", "user": profile}).to_string().into_bytes());
    assert_eq!(app.send(&app.webhook_url("auth0", "restart"), &a0).await, queued);
    let ba_user =
        json!({"id": "ba_r", "email": "bar@example.com", "name": "R", "updatedAt": "2024-05-01T00:00:00.000Z"});
    let ba =
        SignedRequest::better_auth(&better, json!({"event": "user.created", "user": ba_user}).to_string().into_bytes());
    assert_eq!(app.send(&app.webhook_url("better-auth", "restart"), &ba).await, queued);
    let mut parked = 0;
    for provider in [Provider::Clerk, Provider::Auth0, Provider::BetterAuth] {
        parked += app.client.get_sync_status("restart", provider).await.unwrap().webhooks.unwrap().queued;
    }
    assert_eq!(parked, 3);

    cluster.restart().await;
    let db = connect(&db_url).await;
    eventually("the parked deliveries are applied after the restart", || async {
        (users_table(&db).await.len() == 4).then_some(())
    })
    .await;
    for provider in [Provider::Clerk, Provider::Auth0, Provider::BetterAuth] {
        eventually("queued returns to 0", || async {
            (app.client.get_sync_status("restart", provider).await.unwrap().webhooks.unwrap().queued == 0).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_answers_503_and_keeps_nothing_more() {
    let app = TestApp::spawn_with(TestOptions {
        tweak: Box::new(|s| {
            s.ingest.apply_timeout = Duration::from_millis(1000);
            s.ingest.inbox_max_per_project = 2;
        }),
        ..Default::default()
    })
    .await;
    let mut proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let whsec = new_whsec();
    app.configure_clerk_on("full", &whsec, &proxy.url_through(&app.project_url)).await;
    proxy.cut().await;
    for i in 0..2 {
        let body = clerk_event("user.created", clerk_user(&format!("user_full{i}"), 1), 1);
        assert_eq!(app.send_clerk("full", &whsec, &body).await.0, 202);
    }
    let body = clerk_event("user.created", clerk_user("user_full2", 1), 1);
    let req = SignedRequest::clerk_now(&whsec, body.into_bytes()).unwrap();
    let resp = app
        .http
        .post(app.webhook_url("clerk", "full"))
        .headers(req.header_map())
        .body(req.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(app.webhook_stats("full").await.queued, 2, "the bound holds");
    proxy.restore().await;
    let db = app.project().await;
    eventually("the two parked deliveries are applied", || async { (users_table(&db).await.len() == 2).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_inbox_refuses_fails_alone_and_its_park_neighbours_are_kept() {
    let app = Arc::new(TestApp::spawn_with(quick_parking()).await);
    let mut proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let whsec = new_whsec();
    app.configure_clerk_on("parkpoison", &whsec, &proxy.url_through(&app.project_url)).await;
    // A test-only trigger on the control database's inbox that refuses one delivery.
    let (control, conn) = tokio_postgres::connect(&app.control_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    control
        .batch_execute(
            "CREATE FUNCTION refuse_parked_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.changes::text LIKE '%user_poison%' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER refuse_parked_poison BEFORE INSERT ON capydb_auth_sync.inbox
             FOR EACH ROW EXECUTE FUNCTION refuse_parked_poison();",
        )
        .await
        .unwrap();
    proxy.cut().await;
    let url = app.webhook_url("clerk", "parkpoison");
    let mut ids: Vec<String> = (0..24).map(|i| format!("user_ok{i}")).collect();
    ids.insert(11, "user_poison".into());
    let answers: Vec<(u16, Value)> = futures::stream::iter(ids.iter().map(|id| {
        let (app, url, whsec) = (app.clone(), url.clone(), whsec.clone());
        let body = clerk_event("user.created", clerk_user(id, 1), 1);
        async move { app.send(&url, &SignedRequest::clerk_now(&whsec, body.into_bytes()).unwrap()).await }
    }))
    .buffered(25)
    .collect()
    .await;
    for (id, (status, answer)) in ids.iter().zip(&answers) {
        if id == "user_poison" {
            assert_eq!(*status, 503, "nothing kept, the sender retries: {answer}");
            assert!(answer["error"].as_str().unwrap().contains("refused to park this delivery"), "{answer}");
        } else {
            assert_eq!((*status, answer), (202, &json!({"status": "queued"})), "{id}");
        }
    }
    assert_eq!(app.webhook_stats("parkpoison").await.queued, 24);
    control.batch_execute("DROP TRIGGER refuse_parked_poison ON capydb_auth_sync.inbox").await.unwrap();
    proxy.restore().await;
    let db = app.project().await;
    eventually("the parked deliveries are applied", || async { (users_table(&db).await.len() == 24).then_some(()) })
        .await;
}
