//! A meter's readings, missing intervals and commands.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use schemas::channel;
use schemas::reading::unpack_flags;
use schemas::{MeterSerial, ObisCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{visible_meter, ApiError, ErrorBody};
use crate::auth::{Operator, Principal};
use crate::collect::{ledger, MeterCommand, Target};
use crate::http::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(readings)).routes(routes!(missing)).routes(routes!(list_commands, run_command))
}

/// One stored value.
#[derive(Serialize, ToSchema)]
pub struct Point {
    /// Interval end (UTC).
    pub ts: DateTime<Utc>,
    /// In the channel's unit (kWh-scaled energy is in Wh; see `unit`).
    pub value: f64,
    /// Quality flags (`estimated`, `power_outage`, …); absent when the reading is plain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<&'static str>,
    /// How it arrived (`mqtt`, `dlms_poll`, `dlms_push`, `modbus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
}

/// The readings of one channel.
#[derive(Serialize, ToSchema)]
pub struct Series {
    pub obis: String,
    pub name: &'static str,
    pub unit: &'static str,
    /// `cumulative` (a register) or `instantaneous`.
    pub kind: &'static str,
    pub points: Vec<Point>,
}

#[derive(Serialize, ToSchema)]
pub struct ReadingsResponse {
    pub meter: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub series: Vec<Series>,
    /// More rows matched than `http.max_rows`: ask for a shorter period.
    pub truncated: bool,
}

pub(crate) fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad(format!("{name}: expected an RFC 3339 time such as 2026-11-20T00:00:00Z ({e})")))
}

pub(crate) fn parse_day(name: &str, v: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map_err(|e| ApiError::bad(format!("{name}: expected a date such as 2026-11-20 ({e})")))
}

/// Refuses parameters the route does not know (a typo must not silently widen a query).
pub(crate) fn only(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(format!("unknown parameter {k:?}; expected {}", known.join(", ")))),
        None => Ok(()),
    }
}

