//! The head-end's configuration: one typed struct per component, loaded from defaults, then a TOML
//! file, then environment variables. Precedence, stated once: **env > file > defaults**, where env is
//! `HEADEND_<SECTION>__<KEY>` (e.g. `HEADEND_WRITER__BATCH_ROWS=20000`) and the conventional
//! `DATABASE_URL` / `MQTT_URL` fill `database.url` / `mqtt.url` unless a `HEADEND_` twin is set.
//! `config/headend.example.toml` documents every setting.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::db::TimescaleMode;

/// Everything the head-end reads at start-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeadendConfig {
    pub database: DatabaseConfig,
    pub mqtt: MqttConfig,
    pub writer: WriterConfig,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub collect: CollectConfig,
    pub dlms: DlmsConfig,
    pub modbus: ModbusConfig,
}

/// PostgreSQL / TimescaleDB.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style URL (`DATABASE_URL`).
    pub url: String,
    /// Use TimescaleDB: `auto` (where the extension can be created), `on` (required) or `off`.
    pub timescale: TimescaleMode,
    /// How long start-up waits for the database.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/headend".into(),
            timescale: TimescaleMode::Auto,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// The MQTT source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Take readings from the broker. `false` for a replica that only polls or listens for DLMS
    /// pushes: it opens no broker connection and its readiness does not wait for one.
    pub enabled: bool,
    /// Broker URL, `mqtt://host:port`, or `mqtts://host:port` for TLS (`MQTT_URL`).
    pub url: String,
    /// PEM file of the certificate authorities trusted for an `mqtts://` broker; absent: the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client id of the persistent session; must be unique per replica and stable across restarts.
    /// Empty: `headend-<hostname>`.
    pub client_id: String,
    /// Topic filter. `$share/<group>/meters/+/readings` spreads the load over replicas.
    pub subscription: String,
    /// Which topic level (0-based, after any `$share/<group>/` prefix) holds the meter serial; the
    /// payload's `meter` must match it. `-1` disables the check.
    pub topic_serial_level: i32,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted; larger ones break the connection, so keep it above the broker's
    /// `message_size_limit`.
    pub max_packet_bytes: usize,
    /// Capacity of the client's request queue (acknowledgements travel through it).
    pub request_queue: usize,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: "mqtt://127.0.0.1:1883".into(),
            ca_file: None,
            client_id: String::new(),
            subscription: "meters/+/readings".into(),
            topic_serial_level: 1,
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 1 << 20,
            request_queue: 65_536,
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

impl MqttConfig {
    /// The client id, with the hostname default applied.
    pub fn effective_client_id(&self) -> String {
        if !self.client_id.is_empty() {
            return self.client_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into());
        format!("headend-{host}")
    }
}

/// The batching database writer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Database connections writing batches in parallel (1–4).
    pub connections: usize,
    /// A batch is written when it holds this many readings…
    pub batch_rows: usize,
    /// …or when its first message has waited this long.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Messages queued between the MQTT source and the writer. When full, the source stops reading
    /// from the broker (backpressure: the broker queues).
    pub queue_messages: usize,
    /// Bytes of received messages held between their source and the commit: MQTT publishes read
    /// from the socket, pushed frames, polled sessions, batches being written. When reached, sources
    /// wait (the MQTT intake stops reading the socket, so the broker queues). A hostile publisher
    /// sending the broker's largest packets cannot make the head-end hold more than this.
    pub queue_bytes: u32,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            connections: 2,
            batch_rows: 50_000,
            max_wait: Duration::from_millis(200),
            queue_messages: 100_000,
            queue_bytes: 256 * 1024 * 1024,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// What the ingest path accepts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Oldest interval accepted, relative to now.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Furthest interval in the future accepted (meter clocks drift).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// How long an unknown serial is remembered as unknown before the database is asked again.
    #[serde(with = "humantime_serde")]
    pub unknown_meter_ttl: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(400 * 86_400),
            max_future: Duration::from_secs(3_600),
            unknown_meter_ttl: Duration::from_secs(60),
        }
    }
}

