//! Rounds of polling sessions. One task per group of meters wakes at the group's next slot, works out
//! which tasks are due for each of its meters, and starts one session task per meter. A session
//! waits for its limits (cell, global, connection pacing), runs the protocol's [`Poller`], retries a
//! retryable failure with exponential backoff and jitter (holding no slot while it waits), hands
//! the readings to the writer and reports its outcome. A failing or slow meter never holds up
//! another: the round ends when every session has finished or given up.
//!
//! A replica polls only the meters of the buckets it leases ([`super::leases`]); a session starts
//! only while its bucket's lease holds, and a round starts whenever the replica gains buckets.
//! Meters taken over from another replica start from what the database says: the last stored
//! interval and the last successful poll (so a meter read this slot by the previous holder is not
//! read again).
//!
//! That is exact because a session's success is committed in the transaction of its readings
//! ([`crate::writer::PollMark`]: `meter_poll_status.last_success_at` and its events): a poll whose
//! readings are stored is seen as done by the next holder, one whose readings are not is not — a
//! poller killed mid-round costs only its sessions not yet committed, read again by the taker
//! (their readings stored once). A session holds its bucket until that commit, so a bucket handed
//! back to rebalance has nothing in flight. What the scheduler remembers of a meter is kept only
//! while its bucket stays held under the same claim ([`Leases::epoch`]): a bucket lost and claimed
//! back is loaded from the database again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::limits::Limits;
use super::schedule::Period;
use super::status::SessionReport;
use super::{Capabilities, Collected, PollError, Poller, Target, Tasks};
use crate::config::{CollectConfig, GroupSchedule, PollProtocol};
use crate::metrics::Metrics;
use crate::writer::{Envelope, PollMark, WriterHandle};

/// How long a round waits before reading the poll status of meters taken over from another
/// replica. A bucket handed back has no session in flight (each held it until its readings were
/// committed); one that expired belonged to a dead or cut-off poller, whose last transaction the
/// database settles (commits or aborts) as soon as it notices the connection is gone.
const TAKEOVER_SETTLE: Duration = Duration::from_secs(2);

/// The longest a session may take, whatever its steps' own timeouts say.
const SESSION_CAP: Duration = Duration::from_secs(300);

/// What the scheduler remembers of a meter between rounds.
#[derive(Debug, Clone, Default)]
struct MeterState {
    /// The claim of the meter's bucket this was learnt under ([`Leases::epoch`]).
    epoch: u64,
    profile_until: Option<DateTime<Utc>>,
    profile_done: Option<DateTime<Utc>>,
    registers_done: Option<DateTime<Utc>>,
    events_until: Option<DateTime<Utc>>,
    events_done: Option<DateTime<Utc>>,
    clock_done: Option<DateTime<Utc>>,
}

/// The capability profiles learnt so far, one per meter. Meters of one model report the same
/// profile, so each distinct profile is kept once and shared: a JSON profile costs ≈ 2.4 KB of heap,
/// ≈ 500 MB for 205,000 meters if each kept its own copy.
#[derive(Default)]
struct KnownCaps {
    by_meter: HashMap<i32, Arc<Capabilities>>,
    distinct: HashMap<String, Arc<Capabilities>>,
    last: Option<Arc<Capabilities>>,
}

impl KnownCaps {
    fn from_map(caps: HashMap<i32, Capabilities>) -> Self {
        let mut k = KnownCaps::default();
        for (meter, c) in caps {
            k.insert(meter, c);
        }
        k
    }

    fn get(&self, meter: i32) -> Option<Arc<Capabilities>> {
        self.by_meter.get(&meter).cloned()
    }

    fn insert(&mut self, meter: i32, c: Capabilities) {
        // Most often the profile is the one seen last: a comparison, no serialisation.
        let shared = match &self.last {
            Some(last) if **last == c => last.clone(),
            _ => match serde_json::to_string(&c) {
                Ok(key) => self.distinct.entry(key).or_insert_with(|| Arc::new(c)).clone(),
                Err(_) => Arc::new(c),
            },
        };
        self.last = Some(shared.clone());
        self.by_meter.insert(meter, shared);
    }
}

