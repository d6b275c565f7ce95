//! The client-side rate limit of one Clerk secret key, shared by every job of this replica
//! that uses the key: Clerk's documented rate, burst included, and backing off when Clerk
//! says otherwise (AIMD).
//!
//! - **Ceiling, exactly.** Clerk documents `per_window` requests per `window` (100 / 10 s for
//!   development keys, 1000 / 10 s for production). The limiter keeps a sliding log of the
//!   last `per_window` requests and lets a request go only while fewer than `per_window` of
//!   them are in flight or *finished* less than `window` ago. Counting from the moment the
//!   answer arrived (not the moment the request left) makes the guarantee hold at Clerk's end
//!   whatever the network adds: a request reaches Clerk before its answer reaches us, so two
//!   requests `per_window` apart in our log reach Clerk more than `window` apart, and no span
//!   of `window` at Clerk ever holds more than `per_window` of ours — a fixed window, a
//!   sliding window and a token bucket of `per_window` refilled at `per_window / window` all
//!   accept that. A backfill therefore sends its first `per_window` requests as fast as it
//!   can use them (the documented burst) and then exactly `per_window` per `window` plus one
//!   round trip: the full documented rate, where a bucket of one token could only approach it.
//! - **Multiplicative decrease.** A 429 means someone else spends the same key (the customer's
//!   own app): the requests allowed per window halve (down to a floor of a twentieth of the
//!   ceiling, at least one) and the limiter pauses for `Retry-After`.
//! - **Additive increase.** Every success gives back a fiftieth of the ceiling, so a shared
//!   key settles near what is left of it and a key that is free again is back at full speed
//!   after some fifty requests.
//! - **Clerk's hints.** When a response carries `X-RateLimit-Remaining: 0` with
//!   `X-RateLimit-Reset` (seconds), the limiter pauses until the reset instead of earning a
//!   429.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct AdaptiveLimiter {
    /// Requests per window Clerk documents.
    ceiling: f64,
    floor: f64,
    window: Duration,
    state: Mutex<State>,
    /// Wakes waiters when a request finishes (a slot may have opened).
    finished: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests allowed per window now (`ceiling` unless Clerk pushed back).
    allowed: f64,
    /// Requests sent and not answered yet.
    in_flight: usize,
    /// When the answers of the requests of the last window arrived, oldest first.
    finished: VecDeque<Instant>,
    /// No request before this instant (a 429's `Retry-After`, or a reset Clerk announced).
    paused_until: Option<Instant>,
}

/// One admitted request's place in the log: dropping it (the answer arrived, or the request
/// was abandoned) dates the request, and the window counts from then.
#[derive(Debug)]
#[must_use = "the permit dates the request when dropped"]
pub struct Permit<'a> {
    limiter: &'a AdaptiveLimiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock().expect("limiter poisoned");
        s.in_flight = s.in_flight.saturating_sub(1);
        s.finished.push_back(Instant::now());
        drop(s);
        self.limiter.finished.notify_waiters();
    }
}

