//! The OpenAPI document against the code, without a database: every schema reference resolves,
//! every operation answers something and names its security, nothing under `/api/` is registered
//! outside utoipa-axum's `routes!` (so nothing is undocumented), and every documented path and
//! method is really served (it reaches a handler, which refuses an anonymous caller with 401).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::Value;

/// Operations anyone may call without a session or token. None today: `/api/openapi.json` itself
/// is served beside the document, not in it.
const PUBLIC: &[(&str, &str)] = &[];

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    serde_json::to_value(headend::http::openapi()).expect("the document serialises")
}

/// Every `(method, path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(*m) {
                out.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "$ref" {
                    out.push((at.to_owned(), x.as_str().unwrap_or("<not a string>").to_owned()));
                } else {
                    refs(x, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().expect("components.schemas");
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(!found.is_empty(), "the document references no schema at all: is it empty?");
    let broken: Vec<String> = found
        .iter()
        .filter(|(_, r)| r.strip_prefix("#/components/schemas/").is_none_or(|name| !schemas.contains_key(name)))
        .map(|(at, r)| format!("{at}: {r}"))
        .collect();
    assert!(broken.is_empty(), "schema references that do not resolve to components.schemas:\n{}", broken.join("\n"));
}

#[test]
fn every_operation_documents_responses_security_and_path_parameters() {
    let doc = document();
    let schemes = doc["components"]["securitySchemes"].as_object().expect("components.securitySchemes");
    let ops = operations(&doc);
    assert!(ops.len() >= 10, "only {} operations documented", ops.len());
    let mut wrong = Vec::new();
    for (method, path, op) in &ops {
        let here = format!("{} {path}", method.to_uppercase());
        if op["responses"].as_object().is_none_or(|r| r.is_empty()) {
            wrong.push(format!("{here}: no response documented"));
        }
        let security = op["security"].as_array().cloned().unwrap_or_default();
        let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
        if public != security.is_empty() {
            wrong.push(format!(
                "{here}: {}",
                if public {
                    "listed as public but has a security entry"
                } else {
                    "no security entry (who may call it?)"
                }
            ));
        }
        for requirement in &security {
            for name in requirement.as_object().map(|o| o.keys().collect::<Vec<_>>()).unwrap_or_default() {
                if !schemes.contains_key(name) {
                    wrong.push(format!("{here}: security scheme {name} is not in components.securitySchemes"));
                }
            }
        }
        // Every {name} of the path is a documented path parameter, and the other way round.
        let in_path: BTreeSet<String> =
            path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(n, _)| n.to_owned()).collect();
        let documented: BTreeSet<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default();
        if in_path != documented {
            wrong.push(format!("{here}: path parameters {in_path:?} but documented {documented:?}"));
        }
        if op["description"].as_str().unwrap_or("").trim().is_empty()
            && op["summary"].as_str().unwrap_or("").trim().is_empty()
        {
            wrong.push(format!("{here}: no summary or description (who may call it?)"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read source directory").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Registrations of API paths outside `routes!`: `.route("/api/…"`, `.route_service("/api/…"` or
/// `.nest("/api…"` (arguments may start on the next line). The one exception is the document itself.
fn undocumented_registrations(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        for (i, _) in source.match_indices(call) {
            let args = source[i + call.len()..].trim_start();
            let Some(literal) = args.strip_prefix('"') else { continue };
            let path = literal.split('"').next().unwrap_or("");
            if path.starts_with("/api") && path != "/api/openapi.json" {
                let line = source[..i].lines().count().max(1);
                found.push(format!("line {line}: {call}\"{path}\""));
            }
        }
    }
    found
}

#[test]
fn the_tidy_check_sees_plain_api_routes() {
    let bad = "Router::new()\n    .route(\n        \"/api/v1/secret\", get(h))\n    .nest(\"/api/v2\", r)";
    assert_eq!(undocumented_registrations(bad).len(), 2, "{:?}", undocumented_registrations(bad));
    let good = "r.route(\"/api/openapi.json\", get(doc)).route(\"/portal\", get(p)).routes(routes!(readings))";
    assert!(undocumented_registrations(good).is_empty());
}

#[test]
fn no_api_route_is_registered_outside_routes_macro() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), src.display());
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        for hit in undocumented_registrations(&text) {
            bad.push(format!("{}: {hit}", f.strip_prefix(&src).unwrap_or(f).display()));
        }
    }
    assert!(
        bad.is_empty(),
        "API routes registered with plain axum routing (register them with utoipa_axum's routes! and \
         #[utoipa::path] so that they are documented):\n{}",
        bad.join("\n")
    );
}

/// A head-end's router on a free port, without a database (the pool connects lazily and no
/// anonymous request reaches it). The runtime lives as long as the returned value.
fn serve_router() -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let addr = rt.block_on(async {
        let pool = headend::app::pool("postgres://nobody@127.0.0.1:1/none", 1).expect("lazy pool");
        let state = headend::http::AppState::new(
            pool,
            Arc::new(headend::metrics::Metrics::new()),
            Arc::new(headend::mqtt::MqttState::default()),
            Arc::new(AtomicBool::new(true)),
            headend::config::HttpConfig::default(),
            headend::config::AuthConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = headend::http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    (rt, addr)
}

#[test]
fn every_documented_operation_is_served_and_refuses_anonymous_callers() {
    let doc = document();
    let (_rt, addr) = serve_router();
    let mut wrong = Vec::new();
    for (method, path, _) in operations(&doc) {
        // Path parameters: any value will do, the caller is refused before it is looked at.
        let url: String = path
            .split('{')
            .enumerate()
            .map(|(i, part)| match (i, part.split_once('}')) {
                (0, _) | (_, None) => part.to_owned(),
                (_, Some((_, rest))) => format!("X1{rest}"),
            })
            .collect();
        let m = method.to_uppercase();
        let (status, headers, body) =
            tests::procs::http_request(addr, &m, &url, &[("Content-Type", "application/json")], Some("{}"))
                .expect("request");
        let code =
            serde_json::from_str::<Value>(&body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        let json = headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/json"));
        let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
        if code.as_deref() == Some("no_route") || status == 405 {
            wrong.push(format!("{m} {path} ({url}): documented but not served: {status} {body}"));
        } else if !public && (status != 401 || code.as_deref() != Some("unauthorized") || !json) {
            wrong.push(format!("{m} {path} ({url}): anonymous caller got {status} {body}, not 401 unauthorized"));
        }
    }
    // The fallback itself still answers no_route (so the check above can see a missing route).
    let (status, _, body) =
        tests::procs::http_request(addr, "GET", "/api/v1/no-such-thing", &[], None).expect("request");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"no_route\""), "{body}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn refusals_by_the_framework_have_the_api_error_shape() {
    let (_rt, addr) = serve_router();
    // A method the route does not take: axum's 405 is plain; the API's is the JSON shape.
    let (status, headers, body) = tests::procs::http_request(addr, "DELETE", "/api/v1/me", &[], None).expect("request");
    assert_eq!(status, 405, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["error"]["code"], "method_not_allowed", "{body}");
    assert!(headers.iter().any(|(k, v)| k == "allow" && v.contains("GET")), "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/json")), "{headers:?}");
}
