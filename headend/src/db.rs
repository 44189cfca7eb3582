//! Database access shared by every component: connecting, migrating, the storage path.

use std::time::Duration;

use schemas::migrations::{Storage, MIGRATIONS};
use serde::Deserialize;
use tokio_postgres::{Client, NoTls};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the database was migrated for {recorded} storage but {wanted} was requested")]
    StorageMismatch { recorded: &'static str, wanted: &'static str },
    #[error("TimescaleDB was required (storage.timescale = \"on\") but the extension is not available: {0}")]
    TimescaleUnavailable(String),
    #[error("the database has migration {0}, newer than this binary knows; upgrade the head-end")]
    TooNew(i32),
    #[error("probing for TimescaleDB ended the database session ({0}); reconnect and use plain PostgreSQL")]
    ProbeEndedSession(String),
}

/// Whether to use TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimescaleMode {
    /// Use it where `CREATE EXTENSION timescaledb` works, else plain PostgreSQL.
    #[default]
    Auto,
    /// Require it.
    On,
    /// Never use it.
    Off,
}

/// Connects and drives the connection on a background task. The returned client fails its calls
/// once the connection is gone; callers reconnect.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Connects, retrying with exponential backoff (capped at 5 s) until `deadline` has passed.
pub async fn connect_retrying(url: &str, deadline: Duration) -> Result<Client, tokio_postgres::Error> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() + delay < deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "database not reachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// An error with what tokio-postgres's Display hides: the SQLSTATE, the server's message and detail.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({}): {}", d.severity(), d.code().code(), d.message());
            if let Some(detail) = d.detail() {
                s.push_str(&format!("; {detail}"));
            }
            s
        }
        None => {
            let source = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
            format!("{e}{source}")
        }
    }
}

/// Whether an error is worth retrying: connection trouble, serialisation failures, deadlocks,
/// admin shutdown, too many connections, lock timeouts, cancelled statements, I/O errors. Anything
/// else is a refusal of the data itself, which retrying cannot mend.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O or a closed connection.
        return true;
    };
    let c = code.code();
    c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources
        || c.starts_with("57P") // operator intervention (admin shutdown, crash shutdown, cannot connect now)
        || c == "40001" // serialization_failure
        || c == "40P01" // deadlock_detected
        || c == "55P03" // lock_not_available
        || c == "57014" // query_canceled (statement_timeout, pg_cancel_backend)
        || c == "25P03" // idle_in_transaction_session_timeout
        || c.starts_with("58") // system error (I/O)
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrateReport {
    pub storage: Storage,
    pub applied: Vec<i32>,
    pub current: i32,
}

const BOOTSTRAP: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    storage     text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);";

/// Applies the pending migrations, each in its own transaction, under an advisory lock so that
/// replicas starting together migrate once. Safe to run any number of times.
pub async fn migrate(client: &mut Client, mode: TimescaleMode) -> Result<MigrateReport, DbError> {
    client.batch_execute(BOOTSTRAP).await?;
    // Session-level lock: held across the per-migration transactions below.
    client.execute("SELECT pg_advisory_lock(hashtext('headend_migrate'))", &[]).await?;
    let result = migrate_locked(client, mode).await;
    let unlock = client.execute("SELECT pg_advisory_unlock(hashtext('headend_migrate'))", &[]).await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn migrate_locked(client: &mut Client, mode: TimescaleMode) -> Result<MigrateReport, DbError> {
    let rows = client.query("SELECT version, storage FROM schema_migrations ORDER BY version", &[]).await?;
    let recorded = rows.first().and_then(|r| Storage::parse(r.get::<_, &str>(1)));
    let current = rows.last().map_or(0, |r| r.get::<_, i32>(0));
    if let Some(latest) = MIGRATIONS.last() {
        if current > latest.version {
            return Err(DbError::TooNew(current));
        }
    }
    let storage = match recorded {
        Some(s) => {
            match (mode, s) {
                (TimescaleMode::On, Storage::Plain) | (TimescaleMode::Off, Storage::Timescale) => {
                    let wanted = if mode == TimescaleMode::On { "timescale" } else { "plain" };
                    return Err(DbError::StorageMismatch { recorded: s.as_str(), wanted });
                }
                _ => {}
            }
            s
        }
        None => choose_storage(client, mode).await?,
    };
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql_for(storage)).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, storage) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &storage.as_str()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, storage = storage.as_str(), "migration applied");
        applied.push(m.version);
    }
    sync_channels(client).await?;
    Ok(MigrateReport { storage, applied, current: MIGRATIONS.last().map_or(0, |m| m.version) })
}

