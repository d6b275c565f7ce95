//! Auth0 and Better Auth webhooks over real HTTP: every fixture lands with the SPEC §2 columns
//! and `raw`, the merge rules hold (stale, duplicate, sticky deletes, log-stream sightings),
//! bad deliveries get their status and write nothing, counters add up, no secret is logged.
use capydb_auth_sync_client::SignedRequest;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use test_harness::*;

use client::Provider;

fn applied() -> (u16, Value) {
    (200, json!({"status": "applied"}))
}

fn ignored(reason: &str) -> (u16, Value) {
    (200, json!({"status": "ignored", "reason": reason}))
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("test timestamp")
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).expect("fixture is JSON")
}

/// A random webhook secret of 40 characters (Auth0 / Better Auth need at least 16).
fn new_secret(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn configure(app: &TestApp, project: &str, provider: Provider, secret: &str) -> client::Integration {
    app.client
        .configure_raw_request(client::ConfigureIntegrationRequest {
            project_id: project.into(),
            provider: provider as i32,
            database_url: app.project_url.clone(),
            credentials: Some(client::Credentials { secret_key: String::new(), webhook_signing_secret: secret.into() }),
        })
        .await
        .expect("configure")
}

async fn stats(app: &TestApp, project: &str, provider: Provider) -> client::WebhookStats {
    app.client.get_sync_status(project, provider).await.expect("status").webhooks.expect("webhook stats")
}

/// (applied, stale, duplicate, unhandled, rejected, malformed)
fn counts(w: &client::WebhookStats) -> (i64, i64, i64, i64, i64, i64) {
    (w.applied, w.ignored_stale, w.ignored_duplicate, w.ignored_unhandled, w.rejected, w.malformed)
}

/// The catalog examples' user as a row (created, updated and deleted share the profile).
fn catalog_row(raw: Value) -> UserRow {
    UserRow {
        email: s("john.doe@gmail.com"),
        first_name: s("John"),
        last_name: s("Doe"),
        username: s("johndoe"),
        image_url: s("https://secure.gravatar.com/avatar/15626c5e0c749cb912f9d1ad48dba440?s=480&r=pg&d=https%3A%2F%2Fssl.gstatic.com%2Fs2%2Fprofiles%2Fimages%2Fsilhouette80.png"),
        created_at: Some(utc("2025-02-01T12:34:56Z")),
        updated_at: Some(utc("2025-02-01T12:34:56Z")),
        last_sign_in_at: Some(utc("2025-02-01T12:34:56Z")),
        deleted_at: None,
        raw: Some(raw),
    }
}

// ---------------------------------------------------------------------------------------
// Auth0

#[tokio::test]
async fn auth0_event_stream_and_action_fixtures_land_with_exact_columns_and_raw() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0");
    configure(&app, "a0fx", Provider::Auth0, &secret).await;
    let url = app.webhook_url("auth0", "a0fx");
    let db = app.project().await;

    // Event Streams docs test delivery, bearer auth.
    let docs = fixture("auth0/event-stream.user.created.docs-test-delivery.json");
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, docs.clone())).await, applied());
    assert_eq!(
        users_table(&db).await["auth0|679fb1b1e809445f129bc18d"],
        UserRow {
            email: s("nick-testing-21@example.com"),
            first_name: None,
            last_name: None,
            username: None,
            image_url: s("test.png"),
            created_at: Some(utc("2025-02-02T17:56:01.566Z")),
            updated_at: Some(utc("2025-02-02T17:56:01.566Z")),
            last_sign_in_at: None,
            deleted_at: None,
            raw: Some(serde_json::from_str::<Value>(&docs).unwrap()["data"]["object"].clone()),
        }
    );

    // Catalog user.created, bare Authorization token.
    let created = fixture_json("auth0/event-stream.user.created.catalog-example.json");
    let created_body = created.to_string();
    assert_eq!(app.send(&url, &SignedRequest::auth0_bare(&secret, created_body)).await, applied());
    let profile = created["data"]["object"].clone();
    assert_eq!(users_table(&db).await["auth0|507f1f77bcf86cd799439020"], catalog_row(profile.clone()));

    // Catalog user.updated (same profile, same updated_at), with the com.auth0. prefix.
    let mut updated = fixture_json("auth0/event-stream.user.updated.catalog-example.json");
    updated["type"] = json!("com.auth0.user.updated");
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, updated.to_string())).await, ignored("duplicate"));

    // Catalog user.deleted: deleted_at from the profile; the last known columns and raw stay.
    let deleted = fixture("auth0/event-stream.user.deleted.catalog-example.json");
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, deleted.clone())).await, applied());
    assert_eq!(
        users_table(&db).await["auth0|507f1f77bcf86cd799439020"],
        UserRow { deleted_at: Some(utc("2025-02-01T12:34:56Z")), ..catalog_row(profile.clone()) }
    );
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, deleted)).await, ignored("duplicate"));

    // The Google profile through an Action envelope.
    let google = fixture_json("auth0/user-profile.google.docs-example.json");
    let body = json!({"event": "user.created", "user": google}).to_string();
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, body)).await, applied());
    let google_row = UserRow {
        email: s("johnfoo@gmail.com"),
        first_name: s("John"),
        last_name: s("Foo"),
        username: None,
        image_url: s("https://lh4.googleusercontent.com/-OdsbOXom9qE/AAAAAAAAAAI/AAAAAAAAADU/_j8SzYTOJ4I/photo.jpg"),
        created_at: None,
        updated_at: None,
        last_sign_in_at: None,
        deleted_at: None,
        raw: Some(google.clone()),
    };
    assert_eq!(users_table(&db).await["google-oauth2|103547991597142817347"], google_row);

    // Action user.deleted without deleted_at: the time of receipt.
    let before = Utc::now();
    let body = json!({"event": "user.deleted", "user": google}).to_string();
    assert_eq!(app.send(&url, &SignedRequest::auth0_bare(&secret, body)).await, applied());
    let after = Utc::now();
    let row = users_table(&db).await["google-oauth2|103547991597142817347"].clone();
    let at = row.deleted_at.expect("deleted");
    assert!(before - chrono::Duration::seconds(1) <= at && at <= after, "{before} <= {at} <= {after}");
    assert_eq!(row, UserRow { deleted_at: Some(at), ..google_row });

    // Types the sync does not use.
    let other = json!({"specversion": "1.0", "type": "com.auth0.organization.created", "id": "evt_1",
                       "time": "2025-02-01T12:34:56Z", "data": {"object": {"id": "org_1"}}});
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, other.to_string())).await, ignored("unhandled_event"));
    let action = json!({"event": "post-login", "user": {"user_id": "auth0|x"}});
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, action.to_string())).await, ignored("unhandled_event"));

    assert_eq!(users_table(&db).await.len(), 3);
    let w = stats(&app, "a0fx", Provider::Auth0).await;
    assert_eq!(counts(&w), (5, 0, 2, 2, 0, 0));
    assert!(w.last_event_at.is_some());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"capydb_auth_sync_webhook_deliveries_total{provider="auth0",outcome="applied"}"#),
        "{metrics}"
    );
    let logs = captured_logs();
    assert!(!logs.contains("nick-testing-21@example.com"), "no email address in the logs");
    assert_no_leaks(&app, &[&secret]).await;
}

