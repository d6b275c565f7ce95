//! The `fake-clerk` binary: serves a fake Clerk Backend API on loopback so a backfill can be
//! watched locally (`capydb-auth-sync` with `CAPYDB_AUTH_SYNC_CLERK_API_URL` pointed at it).
//! Quiet while it serves: `RUST_LOG=fake_clerk=debug` logs every answered request to stderr
//! (plain text unless stderr is a terminal). Ctrl-C stops it and prints the request counts.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use fake_clerk::{FakeClerk, FakeClerkConfig, RateLimit, DEFAULT_SECRET_KEY};

/// A fake Clerk Backend API (GET /v1/users, GET /v1/users/count) on loopback.
#[derive(Debug, Parser)]
#[command(name = "fake-clerk", version)]
struct Args {
    /// Address to listen on (loopback only; port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,

    /// Number of users to generate.
    #[arg(long, default_value_t = 1000)]
    users: usize,

    /// Accepted secret key (repeatable).
    #[arg(long = "secret-key", default_values_t = [DEFAULT_SECRET_KEY.to_owned()])]
    secret_keys: Vec<String>,

    /// Rate-limit bucket size (default: Clerk development keys, 100).
    #[arg(long)]
    rate_limit_capacity: Option<u32>,

    /// Rate-limit refill in requests per second (default: Clerk development keys, 10).
    #[arg(long)]
    rate_limit_refill_per_sec: Option<f64>,

    /// Serve without any rate limit.
    #[arg(long, conflicts_with_all = ["rate_limit_capacity", "rate_limit_refill_per_sec"])]
    no_rate_limit: bool,

    /// Seed of the generated users.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fake_clerk=info")),
        )
        .init();

    if !args.addr.ip().is_loopback() {
        eprintln!("fake-clerk: --addr must be a loopback address, got {}", args.addr);
        return ExitCode::from(2);
    }
    let rate_limit = (!args.no_rate_limit).then(|| RateLimit {
        capacity: args.rate_limit_capacity.unwrap_or(RateLimit::DEVELOPMENT.capacity),
        refill_per_sec: args.rate_limit_refill_per_sec.unwrap_or(RateLimit::DEVELOPMENT.refill_per_sec),
    });
    let config = FakeClerkConfig {
        secret_keys: args.secret_keys,
        users: args.users,
        rate_limit,
        seed: args.seed,
        addr: args.addr,
        ..FakeClerkConfig::default()
    };
    let clerk = match FakeClerk::start(config).await {
        Ok(clerk) => clerk,
        Err(error) => {
            eprintln!("fake-clerk: cannot start on {}: {error}", args.addr);
            return ExitCode::FAILURE;
        }
    };

    let url = clerk.url();
    let key = clerk.secret_key().to_owned();
    println!("fake-clerk: serving {} fake users at {url}", clerk.len());
    println!("  secret key:  {key}");
    match rate_limit {
        Some(limit) => {
            println!("  rate limit:  bucket of {} requests, refilled at {}/s", limit.capacity, limit.refill_per_sec)
        }
        None => println!("  rate limit:  none"),
    }
    println!("  try:         curl -H 'Authorization: Bearer {key}' '{url}/v1/users?limit=2'");
    println!("  capydb-auth-sync: CAPYDB_AUTH_SYNC_CLERK_API_URL={url}");
    println!("  requests:    logged with RUST_LOG=fake_clerk=debug");
    println!("Ctrl-C to stop.");

    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("fake-clerk: cannot listen for Ctrl-C ({error}); stopping");
    }
    let stats = clerk.stats();
    clerk.shutdown().await;
    println!(
        "fake-clerk: stopped after {} requests ({} rate-limited, {} unauthorized)",
        stats.requests, stats.rate_limited, stats.unauthorized
    );
    ExitCode::SUCCESS
}
