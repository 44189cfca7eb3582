//! Security from the attacker's side, on the real database and real head-end processes.
//!
//! - A route × role matrix generated from the served `/api/openapi.json` (every documented path and
//!   method, path parameters filled by name from [`value`]), run with API tokens and with browser
//!   sessions, plus the pages found by following the links of `/portal` and `/ops` as each role.
//! - Households A and B (two flats of the simulated inventory, in different buildings): B's serial
//!   and B's code in A's URLs answer exactly what a serial or code that does not exist answers.
//! - Forged, truncated and random session cookies; sessions after logout, idle sessions, disabled
//!   accounts; revoked, expired and unknown tokens; CSRF (no/wrong token, foreign Origin, Origin
//!   `null`, `Sec-Fetch-Site: cross-site`, text/plain bodies, method override, login without the
//!   pre-login cookie).
//! - Login: lock-out (also across letter case, across head-ends and under concurrent guesses), the
//!   per-address limit (not bypassed by a spoofed `X-Forwarded-For`), identical refusals for unknown
//!   users, wrong passwords and locked accounts; cookie flags; a new session id at every login.
//! - Activation codes work once (also under concurrent redemption); open redirects; security
//!   headers; no secret in the log or in `headend config`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{Datelike, DurationRound, TimeDelta, Utc};
use serde_json::Value;
use tests::procs::{self, Headend, HeadendSpec};

use crate::pipeline::Pipeline;

/// Seed 3 puts 63 meters in the first building and 17 in the second: households A and B live in
/// different buildings.
const SEED: u64 = 3;
const METERS: usize = 80;
/// The password of every account the tests make (the operator's is the harness's).
const PASSWORD: &str = "correct-horse-7";
const OPERATOR: (&str, &str) = ("e2e-operator", "e2e-operator-password");
/// A serial and a household code of the inventory's shape that do not exist.
const MISSING_SERIAL: &str = "SIM99999999";
const MISSING_HOUSEHOLD: &str = "H99999999";

// ---------------------------------------------------------------------------------------------
// HTTP as a browser and as an attacker send it
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The whole `Set-Cookie` line for cookie `name`.
    fn set_cookie_line(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .find(|v| v.split('=').next().is_some_and(|n| n.trim() == name))
    }

    /// The value `Set-Cookie` gives cookie `name` (empty when it removes it).
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookie_line(name)
            .map(|l| l.split(';').next().and_then(|kv| kv.split_once('=')).map_or("", |(_, v)| v.trim()).to_owned())
    }

    fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.describe()))
    }

    /// `error.code`, checking the API's one error shape on the way.
    fn error_code(&self) -> String {
        let v = self.json();
        let (code, message) = (v["error"]["code"].as_str(), v["error"]["message"].as_str());
        assert!(code.is_some() && message.is_some(), "not the API error shape: {}", self.describe());
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/json")),
            "error without a JSON content type: {:?}",
            self.headers
        );
        code.unwrap_or_default().to_owned()
    }

    fn describe(&self) -> String {
        let cut: String = self.body.chars().take(700).collect();
        format!("{} {cut}", self.status)
    }
}

fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let (status, headers, body) =
        procs::http_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    Resp { status, headers, body }
}

/// Percent-encoding of everything but letters, digits and the bytes in `keep`.
fn percent(s: &str, keep: &[u8]) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A form or query value (RFC 3986 unreserved characters kept).
fn enc(s: &str) -> String {
    percent(s, b"-_.~")
}

/// What the head-end puts after `/login?next=` (its `auth::urlencode`, which keeps `/`).
fn next_param(path: &str) -> String {
    percent(path, b"-_.~/")
}

fn form(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&")
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Who calls.
#[derive(Debug, Clone)]
enum Caller {
    Anonymous,
    Token(String),
    /// A browser session: the cookie's value and the session's CSRF token (sent on unsafe methods).
    Session {
        cookie: String,
        csrf: String,
    },
}

impl Caller {
    fn call(&self, addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Resp {
        let mut h: Vec<(String, String)> = Vec::new();
        match self {
            Caller::Anonymous => {}
            Caller::Token(t) => h.push(("Authorization".into(), format!("Bearer {t}"))),
            Caller::Session { cookie, csrf } => {
                h.push(("Cookie".into(), format!("hes_session={cookie}")));
                if !matches!(method, "GET" | "HEAD") {
                    h.push(("X-CSRF-Token".into(), csrf.clone()));
                }
            }
        }
        if body.is_some() {
            h.push(("Content-Type".into(), "application/json".into()));
        }
        let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        send(addr, method, path, &refs, body)
    }

    fn get(&self, addr: SocketAddr, path: &str) -> Resp {
        self.call(addr, "GET", path, None)
    }

    fn cookie(&self) -> &str {
        match self {
            Caller::Session { cookie, .. } => cookie,
            _ => "",
        }
    }

    fn csrf(&self) -> &str {
        match self {
            Caller::Session { csrf, .. } => csrf,
            _ => "",
        }
    }
}

/// The pre-login cookie that opening `page` (`/login`, `/activate`) sets.
fn pre_cookie(addr: SocketAddr, page: &str) -> String {
    let r = send(addr, "GET", page, &[], None);
    assert_eq!(r.status, 200, "GET {page}: {}", r.describe());
    let line = r.set_cookie_line("hes_pre").unwrap_or_else(|| panic!("GET {page} sets no pre-login cookie"));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(flag), "pre-login cookie without {flag}: {line}");
    }
    r.set_cookie("hes_pre").unwrap_or_default()
}

/// Posts the login form as a browser does, with the cookies given (`hes_pre=…` at least).
fn post_login_with(
    addr: SocketAddr,
    cookies: &str,
    csrf: &str,
    username: &str,
    password: &str,
    next: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut h = vec![("Cookie", cookies), FORM];
    h.extend_from_slice(extra);
    let body = form(&[("csrf", csrf), ("username", username), ("password", password), ("next", next)]);
    send(addr, "POST", "/login", &h, Some(&body))
}

/// Opens the login page and posts the form.
fn post_login(addr: SocketAddr, username: &str, password: &str, next: &str, extra: &[(&str, &str)]) -> Resp {
    let pre = pre_cookie(addr, "/login");
    post_login_with(addr, &format!("hes_pre={pre}"), &pre, username, password, next, extra)
}

/// The CSRF token of the session behind a cookie (pages carry it in their forms; the tests read it
/// where the head-end keeps it).
fn session_csrf(p: &Pipeline, cookie: &str) -> String {
    p.rt.block_on(async {
        let c = p.db.client().await?;
        let row = c
            .query_one(
                "SELECT csrf_token FROM web_sessions WHERE id_hash = sha256(convert_to($1::text, 'UTF8'))",
                &[&cookie],
            )
            .await?;
        anyhow::Ok(row.get::<_, String>(0))
    })
    .expect("the session's CSRF token")
}

/// Logs in through the form and returns the session.
fn login(p: &Pipeline, addr: SocketAddr, username: &str, password: &str) -> Caller {
    let r = post_login(addr, username, password, "", &[]);
    assert_eq!(r.status, 303, "login {username}: {}", r.describe());
    let cookie = r.set_cookie("hes_session").filter(|c| !c.is_empty()).expect("a session cookie");
    Caller::Session { csrf: session_csrf(p, &cookie), cookie }
}

/// `body` with the value of every `<attribute>="…"` blanked.
fn blank(body: &str, attribute: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find(attribute) {
        let (head, tail) = rest.split_at(i + attribute.len());
        out.push_str(head);
        out.push('…');
        rest = tail.find('"').map_or("", |j| &tail[j..]);
    }
    out.push_str(rest);
    out
}

