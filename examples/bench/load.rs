//! The two contenders under the same load: `in_flight` workers take the events in order from
//! one shared cursor, each with its own connection, until the events or the time run out.
//!
//! - the service: signed Clerk deliveries over loopback HTTP/1.1 (keep-alive), each answered
//!   only after its change has committed;
//! - the baseline: the same rows straight from tokio-postgres, one `INSERT … ON CONFLICT DO
//!   UPDATE` per event in autocommit (one transaction each), prepared once per connection.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capydb_auth_sync_client::SignedRequest;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};

use crate::workload::{Event, Write};
use crate::BenchError;

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub sent: usize,
    pub elapsed: Duration,
    /// Sorted latencies of the successful requests.
    pub latencies: Vec<Duration>,
    /// The table changed (service: `applied`; baseline: one row affected).
    pub applied: usize,
    /// Answered but nothing changed (service: `ignored`; baseline: no row affected).
    pub ignored: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl RunStats {
    pub fn per_second(&self) -> f64 {
        (self.applied + self.ignored) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0–1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn merge(parts: Vec<WorkerStats>, elapsed: Duration) -> RunStats {
        let mut stats = RunStats { elapsed, ..RunStats::default() };
        for p in parts {
            stats.sent += p.latencies.len() + p.failed;
            stats.latencies.extend(p.latencies);
            stats.applied += p.applied;
            stats.ignored += p.ignored;
            stats.failed += p.failed;
            stats.first_failure = stats.first_failure.or(p.first_failure);
        }
        stats.latencies.sort_unstable();
        stats
    }
}

#[derive(Default)]
struct WorkerStats {
    latencies: Vec<Duration>,
    applied: usize,
    ignored: usize,
    failed: usize,
    first_failure: Option<String>,
}

impl WorkerStats {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }
}

/// A signed delivery ready to send (headers and body built before the clock starts).
pub struct Delivery {
    headers: HeaderMap,
    body: Bytes,
}

impl From<SignedRequest> for Delivery {
    fn from(req: SignedRequest) -> Self {
        Delivery { headers: req.header_map(), body: Bytes::from(req.body) }
    }
}

/// Sends `deliveries` to `url` with `in_flight` connections; stops taking new ones after `budget`.
///
/// Each worker owns one keep-alive HTTP/1.1 connection (hyper's client connection, no pool,
/// redirect or timeout layers), so the sender, which shares the machine's cores with the
/// server and Postgres, costs about as little per request as the baseline's tokio-postgres
/// client does per statement.
pub async fn run_service(
    url: &str,
    deliveries: Arc<Vec<Delivery>>,
    in_flight: usize,
    budget: Duration,
) -> Result<RunStats, BenchError> {
    let uri: http::Uri = url.parse().map_err(|e| BenchError::Setup(format!("bad webhook url {url}: {e}")))?;
    let authority = uri.authority().ok_or_else(|| BenchError::Setup(format!("no host in {url}")))?.clone();
    // The request target is the path, as an HTTP/1 client sends it; Host names the server.
    let target: http::Uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e| BenchError::Setup(format!("bad webhook path in {url}: {e}")))?;
    let mut senders = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Setup(format!("HTTP handshake: {e}")))?;
        tokio::spawn(connection);
        senders.push(sender);
    }
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + budget;
    let workers: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (target, authority, deliveries, cursor) =
                (target.clone(), authority.clone(), deliveries.clone(), cursor.clone());
            tokio::spawn(async move {
                let mut stats = WorkerStats::default();
                loop {
                    let i = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(delivery) = deliveries.get(i) else { break };
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut request = http::Request::post(target.clone())
                        .header(http::header::HOST, authority.as_str())
                        .body(Full::new(delivery.body.clone()))
                        .expect("a POST to a parsed URI is a valid request");
                    request.headers_mut().extend(delivery.headers.clone());
                    let t = Instant::now();
                    let answer = match tokio::time::timeout(Duration::from_secs(30), async {
                        // HTTP/1: the previous exchange must be finished before the next.
                        sender.ready().await?;
                        let response = sender.send_request(request).await?;
                        let status = response.status();
                        let body = response.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>((status, body))
                    })
                    .await
                    {
                        Ok(answer) => answer.map_err(|e| e.to_string()),
                        Err(_) => Err("no answer within 30 s".to_string()),
                    };
                    match answer {
                        Ok((status, body)) if status == http::StatusCode::OK => {
                            stats.latencies.push(t.elapsed());
                            if body.windows(9).any(|w| w == b"\"applied\"") {
                                stats.applied += 1;
                            } else {
                                stats.ignored += 1;
                            }
                        }
                        Ok((status, body)) => {
                            stats.fail(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                        }
                        Err(e) => {
                            stats.fail(e);
                            // The connection is gone; this worker stops.
                            break;
                        }
                    }
                }
                stats
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(in_flight);
    for w in workers {
        parts.push(w.await.map_err(|e| BenchError::Setup(format!("a sender task failed: {e}")))?);
    }
    Ok(RunStats::merge(parts, started.elapsed()))
}

const UPSERT: &str = "
INSERT INTO capydb_auth.users AS u
  (id, email, first_name, last_name, username, image_url, created_at, updated_at, last_sign_in_at, raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET
  email = EXCLUDED.email, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
  username = EXCLUDED.username, image_url = EXCLUDED.image_url, created_at = EXCLUDED.created_at,
  updated_at = EXCLUDED.updated_at, last_sign_in_at = EXCLUDED.last_sign_in_at, raw = EXCLUDED.raw
WHERE u.updated_at IS NULL OR u.updated_at < EXCLUDED.updated_at";

const DELETE: &str = "
INSERT INTO capydb_auth.users AS u (id, deleted_at, raw) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at WHERE u.deleted_at IS NULL";

/// Writes `events` into the database at `url` the obvious way, `in_flight` connections at once.
pub async fn run_baseline(
    url: &str,
    events: Arc<Vec<Event>>,
    in_flight: usize,
    budget: Duration,
) -> Result<RunStats, BenchError> {
    let mut clients = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let upsert = client.prepare(UPSERT).await?;
        let delete = client.prepare(DELETE).await?;
        clients.push((client, upsert, delete));
    }
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + budget;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|(client, upsert, delete)| {
            let (events, cursor) = (events.clone(), cursor.clone());
            tokio::spawn(async move {
                let mut stats = WorkerStats::default();
                loop {
                    let i = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(i) else { break };
                    if Instant::now() > deadline {
                        break;
                    }
                    let t = Instant::now();
                    let result = match &event.write {
                        Write::Upsert(r) => {
                            client
                                .execute(
                                    &upsert,
                                    &[
                                        &r.id,
                                        &r.email,
                                        &r.first_name,
                                        &r.last_name,
                                        &r.username,
                                        &r.image_url,
                                        &r.created_at,
                                        &r.updated_at,
                                        &r.last_sign_in_at,
                                        &r.raw,
                                    ],
                                )
                                .await
                        }
                        Write::Delete { id, deleted_at, raw } => client.execute(&delete, &[id, deleted_at, raw]).await,
                    };
                    match result {
                        Ok(rows) => {
                            stats.latencies.push(t.elapsed());
                            if rows > 0 {
                                stats.applied += 1;
                            } else {
                                stats.ignored += 1;
                            }
                        }
                        Err(e) => stats.fail(e.to_string()),
                    }
                }
                stats
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(in_flight);
    for w in workers {
        parts.push(w.await.map_err(|e| BenchError::Setup(format!("a baseline task failed: {e}")))?);
    }
    Ok(RunStats::merge(parts, started.elapsed()))
}
