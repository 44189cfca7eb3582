//! Deterministic fault injection for the DLMS server.
//!
//! Every decision is a hash of `(fault seed, meter index, …)`, so a test can predict it with
//! [`FaultRates::session_fault`], [`FaultRates::wrong_keys`], [`FaultRates::wrong_password`] and
//! [`FaultRates::drift_secs`].
//!
//! Per SESSION (the `k`-th accepted connection to meter `i` in this process, `k` from 0), at most one of:
//! * **refuse** — the connection is accepted and closed at once, nothing is read or sent: the session
//!   yields no data;
//! * **no-answer** — accepted, everything received is discarded, nothing is ever sent (until the client
//!   closes): no data;
//! * **drop** — the first `n` requests (APDUs) are answered normally (n = 1..=4 from the hash); on the
//!   `(n+1)`-th the connection is closed without an answer: everything asked from the `(n+1)`-th request
//!   on is lost (in HDLC mode SNRM/DISC/RR frames do not count, I-frame APDUs do);
//! * **corrupt** — the `n`-th reply (n = 1..=4) goes out with its APDU's first byte (the tag) inverted, so
//!   it is undecodable — never a plausible wrong value (in HDLC mode the frame is built normally and one
//!   byte of its information field is inverted, so its FCS fails): the data of that reply is lost and the
//!   session goes on;
//! * **tamper** — the `n`-th ciphered GET reply (glo- or ded-get-response; n = 1 or 2 from the hash, so
//!   the register list or the first load-profile block of a head-end's session) goes out with the last
//!   byte of its GMAC tag inverted: it decodes as a well-formed ciphered APDU whose authentication
//!   fails, as a forged or altered reply would. Association replies and plain sessions are untouched.
//!
//! Independently per session, **latency** (probability `latency_rate`): every reply of the session is
//! delayed by the same duration, uniform in `latency` (deterministic). No data is lost unless the client
//! times out.
//!
//! Per METER (persistent for the process, independent of sessions):
//! * **wrong keys** — the meter uses keys different from `meter-sim keys` (each byte of ek and ak
//!   inverted): HLS-GMAC associations (and so all ciphered reads) fail; public and LLS reads work.
//! * **wrong password** — the meter's LLS password differs from `meter-sim keys` (its last
//!   character changed): LLS associations are refused with `authentication-failure`; public and
//!   HLS reads work.
//! * **clock drift** — the meter's clock is off by ±1..=15 minutes (never 0): the clock attribute shows it
//!   and the load profile ends at the last interval completed by the drifted clock, but values are still
//!   the model's for each row's timestamp. A clock SET removes the drift.
//!
//! The decision hash is `hash(seed, TAG, index, session)` with one uniform draw `u` in [0, 1) split
//! into consecutive ranges `[0, refuse)`, `[refuse, +no_answer)`, `[…, +drop)`, `[…, +corrupt)`,
//! `[…, +tamper)`.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::hash;

const SESSION: u64 = 0xD1_F001;
const LATENCY: u64 = 0xD1_F002;
const WRONG_KEYS: u64 = 0xD1_F003;
const DRIFT: u64 = 0xD1_F004;
const DRIFT_AMOUNT: u64 = 0xD1_F005;
const WRONG_PASSWORD: u64 = 0xD1_F007;

/// Fault rates (each in [0, 1]).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRates {
    /// Seed of the decisions.
    pub seed: u64,
    pub refuse: f64,
    pub no_answer: f64,
    pub drop: f64,
    pub corrupt: f64,
    /// Probability that a session's ciphered GET reply carries a wrong authentication tag.
    pub tamper: f64,
    /// Probability that a session is slow.
    pub latency_rate: f64,
    /// Range of the delay of a slow session's replies, in milliseconds.
    pub latency_ms: RangeInclusive<u64>,
    pub wrong_keys: f64,
    pub wrong_password: f64,
    pub clock_drift: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            seed: 0,
            refuse: 0.0,
            no_answer: 0.0,
            drop: 0.0,
            corrupt: 0.0,
            tamper: 0.0,
            latency_rate: 0.0,
            latency_ms: 500..=5000,
            wrong_keys: 0.0,
            wrong_password: 0.0,
            clock_drift: 0.0,
        }
    }
}

