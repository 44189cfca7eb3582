//! `billing run` benchmark (not a timed test): a month of bills for N households (default 205,000) on a real
//! PostgreSQL, in a fresh database of the test harness (`DATABASE_URL` or 127.0.0.1:5432).
//!
//! Data, generated server-side with `generate_series` (no round trips): N / 20 buildings × 20 flats + one
//! master meter each; October 2026 (a month with the end of summer time); every register (1.0.1.8.0/1/2) of
//! every meter read at each local midnight from 2026-09-30 to 2026-11-01 (33 readings per register, ≈ 21 M
//! rows) — billing reads only the boundaries and, for VEE, the readings around a missing one and like days,
//! so rows in between only matter for the size of the index it probes. 10 % of the household meters lack their
//! end reading but have one 1 h before and 1 h after it (interpolation), 1 % have nothing after the last local
//! midnight before the end (like-day estimate from the previous weeks).
//!
//! Timed in the same process, the same code path as `billing run` (`billing::db::run`, then the exports):
//! runs without exports and one with `--out` exports (CSV, JSON, HTML); medians and the ratio to the 30 s
//! target of PERFORMANCE.md are printed with the command that reproduces them.
//!
//! With `--checks` (meant for ≤ 20,000 households: it writes an hour of rollup per meter for the month), two
//! more timed runs: October again with `readings_hourly` (1.0.1.8.0) filled for every meter and hour (one
//! hour over the master in every 50th building), i.e. the per-hour reconciliation over real rollup rows; then
//! November after the "actual" end-of-October readings arrived (500 Wh above the estimates), i.e. the
//! corrections of every estimated October bill.
//!
//! Run: `cargo bench -p billing --bench run_205k -- [--households N] [--runs R] [--no-export] [--checks]`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Context;
use billing::model::RunOptions;
use billing::pipeline::run;
use billing::run::{BillingMonth, Rules};
use billing::{Tariff, TariffSet};
use tests::pg::{admin_url, TestDatabase};

const TARGET: Duration = Duration::from_secs(30);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(xs: &mut [Duration]) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    bench().await.map_err(|e| {
        let db = e.chain().find_map(|c| c.downcast_ref::<tokio_postgres::Error>().and_then(|p| p.as_db_error()));
        match db {
            Some(db) => anyhow::anyhow!("{e}: {db}"),
            None => e,
        }
    })
}