/// An Auth0 profile at version `v` (updated_at moves one minute per version).
fn auth0_profile(id: &str, v: i64) -> Value {
    let at = |minutes: i64| (utc("2025-01-01T00:00:00Z") + chrono::Duration::minutes(minutes)).to_rfc3339();
    json!({
        "user_id": id, "email": format!("v{v}@example.com"), "given_name": format!("v{v}"),
        "family_name": "Doe", "picture": format!("https://img.example/{v}.png"),
        "created_at": at(0), "updated_at": at(v), "last_login": at(v),
        "user_metadata": {"version": v}
    })
}

fn cloud_event(event_type: &str, profile: &Value) -> String {
    json!({"specversion": "1.0", "type": event_type, "id": uuid::Uuid::new_v4().to_string(),
           "time": "2025-06-01T00:00:00Z", "source": "urn:auth0:test", "data": {"object": profile}})
    .to_string()
}

#[tokio::test]
async fn auth0_an_older_profile_arriving_late_changes_nothing() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0");
    configure(&app, "a0ooo", Provider::Auth0, &secret).await;
    let url = app.webhook_url("auth0", "a0ooo");
    let db = app.project().await;

    let v2 = cloud_event("user.updated", &auth0_profile("auth0|o", 2));
    let v1 = json!({"event": "user.created", "user": auth0_profile("auth0|o", 1)}).to_string();
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, v2)).await, applied());
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, v1.clone())).await, ignored("stale"));
    let row = users_table(&db).await["auth0|o"].clone();
    assert_eq!(row.email.as_deref(), Some("v2@example.com"));
    assert_eq!(row.updated_at, Some(utc("2025-01-01T00:02:00Z")));
    assert_eq!(row.raw, Some(auth0_profile("auth0|o", 2)));

    // A delete for a user never seen leaves a tombstone; a late, older update fills it in and
    // the deletion sticks.
    let gone = auth0_profile("auth0|t", 1);
    let delete = cloud_event("com.auth0.user.deleted", &gone);
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, delete)).await, applied());
    let row = users_table(&db).await["auth0|t"].clone();
    // No deleted_at in the profile: the event time.
    assert_eq!(
        (row.deleted_at, row.email.clone(), row.raw.clone()),
        (Some(utc("2025-06-01T00:00:00Z")), None, Some(gone))
    );
    let late = cloud_event("user.created", &auth0_profile("auth0|t", 1));
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, late)).await, applied());
    let row = users_table(&db).await["auth0|t"].clone();
    assert_eq!(row.email.as_deref(), Some("v1@example.com"), "the late create fills the tombstone");
    assert_eq!(row.deleted_at, Some(utc("2025-06-01T00:00:00Z")), "deleted_at is sticky");

    let w = stats(&app, "a0ooo", Provider::Auth0).await;
    assert_eq!(counts(&w), (3, 1, 0, 0, 0, 0));
}

#[tokio::test]
async fn auth0_log_stream_signup_login_and_delete() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0log");
    configure(&app, "a0log", Provider::Auth0, &secret).await;
    let url = app.webhook_url("auth0", "a0log");
    let db = app.project().await;
    let send = |body: String| {
        let req = SignedRequest::auth0_bare(&secret, body);
        let url = url.clone();
        let app = &app;
        async move { app.send(&url, &req).await }
    };
    const DEV: &str = "auth0|618223a4e3f49e006948565c";
    const NEO: &str = "auth0|6182002f34f4dd006b05b5c7";

    // ss: both users inserted with id, email and the log record as raw; nothing else known.
    let signups = fixture_json("auth0/log-stream.jsonarray.ss-signup.json");
    assert_eq!(send(signups.to_string()).await, applied());
    let table = users_table(&db).await;
    assert_eq!(table.len(), 2);
    let dev_signup = UserRow {
        email: s("dev@test.com"),
        first_name: None,
        last_name: None,
        username: None,
        image_url: None,
        created_at: None,
        updated_at: None,
        last_sign_in_at: None,
        deleted_at: None,
        raw: Some(signups[1]["data"].clone()),
    };
    assert_eq!(table[DEV], dev_signup);
    assert_eq!(
        table[NEO],
        UserRow { email: s("neo@test.com"), raw: Some(signups[0]["data"].clone()), ..dev_signup.clone() }
    );

    // s: last_sign_in_at moves forward...
    let login = fixture_json("auth0/log-stream.jsonarray.s-login.json");
    assert_eq!(send(login.to_string()).await, applied());
    let dev_login = UserRow { last_sign_in_at: Some(utc("2021-11-04T00:15:10.706Z")), ..dev_signup.clone() };
    assert_eq!(users_table(&db).await[DEV], dev_login);
    // ...never back.
    let mut older = login.clone();
    older[0]["data"]["date"] = json!("2021-11-03T23:00:00.000Z");
    assert_eq!(send(older.to_string()).await, ignored("stale"));
    assert_eq!(users_table(&db).await[DEV], dev_login);
    // A login of a user the table does not know inserts nothing.
    let mut stranger = login.clone();
    stranger[0]["data"]["user_id"] = json!("auth0|stranger");
    assert_eq!(send(stranger.to_string()).await, ignored("stale"));
    assert!(!users_table(&db).await.contains_key("auth0|stranger"));

    // Codes the sync does not use.
    for name in
        ["auth0/log-stream.jsonarray.sv-email-verified.json", "auth0/log-stream.jsonarray.sapi-management-op.json"]
    {
        assert_eq!(send(fixture(name)).await, ignored("unhandled_event"), "{name}");
    }

    // sdu: soft delete at the record's date; the row keeps what it had.
    assert_eq!(send(fixture("auth0/log-stream.jsonarray.sdu-user-deleted.CONSTRUCTED.json")).await, applied());
    let dev_deleted = UserRow { deleted_at: Some(utc("2021-11-05T09:30:11.118Z")), ..dev_login.clone() };
    assert_eq!(users_table(&db).await[DEV], dev_deleted);

    // A later signup record changes nothing, and never clears deleted_at.
    assert_eq!(send(signups.to_string()).await, ignored("duplicate"));
    assert_eq!(users_table(&db).await[DEV], dev_deleted);

    // A full profile later fills the columns the log did not know; the deletion sticks.
    let profile = json!({"user_id": DEV, "email": "dev@test.com", "given_name": "Dev", "family_name": "Eloper",
                         "created_at": "2021-11-03T05:52:36.705Z", "updated_at": "2021-11-04T00:15:10.706Z",
                         "last_login": "2021-11-04T00:15:10.706Z"});
    let body = json!({"event": "user.updated", "user": profile}).to_string();
    assert_eq!(send(body).await, applied());
    let row = users_table(&db).await[DEV].clone();
    assert_eq!((row.first_name.as_deref(), row.last_name.as_deref()), (Some("Dev"), Some("Eloper")));
    assert_eq!((row.raw, row.deleted_at), (Some(profile), Some(utc("2021-11-05T09:30:11.118Z"))));

    let w = stats(&app, "a0log", Provider::Auth0).await;
    assert_eq!(counts(&w), (4, 2, 1, 2, 0, 0));
    assert_no_leaks(&app, &[&secret]).await;
}

