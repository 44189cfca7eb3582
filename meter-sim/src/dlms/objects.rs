//! The COSEM objects of a simulated meter (logical-name referencing), backed by the model.
//!
//! | OBIS | class | attributes (type) |
//! |---|---|---|
//! | 0.0.1.0.0.255 clock | 8 | 2 time (octet-string 12, local Europe/Belgrade, deviation −60/−120, status 0x80 in DST), 3 time_zone (long −60), 4 status (unsigned), 5/6 DST begin/end (octet-string 12, wildcard pattern), 7 DST deviation (integer 60), 8 DST enabled (true), 9 clock_base (enum 1) — attribute 2 writable by management |
//! | 0.0.96.1.0.255 serial | 1 | 2 visible-string `SIM00000001` |
//! | 0.0.42.0.0.255 logical device name | 1 | 2 octet-string = the serial's bytes |
//! | 0.0.43.1.0.255 invocation counter | 1 | 2 double-long-unsigned: the highest invocation counter the meter accepted from a client (a client continues at value + 1) |
//! | 1.0.1.8.0/1.8.1/1.8.2/2.8.0 .255 | 3 | 2 double-long-unsigned Wh (long64-unsigned above 2³²−1), 3 {0, 30} |
//! | 1.0.1.7.0.255 active power | 3 | 2 double-long-unsigned W = 4 × import energy of the last completed interval, 3 {0, 27} |
//! | 1.0.32.7.0.255 voltage L1 | 3 | 2 long-unsigned dV (the model's voltage), 3 {−1, 35} |
//! | 1.0.31.7.0.255 current L1 | 3 | 2 long-unsigned cA = ⌊1000·P/dV⌋, 3 {−2, 33} |
//! | 1.0.99.1.0.255 load profile | 7 | 2 buffer, 3 capture_objects {clock 8/2, 1.8.0 3/2, 2.8.0 3/2}, 4 capture_period 900, 5 sort_method 1, 7 entries_in_use, 8 profile_entries |
//! | 0.0.99.98.0.255 standard event log | 7 | 2 buffer {clock, event code 0.0.96.11.0.255 unsigned}, 3, 4 (0), 7, 8 |
//! | 0.0.96.3.10.255 disconnect control | 70 | 2 output_state bool, 3 control_state enum, 4 control_mode enum 1; methods 1 disconnect, 2 reconnect (management) |
//! | 0.0.40.0.0.255 current association | 15 | 1, 2 object_list, 3 associated_partners_id, 8 association_status; method 1 (HLS pass 3/4, handled by the engine) |
//!
//! "Now" is the meter's clock ([`super::sim::Sim::meter_now`]). The instantaneous registers are the
//! model's registers at the last interval end at or before now; the load profile holds every interval end
//! in `(E − history, E]` with `E` that same last interval end, oldest first, each row
//! `{interval end, 1.8.0, 2.8.0}` from the model. Selective access: selector 1 (range on the clock column,
//! from and to INCLUSIVE, columns by `selected_values` or all when empty) and selector 2 (entries,
//! 1-based, `to_entry` 0 = last; columns `from_col..=to_col`, 1-based, `to_col` 0 = last).
//!
//! Events (0.0.99.98.0.255): for each UTC day `d` and meter `i`, with probability 1/8 from
//! `hash(seed, EVENTS, i, d)`, a power down (code 1) at a deterministic second of that day and a power up
//! (code 2) 2..=31 minutes later; the buffer holds the events in the profile's time window.
//!
//! Public client (SAP 16) may read the logical names of all objects, the clock, serial, logical device
//! name, invocation counter and current association. Management (SAP 1, LLS or HLS) reads everything,
//! writes the clock and invokes the disconnect methods.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Europe::Belgrade;
use dlms_cosem_rs::axdr::Data;
use dlms_cosem_rs::codec::{Encode, Writer};
use dlms_cosem_rs::cosem::{AttributeAccess, MethodAccess};
use dlms_cosem_rs::obis::Obis;
use dlms_cosem_rs::server::{ObjectStore, StoreResult};
use dlms_cosem_rs::xdlms::{ActionResult, DataAccessResult, SelectiveAccess};

use super::sim::{floor_interval, Sim};
use crate::fleet;
use crate::hash;
use crate::model::INTERVAL_SECS;

