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
pub struct PushListener {
    inner: NotificationListener<RustCryptoProvider<()>, Lookup>,
}

impl std::fmt::Debug for PushListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushListener(keys redacted)")
    }
}

impl PushListener {
    /// `require_ciphered`: refuse plain notifications (only authenticated-and-encrypted ones from
    /// meters with known keys are accepted). Otherwise plain ones are accepted as they are, and
    /// ciphered ones still need their meter's keys.
    #[must_use]
    pub fn new(require_ciphered: bool) -> Self {
        let policy = if require_ciphered {
            SecurityPolicy::authenticated_encrypted(SecuritySuite::Suite0)
        } else {
            SecurityPolicy::NONE
        };
        Self {
            inner: NotificationListener::new(RustCryptoProvider::new(KeyRing::default()), Lookup::default(), policy),
        }
    }

    /// Adds (or replaces) a meter's keys; `highest` is the last counter accepted from it (persisted),
    /// so a restarted listener still refuses everything up to it.
    pub fn add_meter(&mut self, system_title: [u8; 8], ek: [u8; 16], ak: [u8; 16], highest: Option<u32>) {
        let replay = match highest {
            Some(h) => ReplayWindow::resumed(h, 0),
            None => ReplayWindow::strict(),
        };
        self.inner.lookup_mut().meters.insert(system_title, Meter { keys: KeyRing::new(ek, ak), replay });
    }

    /// The highest counter accepted from a meter so far (to persist).
    #[must_use]
    pub fn highest(&mut self, system_title: &[u8; 8]) -> Option<u32> {
        self.inner.lookup_mut().meters.get(system_title).and_then(|m| m.replay.highest())
    }

    /// Decodes one notification APDU (the wrapper's payload).
    ///
    /// # Errors
    /// [`crate::Error::AuthenticationRejected`] for a tag that does not verify or a replayed counter,
    /// [`crate::Error::Protocol`] for anything malformed or a sender without keys. Never panics.
    pub fn handle(&mut self, apdu: &[u8]) -> Result<Notification> {
        let mut buf = vec![0u8; apdu.len() + 64];
        let n = self.inner.handle(apdu, &mut buf)?;
        Ok(Notification {
            system_title: n.system_title.map(|t| *t.as_bytes()),
            invocation_counter: n.invocation_counter,
            captured_at: n.captured_at.map(|d| CosemDateTime::from_bytes(d.to_bytes())),
            body: Value::from_data(&n.body)?,
        })
    }
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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut l = PushListener::new(false);
        for bad in [&b""[..], &[0x0F][..], &[0xDB, 0x08, 1, 2][..], &[0xDB, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0x81][..]] {
            assert!(l.handle(bad).is_err(), "{bad:02x?}");
        }
    }
}
