//! Printable HTML: an invoice per household and a report per building.
//!
//! Hand-written HTML (no template engine: neither `askama` nor `maud` is in the workspace's `Cargo.lock`, and
//! two small pages do not justify a proc-macro dependency). Every piece of text that comes from data
//! (household and building codes, addresses, apartment, meter serials, zone and tariff names, problem details)
//! goes through [`escape`]. The pages are self-contained: inline CSS, an A4 `@page` rule and a print media
//! query, an inline SVG chart, no JavaScript, no external resources.
//!
//! Numbers are formatted the Serbian way: `.` groups thousands, `,` separates decimals (`4.622,66`); money
//! always with 2 decimals, energy with 3.

use std::fmt::Write as _;

use rust_decimal::Decimal;

use billing_core::run::{BuildingResult, HouseholdBill, LineOut};

use crate::model::RunMeta;

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A file name for a code: ASCII letters, digits, `-`, `_` and `.` are kept, anything else becomes `_`; a
/// name made only of dots (or empty) becomes `_`.
pub fn file_stem(code: &str) -> String {
    let s: String =
        code.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.chars().all(|c| c == '.') {
        "_".repeat(s.len().max(1))
    } else {
        s
    }
}

/// `x` rounded half away from zero to `dp` decimals, thousands grouped with `.`, decimals after `,`.
pub fn number(x: Decimal, dp: u32) -> String {
    let mut r = x.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let negative = r.is_sign_negative() && !r.is_zero();
    r.set_sign_positive(true);
    r.rescale(dp);
    let text = r.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3 + frac.len() + 2);
    if negative {
        grouped.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(c);
    }
    if !frac.is_empty() {
        grouped.push(',');
        grouped.push_str(frac);
    }
    grouped
}

/// Money: 2 decimals, grouped (`4.622,66`).
pub fn rsd(x: Decimal) -> String {
    number(x, 2)
}

/// Energy: 3 decimals, grouped (`1.234,567`).
pub fn kwh(x: Decimal) -> String {
    number(x, 3)
}

/// A unit price or quantity with its own decimals (at least 2).
fn plain(x: Decimal) -> String {
    number(x, x.normalize().scale().max(2))
}

fn signed_rsd(x: Decimal) -> String {
    if x > Decimal::ZERO {
        format!("+{}", rsd(x))
    } else {
        rsd(x)
    }
}

fn zone_sr(zone: &str) -> String {
    match zone {
        "green" => "zelena zona".to_string(),
        "blue" => "plava zona".to_string(),
        "red" => "crvena zona".to_string(),
        z => escape(z),
    }
}

/// Serbian label and English subtitle of a bill line.
fn line_label(l: &LineOut) -> (String, String) {
    match l.kind {
        "energy" => {
            let zone = l.zone.as_deref().unwrap_or("");
            let (tou_sr, tou_en) = match l.tou {
                Some("vt") => ("VT (viša tarifa)", "day rate"),
                Some("nt") => ("NT (niža tarifa)", "night rate"),
                _ => ("jednotarifno", "single rate"),
            };
            (
                format!("Aktivna energija, {}, {tou_sr}", zone_sr(zone)),
                format!("Energy, {} zone, {tou_en}", escape(zone)),
            )
        }
        "power_charge" => ("Obračunska snaga".into(), "Power charge (approved kW)".into()),
        "supplier_charge" => ("Troškovi garantovanog snabdevača".into(), "Supplier charge".into()),
        "payment_discount" => ("Popust za redovno plaćanje".into(), "On-time payment discount".into()),
        "renewable_fee" => ("Naknada za podsticaj povlašćenih proizvođača".into(), "Renewable energy fee".into()),
        "efficiency_fee" => ("Naknada za energetsku efikasnost".into(), "Energy efficiency fee".into()),
        "excise" => ("Akciza".into(), "Excise".into()),
        "vat" => ("PDV".into(), "VAT".into()),
        "tv_fee" => ("Taksa za javni medijski servis".into(), "Public broadcasting (TV) fee".into()),
        "rounding" => ("Zaokruživanje".into(), "Rounding (total rounded once)".into()),
        "correction" => (
            "Korekcija prethodnog obračuna (procena zamenjena očitanjem)".into(),
            format!(
                "Correction of an earlier estimated bill{}",
                l.detail.as_deref().map(|d| format!(": {}", escape(d))).unwrap_or_default()
            ),
        ),
        other => (escape(other), String::new()),
    }
}

