#![allow(clippy::unwrap_used)]
//! The tariff format: the shipped file, errors with field and line, validation, tariff sets.

use billing_core::tariff::{Tariff, TariffError, TariffSet, EPS_HOUSEHOLD_2025};
use billing_core::Period;
use chrono::NaiveDate;
use rust_decimal_macros::dec;
use schemas::inventory::Region;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Line (1-based) of the first line of `src` containing `needle`.
fn line_with(src: &str, needle: &str) -> usize {
    src.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// The shipped file with `from` replaced by `to` (exactly once).
fn edited(from: &str, to: &str) -> String {
    assert_eq!(EPS_HOUSEHOLD_2025.matches(from).count(), 1, "{from}");
    EPS_HOUSEHOLD_2025.replace(from, to)
}

fn invalid(src: &str) -> (usize, String, String) {
    match Tariff::from_toml(src) {
        Err(TariffError::Invalid { line, field, message }) => (line, field, message),
        other => panic!("expected an invalid tariff, got {other:?}"),
    }
}

#[test]
fn shipped_tariff_is_the_eps_decision() {
    let t = Tariff::eps_household_2025().unwrap();
    assert_eq!(t.code, "eps-household-2025");
    assert_eq!((t.valid_from, t.valid_to), (day(2025, 10, 1), None));
    assert_eq!(t.zone_limit_days, 30);
    let z: Vec<_> = t.zones.iter().map(|z| (z.name.as_str(), z.up_to_kwh, z.vt, z.nt, z.single)).collect();
    assert_eq!(
        z,
        vec![
            ("green", Some(dec!(350)), dec!(9.6136), dec!(2.4034), dec!(8.4119)),
            ("blue", Some(dec!(1200)), dec!(14.4203), dec!(3.6051), dec!(12.6178)),
            ("red", None, dec!(28.8407), dec!(7.2102), dec!(25.2357)),
        ]
    );
    assert_eq!((t.power_per_kw_month, t.supplier_per_month), (dec!(60.8947), dec!(160.6695)));
    assert_eq!((t.renewable_fee_per_kwh, t.efficiency_fee_per_kwh), (dec!(0.801), dec!(0.015)));
    assert_eq!((t.excise_rate, t.vat_rate, t.tv_fee_per_month), (dec!(0.075), dec!(0.20), dec!(349)));
    assert_eq!((t.discounts.e_bill, t.discounts.self_read, t.discounts.on_time), (dec!(0.07), dec!(0.06), dec!(0.05)));
    for r in Region::ALL {
        let w = t.night_window(r);
        assert_eq!((w.from_hour(), w.to_hour()), r.night_window(), "{r:?}");
    }
    // The display names every part.
    let shown = t.to_string();
    for needle in ["green", "red", "60.8947", "excise 7.5 %", "VAT 20 %", "novi_sad"] {
        assert!(shown.contains(needle), "{needle} in\n{shown}");
    }
}

#[test]
fn night_windows_default_to_the_region_and_can_be_overridden() {
    let src = edited("central = { from = 22, to = 6 }\n", "")
        .replace("belgrade = { from = 0, to = 8 }", "belgrade = { from = 1, to = 7 }");
    let t = Tariff::from_toml(&src).unwrap();
    assert_eq!((t.night_window(Region::Belgrade).from_hour(), t.night_window(Region::Belgrade).to_hour()), (1, 7));
    assert_eq!(t.night_window(Region::Central).from_hour(), 22);
    let (line, field, _) = invalid(&edited("central = { from = 22, to = 6 }", "central = { from = 22, to = 24 }"));
    assert_eq!((line, field.as_str()), (line_with(EPS_HOUSEHOLD_2025, "central = {"), "night.central.to"));
    let (_, field, msg) = invalid(&edited("central = { from = 22, to = 6 }", "central = { from = 6, to = 6 }"));
    assert_eq!(field, "night.central");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn a_float_is_refused_with_field_and_line() {
    let src = edited("vt = \"14.4203\"", "vt = 14.4203");
    let (line, field, msg) = invalid(&src);
    assert_eq!(line, line_with(&src, "vt = 14.4203"));
    assert_eq!(field, "zone[1].vt");
    assert!(msg.contains("strings"), "{msg}");
    // The error's Display names both.
    let shown = Tariff::from_toml(&src).unwrap_err().to_string();
    assert!(shown.starts_with(&format!("line {line}: zone[1].vt:")), "{shown}");
}

#[test]
fn missing_unknown_and_malformed_fields() {
    let (_, _, msg) = invalid(&edited("supplier = \"160.6695\"\n", ""));
    assert!(msg.contains("supplier"), "{msg}");
    let src = edited("renewable = \"0.801\"", "renewable = \"0.801\"\nrenewabel = \"1\"");
    let (line, _, msg) = invalid(&src);
    assert_eq!(line, line_with(&src, "renewabel"));
    assert!(msg.contains("renewabel"), "{msg}");
    let src = edited("nt = \"3.6051\"", "nt = \"3,6051\"");
    let (line, field, _) = invalid(&src);
    assert_eq!((line, field.as_str()), (line_with(&src, "3,6051"), "zone[1].nt"));
    let (line, field, _) = invalid(&edited("valid_from = 2025-10-01", "valid_from = 2025-10-01T00:00:00Z"));
    assert_eq!((line, field.as_str()), (line_with(EPS_HOUSEHOLD_2025, "valid_from ="), "valid_from"));
    let (_, field, _) = invalid("this is not toml");
    assert!(!field.is_empty());
}

#[test]
fn validation_refuses_the_whole_tariff() {
    // zones not increasing
    let src = edited("up_to_kwh = \"1200\"", "up_to_kwh = \"350\"");
    let (line, field, msg) = invalid(&src);
    assert_eq!((line, field.as_str()), (line_with(&src, "up_to_kwh = \"350\"   "), "zone[1].up_to_kwh"));
    assert!(msg.contains("increase"), "{msg}");
    // negative price
    let src = edited("efficiency = \"0.015\"", "efficiency = \"-0.015\"");
    let (line, field, _) = invalid(&src);
    assert_eq!((line, field.as_str()), (line_with(&src, "efficiency ="), "fees.efficiency"));
    // a price falling from one zone to the next
    let (_, field, msg) = invalid(&edited("nt = \"7.2102\"", "nt = \"1\""));
    assert_eq!(field, "zone[2].nt");
    assert!(msg.contains("falls"), "{msg}");
    // a limit on the last zone, none on a middle zone
    let (_, field, _) = invalid(&edited("name = \"red\"", "name = \"red\"\nup_to_kwh = \"5000\""));
    assert_eq!(field, "zone[2].up_to_kwh");
    let (_, field, _) = invalid(&edited("up_to_kwh = \"1200\"", ""));
    assert_eq!(field, "zone[1].up_to_kwh");
    // percentages, dates, duplicate zones, limits
    let (_, field, _) = invalid(&edited("vat = \"20\"", "vat = \"120\""));
    assert_eq!(field, "taxes.vat");
    let (_, field, _) = invalid(&edited("e_bill = \"7\"", "e_bill = \"100\""));
    assert_eq!(field, "discounts.e_bill");
    let (_, field, _) = invalid(&edited("# valid_to = 2026-09-30", "valid_to = 2025-09-30"));
    assert_eq!(field, "valid_to");
    let (_, field, _) = invalid(&edited("name = \"blue\"", "name = \"green\""));
    assert_eq!(field, "zone[1].name");
    let (_, field, _) = invalid(&edited("per_month = \"349\"", "per_month = \"1000000.01\""));
    assert_eq!(field, "tv_fee.per_month");
    let (_, field, _) = invalid(&edited("zone_limit_days = 30", "zone_limit_days = 0"));
    assert_eq!(field, "zone_limit_days");
}

#[test]
fn tariff_sets_refuse_overlaps_and_gaps() {
    let open = Tariff::eps_household_2025().unwrap();
    let later = Tariff::from_toml(&edited("valid_from = 2025-10-01", "valid_from = 2026-01-01")).unwrap();
    assert!(matches!(TariffSet::new(vec![open.clone(), later.clone()]), Err(TariffError::Overlap { .. })));
    let closed = Tariff::from_toml(&edited("# valid_to = 2026-09-30", "valid_to = 2026-01-01")).unwrap();
    assert!(matches!(TariffSet::new(vec![later.clone(), closed.clone()]), Err(TariffError::Overlap { .. })));
    assert_eq!(TariffSet::new(vec![]), Err(TariffError::Empty));

    let ended = Tariff::from_toml(&edited("# valid_to = 2026-09-30", "valid_to = 2025-12-31")).unwrap();
    let set = TariffSet::new(vec![later.clone(), ended.clone()]).unwrap();
    let segs = set.segments(Period::new(day(2025, 12, 20), day(2026, 1, 10)).unwrap()).unwrap();
    let got: Vec<_> = segs.iter().map(|(t, p)| (t.valid_from, p.first_day(), p.last_day())).collect();
    assert_eq!(
        got,
        vec![
            (day(2025, 10, 1), day(2025, 12, 20), day(2025, 12, 31)),
            (day(2026, 1, 1), day(2026, 1, 1), day(2026, 1, 10))
        ]
    );
    // before the first tariff
    let err = set.segments(Period::new(day(2025, 9, 30), day(2025, 10, 5)).unwrap()).unwrap_err();
    assert_eq!(err, TariffError::NotCovered(day(2025, 9, 30)));
    // a gap between two tariffs
    let gap = TariffSet::new(vec![
        later,
        Tariff::from_toml(&edited("# valid_to = 2026-09-30", "valid_to = 2025-12-30")).unwrap(),
    ])
    .unwrap();
    let err = gap.segments(Period::month(2025, 12).unwrap()).unwrap_err();
    assert_eq!(err, TariffError::NotCovered(day(2025, 12, 31)));
    // after the last tariff ended
    let err = TariffSet::single(ended).segments(Period::month(2026, 1).unwrap()).unwrap_err();
    assert_eq!(err, TariffError::NotCovered(day(2026, 1, 1)));
}

proptest::proptest! {
    /// Any edit of the shipped file is either a valid tariff or an error with a line inside the file.
    #[test]
    fn never_panics_on_edited_files(pos in 0usize..4000, len in 0usize..40, insert in "[ -~\n]{0,12}") {
        let src = EPS_HOUSEHOLD_2025;
        let start = src.char_indices().map(|(i, _)| i).find(|i| *i >= pos.min(src.len())).unwrap_or(src.len());
        let end = src.char_indices().map(|(i, _)| i).find(|i| *i >= start + len).unwrap_or(src.len());
        let edited = format!("{}{}{}", &src[..start], insert, &src[end..]);
        if let Err(TariffError::Invalid { line, .. }) = Tariff::from_toml(&edited) {
            proptest::prop_assert!(line >= 1 && line <= edited.lines().count() + 1);
        }
    }
}
