//! Meter serial → meter id, cached in memory. Loaded whole at start; a miss reloads the whole
//! inventory at most every 30 s (an import while running) and otherwise asks for the one serial;
//! unknown serials are remembered for `unknown_meter_ttl` so a flood of them does not reach the
//! database.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

/// The inventory could not be asked (the database is down): the caller retries later; the message
/// is neither stored nor refused.
#[derive(Debug, thiserror::Error)]
#[error("meter directory unavailable: {0}")]
pub struct Unavailable(String);

const FULL_RELOAD_EVERY: Duration = Duration::from_secs(30);
const MAX_NEGATIVE: usize = 100_000;

struct Inner {
    known: HashMap<Box<str>, i32>,
    unknown: HashMap<Box<str>, Instant>,
    last_full: Option<Instant>,
}

/// The cache.
pub struct MeterDirectory {
    pool: Pool,
    unknown_ttl: Duration,
    inner: RwLock<Inner>,
}

impl MeterDirectory {
    pub fn new(pool: Pool, unknown_ttl: Duration) -> Self {
        MeterDirectory {
            pool,
            unknown_ttl,
            inner: RwLock::new(Inner { known: HashMap::new(), unknown: HashMap::new(), last_full: None }),
        }
    }

    /// Loads every meter. Returns how many.
    pub async fn load_all(&self) -> Result<usize, Unavailable> {
        let client = self.pool.get().await.map_err(|e| Unavailable(e.to_string()))?;
        let rows = client.query("SELECT serial, id FROM meters", &[]).await.map_err(|e| Unavailable(e.to_string()))?;
        let known: HashMap<Box<str>, i32> = rows.iter().map(|r| (Box::from(r.get::<_, &str>(0)), r.get(1))).collect();
        let n = known.len();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.known = known;
        inner.unknown.clear();
        inner.last_full = Some(Instant::now());
        Ok(n)
    }

    /// The meter id of a serial, `None` when the inventory does not have it.
    pub async fn resolve(&self, serial: &str) -> Result<Option<i32>, Unavailable> {
        let full_due = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(id) = inner.known.get(serial) {
                return Ok(Some(*id));
            }
            if inner.unknown.get(serial).is_some_and(|t| t.elapsed() < self.unknown_ttl) {
                return Ok(None);
            }
            inner.last_full.is_none_or(|t| t.elapsed() >= FULL_RELOAD_EVERY)
        };
        let found = if full_due {
            self.load_all().await?;
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            inner.known.get(serial).copied()
        } else {
            let client = self.pool.get().await.map_err(|e| Unavailable(e.to_string()))?;
            let row = client
                .query_opt("SELECT id FROM meters WHERE serial = $1", &[&serial])
                .await
                .map_err(|e| Unavailable(e.to_string()))?;
            row.map(|r| r.get::<_, i32>(0))
        };
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match found {
            Some(id) => {
                inner.known.insert(serial.into(), id);
            }
            None => {
                if inner.unknown.len() >= MAX_NEGATIVE {
                    inner.unknown.clear();
                }
                inner.unknown.insert(serial.into(), Instant::now());
            }
        }
        Ok(found)
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
