//! A household's past bills from the billing tables (`billing_runs`, `bills`, `bill_lines`, written by
//! `billing run`): the list with the old 1/N comparison, one bill with every line, and its CSV.
//!
//! A period may have several run versions (a re-run adds one; a run may cover one building only): for each
//! period the bill of the latest version that billed this household is shown. Money and energy are
//! `NUMERIC` columns read as text into [`Decimal`], never through a float.

use std::str::FromStr;

use billing_core::Period;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::Row;
use utoipa::ToSchema;

/// At most this many periods in a household's list (ten years of months).
pub const MAX_BILLS: i64 = 120;

/// Why bills could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BillsError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("stored {what} {value:?} is not a decimal")]
    Stored { what: &'static str, value: String },
    #[error("csv: {0}")]
    Csv(String),
}

/// One bill as listed: the latest run version of its period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BillSummary {
    /// The billed month, `YYYY-MM` (the Europe/Belgrade month).
    pub period: String,
    /// The version of the period's run this bill comes from (the latest that billed the household).
    pub version: i32,
    /// kWh in the higher (day) tariff.
    pub vt_kwh: Decimal,
    /// kWh in the lower (night) tariff.
    pub nt_kwh: Decimal,
    pub total_kwh: Decimal,
    /// RSD: the sum of the bill's lines, a correction of an earlier bill included.
    pub total: Decimal,
    /// More of the period than the configured threshold was estimated (no actual boundary reading).
    pub estimated: bool,
    /// Share of the period not covered by actual readings, 0–1.
    pub estimated_share: Decimal,
    /// RSD: the correction lines of this bill (an earlier estimated bill recomputed with actual data); 0 when none.
    pub corrections: Decimal,
    /// RSD: what the household would have paid under the old split (the building's master meter ÷ N, billed
    /// like a household); absent when the master meter could not be read.
    pub old_split_total: Option<Decimal>,
    /// RSD: own bill (without corrections) − old split; negative = the household pays less than before.
    pub difference: Option<Decimal>,
    /// `difference` in % of the old split.
    pub difference_percent: Option<Decimal>,
}

impl BillSummary {
    /// The bill of this month's own consumption: the total without corrections of earlier bills (what the
    /// old split is compared with).
    pub fn own_total(&self) -> Decimal {
        self.total - self.corrections
    }
}

/// One line of a bill, as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BillLine {
    pub line_no: i16,
    /// `energy`, `power_charge`, `supplier_charge`, `payment_discount`, `renewable_fee`, `efficiency_fee`,
    /// `excise`, `vat`, `tv_fee`, `correction`, `rounding` (the para that makes the printed lines add up to the
    /// total, rounded once).
    pub kind: String,
    /// Tariff zone of an energy line (`green`, `blue`, `red`).
    pub zone: Option<String>,
    /// `vt` or `nt` on energy lines of a two-rate meter.
    pub tou: Option<String>,
    pub quantity: Decimal,
    /// `kwh`, `kw_month`, `month` or `rsd` (a money base with the rate as unit price).
    pub unit: String,
    pub unit_price: Decimal,
    /// RSD, rounded to the para.
    pub amount: Decimal,
    /// The tariff the line was computed with (two when the tariff changed inside the period).
    pub tariff_code: String,
}

/// One bill with every line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BillDetail {
    /// Household code.
    pub household: String,
    pub apartment: String,
    /// Building code and address.
    pub building: String,
    pub address: String,
    /// Serials of the household's meters in service during the period.
    pub meters: Vec<String>,
    #[serde(flatten)]
    pub bill: BillSummary,
    /// The period's first instant and its end (local midnights, in UTC).
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// When the run was made.
    pub created_at: DateTime<Utc>,
    pub tariff_code: String,
    /// How the building's common areas were split in this run: `equal`, `area` or `residents`.
    pub split_key: String,
    /// kWh: the household's share of the building's common areas and losses (master − Σ flats);
    /// informational, not charged. Absent when the building could not be reconciled.
    pub common_kwh: Option<Decimal>,
    /// Every line in bill order; their amounts add up to `total`.
    pub lines: Vec<BillLine>,
}

/// `YYYY-MM` → the month's first day (months billing can bill: years 2000–2100).
pub fn parse_period(s: &str) -> Option<NaiveDate> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(2000..=2100).contains(&y) {
        return None;
    }
    Period::month(y, m).ok().map(|p| p.first_day())
}

/// The `YYYY-MM` label of a month's first day.
pub fn period_label(first: NaiveDate) -> String {
    format!("{:04}-{:02}", first.year(), first.month())
}

