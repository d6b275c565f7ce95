//! Issue 3: live Clerk sync — signed deliveries over real HTTP, the merge rules under every
//! delivery order, every rejection, a project database that goes away and comes back.
use capydb_auth_sync_client::SignedRequest;
use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::Duration;
use test_harness::*;

fn data_of(fixture_json: &str) -> Value {
    serde_json::from_str::<Value>(fixture_json).unwrap()["data"].clone()
}

#[tokio::test]
async fn fixture_events_land_with_exact_columns_and_raw_data() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("fx", &whsec).await;
    let db = app.project().await;

    let created = fixture("clerk/user.created.json");
    assert_eq!(app.send_clerk("fx", &whsec, &created).await, (200, json!({"status": "applied"})));
    let rows = users_table(&db).await;
    let row = &rows["user_29w83sxmDNGwOuEthce5gg56FcC"];
    assert_eq!(
        row,
        &UserRow {
            email: Some("example@example.org".into()),
            first_name: Some("Example".into()),
            last_name: Some("Example".into()),
            username: None,
            image_url: Some("https://img.clerk.com/xxxxxx".into()),
            created_at: Some(ms(1654012591514)),
            updated_at: Some(ms(1654012591835)),
            last_sign_in_at: Some(ms(1654012591514)),
            deleted_at: None,
            raw: Some(data_of(&created)),
        }
    );

    // session.created carries a full user: upsert.
    let session = fixture("clerk/session.created.json");
    assert_eq!(app.send_clerk("fx", &whsec, &session).await.0, 200);
    let session_user = serde_json::from_str::<Value>(&session).unwrap()["data"]["user"].clone();
    let row = users_table(&db).await["user_2g7np7Hrk0SN6kj5EDMLDaKNL0S"].clone();
    assert_eq!((row.first_name.as_deref(), row.last_name.as_deref()), (Some("John"), Some("Doe")));
    assert_eq!(row.email, None, "no email address matches primary_email_address_id");
    assert_eq!(row.last_sign_in_at, Some(ms(1716883200000)));
    assert_eq!(row.raw, Some(session_user));

    // user.updated is newer.
    let updated = fixture("clerk/user.updated.json");
    assert_eq!(app.send_clerk("fx", &whsec, &updated).await, (200, json!({"status": "applied"})));
    let expected_updated = UserRow {
        email: None,
        first_name: Some("John".into()),
        last_name: Some("Doe Updated".into()),
        username: Some("johndoe".into()),
        image_url: Some("https://img.clerk.com/yyyyy".into()),
        created_at: Some(ms(1716883200000)),
        updated_at: Some(ms(1716883500000)),
        last_sign_in_at: Some(ms(1716883400000)),
        deleted_at: None,
        raw: Some(data_of(&updated)),
    };
    assert_eq!(users_table(&db).await["user_2g7np7Hrk0SN6kj5EDMLDaKNL0S"], expected_updated);

    // The older session event again: stale.
    assert_eq!(app.send_clerk("fx", &whsec, &session).await, (200, json!({"status": "ignored", "reason": "stale"})));

    // user.deleted (envelope timestamp in seconds): soft delete, columns and raw kept.
    let deleted = fixture("clerk/user.deleted.json");
    assert_eq!(app.send_clerk("fx", &whsec, &deleted).await, (200, json!({"status": "applied"})));
    let row = users_table(&db).await["user_2g7np7Hrk0SN6kj5EDMLDaKNL0S"].clone();
    assert_eq!(row, UserRow { deleted_at: Some(ms(1716883200000)), ..expected_updated });

    // An event type the sync does not use.
    let other = clerk_event("organization.created", json!({"id": "org_1", "object": "organization"}), 1);
    assert_eq!(
        app.send_clerk("fx", &whsec, &other).await,
        (200, json!({"status": "ignored", "reason": "unhandled_event"}))
    );

    let stats = app.webhook_stats("fx").await;
    assert_eq!((stats.applied, stats.ignored_stale, stats.ignored_unhandled), (4, 1, 1));
    assert!(stats.last_event_at.is_some());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"capydb_auth_sync_webhook_deliveries_total{provider="clerk",outcome="applied"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("capydb_auth_sync_webhook_duration_seconds_bucket"));
    let logs = captured_logs();
    assert!(!logs.contains("example@example.org"), "no email address in the logs");
    assert_no_leaks(&app, &[&whsec, &whsec["whsec_".len()..]]).await;
}

