//! The MQTT side of the device protocol (version 1, `shared/design/DEVICE-PROTOCOL.md` §1):
//! topics, decoding and validation of what devices publish, and encoding of commands.
//!
//! The contract is fixed — devices in the field cannot be changed — so decoding accepts exactly
//! what it describes and refuses the rest with a [`Rejection`] whose [`RejectReason::code`] is a
//! stable label for the ingest metrics and the dead-letter log.
//!
//! Layout:
//! - [`parse_topic`] / [`TopicKind`] / [`command_topic`] — `{prefix}/{serial}/{telemetry|event|status|cmd/ack}`.
//! - [`Rejection`] / [`RejectReason`] — why input was refused (also used by [`crate::modbus`]).
//! - [`decode_telemetry`] → [`Telemetry`] — readings per detector entry; a bad entry becomes an
//!   [`EntryRejection`] while the good entries of the same message still count.
//! - [`decode_event`] → [`DeviceEvent`] — the device's own alarm/fault/trip/recovery logic.
//! - [`decode_status`] and [`decode_command_result`] → [`CommandResult`].
//! - [`CommandMessage`] / [`CommandOp`] / [`SetThresholds`] / [`encode_command`] — server → device.
//!
//! Files: this one holds the limits, rejections and topics; `decode` what devices send;
//! `command` what the server sends; `tests` the rules case by case.
//!
//! Strictness policy:
//! - Unknown fields **inside a detector entry** are rejected, as the contract says: a misspelt
//!   measurement (`"tmp"`) would otherwise silently read as "not measured".
//! - Unknown **top-level** fields of every message are ignored. The contract only promises
//!   future *optional* fields, names no rejection for extra top-level fields, and refusing a
//!   whole telemetry message (up to 64 detectors of safety data) or an alarm event because a
//!   module added e.g. `"rssi"` would lose far more than it protects.
//! - `null` for an optional field means the same as the field being absent (serialisers write
//!   `None` as `null`); inside a channel array it means "not fitted / not measured" — the
//!   contract says so for `temp`, and cJSON-style firmware writes a NaN as `null` too, which
//!   is better read as "no value" than as a reason to drop the detector's other values.
//! - Envelope fields have their own reason (`bad_timestamp`, `bad_address`, `bad_event_type`, …)
//!   whatever is wrong with them (missing, wrong type, out of range); measurement fields use
//!   `wrong_type`, `out_of_range` and `not_a_number`.
//! - A bare `NaN`/`Infinity` token is not JSON, so such a message is `not_json` as a whole; a
//!   string such as `"NaN"` in a measurement is `not_a_number` for that entry only.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::reading::{Channel, DeviceEvent, EventKind, Quantity, Reading, quantity_of};
use crate::thresholds::ThresholdOverrides;
use crate::validate::{ValidationError, detector_address};

/// How far a device clock may run ahead of the server before a message is refused.
pub const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::hours(24);

/// The largest device message accepted (MQTT payload). The biggest valid telemetry message
/// (64 detectors with every channel) is about 20 KiB; the embedded broker refuses more than
/// this, and an external broker should be configured to (README, "MQTT broker").
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The most detector entries one telemetry message may carry.
pub const MAX_DETECTORS_PER_MESSAGE: usize = 64;

/// Longest text of device-supplied content echoed into a rejection's detail, so that a hostile
/// payload cannot blow up logs.
const SHOWN_CHARS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------------

