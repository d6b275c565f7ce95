//! Owns [`AuthSyncClient`], the typed wrapper around the generated tonic client: connecting
//! (plain or TLS, eager or lazy), the `authorization: Bearer <token>` interceptor, per-call
//! deadlines, and the retry policy (only `UNAVAILABLE`, plus `DEADLINE_EXCEEDED` for
//! idempotent reads, with a small exponential backoff).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::{Stream, TryStreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::error::ClientError;
use crate::pb::auth_sync_service_client::AuthSyncServiceClient;
use crate::pb::{
    BackfillJob, ConfigureIntegrationRequest, Credentials, DeleteIntegrationRequest, GetSyncStatusRequest, Integration,
    ListIntegrationsRequest, Provider, RunBackfillRequest, SyncStatus, WatchBackfillRequest,
};

/// The default gRPC endpoint (the server's default `GRPC_ADDR`).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// The generated client with the bearer-token interceptor, as returned by
/// [`AuthSyncClient::raw`]. Calls made through it get the token but no deadline and no retries.
pub type RawClient = AuthSyncServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// How to reach the service.
#[derive(Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port` (a bare `host:port` means `http://`).
    pub endpoint: String,
    /// Admin token, sent as `authorization: Bearer <token>` on every call. `None` (or empty)
    /// sends no header.
    pub token: Option<String>,
    /// Limit on establishing the connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Deadline of each unary call attempt (sent as `grpc-timeout`). Default 30 s. Not applied
    /// to `watch_backfill`, which runs as long as the backfill.
    pub request_timeout: Duration,
    /// Extra attempts after a retryable failure. Default 3.
    pub retries: u32,
    /// PEM CA certificate(s) trusted for an `https://` endpoint instead of the web PKI roots
    /// (a service whose certificate comes from a private CA).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and private key, presented to a service that requires
    /// client certificates (mTLS).
    pub tls_identity: Option<TlsIdentity>,
}

/// A client certificate and its key (PEM), for mTLS.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults with the given endpoint and no token.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig { endpoint: endpoint.into(), ..ClientConfig::default() }
    }

    /// Sets the admin token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the limit on establishing the connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the deadline of each unary call attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// use capydb_auth_sync_client::ClientConfig;
    ///
    /// let config = ClientConfig::new("https://auth-sync.internal:50051")
    ///     .with_token("admin-token")
    ///     .with_connect_timeout(Duration::from_secs(2))
    ///     .with_request_timeout(Duration::from_secs(10))
    ///     .with_retries(2);
    /// assert_eq!(config.request_timeout, Duration::from_secs(10));
    /// ```
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how many extra attempts a retryable failure gets (0: none).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Trusts these PEM CA certificate(s) for an `https://` endpoint, instead of the web PKI.
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Presents this PEM certificate chain and key to a service that requires client
    /// certificates (mTLS).
    pub fn with_client_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.tls_identity = Some(TlsIdentity { cert_pem: cert_pem.into(), key_pem: key_pem.into() });
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            tls_ca_pem: None,
            tls_identity: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(|_| "<pem>"))
            .field("tls_identity", &self.tls_identity)
            .finish()
    }
}

/// Adds `authorization: Bearer <token>` to every request (marked sensitive, so it is never
/// shown by `Debug` of the metadata).
#[derive(Clone, Default)]
pub struct BearerInterceptor {
    value: Option<MetadataValue<Ascii>>,
}

impl BearerInterceptor {
    /// An interceptor for `token` (`None` or empty: no header).
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let value = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let mut v: MetadataValue<Ascii> =
                    format!("Bearer {t}").parse().map_err(|_| ClientError::InvalidToken)?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(BearerInterceptor { value })
    }
}

impl fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerInterceptor").field("token", &self.value.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Typed client of `AuthSyncService`. Cheap to clone (clones share one HTTP/2 connection).
#[derive(Clone, Debug)]
pub struct AuthSyncClient {
    raw: RawClient,
    endpoint: String,
    request_timeout: Duration,
    retries: u32,
}

/// Whether a call may be retried after `DEADLINE_EXCEEDED` (only reads that change nothing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    Read,
    Write,
}

