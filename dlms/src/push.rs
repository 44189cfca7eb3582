//! Pushed DataNotifications: decoded, deciphered with the sending meter's keys, and checked against
//! replay (a counter already accepted from a meter is refused, so a recorded push cannot be stored
//! twice or forged from an old frame).
//!
//! The engine's `NotificationListener` does the work; this module keeps it behind the project's
//! types: keys go in by system title, values come out as [`Value`].

use std::collections::HashMap;

use dlms_cosem_rs::client::{NotificationListener, PushKeyLookup};
use dlms_cosem_rs::security::{KeyRing, ReplayWindow, RustCryptoProvider, SecurityPolicy, SecuritySuite, SystemTitle};

use crate::error::Result;
use crate::value::{CosemDateTime, Value};

/// One decoded notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The sender, when the frame names it (general-glo-ciphering does).
    pub system_title: Option<[u8; 8]>,
    /// The counter it was ciphered under.
    pub invocation_counter: Option<u32>,
    /// The capture time the meter put in the notification, if any.
    pub captured_at: Option<CosemDateTime>,
    /// The pushed values (for a push setup with several objects, a structure).
    pub body: Value,
}

struct Meter {
    keys: KeyRing,
    replay: ReplayWindow,
}

#[derive(Default)]
struct Lookup {
    meters: HashMap<[u8; 8], Meter>,
}

impl PushKeyLookup for Lookup {
    fn keys_for(&self, system_title: &SystemTitle) -> Option<&KeyRing> {
        self.meters.get(system_title.as_bytes()).map(|m| &m.keys)
    }

    fn replay_window(&mut self, system_title: &SystemTitle) -> Option<&mut ReplayWindow> {
        self.meters.get_mut(system_title.as_bytes()).map(|m| &mut m.replay)
    }
}

/// Decodes pushes from many meters. Keys and counters live here only (never logged).
///
/// Two engine listeners: one that demands authenticated **and** encrypted protection and holds the
/// meters' keys, and, when plain pushes are allowed, one without keys for unprotected
/// DataNotifications only. Every ciphered frame goes to the first, so allowing plain pushes never
/// lowers what a ciphered frame must prove: an encrypted frame without a tag (security control
/// `0x20`), whose ciphertext anyone can flip, is refused whatever the configuration.
pub struct PushListener {
    ciphered: NotificationListener<RustCryptoProvider<()>, Lookup>,
    plain: Option<NotificationListener<RustCryptoProvider<()>, Lookup>>,
}

/// The APDU tag of an unprotected DataNotification.
const DATA_NOTIFICATION: u8 = 0x0F;

impl std::fmt::Debug for PushListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushListener(keys redacted)")
    }
}

impl PushListener {
    /// `require_ciphered`: refuse plain notifications (only authenticated-and-encrypted ones from
    /// meters with known keys are accepted). Otherwise plain ones are accepted as they are; ciphered
    /// ones still need their meter's keys and both authentication and encryption.
    #[must_use]
    pub fn new(require_ciphered: bool) -> Self {
        let listener =
            |policy| NotificationListener::new(RustCryptoProvider::new(KeyRing::default()), Lookup::default(), policy);
        Self {
            ciphered: listener(SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0)),
            plain: (!require_ciphered).then(|| listener(SecurityPolicy::NONE)),
        }
    }

    /// Adds (or replaces) a meter's keys; `highest` is the last counter accepted from it (persisted),
    /// so a restarted listener still refuses everything up to it.
    pub fn add_meter(&mut self, system_title: [u8; 8], ek: [u8; 16], ak: [u8; 16], highest: Option<u32>) {
        let replay = match highest {
            Some(h) => ReplayWindow::resumed(h, 0),
            None => ReplayWindow::strict(),
        };
        self.ciphered.lookup_mut().meters.insert(system_title, Meter { keys: KeyRing::new(ek, ak), replay });
    }

    /// The highest counter accepted from a meter so far (to persist).
    #[must_use]
    pub fn highest(&mut self, system_title: &[u8; 8]) -> Option<u32> {
        self.ciphered.lookup_mut().meters.get(system_title).and_then(|m| m.replay.highest())
    }

    /// Decodes one notification APDU (the wrapper's payload).
    ///
    /// # Errors
    /// [`crate::Error::AuthenticationRejected`] for a tag that does not verify or a replayed counter,
    /// [`crate::Error::Protocol`] for anything malformed or a sender without keys. Never panics.
    pub fn handle(&mut self, apdu: &[u8]) -> Result<Notification> {
        let mut buf = vec![0u8; apdu.len() + 64];
        if let Some(sc) = security_control(apdu) {
            if sc & 0x30 != 0x30 {
                return Err(crate::Error::AuthenticationRejected {
                    reason: format!(
                        "ciphered notification not both authenticated and encrypted (security control {sc:#04x})"
                    ),
                    expected_invocation_counter: None,
                });
            }
        }
        let listener = match (apdu.first(), self.plain.as_mut()) {
            (Some(&DATA_NOTIFICATION), Some(plain)) => plain,
            _ => &mut self.ciphered,
        };
        let n = listener.handle(apdu, &mut buf)?;
        Ok(Notification {
            system_title: n.system_title.map(|t| *t.as_bytes()),
            invocation_counter: n.invocation_counter,
            captured_at: n.captured_at.map(|d| CosemDateTime::from_bytes(d.to_bytes())),
            body: Value::from_data(&n.body)?,
        })
    }
}

