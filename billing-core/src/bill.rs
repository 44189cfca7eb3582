//! One household's bill for one billing period: every line, in the order of BILLING.md.
//!
//! For each tariff segment of the period (see [`TariffSet::segments`]):
//!
//! 1. **Energy** per zone and VT/NT (or single rate) — zones on total kWh, limits `up_to_kwh × days /
//!    zone_limit_days` rounded to the Wh. How VT and NT share a zone is not stated by any source; the rule used
//!    (*inferred*) is pro rata by the VT share of the period: up to any kWh level `B` below the total `T`, the VT
//!    kWh are `round_wh(B × VT / T)`, so a zone `(lo, hi]` holds `VT(hi) − VT(lo)` VT kWh and the rest NT.
//!    The worked example (300 kWh, all green) is unaffected by this rule.
//! 2. **Power charge** = approved kW × months × price; **supplier charge** = months × price. "Months" of a
//!    segment (*inferred*): the sum over the calendar months it touches of days covered / days of that month,
//!    so a whole calendar month is exactly 1 whatever its length.
//! 3. **Payment discount** (at most one, a negative line) = rate × (energy + power + supplier).
//! 4. **Renewable** and **efficiency fees** = total kWh × fee.
//! 5. **Excise** = rate × (energy + power + supplier − discount + fees).
//! 6. **VAT** = rate × (everything above, excise included).
//! 7. **TV fee** = months × fee, outside excise and VAT, unless the household is exempt.
//!
//! **Rounding** ([`crate::money`], the convention that reproduces BILLING.md's worked example line by line
//! *and* its total): the whole chain is computed **unrounded** — the discount on the exact base, the fees,
//! excise on the exact excise base, VAT on the exact VAT base — and the **total is that exact chain rounded
//! once** to the para. Each printed line is its exact amount rounded to the para (the energy lines are
//! apportioned by largest remainder to the energy subtotal rounded once, each within one para of its exact
//! value). When the printed lines do not add up to the total, a final **rounding line** (`LineKind::Rounding`,
//! ± a few para, exact amount 0) makes the invoice add up: printed lines + rounding = total. The exact total
//! rises with consumption (rising zone prices), so the rounded total never decreases (property-tested).
//!
//! **Tariff change inside a period** (*rule*): the period is split at the change into segments; the VT and NT
//! kWh are split pro rata by days (each segment but the last gets `round_wh(kWh × days / period days)`, the
//! last the remainder, so the parts add up exactly); each segment is billed as a period of its own (its own
//! zone limits, months, fees and taxes) and the bill total is the sum of the segment totals.

use rust_decimal::Decimal;
use schemas::inventory::Region;

use crate::interval::{NightWindow, TimeOfUse};
use crate::money::{apportion, has_at_most_dp, int_part, round_para, round_wh, ENERGY_DP, MONEY_DP};
pub use crate::period::{Period, PeriodError, MAX_DAYS};
use crate::tariff::{Tariff, TariffError, TariffSet};

/// Largest kWh a bill accepts (per register).
pub const MAX_KWH: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Largest approved power a bill accepts, kW.
pub const MAX_KW: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);

/// Why a bill could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    #[error("{field}: {message}")]
    Input { field: &'static str, message: String },
    #[error(transparent)]
    Tariff(#[from] TariffError),
}

fn input_err<T>(field: &'static str, message: impl Into<String>) -> Result<T, BillError> {
    Err(BillError::Input { field, message: message.into() })
}

/// Metered consumption of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumption {
    /// A two-rate meter: VT and NT kWh.
    TwoRate { vt_kwh: Decimal, nt_kwh: Decimal },
    /// A single-rate meter.
    SingleRate { kwh: Decimal },
}

impl Consumption {
    pub fn total_kwh(&self) -> Decimal {
        match *self {
            Consumption::TwoRate { vt_kwh, nt_kwh } => vt_kwh + nt_kwh,
            Consumption::SingleRate { kwh } => kwh,
        }
    }

    fn registers(&self) -> Vec<(&'static str, Decimal)> {
        match *self {
            Consumption::TwoRate { vt_kwh, nt_kwh } => vec![("vt_kwh", vt_kwh), ("nt_kwh", nt_kwh)],
            Consumption::SingleRate { kwh } => vec![("kwh", kwh)],
        }
    }

    /// Checks 0 ≤ kWh ≤ [`MAX_KWH`] with whole Wh.
    pub fn validate(&self) -> Result<(), BillError> {
        for (field, x) in self.registers() {
            if x.is_sign_negative() && !x.is_zero() {
                return input_err(field, format!("negative consumption {x}"));
            }
            if x > MAX_KWH {
                return input_err(field, format!("{x} kWh is above {MAX_KWH}"));
            }
            if !has_at_most_dp(x, ENERGY_DP) {
                return input_err(field, format!("{x} kWh is not whole Wh (at most 3 decimals)"));
            }
        }
        Ok(())
    }
}

