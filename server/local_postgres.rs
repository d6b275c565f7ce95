//! A Postgres server for dev mode and the test suite: use the one on 127.0.0.1:5432 when it
//! answers, otherwise start (or reuse) a throwaway cluster from the installed Postgres
//! binaries in a folder of our own.
//!
//! The cluster listens on loopback only, trusts local connections, and runs with `fsync=off`
//! (its data is disposable). When we run as root, the binaries run as the `postgres` user,
//! because Postgres refuses to run as root.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    #[error("no Postgres binaries found (looked for pg_ctl/initdb on PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin); install PostgreSQL or set a database URL")]
    NoBinaries,
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("i/o error in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The URL of a server with trust auth for user `postgres` (no database in the path).
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    pub base_url: String,
    /// True when we started (or reused) a throwaway cluster of our own.
    pub throwaway: bool,
}

impl LocalPostgres {
    /// A URL to database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("{}/{}", self.base_url, db)
    }
}

/// Is a trust-auth Postgres answering at `base_url`?
pub async fn probe(base_url: &str) -> bool {
    let url = format!("{base_url}/postgres?connect_timeout=2");
    match tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(&url, tokio_postgres::NoTls)).await {
        Ok(Ok((client, conn))) => {
            let handle = tokio::spawn(conn);
            let ok = client.simple_query("SELECT 1").await.is_ok();
            drop(client);
            let _ = handle.await;
            ok
        }
        _ => false,
    }
}

/// Uses 127.0.0.1:5432 when it answers; otherwise a throwaway cluster kept in `dir`.
pub async fn ensure(dir: &Path) -> Result<LocalPostgres, LocalPostgresError> {
    let default = "postgres://postgres@127.0.0.1:5432";
    if probe(default).await {
        return Ok(LocalPostgres { base_url: default.to_string(), throwaway: false });
    }
    let dir = dir.to_path_buf();
    let base_url = tokio::task::spawn_blocking(move || start_cluster(&dir))
        .await
        .map_err(|e| LocalPostgresError::Command { step: "start cluster", detail: e.to_string() })??;
    Ok(LocalPostgres { base_url, throwaway: true })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalPostgresError + '_ {
    move |source| LocalPostgresError::Io { path: path.to_path_buf(), source }
}

/// Starts (or finds running) the cluster in `dir`; returns its base URL.
fn start_cluster(dir: &Path) -> Result<String, LocalPostgresError> {
    start_cluster_with(dir, "")
}

/// Starts (or finds running) a throwaway cluster in `dir` with extra server options (`-c
/// name=value ...`, e.g. TLS for tests); returns its base URL. Files the options name should
/// be in `dir` before the call (it is handed to the `postgres` user when we run as root).
pub fn start_cluster_with(dir: &Path, extra_options: &str) -> Result<String, LocalPostgresError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let bin = find_bindir().ok_or(LocalPostgresError::NoBinaries)?;
    let data = dir.join("data");
    let port_file = dir.join("port");
    let as_root = is_root();
    if as_root {
        chown_postgres(&dir)?;
    }
    if !data.join("PG_VERSION").exists() {
        let mut cmd = pg_command(&bin.join("initdb"), as_root);
        cmd.args(["-D"]).arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(cmd, "initdb")?;
    }
    let port: u16 = match std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok()) {
        Some(p) => p,
        None => {
            let p = free_port().map_err(io(&dir))?;
            std::fs::write(&port_file, p.to_string()).map_err(io(&port_file))?;
            p
        }
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}");
    let mut status = pg_command(&bin.join("pg_ctl"), as_root);
    status.arg("-D").arg(&data).arg("status");
    let running = status.output().map(|o| o.status.success()).unwrap_or(false);
    if !running {
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 {extra_options}",
            dir.display()
        );
        let mut start = pg_command(&bin.join("pg_ctl"), as_root);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]);
        run(start, "pg_ctl start")?;
    }
    Ok(url)
}

/// Stops the cluster in `dir` at once (`pg_ctl stop -m immediate`).
pub fn stop_cluster(dir: &Path) -> Result<(), LocalPostgresError> {
    let bin = find_bindir().ok_or(LocalPostgresError::NoBinaries)?;
    let mut stop = pg_command(&bin.join("pg_ctl"), is_root());
    stop.arg("-D").arg(dir.join("data")).args(["-m", "immediate", "-w", "stop"]);
    run(stop, "pg_ctl stop")
}

fn run(mut cmd: Command, step: &'static str) -> Result<(), LocalPostgresError> {
    let out = cmd.output().map_err(|e| LocalPostgresError::Command { step, detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LocalPostgresError::Command {
            step,
            detail: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn pg_command(program: &Path, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn chown_postgres(dir: &Path) -> Result<(), LocalPostgresError> {
    let mut c = Command::new("chown");
    c.arg("-R").arg("postgres:").arg(dir);
    run(c, "chown to postgres")?;
    // The folder must be reachable by the postgres user along its whole path.
    let mut p = dir.parent();
    while let Some(parent) = p {
        let _ = Command::new("chmod").arg("o+x").arg(parent).status();
        p = parent.parent();
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("pg_ctl").exists() && d.join("initdb").exists();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&d) {
            return Some(d);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, d): &(u32, PathBuf)| has_tools(d))
            .collect();
        versions.sort();
        if let Some((_, d)) = versions.pop() {
            return Some(d);
        }
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).find(|d| has_tools(d)))
}