pub const CLOCK: Obis = Obis::new(0, 0, 1, 0, 0, 255);
pub const SERIAL: Obis = Obis::new(0, 0, 96, 1, 0, 255);
pub const LDN: Obis = Obis::new(0, 0, 42, 0, 0, 255);
pub const INVOCATION_COUNTER: Obis = Obis::new(0, 0, 43, 1, 0, 255);
pub const IMPORT: Obis = Obis::new(1, 0, 1, 8, 0, 255);
pub const IMPORT_VT: Obis = Obis::new(1, 0, 1, 8, 1, 255);
pub const IMPORT_NT: Obis = Obis::new(1, 0, 1, 8, 2, 255);
pub const EXPORT: Obis = Obis::new(1, 0, 2, 8, 0, 255);
pub const POWER: Obis = Obis::new(1, 0, 1, 7, 0, 255);
pub const VOLTAGE: Obis = Obis::new(1, 0, 32, 7, 0, 255);
pub const CURRENT: Obis = Obis::new(1, 0, 31, 7, 0, 255);
pub const LOAD_PROFILE: Obis = Obis::new(1, 0, 99, 1, 0, 255);
pub const EVENT_LOG: Obis = Obis::new(0, 0, 99, 98, 0, 255);
pub const EVENT_CODE: Obis = Obis::new(0, 0, 96, 11, 0, 255);
pub const DISCONNECT: Obis = Obis::new(0, 0, 96, 3, 10, 255);
pub const ASSOCIATION: Obis = Obis::new(0, 0, 40, 0, 0, 255);

/// Every object: (class, version, logical name).
pub const OBJECTS: &[(u16, u8, Obis)] = &[
    (8, 0, CLOCK),
    (1, 0, SERIAL),
    (1, 0, LDN),
    (1, 0, INVOCATION_COUNTER),
    (3, 0, IMPORT),
    (3, 0, IMPORT_VT),
    (3, 0, IMPORT_NT),
    (3, 0, EXPORT),
    (3, 0, POWER),
    (3, 0, VOLTAGE),
    (3, 0, CURRENT),
    (7, 1, LOAD_PROFILE),
    (7, 1, EVENT_LOG),
    (70, 0, DISCONNECT),
    (15, 1, ASSOCIATION),
];

/// A capture object: class, logical name, attribute, data index.
type Capture = (u16, Obis, i8, u16);
const PROFILE_COLUMNS: &[Capture] = &[(8, CLOCK, 2, 0), (3, IMPORT, 2, 0), (3, EXPORT, 2, 0)];
const EVENT_COLUMNS: &[Capture] = &[(8, CLOCK, 2, 0), (1, EVENT_CODE, 2, 0)];
const EVENTS_TAG: u64 = 0xD1_E001;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Client SAP 16, no security.
    Public,
    /// Client SAP 1 (LLS or HLS).
    Management,
}

/// The objects of one meter for one association.
#[derive(Debug)]
pub struct MeterStore {
    sim: Arc<Sim>,
    meter: usize,
    level: Level,
    client_sap: u16,
    /// The meter's clock for the request being served.
    pub now: DateTime<Utc>,
    /// The wall clock for the request being served.
    pub wall: DateTime<Utc>,
    /// Value of 0.0.43.1.0.255.
    pub ic_value: u32,
}

fn bad<E>(_: E) -> DataAccessResult {
    DataAccessResult::OtherReason
}

/// The COSEM date-time (12 bytes) of `t` in Europe/Belgrade local time.
pub fn cosem_datetime(t: DateTime<Utc>) -> [u8; 12] {
    let local = t.with_timezone(&Belgrade);
    let offset_min = local.offset().fix().local_minus_utc() / 60;
    let y = (local.year() as u16).to_be_bytes();
    let dev = (-(offset_min as i16)).to_be_bytes();
    [
        y[0],
        y[1],
        local.month() as u8,
        local.day() as u8,
        local.weekday().number_from_monday() as u8,
        local.hour() as u8,
        local.minute() as u8,
        local.second() as u8,
        0,
        dev[0],
        dev[1],
        if offset_min == 120 { 0x80 } else { 0 },
    ]
}