/// The refusal page of a login with what differs between two honest attempts set aside: the
/// username it echoes and the form's pre-login token.
fn refusal(r: &Resp, username: &str) -> (u16, String) {
    let body = r.body.replace(&format!("value=\"{username}\""), "value=\"…\"");
    (r.status, blank(&body, "name=\"csrf\" value=\""))
}

fn assert_security_headers(r: &Resp, what: &str) {
    for (name, want) in [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY")] {
        assert_eq!(r.header(name), Some(want), "{what}: {name} in {:?}", r.headers);
    }
    assert!(r.header("cache-control").is_some_and(|c| c.contains("no-store")), "{what}: cache-control {:?}", r.headers);
    let csp = r.header("content-security-policy").unwrap_or("");
    for part in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(part), "{what}: CSP without {part}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{what}: CSP {csp}");
}

// ---------------------------------------------------------------------------------------------
// The set-up: households A and B, accounts, head-ends
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Household {
    code: String,
    serial: String,
}

/// Households A and B from the inventory: the first flat, and the first flat of another building
/// (or the next flat when the fleet has one building).
fn households(p: &Pipeline) -> (Household, Household) {
    let rows =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            let rows = c
                .query(
                    "SELECT h.code, m.serial, h.building_id FROM households h JOIN meters m ON m.household_id = h.id
                     ORDER BY h.id, m.id",
                    &[],
                )
                .await?;
            anyhow::Ok(
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i32>(2)))
                    .collect::<Vec<_>>(),
            )
        })
        .expect("households");
    let a = rows.first().expect("a household").clone();
    let b = rows
        .iter()
        .find(|r| r.2 != a.2)
        .or_else(|| rows.iter().find(|r| r.0 != a.0))
        .expect("a second household")
        .clone();
    (Household { code: a.0, serial: a.1 }, Household { code: b.0, serial: b.1 })
}

fn account(p: &Pipeline, username: &str, role: &str, households: &[&str]) {
    procs::create_account(&p.db.url, username, role, households, PASSWORD)
        .unwrap_or_else(|e| panic!("account {username}: {e}"));
}

fn token(p: &Pipeline, username: &str) -> String {
    procs::api_token(&p.db.url, username, "security").unwrap_or_else(|e| panic!("token {username}: {e}"))
}

/// A head-end with generous login limits (the tests log in often, from one address; the lock-out
/// is tested on a head-end of its own).
fn start_main(p: &mut Pipeline) -> Headend {
    p.spec.env.push(("HEADEND_AUTH__ATTEMPTS_PER_MINUTE".into(), "100000".into()));
    p.spec.env.push(("HEADEND_AUTH__MAX_FAILED_LOGINS".into(), "1000".into()));
    p.start_headend().expect("head-end")
}

/// A pipeline of `meters` meters with a head-end ([`start_main`]), households A and B, and the
/// admin account `admin-1`.
fn site(tag: &str, meters: usize) -> (Pipeline, Headend, Household, Household) {
    let mut p = Pipeline::new(tag, meters, SEED, false).expect("pipeline");
    let headend = start_main(&mut p);
    let (a, b) = households(&p);
    account(&p, "admin-1", "admin", &[]);
    (p, headend, a, b)
}

/// A second head-end on the same database with its own settings (and its own MQTT client id).
fn start_extra(p: &Pipeline, name: &str, env: &[(&str, &str)]) -> Headend {
    let mut spec: HeadendSpec = p.spec.clone();
    spec.client_id = format!("{}-{name}", spec.client_id);
    spec.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Headend::start(&spec, &p.dir.path().join(format!("headend-{name}.log"))).expect("extra head-end")
}

fn query_i64(p: &Pipeline, sql: &str, params: &[&str]) -> i64 {
    p.rt.block_on(async {
        let c = p.db.client().await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        anyhow::Ok(c.query_one(sql, &params).await?.get::<_, i64>(0))
    })
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The last local month (`YYYY-MM`) and the UTC instants of its first and last midnight.
fn last_month() -> (String, [chrono::DateTime<Utc>; 2]) {
    let tz = chrono_tz::Europe::Belgrade;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let this_month = today.with_day(1).unwrap_or(today);
    let first = this_month.checked_sub_months(chrono::Months::new(1)).unwrap_or(this_month);
    let midnight = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(tz).earliest())
            .map(|t| t.with_timezone(&Utc))
            .expect("local midnight")
    };
    (first.format("%Y-%m").to_string(), [midnight(first), midnight(this_month)])
}

/// Readings of every meter for the last day and around both ends of the last month, then the
/// last month billed (`billing run`), so that the routes and pages have consumption, bills and a
/// building reconciliation to show.
fn publish_and_bill(p: &Pipeline) {
    let fmt = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = Utc::now().duration_trunc(TimeDelta::minutes(15)).expect("15 minutes") - TimeDelta::minutes(15);
    let (period, ends) = last_month();
    let mut windows = vec![(to - TimeDelta::hours(26), to)];
    for end in ends {
        windows.push((end - TimeDelta::minutes(30), end + TimeDelta::minutes(30)));
    }
    windows.sort();
    windows.dedup_by(|next, prev| next.0 < prev.1);
    let mut n = 0;
    for (from, to) in windows {
        let summary = p.publish(&fmt(from), &fmt(to), &[]).expect("simulator");
        n += summary["readings"].as_i64().expect("readings");
        p.wait_for_readings(n, Duration::from_secs(300)).expect("readings stored");
    }
    procs::run_bin("billing", &["run", "--period", &period], &[("DATABASE_URL", &p.db.url)]).expect("billing run");
}

// ---------------------------------------------------------------------------------------------
// The route × role matrix
// ---------------------------------------------------------------------------------------------

/// Who a route is for, as its description says ("Admins only.", "Operators and admins only.",
/// "Households: …", "Any logged-in account.").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Any,
    Operator,
    Admin,
}

#[derive(Debug)]
struct Op {
    method: String,
    path: String,
    class: Class,
    /// Names of the path parameters and of the required query parameters.
    path_params: Vec<String>,
    query: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose {
    Own,
    Other,
    Missing,
}

/// The value of a path or required query parameter, by its name: household A's (`Own`), B's
/// (`Other`) or one that does not exist. A route with a parameter not named here fails the test
/// until it is added, so that new routes are never skipped.
fn value(name: &str, whose: Whose, a: &Household, b: &Household) -> String {
    let now = Utc::now().with_timezone(&chrono_tz::Europe::Belgrade).date_naive();
    match (name, whose) {
        ("serial", Whose::Own) => a.serial.clone(),
        ("serial", Whose::Other) => b.serial.clone(),
        ("serial", Whose::Missing) => MISSING_SERIAL.into(),
        ("code" | "household", Whose::Own) => a.code.clone(),
        ("code" | "household", Whose::Other) => b.code.clone(),
        ("code" | "household", Whose::Missing) => MISSING_HOUSEHOLD.into(),
        ("username", _) => "matrix-victim".into(),
        ("period" | "month", _) => last_month().0,
        ("year", _) => now.year().to_string(),
        ("day" | "date", _) => (now - chrono::Days::new(1)).format("%Y-%m-%d").to_string(),
        ("page", _) => "1".into(),
        _ => panic!("no test value for the parameter {name:?}: add it to value() in tests/tests/e2e/security.rs"),
    }
}

impl Op {
    fn url(&self, whose: Whose, a: &Household, b: &Household) -> String {
        let mut url = self.path.clone();
        for p in &self.path_params {
            url = url.replace(&format!("{{{p}}}"), &enc(&value(p, whose, a, b)));
        }
        let q: Vec<String> = self.query.iter().map(|n| format!("{n}={}", enc(&value(n, whose, a, b)))).collect();
        if !q.is_empty() {
            url = format!("{url}?{}", q.join("&"));
        }
        url
    }

