//! GetSyncStatus as the one-stop view: a verdict with the last hour's counts and what to check,
//! the recent errors (authenticated deliveries and backfills only, bounded), the lag, the inbox
//! backlog, a previous webhook secret still accepted, and row counts of the integration's own
//! provider.
use capydb_auth_sync_client::{ConfigureIntegrationRequest, Credentials, Health, Provider, SignedRequest};
use fake_clerk::Fault;
use serde_json::{json, Value};
use std::time::Duration;
use test_harness::*;

/// Deliveries must be applied now, never parked, also on a busy CI machine.
fn patient() -> TestOptions {
    TestOptions { tweak: Box::new(|s| s.ingest.apply_timeout = Duration::from_secs(9)), ..Default::default() }
}

fn clerk_user(id: &str, v: i64) -> Value {
    json!({"id": id, "object": "user", "first_name": format!("v{v}"), "email_addresses": [],
           "primary_email_address_id": null, "created_at": 1_700_000_000_000i64, "updated_at": 1_700_000_000_000i64 + v})
}

async fn configure(app: &TestApp, project: &str, provider: Provider, secret: &str, db: &str) -> client::Integration {
    app.client
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: project.into(),
            provider: provider as i32,
            database_url: db.into(),
            credentials: Some(Credentials { secret_key: String::new(), webhook_signing_secret: secret.into() }),
        })
        .await
        .expect("configure")
}

/// The RFC 3339 UTC time with whole seconds that follows `after` in `text`.
fn time_after(text: &str, after: &str) -> chrono::DateTime<chrono::Utc> {
    let start = text.find(after).unwrap_or_else(|| panic!("{after:?} in {text:?}")) + after.len();
    let stamp = &text[start..start + 20];
    assert!(stamp.ends_with('Z'), "seconds precision, UTC: {stamp:?} in {text:?}");
    stamp.parse().unwrap_or_else(|e| panic!("{stamp:?}: {e}"))
}

