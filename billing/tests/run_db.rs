//! `billing run` over a real PostgreSQL: a database per test, migrated by the head-end's migrator, one building
//! (master + 3 flats) with readings at the boundaries of October 2026 (a month with a DST change).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::str::FromStr;

use billing::allocation::{allocate_wh, Member, SplitKey};
use billing::bill::{compute_bill, BillInput, Consumption, Period};
use billing::model::RunOptions;
use billing::money::wh_to_kwh;
use billing::old_split::one_over_n_bill;
use billing::pipeline::run;
use billing::run::{lines_of, BillingMonth, Rules, CH_NT, CH_TOTAL, CH_VT};
use billing::{Tariff, TariffSet};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use schemas::inventory::Region;
use tests::pg::{admin_url, TestDatabase};
use tokio_postgres::Client;

/// (code, floor area, residents, approved kW, VT Wh, NT Wh) of the 3 flats.
const FLATS: [(&str, Decimal, i16, Decimal, i64, i64); 3] = [
    ("H1", dec!(45.5), 1, dec!(5.75), 150_000, 60_500),
    ("H2", dec!(62), 2, dec!(6.9), 400_123, 200_000),
    ("H3", dec!(80.25), 4, dec!(11.04), 90_001, 9_999),
];
/// Common areas + losses per register.
const COMMON_VT: i64 = 25_000;
const COMMON_NT: i64 = 12_501;

struct Fixture {
    db: TestDatabase,
    client: Client,
    month: BillingMonth,
    /// (household id, meter id) per flat.
    flats: Vec<(i32, i32)>,
    master: i32,
}

fn tariffs() -> TariffSet {
    TariffSet::single(Tariff::eps_household_2025().unwrap())
}

fn opts(month: BillingMonth) -> RunOptions {
    RunOptions {
        month,
        building: None,
        rules: Rules {
            split: SplitKey::FloorArea,
            estimated_threshold: Decimal::ZERO,
            interval_check: true,
            ..Rules::default()
        },
    }
}

async fn reading(c: &Client, meter: i32, ch: i16, ts: DateTime<Utc>, wh: i64) {
    c.query_one("SELECT headend_ensure_partition(($1::timestamptz AT TIME ZONE 'UTC')::date)", &[&ts]).await.unwrap();
    c.execute(
        "INSERT INTO readings (ts, value, meter_id, channel_id) VALUES ($1, $2, $3, $4)",
        &[&ts, &wh, &meter, &ch],
    )
    .await
    .unwrap();
}

/// Writes start and end registers of a meter (and decoys 15 min either side of each boundary).
async fn registers(c: &Client, month: &BillingMonth, meter: i32, ch: i16, start_wh: i64, delta_wh: i64) {
    let q = Duration::minutes(15);
    reading(c, meter, ch, month.start - q, start_wh - 7).await;
    reading(c, meter, ch, month.start, start_wh).await;
    reading(c, meter, ch, month.start + q, start_wh + 11).await;
    reading(c, meter, ch, month.end - q, start_wh + delta_wh - 13).await;
    reading(c, meter, ch, month.end, start_wh + delta_wh).await;
    reading(c, meter, ch, month.end + q, start_wh + delta_wh + 17).await;
}

/// Inserts a building; its id.
async fn building(c: &Client, code: &str, address: &str) -> i32 {
    c.query_one(
        "INSERT INTO buildings (code, address, municipality, region) VALUES ($1, $2, 'Vračar', 'belgrade') RETURNING id",
        &[&code, &address],
    )
    .await
    .unwrap()
    .get(0)
}

/// Inserts a meter installed on 2026-01-01 (a master when `household` is `None`); its id.
async fn meter(c: &Client, serial: &str, building: i32, household: Option<i32>) -> i32 {
    let kind = if household.is_some() { "household" } else { "master" };
    c.query_one(
        "INSERT INTO meters (serial, kind, protocol, building_id, household_id, installed_on)
         VALUES ($1, $2, 'mqtt', $3, $4, '2026-01-01') RETURNING id",
        &[&serial, &kind, &building, &household],
    )
    .await
    .unwrap()
    .get(0)
}

/// Deletes a meter's VT register readings from `from` on (a reading that has not arrived).
async fn forget_vt_from(c: &Client, meter: i32, from: DateTime<Utc>) {
    c.execute("DELETE FROM readings WHERE meter_id = $1 AND channel_id = $2 AND ts >= $3", &[&meter, &CH_VT, &from])
        .await
        .unwrap();
}

async fn setup(period: &str) -> Fixture {
    let db = TestDatabase::create(&admin_url(), "billing").await.unwrap();
    let mut client = db.client().await.unwrap();
    headend::db::migrate(&mut client, headend::db::TimescaleMode::Off).await.unwrap();
    let month = BillingMonth::parse(period).unwrap();
    let c = &client;
    let b = building(c, "B1", "Njegoševa 1").await;
    let master = meter(c, "M0", b, None).await;
    let mut flats = Vec::new();
    let (mut svt, mut snt) = (0, 0);
    for (i, (code, area, residents, kw, vt, nt)) in FLATS.iter().enumerate() {
        let h: i32 = c
            .query_one(
                "INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
                 VALUES ($1, $2, $3, $4::text::numeric, $5, $6::text::numeric, 'eps-household-2025') RETURNING id",
                &[code, &b, &(i + 1).to_string(), &area.to_string(), residents, &kw.to_string()],
            )
            .await
            .unwrap()
            .get(0);
        let m = meter(c, &format!("M{}", i + 1), b, Some(h)).await;
        let base = 1_000_000 * (i as i64 + 1);
        registers(c, &month, m, CH_VT, base, *vt).await;
        registers(c, &month, m, CH_NT, base / 2, *nt).await;
        registers(c, &month, m, CH_TOTAL, base + base / 2, vt + nt).await;
        svt += vt;
        snt += nt;
        flats.push((h, m));
    }
    let (mvt, mnt) = (svt + COMMON_VT, snt + COMMON_NT);
    registers(c, &month, master, CH_VT, 50_000_000, mvt).await;
    registers(c, &month, master, CH_NT, 20_000_000, mnt).await;
    registers(c, &month, master, CH_TOTAL, 70_000_000, mvt + mnt).await;
    Fixture { db, client, month, flats, master }
}