/// Storage maintenance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Plain PostgreSQL: daily partitions created this many days ahead.
    pub partitions_ahead_days: u32,
    /// Drop readings older than this (whole days/chunks). Absent: keep everything.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// TimescaleDB: compress chunks older than this.
    #[serde(with = "humantime_serde")]
    pub compress_after: Duration,
    /// How often partitions, retention and compression are looked after.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// Plain PostgreSQL: how often the hourly rollup is brought up to date.
    #[serde(with = "humantime_serde")]
    pub rollup_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            partitions_ahead_days: 7,
            retention: None,
            compress_after: Duration::from_secs(7 * 86_400),
            maintenance_interval: Duration::from_secs(300),
            rollup_interval: Duration::from_secs(10),
        }
    }
}

/// The HTTP server (API, metrics, probes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Longest period one readings request may span.
    #[serde(with = "humantime_serde")]
    pub max_query_span: Duration,
    /// Most rows one readings request returns.
    pub max_rows: usize,
    /// Most concurrent requests served at once by the API and the pages (beyond: 503 at once), so
    /// that portal traffic cannot take the database connections the ingest path needs.
    pub max_concurrent_requests: usize,
    /// Database connections of the API and the pages (a pool of their own, apart from ingest's and
    /// polling's).
    pub database_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_query_span: Duration::from_secs(93 * 86_400),
            max_rows: 100_000,
            max_concurrent_requests: 256,
            database_connections: 8,
        }
    }
}

/// Accounts, sessions and API tokens (households, operators, admins).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A session ends after this long without a request.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A session ends this long after login, however active.
    #[serde(with = "humantime_serde")]
    pub session_max: Duration,
    /// Mark cookies `Secure` (sent over HTTPS only). On wherever the head-end is behind TLS.
    pub secure_cookies: bool,
    /// Failed logins in a row after which an account is locked for `lockout`.
    pub max_failed_logins: u32,
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Login and activation attempts per client address per minute (each replica counts its own).
    pub attempts_per_minute: u32,
    /// Take the client address from this header (e.g. `x-forwarded-for`, its last entry: the one our proxy added) — only
    /// behind a proxy that sets it. Unset: the TCP peer address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip_header: Option<String>,
    /// Origins (`https://portal.example.rs`) whose forms may post here besides this server's own
    /// `Host`: needed behind a proxy that rewrites `Host`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_origins: Vec<String>,
    /// How long an activation code (invitation) stays valid.
    #[serde(with = "humantime_serde")]
    pub invite_valid: Duration,
    /// Shortest password accepted.
    pub min_password_len: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(2 * 3600),
            session_max: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            max_failed_logins: 5,
            lockout: Duration::from_secs(15 * 60),
            attempts_per_minute: 20,
            client_ip_header: None,
            public_origins: Vec::new(),
            invite_valid: Duration::from_secs(30 * 86_400),
            min_password_len: 10,
        }
    }
}

