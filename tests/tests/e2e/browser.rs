//! The pages used as a person would, in headless Chromium (Debian's `chromium` + `chromium-driver`,
//! installed by `cargo xtask test`): a household logs in, reads its numbers and charts, switches
//! the language, fails to open another household's data, logs out; an operator finds a meter that
//! stopped reporting by its transformer and opens it; a household activates its account with the
//! one-time code. Every page visited is saved as `target/screenshots/<name>.png` (not committed).

use std::time::Duration;

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Europe::Belgrade;
use meter_sim::Fleet;
use rust_decimal::Decimal;
use tests::browser::Browser;
use tests::procs::{self, Headend};

use crate::pipeline::Pipeline;

/// The fleet: four buildings of seed 7 on four transformers (meters 1–45, 46–147, 148–205 and
/// 206–), the fourth cut after [`INVENTORY`] meters. The last [`INVENTORY`] − [`REPORTING`]
/// meters stop reporting a day ago: ten of the third building and five of the fourth, so that the
/// transformer filter has something to leave out.
const SEED: u64 = 7;
const INVENTORY: usize = 210;
const REPORTING: usize = 195;
/// The household logging in (a flat of the first building) and a household of another building.
const HOUSEHOLD: &str = "H00000002";
const OTHER_HOUSEHOLD: &str = "H00000050";
const OTHER_METER: &str = "SIM00000050";

const HH_USER: &str = "stan2";
const HH_PASSWORD: &str = "lozinka-za-stan-2";
const OP_USER: &str = "dispecer";
const OP_PASSWORD: &str = "lozinka-dispecera";

fn floor_15min(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let s = t.timestamp();
    chrono::DateTime::from_timestamp(s - s.rem_euclid(900), 0).expect("time")
}

/// The start of a local (Europe/Belgrade) day in UTC.
fn local_midnight(d: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    let t = Belgrade.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")).single().expect("midnight");
    t.with_timezone(&chrono::Utc)
}

/// Fails when the page shows a locale key instead of its text (`portal.usage.title`): the
/// prefixes are the locale files' own.
fn assert_translated(b: &Browser, page: &str) {
    let dir = tests::repo_root().join("headend/locales");
    let mut prefixes: Vec<String> = Vec::new();
    for e in std::fs::read_dir(&dir).expect("locales").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("locale file");
        let table: toml::Table = text.parse().expect("locale TOML");
        for k in table.keys() {
            if let Some((p, _)) = k.split_once('.') {
                if !prefixes.iter().any(|x| x == p) {
                    prefixes.push(p.to_owned());
                }
            }
        }
    }
    let script = format!(
        "var m = document.body.innerText.match(/\\b(?:{})\\.[a-z0-9_]+(?:\\.[a-z0-9_]+)*\\b/g); return m ? m.join(' ') : ''",
        prefixes.join("|")
    );
    let raw = b.eval(&script).expect("page text");
    assert_eq!(raw.as_str().unwrap_or(""), "", "{page}: untranslated locale keys on the page");
}

/// Opens `path`, checks it is translated and saves a screenshot `name`.
fn visit(b: &Browser, path: &str, name: &str) {
    b.goto(path).expect("page");
    b.find("main").expect("a page with a main part");
    assert_translated(b, name);
    b.screenshot(name).expect("screenshot");
}

/// Types the credentials into the login form and submits it, as a person would.
fn log_in(b: &Browser, user: &str, password: &str, shot: Option<&str>) {
    b.goto("/login").expect("login page");
    b.find("form[action='/login'] input[name=username]").expect("login form");
    if let Some(name) = shot {
        assert_translated(b, name);
        b.screenshot(name).expect("screenshot");
    }
    b.type_into("input[name=username]", user).expect("username");
    b.type_into("input[name=password]", password).expect("password");
    b.click("form[action='/login'] button[type=submit]").expect("submit");
}

/// Logs out with the button in the header and checks the session is gone.
fn log_out(b: &Browser) {
    b.click("form[action='/logout'] button[type=submit]").expect("logout button");
    b.wait_for_path("/login").expect("back at the login page");
    assert_eq!(b.cookie("hes_session").expect("cookies").unwrap_or_default(), "", "session cookie removed");
}

/// The status the head-end answers `path` with for this browser's session (WebDriver does not
/// show status codes): the same request with the browser's session cookie.
fn status_with_session(b: &Browser, headend: &Headend, path: &str) -> (u16, String) {
    let sid = b.cookie("hes_session").expect("cookies").expect("a session cookie");
    let cookie = format!("hes_session={sid}");
    let (status, _, body) =
        procs::http_request(headend.http, "GET", path, &[("Cookie", &cookie)], None).expect("HTTP request");
    (status, body)
}

