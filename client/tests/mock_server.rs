//! End-to-end tests of `AuthSyncClient` and the `capydb-auth-sync-admin` binary against an
//! in-process mock of `AuthSyncService` (hand-written, since the client crate generates no
//! server code): bearer token, retry policy, deadlines, WatchBackfill, CLI output and exit codes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use capydb_auth_sync_client::*;
use futures::StreamExt;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::{Code, Status};

const TOKEN: &str = "tok-sekrit-123";

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Default)]
struct State {
    auth_headers: Vec<Option<String>>,
    calls: HashMap<String, u32>,
    /// Method name → (failures left, code).
    fail: HashMap<String, (u32, Code)>,
    /// Method name → delay before answering.
    delay: HashMap<String, Duration>,
    /// What WatchBackfill streams.
    watch: Vec<BackfillJob>,
    /// Base URL of the integrations' `webhook_receiver` in ListIntegrations (default capydb.dev).
    receiver_base: Option<String>,
}

#[derive(Clone, Default)]
struct Mock(Arc<Mutex<State>>);

impl NamedService for Mock {
    const NAME: &'static str = "capydb.auth_sync.v1.AuthSyncService";
}

impl Mock {
    fn calls(&self, method: &str) -> u32 {
        self.0.lock().unwrap().calls.get(method).copied().unwrap_or(0)
    }
    fn fail(&self, method: &str, times: u32, code: Code) {
        self.0.lock().unwrap().fail.insert(method.to_string(), (times, code));
    }
    fn delay(&self, method: &str, d: Duration) {
        self.0.lock().unwrap().delay.insert(method.to_string(), d);
    }
    fn set_watch(&self, jobs: Vec<BackfillJob>) {
        self.0.lock().unwrap().watch = jobs;
    }

    /// Common pre-processing: record, authenticate, injected failures and delays.
    async fn enter<T>(&self, method: &str, req: &tonic::Request<T>) -> Result<(), Status> {
        let auth = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        let (failure, delay) = {
            let mut st = self.0.lock().unwrap();
            st.auth_headers.push(auth.clone());
            *st.calls.entry(method.to_string()).or_default() += 1;
            let failure = match st.fail.get_mut(method) {
                Some((left, code)) if *left > 0 => {
                    *left -= 1;
                    Some(*code)
                }
                _ => None,
            };
            (failure, st.delay.get(method).copied())
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("missing or invalid admin token"));
        }
        if let Some(code) = failure {
            return Err(Status::new(code, format!("injected {method} failure")));
        }
        Ok(())
    }
}

fn integration(project: &str, provider: i32) -> Integration {
    Integration {
        id: format!("int_{project}"),
        project_id: project.to_string(),
        provider,
        state: IntegrationState::Active as i32,
        has_credentials: true,
        has_webhook_secret: true,
        secret_key_hint: "sk_test_…a1b2".into(),
        webhook_receiver: format!("https://capydb.dev/api/capydb/v1/integrations/clerk/webhook/{project}"),
        created_at: Some(prost_types::Timestamp { seconds: 1_717_000_000, nanos: 0 }),
        database_target: "db:5432/app".into(),
        mode: SyncMode::Live as i32,
        ..Default::default()
    }
}

fn job(state: BackfillState, fetched: i64) -> BackfillJob {
    BackfillJob {
        id: "bf_1".into(),
        project_id: "p1".into(),
        state: state as i32,
        pages: fetched / 100,
        users_fetched: fetched,
        users_written: fetched,
        users_expected: 300,
        provider: Provider::Clerk as i32,
        error: if state == BackfillState::Failed {
            "Clerk rejected the secret key (401)".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

fn not_found(project: &str) -> Status {
    Status::not_found(format!("no clerk integration for project {project}"))
}

/// Adapts a one-shot async closure to the tower service tonic's `Grpc` wants.
struct Once<F>(Option<F>);

impl<F, Req, Resp, Fut> Service<tonic::Request<Req>> for Once<F>
where
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
{
    type Response = tonic::Response<Resp>;
    type Error = Status;
    type Future = BoxFut<Result<tonic::Response<Resp>, Status>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        Box::pin((self.0.take().expect("called once"))(req))
    }
}

fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, f: F) -> BoxFut<Result<http::Response<Body>, Infallible>>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
        Ok(grpc.unary(Once(Some(f)), req).await)
    })
}

