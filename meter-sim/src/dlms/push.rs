//! `meter-sim dlms-push`: meters push their load profile to a head-end as DLMS DataNotifications.
//!
//! # Wire format
//! For each meter `i` (in parallel, at most `connections` at a time) the sender opens ONE TCP connection
//! to the head-end — from the meter's own [`crate::fleet::loopback_address`] when the head-end is on a
//! loopback address, so the source IP names the meter too — sends one notification per interval end
//! `ts` in the span `(from, to]` in ascending order, and closes. Each notification is a TCP wrapper PDU
//! (`0001 | source wPort 1 (the meter's management logical device) | destination wPort 16 | length`)
//! carrying the APDU:
//!
//! ```text
//! 0F                          data-notification
//! <long-invoke-id u32>        1, 2, 3 … per connection (high bits 0: not high priority, unconfirmed)
//! 0C <date-time 12 bytes>     = ts, local Europe/Belgrade with deviation −60/−120 and the DST bit
//! 02 04                       body: structure of 4, the capture objects of a push setup
//!   09 0B "SIM00000001"       0.0.96.1.0.255 class 1 attr 2: the serial, octet-string
//!   09 0C <date-time>         0.0.1.0.0.255 class 8 attr 2: the interval end ts (same as above)
//!   06 <u32>                  1.0.1.8.0.255 class 3 attr 2: import Wh at ts (scaler 0); 15 <u64> if ≥ 2^32
//!   06 <u32>                  1.0.2.8.0.255 class 3 attr 2: export Wh at ts (scaler 0); 15 <u64> if ≥ 2^32
//! ```
//!
//! With `--ciphered` the APDU is sent as general-glo-ciphering
//! (`DB 08 <meter system title> <len> 30 <IC u32> <ciphertext> <GCM tag 12>`), suite 0, authenticated and
//! encrypted with the meter's `ek`/`ak` (see [`super::keys`]); the invocation counter starts at 1 per
//! process run and meter. Values equal the model's, i.e. `meter-sim expect` for the same span.
//!
//! Fault injection (`--tamper RATE`, decided by [`Tamper::hits`] from `--fault-seed`, the meter and
//! the interval): a ciphered notification goes out with the last byte of its GMAC tag inverted, as an
//! altered or forged frame would; it still spends its invocation counter, and the next one is intact.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use dlms_cosem_rs::axdr::Data;
use dlms_cosem_rs::codec::{Decode, Encode, Reader};
use dlms_cosem_rs::security::{KeyRing, RustCryptoProvider, SecurityPolicy, SecuritySuite, SystemTitle};
use dlms_cosem_rs::server::PushSender;
use dlms_cosem_rs::transport::wrapper::Wpdu;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use super::keys::meter_keys;
use super::objects::cosem_datetime;
use crate::{fleet, hash, Model, Span};

const TAMPER: u64 = 0xD1_F006;

/// Which pushed notifications carry a wrong authentication tag.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tamper {
    /// Seed of the decisions.
    pub seed: u64,
    /// Probability that a ciphered notification is tampered with.
    pub rate: f64,
}

impl Tamper {
    /// Whether meter `index`'s notification for the interval ending at `ts` is tampered with.
    pub fn hits(&self, index: usize, ts: DateTime<Utc>) -> bool {
        hash::chance(hash::hash(&[self.seed, TAMPER, index as u64, ts.timestamp() as u64]), self.rate)
    }
}

/// Wrapper ports of a push.
pub const PUSH_SOURCE_WPORT: u16 = 1;
pub const PUSH_DESTINATION_WPORT: u16 = 16;

