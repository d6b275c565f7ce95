//! Replicas as an operator runs them: two processes of the real server binary, configured
//! through the environment, on one control database. Webhooks work on both, a Configure or
//! Delete through one reaches the other, one backfill runs per project across both, and the
//! backfill of a replica killed with SIGKILL is taken over by the other once its lease expires.
//!
//! The in-process tests cover the same mechanisms inside one test process
//! (`ingest::configure_and_delete_reach_a_second_replica…`, `backfill::two_replicas_run_one_backfill`,
//! `backfill::a_killed_server_resumes…`); these show them between real processes, with a real
//! SIGKILL, where nothing (cache, metrics recorder, instance id) is shared but the database.
//! The last test shows that the in-process abrupt stop (dropping `app::run`) looks the same to
//! the other replicas as that SIGKILL.
use capydb_auth_sync_client::{AuthSyncClient, BackfillState, ClientConfig, Provider, SignedRequest};
use serde_json::json;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;
use test_harness::*;

/// What every replica of one test shares: the control database, the keys, the token, Clerk.
struct Cluster {
    control_url: String,
    master_keys: String,
    clerk_url: String,
    logs: tempfile::TempDir,
}

impl Cluster {
    async fn new(clerk_url: Option<String>) -> Cluster {
        Cluster {
            control_url: new_control_db().await,
            master_keys: test_keyring_spec("k1"),
            clerk_url: clerk_url.unwrap_or_else(|| "http://127.0.0.1:9".into()),
            logs: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts `capydb-auth-sync` as `name` (its instance id, so lease owners start with it);
    /// returns once `/readyz` answers 200. Ports are found by binding port 0; should another
    /// process take one before the server binds it, the start is tried again on new ports.
    async fn start(&self, name: &'static str) -> Replica {
        for attempt in 0..3 {
            let [grpc, http, metrics] = [free_addr(), free_addr(), free_addr()];
            let log = self.logs.path().join(format!("{name}-{attempt}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync"));
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("CAPYDB_AUTH_SYNC_") {
                    command.env_remove(key);
                }
            }
            command
                .env("CAPYDB_AUTH_SYNC_DATABASE_URL", &self.control_url)
                .env("CAPYDB_AUTH_SYNC_MASTER_KEYS", &self.master_keys)
                .env("CAPYDB_AUTH_SYNC_ADMIN_TOKENS", TEST_TOKEN)
                // The test's project databases are on loopback, refused by default outside dev mode.
                .env("CAPYDB_AUTH_SYNC_DATABASE_ALLOW", "127.0.0.0/8,localhost")
                .env("CAPYDB_AUTH_SYNC_GRPC_ADDR", grpc.to_string())
                .env("CAPYDB_AUTH_SYNC_HTTP_ADDR", http.to_string())
                .env("CAPYDB_AUTH_SYNC_METRICS_ADDR", metrics.to_string())
                .env("CAPYDB_AUTH_SYNC_PUBLIC_BASE_URL", format!("http://{http}"))
                .env("CAPYDB_AUTH_SYNC_CLERK_API_URL", &self.clerk_url)
                .env("CAPYDB_AUTH_SYNC_CLERK_PAGE_SIZE", "100")
                .env("CAPYDB_AUTH_SYNC_CLERK_RATE_LIMIT_TEST", "1000")
                // The shortest lease the configuration allows: a dead replica's job is free soon.
                .env("CAPYDB_AUTH_SYNC_BACKFILL_LEASE_SECS", "2")
                .env("CAPYDB_AUTH_SYNC_SHUTDOWN_GRACE_SECS", "5")
                .env("HOSTNAME", name)
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .kill_on_drop(true);
            let mut child = command.spawn().expect("start the server binary");
            let probe = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            let started = eventually(&format!("{name} answers /readyz"), || {
                let exited = child.try_wait().unwrap();
                let probe = probe.clone();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    let r = probe.get(format!("http://{http}/readyz")).send().await.ok()?;
                    (r.status() == 200).then_some(Ok(()))
                }
            })
            .await;
            match started {
                Ok(()) => {
                    let client =
                        AuthSyncClient::connect(ClientConfig::new(format!("http://{grpc}")).with_token(TEST_TOKEN))
                            .await
                            .unwrap();
                    return Replica { name, child, http_addr: http, client, http: reqwest::Client::new(), log };
                }
                Err(status) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        text.contains("cannot listen on") && attempt < 2,
                        "{name} exited during start-up ({status}):\n{text}"
                    );
                }
            }
        }
        unreachable!("the last attempt either started or failed the test")
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// One server process. Dropping it kills the process (also when the test fails, whose
/// output then ends with the replica's log).
struct Replica {
    name: &'static str,
    child: tokio::process::Child,
    http_addr: SocketAddr,
    client: AuthSyncClient,
    http: reqwest::Client,
    log: PathBuf,
}

