//! End-to-end tests of the fake Clerk API over real HTTP (reqwest client): paging rules,
//! filters, the cursor, count, auth and rate-limit errors, faults, the pause gate and hooks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fake_clerk::{FakeClerk, FakeClerkConfig, Fault, RateLimit, Users};
use serde_json::Value;

async fn start(users: usize) -> FakeClerk {
    FakeClerk::start(FakeClerkConfig { users, ..Default::default() }).await.expect("start fake clerk")
}

struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn ids(&self) -> Vec<String> {
        ids(&self.json())
    }

    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|u| u["id"].as_str().expect("id").to_owned()).collect()
}

async fn get_with(clerk: &FakeClerk, path_and_query: &str, key: Option<&str>) -> Reply {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{}{path_and_query}", clerk.url()));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body = resp.text().await.expect("body");
    Reply { status, retry_after, body }
}

async fn get(clerk: &FakeClerk, path_and_query: &str) -> Reply {
    get_with(clerk, path_and_query, Some(clerk.secret_key())).await
}

fn reversed(mut v: Vec<String>) -> Vec<String> {
    v.reverse();
    v
}

#[tokio::test]
async fn pages_with_limit_offset_and_order() {
    let clerk = start(25).await;
    let truth = clerk.user_ids(); // ascending
    assert_eq!(truth.len(), 25);

    let default = get(&clerk, "/v1/users").await;
    assert_eq!(default.status, 200);
    assert_eq!(default.ids(), reversed(truth.clone())[..10].to_vec());

    for order in ["%2Bcreated_at", "created_at"] {
        let mut all = Vec::new();
        for offset in (0..30).step_by(7) {
            let page = get(&clerk, &format!("/v1/users?limit=7&offset={offset}&order_by={order}")).await;
            assert_eq!(page.status, 200);
            all.extend(page.ids());
        }
        assert_eq!(all, truth);
    }
    let desc = get(&clerk, "/v1/users?limit=500&order_by=-created_at").await;
    assert_eq!(desc.ids(), reversed(truth.clone()));

    let created: Vec<i64> = clerk.users_snapshot().iter().map(|u| u["created_at"].as_i64().unwrap()).collect();
    assert!(created.windows(2).any(|w| w[0] == w[1]), "seed has ties");
}

#[tokio::test]
async fn limit_rules_and_invalid_params() {
    let clerk = start(30).await;
    assert_eq!(get(&clerk, "/v1/users?limit=501").await.ids().len(), 10);
    assert_eq!(get(&clerk, "/v1/users?limit=500").await.ids().len(), 30);
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=many",
        "offset=-5",
        "order_by=updated_at",
        "order_by=+created_at", // a literal '+' is a space
        "created_at_after=yesterday",
    ] {
        let reply = get(&clerk, &format!("/v1/users?{bad}")).await;
        assert_eq!(reply.status, 422, "{bad}");
        let body = reply.json();
        let error = &body["errors"][0];
        assert_eq!(error["code"], "form_param_format_invalid", "{bad}");
        assert!(error["message"].is_string() && error["long_message"].is_string());
        assert!(body["clerk_trace_id"].is_string());
    }
}

#[tokio::test]
async fn created_at_bounds_are_strict() {
    let clerk = start(40).await;
    let snapshot = clerk.users_snapshot();
    // A created_at shared by two users.
    let tied = snapshot
        .windows(2)
        .find(|w| w[0]["created_at"] == w[1]["created_at"])
        .map(|w| w[0]["created_at"].as_i64().unwrap())
        .expect("a tie");
    let after: Vec<String> = snapshot
        .iter()
        .filter(|u| u["created_at"].as_i64().unwrap() > tied)
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let reply = get(&clerk, &format!("/v1/users?limit=500&order_by=created_at&created_at_after={tied}")).await;
    assert_eq!(reply.ids(), after);

    let before: Vec<String> = snapshot
        .iter()
        .filter(|u| u["created_at"].as_i64().unwrap() < tied)
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let reply = get(&clerk, &format!("/v1/users?limit=500&order_by=created_at&created_at_before={tied}")).await;
    assert_eq!(reply.ids(), before);
    let tied_count = snapshot.iter().filter(|u| u["created_at"].as_i64() == Some(tied)).count();
    assert!(tied_count >= 2);
    assert_eq!(before.len() + after.len() + tied_count, snapshot.len());
}

#[tokio::test]
async fn starting_after_walks_the_whole_order() {
    let clerk = start(33).await;
    let truth = clerk.user_ids();
    for (order, expected) in [("created_at", truth.clone()), ("-created_at", reversed(truth.clone()))] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.as_ref().map(|c| format!("&starting_after={c}")).unwrap_or_default();
            let page = get(&clerk, &format!("/v1/users?limit=4&order_by={order}{after}")).await;
            assert_eq!(page.status, 200);
            let ids = page.ids();
            if ids.is_empty() {
                break;
            }
            cursor = ids.last().cloned();
            seen.extend(ids);
        }
        assert_eq!(seen, expected, "{order}");
    }
    let unknown = get(&clerk, "/v1/users?starting_after=user_doesnotexist").await;
    assert_eq!(unknown.status, 422);
    assert_eq!(unknown.error_code(), "form_param_value_invalid");
}

