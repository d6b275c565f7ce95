//! Owns `send-test-webhook PROJECT --provider P --secret S [--url U] [--write]`: builds a
//! realistic user event for the provider, signs it the way the provider does and POSTs it to
//! the integration's own receiver (`webhook_receiver`, asked from the server, unless `--url`
//! names one), so it checks the set-up a provider uses: secret, route, database, permissions.
//!
//! By default it is a dry run: the URL gets `?dry_run=true`, the receiver verifies, parses and
//! applies the event in a transaction it rolls back, and answers `"dry_run": true`; no made-up
//! user lands in the customer's table. `--write` sends it for real.

use std::process::ExitCode;

use capydb_auth_sync_client::signing::BetterAuthSender;
use capydb_auth_sync_client::webhook::{post_signed, test_event, TestEventKind, WebhookResponse};
use capydb_auth_sync_client::{provider_name, Provider, ProviderArg, SignedRequest};
use serde_json::{json, Value};

use super::secrets::Stdin;
use super::{exit, out, out_json, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project id.
    project: String,

    /// Auth provider: clerk, auth0 or better_auth.
    #[arg(long, short = 'p', value_name = "P")]
    provider: ProviderArg,

    /// The integration's webhook secret (Clerk: whsec_…); `-` reads it from stdin.
    #[arg(long, env = "CAPYDB_AUTH_SYNC_WEBHOOK_SECRET", hide_env_values = true, value_name = "S")]
    secret: String,

    /// The full receiver URL, e.g. http://127.0.0.1:8080/api/capydb/v1/integrations/clerk/webhook/PROJECT
    /// [default: the integration's webhook_receiver, asked from the server]
    #[arg(long, value_name = "U")]
    url: Option<String>,

    /// Apply the event for real (the default is a dry run that writes nothing).
    #[arg(long)]
    write: bool,

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

pub async fn run(ctx: &Ctx, args: Args, stdin: &mut Stdin) -> Result<ExitCode, CliError> {
    let provider = args.provider.provider();
    let secret =
        stdin.resolve("--secret", Some(args.secret))?.ok_or_else(|| CliError::Usage("--secret is empty".into()))?;
    let receiver = match args.url {
        Some(u) => u,
        None => receiver_of(ctx, &args.project, provider).await?,
    };
    let dry_run = !args.write;
    let url = if dry_run { with_dry_run(&receiver) } else { receiver.clone() };
    let event = test_event(provider, args.event, args.user_id.as_deref())
        .ok_or_else(|| CliError::Usage("--provider is required".into()))?;
    let (event, request) = match (provider, args.better_auth_sender, event.better_auth_envelope()) {
        (Provider::BetterAuth, BetterAuthSender::DatabaseHooks, Some(envelope)) => {
            let request = SignedRequest::better_auth(&secret, envelope.body());
            (envelope, request)
        }
        _ => {
            let request = SignedRequest::for_provider(provider, &secret, event.body())?;
            (event, request)
        }
    };
    if !ctx.json {
        let mode = if dry_run { "dry run: nothing is written; --write applies it" } else { "written for real" };
        out(&format!(
            "POST {url}
{} {} for user {} ({mode})",
            provider_name(provider),
            event.kind,
            event.user_id
        ));
    }
    let resp = post_signed(&url, &request, ctx.timeout).await?;
    let status_line = status_line(&resp);
    if ctx.json {
        out_json(&json!({
            "url": url,
            "provider": provider_name(provider),
            "event": event.kind.event_type(),
            "user_id": event.user_id,
            "dry_run": dry_run,
            "http_status": resp.status,
            "response": resp.json().unwrap_or_else(|| Value::String(resp.body.clone())),
        }));
    } else {
        out(&status_line);
        if !resp.body.is_empty() {
            out(&resp.body);
        }
    }
    if !resp.is_success() {
        return Err(refused(&resp, &status_line, &args.project, provider));
    }
    if dry_run && resp.json().and_then(|v| v.get("dry_run").and_then(Value::as_bool)) != Some(true) {
        return Err(CliError::Failed {
            exit: exit::FAILURE,
            message: format!(
                "the receiver did not answer \"dry_run\": true, so it does not support dry runs and applied the \
                 event: user {} was written to the users table",
                event.user_id
            ),
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// The integration's `webhook_receiver`, asked from the server.
async fn receiver_of(ctx: &Ctx, project: &str, provider: Provider) -> Result<String, CliError> {
    let client = ctx.client().await?;
    let found = client.list_integrations(Some(project)).await?.into_iter().find(|i| i.provider == provider as i32);
    match found {
        Some(i) if !i.webhook_receiver.is_empty() => Ok(i.webhook_receiver),
        Some(_) => Err(CliError::Failed {
            exit: exit::FAILURE,
            message: "the server did not report a webhook receiver URL; pass --url".into(),
        }),
        None => Err(CliError::Failed {
            exit: exit::NOT_FOUND,
            message: format!(
                "project {project} has no {} integration: run `capydb-auth-sync-admin configure {project} --provider {}` first",
                provider_name(provider),
                provider_name(provider)
            ),
        }),
    }
}

/// `url` with `dry_run=true` added to its query.
fn with_dry_run(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}dry_run=true")
}

/// `HTTP 401 Unauthorized (Retry-After: 5)`.
fn status_line(resp: &WebhookResponse) -> String {
    let mut line = format!("HTTP {}", resp.status);
    if let Some(reason) = reqwest::StatusCode::from_u16(resp.status).ok().and_then(|s| s.canonical_reason()) {
        line.push(' ');
        line.push_str(reason);
    }
    if let Some(ra) = &resp.retry_after {
        line.push_str(&format!(" (Retry-After: {ra})"));
    }
    line
}

/// What a refusal means and what to do about it, with the exit class of the cause.
fn refused(resp: &WebhookResponse, status_line: &str, project: &str, provider: Provider) -> CliError {
    let name = provider_name(provider);
    let (exit, what) = match resp.status {
        401 => (
            exit::UNAUTHENTICATED,
            format!(
                "the receiver refused the signature: --secret is not the webhook secret of the {name} integration \
                 (pass the value given to `configure {project} --provider {name} --webhook-secret`)"
            ),
        ),
        404 => (
            exit::NOT_FOUND,
            format!(
                "the receiver knows no {name} integration with a webhook secret for project {project}: run \
                 `configure {project} --provider {name} --webhook-secret …`, or check --url"
            ),
        ),
        503 => (exit::UNAVAILABLE, "the receiver cannot take deliveries right now; try again later".to_string()),
        400 => (exit::FAILURE, "the receiver could not read the event".to_string()),
        _ => (exit::FAILURE, "the receiver refused the event".to_string()),
    };
    CliError::Failed { exit, message: format!("{what} ({status_line})") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_is_added_to_the_query() {
        assert_eq!(with_dry_run("http://h/x"), "http://h/x?dry_run=true");
        assert_eq!(with_dry_run("http://h/x?a=1"), "http://h/x?a=1&dry_run=true");
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let resp = |status| WebhookResponse { status, body: r#"{"error":"x"}"#.into(), retry_after: None };
        let e = refused(&resp(401), "HTTP 401 Unauthorized", "shop", Provider::Clerk);
        assert_eq!(e.exit_code(), exit::UNAUTHENTICATED);
        assert!(e.to_string().contains("--secret is not the webhook secret"), "{e}");
        assert_eq!(refused(&resp(404), "HTTP 404", "shop", Provider::Clerk).exit_code(), exit::NOT_FOUND);
        assert_eq!(refused(&resp(503), "HTTP 503", "shop", Provider::Clerk).exit_code(), exit::UNAVAILABLE);
        assert_eq!(refused(&resp(400), "HTTP 400", "shop", Provider::Clerk).exit_code(), exit::FAILURE);
    }
}
