//! `capydb-auth-sync-admin`: the operator CLI of capydb-auth-sync. This file only starts the
//! runtime; arguments and commands live in `cli/`.

mod cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    cli::main().await
}
