//! What the month costs so far, pure, with `billing-core`: the EPS zone progress of the current billing month,
//! the price of the next kWh, the bill to date and the projected month.
//!
//! - **Zones** come from the dated tariff file ([`billing_core::tariff::EPS_HOUSEHOLD_2025`], the tariff that
//!   applies on the day), never from this code. The month's limits are the tariff's `up_to_kwh` scaled by
//!   (days of the month) / `zone_limit_days`, taken from `compute_bill` itself (`SegmentBill::zone_limits`),
//!   so they are exactly the limits the month's bill will use. Consumption counts VT + NT, as the bill does.
//! - **The next kWh** costs the VT or NT price of the zone the month has reached (tariff prices, VAT
//!   excluded), and, as the household pays it, with the per-kWh fees, excise and VAT:
//!   `(price + renewable fee + efficiency fee) × (1 + excise) × (1 + VAT)`.
//! - **Bill to date** = `compute_bill` over the days from the 1st to the day of the latest reading, with the
//!   VT/NT consumed so far (zone limits and monthly charges scaled to those days by billing-core).
//! - **Projection** = the consumption so far scaled to the whole month by time (month length / time elapsed
//!   up to the latest reading, VT and NT each rounded to the Wh), billed over the whole month.

use std::sync::OnceLock;

use billing_core::bill::{compute_bill, Bill, BillInput, SegmentBill};
use billing_core::money::{round_wh, wh_to_kwh};
use billing_core::{Period, Tariff, TariffSet};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use schemas::inventory::Region;
use serde::Serialize;
use utoipa::ToSchema;

use super::calendar::{local_day, midnight, next_month};

/// The tariffs the portal prices with: the shipped EPS household tariff file, parsed once.
pub fn tariffs() -> Option<&'static TariffSet> {
    static SET: OnceLock<Option<TariffSet>> = OnceLock::new();
    SET.get_or_init(|| match Tariff::eps_household_2025() {
        Ok(t) => Some(TariffSet::single(t)),
        Err(e) => {
            tracing::error!(error = %e, "the shipped tariff does not parse");
            None
        }
    })
    .as_ref()
}

/// One zone of the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ZoneLimit {
    /// `green`, `blue`, `red` (the tariff file's names).
    pub zone: String,
    /// The month's limit: the tariff's limit × days of the month / `zone_limit_days`; absent on the last zone.
    #[schema(value_type = Option<String>)]
    pub up_to_kwh: Option<Decimal>,
    /// RSD/kWh, VAT excluded.
    #[schema(value_type = String)]
    pub vt_price: Decimal,
    #[schema(value_type = String)]
    pub nt_price: Decimal,
}

/// What the next kWh costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NextKwh {
    /// The zone the month has reached.
    pub zone: String,
    /// Tariff price, RSD/kWh, VAT excluded.
    #[schema(value_type = String)]
    pub vt_price: Decimal,
    #[schema(value_type = String)]
    pub nt_price: Decimal,
    /// What the household pays for it: with the per-kWh fees, excise and VAT (RSD/kWh, 4 decimals).
    #[schema(value_type = String)]
    pub vt_gross: Decimal,
    #[schema(value_type = String)]
    pub nt_gross: Decimal,
}

/// Where the month stands among the zones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ZoneProgress {
    pub tariff: String,
    /// The billing month, first and last local day.
    pub month_first: NaiveDate,
    pub month_last: NaiveDate,
    /// The tariff's limits are per this many days (30) and scaled by the month's days.
    pub zone_limit_days: u32,
    pub month_days: i64,
    /// VT + NT consumed so far this month.
    #[schema(value_type = String)]
    pub consumed_kwh: Decimal,
    pub zones: Vec<ZoneLimit>,
    /// Index in `zones` of the zone reached.
    pub current: usize,
    pub next_kwh: NextKwh,
}

/// A bill estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Estimate {
    pub period_first: NaiveDate,
    pub period_last: NaiveDate,
    #[schema(value_type = String)]
    pub vt_kwh: Decimal,
    #[schema(value_type = String)]
    pub nt_kwh: Decimal,
    /// Energy lines (all zones, VT and NT), RSD.
    #[schema(value_type = String)]
    pub energy: Decimal,
    /// The bill's total with fees, excise, VAT and the TV fee, RSD (rounded once, as billing does).
    #[schema(value_type = String)]
    pub total: Decimal,
    pub currency: String,
}

