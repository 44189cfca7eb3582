//! Simulator → broker → head-end → PostgreSQL → `billing run`, for one simulated building and the
//! month of October 2026 (the autumn DST change included): every stored bill equals the bill
//! computed from the simulator's own registers, and the common-area shares close exactly on
//! master − Σ flats.

use std::time::Duration;

use billing::{compute_bill, BillInput, Period, Tariff, TariffSet};
use meter_sim::Fleet;
use rust_decimal::Decimal;

use crate::pipeline::{ts, Pipeline};
use schemas::migrations::Storage;
use tests::procs;

/// The local (Europe/Belgrade) month of October 2026 in UTC interval ends.
const FROM: &str = "2026-09-30T22:00:00Z";
const TO: &str = "2026-10-31T23:00:00Z";
/// The simulator publishes interval ends in (from, to]: start one interval earlier so the register
/// at the period's first instant is stored too.
const PUBLISH_FROM: &str = "2026-09-30T21:45:00Z";

fn kwh(wh: i64) -> Decimal {
    Decimal::new(wh, 3)
}

#[test]
fn a_month_of_one_building_is_billed_from_its_own_readings() {
    a_month_of_one_building(Storage::Plain);
}

/// The same on TimescaleDB, with every chunk of the month compressed before the run (as the
/// compression policy leaves a billed month): billing reads its boundary registers from
/// compressed chunks.
#[test]
fn timescale_a_month_of_one_building_is_billed_from_its_compressed_readings() {
    a_month_of_one_building(Storage::Timescale);
}

fn a_month_of_one_building(storage: Storage) {
    let seed = 21;
    let fleet = Fleet::new(seed);
    let meters = fleet.building_start(1); // exactly the first building: its master and every flat
    let building = fleet.building(0);
    let mut p = Pipeline::on(storage, "billing", meters, seed).expect("pipeline");
    let headend = p.start_headend().expect("head-end");
    let summary = p.publish(PUBLISH_FROM, TO, &[]).expect("simulator");
    let expected = summary["readings"].as_i64().expect("readings");
    p.wait_for_readings(expected, Duration::from_secs(600)).expect("the month is stored");
    drop(headend);
    if storage == Storage::Timescale {
        let chunks =
            p.query_i64("SELECT count(compress_chunk(c))::bigint FROM show_chunks('readings') c").expect("compress");
        let compressed = p
            .query_i64("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' AND is_compressed")
            .expect("chunks");
        assert!(chunks >= 31 && compressed == chunks, "{compressed} of {chunks} chunks compressed");
    }

    let out = p.dir.path().join("bills");
    let out_s = out.to_string_lossy().to_string();
    let report = procs::run_bin(
        "billing",
        &["run", "--period", "2026-10", "--out", &out_s],
        &[("DATABASE_URL", p.db.url.as_str())],
    )
    .expect("billing run");
    assert!(out.join("bills.csv").exists(), "exports written: {report}");

    // What the bills must be: the model's register deltas over the local month, billed with the
    // shipped tariff.
    let model = meter_sim::Model::with_meters(seed, meters);
    let (from, to) = (ts(FROM), ts(TO));
    let tariffs = TariffSet::single(Tariff::eps_household_2025().expect("shipped tariff"));
    let period = Period::month(2026, 10).expect("period");
    let mut want = std::collections::HashMap::new();
    let mut flats_wh = 0i64;
    for apartment in 1..=building.flats {
        let flat = fleet.flat(&building, apartment);
        let index = building.first_meter + usize::from(apartment);
        let (a, b) = (model.registers_at(index, from).expect("start"), model.registers_at(index, to).expect("end"));
        let (vt, nt) = (b.import_vt - a.import_vt, b.import_nt - a.import_nt);
        flats_wh += vt + nt;
        let kw: Decimal = flat.approved_power_kw.parse().expect("kW");
        let bill =
            compute_bill(&BillInput::two_rate(period, kwh(vt), kwh(nt), kw, building.region), &tariffs).expect("bill");
        want.insert(flat.household_code(), (kwh(vt), kwh(nt), bill.total));
    }
    let master = {
        let (a, b) = (model.registers_at(0, from).expect("start"), model.registers_at(0, to).expect("end"));
        b.import_total() - a.import_total()
    };

    type Row = (String, String, String, String, Option<String>, bool);
    let stored: Vec<Row> =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            let rows = c
                .query(
                    "SELECT h.code, b.vt_kwh::text, b.nt_kwh::text, b.total::text, b.common_kwh::text, b.estimated
                     FROM bills b JOIN households h ON h.id = b.household_id
                     JOIN billing_runs r ON r.id = b.run_id WHERE r.version = 1",
                    &[],
                )
                .await?;
            anyhow::Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect())
        })
        .expect("bills");
    assert_eq!(stored.len(), want.len(), "one bill per household");
    let dec = |s: &str| s.parse::<Decimal>().expect("decimal");
    let mut common = Decimal::ZERO;
    for (code, vt, nt, total, share, estimated) in &stored {
        assert!(!estimated, "{code}: every boundary reading was stored");
        let (wvt, wnt, wtotal) = want.get(code).unwrap_or_else(|| panic!("bill for unknown household {code}"));
        assert_eq!((dec(vt), dec(nt)), (*wvt, *wnt), "{code}: consumption");
        assert_eq!(dec(total), *wtotal, "{code}: total");
        common += dec(share.as_deref().expect("every flat has a common-area share"));
    }
    assert_eq!(common, kwh(master - flats_wh), "shares add up to master − Σ flats");
    assert!(master > flats_wh, "common areas and losses are positive");
}