fn expected_input(month: &BillingMonth, i: usize, vt_wh: i64, nt_wh: i64) -> BillInput {
    let (_, _, _, kw, _, _) = FLATS[i];
    BillInput::two_rate(month.period, wh_to_kwh(vt_wh), wh_to_kwh(nt_wh), kw, Region::Belgrade)
}

fn master_consumption() -> Consumption {
    let vt: i64 = FLATS.iter().map(|f| f.4).sum::<i64>() + COMMON_VT;
    let nt: i64 = FLATS.iter().map(|f| f.5).sum::<i64>() + COMMON_NT;
    Consumption::TwoRate { vt_kwh: wh_to_kwh(vt), nt_kwh: wh_to_kwh(nt) }
}

fn d(s: String) -> Decimal {
    Decimal::from_str(&s).unwrap()
}

/// household id → (total, common kWh, estimated share, estimated, old split, difference) as stored.
async fn stored_bills(
    c: &Client,
    run_id: i64,
) -> HashMap<i32, (Decimal, Option<Decimal>, Decimal, bool, Option<Decimal>, Option<Decimal>)> {
    c.query(
        "SELECT household_id, total::text, common_kwh::text, estimated_share::text, estimated,
                old_split_total::text, difference::text FROM bills WHERE run_id = $1",
        &[&run_id],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        let opt = |i: usize| r.get::<_, Option<String>>(i).map(d);
        (r.get(0), (d(r.get(1)), opt(2), d(r.get(3)), r.get(4), opt(5), opt(6)))
    })
    .collect()
}

/// (line_no, kind, zone, tou, quantity, unit price, amount) of a stored bill.
async fn stored_lines(
    c: &Client,
    run_id: i64,
    household: i32,
) -> Vec<(i16, String, Option<String>, Option<String>, Decimal, Decimal, Decimal)> {
    c.query(
        "SELECT l.line_no, l.kind, l.zone, l.tou, l.quantity::text, l.unit_price::text, l.amount::text
         FROM bill_lines l JOIN bills b ON b.id = l.bill_id
         WHERE b.run_id = $1 AND b.household_id = $2 ORDER BY l.line_no",
        &[&run_id, &household],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), d(r.get(4)), d(r.get(5)), d(r.get(6))))
    .collect()
}

#[tokio::test]
async fn bills_equal_compute_bill_and_common_areas_close_exactly() {
    let mut f = setup("2026-10").await;
    let t = tariffs();
    let out = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    assert_eq!(out.meta.version, 1);
    assert_eq!(out.meta.period_start.to_rfc3339(), "2026-09-30T22:00:00+00:00");
    assert_eq!(out.meta.period_end.to_rfc3339(), "2026-10-31T23:00:00+00:00");
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(b.bills.len(), 3);

    let stored = stored_bills(&f.client, out.meta.run_id).await;
    let members: Vec<Member> =
        FLATS.iter().map(|x| Member { floor_area_m2: x.1, residents: u32::try_from(x.2).unwrap() }).collect();
    let common_wh = COMMON_VT + COMMON_NT;
    let shares = allocate_wh(common_wh, SplitKey::FloorArea, &members).unwrap();
    let mut common_sum = Decimal::ZERO;
    for (i, (h, _)) in f.flats.iter().enumerate() {
        let input = expected_input(&f.month, i, FLATS[i].4, FLATS[i].5);
        let expected = compute_bill(&input, &t).unwrap();
        let old = one_over_n_bill(&input, master_consumption(), 3, &t).unwrap();
        let (total, common, share, estimated, old_total, diff) = stored[h];
        assert_eq!(total, expected.total, "flat {i}");
        assert_eq!(share, Decimal::ZERO);
        assert!(!estimated);
        assert_eq!(common, Some(wh_to_kwh(shares[i])));
        common_sum += common.unwrap();
        assert_eq!(old_total, Some(old.total));
        assert_eq!(diff, Some(expected.total - old.total));
        // every line, as stored
        let lines = stored_lines(&f.client, out.meta.run_id, *h).await;
        let want = lines_of(&expected);
        assert_eq!(lines.len(), want.len());
        for (got, want) in lines.iter().zip(&want) {
            assert_eq!(got.0, want.line_no);
            assert_eq!(got.1, want.kind);
            assert_eq!(got.2, want.zone);
            assert_eq!(got.3.as_deref(), want.tou);
            assert_eq!((got.4, got.5, got.6), (want.quantity, want.unit_price, want.amount));
        }
        assert_eq!(lines.iter().map(|l| l.6).sum::<Decimal>(), total, "Σ lines = total");
    }
    // H2 crosses into the blue zone: the test covers a zone crossing.
    assert!(b.bills[1].lines.iter().any(|l| l.zone.as_deref() == Some("blue")));
    assert_eq!(common_sum, wh_to_kwh(common_wh), "the allocation closes exactly");
    let s = &b.summary;
    let apartments: i64 = FLATS.iter().map(|x| x.4 + x.5).sum();
    assert_eq!(s.master_kwh, Some(wh_to_kwh(apartments + common_wh)));
    assert_eq!(s.apartments_kwh, wh_to_kwh(apartments));
    assert_eq!(s.common_kwh, Some(wh_to_kwh(common_wh)));
    assert_eq!(s.pay_more + s.pay_less + s.pay_same, 3);
    assert_eq!(s.metered_total, b.bills.iter().map(|b| b.total).sum::<Decimal>());
    assert!(s.min_bill <= s.median_bill && s.median_bill <= s.max_bill);
    let _ = f.master;
}