impl Replica {
    async fn send_clerk(&self, project: &str, whsec: &str, body: &str) -> u16 {
        let req = SignedRequest::clerk_now(whsec, body.as_bytes().to_vec()).unwrap();
        let url = format!("http://{}/api/capydb/v1/integrations/clerk/webhook/{project}", self.http_addr);
        self.http.post(url).headers(req.header_map()).body(req.body.clone()).send().await.unwrap().status().as_u16()
    }

    /// Polls until a delivery of `body` signed with `whsec` is answered `status` here.
    async fn eventually_answers(&self, status: u16, project: &str, whsec: &str, body: &str, what: &str) {
        eventually(&format!("{what} ({})", self.name), || async {
            (self.send_clerk(project, whsec, body).await == status).then_some(())
        })
        .await;
    }

    /// Configures a webhook secret (and the database, unless empty: then it is kept).
    async fn configure_webhooks(&self, project: &str, database_url: &str, whsec: &str) {
        let mut configure = self.client.configure_integration(project, Provider::Clerk).webhook_signing_secret(whsec);
        if !database_url.is_empty() {
            configure = configure.database_url(database_url);
        }
        configure.await.expect("configure");
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    async fn sigkill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(9), "{} was killed by SIGKILL", self.name);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- last lines of {} ---", self.name);
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

fn user_created(id: &str, updated_at: i64) -> String {
    clerk_event(
        "user.created",
        json!({"id": id, "object": "user", "created_at": 1, "updated_at": updated_at, "email_addresses": []}),
        updated_at,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_serve_webhooks_and_see_each_others_configure_and_delete() {
    let cluster = Cluster::new(None).await;
    let (a, b) = tokio::join!(cluster.start("replica-a"), cluster.start("replica-b"));
    let project_db = new_project_db().await;
    let first = new_whsec();
    for r in [&a, &b] {
        assert_eq!(r.send_clerk("rep", &first, &user_created("user_none", 1)).await, 404, "{}", r.name);
    }

    // Configured through A: both replicas take signed deliveries.
    a.configure_webhooks("rep", &project_db, &first).await;
    a.eventually_answers(200, "rep", &first, &user_created("user_a", 1), "A serves the integration it configured")
        .await;
    b.eventually_answers(200, "rep", &first, &user_created("user_b", 1), "B serves A's new integration").await;

    // A new secret configured through B reaches A (the previous one stays valid for the
    // rotation's grace period, so the new one is what proves it).
    let second = new_whsec();
    b.configure_webhooks("rep", "", &second).await;
    a.eventually_answers(200, "rep", &second, &user_created("user_a2", 2), "A verifies B's new secret").await;
    // B hears of its own change the same way (a notification), so it is polled too.
    b.eventually_answers(200, "rep", &second, &user_created("user_b2", 2), "B verifies its new secret").await;

    // Deleted through B: both replicas forget it. The probe is an event the sync does not
    // use, so the replica that has not heard yet (200, ignored) writes nothing either.
    b.client.delete_integration("rep", Provider::Clerk).await.unwrap();
    let probe = clerk_event("email.created", json!({"id": "ema_1", "object": "email"}), 3);
    for r in [&a, &b] {
        r.eventually_answers(404, "rep", &second, &probe, "the deleted integration is gone").await;
    }
    let ids: Vec<String> = users_table(&connect(&project_db).await).await.into_keys().collect();
    assert_eq!(ids, ["user_a", "user_a2", "user_b", "user_b2"], "every 200 was written, nothing after the delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_replicas_backfill_is_taken_over_by_the_other_once_its_lease_expires() {
    let clerk =
        FakeClerk::start(FakeClerkConfig { users: 3_000, rate_limit: None, ..Default::default() }).await.unwrap();
    let cluster = Cluster::new(Some(clerk.url())).await;
    let (a, b) = tokio::join!(cluster.start("replica-a"), cluster.start("replica-b"));
    let project_db = new_project_db().await;
    // Request 1 is the key check, 2..=7 are pages 1..6; page 7 is held, so the backfill is
    // certainly in flight when its replica dies.
    let gate = clerk.pause_users_request(8);
    a.client
        .configure_integration("bf", Provider::Clerk)
        .database_url(project_db.clone())
        .secret_key(clerk.secret_key())
        .await
        .unwrap();
    gate.wait_arrived().await;
    let control = connect(&cluster.control_url).await;
    // The writer runs a page behind the fetcher: wait until page 6 is committed.
    let (job_id, owner, checkpoint_ms) = eventually("six pages are checkpointed", || async {
        let r = control
            .query_one("SELECT id, pages, lease_owner, checkpoint FROM capydb_auth_sync.backfill_jobs", &[])
            .await
            .unwrap();
        let checkpoint: Option<serde_json::Value> = r.get(3);
        (r.get::<_, i64>(1) == 6)
            .then(|| (r.get::<_, String>(0), r.get::<_, String>(2), checkpoint.unwrap()["from_ms"].as_i64().unwrap()))
    })
    .await;

    // One backfill per project: asking either replica for one returns the running job.
    let (ja, jb) =
        tokio::join!(a.client.run_backfill("bf", Provider::Clerk), b.client.run_backfill("bf", Provider::Clerk));
    assert_eq!((ja.unwrap().id, jb.unwrap().id), (job_id.clone(), job_id.clone()));

    // Whichever replica holds the lease (the one that took the job first) is killed.
    let (victim, survivor) = if owner.starts_with("replica-a-") { (a, b) } else { (b, a) };
    assert!(owner.starts_with(&format!("{}-", victim.name)), "lease owner {owner}");
    victim.sigkill().await;
    gate.release();

    let done = backfill_done(&survivor.client, "bf").await;
    assert_eq!(done.id, job_id);
    assert_eq!(done.state, BackfillState::Succeeded as i32, "{}", done.error);
    assert_eq!(done.resumes, 1, "taken over once, by another owner");

    let table = users_table(&connect(&project_db).await).await;
    let mut expected = clerk.user_ids();
    expected.sort();
    assert_eq!(table.keys().cloned().collect::<Vec<_>>(), expected, "every user landed");
    assert!(table.values().all(|r| r.deleted_at.is_none()));

    let requests = clerk.users_requests();
    let first_pages =
        requests.iter().filter(|r| r.param("order_by").is_some() && r.param("created_at_after").is_none());
    assert_eq!(first_pages.count(), 1, "one runner started the job; the other resumed it");
    let resume_from = (checkpoint_ms - 1).to_string();
    let at_checkpoint = requests.iter().filter(|r| r.param("created_at_after") == Some(resume_from.as_str()));
    assert_eq!(at_checkpoint.count(), 2, "page 7 was asked by the dead runner, then by the survivor at the checkpoint");
    let jobs: i64 = control.query_one("SELECT count(*) FROM capydb_auth_sync.backfill_jobs", &[]).await.unwrap().get(0);
    assert_eq!(jobs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dropped_mid_backfill_leaves_its_lease_to_expire_like_a_crash() {
    // In process: dropping `app::run`'s future is the abrupt stop. Its runner must neither
    // checkpoint nor hand the lease back (that is the graceful path); the other replicas see
    // a crash: the lease runs out with the dead owner still named.
    let clerk = FakeClerk::start(FakeClerkConfig { users: 500, rate_limit: None, ..Default::default() }).await.unwrap();
    let control_url = new_control_db().await;
    let app = TestApp::spawn_with(TestOptions {
        control_url: Some(control_url.clone()),
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| s.clerk.page_size = 100),
        ..Default::default()
    })
    .await;
    // Request 1 is the key check, 2 is page 1; page 2 is held, so the runner is mid-job.
    let gate = clerk.pause_users_request(3);
    app.client
        .configure_integration("crash", Provider::Clerk)
        .database_url(app.project_url.clone())
        .secret_key(clerk.secret_key())
        .await
        .unwrap();
    gate.wait_arrived().await;
    let control = connect(&control_url).await;
    let job = "SELECT lease_owner, lease_expires_at < now(), state, pages FROM capydb_auth_sync.backfill_jobs";
    let row = control.query_one(job, &[]).await.unwrap();
    let owner: String = row.get(0);
    app.kill().await;
    gate.release();

    eventually("the dead runner's lease expires", || async {
        let row = control.query_one(job, &[]).await.unwrap();
        // A hand-over would clear the owner at once, long before the lease runs out.
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(owner.as_str()), "the lease was given back");
        assert_eq!(row.get::<_, String>(2), "running");
        assert!(row.get::<_, i64>(3) <= 1, "no page after page 1 was committed");
        row.get::<_, bool>(1).then_some(())
    })
    .await;
}