    fn what(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let text = format!("{} {}", op["summary"].as_str().unwrap_or(""), op["description"].as_str().unwrap_or(""))
                .to_lowercase();
            let class = if text.contains("operators and admins only") {
                Class::Operator
            } else if text.contains("admins only") {
                Class::Admin
            } else if text.contains("households:") || text.contains("any logged-in account") {
                Class::Any
            } else {
                panic!(
                    "{} {path}: the description must say who may call it (\"Admins only.\", \"Operators and admins \
                     only.\", \"Households: …\" or \"Any logged-in account.\"): {text}",
                    method.to_uppercase()
                )
            };
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let names = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
                params.iter().filter(|p| pred(p)).filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
            };
            ops.push(Op {
                method: method.to_uppercase(),
                path: path.clone(),
                class,
                path_params: names(&|p| p["in"] == "path"),
                query: names(&|p| p["in"] == "query" && p["required"] == true),
            });
        }
    }
    ops
}

/// Nothing to show yet (no bill for the period, no billing run): a 404 `not_found`, which a
/// household gets exactly when an operator gets it too (checked by the caller).
fn absent(r: &Resp) -> bool {
    r.status == 404 && r.error_code() == "not_found"
}

/// The caller got past authentication and authorisation: whatever it answered, it was not a
/// refusal of who is asking, a missing route or a crash.
fn assert_allowed(r: &Resp, what: &str) {
    assert!(!matches!(r.status, 401 | 403 | 405 | 500), "{what}: {}", r.describe());
    if r.status >= 400 {
        let code = r.error_code();
        assert!(
            !["unauthorized", "forbidden", "csrf", "no_route"].contains(&code.as_str()),
            "{what}: {}",
            r.describe()
        );
    }
}

fn assert_refused(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!((r.status, r.error_code()), (status, code.to_owned()), "{what}: {}", r.describe());
}

/// The answer about another household's thing, compared with the answer about nothing: the same
/// 404, byte for byte once the identifier each echoes is set aside, and nothing of B in it.
fn assert_same_as_missing(other: &Resp, missing: &Resp, b: &Household, b_value: &str, missing_value: &str, what: &str) {
    assert_refused(other, 404, "not_found", what);
    let o = other.body.replace(b_value, "{id}");
    let m = missing.body.replace(missing_value, "{id}");
    assert_eq!((other.status, &o), (missing.status, &m), "{what}: B's thing answers unlike a missing one");
    assert!(!o.contains(&b.serial) && !o.contains(&b.code), "{what}: B's identifiers in {o}");
}

struct Roles {
    household_a: Caller,
    household_b: Caller,
    operator: Caller,
    admin: Caller,
}

