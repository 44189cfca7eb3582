//! Downloads of a month's 15-minute intervals: CSV, and Green Button (NAESB ESPI, Atom XML).
//!
//! **CSV** (`text/csv`, UTF-8, comma-separated, `.` as decimal point whatever the page language): one row per
//! interval that has ended, in time order: `start_local` (RFC 3339 with the Europe/Belgrade offset, so DST
//! days are unambiguous), `end_utc` (the reading's `ts`), `kwh` (1.0.1.8.0), `vt_kwh`, `nt_kwh`, `status`
//! (`actual`, or `missing` with the values empty: nothing is estimated).
//!
//! **Green Button** (`application/atom+xml`): an Atom feed with the ESPI resources of one usage point —
//! `UsagePoint` (electricity), `MeterReading`, `ReadingType` (Wh, `powerOfTenMultiplier` 0, 900-second
//! intervals, kind energy, delta data, forward flow) and one `IntervalBlock` per local day with data, holding an
//! `IntervalReading` per interval with data (`timePeriod` start in Unix seconds and duration 900, `value`
//! in Wh). Missing intervals are left out, as ESPI expects, never filled. Times are Unix seconds (UTC), so no
//! `LocalTimeParameters` resource is needed to read them.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Belgrade;
use sha2::{Digest, Sha256};

use super::calendar::{day_of_interval, INTERVAL};
use super::IntervalRow;

/// `text/csv; charset=utf-8`.
pub const CSV_TYPE: &str = "text/csv; charset=utf-8";
/// Green Button's media type.
pub const ESPI_TYPE: &str = "application/atom+xml; charset=utf-8";

fn kwh(wh: Option<i64>) -> String {
    wh.map(|w| billing_core::money::wh_to_kwh(w).to_string()).unwrap_or_default()
}

