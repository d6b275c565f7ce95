//! `capydb-auth-sync`: see `cli.rs` for the commands and `app.rs` for what serving runs.
#[tokio::main]
async fn main() {
    std::process::exit(capydb_auth_sync::cli::main().await);
}
