//! Issue 4: Clerk backfill against the fake Backend API over real HTTP — completeness,
//! churn, webhook precedence, rate limits and failures, crash and resume, replicas,
//! deletion repair, progress.
use capydb_auth_sync_client::{BackfillJob, BackfillState, ConfigureIntegrationRequest, Credentials, Provider};
use fake_clerk::{Fault, RateLimit, RequestRecord};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use test_harness::*;

fn clerk_request(project: &str, db: &str, key: &str) -> ConfigureIntegrationRequest {
    ConfigureIntegrationRequest {
        project_id: project.into(),
        provider: Provider::Clerk as i32,
        database_url: db.into(),
        credentials: Some(Credentials { secret_key: key.into(), webhook_signing_secret: String::new() }),
    }
}

async fn fake(users: usize) -> FakeClerk {
    FakeClerk::start(FakeClerkConfig { users, rate_limit: None, ..Default::default() }).await.unwrap()
}

async fn app_for(clerk: &FakeClerk, page_size: u32) -> TestApp {
    TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(move |s| s.clerk.page_size = page_size),
        ..Default::default()
    })
    .await
}

/// The columns SPEC §2 derives from a Clerk user, computed here independently.
/// Databases and keys that outlive one server, so a test can run several on them (replicas,
/// or one killed and another started), listing 100 users a page.
struct Outliving {
    control: String,
    project: String,
    keyring: String,
}

impl Outliving {
    async fn new() -> Outliving {
        Outliving { control: new_control_db().await, project: new_project_db().await, keyring: test_keyring_spec("k1") }
    }

    fn options(&self, clerk: &FakeClerk) -> TestOptions {
        TestOptions {
            control_url: Some(self.control.clone()),
            project_url: Some(self.project.clone()),
            keyring: Some(self.keyring.clone()),
            clerk_url: Some(clerk.url()),
            tweak: Box::new(|s| s.clerk.page_size = 100),
        }
    }
}

fn expected_row(user: &Value) -> UserRow {
    let s = |k: &str| user[k].as_str().map(str::to_string);
    let t = |k: &str| user[k].as_i64().map(ms);
    let primary = user["primary_email_address_id"].as_str();
    let email = user["email_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| primary.is_some() && e["id"].as_str() == primary)
        .and_then(|e| e["email_address"].as_str().map(str::to_string));
    UserRow {
        email,
        first_name: s("first_name"),
        last_name: s("last_name"),
        username: s("username"),
        image_url: s("image_url"),
        created_at: t("created_at"),
        updated_at: t("updated_at"),
        last_sign_in_at: t("last_sign_in_at"),
        deleted_at: None,
        raw: Some(user.clone()),
    }
}

/// Asserts the table holds exactly the fake's users (live) plus `deleted` ids soft-deleted.
async fn assert_table_mirrors(app: &TestApp, clerk: &FakeClerk, deleted: &[String]) {
    let table = users_table(&app.project().await).await;
    let live: Vec<_> = table.iter().filter(|(_, r)| r.deleted_at.is_none()).collect();
    let snapshot = clerk.users_snapshot();
    assert_eq!(live.len(), snapshot.len(), "live rows = users at Clerk");
    for user in &snapshot {
        let id = user["id"].as_str().unwrap();
        assert_eq!(table.get(id), Some(&expected_row(user)), "row of {id}");
    }
    for id in deleted {
        assert!(table[id].deleted_at.is_some(), "{id} is soft-deleted");
    }
}

fn succeeded(job: &BackfillJob) {
    assert_eq!(job.state, BackfillState::Succeeded as i32, "job ended {:?}: {}", job.state, job.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_users_all_land_with_correct_columns() {
    let clerk = fake(5_000).await;
    let app = app_for(&clerk, 500).await;
    let integration =
        app.client.configure_raw_request(clerk_request("big", &app.project_url, clerk.secret_key())).await.unwrap();
    assert_eq!(
        integration.state,
        client::IntegrationState::Backfilling as i32,
        "configure starts the initial backfill"
    );
    let job = app.wait_backfill_done("big").await;
    succeeded(&job);
    assert_eq!((job.users_fetched, job.users_written, job.users_stale, job.users_expected), (5_000, 5_000, 0, 5_000));
    assert_eq!(job.pages, 11, "10 full pages of 500 and the empty last page");
    assert_table_mirrors(&app, &clerk, &[]).await;
    // Never more than 500 per request, always keyset-ordered.
    for r in clerk.users_requests().iter().filter(|r| r.param("order_by").is_some()) {
        assert_eq!(r.param("limit"), Some("500"));
        assert_eq!(r.param("order_by"), Some("+created_at"));
        assert!(r.param("offset").is_none(), "no offset paging outside a crowded millisecond");
    }
    let status = app.client.get_sync_status("big", Provider::Clerk).await.unwrap();
    assert_eq!((status.users_total, status.users_deleted), (5_000, 0));
    assert_eq!(status.last_backfill.unwrap().id, job.id);
    assert!(status.current_backfill.is_none());
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"capydb_auth_sync_backfill_users_total{stage="written"}"#), "{metrics}");
    assert!(metrics.contains("capydb_auth_sync_backfills_running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_created_and_deleted_during_the_backfill_end_exactly_as_at_clerk() {
    let clerk = fake(1_000).await;
    // First fill, then a second backfill while Clerk churns.
    let app = app_for(&clerk, 50).await;
    app.client.configure_raw_request(clerk_request("churn", &app.project_url, clerk.secret_key())).await.unwrap();
    succeeded(&app.wait_backfill_done("churn").await);

    let ids = clerk.user_ids();
    let deleted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = deleted.clone();
    // On each of the first 12 page requests: delete one user ahead of the cursor and one
    // behind it, and create a user.
    let base = clerk.stats().users_requests_admitted;
    clerk.on_users_request(move |info, users| {
        if info.param("order_by").is_none() || info.seq <= base || info.seq - base > 14 {
            return;
        }
        let k = info.seq - base;
        for victim in [ids[999 - k * 7].clone(), ids[k * 3].clone()] {
            if users.delete(&victim).is_some() {
                log.lock().unwrap().push(victim);
            }
        }
        users.create();
    });
    let job = app.client.run_backfill("churn", Provider::Clerk).await.unwrap();
    let done = app.wait_backfill_done("churn").await;
    assert_eq!(done.id, job.id);
    succeeded(&done);
    let deleted = deleted.lock().unwrap().clone();
    assert!(deleted.len() >= 20);
    assert_table_mirrors(&app, &clerk, &deleted).await;
    assert_eq!(done.deletions_reconciled as usize, deleted.len());
}

#[tokio::test]
async fn a_row_a_webhook_made_newer_keeps_the_webhook_version() {
    let clerk = fake(300).await;
    let app = app_for(&clerk, 50).await;
    let whsec = new_whsec();
    // Hold the first page so the webhook lands before the backfill reaches the user.
    let gate = clerk.pause_users_request(2);
    app.client
        .configure_raw_request(ConfigureIntegrationRequest {
            credentials: Some(Credentials {
                secret_key: clerk.secret_key().into(),
                webhook_signing_secret: whsec.clone(),
            }),
            ..clerk_request("wh", &app.project_url, "")
        })
        .await
        .unwrap();
    gate.wait_arrived().await;
    let mut newer = clerk.users_snapshot()[200].clone();
    let id = newer["id"].as_str().unwrap().to_string();
    newer["first_name"] = json!("Changed By Webhook");
    newer["updated_at"] = json!(newer["updated_at"].as_i64().unwrap() + 60_000);
    assert_eq!(app.send_clerk("wh", &whsec, &clerk_event("user.updated", newer.clone(), 1)).await.0, 200);
    gate.release();
    let job = app.wait_backfill_done("wh").await;
    succeeded(&job);
    assert_eq!(job.users_stale, 1, "the backfill's older copy was skipped");
    let row = users_table(&app.project().await).await[&id].clone();
    assert_eq!(row.first_name.as_deref(), Some("Changed By Webhook"));
    assert_eq!(row.raw, Some(newer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_respected() {
    let clerk = FakeClerk::start(FakeClerkConfig {
        users: 400,
        rate_limit: Some(RateLimit { capacity: 5, refill_per_sec: 5.0 }),
        ..Default::default()
    })
    .await
    .unwrap();
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 25;
            s.clerk.rate_limit_test = 5;
            s.clerk.rate_window = Duration::from_secs(1);
        }),
        ..Default::default()
    })
    .await;
    app.client.configure_raw_request(clerk_request("rl", &app.project_url, clerk.secret_key())).await.unwrap();
    let job = app.wait_backfill_done("rl").await;
    succeeded(&job);
    assert_eq!(job.users_written, 400);
    assert_eq!(clerk.rate_limited_count(), 0, "the client-side limiter kept under Clerk's");
    assert!(clerk.max_requests_in_window(Duration::from_secs(1)) <= 5 + 1);
}

#[tokio::test]
async fn retry_after_5xx_timeouts_and_truncated_bodies_are_retried() {
    let clerk = fake(120).await;
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 40;
            s.clerk.timeout = Duration::from_millis(500);
        }),
        ..Default::default()
    })
    .await;
    // Request 1 is the key check; faults hit the backfill's pages.
    let gate = clerk.pause_users_request(2);
    app.client.configure_raw_request(clerk_request("flaky", &app.project_url, clerk.secret_key())).await.unwrap();
    gate.wait_arrived().await;
    clerk.inject_faults([
        Fault::Status(429),
        Fault::Status(500),
        Fault::Status(503),
        Fault::Delay(Duration::from_secs(2)),
        Fault::Truncate,
    ]);
    gate.release();
    let job = app.wait_backfill_done("flaky").await;
    succeeded(&job);
    assert_eq!(job.users_written, 120);
    assert_eq!(clerk.pending_faults(), 0);
    // Retry-After: 1 was honoured: the request after the 429 came at least a second later.
    let reqs = clerk.users_requests();
    let i = reqs.iter().position(|r| r.status == 429).expect("a 429 was served");
    assert!(reqs[i + 1].received_at - reqs[i].received_at >= Duration::from_millis(950));
    assert_table_mirrors(&app, &clerk, &[]).await;
}

