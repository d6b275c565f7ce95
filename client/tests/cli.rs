//! The `capydb-auth-sync-admin` binary against the real server (in-process, real Postgres,
//! fake Clerk over HTTP): what an operator types, what they see, the exit codes.
use serde_json::Value;
use std::io::Write as _;
use std::process::{Output, Stdio};
use test_harness::*;

/// The documented exit codes (`--help`).
const EXIT_USAGE: i32 = 2;
const EXIT_UNAUTHENTICATED: i32 = 3;
const EXIT_NOT_FOUND: i32 = 4;

/// Runs the CLI off the async runtime (it is a blocking child process).
async fn run(app: &TestApp, token: &str, args: &[&str]) -> Output {
    run_with_stdin(app, token, args, None).await
}

/// Runs the CLI with `stdin` (if any) written to its standard input.
async fn run_with_stdin(app: &TestApp, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let bin_args = args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (token, stdin) = (token.to_string(), stdin.map(str::to_string));
    let endpoint = format!("http://{}", app.grpc_addr);
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync-admin"))
            .args(&bin_args)
            .env("CAPYDB_AUTH_SYNC_ENDPOINT", endpoint)
            .env("CAPYDB_AUTH_SYNC_ADMIN_TOKEN", token)
            .env_remove("CAPYDB_AUTH_SYNC_SECRET_KEY")
            .env_remove("CAPYDB_AUTH_SYNC_WEBHOOK_SECRET")
            .env_remove("CAPYDB_AUTH_SYNC_PROJECT_DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run capydb-auth-sync-admin");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
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

fn json_of(o: &Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(o), stderr(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_configures_backfills_checks_status_and_sends_a_test_webhook_with_the_cli() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 700, rate_limit: None, ..Default::default() }).await.unwrap();
    let app = TestApp::spawn_with(TestOptions {
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| s.clerk.page_size = 100),
        ..Default::default()
    })
    .await;
    let whsec = new_whsec();
    let key = clerk.secret_key().to_string();

    // configure: the secret key comes from stdin, so it never is on argv.
    let out = run_with_stdin(
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
            "-",
            "--json",
        ],
        Some(&format!("{key}\n")),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let integration = json_of(&out);
    assert_eq!(integration["project_id"], "shop");
    assert_eq!(integration["provider"], "clerk");
    assert_eq!(integration["has_credentials"], true);

    // backfill --watch follows the job (the initial one, or a new one) to the end.
    let out = run(&app, TEST_TOKEN, &["backfill", "shop", "--watch", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let job = json_of(&out);
    assert_eq!(job["state"], "succeeded", "{job}");
    let seen = job["users_written"].as_i64().unwrap() + job["users_stale"].as_i64().unwrap();
    assert_eq!(seen, 700, "{job}");

    // status as a table: verdict, rows, the last backfill in plain words.
    let out = run(&app, TEST_TOKEN, &["status", "shop"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for needle in ["Verdict", "700 rows", "Last backfill", "succeeded", "unchanged", "backfill-only"] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    assert!(table.lines().all(|l| l.chars().count() <= 80), "wider than 80 columns:\n{table}");

    // Add the webhook secret; send a signed test event to the receiver the server reports (no --url).
    let out = run(&app, TEST_TOKEN, &["configure", "shop", "--provider", "clerk", "--webhook-secret", &whsec]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&app.webhook_url("clerk", "shop")), "{}", stdout(&out));
    let out = run_with_stdin(
        &app,
        TEST_TOKEN,
        &["send-test-webhook", "shop", "--provider", "clerk", "--secret", "-", "--write"],
        Some(&whsec),
    )
    .await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains(&format!("POST {}", app.webhook_url("clerk", "shop"))), "{printed}");
    assert!(printed.contains("HTTP 200"), "{printed}");

    let out = run(&app, TEST_TOKEN, &["status", "shop", "--provider", "clerk", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status = json_of(&out);
    assert_eq!(status["mode"], "live", "{status}");
    assert_eq!(status["users_total"], 701);
    assert_eq!(status["webhooks"]["applied"], 1);
    assert!(status["webhooks"]["last_event_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{status}");

    // A wrong secret: refused, non-zero, and the message says which flag to fix.
    let out =
        run(&app, TEST_TOKEN, &["send-test-webhook", "shop", "--provider", "clerk", "--secret", &new_whsec()]).await;
    assert_eq!(out.status.code(), Some(EXIT_UNAUTHENTICATED), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: the receiver refused the signature: --secret is not the webhook secret"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A malformed secret is a usage error naming the flag the user typed, once.
    let out = run(&app, TEST_TOKEN, &["configure", "shop", "--provider", "clerk", "--webhook-secret", "nope"]).await;
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: --webhook-secret: "), "{err}");
    assert!(!err.contains("credentials.webhook_signing_secret"), "{err}");

    // Errors as JSON under --json.
    let out = run(&app, TEST_TOKEN, &["status", "elsewhere", "--json"]).await;
    assert_eq!(out.status.code(), Some(EXIT_NOT_FOUND));
    let err: Value = serde_json::from_str(&stderr(&out)).expect("a JSON error");
    assert_eq!(err["error"]["code"], "NOT_FOUND", "{err}");
    assert_eq!(err["error"]["exit_code"], EXIT_NOT_FOUND);
    assert!(!err["error"]["message"].as_str().unwrap().contains("NOT_FOUND"), "said once: {err}");

    let out = run(&app, TEST_TOKEN, &["list", "--json"]).await;
    assert_eq!(json_of(&out).as_array().map(|a| a.len()), Some(1));

    let out = run(&app, TEST_TOKEN, &["delete", "shop"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&app, TEST_TOKEN, &["status", "shop"]).await;
    assert_eq!(out.status.code(), Some(EXIT_NOT_FOUND));
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));

    // Nothing the operator passed in comes back out.
    for o in [stdout(&out), stderr(&out), table] {
        assert!(!o.contains(&key) && !o.contains(&whsec) && !o.contains(TEST_TOKEN));
    }
}

#[tokio::test]
async fn a_wrong_token_is_one_clear_line_and_the_unauthenticated_exit_code() {
    let app = TestApp::spawn().await;
    let out = run(&app, "not-the-token-0123456789", &["list"]).await;
    assert_eq!(out.status.code(), Some(EXIT_UNAUTHENTICATED));
    let err = stderr(&out);
    assert!(err.starts_with("error: UNAUTHENTICATED: check --token"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("not-the-token-0123456789"));
    // Validation errors name the argument the user typed.
    let out =
        run(&app, TEST_TOKEN, &["configure", "bad project", "--provider", "clerk", "--webhook-secret", "whsec_AAAA"])
            .await;
    assert_eq!(out.status.code(), Some(EXIT_USAGE));
    assert!(stderr(&out).contains("PROJECT: "), "{}", stderr(&out));
}