fn dec(r: &Row, i: usize, what: &'static str) -> Result<Decimal, BillsError> {
    let s: String = r.get(i);
    Decimal::from_str(&s).map_err(|_| BillsError::Stored { what, value: s })
}

fn opt_dec(r: &Row, i: usize, what: &'static str) -> Result<Option<Decimal>, BillsError> {
    r.get::<_, Option<String>>(i)
        .map(|s| Decimal::from_str(&s).map_err(|_| BillsError::Stored { what, value: s }))
        .transpose()
}

/// The latest version's bill of each period of household `$1` (`$2`: one period or NULL for all), newest
/// period first, at most `$3` — as `latest (period, version, bill_id)`.
const LATEST: &str = "WITH latest AS (
        SELECT DISTINCT ON (r.period) r.period, r.version, b.id AS bill_id, r.id AS run_id
        FROM bills b JOIN billing_runs r ON r.id = b.run_id
        WHERE b.household_id = $1 AND ($2::date IS NULL OR r.period = $2)
        ORDER BY r.period DESC, r.version DESC
        LIMIT $3)";

/// The [`BillSummary`] columns, in [`summary`]'s order.
const SUMMARY_COLUMNS: &str = "latest.period, latest.version, b.vt_kwh::text, b.nt_kwh::text, b.total_kwh::text,
        b.total::text, b.estimated, b.estimated_share::text,
        (SELECT COALESCE(sum(l.amount), 0)::text FROM bill_lines l WHERE l.bill_id = b.id AND l.kind = 'correction'),
        b.old_split_total::text, b.difference::text, b.difference_percent::text";

fn summary(r: &Row) -> Result<BillSummary, BillsError> {
    Ok(BillSummary {
        period: period_label(r.get(0)),
        version: r.get(1),
        vt_kwh: dec(r, 2, "vt_kwh")?,
        nt_kwh: dec(r, 3, "nt_kwh")?,
        total_kwh: dec(r, 4, "total_kwh")?,
        total: dec(r, 5, "total")?,
        estimated: r.get(6),
        estimated_share: dec(r, 7, "estimated_share")?,
        corrections: dec(r, 8, "corrections")?,
        old_split_total: opt_dec(r, 9, "old_split_total")?,
        difference: opt_dec(r, 10, "difference")?,
        difference_percent: opt_dec(r, 11, "difference_percent")?,
    })
}

/// The household's bills, newest period first (at most [`MAX_BILLS`]).
pub async fn list(c: &tokio_postgres::Client, household_id: i32) -> Result<Vec<BillSummary>, BillsError> {
    let sql = format!(
        "{LATEST} SELECT {SUMMARY_COLUMNS} FROM latest JOIN bills b ON b.id = latest.bill_id ORDER BY latest.period DESC"
    );
    let rows = c.query(&sql, &[&household_id, &None::<NaiveDate>, &MAX_BILLS]).await?;
    rows.iter().map(summary).collect()
}

/// The household's bill of the month starting `period` (its latest version), or `None`.
pub async fn one(
    c: &tokio_postgres::Client,
    household_id: i32,
    period: NaiveDate,
) -> Result<Option<BillDetail>, BillsError> {
    let sql = format!(
        "{LATEST} SELECT {SUMMARY_COLUMNS}, h.code, h.apartment, bl.code, bl.address, r.period_start, r.period_end,
                r.created_at, r.tariff_code, r.split_key, b.common_kwh::text, b.id
         FROM latest JOIN bills b ON b.id = latest.bill_id JOIN billing_runs r ON r.id = latest.run_id
         JOIN households h ON h.id = b.household_id JOIN buildings bl ON bl.id = b.building_id"
    );
    let Some(r) = c.query_opt(&sql, &[&household_id, &Some(period), &1i64]).await? else {
        return Ok(None);
    };
    let bill = summary(&r)?;
    let bill_id: i64 = r.get(22);
    let last_day = Period::month(period.year(), period.month()).map_or(period, |p| p.last_day());
    let meters = c
        .query(
            "SELECT serial FROM meters WHERE household_id = $1 AND kind = 'household'
               AND installed_on <= $2 AND (removed_on IS NULL OR removed_on >= $3) ORDER BY id LIMIT 10",
            &[&household_id, &last_day, &period],
        )
        .await?
        .iter()
        .map(|m| m.get(0))
        .collect();
    let lines = c
        .query(
            "SELECT line_no, kind, zone, tou, quantity::text, unit, unit_price::text, amount::text, tariff_code
             FROM bill_lines WHERE bill_id = $1 ORDER BY line_no LIMIT 200",
            &[&bill_id],
        )
        .await?
        .iter()
        .map(|l| {
            Ok(BillLine {
                line_no: l.get(0),
                kind: l.get(1),
                zone: l.get(2),
                tou: l.get(3),
                quantity: dec(l, 4, "quantity")?,
                unit: l.get(5),
                unit_price: dec(l, 6, "unit_price")?,
                amount: dec(l, 7, "amount")?,
                tariff_code: l.get(8),
            })
        })
        .collect::<Result<Vec<_>, BillsError>>()?;
    Ok(Some(BillDetail {
        household: r.get(12),
        apartment: r.get(13),
        building: r.get(14),
        address: r.get(15),
        meters,
        period_start: r.get(16),
        period_end: r.get(17),
        created_at: r.get(18),
        tariff_code: r.get(19),
        split_key: r.get(20),
        common_kwh: opt_dec(&r, 21, "common_kwh")?,
        bill,
        lines,
    }))
}