/// The CSV of intervals.
pub fn csv(rows: &[IntervalRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 64 + 64));
    w.write_record(["start_local", "end_utc", "kwh", "vt_kwh", "nt_kwh", "status"])?;
    for r in rows {
        let start = (r.end - INTERVAL).with_timezone(&Belgrade).to_rfc3339();
        let end = r.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = if r.energy.total.is_some() { "actual" } else { "missing" };
        w.write_record([start, end, kwh(r.energy.total), kwh(r.energy.vt), kwh(r.energy.nt), status.to_owned()])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// Escapes text for XML content and attribute values: askama's HTML escaping, whose numeric character
/// references (`&#38;`, `&#60;`, …) are XML too.
fn esc(s: &str) -> String {
    let Ok(escaped) = askama::filters::escape(s, askama::filters::Html);
    escaped.to_string()
}

/// A stable `urn:uuid:` for a resource of a household (name-based: SHA-256 of the parts, version bits 5).
fn urn(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&h.finalize()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!("urn:uuid:{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What the feed describes.
#[derive(Debug, Clone, Copy)]
pub struct Feed<'a> {
    /// Household code (the usage point).
    pub household: &'a str,
    /// The month, `YYYY-MM` (for titles and ids).
    pub month: &'a str,
    /// When the feed was made.
    pub updated: DateTime<Utc>,
}

/// Green Button (ESPI) Atom XML of the intervals.
pub fn espi(feed: Feed<'_>, rows: &[IntervalRow]) -> String {
    let hh = esc(feed.household);
    let updated = rfc3339(feed.updated);
    let base = format!("RetailCustomer/{hh}/UsagePoint/1");
    let mut x = String::with_capacity(rows.len() * 220 + 4096);
    let entry = |x: &mut String, id: &str, href: &str, up: &str, related: &[String], title: &str, content: &str| {
        let _ = write!(x, "  <entry>\n    <id>{id}</id>\n    <link rel=\"self\" href=\"{href}\"/>\n");
        if !up.is_empty() {
            let _ = writeln!(x, "    <link rel=\"up\" href=\"{up}\"/>");
        }
        for r in related {
            let _ = writeln!(x, "    <link rel=\"related\" href=\"{r}\"/>");
        }
        let _ = write!(
            x,
            "    <title>{title}</title>\n    <published>{updated}</published>\n    <updated>{updated}</updated>\n    \
             <content>\n{content}    </content>\n  </entry>\n"
        );
    };
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:espi=\"http://naesb.org/espi\">\n  \
         <id>{}</id>\n  <title>Green Button: {hh} {}</title>\n  <updated>{updated}</updated>\n",
        urn(&["feed", feed.household, feed.month]),
        esc(feed.month)
    );
    entry(
        &mut x,
        &urn(&["usage-point", feed.household]),
        &base,
        &format!("RetailCustomer/{hh}/UsagePoint"),
        &[format!("{base}/MeterReading")],
        &hh,
        "      <espi:UsagePoint>\n        <espi:ServiceCategory>\n          <espi:kind>0</espi:kind>\n        \
         </espi:ServiceCategory>\n      </espi:UsagePoint>\n",
    );
    entry(
        &mut x,
        &urn(&["meter-reading", feed.household]),
        &format!("{base}/MeterReading/1"),
        &format!("{base}/MeterReading"),
        &[format!("{base}/MeterReading/1/IntervalBlock"), "ReadingType/1".to_owned()],
        "15-minute active energy import (1.0.1.8.0)",
        "      <espi:MeterReading/>\n",
    );
    entry(
        &mut x,
        &urn(&["reading-type", feed.household]),
        "ReadingType/1",
        "ReadingType",
        &[],
        "Wh, 15-minute intervals",
        "      <espi:ReadingType>\n        <espi:accumulationBehaviour>4</espi:accumulationBehaviour>\n        \
         <espi:commodity>1</espi:commodity>\n        <espi:currency>941</espi:currency>\n        \
         <espi:dataQualifier>12</espi:dataQualifier>\n        <espi:flowDirection>1</espi:flowDirection>\n        \
         <espi:intervalLength>900</espi:intervalLength>\n        <espi:kind>12</espi:kind>\n        \
         <espi:powerOfTenMultiplier>0</espi:powerOfTenMultiplier>\n        <espi:timeAttribute>0</espi:timeAttribute>\n        \
         <espi:uom>72</espi:uom>\n      </espi:ReadingType>\n",
    );
    // One IntervalBlock per local day.
    let mut i = 0;
    let mut block = 0;
    while i < rows.len() {
        let day = day_of_interval(rows[i].end);
        let j = rows[i..].iter().position(|r| day_of_interval(r.end) != day).map_or(rows.len(), |k| i + k);
        let day_rows = &rows[i..j];
        i = j;
        if day_rows.iter().all(|r| r.energy.total.is_none()) {
            continue; // a day without any reading has no block
        }
        block += 1;
        let start = super::calendar::midnight(day);
        let end = super::calendar::midnight(day.succ_opt().unwrap_or(day));
        let mut content = format!(
            "      <espi:IntervalBlock>\n        <espi:interval>\n          <espi:duration>{}</espi:duration>\n          \
             <espi:start>{}</espi:start>\n        </espi:interval>\n",
            (end - start).num_seconds(),
            start.timestamp()
        );
        for r in day_rows {
            if let Some(wh) = r.energy.total {
                let _ = write!(
                    content,
                    "        <espi:IntervalReading>\n          <espi:timePeriod>\n            <espi:duration>900</espi:duration>\n            \
                     <espi:start>{}</espi:start>\n          </espi:timePeriod>\n          <espi:value>{wh}</espi:value>\n        \
                     </espi:IntervalReading>\n",
                    (r.end - INTERVAL).timestamp()
                );
            }
        }
        content.push_str("      </espi:IntervalBlock>\n");
        entry(
            &mut x,
            &urn(&["interval-block", feed.household, &day.to_string()]),
            &format!("{base}/MeterReading/1/IntervalBlock/{block}"),
            &format!("{base}/MeterReading/1/IntervalBlock"),
            &[],
            &day.to_string(),
            &content,
        );
    }
    x.push_str("</feed>\n");
    x
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::household::calendar::day_grid;
    use crate::household::usage::Energy;

    fn rows() -> Vec<IntervalRow> {
        let mut out: Vec<IntervalRow> = day_grid("2026-10-25".parse().unwrap())
            .into_iter()
            .enumerate()
            .map(|(i, end)| IntervalRow {
                end,
                energy: Energy { total: Some(100 + i as i64), vt: Some(60), nt: Some(40 + i as i64) },
            })
            .collect();
        out[3].energy = Energy::default();
        out.extend(
            day_grid("2026-10-26".parse().unwrap())
                .into_iter()
                .take(4)
                .map(|end| IntervalRow { end, energy: Energy { total: Some(7), vt: None, nt: None } }),
        );
        let empty_day = day_grid("2026-10-27".parse().unwrap());
        out.extend(empty_day.into_iter().map(|end| IntervalRow { end, energy: Energy::default() }));
        out
    }

    #[test]
    fn csv_has_a_row_per_interval_with_gaps_empty() {
        let text = String::from_utf8(csv(&rows()).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "start_local,end_utc,kwh,vt_kwh,nt_kwh,status");
        assert_eq!(lines.len(), 1 + 100 + 4 + 96, "the autumn DST day has 100 intervals");
        assert_eq!(lines[1], "2026-10-25T00:00:00+02:00,2026-10-24T22:15:00Z,0.100,0.060,0.040,actual");
        assert_eq!(lines[4], "2026-10-25T00:45:00+02:00,2026-10-24T23:00:00Z,,,,missing");
        // The repeated hour: 02:00+02:00 then 02:00+01:00.
        assert!(text.contains("2026-10-25T02:00:00+02:00,") && text.contains("2026-10-25T02:00:00+01:00,"));
        assert_eq!(lines[104], "2026-10-26T00:45:00+01:00,2026-10-26T00:00:00Z,0.007,,,actual");
    }

    /// Tags open and close in order (a minimal well-formedness check; no XML parser in the tree).
    fn balanced(xml: &str) -> Result<usize, String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut n = 0;
        let mut rest = xml;
        while let Some(i) = rest.find('<') {
            let after = &rest[i + 1..];
            let end = after.find('>').ok_or("unclosed tag")?;
            let tag = &after[..end];
            rest = &after[end + 1..];
            if tag.starts_with('?') {
                continue;
            }
            let name = tag.trim_start_matches('/').split([' ', '/']).next().unwrap_or("");
            if tag.starts_with('/') {
                if stack.pop() != Some(name) {
                    return Err(format!("</{name}> closes the wrong element"));
                }
            } else if !tag.ends_with('/') {
                stack.push(name);
                n += 1;
            }
        }
        if stack.is_empty() {
            Ok(n)
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn green_button_feed_is_well_formed_and_leaves_gaps_out() {
        let updated = "2026-11-01T00:00:00Z".parse().unwrap();
        let xml = espi(Feed { household: "H00000002", month: "2026-10", updated }, &rows());
        balanced(&xml).unwrap();
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"")
        );
        for tag in ["<espi:UsagePoint>", "<espi:MeterReading/>", "<espi:ReadingType>", "<espi:uom>72</espi:uom>"] {
            assert!(xml.contains(tag), "{tag}");
        }
        assert_eq!(xml.matches("<espi:IntervalBlock>").count(), 2, "one block per local day with data");
        assert_eq!(xml.matches("<espi:IntervalReading>").count(), 99 + 4, "the missing interval is left out");
        // The autumn day's block lasts 25 h and starts at local midnight.
        assert!(xml.contains("<espi:duration>90000</espi:duration>"));
        assert!(xml.contains(&format!(
            "<espi:start>{}</espi:start>",
            day_grid("2026-10-25".parse().unwrap())[0].timestamp() - 900
        )));
        assert!(xml.contains("<espi:value>100</espi:value>"));
        assert_eq!(urn(&["a"]), urn(&["a"]));
        assert_ne!(urn(&["a", "b"]), urn(&["ab"]));
        assert_eq!(esc("<a&\"'>"), "&#60;a&#38;&#34;&#39;&#62;");
    }
}
