//! A tiny xorshift generator for poll jitter and source-port choice. Not for
//! secrets; seeded from `/dev/urandom`, falling back to time and pid.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Rng(u64);

impl Rng {
    pub fn from_entropy() -> Self {
        let mut seed = [0u8; 8];
        let got = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        let mut s = u64::from_le_bytes(seed);
        if got.is_err() || s == 0 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            s = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        }
        Rng(s | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A uniform-enough value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A factor in `[1 - spread, 1 + spread]`.
    pub fn jitter(&mut self, spread: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + spread * (2.0 * unit - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds() {
        let mut r = Rng::from_entropy();
        for _ in 0..10_000 {
            let j = r.jitter(0.1);
            assert!((0.9..=1.1).contains(&j), "{j}");
            assert!(r.below(37) < 37);
        }
    }
}
