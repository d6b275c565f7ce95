//! Configures a project's Clerk integration and follows its initial backfill to the end, using
//! only the library (no CLI dependencies):
//!
//! ```text
//! export CAPYDB_AUTH_SYNC_ENDPOINT=http://127.0.0.1:50051 CAPYDB_AUTH_SYNC_ADMIN_TOKEN=…
//! export CAPYDB_AUTH_SYNC_SECRET_KEY=sk_test_…
//! cargo run -p capydb-auth-sync-client --no-default-features --example configure_and_watch -- \
//!     shop postgres://postgres@127.0.0.1:5432/shop
//! ```
use std::process::ExitCode;

use capydb_auth_sync_client::display::{backfill_job_line, is_terminal};
use capydb_auth_sync_client::{AuthSyncClient, BackfillState, ClientConfig, ClientError, Provider};
use futures::TryStreamExt as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(project), Some(database_url)) = (args.next(), args.next()) else {
        eprintln!("usage: configure_and_watch PROJECT DATABASE_URL (secret key in CAPYDB_AUTH_SYNC_SECRET_KEY)");
        return ExitCode::from(2);
    };
    match run(&project, &database_url).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            for v in e.field_violations() {
                eprintln!("  {}: {}", v.field, v.description);
            }
            ExitCode::FAILURE
        }
    }
}

/// Returns whether the backfill succeeded.
async fn run(project: &str, database_url: &str) -> Result<bool, ClientError> {
    let endpoint = std::env::var("CAPYDB_AUTH_SYNC_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let mut config = ClientConfig::new(endpoint);
    config.token = std::env::var("CAPYDB_AUTH_SYNC_ADMIN_TOKEN").ok();
    let client = AuthSyncClient::connect(config).await?;

    let integration = client
        .configure_integration(project, Provider::Clerk)
        .database_url(database_url)
        .secret_key(std::env::var("CAPYDB_AUTH_SYNC_SECRET_KEY").unwrap_or_default())
        .await?;
    println!("configured {}; webhook receiver: {}", integration.project_id, integration.webhook_receiver);

    let mut jobs = client.watch_backfill(project, Provider::Clerk).await?;
    let mut last = None;
    while let Some(job) = jobs.try_next().await? {
        println!("{}", backfill_job_line(&job));
        let done = is_terminal(job.state);
        last = Some(job);
        if done {
            break;
        }
    }
    Ok(last.is_some_and(|j| j.state == BackfillState::Succeeded as i32))
}
