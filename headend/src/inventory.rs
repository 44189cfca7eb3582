//! Inventory import: `headend inventory import FILE.csv`.
//!
//! Two stages, so that nothing is written unless the whole file is good:
//!
//! 1. [`parse`] (pure, no database): reads the CSV documented in [`schemas::inventory`], checks every
//!    cell and the rules that span rows (unique serials, one household per apartment, one master meter
//!    in service per building, one meter in service per household, a building or household described
//!    the same way on every row) and reports every problem with its line and column.
//! 2. [`import`]: in one transaction (serialised with other imports by an advisory lock), loads the
//!    buildings, households and meters into temporary staging tables with `unnest`, checks the file
//!    against what the database already holds (a household moving to another building, a meter changing
//!    kind, building or household, a second master meter or household meter in service, an apartment
//!    taken by another household), and only then upserts set-based, keyed by building code, household
//!    code and meter serial. Re-importing the same file changes nothing.
//!
//! Decimals (`floor_area_m2`, `approved_power_kw`) stay decimal text until PostgreSQL casts them to
//! `numeric`; no float touches the inventory. Cells are trimmed of surrounding ASCII whitespace.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::time::Instant;

use chrono::NaiveDate;
use schemas::inventory::{InventoryRow, MeterKind, Protocol, Region, HEADER};
use schemas::MeterSerial;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

/// A line number of the CSV, counted from 1 (the header is normally line 1). A cell spanning lines
/// (quoted newlines) is reported at the line where its row starts.
pub type Line = u64;

/// How many problems an error lists; the rest are counted.
pub const MAX_SHOWN: usize = 100;
/// More data rows than this is refused (ten times the fleet): memory stays bounded.
pub const MAX_ROWS: usize = 2_000_000;
/// Longest accepted cell, in bytes.
pub const MAX_CELL_BYTES: usize = 1024;
/// Largest accepted file, in bytes (the fleet's file is about 30 MB).
pub const MAX_BYTES: u64 = 512 << 20;

/// One problem of the file, or one conflict with the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: Option<Line>,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, &self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            (None, Some(c)) => write!(f, "column {c}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// The problems found: the first [`MAX_SHOWN`] in full, the total counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    shown: Vec<Problem>,
    total: usize,
}

impl Problems {
    fn push(&mut self, line: Option<Line>, column: Option<&str>, message: String) {
        self.total += 1;
        if self.shown.len() < MAX_SHOWN {
            self.shown.push(Problem { line, column: column.map(str::to_owned), message });
        }
    }

    /// Merges two lists each in line order (problems without a line first), keeping line order.
    fn merge(&mut self, other: Problems) {
        let mut merged = Vec::with_capacity(MAX_SHOWN);
        let mut a = std::mem::take(&mut self.shown).into_iter().peekable();
        let mut b = other.shown.into_iter().peekable();
        while merged.len() < MAX_SHOWN {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.line <= y.line,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            merged.extend(next);
        }
        self.shown = merged;
        self.total += other.total;
    }

    /// The problems listed (at most [`MAX_SHOWN`]), in line order.
    pub fn shown(&self) -> &[Problem] {
        &self.shown
    }

    /// How many problems there are in all.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.total == 1 { "" } else { "s" };
        write!(f, "{} problem{s}", self.total)?;
        for p in &self.shown {
            write!(f, "\n  {p}")?;
        }
        if self.total > self.shown.len() {
            write!(f, "\n  and {} more", self.total - self.shown.len())?;
        }
        Ok(())
    }
}

/// Why an import failed. In every case nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading the inventory csv: {0}")]
    Read(#[source] std::io::Error),
    #[error("the inventory csv is invalid, {0}")]
    Invalid(Problems),
    #[error("the inventory conflicts with the database, {0}")]
    Conflict(Problems),
    #[error("the database has no inventory tables; run `headend migrate` first")]
    NotMigrated,
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl InventoryError {
    /// The problems of an invalid file or of a conflict.
    pub fn problems(&self) -> Option<&Problems> {
        match self {
            InventoryError::Invalid(p) | InventoryError::Conflict(p) => Some(p),
            _ => None,
        }
    }
}

/// Inserted / updated / unchanged rows of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl Counts {
    fn new(staged: usize, inserted: u64, updated: u64) -> Counts {
        let staged = u64::try_from(staged).unwrap_or(u64::MAX);
        Counts { inserted, updated, unchanged: staged.saturating_sub(inserted).saturating_sub(updated) }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    /// Data rows of the file (one per meter).
    pub rows_read: u64,
    pub buildings: Counts,
    pub households: Counts,
    pub meters: Counts,
    /// Wall time of the whole import (parse, checks, writes, commit).
    pub elapsed_seconds: f64,
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation (pure)
// ---------------------------------------------------------------------------------------------

// Positions in `HEADER` (a test keeps them in agreement).
const BUILDING: usize = 0;
const ADDRESS: usize = 1;
const MUNICIPALITY: usize = 2;
const REGION: usize = 3;
const HOUSEHOLD: usize = 4;
const APARTMENT: usize = 5;
const FLOOR_AREA: usize = 6;
const RESIDENTS: usize = 7;
const APPROVED_POWER: usize = 8;
const TARIFF: usize = 9;
const METER: usize = 10;
const METER_KIND: usize = 11;
const PROTOCOL: usize = 12;
const METER_ADDRESS: usize = 13;
const FEEDER: usize = 14;
const TRANSFORMER: usize = 15;
const INSTALLED_ON: usize = 16;
const REMOVED_ON: usize = 17;

/// Columns every file must have; the household columns are required per row (household meters).
const REQUIRED_COLUMNS: [usize; 8] =
    [BUILDING, ADDRESS, MUNICIPALITY, REGION, METER, METER_KIND, PROTOCOL, INSTALLED_ON];

/// `numeric(8, 2)` and `numeric(6, 2)`: digits before and after the point.
const FLOOR_AREA_DIGITS: (usize, usize) = (6, 2);
const APPROVED_POWER_DIGITS: (usize, usize) = (4, 2);

/// Where each known column is in the file.
struct Columns {
    at: [Option<usize>; HEADER.len()],
    width: usize,
}

/// Reads and checks the whole CSV: header, every cell, and the rules spanning rows. Returns the rows
/// with their line numbers, or every problem found. Never panics, whatever the bytes.
pub fn parse(reader: impl Read) -> Result<Vec<(Line, InventoryRow)>, InventoryError> {
    let mut problems = Problems::default();
    // Read whole: line numbers are counted from the bytes (see `line_of`), and the rows are kept in
    // memory anyway.
    let mut data = Vec::new();
    reader.take(MAX_BYTES + 1).read_to_end(&mut data).map_err(InventoryError::Read)?;
    if u64::try_from(data.len()).unwrap_or(u64::MAX) > MAX_BYTES {
        problems.push(None, None, format!("the file is larger than {} MiB; split it", MAX_BYTES >> 20));
        return Err(InventoryError::Invalid(problems));
    }
    let mut csv =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(&data[..]);
    let mut record = csv::ByteRecord::new();

    if !read_record(&mut csv, &mut record, &mut problems)? {
        problems.push(None, None, "the file is empty: a header row is required".into());
        return Err(InventoryError::Invalid(problems));
    }
    let header_line = line_of(&record, &data);
    let Some(columns) = parse_header(header_line, &record, &mut problems) else {
        return Err(InventoryError::Invalid(problems));
    };

    let mut rows = Vec::new();
    let mut data_rows = 0usize;
    while read_record(&mut csv, &mut record, &mut problems)? {
        let line = line_of(&record, &data);
        data_rows += 1;
        if data_rows > MAX_ROWS {
            problems.push(Some(line), None, format!("more than {MAX_ROWS} data rows; split the file"));
            return Err(InventoryError::Invalid(problems));
        }
        if record.len() != columns.width {
            problems.push(
                Some(line),
                None,
                format!("expected {} cells like the header, found {}", columns.width, record.len()),
            );
            continue;
        }
        if let Some(row) = parse_row(line, &columns, &record, &mut problems) {
            rows.push((line, row));
        }
    }
    if data_rows == 0 {
        problems.push(None, None, "the file has a header but no data rows".into());
    }
    let mut across = Problems::default();
    cross_check(&rows, &mut across);
    problems.merge(across);
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(InventoryError::Invalid(problems))
    }
}

/// Reads the next record; `false` at the end. A malformed record becomes a problem; I/O is fatal.
fn read_record<R: Read>(
    csv: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
    problems: &mut Problems,
) -> Result<bool, InventoryError> {
    loop {
        match csv.read_byte_record(record) {
            Ok(more) => return Ok(more),
            Err(e) => {
                let line = e.position().map(csv::Position::line);
                match e.into_kind() {
                    csv::ErrorKind::Io(io) => return Err(InventoryError::Read(io)),
                    other => {
                        // Not produced by a flexible byte reader, but never trust that.
                        problems.push(line, None, format!("malformed csv: {other:?}"));
                        if problems.total() > MAX_ROWS {
                            return Err(InventoryError::Invalid(std::mem::take(problems)));
                        }
                    }
                }
            }
        }
    }
}

/// The line where a record starts. The csv reader positions a record just after the previous one,
/// before any blank lines it skips (and, after a CRLF, before the LF), so count those here.
fn line_of(record: &csv::ByteRecord, data: &[u8]) -> Line {
    let Some(p) = record.position() else { return 0 };
    let from = usize::try_from(p.byte()).unwrap_or(usize::MAX);
    let rest = data.get(from..).unwrap_or_default();
    let skipped = rest.iter().take_while(|b| matches!(b, b'\r' | b'\n')).filter(|b| **b == b'\n').count();
    p.line().saturating_add(u64::try_from(skipped).unwrap_or(u64::MAX))
}

/// A value for a message: quoted and escaped, shortened when long.
fn shown(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

fn parse_header(line: Line, record: &csv::ByteRecord, problems: &mut Problems) -> Option<Columns> {
    let mut at = [None; HEADER.len()];
    let before = problems.total();
    for (i, raw) in record.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            problems.push(Some(line), None, format!("header cell {} is not utf-8 text", i + 1));
            continue;
        };
        let name = if i == 0 { name.trim_start_matches('\u{feff}') } else { name };
        match HEADER.iter().position(|h| *h == name) {
            Some(c) if at[c].is_some() => {
                problems.push(Some(line), Some(HEADER[c]), "the column appears twice in the header".into())
            }
            Some(c) => at[c] = Some(i),
            None => problems.push(
                Some(line),
                None,
                format!("unknown column {} (expected columns: {})", shown(name), HEADER.join(", ")),
            ),
        }
    }
    for c in REQUIRED_COLUMNS {
        if at[c].is_none() {
            problems.push(Some(line), Some(HEADER[c]), "missing required column".into());
        }
    }
    (problems.total() == before).then_some(Columns { at, width: record.len() })
}