#[tokio::test]
async fn other_split_keys_close_exactly_too() {
    let mut f = setup("2026-10").await;
    for key in [SplitKey::Equal, SplitKey::Residents] {
        let out = run(
            &mut f.client,
            &RunOptions { rules: Rules { split: key, ..Rules::default() }, ..opts(f.month) },
            &tariffs(),
        )
        .await
        .unwrap();
        let [b] = out.buildings.as_slice() else { panic!("one building") };
        let sum: Decimal = b.bills.iter().map(|b| b.common_kwh.unwrap()).sum();
        assert_eq!(sum, wh_to_kwh(COMMON_VT + COMMON_NT), "{key:?}");
    }
    let split: Vec<String> = f
        .client
        .query("SELECT split_key FROM billing_runs ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(split, ["equal", "residents"]);
}

#[tokio::test]
async fn rerun_gives_a_second_version_with_identical_amounts() {
    let mut f = setup("2026-10").await;
    let t = tariffs();
    let first = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let second = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    assert_eq!((first.meta.version, second.meta.version), (1, 2));
    assert_ne!(first.meta.run_id, second.meta.run_id);
    assert_eq!(stored_bills(&f.client, first.meta.run_id).await, stored_bills(&f.client, second.meta.run_id).await);
    for (h, _) in &f.flats {
        assert_eq!(
            stored_lines(&f.client, first.meta.run_id, *h).await,
            stored_lines(&f.client, second.meta.run_id, *h).await
        );
    }
    // Another period numbers its versions on its own.
    let nov = run(&mut f.client, &opts(BillingMonth::parse("2026-11").unwrap()), &t).await.unwrap();
    assert_eq!(nov.meta.version, 1);
}

#[tokio::test]
async fn a_missing_boundary_reading_is_interpolated_between_the_readings_around_it() {
    let mut f = setup("2026-10").await;
    let (h3, m3) = f.flats[2];
    // Flat 3's VT register at the period end is missing (and its decoys); readings 1 h before and 1 h after it
    // (a 2 h gap, within the 3 h interpolation limit) carry 400 Wh between them.
    forget_vt_from(&f.client, m3, f.month.end - Duration::hours(1)).await;
    let end_vt = 3_000_000 + FLATS[2].4;
    reading(&f.client, m3, CH_VT, f.month.end - Duration::hours(1), end_vt - 100).await;
    reading(&f.client, m3, CH_VT, f.month.end + Duration::hours(1), end_vt + 300).await;
    let t = tariffs();
    let out = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    let kinds: Vec<&str> = b.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["estimated_reading"], "{:?}", b.problems);
    assert!(b.problems[0].detail.contains("interpolated"), "{}", b.problems[0].detail);
    // End register = end_vt − 100 + 400 × 1 h / 2 h = end_vt + 100; the 200 Wh after the last actual reading
    // are estimated.
    let vt = FLATS[2].4 + 100;
    let share = (Decimal::from(200) / Decimal::from(vt + FLATS[2].5)).round_dp(6);
    let mut input = expected_input(&f.month, 2, vt, FLATS[2].5);
    input.estimated_kwh = wh_to_kwh(200);
    let expected = compute_bill(&input, &t).unwrap();
    let (total, _, stored_share, estimated, _, _) = stored_bills(&f.client, out.meta.run_id).await[&h3];
    assert_eq!(total, expected.total);
    assert_eq!(stored_share, share);
    assert!(estimated);
    assert_eq!(b.summary.estimated_bills, 1);
    assert_eq!(b.bills.iter().filter(|b| b.estimated).count(), 1);
    // The building still reconciles (its common part is estimated through flat 3).
    assert_eq!(b.bills.iter().map(|b| b.common_kwh.unwrap()).sum::<Decimal>(), b.summary.common_kwh.unwrap());
    // Above a threshold of 1 % only: 200 Wh of ≈ 100 kWh is not enough to mark the bill.
    let rules = Rules { estimated_threshold: dec!(0.01), ..Rules::default() };
    let out = run(&mut f.client, &RunOptions { rules, ..opts(f.month) }, &t).await.unwrap();
    let (total2, _, share2, estimated2, _, _) = stored_bills(&f.client, out.meta.run_id).await[&h3];
    assert_eq!((total2, share2, estimated2), (total, share, false));
}

