//! The one place where the bill rounds.
//!
//! - Money is [`Decimal`], never a float. Amounts round to the **para** (0.01 RSD), half away from zero
//!   ([`round_para`]).
//! - Energy quantities are whole **Wh** (kWh with at most 3 decimals); derived quantities (scaled zone limits,
//!   the VT/NT share of a zone, a period split between two tariffs) round to the Wh ([`round_wh`]).
//! - Apportioning an integer total (Wh, para) over shares uses the largest-remainder method ([`apportion`]),
//!   so that the parts add up exactly to the total.

use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places of a money amount (para).
pub const MONEY_DP: u32 = 2;
/// Decimal places of an energy quantity in kWh (Wh).
pub const ENERGY_DP: u32 = 3;

/// Rounds a money amount to the para, half away from zero.
pub fn round_para(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(MONEY_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// Rounds an energy quantity in kWh to the Wh, half away from zero.
pub fn round_wh(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(ENERGY_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// Whole Wh to kWh, exactly.
pub fn wh_to_kwh(wh: i64) -> Decimal {
    Decimal::new(wh, ENERGY_DP)
}

/// Whether `x` has at most `dp` significant decimal places.
pub fn has_at_most_dp(x: Decimal, dp: u32) -> bool {
    x.normalize().scale() <= dp
}

/// The integer part of `x` (truncated toward zero).
pub fn int_part(x: Decimal) -> i128 {
    let t = x.trunc();
    t.mantissa() / 10i128.pow(t.scale())
}

/// Splits the integer `target` into integer parts close to the real `quotas` (largest-remainder method).
///
/// Every part starts at the floor of its quota; the units still missing to reach `target` go one each to the
/// largest fractional remainders (ties: the earlier index), cycling if more units are missing than there are
/// parts; surplus units are taken from the smallest remainders. The parts always add up to `target` exactly.
/// Returns an empty vector when `quotas` is empty.
pub fn apportion(target: i128, quotas: &[Decimal]) -> Vec<i128> {
    let n = quotas.len();
    if n == 0 {
        return Vec::new();
    }
    let mut parts: Vec<i128> = Vec::with_capacity(n);
    let mut rems: Vec<(Decimal, usize)> = Vec::with_capacity(n);
    for (i, q) in quotas.iter().enumerate() {
        let f = q.floor();
        parts.push(int_part(f));
        rems.push((*q - f, i));
    }
    let mut missing = target - parts.iter().sum::<i128>();
    // Largest remainder first; ties keep index order (the sort is stable).
    rems.sort_by_key(|r| std::cmp::Reverse(r.0));
    let n_i = n as i128;
    if missing > 0 {
        let rounds = missing / n_i;
        for p in &mut parts {
            *p += rounds;
        }
        missing -= rounds * n_i;
        for &(_, i) in rems.iter().take(usize::try_from(missing).unwrap_or(0)) {
            parts[i] += 1;
        }
    } else if missing < 0 {
        let surplus = -missing;
        let rounds = surplus / n_i;
        for p in &mut parts {
            *p -= rounds;
        }
        let rest = usize::try_from(surplus - rounds * n_i).unwrap_or(0);
        for &(_, i) in rems.iter().rev().take(rest) {
            parts[i] -= 1;
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(round_para(dec!(2.345)), dec!(2.35));
        assert_eq!(round_para(dec!(-2.345)), dec!(-2.35));
        assert_eq!(round_para(dec!(2.344999)), dec!(2.34));
        assert_eq!(round_wh(dec!(361.6666666)), dec!(361.667));
    }

    #[test]
    fn apportion_adds_up() {
        assert_eq!(apportion(10, &[dec!(3.4), dec!(3.3), dec!(3.3)]), vec![4, 3, 3]);
        assert_eq!(apportion(10, &[dec!(3.3), dec!(3.3), dec!(3.4)]), vec![3, 3, 4]);
        // ties go to the earlier index
        assert_eq!(apportion(1, &[dec!(0.5), dec!(0.5)]), vec![1, 0]);
        // more missing than parts, and a surplus
        assert_eq!(apportion(7, &[dec!(0), dec!(1)]), vec![3, 4]);
        assert_eq!(apportion(0, &[dec!(0.9), dec!(1.8)]), vec![0, 0]);
        assert!(apportion(5, &[]).is_empty());
    }
}
