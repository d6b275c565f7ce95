//! The server under test, started as a user would start it: the release binary, configured
//! through environment variables, on free loopback ports, its log in a file. Its CPU time and
//! peak memory are read from `/proc/<pid>`.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::BenchError;

pub struct Server {
    child: Child,
    pid: u32,
    pub grpc_url: String,
    pub http_base: String,
    metrics_url: String,
    pub log: PathBuf,
}

/// The release server binary beside this example's target folder, built first (cargo is quick
/// when it is up to date) unless `explicit` names one.
pub fn binary(explicit: Option<PathBuf>) -> Result<PathBuf, BenchError> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    // target/<profile>/examples/bench → target/release/capydb-auth-sync
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| BenchError::Setup(format!("cannot find the target folder from {}", exe.display())))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--bin", "capydb-auth-sync"])
        .env("CARGO_TARGET_DIR", target)
        .status()?;
    if !status.success() {
        return Err(BenchError::Setup("cargo build --release --bin capydb-auth-sync failed".into()));
    }
    Ok(target.join("release").join("capydb-auth-sync"))
}

/// `capydb-auth-sync generate-key`: a fresh master key spec.
pub async fn generate_key(bin: &Path) -> Result<String, BenchError> {
    let out = Command::new(bin).args(["generate-key", "--id", "bench"]).output().await?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!("generate-key failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts `bin` on the control database `database_url`; returns once `/readyz` answers 200.
    pub async fn start(
        bin: &Path,
        database_url: &str,
        master_keys: &str,
        admin_token: &str,
        extra_env: &[(&str, String)],
        log: PathBuf,
    ) -> Result<Server, BenchError> {
        let (grpc, http, metrics) = (free_port()?, free_port()?, free_port()?);
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .env("CAPYDB_AUTH_SYNC_DATABASE_URL", database_url)
            .env("CAPYDB_AUTH_SYNC_MASTER_KEYS", master_keys)
            .env("CAPYDB_AUTH_SYNC_ADMIN_TOKENS", admin_token)
            // The benchmark's project database is on loopback, which production refuses by default.
            .env("CAPYDB_AUTH_SYNC_DATABASE_ALLOW", "127.0.0.0/8,localhost")
            .env("CAPYDB_AUTH_SYNC_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("CAPYDB_AUTH_SYNC_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("CAPYDB_AUTH_SYNC_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env("CAPYDB_AUTH_SYNC_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn()?;
        let pid = child.id().ok_or_else(|| BenchError::Setup("the server exited at once".into()))?;
        let http_base = format!("http://127.0.0.1:{http}");
        let ready = format!("{http_base}/readyz");
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(BenchError::Setup(format!("the server exited ({status}); see {}", log.display())));
            }
            if probe.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!("the server was not ready within 30 s; see {}", log.display())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server {
            child,
            pid,
            grpc_url: format!("http://127.0.0.1:{grpc}"),
            http_base,
            metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Group commits so far and the deliveries they carried (from `/metrics`).
    pub async fn group_commits(&self) -> Result<(f64, f64), BenchError> {
        let text = reqwest::get(&self.metrics_url).await?.text().await?;
        let value = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
        };
        Ok((
            value("capydb_auth_sync_group_commit_deliveries_count "),
            value("capydb_auth_sync_group_commit_deliveries_sum "),
        ))
    }

    /// User + system CPU time the process has used so far.
    pub fn cpu_time(&self) -> Result<Duration, BenchError> {
        cpu_time(self.pid)
    }

    /// Peak resident set size since start (or the last [`Server::reset_peak_rss`]), in bytes.
    pub fn peak_rss(&self) -> Result<u64, BenchError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| BenchError::Setup("no VmHWM in /proc/<pid>/status".into()))
    }

    /// Restarts the peak RSS count (Linux ≥ 4.0: `5` to `/proc/<pid>/clear_refs`).
    pub fn reset_peak_rss(&self) -> Result<(), BenchError> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")?;
        Ok(())
    }

    /// SIGTERM (a graceful stop: counters flushed), then waits up to 30 s before killing.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("the server did not stop within 30 s of SIGTERM; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// User + system CPU time of process `pid` (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_time(pid: u32) -> Result<Duration, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field 14 is index 11.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (utime, stime) =
        ticks(11).zip(ticks(12)).ok_or_else(|| BenchError::Setup(format!("cannot read CPU times of process {pid}")))?;
    Ok(Duration::from_secs_f64((utime + stime) as f64 / clock_ticks_per_second() as f64))
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}
