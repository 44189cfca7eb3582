//! Buildings: reconciliation (master − Σ apartments = common areas + losses) and the split of the common
//! part over households by a key the building assembly chooses (Law on Housing art. 63).
//!
//! Energy is allocated in whole Wh and money in whole para, by largest remainder, so the allocations add up
//! **exactly** to what is split. A negative common part (apartments measuring more than the master) is not an
//! error of the program but of the data: it is returned as a [`ReconciliationException`] for the operator and
//! nothing is allocated.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::money::{apportion, int_part, MONEY_DP};

/// Largest Wh value accepted anywhere here (≈ 1 TWh; keeps every product inside `Decimal`).
pub const MAX_WH: i64 = 1_000_000_000_000_000;
/// Largest weight (floor area, residents, mix weight) accepted.
pub const MAX_WEIGHT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("no households to split over")]
    NoMembers,
    #[error("{what} {value} is outside 0..={max}")]
    OutOfRange { what: &'static str, value: String, max: String },
    #[error("the {0} key has a total weight of zero")]
    ZeroWeight(&'static str),
    #[error("{0} is not a whole number of para")]
    NotPara(Decimal),
}

fn check_wh(what: &'static str, wh: i64) -> Result<(), AllocationError> {
    if (0..=MAX_WH).contains(&wh) {
        Ok(())
    } else {
        Err(AllocationError::OutOfRange { what, value: wh.to_string(), max: MAX_WH.to_string() })
    }
}

/// The master meter vs its apartments over an interval or a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    pub master_wh: i64,
    pub apartments_wh: i64,
    /// `master − Σ apartments`: common areas + losses; negative means the data are wrong somewhere.
    pub common_wh: i64,
}

/// A negative common part, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconciliationException {
    /// The interval end (UTC), or `None` for a whole period.
    pub ts: Option<DateTime<Utc>>,
    pub master_wh: i64,
    pub apartments_wh: i64,
    /// How much the apartments exceed the master, > 0.
    pub excess_wh: i64,
}

impl Reconciliation {
    /// `master − Σ apartments`; inputs must be 0..=[`MAX_WH`] (Σ apartments too).
    pub fn new(master_wh: i64, apartments: &[i64]) -> Result<Reconciliation, AllocationError> {
        check_wh("master Wh", master_wh)?;
        let mut sum: i64 = 0;
        for &a in apartments {
            check_wh("apartment Wh", a)?;
            sum = sum.saturating_add(a);
            check_wh("Σ apartment Wh", sum)?;
        }
        Ok(Reconciliation { master_wh, apartments_wh: sum, common_wh: master_wh - sum })
    }

    /// The common part when it is not negative, else the exception.
    pub fn common(&self, ts: Option<DateTime<Utc>>) -> Result<i64, ReconciliationException> {
        if self.common_wh >= 0 {
            Ok(self.common_wh)
        } else {
            Err(ReconciliationException {
                ts,
                master_wh: self.master_wh,
                apartments_wh: self.apartments_wh,
                excess_wh: -self.common_wh,
            })
        }
    }

    /// Common + losses as a percentage of the master (2 decimals); `None` when the master is zero.
    pub fn common_percent(&self) -> Option<Decimal> {
        (self.master_wh != 0).then(|| {
            crate::money::round_para(
                Decimal::from(self.common_wh) * Decimal::ONE_HUNDRED / Decimal::from(self.master_wh),
            )
        })
    }
}

/// Per-interval reconciliation of a building over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesReconciliation {
    /// The period totals.
    pub total: Reconciliation,
    /// Every interval whose apartments exceed the master.
    pub exceptions: Vec<ReconciliationException>,
}

/// Reconciles `(interval end, master Wh, Σ apartments Wh)` per interval and in total.
pub fn reconcile_series<I>(series: I) -> Result<SeriesReconciliation, AllocationError>
where
    I: IntoIterator<Item = (DateTime<Utc>, i64, i64)>,
{
    let (mut master, mut apartments) = (0i64, 0i64);
    let mut exceptions = Vec::new();
    for (ts, m, a) in series {
        let r = Reconciliation::new(m, &[a])?;
        if let Err(e) = r.common(Some(ts)) {
            exceptions.push(e);
        }
        master = master.saturating_add(m);
        apartments = apartments.saturating_add(a);
        check_wh("Σ master Wh", master)?;
        check_wh("Σ apartment Wh", apartments)?;
    }
    Ok(SeriesReconciliation { total: Reconciliation::new(master, &[apartments])?, exceptions })
}