/// Polling collectors (DLMS today, Modbus through the same scheduler): when and how hard to poll.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectConfig {
    /// Poll at all. Off by default: a head-end fed by MQTT only needs no schedule.
    pub enabled: bool,
    /// Buckets the fleet is split into for polling replicas (a meter's bucket is a stable hash of its
    /// cell, `meters.transformer`); each replica holds about `buckets / replicas` of them through
    /// leases in PostgreSQL. Must be the same on every replica; ≥ 10× the replicas spreads evenly.
    pub lease_buckets: u32,
    /// How long a replica's bucket leases last without renewal (renewed every third of it): a dead
    /// replica's meters are taken over, and a new replica gets its share, within about this long.
    #[serde(with = "humantime_serde")]
    pub lease_period: Duration,
    /// Sessions open at once, over all groups and protocols.
    pub max_sessions: usize,
    /// Sessions open at once per cell or concentrator (meters sharing `meters.transformer`).
    pub max_sessions_per_cell: usize,
    /// New connections started per second (a token bucket; 0 = unlimited).
    pub new_connections_per_second: u32,
    /// Further attempts after a failed session (with exponential backoff and jitter).
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest gap one session back-fills from the load profile; older gaps stay in the ledger.
    #[serde(with = "humantime_serde")]
    pub backfill_max: Duration,
    /// A meter clock further off than this is flagged.
    #[serde(with = "humantime_serde")]
    pub clock_threshold: Duration,
    /// Set a flagged meter's clock (DLMS SET on 0.0.1.0.0.255) when it is off by at most
    /// `clock_sync_max_step`; a larger deviation is only flagged, for an engineer to look at.
    pub clock_sync: bool,
    #[serde(with = "humantime_serde")]
    pub clock_sync_max_step: Duration,
    /// A meter whose last session failed authentication (its password or keys are wrong, or its
    /// reply did not verify) is not polled again for this long, doubled for each further failure
    /// in a row up to `auth_cooldown_max`: wrong credentials do not mend themselves, and every
    /// attempt is one more refusal in the meter's security log. `0s`: retried every round.
    #[serde(with = "humantime_serde")]
    pub auth_cooldown: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_cooldown_max: Duration,
    /// Schedules per group of meters.
    pub groups: Vec<GroupSchedule>,
}

impl Default for CollectConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_buckets: 64,
            lease_period: Duration::from_secs(30),
            max_sessions: 2_000,
            max_sessions_per_cell: 64,
            new_connections_per_second: 5_000,
            retries: 2,
            retry_backoff: Duration::from_secs(5),
            backfill_max: Duration::from_secs(3 * 86_400),
            clock_threshold: Duration::from_secs(10),
            clock_sync: false,
            clock_sync_max_step: Duration::from_secs(60),
            auth_cooldown: Duration::from_secs(3_600),
            auth_cooldown_max: Duration::from_secs(86_400),
            groups: vec![GroupSchedule::default()],
        }
    }
}

/// Which protocol a group of meters is polled with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PollProtocol {
    Dlms,
    Modbus,
}

impl PollProtocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            PollProtocol::Dlms => "dlms",
            PollProtocol::Modbus => "modbus",
        }
    }
}

/// The schedule of one group: the meters of one protocol whose `transformer` starts with a prefix.
/// A meter belongs to the first group that matches it. Slots of a period of a day or more are
/// local (Europe/Belgrade) midnights; shorter periods are multiples of the period since midnight
/// UTC. A task is due when its latest slot has passed since it last succeeded for that meter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSchedule {
    pub name: String,
    pub protocol: PollProtocol,
    /// Meters whose `transformer` starts with this ("" = every meter of the protocol).
    pub transformer_prefix: String,
    /// Load profile (read by range from the last stored interval).
    #[serde(with = "humantime_serde")]
    pub profile_every: Duration,
    /// Billing registers (1.8.0, 1.8.1, 1.8.2, 2.8.0); daily = just after local midnight.
    #[serde(with = "humantime_serde")]
    pub registers_every: Duration,
    /// Standard event log.
    #[serde(with = "humantime_serde")]
    pub events_every: Duration,
    /// Clock check (and sync when enabled).
    #[serde(with = "humantime_serde")]
    pub clock_every: Duration,
    /// Rounds start this long after a slot, so meters have closed the interval.
    #[serde(with = "humantime_serde")]
    pub offset: Duration,
}

impl Default for GroupSchedule {
    fn default() -> Self {
        Self {
            name: "dlms".into(),
            protocol: PollProtocol::Dlms,
            transformer_prefix: String::new(),
            profile_every: Duration::from_secs(900),
            registers_every: Duration::from_secs(86_400),
            events_every: Duration::from_secs(86_400),
            clock_every: Duration::from_secs(86_400),
            offset: Duration::from_secs(60),
        }
    }
}

