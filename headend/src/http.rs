//! HTTP: `/livez` (no dependencies), `/readyz` (database reachable, broker subscription granted, not shutting down),
//! `/metrics` (Prometheus text), and the JSON API under `/api/v1`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use schemas::channel;
use schemas::reading::unpack_flags;
use schemas::{MeterSerial, ObisCode};
use serde::Serialize;
use serde_json::json;

use crate::collect::{ledger, Commander, MeterCommand, Target};
use crate::config::HttpConfig;
use crate::metrics::Metrics;
use crate::mqtt::MqttState;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    pub mqtt: Arc<MqttState>,
    /// False once shutdown has begun.
    pub accepting: Arc<AtomicBool>,
    pub cfg: HttpConfig,
    /// Executes operator commands (absent: no protocol that supports them is configured).
    pub commander: Option<Arc<dyn Commander>>,
    /// Starts a polling round now (absent when polling is off).
    pub poll_now: Option<Arc<tokio::sync::watch::Sender<u64>>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/meters/{serial}/readings", get(readings))
        .route("/api/v1/meters/{serial}/missing", get(missing))
        .route("/api/v1/read-rate", get(read_rate))
        .route("/api/v1/meters/{serial}/commands", get(list_commands).post(run_command))
        .route("/api/v1/collect/rounds", axum::routing::post(start_round))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics.http_request_seconds.with_label_values(&[&route]).observe(start.elapsed().as_secs_f64());
    s.metrics.http_requests.with_label_values(&[&route, resp.status().as_str()]).inc();
    resp
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn readyz(State(s): State<AppState>) -> Response {
    let db = match tokio::time::timeout(Duration::from_secs(2), async {
        let c = s.pool.get().await.map_err(|e| e.to_string())?;
        c.query_one("SELECT 1", &[]).await.map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "timeout".to_string(),
    };
    let broker = match (s.mqtt.connected.load(Ordering::Acquire), s.mqtt.subscribed.load(Ordering::Acquire)) {
        (true, true) => "subscribed",
        (true, false) => "connected, not subscribed",
        (false, _) => "disconnected",
    };
    let accepting = s.accepting.load(Ordering::Acquire);
    let ready = db == "ok" && broker == "subscribed" && accepting;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"ready": ready, "database": db, "broker": broker, "shutting_down": !accepting}))).into_response()
}

/// An API error: a status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "API request failed on the database");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

#[derive(Serialize)]
struct Point {
    ts: DateTime<Utc>,
    value: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    quality: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
}

#[derive(Serialize)]
struct Series {
    obis: String,
    name: &'static str,
    unit: &'static str,
    kind: &'static str,
    points: Vec<Point>,
}

#[derive(Serialize)]
struct ReadingsResponse {
    meter: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    series: Vec<Series>,
    truncated: bool,
}

fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad(format!("{name}: expected an RFC 3339 time such as 2026-11-20T00:00:00Z ({e})")))
}

/// `GET /api/v1/meters/{serial}/readings?from=&to=&obis=`: readings whose timestamps (interval
/// ends) fall in `(from, to]`; defaults: the last 24 hours, every channel. `obis` is a
/// comma-separated list.
async fn readings(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ReadingsResponse>, ApiError> {
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "from" | "to" | "obis")) {
        return Err(ApiError::bad(format!("unknown parameter {k:?}; expected from, to, obis")));
    }
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
    let meter = client
        .query_opt("SELECT id FROM meters WHERE serial = $1", &[&serial.as_str()])
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("meter {serial} is not in the inventory")))?;
    let meter_id: i32 = meter.get(0);
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

fn parse_day(name: &str, v: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map_err(|e| ApiError::bad(format!("{name}: expected a date such as 2026-11-20 ({e})")))
}

/// `GET /api/v1/read-rate?day=YYYY-MM-DD`: completeness of a local day over the fleet (default:
/// yesterday): meters complete, and intervals received within 1 h / 24 h / 72 h.
async fn read_rate(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ledger::ReadRate>, ApiError> {
    if let Some(k) = q.keys().find(|k| k.as_str() != "day") {
        return Err(ApiError::bad(format!("unknown parameter {k:?}; expected day")));
    }
    let day = q.get("day").map(|v| parse_day("day", v)).transpose()?.unwrap_or_else(|| ledger::yesterday(Utc::now()));
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    Ok(Json(ledger::read_rate(&**client, day).await.map_err(ApiError::unavailable)?))
}

#[derive(Serialize)]
struct MissingResponse {
    meter: String,
    from: NaiveDate,
    to: NaiveDate,
    /// Interval ends (UTC) of the load-profile channel with no reading.
    missing: Vec<DateTime<Utc>>,
}

/// `GET /api/v1/meters/{serial}/missing?from=YYYY-MM-DD&to=YYYY-MM-DD`: the load-profile intervals
/// missing in local days `from..=to` (default: yesterday; at most 31 days).
async fn missing(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<MissingResponse>, ApiError> {
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "from" | "to")) {
        return Err(ApiError::bad(format!("unknown parameter {k:?}; expected from, to")));
    }
    let yesterday = ledger::yesterday(Utc::now());
    let to = q.get("to").map(|v| parse_day("to", v)).transpose()?.unwrap_or(yesterday);
    let from = q.get("from").map(|v| parse_day("from", v)).transpose()?.unwrap_or(to);
    if from > to || (to - from).num_days() > 30 {
        return Err(ApiError::bad("from must not be after to, and the span is at most 31 days"));
    }
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let meter: i32 = client
        .query_opt("SELECT id FROM meters WHERE serial = $1", &[&serial.as_str()])
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("meter {serial} is not in the inventory")))?
        .get(0);
    let missing = ledger::missing_intervals(&**client, meter, from, to).await.map_err(ApiError::unavailable)?;
    Ok(Json(MissingResponse { meter: serial.to_string(), from, to, missing }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    command: MeterCommand,
    /// Who asked (an operator's name or ticket), kept in the audit trail.
    requested_by: String,
}

#[derive(Serialize)]
struct CommandRecord {
    id: i64,
    command: String,
    requested_by: String,
    requested_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
    detail: Option<String>,
}

fn authorised(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = s.cfg.operator_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "operator commands are disabled (http.operator_token unset)"));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compare in constant time: the token guards the breakers of 200,000 homes.
    let ok = given.is_some_and(|g| {
        g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "a valid operator bearer token is required"))
    }
}