/// Why a topic, payload or register block was refused. [`code`](Self::code) is the stable
/// label of the `reason` dimension of the ingest metrics; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The payload is not JSON (includes invalid UTF-8 and bare `NaN`/`Infinity` tokens).
    NotJson,
    /// The payload is not an object, or a measurement or the `detectors` list has the wrong JSON type.
    WrongType,
    /// The topic does not have the form `{prefix}/{serial}/{telemetry|event|status|cmd/ack}`.
    BadTopic,
    /// The serial in the topic is not 1–64 characters of `A–Z a–z 0–9 - _`.
    BadSerial,
    /// A telemetry message without `detectors`, or with an empty list.
    MissingDetectors,
    /// A telemetry message with more than [`MAX_DETECTORS_PER_MESSAGE`] entries.
    TooManyDetectors,
    /// `ts` is neither a non-negative integer of milliseconds nor an RFC 3339 string.
    BadTimestamp,
    /// `ts` is more than [`MAX_CLOCK_AHEAD`] after the receive time.
    FutureTimestamp,
    /// `seq` is not an unsigned integer.
    BadSeq,
    /// `addr` is missing, not an integer, or outside 1–247.
    BadAddress,
    /// `addr` is not a detector registered on this device.
    UnknownAddress,
    /// A second telemetry entry for an `addr` already seen in the same message.
    DuplicateAddress,
    /// A field that the contract does not define inside a detector entry.
    UnknownField,
    /// A value outside its range, a channel array longer than a detector has channels, or a
    /// register value outside the contract's encoding.
    OutOfRange,
    /// A measurement given as a not-a-number or infinity text (`"NaN"`, `"inf"`).
    NotANumber,
    /// An event's `type` is missing or not one the contract lists.
    BadEventType,
    /// A `recovered` event without a `cause` naming an alarm or fault type, or a `cause` on
    /// another type.
    BadCause,
    /// An event's `ch` is not an integer from 1 to the number of channels of its quantity.
    BadChannel,
    /// A status message that is not `{"online": true|false}`.
    BadStatus,
    /// A command result without a UUID `id`, a boolean `ok` and an integer `code`, or with a
    /// non-text `msg`.
    BadCommandResult,
    /// A Modbus read that returned the wrong number of registers.
    BadRegisterCount,
    /// A payload larger than [`MAX_PAYLOAD_BYTES`].
    TooLarge,
}

impl RejectReason {
    /// Every reason in a stable order, e.g. to register all metric label values up front.
    pub const ALL: [RejectReason; 22] = [
        RejectReason::NotJson,
        RejectReason::WrongType,
        RejectReason::BadTopic,
        RejectReason::BadSerial,
        RejectReason::MissingDetectors,
        RejectReason::TooManyDetectors,
        RejectReason::BadTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::BadSeq,
        RejectReason::BadAddress,
        RejectReason::UnknownAddress,
        RejectReason::DuplicateAddress,
        RejectReason::UnknownField,
        RejectReason::OutOfRange,
        RejectReason::NotANumber,
        RejectReason::BadEventType,
        RejectReason::BadCause,
        RejectReason::BadChannel,
        RejectReason::BadStatus,
        RejectReason::BadCommandResult,
        RejectReason::BadRegisterCount,
        RejectReason::TooLarge,
    ];

    /// The stable snake_case label (`not_json`, `out_of_range`, …).
    pub const fn code(self) -> &'static str {
        match self {
            RejectReason::NotJson => "not_json",
            RejectReason::WrongType => "wrong_type",
            RejectReason::BadTopic => "bad_topic",
            RejectReason::BadSerial => "bad_serial",
            RejectReason::MissingDetectors => "missing_detectors",
            RejectReason::TooManyDetectors => "too_many_detectors",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::BadSeq => "bad_seq",
            RejectReason::BadAddress => "bad_address",
            RejectReason::UnknownAddress => "unknown_address",
            RejectReason::DuplicateAddress => "duplicate_address",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::NotANumber => "not_a_number",
            RejectReason::BadEventType => "bad_event_type",
            RejectReason::BadCause => "bad_cause",
            RejectReason::BadChannel => "bad_channel",
            RejectReason::BadStatus => "bad_status",
            RejectReason::BadCommandResult => "bad_command_result",
            RejectReason::BadRegisterCount => "bad_register_count",
            RejectReason::TooLarge => "too_large",
        }
    }

    /// Parses a label written by [`code`](Self::code).
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// A refused topic, payload, entry or register block: the counted reason and a detail for
/// the dead-letter log (device-supplied text in it is shortened).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", .reason.code())]
pub struct Rejection {
    /// The counted reason.
    pub reason: RejectReason,
    /// What exactly was wrong, for a person reading the dead-letter log.
    pub detail: String,
}