/// What happens to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFault {
    None,
    Refuse,
    NoAnswer,
    /// Close on request `after + 1` (the first `after` are answered).
    Drop {
        after: u32,
    },
    /// Invert the tag of reply number `reply` (1-based).
    Corrupt {
        reply: u32,
    },
    /// Invert the last tag byte of ciphered GET reply number `reply` (1-based, 1 or 2).
    Tamper {
        reply: u32,
    },
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl FaultRates {
    /// The fault of session `session` (0-based) of meter `index`.
    pub fn session_fault(&self, index: usize, session: u32) -> SessionFault {
        let h = hash::hash(&[self.seed, SESSION, index as u64, u64::from(session)]);
        let u = unit(h);
        let n = (hash::mix(h) % 4) as u32 + 1;
        let mut edge = self.refuse;
        if u < edge {
            return SessionFault::Refuse;
        }
        edge += self.no_answer;
        if u < edge {
            return SessionFault::NoAnswer;
        }
        edge += self.drop;
        if u < edge {
            return SessionFault::Drop { after: n };
        }
        edge += self.corrupt;
        if u < edge {
            return SessionFault::Corrupt { reply: n };
        }
        edge += self.tamper;
        if u < edge {
            return SessionFault::Tamper { reply: (n - 1) % 2 + 1 };
        }
        SessionFault::None
    }

    /// The reply delay of session `session` of meter `index` (zero for a fast session).
    pub fn latency(&self, index: usize, session: u32) -> Duration {
        let h = hash::hash(&[self.seed, LATENCY, index as u64, u64::from(session)]);
        if !hash::chance(h, self.latency_rate) {
            return Duration::ZERO;
        }
        Duration::from_millis(hash::range(hash::mix(h), *self.latency_ms.start(), *self.latency_ms.end()))
    }

    /// Whether meter `index` has wrong keys.
    pub fn wrong_keys(&self, index: usize) -> bool {
        hash::chance(hash::hash(&[self.seed, WRONG_KEYS, index as u64]), self.wrong_keys)
    }

    /// Whether meter `index` has a wrong LLS password.
    pub fn wrong_password(&self, index: usize) -> bool {
        hash::chance(hash::hash(&[self.seed, WRONG_PASSWORD, index as u64]), self.wrong_password)
    }

    /// Meter `index`'s clock drift in seconds (0 = none; otherwise ±60..=900, whole minutes).
    pub fn drift_secs(&self, index: usize) -> i64 {
        if !hash::chance(hash::hash(&[self.seed, DRIFT, index as u64]), self.clock_drift) {
            return 0;
        }
        let h = hash::hash(&[self.seed, DRIFT_AMOUNT, index as u64]);
        let minutes = (h % 15) as i64 + 1;
        if (h >> 32) & 1 == 1 {
            minutes * 60
        } else {
            -minutes * 60
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_roughly_honoured_and_exclusive() {
        let f = FaultRates {
            seed: 3,
            refuse: 0.1,
            no_answer: 0.1,
            drop: 0.1,
            corrupt: 0.1,
            tamper: 0.1,
            ..Default::default()
        };
        let mut counts = [0u32; 6];
        for i in 0..20_000 {
            let k = match f.session_fault(i, 0) {
                SessionFault::None => 0,
                SessionFault::Refuse => 1,
                SessionFault::NoAnswer => 2,
                SessionFault::Drop { after } => {
                    assert!((1..=4).contains(&after));
                    3
                }
                SessionFault::Corrupt { reply } => {
                    assert!((1..=4).contains(&reply));
                    4
                }
                SessionFault::Tamper { reply } => {
                    assert!((1..=2).contains(&reply));
                    5
                }
            };
            counts[k] += 1;
        }
        for c in &counts[1..] {
            assert!((1700..2300).contains(c), "{counts:?}");
        }
        assert_eq!(FaultRates::default().session_fault(1, 1), SessionFault::None);
        let d = FaultRates { clock_drift: 1.0, ..Default::default() };
        for i in 0..100 {
            let s = d.drift_secs(i);
            assert!(s != 0 && s.abs() <= 900 && s % 60 == 0);
        }
    }
}
