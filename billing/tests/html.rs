//! The printable HTML from constructed bills: every line amount, escaping of data, number formatting.

#![allow(clippy::unwrap_used)]

use billing::bill::{compute_bill, BillInput, Period};
use billing::html::{building_report, escape, file_stem, invoice, number, rsd};
use billing::model::RunMeta;
use billing::run::{lines_of, BuildingResult, BuildingSummary, HouseholdBill, KeyResult, Problem};
use billing::{Tariff, TariffSet};
use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use schemas::inventory::Region;

const EVIL: &str = "<script>alert('x')</script> & \"Njegoševa\" 1";

fn meta() -> RunMeta {
    RunMeta {
        run_id: 7,
        version: 2,
        period: "2026-10".into(),
        period_start: Utc.with_ymd_and_hms(2026, 9, 30, 22, 0, 0).unwrap(),
        period_end: Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap(),
        building: None,
        tariff_code: "eps-household-2025".into(),
        split_key: "area",
        created_at: Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap(),
    }
}

/// A bill crossing into the blue zone (so it has 4 energy lines), estimated, with a 1/N comparison.
fn bill(code: &str, vt: Decimal, nt: Decimal, old: Decimal) -> HouseholdBill {
    let t = TariffSet::single(Tariff::eps_household_2025().unwrap());
    let input = BillInput::two_rate(Period::month(2026, 10).unwrap(), vt, nt, dec!(11.04), Region::Belgrade);
    let b = compute_bill(&input, &t).unwrap();
    HouseholdBill {
        household_id: 1,
        household_code: code.into(),
        apartment: "<b>12</b>".into(),
        building_id: 1,
        building_code: "B<1>".into(),
        meter_serial: "SN&001".into(),
        vt_kwh: vt,
        nt_kwh: nt,
        total_kwh: vt + nt,
        common_kwh: Some(dec!(12.345)),
        estimated_share: dec!(0.05),
        estimated: true,
        total: b.total,
        old_split_total: Some(old),
        difference: Some(b.total - old),
        difference_percent: Some(((b.total - old) * dec!(100) / old).round_dp(2)),
        lines: lines_of(&b),
    }
}

#[test]
fn numbers_are_grouped_serbian_style() {
    assert_eq!(rsd(dec!(4622.66)), "4.622,66");
    assert_eq!(rsd(dec!(1234567.5)), "1.234.567,50");
    assert_eq!(rsd(dec!(-1000)), "-1.000,00");
    assert_eq!(rsd(dec!(0.005)), "0,01");
    assert_eq!(rsd(dec!(-0.001)), "0,00");
    assert_eq!(number(dec!(999.9996), 3), "1.000,000");
    assert_eq!(number(dec!(12), 0), "12");
}

#[test]
fn escape_and_file_names() {
    assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    assert_eq!(file_stem("H-1.a_b"), "H-1.a_b");
    assert_eq!(file_stem("../../etc/passwd"), ".._.._etc_passwd");
    assert_eq!(file_stem(".."), "__");
    assert_eq!(file_stem(""), "_");
    assert_eq!(file_stem("Stan 3/ž"), "Stan_3__");
}

#[test]
fn the_invoice_has_every_line_amount_and_escapes_the_address() {
    let b = bill("H<1>", dec!(450.5), dec!(120.25), dec!(3000));
    assert!(b.lines.len() >= 10, "{}", b.lines.len());
    let html = invoice(&meta(), EVIL, &b);
    assert!(html.starts_with("<!DOCTYPE html>"));
    for l in &b.lines {
        assert!(
            html.contains(&format!("<td class=\"num\">{}</td></tr>", rsd(l.amount))),
            "line {}: {}",
            l.line_no,
            l.amount
        );
    }
    assert!(html.contains(&format!("{} RSD", rsd(b.total))));
    assert!(b.total > dec!(1000), "thousands separator exercised");
    assert!(html.contains(&rsd(b.total)) && rsd(b.total).contains('.'));
    // Header: household, address, period, meter serial, all escaped.
    assert!(!html.contains("<script>"), "raw script in the invoice");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Njegoševa&quot; 1"));
    assert!(html.contains("H&lt;1&gt;") && !html.contains("H<1>"));
    assert!(html.contains("SN&amp;001"));
    assert!(html.contains("&lt;b&gt;12&lt;/b&gt;") && !html.contains("<b>12</b>"));
    assert!(html.contains("2026-10") && html.contains("1.10.2026. – 31.10.2026."));
    // kWh per VT/NT, estimated flag, common share, 1/N and the difference.
    assert!(html.contains("450,500 kWh") && html.contains("120,250 kWh") && html.contains("570,750 kWh"));
    assert!(html.contains("PROCENA") && html.contains("5,00 %"));
    assert!(html.contains("12,345 kWh"));
    assert!(html.contains("3.000,00 RSD"));
    let diff = b.difference.unwrap();
    assert!(html.contains(&format!("+{} RSD ({} %)", rsd(diff), number(b.difference_percent.unwrap(), 2))));
    // Print-ready and self-contained.
    assert!(html.contains("@page { size: A4") && html.contains("@media print"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));
}

