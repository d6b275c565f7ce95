//! The client-side rate limit of one Clerk secret key, shared by every job of this replica
//! that uses the key: a token bucket at Clerk's documented rate that backs off when Clerk
//! says otherwise (AIMD).
//!
//! - **Ceiling.** `per_window` requests per `window` (100 / 10 s for development keys, 1000 /
//!   10 s for production) with a bucket of one token, refilled at `(per_window - 1) / window`:
//!   then no span of `window` ever holds more than `per_window` requests, whatever Clerk's
//!   window alignment, and a backfill runs at 99 % of the documented rate.
//! - **Multiplicative decrease.** A 429 means someone else spends the same key (the customer's
//!   own app): the rate halves (down to a floor of a twentieth of the ceiling) and the
//!   bucket pauses for `Retry-After`.
//! - **Additive increase.** Every success gives back a fiftieth of the ceiling, so a shared
//!   key settles near what is left of it and a key that is free again is back at full speed
//!   after some fifty requests.
//! - **Clerk's hints.** When a response carries `X-RateLimit-Remaining: 0` with
//!   `X-RateLimit-Reset` (seconds), the bucket pauses until the reset instead of earning a 429.
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct AdaptiveLimiter {
    ceiling: f64,
    floor: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests per second now.
    rate: f64,
    tokens: f64,
    last: Instant,
    /// No request before this instant (a 429's `Retry-After`, or a reset Clerk announced).
    paused_until: Option<Instant>,
}

impl AdaptiveLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        let per_window = per_window.max(2) as f64;
        let ceiling = (per_window - 1.0) / window.as_secs_f64().max(0.001);
        AdaptiveLimiter {
            ceiling,
            floor: ceiling / 20.0,
            state: Mutex::new(State { rate: ceiling, tokens: 1.0, last: Instant::now(), paused_until: None }),
        }
    }

    /// Waits for a turn.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter poisoned");
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        s.paused_until = None;
                        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
                        s.tokens = (s.tokens + elapsed * s.rate).min(1.0);
                        s.last = now;
                        if s.tokens >= 1.0 {
                            s.tokens -= 1.0;
                            return;
                        }
                        Duration::from_secs_f64((1.0 - s.tokens) / s.rate)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A request went through: creep back up.
    pub fn on_success(&self) {
        let mut s = self.state.lock().expect("limiter poisoned");
        s.rate = (s.rate + self.ceiling / 50.0).min(self.ceiling);
    }

    /// Clerk answered 429: halve the rate and pause for `retry_after`.
    pub fn on_throttled(&self, retry_after: Duration) {
        let mut s = self.state.lock().expect("limiter poisoned");
        s.rate = (s.rate / 2.0).max(self.floor);
        s.tokens = 0.0;
        self.pause_locked(&mut s, retry_after);
    }

    /// Clerk announced that the window is spent until `reset` from now.
    pub fn on_exhausted(&self, reset: Duration) {
        let mut s = self.state.lock().expect("limiter poisoned");
        s.tokens = 0.0;
        self.pause_locked(&mut s, reset);
    }

    fn pause_locked(&self, s: &mut State, d: Duration) {
        let until = Instant::now() + d;
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        s.last = until;
    }

    /// Requests per second now (for logs and tests).
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("limiter poisoned").rate
    }

    pub fn ceiling(&self) -> f64 {
        self.ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_halve_and_successes_creep_back_to_the_ceiling() {
        let l = AdaptiveLimiter::new(101, Duration::from_secs(10));
        assert!((l.ceiling() - 10.0).abs() < 1e-9);
        l.on_throttled(Duration::ZERO);
        assert!((l.rate() - 5.0).abs() < 1e-9);
        for _ in 0..10 {
            l.on_throttled(Duration::ZERO);
        }
        assert!((l.rate() - 0.5).abs() < 1e-9, "never below the floor");
        for _ in 0..100 {
            l.on_success();
        }
        assert!((l.rate() - 10.0).abs() < 1e-9, "never above the ceiling");
    }

    #[tokio::test]
    async fn the_rate_is_kept() {
        let l = AdaptiveLimiter::new(1001, Duration::from_secs(1)); // 1000/s
        let start = Instant::now();
        for _ in 0..101 {
            l.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
        assert!(took < Duration::from_millis(400), "{took:?}");
    }
}