fn check_operation(addr: SocketAddr, op: &Op, roles: &Roles, via: &str, a: &Household, b: &Household) {
    let (own, other, missing) = (op.url(Whose::Own, a, b), op.url(Whose::Other, a, b), op.url(Whose::Missing, a, b));
    let scoped = own != other;
    let body = (op.method != "GET").then_some("{}");
    let what = |who: &str| format!("{} as {who} ({via})", op.what());

    let r = Caller::Anonymous.call(addr, &op.method, &own, body);
    assert_refused(&r, 401, "unauthorized", &what("anonymous"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{}", what("anonymous"));
    assert_security_headers(&r, &what("anonymous"));

    let hh = &roles.household_a;
    match op.class {
        Class::Operator | Class::Admin => {
            for url in [&own, &other, &missing] {
                assert_refused(&hh.call(addr, &op.method, url, body), 403, "forbidden", &what("household A"));
            }
        }
        Class::Any => {
            let mine = hh.call(addr, &op.method, &own, body);
            assert_allowed(&mine, &what("household A, own"));
            assert_security_headers(&mine, &what("household A, own"));
            let theirs = roles.operator.call(addr, &op.method, &own, body);
            assert_eq!(mine.status, theirs.status, "{}: a household gets what an operator gets", what("household A"));
            if op.method == "GET" {
                assert!(mine.status == 200 || absent(&mine), "{}: {}", what("household A, own"), mine.describe());
            }
            if scoped {
                let other_r = hh.call(addr, &op.method, &other, body);
                let missing_r = hh.call(addr, &op.method, &missing, body);
                let (bv, mv) = if op.path_params.iter().any(|p| p == "serial") {
                    (b.serial.as_str(), MISSING_SERIAL)
                } else {
                    (b.code.as_str(), MISSING_HOUSEHOLD)
                };
                assert_same_as_missing(&other_r, &missing_r, b, bv, mv, &what("household A with B's"));
                // B itself is served.
                let b_own = roles.household_b.call(addr, &op.method, &other, body);
                assert_allowed(&b_own, &what("household B, own"));
                assert_eq!(b_own.status, roles.operator.call(addr, &op.method, &other, body).status, "{}", what("B"));
            }
        }
    }

    for (who, caller, may) in [("operator", &roles.operator, op.class != Class::Admin), ("admin", &roles.admin, true)] {
        let r = caller.call(addr, &op.method, &own, body);
        if may {
            assert_allowed(&r, &what(who));
            if op.method == "GET" {
                assert!(r.status == 200 || absent(&r), "{}: {}", what(who), r.describe());
                if r.status == 404 {
                    eprintln!("security matrix: {} answers 404 to the {who}: {}", op.what(), r.describe());
                }
            }
        } else {
            assert_refused(&r, 403, "forbidden", &what(who));
        }
    }
}

/// Text of an HTML attribute with its character references undone (askama writes `&` as `&#38;`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let name = &tail[1..end];
        let c = match name {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => name
                .strip_prefix("#x")
                .or_else(|| name.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Local links of an HTML page (`href`), fragments dropped.
fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(unescape)
        .map(|l| l.split('#').next().unwrap_or("").to_owned())
        .filter(|l| l.starts_with('/') && !l.starts_with("//"))
        .collect()
}

/// The pages reachable from `seeds` by following links under `prefix`, as `caller`: each must
/// open (200, after a local redirect). At most two pages of one shape (digits and query values
/// aside) and `limit` in all, so pagination and long lists stay cheap.
fn crawl(addr: SocketAddr, caller: &Caller, seeds: &[&str], prefix: &str, limit: usize) -> Vec<(String, Resp)> {
    let mut queue: VecDeque<String> = seeds.iter().map(|s| s.to_string()).collect();
    let mut seen: HashSet<String> = queue.iter().cloned().collect();
    let mut shapes: HashMap<String, usize> = HashMap::new();
    let mut pages = Vec::new();
    while let Some(url) = queue.pop_front() {
        if pages.len() >= limit {
            break;
        }
        let mut r = caller.get(addr, &url);
        let mut hops = 0;
        while matches!(r.status, 302 | 303 | 307) && r.location().starts_with(prefix) && hops < 3 {
            let next = r.location().to_owned();
            r = caller.get(addr, &next);
            hops += 1;
        }
        assert_eq!(r.status, 200, "{url} (linked from a page under {prefix}) as {caller:?}: {}", r.describe());
        if r.header("content-type").is_some_and(|c| c.starts_with("text/html")) {
            for l in links(&r.body) {
                let skip = ["/assets/", "/lang/", "/logout", "/api/"].iter().any(|s| l.starts_with(s));
                if skip || !l.starts_with(prefix) || seen.contains(&l) {
                    continue;
                }
                let (path, query) = l.split_once('?').unwrap_or((&l, ""));
                let keys: Vec<&str> = query.split('&').map(|kv| kv.split('=').next().unwrap_or("")).collect();
                let shape = format!("{}?{}", path.replace(|c: char| c.is_ascii_digit(), "9"), keys.join("&"));
                let n = shapes.entry(shape).or_insert(0);
                if *n < 2 {
                    *n += 1;
                    seen.insert(l.clone());
                    queue.push_back(l);
                }
            }
        }
        pages.push((url, r));
    }
    pages
}

/// The forms of a page that post: their target and the value of their `csrf` field (empty when
/// they have none).
fn post_forms(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        tag.split(&format!("{name}=\"")).nth(1).and_then(|v| v.split('"').next()).map(unescape).unwrap_or_default()
    };
    html.split("<form")
        .skip(1)
        .filter_map(|chunk| {
            let form = chunk.split("</form>").next().unwrap_or("");
            let tag = form.split('>').next().unwrap_or("");
            if !attr(tag, "method").eq_ignore_ascii_case("post") {
                return None;
            }
            let csrf =
                form.split("name=\"csrf\"").nth(1).map(|rest| attr(rest.split('>').next().unwrap_or(""), "value"));
            Some((attr(tag, "action"), csrf.unwrap_or_default()))
        })
        .collect()
}

/// Every form a page offers its viewer carries the session's CSRF token; posting it without the
/// token, anonymously, or as a role below the page's is refused. (The forms are not submitted
/// with the token: they disable accounts and open breakers.)
fn check_forms(addr: SocketAddr, pages: &[(String, Resp)], viewer: &Caller, roles: &Roles) -> usize {
    let mut checked = HashSet::new();
    for (url, r) in pages {
        for (action, csrf) in post_forms(&r.body) {
            assert_eq!(csrf, viewer.csrf(), "{url}: the form posting to {action} lacks the session's CSRF token");
            if action == "/logout" || !checked.insert(action.clone()) {
                continue;
            }
            let post = |caller: &Caller, token: &str, extra: &[(&str, &str)]| {
                let cookie = format!("hes_session={}", caller.cookie());
                let mut h = vec![("Cookie", cookie.as_str()), FORM];
                h.extend_from_slice(extra);
                send(addr, "POST", &action, &h, Some(&form(&[("csrf", token)])))
            };
            let refused = |r: &Resp, what: &str| {
                assert_eq!(r.status, 403, "{url}: POST {action} {what}: {}", r.describe());
            };
            refused(&post(viewer, "", &[]), "without the token");
            refused(&post(viewer, "wrong", &[]), "with a wrong token");
            refused(&post(viewer, viewer.csrf(), &[("Origin", "http://evil.example")]), "from another site");
            let r = post(&Caller::Anonymous, "", &[]);
            assert!(
                r.status == 403 || r.location().starts_with("/login"),
                "{url}: anonymous POST {action}: {}",
                r.describe()
            );
            if action.starts_with("/ops") {
                refused(&post(&roles.household_a, roles.household_a.csrf(), &[]), "as a household");
            }
            if action.starts_with("/ops/accounts") {
                refused(&post(&roles.operator, roles.operator.csrf(), &[]), "as an operator");
            }
        }
    }
    checked.len()
}

/// Anonymous visitors of a page are sent to the login page, which brings them back afterwards.
fn assert_redirects_to_login(addr: SocketAddr, url: &str, caller: &Caller, what: &str) {
    let r = caller.get(addr, url);
    assert_eq!(r.status, 303, "{what} {url}: {}", r.describe());
    assert_eq!(r.location(), format!("/login?next={}", next_param(url)), "{what} {url}");
    assert_security_headers(&r, url);
}

#[test]
fn every_documented_route_and_every_page_answers_each_role_as_documented() {
    let (p, headend, a, b) = site("security", METERS);
    let addr = headend.http;
    publish_and_bill(&p);
    account(&p, "hh-a", "household", &[&a.code]);
    account(&p, "hh-b", "household", &[&b.code]);
    account(&p, "matrix-victim", "household", &[&a.code]);

    let doc = Caller::Anonymous.get(addr, "/api/openapi.json");
    assert_eq!(doc.status, 200, "the document is public: {}", doc.describe());
    let ops = operations(&doc.json());
    assert!(ops.len() >= 10, "{} operations", ops.len());

    let tokens = Roles {
        household_a: Caller::Token(token(&p, "hh-a")),
        household_b: Caller::Token(token(&p, "hh-b")),
        operator: Caller::Token(p.token.clone()),
        admin: Caller::Token(token(&p, "admin-1")),
    };
    let sessions = Roles {
        household_a: login(&p, addr, "hh-a", PASSWORD),
        household_b: login(&p, addr, "hh-b", PASSWORD),
        operator: login(&p, addr, OPERATOR.0, OPERATOR.1),
        admin: login(&p, addr, "admin-1", PASSWORD),
    };
    for (via, roles) in [("token", &tokens), ("session", &sessions)] {
        for op in &ops {
            check_operation(addr, op, roles, via, &a, &b);
        }
    }
    // The account routes did what they say for the admin (the matrix called them with A's code
    // and the throw-away account): the account is disabled, the household has an invitation.
    assert_eq!(
        query_i64(
            &p,
            "SELECT count(*) FROM accounts WHERE username = 'matrix-victim' AND disabled_at IS NOT NULL",
            &[]
        ),
        1
    );

    // The pages, found by following links as each role.
    let portal = crawl(addr, &sessions.household_a, &["/portal"], "/portal", 40);
    let ops_pages = crawl(addr, &sessions.operator, &["/ops"], "/ops", 40);
    let admin_pages = crawl(addr, &sessions.admin, &["/ops/accounts"], "/ops", 10);
    let forged = Caller::Session { cookie: "forged-session-id".into(), csrf: String::new() };
    for (url, r) in portal.iter().chain(&ops_pages).chain(&admin_pages) {
        assert_security_headers(r, url);
        assert_redirects_to_login(addr, url, &Caller::Anonymous, "anonymous");
        assert_redirects_to_login(addr, url, &forged, "a forged session");
    }
    let mut substituted = 0;
    for (url, r) in &portal {
        assert!(!r.body.contains(&b.serial) && !r.body.contains(&b.code), "{url} shows household B's identifiers");
        // B's code or serial in A's URL answers what a missing one answers.
        for (mine, theirs, none) in [(&a.code, &b.code, MISSING_HOUSEHOLD), (&a.serial, &b.serial, MISSING_SERIAL)] {
            if !url.contains(mine.as_str()) {
                continue;
            }
            let other = sessions.household_a.get(addr, &url.replace(mine.as_str(), theirs));
            let missing = sessions.household_a.get(addr, &url.replace(mine.as_str(), none));
            let (o, m) = (other.body.replace(theirs.as_str(), "{id}"), missing.body.replace(none, "{id}"));
            assert_eq!((other.status, &o), (missing.status, &m), "{url} with B's {theirs}");
            assert_ne!(other.status, 200, "{url} with B's {theirs} opens: {}", other.describe());
            assert!(!o.contains(&b.serial) && !o.contains(&b.code), "{url} with B's {theirs} shows B");
            substituted += 1;
        }
    }
    for (url, _) in ops_pages.iter().chain(&admin_pages) {
        let r = sessions.household_a.get(addr, url);
        assert_eq!(r.status, 403, "a household opens the operator page {url}: {}", r.describe());
        assert_security_headers(&r, url);
    }
    for (url, _) in &admin_pages {
        if url.starts_with("/ops/accounts") {
            let r = sessions.operator.get(addr, url);
            assert_eq!(r.status, 403, "an operator opens the admin page {url}: {}", r.describe());
        }
    }
    let forms = check_forms(addr, &portal, &sessions.household_a, &sessions)
        + check_forms(addr, &ops_pages, &sessions.operator, &sessions)
        + check_forms(addr, &admin_pages, &sessions.admin, &sessions);
    assert!(forms > 0, "no form that posts was found on the pages");
    let urls = |pages: &[(String, Resp)]| pages.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(" ");
    eprintln!(
        "security matrix: {} operations x 2 ways x 4 roles; pages: portal {}, operator {}, admin {}; \
         {substituted} portal URLs tried with B's identifiers; {forms} form targets",
        ops.len(),
        urls(&portal),
        urls(&ops_pages),
        urls(&admin_pages)
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions, tokens and CSRF
// ---------------------------------------------------------------------------------------------

/// 43 characters of the session id alphabet, different at every call.
fn random_id(salt: u64) -> String {
    let mut x = salt ^ u64::from(Utc::now().timestamp_subsec_nanos()) ^ 0x9e37_79b9_7f4a_7c15;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..43)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet[(x % 64) as usize])
        })
        .collect()
}

