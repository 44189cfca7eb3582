#![allow(clippy::unwrap_used)]
//! Buildings: reconciliation, split keys, exact allocations; property tests of allocation and of the bill.

use billing_core::allocation::{
    allocate_money, allocate_wh, reconcile_series, AllocationError, Member, Reconciliation, SplitKey,
};
use billing_core::bill::PaymentDiscount;
use billing_core::{compute_bill, BillInput, Period, Tariff, TariffSet};
use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use schemas::inventory::Region;

fn members() -> Vec<Member> {
    vec![
        Member { floor_area_m2: dec!(35.5), residents: 1 },
        Member { floor_area_m2: dec!(62), residents: 3 },
        Member { floor_area_m2: dec!(80.25), residents: 0 },
    ]
}

#[test]
fn reconciliation_and_exceptions() {
    let r = Reconciliation::new(10_000, &[3_000, 4_000, 2_500]).unwrap();
    assert_eq!((r.apartments_wh, r.common_wh, r.common(None)), (9_500, 500, Ok(500)));
    assert_eq!(r.common_percent(), Some(dec!(5.00)));
    let neg = Reconciliation::new(9_000, &[9_500]).unwrap();
    let e = neg.common(None).unwrap_err();
    assert_eq!((e.excess_wh, e.master_wh, e.apartments_wh), (500, 9_000, 9_500));
    assert!(Reconciliation::new(-1, &[]).is_err() && Reconciliation::new(1, &[i64::MAX]).is_err());

    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 15, 0).unwrap();
    let series = (0..4).map(|i| (t0 + Duration::minutes(15 * i), 100, if i == 2 { 130 } else { 80 }));
    let s = reconcile_series(series).unwrap();
    assert_eq!((s.total.master_wh, s.total.apartments_wh, s.total.common_wh), (400, 370, 30));
    assert_eq!(s.exceptions.len(), 1);
    assert_eq!((s.exceptions[0].ts, s.exceptions[0].excess_wh), (Some(t0 + Duration::minutes(30)), 30));
}

#[test]
fn split_keys() {
    let m = members();
    assert_eq!(allocate_wh(1_000, SplitKey::Equal, &m).unwrap(), vec![334, 333, 333]);
    // 35.5 : 62 : 80.25 of 1,000 → 199.72 / 348.80 / 451.48
    assert_eq!(allocate_wh(1_000, SplitKey::FloorArea, &m).unwrap(), vec![200, 349, 451]);
    assert_eq!(allocate_wh(1_000, SplitKey::Residents, &m).unwrap(), vec![250, 750, 0]);
    // Half equal, half residents: (1/3 + 1/4)/2, (1/3 + 3/4)/2, (1/3)/2 → 291.67 / 541.67 / 166.67
    let mix = SplitKey::Weighted { equal: dec!(1), floor_area: dec!(0), residents: dec!(1) };
    assert_eq!(allocate_wh(1_000, mix, &m).unwrap(), vec![292, 542, 166]);
    assert_eq!(allocate_money(dec!(100.00), SplitKey::Equal, &m).unwrap(), vec![dec!(33.34), dec!(33.33), dec!(33.33)]);
    assert_eq!(allocate_money(dec!(1.001), SplitKey::Equal, &m), Err(AllocationError::NotPara(dec!(1.001))));
    assert_eq!(allocate_wh(1, SplitKey::Equal, &[]), Err(AllocationError::NoMembers));
    let nobody = vec![Member { floor_area_m2: dec!(50), residents: 0 }; 2];
    assert_eq!(allocate_wh(10, SplitKey::Residents, &nobody), Err(AllocationError::ZeroWeight("residents")));
    let zero_mix = SplitKey::Weighted { equal: dec!(0), floor_area: dec!(0), residents: dec!(0) };
    assert!(allocate_wh(10, zero_mix, &nobody).is_err());
    assert!(allocate_wh(-1, SplitKey::Equal, &nobody).is_err());
    let neg = vec![Member { floor_area_m2: dec!(-1), residents: 0 }];
    assert!(allocate_wh(10, SplitKey::Equal, &neg).is_err());
}

fn member() -> impl Strategy<Value = Member> {
    (0u32..=50_000, 0u32..=12)
        .prop_map(|(area, residents)| Member { floor_area_m2: Decimal::new(i64::from(area), 2), residents })
}

fn key() -> impl Strategy<Value = SplitKey> {
    prop_oneof![
        Just(SplitKey::Equal),
        Just(SplitKey::FloorArea),
        Just(SplitKey::Residents),
        (0u32..=10, 0u32..=10, 0u32..=10).prop_map(|(e, f, r)| SplitKey::Weighted {
            equal: Decimal::from(e),
            floor_area: Decimal::from(f),
            residents: Decimal::from(r)
        }),
    ]
}