type JobStream = Pin<Box<dyn futures::Stream<Item = Result<BackfillJob, Status>> + Send>>;

impl Service<http::Request<Body>> for Mock {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let m = self.clone();
        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        match method.as_str() {
            "ConfigureIntegration" => unary(req, move |r: tonic::Request<ConfigureIntegrationRequest>| async move {
                m.enter("ConfigureIntegration", &r).await?;
                let r = r.into_inner();
                let mut i = integration(&r.project_id, r.provider);
                i.has_webhook_secret = r.credentials.is_some_and(|c| !c.webhook_signing_secret.is_empty());
                Ok(tonic::Response::new(ConfigureIntegrationResponse { integration: Some(i) }))
            }),
            "RunBackfill" => unary(req, move |r: tonic::Request<RunBackfillRequest>| async move {
                m.enter("RunBackfill", &r).await?;
                if r.get_ref().provider == Provider::Auth0 as i32 {
                    return Err(Status::failed_precondition("auth0 is webhook-only: there is nothing to backfill"));
                }
                Ok(tonic::Response::new(RunBackfillResponse { job: Some(job(BackfillState::Queued, 0)) }))
            }),
            "GetSyncStatus" => unary(req, move |r: tonic::Request<GetSyncStatusRequest>| async move {
                m.enter("GetSyncStatus", &r).await?;
                let r = r.into_inner();
                if r.project_id == "nope" {
                    return Err(not_found(&r.project_id));
                }
                Ok(tonic::Response::new(GetSyncStatusResponse {
                    status: Some(SyncStatus {
                        integration: Some(integration(&r.project_id, Provider::Clerk as i32)),
                        mode: SyncMode::Live as i32,
                        verdict: "Healthy: webhooks arrive and the last backfill succeeded.".into(),
                        webhooks: Some(WebhookStats { applied: 5, ..Default::default() }),
                        last_backfill: Some(job(BackfillState::Succeeded, 300)),
                        users_total: 42,
                        users_deleted: 2,
                        ..Default::default()
                    }),
                }))
            }),
            "ListIntegrations" => unary(req, move |r: tonic::Request<ListIntegrationsRequest>| async move {
                m.enter("ListIntegrations", &r).await?;
                let p = r.into_inner().project_id;
                let all =
                    vec![integration("p1", Provider::Clerk as i32), integration("p2", Provider::BetterAuth as i32)];
                let base = m.0.lock().unwrap().receiver_base.clone();
                let integrations = all
                    .into_iter()
                    .filter(|i| p.is_empty() || i.project_id == p)
                    .map(|mut i| {
                        if let Some(b) = &base {
                            i.webhook_receiver =
                                format!("{b}/api/capydb/v1/integrations/clerk/webhook/{}", i.project_id);
                        }
                        i
                    })
                    .collect();
                Ok(tonic::Response::new(ListIntegrationsResponse { integrations }))
            }),
            "DeleteIntegration" => unary(req, move |r: tonic::Request<DeleteIntegrationRequest>| async move {
                m.enter("DeleteIntegration", &r).await?;
                let r = r.into_inner();
                if r.project_id == "nope" {
                    return Err(not_found(&r.project_id));
                }
                Ok(tonic::Response::new(DeleteIntegrationResponse {
                    integration: Some(integration(&r.project_id, Provider::Clerk as i32)),
                }))
            }),
            "WatchBackfill" => Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::<BackfillJob, WatchBackfillRequest>::default());
                let svc = Once(Some(move |r: tonic::Request<WatchBackfillRequest>| async move {
                    m.enter("WatchBackfill", &r).await?;
                    let jobs = m.0.lock().unwrap().watch.clone();
                    let stream: JobStream = Box::pin(futures::stream::iter(jobs).then(|j| async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(j)
                    }));
                    Ok(tonic::Response::new(stream))
                }));
                Ok(grpc.server_streaming(svc, req).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Starts the mock on an ephemeral port; returns it and its endpoint URL.
async fn start() -> (Mock, String) {
    let mock = Mock::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = mock.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (mock, format!("http://{addr}"))
}

async fn client(endpoint: &str, retries: u32) -> AuthSyncClient {
    AuthSyncClient::connect(ClientConfig {
        retries,
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::new(endpoint).with_token(TOKEN)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sends_bearer_token_and_maps_responses() {
    let (mock, ep) = start().await;
    let c = client(&ep, 3).await;
    let list = c.list_integrations(None).await.unwrap();
    assert_eq!(list.len(), 2);
    let list = c.list_integrations(Some("p2")).await.unwrap();
    assert_eq!(list[0].provider, Provider::BetterAuth as i32);
    let st = c.get_sync_status("p1", Provider::Clerk).await.unwrap();
    assert_eq!(st.users_total, 42);
    let i = c
        .configure_raw_request(ConfigureIntegrationRequest {
            project_id: "p9".into(),
            provider: Provider::Clerk as i32,
            database_url: "postgres://u:pw@db/app".into(),
            credentials: Some(Credentials { secret_key: "sk_test_abc".into(), webhook_signing_secret: String::new() }),
        })
        .await
        .unwrap();
    assert_eq!(i.project_id, "p9");
    assert!(!i.has_webhook_secret);
    let headers = mock.0.lock().unwrap().auth_headers.clone();
    assert!(headers.iter().all(|h| h.as_deref() == Some("Bearer tok-sekrit-123")));

    // Without a token: UNAUTHENTICATED, not retried.
    let anon = AuthSyncClient::connect_lazy(ClientConfig::new(&ep)).unwrap();
    let err = anon.list_integrations(None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(mock.calls("ListIntegrations"), 3);
}

#[tokio::test]
async fn retries_unavailable_only() {
    let (mock, ep) = start().await;
    let c = client(&ep, 3).await;
    mock.fail("DeleteIntegration", 2, Code::Unavailable);
    c.delete_integration("p1", Provider::Clerk).await.unwrap();
    assert_eq!(mock.calls("DeleteIntegration"), 3);

    mock.fail("RunBackfill", 10, Code::Unavailable);
    let err = c.run_backfill("p1", Provider::Clerk).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(mock.calls("RunBackfill"), 4, "1 attempt + 3 retries");

    let err = c.delete_integration("nope", Provider::Clerk).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.to_string(), "NOT_FOUND: no clerk integration for project nope");
    assert_eq!(mock.calls("DeleteIntegration"), 4, "NOT_FOUND is not retried");

    for code in [Code::Internal, Code::FailedPrecondition, Code::Unknown, Code::ResourceExhausted] {
        mock.fail("ListIntegrations", 1, code);
        let before = mock.calls("ListIntegrations");
        assert_eq!(c.list_integrations(None).await.unwrap_err().code(), code);
        assert_eq!(mock.calls("ListIntegrations"), before + 1);
    }
}

#[tokio::test]
async fn deadline_exceeded_is_retried_only_for_reads() {
    let (mock, ep) = start().await;
    let c = client(&ep, 2).await;
    mock.fail("GetSyncStatus", 1, Code::DeadlineExceeded);
    c.get_sync_status("p1", Provider::Unspecified).await.unwrap();
    assert_eq!(mock.calls("GetSyncStatus"), 2);

    mock.fail("ListIntegrations", 1, Code::DeadlineExceeded);
    c.list_integrations(None).await.unwrap();
    assert_eq!(mock.calls("ListIntegrations"), 2);

    mock.fail("RunBackfill", 1, Code::DeadlineExceeded);
    let err = c.run_backfill("p1", Provider::Clerk).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(mock.calls("RunBackfill"), 1);

    mock.fail("ConfigureIntegration", 1, Code::DeadlineExceeded);
    let err = c.configure_raw_request(ConfigureIntegrationRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(mock.calls("ConfigureIntegration"), 1);
}

#[tokio::test]
async fn client_deadline_is_reported_as_deadline_exceeded() {
    let (mock, ep) = start().await;
    mock.delay("RunBackfill", Duration::from_millis(400));
    let c = AuthSyncClient::connect(ClientConfig {
        request_timeout: Duration::from_millis(100),
        retries: 3,
        ..ClientConfig::new(&ep).with_token(TOKEN)
    })
    .await
    .unwrap();
    let err = c.run_backfill("p1", Provider::Clerk).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(mock.calls("RunBackfill"), 1);
}

#[tokio::test]
async fn lazy_client_retries_until_the_server_is_up() {
    // Reserve a port, release it, and start the server there a bit later.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = AuthSyncClient::connect_lazy(ClientConfig::new(format!("http://{addr}")).with_token(TOKEN)).unwrap();
    let mock = Mock::default();
    let svc = mock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tonic::transport::Server::builder().add_service(svc).serve(addr).await.unwrap();
    });
    let list = c.list_integrations(None).await.unwrap();
    assert_eq!(list.len(), 2);
}

#[tokio::test]
async fn watch_backfill_streams_until_terminal() {
    let (mock, ep) = start().await;
    mock.set_watch(vec![
        job(BackfillState::Running, 100),
        job(BackfillState::Running, 200),
        job(BackfillState::Succeeded, 300),
    ]);
    let c = client(&ep, 3).await;
    let stream = c.watch_backfill("p1", Provider::Clerk).await.unwrap();
    let jobs: Vec<BackfillJob> = stream.map(|r| r.unwrap()).collect().await;
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[2].state, BackfillState::Succeeded as i32);

    mock.fail("WatchBackfill", 2, Code::Unavailable);
    let mut stream = c.watch_backfill("p1", Provider::Clerk).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(mock.calls("WatchBackfill"), 4);
}

// ---- the CLI binary ----

fn cli(ep: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync-admin"))
        .args(args)
        .env("CAPYDB_AUTH_SYNC_ENDPOINT", ep)
        .env("CAPYDB_AUTH_SYNC_ADMIN_TOKEN", TOKEN)
        .env_remove("CAPYDB_AUTH_SYNC_SECRET_KEY")
        .env_remove("CAPYDB_AUTH_SYNC_WEBHOOK_SECRET")
        .env_remove("CAPYDB_AUTH_SYNC_PROJECT_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "token leaked");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_end_to_end() {
    let (mock, ep) = start().await;
    let ep2 = ep.clone();
    let run = move |args: &'static [&'static str]| {
        let ep = ep2.clone();
        tokio::task::spawn_blocking(move || cli(&ep, args))
    };

    let (code, out, _) = run(&["list"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.starts_with("PROJECT"), "{out}");
    assert!(out.contains("p2") && out.contains("better_auth"), "{out}");

    let (code, out, _) = run(&["list", "--project", "p1", "--json"]).await.unwrap();
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["provider"], "clerk");
    assert_eq!(v[0]["created_at"], "2024-05-29T16:26:40Z");

    let (code, out, _) = run(&["status", "p1", "--provider", "clerk"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("active · live"), "{out}");
    assert!(out.contains("42 rows · 2 deleted"), "{out}");

    let (code, out, _) = run(&["status", "p1", "--json"]).await.unwrap();
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mode"], "live");
    assert_eq!(v["webhooks"]["applied"], 5);

    let (code, out, err) = run(&["status", "nope"]).await.unwrap();
    assert_eq!(code, 4, "NOT_FOUND has its own exit code");
    assert!(out.is_empty());
    assert_eq!(err.trim(), "error: NOT_FOUND: no clerk integration for project nope");

    let (code, _, err) = run(&["backfill", "p1", "--provider", "auth0"]).await.unwrap();
    assert_eq!(code, 6, "FAILED_PRECONDITION has its own exit code");
    assert!(err.starts_with("error: FAILED_PRECONDITION: auth0 is webhook-only"), "{err}");

    let (code, out, err) = run(&[
        "configure",
        "p1",
        "--provider",
        "clerk",
        "--secret-key",
        "sk_test_zzz",
        "--database-url",
        "postgres://u:pw@db/app",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("https://capydb.dev/api/capydb/v1/integrations/clerk/webhook/p1"), "{out}");
    assert!(!out.contains("sk_test_zzz") && !out.contains("pw@"), "{out}");

    let (code, out, _) = run(&["delete", "p1"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("stay in place"), "{out}");

    mock.set_watch(vec![job(BackfillState::Running, 100), job(BackfillState::Succeeded, 300)]);
    let (code, out, err) = run(&["backfill", "p1", "--watch"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");

    mock.set_watch(vec![job(BackfillState::Running, 100), job(BackfillState::Failed, 100)]);
    let (code, out, err) = run(&["backfill", "p1", "--watch", "--json"]).await.unwrap();
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "failed");
    assert!(err.contains("error: backfill bf_1 failed: Clerk rejected the secret key"), "{err}");

    mock.set_watch(vec![job(BackfillState::Running, 100)]);
    let (code, _, err) = run(&["watch", "p1"]).await.unwrap();
    assert_eq!(code, 5, "a watch cut short is the unavailable class");
    assert!(err.contains("ended the watch before the backfill finished"), "{err}");

    // Usage errors under --json are JSON too.
    let (code, _, err) = run(&["status", "--json"]).await.unwrap();
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    assert!(v["error"]["message"].as_str().unwrap().contains("<PROJECT>"), "{v}");

    // Shell completions need no server.
    let (code, out, _) = run(&["completions", "bash"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("capydb-auth-sync-admin") && out.contains("send-test-webhook"),
        "{}",
        &out[..200.min(out.len())]
    );
    let (code, _, err) = run(&["completions", "tcsh"]).await.unwrap();
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");

    // Wrong token: UNAUTHENTICATED, one line.
    let ep3 = ep.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_capydb-auth-sync-admin"))
            .args(["--endpoint", &ep3, "--token", "wrong-token", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.trim(),
        "error: UNAUTHENTICATED: check --token / CAPYDB_AUTH_SYNC_ADMIN_TOKEN: the service does not accept this admin token"
    );
    assert!(!err.contains("wrong-token"));
}

/// A stand-in webhook receiver (HTTP/1.1 by hand, one request per connection): records each
/// request's target and signature header, answers `status` with `body`.
async fn start_receiver(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<(String, bool)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before the headers ended");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < head_end + length {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before the body ended");
                buf.extend_from_slice(&chunk[..n]);
            }
            let target = head.lines().next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push((target, head.contains("svix-signature: v1,")));
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    (format!("http://{addr}"), seen)
}

/// Runs the CLI with owned arguments; returns (exit code, stdout, stderr).
async fn cli_owned(ep: &str, args: Vec<String>) -> (i32, String, String) {
    let ep = ep.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&ep, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn send_test_webhook_asks_for_the_receiver_and_makes_a_dry_run_by_default() {
    let (mock, ep) = start().await;
    let whsec = "whsec_dGVzdC1zZWNyZXQtMTIzNDU2Nzg5MA==".to_string();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = ["send-test-webhook", "p1", "--provider", "clerk", "--secret", whsec.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // A receiver that honours dry runs: asked from the server, `?dry_run=true`, success.
    let (base, seen) = start_receiver(200, r#"{"status":"applied","dry_run":true}"#).await;
    mock.0.lock().unwrap().receiver_base = Some(base.clone());
    let (code, out, err) = cli_owned(&ep, args(&[])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dry run: nothing is written"), "{out}");
    assert!(out.contains("HTTP 200"), "{out}");
    let (target, signed) = seen.lock().unwrap()[0].clone();
    assert_eq!(target, "/api/capydb/v1/integrations/clerk/webhook/p1?dry_run=true");
    assert!(signed, "the delivery is signed like Svix signs it");
    assert!(mock.calls("ListIntegrations") >= 1);

    // --write: no dry-run marker.
    let (code, out, err) = cli_owned(&ep, args(&["--write", "--json"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["http_status"], 200);
    assert_eq!(seen.lock().unwrap()[1].0, "/api/capydb/v1/integrations/clerk/webhook/p1");

    // A receiver that ignores the marker applied the event: that is reported, not hidden.
    let (base, _) = start_receiver(200, r#"{"status":"applied"}"#).await;
    mock.0.lock().unwrap().receiver_base = Some(base);
    let (code, _, err) = cli_owned(&ep, args(&[])).await;
    assert_eq!(code, 1);
    assert!(err.contains("does not support dry runs"), "{err}");

    // A refused signature: the unauthenticated class, and what to fix.
    let (base, _) = start_receiver(401, r#"{"error":"invalid signature"}"#).await;
    let url = format!("{base}/api/capydb/v1/integrations/clerk/webhook/p1");
    let (code, _, err) = cli_owned(&ep, args(&["--url", &url])).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--secret is not the webhook secret of the clerk integration"), "{err}");

    // No integration of that provider: not found, before anything is sent.
    let (code, _, err) = cli_owned(
        &ep,
        vec![
            "send-test-webhook".into(),
            "p1".into(),
            "--provider".into(),
            "auth0".into(),
            "--secret".into(),
            "0123456789abcdef0123".into(),
        ],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("has no auth0 integration"), "{err}");
    assert!(!err.contains(&whsec));
}