/// DLMS/COSEM sessions: transport, addressing and security of the head-end's client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DlmsConfig {
    /// `wrapper` (IEC 62056-47 over TCP) or `hdlc` (HDLC over TCP).
    pub transport: DlmsTransport,
    /// Port used when a meter's address has none.
    pub port: u16,
    /// Client SAP / HDLC client address: 16 public (no security), 1 management.
    pub client: u16,
    /// Server logical device (wrapper destination, HDLC upper address).
    pub server_logical: u16,
    /// HDLC lower (physical) address.
    pub server_physical: u16,
    /// `none`, `low` (LLS password) or `gmac` (HLS-GMAC, suite 0, authenticated and encrypted).
    pub auth: DlmsAuth,
    /// Per-meter keys: CSV `serial,system_title,ek,ak,password` (hex; as `meter-sim keys` writes).
    /// Never logged. Required for `low` and `gmac`.
    pub keys_file: Option<std::path::PathBuf>,
    /// The head-end's system title (16 hex digits) for ciphered sessions.
    pub system_title: String,
    /// Largest APDU the head-end proposes to receive.
    pub max_pdu: u16,
    /// Most attributes in one GET with-list (a meter's own limit, once probed, wins).
    pub max_list: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of each request/response step.
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
    /// Where pushed DataNotifications arrive (TCP wrapper); absent = no push listener.
    pub push_listen: Option<SocketAddr>,
    /// Refuse plain (unciphered) pushes: only meters whose keys opened the notification count.
    /// Ciphered pushes always need authentication and encryption, whatever this says.
    pub push_require_ciphered: bool,
    /// The values of a pushed body after its serial and capture time, as OBIS codes of stored
    /// channels, each in the channel's stored unit.
    pub push_objects: Vec<String>,
    /// Push connections open at once; one more is closed as soon as it is accepted (counted as
    /// `headend_dlms_push_total{outcome="busy"}`). Each holds at most one frame (4 KiB) unqueued.
    pub push_max_connections: usize,
    /// A push connection that sends no frame for this long is closed (`outcome="idle"`), so idle
    /// or half-open connections cannot use up `push_max_connections`.
    #[serde(with = "humantime_serde")]
    pub push_idle_timeout: Duration,
}