impl AuthSyncClient {
    /// Connects now; fails with [`ClientError::Connect`] when the endpoint is unreachable.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let (endpoint, display) = build_endpoint(&config)?;
        let interceptor = BearerInterceptor::new(config.token.as_deref())?;
        let channel =
            endpoint.connect().await.map_err(|source| ClientError::Connect { endpoint: display.clone(), source })?;
        Ok(Self::from_channel(channel, interceptor, display, &config))
    }

    /// Connects on first use (connection failures then surface as `UNAVAILABLE` and are
    /// retried like any other). Must be called inside a Tokio runtime.
    pub fn connect_lazy(config: ClientConfig) -> Result<Self, ClientError> {
        let (endpoint, display) = build_endpoint(&config)?;
        let interceptor = BearerInterceptor::new(config.token.as_deref())?;
        let channel = endpoint.connect_lazy();
        Ok(Self::from_channel(channel, interceptor, display, &config))
    }

    fn from_channel(channel: Channel, interceptor: BearerInterceptor, endpoint: String, config: &ClientConfig) -> Self {
        AuthSyncClient {
            raw: AuthSyncServiceClient::with_interceptor(channel, interceptor),
            endpoint,
            request_timeout: config.request_timeout,
            retries: config.retries,
        }
    }

    /// The endpoint this client talks to (userinfo, if any, removed).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The generated client (with the token interceptor; no deadline, no retries).
    pub fn raw(&self) -> RawClient {
        self.raw.clone()
    }

    /// `ConfigureIntegration`: creates or updates the integration of `(project_id, provider)`.
    /// Returns a builder: set what changes, then `.await` it (or call
    /// [`ConfigureIntegration::send`]). Fields left unset keep their stored value, so a webhook
    /// secret can be added later without resending the secret key. Not retried after a timeout
    /// (it is a write).
    ///
    /// ```no_run
    /// # use capydb_auth_sync_client::{AuthSyncClient, ClientConfig, Provider};
    /// # async fn demo() -> Result<(), capydb_auth_sync_client::ClientError> {
    /// let client = AuthSyncClient::connect(ClientConfig::new("http://127.0.0.1:50051").with_token("…")).await?;
    /// let integration = client
    ///     .configure_integration("shop", Provider::Clerk)
    ///     .database_url("postgres://app:pw@db:5432/shop")
    ///     .secret_key(std::env::var("CLERK_SECRET_KEY").unwrap_or_default())
    ///     .await?;
    /// println!("give Clerk this webhook URL: {}", integration.webhook_receiver);
    ///
    /// // Later: add the webhook signing secret; the key and database stay as they are.
    /// client.configure_integration("shop", Provider::Clerk).webhook_signing_secret("whsec_…").await?;
    /// # Ok(()) }
    /// ```
    pub fn configure_integration(&self, project_id: impl Into<String>, provider: Provider) -> ConfigureIntegration<'_> {
        ConfigureIntegration {
            client: self,
            request: ConfigureIntegrationRequest {
                project_id: project_id.into(),
                provider: provider as i32,
                credentials: Some(Credentials::default()),
                ..Default::default()
            },
        }
    }

    /// `ConfigureIntegration` with a request built by the caller (the generated message).
    /// [`AuthSyncClient::configure_integration`] is the usual way.
    pub async fn configure_raw_request(
        &self,
        request: ConfigureIntegrationRequest,
    ) -> Result<Integration, ClientError> {
        let resp =
            self.unary(Idempotency::Write, request, |mut c, r| async move { c.configure_integration(r).await }).await?;
        resp.integration.ok_or(ClientError::MissingField("integration"))
    }

    /// `RunBackfill`: starts a backfill (or returns the one already queued or running).
    /// `FAILED_PRECONDITION` ([`ClientError::FailedPrecondition`]) for webhook-only providers.
    ///
    /// ```no_run
    /// # use capydb_auth_sync_client::{AuthSyncClient, Provider};
    /// # async fn demo(client: AuthSyncClient) -> Result<(), capydb_auth_sync_client::ClientError> {
    /// let job = client.run_backfill("shop", Provider::Clerk).await?;
    /// println!("backfill {} is {}", job.id, capydb_auth_sync_client::display::backfill_state_str(job.state));
    /// # Ok(()) }
    /// ```
    pub async fn run_backfill(
        &self,
        project_id: impl Into<String>,
        provider: Provider,
    ) -> Result<BackfillJob, ClientError> {
        let request = RunBackfillRequest { project_id: project_id.into(), provider: provider as i32 };
        let resp = self.unary(Idempotency::Write, request, |mut c, r| async move { c.run_backfill(r).await }).await?;
        resp.job.ok_or(ClientError::MissingField("job"))
    }

    /// `GetSyncStatus`. `provider` may be `Provider::Unspecified` when the project has exactly
    /// one integration. A read: retried after `UNAVAILABLE` and `DEADLINE_EXCEEDED`.
    ///
    /// ```no_run
    /// # use capydb_auth_sync_client::{AuthSyncClient, ClientError, Provider};
    /// # async fn demo(client: AuthSyncClient) -> Result<(), ClientError> {
    /// match client.get_sync_status("shop", Provider::Unspecified).await {
    ///     Ok(status) => println!("{} ({} users)", status.verdict, status.users_total),
    ///     Err(ClientError::NotFound(_)) => println!("shop has no integration yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_sync_status(
        &self,
        project_id: impl Into<String>,
        provider: Provider,
    ) -> Result<SyncStatus, ClientError> {
        let request = GetSyncStatusRequest { project_id: project_id.into(), provider: provider as i32 };
        let resp = self.unary(Idempotency::Read, request, |mut c, r| async move { c.get_sync_status(r).await }).await?;
        resp.status.ok_or(ClientError::MissingField("status"))
    }

    /// `ListIntegrations`, of one project or (with `None` / `Some("")`) of all. A read.
    ///
    /// ```no_run
    /// # use capydb_auth_sync_client::AuthSyncClient;
    /// # async fn demo(client: AuthSyncClient) -> Result<(), capydb_auth_sync_client::ClientError> {
    /// for i in client.list_integrations(None).await? {
    ///     println!("{} {}", i.project_id, capydb_auth_sync_client::display::provider_str(i.provider));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_integrations(&self, project_id: Option<&str>) -> Result<Vec<Integration>, ClientError> {
        let request = ListIntegrationsRequest { project_id: project_id.unwrap_or_default().to_string() };
        let resp =
            self.unary(Idempotency::Read, request, |mut c, r| async move { c.list_integrations(r).await }).await?;
        Ok(resp.integrations)
    }

    /// `DeleteIntegration`; returns the integration as it was before deletion. The users table
    /// and its rows stay in place.
    ///
    /// ```no_run
    /// # use capydb_auth_sync_client::{AuthSyncClient, Provider};
    /// # async fn demo(client: AuthSyncClient) -> Result<(), capydb_auth_sync_client::ClientError> {
    /// let gone = client.delete_integration("shop", Provider::Clerk).await?;
    /// println!("stopped syncing into {}", gone.database_target);
    /// # Ok(()) }
    /// ```
    pub async fn delete_integration(
        &self,
        project_id: impl Into<String>,
        provider: Provider,
    ) -> Result<Integration, ClientError> {
        let request = DeleteIntegrationRequest { project_id: project_id.into(), provider: provider as i32 };
        let resp =
            self.unary(Idempotency::Write, request, |mut c, r| async move { c.delete_integration(r).await }).await?;
        resp.integration.ok_or(ClientError::MissingField("integration"))
    }

    /// `WatchBackfill`: a stream of job snapshots that ends after a terminal state. Opening the
    /// stream is retried on `UNAVAILABLE`; errors after that end up in the stream. No deadline.
    ///
    /// ```no_run
    /// # use capydb_auth_sync_client::{AuthSyncClient, Provider};
    /// use futures::TryStreamExt as _;
    /// # async fn demo(client: AuthSyncClient) -> Result<(), capydb_auth_sync_client::ClientError> {
    /// let mut jobs = client.watch_backfill("shop", Provider::Clerk).await?;
    /// while let Some(job) = jobs.try_next().await? {
    ///     println!("{} of {} users fetched", job.users_fetched, job.users_expected);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch_backfill(
        &self,
        project_id: impl Into<String>,
        provider: Provider,
    ) -> Result<impl Stream<Item = Result<BackfillJob, ClientError>> + Send + Unpin + 'static, ClientError> {
        let request = WatchBackfillRequest { project_id: project_id.into(), provider: provider as i32 };
        let mut attempt = 0;
        loop {
            let mut raw = self.raw.clone();
            match raw.watch_backfill(tonic::Request::new(request.clone())).await {
                Ok(resp) => return Ok(resp.into_inner().map_err(ClientError::from)),
                Err(status) if status.code() == Code::Unavailable && attempt < self.retries => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(ClientError::from(status)),
            }
        }
    }

    /// One unary call with a deadline per attempt and the retry policy.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        idempotency: Idempotency,
        request: Req,
        mut call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: FnMut(RawClient, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(self.request_timeout);
            let status = match call(self.raw.clone(), req).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => normalize_timeout(status, self.request_timeout),
            };
            let retryable = match status.code() {
                Code::Unavailable => true,
                Code::DeadlineExceeded => idempotency == Idempotency::Read,
                _ => false,
            };
            if !retryable || attempt >= self.retries {
                return Err(ClientError::from(status));
            }
            tracing::debug!(
                code = ?status.code(),
                attempt = attempt + 1,
                "retrying capydb-auth-sync call"
            );
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// A `ConfigureIntegration` call being built, from [`AuthSyncClient::configure_integration`].
/// Unset fields keep their stored value. `.await` it or call [`ConfigureIntegration::send`].
/// `Debug` never shows the secrets or the database URL.
#[must_use = "a ConfigureIntegration does nothing until it is awaited or sent"]
pub struct ConfigureIntegration<'a> {
    client: &'a AuthSyncClient,
    request: ConfigureIntegrationRequest,
}

