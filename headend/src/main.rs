//! The `headend` binary: `serve`, `migrate`, `inventory import`, `config`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use headend::config::{HeadendConfig, LogFormat};
use headend::{app, db};
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
            let report = db::migrate(&mut client, cfg.database.timescale).await?;
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
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
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