async fn bench() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse from it.
    let households: i32 = arg("--households").map_or(Ok(205_000), |s| s.parse()).context("--households")?;
    let runs: usize = arg("--runs").map_or(Ok(3), |s| s.parse()).context("--runs")?;
    let export = !std::env::args().any(|a| a == "--no-export");
    let flats = 20;
    let buildings = (households + flats - 1) / flats;
    let mut command = format!("cargo bench -p billing --bench run_205k -- --households {households} --runs {runs}");
    for flag in ["--no-export", "--checks"] {
        if std::env::args().any(|a| a == flag) {
            command = format!("{command} {flag}");
        }
    }
    println!("# {command}");

    let db = TestDatabase::create(&admin_url(), "billing_bench").await?;
    let mut client = db.client().await?;
    headend::db::migrate(&mut client, headend::db::TimescaleMode::Off).await?;
    let month = BillingMonth::parse("2026-10")?;

    let t0 = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO buildings (code, address, municipality, region)
             SELECT 'B' || b, 'Ulica ' || b, 'Opština', (ARRAY['belgrade', 'novi_sad', 'central'])[1 + b % 3]
             FROM generate_series(1, {buildings}) b;
             INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
             SELECT 'H' || h, 1 + (h - 1) / {flats}, ((h - 1) % {flats} + 1)::text, 30 + h % 70, 1 + h % 5,
                    (ARRAY[5.75, 6.9, 11.04])[1 + h % 3], 'eps-household-2025'
             FROM generate_series(1, {households}) h;
             INSERT INTO meters (serial, kind, protocol, building_id, household_id, installed_on)
             SELECT 'S' || id, 'household', 'mqtt', building_id, id, '2026-01-01' FROM households ORDER BY id;
             INSERT INTO meters (serial, kind, protocol, building_id, installed_on)
             SELECT 'M' || id, 'master', 'mqtt', id, '2026-01-01' FROM buildings ORDER BY id;
             -- Wh per day per register: households 3–12 kWh VT, 1–4 kWh NT; masters Σ flats + common areas.
             CREATE UNLOGGED TABLE bench_rates AS
             SELECT m.id AS meter_id, 3000 + (m.id * 37) % 9000 AS vt, 1000 + (m.id * 53) % 3000 AS nt
             FROM meters m WHERE m.kind = 'household';
             INSERT INTO bench_rates
             SELECT m.id, sum(r.vt) + 4000, sum(r.nt) + 1500
             FROM meters m JOIN meters hm ON hm.building_id = m.building_id AND hm.kind = 'household'
             JOIN bench_rates r ON r.meter_id = hm.id
             WHERE m.kind = 'master' GROUP BY m.id;
             SELECT headend_ensure_partition(d::date) FROM generate_series('2026-09-28'::date, '2026-11-02', '1 day') d;"
        ))
        .await
        .map_err(|e| anyhow::anyhow!("inventory: {e} {:?}", e.as_db_error()))?;
    // One statement per day: local midnight of that day, registers = 1,000,000 + day × rate.
    let mut rows: i64 = 0;
    for day in 0..=32i32 {
        let n = client
            .execute(
                "INSERT INTO readings (ts, value, meter_id, channel_id)
                 SELECT ('2026-09-30'::date + $1::int)::timestamp AT TIME ZONE 'Europe/Belgrade',
                        CASE c WHEN 1 THEN 1000000 + $1::int * (r.vt + r.nt) WHEN 2 THEN 1000000 + $1::int * r.vt
                               ELSE 1000000 + $1::int * r.nt END,
                        r.meter_id, c::int2
                 FROM bench_rates r CROSS JOIN generate_series(1, 3) c
                 -- 11 % of household meters lack the end reading (day 32 = 2026-11-01 local midnight).
                 WHERE NOT ($1::int = 32 AND r.meter_id <= $2 AND (r.meter_id % 10 = 3 OR r.meter_id % 100 = 7))",
                &[&day, &households],
            )
            .await?;
        rows += i64::try_from(n)?;
    }
    // Interpolation case: readings 1 h before and after the end; the like-day case has none near it.
    let n = client
        .execute(
            "INSERT INTO readings (ts, value, meter_id, channel_id)
             SELECT $1::timestamptz + s * interval '1 hour',
                    1000000 + 32 * CASE c WHEN 1 THEN r.vt + r.nt WHEN 2 THEN r.vt ELSE r.nt END
                      + s * (CASE c WHEN 1 THEN r.vt + r.nt WHEN 2 THEN r.vt ELSE r.nt END) / 24,
                    r.meter_id, c::int2
             FROM bench_rates r CROSS JOIN generate_series(1, 3) c CROSS JOIN (VALUES (-1), (1)) AS x(s)
             WHERE r.meter_id <= $2 AND r.meter_id % 10 = 3",
            &[&month.end, &households],
        )
        .await?;
    rows += i64::try_from(n)?;
    client.batch_execute("VACUUM ANALYZE readings").await?;
    client.batch_execute("ANALYZE").await?;
    let load = t0.elapsed();
    println!(
        "data: {buildings} buildings, {households} households, {} meters, {rows} readings loaded in {:.1} s ({:.0} rows/s)",
        households + buildings,
        load.as_secs_f64(),
        rows as f64 / load.as_secs_f64()
    );

    let tariffs = TariffSet::single(Tariff::eps_household_2025()?);
    let opts = RunOptions { month, building: None, rules: Rules::default() };
    let mut without = Vec::new();
    let mut phases = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let out = run(&mut client, &opts, &tariffs).await?;
        let d = t.elapsed();
        let bills: usize = out.buildings.iter().map(|b| b.bills.len()).sum();
        let est: usize = out.buildings.iter().map(|b| b.summary.estimated_bills).sum();
        let problems: usize = out.buildings.iter().map(|b| b.problems.len()).sum();
        println!(
            "run {} (version {}): {bills} bills ({est} estimated), {problems} problems, {:.2} s \
             (read {:.2} s of which inventory {:.2} s, compute {:.2} s, checks {:.2} s, store {:.2} s)",
            i + 1,
            out.meta.version,
            d.as_secs_f64(),
            out.timings.load.as_secs_f64(),
            out.timings.inventory.as_secs_f64(),
            out.timings.compute.as_secs_f64(),
            out.timings.checks.as_secs_f64(),
            out.timings.store.as_secs_f64()
        );
        without.push(d);
        phases.push(out.timings);
    }
    let m = median(&mut without);
    println!(
        "median of {runs} runs without exports: {:.2} s = {:.2} × the 30 s target",
        m.as_secs_f64(),
        m.as_secs_f64() / TARGET.as_secs_f64()
    );
    if export {
        let dir = tempfile::tempdir()?;
        let mut with = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let out = billing::pipeline::run_with_exports(&mut client, &opts, &tariffs, Some(dir.path())).await?;
            let d = t.elapsed();
            println!(
                "with exports (version {}): {:.2} s (read {:.2} s, compute {:.2} s, store {:.2} s while the exports \
                 took {:.2} s: CSV, JSON, {} HTML invoices, {} building reports)",
                out.meta.version,
                d.as_secs_f64(),
                out.timings.load.as_secs_f64(),
                out.timings.compute.as_secs_f64(),
                out.timings.store.as_secs_f64(),
                out.timings.export.unwrap_or_default().as_secs_f64(),
                out.buildings.iter().map(|b| b.bills.len()).sum::<usize>(),
                out.buildings.len()
            );
            with.push(d);
        }
        let w = median(&mut with);
        println!(
            "median of {runs} runs with exports: {:.2} s = {:.2} × the 30 s target; without exports {:.2} s \
             (exports add {:.2} s)",
            w.as_secs_f64(),
            w.as_secs_f64() / TARGET.as_secs_f64(),
            m.as_secs_f64(),
            w.as_secs_f64() - m.as_secs_f64()
        );
    }
    if std::env::args().any(|a| a == "--checks") {
        checks(&mut client, &opts, &tariffs, households).await?;
    }
    client.batch_execute("DROP TABLE bench_rates").await?;
    println!("# reproduce: {command}");
    drop(client);
    drop(db);
    Ok(())
}

