//! Tariffs: the native TOML tariff format, its validation, and a set of successive tariffs.
//!
//! # Format
//!
//! One tariff per file (the shipped `tariffs/eps-household-2025.toml` is the reference example). Decimal
//! numbers are written as **strings** (`vt = "9.6136"`) or integers (`per_month = 349`) so that they are never
//! read as binary floats; a bare float is refused. Unknown keys are refused.
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `code` | string | tariff code, as in the inventory's `tariff` column |
//! | `name` | string | display name |
//! | `currency` | string | currency of every amount (`RSD`) |
//! | `valid_from` | date | first day the tariff applies (inclusive) |
//! | `valid_to` | date, optional | last day it applies (inclusive); absent = open-ended |
//! | `zone_limit_days` | integer 1–366 | zone limits are per this many days (30) and scale with days / this |
//! | `[[zone]]` | array of tables | zones on total kWh (VT + NT) in increasing order, at least one |
//! | `zone.name` | string | `green`, `blue`, `red`, … (unique) |
//! | `zone.up_to_kwh` | decimal | upper limit (inclusive) per `zone_limit_days`; required on every zone but the last, forbidden on the last |
//! | `zone.vt`, `zone.nt`, `zone.single` | decimal ≥ 0 | RSD/kWh: higher (day), lower (night), single-rate meter |
//! | `[night]` | table, optional | `belgrade`, `novi_sad`, `central` = `{ from = H, to = H }`: the NT window `[from, to)` in Europe/Belgrade local hours (0–23, may wrap midnight); a region left out uses [`schemas::inventory::Region::night_window`] |
//! | `fixed.power_per_kw` | decimal ≥ 0 | RSD per kW of approved power per month |
//! | `fixed.supplier` | decimal ≥ 0 | RSD per month |
//! | `fees.renewable`, `fees.efficiency` | decimal ≥ 0 | RSD per kWh of total consumption |
//! | `taxes.excise`, `taxes.vat` | percent 0–100 | excise on the base after discount plus fees; VAT on everything above |
//! | `tv_fee.per_month` | decimal ≥ 0 | RSD per month, outside excise and VAT |
//! | `discounts.e_bill`, `discounts.self_read`, `discounts.on_time` | percent 0–<100 | payment discount on the base |
//!
//! Validation refuses the whole tariff (nothing is billed with a half-read tariff): zone limits not strictly
//! increasing or not positive, zone prices negative or falling from one zone to the next (the bill's
//! monotonicity relies on rising prices), a limit on the last zone, duplicate zone names, `valid_to` before
//! `valid_from`, a night window outside 0–23 or empty, a percentage out of range, any amount above 1,000,000.
//! Every error names the field and the line of the file. A [`TariffSet`] additionally refuses overlapping
//! validity periods.

use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use schemas::inventory::Region;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::interval::NightWindow;
use crate::period::Period;

/// The shipped default: the EPS regulated household tariff from 2025-10-01.
pub const EPS_HOUSEHOLD_2025: &str = include_str!("../tariffs/eps-household-2025.toml");

/// Largest amount, price or limit a tariff may state (keeps all arithmetic far from `Decimal` overflow).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// Why a tariff file or tariff set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    /// A field is missing, malformed or invalid.
    #[error("line {line}: {field}: {message}")]
    Invalid { line: usize, field: String, message: String },
    /// Two tariffs of a set apply on the same day.
    #[error("tariffs {first} and {second} overlap (both apply on {date})")]
    Overlap { first: String, second: String, date: NaiveDate },
    /// No tariff of the set applies on a day of the billing period.
    #[error("no tariff applies on {0}")]
    NotCovered(NaiveDate),
    /// A tariff set without tariffs.
    #[error("a tariff set needs at least one tariff")]
    Empty,
}

/// One consumption zone (on total kWh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    /// Upper limit in kWh per [`Tariff::zone_limit_days`] days; `None` on the last zone.
    pub up_to_kwh: Option<Decimal>,
    /// RSD/kWh in the higher (day) tariff.
    pub vt: Decimal,
    /// RSD/kWh in the lower (night) tariff.
    pub nt: Decimal,
    /// RSD/kWh for a single-rate meter.
    pub single: Decimal,
}

