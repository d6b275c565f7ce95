//! Owns `delete PROJECT [--provider P] [--json]`: DeleteIntegration, and a reminder that the
//! users table stays in place.

use std::process::ExitCode;

use capydb_auth_sync_client::display::provider_str;
use capydb_auth_sync_client::ProviderArg;

use super::{out, out_json, provider_or_unspecified, CliError, Ctx};

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
    let deleted = client.delete_integration(args.project, provider_or_unspecified(args.provider)).await?;
    if ctx.json {
        out_json(&deleted);
    } else {
        let place =
            if deleted.database_target.is_empty() { String::new() } else { format!(" in {}", deleted.database_target) };
        out(&format!(
            "Deleted the {} integration of project {}: credentials forgotten, syncing stopped.\n\
             The table capydb_auth.users and its rows stay in place{place}.",
            provider_str(deleted.provider),
            deleted.project_id
        ));
    }
    Ok(ExitCode::SUCCESS)
}