/// The on-time payment discount earned (at most one per bill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentDiscount {
    /// E-bill and paid by the 20th.
    EBill,
    /// Self-read and paid by the 20th.
    SelfRead,
    /// Paid by the 28th.
    OnTime,
}

impl PaymentDiscount {
    fn rate(self, t: &Tariff) -> Decimal {
        match self {
            PaymentDiscount::EBill => t.discounts.e_bill,
            PaymentDiscount::SelfRead => t.discounts.self_read,
            PaymentDiscount::OnTime => t.discounts.on_time,
        }
    }
}

/// Exemptions of a household.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exemptions {
    /// No TV fee (e.g. the household pays it elsewhere or is legally exempt).
    pub tv_fee: bool,
}

/// Everything a household's bill needs besides the tariffs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillInput {
    pub period: Period,
    pub consumption: Consumption,
    pub approved_power_kw: Decimal,
    pub region: Region,
    /// The discount shown on this bill (BILLING.md: earned on the previous one). *Inferred*: its rate applies
    /// to this bill's base.
    pub discount: Option<PaymentDiscount>,
    pub exemptions: Exemptions,
    /// kWh of the period that are estimated (VEE), ≤ total kWh.
    pub estimated_kwh: Decimal,
}

impl BillInput {
    /// A two-rate household without discount, exemptions or estimates.
    pub fn two_rate(
        period: Period,
        vt_kwh: Decimal,
        nt_kwh: Decimal,
        approved_power_kw: Decimal,
        region: Region,
    ) -> BillInput {
        BillInput {
            period,
            consumption: Consumption::TwoRate { vt_kwh, nt_kwh },
            approved_power_kw,
            region,
            discount: None,
            exemptions: Exemptions::default(),
            estimated_kwh: Decimal::ZERO,
        }
    }
}

/// What a line charges for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// Energy in a zone; `tou` is `None` for a single-rate meter.
    Energy {
        zone: String,
        tou: Option<TimeOfUse>,
    },
    PowerCharge,
    SupplierCharge,
    PaymentDiscount(PaymentDiscount),
    RenewableFee,
    EfficiencyFee,
    Excise,
    Vat,
    TvFee,
    /// The difference between the total (the exact chain rounded once) and the sum of the printed lines, so that
    /// the invoice adds up; only present when non-zero, always the last line of the bill.
    Rounding,
}

/// Unit of a line's quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Kwh,
    /// Approved kW × months.
    KwMonth,
    Month,
    /// A money base, with the rate as unit price.
    Rsd,
}

/// One line of a bill: `exact = quantity × unit_price`; `amount` is `exact` rounded to the para (energy lines:
/// apportioned, within one para). The rounding line has `exact = 0` and `amount = quantity` (unit price 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    pub quantity: Decimal,
    pub unit: Unit,
    pub unit_price: Decimal,
    pub exact: Decimal,
    pub amount: Decimal,
}

/// The part of a bill under one tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentBill {
    pub tariff_code: String,
    pub period: Period,
    pub months: Decimal,
    pub consumption: Consumption,
    /// Zone limits scaled to the segment's days (kWh, Wh-rounded); the last zone has none.
    pub zone_limits: Vec<(String, Option<Decimal>)>,
    pub lines: Vec<Line>,
    /// Σ energy lines = the exact energy amount rounded once (the printed energy subtotal).
    pub energy: Decimal,
    /// Energy + power + supplier (the discount base), exact.
    pub base: Decimal,
    /// Base − discount + fees, exact.
    pub excise_base: Decimal,
    /// Excise base + excise, exact.
    pub vat_base: Decimal,
    /// VAT base + VAT + TV fee = Σ exact line amounts of the segment (unrounded).
    pub total: Decimal,
}

/// A household's bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub period: Period,
    pub region: Region,
    pub night_windows: Vec<NightWindow>,
    pub total_kwh: Decimal,
    /// Estimated kWh / total kWh (0 when nothing was consumed).
    pub estimated_share: Decimal,
    pub segments: Vec<SegmentBill>,
    /// The exact chain (Σ exact segment totals) rounded once to the para, in RSD; equal to Σ printed line amounts
    /// (the rounding line included).
    pub total: Decimal,
}

