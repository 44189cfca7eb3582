//! Storage benchmark (not a timed test): bytes per reading on the same data, plain PostgreSQL
//! against TimescaleDB compressed.
//!
//! The data: N meters × D days of 15-minute readings of four channels (1.8.0, 1.8.1, 1.8.2 in Wh,
//! cumulative registers; 32.7.0 in 0.1 V) from the simulator's model (`meter_sim::expect`, seed 42),
//! generated a day at a time and written in interval order — the order in which the fleet reports —
//! the way the head-end's writer stores them: binary COPY into a session-local staging table, then
//! `INSERT INTO readings … SELECT … ON CONFLICT DO NOTHING`, in batches of ≈ 48,000 rows.
//!
//! - plain: a database migrated with `database.timescale = off` on the shared server (daily
//!   partitions, primary key `(meter_id, channel_id, ts)`); size = `pg_total_relation_size` of
//!   every partition (heap, TOAST, indexes) after `VACUUM ANALYZE`;
//! - TimescaleDB: a database migrated with `database.timescale = on` on the test command's
//!   TimescaleDB cluster (1-day chunks); size before and after `compress_chunk` of every chunk
//!   (`hypertable_size`, `chunk_compression_stats`);
//! - the raw data: 24 bytes a row (ts 8, value 8, meter 4, channel 2, flags 2).
//!
//! Run: `cargo xtask bench-storage` (release `headend` for `migrate`; PostgreSQL from
//! `DATABASE_URL`, TimescaleDB from `TIMESCALE_DATABASE_URL` or the test command's cluster). Options
//! after `--`: `--meters N` (default 2000), `--days D` (30), `--seed S` (42).

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use futures::pin_mut;
use meter_sim::channels::Channel;
use meter_sim::expect::expected_payloads;
use meter_sim::{Model, Span};
use schemas::migrations::Storage;
use schemas::payload::Number;
use tests::pg::TestDatabase;
use tests::procs;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const RAW_BYTES: f64 = 24.0;
const CHANNELS: [&str; 4] = ["1.0.1.8.0", "1.0.1.8.1", "1.0.1.8.2", "1.0.32.7.0"];
/// Intervals per batch: 6 × 2,000 meters × 4 channels = 48,000 rows (the writer's default is 50,000).
const INTERVALS_PER_BATCH: usize = 6;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
        Some(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}: cannot parse {v}")),
        None => Ok(default),
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

type Row = (DateTime<Utc>, i64, i32, i16);

/// One UTC day of the fleet's readings, in interval order (then meter, channel).
fn day_rows(model: &Model, meters: usize, from: DateTime<Utc>, chans: &[Channel]) -> anyhow::Result<Vec<Row>> {
    let span = Span { from, to: from + Duration::days(1) };
    let mut rows = Vec::with_capacity(meters * 96 * chans.len());
    for index in 0..meters {
        let serial = meter_sim::serial(index);
        let meter_id = i32::try_from(index + 1)?;
        for p in expected_payloads(model, &serial, span, chans)? {
            for (obis, n) in &p.values {
                let def = schemas::channel::by_obis(obis).with_context(|| format!("{obis} not in the catalogue"))?;
                let stored = match *n {
                    Number::Int(v) if def.scaler == 0 => v,
                    _ => def.to_stored(n.as_f64()).with_context(|| format!("{obis} value {n:?}"))?,
                };
                rows.push((p.ts, stored, meter_id, def.id));
            }
        }
    }
    rows.sort_unstable_by_key(|r| (r.0, r.2, r.3));
    Ok(rows)
}

