//! The state every surface (gRPC, webhooks) and service shares, built once by `app::run`.
//! It lives apart from start-up so the surfaces and services never import `app`.
use crate::backfill::{Backfills, ClerkApiFactory};
use crate::config::Settings;
use crate::ingest::IngestService;
use crate::lifecycle::Shutdown;
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
    /// The service's lifecycle: draining ends long streams so clients move elsewhere and
    /// turns readiness off; background work is spawned through it.
    pub shutdown: Shutdown,
}