#[tokio::test]
async fn auth0_json_lines_batches() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0jl");
    configure(&app, "a0jl", Provider::Auth0, &secret).await;
    let url = app.webhook_url("auth0", "a0jl");
    let db = app.project().await;
    let lines = fixture("auth0/log-stream.jsonlines.ss-s-sv.jsonl");

    // ss (neo) inserts; s (dev) is a login of an unknown user; sv is ignored.
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, lines.clone())).await, applied());
    let table = users_table(&db).await;
    assert_eq!(table.keys().collect::<Vec<_>>(), vec!["auth0|6182002f34f4dd006b05b5c7"]);
    let first_line: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(table["auth0|6182002f34f4dd006b05b5c7"].raw, Some(first_line["data"].clone()));
    assert_eq!(table["auth0|6182002f34f4dd006b05b5c7"].email.as_deref(), Some("neo@test.com"));

    // Once dev signed up, the same batch again records dev's login.
    let signups = fixture("auth0/log-stream.jsonarray.ss-signup.json");
    assert_eq!(app.send(&url, &SignedRequest::auth0(&secret, signups)).await, applied());
    assert_eq!(app.send(&url, &SignedRequest::auth0_bare(&secret, lines.clone())).await, applied());
    let dev = users_table(&db).await["auth0|618223a4e3f49e006948565c"].clone();
    assert_eq!(dev.last_sign_in_at, Some(utc("2021-11-04T00:15:10.706Z")));
    // CRLF framing is read the same way; now nothing is new. (The writer counts a login at
    // the stored time as "stale", a signup of a known user as "duplicate"; either way it is
    // ignored.)
    let before = users_table(&db).await;
    let crlf = lines.replace('\n', "\r\n");
    let (status, answer) = app.send(&url, &SignedRequest::auth0(&secret, crlf)).await;
    assert_eq!((status, &answer["status"]), (200, &json!("ignored")), "{answer}");
    assert_eq!(users_table(&db).await, before);
}

// ---------------------------------------------------------------------------------------
// Better Auth

fn better_auth_user(name: &str) -> Value {
    fixture_json(&format!("better-auth/capydb-envelope.user.{name}.CONSTRUCTED.json"))["user"].clone()
}

