#![allow(clippy::unwrap_used)]
//! Bills: the worked example of BILLING.md, zone crossings, a mid-period tariff change, discounts, exemptions,
//! the 1/N comparison.

use billing_core::bill::{Exemptions, LineKind, PaymentDiscount, Unit};
use billing_core::interval::TimeOfUse;
use billing_core::old_split::{compare, one_over_n_bill, one_over_n_consumption};
use billing_core::tariff::EPS_HOUSEHOLD_2025;
use billing_core::{compute_bill, Bill, BillError, BillInput, Consumption, Period, Tariff, TariffSet};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use schemas::inventory::Region;

fn eps() -> TariffSet {
    TariffSet::single(Tariff::eps_household_2025().unwrap())
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn energy(bill: &Bill) -> Vec<(String, Option<TimeOfUse>, Decimal, Decimal)> {
    bill.lines()
        .filter_map(|l| match &l.kind {
            LineKind::Energy { zone, tou } => Some((zone.clone(), *tou, l.quantity, l.amount)),
            _ => None,
        })
        .collect()
}

fn amount(bill: &Bill, kind: LineKind) -> Decimal {
    bill.sum(|k| *k == kind)
}

#[test]
fn worked_example_of_billing_md() {
    // 300 kWh (210 VT / 90 NT), 11.04 kW, 30 days, computed from the shipped tariff file.
    let input =
        BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(210), dec!(90), dec!(11.04), Region::Belgrade);
    let bill = compute_bill(&input, &eps()).unwrap();
    let g = |tou| ("green".to_string(), Some(tou));
    let e = energy(&bill);
    assert_eq!(e.iter().map(|x| (x.0.clone(), x.1)).collect::<Vec<_>>(), vec![g(TimeOfUse::Vt), g(TimeOfUse::Nt)]);
    assert_eq!(bill.segments[0].energy, dec!(2235.16));
    assert_eq!(amount(&bill, LineKind::PowerCharge), dec!(672.28));
    assert_eq!(amount(&bill, LineKind::SupplierCharge), dec!(160.67));
    assert_eq!(amount(&bill, LineKind::RenewableFee), dec!(240.30));
    assert_eq!(amount(&bill, LineKind::EfficiencyFee), dec!(4.50));
    assert_eq!(amount(&bill, LineKind::Excise), dec!(248.47));
    assert_eq!(amount(&bill, LineKind::Vat), dec!(712.28));
    assert_eq!(amount(&bill, LineKind::TvFee), dec!(349.00));
    // Energy lines: 210 × 9.6136 = 2,018.856 and 90 × 2.4034 = 216.306, apportioned to the subtotal 2,235.16.
    assert_eq!(
        e.iter().map(|x| (x.2, x.3)).collect::<Vec<_>>(),
        vec![(dec!(210), dec!(2018.86)), (dec!(90), dec!(216.30))]
    );
    // The total as printed in BILLING.md: the exact chain 4,622.652595… rounded once.
    assert_eq!(bill.exact_total(), dec!(4622.65259452));
    assert_eq!(bill.total, dec!(4622.65));
    // The printed lines add up to 4,622.66; the rounding line (−0.01, last) makes the invoice add up.
    let printed: Decimal = bill.lines().filter(|l| l.kind != LineKind::Rounding).map(|l| l.amount).sum();
    assert_eq!(printed, dec!(4622.66));
    assert_eq!(bill.rounding(), dec!(-0.01));
    let last = bill.lines().last().unwrap();
    assert_eq!((&last.kind, last.amount, last.exact), (&LineKind::Rounding, dec!(-0.01), Decimal::ZERO));
    assert_eq!(bill.lines().map(|l| l.amount).sum::<Decimal>(), bill.total);
    // Excise and VAT are on the exact bases (3,312.908988 and 3,561.3771621).
    let seg = &bill.segments[0];
    assert_eq!(seg.excise_base, dec!(3312.908988));
    assert_eq!(seg.vat_base, dec!(3561.3771621));
}

