//! The `fake-clerk` binary as a person runs it: quiet while it serves (no line per request
//! unless `RUST_LOG=fake_clerk=debug`), plain text when stderr is not a terminal, and a
//! summary of the requests on Ctrl-C.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

struct Run {
    stdout: String,
    stderr: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the binary on a free loopback port, makes `requests` authorised user-list requests,
/// stops it with SIGINT (its Ctrl-C) and returns what it printed.
async fn run(rust_log: Option<&str>, requests: usize) -> Run {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fake-clerk"));
    cmd.args(["--addr", &format!("127.0.0.1:{port}"), "--users", "3", "--no-rate-limit"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .kill_on_drop(true);
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let mut child = cmd.spawn().expect("start fake-clerk");
    let url = format!("http://127.0.0.1:{port}/v1/users?limit=2");
    let client = reqwest::Client::new();
    // Bounded wait until it listens.
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "fake-clerk did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for _ in 0..requests {
        let resp = client.get(&url).bearer_auth(fake_clerk::DEFAULT_SECRET_KEY).send().await.expect("request");
        assert_eq!(resp.status(), 200);
    }
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().await.expect("kill -INT");
    assert!(status.success());
    let exit =
        tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("fake-clerk stops on SIGINT").unwrap();
    assert!(exit.success(), "{exit}");
    Run { stdout: std::fs::read_to_string(out_path).unwrap(), stderr: std::fs::read_to_string(err_path).unwrap() }
}

#[tokio::test]
async fn the_binary_is_quiet_by_default_and_summarises_on_ctrl_c() {
    let run = run(None, 3).await;
    assert_eq!(run.stderr, "", "nothing on stderr while serving");
    assert!(run.stdout.contains("serving 3 fake users"), "{}", run.stdout);
    assert!(run.stdout.contains("RUST_LOG=fake_clerk=debug"), "{}", run.stdout);
    assert!(run.stdout.contains("stopped after 3 requests"), "{}", run.stdout);
}

#[tokio::test]
async fn rust_log_debug_logs_each_request_as_plain_text() {
    let run = run(Some("fake_clerk=debug"), 2).await;
    let answered: Vec<&str> = run.stderr.lines().filter(|l| l.contains("fake-clerk answered")).collect();
    assert_eq!(answered.len(), 2, "{}", run.stderr);
    assert!(answered.iter().all(|l| l.contains("/v1/users") && l.contains("status=200")), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "no ANSI codes when stderr is a file: {:?}", run.stderr);
}
