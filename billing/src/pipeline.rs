//! A whole run, orchestrated: read the inventory and the boundary readings ([`crate::db`]), compute every building
//! ([`billing_core::run::compute_building`]), add the corrections and the per-hour reconciliation
//! ([`crate::checks`]), then store the run ([`crate::db`]) and — with `--out` — write the exports
//! ([`crate::export`]) at the same time, in one transaction.

use std::collections::HashMap;

use billing_core::run::{compute_building, BuildingResult};
use billing_core::tariff::TariffSet;
use tokio_postgres::Client;

use crate::model::{RunOptions, RunOutcome, RunTimings, StoreError};
use crate::{checks, db, export};

/// A whole run: read, compute every building, store. The caller writes the exports.
pub async fn run(client: &mut Client, opts: &RunOptions, tariffs: &TariffSet) -> Result<RunOutcome, StoreError> {
    run_with_exports(client, opts, tariffs, None).await
}

/// A whole run: read, compute every building, then store it and — with `out` — write the exports
/// ([`export::write_exports`], [`export::write_html`]) **at the same time** on a blocking
/// thread (the database works on its own core). The run is committed only when the exports were written too.
pub async fn run_with_exports(
    client: &mut Client,
    opts: &RunOptions,
    tariffs: &TariffSet,
    out: Option<&std::path::Path>,
) -> Result<RunOutcome, StoreError> {
    let t0 = std::time::Instant::now();
    let buildings = db::load_inventory(client, &opts.month, opts.building.as_deref()).await?;
    let t_inv = t0.elapsed();
    let reads = db::load_reads(client, &opts.month, &buildings, &opts.rules.vee).await?;
    let t1 = std::time::Instant::now();
    let mut results: Vec<BuildingResult> =
        buildings.iter().map(|b| compute_building(b, &reads, &opts.month, tariffs, &opts.rules)).collect();
    drop(reads);
    let t_computed = std::time::Instant::now();
    checks::apply_corrections(client, opts, tariffs, &buildings, &mut results).await?;
    checks::interval_reconciliation(client, &opts.month, &buildings, &opts.rules, &mut results).await?;
    drop(buildings);
    let t2 = std::time::Instant::now();
    let codes: Vec<&str> = tariffs.tariffs().iter().map(|t| t.code.as_str()).collect();
    let tx = client.transaction().await?;
    let meta = db::begin_run(&tx, opts, &codes.join("+")).await?;
    let addresses = match out {
        Some(_) => {
            let codes: Vec<&str> = results.iter().map(|b| b.summary.building_code.as_str()).collect();
            db::load_addresses(&tx, &codes).await?
        }
        None => HashMap::new(),
    };
    let outcome = std::sync::Arc::new(RunOutcome {
        meta,
        buildings: results,
        timings: RunTimings {
            load: t1 - t0,
            inventory: t_inv,
            compute: t_computed - t1,
            checks: t2 - t_computed,
            ..RunTimings::default()
        },
    });
    let exporting = out.map(|dir| {
        let (o, dir) = (outcome.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            export::write_exports(&dir, &o)?;
            export::write_html(&dir, &o.meta, &o.buildings, &addresses)?;
            Ok::<_, export::ExportError>(t.elapsed())
        })
    });
    let stored = db::store_rows(&tx, &outcome.meta, &outcome.buildings).await;
    let store = t2.elapsed();
    let exported = match exporting {
        Some(h) => Some(
            h.await.map_err(|e| StoreError::Export(e.to_string()))?.map_err(|e| StoreError::Export(e.to_string()))?,
        ),
        None => None,
    };
    stored?;
    tx.commit().await?;
    let mut outcome =
        std::sync::Arc::try_unwrap(outcome).map_err(|_| StoreError::Stored("the run is still shared".into()))?;
    outcome.timings.store = store;
    outcome.timings.export = exported;
    outcome.timings.total = t0.elapsed();
    Ok(outcome)
}
