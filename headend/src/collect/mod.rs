//! Polling collectors: one scheduler for every polled protocol (DLMS/COSEM, Modbus TCP).
//!
//! - [`schedule`]: when a task (load profile, registers, events, clock) is due for a meter.
//! - [`leases`]: which buckets of meters this replica polls (leases in PostgreSQL, shared by replicas).
//! - [`limits`]: how many sessions run at once, per cell, and how fast new connections start.
//! - [`scheduler`]: rounds over a group's meters; each session runs in its own task, retried with
//!   backoff, and hands its readings to the writer (the same writer as MQTT).
//! - [`status`]: what each poll learnt (status, clock deviation, capabilities), written in batches.
//! - [`ledger`]: the read-completeness ledger's read side (read rate, missing intervals).
//!
//! A protocol plugs in by implementing [`Poller`].

pub mod dlms;
pub mod keys;
pub mod leases;
pub mod ledger;
pub mod limits;
pub mod pollers;
pub mod push;
pub mod schedule;
pub mod scheduler;
pub mod status;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use schemas::reading::Reading;

/// A meter to poll, as the inventory describes it.
#[derive(Debug, Clone)]
pub struct Target {
    pub meter_id: i32,
    pub serial: Arc<str>,
    /// `meters.address`: `host[:port]` for DLMS, `host:port/unit` for Modbus.
    pub address: Arc<str>,
    /// The cell or concentrator (`meters.transformer`), for the per-cell session limit.
    pub cell: Arc<str>,
}

/// What one session should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tasks {
    /// Read the load profile for intervals ending after this instant (exclusive).
    pub profile_after: Option<DateTime<Utc>>,
    /// Read the billing registers.
    pub registers: bool,
    /// Read the event log for entries after this instant.
    pub events_after: Option<DateTime<Utc>>,
    /// Read (and possibly set) the clock.
    pub clock: bool,
}

impl Tasks {
    pub fn is_empty(&self) -> bool {
        self.profile_after.is_none() && !self.registers && self.events_after.is_none() && !self.clock
    }
}

/// A meter event read from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    pub ts: DateTime<Utc>,
    pub code: i32,
    pub detail: serde_json::Value,
}

/// What a meter said about itself, kept for later sessions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    pub max_pdu: Option<u32>,
    pub max_list: Option<u32>,
    pub selective_access: Option<bool>,
    pub security: Option<String>,
    /// Anything else protocol-specific (conformance bits, capture objects…).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// The outcome of a successful session.
#[derive(Debug, Default)]
pub struct Collected {
    pub readings: Vec<Reading>,
    pub events: Vec<MeterEvent>,
    /// Meter clock minus head-end clock, when the clock was read.
    pub clock_deviation: Option<chrono::Duration>,
    /// The clock was set during the session.
    pub clock_synced: bool,
    /// Set when the session learnt something new about the meter.
    pub capabilities: Option<Capabilities>,
    /// Latest interval end of the load profile the meter returned (even when no reading was new).
    pub profile_until: Option<DateTime<Utc>>,
    /// Latest event time read.
    pub events_until: Option<DateTime<Utc>>,
}

/// Why a session failed. `reason` is a short, stable label for metrics; `detail` is for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct PollError {
    pub reason: &'static str,
    pub detail: String,
    /// Worth another attempt (timeouts, refused or dropped connections, busy devices).
    pub retryable: bool,
}

impl PollError {
    pub fn new(reason: &'static str, detail: impl Into<String>, retryable: bool) -> Self {
        Self { reason, detail: detail.into(), retryable }
    }
}

/// A protocol's session: connect, do the tasks, disconnect. Must not panic on any input and must
/// bound every step with a timeout.
pub trait Poller: Send + Sync + 'static {
    /// `dlms`, `modbus`: the label in metrics and logs.
    fn protocol(&self) -> &'static str;

    fn poll<'a>(
        &'a self,
        target: &'a Target,
        tasks: &'a Tasks,
        known: Option<&'a Capabilities>,
    ) -> BoxFuture<'a, Result<Collected, PollError>>;

    /// Called once before a round's sessions start, with the round's meters: a chance to do in a few
    /// statements what each session would otherwise do alone (e.g. reserving invocation counters).
    fn prepare<'a>(&'a self, targets: &'a [Target]) -> BoxFuture<'a, ()> {
        let _ = targets;
        Box::pin(async {})
    }
}

/// An operator's command to a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeterCommand {
    /// Open the breaker (DLMS class 70 method 1 on 0.0.96.3.10.255).
    Disconnect,
    /// Close it again (method 2).
    Reconnect,
    /// Lift the meter's authentication cool-down (`collect.auth_cooldown`) once its password or
    /// keys are put right, and request a polling round: no session of its own.
    RetryPolling,
}

impl MeterCommand {
    pub const fn as_str(self) -> &'static str {
        match self {
            MeterCommand::Disconnect => "disconnect",
            MeterCommand::Reconnect => "reconnect",
            MeterCommand::RetryPolling => "retry_polling",
        }
    }

    /// The disconnect control's method (class 70) this command invokes, if it is one.
    pub const fn disconnect_method(self) -> Option<i8> {
        match self {
            MeterCommand::Disconnect => Some(1),
            MeterCommand::Reconnect => Some(2),
            MeterCommand::RetryPolling => None,
        }
    }
}

/// Executes operator commands on meters; the caller records them in `meter_commands`.
pub trait Commander: Send + Sync + 'static {
    /// Runs the command in its own session; `Ok` carries what the meter reported afterwards.
    fn execute<'a>(&'a self, target: &'a Target, command: MeterCommand) -> BoxFuture<'a, Result<String, PollError>>;
}
