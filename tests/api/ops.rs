//! The shipped Grafana dashboard and Prometheus alert rules (`ops/`) against the real server's
//! `/metrics`: every series they name is exported — with the labels they match on or group by,
//! and the label values they select — after real deliveries, a backfill that met a Clerk 429,
//! a full inbox and a control-database outage. (`promtool check rules` and `promtool test
//! rules` check the PromQL itself where promtool can be installed: scripts/check-ops.sh.)
use capydb_auth_sync_client::{BackfillState, Provider};
use fake_clerk::Fault;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use test_harness::*;

/// A metric selector of an expression: `name{label op "value", …}`.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// What an expression names: the service's selectors, and the labels it groups or joins by.
#[derive(Debug, Default)]
struct Named {
    selectors: Vec<Selector>,
    grouping: BTreeSet<String>,
}

const PREFIX: &str = "capydb_auth_sync_";

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index of the first `close` at or after `from` that is outside a quoted string.
fn find_outside_quotes(chars: &[char], from: usize, close: char) -> usize {
    let mut quote = None;
    let mut i = from;
    while i < chars.len() {
        match (quote, chars[i]) {
            (Some(_), '\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'' | '`') => quote = Some(chars[i]),
            (None, c) if c == close => return i,
            _ => {}
        }
        i += 1;
    }
    panic!("no closing {close:?} in {}", chars.iter().collect::<String>())
}

/// `a="x", b!~"y,z"` → its matchers (label, operator, value).
fn matchers(inside: &[char]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < inside.len() {
        let end = find_outside_quotes(&[inside, &[',']].concat(), start, ',');
        let m: String = inside[start..end.min(inside.len())].iter().collect();
        let m = m.trim();
        if !m.is_empty() {
            let op = ["=~", "!~", "!=", "="].into_iter().find(|op| m.contains(op)).expect("a matcher");
            let (label, value) = m.split_once(op).unwrap();
            out.push((label.trim().to_string(), op.to_string(), value.trim().trim_matches('"').to_string()));
        }
        start = end + 1;
    }
    out
}

/// A small PromQL scanner: enough to find metric names (outside strings), their label
/// matchers and the label lists of `by`, `without`, `on`, `ignoring`, `group_left/right`.
fn scan(expr: &str) -> Named {
    let chars: Vec<char> = expr.chars().collect();
    let mut named = Named::default();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':')
            || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == '$'))
        {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = skip_ws(i);
        let brace = next < chars.len() && chars[next] == '{';
        let paren = next < chars.len() && chars[next] == '(';
        if word.starts_with(PREFIX) {
            let mut found = Vec::new();
            if brace {
                let end = find_outside_quotes(&chars, next + 1, '}');
                found = matchers(&chars[next + 1..end]);
                i = end + 1;
            }
            named.selectors.push(Selector { name: word, matchers: found });
        } else if paren && ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
            let end = next + chars[next..].iter().position(|&c| c == ')').expect("a closing parenthesis");
            let inside: String = chars[next + 1..end].iter().collect();
            named.grouping.extend(inside.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_string));
            i = end + 1;
        }
    }
    named
}

/// The scrape as metric name → the label sets of its series.
fn series(scrape: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, labels) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').expect("closing brace");
                (&line[..open], &line[open + 1..close])
            }
            None => (line.split_whitespace().next().unwrap(), ""),
        };
        let mut set = BTreeMap::new();
        // Label values of this service never hold `",`; a split on it is exact here.
        for pair in labels.split("\",").map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            set.insert(k.to_string(), v.trim_matches('"').to_string());
        }
        out.entry(name.to_string()).or_default().push(set);
    }
    out
}

/// Every expression of the alert rules, by alert name; checks each rule's shape on the way.
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("ops/prometheus/alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut out = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert").to_string();
            assert!(alert.starts_with("CapydbAuthSync"), "{alert}");
            for field in ["expr", "for"] {
                assert!(rule[field].as_str().is_some(), "{alert}: {field}");
            }
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["critical", "warning", "info"].contains(&severity), "{alert}: severity {severity:?}");
            for field in ["summary", "description"] {
                assert!(rule["annotations"][field].as_str().is_some_and(|s| !s.is_empty()), "{alert}: {field}");
            }
            out.push((alert, rule["expr"].as_str().unwrap().to_string()));
        }
    }
    assert!(out.len() >= 4, "{out:?}");
    out
}

