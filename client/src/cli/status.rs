//! Owns `status PROJECT [--provider P] [--json]`: GetSyncStatus rendered as a readable block
//! (mode, verdict, webhook counters, backfill progress, row counts) or JSON.

use std::process::ExitCode;

use capydb_auth_sync_client::display::{sync_status_json, sync_status_text};
use capydb_auth_sync_client::ProviderArg;

use super::{out, out_json, provider_or_unspecified, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project id.
    project: String,

    /// Auth provider (may be omitted when the project has one integration).
    #[arg(long, short = 'p', value_name = "P")]
    provider: Option<ProviderArg>,

    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<ExitCode, CliError> {
    let client = ctx.client().await?;
    let status = client.get_sync_status(args.project, provider_or_unspecified(args.provider)).await?;
    if args.json {
        out_json(&sync_status_json(&status));
    } else {
        out(&sync_status_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}
