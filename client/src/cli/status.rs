//! Owns `status PROJECT [--provider P] [--json]`: GetSyncStatus rendered as a readable block
//! table (verdict, lag, row counts, webhook counters of all time and the last hour, the inbox,
//! recent errors, backfills, the webhook secret and its predecessor's grace period) or JSON.

use std::process::ExitCode;

use capydb_auth_sync_client::ProviderArg;

use super::{out, out_json, provider_or_unspecified, render, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project id.
    project: String,

    /// Auth provider (may be omitted when the project has one integration).
    #[arg(long, short = 'p', value_name = "P")]
    provider: Option<ProviderArg>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<ExitCode, CliError> {
    let client = ctx.client().await?;
    let status = client.get_sync_status(args.project, provider_or_unspecified(args.provider)).await?;
    if ctx.json {
        out_json(&status);
    } else {
        out(&render::sync_status(&status, chrono::Utc::now()));
    }
    Ok(ExitCode::SUCCESS)
}