impl Bill {
    /// Every line of every segment, in bill order.
    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.segments.iter().flat_map(|s| s.lines.iter())
    }

    /// Σ amounts of the lines matching `f`.
    pub fn sum(&self, f: impl Fn(&LineKind) -> bool) -> Decimal {
        self.lines().filter(|l| f(&l.kind)).map(|l| l.amount).sum()
    }

    /// Σ exact (unrounded) amounts of all lines; the bill total is this rounded once.
    pub fn exact_total(&self) -> Decimal {
        self.lines().map(|l| l.exact).sum()
    }

    /// The rounding line's amount (0 when the printed lines add up to the total by themselves).
    pub fn rounding(&self) -> Decimal {
        self.sum(|k| *k == LineKind::Rounding)
    }

    /// Whether the estimated share is above `threshold` (a fraction).
    pub fn is_estimated(&self, threshold: Decimal) -> bool {
        self.estimated_share > threshold
    }
}

/// Computes a household's bill.
pub fn compute_bill(input: &BillInput, tariffs: &TariffSet) -> Result<Bill, BillError> {
    input.consumption.validate()?;
    let kw = input.approved_power_kw;
    if kw.is_sign_negative() && !kw.is_zero() || kw > MAX_KW {
        return input_err("approved_power_kw", format!("{kw} is outside 0..={MAX_KW}"));
    }
    let total_kwh = input.consumption.total_kwh();
    let est = input.estimated_kwh;
    if est.is_sign_negative() && !est.is_zero() || est > total_kwh {
        return input_err("estimated_kwh", format!("{est} is outside 0..={total_kwh}"));
    }
    let segments = tariffs.segments(input.period)?;
    let days = input.period.days();
    let mut remaining = input.consumption;
    let mut out = Vec::with_capacity(segments.len());
    for (i, (tariff, seg)) in segments.iter().enumerate() {
        let part = if i + 1 == segments.len() {
            remaining
        } else {
            let share =
                |x: Decimal, left: Decimal| round_wh(x * Decimal::from(seg.days()) / Decimal::from(days)).min(left);
            match (input.consumption, remaining) {
                (Consumption::TwoRate { vt_kwh, nt_kwh }, Consumption::TwoRate { vt_kwh: lv, nt_kwh: ln }) => {
                    Consumption::TwoRate { vt_kwh: share(vt_kwh, lv), nt_kwh: share(nt_kwh, ln) }
                }
                (Consumption::SingleRate { kwh }, Consumption::SingleRate { kwh: l }) => {
                    Consumption::SingleRate { kwh: share(kwh, l) }
                }
                _ => remaining,
            }
        };
        remaining = match (remaining, part) {
            (Consumption::TwoRate { vt_kwh: lv, nt_kwh: ln }, Consumption::TwoRate { vt_kwh, nt_kwh }) => {
                Consumption::TwoRate { vt_kwh: lv - vt_kwh, nt_kwh: ln - nt_kwh }
            }
            (Consumption::SingleRate { kwh: l }, Consumption::SingleRate { kwh }) => {
                Consumption::SingleRate { kwh: l - kwh }
            }
            (r, _) => r,
        };
        out.push(bill_segment(tariff, *seg, part, input));
    }
    // The total: the exact chain rounded once; a rounding line makes the printed lines add up to it.
    let total = round_para(out.iter().map(|s| s.total).sum());
    let printed: Decimal = out.iter().flat_map(|s| s.lines.iter()).map(|l| l.amount).sum();
    let diff = total - printed;
    if !diff.is_zero() {
        if let Some(last) = out.last_mut() {
            last.lines.push(Line {
                kind: LineKind::Rounding,
                quantity: diff,
                unit: Unit::Rsd,
                unit_price: Decimal::ONE,
                exact: Decimal::ZERO,
                amount: diff,
            });
        }
    }
    let mut night_windows: Vec<NightWindow> = Vec::new();
    for (t, _) in &segments {
        let w = t.night_window(input.region);
        if !night_windows.contains(&w) {
            night_windows.push(w);
        }
    }
    Ok(Bill {
        period: input.period,
        region: input.region,
        night_windows,
        total_kwh,
        estimated_share: if total_kwh.is_zero() { Decimal::ZERO } else { est / total_kwh },
        segments: out,
        total,
    })
}

fn line(kind: LineKind, quantity: Decimal, unit: Unit, unit_price: Decimal) -> Line {
    let exact = quantity * unit_price;
    Line { kind, quantity, unit, unit_price, exact, amount: round_para(exact) }
}