/// What the split keys need to know about a household.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub floor_area_m2: Decimal,
    pub residents: u32,
}

/// How the common part is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKey {
    /// Equal shares per flat.
    Equal,
    /// By floor area.
    FloorArea,
    /// By residents (Novi Sad: per household member).
    Residents,
    /// A weighted mix of the three: each household's share is `Σ weight_k × (its share under key k)` divided
    /// by `Σ weight_k`. Keys with weight zero are ignored (their total may then be zero).
    Weighted { equal: Decimal, floor_area: Decimal, residents: Decimal },
}

impl SplitKey {
    /// Each member's share, as non-negative weights with a positive sum.
    fn weights(self, members: &[Member]) -> Result<Vec<Decimal>, AllocationError> {
        if members.is_empty() {
            return Err(AllocationError::NoMembers);
        }
        for m in members {
            check_weight("floor area", m.floor_area_m2)?;
            check_weight("residents", Decimal::from(m.residents))?;
        }
        let simple = |key: SplitKey| -> Result<Vec<Decimal>, AllocationError> {
            let (name, w): (&'static str, Vec<Decimal>) = match key {
                SplitKey::FloorArea => ("floor area", members.iter().map(|m| m.floor_area_m2).collect()),
                SplitKey::Residents => ("residents", members.iter().map(|m| Decimal::from(m.residents)).collect()),
                _ => ("equal", vec![Decimal::ONE; members.len()]),
            };
            if w.iter().sum::<Decimal>().is_zero() {
                return Err(AllocationError::ZeroWeight(name));
            }
            Ok(w)
        };
        match self {
            SplitKey::Weighted { equal, floor_area, residents } => {
                let mut mix = vec![Decimal::ZERO; members.len()];
                let mut total_weight = Decimal::ZERO;
                for (key, k) in
                    [(SplitKey::Equal, equal), (SplitKey::FloorArea, floor_area), (SplitKey::Residents, residents)]
                {
                    check_weight("mix weight", k)?;
                    if k.is_zero() {
                        continue;
                    }
                    let w = simple(key)?;
                    let sum: Decimal = w.iter().sum();
                    for (acc, x) in mix.iter_mut().zip(w) {
                        *acc += k * x / sum;
                    }
                    total_weight += k;
                }
                if total_weight.is_zero() {
                    return Err(AllocationError::ZeroWeight("weighted mix"));
                }
                Ok(mix)
            }
            key => simple(key),
        }
    }
}

fn check_weight(what: &'static str, x: Decimal) -> Result<(), AllocationError> {
    if (x.is_sign_negative() && !x.is_zero()) || x > MAX_WEIGHT {
        return Err(AllocationError::OutOfRange { what, value: x.to_string(), max: MAX_WEIGHT.to_string() });
    }
    Ok(())
}

fn split_units(total: i128, key: SplitKey, members: &[Member]) -> Result<Vec<i128>, AllocationError> {
    let weights = key.weights(members)?;
    let sum: Decimal = weights.iter().sum();
    let total_d = Decimal::from_i128_with_scale(total, 0);
    let quotas: Vec<Decimal> = weights.iter().map(|w| total_d * (*w / sum)).collect();
    Ok(apportion(total, &quotas))
}

/// Splits `common_wh` (≥ 0) over the members; the parts add up exactly to `common_wh`.
pub fn allocate_wh(common_wh: i64, key: SplitKey, members: &[Member]) -> Result<Vec<i64>, AllocationError> {
    check_wh("common Wh", common_wh)?;
    let parts = split_units(i128::from(common_wh), key, members)?;
    // Every part is within 0..=common_wh, so the conversion cannot fail; keep it checked anyway.
    parts
        .into_iter()
        .map(|p| {
            i64::try_from(p).map_err(|_| AllocationError::OutOfRange {
                what: "part",
                value: p.to_string(),
                max: MAX_WH.to_string(),
            })
        })
        .collect()
}

/// Splits a money amount (≥ 0, whole para) over the members; the parts add up exactly to `amount`.
pub fn allocate_money(amount: Decimal, key: SplitKey, members: &[Member]) -> Result<Vec<Decimal>, AllocationError> {
    check_weight("amount", amount)?;
    let scaled = amount * Decimal::from(10i64.pow(MONEY_DP));
    if scaled.fract() != Decimal::ZERO {
        return Err(AllocationError::NotPara(amount));
    }
    let parts = split_units(int_part(scaled), key, members)?;
    Ok(parts.into_iter().map(|p| Decimal::from_i128_with_scale(p, MONEY_DP)).collect())
}