/// Every figure printed in BILLING.md's worked example, as the stored/exported lines show them.
#[test]
fn worked_example_every_printed_figure() {
    let input =
        BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(210), dec!(90), dec!(11.04), Region::Belgrade);
    let bill = compute_bill(&input, &eps()).unwrap();
    let printed: Vec<(&str, Decimal)> =
        billing_core::run::lines_of(&bill).iter().fold(Vec::new(), |mut acc: Vec<(&str, Decimal)>, l| {
            match acc.last_mut() {
                Some(last) if last.0 == l.kind => last.1 += l.amount,
                _ => acc.push((l.kind, l.amount)),
            }
            acc
        });
    assert_eq!(
        printed,
        vec![
            ("energy", dec!(2235.16)),
            ("power_charge", dec!(672.28)),
            ("supplier_charge", dec!(160.67)),
            ("renewable_fee", dec!(240.30)),
            ("efficiency_fee", dec!(4.50)),
            ("excise", dec!(248.47)),
            ("vat", dec!(712.28)),
            ("tv_fee", dec!(349.00)),
            ("rounding", dec!(-0.01)),
        ]
    );
    assert_eq!(bill.total, dec!(4622.65));
}

#[test]
fn zone_crossing_green_to_blue_pro_rata() {
    let input =
        BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(600), dec!(200), dec!(5.75), Region::Belgrade);
    let bill = compute_bill(&input, &eps()).unwrap();
    let e = energy(&bill);
    let want = [
        ("green", TimeOfUse::Vt, dec!(262.5), dec!(2523.57)),
        ("green", TimeOfUse::Nt, dec!(87.5), dec!(210.30)), // 210.2975: gets the apportioned para
        ("blue", TimeOfUse::Vt, dec!(337.5), dec!(4866.85)),
        ("blue", TimeOfUse::Nt, dec!(112.5), dec!(405.57)),
    ];
    assert_eq!(e.len(), want.len());
    for (got, w) in e.iter().zip(want) {
        assert_eq!((got.0.as_str(), got.1, got.2, got.3), (w.0, Some(w.1), w.2, w.3));
    }
    assert_eq!(bill.segments[0].energy, dec!(8006.29));
}

#[test]
fn zone_crossing_into_red_on_a_31_day_month() {
    let input =
        BillInput::two_rate(Period::month(2025, 12).unwrap(), dec!(1000), dec!(500), dec!(6.9), Region::NoviSad);
    let bill = compute_bill(&input, &eps()).unwrap();
    let seg = &bill.segments[0];
    assert_eq!(seg.months, Decimal::ONE);
    assert_eq!(
        seg.zone_limits,
        vec![("green".into(), Some(dec!(361.667))), ("blue".into(), Some(dec!(1240.000))), ("red".into(), None)]
    );
    let q: Vec<_> = energy(&bill).iter().map(|x| (x.0.clone(), x.2)).collect();
    let want: Vec<(String, Decimal)> = [
        ("green", dec!(241.111)),
        ("green", dec!(120.556)),
        ("blue", dec!(585.556)),
        ("blue", dec!(292.777)),
        ("red", dec!(173.333)),
        ("red", dec!(86.667)),
    ]
    .iter()
    .map(|(z, k)| (z.to_string(), *k))
    .collect();
    assert_eq!(q, want);
    // Quantities add up exactly; amounts add up to the total.
    assert_eq!(q.iter().map(|x| x.1).sum::<Decimal>(), dec!(1500));
    assert_eq!(bill.lines().map(|l| l.amount).sum::<Decimal>(), bill.total);
    for l in bill.lines().filter(|l| l.kind != LineKind::Rounding) {
        assert!((l.amount - l.exact).abs() <= dec!(0.01), "{l:?}");
    }
    assert_eq!(bill.total, billing_core::money::round_para(bill.exact_total()));
}

#[test]
fn single_rate_meter() {
    let input = BillInput {
        consumption: Consumption::SingleRate { kwh: dec!(400) },
        ..BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(0), dec!(0), dec!(5.75), Region::Central)
    };
    let bill = compute_bill(&input, &eps()).unwrap();
    let e = energy(&bill);
    assert_eq!(e[0], ("green".into(), None, dec!(350), dec!(2944.17))); // 350 × 8.4119 = 2944.165
    assert_eq!(e[1], ("blue".into(), None, dec!(50), dec!(630.89))); // 50 × 12.6178
}

