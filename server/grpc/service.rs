//! The `AuthSyncService` implementation: decode the request, call `integrations`, map the
//! result. Nothing else lives here.
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::mapping;
use crate::integrations::{self, ApiError, ConfigureInput};
use crate::pb;
use crate::pb::auth_sync_service_server::AuthSyncService;
use crate::providers::ProviderKind;
use crate::state::AppState;
use crate::store::IntegrationRow;

pub struct GrpcService {
    state: Arc<AppState>,
}

impl GrpcService {
    pub fn new(state: Arc<AppState>) -> Self {
        GrpcService { state }
    }

    async fn present(&self, row: &IntegrationRow) -> Result<pb::Integration, ApiError> {
        let active = self.state.store.active_job(&row.id).await?;
        let last = if active.is_none() { self.state.store.last_finished_job(&row.id).await? } else { None };
        let state = mapping::integration_state(active.as_ref(), last.as_ref());
        Ok(mapping::integration(row, state, &self.state.settings.public_base_url))
    }
}

fn provider(value: i32) -> Result<Option<ProviderKind>, ApiError> {
    mapping::provider_from_proto(value).map_err(|_| {
        ApiError::InvalidArgument(vec![crate::domain::FieldViolation::new(
            "provider",
            format!("unknown provider value {value}"),
        )])
    })
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::BackfillJob, Status>> + Send>>;

#[tonic::async_trait]
impl AuthSyncService for GrpcService {
    #[tracing::instrument(skip_all, fields(project_id = %request.get_ref().project_id))]
    async fn configure_integration(
        &self,
        request: Request<pb::ConfigureIntegrationRequest>,
    ) -> Result<Response<pb::ConfigureIntegrationResponse>, Status> {
        let r = request.into_inner();
        let credentials = r.credentials.unwrap_or_default();
        let input = ConfigureInput {
            project_id: r.project_id,
            provider: provider(r.provider)?,
            database_url: r.database_url,
            secret_key: credentials.secret_key,
            webhook_secret: credentials.webhook_signing_secret,
        };
        let row = integrations::configure(&self.state, input).await?;
        Ok(Response::new(pb::ConfigureIntegrationResponse { integration: Some(self.present(&row).await?) }))
    }

    #[tracing::instrument(skip_all, fields(project_id = %request.get_ref().project_id))]
    async fn run_backfill(
        &self,
        request: Request<pb::RunBackfillRequest>,
    ) -> Result<Response<pb::RunBackfillResponse>, Status> {
        let r = request.into_inner();
        let job = integrations::run_backfill(&self.state, &r.project_id, provider(r.provider)?).await?;
        Ok(Response::new(pb::RunBackfillResponse { job: Some(mapping::job(&job)) }))
    }

    #[tracing::instrument(skip_all, fields(project_id = %request.get_ref().project_id))]
    async fn get_sync_status(
        &self,
        request: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        let r = request.into_inner();
        let report = integrations::status(&self.state, &r.project_id, provider(r.provider)?).await?;
        Ok(Response::new(pb::GetSyncStatusResponse {
            status: Some(mapping::status(&report, &self.state.settings.public_base_url)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_integrations(
        &self,
        request: Request<pb::ListIntegrationsRequest>,
    ) -> Result<Response<pb::ListIntegrationsResponse>, Status> {
        let rows = integrations::list(&self.state, &request.into_inner().project_id).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.present(row).await?);
        }
        Ok(Response::new(pb::ListIntegrationsResponse { integrations: out }))
    }

    #[tracing::instrument(skip_all, fields(project_id = %request.get_ref().project_id))]
    async fn delete_integration(
        &self,
        request: Request<pb::DeleteIntegrationRequest>,
    ) -> Result<Response<pb::DeleteIntegrationResponse>, Status> {
        let r = request.into_inner();
        let row = integrations::delete(&self.state, &r.project_id, provider(r.provider)?).await?;
        let presented = mapping::integration(&row, pb::IntegrationState::Active, &self.state.settings.public_base_url);
        Ok(Response::new(pb::DeleteIntegrationResponse { integration: Some(presented) }))
    }

    type WatchBackfillStream = JobStream;

    #[tracing::instrument(skip_all, fields(project_id = %request.get_ref().project_id))]
    async fn watch_backfill(&self, request: Request<pb::WatchBackfillRequest>) -> Result<Response<JobStream>, Status> {
        let r = request.into_inner();
        let first = integrations::watched_job(&self.state, &r.project_id, provider(r.provider)?).await?;
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // In the service's task set: it ends when draining begins, or dies with a kill.
        self.state.shutdown.spawn(async move {
            let interval = state.settings.backfill.watch_interval;
            let mut job = first;
            let mut last_sent: Option<(chrono::DateTime<chrono::Utc>, &'static str)> = None;
            loop {
                let key = (job.updated_at, job.state.as_str());
                if last_sent != Some(key) {
                    if tx.send(Ok(mapping::job(&job))).await.is_err() {
                        return; // the client went away
                    }
                    last_sent = Some(key);
                }
                if job.state.is_terminal() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tx.closed() => return,
                    _ = state.shutdown.draining() => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down; watch again"))).await;
                        return;
                    }
                }
                job = match state.store.get_job(&job.id).await {
                    Ok(Some(j)) => j,
                    Ok(None) => {
                        let _ =
                            tx.send(Err(Status::not_found("the backfill job was deleted with its integration"))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::from(e).into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