/// Reads the cells of one row, reporting each bad one.
struct Cells<'a, 'p> {
    line: Line,
    columns: &'a Columns,
    record: &'a csv::ByteRecord,
    problems: &'p mut Problems,
    ok: bool,
}

impl<'a> Cells<'a, '_> {
    fn problem(&mut self, column: usize, message: String) {
        self.ok = false;
        self.problems.push(Some(self.line), Some(HEADER[column]), message);
    }

    /// The cell's text; `None` when the column is absent, the cell empty or the cell bad (reported).
    fn optional(&mut self, column: usize) -> Option<&'a str> {
        let record = self.record;
        let raw = record.get(self.columns.at[column]?)?;
        if raw.is_empty() {
            return None;
        }
        if raw.len() > MAX_CELL_BYTES {
            self.problem(column, format!("longer than {MAX_CELL_BYTES} bytes"));
            return None;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            self.problem(column, "not utf-8 text".into());
            return None;
        };
        if text.chars().any(char::is_control) {
            self.problem(column, format!("{} contains a control character", shown(text)));
            return None;
        }
        Some(text)
    }

    fn required(&mut self, column: usize) -> Option<&'a str> {
        let before = self.problems.total();
        let v = self.optional(column);
        if v.is_none() && self.problems.total() == before {
            self.problem(column, "required value missing".into());
        }
        v
    }

    /// A household column: required for a household meter, empty for a master meter.
    fn household(&mut self, column: usize, kind: Option<MeterKind>) -> Option<&'a str> {
        match kind {
            Some(MeterKind::Household) => {
                let before = self.problems.total();
                let v = self.optional(column);
                if v.is_none() && self.problems.total() == before {
                    self.problem(column, "required for a household meter".into());
                }
                v
            }
            Some(MeterKind::Master) => {
                if let Some(v) = self.optional(column) {
                    self.problem(column, format!("must be empty for a master meter, found {}", shown(v)));
                }
                None
            }
            None => self.optional(column),
        }
    }

    fn check<T>(&mut self, column: usize, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.problem(column, message);
                None
            }
        }
    }
}

fn parse_region(s: &str) -> Result<Region, String> {
    Region::ALL
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("{} is not a region (belgrade, novi_sad, central)", shown(s)))
}

fn parse_kind(s: &str) -> Result<MeterKind, String> {
    match s {
        "household" => Ok(MeterKind::Household),
        "master" => Ok(MeterKind::Master),
        _ => Err(format!("{} is not a meter kind (household, master)", shown(s))),
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "mqtt" => Ok(Protocol::Mqtt),
        "dlms" => Ok(Protocol::Dlms),
        "modbus" => Ok(Protocol::Modbus),
        _ => Err(format!("{} is not a protocol (mqtt, dlms, modbus)", shown(s))),
    }
}

const fn kind_str(k: MeterKind) -> &'static str {
    match k {
        MeterKind::Household => "household",
        MeterKind::Master => "master",
    }
}

const fn protocol_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Mqtt => "mqtt",
        Protocol::Dlms => "dlms",
        Protocol::Modbus => "modbus",
    }
}

/// A strict `YYYY-MM-DD` date.
fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    shape
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| format!("{} is not a date (YYYY-MM-DD)", shown(s)))
}

/// A positive decimal in plain notation (`54.30`, `7`), with at most `int` digits before the point
/// (leading zeros aside) and `frac` after it, so that it fits `numeric(int + frac, frac)` unrounded.
fn check_decimal(s: &str, (int, frac): (usize, usize)) -> Result<(), String> {
    let (whole, fraction) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits(whole) && fraction.is_none_or(digits);
    let significant = whole.trim_start_matches('0').len();
    let fraction_len = fraction.map_or(0, str::len);
    let positive = whole.bytes().chain(fraction.unwrap_or("").bytes()).any(|b| b != b'0');
    if well_formed && significant <= int && fraction_len <= frac && positive {
        Ok(())
    } else {
        Err(format!(
            "{} is not a positive decimal with at most {int} digits before and {frac} after the point",
            shown(s)
        ))
    }
}

/// The value of a checked decimal as a comparable key: `054.30` and `54.3` are the same.
fn decimal_key(s: &str) -> String {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    }
}

fn parse_residents(s: &str) -> Result<i16, String> {
    match s.parse::<i16>() {
        Ok(n) if n >= 0 => Ok(n),
        Ok(_) => Err(format!("{} is negative: residents must be 0 or more", shown(s))),
        Err(_) => Err(format!("{} is not a whole number of residents (0 to {})", shown(s), i16::MAX)),
    }
}

fn parse_serial(s: &str) -> Result<&str, String> {
    if MeterSerial::is_valid(s) {
        Ok(s)
    } else {
        Err(format!("{}: {}", shown(s), schemas::reading::SerialError))
    }
}