#[tokio::test]
async fn a_long_gap_at_the_period_end_is_estimated_from_like_days() {
    let mut f = setup("2026-10").await;
    let (h3, m3) = f.flats[2];
    forget_vt_from(&f.client, m3, f.month.end - Duration::hours(1)).await;
    // The last actual VT reading is 24 h before the end (local midnight of Oct 31); nothing after it.
    let end_vt = 3_000_000 + FLATS[2].4;
    let last = f.month.end - Duration::hours(24);
    reading(&f.client, m3, CH_VT, last, end_vt - 1_000).await;
    // Like days: the same local day 1 and 2 weeks earlier (across the end of summer time) used 800 and 1,200 Wh.
    for (w, wh) in [(1u32, 800i64), (2, 1_200)] {
        let a = billing::vee::weeks_earlier(last, w).unwrap();
        let e = billing::vee::weeks_earlier(f.month.end, w).unwrap();
        assert_eq!(e - a, Duration::hours(24));
        reading(&f.client, m3, CH_VT, a, 2_000_000 + i64::from(w) * 10_000).await;
        reading(&f.client, m3, CH_VT, e, 2_000_000 + i64::from(w) * 10_000 + wh).await;
    }
    let t = tariffs();
    let out = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    let kinds: Vec<&str> = b.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["estimated_reading"], "{:?}", b.problems);
    assert!(b.problems[0].detail.contains("like-day"), "{}", b.problems[0].detail);
    // End register = last + mean(800, 1,200) = end_vt: the VT delta is unchanged, 1,000 Wh of it estimated.
    let mut input = expected_input(&f.month, 2, FLATS[2].4, FLATS[2].5);
    input.estimated_kwh = wh_to_kwh(1_000);
    let expected = compute_bill(&input, &t).unwrap();
    let (total, _, share, estimated, _, _) = stored_bills(&f.client, out.meta.run_id).await[&h3];
    assert_eq!(total, expected.total);
    assert_eq!(share, (Decimal::from(1_000) / Decimal::from(FLATS[2].4 + FLATS[2].5)).round_dp(6));
    assert!(estimated);
}

#[tokio::test]
async fn a_meter_exchange_inside_the_month_adds_both_meters() {
    let mut f = setup("2026-10").await;
    let (h3, m3) = f.flats[2];
    // M3 removed on 2026-10-15 (its last reading at 16:00 local), M3b installed the same day, starting at 0.
    f.client.execute("UPDATE meters SET removed_on = '2026-10-15' WHERE id = $1", &[&m3]).await.unwrap();
    let b_id: i32 = f.client.query_one("SELECT id FROM buildings", &[]).await.unwrap().get(0);
    let m3b: i32 = f
        .client
        .query_one(
            "INSERT INTO meters (serial, kind, protocol, building_id, household_id, installed_on)
             VALUES ('M3b', 'household', 'mqtt', $1, $2, '2026-10-15') RETURNING id",
            &[&b_id, &h3],
        )
        .await
        .unwrap()
        .get(0);
    let removal = DateTime::parse_from_rfc3339("2026-10-15T14:00:00Z").unwrap().with_timezone(&Utc);
    reading(&f.client, m3, CH_VT, removal, 3_040_000).await;
    reading(&f.client, m3, CH_NT, removal, 1_505_000).await;
    reading(&f.client, m3, CH_TOTAL, removal, 4_545_000).await;
    reading(&f.client, m3b, CH_VT, f.month.end, 50_000).await;
    reading(&f.client, m3b, CH_NT, f.month.end, 4_999).await;
    reading(&f.client, m3b, CH_TOTAL, f.month.end, 54_999).await;
    let t = tariffs();
    let out = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    let bill = b.bills.iter().find(|x| x.household_id == h3).unwrap();
    // Old: 40,000 VT + 5,000 NT; new: 50,000 VT + 4,999 NT.
    assert_eq!((bill.vt_kwh, bill.nt_kwh), (dec!(90.000), dec!(9.999)));
    assert_eq!(bill.meter_serial, "M3, M3b");
    assert!(!bill.estimated);
    let expected = compute_bill(&expected_input(&f.month, 2, 90_000, 9_999), &t).unwrap();
    assert_eq!(bill.total, expected.total);
    // Reconciled: the flat measures 1 Wh less than before, so common areas get 1 Wh more.
    assert_eq!(b.summary.common_kwh, Some(wh_to_kwh(COMMON_VT + COMMON_NT + 1)));
    // Without any reading of the old meter after the period start the household cannot be billed.
    f.client.execute("DELETE FROM readings WHERE meter_id = $1 AND ts > $2", &[&m3, &f.month.start]).await.unwrap();
    let out = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let kinds: Vec<&str> = out.buildings[0].problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["missing_removal_reading", "not_reconciled"]);
}

#[tokio::test]
async fn no_reading_within_24_h_is_a_data_quality_problem() {
    let mut f = setup("2026-10").await;
    let (h3, m3) = f.flats[2];
    f.client
        .execute("DELETE FROM readings WHERE meter_id = $1 AND ts >= $2", &[&m3, &(f.month.end - Duration::hours(1))])
        .await
        .unwrap();
    // A reading 25 h after the end does not count.
    reading(&f.client, m3, CH_NT, f.month.end + Duration::hours(25), 1).await;
    let out = run(&mut f.client, &opts(f.month), &tariffs()).await.unwrap();
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    assert_eq!(b.bills.len(), 2);
    assert!(b.bills.iter().all(|b| b.household_id != h3 && b.common_kwh.is_none()));
    let kinds: Vec<&str> = b.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["missing_boundary_reading", "not_reconciled"]);
    assert_eq!(b.problems[0].household_id, Some(h3));
    assert_eq!(b.summary.common_kwh, None);
    let stored: Vec<(Option<i32>, String)> = f
        .client
        .query("SELECT household_id, kind FROM billing_problems WHERE run_id = $1 ORDER BY kind", &[&out.meta.run_id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored, [(Some(h3), "missing_boundary_reading".to_string()), (None, "not_reconciled".to_string())]);
    // The master's readings are untouched: the 1/N comparison is still there.
    assert!(b.bills.iter().all(|b| b.old_split_total.is_some()));
}

