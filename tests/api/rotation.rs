//! Secrets that rotate without loss and admin writes without lost updates (issue 11): the
//! replaced webhook secret keeps verifying for the grace period, concurrent Configure calls
//! both take effect, and Configure racing `rotate-keys` leaves nothing under the old key.
use capydb_auth_sync::crypto::Keyring;
use capydb_auth_sync_client::SignedRequest;
use client::Provider;
use secrecy::SecretString;
use std::time::Duration;
use test_harness::*;

fn secret(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn clerk_body(id: &str, v: i64) -> String {
    clerk_event("user.updated", serde_json::json!({"id": id, "object": "user", "updated_at": v}), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_webhook_secrets_both_verify_during_the_grace_period_and_only_the_new_after() {
    let app = TestApp::spawn_with(TestOptions {
        tweak: Box::new(|s| s.webhook_secret_grace = Duration::from_secs(4)),
        ..Default::default()
    })
    .await;
    let (old, new) = (new_whsec(), new_whsec());
    app.configure_clerk_webhooks("rot", &old).await;
    assert_eq!(app.send_clerk("rot", &old, &clerk_body("user_1", 1)).await.0, 200);
    let configured = app.configure_clerk_webhooks("rot", &new).await;
    let until = configured.previous_webhook_secret_until.expect("the old secret is still accepted, until when");
    eventually("the new secret verifies", || async {
        (app.send_clerk("rot", &new, &clerk_body("user_1", 2)).await.0 == 200).then_some(())
    })
    .await;
    // A retry of a delivery signed before the rotation still lands.
    assert_eq!(app.send_clerk("rot", &old, &clerk_body("user_1", 3)).await.0, 200, "old secret within the grace");
    let status = app.client.get_sync_status("rot", Provider::Clerk).await.unwrap();
    assert_eq!(status.integration.unwrap().previous_webhook_secret_until, Some(until));
    // After the grace period only the new secret verifies.
    eventually("the grace period ends", || async {
        (app.send_clerk("rot", &old, &clerk_body("user_1", 4)).await.0 == 401).then_some(())
    })
    .await;
    assert_eq!(app.send_clerk("rot", &new, &clerk_body("user_1", 5)).await.0, 200);
    let status = app.client.get_sync_status("rot", Provider::Clerk).await.unwrap();
    assert_eq!(status.integration.unwrap().previous_webhook_secret_until, None);
    assert_no_leaks(&app, &[&old, &new]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_configure_calls_lose_nothing() {
    let app = TestApp::spawn().await;
    let first = secret("auth0");
    app.client
        .configure_integration("race", Provider::Auth0)
        .database_url(app.project_url.clone())
        .webhook_signing_secret(first.clone())
        .await
        .unwrap();
    for round in 0..6 {
        // One call changes only the secret, the other only the database; both must stick.
        let other_db = new_project_db().await;
        let new_secret = secret(&format!("auth0{round}"));
        let (a, b) = tokio::join!(
            async {
                // Bounded: ABORTED means "send it again", which a client does a few times.
                for _attempt in 0..20 {
                    match app
                        .client
                        .configure_integration("race", Provider::Auth0)
                        .webhook_signing_secret(new_secret.clone())
                        .await
                    {
                        Err(e) if e.code() == tonic::Code::Aborted => continue,
                        other => return other,
                    }
                }
                panic!("round {round}: still ABORTED after 20 attempts")
            },
            async {
                // Bounded: ABORTED means "send it again", which a client does a few times.
                for _attempt in 0..20 {
                    match app.client.configure_integration("race", Provider::Auth0).database_url(other_db.clone()).await
                    {
                        Err(e) if e.code() == tonic::Code::Aborted => continue,
                        other => return other,
                    }
                }
                panic!("round {round}: still ABORTED after 20 attempts")
            },
        );
        a.unwrap();
        b.unwrap();
        let listed = app.client.list_integrations(Some("race")).await.unwrap();
        let db_name = other_db.rsplit('/').next().unwrap();
        assert!(
            listed[0].database_target.ends_with(&format!("/{db_name}")),
            "round {round}: {}",
            listed[0].database_target
        );
        // The new secret verifies and lands in the new database.
        let body = serde_json::json!({"event": "user.created", "user": {"user_id": format!("auth0|{round}"), "updated_at": "2024-01-01T00:00:00Z"}});
        let req = SignedRequest::auth0(&new_secret, body.to_string().into_bytes());
        let url = app.webhook_url("auth0", "race");
        eventually("the merged configuration serves", || async { (app.send(&url, &req).await.0 == 200).then_some(()) })
            .await;
        assert!(users_table(&connect(&other_db).await).await.contains_key(&format!("auth0|{round}")), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_racing_rotate_keys_leaves_every_secret_decryptable_with_the_new_key_alone() {
    let k1 = test_keyring_spec("k1");
    let k2 = test_keyring_spec("k2");
    let both = format!("{k2},{k1}");
    // Data written under k1; then the replicas restart with k2 first (the documented order).
    let old = TestApp::spawn_with(TestOptions { keyring: Some(k1.clone()), ..Default::default() }).await;
    for i in 0..5 {
        old.configure_clerk_webhooks(&format!("rk{i}"), &new_whsec()).await;
    }
    let app = TestApp::spawn_with(TestOptions {
        control_url: Some(old.control_url.clone()),
        project_url: Some(old.project_url.clone()),
        keyring: Some(both.clone()),
        ..Default::default()
    })
    .await;
    let store = capydb_auth_sync::store::ControlStore::connect(&app.control_url, 2).await.unwrap();
    let keyring = Keyring::parse(&SecretString::from(both)).unwrap();
    let configuring = async {
        for round in 0..4 {
            for i in 0..5 {
                // Bounded: ABORTED means "send it again", which a client does a few times.
                let mut configured = false;
                for _attempt in 0..20 {
                    let r = app
                        .client
                        .configure_integration(format!("rk{i}"), Provider::Clerk)
                        .webhook_signing_secret(new_whsec())
                        .await;
                    match r {
                        Err(e) if e.code() == tonic::Code::Aborted => continue,
                        other => {
                            other.unwrap_or_else(|e| panic!("round {round}: {e}"));
                            configured = true;
                            break;
                        }
                    }
                }
                assert!(configured, "round {round}: still ABORTED after 20 attempts");
            }
        }
    };
    let rotating = async {
        for _ in 0..4 {
            capydb_auth_sync::integrations::rotate_keys(&store, &keyring).await.unwrap();
        }
    };
    tokio::join!(configuring, rotating);
    capydb_auth_sync::integrations::rotate_keys(&store, &keyring).await.unwrap();
    // Only k2 now: every stored secret still decrypts.
    let only_new = Keyring::parse(&SecretString::from(k2)).unwrap();
    for row in store.list_integrations(None).await.unwrap() {
        row.database_url(&only_new).expect("database URL under the new key");
        row.webhook_secret(&only_new).expect("webhook secret under the new key");
        row.previous_webhook_secret(&only_new).expect("previous webhook secret under the new key");
    }
}
