//! `billing` — for now only `billing tariff check FILE`.

use std::path::PathBuf;

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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Tariff { command: TariffCommand::Check { file } } => {
            let tariff = match file {
                Some(path) => {
                    let src = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    billing::Tariff::from_toml(&src).with_context(|| format!("{}", path.display()))?
                }
                None => billing::Tariff::eps_household_2025().context("the shipped tariff")?,
            };
            println!("{tariff}");
            Ok(())
        }
    }
}
