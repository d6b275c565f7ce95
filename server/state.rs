//! The state every surface (gRPC, webhooks) and service shares, built once by `app::run`.
//! It lives apart from start-up so the surfaces and services never import `app`.
use tokio_util::sync::CancellationToken;

use crate::backfill::{Backfills, ClerkApiFactory};
use crate::config::Settings;
use crate::ingest::IngestService;
use crate::project_db::ProjectPools;
use crate::store::ControlStore;

/// Everything request handlers share.
pub struct AppState {
    pub settings: Settings,
    pub store: ControlStore,
    pub pools: ProjectPools,
    pub clerk: ClerkApiFactory,
    pub backfills: Backfills,
    /// The webhook delivery path behind the HTTP surface.
    pub ingest: IngestService,
    /// Fires when the service starts draining (long streams end so clients move elsewhere).
    pub shutdown: CancellationToken,
}