#[tokio::test]
async fn a_rejected_key_fails_the_job_at_once_with_a_clear_message() {
    let clerk = fake(50).await;
    let app = app_for(&clerk, 10).await;
    let gate = clerk.pause_users_request(2);
    app.client.configure_raw_request(clerk_request("revoked", &app.project_url, clerk.secret_key())).await.unwrap();
    gate.wait_arrived().await;
    clerk.inject_fault(Fault::Status(401));
    gate.release();
    let job = app.wait_backfill_done("revoked").await;
    assert_eq!(job.state, BackfillState::Failed as i32);
    assert!(job.error.contains("Clerk rejected the secret key"), "{}", job.error);
    assert_eq!(clerk.users_requests().len(), 2, "no retry after a 401");
    let status = app.client.get_sync_status("revoked", Provider::Clerk).await.unwrap();
    assert_eq!(status.integration.unwrap().state, client::IntegrationState::NeedsAttention as i32);
    assert!(status.verdict.contains("failed"), "{}", status.verdict);
    assert_no_leaks(&app, &[clerk.secret_key()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_the_backfill_from_its_checkpoint() {
    let clerk = fake(2_000).await;
    let shared = Outliving::new().await;
    let (control, project) = (shared.control.clone(), shared.project.clone());
    let opts = |clerk: &FakeClerk| shared.options(clerk);
    let app = TestApp::spawn_with(opts(&clerk)).await;
    // Request 1 = key check, 2..=7 = pages 1..6; page 7 is held while the server dies.
    let gate = clerk.pause_users_request(8);
    app.client.configure_raw_request(clerk_request("crash", &project, clerk.secret_key())).await.unwrap();
    gate.wait_arrived().await;
    let ctl = connect(&control).await;
    // The writer runs one page behind the fetcher; wait until page 6 is committed.
    let checkpoint: Value = eventually("six pages are checkpointed", || async {
        let row = ctl.query_one("SELECT pages, checkpoint FROM capydb_auth_sync.backfill_jobs", &[]).await.unwrap();
        (row.get::<_, i64>(0) == 6).then(|| row.get::<_, Option<Value>>(1).unwrap())
    })
    .await;
    assert!(checkpoint["from_ms"].is_i64(), "six pages were checkpointed");
    app.kill().await;
    gate.release();
    let before = clerk.users_requests().len();

    let app = TestApp::spawn_with(opts(&clerk)).await;
    let job = app.wait_backfill_done("crash").await;
    succeeded(&job);
    assert_eq!(job.resumes, 1);
    let after: Vec<_> = clerk.users_requests().into_iter().skip(before).collect();
    let resume_from = (checkpoint["from_ms"].as_i64().unwrap() - 1).to_string();
    assert_eq!(after[0].param("created_at_after"), Some(resume_from.as_str()), "resumed at the checkpoint");
    assert!(after.iter().all(|r| r.param("created_at_after").is_some()), "the first pages were not fetched again");
    assert!(after.len() <= 16, "{} requests after the restart", after.len());
    assert_table_mirrors(&app, &clerk, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_one_backfill() {
    let clerk = fake(600).await;
    let shared = Outliving::new().await;
    let (control, project) = (shared.control.clone(), shared.project.clone());
    let opts = || shared.options(&clerk);
    let a = TestApp::spawn_with(opts()).await;
    let b = TestApp::spawn_with(opts()).await;
    let gate = clerk.pause_users_request(3);
    a.client.configure_raw_request(clerk_request("rep", &project, clerk.secret_key())).await.unwrap();
    gate.wait_arrived().await;
    let (ja, jb) =
        tokio::join!(a.client.run_backfill("rep", Provider::Clerk), b.client.run_backfill("rep", Provider::Clerk));
    let (ja, jb) = (ja.unwrap(), jb.unwrap());
    assert_eq!(ja.id, jb.id, "both replicas return the one running job");
    gate.release();
    let done = b.wait_backfill_done("rep").await;
    assert_eq!(done.id, ja.id);
    succeeded(&done);
    let first_pages = clerk
        .users_requests()
        .iter()
        .filter(|r| r.param("order_by").is_some() && r.param("created_at_after").is_none())
        .count();
    assert_eq!(first_pages, 1, "the first page was fetched once: one runner");
    let jobs: i64 = connect(&control)
        .await
        .query_one("SELECT count(*) FROM capydb_auth_sync.backfill_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1);
    assert_eq!(done.users_written, 600);
}

#[tokio::test]
async fn a_deletion_no_webhook_saw_is_repaired_by_the_next_backfill() {
    let clerk = fake(80).await;
    let app = app_for(&clerk, 30).await;
    app.client.configure_raw_request(clerk_request("repair", &app.project_url, clerk.secret_key())).await.unwrap();
    succeeded(&app.wait_backfill_done("repair").await);
    let ids = clerk.user_ids();
    let gone: Vec<String> = [3usize, 31, 79].iter().map(|&i| ids[i].clone()).collect();
    for id in &gone {
        assert!(clerk.delete_user(id));
    }
    let job = app.client.run_backfill("repair", Provider::Clerk).await.unwrap();
    let done = app.wait_backfill_done("repair").await;
    assert_eq!(done.id, job.id);
    succeeded(&done);
    assert_eq!(done.deletions_reconciled, 3);
    assert_eq!(done.users_stale, 77, "unchanged users are not rewritten");
    assert_table_mirrors(&app, &clerk, &gone).await;
    let status = app.client.get_sync_status("repair", Provider::Clerk).await.unwrap();
    assert_eq!((status.users_total, status.users_deleted), (80, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_backfill_streams_increasing_progress_until_a_terminal_state() {
    let clerk = fake(1_500).await;
    let app = app_for(&clerk, 100).await;
    // Request 1 is the key check; page 1 is request 2; page 8 (request 9) is held so the
    // watcher is sure to see the job mid-way.
    let start = clerk.pause_users_request(2);
    let midway = clerk.pause_users_request(9);
    app.client.configure_raw_request(clerk_request("watch", &app.project_url, clerk.secret_key())).await.unwrap();
    let mut stream = app.client.watch_backfill("watch", Provider::Clerk).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(BackfillState::try_from(first.state).unwrap(), BackfillState::Queued | BackfillState::Running));
    start.release();
    let mut snapshots = vec![first];
    while snapshots.last().unwrap().users_written < 500 {
        snapshots.push(stream.next().await.expect("more snapshots").unwrap());
    }
    assert_eq!(snapshots.last().unwrap().state, BackfillState::Running as i32);
    midway.release();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await.unwrap() {
        snapshots.push(item.unwrap());
    }
    let last = snapshots.last().unwrap();
    succeeded(last);
    assert_eq!(last.users_written, 1_500);
    for pair in snapshots.windows(2) {
        assert!(pair[1].users_written >= pair[0].users_written && pair[1].pages >= pair[0].pages);
        assert_ne!(pair[0], pair[1], "only changes are streamed");
    }
    assert!(
        snapshots.iter().any(|s| s.users_written > 0 && s.users_written < 1_500),
        "intermediate progress was streamed"
    );
}

#[tokio::test]
async fn webhook_only_providers_have_no_backfill() {
    let app = TestApp::spawn().await;
    app.client
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: "a0".into(),
            provider: Provider::Auth0 as i32,
            database_url: app.project_url.clone(),
            credentials: Some(Credentials {
                secret_key: String::new(),
                webhook_signing_secret: "auth0-shared-secret-123".into(),
            }),
        })
        .await
        .unwrap();
    let err = app.client.run_backfill("a0", Provider::Unspecified).await.unwrap_err();
    let status = err.status().unwrap();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("webhook-only"), "{}", status.message());
}

#[tokio::test]
async fn deleting_an_integration_stops_its_backfill_and_its_webhooks() {
    let clerk = fake(1_000).await;
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 50;
            s.backfill.concurrency = 1;
        }),
        ..Default::default()
    })
    .await;
    let whsec = new_whsec();
    let gate = clerk.pause_users_request(4);
    app.client
        .configure_raw_request(ConfigureIntegrationRequest {
            credentials: Some(Credentials {
                secret_key: clerk.secret_key().into(),
                webhook_signing_secret: whsec.clone(),
            }),
            ..clerk_request("del", &app.project_url, "")
        })
        .await
        .unwrap();
    gate.wait_arrived().await;
    let job = app.client.get_sync_status("del", Provider::Clerk).await.unwrap().current_backfill.unwrap();
    queue_next_job(&app, &clerk).await;
    app.client.delete_integration("del", Provider::Clerk).await.unwrap();
    gate.release();
    // The runner finds its job gone at the next checkpoint and stops: its slot goes to the
    // next job. Then (after the fact) its log says so.
    wait_next_job_started(&app).await;
    let stopped = format!("job_id={}", job.id);
    assert!(
        captured_logs().lines().any(|l| l.contains(&stopped) && l.contains("backfill runner stopped")),
        "the runner stopped: {}",
        captured_logs().lines().filter(|l| l.contains("backfill")).collect::<Vec<_>>().join("\n")
    );
    // Page 3 was asked for before the delete; the fetcher runs at most a batch being
    // written, a batch's worth queued and one more ahead of the commits (4 + 1 pages).
    let pages = first_job_pages(&clerk).len();
    assert!(pages <= 3 + 5, "no paging after the delete ({pages} pages of 20)");
    assert!(users_table(&app.project().await).await.len() < 1_000, "the table stays as it was, not completed");
    let body = clerk_event("user.created", json!({"id": "user_z", "object": "user", "updated_at": 1}), 1);
    assert_eq!(app.send_clerk("del", &whsec, &body).await.0, 404);
}

#[tokio::test]
async fn a_project_database_outage_fails_the_backfill_instead_of_hanging_and_a_rerun_completes() {
    let clerk = fake(400).await;
    let app = app_for(&clerk, 50).await;
    let mut proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let gate = clerk.pause_users_request(4);
    app.client
        .configure_raw_request(clerk_request("outage", &proxy.url_through(&app.project_url), clerk.secret_key()))
        .await
        .unwrap();
    gate.wait_arrived().await;
    proxy.cut().await;
    gate.release();
    let job = app.wait_backfill_done("outage").await;
    assert_eq!(job.state, BackfillState::Failed as i32, "the job ends instead of hanging");
    assert!(job.error.contains("project database"), "{}", job.error);

    proxy.restore().await;
    app.client.run_backfill("outage", Provider::Clerk).await.unwrap();
    succeeded(&app.wait_backfill_done("outage").await);
    assert_table_mirrors(&app, &clerk, &[]).await;
}

#[tokio::test]
async fn a_clerk_backfill_leaves_other_providers_rows_alone() {
    let clerk = fake(60).await;
    let app = app_for(&clerk, 25).await;
    let secret = "better-auth-shared-secret-1234";
    app.client
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: "mixed".into(),
            provider: Provider::BetterAuth as i32,
            database_url: app.project_url.clone(),
            credentials: Some(Credentials { secret_key: String::new(), webhook_signing_secret: secret.into() }),
        })
        .await
        .unwrap();
    let body = json!({"event": "user.created", "user": {"id": "ba_1", "email": "ba@example.com", "name": "B A",
        "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2020-01-01T00:00:00Z"}})
    .to_string();
    let req = client::SignedRequest::better_auth(secret, body.into_bytes());
    assert_eq!(app.send(&app.webhook_url("better-auth", "mixed"), &req).await.0, 200);

    app.client.configure_raw_request(clerk_request("mixed", &app.project_url, clerk.secret_key())).await.unwrap();
    let job = app.wait_backfill_done("mixed").await;
    succeeded(&job);
    assert_eq!(job.deletions_reconciled, 0);
    assert_eq!(job.users_fetched, 60, "one pass: the count check ignores other providers' rows");
    let rows = users_table(&app.project().await).await;
    assert_eq!(rows["ba_1"].deleted_at, None, "the Better Auth user is not Clerk's to delete");
}