fn user_v(id: &str, version: i64, email: &str) -> Value {
    json!({
        "id": id, "object": "user", "first_name": format!("v{version}"), "last_name": null, "username": null,
        "image_url": format!("https://img.example/{id}/{version}"),
        "primary_email_address_id": "idn_1",
        "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": email}],
        "created_at": 1_700_000_000_000i64, "updated_at": 1_700_000_000_000i64 + version * 1000,
        "last_sign_in_at": null, "public_metadata": {"version": version}
    })
}

#[tokio::test]
async fn an_older_update_arriving_late_changes_nothing() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("ooo", &whsec).await;
    let v2 = clerk_event("user.updated", user_v("user_o", 2, "two@example.com"), 2);
    let v1 = clerk_event("user.created", user_v("user_o", 1, "one@example.com"), 1);
    assert_eq!(app.send_clerk("ooo", &whsec, &v2).await.1["status"], "applied");
    assert_eq!(app.send_clerk("ooo", &whsec, &v1).await.1, json!({"status": "ignored", "reason": "stale"}));
    let row = users_table(&app.project().await).await["user_o"].clone();
    assert_eq!(row.email.as_deref(), Some("two@example.com"));
    assert_eq!(row.raw.unwrap()["public_metadata"]["version"], 2);
}

#[tokio::test]
async fn a_delete_before_the_create_leaves_a_tombstone_that_gets_filled_in_and_stays_deleted() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("tomb", &whsec).await;
    let db = app.project().await;
    let delete_data = json!({"id": "user_t", "object": "user", "deleted": true});
    let del = clerk_event("user.deleted", delete_data.clone(), 1_700_000_100_000);
    assert_eq!(app.send_clerk("tomb", &whsec, &del).await.1["status"], "applied");
    let row = users_table(&db).await["user_t"].clone();
    assert_eq!(row.deleted_at, Some(ms(1_700_000_100_000)));
    assert_eq!(row.raw, Some(delete_data));
    assert_eq!(row.email, None);

    let create = clerk_event("user.created", user_v("user_t", 1, "t@example.com"), 1);
    assert_eq!(app.send_clerk("tomb", &whsec, &create).await.1["status"], "applied");
    let row = users_table(&db).await["user_t"].clone();
    assert_eq!(row.email.as_deref(), Some("t@example.com"), "the late create fills the tombstone");
    assert_eq!(row.raw, Some(user_v("user_t", 1, "t@example.com")));
    assert_eq!(row.deleted_at, Some(ms(1_700_000_100_000)), "deleted_at is sticky");

    // The delete again: nothing changes.
    assert_eq!(app.send_clerk("tomb", &whsec, &del).await.1, json!({"status": "ignored", "reason": "duplicate"}));
}

#[tokio::test]
async fn the_same_delivery_five_times_has_one_effect() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("dup", &whsec).await;
    let body = clerk_event("user.created", user_v("user_d", 1, "d@example.com"), 1);
    let signed = SignedRequest::clerk_now(&whsec, body.into_bytes()).unwrap();
    let url = app.webhook_url("clerk", "dup");
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(app.send(&url, &signed).await);
    }
    assert_eq!(answers[0], (200, json!({"status": "applied"})));
    for a in &answers[1..] {
        assert_eq!(a, &(200, json!({"status": "ignored", "reason": "duplicate"})));
    }
    assert_eq!(users_table(&app.project().await).await.len(), 1);
    let stats = app.webhook_stats("dup").await;
    assert_eq!((stats.applied, stats.ignored_duplicate, stats.ignored_stale), (1, 4, 0));
}

