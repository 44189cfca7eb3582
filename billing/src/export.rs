//! Exports of a run into a folder:
//!
//! - `bills.csv` — one row per bill (no lines): run, household, kWh, common-area share, estimated share,
//!   total, the 1/N bill and the difference, and the correction of the previous month when there is one
//!   (kWh, RSD, what it corrects). Decimals are written as plain decimal text; empty = unknown / none.
//! - `bills.json` — `{"run": …, "bills": [ … every line … ]}`; decimals are JSON strings (never floats).
//! - `buildings.json` — `{"run": …, "buildings": [summary …], "problems": [ … ]}`: per building master,
//!   Σ apartments, common + losses (kWh and %), metered vs 1/N totals, min/median/max bill, how many pay
//!   more/less, the min/max household common-area share under each split key, and every data-quality
//!   problem of the run.
//! - `invoices/<household>.html` and `buildings/<code>.html` ([`write_html`]): the printable invoice and
//!   building report of [`crate::html`].

use std::path::Path;

use rust_decimal::Decimal;
use serde::Serialize;

use billing_core::run::{BuildingResult, BuildingSummary, HouseholdBill, Problem};

use crate::html;
use crate::model::{RunMeta, RunOutcome};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("{path}: {source}")]
    Json { path: String, source: serde_json::Error },
}

/// The header of `bills.csv`.
pub const CSV_HEADER: [&str; 22] = [
    "run_id",
    "version",
    "period",
    "building",
    "household",
    "apartment",
    "meter",
    "vt_kwh",
    "nt_kwh",
    "total_kwh",
    "common_kwh",
    "estimated_share",
    "estimated",
    "total_rsd",
    "old_split_rsd",
    "difference_rsd",
    "difference_percent",
    "lines",
    "tariff",
    "correction_kwh",
    "correction_rsd",
    "correction",
];

fn opt(d: Option<Decimal>) -> String {
    d.map(|x| x.to_string()).unwrap_or_default()
}

#[derive(Serialize)]
struct BillsJson<'a> {
    run: &'a RunMeta,
    bills: Vec<&'a HouseholdBill>,
}

#[derive(Serialize)]
struct BuildingsJson<'a> {
    run: &'a RunMeta,
    buildings: Vec<&'a BuildingSummary>,
    problems: Vec<&'a Problem>,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ExportError> {
    let p = || path.display().to_string();
    let text = serde_json::to_string_pretty(value).map_err(|source| ExportError::Json { path: p(), source })?;
    std::fs::write(path, text + "\n").map_err(|source| ExportError::Io { path: p(), source })
}

/// Writes `bills.csv`, `bills.json` and `buildings.json` into `dir` (created when missing).
pub fn write_exports(dir: &Path, outcome: &RunOutcome) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io { path: dir.display().to_string(), source })?;
    let meta = &outcome.meta;
    let bills: Vec<&HouseholdBill> = outcome.buildings.iter().flat_map(|b| b.bills.iter()).collect();

    let csv_path = dir.join("bills.csv");
    let cp = || csv_path.display().to_string();
    let mut w = csv::Writer::from_path(&csv_path).map_err(|source| ExportError::Csv { path: cp(), source })?;
    w.write_record(CSV_HEADER).map_err(|source| ExportError::Csv { path: cp(), source })?;
    for b in &bills {
        let correction = b.lines.iter().find(|l| l.kind == "correction");
        let record = [
            meta.run_id.to_string(),
            meta.version.to_string(),
            meta.period.clone(),
            b.building_code.clone(),
            b.household_code.clone(),
            b.apartment.clone(),
            b.meter_serial.clone(),
            b.vt_kwh.to_string(),
            b.nt_kwh.to_string(),
            b.total_kwh.to_string(),
            opt(b.common_kwh),
            b.estimated_share.to_string(),
            b.estimated.to_string(),
            b.total.to_string(),
            opt(b.old_split_total),
            opt(b.difference),
            opt(b.difference_percent),
            b.lines.len().to_string(),
            meta.tariff_code.clone(),
            opt(correction.map(|l| l.quantity)),
            opt(correction.map(|l| l.amount)),
            correction.and_then(|l| l.detail.clone()).unwrap_or_default(),
        ];
        w.write_record(&record).map_err(|source| ExportError::Csv { path: cp(), source })?;
    }
    w.flush().map_err(|source| ExportError::Io { path: cp(), source })?;

    write_json(&dir.join("bills.json"), &BillsJson { run: meta, bills })?;
    write_json(
        &dir.join("buildings.json"),
        &BuildingsJson {
            run: meta,
            buildings: outcome.buildings.iter().map(|b| &b.summary).collect(),
            problems: outcome.buildings.iter().flat_map(|b| b.problems.iter()).collect(),
        },
    )
}

/// Writes `invoices/<household>.html` per bill and `buildings/<code>.html` per building into `dir`; file
/// names are the codes with anything but `[A-Za-z0-9._-]` replaced by `_` ([`html::file_stem`]).
/// `addresses` maps building codes to their address (a missing one prints as empty).
pub fn write_html(
    dir: &Path,
    meta: &RunMeta,
    buildings: &[BuildingResult],
    addresses: &std::collections::HashMap<String, String>,
) -> Result<(), ExportError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ExportError::Io { path, source }
    };
    let (inv, bld) = (dir.join("invoices"), dir.join("buildings"));
    std::fs::create_dir_all(&inv).map_err(io(&inv))?;
    std::fs::create_dir_all(&bld).map_err(io(&bld))?;
    for b in buildings {
        let address = addresses.get(&b.summary.building_code).map(String::as_str).unwrap_or("");
        for bill in &b.bills {
            let path = inv.join(format!("{}.html", html::file_stem(&bill.household_code)));
            std::fs::write(&path, html::invoice(meta, address, bill)).map_err(io(&path))?;
        }
        let path = bld.join(format!("{}.html", html::file_stem(&b.summary.building_code)));
        std::fs::write(&path, html::building_report(meta, address, b)).map_err(io(&path))?;
    }
    Ok(())
}