/// The instant of a COSEM date-time (local Europe/Belgrade when the deviation is unspecified).
pub fn parse_datetime(b: &[u8]) -> Option<DateTime<Utc>> {
    let b: [u8; 12] = b.try_into().ok()?;
    let dt = dlms_cosem_rs::axdr::DateTime::from_bytes(b);
    if let Some(s) = dt.to_unix_seconds() {
        return DateTime::from_timestamp(s, 0);
    }
    if dt.has_wildcard() {
        return None;
    }
    let naive = chrono::NaiveDate::from_ymd_opt(i32::from(dt.year), u32::from(dt.month), u32::from(dt.day_of_month))?
        .and_hms_opt(u32::from(dt.hour), u32::from(dt.minute), u32::from(dt.second))?;
    Belgrade.from_local_datetime(&naive).earliest().map(|t| t.with_timezone(&Utc))
}

fn datetime_of(d: &Data<'_>) -> Option<DateTime<Utc>> {
    match d {
        Data::OctetString(b) => parse_datetime(b),
        Data::DateTime(dt) => parse_datetime(&dt.to_bytes()),
        _ => None,
    }
}

fn write_datetime(w: &mut dyn Writer, t: DateTime<Utc>) -> StoreResult<()> {
    w.write_bytes(&[0x09, 0x0C]).map_err(bad)?;
    w.write_bytes(&cosem_datetime(t)).map_err(bad)
}

fn write_energy(w: &mut dyn Writer, wh: i64) -> StoreResult<()> {
    let v = u64::try_from(wh).unwrap_or(0);
    match u32::try_from(v) {
        Ok(v) => Data::DoubleLongUnsigned(v).encode(w).map_err(bad),
        Err(_) => Data::Long64Unsigned(v).encode(w).map_err(bad),
    }
}

fn write_scaler_unit(w: &mut dyn Writer, scaler: i8, unit: u8) -> StoreResult<()> {
    w.write_bytes(&[0x02, 0x02, 0x0F, scaler as u8, 0x16, unit]).map_err(bad)
}

fn write_captures(w: &mut dyn Writer, cols: &[Capture]) -> StoreResult<()> {
    w.write_u8(0x01).map_err(bad)?;
    w.write_length(cols.len()).map_err(bad)?;
    for (class, ln, attr, idx) in cols {
        w.write_bytes(&[0x02, 0x04, 0x12]).map_err(bad)?;
        w.write_bytes(&class.to_be_bytes()).map_err(bad)?;
        w.write_bytes(&[0x09, 0x06]).map_err(bad)?;
        w.write_bytes(ln.as_bytes()).map_err(bad)?;
        w.write_bytes(&[0x0F, *attr as u8, 0x12]).map_err(bad)?;
        w.write_bytes(&idx.to_be_bytes()).map_err(bad)?;
    }
    Ok(())
}

/// One cell of a profile row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Time(DateTime<Utc>),
    Energy(i64),
    Code(u8),
}

impl Cell {
    fn write(&self, w: &mut dyn Writer) -> StoreResult<()> {
        match self {
            Cell::Time(t) => write_datetime(w, *t),
            Cell::Energy(v) => write_energy(w, *v),
            Cell::Code(c) => Data::Unsigned(*c).encode(w).map_err(bad),
        }
    }
}

/// Which rows and columns a selective access asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Row indices (0-based) `rows.start..rows.end`.
    pub rows: std::ops::Range<usize>,
    /// Column indices, in order.
    pub columns: Vec<usize>,
}

fn field<'a>(s: &dlms_cosem_rs::axdr::Seq<'a>, i: usize) -> StoreResult<Data<'a>> {
    s.get(i).map_err(|_| DataAccessResult::TypeUnmatched)
}

