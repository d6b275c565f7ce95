//! Owns `send-test-webhook PROJECT --provider P --secret S [--url U]`: builds a realistic user
//! event for the provider, signs it the way the provider does, POSTs it to the receiver and
//! prints the HTTP status and response body (exit non-zero on non-2xx).

use std::process::ExitCode;

use capydb_auth_sync_client::signing::BetterAuthSender;
use capydb_auth_sync_client::webhook::{post_signed, test_event, webhook_url, TestEventKind, DEFAULT_WEBHOOK_BASE};
use capydb_auth_sync_client::{provider_name, Provider, ProviderArg, SignedRequest};

use super::{out, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project id.
    project: String,

    /// Auth provider: clerk, auth0 or better_auth.
    #[arg(long, short = 'p', value_name = "P")]
    provider: ProviderArg,

    /// The webhook secret configured for the integration (Clerk: whsec_…).
    #[arg(long, env = "CAPYDB_AUTH_SYNC_WEBHOOK_SECRET", hide_env_values = true, value_name = "S")]
    secret: String,

    /// Receiver URL [default: http://127.0.0.1:8080/api/capydb/v1/integrations/{clerk|auth0|better-auth}/webhook/PROJECT]
    #[arg(long, value_name = "U")]
    url: Option<String>,

    /// Event to send: user.created, user.updated or user.deleted.
    #[arg(long, default_value = "user.created", value_name = "E")]
    event: TestEventKind,

    /// User id the event is about (default: a fresh test id, e.g. user_test_…).
    #[arg(long, value_name = "ID")]
    user_id: Option<String>,

    /// Better Auth only: sign and shape the event like the official webhooks plugin, or like
    /// a databaseHooks snippet (the CapyDB envelope).
    #[arg(long, value_enum, default_value_t = BetterAuthSender::Plugin, value_name = "SENDER")]
    better_auth_sender: BetterAuthSender,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<ExitCode, CliError> {
    let provider = args.provider.provider();
    let url = match args.url {
        Some(u) => u,
        None => webhook_url(DEFAULT_WEBHOOK_BASE, provider, &args.project)
            .ok_or_else(|| CliError::Message("a provider is required".into()))?,
    };
    let event = test_event(provider, args.event, args.user_id.as_deref())
        .ok_or_else(|| CliError::Message("a provider is required".into()))?;
    let (event, request) = match (provider, args.better_auth_sender, event.better_auth_envelope()) {
        (Provider::BetterAuth, BetterAuthSender::DatabaseHooks, Some(envelope)) => {
            let request = SignedRequest::better_auth(&args.secret, envelope.body());
            (envelope, request)
        }
        _ => {
            let request = SignedRequest::for_provider(provider, &args.secret, event.body())?;
            (event, request)
        }
    };
    out(&format!("POST {url}\n{} {} for user {}", provider_name(provider), event.kind, event.user_id));
    let resp = post_signed(&url, &request, ctx.timeout).await?;
    let mut status_line = format!("HTTP {}", resp.status);
    if let Some(reason) = reqwest::StatusCode::from_u16(resp.status).ok().and_then(|s| s.canonical_reason()) {
        status_line.push(' ');
        status_line.push_str(reason);
    }
    if let Some(ra) = &resp.retry_after {
        status_line.push_str(&format!(" (Retry-After: {ra})"));
    }
    out(&status_line);
    if !resp.body.is_empty() {
        out(&resp.body);
    }
    if resp.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the webhook receiver answered {status_line}");
        Ok(ExitCode::FAILURE)
    }
}
