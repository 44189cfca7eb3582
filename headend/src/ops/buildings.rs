//! Building reconciliation from what `billing run` stored: per building and billed month, the master meter
//! minus the sum of the flats is the common areas plus losses.
//!
//! Which run counts: a period's newest run over all buildings, unless a newer run of that one building
//! (`billing run --building`) exists. The rule is billing's own (`billing_core::run::rebuild_summary`):
//! a building is reconciled when every household of the inventory has a bill with its common-area share;
//! then common = Σ shares and master = Σ flats + common. A master below the flats is stored as a
//! `negative_common` problem (no shares): those buildings are flagged, with the problem's text.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

use super::{limit_offset, OpsError, PER_PAGE};

/// Which buildings a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    #[default]
    All,
    /// Negative common consumption (the flats above the master).
    Negative,
    /// Any billing problem.
    Problems,
}

impl Show {
    pub fn parse(s: &str) -> Option<Show> {
        match s {
            "all" => Some(Show::All),
            "negative" => Some(Show::Negative),
            "problems" => Some(Show::Problems),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Show::All => "all",
            Show::Negative => "negative",
            Show::Problems => "problems",
        }
    }
}

/// One building in one billed month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reconciliation {
    /// First day of the billed month.
    pub period: NaiveDate,
    pub building: String,
    pub address: String,
    pub municipality: String,
    /// The run that counts and its version.
    pub run_id: i64,
    pub version: i32,
    /// Households in the inventory, and bills of the run.
    pub households: i64,
    pub bills: i64,
    pub estimated_bills: i64,
    /// Σ flats (kWh).
    pub flats_kwh: Decimal,
    /// Common areas + losses and the master, when reconciled.
    pub common_kwh: Option<Decimal>,
    pub master_kwh: Option<Decimal>,
    /// Common areas + losses as a share of the master, in %.
    pub common_percent: Option<Decimal>,
    /// The flats used more than the master measured.
    pub negative: bool,
    pub problems: i64,
    /// Σ bills (RSD) and under the old 1/N split (when every bill has it).
    pub billed_rsd: Decimal,
    pub one_over_n_rsd: Option<Decimal>,
}

/// The statement behind lists and the building page: the counting run of each (period, building), and
/// its bills and problems grouped. `$1` periods, `$2` one building code or null, `$3` [`Show`].
const RECONCILE: &str = "
    WITH runs AS (
        SELECT id, period, version, building_code FROM billing_runs WHERE period = ANY($1)
    ), full_run AS (
        SELECT DISTINCT ON (period) period, id, version FROM runs WHERE building_code IS NULL
        ORDER BY period, version DESC
    ), latest AS (
        SELECT p.period, b.id AS building_id, b.code, b.address, b.municipality,
               COALESCE((SELECT r.id FROM runs r WHERE r.period = p.period AND r.building_code = b.code
                           AND r.version > COALESCE(f.version, 0) ORDER BY r.version DESC LIMIT 1), f.id) AS run_id
        FROM unnest($1::date[]) AS p(period)
        CROSS JOIN buildings b
        LEFT JOIN full_run f ON f.period = p.period
        WHERE $2::text IS NULL OR b.code = $2
    ), agg AS (
        SELECT l.period, l.building_id, count(*) AS bills, count(*) FILTER (WHERE bi.estimated) AS estimated,
               sum(bi.total_kwh) AS flats, count(bi.common_kwh) AS with_common, sum(bi.common_kwh) AS common,
               sum(bi.total) AS billed, count(bi.old_split_total) AS with_old, sum(bi.old_split_total) AS old
        FROM latest l JOIN bills bi ON bi.run_id = l.run_id AND bi.building_id = l.building_id
        GROUP BY l.period, l.building_id
    ), prob AS (
        SELECT l.period, l.building_id, count(*) AS n, bool_or(p.kind = 'negative_common') AS negative
        FROM latest l JOIN billing_problems p ON p.run_id = l.run_id AND p.building_id = l.building_id
        GROUP BY l.period, l.building_id
    ), rec AS (
        SELECT l.period, l.code, l.address, l.municipality, l.run_id, r.version,
               (SELECT count(*) FROM households h WHERE h.building_id = l.building_id) AS households,
               COALESCE(a.bills, 0) AS bills, COALESCE(a.estimated, 0) AS estimated,
               COALESCE(a.flats, 0) AS flats, a.with_common, a.common,
               COALESCE(a.billed, 0) AS billed, a.with_old, a.old,
               COALESCE(p.n, 0) AS problems,
               COALESCE(p.negative, false) OR COALESCE(a.common < 0, false) AS negative
        FROM latest l
        JOIN billing_runs r ON r.id = l.run_id
        LEFT JOIN agg a ON a.period = l.period AND a.building_id = l.building_id
        LEFT JOIN prob p ON p.period = l.period AND p.building_id = l.building_id
        WHERE a.bills IS NOT NULL OR p.n IS NOT NULL
    ), hit AS (
        SELECT * FROM rec
        WHERE $3::text = 'all' OR ($3::text = 'negative' AND negative) OR ($3::text = 'problems' AND problems > 0)
    )";