/// Applies a selective access to a buffer whose rows have the times `times` (ascending) and columns
/// `cols`.
///
/// # Errors
/// A data-access-result for malformed or unsupported selectors.
pub fn select(
    times: &[DateTime<Utc>],
    cols: &[Capture],
    access: Option<&SelectiveAccess<'_>>,
) -> StoreResult<Selection> {
    let all_cols: Vec<usize> = (0..cols.len()).collect();
    let Some(sa) = access else {
        return Ok(Selection { rows: 0..times.len(), columns: all_cols });
    };
    let s = match &sa.parameters {
        Data::Structure(s) => *s,
        _ => return Err(DataAccessResult::TypeUnmatched),
    };
    match sa.selector {
        1 => {
            let from = datetime_of(&field(&s, 1)?).ok_or(DataAccessResult::TypeUnmatched)?;
            let to = datetime_of(&field(&s, 2)?).ok_or(DataAccessResult::TypeUnmatched)?;
            let start = times.partition_point(|t| *t < from);
            let end = times.partition_point(|t| *t <= to).max(start);
            let mut columns = Vec::new();
            if let Ok(Data::Array(sel)) = s.get(3) {
                for item in sel.iter() {
                    let item = item.map_err(|_| DataAccessResult::TypeUnmatched)?;
                    let Data::Structure(def) = item else { return Err(DataAccessResult::TypeUnmatched) };
                    let class = field(&def, 0)?.as_u64().ok_or(DataAccessResult::TypeUnmatched)?;
                    let ln = field(&def, 1)?.as_obis().ok_or(DataAccessResult::TypeUnmatched)?;
                    let attr = field(&def, 2)?.as_i64().ok_or(DataAccessResult::TypeUnmatched)?;
                    let idx = cols
                        .iter()
                        .position(|(c, l, a, _)| u64::from(*c) == class && *l == ln && i64::from(*a) == attr)
                        .ok_or(DataAccessResult::ObjectUnavailable)?;
                    columns.push(idx);
                }
            }
            if columns.is_empty() {
                columns = all_cols;
            }
            Ok(Selection { rows: start..end, columns })
        }
        2 => {
            let num = |i: usize| -> StoreResult<u64> { field(&s, i)?.as_u64().ok_or(DataAccessResult::TypeUnmatched) };
            let (from, to) = (num(0)?, num(1)?);
            let (from_col, to_col) = (
                s.get(2).ok().and_then(|d| d.as_u64()).unwrap_or(1),
                s.get(3).ok().and_then(|d| d.as_u64()).unwrap_or(0),
            );
            let n = times.len() as u64;
            let to = if to == 0 { n } else { to.min(n) };
            let from = from.max(1);
            let rows = if from > to { 0..0 } else { (from - 1) as usize..to as usize };
            let ncols = cols.len() as u64;
            let to_col = if to_col == 0 { ncols } else { to_col.min(ncols) };
            let from_col = from_col.max(1);
            if from_col > to_col {
                return Err(DataAccessResult::TypeUnmatched);
            }
            Ok(Selection { rows, columns: ((from_col - 1) as usize..to_col as usize).collect() })
        }
        _ => Err(DataAccessResult::ScopeOfAccessViolated),
    }
}

/// Whether the model covers the interval ending at `t`.
pub fn in_model_range(t: DateTime<Utc>) -> bool {
    let day = (t - Duration::seconds(INTERVAL_SECS)).with_timezone(&Belgrade).date_naive();
    day >= crate::model::first_day() && day <= crate::model::last_day()
}

impl MeterStore {
    pub fn new(sim: Arc<Sim>, meter: usize, level: Level, client_sap: u16, wall: DateTime<Utc>) -> Self {
        let now = sim.meter_now(meter, wall);
        MeterStore { sim, meter, level, client_sap, now, wall, ic_value: 0 }
    }

    pub const fn level(&self) -> Level {
        self.level
    }

    /// The last interval end at or before the meter's clock: the instant of every register value.
    pub fn register_ts(&self) -> DateTime<Utc> {
        floor_interval(self.now)
    }

    /// The interval ends of the load profile, oldest first.
    pub fn profile_times(&self) -> Vec<DateTime<Utc>> {
        let end = self.register_ts();
        let n = i64::from(self.sim.config.history_intervals);
        (0..n).map(|k| end - Duration::seconds((n - 1 - k) * INTERVAL_SECS)).filter(|t| in_model_range(*t)).collect()
    }

    /// The events (time, code) in the profile's window, oldest first.
    pub fn events(&self) -> Vec<(DateTime<Utc>, u8)> {
        let end = self.now;
        let start =
            self.register_ts() - Duration::seconds(i64::from(self.sim.config.history_intervals) * INTERVAL_SECS);
        let mut out = Vec::new();
        let first_day = start.timestamp().div_euclid(86_400);
        let last_day = end.timestamp().div_euclid(86_400);
        for d in first_day..=last_day {
            let h = hash::hash(&[self.sim.config.seed, EVENTS_TAG, self.meter as u64, d as u64]);
            if !h.is_multiple_of(8) {
                continue;
            }
            let down = d * 86_400 + ((h >> 8) % 86_400) as i64;
            let up = down + 60 * (2 + ((h >> 40) % 30) as i64);
            for (t, code) in [(down, 1u8), (up, 2u8)] {
                if let Some(t) = DateTime::from_timestamp(t, 0) {
                    if t > start && t <= end {
                        out.push((t, code));
                    }
                }
            }
        }
        out
    }