#[tokio::test]
async fn better_auth_fixtures_land_with_exact_columns_and_raw() {
    let app = TestApp::spawn().await;
    let secret = new_secret("ba");
    configure(&app, "bafx", Provider::BetterAuth, &secret).await;
    let url = app.webhook_url("better-auth", "bafx");
    let db = app.project().await;
    const ID: &str = "Xk3pQ9vL2mN7rT4wY8zA1bC5dE6fG0hJ";
    let send = |name: &str| {
        let req = SignedRequest::better_auth(
            &secret,
            fixture(&format!("better-auth/capydb-envelope.user.{name}.CONSTRUCTED.json")),
        );
        let url = url.clone();
        let app = &app;
        async move { app.send(&url, &req).await }
    };

    assert_eq!(send("created").await, applied());
    assert_eq!(
        users_table(&db).await[ID],
        UserRow {
            email: s("ada@example.com"),
            first_name: s("Ada Lovelace"),
            last_name: None,
            username: s("ada_l"),
            image_url: None,
            created_at: Some(utc("2025-03-14T09:26:53.589Z")),
            updated_at: Some(utc("2025-03-14T09:26:53.589Z")),
            last_sign_in_at: None,
            deleted_at: None,
            raw: Some(better_auth_user("created")),
        }
    );

    assert_eq!(send("updated").await, applied());
    let updated_row = UserRow {
        email: s("ada@example.com"),
        first_name: s("Ada King"),
        last_name: None,
        username: s("ada_l"),
        image_url: s("https://lh3.googleusercontent.com/a/ACg8ocExample=s96-c"),
        created_at: Some(utc("2025-03-14T09:26:53.589Z")),
        updated_at: Some(utc("2025-03-15T18:02:11.034Z")),
        last_sign_in_at: None,
        deleted_at: None,
        raw: Some(better_auth_user("updated")),
    };
    assert_eq!(users_table(&db).await[ID], updated_row);

    // Out of order and repeated.
    assert_eq!(send("created").await, ignored("stale"));
    assert_eq!(send("updated").await, ignored("duplicate"));
    assert_eq!(users_table(&db).await[ID], updated_row);

    // A hard delete in Better Auth: deleted_at is the time of receipt.
    let before = Utc::now();
    assert_eq!(send("deleted").await, applied());
    let after = Utc::now();
    let row = users_table(&db).await[ID].clone();
    let at = row.deleted_at.expect("deleted");
    assert!(before - chrono::Duration::seconds(1) <= at && at <= after, "{before} <= {at} <= {after}");
    assert_eq!(row, UserRow { deleted_at: Some(at), ..updated_row.clone() });
    // Redelivered: the first deletion time stays.
    assert_eq!(send("deleted").await, ignored("duplicate"));
    assert_eq!(users_table(&db).await[ID].deleted_at, Some(at));

    // A newer update after the delete fills columns but never clears deleted_at.
    let mut newer = better_auth_user("updated");
    newer["name"] = json!("Ada, Countess of Lovelace");
    newer["lastName"] = json!("Lovelace");
    newer["updatedAt"] = json!(1_742_100_000_000_i64);
    let body = json!({"event": "user.updated", "user": newer}).to_string();
    assert_eq!(app.send(&url, &SignedRequest::better_auth(&secret, body)).await, applied());
    let row = users_table(&db).await[ID].clone();
    assert_eq!(
        (row.first_name.as_deref(), row.last_name.as_deref(), row.updated_at, row.deleted_at),
        (Some("Ada, Countess of Lovelace"), Some("Lovelace"), Some(utc("2025-03-16T04:40:00Z")), Some(at))
    );

    // Events the sync does not use.
    let body = json!({"event": "session.created", "user": better_auth_user("created")}).to_string();
    assert_eq!(app.send(&url, &SignedRequest::better_auth(&secret, body)).await, ignored("unhandled_event"));

    let w = stats(&app, "bafx", Provider::BetterAuth).await;
    assert_eq!(counts(&w), (4, 1, 2, 1, 0, 0));
    assert!(w.last_event_at.is_some());
    assert_no_leaks(&app, &[&secret]).await;
}

#[tokio::test]
async fn better_auth_computed_signature_vector_over_http() {
    let app = TestApp::spawn().await;
    let v = fixture_json("better-auth/x-better-auth-signature.vector.COMPUTED.json");
    let (secret, body, expected, tampered) = (
        v["secret"].as_str().unwrap(),
        v["body"].as_str().unwrap(),
        v["expected_signature_hex"].as_str().unwrap(),
        v["tampered_body"].as_str().unwrap(),
    );
    configure(&app, "bavec", Provider::BetterAuth, secret).await;
    let url = app.webhook_url("better-auth", "bavec");
    let db = app.project().await;
    let with_signature = |body: &str, signature: &str| SignedRequest {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("X-Better-Auth-Signature".into(), signature.into()),
        ],
        body: body.as_bytes().to_vec(),
    };
    // The client's signer agrees with the vector.
    assert_eq!(SignedRequest::better_auth(secret, body).header("x-better-auth-signature"), Some(expected));

    // The tampered body with the vector's signature: 401, nothing written.
    let (status, answer) = app.send(&url, &with_signature(tampered, expected)).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].is_string());
    assert!(users_table(&db).await.is_empty());

    assert_eq!(app.send(&url, &with_signature(body, expected)).await, applied());
    let row = users_table(&db).await["Xk3pQ9vL2mN7rT4wY8zA1bC5dE6fG0hJ"].clone();
    assert_eq!(row.first_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(row.raw, Some(serde_json::from_str::<Value>(body).unwrap()["user"].clone()));
    // Upper-case hex is accepted too.
    assert_eq!(app.send(&url, &with_signature(body, &expected.to_ascii_uppercase())).await, ignored("duplicate"));

    let w = stats(&app, "bavec", Provider::BetterAuth).await;
    assert_eq!(counts(&w), (1, 0, 1, 0, 1, 0));
    assert_no_leaks(&app, &[secret]).await;
}

// ---------------------------------------------------------------------------------------
// Rejections

/// A copy of `req` with header `name` set to `value` (or removed, with `None`).
fn with_header(req: &SignedRequest, name: &str, value: Option<&str>) -> SignedRequest {
    let mut r = req.clone();
    r.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        r.headers.push((name.to_owned(), v.to_owned()));
    }
    r
}

#[tokio::test]
async fn bad_auth0_deliveries_get_their_status_and_write_nothing() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0bad");
    let ba_secret = new_secret("babad");
    configure(&app, "a0bad", Provider::Auth0, &secret).await;
    configure(&app, "baonly", Provider::BetterAuth, &ba_secret).await;
    let url = app.webhook_url("auth0", "a0bad");
    let body = fixture("auth0/event-stream.user.created.docs-test-delivery.json");
    let good = SignedRequest::auth0(&secret, body.clone());

    let wrong = new_secret("a0bad");
    let unauthorized = vec![
        ("wrong secret, bearer", SignedRequest::auth0(&wrong, body.clone())),
        ("wrong secret, bare", SignedRequest::auth0_bare(&wrong, body.clone())),
        ("missing authorization", with_header(&good, "authorization", None)),
        ("basic scheme", with_header(&good, "authorization", Some(&format!("Basic {secret}")))),
        ("secret with a suffix", with_header(&good, "authorization", Some(&format!("Bearer {secret}x")))),
        ("secret truncated", with_header(&good, "authorization", Some(&secret[..secret.len() - 1]))),
        ("empty authorization", with_header(&good, "authorization", Some(""))),
        ("better auth signature instead", SignedRequest::better_auth(&secret, body.clone())),
    ];
    for (what, req) in &unauthorized {
        let (status, answer) = app.send(&url, req).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    let lines = fixture("auth0/log-stream.jsonlines.ss-s-sv.jsonl");
    let malformed = [
        "not json".to_owned(),
        String::new(),
        r#"{"foo": 1}"#.to_owned(),
        r#"[{"log_id": "1"}]"#.to_owned(),
        r#"{"type": "user.created", "data": {"object": {"email": "no-id@example.com"}}}"#.to_owned(),
        r#"{"event": "user.updated"}"#.to_owned(),
        format!("{lines}{{\"log_id\": \"4\", \"data\": "),
    ];
    for bad in &malformed {
        let (status, answer) = app.send(&url, &SignedRequest::auth0(&secret, bad.clone())).await;
        assert_eq!(status, 400, "{bad:?}: {answer}");
        assert!(answer["error"].is_string());
    }
    // No Auth0 integration on this project (only Better Auth), or no project at all.
    assert_eq!(app.send(&app.webhook_url("auth0", "baonly"), &good).await.0, 404);
    assert_eq!(app.send(&app.webhook_url("auth0", "nope"), &good).await.0, 404);

    assert!(users_table(&app.project().await).await.is_empty(), "nothing was written");
    let w = stats(&app, "a0bad", Provider::Auth0).await;
    assert_eq!(counts(&w), (0, 0, 0, 0, unauthorized.len() as i64, malformed.len() as i64));
    assert!(w.last_event_at.is_none(), "no event was accepted");
    assert!(w.last_error.contains("not a valid event"), "{}", w.last_error);

    // The good one still works afterwards.
    assert_eq!(app.send(&url, &good).await, applied());
    assert_no_leaks(&app, &[&secret, &wrong, &ba_secret]).await;
}