#[tokio::test]
async fn count_honours_the_window() {
    let clerk = start(20).await;
    let reply = get(&clerk, "/v1/users/count").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"object": "total_count", "total_count": 20}));
    let snapshot = clerk.users_snapshot();
    let c5 = snapshot[5]["created_at"].as_i64().unwrap();
    let expected = snapshot.iter().filter(|u| u["created_at"].as_i64().unwrap() > c5).count();
    let reply = get(&clerk, &format!("/v1/users/count?created_at_after={c5}")).await;
    assert_eq!(reply.json()["total_count"], expected);
    assert_eq!(clerk.stats().count_requests, 2);
}

#[tokio::test]
async fn rejects_bad_and_missing_keys() {
    let clerk = start(3).await;
    let reply = get_with(&clerk, "/v1/users", Some("sk_test_wrong")).await;
    assert_eq!(reply.status, 401);
    let body = reply.json();
    let msg = "The provided Clerk Secret Key is invalid. Make sure that your Clerk Secret Key is correct.";
    assert_eq!(body["errors"][0]["code"], "clerk_key_invalid");
    assert_eq!(body["errors"][0]["message"], msg);
    assert_eq!(body["errors"][0]["long_message"], msg);
    assert!(body["clerk_trace_id"].as_str().is_some_and(|t| !t.is_empty()));

    let reply = get_with(&clerk, "/v1/users/count", None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "authorization_header_format_invalid");

    let stats = clerk.stats();
    assert_eq!(stats.unauthorized, 2);
    assert_eq!(stats.users_requests_admitted, 0);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let clerk = FakeClerk::start(FakeClerkConfig {
        users: 5,
        rate_limit: Some(RateLimit { capacity: 2, refill_per_sec: 0.25 }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(get(&clerk, "/v1/users").await.status, 200);
    assert_eq!(get(&clerk, "/v1/users/count").await.status, 200);
    let limited = get(&clerk, "/v1/users").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), "too_many_requests");
    let secs: u64 = limited.retry_after.as_deref().expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=4).contains(&secs), "{secs}");
    assert_eq!(clerk.rate_limited_count(), 1);
    assert_eq!(clerk.max_requests_in_window(Duration::from_secs(10)), 3);
    let statuses: Vec<u16> = clerk.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 429]);

    clerk.set_rate_limit(None);
    assert_eq!(get(&clerk, "/v1/users").await.status, 200);
}

#[tokio::test]
async fn faults_apply_in_order() {
    let clerk = start(12).await;
    clerk.inject_faults([Fault::Status(503), Fault::Truncate, Fault::Status(500), Fault::Disconnect]);
    let reply = get(&clerk, "/v1/users?limit=5").await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["errors"][0]["code"].is_string());

    let reply = get(&clerk, "/v1/users?limit=5").await;
    assert_eq!(reply.status, 200);
    assert!(!reply.body.is_empty());
    assert!(serde_json::from_str::<Value>(&reply.body).is_err());

    assert_eq!(get(&clerk, "/v1/users?limit=5").await.status, 500);

    let client = reqwest::Client::new();
    let dropped = client.get(format!("{}/v1/users", clerk.url())).bearer_auth(clerk.secret_key()).send().await;
    assert!(dropped.is_err(), "disconnect gives no response");

    assert_eq!(get(&clerk, "/v1/users?limit=5").await.ids().len(), 5);
    assert_eq!(clerk.pending_faults(), 0);
    let stats = clerk.wait_for_users_requests(5).await;
    assert_eq!(stats.faults_applied, 4);
    let statuses: Vec<u16> = clerk.users_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200, 500, 0, 200]);
    // Faults do not touch /v1/users/count.
    clerk.inject_fault(Fault::Status(500));
    assert_eq!(get(&clerk, "/v1/users/count").await.status, 200);
    assert_eq!(clerk.pending_faults(), 1);
}

#[tokio::test]
async fn delay_fault_makes_a_client_time_out() {
    let clerk = start(3).await;
    clerk.inject_fault(Fault::Delay(Duration::from_millis(400)));
    let client = reqwest::Client::builder().timeout(Duration::from_millis(50)).build().unwrap();
    let timed_out = client
        .get(format!("{}/v1/users", clerk.url()))
        .bearer_auth(clerk.secret_key())
        .send()
        .await
        .expect_err("times out");
    assert!(timed_out.is_timeout(), "{timed_out}");
    // The next request is served normally.
    let reply = get(&clerk, "/v1/users").await;
    assert_eq!(reply.ids().len(), 3);
    let delayed = &clerk.users_requests()[0];
    assert_eq!(delayed.fault, Some(Fault::Delay(Duration::from_millis(400))));
}