/// Rates of the on-time payment discounts (fractions, e.g. 0.07).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discounts {
    pub e_bill: Decimal,
    pub self_read: Decimal,
    pub on_time: Decimal,
}

/// A validated tariff. Rates (excise, VAT, discounts) are fractions; the file states them in percent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    pub code: String,
    pub name: String,
    pub currency: String,
    pub valid_from: NaiveDate,
    pub valid_to: Option<NaiveDate>,
    pub zone_limit_days: u32,
    pub zones: Vec<Zone>,
    night: [NightWindow; 3],
    pub power_per_kw_month: Decimal,
    pub supplier_per_month: Decimal,
    pub renewable_fee_per_kwh: Decimal,
    pub efficiency_fee_per_kwh: Decimal,
    pub excise_rate: Decimal,
    pub vat_rate: Decimal,
    pub tv_fee_per_month: Decimal,
    pub discounts: Discounts,
}

fn region_index(region: Region) -> usize {
    match region {
        Region::Belgrade => 0,
        Region::NoviSad => 1,
        Region::Central => 2,
    }
}

impl Tariff {
    /// The shipped EPS household tariff from 2025-10-01 ([`EPS_HOUSEHOLD_2025`]).
    pub fn eps_household_2025() -> Result<Tariff, TariffError> {
        Tariff::from_toml(EPS_HOUSEHOLD_2025)
    }

    /// Parses and validates a tariff file. Errors name the field and the line.
    pub fn from_toml(src: &str) -> Result<Tariff, TariffError> {
        let raw: RawTariff = toml::from_str(src).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            TariffError::Invalid {
                line: line_of(src, offset),
                field: field_at(src, offset),
                message: e.message().to_string(),
            }
        })?;
        raw.validate(src)
    }

    /// The NT window of a region (the file's `[night]` entry, else the region's default).
    pub fn night_window(&self, region: Region) -> NightWindow {
        self.night[region_index(region)]
    }

    /// Whether the tariff applies on `day`.
    pub fn applies_on(&self, day: NaiveDate) -> bool {
        day >= self.valid_from && self.valid_to.is_none_or(|to| day <= to)
    }
}

impl fmt::Display for Tariff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |r: Decimal| (r * Decimal::ONE_HUNDRED).normalize();
        writeln!(f, "{} — {}", self.code, self.name)?;
        match self.valid_to {
            Some(to) => writeln!(f, "valid {} to {} (inclusive), amounts in {}", self.valid_from, to, self.currency)?,
            None => writeln!(f, "valid from {} (open-ended), amounts in {}", self.valid_from, self.currency)?,
        }
        writeln!(f, "zones on total kWh per {} days (scaled by days/{}):", self.zone_limit_days, self.zone_limit_days)?;
        for z in &self.zones {
            let limit = z.up_to_kwh.map_or_else(|| "above".to_string(), |l| format!("≤ {l} kWh"));
            writeln!(f, "  {:<8} {:<14} VT {:>9}  NT {:>9}  single {:>9}", z.name, limit, z.vt, z.nt, z.single)?;
        }
        for r in Region::ALL {
            let w = self.night_window(r);
            writeln!(
                f,
                "night window {:<9} {:02}:00–{:02}:00 Europe/Belgrade",
                r.as_str(),
                w.from_hour(),
                w.to_hour()
            )?;
        }
        writeln!(
            f,
            "power charge {} per kW per month; supplier charge {} per month",
            self.power_per_kw_month, self.supplier_per_month
        )?;
        writeln!(
            f,
            "fees per kWh: renewable {}, efficiency {}",
            self.renewable_fee_per_kwh, self.efficiency_fee_per_kwh
        )?;
        writeln!(
            f,
            "excise {} %, then VAT {} %; TV fee {} per month outside both",
            pct(self.excise_rate),
            pct(self.vat_rate),
            self.tv_fee_per_month
        )?;
        write!(
            f,
            "payment discounts: e-bill {} %, self-read {} %, on time {} %",
            pct(self.discounts.e_bill),
            pct(self.discounts.self_read),
            pct(self.discounts.on_time)
        )
    }
}