impl ConfigureIntegration<'_> {
    /// The project's Postgres URL (`postgres://user:pass@host:5432/db?sslmode=require`).
    /// Required the first time.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.request.database_url = url.into();
        self
    }

    /// The Clerk Backend API secret key (`sk_live_…` / `sk_test_…`).
    pub fn secret_key(mut self, key: impl Into<String>) -> Self {
        self.credentials().secret_key = key.into();
        self
    }

    /// The webhook secret: Clerk's signing secret (`whsec_…`), or the Auth0 / Better Auth
    /// shared secret (at least 16 characters).
    pub fn webhook_signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.credentials().webhook_signing_secret = secret.into();
        self
    }

    /// The request as it will be sent.
    pub fn request(&self) -> &ConfigureIntegrationRequest {
        &self.request
    }

    /// Sends it; returns the integration as stored.
    pub async fn send(self) -> Result<Integration, ClientError> {
        self.client.configure_raw_request(self.request).await
    }

    fn credentials(&mut self) -> &mut Credentials {
        self.request.credentials.get_or_insert_with(Credentials::default)
    }
}

impl<'a> std::future::IntoFuture for ConfigureIntegration<'a> {
    type Output = Result<Integration, ClientError>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl fmt::Debug for ConfigureIntegration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigureIntegration").field("request", &self.request).finish()
    }
}