    fn registers(&self) -> StoreResult<crate::Registers> {
        self.sim.model.registers_at(self.meter, self.register_ts()).map_err(|_| DataAccessResult::TemporaryFailure)
    }

    fn power_w(&self) -> StoreResult<i64> {
        let iv =
            self.sim.model.interval(self.meter, self.register_ts()).map_err(|_| DataAccessResult::TemporaryFailure)?;
        Ok(iv.energy.import_total() * 4)
    }

    fn voltage_dv(&self) -> StoreResult<i32> {
        self.sim.model.voltage_dv(self.meter, self.register_ts()).map_err(|_| DataAccessResult::TemporaryFailure)
    }

    fn write_table(
        &self,
        w: &mut dyn Writer,
        times: &[DateTime<Utc>],
        cols: &[Capture],
        access: Option<&SelectiveAccess<'_>>,
        mut row: impl FnMut(usize) -> StoreResult<Vec<Cell>>,
    ) -> StoreResult<()> {
        let sel = select(times, cols, access)?;
        w.write_u8(0x01).map_err(bad)?;
        w.write_length(sel.rows.len()).map_err(bad)?;
        for r in sel.rows.clone() {
            let cells = row(r)?;
            w.write_u8(0x02).map_err(bad)?;
            w.write_length(sel.columns.len()).map_err(bad)?;
            for &c in &sel.columns {
                cells.get(c).ok_or(DataAccessResult::OtherReason)?.write(w)?;
            }
        }
        Ok(())
    }

    fn profile(&self, access: Option<&SelectiveAccess<'_>>, w: &mut dyn Writer) -> StoreResult<()> {
        let times = self.profile_times();
        let mut series = self.sim.model.series(self.meter).map_err(|_| DataAccessResult::TemporaryFailure)?;
        self.write_table(w, &times, PROFILE_COLUMNS, access, |r| {
            let t = times[r];
            let reg = series.registers_at(t).map_err(|_| DataAccessResult::TemporaryFailure)?;
            Ok(vec![Cell::Time(t), Cell::Energy(reg.import_total()), Cell::Energy(reg.export)])
        })
    }

    fn event_log(&self, access: Option<&SelectiveAccess<'_>>, w: &mut dyn Writer) -> StoreResult<()> {
        let events = self.events();
        let times: Vec<_> = events.iter().map(|e| e.0).collect();
        self.write_table(w, &times, EVENT_COLUMNS, access, |r| {
            Ok(vec![Cell::Time(events[r].0), Cell::Code(events[r].1)])
        })
    }

    fn object_list(&self, w: &mut dyn Writer) -> StoreResult<()> {
        w.write_u8(0x01).map_err(bad)?;
        w.write_length(OBJECTS.len()).map_err(bad)?;
        for (class, version, ln) in OBJECTS {
            w.write_bytes(&[0x02, 0x04, 0x12]).map_err(bad)?;
            w.write_bytes(&class.to_be_bytes()).map_err(bad)?;
            w.write_bytes(&[0x11, *version, 0x09, 0x06]).map_err(bad)?;
            w.write_bytes(ln.as_bytes()).map_err(bad)?;
            // access_rights: { attribute_access: [], method_access: [] }
            w.write_bytes(&[0x02, 0x02, 0x01, 0x00, 0x01, 0x00]).map_err(bad)?;
        }
        Ok(())
    }

    fn disconnected(&self) -> bool {
        self.sim.meter(self.meter).is_some_and(|m| m.disconnected)
    }

    fn known(class: u16, ln: Obis) -> bool {
        OBJECTS.iter().any(|(c, _, l)| *c == class && *l == ln)
    }
}

