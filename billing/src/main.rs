//! `billing` — `billing run --period YYYY-MM …`, `billing show --period YYYY-MM …` and `billing tariff check FILE`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "billing", about = "Per-household electricity bills from interval data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bill every household (of one building) for a calendar month, store the run and export it.
    Run {
        /// The month, YYYY-MM (Europe/Belgrade local time).
        #[arg(long)]
        period: String,
        /// Only this building (its code).
        #[arg(long)]
        building: Option<String>,
        /// Folder for bills.csv, bills.json, buildings.json, invoices/<household>.html and
        /// buildings/<code>.html; nothing is written without it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// How common areas + losses are split: equal, area (floor area) or residents.
        #[arg(long, default_value = "area")]
        split: String,
        /// Mark a bill estimated when the share of the period without actual boundary readings is above this
        /// fraction.
        #[arg(long, default_value = "0")]
        estimated_threshold: rust_decimal::Decimal,
        /// VEE: longest gap around a boundary estimated by linear interpolation, in minutes (longer: like day).
        #[arg(long, default_value_t = 180)]
        max_interpolation_minutes: i64,
        /// VEE: how many previous weeks a like day (same weekday, same local time) may come from.
        #[arg(long, default_value_t = 4)]
        like_day_weeks: u32,
        /// Per-hour reconciliation: Wh by which Σ apartments may exceed the master in an hour before it is a
        /// `negative_common_interval` problem.
        #[arg(long, default_value_t = billing::run::DEFAULT_INTERVAL_TOLERANCE_WH)]
        interval_tolerance_wh: i64,
        /// Also reconcile every building hour by hour from `readings_hourly` (negative common parts become
        /// `negative_common_interval` problems). Off by default: it reads one rollup row per meter and hour of the
        /// month, ≈ 13 s per 20k households here, so at 205k it is an operator's pass of its own, not part of the
        /// 30-second bill run.
        #[arg(long)]
        interval_check: bool,
        /// Tariff file; default the shipped EPS household tariff.
        #[arg(long)]
        tariff: Option<PathBuf>,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Print a stored run: the latest version of the period unless --version.
    Show {
        /// The month, YYYY-MM.
        #[arg(long)]
        period: String,
        /// The run version of that period; default the latest.
        #[arg(long)]
        version: Option<i32>,
        /// Only this household (its code): its bill.
        #[arg(long, conflicts_with = "building")]
        household: Option<String>,
        /// Only this building (its code): its summary and bills.
        #[arg(long)]
        building: Option<String>,
        /// text, json or html (html needs --household or --building, or a run with one building).
        #[arg(long, default_value = "text")]
        format: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Tariff files.
    Tariff {
        #[command(subcommand)]
        command: TariffCommand,
    },
}

#[derive(Subcommand)]
enum TariffCommand {
    /// Validate a tariff file and print it; without FILE, the shipped EPS household tariff.
    Check { file: Option<PathBuf> },
}

fn load_tariff(file: Option<PathBuf>) -> anyhow::Result<billing::Tariff> {
    Ok(match file {
        Some(path) => {
            let src = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            billing::Tariff::from_toml(&src).with_context(|| format!("{}", path.display()))?
        }
        None => billing::Tariff::eps_household_2025().context("the shipped tariff")?,
    })
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.context("connecting to the database")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Show { period, version, household, building, format, database_url } => {
            let month = billing::run::BillingMonth::parse(&period)?;
            let format = billing::show::Format::parse(&format)?;
            let select = match (household, building) {
                (Some(h), _) => billing::show::Select::Household(h),
                (None, Some(b)) => billing::show::Select::Building(b),
                (None, None) => billing::show::Select::All,
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let client = connect(&database_url).await?;
                let stored = billing::db::load_run(&client, &month, version).await?;
                let codes: Vec<&str> = stored.buildings.iter().map(|b| b.summary.building_code.as_str()).collect();
                let addresses = billing::db::load_addresses(&client, &codes).await?;
                let text = billing::show::render(&stored, &addresses, &select, format)?;
                print!("{text}");
                anyhow::Ok(())
            })
        }
        Command::Tariff { command: TariffCommand::Check { file } } => {
            println!("{}", load_tariff(file)?);
            Ok(())
        }
        Command::Run {
            period,
            building,
            out,
            split,
            estimated_threshold,
            max_interpolation_minutes,
            like_day_weeks,
            interval_tolerance_wh,
            interval_check,
            tariff,
            database_url,
        } => {
            let vee = billing::vee::VeeConfig {
                max_interpolation_gap: chrono::Duration::minutes(max_interpolation_minutes.clamp(0, 24 * 60)),
                like_day_weeks: like_day_weeks.min(52),
                ..Default::default()
            };
            let opts = billing::model::RunOptions {
                month: billing::run::BillingMonth::parse(&period)?,
                building,
                rules: billing::run::Rules {
                    split: billing::run::parse_split_key(&split)?,
                    estimated_threshold,
                    vee,
                    interval_tolerance_wh: interval_tolerance_wh.max(0),
                    interval_check,
                },
            };
            let tariffs = billing::TariffSet::single(load_tariff(tariff)?);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let started = Instant::now();
                let (mut client, conn) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
                    .await
                    .context("connecting to the database")?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let outcome = billing::pipeline::run_with_exports(&mut client, &opts, &tariffs, out.as_deref()).await?;
                let exported = outcome.timings.export.unwrap_or_default();
                let bills: usize = outcome.buildings.iter().map(|b| b.bills.len()).sum();
                let problems: usize = outcome.buildings.iter().map(|b| b.problems.len()).sum();
                let estimated: usize = outcome.buildings.iter().map(|b| b.summary.estimated_bills).sum();
                println!(
                    "run {} (period {} version {}): {} buildings, {bills} bills ({estimated} estimated), \
                     {problems} data-quality problems, {:.2} s (read {:.2} s, compute {:.2} s, corrections + hourly check {:.2} s, \
                     store {:.2} s, export {:.2} s at the same time as the store)",
                    outcome.meta.run_id,
                    outcome.meta.period,
                    outcome.meta.version,
                    outcome.buildings.len(),
                    started.elapsed().as_secs_f64(),
                    outcome.timings.load.as_secs_f64(),
                    outcome.timings.compute.as_secs_f64(),
                    outcome.timings.checks.as_secs_f64(),
                    outcome.timings.store.as_secs_f64(),
                    exported.as_secs_f64(),
                );
                for p in outcome.buildings.iter().flat_map(|b| b.problems.iter()) {
                    println!(
                        "  problem {} building {} household {}: {}",
                        p.kind,
                        p.building_code,
                        p.household_code.as_deref().unwrap_or("-"),
                        p.detail
                    );
                }
                anyhow::Ok(())
            })
        }
    }
}