/// Stores rows the way the writer does: COPY into staging, INSERT … ON CONFLICT DO NOTHING.
async fn store(c: &mut tokio_postgres::Client, rows: &[Row]) -> anyhow::Result<u64> {
    let tx = c.transaction().await?;
    tx.batch_execute("TRUNCATE readings_staging").await?;
    let sink = tx.copy_in("COPY readings_staging (ts, value, meter_id, channel_id, flags) FROM STDIN BINARY").await?;
    let w = BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::INT8, Type::INT4, Type::INT2, Type::INT2]);
    pin_mut!(w);
    for r in rows {
        w.as_mut().write(&[&r.0, &r.1, &r.2, &r.3, &0i16]).await?;
    }
    w.finish().await?;
    let n = tx
        .execute(
            "INSERT INTO readings (ts, value, meter_id, channel_id, flags)
             SELECT ts, value, meter_id, channel_id, flags FROM readings_staging ORDER BY ts, meter_id, channel_id
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

struct Loaded {
    db: TestDatabase,
    rows: u64,
    secs: f64,
}

/// A fresh database on `admin` migrated for `storage`, holding the whole data set.
async fn load(
    admin: &str,
    storage: Storage,
    meters: usize,
    days: i64,
    seed: u64,
    start: DateTime<Utc>,
) -> anyhow::Result<Loaded> {
    let db = TestDatabase::create(admin, &format!("bench_storage_{}", storage.as_str())).await?;
    let timescale = if storage == Storage::Timescale { "on" } else { "off" };
    let report = procs::run_bin(
        "headend",
        &["migrate"],
        &[("DATABASE_URL", &db.url), ("HEADEND_DATABASE__TIMESCALE", timescale)],
    )?;
    let report: serde_json::Value = serde_json::from_str(report.trim()).context("migrate report")?;
    anyhow::ensure!(report["storage"] == storage.as_str(), "migrated for {}", report["storage"]);
    let mut c = connect(&db.url).await?;
    c.batch_execute(
        "SET TIME ZONE 'UTC';
         CREATE TEMP TABLE readings_staging (ts timestamptz, value bigint, meter_id integer, channel_id smallint, flags smallint)",
    )
    .await?;
    if storage == Storage::Plain {
        for d in 0..=days {
            let day = (start + Duration::days(d)).date_naive();
            c.execute("SELECT headend_ensure_partition($1)", &[&day]).await?;
        }
    }
    let model = Model::with_meters(seed, meters);
    let chans: Vec<Channel> = CHANNELS
        .iter()
        .map(|o| Channel::from_obis(&o.parse::<schemas::ObisCode>()?).context("channel not simulated"))
        .collect::<anyhow::Result<_>>()?;
    let began = Instant::now();
    let mut stored = 0u64;
    let mut store_secs = 0.0;
    for d in 0..days {
        // Interval ends in (day, day + 1 day]: the last one is midnight, in the next day's partition.
        let rows = day_rows(&model, meters, start + Duration::days(d), &chans)?;
        let batch = meters * chans.len() * INTERVALS_PER_BATCH;
        let t = Instant::now();
        for chunk in rows.chunks(batch) {
            stored += store(&mut c, chunk).await?;
        }
        store_secs += t.elapsed().as_secs_f64();
        eprintln!("bench: {} day {} of {days}: {stored} readings stored", storage.as_str(), d + 1);
    }
    eprintln!(
        "bench: {} loaded in {:.0} s ({:.0} s storing, {:.0} rows/s)",
        storage.as_str(),
        began.elapsed().as_secs_f64(),
        store_secs,
        stored as f64 / store_secs
    );
    c.batch_execute("VACUUM ANALYZE readings").await?;
    Ok(Loaded { db, rows: stored, secs: store_secs })
}

fn main() -> anyhow::Result<()> {
    let meters: usize = arg("--meters", 2000)?;
    let days: i64 = arg("--days", 30)?;
    let seed: u64 = arg("--seed", 42)?;
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if std::env::var_os("TIMESCALE_DATABASE_URL").is_none() {
        tests::timescale::ensure_cluster()?;
    }
    let expected = (meters as u64) * (days as u64) * 96 * CHANNELS.len() as u64;
    eprintln!(
        "bench: {meters} meters × {days} days × 96 intervals × {} channels = {expected} readings",
        CHANNELS.len()
    );

    rt.block_on(async {
        let plain = load(&tests::pg::admin_url(), Storage::Plain, meters, days, seed, start).await?;
        anyhow::ensure!(plain.rows == expected, "plain: {} of {expected} rows stored", plain.rows);
        let c = connect(&plain.db.url).await?;
        let r = c
            .query_one(
                "SELECT sum(pg_total_relation_size(i.inhrelid))::bigint, sum(pg_relation_size(i.inhrelid))::bigint,
                        sum(pg_indexes_size(i.inhrelid))::bigint
                 FROM pg_inherits i WHERE i.inhparent = 'readings'::regclass",
                &[],
            )
            .await?;
        let (plain_total, plain_heap, plain_idx): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let plain_rows: i64 = c.query_one("SELECT count(*) FROM readings", &[]).await?.get(0);
        drop(c);
        let plain_secs = plain.secs;
        drop(plain);

        let ts = load(&tests::timescale::admin_url(), Storage::Timescale, meters, days, seed, start).await?;
        anyhow::ensure!(ts.rows == expected, "timescale: {} of {expected} rows stored", ts.rows);
        let c = connect(&ts.db.url).await?;
        let uncompressed: i64 = c.query_one("SELECT hypertable_size('readings')", &[]).await?.get(0);
        let chunks: i64 = c.query_one("SELECT count(*) FROM show_chunks('readings')", &[]).await?.get(0);
        let t = Instant::now();
        c.batch_execute("SELECT count(compress_chunk(ch)) FROM show_chunks('readings') ch").await?;
        let compress_secs = t.elapsed().as_secs_f64();
        c.batch_execute("VACUUM ANALYZE readings").await?;
        let compressed: i64 = c.query_one("SELECT hypertable_size('readings')", &[]).await?.get(0);
        let r = c
            .query_one(
                "SELECT sum(before_compression_total_bytes)::bigint, sum(after_compression_total_bytes)::bigint,
                        count(*) FILTER (WHERE compression_status = 'Compressed')
                 FROM chunk_compression_stats('readings')",
                &[],
            )
            .await?;
        let (before, after, n_compressed): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let ts_rows: i64 = c.query_one("SELECT count(*) FROM readings", &[]).await?.get(0);
        anyhow::ensure!(ts_rows == plain_rows, "timescale {ts_rows} rows, plain {plain_rows}");
        let version: String =
            c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[]).await?.get(0);
        drop(c);
        let ts_secs = ts.secs;
        drop(ts);

        let per = |bytes: i64| bytes as f64 / plain_rows as f64;
        println!(
            "{}",
            serde_json::json!({
                "readings": plain_rows,
                "meters": meters, "days": days, "channels": CHANNELS,
                "raw_bytes_per_reading": RAW_BYTES,
                "plain": {
                    "total_bytes": plain_total, "heap_bytes": plain_heap, "index_bytes": plain_idx,
                    "bytes_per_reading": per(plain_total), "heap_per_reading": per(plain_heap),
                    "index_per_reading": per(plain_idx), "ratio_to_raw": per(plain_total) / RAW_BYTES,
                    "store_rows_per_s": plain_rows as f64 / plain_secs,
                },
                "timescale": {
                    "version": version, "chunks": chunks, "compressed_chunks": n_compressed,
                    "uncompressed_bytes": uncompressed, "uncompressed_per_reading": per(uncompressed),
                    "compressed_bytes": compressed, "bytes_per_reading": per(compressed),
                    "ratio_to_raw": per(compressed) / RAW_BYTES,
                    "chunk_stats_before": before, "chunk_stats_after": after,
                    "chunk_stats_after_per_reading": per(after),
                    "compress_seconds": compress_secs,
                    "store_rows_per_s": ts_rows as f64 / ts_secs,
                },
                "plain_over_compressed": plain_total as f64 / compressed as f64,
                "goal_bytes_per_reading": 8,
            })
        );
        anyhow::Ok(())
    })
}