/// Everything sessions share.
pub struct Shared {
    pub cfg: CollectConfig,
    pub pool: Pool,
    pub writer: WriterHandle,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// The buckets of meters this replica polls.
    pub leases: Arc<Leases>,
    pub status: mpsc::Sender<SessionReport>,
    /// Bumped to start a round of every group now (`POST /api/v1/collect/rounds`): meters whose
    /// tasks are due — those that failed, or whose slot has come — are polled without waiting.
    pub wake: tokio::sync::watch::Receiver<u64>,
}

/// The result of one round, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    pub meters: usize,
    pub ok: usize,
    pub failed: usize,
    pub readings: usize,
    /// Meters not polled because their bucket's lease was lost (or is being handed back) meanwhile.
    pub skipped: usize,
    /// Meters due but not polled: their last session failed authentication (`collect.auth_cooldown`).
    pub cooling_down: usize,
}

/// Polls one group until `stop`; sessions in flight when it is cancelled finish first (bounded by
/// their timeouts).
pub async fn run_group(shared: Arc<Shared>, group: GroupSchedule, poller: Arc<dyn Poller>, stop: CancellationToken) {
    let mut state: HashMap<i32, MeterState> = HashMap::new();
    let mut caps = KnownCaps::default();
    let mut loaded = false;
    let mut wake = shared.wake.clone();
    wake.mark_unchanged();
    let mut gained = shared.leases.gained();
    // The first round waits for the first lease step (which buckets are ours).
    shared.leases.ready(&stop).await;
    loop {
        if !loaded {
            match super::status::load_capabilities(&shared.pool, poller.protocol()).await {
                Ok(c) => {
                    caps = KnownCaps::from_map(c);
                    loaded = true;
                }
                Err(e) => {
                    tracing::warn!(group = %group.name, error = %e, "cannot load the group's state; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            }
        }
        wake.mark_unchanged();
        gained.mark_unchanged();
        match round(&shared, &group, &poller, &mut state, &mut caps, Utc::now(), &stop).await {
            Ok(summary) => tracing::info!(group = %group.name, ?summary, "polling round done"),
            Err(e) => tracing::warn!(group = %group.name, error = %e, "polling round could not start"),
        }
        let now = Utc::now();
        let next = periods(&group).iter().map(|p| p.next(now)).min().unwrap_or(now);
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            r = gained.changed(), if r_ok(&gained) => {
                let _ = r;
                tracing::info!(group = %group.name, "round started for newly leased buckets");
            }
            r = wake.changed() => {
                if r.is_err() {
                    // The trigger's sender is gone: only the schedule is left.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                } else {
                    tracing::info!(group = %group.name, "round started on request");
                }
            }
        }
        wake.mark_unchanged();
    }
}

/// The lease manager lives as long as the scheduler; a closed channel is never waited on.
fn r_ok(rx: &tokio::sync::watch::Receiver<u64>) -> bool {
    rx.has_changed().is_ok()
}

fn periods(g: &GroupSchedule) -> [Period; 4] {
    [
        Period::new(g.profile_every, g.offset),
        Period::new(g.registers_every, g.offset),
        Period::new(g.events_every, g.offset),
        Period::new(g.clock_every, g.offset),
    ]
}

/// Loads, for meters the scheduler has no state of yet, where their load profile ends in the
/// database (so a restart back-fills from there) and — for meters taken over from another replica
/// (`takeover`: their bucket expired or was handed back to rebalance) — when they were last polled
/// successfully: every task due at that time was done then, so a task whose slot has not passed
/// since is not due. `last_success_at` is committed with the session's readings, so it is set
/// exactly for the polls whose readings are stored. Meters of buckets never held or released by a
/// graceful stop are polled again from scratch, as a restarted head-end always did.
async fn load_state(shared: &Shared, ids: &[i32], takeover: bool) -> anyhow::Result<HashMap<i32, MeterState>> {
    let mut state: HashMap<i32, MeterState> = ids.iter().map(|id| (*id, MeterState::default())).collect();
    if ids.is_empty() {
        return Ok(state);
    }
    let since = Utc::now() - chrono::Duration::from_std(shared.cfg.backfill_max).unwrap_or_default();
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            "SELECT m.id, r.ts FROM unnest($1::int[]) AS m(id)
             CROSS JOIN LATERAL (SELECT ts FROM readings
                                 WHERE meter_id = m.id AND channel_id = 1 AND ts > $2
                                 ORDER BY ts DESC LIMIT 1) r",
            &[&ids, &since],
        )
        .await?;
    for r in rows {
        if let Some(st) = state.get_mut(&r.get::<_, i32>(0)) {
            st.profile_until = Some(r.get(1));
        }
    }
    if takeover {
        let rows = client
            .query(
                "SELECT meter_id, last_success_at FROM meter_poll_status
                 WHERE meter_id = ANY($1) AND last_success_at IS NOT NULL",
                &[&ids],
            )
            .await?;
        for r in rows {
            if let Some(st) = state.get_mut(&r.get::<_, i32>(0)) {
                let at: DateTime<Utc> = r.get(1);
                st.profile_done = Some(at);
                st.registers_done = Some(at);
                st.events_done = Some(at);
                st.clock_done = Some(at);
            }
        }
    }
    Ok(state)
}

/// Meters whose last session failed authentication less than `auth_cooldown` × 2^(failures in a
/// row − 1), at most `auth_cooldown_max`, before `now`, unless an operator lifted the cool-down
/// since (`retry_polling`). Read from `meter_poll_status`, so the cool-down holds across restarts
/// and replicas.
async fn cooling_down(shared: &Shared, now: DateTime<Utc>) -> anyhow::Result<HashSet<i32>> {
    let cfg = &shared.cfg;
    if cfg.auth_cooldown.is_zero() {
        return Ok(HashSet::new());
    }
    let (base, max) = (cfg.auth_cooldown.as_secs_f64(), cfg.auth_cooldown_max.as_secs_f64());
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            "SELECT meter_id FROM meter_poll_status
             WHERE last_error LIKE 'authentication_rejected:%' AND consecutive_failures > 0
               AND (cooldown_lifted_at IS NULL OR cooldown_lifted_at < last_attempt_at)
               AND last_attempt_at > $1::timestamptz - make_interval(
                       secs => least($2::float8 * 2 ^ (least(consecutive_failures, 30) - 1), $3::float8))",
            &[&now, &base, &max],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The group's meters in the buckets this replica leases. A meter belongs to the first group of
/// its protocol whose prefix matches its `transformer`.
pub async fn targets(shared: &Shared, group: &GroupSchedule) -> anyhow::Result<Vec<Target>> {
    let client = shared.pool.get().await?;
    let rows = client
        .query(
            "SELECT id, serial, address, COALESCE(transformer, '') FROM meters
             WHERE protocol = $1 AND removed_on IS NULL AND address IS NOT NULL AND address <> ''
             ORDER BY id",
            &[&group.protocol.as_str()],
        )
        .await?;
    let leases = &shared.leases;
    let earlier: Vec<&GroupSchedule> = shared
        .cfg
        .groups
        .iter()
        .take_while(|g| g.name != group.name)
        .filter(|g| g.protocol == group.protocol)
        .collect();
    let mut cells: HashMap<String, Arc<str>> = HashMap::new();
    Ok(rows
        .iter()
        .filter_map(|r| {
            let cell: String = r.get(3);
            if !cell.starts_with(&group.transformer_prefix)
                || earlier.iter().any(|g| cell.starts_with(&g.transformer_prefix))
                || !leases.holds(leases.bucket_of(&cell, r.get(1)))
            {
                return None;
            }
            let cell = cells.entry(cell.clone()).or_insert_with(|| cell.into()).clone();
            Some(Target {
                meter_id: r.get(0),
                serial: r.get::<_, &str>(1).into(),
                address: r.get::<_, &str>(2).into(),
                cell,
            })
        })
        .collect())
}

/// What is due for one meter at `now`.
fn tasks_for(cfg: &CollectConfig, group: &GroupSchedule, st: &MeterState, now: DateTime<Utc>) -> Tasks {
    let [profile, registers, events, clock] = periods(group);
    let floor = now - chrono::Duration::from_std(cfg.backfill_max).unwrap_or_default();
    Tasks {
        profile_after: profile.is_due(st.profile_done, now).then(|| st.profile_until.map_or(floor, |u| u.max(floor))),
        registers: registers.is_due(st.registers_done, now),
        events_after: events.is_due(st.events_done, now).then(|| st.events_until.map_or(floor, |u| u.max(floor))),
        clock: clock.is_due(st.clock_done, now),
    }
}

/// One round over the group's meters.
#[allow(clippy::too_many_arguments)]
async fn round(
    shared: &Arc<Shared>,
    group: &GroupSchedule,
    poller: &Arc<dyn Poller>,
    state: &mut HashMap<i32, MeterState>,
    caps: &mut KnownCaps,
    now: DateTime<Utc>,
    stop: &CancellationToken,
) -> anyhow::Result<RoundSummary> {
    let started = Instant::now();
    let targets = targets(shared, group).await?;
    // Meters no longer ours, or whose bucket was lost and claimed again since, are forgotten: the
    // database says where they stand (another replica may have polled them meanwhile).
    let leases = &shared.leases;
    let ours: HashMap<i32, u64> =
        targets.iter().map(|t| (t.meter_id, leases.epoch(leases.bucket_of(&t.cell, &t.serial)))).collect();
    state.retain(|id, st| ours.get(id).is_some_and(|e| *e == st.epoch));
    let (taken, fresh): (Vec<&Target>, Vec<&Target>) = targets
        .iter()
        .filter(|t| !state.contains_key(&t.meter_id))
        .partition(|t| shared.leases.taken_over(shared.leases.bucket_of(&t.cell, &t.serial)));
    if !taken.is_empty() {
        // The previous holder's last poll outcomes reach the database within a second (the status
        // writer's batch): wait for them before reading them.
        tokio::select! {
            () = stop.cancelled() => return Ok(RoundSummary::default()),
            () = tokio::time::sleep(TAKEOVER_SETTLE) => {}
        }
    }
    for (meters, takeover) in [(taken, true), (fresh, false)] {
        if meters.is_empty() {
            continue;
        }
        let ids: Vec<i32> = meters.iter().map(|t| t.meter_id).collect();
        let mut loaded = load_state(shared, &ids, takeover).await?;
        for (id, st) in &mut loaded {
            st.epoch = ours.get(id).copied().unwrap_or(0);
        }
        state.extend(loaded);
        tracing::info!(group = %group.name, meters = ids.len(), takeover, "meters' state loaded");
    }
    let cooling = cooling_down(shared, now).await?;
    poller.prepare(&targets).await;
    let mut sessions = JoinSet::new();
    let mut summary = RoundSummary { meters: targets.len(), ..RoundSummary::default() };
    // Session tasks alive at once (running, waiting for a slot or backing off): twice the session
    // limit keeps every cell busy without a task per meter of a 200,000-meter round. A waiting
    // task costs ≈ 1.9 KB; at 10,000 sessions, four times the limit held ≈ 75 MB of them.
    let window = Arc::new(tokio::sync::Semaphore::new(shared.cfg.max_sessions.saturating_mul(2).max(1)));
    for target in targets {
        let Some(st) = state.get(&target.meter_id) else { continue };
        let epoch = st.epoch;
        let tasks = tasks_for(&shared.cfg, group, st, now);
        if tasks.is_empty() {
            continue;
        }
        if cooling.contains(&target.meter_id) {
            summary.cooling_down += 1;
            continue;
        }
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            s = window.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
        };
        // The lease is checked when the session is about to start: the bucket may have been lost or
        // be being handed back since the round began, or lost and claimed again (a new epoch: the
        // tasks above may be stale; the next round, started by the claim, works them out again).
        let bucket = shared.leases.bucket_of(&target.cell, &target.serial);
        if !shared.leases.holds(bucket) || shared.leases.epoch(bucket) != epoch {
            summary.skipped += 1;
            continue;
        }
        let known = caps.get(target.meter_id);
        let shared = shared.clone();
        let poller = poller.clone();
        let stop = stop.clone();
        sessions.spawn(async move {
            let out = match shared.leases.guard(bucket, epoch) {
                Some(guard) => {
                    let out = session(&shared, &*poller, &target, &tasks, known.as_deref(), bucket, &stop).await;
                    drop(guard);
                    Some(out)
                }
                None => None,
            };
            drop(slot);
            (target.meter_id, tasks, out)
        });
        // Keep the set from growing without bound: reap finished sessions as we go.
        while let Some(done) = sessions.try_join_next() {
            apply(done, state, caps, &mut summary, now);
        }
    }
    while let Some(done) = sessions.join_next().await {
        apply(done, state, caps, &mut summary, now);
    }
    let m = &shared.metrics;
    m.poll_round_seconds.with_label_values(&[&group.name]).set(started.elapsed().as_secs_f64());
    for (result, n) in [
        ("total", summary.meters),
        ("ok", summary.ok),
        ("failed", summary.failed),
        ("cooling_down", summary.cooling_down),
    ] {
        m.poll_round_meters.with_label_values(&[&group.name, result]).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    Ok(summary)
}

/// `None`: not run, the bucket's lease was lost before the session started.
type SessionResult = (i32, Tasks, Option<Result<(Collected, usize), PollError>>);

fn apply(
    done: Result<SessionResult, tokio::task::JoinError>,
    state: &mut HashMap<i32, MeterState>,
    caps: &mut KnownCaps,
    summary: &mut RoundSummary,
    now: DateTime<Utc>,
) {
    let Ok((meter, tasks, out)) = done else {
        summary.failed += 1;
        return;
    };
    let Some(out) = out else {
        summary.skipped += 1;
        return;
    };
    match out {
        Ok((collected, readings)) => {
            summary.ok += 1;
            summary.readings += readings;
            let Some(st) = state.get_mut(&meter) else { return };
            if tasks.profile_after.is_some() {
                st.profile_done = Some(now);
                if let Some(u) = collected.profile_until {
                    st.profile_until = Some(st.profile_until.map_or(u, |p| p.max(u)));
                }
            }
            if tasks.registers {
                st.registers_done = Some(now);
            }
            if tasks.events_after.is_some() {
                st.events_done = Some(now);
                if let Some(u) = collected.events_until {
                    st.events_until = Some(st.events_until.map_or(u, |p| p.max(u)));
                }
            }
            if tasks.clock {
                st.clock_done = Some(now);
            }
            if let Some(c) = collected.capabilities {
                caps.insert(meter, c);
            }
        }
        Err(_) => summary.failed += 1,
    }
}

/// One meter: attempts with backoff, then storage and the status report. Returns what was
/// collected and how many readings were queued.
async fn session(
    shared: &Shared,
    poller: &dyn Poller,
    target: &Target,
    tasks: &Tasks,
    known: Option<&Capabilities>,
    bucket: i32,
    stop: &CancellationToken,
) -> Result<(Collected, usize), PollError> {
    let m = &shared.metrics;
    let protocol = poller.protocol();
    let mut attempt = 0u32;
    let result = loop {
        if !shared.leases.valid(bucket) {
            // Lost by expiry (the database unreachable for most of a lease period): another
            // replica may poll this meter now.
            break Err(PollError::new("lease_lost", "the bucket's lease expired", false));
        }
        let permit = tokio::select! {
            () = stop.cancelled() => break Err(PollError::new("shutdown", "the head-end is stopping", false)),
            p = shared.limits.acquire(&target.cell) => p,
        };
        m.poll_in_flight.inc();
        let started = Instant::now();
        let out = match tokio::time::timeout(SESSION_CAP, poller.poll(target, tasks, known)).await {
            Ok(r) => r,
            Err(_) => Err(PollError::new("session_timeout", format!("no result within {SESSION_CAP:?}"), true)),
        };
        m.poll_in_flight.dec();
        drop(permit);
        m.poll_session_seconds.with_label_values(&[protocol]).observe(started.elapsed().as_secs_f64());
        match out {
            Ok(c) => {
                m.poll_sessions.with_label_values(&[protocol, "ok"]).inc();
                break Ok(c);
            }
            Err(e) => {
                m.poll_sessions.with_label_values(&[protocol, e.reason]).inc();
                if !e.retryable || attempt >= shared.cfg.retries || stop.is_cancelled() {
                    tracing::info!(meter = %target.serial, reason = e.reason, attempts = attempt + 1, error = %e.detail, "session failed");
                    break Err(e);
                }
                tracing::debug!(meter = %target.serial, attempt, error = %e, "session failed; retrying");
                m.poll_retries.with_label_values(&[protocol]).inc();
                let wait = backoff(shared.cfg.retry_backoff, attempt, target.meter_id);
                attempt += 1;
                tokio::select! {
                    () = stop.cancelled() => break Err(e),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    let at = Utc::now();
    let source = protocol_source(protocol);
    match result {
        Ok(mut collected) => {
            let rows = std::mem::take(&mut collected.readings);
            let n = rows.len();
            m.readings_received.inc_by(n as u64);
            // The readings, the success and the events go in one transaction; the session (and
            // with it the bucket's lease) ends only once it has committed.
            let raw = Bytes::from(serde_json::to_vec(&RawRows(&rows)).unwrap_or_default());
            let env = Envelope {
                rows,
                dead: None,
                ack: None,
                sent: None,
                source: protocol,
                origin: target.serial.clone(),
                raw,
            };
            let (stored, committed) = tokio::sync::oneshot::channel();
            let mark = PollMark {
                meter_id: target.meter_id,
                at,
                events: std::mem::take(&mut collected.events),
                event_source: source,
                stored: Some(stored),
            };
            if shared.writer.send_polled(env, mark).await.is_err() || committed.await.is_err() {
                return Err(PollError::new("writer_closed", "the writer has stopped", false));
            }
            let deviation_ms = collected.clock_deviation.map(|d| d.num_milliseconds());
            let threshold = i64::try_from(shared.cfg.clock_threshold.as_millis()).unwrap_or(i64::MAX);
            let flagged = deviation_ms.is_some_and(|d| d.abs() > threshold);
            if flagged {
                m.clock_flagged.inc();
                tracing::info!(meter = %target.serial, deviation_ms, synced = collected.clock_synced, "meter clock off");
            }
            if collected.clock_synced {
                m.clock_synced.inc();
            }
            let report = SessionReport {
                meter_id: target.meter_id,
                at,
                error: None,
                clock_deviation_ms: deviation_ms,
                clock_flagged: flagged && !collected.clock_synced,
                capabilities: collected.capabilities.clone().map(|c| (protocol, c)),
                events: Vec::new(),
                source,
            };
            let _ = shared.status.send(report).await;
            Ok((collected, n))
        }
        Err(e) => {
            let report = SessionReport {
                meter_id: target.meter_id,
                at,
                error: Some(e.to_string()),
                clock_deviation_ms: None,
                clock_flagged: false,
                capabilities: None,
                events: Vec::new(),
                source,
            };
            let _ = shared.status.send(report).await;
            Err(e)
        }
    }
}

fn protocol_source(protocol: &str) -> i16 {
    match protocol {
        "modbus" => schemas::reading::Source::Modbus as i16,
        _ => schemas::reading::Source::Dlms as i16,
    }
}

/// `base · 2^attempt`, ± 25 % jitter derived from the meter (so retries of a cell spread out).
fn backoff(base: Duration, attempt: u32, meter: i32) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.min(10));
    let spread = u64::from(meter.unsigned_abs().wrapping_mul(2_654_435_761) % 1000); // 0..1000
    let factor = 750 + spread / 2; // 0.75 .. 1.25
    full.mul_f64(factor as f64 / 1000.0)
}

/// The readings of a session as JSON, kept as a dead letter's payload if the batch is refused.
struct RawRows<'a>(&'a [schemas::reading::Reading]);

impl serde::Serialize for RawRows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&(r.ts, r.channel_id, r.value, r.flags))?;
        }
        seq.end()
    }
}