#[tokio::test]
async fn bad_better_auth_deliveries_get_their_status_and_write_nothing() {
    let app = TestApp::spawn().await;
    let secret = new_secret("babad");
    let a0_secret = new_secret("a0only");
    configure(&app, "babad", Provider::BetterAuth, &secret).await;
    configure(&app, "a0only", Provider::Auth0, &a0_secret).await;
    let url = app.webhook_url("better-auth", "babad");
    let body = fixture("better-auth/capydb-envelope.user.created.CONSTRUCTED.json");
    let good = SignedRequest::better_auth(&secret, body.clone());
    let signature = good.header("x-better-auth-signature").unwrap().to_owned();

    let wrong = new_secret("babad");
    let mut tampered = good.clone();
    tampered.body = body.replace("Ada Lovelace", "Ada Lovelacf").into_bytes();
    let unauthorized = vec![
        ("wrong secret", SignedRequest::better_auth(&wrong, body.clone())),
        ("tampered body", tampered),
        ("missing signature", with_header(&good, "x-better-auth-signature", None)),
        ("not hex", with_header(&good, "x-better-auth-signature", Some("not-a-signature"))),
        ("prefixed", with_header(&good, "x-better-auth-signature", Some(&format!("sha256={signature}")))),
        ("truncated", with_header(&good, "x-better-auth-signature", Some(&signature[..63]))),
        ("the secret itself", with_header(&good, "x-better-auth-signature", Some(&secret))),
        ("auth0 style", SignedRequest::auth0(&secret, body.clone())),
    ];
    for (what, req) in &unauthorized {
        let (status, answer) = app.send(&url, req).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    let malformed = [
        "not json".to_owned(),
        r#"{"user": {"id": "u1"}}"#.to_owned(),
        fixture("better-auth/community-better-auth-webhooks.user.created.json"),
        r#"{"event": "user.created", "user": {"email": "no-id@example.com"}}"#.to_owned(),
        r#"{"event": "user.updated", "user": {"id": "u1", "updatedAt": "yesterday"}}"#.to_owned(),
    ];
    for bad in &malformed {
        let (status, answer) = app.send(&url, &SignedRequest::better_auth(&secret, bad.clone())).await;
        assert_eq!(status, 400, "{bad:?}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert_eq!(app.send(&app.webhook_url("better-auth", "a0only"), &good).await.0, 404);
    assert_eq!(app.send(&app.webhook_url("better_auth", "babad"), &good).await.0, 404, "the path segment has a dash");

    assert!(users_table(&app.project().await).await.is_empty(), "nothing was written");
    let w = stats(&app, "babad", Provider::BetterAuth).await;
    assert_eq!(counts(&w), (0, 0, 0, 0, unauthorized.len() as i64, malformed.len() as i64));
    assert!(w.last_event_at.is_none(), "no event was accepted");

    assert_eq!(app.send(&url, &good).await, applied());
    assert_no_leaks(&app, &[&secret, &wrong, &a0_secret]).await;
}

// ---------------------------------------------------------------------------------------
// Auth0: Basic auth, and Log Streams record by record

#[tokio::test]
async fn auth0_basic_auth_checks_the_password_against_the_secret() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0basic");
    configure(&app, "a0basic", Provider::Auth0, &secret).await;
    let url = app.webhook_url("auth0", "a0basic");
    let body = fixture("auth0/event-stream.user.created.docs-test-delivery.json");

    // The user name is not checked; the password is the secret.
    assert_eq!(app.send(&url, &SignedRequest::auth0_basic("auth0-events", &secret, body.clone())).await, applied());
    assert_eq!(app.send(&url, &SignedRequest::auth0_basic("", &secret, body.clone())).await, ignored("duplicate"));
    let wrong = new_secret("a0basic");
    for (what, req) in [
        ("wrong password", SignedRequest::auth0_basic("auth0-events", &wrong, body.clone())),
        ("secret as the user name", SignedRequest::auth0_basic(&secret, "password", body.clone())),
        ("password with a suffix", SignedRequest::auth0_basic("u", &format!("{secret}x"), body.clone())),
    ] {
        let (status, answer) = app.send(&url, &req).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    let w = stats(&app, "a0basic", Provider::Auth0).await;
    assert_eq!(counts(&w), (1, 0, 1, 0, 3, 0));
    assert_no_leaks(&app, &[&secret, &wrong]).await;
}

fn iso_ms(t: i64) -> String {
    ms(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn auth0_log_stream_batch_of_50_with_two_unusable_records_applies_48_and_reports_2_skipped() {
    let app = TestApp::spawn().await;
    let secret = new_secret("a0skip");
    configure(&app, "a0skip", Provider::Auth0, &secret).await;
    let url = app.webhook_url("auth0", "a0skip");
    let db = app.project().await;
    const T0: i64 = 1_764_590_400_000;

    let id = |i: usize| format!("auth0|batch{i:02}");
    let mut records: Vec<Value> = (0..24)
        .map(|i| {
            json!({"log_id": format!("ss{i}"), "data": {"type": "ss", "date": iso_ms(T0), "user_id": id(i),
                                                            "user_name": format!("b{i}@example.com")}})
        })
        .collect();
    records.extend((0..24).map(|i| {
        json!({"log_id": format!("s{i}"), "data": {"type": "s", "date": iso_ms(T0 + 1000 * i as i64), "user_id": id(i)}})
    }));
    // A login without a user id, and a deletion with an unreadable date: both unusable.
    records.insert(10, json!({"log_id": "bad1", "data": {"type": "s", "date": iso_ms(T0)}}));
    records.insert(40, json!({"log_id": "bad2", "data": {"type": "sdu", "user_id": id(0), "date": "not a date"}}));
    assert_eq!(records.len(), 50);

    let (status, answer) = app.send(&url, &SignedRequest::auth0_bare(&secret, json!(records).to_string())).await;
    assert_eq!((status, answer), (200, json!({"status": "applied", "skipped": 2})));
    let table = users_table(&db).await;
    assert_eq!(table.len(), 24);
    for i in 0..24 {
        let row = &table[&id(i)];
        assert_eq!(row.email, Some(format!("b{i}@example.com")));
        assert_eq!(row.last_sign_in_at, Some(ms(T0 + 1000 * i as i64)), "{}", id(i));
        assert_eq!(row.deleted_at, None, "the unusable deletion did nothing");
    }

    // The same records as JSON lines: nothing new, the same two skipped.
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    let (status, answer) = app.send(&url, &SignedRequest::auth0(&secret, lines)).await;
    assert_eq!((status, answer), (200, json!({"status": "ignored", "reason": "stale", "skipped": 2})));
    assert_eq!(users_table(&db).await, table);

    // A body with no log record in it at all is not a log batch.
    let (status, answer) =
        app.send(&url, &SignedRequest::auth0(&secret, json!([{"log_id": "x"}, 3]).to_string())).await;
    assert_eq!(status, 400, "{answer}");
}

// ---------------------------------------------------------------------------------------
// Better Auth: the official webhooks plugin

/// A plugin delivery body `{id, type, timestamp, data}` with a fresh id.
fn plugin_body(event_type: &str, timestamp: i64, data: &Value) -> String {
    json!({"id": uuid::Uuid::new_v4().to_string(), "type": event_type, "timestamp": iso_ms(timestamp), "data": data})
        .to_string()
}

/// A Better Auth user row, version `v` (updated `v` seconds after creation).
fn ba_user(id: &str, v: i64) -> Value {
    json!({"id": id, "name": format!("User {id} v{v}"), "email": format!("{id}.v{v}@example.com"),
           "emailVerified": true, "image": null, "createdAt": iso_ms(T_BA), "updatedAt": iso_ms(T_BA + 1000 * v)})
}

/// A session row of `user_id` created at `at` (token redacted by the plugin).
fn ba_session(user_id: &str, at: i64) -> Value {
    json!({"id": format!("sess_{at}"), "userId": user_id, "createdAt": iso_ms(at), "updatedAt": iso_ms(at),
           "expiresAt": iso_ms(at + 7 * 86_400_000), "ipAddress": "203.0.113.9", "userAgent": "Mozilla/5.0"})
}

const T_BA: i64 = 1_764_590_400_000;

#[tokio::test]
async fn better_auth_plugin_events_land_or_are_ignored_as_the_spec_says() {
    let app = TestApp::spawn().await;
    let secret = new_secret("baplug");
    configure(&app, "baplug", Provider::BetterAuth, &secret).await;
    let url = app.webhook_url("better-auth", "baplug");
    let db = app.project().await;
    let send = |body: String| {
        let req = SignedRequest::better_auth_plugin_now(&secret, body);
        let (app, url) = (&app, url.clone());
        async move { app.send(&url, &req).await }
    };
    let ada = "5rKxZkVqLf8JmPwY3sTnHd2GcA9bE7uQ";

    // user.created: the row is data, with the SPEC §2 columns.
    let v1 = ba_user(ada, 1);
    assert_eq!(send(plugin_body("user.created", T_BA + 1000, &v1)).await, applied());
    let created = UserRow {
        email: v1["email"].as_str().map(str::to_owned),
        first_name: v1["name"].as_str().map(str::to_owned),
        last_name: None,
        username: None,
        image_url: None,
        created_at: Some(ms(T_BA)),
        updated_at: Some(ms(T_BA + 1000)),
        last_sign_in_at: None,
        deleted_at: None,
        raw: Some(v1.clone()),
    };
    assert_eq!(users_table(&db).await[ada], created);

    // user.updated: newer wins, older changes nothing.
    let v3 = ba_user(ada, 3);
    assert_eq!(send(plugin_body("user.updated", T_BA + 3000, &v3)).await, applied());
    assert_eq!(send(plugin_body("user.updated", T_BA + 2000, &ba_user(ada, 2))).await, ignored("stale"));
    let updated = UserRow {
        email: v3["email"].as_str().map(str::to_owned),
        first_name: v3["name"].as_str().map(str::to_owned),
        updated_at: Some(ms(T_BA + 3000)),
        raw: Some(v3.clone()),
        ..created.clone()
    };
    assert_eq!(users_table(&db).await[ada], updated);

    // session.created: a sign-in moves last_sign_in_at forward, never back...
    assert_eq!(send(plugin_body("session.created", T_BA + 9000, &ba_session(ada, T_BA + 9000))).await, applied());
    assert_eq!(
        send(plugin_body("session.created", T_BA + 5000, &ba_session(ada, T_BA + 5000))).await,
        ignored("stale")
    );
    let signed_in = UserRow { last_sign_in_at: Some(ms(T_BA + 9000)), ..updated.clone() };
    assert_eq!(users_table(&db).await[ada], signed_in);
    // ...and a session of a user the table does not know invents nobody.
    assert_eq!(send(plugin_body("session.created", T_BA, &ba_session("stranger", T_BA))).await, ignored("stale"));
    assert!(!users_table(&db).await.contains_key("stranger"));

    // Session updates and deletions, and account events, are not used.
    let account = json!({"id": "acc_1", "userId": ada, "providerId": "credential", "accountId": ada,
                         "createdAt": iso_ms(T_BA), "updatedAt": iso_ms(T_BA)});
    for (event_type, data) in [
        ("session.updated", ba_session(ada, T_BA + 20_000)),
        ("session.deleted", ba_session(ada, T_BA + 20_000)),
        ("account.created", account.clone()),
        ("account.updated", account.clone()),
        ("account.deleted", account),
    ] {
        assert_eq!(
            send(plugin_body(event_type, T_BA + 20_000, &data)).await,
            ignored("unhandled_event"),
            "{event_type}"
        );
    }
    assert_eq!(users_table(&db).await[ada], signed_in);

    // user.deleted: soft delete at the body's timestamp; the row keeps what it had.
    let deleted_at = T_BA + 30_000;
    assert_eq!(send(plugin_body("user.deleted", deleted_at, &v3)).await, applied());
    let deleted = UserRow { deleted_at: Some(ms(deleted_at)), ..signed_in.clone() };
    assert_eq!(users_table(&db).await[ada], deleted);
    // A retry of the same delivery (same body and id, a fresh t) changes nothing.
    let body = plugin_body("user.deleted", deleted_at + 5000, &v3);
    assert_eq!(send(body.clone()).await, ignored("duplicate"));
    assert_eq!(send(body).await, ignored("duplicate"));
    assert_eq!(users_table(&db).await[ada], deleted);

    // The databaseHooks envelope still works on the same integration.
    let envelope = json!({"event": "user.created", "user": ba_user("hooks_user", 1)}).to_string();
    assert_eq!(app.send(&url, &SignedRequest::better_auth(&secret, envelope)).await, applied());
    assert_eq!(users_table(&db).await.len(), 2);

    let w = stats(&app, "baplug", Provider::BetterAuth).await;
    assert_eq!(counts(&w), (5, 3, 2, 5, 0, 0));
    assert_no_leaks(&app, &[&secret]).await;
}

#[tokio::test]
async fn better_auth_plugin_signatures_over_http() {
    let app = TestApp::spawn().await;
    let v = fixture_json("better-auth/better-auth-webhooks-plugin.vector.COMPUTED.json");
    let (secret, body, tampered) =
        (v["secret"].as_str().unwrap(), v["body"].as_str().unwrap(), v["tampered_body"].as_str().unwrap());
    let id = v["headers"]["x-better-auth-webhook-id"].as_str().unwrap();
    configure(&app, "basig", Provider::BetterAuth, secret).await;
    let url = app.webhook_url("better-auth", "basig");
    let db = app.project().await;

    // The client's signer agrees with the vector computed by the plugin's own code...
    let t = v["timestamp_seconds"].as_i64().unwrap();
    let at_vector_time = SignedRequest::better_auth_plugin(secret, id, t, body);
    assert_eq!(
        at_vector_time.header("x-better-auth-webhook-signature"),
        v["headers"]["x-better-auth-webhook-signature"].as_str()
    );
    // ...whose t is long past for this server's clock.
    let (status, answer) = app.send(&url, &at_vector_time).await;
    assert_eq!(status, 401, "{answer}");

    let now = chrono::Utc::now().timestamp();
    let good = SignedRequest::better_auth_plugin(secret, id, now, body);
    let signature = good.header("x-better-auth-webhook-signature").unwrap().to_owned();
    let v1 = signature.split_once(",v1=").unwrap().1.to_owned();
    let mut tampered_req = good.clone();
    tampered_req.body = tampered.as_bytes().to_vec();
    let other = new_secret("basig");
    let unauthorized = vec![
        ("tampered body", tampered_req),
        ("other secret", SignedRequest::better_auth_plugin(&other, id, now, body)),
        ("stale t", SignedRequest::better_auth_plugin(secret, id, now - 400, body)),
        ("future t", SignedRequest::better_auth_plugin(secret, id, now + 400, body)),
        ("missing v1", with_header(&good, "x-better-auth-webhook-signature", Some(&format!("t={now}")))),
        ("missing t", with_header(&good, "x-better-auth-webhook-signature", Some(&format!("v1={v1}")))),
        ("t moved", with_header(&good, "x-better-auth-webhook-signature", Some(&format!("t={},v1={v1}", now - 1)))),
        ("missing header", with_header(&good, "x-better-auth-webhook-signature", None)),
        (
            "another delivery id",
            with_header(&good, "x-better-auth-webhook-id", Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8")),
        ),
        ("envelope signature of a plugin body", SignedRequest::better_auth(&other, body)),
    ];
    for (what, req) in &unauthorized {
        let (status, answer) = app.send(&url, req).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
    }
    assert!(users_table(&db).await.is_empty(), "nothing was written");

    assert_eq!(app.send(&url, &good).await, applied());
    let row = users_table(&db).await["5rKxZkVqLf8JmPwY3sTnHd2GcA9bE7uQ"].clone();
    assert_eq!(row.raw, Some(serde_json::from_str::<Value>(body).unwrap()["data"].clone()));
    // Upper-case hex is accepted too.
    let upper =
        with_header(&good, "x-better-auth-webhook-signature", Some(&format!("t={now},v1={}", v1.to_uppercase())));
    assert_eq!(app.send(&url, &upper).await, ignored("duplicate"));

    let w = stats(&app, "basig", Provider::BetterAuth).await;
    assert_eq!(counts(&w), (1, 0, 1, 0, 1 + unauthorized.len() as i64, 0));
    assert_no_leaks(&app, &[secret, &other]).await;
}

/// What one Better Auth user's history ends as.
#[derive(Debug)]
struct PluginFinal {
    last_object: Option<Value>,
    tombstone_raw: Option<Value>,
    deleted_at: Option<i64>,
    signed_in_at: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_better_auth_plugin_histories_delivered_shuffled_duplicated_and_retried_converge() {
    use futures::StreamExt;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    let app = TestApp::spawn().await;
    let secret = new_secret("baprop");
    configure(&app, "baprop", Provider::BetterAuth, &secret).await;
    let db = app.project().await;
    let url = app.webhook_url("better-auth", "baprop");
    for seed in [11u64, 12, 13] {
        db.batch_execute("TRUNCATE capydb_auth.users").await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut user_events, mut sign_ins) = (Vec::new(), Vec::new());
        let mut finals = std::collections::BTreeMap::new();
        for u in 0..40i64 {
            let id = format!("ba{seed}u{u:02}");
            let versions = rng.gen_range(1..6);
            let mut last = None;
            for v in 1..=versions {
                let row = ba_user(&id, v);
                let kind = if v == 1 { "user.created" } else { "user.updated" };
                user_events.push(plugin_body(kind, T_BA + 1000 * v, &row));
                last = Some(row);
            }
            // Some users are deleted at the end; some only ever see a delete (of the row
            // as it was, which is what the plugin sends).
            let last = last.expect("at least one version");
            let (deleted_at, only_delete) = match rng.gen_range(0..4) {
                0 => (Some(T_BA + 500_000 + u), false),
                1 if versions == 1 => {
                    user_events.pop();
                    (Some(T_BA + 600_000 + u), true)
                }
                _ => (None, false),
            };
            if let Some(t) = deleted_at {
                user_events.push(plugin_body("user.deleted", t, &last));
            }
            // A few sign-ins each, delivered after the user events (a sign-in of a user
            // the table does not know yet is dropped, by design).
            let logins: Vec<i64> = (0..rng.gen_range(0..4)).map(|_| T_BA + rng.gen_range(0..100_000)).collect();
            for &at in &logins {
                sign_ins.push(plugin_body("session.created", at, &ba_session(&id, at)));
            }
            let want = PluginFinal {
                last_object: (!only_delete).then(|| last.clone()),
                tombstone_raw: only_delete.then_some(last),
                deleted_at,
                signed_in_at: logins.iter().max().copied(),
            };
            finals.insert(id, want);
        }
        for phase in [user_events, sign_ins] {
            // Duplicate a third of them (a retry re-signs the same body with a fresh t),
            // shuffle, deliver 24 at a time.
            let mut deliveries = phase;
            let dups: Vec<String> = deliveries.iter().filter(|_| rng.gen_bool(0.33)).cloned().collect();
            deliveries.extend(dups);
            deliveries.shuffle(&mut rng);
            let signed: Vec<SignedRequest> =
                deliveries.into_iter().map(|b| SignedRequest::better_auth_plugin_now(&secret, b)).collect();
            let results: Vec<(u16, Value)> =
                futures::stream::iter(signed.iter().map(|s| app.send(&url, s))).buffer_unordered(24).collect().await;
            assert!(results.iter().all(|(s, _)| *s == 200), "every delivery answered 200: {results:?}");
        }

        let table = users_table(&db).await;
        assert_eq!(table.len(), finals.len(), "seed {seed}");
        for (id, want) in &finals {
            let row = &table[id];
            assert_eq!(row.deleted_at, want.deleted_at.map(ms), "seed {seed} {id} deleted_at");
            assert_eq!(row.last_sign_in_at, want.signed_in_at.map(ms), "seed {seed} {id} last_sign_in_at");
            match &want.last_object {
                Some(obj) => {
                    assert_eq!(row.raw.as_ref(), Some(obj), "seed {seed} {id} raw is the newest row");
                    assert_eq!(row.email.as_deref(), obj["email"].as_str(), "seed {seed} {id}");
                    assert_eq!(row.updated_at, obj["updatedAt"].as_str().map(utc), "seed {seed} {id}");
                }
                None => {
                    assert_eq!(row.raw, want.tombstone_raw, "seed {seed} {id} tombstone");
                    assert_eq!((row.email.as_deref(), row.updated_at), (None, None), "seed {seed} {id} tombstone");
                }
            }
        }
    }
}

#[tokio::test]
async fn send_test_webhook_events_for_better_auth_use_the_plugin_by_default_and_pass() {
    use capydb_auth_sync_client::webhook::{post_signed, test_event, TestEventKind};
    let app = TestApp::spawn().await;
    let secret = new_secret("basend");
    let integration = configure(&app, "basend", Provider::BetterAuth, &secret).await;
    assert!(integration.webhook_receiver.ends_with("/api/capydb/v1/integrations/better-auth/webhook/basend"));
    let url = app.webhook_url("better-auth", "basend");
    let db = app.project().await;
    let timeout = std::time::Duration::from_secs(10);

    // What `send-test-webhook --provider better_auth` sends: the plugin's body and signature.
    let user_id = test_event(Provider::BetterAuth, TestEventKind::Created, None).unwrap().user_id;
    for kind in [TestEventKind::Created, TestEventKind::Updated, TestEventKind::Deleted] {
        let event = test_event(Provider::BetterAuth, kind, Some(&user_id)).unwrap();
        let req = SignedRequest::for_provider(Provider::BetterAuth, &secret, event.body()).unwrap();
        assert!(req.header("x-better-auth-webhook-signature").unwrap().starts_with("t="), "{req:?}");
        assert_eq!(req.header("x-better-auth-webhook-id"), event.event["id"].as_str());
        assert!(req.header("x-better-auth-signature").is_none());
        let resp = post_signed(&url, &req, timeout).await.expect("posted");
        assert_eq!((resp.status, resp.json()), (200, Some(json!({"status": "applied"}))), "{kind}");
    }
    let row = users_table(&db).await[&user_id].clone();
    assert!(row.deleted_at.is_some() && row.email.is_some(), "{row:?}");

    // `--better-auth-sender database-hooks`: the envelope, signed the databaseHooks way.
    let event = test_event(Provider::BetterAuth, TestEventKind::Created, None).unwrap();
    let envelope = event.better_auth_envelope().unwrap();
    let resp = post_signed(&url, &SignedRequest::better_auth(&secret, envelope.body()), timeout).await.unwrap();
    assert_eq!((resp.status, resp.json()), (200, Some(json!({"status": "applied"}))));
    assert!(users_table(&db).await.contains_key(&envelope.user_id));
    assert_no_leaks(&app, &[&secret]).await;
}