/// What one user's history ends as.
#[derive(Debug)]
struct FinalState {
    last_object: Option<Value>,
    deleted_at: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_delivered_shuffled_duplicated_and_concurrently_converge() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("prop", &whsec).await;
    let db = app.project().await;
    let url = app.webhook_url("clerk", "prop");
    for seed in [1u64, 2, 3] {
        db.batch_execute("TRUNCATE capydb_auth.users").await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut deliveries = Vec::new();
        let mut finals = std::collections::BTreeMap::new();
        for u in 0..40 {
            let id = format!("user_s{seed}_{u}");
            let versions = rng.gen_range(1..6);
            let mut last = None;
            for v in 1..=versions {
                let obj = user_v(&id, v, &format!("{id}.v{v}@example.com"));
                let kind = if v == 1 { "user.created" } else { "user.updated" };
                deliveries.push(clerk_event(kind, obj.clone(), v));
                last = Some(obj);
            }
            // Some users are deleted at the end; some only ever see a delete.
            let deleted_at = match rng.gen_range(0..4) {
                0 => Some(1_700_000_500_000 + u),
                1 if versions == 1 => {
                    deliveries.pop();
                    last = None;
                    Some(1_700_000_600_000 + u)
                }
                _ => None,
            };
            if let Some(t) = deleted_at {
                deliveries.push(clerk_event("user.deleted", json!({"id": id, "object": "user", "deleted": true}), t));
            }
            finals.insert(id, FinalState { last_object: last, deleted_at });
        }
        // Duplicate a third of them, shuffle, deliver 24 at a time.
        let dups: Vec<String> = deliveries.iter().filter(|_| rng.gen_bool(0.33)).cloned().collect();
        deliveries.extend(dups);
        deliveries.shuffle(&mut rng);
        let signed: Vec<SignedRequest> =
            deliveries.into_iter().map(|b| SignedRequest::clerk_now(&whsec, b.into_bytes()).unwrap()).collect();
        let results: Vec<(u16, Value)> =
            futures::stream::iter(signed.iter().map(|s| app.send(&url, s))).buffer_unordered(24).collect().await;
        assert!(results.iter().all(|(s, _)| *s == 200), "every delivery answered 200: {results:?}");

        let table = users_table(&db).await;
        assert_eq!(table.len(), finals.len(), "seed {seed}");
        for (id, want) in &finals {
            let row = &table[id];
            assert_eq!(row.deleted_at, want.deleted_at.map(ms), "seed {seed} {id} deleted_at");
            match &want.last_object {
                Some(obj) => {
                    assert_eq!(row.raw.as_ref(), Some(obj), "seed {seed} {id} raw is the newest object");
                    assert_eq!(row.updated_at, Some(ms(obj["updated_at"].as_i64().unwrap())));
                    assert_eq!(row.email.as_deref(), obj["email_addresses"][0]["email_address"].as_str());
                }
                None => assert_eq!(row.raw.as_ref().unwrap()["deleted"], true, "seed {seed} {id} tombstone"),
            }
        }
    }
}