impl ObjectStore for MeterStore {
    fn get_attribute(
        &self,
        class_id: u16,
        ln: Obis,
        attr: i8,
        access: Option<SelectiveAccess<'_>>,
        w: &mut dyn Writer,
    ) -> StoreResult<()> {
        if !Self::known(class_id, ln) {
            return Err(DataAccessResult::ObjectUndefined);
        }
        if attr == 1 {
            return Data::OctetString(ln.as_bytes()).encode(w).map_err(bad);
        }
        if access.is_some() && class_id != 7 {
            return Err(DataAccessResult::ScopeOfAccessViolated);
        }
        let serial = fleet::serial(self.meter);
        match (class_id, ln, attr) {
            (8, CLOCK, 2) => write_datetime(w, self.now),
            (8, CLOCK, 3) => Data::Long(-60).encode(w).map_err(bad),
            (8, CLOCK, 4) => {
                let dst = cosem_datetime(self.now)[11];
                Data::Unsigned(dst).encode(w).map_err(bad)
            }
            (8, CLOCK, 5) => w.write_bytes(&[0x09, 0x0C, 0xFF, 0xFF, 3, 0xFE, 7, 2, 0, 0, 0, 0x80, 0, 0]).map_err(bad),
            (8, CLOCK, 6) => w.write_bytes(&[0x09, 0x0C, 0xFF, 0xFF, 10, 0xFE, 7, 3, 0, 0, 0, 0x80, 0, 0]).map_err(bad),
            (8, CLOCK, 7) => Data::Integer(60).encode(w).map_err(bad),
            (8, CLOCK, 8) => Data::Boolean(true).encode(w).map_err(bad),
            (8, CLOCK, 9) => Data::Enum(1).encode(w).map_err(bad),
            (1, SERIAL, 2) => Data::VisibleString(serial.as_bytes()).encode(w).map_err(bad),
            (1, LDN, 2) => Data::OctetString(serial.as_bytes()).encode(w).map_err(bad),
            (1, INVOCATION_COUNTER, 2) => Data::DoubleLongUnsigned(self.ic_value).encode(w).map_err(bad),
            (3, IMPORT, 2) => write_energy(w, self.registers()?.import_total()),
            (3, IMPORT_VT, 2) => write_energy(w, self.registers()?.import_vt),
            (3, IMPORT_NT, 2) => write_energy(w, self.registers()?.import_nt),
            (3, EXPORT, 2) => write_energy(w, self.registers()?.export),
            (3, IMPORT | IMPORT_VT | IMPORT_NT | EXPORT, 3) => write_scaler_unit(w, 0, 30),
            (3, POWER, 2) => write_energy(w, self.power_w()?),
            (3, POWER, 3) => write_scaler_unit(w, 0, 27),
            (3, VOLTAGE, 2) => Data::LongUnsigned(self.voltage_dv()?.clamp(0, 65_535) as u16).encode(w).map_err(bad),
            (3, VOLTAGE, 3) => write_scaler_unit(w, -1, 35),
            (3, CURRENT, 2) => {
                let dv = i64::from(self.voltage_dv()?.max(1));
                let ca = (self.power_w()? * 1000 / dv).clamp(0, 65_535);
                Data::LongUnsigned(ca as u16).encode(w).map_err(bad)
            }
            (3, CURRENT, 3) => write_scaler_unit(w, -2, 33),
            (7, LOAD_PROFILE, 2) => self.profile(access.as_ref(), w),
            (7, LOAD_PROFILE, 3) => write_captures(w, PROFILE_COLUMNS),
            (7, LOAD_PROFILE, 4) => Data::DoubleLongUnsigned(INTERVAL_SECS as u32).encode(w).map_err(bad),
            (7, LOAD_PROFILE, 7) => Data::DoubleLongUnsigned(self.profile_times().len() as u32).encode(w).map_err(bad),
            (7, LOAD_PROFILE | EVENT_LOG, 8) => {
                Data::DoubleLongUnsigned(self.sim.config.history_intervals).encode(w).map_err(bad)
            }
            (7, LOAD_PROFILE | EVENT_LOG, 5) => Data::Enum(1).encode(w).map_err(bad),
            (7, EVENT_LOG, 2) => self.event_log(access.as_ref(), w),
            (7, EVENT_LOG, 3) => write_captures(w, EVENT_COLUMNS),
            (7, EVENT_LOG, 4) => Data::DoubleLongUnsigned(0).encode(w).map_err(bad),
            (7, EVENT_LOG, 7) => Data::DoubleLongUnsigned(self.events().len() as u32).encode(w).map_err(bad),
            (70, DISCONNECT, 2) => Data::Boolean(!self.disconnected()).encode(w).map_err(bad),
            (70, DISCONNECT, 3) => Data::Enum(u8::from(!self.disconnected())).encode(w).map_err(bad),
            (70, DISCONNECT, 4) => Data::Enum(1).encode(w).map_err(bad),
            (15, ASSOCIATION, 2) => self.object_list(w),
            (15, ASSOCIATION, 3) => {
                w.write_bytes(&[0x02, 0x02, 0x0F, self.client_sap as u8, 0x12, 0x00, 0x01]).map_err(bad)
            }
            (15, ASSOCIATION, 8) => Data::Enum(2).encode(w).map_err(bad),
            _ => Err(DataAccessResult::ObjectUnavailable),
        }
    }

