//! The `headend` binary: `serve`, `migrate`, `inventory import`, `config`, `account …`, `meter read`, `dlms decode`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use headend::config::{HeadendConfig, LogFormat};
use headend::{app, db, diag};
use tokio_util::sync::CancellationToken;

/// Smart-meter head-end: collects readings over MQTT into PostgreSQL/TimescaleDB.
///
/// Configuration: defaults < the file given with --config < environment (HEADEND_<SECTION>__<KEY>,
/// and DATABASE_URL / MQTT_URL). See config/headend.example.toml.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, env = "HEADEND_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the head-end: MQTT intake, database writer, maintenance, HTTP API and metrics.
    Serve,
    /// Create or upgrade the database schema (safe to run any number of times).
    Migrate,
    /// Inventory of buildings, households and meters.
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// Print the effective configuration (defaults, file and environment merged) as TOML.
    Config,
    /// Talk to one meter directly (diagnostics).
    Meter {
        #[command(subcommand)]
        command: MeterCommand,
    },
    /// DLMS/COSEM tools.
    Dlms {
        #[command(subcommand)]
        command: DlmsCommand,
    },
    /// Accounts of households, operators and admins; API tokens.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Write the broker's password file and ACL for the MQTT meters of the inventory: each meter
    /// logs in as its serial with a password derived from the site secret and may publish only on
    /// `meters/<serial>/readings`; the readers (the head-end) read all meters' topics. The readers'
    /// password is read from the first line of standard input. No plaintext password is written.
    MqttUsers {
        /// The site secret (at least 16 bytes; the meters' passwords derive from it).
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// Folder for `passwd` and `acl` (Mosquitto's password_file and acl_file).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Users that read all meters' readings (the head-end's mqtt:// URL user).
        #[arg(long, default_value = "headend", value_delimiter = ',')]
        reader: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Print a one-time activation code for a household (printable on the invoice): the household
    /// chooses its username and password at /activate.
    ///
    /// With --without-account instead: a CSV (household, building, apartment, address, activation_code,
    /// expires_at) of a code for every household of --building (or of all buildings) that has no
    /// account yet, for printing on the invoices; their earlier unused codes stop working.
    Invite {
        /// Household code (inventory).
        #[arg(long, required_unless_present = "without_account", conflicts_with = "without_account")]
        household: Option<String>,
        /// Every household without an account (of --building, or all), as CSV on standard output.
        #[arg(long)]
        without_account: bool,
        #[arg(long, requires = "without_account")]
        building: Option<String>,
    },
    /// Create an account. Without --password-stdin it waits for activation and the one-time code is
    /// printed; with it, the password is read from the first line of standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["household", "operator", "admin"])]
        role: String,
        /// Household codes a household account may see (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        household: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (read from standard input) and end the account's sessions.
    Password {
        #[arg(long)]
        username: String,
    },
    /// Print a new API token for an account (shown once; the head-end keeps only its digest).
    Token {
        #[arg(long)]
        username: String,
        /// What it is for; unique per account.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 90days; default: no expiry.
        #[arg(long)]
        expires: Option<humantime::Duration>,
    },
    /// Revoke an API token.
    Revoke {
        #[arg(long)]
        username: String,
        #[arg(long)]
        name: String,
    },
    /// Disable an account: its sessions end and its tokens stop working.
    Disable {
        #[arg(long)]
        username: String,
    },
    /// List accounts (no secrets) as JSON lines.
    List,
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!p.is_empty(), "no password on standard input");
    Ok(p)
}