/// The security control byte of a `general-glo-ciphering` / `general-ded-ciphering` APDU
/// (`DB|DC, 08, system title, length, SC, …`), or `None` for any other or truncated APDU.
fn security_control(apdu: &[u8]) -> Option<u8> {
    let (&tag, rest) = apdu.split_first()?;
    if tag != 0xDB && tag != 0xDC {
        return None;
    }
    let (&title_len, rest) = rest.split_first()?;
    let rest = rest.get(usize::from(title_len)..)?;
    // The content length in BER: one byte below 0x80, else 0x8n and n bytes.
    let (&len, rest) = rest.split_first()?;
    let skip = if len & 0x80 == 0 { 0 } else { usize::from(len & 0x7F) };
    rest.get(skip).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "0FC00000010C07E80102FF03040500FFC400020209060100010800FF060001E240";

    #[test]
    fn a_plain_notification_decodes_unless_ciphering_is_required() {
        let apdu = hex::decode(PLAIN).expect("hex");
        let n = PushListener::new(false).handle(&apdu).expect("plain accepted");
        assert_eq!(n.invocation_counter, None);
        let t = n.captured_at.expect("date-time");
        assert_eq!((t.year, t.month, t.day, t.hour, t.deviation), (2024, 1, 2, 3, -60));
        let body = n.body.as_slice().expect("structure");
        assert_eq!(body[1].as_i64(), Some(123_456));
        assert!(PushListener::new(true).handle(&apdu).is_err(), "plain refused when ciphering is required");
    }

    const TITLE: [u8; 8] = *b"SIM\x00\x00\x00\x00\x07";
    const EK: [u8; 16] = [0x11; 16];
    const AK: [u8; 16] = [0x22; 16];

    /// A notification from the meter `TITLE`, protected by `policy`, sent under counter `after + 1`.
    fn frame(policy: SecurityPolicy, after: u32) -> Vec<u8> {
        use dlms_cosem_rs::axdr::Data;
        use dlms_cosem_rs::server::PushSender;
        let mut sender: PushSender<RustCryptoProvider, 256> =
            PushSender::new(RustCryptoProvider::new(KeyRing::new(EK, AK)), SystemTitle::new(TITLE), policy, after);
        let mut out = [0u8; 256];
        let n = sender.notify(None, &Data::DoubleLongUnsigned(123_456), &mut out).expect("notify");
        out[..n].to_vec()
    }

    fn listener(require_ciphered: bool, highest: Option<u32>) -> PushListener {
        let mut l = PushListener::new(require_ciphered);
        l.add_meter(TITLE, EK, AK, highest);
        l
    }

    fn rejected(r: Result<Notification>) -> bool {
        matches!(r, Err(crate::Error::AuthenticationRejected { .. }))
    }

    #[test]
    fn an_authenticated_encrypted_push_opens_with_its_meters_keys_whatever_plain_pushes_may_do() {
        for require_ciphered in [true, false] {
            let mut l = listener(require_ciphered, None);
            let n = l.handle(&frame(SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0), 0)).expect("ok");
            assert_eq!((n.system_title, n.invocation_counter), (Some(TITLE), Some(1)));
            assert_eq!(n.body.as_i64(), Some(123_456));
            assert_eq!(l.highest(&TITLE), Some(1));
        }
    }

    #[test]
    fn an_encrypted_push_without_a_tag_is_refused_even_where_plain_pushes_are_allowed() {
        let encrypted_only =
            SecurityPolicy { authenticated: false, ..SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0) };
        let apdu = frame(encrypted_only, 0);
        assert_eq!(security_control(&apdu), Some(0x20), "{apdu:02x?}");
        for require_ciphered in [true, false] {
            let mut l = listener(require_ciphered, None);
            assert!(rejected(l.handle(&apdu)), "require_ciphered = {require_ciphered}");
            assert_eq!(l.highest(&TITLE), None, "a refused frame spends no counter");
        }
    }

    #[test]
    fn a_tampered_tag_is_refused_and_spends_no_counter() {
        let good = frame(SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0), 0);
        for at in [good.len() - 1, good.len() - 12, good.len() - 13] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            let mut l = listener(false, None);
            assert!(rejected(l.handle(&bad)), "byte {at} flipped");
            assert_eq!(l.highest(&TITLE), None);
            // The meter's real frame under the same counter still goes through.
            assert!(l.handle(&good).is_ok(), "byte {at}: the genuine frame after a forgery");
        }
    }

    #[test]
    fn a_resumed_listener_refuses_every_counter_up_to_the_persisted_one() {
        let policy = SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0);
        let mut l = listener(true, Some(5));
        for after in 0..5 {
            assert!(rejected(l.handle(&frame(policy, after))), "counter {}", after + 1);
        }
        assert_eq!(l.handle(&frame(policy, 5)).expect("counter 6").invocation_counter, Some(6));
        assert!(rejected(l.handle(&frame(policy, 5))), "counter 6 again");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut l = PushListener::new(false);
        for bad in [&b""[..], &[0x0F][..], &[0xDB, 0x08, 1, 2][..], &[0xDB, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0x81][..]] {
            assert!(l.handle(bad).is_err(), "{bad:02x?}");
        }
    }
}