/// Stored readings of one meter whose interval ends fall in `(from, to]`.
///
/// Households: their own meters only (any other serial answers 404). Operators and admins: any meter.
#[utoipa::path(
    get,
    path = "/api/v1/meters/{serial}/readings",
    tag = "meters",
    params(
        ("serial" = String, Path, description = "Meter serial"),
        ("from" = Option<String>, Query, description = "RFC 3339 start (exclusive); default `to` minus 24 h"),
        ("to" = Option<String>, Query, description = "RFC 3339 end (inclusive); default now"),
        ("obis" = Option<String>, Query, description = "Comma-separated OBIS codes; default every channel"),
    ),
    responses(
        (status = 200, body = ReadingsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn readings(
    State(s): State<AppState>,
    who: Principal,
    Path(serial): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ReadingsResponse>, ApiError> {
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    only(&q, &["from", "to", "obis"])?;
    let to = q.get("to").map(|v| parse_time("to", v)).transpose()?.unwrap_or_else(Utc::now);
    let from = q.get("from").map(|v| parse_time("from", v)).transpose()?.unwrap_or(to - chrono::Duration::days(1));
    if from >= to {
        return Err(ApiError::bad("from must be before to"));
    }
    let span = (to - from).to_std().unwrap_or(Duration::MAX);
    if span > s.cfg.max_query_span {
        return Err(ApiError::bad(format!(
            "the period spans more than {}; ask in parts",
            humantime::format_duration(s.cfg.max_query_span)
        )));
    }
    let channels: Option<Vec<i16>> = match q.get("obis") {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|o| {
                    let code: ObisCode =
                        o.trim().parse().map_err(|e: schemas::obis::ObisParseError| ApiError::bad(e.to_string()))?;
                    channel::by_obis(&code)
                        .map(|c| c.id)
                        .ok_or_else(|| ApiError::bad(format!("OBIS code {code} is not a stored channel")))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let meter_id = visible_meter(&client, &who, serial.as_str()).await?;
    let limit = i64::try_from(s.cfg.max_rows).unwrap_or(i64::MAX).saturating_add(1);
    let all: Vec<i16> = channel::CHANNELS.iter().map(|c| c.id).collect();
    let rows = client
        .query(
            "SELECT channel_id, ts, value, flags FROM readings
             WHERE meter_id = $1 AND channel_id = ANY($2) AND ts > $3 AND ts <= $4
             ORDER BY channel_id, ts LIMIT $5",
            &[&meter_id, &channels.as_ref().unwrap_or(&all), &from, &to, &limit],
        )
        .await
        .map_err(ApiError::unavailable)?;
    let truncated = rows.len() > s.cfg.max_rows;
    let mut series: Vec<Series> = Vec::new();
    for r in rows.iter().take(s.cfg.max_rows) {
        let id: i16 = r.get(0);
        let Some(ch) = channel::by_id(id) else { continue };
        if series.last().is_none_or(|x| x.obis != ch.obis.to_string()) {
            series.push(Series {
                obis: ch.obis.to_string(),
                name: ch.name,
                unit: ch.unit,
                kind: ch.kind.as_str(),
                points: Vec::new(),
            });
        }
        let (quality, source) = unpack_flags(r.get(3));
        if let Some(last) = series.last_mut() {
            last.points.push(Point {
                ts: r.get(1),
                value: ch.to_physical(r.get(2)),
                quality: quality.names(),
                source: source.map(|s| s.as_str()),
            });
        }
    }
    Ok(Json(ReadingsResponse { meter: serial.to_string(), from, to, series, truncated }))
}

#[derive(Serialize, ToSchema)]
pub struct MissingResponse {
    pub meter: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Interval ends (UTC) of the load-profile channel with no reading.
    pub missing: Vec<DateTime<Utc>>,
}

/// The load-profile intervals missing in local days `from..=to` (default yesterday; at most 31 days).
///
/// Households: own meters only. Operators and admins: any meter.
#[utoipa::path(
    get,
    path = "/api/v1/meters/{serial}/missing",
    tag = "meters",
    params(
        ("serial" = String, Path, description = "Meter serial"),
        ("from" = Option<String>, Query, description = "First local day (YYYY-MM-DD); default `to`"),
        ("to" = Option<String>, Query, description = "Last local day (YYYY-MM-DD); default yesterday"),
    ),
    responses(
        (status = 200, body = MissingResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn missing(
    State(s): State<AppState>,
    who: Principal,
    Path(serial): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<MissingResponse>, ApiError> {
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    only(&q, &["from", "to"])?;
    let yesterday = ledger::yesterday(Utc::now());
    let to = q.get("to").map(|v| parse_day("to", v)).transpose()?.unwrap_or(yesterday);
    let from = q.get("from").map(|v| parse_day("from", v)).transpose()?.unwrap_or(to);
    if from > to || (to - from).num_days() > 30 {
        return Err(ApiError::bad("from must not be after to, and the span is at most 31 days"));
    }
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let meter = visible_meter(&client, &who, serial.as_str()).await?;
    let missing = ledger::missing_intervals(&**client, meter, from, to).await.map_err(ApiError::unavailable)?;
    Ok(Json(MissingResponse { meter: serial.to_string(), from, to, missing }))
}

/// A command for a meter.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub command: MeterCommand,
    /// Free text kept in the audit trail with the account's name: a ticket, a reason.
    #[serde(default, alias = "requested_by")]
    pub note: Option<String>,
}

/// One audited command.
#[derive(Serialize, ToSchema)]
pub struct CommandRecord {
    pub id: i64,
    pub command: String,
    /// The account that asked.
    pub requested_by: String,
    pub note: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `done` or `failed`; absent while running.
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

/// What a command did.
#[derive(Serialize, ToSchema)]
pub struct CommandOutcome {
    pub id: i64,
    pub meter: String,
    pub command: MeterCommand,
    pub outcome: String,
    pub detail: String,
}

/// Runs a command on a meter. `disconnect` / `reconnect` run on a DLMS meter in its own session,
/// recorded in the audit trail (`meter_commands`, with the account) before they run and completed
/// with the outcome: 200 when the meter confirmed, 502 when it did not. `retry_polling` lifts a
/// meter's authentication cool-down (its password or keys were put right) and requests a polling
/// round, recorded done at once (409 when polling is off).
///
/// Operators and admins only.
#[utoipa::path(
    post,
    path = "/api/v1/meters/{serial}/commands",
    tag = "meters",
    params(("serial" = String, Path, description = "Meter serial")),
    request_body = CommandRequest,
    responses(
        (status = 200, body = CommandOutcome), (status = 502, body = CommandOutcome, description = "the meter did not confirm"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn run_command(
    State(s): State<AppState>,
    operator: Operator,
    Path(serial): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = operator.0;
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    let req: CommandRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("body: {e}")))?;
    let out = execute_command(&s, &who, &serial, req.command, req.note).await?;
    let status = if out.outcome == "done" { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
    Ok((status, Json(out)).into_response())
}

/// Runs `command` on DLMS meter `serial` for operator `who`, in its own session: recorded in the audit
/// trail (`meter_commands`, with the account and `note`) before it runs, completed with the outcome
/// (`done` when the meter confirmed, `failed` when it did not). The API and the operator's meter page
/// both come here.
pub async fn execute_command(
    s: &AppState,
    who: &Principal,
    serial: &MeterSerial,
    command: MeterCommand,
    note: Option<String>,
) -> Result<CommandOutcome, ApiError> {
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::bad("note: at most 200 characters"));
    }
    if command == MeterCommand::RetryPolling {
        return retry_polling(s, who, serial, note).await;
    }
    let Some(commander) = s.commander.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no DLMS client configured"));
    };
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let row = client
        .query_opt(
            "SELECT id, protocol, COALESCE(address, ''), COALESCE(transformer, '') FROM meters
             WHERE serial = $1 AND removed_on IS NULL",
            &[&serial.as_str()],
        )
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("meter {serial} is not in service")))?;
    let protocol: String = row.get(1);
    let address: String = row.get(2);
    if protocol != "dlms" || address.is_empty() {
        return Err(ApiError::conflict(format!(
            "meter {serial} is not a DLMS meter with an address; it cannot take commands"
        )));
    }
    let target = Target {
        meter_id: row.get(0),
        serial: serial.as_str().into(),
        address: address.into(),
        cell: row.get::<_, String>(3).into(),
    };
    let id: i64 = client
        .query_one(
            "INSERT INTO meter_commands (meter_id, command, requested_by, account_id, note)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&target.meter_id, &command.as_str(), &who.username, &who.account_id, &note],
        )
        .await
        .map_err(ApiError::unavailable)?
        .get(0);
    tracing::info!(meter = %serial, command = command.as_str(), account = %who.username, id, "operator command");
    let result = commander.execute(&target, command).await;
    let (outcome, detail) = match &result {
        Ok(d) => ("done", d.clone()),
        Err(e) => ("failed", e.to_string()),
    };
    client
        .execute(
            "UPDATE meter_commands SET finished_at = now(), outcome = $2, detail = $3 WHERE id = $1",
            &[&id, &outcome, &detail],
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok(CommandOutcome { id, meter: serial.to_string(), command, outcome: outcome.into(), detail })
}

/// `retry_polling`: lifts the meter's authentication cool-down and requests a polling round, in one
/// transaction with its audit record (no session of its own: the round calls the meter).
async fn retry_polling(
    s: &AppState,
    who: &Principal,
    serial: &MeterSerial,
    note: Option<String>,
) -> Result<CommandOutcome, ApiError> {
    let command = MeterCommand::RetryPolling;
    let Some(poll_now) = &s.poll_now else {
        return Err(ApiError::conflict("polling is off (collect.enabled = false)"));
    };
    let mut client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let tx = client.transaction().await.map_err(ApiError::unavailable)?;
    let meter_id: i32 = tx
        .query_opt(
            "SELECT id FROM meters WHERE serial = $1 AND removed_on IS NULL AND address IS NOT NULL AND address <> ''",
            &[&serial.as_str()],
        )
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("meter {serial} is not in service with a polling address")))?
        .get(0);
    let cooling = tx
        .query_opt(
            "UPDATE meter_poll_status SET cooldown_lifted_at = now()
             WHERE meter_id = $1 AND last_error LIKE 'authentication_rejected:%' AND consecutive_failures > 0
             RETURNING consecutive_failures",
            &[&meter_id],
        )
        .await
        .map_err(ApiError::unavailable)?
        .map(|r| r.get::<_, i32>(0));
    let detail = match cooling {
        Some(n) => format!("authentication cool-down lifted after {n} refusal(s) in a row; polling round requested"),
        None => "no authentication cool-down to lift; polling round requested".to_owned(),
    };
    let id: i64 = tx
        .query_one(
            "INSERT INTO meter_commands (meter_id, command, requested_by, account_id, note, finished_at, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, now(), 'done', $6) RETURNING id",
            &[&meter_id, &command.as_str(), &who.username, &who.account_id, &note, &detail],
        )
        .await
        .map_err(ApiError::unavailable)?
        .get(0);
    tx.commit().await.map_err(ApiError::unavailable)?;
    poll_now.send_modify(|n| *n += 1);
    tracing::info!(meter = %serial, command = command.as_str(), account = %who.username, id, "operator command");
    Ok(CommandOutcome { id, meter: serial.to_string(), command, outcome: "done".into(), detail })
}

/// The meter's command audit trail, newest first (at most 1,000).
///
/// Operators and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/meters/{serial}/commands",
    tag = "meters",
    params(("serial" = String, Path, description = "Meter serial")),
    responses(
        (status = 200, body = Vec<CommandRecord>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("api_token" = []), ("session" = []))
)]
async fn list_commands(
    State(s): State<AppState>,
    _operator: Operator,
    Path(serial): Path<String>,
) -> Result<Json<Vec<CommandRecord>>, ApiError> {
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(commands_of(&client, serial.as_str(), 1000).await?))
}

/// The last `limit` commands of a meter, newest first (also shown on the operator's meter page).
pub async fn commands_of(c: &tokio_postgres::Client, serial: &str, limit: i64) -> Result<Vec<CommandRecord>, ApiError> {
    let rows = c
        .query(
            "SELECT c.id, c.command, c.requested_by, c.note, c.requested_at, c.finished_at, c.outcome, c.detail
             FROM meter_commands c JOIN meters m ON m.id = c.meter_id
             WHERE m.serial = $1 ORDER BY c.requested_at DESC, c.id DESC LIMIT $2",
            &[&serial, &limit],
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok(rows
        .iter()
        .map(|r| CommandRecord {
            id: r.get(0),
            command: r.get(1),
            requested_by: r.get(2),
            note: r.get(3),
            requested_at: r.get(4),
            finished_at: r.get(5),
            outcome: r.get(6),
            detail: r.get(7),
        })
        .collect())
}