/// Publishes a day of every meter, then a day of the reporting ones only, up to now; and the
/// first building's registers at last month's local boundaries, so that it can be billed. Waits
/// until all of it is stored; returns last month (`YYYY-MM`) and the end of the silent meters'
/// last interval.
fn publish_readings(p: &mut Pipeline, fleet: &Fleet) -> (String, chrono::DateTime<chrono::Utc>) {
    let now = floor_15min(chrono::Utc::now());
    let (a, b) = (now - chrono::Duration::hours(50), now - chrono::Duration::hours(26));
    let local = now.with_timezone(&Belgrade);
    let this_month = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("month");
    let last_month = this_month.pred_opt().expect("day").with_day(1).expect("month");
    let q = chrono::Duration::minutes(15);
    let first_building = fleet.building_start(1);
    let mut spans = vec![(INVENTORY, a, b), (REPORTING, b, now)];
    for t in [local_midnight(last_month), local_midnight(this_month)] {
        spans.push((first_building, t - q, t));
    }
    // What is stored: every (meter, interval end) once, whatever overlaps (a month boundary may
    // fall inside the published days), with every channel.
    let mut keys = std::collections::HashSet::new();
    for (meters, from, to) in spans {
        p.meters = meters;
        p.publish(&from.to_rfc3339(), &to.to_rfc3339(), &[]).expect("simulator");
        let mut t = from + q;
        while t <= to {
            keys.extend((0..meters).map(|m| (m, t)));
            t += q;
        }
    }
    let expected = (keys.len() * crate::pipeline::CHANNELS.split(',').count()) as i64;
    p.meters = INVENTORY;
    p.wait_for_readings(expected, Duration::from_secs(600)).expect("readings stored");
    (last_month.format("%Y-%m").to_string(), b)
}

