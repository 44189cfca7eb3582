//! Data contracts shared by every crate of the head-end.
//!
//! - [`obis`]: OBIS codes (IEC 62056-6-1) as used for channel identity.
//! - [`reading`]: the stored reading row, its quality flags and source.
//! - [`payload`]: the MQTT reading payload (JSON, described by `mqtt/reading.schema.json`).
//! - [`inventory`]: the inventory CSV contract shared by `headend inventory import` and `meter-sim inventory`.
//! - [`migrations`]: the numbered SQL migrations, embedded.
//! - [`channel`]: the channel catalogue the migrations seed.
//! - [`mqtt_auth`]: per-meter MQTT credentials, broker URLs and their TLS trust.
//! - [`redact`]: passwords masked in URLs before they are logged or printed.

pub mod channel;
pub mod inventory;
pub mod migrations;
pub mod modbus_map;
pub mod mqtt_auth;
pub mod obis;
pub mod payload;
pub mod reading;
pub mod redact;

pub use channel::{ChannelDef, ChannelKind, CHANNELS};
pub use obis::ObisCode;
pub use payload::{PayloadError, ReadingPayload};
pub use reading::{MeterSerial, Quality, Reading, Source};
pub use redact::redact_url;
