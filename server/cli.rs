//! The `capydb-auth-sync` command line: `serve` (default), `rotate-keys`, `generate-key`.
use clap::Parser;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Listeners};
use crate::config::{self, Cli, Command, Settings};
use crate::crypto::Keyring;
use crate::logging::LogFormat;
use crate::store::ControlStore;

/// Entry point of the binary; returns the process exit code.
pub async fn main() -> i32 {
    let cli = Cli::parse();
    let format = LogFormat::resolve(cli.opts.log_format, cli.opts.dev);
    let logs = match crate::logging::init(format, cli.opts.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let result = match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::Serve => serve(&cli).await,
        Command::RotateKeys => rotate_keys(&cli).await,
        Command::GenerateKey { id } => {
            println!("{}", Keyring::generate_spec(id).expose_secret());
            Ok(())
        }
    };
    logs.shutdown().await;
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

async fn settings(cli: &Cli) -> Result<(Settings, Option<crate::dev::DevSetup>), String> {
    let dev = if cli.opts.dev { Some(crate::dev::prepare(&cli.opts).await.map_err(|e| e.to_string())?) } else { None };
    let settings = Settings::from_options(&cli.opts, dev.as_ref().map(|d| &d.defaults)).map_err(|e| e.to_string())?;
    Ok((settings, dev))
}

async fn serve(cli: &Cli) -> Result<(), String> {
    let o = &cli.opts;
    let metrics_addr = config::metrics_addr(o).map_err(|e| e.to_string())?;
    if o.dev {
        let all = [Some(o.grpc_addr), Some(o.http_addr), metrics_addr];
        if all.iter().flatten().any(|a| !a.ip().is_loopback()) {
            return Err("dev mode binds loopback addresses only (127.0.0.1 / ::1)".into());
        }
    }
    let (settings, dev) = settings(cli).await?;
    let bind = |addr: std::net::SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
    };
    let grpc = bind(o.grpc_addr, "gRPC").await?;
    let http = bind(o.http_addr, "webhooks").await?;
    let metrics = match metrics_addr {
        Some(a) => Some(bind(a, "metrics").await?),
        None => None,
    };
    if let Some(dev) = &dev {
        print_dev_banner(o, dev);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app::run(settings, Listeners { grpc, http, metrics }, shutdown).await.map_err(|e| e.to_string())
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; draining");
    token.cancel();
}

/// Needs only the control database and the keyring (new key first, old keys after it).
async fn rotate_keys(cli: &Cli) -> Result<(), String> {
    let o = &cli.opts;
    let dev = if o.dev { Some(crate::dev::prepare(o).await.map_err(|e| e.to_string())?) } else { None };
    let url = o
        .database_url
        .clone()
        .or_else(|| dev.as_ref().map(|d| d.defaults.database_url.clone()))
        .ok_or("no control database: set CAPYDB_AUTH_SYNC_DATABASE_URL (or --database-url)")?;
    let keys = o
        .master_keys
        .clone()
        .or_else(|| dev.as_ref().map(|d| d.defaults.master_keys.expose_secret().to_string()))
        .ok_or("no master keys: set CAPYDB_AUTH_SYNC_MASTER_KEYS to `new:…,old:…` (the first encrypts)")?;
    let keyring =
        Keyring::parse(&secrecy::SecretString::from(keys)).map_err(|e| format!("CAPYDB_AUTH_SYNC_MASTER_KEYS: {e}"))?;
    let store = ControlStore::connect(&url, 2).await.map_err(|e| e.to_string())?;
    let n = crate::integrations::rotate_keys(&store, &keyring).await.map_err(|e| e.to_string())?;
    println!("re-encrypted the secrets of {n} integration(s) with key `{}`", keyring.active_key_id());
    Ok(())
}

fn print_dev_banner(o: &config::ServeOptions, dev: &crate::dev::DevSetup) {
    let token = dev.defaults.admin_token.expose_secret();
    let dir = o.dev_dir.display();
    let postgres = match &dev.postgres {
        Some(pg) => format!(
            "{base}   (in {dir}/{file})\n\x20           walkthrough databases: {dbs}",
            base = pg.base_url,
            file = crate::dev::POSTGRES_URL_FILE,
            dbs = crate::dev::EXAMPLE_PROJECT_DBS.join(", "),
        ),
        None => "the control database from --database-url".to_string(),
    };
    // The CLI's default endpoint is the default gRPC address; any other must be named.
    let endpoint = if o.grpc_addr.to_string() == "127.0.0.1:50051" {
        String::new()
    } else {
        format!("\x20 export CAPYDB_AUTH_SYNC_ENDPOINT=http://{}\n", o.grpc_addr)
    };
    // The dev token is printed on purpose: it exists only on this machine, for this folder.
    println!(
        "\ncapydb-auth-sync dev mode\n\
         \x20 gRPC      {grpc}   (reflection on)\n\
         \x20 webhooks  http://{http}   (the receiver URLs point here)\n\
         \x20 metrics   {metrics}\n\
         \x20 Postgres  {postgres}\n\
         \x20 dev token {token}   (in {dir}/admin-token)\n\n\
         In another shell, from this folder (the README's Quickstart goes on from here):\n\
         \x20 export CAPYDB_AUTH_SYNC_ADMIN_TOKEN=$(cat {dir}/admin-token)\n\
         {endpoint}\
         \x20 cargo run -q -p capydb-auth-sync-client -- list\n",
        grpc = o.grpc_addr,
        http = o.http_addr,
        metrics =
            if o.metrics_addr.is_empty() { "off".to_string() } else { format!("http://{}/metrics", o.metrics_addr) },
    );
}
