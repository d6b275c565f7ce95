//! Issue 11: TLS to project databases (a private CA, `verify-ca` / `verify-full` as libpq),
//! the outbound policy for `database_url`, and TLS / mTLS on the gRPC listener. Certificates
//! come from a CA generated here with rcgen; the project database is a throwaway Postgres
//! cluster started with `ssl=on` and a certificate of that CA.
use capydb_auth_sync_client::{AuthSyncClient, ClientConfig, ClientError, ConfigureIntegrationRequest, Credentials};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use test_harness::*;
use tonic::Code;
use tonic_types::StatusExt;

/// A certificate authority of our own.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM private key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA.
    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// A throwaway Postgres cluster serving TLS with a certificate for `db.example` from `ca`
/// (and still accepting plaintext, so the test can set it up). Stopped and removed on drop.
struct TlsPostgres {
    dir: PathBuf,
    base_url: String,
}

impl TlsPostgres {
    async fn start(ca: &TestCa, names: &[&str]) -> TlsPostgres {
        let dir = repo_root().join("target").join(format!("test-pg-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let leaf = ca.leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
        write_private(&dir.join("server.crt"), &leaf.cert_pem);
        write_private(&dir.join("server.key"), &leaf.key_pem);
        let options = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        let started = dir.clone();
        let base_url = tokio::task::spawn_blocking(move || {
            capydb_auth_sync::local_postgres::start_cluster_with(&started, &options)
        })
        .await
        .unwrap()
        .expect("a TLS Postgres cluster");
        TlsPostgres { dir, base_url }
    }

    /// A new empty database on this cluster; returns its URL (no query string).
    async fn new_db(&self, name: &str) -> String {
        let admin = connect(&format!("{}/postgres", self.base_url)).await;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        format!("{}/{name}", self.base_url)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = capydb_auth_sync::local_postgres::stop_cluster(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &std::path::Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn request(project: &str, database_url: &str) -> ConfigureIntegrationRequest {
    ConfigureIntegrationRequest {
        project_id: project.into(),
        provider: capydb_auth_sync_client::Provider::Clerk as i32,
        database_url: database_url.into(),
        credentials: Some(Credentials { secret_key: String::new(), webhook_signing_secret: new_whsec() }),
    }
}

fn status_of(e: ClientError) -> tonic::Status {
    let text = e.to_string();
    e.into_status().unwrap_or_else(|| panic!("expected a gRPC status, got {text}"))
}

#[tokio::test]
async fn project_databases_verify_a_private_ca_and_the_host_name_like_libpq() {
    let ca = TestCa::new("capydb test CA");
    let pg = TlsPostgres::start(&ca, &["db.example"]).await;
    let ca_file = pg.dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let db = pg.new_db("project").await;
    let app = TestApp::spawn().await;

    // verify-ca: the chain is checked against the private CA, the host name (127.0.0.1, while
    // the certificate names db.example) is not.
    let verify_ca = format!("{db}?sslmode=verify-ca&sslrootcert={}", ca_file.display());
    let whsec = new_whsec();
    app.configure_clerk_on("vca", &whsec, &verify_ca).await;
    let body = clerk_event("user.created", serde_json::json!({"id": "user_vca", "object": "user", "updated_at": 1}), 1);
    assert_eq!(app.send_clerk("vca", &whsec, &body).await.0, 200);

    // verify-full to 127.0.0.1 with a certificate for db.example: refused, in our words.
    let wrong_name = format!("{db}?sslmode=verify-full&sslrootcert={}", ca_file.display());
    let status = status_of(app.client.configure_raw_request(request("vfull_wrong", &wrong_name)).await.unwrap_err());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS handshake failed"), "{}", status.message());
    assert!(status.message().contains("not valid for name"), "{}", status.message());

    // verify-full with the right name (the URL names db.example, hostaddr says where it is);
    // this time the CA arrives inline, URL-encoded, as the control plane sends it.
    let inline: String = percent_encoding::utf8_percent_encode(&ca.pem(), percent_encoding::NON_ALPHANUMERIC).collect();
    let port = db.rsplit(':').next().unwrap().split('/').next().unwrap();
    let right_name = format!(
        "postgres://postgres@db.example:{port}/project?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={inline}"
    );
    app.configure_clerk_on("vfull", &new_whsec(), &right_name).await;

    // A CA that did not sign the server's certificate: refused, for verify-ca too.
    let stranger = TestCa::new("another CA");
    let stranger_file = pg.dir.join("stranger.pem");
    std::fs::write(&stranger_file, stranger.pem()).unwrap();
    let untrusted = format!("{db}?sslmode=verify-ca&sslrootcert={}", stranger_file.display());
    let status = status_of(app.client.configure_raw_request(request("vca_bad", &untrusted)).await.unwrap_err());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS handshake failed"), "{}", status.message());

    // Without sslrootcert the verifying modes trust the web PKI only, not a private CA.
    let web_pki_only = format!("{db}?sslmode=verify-ca");
    let status = status_of(app.client.configure_raw_request(request("vca_web", &web_pki_only)).await.unwrap_err());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS handshake failed"), "{}", status.message());

    // Every connection the service holds to that cluster is encrypted.
    let probe = connect(&format!("{}/postgres", pg.base_url)).await;
    let (connections, encrypted): (i64, i64) = probe
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.application_name = 'capydb-auth-sync'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(connections > 0, "the service keeps pooled connections");
    assert_eq!(connections, encrypted);
    drop(app);
}

#[tokio::test]
async fn the_control_database_verifies_its_certificate_with_the_same_code() {
    let ca = TestCa::new("capydb control CA");
    let pg = TlsPostgres::start(&ca, &["127.0.0.1"]).await;
    let ca_file = pg.dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let control = pg.new_db("control").await;
    let url = format!("{control}?sslmode=verify-full&sslrootcert={}", ca_file.display());
    let app = TestApp::spawn_with(TestOptions { control_url: Some(url), ..Default::default() }).await;
    app.configure_clerk_webhooks("ctl_tls", &new_whsec()).await;
    assert_eq!(app.client.list_integrations(None).await.unwrap().len(), 1);
    drop(app);
}

#[tokio::test]
async fn a_loopback_database_url_is_a_field_violation_outside_dev_mode() {
    let app = TestApp::spawn_with(TestOptions {
        tweak: Box::new(|s| s.project_db.outbound = Arc::new(Default::default())),
        ..Default::default()
    })
    .await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    for url in [
        app.project_url.replace("postgres@", &format!("postgres:{password}@")),
        format!("postgres://postgres:{password}@localhost:5432/x"),
        format!("postgres://postgres:{password}@169.254.169.254:5432/x"),
        format!("postgres://postgres:{password}@%2Fvar%2Frun%2Fpostgresql/x"),
        format!("postgres://postgres:{password}@db.example:5432/x?hostaddr=127.0.0.1"),
    ] {
        let status = status_of(app.client.configure_raw_request(request("loop", &url)).await.unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        let violations = status.get_error_details().bad_request().expect("field violations").field_violations.clone();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "database_url");
        assert!(violations[0].description.contains("not allowed"), "{}", violations[0].description);
        assert!(!status.message().contains(&password));
    }
    assert!(app.client.list_integrations(None).await.unwrap().is_empty(), "nothing stored");
    assert_no_leaks(&app, &[&password]).await;
}

#[tokio::test]
async fn connection_errors_are_summarised_without_the_servers_text() {
    let app = TestApp::spawn().await;
    // A closed port, and a role the server does not know (its error names the role).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let role = format!("nosuchrole_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let addr = pg_addr(&app.project_url);
    let db = app.project_url.rsplit('/').next().unwrap();
    for (url, summary) in [
        (format!("postgres://postgres@127.0.0.1:{closed}/x?sslmode=disable"), "could not connect: connection refused"),
        (format!("postgres://{role}@{addr}/{db}?sslmode=disable"), "authentication failed"),
    ] {
        let status = status_of(app.client.configure_raw_request(request("err", &url)).await.unwrap_err());
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains(summary), "{}", status.message());
        assert!(!status.message().contains(&role), "{}", status.message());
        assert!(!status.message().contains("role"), "{}", status.message());
    }
}

/// A server with TLS on its gRPC listener (mTLS when `client_ca` is given), on a fresh control
/// database; returns the gRPC address and the stop signal.
async fn spawn_grpc_tls(
    server: &Leaf,
    client_ca: Option<String>,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    let keyring =
        capydb_auth_sync::crypto::Keyring::parse(&secrecy::SecretString::from(test_keyring_spec("k1"))).unwrap();
    let mut settings = capydb_auth_sync::config::Settings::new(
        secrecy::SecretString::from(new_control_db().await),
        keyring,
        vec![secrecy::SecretString::from(TEST_TOKEN.to_string())],
    );
    settings.grpc_tls = Some(capydb_auth_sync::config::GrpcTlsSettings {
        cert_pem: server.cert_pem.clone().into_bytes(),
        key_pem: secrecy::SecretString::from(server.key_pem.clone()),
        client_ca_pem: client_ca.map(String::into_bytes),
    });
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let run = capydb_auth_sync::app::run(
        settings,
        capydb_auth_sync::app::Listeners { grpc, http, metrics: None },
        stop.clone(),
    );
    let handle = tokio::spawn(async move { run.await.expect("server ran") });
    let http_client = reqwest::Client::new();
    eventually("the server is ready", || {
        let http_client = http_client.clone();
        async move {
            let r = http_client.get(format!("http://{http_addr}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    (grpc_addr, stop, handle)
}

fn tls_client(addr: std::net::SocketAddr, ca: &TestCa) -> ClientConfig {
    ClientConfig::new(format!("https://localhost:{}", addr.port()))
        .with_token(TEST_TOKEN)
        .with_ca_certificate(ca.pem())
        .with_connect_timeout(Duration::from_secs(5))
        .with_retries(0)
}

#[tokio::test]
async fn the_grpc_listener_serves_tls_and_refuses_plaintext() {
    let ca = TestCa::new("capydb grpc CA");
    let server = ca.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (addr, stop, handle) = spawn_grpc_tls(&server, None).await;

    let client = AuthSyncClient::connect(tls_client(addr, &ca)).await.expect("a TLS client connects");
    assert!(client.list_integrations(None).await.unwrap().is_empty());

    let plain = ClientConfig::new(format!("http://{addr}")).with_token(TEST_TOKEN).with_retries(0);
    let plain_result = match AuthSyncClient::connect(plain).await {
        Err(e) => Err(e),
        Ok(c) => c.list_integrations(None).await.map(drop),
    };
    assert!(plain_result.is_err(), "a plaintext client gets nothing");

    // A client that trusts only the web PKI does not trust our private CA.
    let untrusting =
        ClientConfig::new(format!("https://localhost:{}", addr.port())).with_token(TEST_TOKEN).with_retries(0);
    let untrusting_result = match AuthSyncClient::connect(untrusting).await {
        Err(e) => Err(e),
        Ok(c) => c.list_integrations(None).await.map(drop),
    };
    assert!(untrusting_result.is_err(), "the server certificate is verified");
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn with_mtls_a_client_without_a_certificate_is_refused() {
    let ca = TestCa::new("capydb mtls CA");
    let server = ca.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (addr, stop, handle) = spawn_grpc_tls(&server, Some(ca.pem())).await;

    let no_cert = match AuthSyncClient::connect(tls_client(addr, &ca)).await {
        Err(e) => Err(e),
        Ok(c) => c.list_integrations(None).await.map(drop),
    };
    assert!(no_cert.is_err(), "no client certificate, no service");

    let stranger = TestCa::new("not the client CA").leaf(&["intruder"], ExtendedKeyUsagePurpose::ClientAuth);
    let wrong_ca = match AuthSyncClient::connect(
        tls_client(addr, &ca).with_client_identity(stranger.cert_pem.clone(), stranger.key_pem.clone()),
    )
    .await
    {
        Err(e) => Err(e),
        Ok(c) => c.list_integrations(None).await.map(drop),
    };
    assert!(wrong_ca.is_err(), "a certificate from another CA is refused");

    let identity = ca.leaf(&["admin-cli"], ExtendedKeyUsagePurpose::ClientAuth);
    let client =
        AuthSyncClient::connect(tls_client(addr, &ca).with_client_identity(identity.cert_pem, identity.key_pem))
            .await
            .expect("a client with a certificate from the client CA connects");
    assert!(client.list_integrations(None).await.unwrap().is_empty());
    stop.cancel();
    handle.await.unwrap();
}
