//! Per-household electricity bills from interval data (issue 4): the edge — the database, the exports, the
//! printable HTML and the `billing` binary — around the pure core [`billing_core`], which this crate
//! re-exports whole (`billing::tariff`, `billing::compute_bill`, `billing::run`, … are the core's; its crate
//! docs state the rounding rule and the inferred rules).
//!
//! | module | what |
//! |---|---|
//! | [`model`] | the shared types of a stored run: [`model::RunOptions`], [`model::RunMeta`], [`model::RunOutcome`], [`model::StoredRun`], [`model::StoreError`] |
//! | [`db`] | reading the head-end's schema (inventory, boundary readings), storing runs/bills/lines/problems by COPY (migration 0004), versions, reading a stored run back |
//! | [`checks`] | the steps that need the database beyond the boundary readings: corrections of the previous month, the per-hour reconciliation |
//! | [`pipeline`] | a whole run: read, compute, checks, store, and the exports written while storing |
//! | [`export`] | `bills.csv`, `bills.json`, `buildings.json`, `invoices/<household>.html`, `buildings/<code>.html` |
//! | [`html`] | the printable invoice and building report (hand-written, escaped HTML; inline CSS and SVG) |
//! | [`show`] | `billing show`: a stored run as text, JSON or HTML |
//!
//! Imports go one way: `pipeline` → `checks` → `db` → `model`, `pipeline` → `export` → `html` → `model`,
//! `show` → `html`; every module uses the core.
//!
//! `billing run --period YYYY-MM [--building CODE] [--out DIR] [--split equal|area|residents] [--tariff FILE]`
//! (`--database-url` or `DATABASE_URL`) bills every household for the month; see [`run`] for the rules (two
//! readings per register and meter: no raw-interval scan, hence no ingest-time rollup needed for billing).
//! `billing show --period YYYY-MM [--version N] [--household CODE | --building CODE] [--format text|json|html]`
//! prints a stored run ([`show`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod checks;
pub mod db;
pub mod export;
pub mod html;
pub mod model;
pub mod pipeline;
pub mod show;

pub use billing_core::*;