#[test]
fn discount_and_tv_exemption() {
    let mut input =
        BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(210), dec!(90), dec!(11.04), Region::Belgrade);
    input.discount = Some(PaymentDiscount::EBill);
    input.exemptions = Exemptions { tv_fee: true };
    let bill = compute_bill(&input, &eps()).unwrap();
    let seg = &bill.segments[0];
    assert_eq!(seg.base, dec!(3068.108988)); // 2,235.162 + 672.277488 + 160.6695, exact
                                             // 7 % of the exact base, before the fees; excise and VAT on the exact reduced sum; no TV fee.
    let disc = amount(&bill, LineKind::PaymentDiscount(PaymentDiscount::EBill));
    assert_eq!(disc, dec!(-214.77)); // 214.76762916
    assert_eq!(seg.excise_base, dec!(3098.14135884)); // 3,068.108988 − 214.76762916 + 240.30 + 4.50
    assert_eq!(amount(&bill, LineKind::Excise), dec!(232.36)); // 232.360601913
    assert_eq!(amount(&bill, LineKind::Vat), dec!(666.10)); // 3,330.501960753 × 0.2 = 666.1003921506
    assert_eq!(amount(&bill, LineKind::TvFee), Decimal::ZERO);
    assert!(bill.lines().all(|l| l.kind != LineKind::TvFee));
    // Exact chain 3,996.6023529036 → 3,996.60; printed lines 2,235.16 + 672.28 + 160.67 − 214.77 + 240.30 + 4.50
    // + 232.36 + 666.10 = 3,996.60: no rounding line.
    assert_eq!(bill.total, dec!(3996.60));
    assert_eq!(bill.rounding(), Decimal::ZERO);
}

#[test]
fn tariff_change_inside_a_period_splits_by_days() {
    let first =
        Tariff::from_toml(&EPS_HOUSEHOLD_2025.replace("# valid_to = 2026-09-30", "valid_to = 2025-12-15")).unwrap();
    let second_src = EPS_HOUSEHOLD_2025
        .replace("valid_from = 2025-10-01", "valid_from = 2025-12-16")
        .replace("code = \"eps-household-2025\"", "code = \"eps-household-2025-12\"")
        .replace("vt = \"9.6136\"", "vt = \"10\"");
    let second = Tariff::from_toml(&second_src).unwrap();
    let set = TariffSet::new(vec![second, first]).unwrap();
    let input =
        BillInput::two_rate(Period::month(2025, 12).unwrap(), dec!(310), dec!(155), dec!(5.75), Region::Belgrade);
    let bill = compute_bill(&input, &set).unwrap();
    assert_eq!(bill.segments.len(), 2);
    let (a, b) = (&bill.segments[0], &bill.segments[1]);
    assert_eq!(
        (a.tariff_code.as_str(), a.period.days(), b.tariff_code.as_str(), b.period.days()),
        ("eps-household-2025", 15, "eps-household-2025-12", 16)
    );
    assert_eq!(a.consumption, Consumption::TwoRate { vt_kwh: dec!(150), nt_kwh: dec!(75) });
    assert_eq!(b.consumption, Consumption::TwoRate { vt_kwh: dec!(160), nt_kwh: dec!(80) });
    assert_eq!(a.zone_limits[0].1, Some(dec!(175.000)));
    assert_eq!(a.months + b.months, Decimal::ONE);
    // Each segment is billed as a period of its own.
    for seg in [a, b] {
        let alone = BillInput { period: seg.period, consumption: seg.consumption, ..input.clone() };
        assert_eq!(compute_bill(&alone, &set).unwrap().total, billing_core::money::round_para(seg.total));
    }
    // The total is the exact chain of both segments rounded once.
    assert_eq!(bill.total, billing_core::money::round_para(a.total + b.total));
    assert_eq!(bill.lines().map(|l| l.amount).sum::<Decimal>(), bill.total);
    // The second segment's green VT price is 10.
    let vt_green_b =
        b.lines.iter().find(|l| l.kind == LineKind::Energy { zone: "green".into(), tou: Some(TimeOfUse::Vt) }).unwrap();
    assert_eq!((vt_green_b.unit, vt_green_b.unit_price), (Unit::Kwh, dec!(10)));
    // An uneven split still adds up exactly.
    let odd =
        BillInput::two_rate(Period::month(2025, 12).unwrap(), dec!(100.001), dec!(0.007), dec!(5.75), Region::Belgrade);
    let bill = compute_bill(&odd, &set).unwrap();
    let sum = bill.segments.iter().map(|s| s.consumption.total_kwh()).sum::<Decimal>();
    assert_eq!(sum, dec!(100.008));
}