fn me(addr: SocketAddr, caller: &Caller) -> Resp {
    caller.get(addr, "/api/v1/me")
}

fn assert_anonymous(addr: SocketAddr, caller: &Caller, what: &str) {
    assert_refused(&me(addr, caller), 401, "unauthorized", what);
    let r = caller.get(addr, "/");
    assert_eq!((r.status, r.location()), (303, "/login"), "{what}: / sends an anonymous visitor to the login page");
}

#[test]
fn forged_expired_and_revoked_credentials_and_forged_requests_are_refused() {
    let (p, headend, a, _) = site("security_sessions", 20);
    let addr = headend.http;
    account(&p, "hh-a", "household", &[&a.code]);
    account(&p, "doomed", "household", &[&a.code]);
    let admin = Caller::Token(token(&p, "admin-1"));

    // A real session, then forgeries of it: all anonymous, and the real one unharmed.
    let s = login(&p, addr, "hh-a", PASSWORD);
    let r = me(addr, &s);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["username"], "hh-a");
    let real = s.cookie().to_owned();
    let mut flipped = real.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let forgeries = [
        real[..real.len() - 1].to_owned(),
        real[..20].to_owned(),
        String::from_utf8(flipped).expect("ascii"),
        format!("{real}A"),
        random_id(1),
        random_id(2),
        String::new(),
        "A".repeat(4000),
        s.csrf().to_owned(),
        "' OR '1'='1".into(),
        "%00".into(),
    ];
    for f in &forgeries {
        let forged = Caller::Session { cookie: f.clone(), csrf: s.csrf().to_owned() };
        assert_anonymous(addr, &forged, &format!("forged cookie {f:.50}"));
        assert_redirects_to_login(addr, "/portal", &forged, "forged cookie");
        // Nor does it get past CSRF with the real session's token.
        let r = forged.call(addr, "POST", "/logout", Some(&form(&[("csrf", s.csrf())])));
        assert_eq!(r.status, 403, "logout with a forged cookie {f:.50}: {}", r.describe());
    }
    assert_eq!(me(addr, &s).status, 200, "the real session survives the forgeries");
    // A bad token next to a good cookie is refused, not ignored.
    let r = send(
        addr,
        "GET",
        "/api/v1/me",
        &[("Cookie", &format!("hes_session={real}")), ("Authorization", "Bearer hes_forged")],
        None,
    );
    assert_refused(&r, 401, "unauthorized", "a forged token beside a valid cookie");

    // CSRF, as the operator: a form (logout) and an API command.
    let op = login(&p, addr, OPERATOR.0, OPERATOR.1);
    let other_csrf = s.csrf().to_owned();
    let command = format!("/api/v1/meters/{}/commands", a.serial);
    let cookie = format!("hes_session={}", op.cookie());
    let good = op.csrf().to_owned();
    let host = addr.to_string();
    let same_origin = format!("http://{host}");
    let json_body = r#"{"command":"disconnect","note":"csrf test"}"#;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case<'_>> = vec![
        ("no token, JSON body", vec![("Content-Type", "application/json")], json_body.into()),
        ("no token, text/plain body", vec![("Content-Type", "text/plain")], "csrf=&x=1".into()),
        ("wrong token", vec![("X-CSRF-Token", "wrong")], json_body.into()),
        ("another session's token", vec![("X-CSRF-Token", &other_csrf)], json_body.into()),
        ("wrong token in a text/plain form", vec![("Content-Type", "text/plain")], "csrf=wrong".into()),
        (
            "method override",
            vec![("X-HTTP-Method-Override", "GET"), ("X-Method-Override", "GET")],
            "_method=GET".into(),
        ),
        ("foreign Origin", vec![("X-CSRF-Token", &good), ("Origin", "http://evil.example")], json_body.into()),
        ("Origin null", vec![("X-CSRF-Token", &good), ("Origin", "null")], json_body.into()),
        ("Origin on another port", vec![("X-CSRF-Token", &good), ("Origin", "http://127.0.0.1:1")], json_body.into()),
        ("cross-site fetch", vec![("X-CSRF-Token", &good), ("Sec-Fetch-Site", "cross-site")], json_body.into()),
    ];
    for (what, headers, body) in &cases {
        for target in ["/logout", command.as_str()] {
            let mut h = vec![("Cookie", cookie.as_str())];
            h.extend(headers.iter().copied());
            let r = send(addr, "POST", target, &h, Some(body));
            assert_eq!(r.status, 403, "{what} on {target}: {}", r.describe());
            if target.starts_with("/api/") {
                assert_eq!(r.error_code(), "csrf", "{what}");
            } else {
                assert!(
                    r.header("content-type").is_some_and(|c| c.starts_with("text/html")),
                    "{what}: {:?}",
                    r.headers
                );
                assert!(r.set_cookie("hes_session").is_none(), "{what}: a refused logout touches no cookie");
            }
        }
    }
    // The pre-login token does not stand in for the session's.
    let pre = pre_cookie(addr, "/login");
    let both = format!("{cookie}; hes_pre={pre}");
    let r = send(addr, "POST", "/logout", &[("Cookie", &both), FORM], Some(&form(&[("csrf", &pre)])));
    assert_eq!(r.status, 403, "logout with the pre-login token: {}", r.describe());
    // GET does not log out (only POST is routed).
    let r = send(addr, "GET", "/logout", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 405, "GET /logout: {}", r.describe());
    assert_eq!(me(addr, &op).status, 200, "none of the forged requests logged the operator out");
    assert_eq!(query_i64(&p, "SELECT count(*) FROM meter_commands", &[]), 0, "no forged command was recorded");

    // The same requests with the right token (and a same-origin Origin) are accepted.
    for headers in [
        vec![("X-CSRF-Token", good.as_str())],
        vec![("X-CSRF-Token", good.as_str()), ("Origin", &same_origin), ("Sec-Fetch-Site", "same-origin")],
    ] {
        let mut h = vec![("Cookie", cookie.as_str()), ("Content-Type", "application/json")];
        h.extend(headers);
        let r = send(addr, "POST", &command, &h, Some(json_body));
        // Past CSRF and the role check (an MQTT meter, and no DLMS client here: the handler
        // itself refuses to run it).
        assert_allowed(&r, "a command with the session's token");
        assert!(r.status >= 400, "{}", r.describe());
    }
    // Logout with the right token in the form: the session ends and the cookie is removed.
    let r = send(addr, "POST", "/logout", &[("Cookie", &cookie), FORM], Some(&form(&[("csrf", &good)])));
    assert_eq!((r.status, r.location()), (303, "/login"), "{}", r.describe());
    let removal = r.set_cookie_line("hes_session").expect("the logout removes the cookie");
    assert!(removal.contains("Max-Age=0") || removal.contains("expires=Thu, 01 Jan 1970"), "{removal}");
    assert_anonymous(addr, &op, "the session after logout");
    let r = op.call(addr, "POST", &command, Some(json_body));
    assert_refused(&r, 401, "unauthorized", "a command with a logged-out session");

    // Login without the pre-login cookie, with a made-up short one, with a wrong token, or from
    // another site: refused, no session.
    let pre = pre_cookie(addr, "/login");
    // (what, cookies, csrf field, further headers)
    type Attempt<'a> = (&'a str, String, String, Vec<(&'a str, &'a str)>);
    let attempts: Vec<Attempt<'_>> = vec![
        ("no pre-login cookie", String::new(), pre.clone(), vec![]),
        ("a made-up pre-login cookie", "hes_pre=x".into(), "x".into(), vec![]),
        ("a wrong token", format!("hes_pre={pre}"), "wrong".into(), vec![]),
        ("a foreign Origin", format!("hes_pre={pre}"), pre.clone(), vec![("Origin", "http://evil.example")]),
        ("Origin null", format!("hes_pre={pre}"), pre.clone(), vec![("Origin", "null")]),
    ];
    for (what, cookies, csrf, extra) in &attempts {
        let r = post_login_with(addr, cookies, csrf, "hh-a", PASSWORD, "", extra);
        assert_eq!(r.status, 403, "login with {what}: {}", r.describe());
        assert!(r.set_cookie("hes_session").is_none(), "login with {what} opened a session");
    }

    // A disabled account: its session and its token stop working at once, and it cannot log in.
    let doomed = login(&p, addr, "doomed", PASSWORD);
    let doomed_token = Caller::Token(token(&p, "doomed"));
    assert_eq!(me(addr, &doomed).status, 200);
    assert_eq!(me(addr, &doomed_token).status, 200);
    let r = admin.call(addr, "POST", "/api/v1/accounts/doomed/disable", None);
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_anonymous(addr, &doomed, "a disabled account's session");
    assert_refused(&me(addr, &doomed_token), 401, "unauthorized", "a disabled account's token");
    let r = post_login(addr, "doomed", PASSWORD, "", &[]);
    assert_eq!(r.status, 401, "a disabled account logs in: {}", r.describe());

    // Revoked, expired and unknown tokens: 401, all with the same answer.
    let revoked = token(&p, "hh-a");
    assert_eq!(me(addr, &Caller::Token(revoked.clone())).status, 200);
    procs::run_bin(
        "headend",
        &["account", "revoke", "--username", "hh-a", "--name", "security"],
        &[("DATABASE_URL", &p.db.url)],
    )
    .expect("revoke");
    let expiring = procs::run_bin(
        "headend",
        &["account", "token", "--username", "hh-a", "--name", "short", "--expires", "1s"],
        &[("DATABASE_URL", &p.db.url)],
    )
    .expect("token");
    let expiring: Value = serde_json::from_str(expiring.trim()).expect("JSON");
    let expiring = expiring["token"].as_str().expect("token").to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let mut answers = Vec::new();
    for t in [
        revoked.as_str(),
        expiring.as_str(),
        &format!("hes_{}", random_id(3)),
        "hes_",
        "not-a-token",
        &revoked[..revoked.len() - 1],
    ] {
        let r = me(addr, &Caller::Token(t.to_owned()));
        assert_refused(&r, 401, "unauthorized", &format!("token {t:.12}…"));
        answers.push(r.body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "bad tokens answer differently: {answers:?}");

    // An idle session ends after auth.session_idle; one in use does not, until auth.session_max.
    let strict = start_extra(&p, "idle", &[("HEADEND_AUTH__SESSION_IDLE", "2s"), ("HEADEND_AUTH__SESSION_MAX", "6s")]);
    let logged_in = Instant::now();
    let busy = login(&p, strict.http, "hh-a", PASSWORD);
    let idle = login(&p, strict.http, "hh-a", PASSWORD);
    while logged_in.elapsed() < Duration::from_millis(3500) {
        assert_eq!(me(strict.http, &busy).status, 200, "a session in use expired after {:?}", logged_in.elapsed());
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_anonymous(strict.http, &idle, "a session idle for longer than session_idle");
    while me(strict.http, &busy).status == 200 {
        assert!(logged_in.elapsed() < Duration::from_secs(9), "a session in use outlived session_max");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(logged_in.elapsed() > Duration::from_millis(5500), "ended after {:?}", logged_in.elapsed());
    assert_anonymous(strict.http, &busy, "a session older than session_max");
}

// ---------------------------------------------------------------------------------------------
// Login throttling, activation, redirects, cookies, headers
// ---------------------------------------------------------------------------------------------

/// The shortest of `n` login refusals (argon2 dominates; the minimum is steady under load).
fn fastest_refusal(addr: SocketAddr, username: &str, password: &str, n: usize) -> Duration {
    (0..n)
        .map(|_| {
            let pre = pre_cookie(addr, "/login");
            let t = Instant::now();
            let r = post_login_with(addr, &format!("hes_pre={pre}"), &pre, username, password, "", &[]);
            let took = t.elapsed();
            assert_eq!(r.status, 401, "{username}: {}", r.describe());
            took
        })
        .min()
        .unwrap_or_default()
}

fn activate(addr: SocketAddr, code: &str, username: &str, password: &str) -> Resp {
    let pre = pre_cookie(addr, "/activate");
    let body = form(&[
        ("csrf", &pre),
        ("code", code),
        ("username", username),
        ("password", password),
        ("password2", password),
    ]);
    send(addr, "POST", "/activate", &[("Cookie", &format!("hes_pre={pre}")), FORM], Some(&body))
}

fn invite(p: &Pipeline, household: &str, env: &[(&str, &str)]) -> String {
    let mut env = env.to_vec();
    env.push(("DATABASE_URL", &p.db.url));
    let out = procs::run_bin("headend", &["account", "invite", "--household", household], &env).expect("invite");
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    v["activation_code"].as_str().expect("code").to_owned()
}

#[test]
fn logins_are_throttled_activation_codes_work_once_and_redirects_stay_on_site() {
    let (p, headend, a, b) = site("security_login", 20);
    let addr = headend.http;
    for u in ["hh-a", "locky", "racy", "timed", "timing-ref"] {
        account(&p, u, "household", &[&a.code]);
    }
    let admin = Caller::Token(token(&p, "admin-1"));
    let household = Caller::Token(token(&p, "hh-a"));

    // An unknown user, a wrong password, an account not yet activated: the same refusal.
    procs::run_bin(
        "headend",
        &["account", "create", "--username", "pending", "--role", "operator"],
        &[("DATABASE_URL", &p.db.url)],
    )
    .expect("pending account");
    let pre = pre_cookie(addr, "/login");
    let refusals: Vec<(u16, String)> =
        [("nobody-here", "whatever-password"), ("hh-a", "wrong-password"), ("pending", PASSWORD)]
            .iter()
            .map(|(u, pw)| refusal(&post_login_with(addr, &format!("hes_pre={pre}"), &pre, u, pw, "", &[]), u))
            .collect();
    assert_eq!(refusals[0].0, 401);
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "refusals differ: {refusals:?}");

    // Lock-out on a head-end allowing 3 failures, 5 attempts a minute per address, and the client
    // address from X-Forwarded-For (its last entry, the one the proxy added).
    let strict = start_extra(
        &p,
        "strict",
        &[
            ("HEADEND_AUTH__MAX_FAILED_LOGINS", "3"),
            ("HEADEND_AUTH__ATTEMPTS_PER_MINUTE", "5"),
            ("HEADEND_AUTH__CLIENT_IP_HEADER", "x-forwarded-for"),
        ],
    );
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    // Letter case and spaces do not make another account: three wrong passwords lock "locky".
    for u in ["locky", "LOCKY", " Locky "] {
        let r = post_login(strict.http, u, "wrong-password", "", &from("10.0.0.1"));
        assert_eq!(r.status, 401, "{u}: {}", r.describe());
    }
    let locked = post_login(strict.http, "locky", PASSWORD, "", &from("10.0.0.2"));
    assert_eq!(
        refusal(&locked, "locky"),
        refusal(&post_login(strict.http, "locky", "wrong", "", &from("10.0.0.2")), "locky")
    );
    assert_eq!(locked.status, 401, "the right password of a locked account: {}", locked.describe());
    assert!(locked.set_cookie("hes_session").is_none());
    // The lock is in the database: another head-end refuses too.
    let r = post_login(addr, "locky", PASSWORD, "", &[]);
    assert_eq!(r.status, 401, "the lock holds on every head-end: {}", r.describe());
    assert_eq!(refusal(&r, "locky"), refusal(&post_login(addr, "nobody-here", "x-password", "", &[]), "nobody-here"));

    // Eight guesses at once, each from its own address: only three passwords are checked.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let ip = format!("10.1.0.{i}");
                post_login(strict.http, "racy", "wrong-password", "", &[("X-Forwarded-For", &ip)]).status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let checked = query_i64(
        &p,
        "SELECT count(*) FROM auth_events WHERE username = 'racy' AND event IN ('login_failed', 'locked_out')",
        &[],
    );
    assert_eq!(checked, 3, "passwords checked for eight concurrent guesses with max_failed_logins = 3");
    assert_eq!(post_login(strict.http, "racy", PASSWORD, "", &from("10.1.1.1")).status, 401, "racy is locked");

    // A locked account answers as slowly as a wrong password (no enumeration by timing).
    for _ in 0..3 {
        post_login(strict.http, "timed", "wrong-password", "", &from("10.2.0.1"));
    }
    let wrong = fastest_refusal(addr, "timing-ref", "wrong-password", 4);
    let locked_t = fastest_refusal(addr, "timed", "wrong-password", 4);
    let unknown = fastest_refusal(addr, "nobody-at-all", "wrong-password", 4);
    assert!(locked_t * 3 > wrong && unknown * 3 > wrong, "wrong {wrong:?}, locked {locked_t:?}, unknown {unknown:?}");

    // The per-address limit: the sixth attempt in a minute is refused whatever the spoofed first
    // entries of X-Forwarded-For say, even with the right password; another address goes on.
    for i in 0..5 {
        let spoofed = format!("203.0.113.{i}, 198.51.100.7");
        let r = post_login(strict.http, "nobody-here", "wrong-password", "", &[("X-Forwarded-For", &spoofed)]);
        assert_eq!(r.status, 401, "attempt {i}: {}", r.describe());
    }
    let r = post_login(strict.http, "hh-a", PASSWORD, "", &[("X-Forwarded-For", "203.0.113.99, 198.51.100.7")]);
    assert_eq!(r.status, 429, "{}", r.describe());
    assert!(r.set_cookie("hes_session").is_none());
    let r = post_login(strict.http, "hh-a", PASSWORD, "", &from("198.51.100.8"));
    assert_eq!(r.status, 303, "another address is not limited: {}", r.describe());

    // Cookie flags, and a new session id at every login (no fixation).
    let pre = pre_cookie(addr, "/login");
    let r = post_login_with(
        addr,
        &format!("hes_pre={pre}; hes_session=planted-by-someone"),
        &pre,
        "hh-a",
        PASSWORD,
        "",
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.describe());
    let line = r.set_cookie_line("hes_session").expect("session cookie").to_owned();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(flag), "session cookie without {flag}: {line}");
    }
    let first = r.set_cookie("hes_session").unwrap_or_default();
    assert!(first.len() >= 43 && first != "planted-by-someone", "{line}");
    assert_eq!(r.set_cookie("hes_pre").as_deref(), Some(""), "the pre-login cookie is removed at login");
    assert!(!r.body.contains(&first), "the session id is in the body");
    let pre = pre_cookie(addr, "/login");
    let r = post_login_with(addr, &format!("hes_pre={pre}; hes_session={first}"), &pre, "hh-a", PASSWORD, "", &[]);
    assert_eq!(r.status, 303, "{}", r.describe());
    let second = r.set_cookie("hes_session").unwrap_or_default();
    assert!(!second.is_empty() && second != first, "the session id did not change at login");
    let csrf = session_csrf(&p, &second);
    assert_anonymous(
        addr,
        &Caller::Session { cookie: first, csrf: String::new() },
        "the session replaced by a new login",
    );
    assert_eq!(me(addr, &Caller::Session { cookie: second, csrf }).status, 200);

    // Activation: an invitation made by an admin (API) works once, for a username in any case.
    let r = admin.call(addr, "POST", &format!("/api/v1/households/{}/invites", b.code), None);
    assert_eq!(r.status, 201, "{}", r.describe());
    let code = r.json()["activation_code"].as_str().expect("code").to_owned();
    let r = activate(addr, "ABCDE-FGHJK-MNPQR", "someone", PASSWORD);
    assert_eq!(r.status, 400, "a wrong code: {}", r.describe());
    assert!(r.body.contains("not valid") && r.set_cookie("hes_session").is_none(), "{}", r.describe());
    let r = activate(addr, &code.to_lowercase().replace('-', " "), "Ana.Petrovic", PASSWORD);
    assert_eq!((r.status, r.location()), (303, "/portal"), "{}", r.describe());
    let cookie = r.set_cookie("hes_session").filter(|c| !c.is_empty()).expect("a session after activation");
    let ana = Caller::Session { csrf: session_csrf(&p, &cookie), cookie };
    let who = me(addr, &ana).json();
    assert_eq!(
        (who["username"].as_str(), who["households"][0].as_str()),
        (Some("ana.petrovic"), Some(b.code.as_str()))
    );
    let r = activate(addr, &code, "second-user", PASSWORD);
    assert_eq!(r.status, 400, "a used code: {}", r.describe());
    assert_eq!(query_i64(&p, "SELECT count(*) FROM accounts WHERE username = 'second-user'", &[]), 0);
    assert_eq!(post_login(addr, "ANA.PETROVIC", PASSWORD, "", &[]).status, 303, "the activated account logs in");
    // An expired code.
    let old = invite(&p, &b.code, &[("HEADEND_AUTH__INVITE_VALID", "1s")]);
    std::thread::sleep(Duration::from_millis(1500));
    let r = activate(addr, &old, "too-late", PASSWORD);
    assert_eq!(r.status, 400, "an expired code: {}", r.describe());
    // Four redemptions of one code at once: exactly one account.
    let code = invite(&p, &b.code, &[]);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let code = code.clone();
            std::thread::spawn(move || activate(addr, &code, &format!("racer-{i}"), PASSWORD).status)
        })
        .collect();
    let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![303, 400, 400, 400], "concurrent redemptions of one code");
    assert_eq!(query_i64(&p, "SELECT count(*) FROM accounts WHERE username LIKE 'racer-%'", &[]), 1);
    // Without the pre-login cookie, activation is refused.
    let body = form(&[
        ("csrf", "x"),
        ("code", &invite(&p, &b.code, &[])),
        ("username", "no-cookie"),
        ("password", PASSWORD),
        ("password2", PASSWORD),
    ]);
    let r = send(addr, "POST", "/activate", &[FORM], Some(&body));
    assert_eq!(r.status, 403, "{}", r.describe());
    // An account made by an admin: an unknown household leaves nothing behind; the code sets the
    // password once.
    let r = admin.call(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(r#"{"username":"new-hh","role":"household","households":["H99999999"]}"#),
    );
    assert_refused(&r, 404, "not_found", "an account for a household that does not exist");
    assert_eq!(query_i64(&p, "SELECT count(*) FROM accounts WHERE username = 'new-hh'", &[]), 0, "a half-made account");
    let body = format!(r#"{{"username":"new-hh","role":"household","households":["{}"]}}"#, a.code);
    let r = admin.call(addr, "POST", "/api/v1/accounts", Some(&body));
    assert_eq!(r.status, 201, "{}", r.describe());
    let code = r.json()["activation_code"].as_str().expect("code").to_owned();
    assert_eq!(post_login(addr, "new-hh", PASSWORD, "", &[]).status, 401, "not active before its code is used");
    assert_eq!(activate(addr, &code, "", PASSWORD).status, 303);
    assert_eq!(activate(addr, &code, "", "another-password-1").status, 400, "the code works once");
    assert_eq!(post_login(addr, "new-hh", PASSWORD, "", &[]).status, 303);
    // A body that is not JSON, or JSON of the wrong shape: the API's error shape, not plain text.
    let r = admin.call(addr, "POST", "/api/v1/accounts", Some(r#"{"username":"x","role":"superuser"}"#));
    assert_eq!((r.status, r.error_code()), (422, "bad_request".to_owned()), "{}", r.describe());
    let r = household.call(addr, "POST", "/api/v1/accounts", Some("x"));
    assert_refused(&r, 403, "forbidden", "a household creating an account");

    // Open redirects: whatever `next` says, the browser stays on this site.
    let r = send(addr, "GET", "/login?next=//evil.example", &[], None);
    assert!(r.status == 200 && !r.body.contains("evil.example"), "{}", r.describe());
    for next in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
        "http:evil.example",
        "\\\\evil.example",
    ] {
        let r = post_login(addr, "hh-a", PASSWORD, next, &[]);
        assert_eq!((r.status, r.location()), (303, "/portal"), "next={next:?}: {}", r.describe());
    }
    let r = post_login(addr, "hh-a", PASSWORD, "/portal/bills?x=1", &[]);
    assert_eq!((r.status, r.location()), (303, "/portal/bills?x=1"), "a local next is followed");
    for next in ["//evil.example", "https%3A%2F%2Fevil.example", "/%09/evil.example", "%2F%2Fevil.example"] {
        let r = send(addr, "GET", &format!("/lang/en?next={next}"), &[], None);
        assert_eq!((r.status, r.location()), (303, "/"), "/lang/en?next={next}: {}", r.describe());
    }
    let r = send(addr, "GET", "/portal?next=//evil.example", &[], None);
    assert!(r.status == 303 && r.location().starts_with("/login?next=/portal"), "{}", r.describe());

    // Security headers: pages, redirects, the API, its errors, the document, the fallback.
    for (what, r) in [
        ("login page", send(addr, "GET", "/login", &[], None)),
        ("activation page", send(addr, "GET", "/activate", &[], None)),
        ("redirect", send(addr, "GET", "/", &[], None)),
        ("API 200", me(addr, &household)),
        ("API 401", me(addr, &Caller::Anonymous)),
        ("API 404", send(addr, "GET", "/api/v1/nothing", &[], None)),
        ("missing page", send(addr, "GET", "/nothing", &[], None)),
        ("OpenAPI document", send(addr, "GET", "/api/openapi.json", &[], None)),
    ] {
        assert_security_headers(&r, what);
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

fn assert_no_secret(text: &str, secrets: &[(&str, String)], what: &str) {
    for (name, s) in secrets {
        assert!(s.len() >= 8, "{name} is too short to look for: {s:?}");
        assert!(!text.contains(s.as_str()), "{what} holds the {name}");
    }
}

#[test]
fn secrets_stay_out_of_the_log_and_the_printed_configuration() {
    let mut p = Pipeline::new("security_secrets", 20, SEED, false).expect("pipeline");
    let (a, _) = households(&p);
    let db_pw = "S3cret-pw";
    let mq_pw = "Mq-S3cret-pw";
    // PostgreSQL here trusts local connections, so any password works; the broker allows anonymous
    // clients and ignores credentials.
    let url = p.db.url.replacen("postgres@", &format!("postgres:{db_pw}@"), 1);
    assert!(url.contains(db_pw), "unexpected database URL shape: {}", p.db.url);
    p.spec.database_url = url.clone();
    p.spec.mqtt_url = p.spec.mqtt_url.replacen("mqtt://", &format!("mqtt://hes:{mq_pw}@"), 1);
    p.spec.env.push(("RUST_LOG".into(), "debug".into()));
    let headend = start_main(&mut p);
    let addr = headend.http;

    account(&p, "hh-a", "household", &[&a.code]);
    account(&p, "admin-1", "admin", &[]);
    let admin_token = token(&p, "admin-1");
    let hh_token = token(&p, "hh-a");
    let admin = Caller::Token(admin_token.clone());
    let session = login(&p, addr, "hh-a", PASSWORD);
    assert_eq!(me(addr, &session).status, 200);
    assert_eq!(me(addr, &Caller::Token(hh_token.clone())).status, 200);
    let wrong_pw = "Wr0ng-but-secret-pw";
    assert_eq!(post_login(addr, "hh-a", wrong_pw, "", &[]).status, 401);
    assert_eq!(me(addr, &Caller::Token(format!("{hh_token}x"))).status, 401);
    let r = admin.call(addr, "POST", &format!("/api/v1/households/{}/invites", a.code), None);
    assert_eq!(r.status, 201, "{}", r.describe());
    let code = r.json()["activation_code"].as_str().expect("code").to_owned();
    let new_pw = "Activated-pw-42";
    assert_eq!(activate(addr, &code, "activated", new_pw).status, 303);
    let r = admin.call(addr, "POST", "/api/v1/accounts/hh-a/tokens", Some(r#"{"name":"exports"}"#));
    assert_eq!(r.status, 201, "{}", r.describe());
    let api_made = r.json()["token"].as_str().expect("token").to_owned();
    let r = send(addr, "GET", "/readyz", &[], None);
    assert_eq!(r.status, 200, "{}", r.describe());
    let probes = format!("{}{}", r.body, send(addr, "GET", "/metrics", &[], None).body);
    drop(headend);

    let secrets = [
        ("database password", db_pw.to_owned()),
        ("MQTT password", mq_pw.to_owned()),
        ("account password", PASSWORD.to_owned()),
        ("wrong password", wrong_pw.to_owned()),
        ("activated password", new_pw.to_owned()),
        ("operator's token", p.token.clone()),
        ("admin's token", admin_token),
        ("household's token", hh_token),
        ("token made through the API", api_made),
        ("activation code", code.clone()),
        ("activation code, normalised", code.replace('-', "")),
        ("session id", session.cookie().to_owned()),
    ];
    let log_path = p.dir.path().join("headend-1.log");
    let log = std::fs::read_to_string(&log_path).expect("head-end log");
    assert!(log.contains("HTTP listening"), "not the head-end's log: {}", log_path.display());
    assert!(log.contains("DEBUG"), "RUST_LOG=debug took no effect: {}", log_path.display());
    assert_no_secret(&log, &secrets, "the head-end log (RUST_LOG=debug)");
    assert_no_secret(&probes, &secrets, "/readyz or /metrics");

    let printed = procs::run_bin("headend", &["config"], &[("DATABASE_URL", &url), ("MQTT_URL", &p.spec.mqtt_url)])
        .expect("headend config");
    assert_no_secret(&printed, &secrets, "headend config");
    assert!(printed.contains("postgres:********@") && printed.contains("hes:********@"), "{printed}");
}
