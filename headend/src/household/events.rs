//! Outages and alarms of a household's meters, newest first, 50 a page, from two places:
//!
//! - `meter_events`: the meter's own event log, read by DLMS/Modbus polling (`collect::status` stores the
//!   log's time and numeric code, `source` = the protocol's reading source). Codes are the IDIS standard,
//!   fraud, disconnector and power-quality event codes ([`LOG_CODES`]); any other code is shown by number.
//!   A power up right after a power down carries the outage's length.
//! - quality flags on stored readings (`schemas::reading::Quality`: power outage, device error, clock
//!   invalid/doubtful — what MQTT meters report in a payload's `status`), looked up on the energy channel
//!   the ledger counts; consecutive flagged intervals are one event (from the first interval's start to the
//!   last one's end; intervals are 15 minutes). Searched over the last [`FLAG_HISTORY_DAYS`] days, so the scan stays bounded.

use chrono::{DateTime, Duration, Utc};
use schemas::reading::Quality;
use serde::Serialize;
use utoipa::ToSchema;

/// Events per page.
pub const PER_PAGE: i64 = 50;
/// The highest page asked for (beyond it the request is refused).
pub const MAX_PAGE: i64 = 10_000;
/// How far back reading flags are searched.
pub const FLAG_HISTORY_DAYS: i64 = 92;
/// The channel whose flags are read (active energy import, total: every payload and profile has it).
const FLAG_CHANNEL: i16 = 1;

/// What kind of event it is for the household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventCategory {
    /// No supply (power down, a power outage flag, a missing phase, a disconnection).
    Outage,
    /// Something the meter or the operator should look at (tampering, errors, voltage out of range).
    Alarm,
    /// Routine (power restored, clock adjusted, firmware, cover closed).
    Info,
}

/// Where an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventOrigin {
    /// The meter's event log.
    MeterLog,
    /// Quality flags of stored readings.
    ReadingFlag,
}

/// Meter event-log codes with a name (IDIS standard event log 1–18, fraud detection 40–49, disconnector
/// control 60–64, power quality 76–89).
pub const LOG_CODES: &[(i32, &str, EventCategory)] = &[
    (1, "power_down", EventCategory::Outage),
    (2, "power_up", EventCategory::Info),
    (3, "dst_changed", EventCategory::Info),
    (4, "clock_adjusted_old", EventCategory::Info),
    (5, "clock_adjusted_new", EventCategory::Info),
    (6, "clock_invalid", EventCategory::Alarm),
    (7, "replace_battery", EventCategory::Alarm),
    (8, "battery_low", EventCategory::Alarm),
    (9, "tou_activated", EventCategory::Info),
    (10, "error_register_cleared", EventCategory::Info),
    (11, "alarm_register_cleared", EventCategory::Info),
    (12, "program_memory_error", EventCategory::Alarm),
    (13, "ram_error", EventCategory::Alarm),
    (14, "nv_memory_error", EventCategory::Alarm),
    (15, "watchdog_error", EventCategory::Alarm),
    (16, "measurement_error", EventCategory::Alarm),
    (17, "firmware_ready", EventCategory::Info),
    (18, "firmware_activated", EventCategory::Info),
    (40, "terminal_cover_removed", EventCategory::Alarm),
    (41, "terminal_cover_closed", EventCategory::Info),
    (42, "magnetic_field", EventCategory::Alarm),
    (43, "magnetic_field_gone", EventCategory::Info),
    (44, "meter_cover_removed", EventCategory::Alarm),
    (45, "meter_cover_closed", EventCategory::Info),
    (46, "authentication_failures", EventCategory::Alarm),
    (47, "configuration_changed", EventCategory::Info),
    (48, "keys_changed", EventCategory::Info),
    (49, "decryption_failure", EventCategory::Alarm),
    (60, "manual_disconnection", EventCategory::Outage),
    (61, "manual_connection", EventCategory::Info),
    (62, "remote_disconnection", EventCategory::Outage),
    (63, "remote_connection", EventCategory::Info),
    (64, "local_disconnection", EventCategory::Outage),
    (76, "undervoltage_l1", EventCategory::Alarm),
    (77, "undervoltage_l2", EventCategory::Alarm),
    (78, "undervoltage_l3", EventCategory::Alarm),
    (79, "overvoltage_l1", EventCategory::Alarm),
    (80, "overvoltage_l2", EventCategory::Alarm),
    (81, "overvoltage_l3", EventCategory::Alarm),
    (82, "missing_voltage_l1", EventCategory::Outage),
    (83, "missing_voltage_l2", EventCategory::Outage),
    (84, "missing_voltage_l3", EventCategory::Outage),
    (85, "voltage_normal_l1", EventCategory::Info),
    (86, "voltage_normal_l2", EventCategory::Info),
    (87, "voltage_normal_l3", EventCategory::Info),
    (88, "phase_sequence_reversed", EventCategory::Alarm),
    (89, "missing_neutral", EventCategory::Alarm),
];