impl Default for DlmsConfig {
    fn default() -> Self {
        Self {
            transport: DlmsTransport::Wrapper,
            port: 4059,
            client: 16,
            server_logical: 1,
            server_physical: 17,
            auth: DlmsAuth::None,
            keys_file: None,
            system_title: "4845530000000001".into(),
            max_pdu: 1024,
            max_list: 10,
            connect_timeout: Duration::from_secs(10),
            step_timeout: Duration::from_secs(10),
            push_listen: None,
            push_require_ciphered: true,
            push_objects: vec!["1.0.1.8.0.255".into(), "1.0.2.8.0.255".into()],
            push_max_connections: 10_000,
            push_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Modbus TCP meters: register maps and the gateway connection pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModbusConfig {
    /// Directory of register maps (`*.toml`, format in `schemas::modbus_map`); a meter's address
    /// `host:port/unit/map` names its map by file stem. Read at start-up when a group polls Modbus.
    pub maps_dir: std::path::PathBuf,
    /// The map of addresses that name none.
    pub default_map: Option<String>,
    /// Gateway connections open at once.
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Further attempts of one request after a transport failure or a busy device.
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        Self {
            maps_dir: "config/modbus".into(),
            default_map: None,
            max_connections: 256,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Duration::from_millis(100),
        }
    }
}

impl DlmsConfig {
    /// Channel ids of [`DlmsConfig::push_objects`].
    pub fn push_channels(&self) -> Result<Vec<i16>, ConfigError> {
        self.push_objects
            .iter()
            .map(|o| {
                let code: schemas::ObisCode =
                    o.parse().map_err(|e| ConfigError::Invalid(format!("dlms.push_objects {o:?}: {e}")))?;
                schemas::channel::by_obis(&code)
                    .map(|c| c.id)
                    .ok_or_else(|| ConfigError::Invalid(format!("dlms.push_objects {o:?} is not a stored channel")))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DlmsTransport {
    Wrapper,
    Hdlc,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DlmsAuth {
    None,
    Low,
    Gmac,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Filter directives (`RUST_LOG` overrides).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that could not be read, or whose settings contradict each other.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl HeadendConfig {
    /// Checks settings that are valid alone but not together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(keep) = self.storage.retention {
            if self.ingest.max_age > keep {
                return Err(ConfigError::Invalid(format!(
                    "ingest.max_age ({}) exceeds storage.retention ({}): late readings would land in days that \
                     retention drops; lower max_age or raise retention",
                    humantime::format_duration(self.ingest.max_age),
                    humantime::format_duration(keep)
                )));
            }
        }
        if self.collect.lease_buckets == 0 || self.collect.lease_period < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "collect.lease_buckets must be above 0 and collect.lease_period at least 1s".into(),
            ));
        }
        if self.collect.enabled && self.collect.max_sessions == 0 {
            return Err(ConfigError::Invalid("collect.max_sessions must be above 0".into()));
        }
        if self.collect.auth_cooldown_max < self.collect.auth_cooldown {
            return Err(ConfigError::Invalid(
                "collect.auth_cooldown_max must be at least collect.auth_cooldown".into(),
            ));
        }
        for g in &self.collect.groups {
            if g.profile_every.is_zero() || g.registers_every.is_zero() || g.events_every.is_zero() {
                return Err(ConfigError::Invalid(format!("collect.groups {:?}: periods must be above 0", g.name)));
            }
        }
        if self.dlms.auth != DlmsAuth::None && self.collect.enabled && self.dlms.keys_file.is_none() {
            return Err(ConfigError::Invalid("dlms.auth low/gmac needs dlms.keys_file".into()));
        }
        self.dlms.push_channels()?;
        if self.writer.batch_rows == 0 || self.writer.queue_messages == 0 {
            return Err(ConfigError::Invalid("writer.batch_rows and writer.queue_messages must be above 0".into()));
        }
        if self.writer.queue_bytes < 65_536 {
            return Err(ConfigError::Invalid(format!(
                "writer.queue_bytes = {} is below 65536: messages would be written one at a time",
                self.writer.queue_bytes
            )));
        }
        Ok(())
    }
}

impl HeadendConfig {
    /// This configuration with every secret masked: what `headend config` prints. Secrets today are
    /// the passwords inside `database.url` and `mqtt.url` (user:password@host, or `password=`).
    pub fn redacted(&self) -> HeadendConfig {
        let mut c = self.clone();
        c.database.url = redact_url(&c.database.url);
        c.mqtt.url = redact_url(&c.mqtt.url);
        c
    }

    /// Loads defaults, then `file` (when given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, "HEADEND_", CONVENTIONAL)
    }

    /// [`HeadendConfig::load`] with the environment names given (tests use private ones: the
    /// process environment is shared by tests running in parallel).
    fn load_with(
        file: Option<&Path>,
        prefix: &str,
        conventional: &'static [(&'static str, &'static str)],
    ) -> Result<Self, ConfigError> {
        let mut f = Figment::from(Serialized::defaults(HeadendConfig::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        let names: Vec<&str> = conventional.iter().map(|(env, _)| *env).collect();
        f.merge(Env::raw().only(&names).map(move |k| {
            conventional
                .iter()
                .find(|(env, _)| k.as_str().eq_ignore_ascii_case(env))
                .map_or_else(|| k.as_str().to_owned().into(), |(_, key)| (*key).into())
        }))
        // HEADEND_CONFIG names the file itself (the binary's --config), not a setting.
        .merge(Env::prefixed(prefix).ignore(&["config"]).split("__"))
        .extract::<HeadendConfig>()
        .map_err(|e| ConfigError::Read(Box::new(e)))
        .and_then(|cfg| cfg.validate().map(|()| cfg))
    }
}

/// Conventional variables every binary honours, and the keys they fill.
const CONVENTIONAL: &[(&str, &str)] = &[("DATABASE_URL", "database.url"), ("MQTT_URL", "mqtt.url")];

pub use schemas::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/headend.example.toml");
    const TEST_CONVENTIONAL: &[(&str, &str)] =
        &[("HESCONV_DATABASE_URL", "database.url"), ("HESCONV_MQTT_URL", "mqtt.url")];

    #[test]
    fn the_example_file_parses_and_equals_the_defaults() {
        let cfg: HeadendConfig = Figment::from(Toml::string(EXAMPLE)).extract().expect("example parses");
        let mut expected = HeadendConfig::default();
        // The example shows a retention value commented in; everything else is the default.
        expected.storage.retention = cfg.storage.retention;
        assert_eq!(cfg, expected);
    }

    // figment::Jail's closures return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    #[test]
    fn env_overrides_file_and_conventional_urls_apply() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "[writer]\nbatch_rows = 10\nmax_wait = \"1s\"\n[mqtt]\nurl = \"mqtt://file:1\"\n",
            )?;
            jail.set_env("HESTEST_WRITER__BATCH_ROWS", "20");
            jail.set_env("HESTEST_CONFIG", "h.toml");
            jail.set_env("HESCONV_DATABASE_URL", "postgres://x@db/y");
            jail.set_env("HESCONV_MQTT_URL", "mqtt://env:2");
            let load = || HeadendConfig::load_with(Some(Path::new("h.toml")), "HESTEST_", TEST_CONVENTIONAL);
            let cfg = load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.writer.batch_rows, 20);
            assert_eq!(cfg.writer.max_wait, Duration::from_secs(1));
            assert_eq!(cfg.database.url, "postgres://x@db/y");
            assert_eq!(cfg.mqtt.url, "mqtt://env:2");
            jail.set_env("HESTEST_DATABASE__URL", "postgres://z@db/w");
            let cfg = load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.database.url, "postgres://z@db/w", "the HEADEND_ twin wins");
            Ok(())
        });
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let mut cfg = HeadendConfig::default();
        cfg.storage.retention = Some(Duration::from_secs(30 * 86_400));
        let err = cfg.validate().expect_err("max_age 400 days > retention 30 days");
        assert!(err.to_string().contains("ingest.max_age"), "{err}");
        cfg.ingest.max_age = Duration::from_secs(29 * 86_400);
        assert!(cfg.validate().is_ok());
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[writer]\nbatch_rowz = 10\n")?;
            let err = HeadendConfig::load(Some(Path::new("bad.toml"))).expect_err("typo must fail");
            assert!(err.to_string().contains("batch_rowz"), "{err}");
            jail.create_file("bad2.toml", "[writer]\nmax_wait = \"soon\"\n")?;
            assert!(HeadendConfig::load(Some(Path::new("bad2.toml"))).is_err());
            Ok(())
        });
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        for (url, want) in [
            ("postgres://hes:S3cret@db:5432/headend", "postgres://hes:********@db:5432/headend"),
            ("postgres://hes:S3cret@db", "postgres://hes:********@db"),
            ("postgres://db/headend?user=hes&password=S3cret", "postgres://db/headend?user=hes&password=********"),
            ("host=db user=hes password=S3cret dbname=h", "host=db user=hes password=******** dbname=h"),
            ("mqtt://meter:p%40ss:word@broker:1883", "mqtt://meter:********@broker:1883"),
            ("postgres://postgres@127.0.0.1:5432/headend", "postgres://postgres@127.0.0.1:5432/headend"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }

    #[test]
    fn the_printed_configuration_holds_no_secret() {
        let mut cfg = HeadendConfig::default();
        cfg.database.url = "postgres://hes:S3cret-db@db/headend".into();
        cfg.mqtt.url = "mqtt://hes:S3cret-mqtt@broker:1883".into();
        let printed = toml::to_string_pretty(&cfg.redacted()).expect("toml");
        assert!(!printed.contains("S3cret"), "{printed}");
        assert!(printed.contains("postgres://hes:********@db/headend"), "{printed}");
    }
}