impl AdaptiveLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        let ceiling = f64::from(per_window.max(1));
        AdaptiveLimiter {
            ceiling,
            floor: (ceiling / 20.0).max(1.0),
            window: window.max(Duration::from_millis(1)),
            state: Mutex::new(State { allowed: ceiling, in_flight: 0, finished: VecDeque::new(), paused_until: None }),
            finished: Notify::new(),
        }
    }

    /// Waits for a turn; hold the permit until the answer has arrived.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Registered before looking, so a request finishing in between still wakes us.
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let wait = {
                let mut s = self.state.lock().expect("limiter poisoned");
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => Some(until - now),
                    _ => {
                        s.paused_until = None;
                        while s.finished.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
                            s.finished.pop_front();
                        }
                        let allowed = s.allowed.floor().max(1.0) as usize;
                        if s.in_flight + s.finished.len() < allowed {
                            s.in_flight += 1;
                            return Permit { limiter: self };
                        }
                        // Full: the oldest answer leaving the window opens a slot; with every
                        // slot in flight, only an answer (then a window) does.
                        s.finished.front().map(|t| (*t + self.window).saturating_duration_since(now))
                    }
                }
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut finished => {}
                    }
                }
                None => finished.await,
            }
        }
    }

    /// A request went through: creep back up.
    pub fn on_success(&self) {
        let mut s = self.state.lock().expect("limiter poisoned");
        s.allowed = (s.allowed + self.ceiling / 50.0).min(self.ceiling);
    }

    /// Clerk answered 429: halve the requests allowed per window and pause for `retry_after`.
    pub fn on_throttled(&self, retry_after: Duration) {
        let mut s = self.state.lock().expect("limiter poisoned");
        s.allowed = (s.allowed / 2.0).max(self.floor);
        Self::pause_locked(&mut s, retry_after);
    }

    /// Clerk announced that the window is spent until `reset` from now.
    pub fn on_exhausted(&self, reset: Duration) {
        let mut s = self.state.lock().expect("limiter poisoned");
        Self::pause_locked(&mut s, reset);
    }

    fn pause_locked(s: &mut State, d: Duration) {
        let until = Instant::now() + d;
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Requests allowed per window now (for logs and tests).
    pub fn allowed(&self) -> f64 {
        self.state.lock().expect("limiter poisoned").allowed
    }

    /// Requests per window Clerk documents for the key.
    pub fn ceiling(&self) -> f64 {
        self.ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_halve_and_successes_creep_back_to_the_ceiling() {
        let l = AdaptiveLimiter::new(100, Duration::from_secs(10));
        assert!((l.ceiling() - 100.0).abs() < 1e-9);
        l.on_throttled(Duration::ZERO);
        assert!((l.allowed() - 50.0).abs() < 1e-9);
        for _ in 0..10 {
            l.on_throttled(Duration::ZERO);
        }
        assert!((l.allowed() - 5.0).abs() < 1e-9, "never below the floor");
        for _ in 0..100 {
            l.on_success();
        }
        assert!((l.allowed() - 100.0).abs() < 1e-9, "never above the ceiling");
    }

    #[tokio::test]
    async fn the_burst_goes_at_once_and_then_one_per_answer_a_window_old() {
        let window = Duration::from_millis(500);
        let l = AdaptiveLimiter::new(20, window);
        let start = Instant::now();
        let mut answered = Vec::new();
        for _ in 0..20 {
            let permit = l.acquire().await;
            answered.push(Instant::now());
            drop(permit);
        }
        // The burst: 20 requests without waiting for the window.
        assert!(start.elapsed() < window, "{:?}", start.elapsed());
        for i in 0..20 {
            let permit = l.acquire().await;
            let sent = Instant::now();
            assert!(
                sent >= answered[i] + window,
                "request {} left before request {i}'s answer was a window old",
                i + 20
            );
            answered.push(Instant::now());
            drop(permit);
        }
        // Exactly the rate: 40 requests take one window, plus scheduling slack.
        let took = start.elapsed();
        assert!(took >= window && took < window * 4, "{took:?}");
    }

    #[tokio::test]
    async fn requests_in_flight_hold_their_slot_until_answered() {
        let l = std::sync::Arc::new(AdaptiveLimiter::new(2, Duration::from_millis(50)));
        let a = l.acquire().await;
        let b = l.acquire().await;
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move {
                let _p = l.acquire().await;
                Instant::now()
            })
        };
        // However long the two requests take, the third waits for an answer plus the window.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!waiter.is_finished(), "a third request left while two were in flight");
        let answered = Instant::now();
        drop(a);
        let sent = waiter.await.unwrap();
        assert!(sent >= answered + Duration::from_millis(50));
        drop(b);
    }

    #[tokio::test]
    async fn a_throttle_pauses_and_narrows_the_window() {
        let l = AdaptiveLimiter::new(4, Duration::from_millis(200));
        l.on_throttled(Duration::from_millis(100));
        let start = Instant::now();
        let p = l.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(100), "Retry-After is honoured");
        drop(p);
        drop(l.acquire().await);
        // Two allowed per window now: the third waits for the first answer to age.
        let third = Instant::now();
        drop(l.acquire().await);
        assert!(third.elapsed() >= Duration::from_millis(150), "{:?}", third.elapsed());
    }
}
