//! State shared by every connection of one `meter-sim dlms` process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::faults::FaultRates;
use crate::model::INTERVAL_SECS;
use crate::Model;

/// The largest load-profile history the server keeps (7 days), so one buffer fits the engine's
/// value buffer ([`super::conn::VALUE_BUFFER`]).
pub const MAX_HISTORY_INTERVALS: u32 = 7 * 96;

/// What one `meter-sim dlms` process serves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Meters `0..meters`.
    pub meters: usize,
    /// Added to the wall clock for every meter (from `--at` or `--clock-offset`), in seconds.
    pub clock_offset_secs: i64,
    /// Intervals in the load profile (ending in `(now − history·15 min, now]`), at most
    /// [`MAX_HISTORY_INTERVALS`].
    pub history_intervals: u32,
    /// HDLC framing instead of the TCP wrapper.
    pub hdlc: bool,
    pub faults: FaultRates,
}

impl SimConfig {
    pub fn new(seed: u64, meters: usize) -> Self {
        SimConfig {
            seed,
            meters,
            clock_offset_secs: 0,
            history_intervals: 3 * 96,
            hdlc: false,
            faults: FaultRates { seed, ..FaultRates::default() },
        }
    }
}

/// What is kept per meter that has been connected to at least once (small).
#[derive(Debug, Clone, Copy, Default)]
pub struct MeterState {
    /// Sessions accepted so far.
    pub sessions: u32,
    /// Offset set by a clock SET, relative to wall + config offset (replaces the drift).
    pub clock_set: Option<i64>,
    /// Disconnect control: relay open.
    pub disconnected: bool,
    /// The meter's own invocation counter (last used).
    pub server_ic: u32,
    /// The highest invocation counter accepted from a client, with the client's system title.
    pub client_ic: Option<([u8; 8], u32)>,
}

/// Counters of a run, printed as JSON at exit.
#[derive(Debug, Default)]
pub struct Stats {
    pub sessions: AtomicU64,
    pub foreign_address: AtomicU64,
    pub associations: AtomicU64,
    pub associations_refused: AtomicU64,
    pub requests: AtomicU64,
    pub replies: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub refused: AtomicU64,
    pub no_answer: AtomicU64,
    pub dropped: AtomicU64,
    pub corrupted: AtomicU64,
    pub tampered: AtomicU64,
    pub delayed: AtomicU64,
    pub wrong_keys_sessions: AtomicU64,
    pub wrong_password_sessions: AtomicU64,
    pub clock_sets: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub meters: usize,
    pub sessions: u64,
    pub foreign_address: u64,
    pub associations: u64,
    pub associations_refused: u64,
    pub requests: u64,
    pub replies: u64,
    pub protocol_errors: u64,
    pub faults: FaultSummary,
    pub clock_sets: u64,
    pub elapsed_s: f64,
}

/// Faults injected.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FaultSummary {
    pub refused: u64,
    pub no_answer: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub tampered: u64,
    pub delayed: u64,
    pub wrong_keys_sessions: u64,
    pub wrong_password_sessions: u64,
}

/// The shared state of a server process.
#[derive(Debug)]
pub struct Sim {
    pub config: SimConfig,
    pub model: Model,
    meters: Mutex<HashMap<u32, MeterState>>,
    pub stats: Stats,
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Sim {
    pub fn new(mut config: SimConfig) -> Self {
        config.history_intervals = config.history_intervals.clamp(1, MAX_HISTORY_INTERVALS);
        let model = Model::with_meters(config.seed, config.meters);
        Sim { config, model, meters: Mutex::new(HashMap::new()), stats: Stats::default() }
    }

    /// Runs `f` on meter `index`'s state (created on first use).
    pub fn with_meter<T>(&self, index: usize, f: impl FnOnce(&mut MeterState) -> T) -> T {
        let mut map = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(index as u32).or_default())
    }

    /// Meter `index`'s state, if it has one.
    pub fn meter(&self, index: usize) -> Option<MeterState> {
        self.meters.lock().unwrap_or_else(|e| e.into_inner()).get(&(index as u32)).copied()
    }

    /// The clock of meter `index` at wall time `wall`: wall + configured offset + (clock SET offset, or
    /// else the drift fault).
    pub fn meter_now(&self, index: usize, wall: DateTime<Utc>) -> DateTime<Utc> {
        let own = self.meter(index).and_then(|m| m.clock_set).unwrap_or_else(|| self.config.faults.drift_secs(index));
        wall + Duration::seconds(self.config.clock_offset_secs + own)
    }

    /// Records a clock SET of meter `index` to `set` at wall time `wall`.
    pub fn set_clock(&self, index: usize, wall: DateTime<Utc>, set: DateTime<Utc>) {
        let offset = (set - wall).num_seconds() - self.config.clock_offset_secs;
        self.with_meter(index, |m| m.clock_set = Some(offset));
        self.stats.clock_sets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self, elapsed_s: f64) -> Summary {
        let s = &self.stats;
        Summary {
            meters: self.config.meters,
            sessions: load(&s.sessions),
            foreign_address: load(&s.foreign_address),
            associations: load(&s.associations),
            associations_refused: load(&s.associations_refused),
            requests: load(&s.requests),
            replies: load(&s.replies),
            protocol_errors: load(&s.protocol_errors),
            faults: FaultSummary {
                refused: load(&s.refused),
                no_answer: load(&s.no_answer),
                dropped: load(&s.dropped),
                corrupted: load(&s.corrupted),
                tampered: load(&s.tampered),
                delayed: load(&s.delayed),
                wrong_keys_sessions: load(&s.wrong_keys_sessions),
                wrong_password_sessions: load(&s.wrong_password_sessions),
            },
            clock_sets: load(&s.clock_sets),
            elapsed_s,
        }
    }
}

/// The last interval end at or before `t`.
pub fn floor_interval(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(INTERVAL_SECS), 0).unwrap_or(t)
}