#[test]
fn an_actual_bill_without_comparison_is_not_flagged() {
    let mut b = bill("H2", dec!(100), dec!(50), dec!(1));
    (b.estimated, b.estimated_share, b.common_kwh, b.old_split_total, b.difference, b.difference_percent) =
        (false, Decimal::ZERO, None, None, None, None);
    let html = invoice(&meta(), "Njegoševa 1", &b);
    assert!(!html.contains("PROCENA"));
    assert!(html.contains("Stvarno očitanje"));
    assert!(html.contains("no 1/N comparison"));
}

#[test]
fn the_building_report_has_totals_chart_and_escaped_problems() {
    let bills = vec![bill("H1", dec!(450.5), dec!(120.25), dec!(3000)), bill("H<2>", dec!(100), dec!(20), dec!(3000))];
    let metered: Decimal = bills.iter().map(|b| b.total).sum();
    let summary = BuildingSummary {
        building_id: 1,
        building_code: "B<1>".into(),
        region: Region::Belgrade,
        split_key: "area",
        households: 2,
        bills: 2,
        estimated_bills: 2,
        master_kwh: Some(dec!(1000)),
        master_estimated_share: Some(Decimal::ZERO),
        apartments_kwh: dec!(690.75),
        common_kwh: Some(dec!(309.25)),
        common_percent: Some(dec!(30.93)),
        metered_total: metered,
        one_over_n_total: Some(dec!(6000)),
        min_bill: Some(bills[1].total),
        median_bill: Some(dec!(4321.5)),
        max_bill: Some(bills[0].total),
        pay_more: 1,
        pay_less: 1,
        pay_same: 0,
        problems: 1,
        split_keys: vec![
            KeyResult { key: "equal", min_kwh: dec!(154.625), max_kwh: dec!(154.625) },
            KeyResult { key: "area", min_kwh: dec!(100.1), max_kwh: dec!(209.15) },
        ],
        negative_common_intervals: 0,
        interval_hours_checked: None,
    };
    let problems = vec![Problem {
        building_id: 1,
        building_code: "B<1>".into(),
        household_id: Some(3),
        household_code: Some("H<3>".into()),
        meter_id: Some(9),
        kind: "missing_boundary_reading",
        detail: "<img src=x onerror=alert(1)>".into(),
    }];
    let r = BuildingResult { summary, bills: bills.clone(), problems };
    let html = building_report(&meta(), EVIL, &r);
    assert!(!html.contains("<script>") && !html.contains("<img"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    for s in [
        "1.000,000 kWh",
        "690,750 kWh",
        "309,250 kWh",
        "30,93 %",
        "6.000,00 RSD",
        "4.321,50 RSD",
        "154,625 kWh",
        "209,150 kWh",
        "1 / 1 / 0",
    ] {
        assert!(html.contains(s), "{s}");
    }
    assert!(html.contains(&format!("{} RSD", rsd(metered))));
    for b in &bills {
        assert!(html.contains(&rsd(b.total)));
    }
    // The chart: inline SVG, one metered and one 1/N bar per household, no script.
    assert!(html.contains("<svg"));
    assert_eq!(html.matches("fill=\"#0b4f8a\"><title>").count(), 2);
    assert_eq!(html.matches("fill=\"#e39b2d\"><title>").count(), 2);
    assert!(html.contains("H&lt;2&gt; 1/N: 3.000,00 RSD"));
}
