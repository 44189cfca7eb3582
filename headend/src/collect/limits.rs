//! Session limits: at most N sessions at once, at most M per cell or concentrator (a GPRS cell or a
//! data concentrator carries only so many sessions), and new connections paced by a token bucket
//! so a round does not open 200,000 sockets in the first second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Held for the length of a session.
pub struct SessionPermit {
    _global: OwnedSemaphorePermit,
    _cell: OwnedSemaphorePermit,
}

pub struct Limits {
    global: Arc<Semaphore>,
    per_cell: usize,
    cells: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    pacer: Pacer,
}

impl Limits {
    pub fn new(max_sessions: usize, per_cell: usize, connections_per_second: u32) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_sessions.max(1))),
            per_cell: per_cell.max(1),
            cells: Mutex::new(HashMap::new()),
            pacer: Pacer::new(connections_per_second),
        }
    }

    /// Waits for a cell slot, then a global slot, then a connection token. The cell comes first so
    /// a crowded cell does not hold global slots that other cells could use.
    pub async fn acquire(&self, cell: &Arc<str>) -> SessionPermit {
        let sem = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            cells.entry(cell.clone()).or_insert_with(|| Arc::new(Semaphore::new(self.per_cell))).clone()
        };
        // The semaphores are never closed, so acquiring cannot fail.
        let cell = match sem.acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable_closed(),
        };
        let global = match self.global.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable_closed(),
        };
        self.pacer.wait().await;
        SessionPermit { _global: global, _cell: cell }
    }

    /// Sessions running now.
    pub fn in_use(&self, max_sessions: usize) -> usize {
        max_sessions.saturating_sub(self.global.available_permits())
    }
}

#[allow(clippy::panic)]
fn unreachable_closed() -> ! {
    panic!("session semaphores are never closed")
}

/// A token bucket: `rate` tokens per second, bursts of up to a tenth of a second's worth.
pub struct Pacer {
    interval: Option<Duration>,
    burst: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Self {
        let interval = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
        Self { interval, burst: Duration::from_millis(100), next: Mutex::new(Instant::now()) }
    }

    pub async fn wait(&self) {
        let Some(interval) = self.interval else { return };
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Unused capacity accumulates up to the burst.
            let slot = (*next).max(now.checked_sub(self.burst).unwrap_or(now));
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spreads_connections() {
        let p = Pacer::new(100);
        let start = Instant::now();
        for _ in 0..110 {
            p.wait().await;
        }
        // No credit at start: one token every 10 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1085) && took <= Duration::from_millis(1095), "{took:?}");
        // After a second of idleness at most 100 ms of credit is saved up: 11 tokens at once, then 9 paced.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        for _ in 0..20 {
            p.wait().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(85) && took <= Duration::from_millis(95), "{took:?}");
    }

    #[tokio::test]
    async fn a_crowded_cell_does_not_take_global_slots() {
        let limits = Arc::new(Limits::new(3, 1, 0));
        let a: Arc<str> = "cell-a".into();
        let b: Arc<str> = "cell-b".into();
        let held = limits.acquire(&a).await;
        // A second session in cell a waits for the cell, holding no global slot.
        let l2 = limits.clone();
        let a2 = a.clone();
        let waiting = tokio::spawn(async move { l2.acquire(&a2).await });
        tokio::task::yield_now().await;
        assert_eq!(limits.in_use(3), 1);
        let _other = tokio::time::timeout(Duration::from_secs(1), limits.acquire(&b)).await.expect("cell b is free");
        assert_eq!(limits.in_use(3), 2);
        drop(held);
        let _second = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("released").expect("task");
        assert_eq!(limits.in_use(3), 2);
    }
}
