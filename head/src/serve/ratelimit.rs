//! Rate limiting for logs triggered by node traffic: a flood of bad packets
//! must not become a flood of log lines.

use std::time::{Duration, Instant};

/// Allows `burst` events per `window`, then counts what it suppressed.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    burst: u32,
    started: Instant,
    seen: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            window,
            burst,
            started: Instant::now(),
            seen: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this event may be logged; `n` events were suppressed
    /// since the last one logged. `None` when it must be dropped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.started) >= self.window {
            self.started = now;
            self.seen = 0;
        }
        if self.seen < self.burst {
            self.seen += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_suppresses_then_reports_the_count() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2, Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), Some(2));
    }
}