impl Estimate {
    fn of(bill: &Bill, vt_kwh: Decimal, nt_kwh: Decimal, currency: &str) -> Estimate {
        Estimate {
            period_first: bill.period.first_day(),
            period_last: bill.period.last_day(),
            vt_kwh,
            nt_kwh,
            energy: bill.segments.iter().map(|s| s.energy).sum(),
            total: bill.total,
            currency: currency.to_owned(),
        }
    }
}

/// What a household's bill needs besides consumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub tariff: String,
    pub approved_power_kw: Decimal,
    pub region: Region,
}

/// The month's cost so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthCost {
    pub zones: Option<ZoneProgress>,
    pub to_date: Option<Estimate>,
    pub projection: Option<Estimate>,
}

/// Why a cost is not shown (logged, never a failed page).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("tariff {0:?} is not loaded (the portal prices the shipped tariff only)")]
    UnknownTariff(String),
    #[error("no tariff loaded")]
    NoTariffs,
    #[error(transparent)]
    Bill(#[from] billing_core::BillError),
    #[error(transparent)]
    Period(#[from] billing_core::period::PeriodError),
}

/// The local month holding `day` as a billing period.
pub fn month_of(day: NaiveDate) -> Result<Period, CostError> {
    Ok(Period::new(day.with_day(1).unwrap_or(day), next_month(day).pred_opt().unwrap_or(day))?)
}

/// The tariff of `contract` that applies on `day`, and the set holding it.
fn tariff_on<'a>(set: &'a TariffSet, contract: &Contract, day: NaiveDate) -> Result<&'a Tariff, CostError> {
    set.tariffs()
        .iter()
        .find(|t| t.code == contract.tariff && t.applies_on(day))
        .ok_or_else(|| CostError::UnknownTariff(contract.tariff.clone()))
}

fn two_rate(period: Period, vt_kwh: Decimal, nt_kwh: Decimal, c: &Contract) -> BillInput {
    BillInput::two_rate(period, vt_kwh, nt_kwh, c.approved_power_kw, c.region)
}

/// `(price + fees) × (1 + excise) × (1 + VAT)`, RSD/kWh to 4 decimals.
fn gross(t: &Tariff, price: Decimal) -> Decimal {
    ((price + t.renewable_fee_per_kwh + t.efficiency_fee_per_kwh)
        * (Decimal::ONE + t.excise_rate)
        * (Decimal::ONE + t.vat_rate))
        .round_dp(4)
}

/// The zone progress of the month holding `day` with `consumed_kwh` (VT + NT) so far.
pub fn zone_progress(
    set: &TariffSet,
    contract: &Contract,
    day: NaiveDate,
    consumed_kwh: Decimal,
) -> Result<ZoneProgress, CostError> {
    let month = month_of(day)?;
    let tariff = tariff_on(set, contract, day)?;
    // The month's limits exactly as its bill computes them.
    let single = TariffSet::single(tariff.clone());
    let bill = compute_bill(&two_rate(month, Decimal::ZERO, Decimal::ZERO, contract), &single)?;
    let limits: Vec<(String, Option<Decimal>)> =
        bill.segments.first().map(|s: &SegmentBill| s.zone_limits.clone()).unwrap_or_default();
    let zones: Vec<ZoneLimit> = tariff
        .zones
        .iter()
        .zip(limits)
        .map(|(z, (_, up_to))| ZoneLimit { zone: z.name.clone(), up_to_kwh: up_to, vt_price: z.vt, nt_price: z.nt })
        .collect();
    // The next kWh goes to the first zone whose limit is above what was consumed.
    let current = zones.iter().position(|z| z.up_to_kwh.is_none_or(|l| consumed_kwh < l)).unwrap_or(0);
    let next_kwh = match zones.get(current) {
        Some(z) => NextKwh {
            zone: z.zone.clone(),
            vt_price: z.vt_price,
            nt_price: z.nt_price,
            vt_gross: gross(tariff, z.vt_price),
            nt_gross: gross(tariff, z.nt_price),
        },
        None => return Err(CostError::NoTariffs),
    };
    Ok(ZoneProgress {
        tariff: tariff.code.clone(),
        month_first: month.first_day(),
        month_last: month.last_day(),
        zone_limit_days: tariff.zone_limit_days,
        month_days: month.days(),
        consumed_kwh,
        zones,
        current,
        next_kwh,
    })
}

