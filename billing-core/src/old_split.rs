//! The legacy benchmark: what a household would pay under the old 1/N split.
//!
//! Definition used here (BILLING.md: "each household pays the bill of (building total ÷ N)"): the building
//! total is the **master meter** of the period (apartments + common areas + losses — what the old single meter
//! measured). The 1/N household has each register of the master divided by N and rounded to the Wh (half away
//! from zero); for a single-rate household the registers are added first. It is billed exactly like the real
//! household ([`compute_bill`]): same period, tariffs, region, approved power, discount and exemptions, no
//! estimated kWh. Billing the master as one customer instead would put nearly everything in the red zone,
//! which is not what households paid.

use rust_decimal::Decimal;

use crate::bill::{compute_bill, Bill, BillError, BillInput, Consumption};
use crate::money::{round_para, round_wh};
use crate::tariff::TariffSet;

/// The consumption of the 1/N household: each register of `building` ÷ `n`, rounded to the Wh, in the shape
/// of the household's meter (`single_rate`).
pub fn one_over_n_consumption(building: Consumption, n: u32, single_rate: bool) -> Result<Consumption, BillError> {
    if n == 0 {
        return Err(BillError::Input { field: "households", message: "N must be at least 1".to_string() });
    }
    building.validate()?;
    let div = |x: Decimal| round_wh(x / Decimal::from(n));
    Ok(match (building, single_rate) {
        (Consumption::TwoRate { vt_kwh, nt_kwh }, false) => {
            Consumption::TwoRate { vt_kwh: div(vt_kwh), nt_kwh: div(nt_kwh) }
        }
        (b, true) => Consumption::SingleRate { kwh: div(b.total_kwh()) },
        (Consumption::SingleRate { .. }, false) => {
            return Err(BillError::Input {
                field: "building",
                message: "a single-rate building total cannot be split into VT and NT".to_string(),
            })
        }
    })
}

/// The bill the household would get under the 1/N split of `building` over `n` households.
pub fn one_over_n_bill(
    household: &BillInput,
    building: Consumption,
    n: u32,
    tariffs: &TariffSet,
) -> Result<Bill, BillError> {
    let single_rate = matches!(household.consumption, Consumption::SingleRate { .. });
    let input = BillInput {
        consumption: one_over_n_consumption(building, n, single_rate)?,
        estimated_kwh: Decimal::ZERO,
        ..household.clone()
    };
    compute_bill(&input, tariffs)
}

/// A metered bill beside its 1/N bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub metered: Decimal,
    pub one_over_n: Decimal,
    /// `metered − one_over_n`: positive = the household pays more with its own meter.
    pub difference: Decimal,
    /// `difference / one_over_n × 100`, rounded to 2 decimals; `None` when the 1/N bill is zero.
    pub percent: Option<Decimal>,
}

/// Compares two bill totals.
pub fn compare(metered: &Bill, one_over_n: &Bill) -> Comparison {
    let difference = metered.total - one_over_n.total;
    Comparison {
        metered: metered.total,
        one_over_n: one_over_n.total,
        difference,
        percent: (!one_over_n.total.is_zero())
            .then(|| round_para(difference * Decimal::ONE_HUNDRED / one_over_n.total)),
    }
}
