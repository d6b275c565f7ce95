//! The token bucket behind the fake's rate limit ([`RateLimit`] configures it).
//!
//! One bucket is shared by every request, like Clerk's per-instance limit: each request takes one
//! token; an empty bucket answers 429 with `Retry-After` = whole seconds until a token is back.

use std::time::Instant;

/// Rate limit of the fake instance: a bucket of `capacity` tokens refilled continuously at
/// `refill_per_sec` tokens per second, starting full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Bucket size: the burst a client may send at once.
    pub capacity: u32,
    /// Tokens added per second (fractional allowed; `0` never refills).
    pub refill_per_sec: f64,
}

impl RateLimit {
    /// Clerk's limit for development keys: 100 requests per 10 s.
    pub const DEVELOPMENT: RateLimit = RateLimit { capacity: 100, refill_per_sec: 10.0 };

    /// Clerk's limit for production instances: 1000 requests per 10 s.
    pub const PRODUCTION: RateLimit = RateLimit { capacity: 1000, refill_per_sec: 100.0 };
}

impl Default for RateLimit {
    /// [`RateLimit::DEVELOPMENT`].
    fn default() -> Self {
        RateLimit::DEVELOPMENT
    }
}

/// Seconds announced in `Retry-After` when the bucket never refills.
const RETRY_AFTER_NEVER_SECS: u64 = 60;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket { limit, tokens: f64::from(limit.capacity), last: now }
    }

    /// Takes one token, or returns the whole seconds (>= 1) until one is available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        let refill = self.limit.refill_per_sec.max(0.0);
        self.tokens = (self.tokens + elapsed * refill).min(f64::from(self.limit.capacity));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if refill <= 0.0 {
            return Err(RETRY_AFTER_NEVER_SECS);
        }
        let secs = ((1.0 - self.tokens) / refill).ceil();
        Err(if secs.is_finite() { (secs as u64).max(1) } else { RETRY_AFTER_NEVER_SECS })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_drains_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit { capacity: 2, refill_per_sec: 0.5 }, t0);
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(b.try_take(t0), Err(2));
        assert_eq!(b.try_take(t0 + Duration::from_millis(1500)), Err(1));
        assert_eq!(b.try_take(t0 + Duration::from_secs(2)), Ok(()));
        // Never more than capacity after a long pause.
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(b.try_take(later), Ok(()));
        assert_eq!(b.try_take(later), Ok(()));
        assert!(b.try_take(later).is_err());
    }

    #[test]
    fn zero_refill_never_recovers() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit { capacity: 0, refill_per_sec: 0.0 }, t0);
        assert_eq!(b.try_take(t0), Err(RETRY_AFTER_NEVER_SECS));
    }
}
