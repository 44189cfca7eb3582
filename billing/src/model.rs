//! The edge's shared types of a stored run: what to bill ([`RunOptions`]), the stored run's identity
//! ([`RunMeta`]), a run's results and timings ([`RunOutcome`], [`StoredRun`]) and why the database side of a run
//! failed ([`StoreError`]). Used by `db`, `checks`, `pipeline`, `export`, `html` and `show`; it imports none
//! of them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use billing_core::run::{BillingMonth, BuildingResult, Rules, RunError};

/// What to bill.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub month: BillingMonth,
    pub building: Option<String>,
    pub rules: Rules,
}

/// The stored run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMeta {
    pub run_id: i64,
    pub version: i32,
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub building: Option<String>,
    pub tariff_code: String,
    pub split_key: &'static str,
    pub created_at: DateTime<Utc>,
}

/// A stored run and its results.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub meta: RunMeta,
    pub buildings: Vec<BuildingResult>,
    pub timings: RunTimings,
}

/// Where a run spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTimings {
    /// Inventory and boundary readings.
    pub load: std::time::Duration,
    /// Of which the inventory.
    pub inventory: std::time::Duration,
    /// Bills, reconciliation, allocation, 1/N.
    pub compute: std::time::Duration,
    /// Corrections of the previous period and the per-hour reconciliation (`checks`).
    pub checks: std::time::Duration,
    /// The run, bills, lines and problems, stored (COPY).
    pub store: std::time::Duration,
    /// The exports, written while the run was being stored (`None` without `--out`).
    pub export: Option<std::time::Duration>,
    /// Everything, committed.
    pub total: std::time::Duration,
}

/// A stored run read back from the database (`db::load_run`).
#[derive(Debug, Clone, Serialize)]
pub struct StoredRun {
    pub meta: RunMeta,
    pub buildings: Vec<BuildingResult>,
}

/// Why a run could not be read, computed, stored or exported.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("no building with code {0:?}")]
    UnknownBuilding(String),
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("no stored billing run for period {period}{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NoRun { period: String, version: Option<i32> },
    #[error("stored run: {0}")]
    Stored(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("export: {0}")]
    Export(String),
}
