//! How the pages write numbers, money, dates and times, per language: `4.622,65 RSD` and
//! `20.11.2026. 11:00` in Serbian, `4,622.65 RSD` and `2026-11-20 11:00` in English; instants in
//! Europe/Belgrade local time. One place for every page (portal and dashboard).

use axum::http::Uri;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Europe::Belgrade;
use rust_decimal::{Decimal, RoundingStrategy};

use super::Lang;

/// `x` rounded half away from zero to `dp` decimals, digits grouped by three: `4.622,65` (sr),
/// `4,622.65` (en).
pub fn number(lang: Lang, x: Decimal, dp: u32) -> String {
    let (group, point) = match lang {
        Lang::Sr => ('.', ','),
        Lang::En => (',', '.'),
    };
    let mut r = x.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(dp);
    let text = r.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let mut out = String::with_capacity(text.len() + text.len() / 3 + 1);
    if r.is_sign_negative() && !r.is_zero() {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(group);
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push(point);
        out.push_str(frac);
    }
    out
}

/// Money: `4.622,65 RSD` (sr), `4,622.65 RSD` (en).
pub fn rsd(lang: Lang, x: Decimal) -> String {
    format!("{} RSD", number(lang, x, 2))
}

/// `oktobar 2026` / `October 2026`.
pub fn month_label(lang: Lang, first: NaiveDate) -> String {
    format!("{} {}", lang.t(&format!("portal.month.{}", first.month())), first.year())
}

/// A date: `20.11.2026.` (sr), `2026-11-20` (en).
pub fn local_day(lang: Lang, d: NaiveDate) -> String {
    match lang {
        Lang::Sr => d.format("%d.%m.%Y.").to_string(),
        Lang::En => d.format("%Y-%m-%d").to_string(),
    }
}

/// The local (Europe/Belgrade) date and time of an instant: `20.11.2026. 11:00` / `2026-11-20 11:00`.
pub fn local_time(lang: Lang, t: DateTime<Utc>) -> String {
    let l = t.with_timezone(&Belgrade);
    format!("{} {}", local_day(lang, l.date_naive()), l.format("%H:%M"))
}

/// This page's path and query (for [`Chrome`]).
pub fn here(uri: &Uri) -> String {
    uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// A file name part: letters, digits, `-` and `_` only.
pub fn file_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