impl Rejection {
    /// Builds a rejection.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

/// Refuses a payload larger than [`MAX_PAYLOAD_BYTES`], before anything reads it.
pub fn check_size(payload: &[u8]) -> Result<(), Rejection> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!("{} bytes; at most {MAX_PAYLOAD_BYTES} are accepted", payload.len()),
        ));
    }
    Ok(())
}

/// Device-supplied text, shortened for a rejection detail.
fn shown(text: &str) -> String {
    if text.chars().count() <= SHOWN_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{head:?}…")
    }
}

/// A JSON value, shortened for a rejection detail.
fn shown_value(value: &Value) -> String {
    match value {
        Value::String(s) => shown(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        other => other.to_string(),
    }
}

/// The JSON type of a value, for "must be X, got Y" details.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------

/// What a device publishes on; the last segment(s) of its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `{prefix}/{serial}/telemetry`.
    Telemetry,
    /// `{prefix}/{serial}/event`.
    Event,
    /// `{prefix}/{serial}/status` (retained; the last will says offline).
    Status,
    /// `{prefix}/{serial}/cmd/ack`.
    CommandAck,
}

impl TopicKind {
    /// Every inbound kind, e.g. to build the subscriptions.
    pub const ALL: [TopicKind; 4] = [TopicKind::Telemetry, TopicKind::Event, TopicKind::Status, TopicKind::CommandAck];

    /// The topic suffix after the serial (`telemetry`, `cmd/ack`, …).
    pub const fn suffix(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Event => "event",
            TopicKind::Status => "status",
            TopicKind::CommandAck => "cmd/ack",
        }
    }
}

/// Whether `serial` is a device serial as the protocol defines it: 1–64 of `A–Z a–z 0–9 - _`.
/// Unlike [`crate::validate::device_serial`] nothing is trimmed: a topic is taken as sent.
fn is_serial(serial: &str) -> bool {
    (1..=64).contains(&serial.len()) && serial.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits an inbound topic `{prefix}/{serial}/{telemetry|event|status|cmd/ack}` into the
/// serial and the kind. `prefix` is the configured prefix (`sw`), with or without a trailing
/// `/`. Messages received through a shared subscription (`$share/group/sw/+/telemetry`)
/// carry the original topic name, so no `$share` handling is needed. The server's own
/// `{prefix}/{serial}/cmd` is outbound and therefore `bad_topic` here.
pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Result<(&'a str, TopicKind), Rejection> {
    let prefix = prefix.trim_end_matches('/');
    let rest = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')).ok_or_else(|| {
        Rejection::new(RejectReason::BadTopic, format!("topic {} is not under {prefix}/", shown(topic)))
    })?;
    let Some((serial, suffix)) = rest.split_once('/') else {
        return Err(Rejection::new(
            RejectReason::BadTopic,
            format!("topic {} has no kind after the serial", shown(topic)),
        ));
    };
    if !is_serial(serial) {
        return Err(Rejection::new(
            RejectReason::BadSerial,
            format!("serial {} is not 1–64 characters of A–Z a–z 0–9 - _", shown(serial)),
        ));
    }
    let kind = TopicKind::ALL.into_iter().find(|k| k.suffix() == suffix).ok_or_else(|| {
        Rejection::new(
            RejectReason::BadTopic,
            format!("topic suffix {} is not telemetry, event, status or cmd/ack", shown(suffix)),
        )
    })?;
    Ok((serial, kind))
}

/// The topic the server publishes commands for a device on: `{prefix}/{serial}/cmd`.
pub fn command_topic(prefix: &str, serial: &str) -> String {
    format!("{}/{serial}/cmd", prefix.trim_end_matches('/'))
}

mod command;
mod decode;
#[cfg(test)]
mod tests;

pub use command::*;
pub use decode::*;