/// Starts every group's loop for the pollers given; returns their tasks.
pub fn spawn_groups(
    shared: Arc<Shared>,
    pollers: &HashMap<PollProtocol, Arc<dyn Poller>>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    shared
        .cfg
        .groups
        .clone()
        .into_iter()
        .filter_map(|g| match pollers.get(&g.protocol) {
            Some(p) => Some(tokio::spawn(run_group(shared.clone(), g, p.clone(), stop.clone()))),
            None => {
                tracing::warn!(group = %g.name, protocol = g.protocol.as_str(), "no poller for this protocol; group skipped");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn tasks_follow_the_schedule_and_the_backfill_bound() {
        let cfg = CollectConfig::default();
        let g = GroupSchedule::default();
        let now = t("2026-11-24T10:16:00Z");
        let fresh = tasks_for(&cfg, &g, &MeterState::default(), now);
        assert_eq!(fresh.profile_after, Some(t("2026-11-21T10:16:00Z")), "never read: back-fill is bounded");
        assert!(fresh.registers && fresh.clock && fresh.events_after.is_some());

        let st = MeterState {
            profile_until: Some(t("2026-11-24T09:45:00Z")),
            profile_done: Some(t("2026-11-24T10:01:30Z")),
            registers_done: Some(t("2026-11-23T23:02:00Z")),
            events_done: Some(t("2026-11-23T23:02:00Z")),
            clock_done: Some(t("2026-11-23T23:02:00Z")),
            events_until: None,
            epoch: 0,
        };
        let later = tasks_for(&cfg, &g, &st, now);
        assert_eq!(later.profile_after, Some(t("2026-11-24T09:45:00Z")), "from the last stored interval");
        assert!(!later.registers && !later.clock && later.events_after.is_none(), "{later:?}");
        let same_slot = tasks_for(&cfg, &g, &MeterState { profile_done: Some(now), ..st }, t("2026-11-24T10:20:00Z"));
        assert!(same_slot.is_empty(), "nothing is due twice in one slot");
    }

    #[test]
    fn equal_capability_profiles_are_kept_once() {
        let a = Capabilities {
            max_pdu: Some(1024),
            details: serde_json::json!({"capture": ["clock"]}),
            ..Default::default()
        };
        let b = Capabilities { max_pdu: Some(512), ..a.clone() };
        let mut k = KnownCaps::from_map(HashMap::from([(1, a.clone()), (2, b.clone())]));
        k.insert(3, a.clone());
        k.insert(4, b.clone());
        k.insert(5, a.clone());
        let (c1, c3, c5) = (k.get(1).expect("1"), k.get(3).expect("3"), k.get(5).expect("5"));
        assert!(Arc::ptr_eq(&c1, &c3) && Arc::ptr_eq(&c1, &c5), "one copy of a");
        assert!(Arc::ptr_eq(&k.get(2).expect("2"), &k.get(4).expect("4")), "one copy of b");
        assert_eq!(*c1, a);
        assert_eq!(*k.get(4).expect("4"), b);
        assert!(k.get(6).is_none());
    }

    #[test]
    fn backoff_grows_and_spreads() {
        let b = Duration::from_secs(4);
        let first = backoff(b, 0, 17);
        assert!(first >= Duration::from_secs(3) && first <= Duration::from_secs(5), "{first:?}");
        let third = backoff(b, 2, 17);
        assert!(third >= Duration::from_secs(12) && third <= Duration::from_secs(20), "{third:?}");
        assert_ne!(backoff(b, 0, 17), backoff(b, 0, 18));
    }
}
