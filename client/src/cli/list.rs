//! Owns `list [--project P] [--json]`: ListIntegrations as a table or a JSON array.

use std::process::ExitCode;

use capydb_auth_sync_client::display::{integrations_json, integrations_table};

use super::{out, out_json, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this project's integrations.
    #[arg(long, value_name = "P")]
    project: Option<String>,

    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<ExitCode, CliError> {
    let client = ctx.client().await?;
    let list = client.list_integrations(args.project.as_deref()).await?;
    if args.json {
        out_json(&integrations_json(&list));
    } else if list.is_empty() {
        out("No integrations.");
    } else {
        out(&integrations_table(&list));
    }
    Ok(ExitCode::SUCCESS)
}
