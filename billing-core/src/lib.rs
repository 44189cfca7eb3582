//! Per-household electricity bills from interval data (issue 4): the pure core — no database, no I/O, no
//! async runtime. The `billing` crate (the edge: database, exports, HTML, the `billing` binary) re-exports it.
//!
//! | module | what |
//! |---|---|
//! | [`tariff`] | the native TOML tariff format (documented there), validation with field + line errors, [`tariff::TariffSet`] of successive tariffs; the shipped EPS household tariff from 2025-10-01 ([`tariff::EPS_HOUSEHOLD_2025`]) |
//! | [`period`] | a billing period of whole days and its "months" for the monthly charges |
//! | [`interval`] | VT/NT classification of a 15-minute interval by its local start (Europe/Belgrade, DST included), exact VT/NT sums of `(ts, Wh)` |
//! | [`bill`] | a household's bill for a period: every line in BILLING.md order, tariff changes inside the period |
//! | [`allocation`] | building reconciliation (master − Σ apartments = common + losses, negative → exception) and split keys with exact allocation in Wh and para |
//! | [`old_split`] | the 1/N bill (master ÷ N billed like the household) and the difference in RSD and % |
//! | [`money`] | the rounding rule, in one place |
//! | [`vee`] | validation, estimation, editing of cumulative registers: gaps, decreasing registers, spikes, zero runs; interpolation and like-day estimates with quality flags |
//! | [`run`] | a month's run for buildings from the register readings at the period boundaries (Europe/Belgrade month, VEE at the boundaries, meter exchange, reconciliation, common-area split, 1/N) |
//!
//! # Rounding (stated once, implemented in [`money`])
//!
//! Money is `rust_decimal::Decimal`, rounded half away from zero to the para (0.01 RSD). **The chain is
//! computed unrounded and the total is rounded once**; every printed line is its exact amount rounded to the
//! para; a final `rounding` line (± para) makes the printed lines add up to the total. Excise and VAT are on
//! the exact sums above them. Energy lines: the energy subtotal is the exact energy amount rounded once and the
//! energy lines are apportioned to it by largest remainder. Energy is whole Wh; derived kWh (scaled zone
//! limits, VT/NT per zone, a split between tariffs) are rounded to the Wh. Allocations use largest remainder on
//! Wh and para so that they add up exactly.
//!
//! **Why**: it is the only convention that reproduces every figure of BILLING.md's worked example — energy
//! 2,235.16, power 672.28, supplier 160.67, renewables 240.30, efficiency 4.50, excise 248.47, VAT 712.28, TV
//! 349.00 **and** total 4,622.65 (the exact chain 4,622.6526 rounded once), while those printed lines add up
//! to 4,622.66: the invoice therefore carries a rounding line of −0.01. Rounding every line and summing them
//! (this crate's earlier rule) gives 4,622.66, which contradicts the stated total. See the tests
//! `worked_example_of_billing_md` and `worked_example_every_printed_figure`.
//!
//! # Inferred rules (not stated by a source; keep them configurable or confirm them)
//!
//! - VT/NT share of a zone: pro rata by the period's VT share ([`bill`]); the single-rate red price 3 × green
//!   (in the tariff file).
//! - Zone limits scaled by days/30 are rounded to the Wh.
//! - Monthly charges (power, supplier, TV fee) count "months" as Σ over calendar months of days covered / days
//!   in that month (a whole calendar month = 1).
//! - A tariff change inside a period splits the kWh pro rata by days; each part is billed under its tariff.
//! - The payment discount given on a bill uses that bill's base.
//! - The 1/N benchmark divides the master meter (common areas included) by N ([`old_split`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod allocation;
pub mod bill;
pub mod interval;
pub mod money;
pub mod old_split;
pub mod period;
pub mod run;
pub mod tariff;
pub mod vee;

pub use bill::{compute_bill, Bill, BillError, BillInput, Consumption};
pub use period::Period;
pub use tariff::{Tariff, TariffError, TariffSet};
