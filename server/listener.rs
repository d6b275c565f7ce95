//! The one way this service serves HTTP (the public webhook listener and the metrics
//! listener), built to defend itself against clients that hold sockets without using them:
//!
//! - **A cap on open connections** (`max_connections`): a permit is taken *before* `accept`,
//!   so past the cap new connections wait in the kernel's backlog instead of costing a task
//!   and a file descriptor; the permit returns when a connection closes.
//! - **A deadline for the first request**: a connection that has not completed the headers of
//!   a request within `header_timeout` of connecting is closed — whether it sends nothing, half
//!   an HTTP/2 preface, or one byte a second. Later requests on a kept-alive connection are
//!   bounded by the idle timeout: hyper's HTTP/1 header-read timer starts as soon as a
//!   response is sent, not at the next request's first byte, so it is set to the idle timeout
//!   (set to `header_timeout`, it would close every idle keep-alive connection after a few
//!   seconds, and a sender reusing one at that moment would see its delivery cut off).
//! - **An idle timeout**, for HTTP/1 keep-alive and HTTP/2 alike: a connection with no request
//!   in flight for `idle_timeout` since its last one finished is closed, however many pings or
//!   stray bytes it sends. A request in flight is never cut by it (its own deadline is the
//!   handler's business: the webhook handler answers within `WEBHOOK_TIMEOUT_MS`, body read
//!   included).
//! - **HTTP/2 limits**: bounded concurrent streams, keep-alive pings that close dead peers.
//! - **Accept errors back off** (10 ms doubling to 1 s) instead of spinning, e.g. on `EMFILE`.
//! - **Graceful close**: when the lifecycle reaches `Closing`, accepting ends and open
//!   connections finish their requests, for at most `grace`. Connection tasks belong to the
//!   service's task set (`crate::lifecycle`): `app::run` outlives them, a kill drops them.
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::lifecycle::Shutdown;

/// How much a listener tolerates from its clients.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_h2_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_h2_streams: 64,
        }
    }
}

/// What the watchdog of one connection knows about it.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished; `u64::MAX`: none yet.
    last_done_ms: AtomicU64,
}

impl Activity {
    /// When the connection should be closed if nothing changes, or `None` while a request is
    /// in flight.
    fn deadline(&self, limits: &ListenerLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.last_done_ms.load(Ordering::Acquire) {
            u64::MAX => Some(self.opened + limits.header_timeout),
            ms => Some(self.opened + Duration::from_millis(ms) + limits.idle_timeout),
        }
    }
}

/// Counts a request in flight for as long as it lives (also when its future is dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_done_ms.store(elapsed, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `handler` on `listener` until the lifecycle reaches `Closing` (see the module docs).
pub async fn serve<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    handler: H,
    shutdown: Shutdown,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout.max(limits.header_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_h2_streams)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = Duration::from_millis(10);
    let stop = shutdown.closing();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backoff = Duration::from_millis(10);
                    stream
                }
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(u64::MAX),
        });
        let service = {
            let (handler, activity) = (handler.clone(), activity.clone());
            hyper::service::service_fn(move |req| {
                let guard = InFlight::start(&activity);
                let response = handler(req);
                async move {
                    let response = response.await;
                    drop(guard);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        let limits = limits.clone();
        shutdown.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            loop {
                let wake = activity.deadline(&limits).unwrap_or_else(|| Instant::now() + Duration::from_millis(500));
                tokio::select! {
                    _ = &mut conn => return,
                    _ = tokio::time::sleep_until(wake) => {
                        if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                            tracing::debug!(listener = name, "closing a connection with no request in time");
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(listener = name, "requests still open after the shutdown grace period"),
    }
}