/// The plain body of meter `index`'s notification for the interval ending at `ts` (encoded A-XDR).
///
/// # Errors
/// When the model has no value for `ts`.
pub fn body(model: &Model, index: usize, ts: DateTime<Utc>) -> anyhow::Result<Vec<u8>> {
    let reg = model.registers_at(index, ts)?;
    let serial = fleet::serial(index);
    let mut b = vec![0x02, 0x04, 0x09, serial.len() as u8];
    b.extend_from_slice(serial.as_bytes());
    b.extend_from_slice(&[0x09, 0x0C]);
    b.extend_from_slice(&cosem_datetime(ts));
    for v in [reg.import_total(), reg.export] {
        let v = u64::try_from(v).unwrap_or(0);
        match u32::try_from(v) {
            Ok(v) => {
                b.push(0x06);
                b.extend_from_slice(&v.to_be_bytes());
            }
            Err(_) => {
                b.push(0x15);
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    Ok(b)
}

/// A push sender for one meter.
pub type Sender = PushSender<RustCryptoProvider, 512>;

/// The sender of meter `index` (plain or ciphered with its keys).
pub fn sender(seed: u64, index: usize, ciphered: bool) -> Sender {
    let k = meter_keys(seed, index);
    let policy =
        if ciphered { SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0) } else { SecurityPolicy::NONE };
    PushSender::new(RustCryptoProvider::new(KeyRing::new(k.ek, k.ak)), SystemTitle::new(k.system_title), policy, 0)
}

/// The wrapper PDU of meter `index`'s notification for `ts`.
///
/// # Errors
/// Model or encoding errors.
pub fn notification(model: &Model, sender: &mut Sender, index: usize, ts: DateTime<Utc>) -> anyhow::Result<Vec<u8>> {
    let body = body(model, index, ts)?;
    let data = Data::decode(&mut Reader::new(&body)).map_err(|e| anyhow::anyhow!("body: {e:?}"))?;
    let at = dlms_cosem_rs::axdr::DateTime::from_bytes(cosem_datetime(ts));
    let mut apdu = [0u8; 512];
    let n = sender.notify(Some(at), &data, &mut apdu).map_err(|e| anyhow::anyhow!("notify: {e:?}"))?;
    let mut out = Vec::with_capacity(n + 8);
    Wpdu::new(PUSH_SOURCE_WPORT, PUSH_DESTINATION_WPORT, &apdu[..n])
        .and_then(|w| w.encode(&mut out))
        .map_err(|e| anyhow::anyhow!("wrapper: {e:?}"))?;
    Ok(out)
}

/// What was pushed.
#[derive(Debug, Clone, Serialize)]
pub struct PushSummary {
    pub meters: usize,
    pub intervals: u64,
    pub notifications: u64,
    /// Notifications sent with a wrong tag (counted in `notifications` too).
    pub tampered: u64,
    pub failed_meters: usize,
    pub elapsed_s: f64,
}

/// Pushes `(span]` of meters `0..meters` to `target`, `connections` meters at a time.
///
/// # Errors
/// Only for setup errors; a meter whose connection fails is counted in `failed_meters`.
pub async fn push(
    seed: u64,
    meters: usize,
    span: Span,
    target: SocketAddr,
    ciphered: bool,
    connections: usize,
    tamper: Tamper,
) -> anyhow::Result<PushSummary> {
    let started = std::time::Instant::now();
    let model = Arc::new(Model::with_meters(seed, meters));
    let sem = Arc::new(tokio::sync::Semaphore::new(connections.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..meters {
        let permit = sem.clone().acquire_owned().await.context("semaphore")?;
        let model = model.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let r = push_meter(&model, seed, index, span, target, ciphered, tamper).await;
            if let Err(e) = &r {
                tracing::warn!(meter = index, error = %e, "push failed");
            }
            r.unwrap_or((0, 0))
        });
    }
    let mut notifications = 0u64;
    let mut tampered = 0u64;
    let mut failed = 0usize;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((n, t)) => {
                notifications += n;
                tampered += t;
                if n != span.len() {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    Ok(PushSummary {
        meters,
        intervals: span.len(),
        notifications,
        tampered,
        failed_meters: failed,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

async fn push_meter(
    model: &Model,
    seed: u64,
    index: usize,
    span: Span,
    target: SocketAddr,
    ciphered: bool,
    tamper: Tamper,
) -> anyhow::Result<(u64, u64)> {
    let socket = TcpSocket::new_v4()?;
    if let IpAddr::V4(t) = target.ip() {
        if t.is_loopback() {
            socket.bind(SocketAddr::new(IpAddr::V4(fleet::loopback_address(index)), 0))?;
        }
    }
    let mut stream = socket.connect(target).await.with_context(|| format!("connecting to {target}"))?;
    let mut sender = sender(seed, index, ciphered);
    let mut sent = 0u64;
    let mut tampered = 0u64;
    let mut buf = Vec::new();
    for ts in span.ends() {
        let mut pdu = notification(model, &mut sender, index, ts)?;
        if ciphered && tamper.hits(index, ts) {
            // The wrapper PDU ends with the APDU, which ends with the 12-byte tag.
            if let Some(b) = pdu.last_mut() {
                *b = !*b;
            }
            tampered += 1;
        }
        buf.extend(pdu);
        sent += 1;
        if buf.len() > 16 * 1024 {
            stream.write_all(&buf).await?;
            buf.clear();
        }
    }
    stream.write_all(&buf).await?;
    stream.shutdown().await?;
    Ok((sent, tampered))
}