/// Checks every cell of one row (all problems reported); the row when it is good.
fn parse_row(line: Line, columns: &Columns, record: &csv::ByteRecord, problems: &mut Problems) -> Option<InventoryRow> {
    let mut c = Cells { line, columns, record, problems, ok: true };
    let building = c.required(BUILDING);
    let address = c.required(ADDRESS);
    let municipality = c.required(MUNICIPALITY);
    let region = c.required(REGION).and_then(|s| c.check(REGION, parse_region(s)));
    let meter = c.required(METER).and_then(|s| c.check(METER, parse_serial(s)));
    let kind = c.required(METER_KIND).and_then(|s| c.check(METER_KIND, parse_kind(s)));
    let protocol = c.required(PROTOCOL).and_then(|s| c.check(PROTOCOL, parse_protocol(s)));
    let household = c.household(HOUSEHOLD, kind);
    let apartment = c.household(APARTMENT, kind);
    let floor_area = c
        .household(FLOOR_AREA, kind)
        .and_then(|s| c.check(FLOOR_AREA, check_decimal(s, FLOOR_AREA_DIGITS).map(|()| s)));
    let residents = c.household(RESIDENTS, kind).and_then(|s| c.check(RESIDENTS, parse_residents(s)));
    let approved_power = c
        .household(APPROVED_POWER, kind)
        .and_then(|s| c.check(APPROVED_POWER, check_decimal(s, APPROVED_POWER_DIGITS).map(|()| s)));
    let tariff = c.household(TARIFF, kind);
    let meter_address = c.optional(METER_ADDRESS);
    let feeder = c.optional(FEEDER);
    let transformer = c.optional(TRANSFORMER);
    let installed_on = c.required(INSTALLED_ON).and_then(|s| c.check(INSTALLED_ON, parse_date(s)));
    let removed_on = c.optional(REMOVED_ON).and_then(|s| c.check(REMOVED_ON, parse_date(s)));
    if let (Some(i), Some(r)) = (installed_on, removed_on) {
        if r < i {
            c.problem(REMOVED_ON, format!("removed on {r}, before it was installed on {i}"));
        }
    }
    if !c.ok {
        return None;
    }
    let own = |s: Option<&str>| s.map(str::to_owned);
    Some(InventoryRow {
        building: building?.to_owned(),
        address: address?.to_owned(),
        municipality: municipality?.to_owned(),
        region: region?,
        household: own(household),
        apartment: own(apartment),
        floor_area_m2: own(floor_area),
        residents,
        approved_power_kw: own(approved_power),
        tariff: own(tariff),
        meter: meter?.to_owned(),
        meter_kind: kind?,
        protocol: protocol?,
        meter_address: own(meter_address),
        feeder: own(feeder),
        transformer: own(transformer),
        installed_on: installed_on?,
        removed_on,
    })
}

/// The first row (and its line) that described a building, household, meter or master meter.
type Seen<'a> = (Line, &'a InventoryRow);

/// Two checked decimals with the same value (`54.3` and `54.30`).
fn same_decimal(a: &str, b: &str) -> bool {
    a == b || decimal_key(a) == decimal_key(b)
}

