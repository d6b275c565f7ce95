//! Owns the command line of `capydb-auth-sync-admin`: global flags (endpoint, token, timeout),
//! the subcommand list, dispatch, and the error/exit-code convention (one `error: …` line on
//! stderr, exit 1; secrets are never printed).

mod backfill;
mod configure;
mod delete;
mod list;
mod send_test_webhook;
mod status;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use capydb_auth_sync_client::client::DEFAULT_ENDPOINT;
use capydb_auth_sync_client::webhook::WebhookSendError;
use capydb_auth_sync_client::{AuthSyncClient, ClientConfig, ClientError, Provider, ProviderArg, SigningError};
use clap::{Parser, Subcommand};
use tonic::Code;

/// Administer capydb-auth-sync: connect auth providers (Clerk, Auth0, Better Auth) to a
/// project's Postgres and watch the sync of capydb_auth.users.
#[derive(Debug, Parser)]
#[command(name = "capydb-auth-sync-admin", version, propagate_version = true)]
pub struct Cli {
    /// gRPC endpoint of the service (http://… or https://…).
    #[arg(
        long,
        global = true,
        env = "CAPYDB_AUTH_SYNC_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL"
    )]
    endpoint: String,

    /// Admin token, sent as `authorization: Bearer <token>`.
    #[arg(long, global = true, env = "CAPYDB_AUTH_SYNC_ADMIN_TOKEN", hide_env_values = true, value_name = "T")]
    token: Option<String>,

    /// Deadline of each request, in seconds.
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the integration of a project with an auth provider.
    Configure(configure::Args),
    /// Show the sync status of a project's integration.
    Status(status::Args),
    /// List integrations.
    List(list::Args),
    /// Delete an integration (stops syncing; the users table and its rows stay).
    Delete(delete::Args),
    /// Start a Clerk backfill (or show the one already running); --watch follows it.
    Backfill(backfill::Args),
    /// Follow the current (or most recent) backfill of a project until it ends.
    Watch(backfill::WatchArgs),
    /// Send a signed test `user.created` (or other) webhook to the receiver.
    SendTestWebhook(send_test_webhook::Args),
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Webhook(#[from] WebhookSendError),
    #[error("{0}")]
    Message(String),
}

/// Parses the command line, runs the command, reports errors. Returns the exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let has_token = cli.token.as_deref().is_some_and(|t| !t.trim().is_empty());
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            let mut line = format!("error: {err}");
            if let CliError::Client(e) = &err {
                if e.code() == Code::Unauthenticated && !has_token {
                    line.push_str(" (no admin token: pass --token or set CAPYDB_AUTH_SYNC_ADMIN_TOKEN)");
                }
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::Message("--timeout must be a positive number of seconds".into()))?;
    let config =
        ClientConfig { endpoint: cli.endpoint, token: cli.token, request_timeout: timeout, ..ClientConfig::default() };
    let ctx = Ctx { config, timeout };
    match cli.command {
        Command::Configure(args) => configure::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::List(args) => list::run(&ctx, args).await,
        Command::Delete(args) => delete::run(&ctx, args).await,
        Command::Backfill(args) => backfill::run(&ctx, args).await,
        Command::Watch(args) => backfill::run_watch(&ctx, args).await,
        Command::SendTestWebhook(args) => send_test_webhook::run(&ctx, args).await,
    }
}

/// What commands get from the global flags.
pub struct Ctx {
    config: ClientConfig,
    timeout: Duration,
}

impl Ctx {
    /// Connects to the service (fails fast with a clear message when it is unreachable).
    async fn client(&self) -> Result<AuthSyncClient, CliError> {
        Ok(AuthSyncClient::connect(self.config.clone()).await?)
    }
}

/// An optional `--provider`, as the proto enum (`Unspecified` lets the server pick the
/// project's only integration).
fn provider_or_unspecified(p: Option<ProviderArg>) -> Provider {
    p.map_or(Provider::Unspecified, Provider::from)
}

/// Writes to stdout, ignoring a closed pipe (`… | head`).
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
}

/// Pretty JSON to stdout.
fn out_json(v: &serde_json::Value) {
    out(&serde_json::to_string_pretty(v).expect("a serde_json::Value always serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_pinned_invocations() {
        for argv in [
            vec!["x", "status", "p1", "--provider", "clerk", "--json"],
            vec!["x", "list", "--project", "p1", "--json"],
            vec!["x", "delete", "p1"],
            vec!["x", "backfill", "p1", "--watch"],
            vec!["x", "send-test-webhook", "p1", "--provider", "better-auth", "--secret", "s"],
            vec!["x", "--endpoint", "http://h:1", "--token", "t", "configure", "p1", "--provider", "auth0"],
            vec!["x", "status", "p1", "--endpoint", "http://h:1"],
        ] {
            Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["x", "status", "p1", "--provider", "okta"]).is_err());
    }
}