#[tokio::test]
async fn a_new_database_url_supersedes_the_running_backfill() {
    let clerk = fake(500).await;
    let app = app_for(&clerk, 50).await;
    let gate = clerk.pause_users_request(4);
    app.client.configure_raw_request(clerk_request("move", &app.project_url, clerk.secret_key())).await.unwrap();
    gate.wait_arrived().await;
    let old_job = app.client.get_sync_status("move", Provider::Clerk).await.unwrap().current_backfill.unwrap();
    let new_db = new_project_db().await;
    app.client.configure_raw_request(clerk_request("move", &new_db, "")).await.unwrap();
    gate.release();
    let job = app.wait_backfill_done("move").await;
    assert_ne!(job.id, old_job.id, "a new job fills the new database");
    succeeded(&job);
    assert_eq!(users_table(&connect(&new_db).await).await.len(), 500);
    let ctl = connect(&app.control_url).await;
    let (state, error): (String, Option<String>) = {
        let r = ctl
            .query_one("SELECT state, error FROM capydb_auth_sync.backfill_jobs WHERE id = $1", &[&old_job.id])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(state, "cancelled");
    assert!(error.unwrap().contains("changed"));
}

#[tokio::test]
async fn a_crowded_millisecond_with_churn_never_soft_deletes_a_live_user() {
    let clerk = fake(0).await;
    // 25 users in one millisecond, pages of 10: that millisecond is paged by offset.
    let ids: Vec<String> =
        (0..25).map(|_| clerk.create_user_at(1_700_000_000_000)["id"].as_str().unwrap().to_string()).collect();
    let app = app_for(&clerk, 10).await;
    app.client.configure_raw_request(clerk_request("crowd", &app.project_url, clerk.secret_key())).await.unwrap();
    succeeded(&app.wait_backfill_done("crowd").await);
    // Second backfill: the first user of the millisecond is deleted just before the page at
    // offset 10, which shifts every later user by one place.
    // Within one millisecond Clerk orders by id: the victim is the first of them.
    let victim = ids.iter().min().unwrap().clone();
    let base = clerk.stats().users_requests_admitted;
    clerk.on_users_request(move |info, users| {
        if info.seq > base && info.param("offset") == Some("10") {
            users.delete(&victim);
        }
    });
    app.client.run_backfill("crowd", Provider::Clerk).await.unwrap();
    succeeded(&app.wait_backfill_done("crowd").await);
    let rows = users_table(&app.project().await).await;
    for user in clerk.users_snapshot() {
        let id = user["id"].as_str().unwrap();
        assert_eq!(rows[id].deleted_at, None, "{id} exists at Clerk and must stay live");
    }
}

// ---------------------------------------------------------------------------------------
// Issue 9: confirmed reconciliation, fenced writers, poison-proof pages, bounded cursor,
// bounded concurrency.

fn clerk_live_request(project: &str, db: &str, key: &str, whsec: &str) -> ConfigureIntegrationRequest {
    ConfigureIntegrationRequest {
        credentials: Some(Credentials { secret_key: key.into(), webhook_signing_secret: whsec.into() }),
        ..clerk_request(project, db, key)
    }
}

/// The project's latest job: id, pages, lease owner, checkpoint.
async fn control_job(app: &TestApp, project: &str) -> (String, i64, Option<String>, Value) {
    let row = connect(&app.control_url)
        .await
        .query_one(
            "SELECT id, pages, lease_owner, COALESCE(checkpoint, 'null'::jsonb) FROM capydb_auth_sync.backfill_jobs \
             WHERE project_id = $1 ORDER BY created_at DESC LIMIT 1",
            &[&project],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// The project [`queue_next_job`] configures.
const NEXT: &str = "next";

/// On a replica with `backfill.concurrency = 1` whose one slot a runner holds: configures a
/// backfill of another project, which waits its turn (checked). [`wait_next_job_started`]
/// then proves the runner before it has returned, without reading the logs.
async fn queue_next_job(app: &TestApp, clerk: &FakeClerk) {
    let db = new_project_db().await;
    app.client.configure_raw_request(clerk_request(NEXT, &db, clerk.secret_key())).await.unwrap();
    let job = app.client.get_sync_status(NEXT, Provider::Clerk).await.unwrap().current_backfill.unwrap();
    assert_eq!(job.state, BackfillState::Queued as i32, "the next job waits for the only slot");
}

/// Waits until the job [`queue_next_job`] queued has left the queue: the slot is free, so
/// the runner that held it has returned.
async fn wait_next_job_started(app: &TestApp) {
    eventually("the next job takes the freed slot", || async {
        let status = app.client.get_sync_status(NEXT, Provider::Clerk).await.unwrap();
        status.current_backfill.is_none_or(|job| job.state != BackfillState::Queued as i32).then_some(())
    })
    .await;
}

/// The pages (`GET /v1/users` with an order; key checks have none) the first job fetched:
/// its first page and the ones after it, up to the next job's first page, which starts
/// from the beginning (no `created_at_after`), as the first job's later pages never do.
fn first_job_pages(clerk: &FakeClerk) -> Vec<RequestRecord> {
    let mut pages: Vec<_> = clerk.users_requests().into_iter().filter(|r| r.param("order_by").is_some()).collect();
    let first_job = 1 + pages.iter().skip(1).take_while(|r| r.param("created_at_after").is_some()).count();
    pages.truncate(first_job);
    pages
}

async fn row_count(app: &TestApp) -> i64 {
    app.project().await.query_one("SELECT count(*) FROM capydb_auth.users", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_imported_back_dated_while_its_page_is_in_flight_stays_live() {
    let clerk = fake(500).await;
    let app = app_for(&clerk, 50).await;
    let whsec = new_whsec();
    let users = clerk.users_snapshot();
    // Page 1 is request 2 (request 1 is the key check): hold it while we set the trap.
    let first = clerk.pause_users_request(2);
    // Page 4 (request 5): when it arrives, page 3 has been listed and waits for the writer.
    let fourth = clerk.pause_users_request(5);
    app.client
        .configure_raw_request(clerk_live_request("race", &app.project_url, clerk.secret_key(), &whsec))
        .await
        .unwrap();
    first.wait_arrived().await;

    // Keep the writer busy on page 2: a webhook writes one of its users, and a transaction of
    // ours holds that row's lock.
    let blocker = &users[60];
    let (status, _) = app.send_clerk("race", &whsec, &clerk_event("user.created", blocker.clone(), 1)).await;
    assert_eq!(status, 200);
    let mut locker = app.project().await;
    let lock = locker.transaction().await.unwrap();
    lock.execute("SELECT 1 FROM capydb_auth.users WHERE id = $1 FOR UPDATE", &[&blocker["id"].as_str().unwrap()])
        .await
        .unwrap();
    first.release();
    fourth.wait_arrived().await;

    // Page 3 (users ~100..149) is listed, not yet written. A migration imports a user with a
    // created_at inside that window; its user.created webhook lands at once.
    let back_dated = users[120]["created_at"].as_i64().unwrap() + 1;
    let imported = clerk.create_user_at(back_dated);
    let imported_id = imported["id"].as_str().unwrap().to_string();
    let (status, body) = app.send_clerk("race", &whsec, &clerk_event("user.created", imported.clone(), 2)).await;
    assert_eq!(status, 200, "{body}");
    lock.commit().await.unwrap();
    fourth.release();

    let done = app.wait_backfill_done("race").await;
    succeeded(&done);
    let table = users_table(&app.project().await).await;
    assert!(table[&imported_id].deleted_at.is_none(), "the imported user is live");
    assert!(done.reconcile_kept >= 1, "Clerk was asked and still had the user: {done:?}");
    assert_eq!(done.deletions_reconciled, 0);
    assert!(clerk.stats().user_requests >= 1);
    assert_table_mirrors(&app, &clerk, &[]).await;
}

#[tokio::test]
async fn a_user_hidden_from_lists_but_served_by_id_is_upserted_not_deleted() {
    let clerk = fake(120).await;
    let app = app_for(&clerk, 50).await;
    app.client.configure_raw_request(clerk_request("hidden", &app.project_url, clerk.secret_key())).await.unwrap();
    succeeded(&app.wait_backfill_done("hidden").await);
    let victim = clerk.user_ids()[70].clone();
    clerk.update_user(&victim, |u| u["first_name"] = json!("Renamed"));
    clerk.hide_from_lists(&victim);

    app.client.run_backfill("hidden", Provider::Clerk).await.unwrap();
    let done = app.wait_backfill_done("hidden").await;
    succeeded(&done);
    assert_eq!(done.deletions_reconciled, 0);
    assert!(done.reconcile_checks >= 1 && done.reconcile_kept >= 1, "{done:?}");
    let table = users_table(&app.project().await).await;
    let row = &table[&victim];
    assert!(row.deleted_at.is_none(), "a user Clerk still returns is never deleted");
    assert_eq!(row.first_name.as_deref(), Some("Renamed"), "and it is upserted from the answer by id");
    assert_eq!(clerk.stats().user_not_found, 0);
}

#[tokio::test]
async fn a_user_deleted_at_clerk_is_soft_deleted_after_a_404_by_id() {
    let clerk = fake(90).await;
    let app = app_for(&clerk, 40).await;
    app.client.configure_raw_request(clerk_request("gone", &app.project_url, clerk.secret_key())).await.unwrap();
    succeeded(&app.wait_backfill_done("gone").await);
    let ids = clerk.user_ids();
    let gone: Vec<String> = [5usize, 45, 88].iter().map(|&i| ids[i].clone()).collect();
    for id in &gone {
        assert!(clerk.delete_user(id));
    }
    app.client.run_backfill("gone", Provider::Clerk).await.unwrap();
    let done = app.wait_backfill_done("gone").await;
    succeeded(&done);
    assert_eq!((done.deletions_reconciled, done.reconcile_checks, done.reconcile_kept), (3, 3, 0));
    let by_id: Vec<String> = clerk
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/users/user_") && r.status == 404)
        .map(|r| r.path.trim_start_matches("/v1/users/").to_string())
        .collect();
    let mut asked = by_id.clone();
    asked.sort();
    let mut expected = gone.clone();
    expected.sort();
    assert_eq!(asked, expected, "each deletion was confirmed by a 404 by id");
    assert_table_mirrors(&app, &clerk, &gone).await;
}

/// A server listing 100 users a page, one backfill at a time, with a lease so long that its
/// heartbeat (every lease/3) cannot notice a lost lease before the fence does.
async fn long_lease_app(clerk: &FakeClerk) -> TestApp {
    TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 100;
            s.backfill.lease_ttl = Duration::from_secs(120);
            s.backfill.concurrency = 1;
        }),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_runner_commits_nothing_after_losing_its_lease() {
    let clerk = fake(1_000).await;
    let app = long_lease_app(&clerk).await;
    let gate = clerk.pause_users_request(5); // page 4
    app.client.configure_raw_request(clerk_request("fence", &app.project_url, clerk.secret_key())).await.unwrap();
    gate.wait_arrived().await;

    // Another replica takes the job over (as after an expiry). This UPDATE waits for a page
    // commit in flight, so what is in the table now is everything the old runner committed.
    let control = connect(&app.control_url).await;
    let (job_id, _, _, _) = control_job(&app, "fence").await;
    let taken = control
        .execute(
            "UPDATE capydb_auth_sync.backfill_jobs SET lease_owner = 'replica-b', \
             lease_expires_at = now() + interval '1 hour' WHERE id = $1 AND state = 'running'",
            &[&job_id],
        )
        .await
        .unwrap();
    assert_eq!(taken, 1);
    let (_, pages_before, _, checkpoint_before) = control_job(&app, "fence").await;
    let rows_before = row_count(&app).await;
    assert!(rows_before < 1_000);

    queue_next_job(&app, &clerk).await;

    gate.release();
    // The old runner fetches page 4, tries to commit it, finds the lease gone and stops: its
    // slot goes to the next job. Then (after the fact) its log says so.
    wait_next_job_started(&app).await;
    assert!(captured_logs().lines().any(|l| l.contains(&job_id) && l.contains("backfill runner stopped")));
    let pages = first_job_pages(&clerk);
    assert!(pages.len() >= 4 && pages[3].status == 200, "page 4 was fetched");
    assert_eq!(row_count(&app).await, rows_before, "no page committed after the lease was lost");
    let (_, pages_after, owner, checkpoint_after) = control_job(&app, "fence").await;
    assert_eq!((pages_after, owner.as_deref()), (pages_before, Some("replica-b")));
    assert_eq!(checkpoint_after, checkpoint_before);
    assert!(!captured_logs().lines().any(|l| l.contains(&job_id) && l.contains("backfill failed")));
}

#[tokio::test]
async fn a_nul_name_lands_as_a_replacement_character_and_an_unparseable_user_is_skipped_and_named() {
    let clerk = fake(60).await;
    let ids = clerk.user_ids();
    let (nul, bad) = (ids[10].clone(), ids[20].clone());
    clerk.update_user(&nul, |u| u["first_name"] = json!("Ann\u{0}e"));
    clerk.update_user(&bad, |u| u["first_name"] = json!(42));
    let app = app_for(&clerk, 25).await;
    app.client.configure_raw_request(clerk_request("poison", &app.project_url, clerk.secret_key())).await.unwrap();
    let done = app.wait_backfill_done("poison").await;
    succeeded(&done);
    assert_eq!(done.users_skipped, 1);
    assert_eq!(done.errors.len(), 1, "{:?}", done.errors);
    assert!(done.errors[0].starts_with(&bad), "the skipped user is named: {:?}", done.errors);
    let table = users_table(&app.project().await).await;
    assert_eq!(table.len(), 59, "everyone else landed");
    assert!(!table.contains_key(&bad));
    let row = &table[&nul];
    assert_eq!(row.first_name.as_deref(), Some("Ann\u{FFFD}e"));
    assert_eq!(row.raw.as_ref().unwrap()["first_name"], "Ann\u{FFFD}e");
    let status = app.client.get_sync_status("poison", Provider::Clerk).await.unwrap();
    assert_eq!(status.last_backfill.unwrap().users_skipped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_users_in_one_millisecond_complete_with_a_small_checkpoint() {
    let clerk = fake(0).await;
    const CROWDED: i64 = 1_700_000_000_000;
    clerk.with_users(|u| {
        for i in 0..5 {
            u.create_at(CROWDED - 1_000 + i);
        }
        for _ in 0..20_000 {
            u.create_at(CROWDED);
        }
        for i in 0..5 {
            u.create_at(CROWDED + 1_000 + i);
        }
    });
    let app = app_for(&clerk, 500).await;
    let midway = clerk.pause_users_request(20);
    app.client.configure_raw_request(clerk_request("crowd", &app.project_url, clerk.secret_key())).await.unwrap();
    midway.wait_arrived().await;
    let (_, _, _, checkpoint) = control_job(&app, "crowd").await;
    let size = checkpoint.to_string().len();
    assert!(checkpoint["tie_offset"].is_u64(), "inside the crowded millisecond: {checkpoint}");
    assert!(size < 4_096, "checkpoint of {size} bytes");
    midway.release();

    let done = app.wait_backfill_done("crowd").await;
    succeeded(&done);
    assert_eq!(row_count(&app).await, 20_010);
    assert_eq!(done.users_fetched, 20_010, "overlap is not counted twice");
    let (_, _, _, last) = control_job(&app, "crowd").await;
    assert!(last.to_string().len() < 4_096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_ten_queued_jobs_runs_at_most_its_concurrency_at_once() {
    let clerk = fake(1_500).await;
    // 20 requests/s shared by all jobs of the key: each job lasts a while.
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 50;
            s.clerk.rate_limit_test = 20;
            s.clerk.rate_window = Duration::from_secs(1);
            s.backfill.concurrency = 2;
        }),
        ..Default::default()
    })
    .await;
    let control = connect(&app.control_url).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let stop = stop.clone();
        let control_url = app.control_url.clone();
        tokio::spawn(async move {
            let c = connect(&control_url).await;
            let (mut max_running, mut max_queued) = (0i64, 0i64);
            while !stop.is_cancelled() {
                let r = c
                    .query_one(
                        "SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'queued') \
                         FROM capydb_auth_sync.backfill_jobs",
                        &[],
                    )
                    .await
                    .unwrap();
                max_running = max_running.max(r.get(0));
                max_queued = max_queued.max(r.get(1));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (max_running, max_queued)
        })
    };
    let mut dbs = Vec::new();
    for i in 0..10 {
        let db = new_project_db().await;
        app.client.configure_raw_request(clerk_request(&format!("many-{i}"), &db, clerk.secret_key())).await.unwrap();
        dbs.push(db);
    }
    // The last one queued behind the others is visible as queued.
    let status = app.client.get_sync_status("many-9", Provider::Clerk).await.unwrap();
    assert_eq!(status.current_backfill.unwrap().state, BackfillState::Queued as i32);

    // 20 requests/s for about 330 requests: long by design.
    eventually_within("all ten backfills ended", Duration::from_secs(60), || async {
        let n: i64 = control
            .query_one("SELECT count(*) FROM capydb_auth_sync.backfill_jobs WHERE state = 'succeeded'", &[])
            .await
            .unwrap()
            .get(0);
        (n == 10).then_some(())
    })
    .await;
    stop.cancel();
    let (max_running, max_queued) = poller.await.unwrap();
    assert_eq!(max_running, 2, "never more than the configured concurrency at once");
    assert!(max_queued >= 1, "the others waited their turn");
    for i in 0..10 {
        let job = app.wait_backfill_done(&format!("many-{i}")).await;
        succeeded(&job);
        assert_eq!(job.users_written, 1_500);
    }
}

/// The merge-rules scenario for a backfill listing `users` users `page_size` a page: while
/// the first page is held, a webhook deletes user A (a tombstone) and another brings user B
/// newer than Clerk's listing but with an older sign-in. Returns the finished table's rows
/// with A's and B's ids; asserts what the rules require of A and B.
async fn backfill_across_webhooks(
    project: &str,
    users: usize,
    page_size: u32,
) -> (FakeClerk, Vec<String>, std::collections::BTreeMap<String, UserRow>) {
    let clerk = fake(users).await;
    let ids = clerk.user_ids();
    let (a, b) = (ids[3].clone(), ids[7].clone());
    let clerk_b = clerk.update_user(&b, |u| u["last_sign_in_at"] = json!(1_700_000_900_000i64)).unwrap();
    let app = app_for(&clerk, page_size).await;
    let whsec = new_whsec();
    let gate = clerk.pause_users_request(2);
    app.client
        .configure_raw_request(clerk_live_request(project, &app.project_url, clerk.secret_key(), &whsec))
        .await
        .unwrap();
    gate.wait_arrived().await;
    // A: deleted by a webhook before the backfill lists it (a tombstone).
    let deleted = clerk_event("user.deleted", json!({"id": a, "object": "user", "deleted": true}), 1_700_000_000_000);
    assert_eq!(app.send_clerk(project, &whsec, &deleted).await.0, 200);
    // B: a webhook brought a newer object with an older sign-in than Clerk's listing has.
    let mut newer = clerk_b.clone();
    newer["updated_at"] = json!(clerk_b["updated_at"].as_i64().unwrap() + 10_000);
    newer["first_name"] = json!("FromWebhook");
    newer["last_sign_in_at"] = json!(1_700_000_100_000i64);
    assert_eq!(app.send_clerk(project, &whsec, &clerk_event("user.updated", newer, 1)).await.0, 200);
    gate.release();

    succeeded(&app.wait_backfill_done(project).await);
    let table = users_table(&app.project().await).await;
    let row_a = &table[&a];
    assert!(row_a.deleted_at.is_some(), "a delete is sticky");
    assert_eq!(
        row_a.first_name,
        clerk.user(&a).unwrap()["first_name"].as_str().map(str::to_string),
        "tombstone filled"
    );
    let row_b = &table[&b];
    assert_eq!(row_b.first_name.as_deref(), Some("FromWebhook"), "the newer webhook object stays");
    assert_eq!(row_b.last_sign_in_at, Some(ms(1_700_000_900_000)), "the sign-in moved forward");
    (clerk, vec![a, b], table)
}

#[tokio::test]
async fn a_copied_page_obeys_the_merge_rules_sticky_deletes_newer_wins_sign_in_forward() {
    backfill_across_webhooks("rules", 30, 10).await;
}

/// A page with a few stored users (under a tenth) takes the direct path: its new users are
/// COPYed straight in, the stored ones merged by the webhook statement under the same rules.
#[tokio::test]
async fn a_page_with_few_stored_users_copies_the_new_ones_and_merges_the_stored_by_the_rules() {
    // Pages of 50: the first holds 2 stored users of 50 (4 %).
    let (clerk, touched, table) = backfill_across_webhooks("few", 60, 50).await;
    assert_eq!(table.len(), 60);
    for id in clerk.user_ids().iter().filter(|id| !touched.contains(id)) {
        let row = &table[id];
        assert_eq!(row.raw.as_ref(), clerk.user(id).as_ref(), "{id}: raw is the object Clerk listed");
        assert!(row.deleted_at.is_none(), "{id}");
    }
}

/// The fake's users in Clerk's listing order (`created_at`, then id).
fn listed_users(clerk: &FakeClerk) -> Vec<Value> {
    let mut users = clerk.users_snapshot();
    users.sort_by_key(|u| (u["created_at"].as_i64(), u["id"].as_str().map(str::to_string)));
    users
}

/// Where page `n` (1-based) of the first job starts: the `created_at` (ms) its request
/// asked from (the previous page's last millisecond, listed again).
fn page_from_ms(clerk: &FakeClerk, n: usize) -> i64 {
    let page = &first_job_pages(clerk)[n - 1];
    page.param("created_at_after").expect("a page after the first").parse::<i64>().unwrap() + 1
}

/// Rows created strictly between two pages' starts (ms): written by no other pages than
/// those from the first to just before the second (the first page's overlap is left out),
/// and in how many transactions.
async fn rows_between(app: &TestApp, from_ms: i64, to_ms: i64) -> (i64, i64) {
    let row = app
        .project()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text) FROM capydb_auth.users \
             WHERE created_at > to_timestamp($1::float8 / 1000) AND created_at < to_timestamp($2::float8 / 1000)",
            &[&(from_ms as f64), &(to_ms as f64)],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Writes `user` through a webhook, then locks its row in a transaction of `locker`'s, which
/// stays open (a page write that merges the user waits for it). Returns the locker's backend.
async fn lock_user_row(
    app: &TestApp,
    project: &str,
    whsec: &str,
    user: &Value,
    locker: &tokio_postgres::Client,
) -> i32 {
    let (status, body) = app.send_clerk(project, whsec, &clerk_event("user.created", user.clone(), 1)).await;
    assert_eq!(status, 200, "{body}");
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute("SELECT 1 FROM capydb_auth.users WHERE id = $1 FOR UPDATE", &[&user["id"].as_str().unwrap()])
        .await
        .unwrap();
    locker.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// Waits until a project-database backend waits for a lock `blocker` holds.
async fn wait_blocked_by(app: &TestApp, blocker: i32) {
    let c = app.project().await;
    eventually("a page write waits for the locked row", || async {
        let n: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", &[&blocker])
            .await
            .unwrap()
            .get(0);
        (n > 0).then_some(())
    })
    .await;
}

/// The writer falls behind (a locked row holds page 1's write) while the fetcher lists pages
/// 2–5; they are then written as one batch, one transaction, which must commit nothing when
/// the lease is taken away while it is in flight (its last page waits on a second lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_runners_multi_page_batch_commits_nothing() {
    let clerk = fake(1_000).await;
    let users = listed_users(&clerk);
    let app = long_lease_app(&clerk).await;
    let whsec = new_whsec();
    // Request 1 is the key check; request n + 1 is page n.
    let first = clerk.pause_users_request(2);
    let sixth = clerk.pause_users_request(7);
    app.client
        .configure_raw_request(clerk_live_request("batch-fence", &app.project_url, clerk.secret_key(), &whsec))
        .await
        .unwrap();
    first.wait_arrived().await;
    let (lock_a, lock_b) = (app.project().await, app.project().await);
    let pid_a = lock_user_row(&app, "batch-fence", &whsec, &users[10], &lock_a).await;
    let pid_b = lock_user_row(&app, "batch-fence", &whsec, &users[450], &lock_b).await;
    first.release();
    // Page 6 is asked for only once page 5 is handed to the writer: pages 2–5 are queued
    // behind page 1's write, which waits on lock A.
    tokio::time::timeout(Duration::from_secs(60), sixth.wait_arrived())
        .await
        .expect("page 6 is asked for: pages 2–5 wait in the queue behind the blocked write");
    wait_blocked_by(&app, pid_a).await;
    lock_a.batch_execute("COMMIT").await.unwrap();
    // The next write takes every queued page and waits on lock B (page 5's user).
    wait_blocked_by(&app, pid_b).await;
    let (job_id, pages_before, _, checkpoint_before) = control_job(&app, "batch-fence").await;
    assert!((1..4).contains(&pages_before), "the waiting write holds pages {}..=5", pages_before + 1);
    // Pages 2 to 5 of the listing: page 6's start is page 5's last millisecond.
    let in_flight = (page_from_ms(&clerk, pages_before as usize + 1), page_from_ms(&clerk, 6));
    let blocker_ms = users[450]["created_at"].as_i64().unwrap();
    assert!(in_flight.0 < blocker_ms && blocker_ms < in_flight.1, "page 5's user is inside the batch");
    assert_eq!(
        rows_between(&app, in_flight.0, in_flight.1).await.0,
        1,
        "pages {}..=5 are one uncommitted transaction: only the webhook's row is there",
        pages_before + 1
    );

    // Another replica takes the job over while the batch is in flight.
    let control = connect(&app.control_url).await;
    let taken = control
        .execute(
            "UPDATE capydb_auth_sync.backfill_jobs SET lease_owner = 'replica-b', \
             lease_expires_at = now() + interval '1 hour' WHERE id = $1 AND state = 'running'",
            &[&job_id],
        )
        .await
        .unwrap();
    assert_eq!(taken, 1);
    let rows_before = row_count(&app).await;
    queue_next_job(&app, &clerk).await;
    lock_b.batch_execute("COMMIT").await.unwrap();
    sixth.release();

    wait_next_job_started(&app).await;
    assert!(captured_logs().lines().any(|l| l.contains(&job_id) && l.contains("backfill runner stopped")));
    assert_eq!(row_count(&app).await, rows_before, "the batch committed nothing after the lease was lost");
    assert_eq!(rows_between(&app, in_flight.0, in_flight.1).await.0, 1, "only the webhook's row");
    let (_, pages_after, owner, checkpoint_after) = control_job(&app, "batch-fence").await;
    assert_eq!((pages_after, owner.as_deref()), (pages_before, Some("replica-b")));
    assert_eq!(checkpoint_after, checkpoint_before);
}

/// Pages queued behind a slow write commit as one transaction, checkpointed at the batch's
/// last page with every page counted; a server killed after it resumes from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_pages_commits_as_one_and_resumes_from_its_last_page() {
    let clerk = fake(1_000).await;
    let users = listed_users(&clerk);
    let shared = Outliving::new().await;
    let (control, project) = (shared.control.clone(), shared.project.clone());
    let opts = |clerk: &FakeClerk| shared.options(clerk);
    let app = TestApp::spawn_with(opts(&clerk)).await;
    let whsec = new_whsec();
    let first = clerk.pause_users_request(2);
    let sixth = clerk.pause_users_request(7);
    app.client
        .configure_raw_request(clerk_live_request("batch-resume", &project, clerk.secret_key(), &whsec))
        .await
        .unwrap();
    first.wait_arrived().await;
    let lock = app.project().await;
    let pid = lock_user_row(&app, "batch-resume", &whsec, &users[10], &lock).await;
    first.release();
    tokio::time::timeout(Duration::from_secs(60), sixth.wait_arrived())
        .await
        .expect("page 6 is asked for: pages 2–5 wait in the queue behind the blocked write");
    wait_blocked_by(&app, pid).await;
    lock.batch_execute("COMMIT").await.unwrap();

    let ctl = connect(&control).await;
    let checkpoint: Value = eventually("five pages are checkpointed", || async {
        let row = ctl.query_one("SELECT pages, checkpoint FROM capydb_auth_sync.backfill_jobs", &[]).await.unwrap();
        (row.get::<_, i64>(0) == 5).then(|| row.get::<_, Option<Value>>(1).unwrap())
    })
    .await;
    // Pages 3–5 at least were written by one transaction (page 2 too, unless it joined page 1).
    let (page3, page6) = (page_from_ms(&clerk, 3), page_from_ms(&clerk, 6));
    let (rows, transactions) = rows_between(&app, page3, page6).await;
    assert!(rows > 250, "{rows} rows of pages 3–5");
    assert_eq!(transactions, 1, "pages 3–5 committed in one transaction");
    assert_eq!(checkpoint["from_ms"], page6, "the checkpoint is the batch's last page: {checkpoint}");
    app.kill().await;
    sixth.release();
    let before = clerk.users_requests().len();

    let app = TestApp::spawn_with(opts(&clerk)).await;
    let job = app.wait_backfill_done("batch-resume").await;
    succeeded(&job);
    assert_eq!(job.resumes, 1);
    let after: Vec<_> = clerk.users_requests().into_iter().skip(before).collect();
    let resume_from = (page6 - 1).to_string();
    assert_eq!(after[0].param("created_at_after"), Some(resume_from.as_str()), "resumed after the batch");
    assert_eq!(job.users_fetched, 1_000, "every user counted once, overlaps inside a batch too: {job:?}");
    assert_eq!(job.users_written + job.users_stale, 1_000, "{job:?}");
    assert_table_mirrors(&app, &clerk, &[]).await;
}