/// Every query of the dashboard, by panel title; checks each panel's shape on the way.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("ops/grafana/capydb-auth-sync.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(ids.insert(panel["id"].as_i64().expect("an id")), "unique panel ids");
        let title = panel["title"].as_str().expect("a title").to_string();
        assert!(panel["gridPos"]["w"].as_i64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().filter(|e| !e.is_empty()).expect("an expr").to_string()));
        }
    }
    assert!(out.len() >= 10);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_name_only_series_the_server_exports() {
    let clerk = FakeClerk::start(FakeClerkConfig { users: 30, rate_limit: None, ..Default::default() }).await.unwrap();
    let control = new_control_db().await;
    let mut control_proxy = TcpProxy::start(pg_addr(&control)).await;
    let app = TestApp::spawn_with(TestOptions {
        control_url: Some(control_proxy.url_through(&control)),
        clerk_url: Some(clerk.url()),
        tweak: Box::new(|s| {
            s.clerk.page_size = 10;
            s.ingest.metrics_refresh = Duration::from_millis(200);
            s.ingest.inbox_max_per_project = 1;
            s.ingest.apply_timeout = Duration::from_millis(1000);
        }),
        ..Default::default()
    })
    .await;
    let mut project_proxy = TcpProxy::start(pg_addr(&app.project_url)).await;
    let whsec = new_whsec();

    // A backfill that meets a 429 from Clerk on its way.
    clerk.inject_fault(Fault::Status(429));
    app.client
        .configure_integration("dash", Provider::Clerk)
        .database_url(project_proxy.url_through(&app.project_url))
        .secret_key(clerk.secret_key())
        .webhook_signing_secret(whsec.clone())
        .await
        .unwrap();
    assert_eq!(app.wait_backfill_done("dash").await.state, BackfillState::Succeeded as i32);

    // Deliveries: applied, rejected, malformed.
    let user = json!({"id": "user_dash", "object": "user", "created_at": 1, "updated_at": 1,
                      "email_addresses": [], "primary_email_address_id": null});
    assert_eq!(app.send_clerk("dash", &whsec, &clerk_event("user.created", user.clone(), 1)).await.0, 200);
    assert_eq!(app.send_clerk("dash", &new_whsec(), &clerk_event("user.created", user.clone(), 1)).await.0, 401);
    assert_eq!(app.send_clerk("dash", &whsec, "not json").await.0, 400);
    // The project database goes away: one delivery parks, the next finds the inbox full.
    project_proxy.cut().await;
    let later = clerk_event("user.updated", json!({"id": "user_dash", "object": "user", "updated_at": 2}), 2);
    assert_eq!(app.send_clerk("dash", &whsec, &later).await.0, 202);
    assert_eq!(app.send_clerk("dash", &whsec, &later).await.0, 503);
    project_proxy.restore().await;
    eventually("the inbox drains", || async { (app.webhook_stats("dash").await.queued == 0).then_some(()) }).await;
    // The control database goes away for a moment: the API says so, and the error is counted.
    control_proxy.cut().await;
    let err = app.client_with_token(Some(TEST_TOKEN)).list_integrations(None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    control_proxy.restore().await;

    let scrape = eventually("the per-integration metrics show the project", || async {
        let text = app.metrics().await;
        text.lines()
            .any(|l| l.starts_with("capydb_auth_sync_integration_webhooks_total{") && l.contains("project_id=\"dash\""))
            .then_some(text)
    })
    .await;
    let exported = series(&scrape);

    // The latency histogram is a histogram, with its buckets.
    let buckets = &exported["capydb_auth_sync_webhook_duration_seconds_bucket"];
    for le in ["0.001", "15", "+Inf"] {
        assert!(buckets.iter().any(|s| s.get("le").map(String::as_str) == Some(le)), "le={le}");
    }
    assert!(scrape.contains("# TYPE capydb_auth_sync_webhook_duration_seconds histogram"));
    // The per-integration series carry the project, never a user.
    let ours = exported["capydb_auth_sync_integration_webhooks_total"]
        .iter()
        .filter(|s| s.get("project_id").map(String::as_str) == Some("dash"))
        .map(|s| s["outcome"].clone())
        .collect::<BTreeSet<_>>();
    assert!(ours.contains("rejected") && ours.contains("applied"), "{ours:?}");
    assert!(!scrape.contains("user_dash"), "no per-user label");

    let mut checked = 0;
    for (source, name, expr) in alert_expressions()
        .into_iter()
        .map(|(n, e)| ("alert", n, e))
        .chain(dashboard_expressions().into_iter().map(|(n, e)| ("panel", n, e)))
    {
        let named = scan(&expr);
        assert!(!named.selectors.is_empty(), "{source} {name} names no capydb_auth_sync_ metric: {expr}");
        let mut labels_in_expr = BTreeSet::new();
        for sel in &named.selectors {
            let Some(sets) = exported.get(&sel.name) else {
                panic!("{source} {name}: {} is not exported\n{expr}\n{scrape}", sel.name);
            };
            labels_in_expr.extend(sets.iter().flat_map(|s| s.keys().cloned()));
            for (label, op, value) in &sel.matchers {
                assert!(
                    sets.iter().any(|s| s.contains_key(label)),
                    "{source} {name}: {}{{{label}}} is never set",
                    sel.name
                );
                if op == "=" {
                    assert!(
                        sets.iter().any(|s| s.get(label) == Some(value)),
                        "{source} {name}: no {}{{{label}=\"{value}\"}} series\n{scrape}",
                        sel.name
                    );
                }
            }
            checked += 1;
        }
        for label in &named.grouping {
            assert!(labels_in_expr.contains(label), "{source} {name}: no series of {expr} has the label {label}");
        }
    }
    assert!(checked >= 20, "{checked}");
    assert_no_leaks(&app, &[&whsec, clerk.secret_key()]).await;
}

#[test]
fn the_scanner_finds_metrics_matchers_and_grouping_labels_outside_strings() {
    let named = scan(
        r#"max by (project_id, provider) (increase(capydb_auth_sync_x_total{outcome="rejected", a!~"b,c"}[30m]))
           and on (project_id) capydb_auth_sync_y == 1 or label_replace(vector(0), "l", "capydb_auth_sync_z", "", "")
           # capydb_auth_sync_in_a_comment"#,
    );
    let names: Vec<_> = named.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["capydb_auth_sync_x_total", "capydb_auth_sync_y"]);
    assert_eq!(
        named.selectors[0].matchers,
        [("outcome".into(), "=".into(), "rejected".into()), ("a".into(), "!~".into(), "b,c".into())]
    );
    assert_eq!(named.grouping, BTreeSet::from(["project_id".to_string(), "provider".to_string()]));
}
