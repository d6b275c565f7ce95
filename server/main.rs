//! `capydb-auth-sync`: see `cli.rs` for the commands and `app.rs` for what serving runs.
#[tokio::main]
async fn main() {
    fixed_mmap_threshold();
    std::process::exit(capydb_auth_sync::cli::main().await);
}

/// glibc serves an allocation of at least `M_MMAP_THRESHOLD` bytes with a mapping of its own,
/// returned to the system when freed — but by default the threshold rises to the largest
/// block freed so far, after which a backfill's ~1.5 MB page bodies come from the heap and
/// fragment it, and peak RSS creeps up with the length of the run (35 MB for 50,000 users,
/// 39 MB for 200,000). A fixed threshold keeps big buffers out of the heap (30 MB vs 32 MB).
#[allow(unsafe_code)]
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointers and only sets an allocator parameter under glibc's
    // own lock (it returns 0 when it refuses a value); it is called first thing, before any
    // of the service's work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
