use super::*;
use chrono::Duration;
use proptest::prelude::*;

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn step() -> Duration {
    Duration::seconds(INTERVAL_SECS)
}

/// A household meter of each region, and the master of a building of each region.
fn sample_meters(model: &Model) -> Vec<(usize, Region, bool)> {
    let mut out = Vec::new();
    for region in Region::ALL {
        let b = model.fleet().buildings(100_000).find(|b| b.region == region).expect("a building of each region");
        out.push((b.flat_meter(1), region, false));
        out.push((b.flat_meter(b.flats), region, false));
        out.push((b.master_meter(), region, true));
    }
    out
}

#[test]
fn same_seed_same_values_other_seed_other_values() {
    let (a, b, c) = (Model::new(42), Model::new(42), Model::new(43));
    let t = ts("2026-11-20T10:15:00Z");
    let mut differ = 0;
    for i in [0usize, 1, 2, 77, 1000, 204_999] {
        let va = a.interval(i, t).expect("a");
        assert_eq!(va, b.interval(i, t).expect("b"));
        if va != c.interval(i, t).expect("c") {
            differ += 1;
        }
    }
    assert_eq!(differ, 6);
}

#[test]
fn identity_does_not_depend_on_fleet_size() {
    let small = Model::with_meters(9, 10);
    let big = Model::with_meters(9, 400_000);
    let t = ts("2026-01-10T18:00:00Z");
    for i in [0usize, 5, 300_001, 399_999] {
        assert_eq!(small.interval(i, t), big.interval(i, t));
    }
}

#[test]
fn errors_are_clear() {
    let m = Model::new(1);
    assert!(matches!(m.interval(0, ts("2026-11-20T10:05:00Z")), Err(ModelError::NotOnBoundary(_))));
    assert!(matches!(m.interval(0, ts("2023-12-31T12:00:00Z")), Err(ModelError::OutOfRange(_))));
    assert!(matches!(m.interval(0, ts("2100-01-01T12:00:00Z")), Err(ModelError::OutOfRange(_))));
    assert!(matches!(
        m.interval(fleet::MAX_INDEX + 1, ts("2026-11-20T10:15:00Z")),
        Err(ModelError::IndexOutOfRange(_))
    ));
    assert!(matches!(m.interval_by_serial("XYZ", ts("2026-11-20T10:15:00Z")), Err(ModelError::UnknownMeter(_))));
    // The first and last modelled intervals work.
    assert!(m.interval(3, ts("2023-12-31T23:15:00Z")).is_ok(), "00:15 CET on 2024-01-01");
    assert!(m.interval(3, ts("2099-12-31T23:00:00Z")).is_ok());
    let e = m.interval(0, ts("2026-11-20T10:05:00Z")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("15-minute"), "{e}");
}