#[tokio::test]
async fn rejected_deliveries_fail_the_verdict_with_their_count_of_the_last_hour_and_are_never_listed() {
    let app = TestApp::spawn_with(patient()).await;
    let whsec = new_whsec();
    let integration = app.configure_clerk_webhooks("sig", &whsec).await;
    // A busy minute three hours ago: outside the window, and dropped by the next flush.
    let control = connect(&app.control_url).await;
    control
        .execute(
            "INSERT INTO capydb_auth_sync.webhook_minutes (integration_id, minute, rejected) \
             VALUES ($1, date_trunc('minute', now()) - interval '3 hours', 500)",
            &[&integration.id],
        )
        .await
        .unwrap();
    let body = clerk_event("user.created", clerk_user("user_sig", 1), 1);
    for _ in 0..7 {
        assert_eq!(app.send_clerk("sig", &new_whsec(), &body).await.0, 401);
    }

    let status = app.client.get_sync_status("sig", Provider::Clerk).await.unwrap();
    assert_eq!(status.health, Health::Failing as i32, "{}", status.verdict);
    assert!(
        status.verdict.starts_with(
            "failing: 7 deliveries rejected for a bad signature in the last hour and none verified — check the \
             signing secret"
        ),
        "{}",
        status.verdict
    );
    let webhooks = status.webhooks.unwrap();
    let hour = webhooks.last_hour.unwrap();
    assert_eq!((hour.rejected, hour.applied, webhooks.rejected), (7, 0, 7));
    assert_eq!(hour.window.map(|w| w.seconds), Some(3600));
    assert!(status.recent_errors.is_empty(), "an unsigned delivery writes no text: {:?}", status.recent_errors);
    assert!(webhooks.last_error.is_empty());
    assert!(status.lag.is_none(), "no event yet");
    let old: i64 = control
        .query_one(
            "SELECT count(*) FROM capydb_auth_sync.webhook_minutes WHERE minute < now() - interval '2 hours'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(old, 0, "the flush dropped the minutes older than two hours");

    // A signed delivery: healthy again, the rejections noted; lag measured.
    assert_eq!(app.send_clerk("sig", &whsec, &body).await.0, 200);
    let status = app.client.get_sync_status("sig", Provider::Clerk).await.unwrap();
    assert_eq!(status.health, Health::Ok as i32, "{}", status.verdict);
    let last_event = time_after(&status.verdict, "healthy: live, last event at ");
    assert!(
        status.verdict.ends_with(
            "; 7 deliveries rejected for a bad signature in the last hour while signed ones keep arriving (not \
             from the provider, or a sender with an old secret)"
        ),
        "{}",
        status.verdict
    );
    let generated = client::display::timestamp_utc(status.generated_at.as_ref()).unwrap();
    assert!((generated - last_event).num_seconds() >= 0);
    let lag = status.lag.expect("lag after an event");
    assert!((0..120).contains(&lag.seconds), "{lag:?}");
    assert_eq!(status.webhooks.unwrap().last_hour.unwrap().applied, 1);
}

#[tokio::test]
async fn authenticated_failures_are_listed_newest_first_and_at_most_ten() {
    let app = TestApp::spawn_with(patient()).await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("errs", &whsec).await;
    // Not JSON, each at another column: the parser's message tells them apart.
    for i in 0..12 {
        let body = format!("{}x", " ".repeat(i));
        assert_eq!(app.send_clerk("errs", &whsec, &body).await.0, 400);
    }
    assert_eq!(app.send_clerk("errs", &new_whsec(), "{}").await.0, 401, "rejected: counted, never listed");

    let status = app.client.get_sync_status("errs", Provider::Clerk).await.unwrap();
    let errors = &status.recent_errors;
    assert_eq!(errors.len(), 10, "{errors:?}");
    assert!(errors.iter().all(|e| e.kind == "malformed" && e.message.starts_with("not a valid event")), "{errors:?}");
    assert!(errors[0].message.contains("column 12"), "newest first: {errors:?}");
    assert!(errors[9].message.contains("column 3"), "{errors:?}");
    let times: Vec<_> = errors.iter().map(|e| client::display::timestamp_utc(e.at.as_ref()).unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(status.health, Health::NeedsAttention as i32);
    assert!(
        status.verdict.starts_with("needs attention: the last webhook delivery failed at ")
            && status.verdict.contains("(12 failed in the last hour)"),
        "{}",
        status.verdict
    );
    time_after(&status.verdict, "failed at ");
    let kept: i64 = connect(&app.control_url)
        .await
        .query_one("SELECT count(*) FROM capydb_auth_sync.webhook_errors", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 10, "the control database keeps ten per integration");
    assert_no_leaks(&app, &[&whsec]).await;
    let text = format!("{status:?}");
    assert!(!text.contains(&whsec));
}

#[tokio::test]
async fn a_failed_backfill_is_a_recent_error_and_fails_a_backfill_only_integration() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 30, rate_limit: None, ..Default::default() }).await.unwrap();
    let app = TestApp::spawn_with(TestOptions { clerk_url: Some(clerk.url()), ..Default::default() }).await;
    let gate = clerk.pause_users_request(2);
    app.client
        .configure_integration("onlybf", Provider::Clerk)
        .database_url(app.project_url.clone())
        .secret_key(clerk.secret_key())
        .await
        .unwrap();
    gate.wait_arrived().await;
    clerk.inject_fault(Fault::Status(401));
    gate.release();
    let job = app.wait_backfill_done("onlybf").await;
    assert_eq!(job.state, client::BackfillState::Failed as i32);

    let status = app.client.get_sync_status("onlybf", Provider::Clerk).await.unwrap();
    assert_eq!(status.health, Health::Failing as i32, "{}", status.verdict);
    assert!(status.verdict.starts_with("failing: the last backfill failed at "), "{}", status.verdict);
    assert!(status.verdict.contains("Clerk rejected the secret key"), "{}", status.verdict);
    time_after(&status.verdict, "failed at ");
    let [error] = status.recent_errors.as_slice() else { panic!("{:?}", status.recent_errors) };
    assert_eq!(error.kind, "backfill");
    assert_eq!(error.message, job.error);
    assert_eq!(error.at, job.finished_at);
    assert_no_leaks(&app, &[clerk.secret_key()]).await;
}