/// The bill from the 1st of the month to the day of `until` (the latest reading counted) for `vt_wh` /
/// `nt_wh` consumed so far.
pub fn bill_to_date(
    set: &TariffSet,
    contract: &Contract,
    until: DateTime<Utc>,
    vt_wh: i64,
    nt_wh: i64,
) -> Result<Estimate, CostError> {
    // An instant at local midnight closes the day before.
    let last = local_day(until - chrono::Duration::seconds(1));
    let period = Period::new(month_of(last)?.first_day(), last)?;
    tariff_on(set, contract, last)?;
    let (vt, nt) = (wh_to_kwh(vt_wh), wh_to_kwh(nt_wh));
    let bill = compute_bill(&two_rate(period, vt, nt, contract), set)?;
    Ok(Estimate::of(&bill, vt, nt, &currency(set)))
}

/// VT and NT Wh so far scaled to the whole month: × (month length / time from the month's start to `until`),
/// each rounded to the Wh. `None` before any time has passed.
pub fn scale_to_month(month: Period, until: DateTime<Utc>, vt_wh: i64, nt_wh: i64) -> Option<(Decimal, Decimal)> {
    let start = midnight(month.first_day());
    let end = midnight(month.last_day().succ_opt()?);
    let elapsed = (until.min(end) - start).num_seconds();
    if elapsed <= 0 {
        return None;
    }
    let f = Decimal::from((end - start).num_seconds()) / Decimal::from(elapsed);
    Some((round_wh(wh_to_kwh(vt_wh) * f), round_wh(wh_to_kwh(nt_wh) * f)))
}

/// The projected bill of the whole month holding `until`.
pub fn projection(
    set: &TariffSet,
    contract: &Contract,
    until: DateTime<Utc>,
    vt_wh: i64,
    nt_wh: i64,
) -> Result<Option<Estimate>, CostError> {
    let month = month_of(local_day(until - chrono::Duration::seconds(1)))?;
    tariff_on(set, contract, month.last_day().min(local_day(until)))?;
    let Some((vt, nt)) = scale_to_month(month, until, vt_wh, nt_wh) else { return Ok(None) };
    let bill = compute_bill(&two_rate(month, vt, nt, contract), set)?;
    Ok(Some(Estimate::of(&bill, vt, nt, &currency(set))))
}

fn currency(set: &TariffSet) -> String {
    set.tariffs().first().map_or_else(|| "RSD".to_owned(), |t| t.currency.clone())
}