/// Energy quantities per zone: `(zone index, time of use, kWh)` for every non-zero quantity.
fn energy_quantities(limits: &[Option<Decimal>], consumption: Consumption) -> Vec<(usize, Option<TimeOfUse>, Decimal)> {
    let total = consumption.total_kwh();
    let mut out = Vec::new();
    // VT kWh up to the level `b` (pro rata by the VT share).
    let vt_upto = |b: Decimal| -> Decimal {
        match consumption {
            Consumption::TwoRate { vt_kwh, .. } if b >= total => vt_kwh,
            Consumption::TwoRate { vt_kwh, .. } if !total.is_zero() => round_wh(b * vt_kwh / total).min(vt_kwh),
            _ => Decimal::ZERO,
        }
    };
    let mut lo = Decimal::ZERO;
    for (z, limit) in limits.iter().enumerate() {
        let hi = limit.map_or(total, |l| l.min(total)).max(lo);
        let zone_kwh = hi - lo;
        if zone_kwh > Decimal::ZERO {
            match consumption {
                Consumption::SingleRate { .. } => out.push((z, None, zone_kwh)),
                Consumption::TwoRate { .. } => {
                    let vt = (vt_upto(hi) - vt_upto(lo)).max(Decimal::ZERO).min(zone_kwh);
                    let nt = zone_kwh - vt;
                    for (tou, q) in [(TimeOfUse::Vt, vt), (TimeOfUse::Nt, nt)] {
                        if q > Decimal::ZERO {
                            out.push((z, Some(tou), q));
                        }
                    }
                }
            }
        }
        lo = hi;
    }
    out
}

fn bill_segment(t: &Tariff, period: Period, consumption: Consumption, input: &BillInput) -> SegmentBill {
    let months = period.months();
    let days = Decimal::from(period.days());
    let limits: Vec<Option<Decimal>> =
        t.zones.iter().map(|z| z.up_to_kwh.map(|l| round_wh(l * days / Decimal::from(t.zone_limit_days)))).collect();

    // 1. Energy: exact per line, subtotal rounded once, lines apportioned to it.
    let mut lines: Vec<Line> = Vec::new();
    for (z, tou, q) in energy_quantities(&limits, consumption) {
        let Some(zone) = t.zones.get(z) else { continue };
        let price = match tou {
            Some(TimeOfUse::Vt) => zone.vt,
            Some(TimeOfUse::Nt) => zone.nt,
            None => zone.single,
        };
        lines.push(line(LineKind::Energy { zone: zone.name.clone(), tou }, q, Unit::Kwh, price));
    }
    let energy = round_para(lines.iter().map(|l| l.exact).sum());
    let scale = Decimal::from(10i64.pow(MONEY_DP));
    let target = int_part(energy * scale);
    let quotas: Vec<Decimal> = lines.iter().map(|l| l.exact * scale).collect();
    for (l, cents) in lines.iter_mut().zip(apportion(target, &quotas)) {
        l.amount = Decimal::from_i128_with_scale(cents, MONEY_DP);
    }

    // 2. Fixed charges.
    let power = line(LineKind::PowerCharge, input.approved_power_kw * months, Unit::KwMonth, t.power_per_kw_month);
    let supplier = line(LineKind::SupplierCharge, months, Unit::Month, t.supplier_per_month);
    let energy_exact: Decimal = lines.iter().map(|l| l.exact).sum();
    let base = energy_exact + power.exact + supplier.exact;
    lines.push(power);
    lines.push(supplier);

    // 3. Discount on the (exact) base.
    let mut excise_base = base;
    if let Some(d) = input.discount {
        let l = line(LineKind::PaymentDiscount(d), base, Unit::Rsd, -d.rate(t));
        excise_base += l.exact;
        lines.push(l);
    }

    // 4. Fees per kWh.
    let kwh = consumption.total_kwh();
    for (kind, fee) in
        [(LineKind::RenewableFee, t.renewable_fee_per_kwh), (LineKind::EfficiencyFee, t.efficiency_fee_per_kwh)]
    {
        let l = line(kind, kwh, Unit::Kwh, fee);
        excise_base += l.exact;
        lines.push(l);
    }

    // 5. Excise, 6. VAT, on the exact sums above them.
    let excise = line(LineKind::Excise, excise_base, Unit::Rsd, t.excise_rate);
    let vat_base = excise_base + excise.exact;
    lines.push(excise);
    let vat = line(LineKind::Vat, vat_base, Unit::Rsd, t.vat_rate);
    let mut total = vat_base + vat.exact;
    lines.push(vat);

    // 7. TV fee.
    if !input.exemptions.tv_fee {
        let tv = line(LineKind::TvFee, months, Unit::Month, t.tv_fee_per_month);
        total += tv.exact;
        lines.push(tv);
    }

    SegmentBill {
        tariff_code: t.code.clone(),
        period,
        months,
        consumption,
        zone_limits: t.zones.iter().zip(limits).map(|(z, l)| (z.name.clone(), l)).collect(),
        lines,
        energy,
        base,
        excise_base,
        vat_base,
        total,
    }
}
