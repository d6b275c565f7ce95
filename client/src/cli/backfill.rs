//! Owns `backfill PROJECT [--provider P] [--watch] [--json]` and `watch PROJECT`: RunBackfill,
//! and following WatchBackfill with an indicatif progress bar, a final summary, and a non-zero
//! exit code when the job FAILED or was CANCELLED.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use capydb_auth_sync_client::display::{backfill_state_str, is_terminal};
use capydb_auth_sync_client::{AuthSyncClient, BackfillJob, BackfillState, Provider, ProviderArg};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::Code;

use super::{exit, out, out_json, provider_or_unspecified, render, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project id.
    project: String,

    /// Auth provider (may be omitted when the project has one integration).
    #[arg(long, short = 'p', value_name = "P")]
    provider: Option<ProviderArg>,

    /// Follow the backfill until it ends, with a progress bar.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Project id.
    project: String,

    /// Auth provider (may be omitted when the project has one integration).
    #[arg(long, short = 'p', value_name = "P")]
    provider: Option<ProviderArg>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<ExitCode, CliError> {
    let provider = provider_or_unspecified(args.provider);
    let client = ctx.client().await?;
    let job = client.run_backfill(args.project.clone(), provider).await?;
    if !args.watch {
        if ctx.json {
            out_json(&job);
        } else {
            out(&render::backfill_job(&job));
            if !is_terminal(job.state) {
                out(&format!(
                    "Follow it with: capydb-auth-sync-admin watch {}{}",
                    args.project,
                    args.provider.map(|p| format!(" --provider {p}")).unwrap_or_default()
                ));
            }
        }
        return Ok(exit_code(&job));
    }
    let provider = if provider == Provider::Unspecified {
        Provider::try_from(job.provider).unwrap_or(Provider::Unspecified)
    } else {
        provider
    };
    if !ctx.json && !std::io::stderr().is_terminal() {
        eprintln!("backfill {} of project {}: {}", job.id, job.project_id, backfill_state_str(job.state));
    }
    let last = follow(&client, &args.project, provider, Some(job), ctx.json).await?;
    finish(&last, ctx.json)
}

pub async fn run_watch(ctx: &Ctx, args: WatchArgs) -> Result<ExitCode, CliError> {
    let client = ctx.client().await?;
    let provider = provider_or_unspecified(args.provider);
    let last = follow(&client, &args.project, provider, None, ctx.json).await?;
    finish(&last, ctx.json)
}

/// Prints the final summary; FAILED and CANCELLED exit non-zero.
fn finish(job: &BackfillJob, json: bool) -> Result<ExitCode, CliError> {
    if json {
        out_json(job);
    } else {
        out(&render::backfill_job(job));
    }
    match BackfillState::try_from(job.state) {
        Ok(BackfillState::Failed) => {
            let why = if job.error.is_empty() { String::new() } else { format!(": {}", job.error) };
            eprintln!("error: backfill {} failed{why}", job.id);
        }
        Ok(BackfillState::Cancelled) => eprintln!("error: backfill {} was cancelled", job.id),
        _ => {}
    }
    Ok(exit_code(job))
}

fn exit_code(job: &BackfillJob) -> ExitCode {
    match BackfillState::try_from(job.state) {
        Ok(BackfillState::Failed | BackfillState::Cancelled) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// Follows WatchBackfill until a terminal snapshot; reopens the stream a few times when the
/// connection drops (`UNAVAILABLE`). Returns the terminal snapshot.
async fn follow(
    client: &AuthSyncClient,
    project: &str,
    provider: Provider,
    first: Option<BackfillJob>,
    quiet: bool,
) -> Result<BackfillJob, CliError> {
    const MAX_REOPENS: u32 = 5;
    let mut bar = Bar::new(quiet);
    if let Some(job) = &first {
        if is_terminal(job.state) {
            return Ok(job.clone());
        }
        bar.update(job);
    }
    let mut last = first;
    let mut reopens = 0;
    loop {
        let mut stream = client.watch_backfill(project, provider).await?;
        let dropped = loop {
            match stream.next().await {
                Some(Ok(job)) => {
                    bar.update(&job);
                    if is_terminal(job.state) {
                        bar.finish();
                        return Ok(job);
                    }
                    last = Some(job);
                }
                Some(Err(e)) if e.code() == Code::Unavailable && reopens < MAX_REOPENS => break e,
                Some(Err(e)) => {
                    bar.finish();
                    return Err(e.into());
                }
                None => {
                    bar.finish();
                    let state = last.as_ref().map_or_else(|| "unknown".to_string(), |j| backfill_state_str(j.state));
                    return Err(CliError::Failed {
                        exit: exit::UNAVAILABLE,
                        message: format!(
                            "the server ended the watch before the backfill finished (last state: {state})"
                        ),
                    });
                }
            }
        };
        reopens += 1;
        bar.note(&format!("connection lost ({dropped}); reconnecting"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The progress display: a bar when the expected user count is known, a spinner otherwise;
/// plain state-change lines on stderr when it is not a terminal; nothing with `--json`.
struct Bar {
    pb: Option<ProgressBar>,
    plain: bool,
    has_length: bool,
    last_state: i32,
}

impl Bar {
    fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let pb = (!quiet && tty).then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(spinner_style());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Bar { pb, plain: !quiet && !tty, has_length: false, last_state: -1 }
    }

    fn update(&mut self, job: &BackfillJob) {
        if self.plain && job.state != self.last_state {
            eprintln!("backfill {}: {}", job.id, backfill_state_str(job.state));
        }
        self.last_state = job.state;
        let Some(pb) = &self.pb else { return };
        if job.users_expected > 0 {
            if !self.has_length {
                pb.set_style(bar_style());
                self.has_length = true;
            }
            pb.set_length(job.users_expected.max(job.users_fetched) as u64);
        }
        pb.set_position(job.users_fetched.max(0) as u64);
        pb.set_message(counters(job));
    }

    fn note(&self, msg: &str) {
        match &self.pb {
            Some(pb) => pb.println(msg),
            None if self.plain => eprintln!("{msg}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.pb {
            pb.finish_and_clear();
        }
    }
}

/// The counters the progress display shows next to the fetched count.
fn counters(job: &BackfillJob) -> String {
    format!("{} written · {} unchanged", job.users_written, job.users_stale)
}

/// At most 80 columns: the spinner line is short; the bar takes what the terminal has left
/// (`wide_bar`) after the fixed parts, and the counters go on a second line.
const SPINNER_TEMPLATE: &str = "{spinner} {pos} users fetched · {msg} · {elapsed}";
const BAR_TEMPLATE: &str = "{spinner} [{wide_bar}] {percent:>3}% {elapsed:>4}\n  {pos}/{len} users fetched · {msg}";

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template(SPINNER_TEMPLATE).expect("valid progress template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(BAR_TEMPLATE).expect("valid progress template").progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The templates filled in the way indicatif fills them, with 7-digit counts (a
    /// 9,999,999-user instance) and a 4-character elapsed time: every line fits 80 columns
    /// (`wide_bar` takes only what the fixed parts leave).
    #[test]
    fn progress_lines_fit_80_columns() {
        let job = BackfillJob { users_written: 9_999_999, users_stale: 9_999_999, ..Default::default() };
        let fill = |template: &str| {
            template
                .replace("{spinner}", "⠁")
                .replace("{pos}", "9999999")
                .replace("{len}", "9999999")
                .replace("{percent:>3}", "100")
                .replace("{elapsed:>4}", " 59m")
                .replace("{elapsed}", "59m")
                .replace("{wide_bar}", "")
                .replace("{msg}", &counters(&job))
        };
        for line in fill(SPINNER_TEMPLATE).lines().chain(fill(BAR_TEMPLATE).lines()) {
            assert!(!line.contains('{'), "unfilled placeholder in {line:?}");
            assert!(line.chars().count() <= 80, "{} columns: {line}", line.chars().count());
        }
        let bar_line = fill(BAR_TEMPLATE).lines().next().unwrap().chars().count();
        assert!(bar_line <= 40, "the bar keeps at least half of an 80-column line");
    }
}