/// Decides the storage path of a fresh database.
async fn choose_storage(client: &mut Client, mode: TimescaleMode) -> Result<Storage, DbError> {
    if mode == TimescaleMode::Off {
        return Ok(Storage::Plain);
    }
    let version: Option<String> = client
        .query_opt("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'", &[])
        .await?
        .map(|r| r.get(0));
    let unusable = match &version {
        None => Some("not in pg_available_extensions".to_string()),
        // The migration uses by_range() (2.13) and continuous aggregates with real-time data.
        Some(v) if !timescale_version_ok(v) => Some(format!("version {v} is older than 2.13")),
        Some(_) => None,
    };
    if let Some(why) = unusable {
        if mode == TimescaleMode::On {
            return Err(DbError::TimescaleUnavailable(why));
        }
        tracing::info!(%why, "TimescaleDB not usable: using native partitioning and rollup tables");
        return Ok(Storage::Plain);
    }
    // Installed is not enough: the library must be preloaded, or CREATE EXTENSION ends the session
    // with FATAL (the state right after installing the package). Asked before trying.
    let preload: String = client.query_one("SELECT current_setting('shared_preload_libraries')", &[]).await?.get(0);
    if !preloads_timescale(&preload) {
        if mode == TimescaleMode::On {
            return Err(DbError::TimescaleUnavailable(NOT_PRELOADED.into()));
        }
        tracing::warn!(
            shared_preload_libraries = %preload,
            "TimescaleDB is installed but {NOT_PRELOADED}: using plain PostgreSQL"
        );
        return Ok(Storage::Plain);
    }
    // Preloaded is not enough either: it must be ours to create.
    let tx = client.transaction().await?;
    let probe = tx.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await;
    let rolled_back = tx.rollback().await;
    match probe {
        // A probe that ended the session leaves nothing to fall back on: the caller reconnects.
        Err(e) if client.is_closed() => Err(DbError::ProbeEndedSession(describe(&e))),
        Ok(()) => {
            rolled_back?;
            Ok(Storage::Timescale)
        }
        Err(e) if mode == TimescaleMode::On => Err(DbError::TimescaleUnavailable(describe(&e))),
        Err(e) => {
            rolled_back?;
            tracing::warn!(error = %describe(&e), "TimescaleDB present but not usable: using plain PostgreSQL");
            Ok(Storage::Plain)
        }
    }
}

/// The advice given when the library is installed but not loaded.
const NOT_PRELOADED: &str = "timescaledb is not in shared_preload_libraries \
    (set shared_preload_libraries = 'timescaledb' in postgresql.conf and restart PostgreSQL)";

/// Whether a `shared_preload_libraries` value (`'a, timescaledb'`, quoted or not) loads TimescaleDB.
fn preloads_timescale(setting: &str) -> bool {
    setting.split(',').map(|l| l.trim().trim_matches('"').trim()).any(|l| l == "timescaledb")
}

/// Whether a TimescaleDB version string (`2.14.2`) is at least 2.13.
fn timescale_version_ok(v: &str) -> bool {
    let mut parts = v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (2, 13),
        _ => false,
    }
}

/// Upserts the channel catalogue from [`schemas::CHANNELS`].
async fn sync_channels(client: &Client) -> Result<(), DbError> {
    let stmt = client
        .prepare(
            "INSERT INTO channels (id, obis, name, unit, scaler, kind) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET obis = EXCLUDED.obis, name = EXCLUDED.name, unit = EXCLUDED.unit,
                 scaler = EXCLUDED.scaler, kind = EXCLUDED.kind",
        )
        .await?;
    for c in schemas::CHANNELS {
        let obis = c.obis.to_string();
        let scaler = i16::from(c.scaler);
        client.execute(&stmt, &[&c.id, &obis, &c.name, &c.unit, &scaler, &c.kind.as_str()]).await?;
    }
    Ok(())
}

/// The storage path recorded by `migrate`, or `None` on an unmigrated database.
pub async fn storage(client: &Client) -> Result<Option<Storage>, DbError> {
    let exists: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(None);
    }
    let row = client.query_opt("SELECT storage FROM schema_migrations ORDER BY version LIMIT 1", &[]).await?;
    Ok(row.and_then(|r| Storage::parse(r.get::<_, &str>(0))))
}

/// Test support: a fresh database on the server of `DATABASE_URL` (default: the local server), dropped
/// when the value is dropped.
#[cfg(test)]
pub(crate) mod testdb {
    use super::*;

    /// A database from the harness (`tests::pg::TestDatabase`), dropped with the value.
    pub struct TestDb {
        db: ::tests::pg::TestDatabase,
        pub name: String,
        pub url: String,
    }

    impl TestDb {
        pub async fn new() -> TestDb {
            let db = ::tests::pg::TestDatabase::create(&::tests::pg::admin_url(), "unit")
                .await
                .expect("test database (set DATABASE_URL)");
            TestDb { name: db.name.clone(), url: db.url.clone(), db }
        }