#[tokio::test]
async fn exports_and_building_filter() {
    let mut f = setup("2026-10").await;
    let t = tariffs();
    let unknown = RunOptions { building: Some("NOPE".into()), ..opts(f.month) };
    assert!(matches!(run(&mut f.client, &unknown, &t).await, Err(billing::model::StoreError::UnknownBuilding(_))));
    let out = run(&mut f.client, &RunOptions { building: Some("B1".into()), ..opts(f.month) }, &t).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    billing::export::write_exports(dir.path(), &out).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("bills.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0], billing::export::CSV_HEADER.join(","));
    assert!(rows[1].contains(",B1,H1,1,M1,150.000,60.500,210.500,"), "{}", rows[1]);
    let bills: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bills.json")).unwrap()).unwrap();
    assert_eq!(bills["run"]["period"], "2026-10");
    assert_eq!(bills["run"]["building"], "B1");
    assert_eq!(bills["bills"].as_array().unwrap().len(), 3);
    assert_eq!(bills["bills"][0]["total"], serde_json::json!(out.buildings[0].bills[0].total.to_string()));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("buildings.json")).unwrap()).unwrap();
    let s = &summary["buildings"][0];
    assert_eq!(s["common_kwh"], "37.501");
    assert_eq!(s["master_kwh"], "948.124");
    assert_eq!(s["apartments_kwh"], "910.623");
    assert!(s["common_percent"].is_string());
    assert_eq!(summary["problems"].as_array().unwrap().len(), 0);
    // Equal shares of 37.501 kWh over 3 flats: 12.501 / 12.500 / 12.500.
    assert_eq!(s["split_keys"][0], serde_json::json!({"key": "equal", "min_kwh": "12.500", "max_kwh": "12.501"}));
    assert_eq!(s["split_keys"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_missing_master_leaves_bills_without_common_share() {
    let mut f = setup("2026-10").await;
    f.client.execute("DELETE FROM readings WHERE meter_id = $1", &[&f.master]).await.unwrap();
    let out = run(&mut f.client, &opts(f.month), &tariffs()).await.unwrap();
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    assert_eq!(b.bills.len(), 3);
    assert!(b.bills.iter().all(|b| b.common_kwh.is_none() && b.old_split_total.is_none()));
    assert_eq!(b.problems.iter().map(|p| p.kind).collect::<Vec<_>>(), ["missing_boundary_reading"]);
    assert_eq!(b.summary.one_over_n_total, None);
    assert_eq!(Period::month(2026, 10).unwrap(), f.month.period);
}

#[tokio::test]
async fn the_cli_bills_stores_and_exports() {
    let f = setup("2026-10").await;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_billing");
    let url = f.db.url.clone();
    let out = tokio::process::Command::new(bin)
        .args(["run", "--period", "2026-10", "--building", "B1", "--split", "equal", "--database-url", &url, "--out"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("period 2026-10 version 1): 1 buildings, 3 bills (0 estimated), 0 data-quality problems"),
        "{stdout}"
    );
    for file in ["bills.csv", "bills.json", "buildings.json"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    // The printable HTML: an invoice per household with its total, a report per building with every total.
    let stored = billing::db::load_run(&f.client, &f.month, None).await.unwrap();
    let [b] = stored.buildings.as_slice() else { panic!("one building") };
    let report = std::fs::read_to_string(dir.path().join("buildings/B1.html")).unwrap();
    assert!(report.contains("Njegoševa 1") && report.contains("<svg"));
    assert!(report.contains(&format!("{} RSD", billing::html::rsd(b.summary.metered_total))));
    for bill in &b.bills {
        let path = dir.path().join(format!("invoices/{}.html", bill.household_code));
        let html = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(html.contains(&format!("{} RSD", billing::html::rsd(bill.total))), "{}", bill.household_code);
        assert!(html.contains("Njegoševa 1") && html.contains(&bill.meter_serial) && html.contains("2026-10"));
        for l in &bill.lines {
            assert!(html.contains(&billing::html::rsd(l.amount)));
        }
        assert!(report.contains(&billing::html::rsd(bill.total)));
    }
    let key: String = f.client.query_one("SELECT split_key FROM billing_runs", &[]).await.unwrap().get(0);
    assert_eq!(key, "equal");
    // Bad input is an error message and a failure status, never a panic.
    for args in [
        vec!["run", "--period", "2026-13", "--database-url", &url],
        vec!["run", "--period", "2026-10", "--split", "floor", "--database-url", &url],
        vec!["run", "--period", "2026-10", "--building", "NOPE", "--database-url", &url],
    ] {
        let out = tokio::process::Command::new(bin).args(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("Error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Runs the `billing` binary; (status code, stdout, stderr).
async fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_billing")).args(args).output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_stored_run_reads_back_as_computed() {
    let mut f = setup("2026-10").await;
    let t = tariffs();
    let first = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let rules = Rules { split: SplitKey::Equal, ..Rules::default() };
    let second = run(&mut f.client, &RunOptions { rules, ..opts(f.month) }, &t).await.unwrap();
    for (out, version) in [(&first, Some(1)), (&second, None), (&second, Some(2))] {
        let stored = billing::db::load_run(&f.client, &f.month, version).await.unwrap();
        assert_eq!(stored.meta, out.meta);
        let ([got], [want]) = (stored.buildings.as_slice(), out.buildings.as_slice()) else { panic!("one building") };
        assert_eq!(got.bills, want.bills, "bills and lines as computed");
        assert_eq!(got.problems, want.problems);
        // The summary is rebuilt; only the master's own estimated share is not stored.
        let mut summary = want.summary.clone();
        summary.master_estimated_share = None;
        summary.interval_hours_checked = None;
        assert_eq!(got.summary, summary);
    }
    let missing = billing::db::load_run(&f.client, &f.month, Some(3)).await;
    assert!(matches!(missing, Err(billing::model::StoreError::NoRun { version: Some(3), .. })));
}

#[tokio::test]
async fn the_cli_shows_a_stored_run() {
    let mut f = setup("2026-10").await;
    // An address that must be escaped in the HTML.
    f.client.execute("UPDATE buildings SET address = '<script>alert(1)</script> Njegoševa 1'", &[]).await.unwrap();
    let out = run(&mut f.client, &opts(f.month), &tariffs()).await.unwrap();
    let [b] = out.buildings.as_slice() else { panic!("one building") };
    let url = f.db.url.clone();
    let base = ["show", "--period", "2026-10", "--database-url", &url];

    // Text: the run and every household total.
    let (code, text, err) = cli(&base).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(text.starts_with(&format!("run {} period 2026-10 version 1", out.meta.run_id)), "{text}");
    assert!(text.contains(&format!("metered {} RSD", b.summary.metered_total)), "{text}");
    for bill in &b.bills {
        assert!(text.contains(&format!("household {} ", bill.household_code)), "{text}");
        assert!(text.contains(&format!("total {} RSD", bill.total)), "{text}");
    }

    // One household: every line.
    let h2 = &b.bills[1];
    let (code, text, err) = cli(&[&base[..], &["--household", "H2", "--version", "1"]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains(&format!("total {} RSD", h2.total)), "{text}");
    assert_eq!(text.lines().count(), 2 + h2.lines.len(), "{text}");
    for l in &h2.lines {
        let mut amount = l.amount; // as stored: numeric(15, 2)
        amount.rescale(2);
        assert!(text.contains(&format!("= {:>12}", amount.to_string())), "{text}");
    }

    // JSON.
    let (code, json, err) = cli(&[&base[..], &["--household", "H1", "--format", "json"]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["bill"]["total"], serde_json::json!(b.bills[0].total.to_string()));
    assert_eq!(v["run"]["version"], 1);
    let (code, json, err) = cli(&[&base[..], &["--building", "B1", "--format", "json"]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["buildings"][0]["summary"]["metered_total"], serde_json::json!(b.summary.metered_total.to_string()));
    assert_eq!(v["buildings"][0]["bills"].as_array().unwrap().len(), 3);

    // HTML: the invoice and the building report, the address escaped.
    let (code, html, err) = cli(&[&base[..], &["--household", "H3", "--format", "html"]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(html.contains(&format!("{} RSD", billing::html::rsd(b.bills[2].total))));
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;alert(1)&lt;/script&gt; Njegoševa 1"));
    let (code, html, err) = cli(&[&base[..], &["--building", "B1", "--format", "html"]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(html.contains("<svg") && !html.contains("<script>"));
    assert!(html.contains(&billing::html::rsd(b.summary.metered_total)));

    // Errors: a message and status 1, never a panic.
    for args in
        [vec!["--household", "NOPE"], vec!["--building", "NOPE"], vec!["--version", "9"], vec!["--format", "pdf"]]
    {
        let (code, _, err) = cli(&[&base[..], &args[..]].concat()).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.starts_with("Error: ") && !err.contains("panicked"), "{err}");
    }
    let (code, _, err) = cli(&["show", "--period", "2026-11", "--database-url", &url]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no stored billing run for period 2026-11"), "{err}");
}

/// The register of `meter` / `ch` stored at `ts`.
async fn value_at(c: &Client, meter: i32, ch: i16, ts: DateTime<Utc>) -> i64 {
    c.query_one("SELECT value FROM readings WHERE meter_id = $1 AND channel_id = $2 AND ts = $3", &[&meter, &ch, &ts])
        .await
        .unwrap()
        .get(0)
}

/// Readings at `next.end` for every meter and register: the value at `next.start` + (flats: VT 100 kWh, NT 50 kWh;
/// master: VT 1,000 kWh, NT 500 kWh), total = VT + NT.
async fn next_month(f: &Fixture, next: &BillingMonth) {
    let meters: Vec<(i32, i64)> = f.flats.iter().map(|&(_, m)| (m, 1)).chain(std::iter::once((f.master, 10))).collect();
    for (m, k) in meters {
        for (ch, delta) in [(CH_VT, 100_000), (CH_NT, 50_000), (CH_TOTAL, 150_000)] {
            let v = value_at(&f.client, m, ch, next.start).await;
            reading(&f.client, m, ch, next.end, v + k * delta).await;
        }
    }
}

fn corrections(b: &billing::run::HouseholdBill) -> Vec<&billing::run::LineOut> {
    b.lines.iter().filter(|l| l.kind == "correction").collect()
}

#[tokio::test]
async fn an_estimate_replaced_by_the_actual_reading_is_corrected_on_the_next_bill() {
    let mut f = setup("2026-10").await;
    let t = tariffs();
    let (h1, m1) = f.flats[0];
    let end = f.month.end;
    // H1's VT register at the end of October is missing (the decoys 15 min around it too); readings 2 h before
    // and 1 h after: interpolated to exactly the fixture's value, so October is billed 150.000 kWh VT.
    let vt_end = value_at(&f.client, m1, CH_VT, end).await;
    f.client
        .execute(
            "DELETE FROM readings WHERE meter_id = $1 AND channel_id = $2 AND ts >= $3 AND ts <= $4",
            &[&m1, &CH_VT, &(end - Duration::minutes(15)), &(end + Duration::minutes(15))],
        )
        .await
        .unwrap();
    reading(&f.client, m1, CH_VT, end - Duration::hours(2), vt_end - 6_000).await;
    reading(&f.client, m1, CH_VT, end + Duration::hours(1), vt_end + 3_000).await;
    let oct = run(&mut f.client, &opts(f.month), &t).await.unwrap();
    let oct_bills = &oct.buildings[0].bills;
    let est = oct_bills.iter().find(|b| b.household_id == h1).unwrap();
    assert!(est.estimated && est.estimated_share > Decimal::ZERO);
    assert_eq!(est.vt_kwh, dec!(150.000));
    assert!(oct_bills.iter().filter(|b| b.household_id != h1).all(|b| !b.estimated));
    let oct_bill_id: i64 = f
        .client
        .query_one("SELECT id FROM bills WHERE run_id = $1 AND household_id = $2", &[&oct.meta.run_id, &h1])
        .await
        .unwrap()
        .get(0);

    // The actual reading arrives: 2 kWh more than the estimate.
    reading(&f.client, m1, CH_VT, end, vt_end + 2_000).await;
    let nov_month = BillingMonth::parse("2026-11").unwrap();
    next_month(&f, &nov_month).await;
    let nov = run(&mut f.client, &opts(nov_month), &t).await.unwrap();
    let [b] = nov.buildings.as_slice() else { panic!("one building") };

    // Actual October bill − estimated October bill, to the para.
    let actual_oct = compute_bill(&expected_input(&f.month, 0, 152_000, 60_500), &t).unwrap();
    let want = actual_oct.total - est.total;
    assert!(!want.is_zero());
    let nov_own = compute_bill(&expected_input(&nov_month, 0, 100_000, 50_000), &t).unwrap();
    let bill = b.bills.iter().find(|x| x.household_id == h1).unwrap();
    let found = corrections(bill);
    let [c] = found.as_slice() else { panic!("one correction: {:?}", bill.lines) };
    assert_eq!(c.amount, want);
    assert_eq!(c.quantity, dec!(2.000));
    assert_eq!(c.unit, "kwh");
    assert_eq!(c.line_no, i16::try_from(bill.lines.len()).unwrap(), "the last line");
    let reference = c.detail.clone().unwrap();
    assert!(reference.contains("correction of 2026-10"), "{reference}");
    assert!(reference.contains(&format!("bill {oct_bill_id} of run {} (version 1)", oct.meta.run_id)), "{reference}");
    assert_eq!(bill.total, nov_own.total + want);
    assert_eq!(bill.lines.iter().map(|l| l.amount).sum::<Decimal>(), bill.total, "the lines add up to the total");
    assert!(!bill.estimated);
    // Households without estimates in October: no correction.
    assert!(b.bills.iter().filter(|x| x.household_id != h1).all(|x| corrections(x).is_empty()));
    // Traceable: one `correction` problem row, and the line as stored.
    let rows = f
        .client
        .query(
            "SELECT household_id, detail FROM billing_problems WHERE run_id = $1 AND kind = 'correction'",
            &[&nov.meta.run_id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, Option<i32>>(0), Some(h1));
    assert_eq!(rows[0].get::<_, String>(1), reference);
    let lines = stored_lines(&f.client, nov.meta.run_id, h1).await;
    let last = lines.last().unwrap();
    assert_eq!((last.1.as_str(), last.4, last.6), ("correction", dec!(2.000), want));
    assert_eq!(stored_bills(&f.client, nov.meta.run_id).await[&h1].0, nov_own.total + want);
    // Read back (billing show) as computed, with the reference.
    let stored = billing::db::load_run(&f.client, &nov_month, None).await.unwrap();
    assert_eq!(stored.buildings[0].bills, b.bills);

    // Re-running November: a new version, the same correction; with exports.
    let dir = tempfile::tempdir().unwrap();
    let again =
        billing::pipeline::run_with_exports(&mut f.client, &opts(nov_month), &t, Some(dir.path())).await.unwrap();
    assert_eq!(again.meta.version, 2);
    assert_eq!(again.buildings[0].bills, b.bills);
    let csv = std::fs::read_to_string(dir.path().join("bills.csv")).unwrap();
    let h1_row = csv.lines().find(|l| l.contains(",H1,")).unwrap();
    assert!(h1_row.contains(&format!(",2.000,{want},")), "{h1_row}");
    assert!(csv.lines().find(|l| l.contains(",H2,")).unwrap().ends_with(",,,"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bills.json")).unwrap()).unwrap();
    let jl = json["bills"][0]["lines"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(jl["kind"], "correction");
    assert_eq!(jl["amount"], serde_json::json!(want.to_string()));
    assert_eq!(jl["detail"], serde_json::json!(reference));
    let html = std::fs::read_to_string(dir.path().join("invoices/H1.html")).unwrap();
    assert!(html.contains("Korekcija prethodnog obračuna"), "{html}");
    assert!(html.contains("correction of 2026-10"));
    assert!(!std::fs::read_to_string(dir.path().join("invoices/H2.html")).unwrap().contains("Korekcija"));

    // December corrects November (no estimates: nothing), never October again.
    let dec_month = BillingMonth::parse("2026-12").unwrap();
    next_month(&f, &dec_month).await;
    let dec_run = run(&mut f.client, &opts(dec_month), &t).await.unwrap();
    assert!(dec_run.buildings[0].bills.iter().all(|x| corrections(x).is_empty()));
    assert!(dec_run.buildings[0].problems.iter().all(|p| !p.kind.starts_with("correction")));
}

#[tokio::test]
async fn an_hour_with_apartments_above_the_master_is_a_problem_of_that_building_only() {
    let mut f = setup("2026-10").await;
    let c = &f.client;
    // A second building: master + one flat, consistent every hour.
    let b2 = building(c, "B2", "Njegoševa 2").await;
    let master2 = meter(c, "N0", b2, None).await;
    let h9: i32 = c
        .query_one(
            "INSERT INTO households (code, building_id, apartment, floor_area_m2, residents, approved_power_kw, tariff)
             VALUES ('H9', $1, '1', 50, 2, 6.9, 'eps-household-2025') RETURNING id",
            &[&b2],
        )
        .await
        .unwrap()
        .get(0);
    let flat2 = meter(c, "N1", b2, Some(h9)).await;
    let month = f.month;
    for (m, start, vt, nt) in [(flat2, 5_000_000, 100_000, 50_000), (master2, 9_000_000, 300_000, 150_000)] {
        registers(c, &month, m, CH_VT, start, vt).await;
        registers(c, &month, m, CH_NT, start / 2, nt).await;
        registers(c, &month, m, CH_TOTAL, start + start / 2, vt + nt).await;
    }
    // Four full hours of 1.0.1.8.0 in the rollup, 10 days into the month. B1: master +5 kWh every hour, each
    // flat +1, +2, +1 kWh: in the second hour the flats (6 kWh) exceed the master by 1 kWh. B2: +5 / +1 kWh.
    let h0 = month.start + Duration::hours(240);
    let mut b1 = vec![(f.master, 70_000_000 + 100_000, [5_000, 5_000, 5_000])];
    for (i, &(_, m)) in f.flats.iter().enumerate() {
        let base = 1_000_000 * (i as i64 + 1);
        b1.push((m, base + base / 2 + 10_000, [1_000, 2_000, 1_000]));
    }
    let b2m = [(master2, 13_500_000 + 10_000, [5_000, 5_000, 5_000]), (flat2, 7_500_000 + 10_000, [1_000; 3])];
    for (m, mut v, steps) in b1.into_iter().chain(b2m) {
        for k in 0..4 {
            reading(c, m, CH_TOTAL, h0 + Duration::hours(k), v).await;
            v += steps.get(usize::try_from(k).unwrap()).copied().unwrap_or(0);
        }
    }
    for k in 0..4 {
        c.query_one("SELECT headend_refresh_hour($1)", &[&(h0 + Duration::hours(k))]).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out =
        billing::pipeline::run_with_exports(&mut f.client, &opts(month), &tariffs(), Some(dir.path())).await.unwrap();
    let [r1, r2] = out.buildings.as_slice() else { panic!("two buildings") };
    let neg: Vec<&billing::run::Problem> =
        r1.problems.iter().filter(|p| p.kind == "negative_common_interval").collect();
    let [p] = neg.as_slice() else { panic!("one hour: {:?}", r1.problems) };
    assert_eq!(p.meter_id, Some(f.master));
    assert_eq!(p.household_id, None);
    let hour = h0 + Duration::hours(1);
    assert!(p.detail.contains(&hour.to_string()), "{}", p.detail);
    assert!(p.detail.contains("apartments 6.000 kWh exceed the master 5.000 kWh by 1.000 kWh"), "{}", p.detail);
    assert_eq!((r1.summary.negative_common_intervals, r1.summary.interval_hours_checked), (1, Some(3)));
    assert!(r2.problems.iter().all(|p| p.kind != "negative_common_interval"), "{:?}", r2.problems);
    assert_eq!((r2.summary.negative_common_intervals, r2.summary.interval_hours_checked), (0, Some(3)));
    // The month as a whole still reconciles (common areas positive): bills carry their share.
    assert!(r1.bills.iter().all(|b| b.common_kwh.is_some()));
    // Stored: exactly that row.
    let rows = f
        .client
        .query(
            "SELECT building_id, meter_id, detail FROM billing_problems WHERE run_id = $1 AND kind = 'negative_common_interval'",
            &[&out.meta.run_id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, Option<i32>>(1), Some(f.master));
    assert_eq!(rows[0].get::<_, String>(2), p.detail);
    // The building report (HTML, JSON) and the stored run read back.
    let html = std::fs::read_to_string(dir.path().join("buildings/B1.html")).unwrap();
    assert!(html.contains("1 / 3 h"), "{html}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("buildings.json")).unwrap()).unwrap();
    assert_eq!(json["buildings"][0]["negative_common_intervals"], 1);
    assert_eq!(json["buildings"][1]["negative_common_intervals"], 0);
    let stored = billing::db::load_run(&f.client, &month, None).await.unwrap();
    assert_eq!(stored.buildings[0].summary.negative_common_intervals, 1);
    // A tolerance above 1 kWh: no problem.
    let rules = Rules { interval_tolerance_wh: 1_000, ..opts(month).rules };
    let out = run(&mut f.client, &RunOptions { rules, ..opts(month) }, &tariffs()).await.unwrap();
    assert!(out.buildings.iter().all(|b| b.summary.negative_common_intervals == 0));
    assert!(out.buildings.iter().all(|b| b.summary.interval_hours_checked == Some(3)));
    // Turned off: not checked at all.
    let rules = Rules { interval_check: false, ..opts(month).rules };
    let out = run(&mut f.client, &RunOptions { rules, ..opts(month) }, &tariffs()).await.unwrap();
    assert!(out.buildings.iter().all(|b| b.summary.interval_hours_checked.is_none()));
    assert!(out.buildings.iter().flat_map(|b| &b.problems).all(|p| p.kind != "negative_common_interval"));
}
