//! Numbered SQL migrations, embedded in every binary that needs them.
//!
//! A migration is common SQL, or a pair of variants: one for databases with TimescaleDB and one for
//! plain PostgreSQL (native partitioning and rollup tables). The migrator (`headend::db::migrate`)
//! chooses the storage path once, records it, and applies each pending migration in its own
//! transaction.

/// The storage path a database was migrated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    Timescale,
    Plain,
}

impl Storage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Storage::Timescale => "timescale",
            Storage::Plain => "plain",
        }
    }

    pub fn parse(s: &str) -> Option<Storage> {
        match s {
            "timescale" => Some(Storage::Timescale),
            "plain" => Some(Storage::Plain),
            _ => None,
        }
    }
}

/// The SQL of one migration.
#[derive(Debug, Clone, Copy)]
pub enum Sql {
    Common(&'static str),
    PerStorage { timescale: &'static str, plain: &'static str },
}

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: Sql,
}

impl Migration {
    /// The SQL to run on a database with the given storage path.
    pub const fn sql_for(&self, storage: Storage) -> &'static str {
        match (self.sql, storage) {
            (Sql::Common(s), _) => s,
            (Sql::PerStorage { timescale, .. }, Storage::Timescale) => timescale,
            (Sql::PerStorage { plain, .. }, Storage::Plain) => plain,
        }
    }
}

/// All migrations, in order. Append only: never edit one that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "inventory", sql: Sql::Common(include_str!("../migrations/0001_inventory.sql")) },
    Migration {
        version: 2,
        name: "readings",
        sql: Sql::PerStorage {
            timescale: include_str!("../migrations/0002_readings.timescale.sql"),
            plain: include_str!("../migrations/0002_readings.plain.sql"),
        },
    },
    Migration {
        version: 3,
        name: "events_dead_letters_ledger",
        sql: Sql::Common(include_str!("../migrations/0003_events_dead_letters_ledger.sql")),
    },
    Migration { version: 4, name: "billing", sql: Sql::Common(include_str!("../migrations/0004_billing.sql")) },
    Migration {
        version: 5,
        name: "partition_race",
        sql: Sql::PerStorage {
            timescale: include_str!("../migrations/0005_partition_race.timescale.sql"),
            plain: include_str!("../migrations/0005_partition_race.plain.sql"),
        },
    },
    Migration { version: 6, name: "collection", sql: Sql::Common(include_str!("../migrations/0006_collection.sql")) },
    Migration { version: 7, name: "accounts", sql: Sql::Common(include_str!("../migrations/0007_accounts.sql")) },
    Migration {
        version: 8,
        name: "ops",
        sql: Sql::PerStorage {
            timescale: include_str!("../migrations/0008_ops.timescale.sql"),
            plain: include_str!("../migrations/0008_ops.plain.sql"),
        },
    },
    Migration { version: 9, name: "poll_leases", sql: Sql::Common(include_str!("../migrations/0009_poll_leases.sql")) },
    Migration {
        version: 10,
        name: "dead_letter_keys",
        sql: Sql::Common(include_str!("../migrations/0010_dead_letter_keys.sql")),
    },
    Migration {
        version: 11,
        name: "push_counters",
        sql: Sql::Common(include_str!("../migrations/0011_push_counters.sql")),
    },
    Migration {
        version: 12,
        name: "rollup_window",
        sql: Sql::PerStorage {
            timescale: include_str!("../migrations/0012_rollup_window.timescale.sql"),
            plain: include_str!("../migrations/0012_rollup_window.plain.sql"),
        },
    },
    Migration {
        version: 13,
        name: "topic_not_authorised",
        sql: Sql::Common(include_str!("../migrations/0013_topic_not_authorised.sql")),
    },
    Migration {
        version: 14,
        name: "retry_polling",
        sql: Sql::Common(include_str!("../migrations/0014_retry_polling.sql")),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_ordered() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i).expect("small") + 1, "{}", m.name);
        }
    }

    #[test]
    fn timescale_statements_stay_in_timescale_variants() {
        for m in MIGRATIONS {
            let plain: String = m
                .sql_for(Storage::Plain)
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_lowercase();
            for word in ["timescaledb", "create_hypertable", "time_bucket", "add_continuous_aggregate_policy"] {
                assert!(!plain.contains(word), "migration {} plain path mentions {word}", m.name);
            }
        }
    }
}