/// `--checks`: the per-hour reconciliation over a filled rollup, then the corrections on the next month.
async fn checks(
    client: &mut tokio_postgres::Client,
    opts: &RunOptions,
    tariffs: &TariffSet,
    households: i32,
) -> anyhow::Result<()> {
    let month = opts.month;
    let checked = RunOptions { rules: Rules { interval_check: true, ..opts.rules }, ..opts.clone() };
    let opts = &checked;
    let t = Instant::now();
    // Hour k of the month: register = 1,000,000 + daily rate × (1 + k / 24), integer Wh; in every 50th building
    // the master's register at hour 100 is 5 kWh low, so hour 99 has the flats above the master.
    let n = client
        .execute(
            "INSERT INTO readings_hourly (hour, first_ts, last_ts, min_value, max_value, first_value, last_value,
                                          sum_value, meter_id, samples, channel_id)
             SELECT h, h, h, v, v, v, v, v, meter_id, 1, 1::int2
             FROM (SELECT $1::timestamptz + k * interval '1 hour' AS h, r.meter_id,
                          1000000 + (r.vt + r.nt) + (r.vt + r.nt) * k / 24
                            - CASE WHEN m.kind = 'master' AND m.building_id % 50 = 1 AND k = 100 THEN 5000 ELSE 0 END
                            AS v
                   FROM bench_rates r JOIN meters m ON m.id = r.meter_id
                   CROSS JOIN generate_series(0, (extract(epoch FROM $2::timestamptz - $1::timestamptz) / 3600)::int) k) x",
            &[&month.start, &month.end],
        )
        .await?;
    client.batch_execute("ANALYZE readings_hourly").await?;
    println!("checks: {n} hourly rollup rows (1.0.1.8.0) written in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let out = run(client, opts, tariffs).await?;
    let neg: usize = out.buildings.iter().map(|b| b.summary.negative_common_intervals).sum();
    let hours: usize = out.buildings.iter().filter_map(|b| b.summary.interval_hours_checked).sum();
    println!(
        "October with the hourly rollup (version {}): {:.2} s (read {:.2} s, compute {:.2} s, checks {:.2} s: \
         {hours} building-hours checked, {neg} negative_common_interval, store {:.2} s)",
        out.meta.version,
        t.elapsed().as_secs_f64(),
        out.timings.load.as_secs_f64(),
        out.timings.compute.as_secs_f64(),
        out.timings.checks.as_secs_f64(),
        out.timings.store.as_secs_f64()
    );

    // The missing end-of-October readings arrive (500 Wh above the linear profile), and December 1st's.
    let nov = BillingMonth::parse("2026-11")?;
    client
        .batch_execute(
            "SELECT headend_ensure_partition(d::date) FROM generate_series('2026-11-29'::date, '2026-12-02', '1 day') d",
        )
        .await?;
    for (day, extra) in [(32i32, 500i64), (62, 0)] {
        client
            .execute(
                "INSERT INTO readings (ts, value, meter_id, channel_id)
                 SELECT ('2026-09-30'::date + $1::int)::timestamp AT TIME ZONE 'Europe/Belgrade',
                        CASE c WHEN 1 THEN 1000000 + $1::int * (r.vt + r.nt) + $3::int8 WHEN 2 THEN 1000000 + $1::int * r.vt + $3::int8
                               ELSE 1000000 + $1::int * r.nt END,
                        r.meter_id, c::int2
                 FROM bench_rates r CROSS JOIN generate_series(1, 3) c
                 WHERE $1::int = 62 OR (r.meter_id <= $2 AND (r.meter_id % 10 = 3 OR r.meter_id % 100 = 7))",
                &[&day, &households, &extra],
            )
            .await?;
    }
    client.batch_execute("ANALYZE readings").await?;
    let t = Instant::now();
    let out = run(client, &RunOptions { month: nov, ..opts.clone() }, tariffs).await?;
    let corrections = out.buildings.iter().flat_map(|b| &b.problems).filter(|p| p.kind == "correction").count();
    let other = out.buildings.iter().flat_map(|b| &b.problems).filter(|p| p.kind.starts_with("correction_")).count();
    println!(
        "November with corrections (version {}): {:.2} s (read {:.2} s, compute {:.2} s, checks {:.2} s: \
         {corrections} corrections, {other} not applied, store {:.2} s)",
        out.meta.version,
        t.elapsed().as_secs_f64(),
        out.timings.load.as_secs_f64(),
        out.timings.compute.as_secs_f64(),
        out.timings.checks.as_secs_f64(),
        out.timings.store.as_secs_f64()
    );
    Ok(())
}
