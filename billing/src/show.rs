//! `billing show`: a stored run ([`crate::db::load_run`]) printed as text, JSON or HTML.
//!
//! - `--household CODE`: that household's bill (text: every line; JSON: the bill; HTML: the invoice).
//! - `--building CODE`: that building's summary, bills and problems (HTML: the building report).
//! - neither: the whole run (HTML only when the run holds exactly one building).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use billing_core::run::{BuildingResult, HouseholdBill};

use crate::html;
use crate::model::{RunMeta, StoredRun};

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("format {0:?}: expected text, json or html")]
    Format(String),
    #[error("household {0:?} has no bill in run {1} (period {2} version {3})")]
    NoHousehold(String, i64, String, i32),
    #[error("building {0:?} is not in run {1} (period {2} version {3})")]
    NoBuilding(String, i64, String, i32),
    #[error("--format html needs --household or --building (the run holds {0} buildings)")]
    HtmlNeedsSelection(usize),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Html,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, ShowError> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(ShowError::Format(s.to_string())),
        }
    }
}

/// What to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    All,
    Household(String),
    Building(String),
}

#[derive(Serialize)]
struct BillJson<'a> {
    run: &'a RunMeta,
    bill: &'a HouseholdBill,
}

#[derive(Serialize)]
struct RunJson<'a> {
    run: &'a RunMeta,
    buildings: Vec<&'a BuildingResult>,
}

fn opt<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn header(m: &RunMeta) -> String {
    format!(
        "run {} period {} version {} tariff {} split {} created {}\n",
        m.run_id,
        m.period,
        m.version,
        m.tariff_code,
        m.split_key,
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

fn bill_text(out: &mut String, b: &HouseholdBill, with_lines: bool) {
    let _ = writeln!(
        out,
        "household {} (building {}, apartment {}, meter {}): VT {} kWh, NT {} kWh, total {} kWh, common {} kWh, \
         estimated share {}{}, total {} RSD, 1/N {} RSD, difference {} RSD ({} %)",
        b.household_code,
        b.building_code,
        b.apartment,
        b.meter_serial,
        b.vt_kwh,
        b.nt_kwh,
        b.total_kwh,
        opt(b.common_kwh),
        b.estimated_share,
        if b.estimated { " (estimated)" } else { "" },
        b.total,
        opt(b.old_split_total),
        opt(b.difference),
        opt(b.difference_percent),
    );
    if with_lines {
        for l in &b.lines {
            let _ = writeln!(
                out,
                "  {:>2} {:<16} {:<6} {:<2} {:>12} {:<8} × {:>10} = {:>12}",
                l.line_no,
                l.kind,
                l.zone.as_deref().unwrap_or(""),
                l.tou.unwrap_or(""),
                l.quantity,
                l.unit,
                l.unit_price,
                l.amount
            );
        }
    }
}

fn building_text(out: &mut String, b: &BuildingResult) {
    let s = &b.summary;
    let _ = writeln!(
        out,
        "building {}: {} households, {} bills ({} estimated); master {} kWh, apartments {} kWh, common + losses {} kWh \
         ({} %); metered {} RSD vs 1/N {} RSD; bill min {} / median {} / max {} RSD; pay more {}, less {}, same {}",
        s.building_code,
        s.households,
        s.bills,
        s.estimated_bills,
        opt(s.master_kwh),
        s.apartments_kwh,
        opt(s.common_kwh),
        opt(s.common_percent),
        s.metered_total,
        opt(s.one_over_n_total),
        opt(s.min_bill),
        opt(s.median_bill),
        opt(s.max_bill),
        s.pay_more,
        s.pay_less,
        s.pay_same,
    );
    for k in &s.split_keys {
        let _ = writeln!(out, "  common share under {}: {} .. {} kWh", k.key, k.min_kwh, k.max_kwh);
    }
    for bill in &b.bills {
        out.push_str("  ");
        bill_text(out, bill, false);
    }
    for p in &b.problems {
        let _ = writeln!(
            out,
            "  problem {} household {}: {}",
            p.kind,
            p.household_code.as_deref().unwrap_or("-"),
            p.detail
        );
    }
}

/// Renders `run` (or the selected part); `addresses` maps building codes to addresses (for HTML).
pub fn render(
    run: &StoredRun,
    addresses: &HashMap<String, String>,
    select: &Select,
    format: Format,
) -> Result<String, ShowError> {
    let m = &run.meta;
    let address = |code: &str| addresses.get(code).map(String::as_str).unwrap_or("");
    match select {
        Select::Household(code) => {
            let bill = run
                .buildings
                .iter()
                .flat_map(|b| b.bills.iter())
                .find(|b| &b.household_code == code)
                .ok_or_else(|| ShowError::NoHousehold(code.clone(), m.run_id, m.period.clone(), m.version))?;
            Ok(match format {
                Format::Text => {
                    let mut out = header(m);
                    bill_text(&mut out, bill, true);
                    out
                }
                Format::Json => serde_json::to_string_pretty(&BillJson { run: m, bill })? + "\n",
                Format::Html => html::invoice(m, address(&bill.building_code), bill),
            })
        }
        Select::Building(_) | Select::All => {
            let buildings: Vec<&BuildingResult> = match select {
                Select::Building(code) => {
                    let b =
                        run.buildings.iter().find(|b| &b.summary.building_code == code).ok_or_else(|| {
                            ShowError::NoBuilding(code.clone(), m.run_id, m.period.clone(), m.version)
                        })?;
                    vec![b]
                }
                _ => run.buildings.iter().collect(),
            };
            Ok(match format {
                Format::Text => {
                    let mut out = header(m);
                    for b in &buildings {
                        building_text(&mut out, b);
                    }
                    out
                }
                Format::Json => serde_json::to_string_pretty(&RunJson { run: m, buildings })? + "\n",
                Format::Html => match buildings.as_slice() {
                    [b] => html::building_report(m, address(&b.summary.building_code), b),
                    bs => return Err(ShowError::HtmlNeedsSelection(bs.len())),
                },
            })
        }
    }
}
