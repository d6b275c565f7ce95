//! `capydb-auth-sync`: see `cli.rs` for the commands and `app.rs` for what serving runs.

/// The delivery path allocates many small, short-lived objects (parsed JSON, headers, rows);
/// glibc's allocator took more than half of the server's CPU under load (`perf`), mimalloc a
/// fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    std::process::exit(capydb_auth_sync::cli::main().await);
}
