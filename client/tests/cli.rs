//! The `capydb-auth-sync-admin` binary against the real server (in-process, real Postgres,
//! fake Clerk over HTTP): what an operator types, what they see, the exit codes.
#[path = "../../tests/api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::*;
use serde_json::Value;
use std::process::Output;

/// Runs the CLI off the async runtime (it is a blocking child process).
async fn run(app: &TestApp, token: &str, args: &[&str]) -> Output {
    let (bin_args, token) = (args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), token.to_string());
    let endpoint = format!("http://{}", app.grpc_addr);
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync-admin"))
            .args(&bin_args)
            .env("CAPYDB_AUTH_SYNC_ENDPOINT", endpoint)
            .env("CAPYDB_AUTH_SYNC_ADMIN_TOKEN", token)
            .env_remove("CAPYDB_AUTH_SYNC_SECRET_KEY")
            .env_remove("CAPYDB_AUTH_SYNC_WEBHOOK_SECRET")
            .output()
            .expect("run capydb-auth-sync-admin")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_configures_backfills_inspects_and_deletes_with_the_cli() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 700, rate_limit: None, ..Default::default() }).await.unwrap();
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| s.clerk.page_size = 100),
        ..Default::default()
    })
    .await;
    let whsec = new_whsec();
    let key = clerk.secret_key().to_string();

    let out = run(
        &app,
        TEST_TOKEN,
        &[
            "configure",
            "shop",
            "--provider",
            "clerk",
            "--database-url",
            &app.project_url,
            "--secret-key",
            &key,
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let integration: Value = serde_json::from_str(&stdout(&out)).expect("configure --json prints JSON");
    assert_eq!(integration["project_id"], "shop");
    assert_eq!(integration["provider"], "clerk");

    // backfill --watch follows the job to the end and prints the final state.
    let out = run(&app, TEST_TOKEN, &["backfill", "shop", "--watch", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let job: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["users_written"], 700);

    // Add the webhook secret later; send a signed test webhook through the receiver.
    let out = run(&app, TEST_TOKEN, &["configure", "shop", "--provider", "clerk", "--webhook-secret", &whsec]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let url = app.webhook_url("clerk", "shop");
    let out =
        run(&app, TEST_TOKEN, &["send-test-webhook", "shop", "--provider", "clerk", "--secret", &whsec, "--url", &url])
            .await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("HTTP 200"), "{}", stdout(&out));

    let out = run(&app, TEST_TOKEN, &["status", "shop", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["mode"], "live", "{status}");
    assert_eq!(status["users_total"], 701);
    assert_eq!(status["webhooks"]["applied"], 1);
    let human = stdout(&run(&app, TEST_TOKEN, &["status", "shop"]).await);
    assert!(human.contains("live") && human.contains("701"), "{human}");

    let out = run(&app, TEST_TOKEN, &["list", "--json"]).await;
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list.as_array().map(|a| a.len()), Some(1), "{list}");

    let out = run(&app, TEST_TOKEN, &["delete", "shop"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&app, TEST_TOKEN, &["status", "shop"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));

    // Nothing the operator passed in comes back out.
    for o in [stdout(&out), stderr(&out), human] {
        assert!(!o.contains(&key) && !o.contains(&whsec) && !o.contains(TEST_TOKEN));
    }
}

#[tokio::test]
async fn a_wrong_token_is_one_clear_line_and_a_failing_exit_code() {
    let app = TestApp::spawn().await;
    let out = run(&app, "not-the-token-0123456789", &["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: UNAUTHENTICATED"), "{err}");
    assert!(!err.contains("not-the-token-0123456789"));
    // Validation errors name the field.
    let out =
        run(&app, TEST_TOKEN, &["configure", "bad project", "--provider", "clerk", "--webhook-secret", "whsec_AAAA"])
            .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("project_id"), "{}", stderr(&out));
}