#[tokio::test]
async fn pause_gate_blocks_until_released() {
    let clerk = Arc::new(start(15).await);
    let gate = clerk.pause_users_request(2);
    assert_eq!(get(&clerk, "/v1/users?limit=500").await.ids().len(), 15);

    let request = tokio::spawn({
        let clerk = Arc::clone(&clerk);
        async move { get(&clerk, "/v1/users?limit=500").await }
    });
    gate.wait_arrived().await;
    assert!(gate.has_arrived());
    let victim = clerk.user_ids()[0].clone();
    assert!(clerk.delete_user(&victim));
    assert!(!request.is_finished());
    assert_eq!(clerk.users_requests()[1].status, 0, "still in flight");
    gate.release();
    let reply = request.await.unwrap();
    assert_eq!(reply.ids().len(), 14);
    assert!(!reply.ids().contains(&victim));
    assert_eq!(clerk.users_requests()[1].users_seq, Some(2));
}

#[tokio::test]
async fn hooks_mutate_between_pages() {
    let clerk = start(20).await;
    // Before page 2, delete the first user of page 1 and create a new one.
    clerk.on_users_request(|info, users: &mut Users| {
        if info.seq == 2 {
            let first = users.ids()[0].clone();
            users.delete(&first);
            users.create();
        }
    });
    let page1 = get(&clerk, "/v1/users?limit=5&order_by=created_at").await.ids();
    let page2 = get(&clerk, "/v1/users?limit=5&offset=5&order_by=created_at").await.ids();
    // Offset paging skipped a user that still exists.
    let truth = clerk.user_ids();
    let seen: HashSet<&String> = page1.iter().chain(&page2).collect();
    assert!(!seen.contains(&truth[4]), "offset paging skips after a delete");
    // The cursor does not.
    let page2 = get(&clerk, &format!("/v1/users?limit=5&order_by=created_at&starting_after={}", page1[4])).await.ids();
    assert_eq!(page2, truth[4..9].to_vec());
    // The created user is the newest.
    let newest = get(&clerk, "/v1/users?limit=1").await.ids();
    assert_eq!(newest, [truth[truth.len() - 1].clone()]);
    assert_eq!(clerk.len(), 20);
}

#[tokio::test]
async fn mutations_through_the_handle() {
    let clerk = start(4).await;
    let a = clerk.create_user();
    let b = clerk.create_user();
    assert!(b["created_at"].as_i64() > a["created_at"].as_i64());
    let id = a["id"].as_str().unwrap().to_owned();
    let updated = clerk.update_user(&id, |u| u["first_name"] = "Renamed".into()).unwrap();
    assert!(updated["updated_at"].as_i64() > a["updated_at"].as_i64());
    assert_eq!(clerk.user(&id).unwrap()["first_name"], "Renamed");
    let reply = get(&clerk, "/v1/users?limit=2").await;
    assert_eq!(reply.ids(), [b["id"].as_str().unwrap().to_owned(), id.clone()]);
    assert_eq!(reply.json()[1]["first_name"], "Renamed");
    assert!(clerk.delete_user(&id));
    assert!(!clerk.delete_user(&id));
    assert!(clerk.update_user(&id, |_| {}).is_none());
    assert_eq!(clerk.len(), 5);
}

#[tokio::test]
async fn logs_requests_and_shuts_down() {
    let clerk = start(2).await;
    get(&clerk, "/v1/users?limit=1&order_by=created_at").await;
    let reply = get(&clerk, "/v1/nope").await;
    assert_eq!(reply.status, 404);
    let records = clerk.requests();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].path, "/v1/users");
    assert_eq!(records[0].param("limit"), Some("1"));
    assert_eq!(records[0].param("order_by"), Some("created_at"));
    assert_eq!(records[0].status, 200);
    assert!(records[0].received_at <= records[1].received_at);
    assert_eq!(clerk.users_requests().len(), 1);

    let addr = clerk.addr();
    clerk.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn refuses_non_loopback_addresses() {
    let err = FakeClerk::start(FakeClerkConfig { addr: "0.0.0.0:0".parse().unwrap(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_user_is_served_by_id_and_a_hidden_user_only_by_id() {
    let clerk = start(5).await;
    let ids_before = clerk.user_ids();
    let hidden = ids_before[2].clone();
    let r = get_with(&clerk, &format!("/v1/users/{hidden}"), Some(clerk.secret_key())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], hidden.as_str());

    clerk.hide_from_lists(&hidden);
    let listed = get_with(&clerk, "/v1/users?limit=10&order_by=%2Bcreated_at", Some(clerk.secret_key())).await;
    assert_eq!(listed.ids().len(), 4);
    assert!(!listed.ids().contains(&hidden));
    let count = get_with(&clerk, "/v1/users/count", Some(clerk.secret_key())).await;
    assert_eq!(count.json()["total_count"], 4);
    assert_eq!(get_with(&clerk, &format!("/v1/users/{hidden}"), Some(clerk.secret_key())).await.status, 200);

    assert!(clerk.delete_user(&hidden));
    let gone = get_with(&clerk, &format!("/v1/users/{hidden}"), Some(clerk.secret_key())).await;
    assert_eq!((gone.status, gone.error_code().as_str()), (404, "resource_not_found"));
    let stats = clerk.stats();
    assert_eq!((stats.user_requests, stats.user_not_found), (3, 1));
}