/// The reading flags shown, with their category (names as in the payload's `status`).
pub const FLAGS: &[(Quality, &str, EventCategory)] = &[
    (Quality::POWER_OUTAGE, "power_outage", EventCategory::Outage),
    (Quality::DEVICE_ERROR, "device_error", EventCategory::Alarm),
    (Quality::CLOCK_INVALID, "clock_invalid", EventCategory::Alarm),
    (Quality::CLOCK_DOUBTFUL, "clock_doubtful", EventCategory::Info),
];

/// The name of a reading flag, prefixed so that it never collides with a log code's name.
fn flag_name(name: &str) -> String {
    format!("flag_{name}")
}

/// The stable name and category of a meter-log code (`event_<n>`, info, for a code without a name).
pub fn log_code(code: i32) -> (String, EventCategory) {
    match LOG_CODES.iter().find(|(c, _, _)| *c == code) {
        Some((_, name, cat)) => ((*name).to_owned(), *cat),
        None => (format!("event_{code}"), EventCategory::Info),
    }
}

/// Every name an event's `code` can take except `event_<n>` (for the locale test).
pub fn known_codes() -> impl Iterator<Item = String> {
    LOG_CODES.iter().map(|(_, n, _)| (*n).to_owned()).chain(FLAGS.iter().map(|(_, n, _)| flag_name(n)))
}

/// One outage or alarm.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HouseholdEvent {
    /// When it happened (UTC): the log entry's time, or the start of the first flagged interval.
    pub ts: DateTime<Utc>,
    /// The end of the last flagged interval (reading flags only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Meter serial.
    pub meter: String,
    pub origin: EventOrigin,
    /// Stable name: a log code's (`power_down`, `power_up`, `terminal_cover_removed`, …, `event_<n>` when the
    /// code has no name) or a reading flag's (`flag_power_outage`, `flag_device_error`, `flag_clock_invalid`,
    /// `flag_clock_doubtful`).
    pub code: String,
    pub category: EventCategory,
    /// The meter's numeric event code (meter log only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_code: Option<i32>,
    /// Flagged intervals in a row (reading flags only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals: Option<i64>,
    /// A power up right after a power down: seconds without supply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage_seconds: Option<i64>,
}

/// One page of a household's events, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HouseholdEvents {
    /// Household code.
    pub household: String,
    /// 1-based; a page past the last one is empty.
    pub page: i64,
    pub per_page: i64,
    /// Events in all pages.
    pub total: i64,
    pub pages: i64,
    pub events: Vec<HouseholdEvent>,
}