/// Zone progress, bill to date and projection of the month holding `until` (the latest reading counted), for
/// VT/NT consumed since the month's start. Each part that cannot be computed is logged and left out.
pub fn month_cost(contract: &Contract, until: DateTime<Utc>, vt_wh: i64, nt_wh: i64) -> MonthCost {
    let Some(set) = tariffs() else { return MonthCost { zones: None, to_date: None, projection: None } };
    let day = local_day(until - chrono::Duration::seconds(1));
    let consumed = wh_to_kwh(vt_wh.saturating_add(nt_wh));
    let log = |what: &str, e: &CostError| tracing::debug!(what, error = %e, "portal: not priced");
    let zones = zone_progress(set, contract, day, consumed).map_err(|e| log("zones", &e)).ok();
    let to_date = bill_to_date(set, contract, until, vt_wh, nt_wh).map_err(|e| log("bill to date", &e)).ok();
    let projection = projection(set, contract, until, vt_wh, nt_wh).map_err(|e| log("projection", &e)).ok().flatten();
    MonthCost { zones, to_date, projection }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A decimal literal, exactly as written.
    macro_rules! dec {
        ($x:expr) => {
            stringify!($x).parse::<Decimal>().unwrap()
        };
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn contract() -> Contract {
        Contract { tariff: "eps-household-2025".into(), approved_power_kw: dec!(11.04), region: Region::Belgrade }
    }

    fn limits(p: &ZoneProgress) -> Vec<Option<Decimal>> {
        p.zones.iter().map(|z| z.up_to_kwh).collect()
    }

    /// The limits come from the tariff file, scaled by the month's days / 30.
    #[test]
    fn zone_limits_scale_with_the_days_of_the_month() {
        let set = tariffs().unwrap();
        let t = &set.tariffs()[0];
        let (green, blue) = (t.zones[0].up_to_kwh.unwrap(), t.zones[1].up_to_kwh.unwrap());
        let p = zone_progress(set, &contract(), d("2026-10-15"), dec!(10)).unwrap();
        assert_eq!(p.month_days, 31);
        assert_eq!(
            limits(&p),
            vec![Some(round_wh(green * dec!(31) / dec!(30))), Some(round_wh(blue * dec!(31) / dec!(30))), None]
        );
        let feb = zone_progress(set, &contract(), d("2026-02-03"), dec!(10)).unwrap();
        assert_eq!(limits(&feb)[0], Some(round_wh(green * dec!(28) / dec!(30))));
        let nov = zone_progress(set, &contract(), d("2026-11-03"), dec!(10)).unwrap();
        assert_eq!(limits(&nov)[0], Some(green), "30 days: the file's limit");
        assert_eq!((nov.current, nov.next_kwh.zone.as_str()), (0, "green"));
        assert_eq!(nov.next_kwh.vt_price, t.zones[0].vt);
    }

    #[test]
    fn the_next_kwh_is_priced_in_the_zone_reached() {
        let set = tariffs().unwrap();
        let t = &set.tariffs()[0];
        let green = t.zones[0].up_to_kwh.unwrap();
        let at = |kwh: Decimal| zone_progress(set, &contract(), d("2026-11-20"), kwh).unwrap();
        assert_eq!(at(green - dec!(0.001)).current, 0);
        assert_eq!(at(green).current, 1, "the limit itself is reached: the next kWh is blue");
        assert_eq!(at(dec!(100000)).current, 2);
        let blue = at(green + dec!(1)).next_kwh;
        assert_eq!((blue.vt_price, blue.nt_price), (t.zones[1].vt, t.zones[1].nt));
        let expected = ((t.zones[1].vt + t.renewable_fee_per_kwh + t.efficiency_fee_per_kwh)
            * (Decimal::ONE + t.excise_rate)
            * (Decimal::ONE + t.vat_rate))
            .round_dp(4);
        assert_eq!(blue.vt_gross, expected);
        assert!(blue.vt_gross > blue.vt_price);
    }

    #[test]
    fn projection_scales_the_consumption_so_far_to_the_month() {
        let nov = month_of(d("2026-11-10")).unwrap();
        // 10 of 30 days: × 3.
        let until = midnight(d("2026-11-11"));
        assert_eq!(scale_to_month(nov, until, 100_000, 20_001), Some((dec!(300), dec!(60.003))));
        // Nothing elapsed: no projection.
        assert_eq!(scale_to_month(nov, midnight(d("2026-11-01")), 5, 5), None);
        // October has 745 hours (the autumn DST change): half of it elapsed = × 2.
        let oct = month_of(d("2026-10-02")).unwrap();
        let half = midnight(d("2026-10-01")) + chrono::Duration::minutes(745 * 30);
        assert_eq!(scale_to_month(oct, half, 1000, 1), Some((dec!(2), dec!(0.002))));
    }

    #[test]
    fn bill_to_date_and_projection_are_billing_core_bills() {
        let set = tariffs().unwrap();
        let c = contract();
        let until = midnight(d("2026-11-11"));
        let to_date = bill_to_date(set, &c, until, 70_000, 30_000).unwrap();
        assert_eq!((to_date.period_first, to_date.period_last), (d("2026-11-01"), d("2026-11-10")));
        let p = Period::new(d("2026-11-01"), d("2026-11-10")).unwrap();
        let want = compute_bill(&two_rate(p, dec!(70), dec!(30), &c), set).unwrap();
        assert_eq!(to_date.total, want.total);
        let proj = projection(set, &c, until, 70_000, 30_000).unwrap().unwrap();
        let month = month_of(d("2026-11-01")).unwrap();
        let want = compute_bill(&two_rate(month, dec!(210), dec!(90), &c), set).unwrap();
        assert_eq!((proj.vt_kwh, proj.nt_kwh, proj.total), (dec!(210), dec!(90), want.total));
        assert!(proj.total > to_date.total);
        // BILLING.md's worked example: 300 kWh (210 VT / 90 NT), 11.04 kW, 30 days → 4,622.65 RSD.
        assert_eq!(proj.total, dec!(4622.65));
        // A tariff the portal does not know is not priced.
        let other = Contract { tariff: "other".into(), ..c };
        assert!(matches!(bill_to_date(set, &other, until, 1, 1), Err(CostError::UnknownTariff(_))));
        assert!(month_cost(&other, until, 1, 1).zones.is_none());
    }
}