async fn account(cfg: &HeadendConfig, command: AccountCommand) -> anyhow::Result<()> {
    use headend::auth::store::{self, InviteFor};
    use headend::auth::Role;
    let c = db::connect_retrying(&cfg.database.url, cfg.database.connect_timeout)
        .await
        .context("connecting to the database")?;
    let min = cfg.auth.min_password_len;
    let days = cfg.auth.invite_valid.as_secs() / 86_400;
    match command {
        AccountCommand::Invite { without_account: true, building, .. } => {
            let mut c = c;
            let list = store::invite_households(&mut c, building.as_deref(), "cli", cfg.auth.invite_valid).await?;
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            for i in &list {
                w.serialize(i)?;
            }
            w.flush()?;
            eprintln!("{} activation codes (one per household without an account)", list.len());
        }
        AccountCommand::Invite { household, .. } => {
            let household = household.context("--household")?;
            let code = store::create_invite(&c, &InviteFor::Household(household.clone()), "cli", cfg.auth.invite_valid)
                .await?;
            println!(
                "{}",
                serde_json::json!({"household": household, "activation_code": code, "expires_in_days": days})
            );
        }
        AccountCommand::Create { username, role, household, password_stdin } => {
            let role = Role::parse(&role).context("role")?;
            anyhow::ensure!(household.is_empty() || role == Role::Household, "--household is for household accounts");
            if password_stdin {
                let password = read_password()?;
                store::check_households(&c, &household).await?;
                store::create_account(&c, &username, role, Some(&password), min).await?;
                for h in &household {
                    store::link_household(&c, &username, h).await?;
                }
                println!("{}", serde_json::json!({"username": username, "role": role, "active": true}));
            } else {
                let code =
                    store::create_pending(&c, &username, role, &household, "cli", min, cfg.auth.invite_valid).await?;
                println!(
                    "{}",
                    serde_json::json!({"username": username, "role": role, "activation_code": code, "expires_in_days": days})
                );
            }
        }
        AccountCommand::Password { username } => {
            store::set_password(&c, &username, &read_password()?, min).await?;
            println!("{}", serde_json::json!({"username": username, "password": "set"}));
        }
        AccountCommand::Token { username, name, expires } => {
            let token = store::create_token(&c, &username, &name, expires.map(Into::into)).await?;
            println!("{}", serde_json::json!({"username": username, "name": name, "token": token}));
        }
        AccountCommand::Revoke { username, name } => {
            store::revoke_token(&c, &username, &name).await?;
            println!("{}", serde_json::json!({"username": username, "name": name, "revoked": true}));
        }
        AccountCommand::Disable { username } => {
            store::disable(&c, &username).await?;
            println!("{}", serde_json::json!({"username": username, "disabled": true}));
        }
        AccountCommand::List => {
            let mut page = 0;
            loop {
                let rows = store::list(&c, 1000, page * 1000).await?;
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
                if rows.len() < 1000 {
                    break;
                }
                page += 1;
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum MeterCommand {
    /// Read objects (and a profile) in one DLMS session and print JSON: values scaled with units,
    /// profile rows, errors by data-access-result.
    Read(ReadArgs),
}

#[derive(clap::Args)]
struct ReadArgs {
    #[arg(long)]
    host: String,
    #[arg(long, default_value_t = 4059)]
    port: u16,
    /// HDLC framing over TCP instead of the IEC 62056-47 wrapper.
    #[arg(long)]
    hdlc: bool,
    /// Client SAP: 16 public, 1 management.
    #[arg(long, default_value_t = 16)]
    client: u16,
    /// Server logical device.
    #[arg(long, default_value_t = 1)]
    server: u16,
    /// HDLC physical address.
    #[arg(long, default_value_t = 17)]
    physical: u16,
    #[arg(long, value_enum, default_value = "none")]
    auth: AuthArg,
    /// LLS password (text).
    #[arg(long, env = "DLMS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// HLS-GMAC keys and the client's system title (hex).
    #[arg(long, env = "DLMS_EK", hide_env_values = true)]
    ek: Option<String>,
    #[arg(long, env = "DLMS_AK", hide_env_values = true)]
    ak: Option<String>,
    #[arg(long, default_value = "4845530000000001")]
    system_title: String,
    /// The last invocation counter used with these keys.
    #[arg(long, default_value_t = 0)]
    invocation_counter: u32,
    /// Objects to read: OBIS (class guessed) or class/OBIS/attribute, comma-separated.
    #[arg(long, value_delimiter = ',')]
    obis: Vec<String>,
    /// A profile to read (e.g. 1.0.99.1.0.255) by range (--from/--to) or by entry (--entries A-B).
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    entries: Option<String>,
    #[arg(long, default_value_t = 1024)]
    max_pdu: u16,
    #[arg(long, default_value = "10s")]
    timeout: humantime::Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuthArg {
    None,
    Low,
    Gmac,
}

#[derive(Subcommand)]
enum DlmsCommand {
    /// Decode an APDU, or a whole wrapper/HDLC frame, given in hex, and print it as JSON. With keys,
    /// ciphered APDUs are deciphered (--system-title is the sender's when the APDU lacks it).
    Decode {
        hex: String,
        #[arg(long, env = "DLMS_EK", hide_env_values = true)]
        ek: Option<String>,
        #[arg(long, env = "DLMS_AK", hide_env_values = true)]
        ak: Option<String>,
        #[arg(long)]
        system_title: Option<String>,
    },
}

fn key16(name: &str, v: Option<&String>) -> anyhow::Result<[u8; 16]> {
    let v = v.with_context(|| format!("--{name} is required"))?;
    hex::decode(v.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("--{name}: expected 32 hex digits"))
}

fn title8(v: &str) -> anyhow::Result<[u8; 8]> {
    hex::decode(v.trim()).ok().and_then(|b| b.try_into().ok()).context("system title: expected 16 hex digits")
}

fn time_arg(name: &str, v: Option<&String>) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let v = v.with_context(|| format!("--{name} is required with --profile (or use --entries)"))?;
    Ok(chrono::DateTime::parse_from_rfc3339(v).with_context(|| format!("--{name}: RFC 3339 time"))?.to_utc())
}

impl ReadArgs {
    fn request(&self) -> anyhow::Result<diag::ReadRequest> {
        use diag::{Auth, ProfileRead};
        let auth = match self.auth {
            AuthArg::None => Auth::None,
            AuthArg::Low => Auth::Low {
                password: self.password.clone().context("--password is required with --auth low")?.into_bytes(),
            },
            AuthArg::Gmac => Auth::Gmac {
                system_title: title8(&self.system_title)?,
                ek: key16("ek", self.ek.as_ref())?,
                ak: key16("ak", self.ak.as_ref())?,
                invocation_counter: self.invocation_counter,
            },
        };
        let profile = match &self.profile {
            None => None,
            Some(p) => {
                let obis: dlms::Obis = p.parse().map_err(|e: dlms::Error| anyhow::anyhow!("--profile: {e}"))?;
                Some(match &self.entries {
                    Some(r) => {
                        let (a, b) = r.split_once('-').context("--entries: expected FROM-TO, e.g. 1-4")?;
                        ProfileRead::Entries { obis, from: a.trim().parse()?, to: b.trim().parse()? }
                    }
                    None => ProfileRead::Range {
                        obis,
                        from: time_arg("from", self.from.as_ref())?,
                        to: time_arg("to", self.to.as_ref())?,
                    },
                })
            }
        };
        if self.obis.is_empty() && profile.is_none() {
            anyhow::bail!("nothing to read: give --obis and/or --profile");
        }
        Ok(diag::ReadRequest {
            host: self.host.clone(),
            port: self.port,
            hdlc: self.hdlc,
            client: self.client,
            server_logical: self.server,
            server_physical: self.physical,
            auth,
            max_pdu: self.max_pdu,
            timeout: *self.timeout,
            objects: self.obis.clone(),
            profile,
        })
    }
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// Import a CSV (columns documented in schemas/src/inventory.rs and README.md). All or nothing:
    /// any bad row is reported with its line number and nothing is written. Idempotent.
    Import {
        /// The CSV file, or - for standard input.
        file: PathBuf,
    },
}

fn init_logs(cfg: &HeadendConfig) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    // tokio-postgres logs statement parameters at debug level: password hashes, CSRF tokens. Never
    // below info, whatever RUST_LOG asks for.
    for quiet in ["tokio_postgres=info", "tokio_postgres::query=info", "tokio_postgres::prepare=info"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Any failure ends the process with status 1 and one line on stderr: the error and its causes
/// (`headend: connecting to the database: error connecting to server: Connection refused`).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("headend: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = HeadendConfig::load(cli.config.as_deref())?;
    init_logs(&cfg);
    match cli.command {
        Command::Serve => {
            let shutdown = CancellationToken::new();
            let token = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received");
                token.cancel();
            });
            app::serve(cfg, shutdown, None).await
        }
        Command::Migrate => {
            let mut client = db::connect_retrying(&cfg.database.url, cfg.database.connect_timeout)
                .await
                .context("connecting to the database")?;
            let report = match db::migrate(&mut client, cfg.database.timescale).await {
                // The probe ended the session (a server that refuses TimescaleDB with FATAL): under
                // `auto`, a new session on the plain path.
                Err(db::DbError::ProbeEndedSession(why)) if cfg.database.timescale == db::TimescaleMode::Auto => {
                    tracing::warn!(%why, "TimescaleDB not usable: using plain PostgreSQL");
                    let mut client = db::connect_retrying(&cfg.database.url, cfg.database.connect_timeout)
                        .await
                        .context("reconnecting to the database")?;
                    db::migrate(&mut client, db::TimescaleMode::Off).await?
                }
                r => r?,
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Inventory { command: InventoryCommand::Import { file } } => {
            let mut client = db::connect_retrying(&cfg.database.url, cfg.database.connect_timeout)
                .await
                .context("connecting to the database")?;
            let reader: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?)
            };
            match headend::inventory::import(&mut client, reader).await {
                Ok(report) => {
                    println!("{}", serde_json::to_string(&report)?);
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{e}");
                    anyhow::bail!("inventory import of {} failed; nothing was written", file.display())
                }
            }
        }
        Command::Config => {
            // Passwords inside URLs are masked: this output ends up in tickets and chat.
            print!("{}", toml::to_string_pretty(&cfg.redacted())?);
            Ok(())
        }
        Command::Account { command } => account(&cfg, command).await,
        Command::MqttUsers { secret_file, out, reader } => mqtt_users(&cfg, &secret_file, &out, &reader).await,
        Command::Meter { command: MeterCommand::Read(args) } => {
            let req = args.request()?;
            let report = diag::read(&req).await.with_context(|| format!("session with {}:{}", req.host, req.port))?;
            emit(&serde_json::to_string_pretty(&report)?)?;
            Ok(())
        }
        Command::Dlms { command: DlmsCommand::Decode { hex, ek, ak, system_title } } => {
            let keys = match (&ek, &ak) {
                (None, None) => None,
                _ => Some(dlms::Keys {
                    encryption_key: key16("ek", ek.as_ref())?,
                    authentication_key: key16("ak", ak.as_ref())?,
                    system_title: system_title.as_deref().map(title8).transpose()?,
                }),
            };
            match diag::decode(&hex, keys.as_ref()) {
                Ok(v) => {
                    emit(&serde_json::to_string_pretty(&v)?)?;
                    Ok(())
                }
                Err(e) => anyhow::bail!("cannot decode: {e}"),
            }
        }
    }
}

/// Prints a result; a closed pipe (`| head`) ends quietly instead of panicking.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `headend mqtt-users`: the broker's password file and ACL from the inventory.
async fn mqtt_users(
    cfg: &HeadendConfig,
    secret_file: &std::path::Path,
    out: &std::path::Path,
    readers: &[String],
) -> anyhow::Result<()> {
    use schemas::mqtt_auth;
    use std::io::Write;
    let secret =
        std::fs::read(secret_file).with_context(|| format!("reading the site secret {}", secret_file.display()))?;
    let secret = secret.trim_ascii();
    if secret.len() < mqtt_auth::MIN_SECRET {
        anyhow::bail!("the site secret {} is shorter than {} bytes", secret_file.display(), mqtt_auth::MIN_SECRET);
    }
    if readers.iter().any(|r| r.is_empty() || r.contains(':') || r.contains(char::is_whitespace)) {
        anyhow::bail!("a reader name must be non-empty, without ':' or spaces");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the readers' password from standard input")?;
    let reader_password = line.trim_end_matches(['\r', '\n']);
    if reader_password.is_empty() {
        anyhow::bail!("the readers' password (first line of standard input) is empty");
    }
    let client = db::connect_retrying(&cfg.database.url, cfg.database.connect_timeout)
        .await
        .context("connecting to the database")?;
    let serials: Vec<String> = client
        .query("SELECT serial FROM meters WHERE protocol = 'mqtt' ORDER BY serial", &[])
        .await
        .context("reading the MQTT meters")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(r) = readers.iter().find(|r| serials.contains(r)) {
        anyhow::bail!("the reader {r} is also a meter serial");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut passwd = Vec::with_capacity(serials.len() * 140);
    for r in readers {
        writeln!(passwd, "{}", mqtt_auth::mosquitto_line(r, reader_password, secret))?;
    }
    for s in &serials {
        writeln!(passwd, "{}", mqtt_auth::mosquitto_line(s, &mqtt_auth::meter_password(secret, s), secret))?;
    }
    let readers: Vec<&str> = readers.iter().map(String::as_str).collect();
    write_private(&out.join("passwd"), &passwd)?;
    write_private(&out.join("acl"), mqtt_auth::acl(&readers).as_bytes())?;
    println!("{}", serde_json::json!({"meters": serials.len(), "readers": readers, "out": out}));
    Ok(())
}

/// Writes a file readable by its owner only (it holds password hashes).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
