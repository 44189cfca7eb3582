//! Error types of the DLMS layer.

use std::fmt;

/// A COSEM data-access-result other than success, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataAccessError {
    /// 1 hardware-fault.
    HardwareFault,
    /// 2 temporary-failure.
    TemporaryFailure,
    /// 3 read-write-denied.
    ReadWriteDenied,
    /// 4 object-undefined.
    ObjectUndefined,
    /// 9 object-class-inconsistent.
    ObjectClassInconsistent,
    /// 11 object-unavailable.
    ObjectUnavailable,
    /// 12 type-unmatched.
    TypeUnmatched,
    /// 13 scope-of-access-violated.
    ScopeOfAccessViolated,
    /// 14 data-block-unavailable.
    DataBlockUnavailable,
    /// 15 long-get-aborted (long-action-aborted for ACTION).
    LongGetAborted,
    /// 16 no-long-get-in-progress.
    NoLongGetInProgress,
    /// 17 long-set-aborted.
    LongSetAborted,
    /// 18 no-long-set-in-progress.
    NoLongSetInProgress,
    /// 19 data-block-number-invalid.
    DataBlockNumberInvalid,
    /// 250 other-reason.
    OtherReason,
    /// Any other code.
    Other(u8),
}

impl DataAccessError {
    /// From the wire code. `None` for 0 (success).
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::HardwareFault,
            2 => Self::TemporaryFailure,
            3 => Self::ReadWriteDenied,
            4 => Self::ObjectUndefined,
            9 => Self::ObjectClassInconsistent,
            11 => Self::ObjectUnavailable,
            12 => Self::TypeUnmatched,
            13 => Self::ScopeOfAccessViolated,
            14 => Self::DataBlockUnavailable,
            15 => Self::LongGetAborted,
            16 => Self::NoLongGetInProgress,
            17 => Self::LongSetAborted,
            18 => Self::NoLongSetInProgress,
            19 => Self::DataBlockNumberInvalid,
            250 => Self::OtherReason,
            other => Self::Other(other),
        })
    }

    /// The wire code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::HardwareFault => 1,
            Self::TemporaryFailure => 2,
            Self::ReadWriteDenied => 3,
            Self::ObjectUndefined => 4,
            Self::ObjectClassInconsistent => 9,
            Self::ObjectUnavailable => 11,
            Self::TypeUnmatched => 12,
            Self::ScopeOfAccessViolated => 13,
            Self::DataBlockUnavailable => 14,
            Self::LongGetAborted => 15,
            Self::NoLongGetInProgress => 16,
            Self::LongSetAborted => 17,
            Self::NoLongSetInProgress => 18,
            Self::DataBlockNumberInvalid => 19,
            Self::OtherReason => 250,
            Self::Other(c) => c,
        }
    }

    /// The Blue Book name, e.g. `object-undefined`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::HardwareFault => "hardware-fault",
            Self::TemporaryFailure => "temporary-failure",
            Self::ReadWriteDenied => "read-write-denied",
            Self::ObjectUndefined => "object-undefined",
            Self::ObjectClassInconsistent => "object-class-inconsistent",
            Self::ObjectUnavailable => "object-unavailable",
            Self::TypeUnmatched => "type-unmatched",
            Self::ScopeOfAccessViolated => "scope-of-access-violated",
            Self::DataBlockUnavailable => "data-block-unavailable",
            Self::LongGetAborted => "long-get-aborted",
            Self::NoLongGetInProgress => "no-long-get-in-progress",
            Self::LongSetAborted => "long-set-aborted",
            Self::NoLongSetInProgress => "no-long-set-in-progress",
            Self::DataBlockNumberInvalid => "data-block-number-invalid",
            Self::OtherReason => "other-reason",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for DataAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(c) => write!(f, "data-access-result {c}"),
            _ => f.write_str(self.name()),
        }
    }
}

impl std::error::Error for DataAccessError {}

/// Converts the engine's result code; `None` for success.
pub(crate) fn dar(r: dlms_cosem_rs::xdlms::DataAccessResult) -> Option<DataAccessError> {
    DataAccessError::from_code(r.as_u8())
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A step (connect, one request/response) did not finish within its timeout.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// A wrapper header with a version other than 0x0001.
    #[error("wrapper version {0:#06x}, expected 0x0001")]
    WrapperVersion(u16),
    /// A frame or PDU longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLong {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// Malformed framing (HDLC or wrapper) that cannot be skipped.
    #[error("framing error: {0}")]
    Framing(String),
    /// The protocol engine refused to encode or decode something.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The meter refused the association (not an authentication problem).
    #[error("association rejected: {0}")]
    Rejected(String),
    /// The meter rejected our authentication or our invocation counter (or the meter's
    /// proof did not verify). Resynchronise the invocation counter by reading
    /// 0.0.43.1.0.255 attribute 2 with the public client, then retry.
    #[error("authentication / invocation counter rejected: {reason}")]
    AuthenticationRejected {
        /// What happened.
        reason: String,
        /// The counter the meter expects, when it said so.
        expected_invocation_counter: Option<u32>,
    },
    /// The meter answered a GET/SET with a data-access-result.
    #[error("data access error: {0}")]
    DataAccess(DataAccessError),
    /// The meter answered an ACTION with a non-success action-result.
    #[error("action failed: {0}")]
    Action(DataAccessError),
    /// The meter answered with an exception-response.
    #[error("exception response: state-error {state_error}, service-error {service_error}")]
    Exception {
        /// State error code.
        state_error: u8,
        /// Service error code.
        service_error: u8,
    },
    /// The meter answered something that does not fit the request.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// The link or association is not in a state for this call.
    #[error("not associated")]
    NotAssociated,
    /// A caller-supplied argument is unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl From<dlms_cosem_rs::Error> for Error {
    fn from(e: dlms_cosem_rs::Error) -> Self {
        use dlms_cosem_rs::ErrorKind as K;
        match e.kind {
            K::BadTag | K::Replay => {
                Self::AuthenticationRejected { reason: e.to_string(), expected_invocation_counter: None }
            }
            _ => Self::Protocol(e.to_string()),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why `decode_apdu` could not decode its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Input was empty.
    #[error("empty input")]
    Empty,
    /// The hex string was not valid hex.
    #[error("invalid hex: {0}")]
    Hex(String),
    /// Wrapper or HDLC frame could not be unwrapped.
    #[error("framing: {0}")]
    Framing(String),
    /// The APDU is malformed.
    #[error("malformed APDU: {0}")]
    Apdu(String),
    /// A ciphered APDU could not be deciphered with the given keys.
    #[error("cannot decipher: {0}")]
    Decipher(String),
}