/// The number of an English page's text like `4,249.35 RSD` (thousands grouped by commas), its
/// `unit` after it.
fn en_decimal(text: &str, unit: &str) -> Decimal {
    let digits = text.trim().strip_suffix(unit).unwrap_or_else(|| panic!("{text:?} ends with {unit}"));
    digits.trim().replace(',', "").parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// Waits until every chart of the page is drawn (app.js marks them) and there is at least one.
fn assert_charts_drawn(b: &Browser, page: &str) {
    b.find(".chart[data-chart]").unwrap_or_else(|e| panic!("{page}: no chart: {e:#}"));
    b.wait_until(
        &format!("{page}: every chart drawn by uPlot"),
        "var c = document.querySelectorAll('.chart[data-chart]'); \
         return c.length > 0 && Array.prototype.every.call(c, function (e) { \
           return e.getAttribute('data-drawn') === '1' && e.querySelector('canvas') !== null; })",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The numbers of the page's tables (cells of class `num`), at least one of them not zero.
fn assert_table_numbers(b: &Browser, page: &str) -> Vec<String> {
    b.find("table td.num").unwrap_or_else(|e| panic!("{page}: no table of numbers: {e:#}"));
    let cells = b.texts("table td.num").expect("cells");
    assert!(
        cells.iter().any(|c| c.chars().any(|ch| ch.is_ascii_digit() && ch != '0')),
        "{page}: the table holds no number: {cells:?}"
    );
    cells
}

/// Clicks the portal tab whose link starts with `href` and waits for its page.
fn open_tab(b: &Browser, href: &str) {
    b.click(&format!("nav.tabs a[href^='{href}?']")).unwrap_or_else(|e| panic!("tab {href}: {e:#}"));
    b.wait_for_path(&format!("{href}?")).expect("tab page");
    b.find("main").expect("page");
}

#[test]
fn a_household_and_an_operator_use_the_pages_in_headless_chromium() {
    tests::browser::check_installed().expect("headless Chromium");
    let fleet = Fleet::new(SEED);
    let fourth = fleet.building_start(3);
    assert!(fleet.building_start(2) < REPORTING && REPORTING < fourth && fourth < INVENTORY, "the fleet's layout");
    let transformer = fleet.building(2).transformer();
    let other_transformer = fleet.building(3).transformer();
    assert_ne!(transformer, fleet.building(0).transformer());
    assert_ne!(transformer, other_transformer);
    // Silent meters of the third building (the one looked for) and of the fourth.
    let silent_meter = meter_sim::fleet::serial(fourth - 1);
    let silent_elsewhere = meter_sim::fleet::serial(INVENTORY - 1);
    let reporting_meter = meter_sim::fleet::serial(REPORTING - 1);

    let mut p = Pipeline::new("browser", INVENTORY, SEED, false).expect("pipeline");
    // Polling on (the fleet pushes over MQTT: only the meter made a DLMS one below is polled).
    p.spec.env.push(("HEADEND_COLLECT__ENABLED".into(), "true".into()));
    let headend = p.start_headend().expect("head-end");
    let (period, silent_since) = publish_readings(&mut p, &fleet);
    // The local date of the silent meters' last reading, as the list shows it.
    let last_day = silent_since.with_timezone(&Belgrade).format("%Y-%m-%d").to_string();
    let env = [("DATABASE_URL", p.db.url.as_str())];
    procs::run_bin("billing", &["run", "--period", &period, "--building", "B000001"], &env).expect("billing run");
    let bill_total: Decimal =
        p.rt.block_on(async {
            let c = p.db.client().await?;
            let row = c
                .query_one(
                    "SELECT b.total::text FROM bills b JOIN households h ON h.id = b.household_id WHERE h.code = $1",
                    &[&HOUSEHOLD],
                )
                .await?;
            anyhow::Ok(row.get::<_, String>(0).parse::<Decimal>()?)
        })
        .expect("the household's bill");
    procs::create_account(&p.db.url, HH_USER, "household", &[HOUSEHOLD], HH_PASSWORD).expect("household account");
    procs::create_account(&p.db.url, OP_USER, "operator", &[], OP_PASSWORD).expect("operator account");

    let b = Browser::start(&format!("http://{}", headend.http)).expect("browser");

    // A household: log in and land on its portal, numbers and charts.
    log_in(&b, HH_USER, HH_PASSWORD, Some("login"));
    b.wait_for_path("/portal").expect("a household lands on its portal");
    assert_eq!(b.text(".who .user").expect("user in the header"), HH_USER);
    assert_translated(&b, "portal");
    assert_charts_drawn(&b, "portal");
    b.screenshot_screen("portal-screen").expect("screenshot");
    // Yesterday's consumption is the simulator's register difference over that local day, and
    // the hour table (opened as a person would) adds up to it.
    let day = b.text("#yesterday .muted").expect("yesterday's date");
    let day = NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").expect("an ISO date on the English page");
    let model = meter_sim::Model::with_meters(SEED, INVENTORY);
    let register = |d: NaiveDate| model.registers_at(1, local_midnight(d)).expect("register").import_total();
    let wh = register(day.succ_opt().expect("day")) - register(day);
    let shown = en_decimal(&b.text("#yesterday .kpi").expect("yesterday"), "kWh");
    assert_eq!(shown, Decimal::new(wh, 3), "yesterday's kWh");
    b.click("#days details summary").expect("open the hour table");
    let hours: Vec<String> = b.texts("#days details table tbody tr td:nth-child(2)").expect("hour cells");
    assert!((23..=25).contains(&hours.len()), "the hours of a local day: {hours:?}");
    let sum: Decimal = hours.iter().map(|h| en_decimal(h, "")).sum();
    assert_eq!(sum, shown, "the hours add up to the day: {hours:?}");
    b.screenshot("portal").expect("screenshot");

    open_tab(&b, "/portal/usage");
    assert_translated(&b, "usage");
    assert_charts_drawn(&b, "usage");
    assert_table_numbers(&b, "usage");
    b.screenshot("usage").expect("screenshot");
    b.screenshot_screen("usage-screen").expect("screenshot");

    open_tab(&b, "/portal/bills");
    assert_translated(&b, "bills");
    assert_charts_drawn(&b, "bills");
    assert_table_numbers(&b, "bills");
    let kpi = en_decimal(&b.text(".kpi").expect("the amount to pay"), "RSD");
    assert_eq!(kpi, bill_total, "the bill's total as stored by billing");
    b.screenshot("bills").expect("screenshot");

    open_tab(&b, "/portal/events");
    assert_translated(&b, "events");
    b.screenshot("events").expect("screenshot");

    open_tab(&b, "/portal/downloads");
    assert_translated(&b, "downloads");
    b.screenshot("downloads").expect("screenshot");

    // Serbian and back: the page is the same, its words are not.
    b.goto("/portal").expect("portal");
    let english = b.text("nav.tabs").expect("tabs");
    b.click(".langs a[lang='sr-Latn']").expect("SR");
    b.wait_until("Serbian page", "return document.documentElement.lang === 'sr-Latn'").expect("Serbian");
    b.wait_for_path("/portal").expect("back on the same page");
    let serbian = b.text("nav.tabs").expect("tabs");
    assert_ne!(serbian, english, "the tabs are translated");
    assert_translated(&b, "portal-sr");
    assert_charts_drawn(&b, "portal-sr");
    b.screenshot("portal-sr").expect("screenshot");
    b.click(".langs a[lang='en']").expect("EN");
    b.wait_until("English page", "return document.documentElement.lang === 'en'").expect("English");

    // Another household's data: the same 404 as something that does not exist.
    let other = format!("/portal?household={OTHER_HOUSEHOLD}");
    visit(&b, &other, "not-found");
    assert!(b.text("h1").expect("heading").contains("404"), "the 404 page");
    assert_eq!(status_with_session(&b, &headend, &other).0, 404, "another household's portal");
    let other_bills = format!("/portal/bills?household={OTHER_HOUSEHOLD}");
    assert_eq!(status_with_session(&b, &headend, &other_bills).0, 404, "another household's bills");
    let api = format!("/api/v1/meters/{OTHER_METER}/readings");
    b.goto(&api).expect("API page");
    assert!(b.body_text(2000).contains("not_found"), "the browser shows the API's 404");
    let (status, body) = status_with_session(&b, &headend, &api);
    assert_eq!(status, 404, "another household's meter: {body}");

    b.goto("/portal").expect("portal");
    log_out(&b);
    b.goto("/portal").expect("portal after logout");
    b.wait_for_path("/login").expect("logged out: the portal sends to the login page");

    // An operator: the dashboard, then the meters not reporting, narrowed to one transformer.
    log_in(&b, OP_USER, OP_PASSWORD, None);
    b.wait_for_path("/ops").expect("an operator lands on the dashboard");
    assert_translated(&b, "ops");
    b.screenshot("ops").expect("screenshot");
    b.screenshot_screen("ops-screen").expect("screenshot");

    b.click("main a[href^='/ops/meters?status=not_reporting']").expect("the dashboard links the silent meters");
    b.wait_for_path("/ops/meters?").expect("meters page");
    b.find("main table").expect("the list");
    let rows = b.texts("main table tbody tr").expect("rows");
    assert_eq!(rows.len(), INVENTORY - REPORTING, "every silent meter before filtering: {rows:#?}");
    assert!(rows.iter().any(|r| r.contains(&silent_elsewhere)), "{silent_elsewhere} is listed before filtering");
    assert_translated(&b, "ops-not-reporting");
    b.screenshot("ops-not-reporting").expect("screenshot");

    b.type_into("form input[name=transformer]", &transformer).expect("transformer field");
    b.click("form:has(input[name=transformer]) button[type=submit]").expect("filter");
    b.wait_until(
        "the list is filtered by transformer",
        &format!(
            "return location.pathname === '/ops/meters' && location.search.indexOf('transformer={transformer}') >= 0"
        ),
    )
    .expect("filtered");
    b.find("main table").expect("the list");
    let listed = b.body_text(20_000);
    assert!(listed.contains(&silent_meter), "{silent_meter} (silent, {transformer}) is listed: {listed}");
    assert!(!listed.contains(&reporting_meter), "{reporting_meter} reports: not listed");
    assert!(!listed.contains(&silent_elsewhere), "{silent_elsewhere} is silent on {other_transformer}: not listed");
    // Exactly the silent meters of that transformer, each with its last reading of a day ago.
    let rows = b.texts("main table tbody tr").expect("rows");
    assert_eq!(rows.len(), fourth - REPORTING, "the silent meters of {transformer}: {rows:#?}");
    for r in &rows {
        assert!(r.contains(&transformer), "a row of another transformer: {r}");
        assert!(r.contains(&last_day), "the last reading (a day ago, {last_day}) is shown: {r}");
    }
    assert_translated(&b, "ops-not-reporting-transformer");
    b.screenshot("ops-not-reporting-transformer").expect("screenshot");
    b.screenshot_screen("ops-not-reporting-transformer-screen").expect("screenshot");

    b.click(&format!("main a[href^='/ops/meters/{silent_meter}']")).expect("the meter's link");
    b.wait_for_path(&format!("/ops/meters/{silent_meter}")).expect("meter page");
    assert!(b.text("h1").expect("heading").contains(&silent_meter), "the meter's page");
    assert_translated(&b, "ops-meter");
    b.screenshot("ops-meter").expect("screenshot");
    b.screenshot_screen("ops-meter-screen").expect("screenshot");

    // The same meter as a DLMS meter refused for a wrong password: the operator lifts its
    // authentication cool-down from the page, and the audit trail shows it done, with the note.
    p.rt.block_on(async {
        let c = p.db.client().await?;
        c.execute(
            "UPDATE meters SET protocol = 'dlms', address = '127.0.0.250:1' WHERE serial = $1",
            &[&silent_meter],
        )
        .await?;
        c.execute(
            "INSERT INTO meter_poll_status (meter_id, last_attempt_at, last_error, consecutive_failures)
             SELECT id, now(), 'authentication_rejected: the meter refused the password', 2 FROM meters WHERE serial = $1",
            &[&silent_meter],
        )
        .await?;
        anyhow::Ok(())
    })
    .expect("a DLMS meter cooling down");
    b.goto(&format!("/ops/meters/{silent_meter}")).expect("meter page");
    b.click("#commands input[value=retry_polling]").expect("the retry-polling command");
    b.type_into("#commands input[name=note]", "password reset on site, ticket 7").expect("note");
    b.click("#commands input[name=confirm]").expect("confirmation");
    b.click("#commands button[type=submit]").expect("send");
    b.wait_until("the command is in the audit trail", "return location.search.indexOf('command=') >= 0")
        .expect("command sent");
    let audit = b.texts("#commands table tbody tr").expect("audit trail");
    assert_eq!(audit.len(), 1, "{audit:#?}");
    for want in ["Retry polling now", "ticket 7", "done", "lifted after 2 refusal(s)", OP_USER] {
        assert!(audit[0].contains(want), "{want:?} in the audit row: {}", audit[0]);
    }
    let lifted = p
        .query_i64(&format!(
            "SELECT count(*)::bigint FROM meter_poll_status s JOIN meters m ON m.id = s.meter_id
             WHERE m.serial = '{silent_meter}' AND s.cooldown_lifted_at IS NOT NULL"
        ))
        .expect("status");
    assert_eq!(lifted, 1, "the cool-down was lifted");
    b.screenshot("ops-meter-command").expect("screenshot");

    log_out(&b);
    b.close().expect("browser closed");
    drop(headend);
}

#[test]
fn a_household_activates_its_account_in_headless_chromium() {
    tests::browser::check_installed().expect("headless Chromium");
    let mut p = Pipeline::new("browser_activate", 50, SEED, false).expect("pipeline");
    let headend = p.start_headend().expect("head-end");
    let out =
        procs::run_bin("headend", &["account", "invite", "--household", HOUSEHOLD], &[("DATABASE_URL", &p.db.url)])
            .expect("headend account invite");
    let invite: serde_json::Value = serde_json::from_str(out.trim()).expect("invite JSON");
    let code = invite["activation_code"].as_str().expect("activation code").to_owned();

    let b = Browser::start(&format!("http://{}", headend.http)).expect("browser");
    // From the login page's link, as a household holding its bill would.
    b.goto("/login").expect("login page");
    b.click("a[href='/activate']").expect("activation link");
    b.wait_for_path("/activate").expect("activation page");
    assert_translated(&b, "activate");
    b.type_into("input[name=code]", &code).expect("code");
    b.type_into("input[name=username]", "novi-stan").expect("username");
    // Two different passwords first: the page says so and keeps the code.
    b.type_into("input[name=password]", "nova-lozinka-123").expect("password");
    b.type_into("input[name=password2]", "nova-lozinka-124").expect("password again");
    b.screenshot("activate").expect("screenshot");
    b.click("form[action='/activate'] button[type=submit]").expect("submit");
    b.find(".alert").expect("the mismatch is shown");
    b.type_into("input[name=password]", "nova-lozinka-123").expect("password");
    b.type_into("input[name=password2]", "nova-lozinka-123").expect("password again");
    b.click("form[action='/activate'] button[type=submit]").expect("submit");
    b.wait_for_path("/portal").expect("activated and logged in");
    assert_eq!(b.text(".who .user").expect("user in the header"), "novi-stan");
    b.screenshot("activated").expect("screenshot");
    log_out(&b);

    // The code was used up; the new password works.
    log_in(&b, "novi-stan", "nova-lozinka-123", None);
    b.wait_for_path("/portal").expect("the new account logs in");
    b.close().expect("browser closed");
}
