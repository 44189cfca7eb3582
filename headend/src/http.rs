//! HTTP: `/livez` (no dependencies), `/readyz` (database reachable, broker subscription granted, not shutting down),
//! `/metrics` (Prometheus text), the JSON API under `/api/v1` ([`crate::api`], documented at
//! `/api/openapi.json`), and the pages for households and operators ([`crate::web`]).
//!
//! Every route has an owner. Public: `/livez`, `/readyz`, `/metrics` (scraped inside the cluster;
//! no personal data), `/api/openapi.json`, `/assets/*`, `/login`, `/activate`. Everything else needs
//! a session or an API token and names its role (household: own household only; operator; admin).
//! Middleware, outermost first: metrics per matched route → security headers → concurrency limit
//! (API and pages only) → [`crate::auth::authenticate`] (principal, CSRF) → one JSON error shape
//! under `/api/` (axum's own 405/415/422 refusals included).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde_json::json;

use crate::api::{self, ApiError};
use crate::auth::limit::Attempts;
use crate::collect::Commander;
use crate::config::{AuthConfig, HttpConfig};
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
    pub auth_cfg: AuthConfig,
    /// Login and activation attempts per client address.
    pub attempts: Arc<Attempts>,
    /// `http.max_concurrent_requests` permits for the API and the pages.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state for a head-end's HTTP server.
    pub fn new(
        pool: Pool,
        metrics: Arc<Metrics>,
        mqtt: Arc<MqttState>,
        accepting: Arc<AtomicBool>,
        cfg: HttpConfig,
        auth_cfg: AuthConfig,
    ) -> Self {
        AppState {
            pool,
            metrics,
            mqtt,
            accepting,
            attempts: Arc::new(Attempts::new(auth_cfg.attempts_per_minute)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_requests.max(1))),
            cfg,
            auth_cfg,
            commander: None,
            poll_now: None,
        }
    }
}

/// The OpenAPI document of every API route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes().into_openapi()
}

/// The router.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api::routes().split_for_parts();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .merge(api)
        .merge(crate::web::routes())
        .fallback(fallback)
        .layer(middleware::from_fn(api_error_shape))
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), limit_concurrency))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn fallback(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        ApiError::not_found("no such route").with_code("no_route").into_response()
    } else {
        crate::web::message_page(StatusCode::NOT_FOUND, "404", "No such page. / Ova stranica ne postoji.")
    }
}

/// Under `/api/` every error has the one JSON shape. axum's own refusals — 405 for a method the
/// route does not take, 415 for a body that is not JSON, 422 for JSON that does not fit, 400 for a
/// bad path or query — come as plain text (or nothing); they are rewritten here, their text kept as
/// the message.
async fn api_error_shape(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let r = next.run(req).await;
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let code = match status.as_u16() {
        400 | 422 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "error",
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// Portal and API requests beyond `http.max_concurrent_requests` get 503 at once instead of
/// queueing for database connections (probes and metrics are never limited).
async fn limit_concurrency(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let p = req.uri().path();
    if matches!(p, "/livez" | "/readyz" | "/metrics") || p.starts_with("/assets/") {
        return next.run(req).await;
    }
    match s.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            s.metrics.http_rejected.inc();
            let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "busy; try again shortly")
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// Headers on every response: no sniffing, no framing, no referrer leaks, a strict content
/// policy for pages (scripts and styles from this origin only: the chart library is vendored), and
/// no caching of anything personal.
async fn security_headers(req: Request, next: Next) -> Response {
    let assets = req.uri().path().starts_with("/assets/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    if !assets && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
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
    let broker =
        match (s.mqtt.disabled, s.mqtt.connected.load(Ordering::Acquire), s.mqtt.subscribed.load(Ordering::Acquire)) {
            (true, _, _) => "disabled",
            (false, true, true) => "subscribed",
            (false, true, false) => "connected, not subscribed",
            (false, false, _) => "disconnected",
        };
    let accepting = s.accepting.load(Ordering::Acquire);
    let ready = db == "ok" && matches!(broker, "subscribed" | "disabled") && accepting;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"ready": ready, "database": db, "broker": broker, "shutting_down": !accepting}))).into_response()
}