const COLUMNS: &str = "period, code, address, municipality, run_id, version, households, bills, estimated, flats::text,
    CASE WHEN bills > 0 AND bills = households AND with_common = bills THEN common::text END,
    billed::text, CASE WHEN with_old = bills AND bills > 0 THEN old::text END, problems, negative";

fn dec(s: &str) -> Result<Decimal, OpsError> {
    Decimal::from_str(s).map_err(|e| OpsError::Invalid(format!("stored number {s:?}: {e}")))
}

fn row(r: &tokio_postgres::Row, at: usize) -> Result<Reconciliation, OpsError> {
    let flats = dec(r.get(at + 9))?;
    let common = r.get::<_, Option<&str>>(at + 10).map(dec).transpose()?;
    let master = common.map(|c| c + flats);
    let common_percent = match (common, master) {
        (Some(c), Some(m)) if !m.is_zero() => Some(billing_core::money::round_para(c * Decimal::ONE_HUNDRED / m)),
        _ => None,
    };
    Ok(Reconciliation {
        period: r.get(at),
        building: r.get(at + 1),
        address: r.get(at + 2),
        municipality: r.get(at + 3),
        run_id: r.get(at + 4),
        version: r.get(at + 5),
        households: r.get(at + 6),
        bills: r.get(at + 7),
        estimated_bills: r.get(at + 8),
        flats_kwh: flats,
        common_kwh: common,
        master_kwh: master,
        common_percent,
        billed_rsd: dec(r.get(at + 11))?,
        one_over_n_rsd: r.get::<_, Option<&str>>(at + 12).map(dec).transpose()?,
        problems: r.get(at + 13),
        negative: r.get(at + 14),
    })
}

/// The billed months with a run, newest first (at most `limit`).
pub async fn periods(c: &impl GenericClient, limit: i64) -> Result<Vec<NaiveDate>, OpsError> {
    let rows = c.query("SELECT DISTINCT period FROM billing_runs ORDER BY period DESC LIMIT $1", &[&limit]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A page of buildings of one billed month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildingPage {
    /// The billed month (absent when nothing has been billed yet).
    pub period: Option<NaiveDate>,
    pub show: Show,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    /// Flagged first, then by code.
    pub buildings: Vec<Reconciliation>,
}

/// Page `page` of the buildings of `period` (its first day).
pub async fn page(c: &impl GenericClient, period: NaiveDate, show: Show, page: i64) -> Result<BuildingPage, OpsError> {
    let (limit, offset) = limit_offset(page);
    let sql = format!(
        "{RECONCILE}, pg AS (SELECT * FROM hit ORDER BY negative DESC, code LIMIT $4 OFFSET $5)
         SELECT t.total, pg.* FROM (SELECT count(*) AS total FROM hit) t
         LEFT JOIN LATERAL (SELECT {COLUMNS} FROM pg) pg ON true
         ORDER BY pg.negative DESC, pg.code"
    );
    let rows = c.query(&sql, &[&vec![period], &None::<String>, &show.as_str(), &limit, &offset]).await?;
    let total = rows.first().map_or(0, |r| r.get(0));
    let mut buildings = Vec::new();
    for r in rows.iter().filter(|r| r.get::<_, Option<NaiveDate>>(1).is_some()) {
        buildings.push(row(r, 1)?);
    }
    Ok(BuildingPage { period: Some(period), show, total, page, per_page: PER_PAGE, buildings })
}

/// One household's bill in the run that counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlatBill {
    pub household: String,
    pub apartment: String,
    pub vt_kwh: Decimal,
    pub nt_kwh: Decimal,
    pub total_kwh: Decimal,
    pub common_kwh: Option<Decimal>,
    pub total_rsd: Decimal,
    pub old_split_rsd: Option<Decimal>,
    pub difference_rsd: Option<Decimal>,
    pub estimated: bool,
}

/// A problem billing recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemRow {
    pub kind: String,
    pub household: Option<String>,
    pub meter: Option<String>,
    pub detail: String,
}

