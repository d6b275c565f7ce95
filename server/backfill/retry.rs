//! The one retry policy of the backfill: Clerk calls and page writes both go through
//! [`with_retries`], with a predicate that sorts an error into "retry after a backoff",
//! "retry after the server's own delay" (a 429's `Retry-After`) or "give up".
//!
//! The schedule is exponential with "equal jitter": attempt *n* waits uniformly in
//! `[c/2, c]` for `c = base·2^(n-1)`, capped — never hammering a struggling server, never
//! waiting much longer than needed, and replicas that failed together do not retry together.
use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff ceiling.
    pub base: Duration,
    /// Tries in all (the first included) for errors that back off.
    pub max_attempts: u32,
    /// Server-imposed waits (429s) tolerated in a row before giving up.
    pub max_throttled: u32,
}

/// The longest single backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What to do about one failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Permanent: give up now.
    No,
    /// Transient: retry after the jittered backoff (counts against `max_attempts`).
    Backoff,
    /// The server said when: retry after this delay (counts against `max_throttled`).
    After(Duration),
}

/// The last error, and how many tries were made.
#[derive(Debug)]
pub struct Exhausted<E> {
    pub error: E,
    pub attempts: u32,
}

/// Runs `op` until it succeeds, `classify` says [`Retry::No`], or the policy runs out.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut op: F,
    classify: impl Fn(&E) -> Retry,
) -> Result<T, Exhausted<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let (mut failures, mut throttled) = (0u32, 0u32);
    loop {
        let error = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = match classify(&error) {
            Retry::No => return Err(Exhausted { error, attempts: failures + throttled + 1 }),
            Retry::Backoff => {
                failures += 1;
                throttled = 0;
                if failures >= policy.max_attempts {
                    return Err(Exhausted { error, attempts: failures });
                }
                backoff(policy.base, failures)
            }
            Retry::After(delay) => {
                throttled += 1;
                if throttled > policy.max_throttled {
                    return Err(Exhausted { error, attempts: throttled });
                }
                delay
            }
        };
        tracing::warn!(what, failures, throttled, delay_ms = delay.as_millis() as u64, error = %error, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The jittered delay before retry number `attempt` (1-based).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(BACKOFF_CAP);
    let ms = ceiling.as_millis().max(2) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FAST: RetryPolicy = RetryPolicy { base: Duration::from_millis(1), max_attempts: 3, max_throttled: 2 };

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            let d = backoff(base, attempt);
            let ceiling = base.saturating_mul(1 << (attempt - 1).min(10)).min(BACKOFF_CAP);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(
            &FAST,
            "test",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("down")
            },
            |_| Retry::Backoff,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!((e.attempts, calls.load(Ordering::SeqCst)), (3, 3));
    }

    #[tokio::test]
    async fn permanent_errors_stop_at_once_and_success_returns() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries(
            &FAST,
            "test",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("rejected")
            },
            |_| Retry::No,
        )
        .await;
        assert_eq!(r.unwrap_err().attempts, 1);
        let n = AtomicU32::new(0);
        let ok = with_retries(
            &FAST,
            "test",
            || async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err("later")
                } else {
                    Ok(7)
                }
            },
            |_| Retry::After(Duration::from_millis(1)),
        )
        .await
        .unwrap();
        assert_eq!(ok, 7);
    }
}