fn unit_label(unit: &str) -> &'static str {
    match unit {
        "kwh" => "kWh",
        "kw_month" => "kW × mes.",
        "month" => "mes.",
        "rsd" => "RSD",
        _ => "",
    }
}

const STYLE: &str = r#"
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; font-size: 10pt; color: #1a1a1a; margin: 0; }
.page { max-width: 186mm; margin: 0 auto; padding: 8mm 0; }
header { display: flex; justify-content: space-between; align-items: flex-start; border-bottom: 3px solid #0b4f8a; padding-bottom: 4mm; margin-bottom: 4mm; }
h1 { font-size: 16pt; margin: 0 0 1mm 0; color: #0b4f8a; }
h2 { font-size: 11.5pt; margin: 5mm 0 2mm 0; color: #0b4f8a; border-bottom: 1px solid #c8d6e5; padding-bottom: 1mm; }
.en { font-size: 7.5pt; color: #666; font-weight: normal; display: block; }
.meta { border-collapse: collapse; font-size: 9pt; }
.meta td { padding: 0.6mm 2mm; vertical-align: top; }
.meta td:first-child { color: #555; }
table.lines { width: 100%; border-collapse: collapse; font-size: 9pt; }
table.lines th { background: #0b4f8a; color: #fff; text-align: left; padding: 1.5mm 2mm; font-weight: 600; }
table.lines th .en { color: #dfe9f3; }
table.lines td { padding: 1.2mm 2mm; border-bottom: 1px solid #dde3ea; vertical-align: top; }
table.lines tr:nth-child(even) td { background: #f5f8fb; }
.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; font-size: 11pt; border-top: 2px solid #0b4f8a; background: #e8f0f8 !important; }
.boxes { display: flex; gap: 4mm; margin-top: 4mm; }
.box { flex: 1; border: 1px solid #c8d6e5; border-radius: 2mm; padding: 3mm; }
.box h3 { margin: 0 0 2mm 0; font-size: 10pt; color: #0b4f8a; }
.big { font-size: 14pt; font-weight: bold; }
.flag { display: inline-block; background: #b3261e; color: #fff; padding: 0.5mm 2mm; border-radius: 1mm; font-weight: bold; }
.ok { color: #1b6e2a; }
.more { color: #b3261e; }
.less { color: #1b6e2a; }
.note { font-size: 8pt; color: #555; margin-top: 4mm; }
.grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 3mm; }
svg text { font-family: inherit; }
@media print {
  body { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .page { padding: 0; max-width: none; }
  table.lines tr { page-break-inside: avoid; }
  .boxes, .box, svg { page-break-inside: avoid; }
}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"sr-Latn\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<div class=\"page\">\n{body}</div>\n</body>\n</html>\n",
        escape(title)
    )
}

fn label(sr: &str, en: &str) -> String {
    format!("{sr}<span class=\"en\">{en}</span>")
}

fn percent(x: Option<Decimal>) -> String {
    x.map(|p| format!("{} %", number(p, 2))).unwrap_or_else(|| "—".into())
}

fn opt_rsd(x: Option<Decimal>) -> String {
    x.map(rsd).unwrap_or_else(|| "—".into())
}

fn opt_kwh(x: Option<Decimal>) -> String {
    x.map(kwh).unwrap_or_else(|| "—".into())
}

fn diff_class(d: Option<Decimal>) -> &'static str {
    match d {
        Some(d) if d > Decimal::ZERO => "more",
        Some(d) if d < Decimal::ZERO => "less",
        _ => "",
    }
}

/// The billed days in Europe/Belgrade local time: `1.10.2026. – 31.10.2026.` (the end instant is local
/// midnight of the next month, so the last day is the day before it).
fn local_days(meta: &RunMeta) -> String {
    use chrono_tz::Europe::Belgrade;
    let first = meta.period_start.with_timezone(&Belgrade).date_naive();
    let end = meta.period_end.with_timezone(&Belgrade).date_naive();
    let last = end.pred_opt().unwrap_or(end).max(first);
    format!("{}. – {}.", first.format("%-d.%-m.%Y"), last.format("%-d.%-m.%Y"))
}

/// The printable invoice of one household. `address` is the building's address (escaped here).
pub fn invoice(meta: &RunMeta, address: &str, bill: &HouseholdBill) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header><div><h1>Račun za električnu energiju<span class=\"en\">Electricity bill</span></h1>\
         <div>{}</div></div>\
         <table class=\"meta\">\
         <tr><td>{}</td><td><b>{}</b></td></tr>\
         <tr><td>{}</td><td>{}, stan {}</td></tr>\
         <tr><td>{}</td><td>{}</td></tr>\
         <tr><td>{}</td><td>{}</td></tr>\
         <tr><td>{}</td><td>{} (v{}, {})</td></tr>\
         </table></header>",
        escape(address),
        label("Šifra domaćinstva", "Household code"),
        escape(&bill.household_code),
        label("Adresa objekta", "Building address"),
        escape(address),
        escape(&bill.apartment),
        label("Zgrada", "Building"),
        escape(&bill.building_code),
        label("Brojilo", "Meter serial"),
        escape(&bill.meter_serial),
        label("Obračunski period", "Billing period"),
        escape(&meta.period),
        meta.version,
        local_days(meta),
    );
    let _ = writeln!(
        b,
        "<table class=\"meta\"><tr><td>{}</td><td class=\"num\">{} kWh</td><td>{}</td><td class=\"num\">{} kWh</td>\
         <td>{}</td><td class=\"num\">{} kWh</td></tr></table>",
        label("Viša tarifa (VT)", "Day"),
        kwh(bill.vt_kwh),
        label("Niža tarifa (NT)", "Night"),
        kwh(bill.nt_kwh),
        label("Ukupno", "Total"),
        kwh(bill.total_kwh),
    );
    let _ = write!(
        b,
        "<h2>Stavke računa<span class=\"en\">Bill lines</span></h2>\n<table class=\"lines\"><thead><tr>\
         <th>{}</th><th class=\"num\">{}</th><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th>\
         </tr></thead><tbody>\n",
        label("Stavka", "Item"),
        label("Količina", "Quantity"),
        label("Jed.", "Unit"),
        label("Cena", "Unit price"),
        label("Iznos (RSD)", "Amount"),
    );
    let first_tariff = bill.lines.first().map(|l| l.tariff_code.as_str());
    let several_tariffs = bill.lines.iter().any(|l| Some(l.tariff_code.as_str()) != first_tariff);
    for l in &bill.lines {
        let (sr, en) = line_label(l);
        let tariff = if several_tariffs {
            format!(" <span class=\"en\">{}</span>", escape(&l.tariff_code))
        } else {
            String::new()
        };
        let _ = writeln!(
            b,
            "<tr><td>{}{tariff}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            label(&sr, &en),
            plain(l.quantity),
            unit_label(l.unit),
            if l.kind == "correction" { "—".to_string() } else { plain(l.unit_price) },
            rsd(l.amount),
        );
    }
    let _ = writeln!(
        b,
        "<tr class=\"total\"><td colspan=\"4\">{}</td><td class=\"num\">{} RSD</td></tr></tbody></table>",
        label("Ukupno za plaćanje", "Total to pay"),
        rsd(bill.total),
    );

    // Estimated share, common areas, 1/N.
    let est = if bill.estimated {
        format!(
            "<span class=\"flag\">PROCENA</span> {} %<span class=\"en\">Estimated: {} % of the period without actual \
             readings (above the threshold)</span>",
            number(bill.estimated_share * Decimal::ONE_HUNDRED, 2),
            number(bill.estimated_share * Decimal::ONE_HUNDRED, 2)
        )
    } else {
        format!(
            "<span class=\"ok\">Stvarno očitanje</span> ({} %)<span class=\"en\">Actual readings; estimated share {} \
             %</span>",
            number(bill.estimated_share * Decimal::ONE_HUNDRED, 2),
            number(bill.estimated_share * Decimal::ONE_HUNDRED, 2)
        )
    };
    let common = match bill.common_kwh {
        Some(c) => format!(
            "<div class=\"big\">{} kWh</div><span class=\"en\">Your share of common areas + losses (stairwell, lift, \
             pumps). Shown for information, not charged on this bill.</span>",
            kwh(c)
        ),
        None => "<div>—</div><span class=\"en\">The building could not be reconciled this period.</span>".to_string(),
    };
    let old = match (bill.old_split_total, bill.difference) {
        (Some(old), Some(d)) => format!(
            "<table class=\"meta\"><tr><td>{}</td><td class=\"num\">{} RSD</td></tr>\
             <tr><td>{}</td><td class=\"num\">{} RSD</td></tr>\
             <tr><td>{}</td><td class=\"num {}\"><b>{} RSD ({})</b></td></tr></table>",
            label("Po sopstvenom brojilu", "Metered (this month, without corrections)"),
            rsd(bill.total - bill.lines.iter().filter(|l| l.kind == "correction").map(|l| l.amount).sum::<Decimal>()),
            label("Po starom načinu 1/N", "Old 1/N split"),
            rsd(old),
            label("Razlika", "Difference"),
            diff_class(Some(d)),
            signed_rsd(d),
            bill.difference_percent.map(|p| format!("{} %", number(p, 2))).unwrap_or_else(|| "—".into()),
        ),
        _ => "<div>—</div><span class=\"en\">No master-meter reading: no 1/N comparison.</span>".to_string(),
    };
    let _ = writeln!(
        b,
        "<div class=\"boxes\">\
         <div class=\"box\"><h3>{}</h3>{est}</div>\
         <div class=\"box\"><h3>{}</h3>{common}</div>\
         <div class=\"box\"><h3>{}</h3>{old}</div></div>",
        label("Očitanje", "Readings"),
        label("Zajednička potrošnja", "Common areas"),
        label("Poređenje sa 1/N", "Compared with 1/N"),
    );
    let _ = writeln!(
        b,
        "<p class=\"note\">Obračun {} verzija {}, tarifa {}. Iznosi u RSD; PDV i akciza obračunati prema važećem \
         tarifnom sistemu.<span class=\"en\">Run {} version {}, tariff {}; created {}.</span></p>",
        escape(&meta.period),
        meta.version,
        escape(&meta.tariff_code),
        meta.run_id,
        meta.version,
        escape(&meta.tariff_code),
        meta.created_at.format("%Y-%m-%d %H:%M UTC"),
    );
    page(&format!("Račun {} {}", bill.household_code, meta.period), &b)
}

/// An inline SVG bar chart: per household, the metered bill and the 1/N bill.
pub fn bar_chart(bills: &[HouseholdBill]) -> String {
    let max =
        bills.iter().flat_map(|b| [Some(b.total), b.old_split_total]).flatten().fold(Decimal::ZERO, |a, x| a.max(x));
    let (w, h, left, bottom, top) = (680i64, 260i64, 70i64, 50i64, 24i64);
    let plot_h = h - bottom - top;
    let n = i64::try_from(bills.len()).unwrap_or(i64::MAX).max(1);
    let group = ((w - left - 10) / n).max(4);
    let bar = (group * 2 / 5).clamp(1, 36);
    let scale = |x: Decimal| -> i64 {
        if max.is_zero() {
            return 0;
        }
        let v = (x.max(Decimal::ZERO) * Decimal::from(plot_h) / max).round();
        i64::try_from(v.mantissa() / 10i128.pow(v.scale())).unwrap_or(0).clamp(0, plot_h)
    };
    let width = left + group * n + 10;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" viewBox=\"0 0 {width} {h}\" role=\"img\" \
         aria-label=\"Metered vs 1/N per household\">"
    );
    // Axis with 4 gridlines.
    for i in 0..=4i64 {
        let y = top + plot_h - plot_h * i / 4;
        let v = max * Decimal::from(i) / Decimal::from(4);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{width}\" y2=\"{y}\" stroke=\"#dde3ea\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            left - 4,
            y + 3,
            number(v, 0)
        );
    }
    for (i, b) in bills.iter().enumerate() {
        let x0 = left + group * i64::try_from(i).unwrap_or(0) + group / 10;
        let hm = scale(b.total);
        let _ = write!(
            s,
            "<rect x=\"{x0}\" y=\"{}\" width=\"{bar}\" height=\"{hm}\" fill=\"#0b4f8a\"><title>{}: {} RSD</title></rect>",
            top + plot_h - hm,
            escape(&b.household_code),
            rsd(b.total)
        );
        if let Some(old) = b.old_split_total {
            let ho = scale(old);
            let _ = write!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"{bar}\" height=\"{ho}\" fill=\"#e39b2d\"><title>{} 1/N: {} RSD</title></rect>",
                x0 + bar,
                top + plot_h - ho,
                escape(&b.household_code),
                rsd(old)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"end\" transform=\"rotate(-45 {} {})\">{}</text>",
            x0 + bar,
            top + plot_h + 12,
            x0 + bar,
            top + plot_h + 12,
            escape(&b.household_code)
        );
    }
    let _ = write!(
        s,
        "<rect x=\"{left}\" y=\"4\" width=\"10\" height=\"10\" fill=\"#0b4f8a\"/>\
         <text x=\"{}\" y=\"13\" font-size=\"10\">po brojilu / metered</text>\
         <rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" fill=\"#e39b2d\"/>\
         <text x=\"{}\" y=\"13\" font-size=\"10\">1/N</text></svg>",
        left + 14,
        left + 150,
        left + 164
    );
    s
}

/// The printable report of one building. `address` is the building's address (escaped here).
pub fn building_report(meta: &RunMeta, address: &str, r: &BuildingResult) -> String {
    let s = &r.summary;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header><div><h1>Izveštaj o zgradi {}<span class=\"en\">Building report</span></h1><div>{}</div></div>\
         <table class=\"meta\"><tr><td>{}</td><td>{} (v{})</td></tr>\
         <tr><td>{}</td><td>{} / {}</td></tr>\
         <tr><td>{}</td><td>{}</td></tr></table></header>",
        escape(&s.building_code),
        escape(address),
        label("Period", "Billing period"),
        escape(&meta.period),
        meta.version,
        label("Računi / domaćinstva", "Bills / households"),
        s.bills,
        s.households,
        label("Ključ raspodele", "Split key"),
        escape(s.split_key),
    );
    let row =
        |sr: &str, en: &str, v: String| format!("<tr><td>{}</td><td class=\"num\">{v}</td></tr>\n", label(sr, en));
    let _ = write!(
        b,
        "<div class=\"boxes\"><div class=\"box\"><h3>{}</h3><table class=\"lines\"><tbody>{}{}{}{}{}</tbody></table></div>",
        label("Bilans energije", "Energy balance"),
        row("Glavno brojilo", "Master meter", format!("{} kWh", opt_kwh(s.master_kwh))),
        row("Σ stanova", "Σ apartments", format!("{} kWh", kwh(s.apartments_kwh))),
        row("Zajednička potrošnja + gubici", "Common areas + losses", format!("{} kWh", opt_kwh(s.common_kwh))),
        row("Udeo zajedničke potrošnje", "Common share of master", percent(s.common_percent)),
        row(
            "Sati: stanovi > glavno brojilo",
            "Hours with apartments above the master (negative common areas)",
            match s.interval_hours_checked {
                Some(n) => format!("{} / {n} h", s.negative_common_intervals),
                None => format!("{} h", s.negative_common_intervals),
            }
        ),
    );
    let _ = writeln!(
        b,
        "<div class=\"box\"><h3>{}</h3><table class=\"lines\"><tbody>{}{}{}{}{}{}{}</tbody></table></div></div>",
        label("Računi", "Bills"),
        row("Ukupno po brojilima", "Metered total", format!("{} RSD", rsd(s.metered_total))),
        row("Ukupno po 1/N", "1/N total", format!("{} RSD", opt_rsd(s.one_over_n_total))),
        row("Najmanji račun", "Min bill", format!("{} RSD", opt_rsd(s.min_bill))),
        row("Medijana", "Median bill", format!("{} RSD", opt_rsd(s.median_bill))),
        row("Najveći račun", "Max bill", format!("{} RSD", opt_rsd(s.max_bill))),
        row(
            "Plaća više / manje / isto",
            "Pay more / less / same than 1/N",
            format!("{} / {} / {}", s.pay_more, s.pay_less, s.pay_same)
        ),
        row("Procenjeni računi", "Estimated bills", s.estimated_bills.to_string()),
    );
    // Split keys.
    let _ = write!(
        b,
        "<h2>Zajednička potrošnja po ključu raspodele<span class=\"en\">Common share per household under each split \
         key</span></h2>\n<table class=\"lines\"><thead><tr><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th>\
         </tr></thead><tbody>\n",
        label("Ključ", "Key"),
        label("Najmanji udeo", "Min share"),
        label("Najveći udeo", "Max share"),
    );
    if s.split_keys.is_empty() {
        b.push_str("<tr><td colspan=\"3\">— (nije usaglašeno / not reconciled)</td></tr>\n");
    }
    for k in &s.split_keys {
        let name = match k.key {
            "equal" => label("jednaki delovi", "equal shares"),
            "area" => label("po površini", "floor area"),
            "residents" => label("po broju članova", "residents"),
            other => escape(other),
        };
        let _ = writeln!(
            b,
            "<tr><td>{name}{}</td><td class=\"num\">{} kWh</td><td class=\"num\">{} kWh</td></tr>",
            if k.key == s.split_key { " <b>(primenjen / applied)</b>" } else { "" },
            kwh(k.min_kwh),
            kwh(k.max_kwh)
        );
    }
    b.push_str("</tbody></table>\n");
    // Chart + per household.
    let _ = write!(
        b,
        "<h2>Po brojilu i po 1/N<span class=\"en\">Metered vs 1/N per household (RSD)</span></h2>\n{}\n",
        bar_chart(&r.bills)
    );
    let _ = writeln!(
        b,
        "<table class=\"lines\"><thead><tr><th>{}</th><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th>\
         <th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th></tr></thead><tbody>",
        label("Domaćinstvo", "Household"),
        label("Stan", "Apt."),
        label("kWh", "own"),
        label("Zajed. kWh", "common"),
        label("Račun", "Metered"),
        label("1/N", "old split"),
        label("Razlika", "Difference"),
        label("%", "diff."),
    );
    for h in &r.bills {
        let _ = writeln!(
            b,
            "<tr><td>{}{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num {}\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&h.household_code),
            if h.estimated { " <span class=\"flag\">P</span>" } else { "" },
            escape(&h.apartment),
            kwh(h.total_kwh),
            opt_kwh(h.common_kwh),
            rsd(h.total),
            opt_rsd(h.old_split_total),
            diff_class(h.difference),
            h.difference.map(signed_rsd).unwrap_or_else(|| "—".into()),
            percent(h.difference_percent),
        );
    }
    b.push_str("</tbody></table>\n");
    // Problems.
    let _ = writeln!(
        b,
        "<h2>Problemi sa podacima ({})<span class=\"en\">Data-quality problems</span></h2>",
        r.problems.len()
    );
    if r.problems.is_empty() {
        b.push_str("<p class=\"ok\">Nema problema. <span class=\"en\">None.</span></p>\n");
    } else {
        b.push_str("<table class=\"lines\"><thead><tr><th>Vrsta / kind</th><th>Domaćinstvo</th><th>Opis / detail</th></tr></thead><tbody>\n");
        for p in &r.problems {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p.kind),
                escape(p.household_code.as_deref().unwrap_or("—")),
                escape(&p.detail)
            );
        }
        b.push_str("</tbody></table>\n");
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Obračun {} verzija {}, tarifa {}. 1/N: račun (glavno brojilo ÷ N) obračunat kao \
         domaćinstvu; sadrži zajedničku potrošnju i gubitke.<span class=\"en\">Run {}; 1/N = the bill of (master ÷ N), \
         common areas and losses included.</span></p>",
        escape(&meta.period),
        meta.version,
        escape(&meta.tariff_code),
        meta.run_id,
    );
    page(&format!("Zgrada {} {}", s.building_code, meta.period), &b)
}