    fn set_attribute(
        &mut self,
        class_id: u16,
        ln: Obis,
        attr: i8,
        _access: Option<SelectiveAccess<'_>>,
        value: Data<'_>,
    ) -> StoreResult<()> {
        match (class_id, ln, attr) {
            (8, CLOCK, 2) => {
                let t = datetime_of(&value).ok_or(DataAccessResult::TypeUnmatched)?;
                self.sim.set_clock(self.meter, self.wall, t);
                self.now = self.sim.meter_now(self.meter, self.wall);
                Ok(())
            }
            _ => Err(DataAccessResult::ReadWriteDenied),
        }
    }

    fn invoke_method(
        &mut self,
        class_id: u16,
        ln: Obis,
        method: i8,
        _parameters: Option<Data<'_>>,
        _w: &mut dyn Writer,
    ) -> Result<bool, ActionResult> {
        match (class_id, ln, method) {
            (70, DISCONNECT, 1 | 2) => {
                self.sim.with_meter(self.meter, |m| m.disconnected = method == 1);
                Ok(false)
            }
            _ => Err(ActionResult::ObjectUndefined),
        }
    }

    fn attribute_access(&self, class_id: u16, ln: Obis, attr: i8) -> AttributeAccess {
        if !Self::known(class_id, ln) || attr == 1 {
            return AttributeAccess::READ;
        }
        match self.level {
            Level::Management if ln == CLOCK && attr == 2 => AttributeAccess::READ | AttributeAccess::WRITE,
            Level::Management => AttributeAccess::READ,
            Level::Public if matches!(ln, CLOCK | SERIAL | LDN | INVOCATION_COUNTER | ASSOCIATION) => {
                AttributeAccess::READ
            }
            Level::Public => AttributeAccess::empty(),
        }
    }