/// Walks every interval of a period and checks registers against interval energies, both computed
/// afresh and through a series; returns per local day the number of NT intervals.
fn walk(
    model: &Model,
    index: usize,
    region: Region,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(NaiveDate, usize)> {
    let mut series = model.series(index).expect("series");
    let mut prev = model.registers_at(index, from).expect("start");
    let mut t = from + step();
    let mut nights: Vec<(NaiveDate, usize)> = Vec::new();
    while t <= to {
        let v = series.interval(t).expect("interval");
        let fresh = model.registers_at(index, t).expect("fresh");
        assert_eq!(v.registers, fresh, "series = fresh at {t}");
        assert_eq!(v.energy, fresh.minus(&prev), "delta = energy at {t} for meter {index}");
        assert!(v.energy.import_vt >= 0 && v.energy.import_nt >= 0 && v.energy.export >= 0, "{v:?}");
        let start_local = (t - step()).with_timezone(&Belgrade);
        let night = region.is_night_hour(start_local.hour());
        assert_eq!(v.night, night, "{t}");
        if night {
            assert_eq!(v.energy.import_vt, 0, "no VT energy in the night window at {t}");
            assert!(v.energy.import_nt > 0, "NT energy in every night interval at {t}: {v:?}");
        } else {
            assert_eq!(v.energy.import_nt, 0, "no NT energy outside the night window at {t}");
            assert!(v.energy.import_vt > 0, "VT energy in every day interval at {t}: {v:?}");
        }
        let h = start_local.hour();
        if !(7..19).contains(&h) {
            assert_eq!(v.energy.export, 0, "export only in daylight at {t}");
        }
        let date = start_local.date_naive();
        match nights.last_mut() {
            Some((d, n)) if *d == date => *n += usize::from(night),
            _ => nights.push((date, usize::from(night))),
        }
        prev = fresh;
        t += step();
    }
    nights
}

#[test]
fn registers_and_energies_agree_across_midnight_and_dst() {
    let model = Model::new(2026);
    let periods = [
        // spring: 2026-03-29 02:00 CET → 03:00 CEST (23-hour day)
        ("2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z", [(28, "2026-03-29")]),
        // autumn: 2026-10-25 03:00 CEST → 02:00 CET (25-hour day)
        ("2026-10-23T22:00:00Z", "2026-10-26T23:00:00Z", [(36, "2026-10-25")]),
        // an ordinary winter week-end
        ("2026-01-09T23:00:00Z", "2026-01-11T23:00:00Z", [(32, "2026-01-10")]),
    ];
    for (index, region, _) in sample_meters(&model) {
        for (from, to, special) in &periods {
            let nights = walk(&model, index, region, ts(from), ts(to));
            for (date, count) in &nights {
                let expect = special.iter().find(|(_, d)| date.to_string() == *d).map(|(n, _)| *n).unwrap_or(32);
                // Partial days at the ends of the walk are skipped.
                if nights.first().map(|x| x.0) != Some(*date) && nights.last().map(|x| x.0) != Some(*date) {
                    assert_eq!(*count, expect, "NT intervals on {date} in {region:?}");
                }
            }
        }
    }
}

#[test]
fn day_lengths_follow_dst() {
    for (date, n) in [("2026-03-29", 92), ("2026-10-25", 100), ("2026-07-01", 96), ("2026-01-01", 96)] {
        let d: NaiveDate = date.parse().expect("date");
        assert_eq!(DayInfo::new(d).map(|i| i.n), Some(n), "{date}");
    }
    // NT interval counts for every region on the three kinds of day.
    for r in Region::ALL {
        for (date, n) in [("2026-03-29", 28), ("2026-10-25", 36), ("2026-07-01", 32)] {
            let info = DayInfo::new(date.parse().expect("date")).expect("info");
            let count = (0..info.n).filter(|k| info.is_night(region_index(r), *k)).count();
            assert_eq!(count, n, "{r:?} {date}");
        }
    }
}

#[test]
fn master_is_flats_plus_common_plus_losses() {
    let model = Model::new(77);
    for b in model.fleet().buildings(20_000).step_by(37).take(4) {
        for t in ["2026-11-20T10:15:00Z", "2026-11-20T23:00:00Z", "2026-03-29T01:00:00Z", "2026-07-15T12:30:00Z"] {
            let t = ts(t);
            let p = model.master_parts(b.index, t).expect("parts");
            assert_eq!(p.master, p.flats.plus(&p.common).plus(&p.losses));
            let v = model.interval(b.master_meter(), t).expect("master");
            assert_eq!(v.energy, p.master);
            assert_eq!(v.registers.export, 0);
            // Flats sum computed independently.
            let mut sum = Registers::default();
            for a in 1..=b.flats {
                sum = sum.plus(&model.interval(b.flat_meter(a), t).expect("flat").energy);
            }
            assert_eq!(sum.import_vt, p.flats.import_vt);
            assert_eq!(sum.import_nt, p.flats.import_nt);
            for (loss, base) in [
                (p.losses.import_vt, p.flats.import_vt + p.common.import_vt),
                (p.losses.import_nt, p.flats.import_nt + p.common.import_nt),
            ] {
                let exact = base as f64 * f64::from(p.loss_ppm) / 1e6;
                assert!((loss as f64 - exact).abs() < 1.0 + 1e-9, "loss {loss} vs {exact}");
            }
            let common = p.common.import_total();
            assert!(common > 0 && common < 2_000, "common-area interval {common} Wh");
        }
    }
}

#[test]
fn batch_equals_single_meter_evaluation() {
    let model = Model::new(5);
    // A fleet size that cuts its last building.
    let meters = 1_000;
    let last = model.fleet().buildings(meters).last().expect("buildings");
    assert!(last.meters().end > meters, "the last building is cut");
    let mut batch = model.batch(meters);
    let mut t = ts("2026-10-24T21:00:00Z");
    for _ in 0..12 {
        let regs = batch.registers_at(t).expect("batch").to_vec();
        assert_eq!(regs.len(), meters);
        for i in (0..meters).step_by(13).chain([last.master_meter(), meters - 1]) {
            assert_eq!(regs[i], model.registers_at(i, t).expect("single"), "meter {i} at {t}");
            assert_eq!(batch.voltage_dv(i, t), model.voltage_dv(i, t).expect("voltage"));
        }
        t += Duration::hours(3) + step();
    }
    // Going back in time works too.
    let back = ts("2026-10-24T21:15:00Z");
    assert_eq!(batch.registers_at(back).expect("back")[7], model.registers_at(7, back).expect("single"));
}

#[test]
fn consumption_is_in_typical_ranges() {
    let model = Model::new(11);
    let fleet = model.fleet();
    let mut intervals = Vec::new();
    let mut days_plain = Vec::new();
    let mut days_heated = Vec::new();
    for b in fleet.buildings(6_000) {
        for a in (1..=b.flats).step_by(7) {
            let flat = fleet.flat(&b, a);
            for (from, to) in
                [("2026-01-13T23:00:00Z", "2026-01-14T23:00:00Z"), ("2026-05-12T22:00:00Z", "2026-05-13T22:00:00Z")]
            {
                let (from, to) = (ts(from), ts(to));
                let r0 = model.registers_at(flat.meter, from).expect("r0");
                let r1 = model.registers_at(flat.meter, to).expect("r1");
                let day = r1.minus(&r0).import_total();
                if flat.traits.electric_heating && from.month() == 1 {
                    days_heated.push(day);
                } else {
                    days_plain.push(day);
                }
                let mut s = model.series(flat.meter).expect("series");
                let mut t = from + step();
                while t <= to {
                    intervals.push(s.interval(t).expect("interval").energy.import_total());
                    t += step();
                }
                assert!(r0.import_total() > 500_000 && r0.import_total() < 80_000_000, "register {r0:?}");
            }
        }
    }
    let pct = |v: &mut Vec<i64>, p: usize| {
        v.sort_unstable();
        v[(v.len() - 1) * p / 100]
    };
    let (p1, p50, p99) = (pct(&mut intervals, 1), pct(&mut intervals, 50), pct(&mut intervals, 99));
    assert!(p1 >= 10 && (40..=300).contains(&p50) && p99 <= 1_500, "15-min import p1 {p1} p50 {p50} p99 {p99}");
    let (d5, d95) = (pct(&mut days_plain, 5), pct(&mut days_plain, 95));
    assert!(d5 >= 2_500 && d95 <= 35_000, "daily import p5 {d5} p95 {d95}");
    let (h50, h95) = (pct(&mut days_heated, 50), pct(&mut days_heated, 95));
    println!("15-min import p1 {p1} p50 {p50} p99 {p99}; daily p5 {d5} p95 {d95}; heated winter p50 {h50} p95 {h95}");
    assert!(h50 > pct(&mut days_plain, 50) && h95 <= 70_000, "heated winter days p50 {h50} p95 {h95}");
}

#[test]
fn voltage_is_in_range_with_one_decimal() {
    let model = Model::new(3);
    let mut t = ts("2026-11-20T00:00:00Z");
    let ch = schemas::channel::by_obis(&"1.0.32.7.0".parse().expect("obis")).expect("channel");
    for _ in 0..96 {
        for i in (0..5_000).step_by(101) {
            let v = model.voltage_dv(i, t).expect("voltage");
            assert!((VOLTAGE_MIN_DV..=VOLTAGE_MAX_DV).contains(&v));
            let physical = f64::from(v) / 10.0;
            assert_eq!(ch.to_stored(physical), Some(i64::from(v)));
            let json = serde_json::to_string(&physical).expect("json");
            let back: f64 = serde_json::from_str(&json).expect("parse");
            assert_eq!(ch.to_stored(back), Some(i64::from(v)), "{json}");
        }
        t += step();
    }
}

#[test]
fn week_and_season_tables_are_consistent() {
    for row in WEEK {
        assert_eq!(row.iter().map(|w| u32::from(*w)).sum::<u32>(), 7000);
        assert!(row.iter().all(|w| i64::from(*w) >= WEEK_MIN));
    }
    // Cumulative sums equal day-by-day sums.
    let s = seasons();
    let mut d = first_day();
    let mut acc = 0u64;
    let mut week = 0u64;
    for day in 0..(366 * 5) {
        assert_eq!(s.heat.cumulative(d), acc, "{d}");
        assert_eq!(week_cumulative(0, day), week, "{d}");
        acc += u64::from(season(&HEAT, d.month0() as usize, d.day()));
        week += u64::from(WEEK[0][d.weekday().num_days_from_monday() as usize]);
        assert!(i64::from(season(&SUN, d.month0() as usize, d.day())) >= SUN_MIN);
        d = d.succ_opt().expect("next day");
    }
}

#[test]
fn day_totals_are_positive_for_many_loads() {
    let model = Model::new(8);
    let fleet = model.fleet();
    let dates = [first_day(), "2026-01-15".parse().expect("d"), "2026-07-15".parse().expect("d"), last_day()];
    for b in fleet.buildings(3_000) {
        let mut loads: Vec<Load> = (1..=b.flats).map(|a| Load::flat(8, &b, &fleet.flat(&b, a))).collect();
        loads.push(Load::common(8, &b));
        for load in &loads {
            for date in dates {
                let info = DayInfo::new(date).expect("info");
                for c in [VT, NT, EXP] {
                    let day = info.day;
                    let t = load.day_start(c, &info.next, day + 1) - load.day_start(c, &info.cum, day);
                    if c == EXP {
                        assert!(if load.pv { t > 0 } else { t == 0 }, "export day total {t} on {date}");
                    } else {
                        assert!(t > 0, "import day total {t} on {date}");
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn batch_speed_205k() {
    let model = Model::with_meters(1, 205_000);
    let t0 = std::time::Instant::now();
    let mut batch = model.batch(205_000);
    let setup = t0.elapsed();
    let t = ts("2026-11-20T10:15:00Z");
    let t1 = std::time::Instant::now();
    let sum: i64 = batch.registers_at(t).expect("batch").iter().map(|r| r.import_total()).sum();
    let first = t1.elapsed();
    let t2 = std::time::Instant::now();
    let sum2: i64 = batch.registers_at(t + step()).expect("batch").iter().map(|r| r.import_total()).sum();
    let next = t2.elapsed();
    let t3 = std::time::Instant::now();
    let v: i64 = (0..205_000).map(|i| i64::from(batch.voltage_dv(i, t))).sum();
    let volts = t3.elapsed();
    println!(
        "205k meters: setup {setup:?}, first interval of a day {first:?}, next interval {next:?}, voltages {volts:?} \
         (checksums {sum} {sum2} {v})"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn registers_are_monotonic_and_consistent(seed in any::<u64>(), index in 0usize..60_000, q in 0i64..2_600_000) {
        let model = Model::with_meters(seed, 10);
        // Interval ends from 2024-01-02 on, every 15 minutes for ~74 years.
        let t = ts("2024-01-02T00:00:00Z") + Duration::seconds(q * INTERVAL_SECS);
        let v = model.interval(index, t).expect("interval");
        let prev = model.registers_at(index, t - step()).expect("prev");
        prop_assert_eq!(v.energy, v.registers.minus(&prev));
        prop_assert!(v.energy.import_vt >= 0 && v.energy.import_nt >= 0 && v.energy.export >= 0);
        prop_assert!(v.energy.import_total() > 0);
        prop_assert!(v.registers.import_vt > 0 && v.registers.import_nt > 0 && v.registers.export >= 0);
        prop_assert!((VOLTAGE_MIN_DV..=VOLTAGE_MAX_DV).contains(&v.voltage_dv));
        let next = model.interval(index, t + step()).expect("next");
        prop_assert!(next.registers.import_total() > v.registers.import_total());
        prop_assert!(next.registers.export >= v.registers.export);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any meter index and any time give a value or an error, never a panic.
    #[test]
    fn never_panics(index in prop_oneof![0usize..300_000, any::<usize>()], secs in -100_000_000_000i64..100_000_000_000, round in any::<bool>()) {
        let model = Model::new(1);
        let secs = if round { secs - secs.rem_euclid(INTERVAL_SECS) } else { secs };
        if let Some(t) = DateTime::from_timestamp(secs, 0) {
            let _ = model.interval(index, t);
            let _ = model.voltage_dv(index, t);
            let _ = model.master_parts(index % 5_000, t);
        }
        let _ = model.interval_by_serial(&fleet::serial(index), ts("2026-11-20T10:15:00Z"));
    }

    #[test]
    fn parsers_never_panic(s in ".{0,40}") {
        let _ = fleet::index_of(&s);
        let _ = crate::span::parse_ts(&s);
        let _ = crate::channels::parse_channels(&s);
        let _ = crate::mqtt::options(&s, "x");
    }
}
