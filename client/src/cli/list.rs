//! Owns `list [--project P] [--json]`: ListIntegrations as a table or a JSON array.

use std::process::ExitCode;

use super::{out, out_json, render, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this project's integrations.
    #[arg(long, value_name = "P")]
    project: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<ExitCode, CliError> {
    let client = ctx.client().await?;
    let list = client.list_integrations(args.project.as_deref()).await?;
    if ctx.json {
        out_json(&list);
    } else if list.is_empty() {
        out("No integrations.");
    } else {
        out(&render::integrations(&list));
    }
    Ok(ExitCode::SUCCESS)
}