#[test]
fn partial_month_and_estimated_share() {
    let mut input = BillInput::two_rate(
        Period::new(day(2025, 11, 1), day(2025, 11, 15)).unwrap(),
        dec!(100),
        dec!(50),
        dec!(5.75),
        Region::Belgrade,
    );
    input.estimated_kwh = dec!(30);
    let bill = compute_bill(&input, &eps()).unwrap();
    assert_eq!(bill.segments[0].months, dec!(0.5));
    assert_eq!(amount(&bill, LineKind::TvFee), dec!(174.50));
    assert_eq!(bill.estimated_share, dec!(0.2));
    assert!(bill.is_estimated(dec!(0.1)) && !bill.is_estimated(dec!(0.2)));
    // Zero consumption: fixed charges only.
    let zero = BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(0), dec!(0), dec!(5.75), Region::Belgrade);
    let bill = compute_bill(&zero, &eps()).unwrap();
    assert!(energy(&bill).is_empty());
    assert_eq!(bill.estimated_share, Decimal::ZERO);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let p = Period::month(2025, 11).unwrap();
    let bad = [
        BillInput::two_rate(p, dec!(-1), dec!(0), dec!(5), Region::Belgrade),
        BillInput::two_rate(p, dec!(0.0001), dec!(0), dec!(5), Region::Belgrade),
        BillInput::two_rate(p, dec!(1000000001), dec!(0), dec!(5), Region::Belgrade),
        BillInput::two_rate(p, dec!(1), dec!(0), dec!(-5), Region::Belgrade),
        BillInput { estimated_kwh: dec!(2), ..BillInput::two_rate(p, dec!(1), dec!(0), dec!(5), Region::Belgrade) },
    ];
    for input in bad {
        assert!(matches!(compute_bill(&input, &eps()), Err(BillError::Input { .. })), "{input:?}");
    }
    let before = BillInput::two_rate(Period::month(2025, 9).unwrap(), dec!(1), dec!(0), dec!(5), Region::Belgrade);
    assert!(matches!(compute_bill(&before, &eps()), Err(BillError::Tariff(_))));
    assert!(Period::new(day(2025, 11, 2), day(2025, 11, 1)).is_err());
    assert!(Period::month(2025, 13).is_err());
    // The largest accepted values do not overflow.
    let huge = BillInput::two_rate(
        Period::new(day(2025, 10, 1), day(2035, 10, 1)).unwrap(),
        dec!(1000000000),
        dec!(1000000000),
        dec!(100000),
        Region::Belgrade,
    );
    assert!(compute_bill(&huge, &eps()).is_ok());
}

#[test]
fn one_over_n_bill_and_difference() {
    // Master: 20 flats, 6,000 kWh (4,200 VT / 1,800 NT) → the 1/N household has 210 / 90, the worked example.
    let building = Consumption::TwoRate { vt_kwh: dec!(4200), nt_kwh: dec!(1800) };
    assert_eq!(
        one_over_n_consumption(building, 20, false).unwrap(),
        Consumption::TwoRate { vt_kwh: dec!(210), nt_kwh: dec!(90) }
    );
    assert_eq!(one_over_n_consumption(building, 7, true).unwrap(), Consumption::SingleRate { kwh: dec!(857.143) });
    assert!(one_over_n_consumption(building, 0, false).is_err());
    assert!(one_over_n_consumption(Consumption::SingleRate { kwh: dec!(1) }, 2, false).is_err());

    let frugal =
        BillInput::two_rate(Period::month(2025, 11).unwrap(), dec!(100), dec!(50), dec!(11.04), Region::Belgrade);
    let metered = compute_bill(&frugal, &eps()).unwrap();
    let old = one_over_n_bill(&frugal, building, 20, &eps()).unwrap();
    assert_eq!(old.total, dec!(4622.65));
    let c = compare(&metered, &old);
    assert_eq!(c.difference, metered.total - dec!(4622.65));
    assert!(c.difference < Decimal::ZERO);
    assert_eq!(c.percent, Some(billing_core::money::round_para(c.difference * dec!(100) / dec!(4622.65))));
}
