//! Attempts per client address per minute (login and activation), in memory. Each replica counts
//! its own; the per-account lock-out in the database is what holds across replicas.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A fixed one-minute window per address.
#[derive(Debug)]
pub struct Attempts {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Attempts {
    pub fn new(per_minute: u32) -> Self {
        Attempts { per_minute, seen: Mutex::new(HashMap::new()) }
    }

    /// Counts an attempt from `ip`; false when it is over the limit (the attempt is refused).
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_quota_per_minute_and_others_are_unaffected() {
        let a = Attempts::new(3);
        let t0 = Instant::now();
        let (x, y) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!((0..3).all(|_| a.allow_at(x, t0)));
        assert!(!a.allow_at(x, t0 + Duration::from_secs(59)));
        assert!(a.allow_at(y, t0 + Duration::from_secs(59)));
        assert!(a.allow_at(x, t0 + Duration::from_secs(61)));
    }
}