        pub async fn migrated(&self) -> Client {
            let mut c = connect(&self.db.url).await.expect("connect test database");
            migrate(&mut c, TimescaleMode::Off).await.expect("migrate");
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testdb::TestDb;
    use super::*;

    #[tokio::test]
    async fn migrate_is_idempotent_and_records_the_plain_path() {
        let db = TestDb::new().await;
        let mut c = connect(&db.url).await.expect("connect");
        let first = migrate(&mut c, TimescaleMode::Auto).await.expect("first migrate");
        assert_eq!(first.applied, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
        // The test server does not preload TimescaleDB: auto must fall back to the plain path.
        assert_eq!(first.storage, Storage::Plain);
        let second = migrate(&mut c, TimescaleMode::Auto).await.expect("second migrate");
        assert!(second.applied.is_empty());
        assert_eq!(storage(&c).await.expect("storage"), Some(Storage::Plain));
        let n: i64 = c.query_one("SELECT count(*) FROM channels", &[]).await.expect("count").get(0);
        assert_eq!(n, i64::try_from(schemas::CHANNELS.len()).expect("small"));
        assert!(matches!(migrate(&mut c, TimescaleMode::On).await, Err(DbError::StorageMismatch { .. })));
    }

    #[test]
    fn preload_setting_is_parsed() {
        for (v, ok) in [("timescaledb", true), ("pg_stat_statements, timescaledb", true), ("\"timescaledb\"", true)] {
            assert_eq!(preloads_timescale(v), ok, "{v}");
        }
        for v in ["", "pg_stat_statements", "timescaledb_toolkit"] {
            assert!(!preloads_timescale(v), "{v}");
        }
    }

    #[test]
    fn timescale_versions() {
        for (v, ok) in
            [("2.13.0", true), ("2.17.2", true), ("3.0.0", true), ("2.12.9", false), ("1.7.5", false), ("", false)]
        {
            assert_eq!(timescale_version_ok(v), ok, "{v}");
        }
    }

    #[tokio::test]
    async fn timescale_on_without_the_extension_is_a_clear_error() {
        let db = TestDb::new().await;
        let mut c = connect(&db.url).await.expect("connect");
        let err = migrate(&mut c, TimescaleMode::On).await.expect_err("must refuse");
        assert!(matches!(err, DbError::TimescaleUnavailable(_)), "{err}");
        // With the extension's files installed but not preloaded (the test server once TimescaleDB is
        // built into it), the advice names the setting and the session survives.
        let available: bool = c
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')", &[])
            .await
            .expect("available")
            .get(0);
        if available {
            assert!(err.to_string().contains("shared_preload_libraries"), "{err}");
        }
        assert!(!c.is_closed(), "the probe must not end the session");
        // Nothing half-applied.
        let n: i64 = c.query_one("SELECT count(*) FROM schema_migrations", &[]).await.expect("count").get(0);
        assert_eq!(n, 0);
    }

    /// Many writers reaching a new day at once: every call succeeds, exactly one creates it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_partition_creation_is_idempotent() {
        let db = TestDb::new().await;
        drop(db.migrated().await);
        for d in 1..=5u32 {
            let day = chrono::NaiveDate::from_ymd_opt(2026, 10, d).expect("date");
            let mut calls = Vec::new();
            for _ in 0..8 {
                let url = db.url.clone();
                calls.push(tokio::spawn(async move {
                    let c = connect(&url).await.expect("connect");
                    c.query_one("SELECT headend_ensure_partition($1)", &[&day]).await.map(|r| r.get::<_, bool>(0))
                }));
            }
            let mut created = 0;
            for call in calls {
                created += u32::from(call.await.expect("join").expect("no error under concurrency"));
            }
            assert_eq!(created, 1, "day {day}");
        }
    }

    #[tokio::test]
    async fn partitions_are_created_once_and_route_rows() {
        let db = TestDb::new().await;
        let c = db.migrated().await;
        let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 29).expect("date");
        let created: bool = c.query_one("SELECT headend_ensure_partition($1)", &[&day]).await.expect("ensure").get(0);
        assert!(created);
        let again: bool = c.query_one("SELECT headend_ensure_partition($1)", &[&day]).await.expect("ensure").get(0);
        assert!(!again);
        c.execute(
            "INSERT INTO readings (ts, value, meter_id, channel_id, flags) VALUES ('2026-03-29T23:45:00Z', 1, 1, 1, 0)",
            &[],
        )
        .await
        .expect("row lands in the day's partition");
        let err = c
            .execute(
                "INSERT INTO readings (ts, value, meter_id, channel_id) VALUES ('2026-03-30T00:00:00Z', 1, 1, 1)",
                &[],
            )
            .await
            .expect_err("no partition for the next day yet");
        assert_eq!(err.code().map(|c| c.code()), Some("23514"));
        let dropped: i32 = c
            .query_one("SELECT headend_drop_partitions_before($1)", &[&day.succ_opt().expect("next")])
            .await
            .expect("drop")
            .get(0);
        assert_eq!(dropped, 1);
    }
}