/// Builds the tonic endpoint; returns it with the endpoint string to show in messages.
fn build_endpoint(config: &ClientConfig) -> Result<(Endpoint, String), ClientError> {
    let raw = config.endpoint.trim();
    let uri = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let display = strip_userinfo(&uri);
    let invalid = |reason: String| ClientError::InvalidEndpoint { endpoint: display.clone(), reason };
    let scheme = uri.split("://").next().unwrap_or_default().to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(invalid(format!("unsupported scheme {scheme:?} (use http:// or https://)")));
    }
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .user_agent(concat!("capydb-auth-sync-client/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| invalid(e.to_string()))?;
    if scheme == "https" {
        let mut tls = match &config.tls_ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let Some(id) = &config.tls_identity {
            tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| invalid(e.to_string()))?;
    } else if config.tls_ca_pem.is_some() || config.tls_identity.is_some() {
        return Err(invalid("a CA certificate or client identity needs an https:// endpoint".into()));
    }
    Ok((endpoint, display))
}

/// `scheme://user:pass@host` → `scheme://host`, so endpoints can be printed.
fn strip_userinfo(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => uri.to_string(),
    }
}

/// tonic reports its own client-side deadline as `CANCELLED: Timeout expired`; report it as
/// what it is.
fn normalize_timeout(status: tonic::Status, timeout: Duration) -> tonic::Status {
    if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
        tonic::Status::deadline_exceeded(format!("no response within {:.1} s", timeout.as_secs_f64()))
    } else {
        status
    }
}