    fn method_access(&self, class_id: u16, ln: Obis, _method: i8) -> MethodAccess {
        match (self.level, class_id, ln) {
            (Level::Management, 70, DISCONNECT) | (_, 15, ASSOCIATION) => MethodAccess::ACCESS,
            _ => MethodAccess::empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlms::sim::SimConfig;
    use dlms_cosem_rs::codec::{Decode, Reader};

    fn ts(s: &str) -> DateTime<Utc> {
        s.parse().expect("ts")
    }

    fn store(now: &str, history_days: u32) -> MeterStore {
        let mut cfg = SimConfig::new(11, 40);
        cfg.history_intervals = history_days * 96;
        MeterStore::new(Arc::new(Sim::new(cfg)), 3, Level::Management, 1, ts(now))
    }

    fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<u8> {
        let mut b =
            vec![0x02, 0x04, 0x02, 0x04, 0x12, 0x00, 0x08, 0x09, 0x06, 0, 0, 1, 0, 0, 255, 0x0F, 0x02, 0x12, 0, 0];
        for t in [from, to] {
            b.extend_from_slice(&[0x09, 0x0C]);
            b.extend_from_slice(&cosem_datetime(t));
        }
        b.extend_from_slice(&[0x01, 0x00]);
        b
    }

    fn selection(times: &[DateTime<Utc>], selector: u8, params: &[u8]) -> StoreResult<Selection> {
        let data = Data::decode(&mut Reader::new(params)).expect("params");
        select(times, PROFILE_COLUMNS, Some(&SelectiveAccess { selector, parameters: data }))
    }

    #[test]
    fn dst_days_have_92_and_100_intervals_and_range_is_inclusive() {
        // Autumn 2025: local 2025-10-26 has 25 hours, 00:00 CEST = 2025-10-25T22:00Z, next midnight CET 23:00Z.
        let s = store("2025-10-27T00:07:00Z", 3);
        let times = s.profile_times();
        assert_eq!(times.len(), 288);
        assert_eq!(*times.last().expect("last"), ts("2025-10-27T00:00:00Z"));
        let sel = selection(&times, 1, &range(ts("2025-10-25T22:00:00Z"), ts("2025-10-26T23:00:00Z"))).expect("sel");
        assert_eq!(sel.rows.len(), 101, "100 intervals of the day plus the inclusive start");
        assert_eq!(times[sel.rows.start], ts("2025-10-25T22:00:00Z"));
        assert_eq!(sel.columns, vec![0, 1, 2]);
        // Exclusive of nothing: from = to = one interval end gives that row.
        let t = ts("2025-10-26T12:15:00Z");
        let sel = selection(&times, 1, &range(t, t)).expect("sel");
        assert_eq!((sel.rows.len(), times[sel.rows.start]), (1, t));
        // Between two ends: nothing.
        let sel = selection(&times, 1, &range(ts("2025-10-26T12:16:00Z"), ts("2025-10-26T12:29:00Z"))).expect("sel");
        assert!(sel.rows.is_empty());
        // Outside the buffer: nothing; overlapping the start: clipped.
        let sel = selection(&times, 1, &range(ts("2025-01-01T00:00:00Z"), ts("2025-10-24T00:15:00Z"))).expect("sel");
        assert_eq!((sel.rows.start, sel.rows.len()), (0, 1));
        // Spring 2025: local 2025-03-30 has 23 hours.
        let s = store("2025-03-31T00:00:00Z", 2);
        let times = s.profile_times();
        let sel = selection(&times, 1, &range(ts("2025-03-29T23:15:00Z"), ts("2025-03-30T22:00:00Z"))).expect("sel");
        assert_eq!(sel.rows.len(), 92);
    }

    #[test]
    fn entries_are_one_based_and_clamped() {
        let s = store("2025-06-01T12:00:00Z", 1);
        let times = s.profile_times();
        assert_eq!(times.len(), 96);
        let entry = |from: u32, to: u32, fc: u16, tc: u16| {
            let mut b = vec![0x02, 0x04, 0x06];
            b.extend_from_slice(&from.to_be_bytes());
            b.push(0x06);
            b.extend_from_slice(&to.to_be_bytes());
            b.push(0x12);
            b.extend_from_slice(&fc.to_be_bytes());
            b.push(0x12);
            b.extend_from_slice(&tc.to_be_bytes());
            selection(&times, 2, &b)
        };
        assert_eq!(entry(1, 1, 1, 0).expect("e").rows, 0..1);
        assert_eq!(entry(2, 4, 1, 0).expect("e").rows, 1..4);
        assert_eq!(entry(90, 0, 1, 0).expect("e").rows, 89..96);
        assert_eq!(entry(95, 200, 1, 0).expect("e").rows, 94..96);
        assert!(entry(97, 0, 1, 0).expect("e").rows.is_empty());
        assert_eq!(entry(1, 2, 2, 3).expect("e").columns, vec![1, 2]);
        assert_eq!(entry(1, 2, 1, 1).expect("e").columns, vec![0]);
        assert!(entry(1, 2, 3, 2).is_err());
        assert!(selection(&times, 3, &[0x00]).is_err());
    }

    #[test]
    fn profile_rows_are_the_model_and_clock_encodes_local_time() {
        let s = store("2025-01-15T10:20:00Z", 1);
        let mut w = Vec::new();
        s.get_attribute(7, LOAD_PROFILE, 2, None, &mut w).expect("buffer");
        let data = Data::decode(&mut Reader::new(&w)).expect("decode");
        let Data::Array(rows) = data else { panic!("array") };
        assert_eq!(rows.len(), 96);
        let last = rows.get(95).expect("row");
        let Data::Structure(cells) = last else { panic!("row") };
        let reg = s.sim.model.registers_at(3, ts("2025-01-15T10:15:00Z")).expect("model");
        assert_eq!(cells.get(1).expect("import").as_u64(), Some(reg.import_total() as u64));
        // Winter: 11:15 CET, deviation −60, no DST bit.
        assert_eq!(cosem_datetime(ts("2025-01-15T10:15:00Z")), [0x07, 0xE9, 1, 15, 3, 11, 15, 0, 0, 0xFF, 0xC4, 0]);
        assert_eq!(parse_datetime(&cosem_datetime(ts("2025-07-01T00:00:00Z"))), Some(ts("2025-07-01T00:00:00Z")));
        // Unspecified deviation: local time.
        let mut b = cosem_datetime(ts("2025-07-01T00:00:00Z"));
        b[9] = 0x80;
        b[10] = 0x00;
        assert_eq!(parse_datetime(&b), Some(ts("2025-07-01T00:00:00Z")));
        // Events stay within the window and alternate down/up.
        let s = store("2025-06-01T12:00:00Z", 7);
        let ev = s.events();
        assert!(ev.windows(2).all(|p| p[0].0 <= p[1].0));
        assert!(ev.iter().all(|(_, c)| *c == 1 || *c == 2));
    }
}