/// Tariffs that succeed each other in time; validity periods may not overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffSet {
    tariffs: Vec<Tariff>,
}

impl TariffSet {
    /// Orders the tariffs by `valid_from` and refuses overlapping validity.
    pub fn new(mut tariffs: Vec<Tariff>) -> Result<TariffSet, TariffError> {
        if tariffs.is_empty() {
            return Err(TariffError::Empty);
        }
        tariffs.sort_by_key(|t| t.valid_from);
        for pair in tariffs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.valid_to.is_none_or(|to| to >= b.valid_from) {
                return Err(TariffError::Overlap { first: a.code.clone(), second: b.code.clone(), date: b.valid_from });
            }
        }
        Ok(TariffSet { tariffs })
    }

    /// A set of one tariff.
    pub fn single(tariff: Tariff) -> TariffSet {
        TariffSet { tariffs: vec![tariff] }
    }

    pub fn tariffs(&self) -> &[Tariff] {
        &self.tariffs
    }

    /// Splits `period` into consecutive sub-periods, each under one tariff. Every day must be covered.
    pub fn segments(&self, period: Period) -> Result<Vec<(&Tariff, Period)>, TariffError> {
        let mut out = Vec::new();
        let mut day = period.first_day();
        for t in &self.tariffs {
            if t.valid_to.is_some_and(|to| to < day) {
                continue;
            }
            if t.valid_from > day {
                return Err(TariffError::NotCovered(day));
            }
            let last = t.valid_to.map_or(period.last_day(), |to| to.min(period.last_day()));
            let seg = Period::new(day, last).map_err(|_| TariffError::NotCovered(day))?;
            out.push((t, seg));
            match last.succ_opt() {
                Some(next) if last < period.last_day() => day = next,
                _ => return Ok(out),
            }
        }
        Err(TariffError::NotCovered(day))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Raw file structures and validation

/// A decimal read from a TOML string or integer; floats are refused.
#[derive(Debug, Clone, Copy)]
struct Dec(Decimal);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal number written as a string (\"9.6136\") or an integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dec, E> {
                Decimal::from_str_exact(s.trim())
                    .map(Dec)
                    .map_err(|e| E::custom(format!("{s:?} is not a decimal number: {e}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dec, E> {
                Ok(Dec(Decimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dec, E> {
                Ok(Dec(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dec, E> {
                Err(E::custom(format!(
                    "write decimal numbers as strings (\"{v}\") so that they are never read as binary floats"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

type SDec = Spanned<Dec>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTariff {
    code: Spanned<String>,
    name: String,
    currency: Spanned<String>,
    valid_from: Spanned<toml::value::Datetime>,
    valid_to: Option<Spanned<toml::value::Datetime>>,
    zone_limit_days: Spanned<i64>,
    zone: Spanned<Vec<RawZone>>,
    night: Option<RawNight>,
    fixed: RawFixed,
    fees: RawFees,
    taxes: RawTaxes,
    tv_fee: RawTvFee,
    discounts: RawDiscounts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: Spanned<String>,
    up_to_kwh: Option<SDec>,
    vt: SDec,
    nt: SDec,
    single: SDec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNight {
    belgrade: Option<RawWindow>,
    novi_sad: Option<RawWindow>,
    central: Option<RawWindow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    from: Spanned<i64>,
    to: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixed {
    power_per_kw: SDec,
    supplier: SDec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFees {
    renewable: SDec,
    efficiency: SDec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaxes {
    excise: SDec,
    vat: SDec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTvFee {
    per_month: SDec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscounts {
    e_bill: SDec,
    self_read: SDec,
    on_time: SDec,
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The dotted field name at a byte offset: the table header in effect (with the index of an array of tables)
/// and the key on that line.
fn field_at(src: &str, offset: usize) -> String {
    let line_no = line_of(src, offset);
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut key = String::new();
    for (i, line) in src.lines().enumerate().take(line_no) {
        let t = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let c = counts.entry(name.trim().to_string()).or_insert(0);
            *c += 1;
            table = format!("{}[{}]", name.trim(), *c - 1);
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_string();
        }
        if i + 1 == line_no {
            if let Some((k, _)) = t.split_once('=') {
                key = k.trim().to_string();
            }
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(file)".to_string(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

struct Ctx<'a> {
    src: &'a str,
}

impl Ctx<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, TariffError> {
        Err(TariffError::Invalid { line: line_of(self.src, span.start), field: field.into(), message: message.into() })
    }

    fn amount(&self, v: &SDec, field: &str) -> Result<Decimal, TariffError> {
        let x = v.get_ref().0;
        if x.is_sign_negative() && !x.is_zero() {
            return self.err(v.span(), field, format!("must not be negative (got {x})"));
        }
        if x > MAX_AMOUNT {
            return self.err(v.span(), field, format!("{x} is above the limit of {MAX_AMOUNT}"));
        }
        Ok(x)
    }

    /// A percentage in `[0, 100]` (or `[0, 100)` when `below_100`) as a fraction.
    fn percent(&self, v: &SDec, field: &str, below_100: bool) -> Result<Decimal, TariffError> {
        let x = self.amount(v, field)?;
        if x > Decimal::ONE_HUNDRED || (below_100 && x == Decimal::ONE_HUNDRED) {
            let bound = if below_100 { "below 100" } else { "at most 100" };
            return self.err(v.span(), field, format!("a percentage must be {bound} (got {x})"));
        }
        Ok(x / Decimal::ONE_HUNDRED)
    }

    fn date(&self, v: &Spanned<toml::value::Datetime>, field: &str) -> Result<NaiveDate, TariffError> {
        let dt = v.get_ref();
        match (dt.date, dt.time, dt.offset) {
            (Some(d), None, None) => {
                match NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day)) {
                    Some(day) => Ok(day),
                    None => self.err(v.span(), field, format!("{dt} is not a calendar date")),
                }
            }
            _ => self.err(v.span(), field, format!("expected a date like 2025-10-01, got {dt}")),
        }
    }

    fn window(&self, w: Option<&RawWindow>, field: &str, region: Region) -> Result<NightWindow, TariffError> {
        let Some(w) = w else {
            let (from, to) = region.night_window();
            return NightWindow::new(from, to).ok_or(TariffError::Invalid {
                line: 1,
                field: field.to_string(),
                message: "the region's default night window is invalid".to_string(),
            });
        };
        let hour = |v: &Spanned<i64>, name: &str| -> Result<u32, TariffError> {
            match u32::try_from(*v.get_ref()) {
                Ok(h) if h < 24 => Ok(h),
                _ => {
                    self.err(v.span(), format!("{field}.{name}"), format!("an hour must be 0-23 (got {})", v.get_ref()))
                }
            }
        };
        let (from, to) = (hour(&w.from, "from")?, hour(&w.to, "to")?);
        NightWindow::new(from, to).map_or_else(|| self.err(w.from.span(), field, "an empty window (from = to)"), Ok)
    }
}

impl RawTariff {
    fn validate(self, src: &str) -> Result<Tariff, TariffError> {
        let c = Ctx { src };
        for (v, field) in [(&self.code, "code"), (&self.currency, "currency")] {
            if v.get_ref().trim().is_empty() {
                return c.err(v.span(), field, "must not be empty");
            }
        }
        let valid_from = c.date(&self.valid_from, "valid_from")?;
        let valid_to = match &self.valid_to {
            Some(v) => {
                let to = c.date(v, "valid_to")?;
                if to < valid_from {
                    return c.err(v.span(), "valid_to", format!("{to} is before valid_from {valid_from}"));
                }
                Some(to)
            }
            None => None,
        };
        let zone_limit_days = match u32::try_from(*self.zone_limit_days.get_ref()) {
            Ok(d) if (1..=366).contains(&d) => d,
            _ => return c.err(self.zone_limit_days.span(), "zone_limit_days", "must be 1-366"),
        };

        let raw_zones = self.zone.get_ref();
        if raw_zones.is_empty() {
            return c.err(self.zone.span(), "zone", "at least one [[zone]] is needed");
        }
        let mut zones: Vec<Zone> = Vec::with_capacity(raw_zones.len());
        for (i, z) in raw_zones.iter().enumerate() {
            let f = |name: &str| format!("zone[{i}].{name}");
            let name = z.name.get_ref().trim().to_string();
            if name.is_empty() {
                return c.err(z.name.span(), f("name"), "must not be empty");
            }
            if zones.iter().any(|p| p.name == name) {
                return c.err(z.name.span(), f("name"), format!("zone {name:?} appears twice"));
            }
            let last = i + 1 == raw_zones.len();
            let up_to_kwh = match (&z.up_to_kwh, last) {
                (Some(v), true) => return c.err(v.span(), f("up_to_kwh"), "the last zone has no upper limit"),
                (None, false) => return c.err(z.name.span(), f("up_to_kwh"), "missing on a zone that is not the last"),
                (None, true) => None,
                (Some(v), false) => {
                    let x = c.amount(v, &f("up_to_kwh"))?;
                    if x.is_zero() {
                        return c.err(v.span(), f("up_to_kwh"), "must be above 0");
                    }
                    if let Some(prev) = zones.last().and_then(|p| p.up_to_kwh) {
                        if x <= prev {
                            return c.err(v.span(), f("up_to_kwh"), format!("zones must increase: {x} ≤ {prev}"));
                        }
                    }
                    Some(x)
                }
            };
            let vt = c.amount(&z.vt, &f("vt"))?;
            let nt = c.amount(&z.nt, &f("nt"))?;
            let single = c.amount(&z.single, &f("single"))?;
            if let Some(prev) = zones.last() {
                for (v, x, p, name) in
                    [(&z.vt, vt, prev.vt, "vt"), (&z.nt, nt, prev.nt, "nt"), (&z.single, single, prev.single, "single")]
                {
                    if x < p {
                        return c.err(v.span(), f(name), format!("price falls from zone {} ({p}) to {x}", prev.name));
                    }
                }
            }
            zones.push(Zone { name, up_to_kwh, vt, nt, single });
        }

        let night_raw = self.night.as_ref();
        let night = [
            c.window(night_raw.and_then(|n| n.belgrade.as_ref()), "night.belgrade", Region::Belgrade)?,
            c.window(night_raw.and_then(|n| n.novi_sad.as_ref()), "night.novi_sad", Region::NoviSad)?,
            c.window(night_raw.and_then(|n| n.central.as_ref()), "night.central", Region::Central)?,
        ];

        Ok(Tariff {
            code: self.code.get_ref().trim().to_string(),
            name: self.name,
            currency: self.currency.get_ref().trim().to_string(),
            valid_from,
            valid_to,
            zone_limit_days,
            zones,
            night,
            power_per_kw_month: c.amount(&self.fixed.power_per_kw, "fixed.power_per_kw")?,
            supplier_per_month: c.amount(&self.fixed.supplier, "fixed.supplier")?,
            renewable_fee_per_kwh: c.amount(&self.fees.renewable, "fees.renewable")?,
            efficiency_fee_per_kwh: c.amount(&self.fees.efficiency, "fees.efficiency")?,
            excise_rate: c.percent(&self.taxes.excise, "taxes.excise", false)?,
            vat_rate: c.percent(&self.taxes.vat, "taxes.vat", false)?,
            tv_fee_per_month: c.amount(&self.tv_fee.per_month, "tv_fee.per_month")?,
            discounts: Discounts {
                e_bill: c.percent(&self.discounts.e_bill, "discounts.e_bill", true)?,
                self_read: c.percent(&self.discounts.self_read, "discounts.self_read", true)?,
                on_time: c.percent(&self.discounts.on_time, "discounts.on_time", true)?,
            },
        })
    }
}
