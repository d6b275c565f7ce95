//! The public listener defends itself (issue 11): slow senders and idle sockets are cut off,
//! a pile of idle connections cannot keep signed deliveries out.
use std::time::Duration;
use test_harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn strict() -> TestOptions {
    TestOptions {
        tweak: Box::new(|s| {
            s.http_limits.header_timeout = Duration::from_millis(800);
            s.http_limits.idle_timeout = Duration::from_millis(800);
            s.http_limits.max_connections = 128;
        }),
        ..Default::default()
    }
}

/// Waits (bounded) until the server closes `stream`; true if it did.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_one_byte_at_a_time_is_cut_off_within_the_header_deadline() {
    let app = TestApp::spawn_with(strict()).await;
    let head =
        b"POST /api/capydb/v1/integrations/clerk/webhook/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    let stream = TcpStream::connect(app.http_addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let reading = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let mut sent = 0;
    for byte in head.iter() {
        if reading.is_finished() || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent < head.len(), "the server let a trickling client finish its headers");
    assert!(tokio::time::timeout(Duration::from_secs(5), reading).await.is_ok(), "the connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_neither_stop_signed_deliveries_nor_stay_open() {
    let app = TestApp::spawn_with(strict()).await;
    let whsec = new_whsec();
    app.configure_clerk_webhooks("idle", &whsec).await;
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(TcpStream::connect(app.http_addr).await.unwrap());
    }
    // Far more idle sockets than the listener's cap: a signed delivery still gets through.
    let body = clerk_event("user.created", serde_json::json!({"id": "user_i", "object": "user", "updated_at": 1}), 1);
    let (status, answer) = app.send_clerk("idle", &whsec, &body).await;
    assert_eq!(status, 200, "{answer}");
    // And every idle socket is closed by the server.
    for stream in &mut idle {
        assert!(closed_by_server(stream, Duration::from_secs(30)).await, "an idle connection stayed open");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(strict()).await;
    let mut stream = TcpStream::connect(app.http_addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut stream, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn half_an_http2_preface_or_nothing_at_all_is_closed_after_the_header_deadline() {
    let app = TestApp::spawn_with(strict()).await;
    let mut half = TcpStream::connect(app.http_addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut silent = TcpStream::connect(app.http_addr).await.unwrap();
    assert!(closed_by_server(&mut half, Duration::from_secs(10)).await);
    assert!(closed_by_server(&mut silent, Duration::from_secs(10)).await);
}