/// `POST /api/v1/meters/{serial}/commands` `{"command": "disconnect"|"reconnect", "requested_by": "…"}`
/// with `Authorization: Bearer <http.operator_token>`: recorded in `meter_commands` before it runs,
/// then completed with the outcome. 200 when the meter confirmed, 502 when it did not.
async fn run_command(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorised(&s, &headers)?;
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    let req: CommandRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("body: {e}")))?;
    if req.requested_by.trim().is_empty() || req.requested_by.len() > 200 {
        return Err(ApiError::bad("requested_by: 1 to 200 characters"));
    }
    let Some(commander) = s.commander.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no DLMS client configured"));
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
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("meter {serial} is not in service")))?;
    let protocol: String = row.get(1);
    let address: String = row.get(2);
    if protocol != "dlms" || address.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("meter {serial} is not a DLMS meter with an address; it cannot take commands"),
        ));
    }
    let target = Target {
        meter_id: row.get(0),
        serial: serial.as_str().into(),
        address: address.into(),
        cell: row.get::<_, String>(3).into(),
    };
    let id: i64 = client
        .query_one(
            "INSERT INTO meter_commands (meter_id, command, requested_by) VALUES ($1, $2, $3) RETURNING id",
            &[&target.meter_id, &req.command.as_str(), &req.requested_by],
        )
        .await
        .map_err(ApiError::unavailable)?
        .get(0);
    tracing::info!(meter = %serial, command = req.command.as_str(), requested_by = %req.requested_by, id, "operator command");
    let result = commander.execute(&target, req.command).await;
    let (outcome, detail, status) = match &result {
        Ok(d) => ("done", d.clone(), StatusCode::OK),
        Err(e) => ("failed", e.to_string(), StatusCode::BAD_GATEWAY),
    };
    client
        .execute(
            "UPDATE meter_commands SET finished_at = now(), outcome = $2, detail = $3 WHERE id = $1",
            &[&id, &outcome, &detail],
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok((
        status,
        Json(json!({"id": id, "meter": serial.as_str(), "command": req.command, "outcome": outcome, "detail": detail})),
    )
        .into_response())
}

/// `GET /api/v1/meters/{serial}/commands`: the meter's command audit trail, newest first.
async fn list_commands(
    State(s): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<CommandRecord>>, ApiError> {
    authorised(&s, &headers)?;
    let serial = MeterSerial::new(serial).map_err(|e| ApiError::bad(e.to_string()))?;
    let client = s.pool.get().await.map_err(ApiError::unavailable)?;
    let rows = client
        .query(
            "SELECT c.id, c.command, c.requested_by, c.requested_at, c.finished_at, c.outcome, c.detail
             FROM meter_commands c JOIN meters m ON m.id = c.meter_id
             WHERE m.serial = $1 ORDER BY c.requested_at DESC, c.id DESC LIMIT 1000",
            &[&serial.as_str()],
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(
        rows.iter()
            .map(|r| CommandRecord {
                id: r.get(0),
                command: r.get(1),
                requested_by: r.get(2),
                requested_at: r.get(3),
                finished_at: r.get(4),
                outcome: r.get(5),
                detail: r.get(6),
            })
            .collect(),
    ))
}

/// `POST /api/v1/collect/rounds` (operator token): every polling group starts a round now; meters
/// whose last session failed, or whose slot has come, are polled. 202 Accepted.
async fn start_round(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorised(&s, &headers)?;
    let Some(tx) = &s.poll_now else {
        return Err(ApiError::new(StatusCode::CONFLICT, "polling is off (collect.enabled = false)"));
    };
    tx.send_modify(|n| *n += 1);
    tracing::info!("polling round requested through the API");
    Ok((StatusCode::ACCEPTED, Json(json!({"started": true}))).into_response())
}
