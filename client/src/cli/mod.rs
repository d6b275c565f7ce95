//! Owns the command line of `capydb-auth-sync-admin`: global flags (endpoint, token, timeout,
//! `--json`), the subcommand list, dispatch, secrets read from stdin, and the error convention:
//! one `error: …` line on stderr (a JSON object under `--json`) and an exit code per failure
//! class (see [`exit`]). Secrets are never printed.

mod backfill;
mod configure;
mod delete;
mod errors;
mod list;
mod render;
mod secrets;
mod send_test_webhook;
mod status;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use capydb_auth_sync_client::client::DEFAULT_ENDPOINT;
use capydb_auth_sync_client::{AuthSyncClient, ClientConfig, Provider, ProviderArg};
use clap::{CommandFactory as _, Parser, Subcommand};

pub use errors::{exit, CliError};

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure: a backfill failed or was cancelled, the receiver refused a test event, …
  2  usage: a bad flag or argument (also INVALID_ARGUMENT from the service)
  3  unauthenticated: missing or wrong admin token (or a test webhook's wrong --secret)
  4  not found: no such integration (NOT_FOUND)
  5  unavailable: the service or a database is unreachable, or no answer in time
  6  failed precondition: the provider or the integration's state does not allow it

Secrets: --secret-key, --webhook-secret, --database-url, --secret and --token also come from
their environment variables, or from stdin when given as `-` (so they stay off argv and out of
shell history). With --json, errors are a JSON object on stderr.";

/// Administer capydb-auth-sync: connect auth providers (Clerk, Auth0, Better Auth) to a
/// project's Postgres and watch the sync of capydb_auth.users.
#[derive(Debug, Parser)]
#[command(name = "capydb-auth-sync-admin", version, propagate_version = true, after_help = EXIT_CODES_HELP)]
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

    /// Admin token, sent as `authorization: Bearer <token>` (`-` reads it from stdin).
    #[arg(long, global = true, env = "CAPYDB_AUTH_SYNC_ADMIN_TOKEN", hide_env_values = true, value_name = "T")]
    token: Option<String>,

    /// Deadline of each request, in seconds.
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,

    /// PEM CA certificate(s) to trust for an https:// endpoint (instead of the web PKI).
    #[arg(long, global = true, env = "CAPYDB_AUTH_SYNC_CA_CERT", value_name = "PEM_FILE")]
    ca_cert: Option<std::path::PathBuf>,

    /// PEM client certificate, for a service that requires one (mTLS); with --client-key.
    #[arg(long, global = true, env = "CAPYDB_AUTH_SYNC_CLIENT_CERT", value_name = "PEM_FILE", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "CAPYDB_AUTH_SYNC_CLIENT_KEY", value_name = "PEM_FILE", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,

    /// Print results (and errors) as JSON.
    #[arg(long, global = true)]
    json: bool,

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
    /// Send a signed test event to the integration's webhook receiver (a dry run unless --write).
    SendTestWebhook(send_test_webhook::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Example: capydb-auth-sync-admin completions bash > ~/.local/share/bash-completion/completions/capydb-auth-sync-admin"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Parses the command line, runs the command, reports errors. Returns the exit code.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.json;
    let has_token = cli.token.as_deref().is_some_and(|t| !t.trim().is_empty());
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            err.report(json, has_token);
            ExitCode::from(err.exit_code())
        }
    }
}

/// clap's own errors (exit 2); as a JSON object when `--json` is on the command line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os().any(|a| a == "--json");
    if !wants_json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    // The error itself is the first paragraph (clap adds usage and a hint after a blank line).
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = message.join(" ");
    CliError::Usage(message.strip_prefix("error: ").unwrap_or(&message).to_string()).report(true, false);
    ExitCode::from(exit::USAGE)
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::Usage("--timeout must be a positive number of seconds".into()))?;
    let mut stdin = secrets::Stdin::default();
    let token = stdin.resolve("--token", cli.token)?;
    let mut config =
        ClientConfig { endpoint: cli.endpoint, token, request_timeout: timeout, ..ClientConfig::default() };
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| CliError::Usage(format!("{flag}: cannot read {}: {e}", path.display())))
    };
    if let Some(path) = &cli.ca_cert {
        config = config.with_ca_certificate(read("--ca-cert", path)?);
    }
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        config = config.with_client_identity(read("--client-cert", cert)?, read("--client-key", key)?);
    }
    let ctx = Ctx { config, timeout, json: cli.json };
    match cli.command {
        Command::Configure(args) => configure::run(&ctx, args, &mut stdin).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::List(args) => list::run(&ctx, args).await,
        Command::Delete(args) => delete::run(&ctx, args).await,
        Command::Backfill(args) => backfill::run(&ctx, args).await,
        Command::Watch(args) => backfill::run_watch(&ctx, args).await,
        Command::SendTestWebhook(args) => send_test_webhook::run(&ctx, args, &mut stdin).await,
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "capydb-auth-sync-admin", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What commands get from the global flags.
pub struct Ctx {
    config: ClientConfig,
    timeout: Duration,
    json: bool,
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

/// Pretty JSON of any serializable value (the generated messages included) to stdout.
fn out_json<T: serde::Serialize + ?Sized>(v: &T) {
    out(&serde_json::to_string_pretty(v).expect("the generated messages always serialize"));
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
            vec![
                "x",
                "send-test-webhook",
                "p1",
                "--provider",
                "clerk",
                "--secret",
                "-",
                "--write",
                "--url",
                "http://h",
            ],
            vec!["x", "--endpoint", "http://h:1", "--token", "t", "configure", "p1", "--provider", "auth0"],
            vec!["x", "status", "p1", "--endpoint", "http://h:1"],
            vec!["x", "completions", "bash"],
        ] {
            Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["x", "status", "p1", "--provider", "okta"]).is_err());
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_help().to_string();
        for needle in ["3  unauthenticated", "4  not found", "5  unavailable", "6  failed precondition", "2  usage"] {
            assert!(help.contains(needle), "missing {needle:?} in\n{help}");
        }
    }
}