/// The household's events `(ts, until, serial, log code, flag bit, intervals, outage seconds, total)`,
/// newest first, `$5` rows from offset `$6`.
const EVENTS: &str = "WITH m AS (SELECT id, serial FROM meters WHERE household_id = $1),
    logged AS (
        SELECT e.meter_id, e.ts, NULL::timestamptz AS until, e.code, NULL::int AS bit, NULL::bigint AS n,
               CASE WHEN e.code = 2 AND lag(e.code) OVER w = 1
                    THEN extract(epoch FROM e.ts - lag(e.ts) OVER w)::bigint END AS outage_s
        FROM meter_events e WHERE e.meter_id IN (SELECT id FROM m)
        WINDOW w AS (PARTITION BY e.meter_id ORDER BY e.ts, e.code)),
    flagged AS (
        SELECT r.meter_id, r.ts, f.bit,
               r.ts - row_number() OVER (PARTITION BY r.meter_id, f.bit ORDER BY r.ts) * interval '15 minutes' AS grp
        FROM readings r CROSS JOIN unnest($2::int[]) AS f(bit)
        WHERE r.meter_id IN (SELECT id FROM m) AND r.channel_id = $3 AND r.ts > $4 AND (r.flags & f.bit) <> 0),
    runs AS (
        SELECT meter_id, min(ts) - interval '15 minutes' AS ts, max(ts) AS until, NULL::int AS code, bit, count(*) AS n,
               NULL::bigint AS outage_s
        FROM flagged GROUP BY meter_id, bit, grp),
    everything AS (SELECT * FROM logged UNION ALL SELECT * FROM runs)
    SELECT a.ts, a.until, m.serial, a.code, a.bit, a.n, a.outage_s, count(*) OVER () AS total
    FROM everything a JOIN m ON m.id = a.meter_id
    ORDER BY a.ts DESC, m.serial, a.code NULLS LAST, a.bit
    LIMIT $5 OFFSET $6";

/// Rows `offset..offset + limit` of [`EVENTS`].
async fn query(
    c: &tokio_postgres::Client,
    household_id: i32,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let bits: Vec<i32> = FLAGS.iter().map(|(q, _, _)| i32::from(q.0)).collect();
    let since = now - Duration::days(FLAG_HISTORY_DAYS);
    c.query(EVENTS, &[&household_id, &bits, &FLAG_CHANNEL, &since, &limit, &offset]).await
}

/// Page `page` (1-based, at most [`MAX_PAGE`]) of household `household_id`'s events.
pub async fn page(
    c: &tokio_postgres::Client,
    household_id: i32,
    household: &str,
    page: i64,
    now: DateTime<Utc>,
) -> Result<HouseholdEvents, tokio_postgres::Error> {
    let page = page.clamp(1, MAX_PAGE);
    let rows = query(c, household_id, now, PER_PAGE, (page - 1) * PER_PAGE).await?;
    let total = match rows.first() {
        Some(r) => r.get::<_, i64>(7),
        None if page > 1 => query(c, household_id, now, 1, 0).await?.first().map_or(0, |r| r.get::<_, i64>(7)),
        None => 0,
    };
    let events = rows
        .iter()
        .map(|r| {
            let code: Option<i32> = r.get(3);
            let bit: Option<i32> = r.get(4);
            let (name, category, origin) = match (code, bit) {
                (Some(code), _) => {
                    let (name, cat) = log_code(code);
                    (name, cat, EventOrigin::MeterLog)
                }
                (None, bit) => {
                    let flag = FLAGS.iter().find(|(q, _, _)| Some(i32::from(q.0)) == bit);
                    let (name, cat) = flag.map_or(("unknown", EventCategory::Info), |(_, n, c)| (*n, *c));
                    (flag_name(name), cat, EventOrigin::ReadingFlag)
                }
            };
            HouseholdEvent {
                ts: r.get(0),
                until: r.get(1),
                meter: r.get(2),
                origin,
                code: name,
                category,
                log_code: code,
                intervals: r.get(5),
                outage_seconds: r.get(6),
            }
        })
        .collect();
    Ok(HouseholdEvents {
        household: household.to_owned(),
        page,
        per_page: PER_PAGE,
        total,
        pages: (total + PER_PAGE - 1) / PER_PAGE,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_names_and_unknown_codes_a_number() {
        assert_eq!(log_code(1), ("power_down".to_owned(), EventCategory::Outage));
        assert_eq!(log_code(2), ("power_up".to_owned(), EventCategory::Info));
        assert_eq!(log_code(250), ("event_250".to_owned(), EventCategory::Info));
        let names: Vec<String> = known_codes().collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "names are unique");
        assert!(names.contains(&"flag_power_outage".to_owned()));
    }
}
