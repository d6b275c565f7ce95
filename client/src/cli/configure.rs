//! Owns `configure PROJECT --provider P …`: ConfigureIntegration from flags (secrets from the
//! environment or stdin, `-`), prints the integration and the webhook receiver URL with what to
//! do with it in the provider's dashboard.

use std::process::ExitCode;

use capydb_auth_sync_client::{Integration, IntegrationState, Provider, ProviderArg};

use super::secrets::Stdin;
use super::{out, out_json, render, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project id (1–64 characters of [A-Za-z0-9_-]).
    project: String,

    /// Auth provider: clerk, auth0 or better_auth.
    #[arg(long, short = 'p', value_name = "P")]
    provider: ProviderArg,

    /// The project's Postgres URL (required the first time; omitted keeps the stored one; `-`
    /// reads it from stdin).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_PROJECT_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,

    /// Clerk secret key (sk_live_… / sk_test_…). Prefer the environment variable (or `-`:
    /// stdin).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_SECRET_KEY", hide_env_values = true, value_name = "K")]
    secret_key: Option<String>,

    /// Webhook secret: Clerk's signing secret (whsec_…), or the Auth0 / Better Auth shared
    /// secret (at least 16 characters). Prefer the environment variable (or `-`: stdin).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_WEBHOOK_SECRET", hide_env_values = true, value_name = "S")]
    webhook_secret: Option<String>,
}

pub async fn run(ctx: &Ctx, args: Args, stdin: &mut Stdin) -> Result<ExitCode, CliError> {
    let provider = args.provider.provider();
    let database_url = stdin.resolve("--database-url", args.database_url)?.unwrap_or_default();
    let secret_key = stdin.resolve("--secret-key", args.secret_key)?.unwrap_or_default();
    let webhook_secret = stdin.resolve("--webhook-secret", args.webhook_secret)?.unwrap_or_default();
    let client = ctx.client().await?;
    let integration = client
        .configure_integration(args.project.clone(), provider)
        .database_url(database_url)
        .secret_key(secret_key)
        .webhook_signing_secret(webhook_secret)
        .await?;
    if ctx.json {
        out_json(&integration);
    } else {
        out(&format!(
            "Configured the {} integration of project {}.\n{}",
            args.provider,
            integration.project_id,
            render::integration(&integration)
        ));
        out(&next_steps(provider, &integration));
    }
    Ok(ExitCode::SUCCESS)
}

/// What the operator does next: where to paste the receiver URL, and how to follow the
/// initial backfill.
fn next_steps(provider: Provider, i: &Integration) -> String {
    let project = &i.project_id;
    let url = if i.webhook_receiver.is_empty() {
        "(the server did not report a receiver URL)"
    } else {
        i.webhook_receiver.as_str()
    };
    let mut text = String::from("\n");
    match provider {
        Provider::Clerk => {
            text.push_str(&format!(
                "Webhook receiver URL (Clerk Dashboard → Webhooks → Add Endpoint):\n  {url}\n\
                 Subscribe to user.created, user.updated, user.deleted (and session.created).\n"
            ));
            if !i.has_webhook_secret {
                text.push_str(&format!(
                    "\nNo webhook signing secret yet: this integration is backfill-only and does not \
                     follow changes.\nCopy the endpoint's Signing Secret (whsec_…) and run:\n  \
                     CAPYDB_AUTH_SYNC_WEBHOOK_SECRET=whsec_… capydb-auth-sync-admin configure {project} --provider clerk\n"
                ));
            }
            if i.state == IntegrationState::Backfilling as i32 {
                text.push_str(&format!(
                    "\nThe initial backfill is running. Follow it with:\n  \
                     capydb-auth-sync-admin watch {project} --provider clerk\n"
                ));
            }
        }
        Provider::Auth0 => text.push_str(&format!(
            "Webhook receiver URL:\n  {url}\n\
             Auth0 Dashboard → Event Streams → Create Event Stream (Webhook): use this URL, \
             bearer authorization with the webhook secret, events user.created, user.updated, \
             user.deleted.\n\
             Or Log Streams → Custom Webhook: this URL, Authorization Token = the webhook secret, \
             content format JSON Array or JSON Lines.\n"
        )),
        Provider::BetterAuth => text.push_str(&format!(
            "Webhook receiver URL:\n  {url}\n\
             From databaseHooks.user.{{create,update,delete}}.after, POST \
             {{\"event\":\"user.created|user.updated|user.deleted\",\"user\":{{…}}}} to this URL with \
             header X-Better-Auth-Signature = hex HMAC-SHA256 of the body keyed with the webhook secret.\n"
        )),
        Provider::Unspecified => {}
    }
    if !i.has_credentials && !i.has_webhook_secret {
        text.push_str("\nWarning: no credentials are stored yet; the integration cannot sync.\n");
    } else if !i.has_credentials {
        text.push_str("\nNo secret key: webhooks keep the table live, but existing users are not backfilled.\n");
    }
    text.push_str(&format!(
        "\nCheck it any time with: capydb-auth-sync-admin status {project} --provider {}",
        capydb_auth_sync_client::provider_name(provider)
    ));
    text
}
