//! HTTP: `/livez` (no dependencies), `/readyz` (database reachable, broker subscription granted, not shutting down),
//! `/metrics` (Prometheus text), and the JSON API under `/api/v1`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use schemas::channel;
use schemas::reading::unpack_flags;
use schemas::{MeterSerial, ObisCode};
use serde::Serialize;
use serde_json::json;

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
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/meters/{serial}/readings", get(readings))
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