#[tokio::test]
async fn row_counts_are_those_of_the_integrations_own_provider() {
    let app = TestApp::spawn_with(patient()).await;
    let (whsec, auth0, better) = (new_whsec(), "auth0-shared-secret-0123456789", "better-auth-secret-0123456789");
    for (provider, secret) in
        [(Provider::Clerk, whsec.as_str()), (Provider::Auth0, auth0), (Provider::BetterAuth, better)]
    {
        configure(&app, "mixed", provider, secret, &app.project_url).await;
    }
    for id in ["user_a", "user_b"] {
        let (status, body) = app.send_clerk("mixed", &whsec, &clerk_event("user.created", clerk_user(id, 1), 1)).await;
        assert_eq!(status, 200, "{body}");
    }
    let gone = clerk_event("user.deleted", json!({"id": "user_b", "object": "user", "deleted": true}), 1_700_000_100);
    assert_eq!(app.send_clerk("mixed", &whsec, &gone).await.0, 200);
    let profile = json!({"user_id": "auth0|7", "email": "seven@example.com", "updated_at": "2024-05-01T00:00:00.000Z",
                         "created_at": "2024-05-01T00:00:00.000Z"});
    let a0 = SignedRequest::auth0(auth0, json!({"event": "user.created", "user": profile}).to_string().into_bytes());
    assert_eq!(app.send(&app.webhook_url("auth0", "mixed"), &a0).await.0, 200);
    for id in ["ba_1", "ba_2", "ba_3"] {
        let user = json!({"id": id, "email": format!("{id}@example.com"), "name": "B",
                          "createdAt": "2024-05-01T00:00:00.000Z", "updatedAt": "2024-05-01T00:00:00.000Z"});
        let req =
            SignedRequest::better_auth(better, json!({"event": "user.created", "user": user}).to_string().into_bytes());
        assert_eq!(app.send(&app.webhook_url("better-auth", "mixed"), &req).await.0, 200);
    }
    assert_eq!(users_table(&app.project().await).await.len(), 6, "one table holds them all");
    for (provider, counts) in [(Provider::Clerk, (2, 1)), (Provider::Auth0, (1, 0)), (Provider::BetterAuth, (3, 0))] {
        let status = app.client.get_sync_status("mixed", provider).await.unwrap();
        assert_eq!((status.users_total, status.users_deleted), counts, "{provider:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_backlog_and_a_previous_secret_still_accepted_show_in_the_status() {
    let app = TestApp::spawn_with(TestOptions {
        tweak: Box::new(|s| s.ingest.apply_timeout = Duration::from_millis(1000)),
        ..Default::default()
    })
    .await;
    let mut proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let db_url = proxy.url_through(&app.project_url);
    let (old, new) = (new_whsec(), new_whsec());
    configure(&app, "rot", Provider::Clerk, &old, &db_url).await;
    let rotated = configure(&app, "rot", Provider::Clerk, &new, &db_url).await;
    let until = client::display::timestamp_utc(rotated.previous_webhook_secret_until.as_ref()).expect("grace");
    let status = app.client.get_sync_status("rot", Provider::Clerk).await.unwrap();
    assert_eq!(status.health, Health::Ok as i32, "{}", status.verdict);
    assert_eq!(time_after(&status.verdict, "the previous webhook secret is still accepted until "), {
        chrono::DateTime::from_timestamp(until.timestamp(), 0).unwrap()
    });

    proxy.cut().await;
    for id in ["user_q1", "user_q2"] {
        let body = clerk_event("user.created", clerk_user(id, 1), 1);
        // Signed with the old secret, still in its grace period.
        assert_eq!(app.send_clerk("rot", &old, &body).await, (202, json!({"status": "queued"})));
    }
    let status = app.client.get_sync_status("rot", Provider::Clerk).await.unwrap();
    let webhooks = status.webhooks.clone().unwrap();
    assert_eq!(webhooks.queued, 2);
    assert!(webhooks.oldest_queued_at.is_some());
    assert!(!status.database_error.is_empty());
    assert_eq!(status.health, Health::Failing as i32);
    assert!(
        status.verdict.starts_with("failing: the project database cannot be read")
            && status.verdict.contains("deliveries wait in the inbox until it answers"),
        "{}",
        status.verdict
    );

    proxy.restore().await;
    let status = eventually("the inbox drains", || async {
        let s = app.client.get_sync_status("rot", Provider::Clerk).await.unwrap();
        (s.webhooks.as_ref().unwrap().queued == 0 && s.database_error.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(status.health, Health::Ok as i32, "{}", status.verdict);
    assert!(status.verdict.contains("the previous webhook secret is still accepted until"), "{}", status.verdict);
    assert_eq!(status.users_total, 2);
}
