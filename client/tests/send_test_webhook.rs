//! `capydb-auth-sync-admin send-test-webhook --provider better_auth` against the real server:
//! the official webhooks plugin's scheme by default, the databaseHooks envelope on request.
use std::process::Output;
use test_harness::*;

async fn run(app: &TestApp, args: &[&str]) -> Output {
    let (bin_args, endpoint) =
        (args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), format!("http://{}", app.grpc_addr));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync-admin"))
            .args(&bin_args)
            .env("CAPYDB_AUTH_SYNC_ENDPOINT", endpoint)
            .env("CAPYDB_AUTH_SYNC_ADMIN_TOKEN", TEST_TOKEN)
            .env_remove("CAPYDB_AUTH_SYNC_WEBHOOK_SECRET")
            .output()
            .expect("run capydb-auth-sync-admin")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_webhook_for_better_auth_signs_like_the_plugin_by_default_and_passes() {
    let app = TestApp::spawn().await;
    let secret = "better-auth-cli-secret-0123456789";
    app.client
        .configure_raw_request(client::ConfigureIntegrationRequest {
            project_id: "bacli".into(),
            provider: client::Provider::BetterAuth as i32,
            database_url: app.project_url.clone(),
            credentials: Some(client::Credentials { secret_key: String::new(), webhook_signing_secret: secret.into() }),
        })
        .await
        .expect("configure");
    let url = app.webhook_url("better-auth", "bacli");
    let db = app.project().await;

    // By default a dry run: verified, parsed and applied in a rolled-back transaction.
    for write in [false, true] {
        for sender in [&[][..], &["--better-auth-sender", "database-hooks"][..]] {
            let mut args =
                vec!["send-test-webhook", "bacli", "--provider", "better_auth", "--secret", secret, "--url", &url];
            args.extend_from_slice(sender);
            if write {
                args.push("--write");
            }
            let out = run(&app, &args).await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{sender:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("HTTP 200") && stdout.contains(r#""status":"applied""#), "{sender:?}: {stdout}");
            assert_eq!(stdout.contains(r#""dry_run":true"#), !write, "{stdout}");
        }
        assert_eq!(users_table(&db).await.len(), if write { 2 } else { 0 }, "dry runs write nothing");
    }

    // A wrong secret is refused.
    let out = run(
        &app,
        &[
            "send-test-webhook",
            "bacli",
            "--provider",
            "better_auth",
            "--secret",
            "not-the-secret-0123456789",
            "--url",
            &url,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 401"));
    // Two applied deliveries (one per sender), one rejected.
    let w = app.client.get_sync_status("bacli", client::Provider::BetterAuth).await.unwrap().webhooks.unwrap();
    assert_eq!((w.applied, w.rejected), (2, 1));
}