fn tariffs() -> TariffSet {
    TariffSet::single(Tariff::eps_household_2025().unwrap())
}

fn bill_total(month: u32, vt_wh: i64, nt_wh: i64, kw_tenths: i64, discount: Option<PaymentDiscount>) -> Decimal {
    let mut input = BillInput::two_rate(
        Period::month(2025, month).unwrap(),
        Decimal::new(vt_wh, 3),
        Decimal::new(nt_wh, 3),
        Decimal::new(kw_tenths, 1),
        Region::Belgrade,
    );
    input.discount = discount;
    compute_bill(&input, &tariffs()).unwrap().total
}

fn discount() -> impl Strategy<Value = Option<PaymentDiscount>> {
    prop_oneof![Just(None), Just(Some(PaymentDiscount::EBill)), Just(Some(PaymentDiscount::OnTime))]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn allocations_add_up_exactly(common in 0i64..=10_000_000_000, ms in prop::collection::vec(member(), 1..160), key in key()) {
        match allocate_wh(common, key, &ms) {
            Ok(parts) => {
                prop_assert_eq!(parts.len(), ms.len());
                prop_assert_eq!(parts.iter().sum::<i64>(), common);
                prop_assert!(parts.iter().all(|p| *p >= 0));
            }
            // Only a key whose weights are all zero may refuse.
            Err(e) => prop_assert!(matches!(e, AllocationError::ZeroWeight(_)), "{e}"),
        }
        let money = Decimal::new(common % 100_000_000, 2);
        if let Ok(parts) = allocate_money(money, key, &ms) {
            prop_assert_eq!(parts.iter().copied().sum::<Decimal>(), money);
        }
    }

    #[test]
    fn a_bill_never_decreases_when_consumption_increases(
        month in 10u32..=12,
        vt in 0i64..=3_000_000,
        nt in 0i64..=3_000_000,
        more in 1i64..=50_000,
        kw in 1i64..=200,
        d in discount(),
    ) {
        let base = bill_total(month, vt, nt, kw, d);
        prop_assert!(bill_total(month, vt + more, nt, kw, d) >= base, "VT +{} Wh", more);
        prop_assert!(bill_total(month, vt, nt + more, kw, d) >= base, "NT +{} Wh", more);
        prop_assert!(bill_total(month, vt + 1, nt, kw, d) >= base);
        prop_assert!(bill_total(month, vt, nt + 1, kw, d) >= base);
    }

    #[test]
    fn bill_lines_add_up_with_the_rounding_line_and_stay_within_a_para(vt in 0i64..=5_000_000, nt in 0i64..=5_000_000, kw in 0i64..=500) {
        let input = BillInput::two_rate(Period::month(2025, 11).unwrap(), Decimal::new(vt, 3), Decimal::new(nt, 3), Decimal::new(kw, 1), Region::Central);
        let bill = compute_bill(&input, &tariffs()).unwrap();
        prop_assert_eq!(bill.lines().map(|l| l.amount).sum::<Decimal>(), bill.total);
        let kwh: Decimal = bill.lines().filter(|l| matches!(l.kind, billing_core::bill::LineKind::Energy { .. })).map(|l| l.quantity).sum();
        prop_assert_eq!(kwh, bill.total_kwh);
        // The total is the exact chain rounded once; the rounding line is at most half a para per printed line.
        prop_assert_eq!(bill.total, billing_core::money::round_para(bill.exact_total()));
        let printed = bill.lines().filter(|l| l.kind != billing_core::bill::LineKind::Rounding).count();
        prop_assert!(bill.rounding().abs() <= Decimal::new(5, 3) * Decimal::from(printed + 1));
        for l in bill.lines().filter(|l| l.kind != billing_core::bill::LineKind::Rounding) {
            prop_assert!((l.amount - l.exact).abs() <= dec!(0.01));
            prop_assert!(l.quantity >= Decimal::ZERO);
        }
    }

    #[test]
    fn compute_bill_never_panics(vt in any::<i64>(), nt in any::<i64>(), scale in 0u32..=10, kw in any::<i64>(), est in any::<i64>(), y in 2000i32..2100, m in 0u32..14) {
        if let Ok(period) = Period::month(y, m) {
            let mut input = BillInput::two_rate(period, Decimal::new(vt, scale), Decimal::new(nt, scale), Decimal::new(kw, scale), Region::NoviSad);
            input.estimated_kwh = Decimal::new(est, scale);
            let _ = compute_bill(&input, &tariffs());
        }
    }
}