/// The header of a bill's CSV.
pub const CSV_HEADER: [&str; 12] = [
    "household",
    "period",
    "version",
    "line_no",
    "kind",
    "zone",
    "tou",
    "quantity",
    "unit",
    "unit_price",
    "amount_rsd",
    "tariff_code",
];

/// A bill as CSV: one row per line (plain decimals with a point, no grouping), in bill order; the amounts
/// add up to the bill's total.
pub fn to_csv(d: &BillDetail) -> Result<String, BillsError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| BillsError::Csv(e.to_string());
    w.write_record(CSV_HEADER).map_err(err)?;
    let version = d.bill.version.to_string();
    for l in &d.lines {
        w.write_record([
            d.household.as_str(),
            d.bill.period.as_str(),
            version.as_str(),
            &l.line_no.to_string(),
            &l.kind,
            l.zone.as_deref().unwrap_or(""),
            l.tou.as_deref().unwrap_or(""),
            &l.quantity.to_string(),
            &l.unit,
            &l.unit_price.to_string(),
            &l.amount.to_string(),
            &l.tariff_code,
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| BillsError::Csv(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| BillsError::Csv(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_strictly() {
        assert_eq!(parse_period("2026-10"), NaiveDate::from_ymd_opt(2026, 10, 1));
        assert_eq!(parse_period("2026-01"), NaiveDate::from_ymd_opt(2026, 1, 1));
        for bad in ["2026-13", "2026-00", "2026-1", "26-10", "2026-10-01", "2026_10", "+026-10", "1999-12", "x", ""] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
        assert_eq!(period_label(NaiveDate::from_ymd_opt(2026, 3, 1).expect("day")), "2026-03");
    }

    #[test]
    fn csv_has_one_row_per_line_and_quotes_what_needs_it() {
        let d = Decimal::from_str;
        let line = |no: i16, kind: &str, amount: &str| BillLine {
            line_no: no,
            kind: kind.into(),
            zone: (kind == "energy").then(|| "green".into()),
            tou: (kind == "energy").then(|| "vt".into()),
            quantity: d("210.000").expect("dec"),
            unit: "kwh".into(),
            unit_price: d("9.6136").expect("dec"),
            amount: d(amount).expect("dec"),
            tariff_code: "eps, 2025".into(),
        };
        let bill = BillDetail {
            household: "H00000002".into(),
            apartment: "1".into(),
            building: "B0001".into(),
            address: "Addr".into(),
            meters: vec![],
            bill: BillSummary {
                period: "2026-10".into(),
                version: 2,
                vt_kwh: Decimal::ZERO,
                nt_kwh: Decimal::ZERO,
                total_kwh: Decimal::ZERO,
                total: d("2018.85").expect("dec"),
                estimated: false,
                estimated_share: Decimal::ZERO,
                corrections: Decimal::ZERO,
                old_split_total: None,
                difference: None,
                difference_percent: None,
            },
            period_start: Utc::now(),
            period_end: Utc::now(),
            created_at: Utc::now(),
            tariff_code: "eps".into(),
            split_key: "equal".into(),
            common_kwh: None,
            lines: vec![line(1, "energy", "2018.86"), line(2, "rounding", "-0.01")],
        };
        let text = to_csv(&bill).expect("csv");
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], CSV_HEADER.join(","));
        assert_eq!(rows[1], "H00000002,2026-10,2,1,energy,green,vt,210.000,kwh,9.6136,2018.86,\"eps, 2025\"");
        assert_eq!(rows[2], "H00000002,2026-10,2,2,rounding,,,210.000,kwh,9.6136,-0.01,\"eps, 2025\"");
    }
}
