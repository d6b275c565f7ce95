//! The gRPC surface: `AuthSyncService` behind bearer-token auth, plus health and reflection
//! (no token) on the same port, with request timeout and concurrency limit layers, over
//! plaintext or TLS (optionally mTLS) with rustls.
pub mod auth;
mod error;
pub mod mapping;
mod service;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::pb::auth_sync_service_server::AuthSyncServiceServer;
use crate::state::AppState;
pub use service::GrpcService;

/// The listener's rustls configuration: its identity, and with a client CA, mTLS (a client
/// without a certificate signed by that CA fails the handshake).
fn server_tls(tls: &crate::config::GrpcTlsSettings) -> ServerTlsConfig {
    let identity = Identity::from_pem(&tls.cert_pem, tls.key_pem.expose_secret());
    let config = ServerTlsConfig::new().identity(identity);
    match &tls.client_ca_pem {
        Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
        None => config,
    }
}

/// Serves until the listeners close (over TLS when configured). Health turns NOT_SERVING as
/// soon as draining begins; when the listeners close, in-flight calls get up to `grace` to
/// finish.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthSyncServiceServer<GrpcService>>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("embedded descriptor set is valid");

    let auth = auth::AdminAuth::new(&state.settings.admin_tokens);
    let api = AuthSyncServiceServer::with_interceptor(GrpcService::new(state.clone()), move |req| auth.check(req));

    state.shutdown.spawn({
        let (draining, health) = (state.shutdown.draining(), health.clone());
        async move {
            draining.await;
            health.set_not_serving::<AuthSyncServiceServer<GrpcService>>().await;
            health.set_service_status("", ServingStatus::NotServing).await;
        }
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &state.settings.grpc_tls {
        builder = builder.tls_config(server_tls(tls))?;
    }
    let server = builder
        .timeout(state.settings.grpc_timeout)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(state.settings.grpc_concurrency))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), state.shutdown.closing());
    tokio::pin!(server);
    let closing = state.shutdown.closing();
    tokio::select! {
        r = &mut server => r,
        _ = async { closing.await; tokio::time::sleep(grace).await } => {
            tracing::warn!("gRPC calls still open after the shutdown grace period; closing them");
            Ok(())
        }
    }
}