#[tokio::test]
async fn every_bad_delivery_gets_its_status_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("bad", &whsec).await;
    let url = app.webhook_url("clerk", "bad");
    let body = clerk_event("user.created", user_v("user_bad", 1, "bad@example.com"), 1).into_bytes();
    let now = chrono::Utc::now().timestamp();
    let good = SignedRequest::clerk(&whsec, "msg_1", now, body.clone()).unwrap();
    let with_header = |name: &str, value: &str| {
        let mut r = good.clone();
        for h in r.headers.iter_mut() {
            if h.0 == name {
                h.1 = value.to_string();
            }
        }
        r
    };
    let without = |name: &str| {
        let mut r = good.clone();
        r.headers.retain(|h| h.0 != name);
        r
    };
    let signature = good.header("svix-signature").unwrap().to_string();
    let mut tampered = good.clone();
    tampered.body = clerk_event("user.created", user_v("user_bad", 2, "evil@example.com"), 1).into_bytes();
    let unauthorized = vec![
        ("bad signature", with_header("svix-signature", "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
        ("wrong secret", SignedRequest::clerk(&new_whsec(), "msg_1", now, body.clone()).unwrap()),
        ("tampered body", tampered),
        ("missing svix-id", without("svix-id")),
        ("missing svix-timestamp", without("svix-timestamp")),
        ("missing svix-signature", without("svix-signature")),
        // Exact ±300 s boundaries are unit-tested with an injected clock (providers::svix);
        // here a margin keeps a slow test machine from crossing them.
        ("stale timestamp", SignedRequest::clerk(&whsec, "msg_1", now - 330, body.clone()).unwrap()),
        ("future timestamp", SignedRequest::clerk(&whsec, "msg_1", now + 330, body.clone()).unwrap()),
        ("v1a only", with_header("svix-signature", &signature.replacen("v1,", "v1a,", 1))),
    ];
    for (what, req) in &unauthorized {
        let (status, body) = app.send(&url, req).await;
        assert_eq!(status, 401, "{what}");
        assert!(body["error"].is_string(), "{what}: {body}");
    }
    // Verified but not Clerk's event shape.
    for bad_body in
        [r#"{"object":"event","data":{"id":"user_x"}}"#, "not json", r#"{"type":"user.created","data":"nope"}"#]
    {
        let req = SignedRequest::clerk_now(&whsec, bad_body.as_bytes().to_vec()).unwrap();
        let (status, body) = app.send(&url, &req).await;
        assert_eq!(status, 400, "{bad_body}");
        assert!(body["error"].is_string());
    }
    // Too big: refused while reading.
    let big = SignedRequest::clerk_now(&whsec, vec![b' '; 1024 * 1024 + 1]).unwrap();
    assert_eq!(app.send(&url, &big).await.0, 413);
    // Not POST.
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    // Unknown project; project without a webhook secret; unknown provider segment.
    assert_eq!(app.send(&app.webhook_url("clerk", "nope"), &good).await.0, 404);
    assert_eq!(app.send(&app.webhook_url("clerk", "bad project"), &good).await.0, 404);
    assert_eq!(app.send(&app.webhook_url("okta", "bad"), &good).await.0, 404);

    assert!(users_table(&app.project().await).await.is_empty(), "nothing was written");
    let stats = app.webhook_stats("bad").await;
    assert_eq!((stats.rejected, stats.malformed, stats.applied), (unauthorized.len() as i64, 3, 0));
    assert!(
        stats.last_error.contains("not a valid event") || stats.last_error.contains("verification"),
        "{}",
        stats.last_error
    );
    assert!(stats.last_event_at.is_none(), "no event was accepted");

    let verdict = app.client.get_sync_status("bad", client::Provider::Clerk).await.unwrap().verdict;
    assert!(verdict.starts_with("needs attention: the last webhook delivery failed"), "{verdict}");

    // The good one still works afterwards, and the verdict recovers.
    assert_eq!(app.send(&url, &good).await.0, 200);
    let verdict = app.client.get_sync_status("bad", client::Provider::Clerk).await.unwrap().verdict;
    assert!(verdict.starts_with("healthy: live"), "{verdict}");
}

#[tokio::test]
async fn a_backfill_only_integration_has_no_webhook_endpoint() {
    let clerk = FakeClerk::start(FakeClerkConfig::default()).await.unwrap();
    let app = TestApp::spawn_with(TestOptions { clerk_url: Some(clerk.url()), ..Default::default() }).await;
    app.client
        .configure_raw_request(client::ConfigureIntegrationRequest {
            project_id: "bfo".into(),
            provider: client::Provider::Clerk as i32,
            database_url: app.project_url.clone(),
            credentials: Some(client::Credentials {
                secret_key: clerk.secret_key().into(),
                webhook_signing_secret: String::new(),
            }),
        })
        .await
        .unwrap();
    let whsec = new_whsec();
    let (status, body) =
        app.send_clerk("bfo", &whsec, &clerk_event("user.created", user_v("u", 1, "u@example.com"), 1)).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn an_unreachable_project_database_parks_the_delivery_and_the_drain_applies_it_without_a_resend() {
    let app = TestApp::spawn_with(TestOptions {
        tweak: Box::new(|s| s.ingest.apply_timeout = Duration::from_millis(1500)),
        ..Default::default()
    })
    .await;
    let mut proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let whsec = new_whsec();
    app.configure_clerk_on("down", &whsec, &proxy.url_through(&app.project_url)).await;
    let url = app.webhook_url("clerk", "down");
    let first = SignedRequest::clerk_now(
        &whsec,
        clerk_event("user.created", user_v("user_1", 1, "1@example.com"), 1).into_bytes(),
    )
    .unwrap();
    assert_eq!(app.send(&url, &first).await.0, 200);

    proxy.cut().await;
    let second = SignedRequest::clerk_now(
        &whsec,
        clerk_event("user.created", user_v("user_2", 1, "2@example.com"), 1).into_bytes(),
    )
    .unwrap();
    assert_eq!(app.send(&url, &second).await, (202, json!({"status": "queued"})), "parked durably");
    let direct = app.project().await;
    assert!(!users_table(&direct).await.contains_key("user_2"), "not applied yet");
    let stats = app.webhook_stats("down").await;
    assert_eq!(stats.queued, 1);
    assert!(stats.oldest_queued_at.is_some());

    proxy.restore().await;
    eventually("the drain applies the parked delivery", || async {
        users_table(&direct).await.contains_key("user_2").then_some(())
    })
    .await;
    eventually("the inbox is empty", || async { (app.webhook_stats("down").await.queued == 0).then_some(()) }).await;
    assert_eq!(app.send(&url, &second).await, (200, json!({"status": "ignored", "reason": "duplicate"})));
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_while_reading() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("chunked", &whsec).await;
    let mut s = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    let head = "POST /api/capydb/v1/integrations/clerk/webhook/chunked HTTP/1.1\r\nhost: localhost\r\n\
                content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    // No Content-Length: 64 KiB chunks until the server answers (bounded at 4 MiB).
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    for _ in 0..64 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server stopped reading: it has answered
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(users_table(&app.project().await).await.is_empty());
}