/// 100 ms, 200 ms, 400 ms, … capped at 2 s, plus up to 25 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1u64 << attempt.min(5)).min(2_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let jitter = nanos % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(strip_userinfo("http://a:b@host:1/x"), "http://host:1/x");
        assert_eq!(strip_userinfo("http://host:1"), "http://host:1");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= Duration::from_millis(100));
        assert!(backoff(0) <= Duration::from_millis(125));
        assert!(backoff(2) >= Duration::from_millis(400));
        assert!(backoff(30) <= Duration::from_millis(2_500));
    }

    #[test]
    fn debug_never_shows_token() {
        let cfg = ClientConfig::new("http://h:1").with_token("sekrit-token");
        assert!(!format!("{cfg:?}").contains("sekrit"));
        let i = BearerInterceptor::new(Some("sekrit-token")).unwrap();
        assert!(!format!("{i:?}").contains("sekrit"));
    }

    #[tokio::test]
    async fn configure_builder_sets_fields_and_its_debug_hides_secrets() {
        let client = AuthSyncClient::connect_lazy(ClientConfig::new("http://127.0.0.1:9")).unwrap();
        let call = client
            .configure_integration("p1", Provider::Clerk)
            .database_url("postgres://u:hunter2@db/app")
            .secret_key("sk_test_sekrit")
            .webhook_signing_secret("whsec_c2VrcmV0");
        let req = call.request();
        assert_eq!((req.project_id.as_str(), req.provider), ("p1", Provider::Clerk as i32));
        assert_eq!(req.database_url, "postgres://u:hunter2@db/app");
        let creds = req.credentials.as_ref().unwrap();
        assert_eq!(
            (creds.secret_key.as_str(), creds.webhook_signing_secret.as_str()),
            ("sk_test_sekrit", "whsec_c2VrcmV0")
        );
        let debug = format!("{call:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("sekrit") && !debug.contains("c2VrcmV0"), "{debug}");
        assert!(debug.contains("<redacted>") && debug.contains("p1"), "{debug}");
    }

    #[test]
    fn invalid_token_error_hides_token() {
        let err = BearerInterceptor::new(Some("bad\ntoken-sekrit")).unwrap_err();
        assert!(!err.to_string().contains("sekrit"));
    }

    #[test]
    fn bad_scheme_is_rejected() {
        let err = build_endpoint(&ClientConfig::new("ftp://h:1")).unwrap_err();
        assert!(matches!(err, ClientError::InvalidEndpoint { .. }), "{err}");
        assert!(build_endpoint(&ClientConfig::new("127.0.0.1:50051")).is_ok());
    }

    #[tokio::test]
    async fn interceptor_adds_bearer_header() {
        let mut i = BearerInterceptor::new(Some(" tok ")).unwrap();
        let req = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap().to_str().unwrap(), "Bearer tok");
        let mut none = BearerInterceptor::new(Some("")).unwrap();
        let req = none.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_a_connect_error() {
        // Port 9 on loopback: nothing listens there.
        let cfg = ClientConfig {
            connect_timeout: Duration::from_millis(500),
            ..ClientConfig::new("http://127.0.0.1:9").with_token("sekrit-token")
        };
        let err = AuthSyncClient::connect(cfg).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.to_string().starts_with("cannot connect to http://127.0.0.1:9"), "{err}");
        assert!(!err.to_string().contains("sekrit"));
    }
}