/// The rules spanning rows, over the rows that passed their own checks, in line order. Keys borrow
/// from the rows: no copies for the fleet's 205,000 rows.
fn cross_check(rows: &[(Line, InventoryRow)], problems: &mut Problems) {
    let n = rows.len();
    let mut meters: HashMap<&str, Line> = HashMap::with_capacity(n);
    let mut buildings: HashMap<&str, Seen<'_>> = HashMap::new();
    let mut households: HashMap<&str, Seen<'_>> = HashMap::with_capacity(n);
    let mut apartments: HashMap<(&str, &str), Seen<'_>> = HashMap::with_capacity(n);
    // Masters per building and meters per household, in service only.
    let mut masters: HashMap<&str, Seen<'_>> = HashMap::new();
    let mut in_service: HashMap<&str, Seen<'_>> = HashMap::with_capacity(n);

    for (line, row) in rows {
        let line = *line;
        let mut report = |column: usize, message: String| problems.push(Some(line), Some(HEADER[column]), message);

        match meters.entry(&row.meter) {
            Entry::Occupied(e) => report(METER, format!("meter {} is already on line {}", shown(&row.meter), e.get())),
            Entry::Vacant(e) => {
                e.insert(line);
            }
        }

        match buildings.entry(&row.building) {
            Entry::Occupied(e) => {
                let (l, first) = *e.get();
                let b = shown(&row.building);
                if first.address != row.address {
                    let (here, there) = (shown(&row.address), shown(&first.address));
                    report(ADDRESS, format!("building {b} has address {here} here but {there} on line {l}"));
                }
                if first.municipality != row.municipality {
                    let (here, there) = (shown(&row.municipality), shown(&first.municipality));
                    report(
                        MUNICIPALITY,
                        format!("building {b} is in municipality {here} here but {there} on line {l}"),
                    );
                }
                if first.region != row.region {
                    let (here, there) = (row.region.as_str(), first.region.as_str());
                    report(REGION, format!("building {b} is in region {here} here but {there} on line {l}"));
                }
            }
            Entry::Vacant(e) => {
                e.insert((line, row));
            }
        }

        let in_service_now = row.removed_on.is_none();
        if row.meter_kind == MeterKind::Master && in_service_now {
            match masters.entry(&row.building) {
                Entry::Occupied(e) => {
                    let (l, first) = *e.get();
                    let (b, m) = (shown(&row.building), shown(&first.meter));
                    report(METER, format!("building {b} already has master meter {m} in service on line {l}"));
                }
                Entry::Vacant(e) => {
                    e.insert((line, row));
                }
            }
        }

        let (Some(code), Some(apartment)) = (row.household.as_deref(), row.apartment.as_deref()) else {
            continue;
        };
        match households.entry(code) {
            Entry::Occupied(e) => {
                let (l, first) = *e.get();
                let h = shown(code);
                if first.building != row.building {
                    let (here, there) = (shown(&row.building), shown(&first.building));
                    report(BUILDING, format!("household {h} is in building {here} here but {there} on line {l}"));
                }
                fn text(v: &Option<String>) -> &str {
                    v.as_deref().unwrap_or_default()
                }
                let decimal = |a: &Option<String>, b: &Option<String>| same_decimal(text(a), text(b));
                let same = [
                    (APARTMENT, first.apartment == row.apartment),
                    (FLOOR_AREA, decimal(&first.floor_area_m2, &row.floor_area_m2)),
                    (RESIDENTS, first.residents == row.residents),
                    (APPROVED_POWER, decimal(&first.approved_power_kw, &row.approved_power_kw)),
                    (TARIFF, first.tariff == row.tariff),
                ];
                for (column, same) in same {
                    if !same {
                        let cell = |r: &InventoryRow| match column {
                            APARTMENT => shown(text(&r.apartment)),
                            FLOOR_AREA => text(&r.floor_area_m2).to_owned(),
                            RESIDENTS => r.residents.map(|n| n.to_string()).unwrap_or_default(),
                            APPROVED_POWER => text(&r.approved_power_kw).to_owned(),
                            _ => shown(text(&r.tariff)),
                        };
                        let (name, here, there) = (HEADER[column], cell(row), cell(first));
                        report(column, format!("household {h} has {name} {here} here but {there} on line {l}"));
                    }
                }
            }
            Entry::Vacant(e) => {
                e.insert((line, row));
                match apartments.entry((&row.building, apartment)) {
                    Entry::Occupied(e) => {
                        let (l, first) = *e.get();
                        let (a, b) = (shown(apartment), shown(&row.building));
                        let other = shown(first.household.as_deref().unwrap_or_default());
                        report(
                            APARTMENT,
                            format!("apartment {a} of building {b} is already household {other} on line {l}"),
                        );
                    }
                    Entry::Vacant(e) => {
                        e.insert((line, row));
                    }
                }
            }
        }
        if in_service_now {
            match in_service.entry(code) {
                Entry::Occupied(e) => {
                    let (l, first) = *e.get();
                    let (h, m) = (shown(code), shown(&first.meter));
                    report(METER, format!("household {h} already has meter {m} in service on line {l}"));
                }
                Entry::Vacant(e) => {
                    e.insert((line, row));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Staging (pure): the file's buildings, households and meters as column arrays
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct StagedBuildings<'a> {
    line: Vec<i64>,
    code: Vec<&'a str>,
    address: Vec<&'a str>,
    municipality: Vec<&'a str>,
    region: Vec<&'static str>,
}

#[derive(Default)]
struct StagedHouseholds<'a> {
    line: Vec<i64>,
    code: Vec<&'a str>,
    building: Vec<&'a str>,
    apartment: Vec<&'a str>,
    floor_area: Vec<&'a str>,
    residents: Vec<i16>,
    approved_power: Vec<&'a str>,
    tariff: Vec<&'a str>,
}

#[derive(Default)]
struct StagedMeters<'a> {
    line: Vec<i64>,
    serial: Vec<&'a str>,
    kind: Vec<&'static str>,
    protocol: Vec<&'static str>,
    address: Vec<Option<&'a str>>,
    building: Vec<&'a str>,
    household: Vec<Option<&'a str>>,
    feeder: Vec<Option<&'a str>>,
    transformer: Vec<Option<&'a str>>,
    installed_on: Vec<NaiveDate>,
    removed_on: Vec<Option<NaiveDate>>,
}

#[derive(Default)]
struct Staged<'a> {
    buildings: StagedBuildings<'a>,
    households: StagedHouseholds<'a>,
    meters: StagedMeters<'a>,
}

impl<'a> Staged<'a> {
    /// One entry per building and household (their first row), one per meter. The rows were checked by
    /// [`parse`], so the repeated descriptions agree.
    fn from_rows(rows: &'a [(Line, InventoryRow)]) -> Staged<'a> {
        let mut s = Staged::default();
        let mut buildings = HashSet::new();
        let mut households = HashSet::new();
        for (line, r) in rows {
            let line = i64::try_from(*line).unwrap_or(i64::MAX);
            if buildings.insert(r.building.as_str()) {
                let b = &mut s.buildings;
                b.line.push(line);
                b.code.push(&r.building);
                b.address.push(&r.address);
                b.municipality.push(&r.municipality);
                b.region.push(r.region.as_str());
            }
            if let (
                Some(code),
                Some(apartment),
                Some(floor_area),
                Some(residents),
                Some(approved_power),
                Some(tariff),
            ) = (
                r.household.as_deref(),
                r.apartment.as_deref(),
                r.floor_area_m2.as_deref(),
                r.residents,
                r.approved_power_kw.as_deref(),
                r.tariff.as_deref(),
            ) {
                if households.insert(code) {
                    let h = &mut s.households;
                    h.line.push(line);
                    h.code.push(code);
                    h.building.push(&r.building);
                    h.apartment.push(apartment);
                    h.floor_area.push(floor_area);
                    h.residents.push(residents);
                    h.approved_power.push(approved_power);
                    h.tariff.push(tariff);
                }
            }
            let m = &mut s.meters;
            m.line.push(line);
            m.serial.push(&r.meter);
            m.kind.push(kind_str(r.meter_kind));
            m.protocol.push(protocol_str(r.protocol));
            m.address.push(r.meter_address.as_deref());
            m.building.push(&r.building);
            m.household.push(r.household.as_deref());
            m.feeder.push(r.feeder.as_deref());
            m.transformer.push(r.transformer.as_deref());
            m.installed_on.push(r.installed_on);
            m.removed_on.push(r.removed_on);
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Import (database)
// ---------------------------------------------------------------------------------------------

const STAGING_TABLES: &str = "
CREATE TEMP TABLE inv_buildings (
    line          int8 NOT NULL,
    code          text PRIMARY KEY,
    address       text NOT NULL,
    municipality  text NOT NULL,
    region        text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE inv_households (
    line               int8 NOT NULL,
    code               text PRIMARY KEY,
    building           text NOT NULL,
    apartment          text NOT NULL,
    floor_area_m2      numeric(8, 2) NOT NULL,
    residents          smallint NOT NULL,
    approved_power_kw  numeric(6, 2) NOT NULL,
    tariff             text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE inv_meters (
    line          int8 NOT NULL,
    serial        text PRIMARY KEY,
    kind          text NOT NULL,
    protocol      text NOT NULL,
    address       text,
    building      text NOT NULL,
    household     text,
    feeder        text,
    transformer   text,
    installed_on  date NOT NULL,
    removed_on    date
) ON COMMIT DROP;";

/// Imports an inventory CSV: all or nothing, idempotent. See the module documentation.
pub async fn import(client: &mut Client, reader: impl Read) -> Result<ImportReport, InventoryError> {
    let started = Instant::now();
    let rows = parse(reader)?;
    let staged = Staged::from_rows(&rows);

    let tx = client.transaction().await?;
    let migrated: bool = tx.query_one("SELECT to_regclass('meters') IS NOT NULL", &[]).await?.get(0);
    if !migrated {
        return Err(InventoryError::NotMigrated);
    }
    // One import at a time: the checks below read what the writes then rely on.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('headend_inventory_import'))", &[]).await?;
    // The fleet's staging tables are a few tens of MB: sort and hash them in memory.
    tx.batch_execute("SET LOCAL work_mem = '64MB'").await?;
    load_staging(&tx, &staged).await?;

    let conflicts = find_conflicts(&tx).await?;
    if !conflicts.is_empty() {
        // Dropping the transaction rolls it back; nothing was written yet anyway.
        return Err(InventoryError::Conflict(conflicts));
    }

    let (buildings, households, meters) = write(&tx).await.map_err(write_error)?;
    tx.commit().await?;

    let report = ImportReport {
        rows_read: u64::try_from(rows.len()).unwrap_or(u64::MAX),
        buildings: Counts::new(staged.buildings.code.len(), buildings.0, buildings.1),
        households: Counts::new(staged.households.code.len(), households.0, households.1),
        meters: Counts::new(staged.meters.serial.len(), meters.0, meters.1),
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        rows = report.rows_read,
        buildings = ?report.buildings,
        households = ?report.households,
        meters = ?report.meters,
        elapsed_s = report.elapsed_seconds,
        "inventory imported"
    );
    Ok(report)
}

async fn load_staging(tx: &Transaction<'_>, s: &Staged<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(STAGING_TABLES).await?;
    let b = &s.buildings;
    tx.execute(
        "INSERT INTO inv_buildings (line, code, address, municipality, region)
         SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[])",
        &[&b.line, &b.code, &b.address, &b.municipality, &b.region],
    )
    .await?;
    let h = &s.households;
    tx.execute(
        "INSERT INTO inv_households
             (line, code, building, apartment, floor_area_m2, residents, approved_power_kw, tariff)
         SELECT l, c, b, a, f::numeric, r, p::numeric, t
         FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[], $7::text[], $8::text[])
             AS u (l, c, b, a, f, r, p, t)",
        &[&h.line, &h.code, &h.building, &h.apartment, &h.floor_area, &h.residents, &h.approved_power, &h.tariff],
    )
    .await?;
    let m = &s.meters;
    tx.execute(
        "INSERT INTO inv_meters
             (line, serial, kind, protocol, address, building, household, feeder, transformer, installed_on,
              removed_on)
         SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $10::date[], $11::date[])",
        &[
            &m.line,
            &m.serial,
            &m.kind,
            &m.protocol,
            &m.address,
            &m.building,
            &m.household,
            &m.feeder,
            &m.transformer,
            &m.installed_on,
            &m.removed_on,
        ],
    )
    .await?;
    // Temporary tables are never analysed automatically; the joins below need the row counts.
    tx.batch_execute("ANALYZE inv_buildings; ANALYZE inv_households; ANALYZE inv_meters;").await
}

/// Where the file disagrees with the database in a way an update must not paper over.
async fn find_conflicts(tx: &Transaction<'_>) -> Result<Problems, tokio_postgres::Error> {
    let mut found: Vec<(i64, &'static str, String)> = Vec::new();

    for r in tx
        .query(
            "SELECT s.line, s.code, s.building, b.code
             FROM inv_households s
             JOIN households h ON h.code = s.code
             JOIN buildings b ON b.id = h.building_id
             WHERE b.code <> s.building",
            &[],
        )
        .await?
    {
        let (code, file, db): (&str, &str, &str) = (r.get(1), r.get(2), r.get(3));
        found.push((
            r.get(0),
            HEADER[BUILDING],
            format!(
                "household {} is in building {} in the database; the file puts it in building {}",
                shown(code),
                shown(db),
                shown(file)
            ),
        ));
    }

    for r in tx
        .query(
            "SELECT s.line, s.serial, s.kind, s.building, s.household, m.kind, b.code, h.code
             FROM inv_meters s
             JOIN meters m ON m.serial = s.serial
             JOIN buildings b ON b.id = m.building_id
             LEFT JOIN households h ON h.id = m.household_id
             WHERE m.kind <> s.kind OR b.code <> s.building OR h.code IS DISTINCT FROM s.household",
            &[],
        )
        .await?
    {
        let line: i64 = r.get(0);
        let serial = shown(r.get(1));
        let (kind, building, household): (&str, &str, Option<&str>) = (r.get(2), r.get(3), r.get(4));
        let (db_kind, db_building, db_household): (&str, &str, Option<&str>) = (r.get(5), r.get(6), r.get(7));
        if kind != db_kind {
            found.push((
                line,
                HEADER[METER_KIND],
                format!("meter {serial} is a {db_kind} meter in the database; the file makes it a {kind} meter"),
            ));
        }
        if building != db_building {
            found.push((
                line,
                HEADER[BUILDING],
                format!(
                    "meter {serial} is in building {} in the database; the file puts it in building {}",
                    shown(db_building),
                    shown(building)
                ),
            ));
        }
        if kind == db_kind && household != db_household {
            let name = |h: Option<&str>| h.map_or_else(|| "none".to_owned(), shown);
            found.push((
                line,
                HEADER[HOUSEHOLD],
                format!(
                    "meter {serial} belongs to household {} in the database; the file gives it to household {}",
                    name(db_household),
                    name(household)
                ),
            ));
        }
    }

    for r in tx
        .query(
            "SELECT s.line, s.serial, s.building, m.serial
             FROM inv_meters s
             JOIN buildings b ON b.code = s.building
             JOIN meters m ON m.building_id = b.id AND m.kind = 'master' AND m.removed_on IS NULL
             WHERE s.kind = 'master' AND s.removed_on IS NULL AND m.serial <> s.serial
               AND NOT EXISTS (SELECT 1 FROM inv_meters x WHERE x.serial = m.serial)",
            &[],
        )
        .await?
    {
        found.push((
            r.get(0),
            HEADER[METER],
            format!(
                "building {} already has master meter {} in service in the database; remove it (removed_on) \
                 in the same file to replace it with {}",
                shown(r.get(2)),
                shown(r.get(3)),
                shown(r.get(1))
            ),
        ));
    }

    for r in tx
        .query(
            "SELECT s.line, s.serial, s.household, m.serial
             FROM inv_meters s
             JOIN households h ON h.code = s.household
             JOIN meters m ON m.household_id = h.id AND m.removed_on IS NULL
             WHERE s.removed_on IS NULL AND m.serial <> s.serial
               AND NOT EXISTS (SELECT 1 FROM inv_meters x WHERE x.serial = m.serial)",
            &[],
        )
        .await?
    {
        found.push((
            r.get(0),
            HEADER[METER],
            format!(
                "household {} already has meter {} in service in the database; remove it (removed_on) \
                 in the same file to replace it with {}",
                shown(r.get(2)),
                shown(r.get(3)),
                shown(r.get(1))
            ),
        ));
    }

    for r in tx
        .query(
            "SELECT s.line, s.code, s.building, s.apartment, h.code
             FROM inv_households s
             JOIN buildings b ON b.code = s.building
             JOIN households h ON h.building_id = b.id AND h.apartment = s.apartment
             WHERE h.code <> s.code
               AND NOT EXISTS (SELECT 1 FROM inv_households x WHERE x.code = h.code)",
            &[],
        )
        .await?
    {
        found.push((
            r.get(0),
            HEADER[APARTMENT],
            format!(
                "apartment {} of building {} is household {} in the database, not {}",
                shown(r.get(3)),
                shown(r.get(2)),
                shown(r.get(4)),
                shown(r.get(1))
            ),
        ));
    }

    found.sort_by_key(|(line, _, _)| *line);
    let mut problems = Problems::default();
    for (line, column, message) in found {
        problems.push(u64::try_from(line).ok(), Some(column), message);
    }
    Ok(problems)
}

/// (inserted, updated) per table.
type Written = ((u64, u64), (u64, u64), (u64, u64));

/// The set-based upserts. Updates run before inserts, and meters leaving service before the others,
/// so that replacing a building's master meter never has two in service at once.
async fn write(tx: &Transaction<'_>) -> Result<Written, tokio_postgres::Error> {
    let b_updated = tx
        .execute(
            "UPDATE buildings b SET address = s.address, municipality = s.municipality, region = s.region
             FROM inv_buildings s
             WHERE b.code = s.code
               AND (b.address, b.municipality, b.region) IS DISTINCT FROM (s.address, s.municipality, s.region)",
            &[],
        )
        .await?;
    let b_inserted = tx
        .execute(
            "INSERT INTO buildings (code, address, municipality, region)
             SELECT s.code, s.address, s.municipality, s.region FROM inv_buildings s
             WHERE NOT EXISTS (SELECT 1 FROM buildings b WHERE b.code = s.code)
             ORDER BY s.line",
            &[],
        )
        .await?;

    let h_updated = tx
        .execute(
            "UPDATE households h SET apartment = s.apartment, floor_area_m2 = s.floor_area_m2,
                 residents = s.residents, approved_power_kw = s.approved_power_kw, tariff = s.tariff
             FROM inv_households s
             WHERE h.code = s.code
               AND (h.apartment, h.floor_area_m2, h.residents, h.approved_power_kw, h.tariff)
                   IS DISTINCT FROM (s.apartment, s.floor_area_m2, s.residents, s.approved_power_kw, s.tariff)",
            &[],
        )
        .await?;
    let h_inserted = tx
        .execute(
            "INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
             SELECT s.code, b.id, s.apartment, s.floor_area_m2, s.residents, s.approved_power_kw, s.tariff
             FROM inv_households s JOIN buildings b ON b.code = s.building
             WHERE NOT EXISTS (SELECT 1 FROM households h WHERE h.code = s.code)
             ORDER BY s.line",
            &[],
        )
        .await?;

    let mut m_updated = 0;
    for leaving_service in [true, false] {
        m_updated += tx
            .execute(
                "UPDATE meters m SET protocol = s.protocol, address = s.address, feeder = s.feeder,
                     transformer = s.transformer, installed_on = s.installed_on, removed_on = s.removed_on
                 FROM inv_meters s
                 WHERE m.serial = s.serial AND (s.removed_on IS NOT NULL) = $1
                   AND (m.protocol, m.address, m.feeder, m.transformer, m.installed_on, m.removed_on)
                       IS DISTINCT FROM (s.protocol, s.address, s.feeder, s.transformer, s.installed_on, s.removed_on)",
                &[&leaving_service],
            )
            .await?;
    }
    let m_inserted = tx
        .execute(
            "INSERT INTO meters (serial, kind, protocol, address, building_id, household_id, feeder, transformer,
                                 installed_on, removed_on)
             SELECT s.serial, s.kind, s.protocol, s.address, b.id, h.id, s.feeder, s.transformer, s.installed_on,
                    s.removed_on
             FROM inv_meters s
             JOIN buildings b ON b.code = s.building
             LEFT JOIN households h ON h.code = s.household
             WHERE NOT EXISTS (SELECT 1 FROM meters m WHERE m.serial = s.serial)
             ORDER BY s.line",
            &[],
        )
        .await?;
    Ok(((b_inserted, b_updated), (h_inserted, h_updated), (m_inserted, m_updated)))
}

/// A constraint the checks did not foresee (e.g. two households swapping apartments in one file) is a
/// conflict, reported with the database's words; anything else is a database error.
fn write_error(e: tokio_postgres::Error) -> InventoryError {
    let constraint = [SqlState::UNIQUE_VIOLATION, SqlState::CHECK_VIOLATION, SqlState::FOREIGN_KEY_VIOLATION];
    match e.as_db_error() {
        Some(db) if constraint.contains(db.code()) => {
            let mut message = db.message().to_owned();
            if let Some(detail) = db.detail() {
                message = format!("{message} ({detail})");
            }
            let mut problems = Problems::default();
            problems.push(None, None, message);
            InventoryError::Conflict(problems)
        }
        _ => InventoryError::Database(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;

    const HOUSEHOLD_COLUMNS: [usize; 6] = [HOUSEHOLD, APARTMENT, FLOOR_AREA, RESIDENTS, APPROVED_POWER, TARIFF];

    const HEAD: &str = "building,address,municipality,region,household,apartment,floor_area_m2,residents,\
                        approved_power_kw,tariff,meter,meter_kind,protocol,meter_address,feeder,transformer,\
                        installed_on,removed_on";

    /// Two buildings: B1 with a master meter and two households (H2's first meter replaced),
    /// B2 with one household on DLMS.
    fn small() -> String {
        [
            HEAD,
            "B1,Bulevar 1,Novi Beograd,belgrade,,,,,,,M1,master,mqtt,,F1,T1,2024-01-10,",
            "B1,Bulevar 1,Novi Beograd,belgrade,H1,1,54.30,2,6.90,eps-household-2025,S1,household,mqtt,,F1,T1,2024-01-10,",
            "B1,Bulevar 1,Novi Beograd,belgrade,H2,2,71,3,11.04,eps-household-2025,S2,household,mqtt,,F1,T1,2024-01-10,2025-03-01",
            "B1,Bulevar 1,Novi Beograd,belgrade,H2,2,71.00,3,11.04,eps-household-2025,S3,household,mqtt,,F1,T1,2025-03-01,",
            "B2,\"Zmaj Jovina 3, ulaz 2\",Novi Sad,novi_sad,H3,7a,40.5,0,3.45,eps-household-2025,S4,household,dlms,10.0.0.4:4059,,,2023-05-05,",
        ]
        .join("\n")
    }

    async fn count(c: &Client, table: &str) -> i64 {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
    }

    async fn counts(c: &Client) -> [i64; 3] {
        [count(c, "buildings").await, count(c, "households").await, count(c, "meters").await]
    }

    fn problems(e: &InventoryError) -> Vec<(Option<Line>, Option<String>)> {
        e.problems().expect("problems").shown().iter().map(|p| (p.line, p.column.clone())).collect()
    }

    fn has(e: &InventoryError, line: Line, column: &str) -> bool {
        problems(e).contains(&(Some(line), Some(column.to_owned())))
    }

    fn c(inserted: u64, updated: u64, unchanged: u64) -> Counts {
        Counts { inserted, updated, unchanged }
    }

    #[test]
    fn column_positions_match_the_header() {
        let positions = [
            (BUILDING, "building"),
            (ADDRESS, "address"),
            (MUNICIPALITY, "municipality"),
            (REGION, "region"),
            (HOUSEHOLD, "household"),
            (APARTMENT, "apartment"),
            (FLOOR_AREA, "floor_area_m2"),
            (RESIDENTS, "residents"),
            (APPROVED_POWER, "approved_power_kw"),
            (TARIFF, "tariff"),
            (METER, "meter"),
            (METER_KIND, "meter_kind"),
            (PROTOCOL, "protocol"),
            (METER_ADDRESS, "meter_address"),
            (FEEDER, "feeder"),
            (TRANSFORMER, "transformer"),
            (INSTALLED_ON, "installed_on"),
            (REMOVED_ON, "removed_on"),
        ];
        for (i, name) in positions {
            assert_eq!(HEADER[i], name);
        }
        assert_eq!(positions.len(), HEADER.len());
    }

    #[test]
    fn parses_the_small_file_with_lines() {
        let rows = parse(small().as_bytes()).expect("valid");
        assert_eq!(rows.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
        let (_, m) = &rows[0];
        assert_eq!((m.meter_kind, m.household.as_deref(), m.residents), (MeterKind::Master, None, None));
        let (_, h) = &rows[4];
        assert_eq!(h.address, "Zmaj Jovina 3, ulaz 2");
        assert_eq!(h.floor_area_m2.as_deref(), Some("40.5"));
        assert_eq!(h.meter_address.as_deref(), Some("10.0.0.4:4059"));
        assert_eq!(h.region, Region::NoviSad);
        assert_eq!(h.protocol, Protocol::Dlms);
        assert_eq!(h.removed_on, None);
        assert_eq!(rows[2].1.removed_on, NaiveDate::from_ymd_opt(2025, 3, 1));
    }

    #[test]
    fn columns_in_any_order_optional_ones_absent_bom_crlf_and_blank_lines() {
        let csv = "\u{feff}meter , meter_kind,protocol,installed_on,building,address,municipality,region\r\n\
                   \r\n\
                   M1,master,modbus,2024-01-01,B1,Main 1,Vračar,central\r\n";
        let rows = parse(csv.as_bytes()).expect("valid");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 3);
        assert_eq!(rows[0].1.municipality, "Vračar");
        assert_eq!(rows[0].1.protocol, Protocol::Modbus);

        let csv = format!("\n{HEAD}\n\n\nB1,A,M,belgrade,,,,,,,M1,master,mqtt,,,,2024-01-01,\r\n\r\nB1,A,M,belgrade,,,,,,,M2,master,mqtt,,,,2024-01-01,");
        let e = parse(csv.as_bytes()).expect_err("two masters");
        assert!(has(&e, 7, "meter"), "{e}");
    }

    #[test]
    fn a_quoted_newline_is_refused_and_later_lines_stay_right() {
        let csv = format!(
            "{HEAD}\nB1,\"Bulevar\n1\",NB,belgrade,,,,,,,M1,master,mqtt,,,,2024-01-10,\nB1,Bulevar,NB,belgrade,,,,,,,M2,master,mqtt,,,,2024-01-10,x"
        );
        let e = parse(csv.as_bytes()).expect_err("invalid");
        assert!(has(&e, 2, "address"), "{e}");
        assert!(has(&e, 4, "removed_on"), "{e}");
    }

    #[test]
    fn decimals() {
        for ok in ["54.30", "7", "0.5", "054.3", "999999.99"] {
            assert!(check_decimal(ok, FLOOR_AREA_DIGITS).is_ok(), "{ok}");
        }
        for bad in ["0", "0.00", "-1", "+1", "1e3", ".5", "5.", "1.234", "1234567", "1,5", "NaN", "", " 1", "1.2.3"] {
            assert!(check_decimal(bad, FLOOR_AREA_DIGITS).is_err(), "{bad}");
        }
        assert!(check_decimal("9999.99", APPROVED_POWER_DIGITS).is_ok());
        assert!(check_decimal("10000", APPROVED_POWER_DIGITS).is_err());
        assert_eq!(decimal_key("054.30"), "54.3");
        assert_eq!(decimal_key("71.00"), "71");
        assert_eq!(decimal_key("0.50"), "0.5");
        assert!(
            parse_date("2024-02-30").is_err() && parse_date("2024-2-3").is_err() && parse_date("+2024-02-03").is_err()
        );
    }

    #[test]
    fn every_bad_row_is_reported_with_line_and_column() {
        let csv = [
            HEAD,
            // 2: fine
            "B1,Bulevar 1,NB,belgrade,H1,1,54.30,2,6.90,t,S1,household,mqtt,,,,2024-01-10,",
            // 3: household meter without its household fields
            "B1,Bulevar 1,NB,belgrade,,,,,,,S2,household,mqtt,,,,2024-01-10,",
            // 4: master meter with household fields
            "B1,Bulevar 1,NB,belgrade,H9,9,50,1,5,t,M1,master,mqtt,,,,2024-01-10,",
            // 5: bad decimals, negative residents, bad serial, removed before installed
            "B1,Bulevar 1,NB,belgrade,H3,3,-4,-1,0,t,bad serial!,household,mqtt,,,,2024-01-10,2023-01-01",
            // 6: unparsable region, kind, protocol, date
            "B1,Bulevar 1,NB,mars,H4,4,50,1,5,t,S4,gas,zigbee,,,,10.01.2024,",
            // 7: duplicate serial; same building with another address
            "B1,Bulevar 2,NB,belgrade,H5,5,50,1,5,t,S1,household,mqtt,,,,2024-01-10,",
            // 8: apartment 1 of B1 is already H1
            "B1,Bulevar 1,NB,belgrade,H6,1,50,1,5,t,S6,household,mqtt,,,,2024-01-10,",
            // 9: H1 again with other residents, and a second meter in service
            "B1,Bulevar 1,NB,belgrade,H1,1,54.3,3,6.90,t,S7,household,mqtt,,,,2024-01-10,",
            // 10: two masters in service
            "B1,Bulevar 1,NB,belgrade,,,,,,,M2,master,mqtt,,,,2024-01-10,",
            "B1,Bulevar 1,NB,belgrade,,,,,,,M3,master,mqtt,,,,2024-01-10,",
            // 12: too few cells
            "B1,Bulevar 1",
            // 13: H1 in another building
            "B2,Other 1,NB,belgrade,H1,1,54.30,2,6.90,t,S13,household,mqtt,,,,2024-01-10,2024-02-01",
        ]
        .join("\n");
        let e = parse(csv.as_bytes()).expect_err("invalid");
        let text = e.to_string();
        println!("{text}");
        for column in HOUSEHOLD_COLUMNS {
            assert!(has(&e, 3, HEADER[column]), "line 3 {}: {text}", HEADER[column]);
            assert!(has(&e, 4, HEADER[column]), "line 4 {}: {text}", HEADER[column]);
        }
        for column in ["floor_area_m2", "residents", "approved_power_kw", "meter", "removed_on"] {
            assert!(has(&e, 5, column), "line 5 {column}: {text}");
        }
        for column in ["region", "meter_kind", "protocol", "installed_on"] {
            assert!(has(&e, 6, column), "line 6 {column}: {text}");
        }
        assert!(has(&e, 7, "meter") && has(&e, 7, "address"), "{text}");
        assert!(has(&e, 8, "apartment"), "{text}");
        assert!(has(&e, 9, "residents") && has(&e, 9, "meter"), "{text}");
        assert!(has(&e, 11, "meter"), "{text}");
        assert!(problems(&e).contains(&(Some(12), None)), "{text}");
        assert!(has(&e, 13, "building"), "{text}");
        assert!(!problems(&e).iter().any(|(l, _)| *l == Some(2) || *l == Some(10)), "{text}");
        assert!(text.contains("line 7, column meter: meter \"S1\" is already on line 2"), "{text}");
        assert!(text.starts_with("the inventory csv is invalid, "), "{text}");
    }

    #[test]
    fn many_problems_are_capped_in_the_message() {
        let mut csv = HEAD.to_owned();
        for i in 0..250 {
            csv.push_str(&format!("\nB1,A,M,belgrade,,,,,,,M{i},master,mqtt,,,,never,"));
        }
        let e = parse(csv.as_bytes()).expect_err("invalid");
        let p = e.problems().expect("problems");
        assert_eq!(p.total(), 250);
        assert_eq!(p.shown().len(), MAX_SHOWN);
        assert!(e.to_string().ends_with("and 150 more"), "{e}");
    }

    #[test]
    fn hostile_input_is_a_clear_error() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", Vec::new(), "header row is required"),
            ("header only", HEAD.as_bytes().to_vec(), "no data rows"),
            ("one column", b"meter\nS1\nS2\n".to_vec(), "missing required column"),
            ("unknown column", format!("{HEAD},colour\n").into_bytes(), "unknown column \"colour\""),
            ("twice", format!("{HEAD},meter\n").into_bytes(), "appears twice"),
            ("binary", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), "problem"),
            (
                "nul in a cell",
                format!("{HEAD}\nB\0,A,M,belgrade,,,,,,,M1,master,mqtt,,,,2024-01-01,").into_bytes(),
                "control",
            ),
            (
                "invalid utf-8",
                [HEAD.as_bytes(), b"\nB\xff,A,M,belgrade,,,,,,,M1,master,mqtt,,,,2024-01-01,"].concat(),
                "utf-8",
            ),
            (
                "long cell",
                format!("{HEAD}\n{},A,M,belgrade,,,,,,,M1,master,mqtt,,,,2024-01-01,", "x".repeat(5000)).into_bytes(),
                "longer than",
            ),
        ];
        for (name, bytes, expected) in cases {
            let e = parse(&bytes[..]).expect_err(name);
            let text = e.to_string();
            assert!(matches!(e, InventoryError::Invalid(_)), "{name}: {text}");
            assert!(text.contains(expected), "{name}: {text}");
            assert!(text.len() < 20_000, "{name}: message bounded");
        }
    }

    #[test]
    fn mutated_files_never_panic() {
        let base = small().into_bytes();
        let mut next = crate::test_support::xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let mut bytes = base.clone();
            for _ in 0..1 + next() % 8 {
                let len = u64::try_from(bytes.len()).expect("small");
                let at = usize::try_from(next() % len.max(1)).expect("small");
                match next() % 4 {
                    0 => bytes[at] = (next() & 0xff) as u8,
                    1 => bytes.insert(at, b",\"\n\r\0"[usize::try_from(next() % 5).expect("small")]),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Err(e) = parse(&bytes[..]) {
                assert!(!e.to_string().is_empty());
            }
        }
    }

    #[tokio::test]
    async fn imports_then_reimport_changes_nothing_then_updates() {
        let db = TestDb::new().await;
        let mut client = db.migrated().await;

        let first = import(&mut client, small().as_bytes()).await.expect("import");
        println!("{}", serde_json::to_string(&first).expect("json"));
        assert_eq!(first.rows_read, 5);
        assert_eq!((first.buildings, first.households, first.meters), (c(2, 0, 0), c(3, 0, 0), c(5, 0, 0)));
        assert_eq!(counts(&client).await, [2, 3, 5]);
        let r = client
            .query_one(
                "SELECT h.floor_area_m2::text, h.approved_power_kw::text, h.residents, b.code, b.region
                 FROM households h JOIN buildings b ON b.id = h.building_id WHERE h.code = 'H2'",
                &[],
            )
            .await
            .expect("household");
        let got: (&str, &str, i16, &str, &str) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(got, ("71.00", "11.04", 3, "B1", "belgrade"));
        let r = client
            .query_one(
                "SELECT m.kind, m.household_id IS NULL, m.feeder, m.removed_on IS NULL FROM meters m WHERE m.serial = 'M1'",
                &[],
            )
            .await
            .expect("master");
        let got: (&str, bool, Option<&str>, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(got, ("master", true, Some("F1"), true));
        let s2_removed: Option<NaiveDate> =
            client.query_one("SELECT removed_on FROM meters WHERE serial = 'S2'", &[]).await.expect("S2").get(0);
        assert_eq!(s2_removed, NaiveDate::from_ymd_opt(2025, 3, 1));

        let again = import(&mut client, small().as_bytes()).await.expect("re-import");
        assert_eq!((again.buildings, again.households, again.meters), (c(0, 0, 2), c(0, 0, 3), c(0, 0, 5)));

        // A changed address, a changed floor area (same value written differently stays unchanged),
        // S4 taken out of service, and a new meter.
        let changed = small()
            .replace("Zmaj Jovina 3, ulaz 2", "Zmaj Jovina 5")
            .replace(",54.30,", ",54.3,")
            .replace(",40.5,", ",41,")
            .replace("10.0.0.4:4059,,,2023-05-05,", "10.0.0.4:4059,,,2023-05-05,2026-01-31")
            + "\nB2,Zmaj Jovina 5,Novi Sad,novi_sad,H3,7a,41,0,3.45,eps-household-2025,S5,household,mqtt,,,,2026-01-31,";
        let third = import(&mut client, changed.as_bytes()).await.expect("update");
        assert_eq!((third.buildings, third.households, third.meters), (c(0, 1, 1), c(0, 1, 2), c(1, 1, 4)));
        let address: String =
            client.query_one("SELECT address FROM buildings WHERE code = 'B2'", &[]).await.expect("B2").get(0);
        assert_eq!(address, "Zmaj Jovina 5");
        let removed: Option<NaiveDate> =
            client.query_one("SELECT removed_on FROM meters WHERE serial = 'S4'", &[]).await.expect("S4").get(0);
        assert_eq!(removed, NaiveDate::from_ymd_opt(2026, 1, 31));

        // The earlier file again: S5 is not in it and stays in service, so S4 back in service conflicts.
        let e = import(&mut client, small().as_bytes()).await.expect_err("second meter in service");
        assert!(matches!(e, InventoryError::Conflict(_)), "{e}");
        assert!(has(&e, 6, "meter"), "{e}");
        assert_eq!(counts(&client).await, [2, 3, 6]);
    }

    #[tokio::test]
    async fn a_bad_file_writes_nothing() {
        let db = TestDb::new().await;
        let mut client = db.migrated().await;
        let bad = small()
            .replace(",54.30,2,", ",54.30,-2,")
            .replace("S3,household", "S2,household")
            .replace("2023-05-05", "2023-02-30");
        let e = import(&mut client, bad.as_bytes()).await.expect_err("invalid");
        println!("{e}");
        assert!(matches!(e, InventoryError::Invalid(_)));
        assert!(has(&e, 3, "residents") && has(&e, 5, "meter") && has(&e, 6, "installed_on"), "{e}");
        assert_eq!(e.problems().map(Problems::total), Some(3), "{e}");
        assert_eq!(counts(&client).await, [0, 0, 0]);

        for hostile in [&b""[..], HEAD.as_bytes(), b"x\n1\n", &[0xff, 0xfe, 0, 1, 2, 10, 200, 44, 34][..]] {
            let e = import(&mut client, hostile).await.expect_err("hostile");
            assert!(matches!(e, InventoryError::Invalid(_)), "{e}");
        }
        assert_eq!(counts(&client).await, [0, 0, 0]);
    }

    #[tokio::test]
    async fn conflicts_with_the_database_roll_everything_back() {
        let db = TestDb::new().await;
        let mut client = db.migrated().await;
        import(&mut client, small().as_bytes()).await.expect("import");

        // H3 moves to building B1, plus a new building that must not be written either.
        let moved = small()
            .replace("B2,\"Zmaj Jovina 3, ulaz 2\",Novi Sad,novi_sad,H3", "B1,Bulevar 1,Novi Beograd,belgrade,H3")
            + "\nB9,Nova 9,Zemun,belgrade,,,,,,,M9,master,mqtt,,,,2024-01-10,";
        let e = import(&mut client, moved.as_bytes()).await.expect_err("conflict");
        println!("{e}");
        assert!(matches!(e, InventoryError::Conflict(_)), "{e}");
        assert!(has(&e, 6, "building"), "{e}");
        assert!(e.to_string().contains("household \"H3\" is in building \"B2\" in the database"), "{e}");
        assert_eq!(counts(&client).await, [2, 3, 5]);

        // A second master in service for B1, the present one not in the file.
        let second = format!("{HEAD}\nB1,Bulevar 1,Novi Beograd,belgrade,,,,,,,M2,master,mqtt,,F1,T1,2025-06-01,");
        let e = import(&mut client, second.as_bytes()).await.expect_err("conflict");
        assert!(has(&e, 2, "meter") && e.to_string().contains("master meter \"M1\""), "{e}");

        // A meter changing household, a meter changing kind, an apartment taken in the database.
        let identity = format!(
            "{HEAD}\n\
             B1,Bulevar 1,Novi Beograd,belgrade,H2,2,71,3,11.04,eps-household-2025,S1,household,mqtt,,F1,T1,2024-01-10,2024-05-01\n\
             B2,Zmaj Jovina 3,Novi Sad,novi_sad,,,,,,,S4,master,dlms,,,,2023-05-05,2024-01-01\n\
             B1,Bulevar 1,Novi Beograd,belgrade,H7,1,30,1,3,eps-household-2025,S9,household,mqtt,,F1,T1,2024-01-10,"
        );
        let e = import(&mut client, identity.as_bytes()).await.expect_err("conflict");
        println!("{e}");
        assert!(has(&e, 2, "household") && has(&e, 3, "meter_kind") && has(&e, 4, "apartment"), "{e}");
        assert_eq!(counts(&client).await, [2, 3, 5]);
        let address: String =
            client.query_one("SELECT address FROM buildings WHERE code = 'B2'", &[]).await.expect("B2").get(0);
        assert_eq!(address, "Zmaj Jovina 3, ulaz 2");

        // Replacing the master in one file works: the old one leaves service, the new one enters.
        let replace = format!(
            "{HEAD}\n\
             B1,Bulevar 1,Novi Beograd,belgrade,,,,,,,M2,master,mqtt,,F1,T1,2025-06-01,\n\
             B1,Bulevar 1,Novi Beograd,belgrade,,,,,,,M1,master,mqtt,,F1,T1,2024-01-10,2025-06-01"
        );
        let r = import(&mut client, replace.as_bytes()).await.expect("replace master");
        assert_eq!((r.buildings, r.households, r.meters), (c(0, 0, 1), c(0, 0, 0), c(1, 1, 0)));
    }

    #[tokio::test]
    async fn a_constraint_the_checks_do_not_foresee_is_a_conflict_and_rolls_back() {
        let db = TestDb::new().await;
        let mut client = db.migrated().await;
        import(&mut client, small().as_bytes()).await.expect("import");
        // H1 and H2 swap apartments: valid as a final state, but the unique index is checked row by row.
        let swapped = small().replace(",H1,1,", ",H1,X,").replace(",H2,2,", ",H2,1,").replace(",H1,X,", ",H1,2,")
            + "\nB3,Nova 1,Zemun,belgrade,,,,,,,M3,master,mqtt,,,,2024-01-10,";
        let e = import(&mut client, swapped.as_bytes()).await.expect_err("conflict");
        println!("{e}");
        assert!(matches!(e, InventoryError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("households_building_id_apartment_key"), "{e}");
        assert_eq!(counts(&client).await, [2, 3, 5]);
    }

    #[tokio::test]
    async fn an_unmigrated_database_is_a_clear_error() {
        let db = TestDb::new().await;
        let mut client = crate::db::connect(&db.url).await.expect("connect");
        let e = import(&mut client, small().as_bytes()).await.expect_err("not migrated");
        assert!(matches!(e, InventoryError::NotMigrated), "{e}");
    }

    /// `n` meters: buildings of 40 households and one master meter each, every protocol, some meters
    /// replaced (removed, with the household's new meter on the next row).
    fn generated_rows(n: usize) -> Vec<InventoryRow> {
        let protocols = [Protocol::Mqtt, Protocol::Dlms, Protocol::Modbus];
        let installed = NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
        let mut rows = Vec::with_capacity(n);
        let mut household = 0usize;
        while rows.len() < n {
            let i = rows.len();
            let b = i / 41;
            let flat = i % 41;
            let protocol = protocols[i % 3];
            let mut row = InventoryRow {
                building: format!("B{b:06}"),
                address: format!("Bulevar \"oslobođenja\" {b}, ulaz {}", b % 4),
                municipality: format!("Opština {}", b % 17),
                region: Region::ALL[b % 3],
                household: None,
                apartment: None,
                floor_area_m2: None,
                residents: None,
                approved_power_kw: None,
                tariff: None,
                meter: format!("SIM{i:08}"),
                meter_kind: MeterKind::Master,
                protocol,
                meter_address: match protocol {
                    Protocol::Mqtt => None,
                    Protocol::Dlms => Some(format!("10.1.{}.{}:4059", b % 250, flat)),
                    Protocol::Modbus => Some(format!("10.2.{}.{}:5020/1", b % 250, flat)),
                },
                feeder: Some(format!("F-{}", b % 50)),
                transformer: (b % 7 != 0).then(|| format!("TS-{}", b % 200)),
                installed_on: installed,
                removed_on: None,
            };
            if flat != 0 {
                household += 1;
                row.meter_kind = MeterKind::Household;
                row.household = Some(format!("H{household:08}"));
                row.apartment = Some(flat.to_string());
                row.floor_area_m2 = Some(format!("{}.{:02}", 25 + i % 95, i % 100));
                row.residents = Some(i16::try_from(i % 6).expect("small"));
                row.approved_power_kw = Some(["5.75", "6.90", "11.04"][i % 3].to_owned());
                row.tariff = Some("eps-household-2025".to_owned());
                if i % 97 == 0 && rows.len() + 1 < n && flat < 40 {
                    // The meter replaced on 2025-06-01: the old one removed, the new one next.
                    let replaced_on = NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
                    let mut new = row.clone();
                    row.removed_on = Some(replaced_on);
                    new.meter = format!("SIM{i:08}R");
                    new.installed_on = replaced_on;
                    rows.push(row);
                    row = new;
                }
            }
            rows.push(row);
        }
        rows
    }

    /// The CSV as `meter-sim inventory` writes it: the header, then the rows through serde.
    fn to_csv(rows: &[InventoryRow]) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        w.write_record(HEADER).expect("header");
        for r in rows {
            w.serialize(r).expect("row");
        }
        w.into_inner().expect("flush")
    }

    #[test]
    fn reads_back_what_the_contract_writer_writes() {
        let rows = generated_rows(3000);
        assert!(rows.iter().any(|r| r.removed_on.is_some()));
        let parsed = parse(&to_csv(&rows)[..]).expect("valid");
        assert_eq!(parsed.iter().map(|(l, _)| *l).max(), Some(3001));
        assert_eq!(parsed.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), rows);
    }

    async fn import_generated(n: usize) {
        let csv = to_csv(&generated_rows(n));
        let db = TestDb::new().await;
        let mut client = db.migrated().await;
        let started = Instant::now();
        let report = import(&mut client, &csv[..]).await.expect("import");
        println!(
            "inventory import of {n} rows: {:.2} s (report: {})",
            started.elapsed().as_secs_f64(),
            serde_json::to_string(&report).expect("json")
        );
        let n64 = u64::try_from(n).expect("n");
        assert_eq!(report.rows_read, n64);
        assert_eq!(report.meters, c(n64, 0, 0));
        let started = Instant::now();
        let again = import(&mut client, &csv[..]).await.expect("re-import");
        println!("inventory re-import of {n} rows: {:.2} s", started.elapsed().as_secs_f64());
        assert_eq!(again.meters, c(0, 0, n64));
        assert_eq!(again.households.inserted + again.households.updated, 0);
        assert_eq!(counts(&client).await[2], i64::try_from(n).expect("n"));
    }

    #[tokio::test]
    async fn imports_20k_generated_rows() {
        import_generated(20_000).await;
    }

    /// The fleet size; run with `cargo test -p headend --release inventory_205k -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "benchmark-sized"]
    async fn inventory_205k_rows() {
        import_generated(205_000).await;
    }
}