/// A building's page: its months, and one month's bills and problems.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildingDetail {
    pub code: String,
    pub address: String,
    pub municipality: String,
    pub region: String,
    /// Master meters (serials) and the building's transformer and feeder.
    pub masters: Vec<String>,
    pub transformer: Option<String>,
    pub feeder: Option<String>,
    /// The billed months (newest first, at most 12) with the building's reconciliation.
    pub months: Vec<Reconciliation>,
    /// The month shown and its bills and problems.
    pub period: Option<NaiveDate>,
    pub bills: Vec<FlatBill>,
    pub problems: Vec<ProblemRow>,
}

/// Building `code`'s page for `period` (default: the newest month it was billed); `None` when no such building.
pub async fn detail(
    c: &impl GenericClient,
    code: &str,
    period: Option<NaiveDate>,
) -> Result<Option<BuildingDetail>, OpsError> {
    let Some(b) = c
        .query_opt(
            "SELECT b.id, b.code, b.address, b.municipality, b.region,
                    COALESCE((SELECT array_agg(serial ORDER BY serial) FROM meters
                              WHERE building_id = b.id AND kind = 'master' AND removed_on IS NULL), '{}'),
                    (SELECT transformer FROM meters WHERE building_id = b.id AND transformer IS NOT NULL
                     ORDER BY kind = 'master' DESC, id LIMIT 1),
                    (SELECT feeder FROM meters WHERE building_id = b.id AND feeder IS NOT NULL
                     ORDER BY kind = 'master' DESC, id LIMIT 1)
             FROM buildings b WHERE b.code = $1",
            &[&code],
        )
        .await?
    else {
        return Ok(None);
    };
    let building_id: i32 = b.get(0);
    let recent = periods(c, 12).await?;
    let sql = format!("{RECONCILE} SELECT {COLUMNS} FROM hit ORDER BY period DESC");
    let mut months = Vec::new();
    for r in c.query(&sql, &[&recent, &Some(code), &Show::All.as_str()]).await? {
        months.push(row(&r, 0)?);
    }
    let shown = period.or_else(|| months.first().map(|m| m.period));
    let run = shown.and_then(|p| months.iter().find(|m| m.period == p)).map(|m| m.run_id);
    let (mut bills, mut problems) = (Vec::new(), Vec::new());
    if let Some(run) = run {
        for r in c
            .query(
                "SELECT h.code, h.apartment, bi.vt_kwh::text, bi.nt_kwh::text, bi.total_kwh::text, bi.common_kwh::text,
                        bi.total::text, bi.old_split_total::text, bi.difference::text, bi.estimated
                 FROM bills bi JOIN households h ON h.id = bi.household_id
                 WHERE bi.run_id = $1 AND bi.building_id = $2
                 ORDER BY length(h.apartment), h.apartment, h.code LIMIT 1000",
                &[&run, &building_id],
            )
            .await?
        {
            let opt = |i: usize| r.get::<_, Option<&str>>(i).map(dec).transpose();
            bills.push(FlatBill {
                household: r.get(0),
                apartment: r.get(1),
                vt_kwh: dec(r.get(2))?,
                nt_kwh: dec(r.get(3))?,
                total_kwh: dec(r.get(4))?,
                common_kwh: opt(5)?,
                total_rsd: dec(r.get(6))?,
                old_split_rsd: opt(7)?,
                difference_rsd: opt(8)?,
                estimated: r.get(9),
            });
        }
        problems = c
            .query(
                "SELECT p.kind, h.code, m.serial, p.detail FROM billing_problems p
                 LEFT JOIN households h ON h.id = p.household_id LEFT JOIN meters m ON m.id = p.meter_id
                 WHERE p.run_id = $1 AND p.building_id = $2
                 ORDER BY p.kind, h.code NULLS FIRST LIMIT 1000",
                &[&run, &building_id],
            )
            .await?
            .iter()
            .map(|r| ProblemRow { kind: r.get(0), household: r.get(1), meter: r.get(2), detail: r.get(3) })
            .collect();
    }
    Ok(Some(BuildingDetail {
        code: b.get(1),
        address: b.get(2),
        municipality: b.get(3),
        region: b.get(4),
        masters: b.get(5),
        transformer: b.get(6),
        feeder: b.get(7),
        months,
        period: shown,
        bills,
        problems,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;
    use crate::ops::testdata;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    /// A run of `period` (`building` = one building's run) with bills `(household, total kWh, common kWh)`.
    async fn run(
        c: &tokio_postgres::Client,
        period: &str,
        building: Option<&str>,
        bills: &[(&str, &str, Option<&str>)],
    ) -> i64 {
        let id: i64 = c
            .query_one(
                "INSERT INTO billing_runs (period, building_code, tariff_code, split_key, version, period_start, period_end)
                 SELECT $1::text::date, $2, 'eps', 'equal', COALESCE(max(version), 0) + 1, now(), now()
                 FROM billing_runs WHERE period = $1::text::date RETURNING id",
                &[&period, &building],
            )
            .await
            .expect("run")
            .get(0);
        for (hh, total, common) in bills {
            c.execute(
                "INSERT INTO bills (run_id, household_id, building_id, vt_kwh, nt_kwh, total_kwh, common_kwh, total,
                                    estimated_share, estimated, old_split_total)
                 SELECT $1, h.id, h.building_id, $3::text::numeric, 0, $3::text::numeric, $4::text::numeric, 1000, 0,
                        false, 900
                 FROM households h WHERE h.code = $2",
                &[&id, hh, total, common],
            )
            .await
            .expect("bill");
        }
        id
    }

    #[tokio::test]
    async fn reconciliation_uses_the_run_that_counts_and_flags_negative_common() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        testdata::fleet(&c).await;
        let b1 = [("HB1-1", "100", Some("10")), ("HB1-2", "200", Some("10")), ("HB1-3", "50", Some("10"))];
        let b2 = [("HB2-1", "100", None), ("HB2-2", "100", None), ("HB2-3", "100", None)];
        run(&c, "2026-10-01", None, &b1).await;
        let second = run(&c, "2026-10-01", None, &[&b1[..], &b2[..]].concat()).await;
        c.execute(
            "INSERT INTO billing_problems (run_id, building_id, kind, detail)
             SELECT $1, id, 'negative_common', 'apartments (300000 Wh) exceed the master (290000 Wh) by 10000 Wh'
             FROM buildings WHERE code = 'B2'",
            &[&second],
        )
        .await
        .expect("problem");
        // A later run of B1 alone replaces B1's figures.
        let b1_again = [("HB1-1", "100", Some("20")), ("HB1-2", "200", Some("20")), ("HB1-3", "50", Some("20"))];
        let third = run(&c, "2026-10-01", Some("B1"), &b1_again).await;
        run(&c, "2026-09-01", None, &b1).await;

        let oct: NaiveDate = "2026-10-01".parse().expect("day");
        let p = page(&c, oct, Show::All, 1).await.expect("page");
        assert_eq!(p.total, 2);
        let (neg, ok) = (&p.buildings[0], &p.buildings[1]);
        assert_eq!((neg.building.as_str(), neg.negative, neg.common_kwh, neg.problems), ("B2", true, None, 1));
        assert_eq!(neg.flats_kwh, d("300"));
        assert_eq!((ok.building.as_str(), ok.run_id, ok.version), ("B1", third, 3));
        assert_eq!((ok.flats_kwh, ok.common_kwh, ok.master_kwh), (d("350"), Some(d("60")), Some(d("410"))));
        assert_eq!(ok.common_percent, Some(d("14.63")));
        assert_eq!((ok.billed_rsd, ok.one_over_n_rsd), (d("3000"), Some(d("2700"))));
        let negative = page(&c, oct, Show::Negative, 1).await.expect("page");
        assert_eq!(negative.buildings.iter().map(|b| b.building.as_str()).collect::<Vec<_>>(), ["B2"]);
        assert_eq!(
            periods(&c, 10).await.expect("periods"),
            ["2026-10-01".parse::<NaiveDate>().expect("d"), "2026-09-01".parse().expect("d")]
        );

        let d1 = detail(&c, "B1", None).await.expect("detail").expect("found");
        assert_eq!(d1.masters, ["M1"]);
        assert_eq!(d1.transformer.as_deref(), Some("T1"));
        assert_eq!(d1.months.len(), 2);
        assert_eq!(d1.period, Some(oct));
        assert_eq!(d1.bills.len(), 3);
        assert_eq!(d1.bills[0].common_kwh, Some(d("20")));
        let d2 = detail(&c, "B2", Some(oct)).await.expect("detail").expect("found");
        assert_eq!(d2.problems.len(), 1);
        assert_eq!(d2.problems[0].kind, "negative_common");
        assert!(detail(&c, "B9", None).await.expect("detail").is_none());
    }
}
