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

// ---------------------------------------------------------------------------------------------
// Shared field parsing
// ---------------------------------------------------------------------------------------------

/// Parses the payload as a JSON object.
fn object(bytes: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Rejection::new(
            RejectReason::WrongType,
            format!("payload must be a JSON object, got {}", type_name(&other)),
        )),
        Err(e) => Err(Rejection::new(RejectReason::NotJson, format!("payload is not JSON: {e}"))),
    }
}

/// A present, non-null field (`null` reads as absent).
fn field<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    map.get(name).filter(|v| !v.is_null())
}

/// `ts`: integer milliseconds since the epoch or an RFC 3339 text; absent → `received_at`;
/// more than [`MAX_CLOCK_AHEAD`] after `received_at` → refused. Old times are accepted: the
/// contract sets no lower bound (a device may deliver a backlog after an outage).
fn timestamp(map: &Map<String, Value>, received_at: DateTime<Utc>) -> Result<DateTime<Utc>, Rejection> {
    let bad = |what: String| Rejection::new(RejectReason::BadTimestamp, what);
    let at = match field(map, "ts") {
        None => return Ok(received_at),
        Some(Value::Number(n)) => {
            let ms = n
                .as_i64()
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| bad(format!("ts {n} is not a non-negative integer of milliseconds since the epoch")))?;
            DateTime::from_timestamp_millis(ms).ok_or_else(|| bad(format!("ts {ms} is out of range")))?
        }
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| bad(format!("ts {} is not an RFC 3339 time: {e}", shown(s))))?
            .with_timezone(&Utc),
        Some(other) => {
            return Err(bad(format!("ts must be milliseconds or an RFC 3339 text, got {}", type_name(other))));
        }
    };
    if at.signed_duration_since(received_at) > MAX_CLOCK_AHEAD {
        return Err(Rejection::new(
            RejectReason::FutureTimestamp,
            format!("ts {} is more than 24 h after the receive time {}", at.to_rfc3339(), received_at.to_rfc3339()),
        ));
    }
    Ok(at)
}

/// `addr`: an integer 1–247 (the Modbus unit id range).
fn address(value: Option<&Value>, path: impl fmt::Display) -> Result<u8, Rejection> {
    let bad = |what: String| Rejection::new(RejectReason::BadAddress, format!("{path}: {what}"));
    match value {
        None => Err(bad("missing".to_owned())),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|a| detector_address("addr", a).ok())
            .ok_or_else(|| bad(format!("{n} is not a bus address from 1 to 247"))),
        Some(other) => Err(bad(format!("must be an integer from 1 to 247, got {}", type_name(other)))),
    }
}

/// Texts that mean "not a number" or "infinity" in the usual printf/JSON-library spellings.
fn is_not_a_number_text(text: &str) -> bool {
    let t = text.trim().trim_start_matches(['+', '-']).to_ascii_lowercase();
    matches!(t.as_str(), "nan" | "inf" | "infinity")
}

/// The inclusive range and unit of a measured quantity (the contract's telemetry ranges).
pub(crate) const fn range_of(quantity: Quantity) -> (f64, f64, &'static str) {
    match quantity {
        Quantity::Leak => (0.0, 10_000.0, "mA"),
        Quantity::Temp => (-40.0, 200.0, "°C"),
        Quantity::Voltage => (0.0, 1000.0, "V"),
        Quantity::Current => (0.0, 10_000.0, "A"),
        // Detector-wide values (arc, power) have no contract range; only finiteness is checked.
        Quantity::Detector => (f64::MIN, f64::MAX, ""),
    }
}

/// The number of channels of a quantity that the protocol can address: the lengths of the
/// telemetry arrays (leakage up to 8, temperature 4, three phases) and, for detector-wide
/// events that nevertheless carry a `ch`, up to 8.
pub const fn max_channels(quantity: Quantity) -> u8 {
    match quantity {
        Quantity::Leak | Quantity::Detector => 8,
        Quantity::Temp => 4,
        Quantity::Voltage | Quantity::Current => 3,
    }
}

/// A measured number within the range of `quantity`.
fn measurement(value: &Value, path: impl fmt::Display, quantity: Quantity) -> Result<f64, Rejection> {
    let (min, max, unit) = range_of(quantity);
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(x),
            _ => Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("{path} = {n} is outside {min}–{max} {unit}").trim_end().to_owned(),
            )),
        },
        Value::String(s) if is_not_a_number_text(s) => {
            Err(Rejection::new(RejectReason::NotANumber, format!("{path} = {} is not a number", shown(s))))
        }
        other => Err(Rejection::new(
            RejectReason::WrongType,
            format!("{path} must be a number, got {} {}", type_name(other), shown_value(other)),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Telemetry
// ---------------------------------------------------------------------------------------------

/// A decoded telemetry message: the readings of its good entries and the reasons for its bad
/// ones. `readings.len() + rejected.len()` is the number of entries in the message; all
/// entries may be rejected, which is still `Ok` (count each rejected entry).
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    /// Device time of the message (receive time when the device sent none).
    pub at: DateTime<Utc>,
    /// The device's message counter, for duplicate suppression of QoS 1 redeliveries.
    pub seq: Option<u64>,
    /// Accepted entries: detector address and its reading (`reading.at == at`), in message order.
    pub readings: Vec<(u8, Reading)>,
    /// Refused entries, in message order.
    pub rejected: Vec<EntryRejection>,
}

/// One refused detector entry of a telemetry message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRejection {
    /// 0-based position in `detectors`.
    pub index: usize,
    /// The entry's address when it had a valid one.
    pub address: Option<u8>,
    /// Why it was refused.
    pub rejection: Rejection,
}

/// The fields a detector entry may have; anything else rejects the entry.
const DETECTOR_FIELDS: [&str; 7] = ["addr", "leak", "temp", "u", "i", "di", "do"];

/// Decodes a telemetry payload (`{"ts", "seq", "detectors": [...]}`).
///
/// The whole message is refused when it is not a JSON object, `ts`/`seq` are invalid, `ts` is
/// more than 24 h ahead of `received_at`, or `detectors` is missing, empty, not an array or
/// longer than 64. Otherwise each entry is checked on its own: the address (1–247, unique in
/// the message — a later duplicate is refused —, and `is_registered`), then unknown fields,
/// then each measurement's type and range. `is_registered` is asked once per distinct address.
pub fn decode_telemetry(
    bytes: &[u8],
    received_at: DateTime<Utc>,
    is_registered: impl Fn(u8) -> bool,
) -> Result<Telemetry, Rejection> {
    let map = object(bytes)?;
    let at = timestamp(&map, received_at)?;
    let seq = match field(&map, "seq") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| Rejection::new(RejectReason::BadSeq, format!("seq {n} is not an unsigned integer")))?,
        ),
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::BadSeq,
                format!("seq must be an unsigned integer, got {}", type_name(other)),
            ));
        }
    };
    let entries = match field(&map, "detectors") {
        None => return Err(Rejection::new(RejectReason::MissingDetectors, "detectors is missing")),
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::WrongType,
                format!("detectors must be an array, got {}", type_name(other)),
            ));
        }
    };
    if entries.is_empty() {
        return Err(Rejection::new(RejectReason::MissingDetectors, "detectors is empty"));
    }
    if entries.len() > MAX_DETECTORS_PER_MESSAGE {
        return Err(Rejection::new(
            RejectReason::TooManyDetectors,
            format!("detectors has {} entries; at most {MAX_DETECTORS_PER_MESSAGE} are allowed", entries.len()),
        ));
    }

    let mut seen = [false; 256];
    let mut telemetry = Telemetry { at, seq, readings: Vec::new(), rejected: Vec::new() };
    for (index, entry) in entries.iter().enumerate() {
        match decode_entry(index, entry, at, &mut seen, &is_registered) {
            Ok(reading) => telemetry.readings.push(reading),
            Err((address, rejection)) => telemetry.rejected.push(EntryRejection { index, address, rejection }),
        }
    }
    Ok(telemetry)
}

/// One detector entry; on refusal, the address when it was valid.
fn decode_entry(
    index: usize,
    entry: &Value,
    at: DateTime<Utc>,
    seen: &mut [bool; 256],
    is_registered: &impl Fn(u8) -> bool,
) -> Result<(u8, Reading), (Option<u8>, Rejection)> {
    // Error paths are formatted only when there is an error: allocating them for every
    // entry and value showed in profiles.
    let path = format_args!("detectors[{index}]");
    let Value::Object(map) = entry else {
        return Err((
            None,
            Rejection::new(RejectReason::WrongType, format!("{path} must be an object, got {}", type_name(entry))),
        ));
    };
    let addr = address(map.get("addr"), format_args!("{path}.addr")).map_err(|r| (None, r))?;
    let refuse = |reason: RejectReason, detail: String| (Some(addr), Rejection::new(reason, detail));

    let slot = &mut seen[usize::from(addr)];
    if *slot {
        return Err(refuse(
            RejectReason::DuplicateAddress,
            format!("{path}: addr {addr} already appeared earlier in this message"),
        ));
    }
    *slot = true;
    if !is_registered(addr) {
        return Err(refuse(
            RejectReason::UnknownAddress,
            format!("{path}: addr {addr} is not a detector registered on this device"),
        ));
    }
    // Sorted so that the detail does not depend on the map's key order.
    let mut unknown: Vec<String> =
        map.keys().filter(|k| !DETECTOR_FIELDS.contains(&k.as_str())).map(|k| shown(k)).collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(refuse(RejectReason::UnknownField, format!("{path}: unknown field(s) {}", unknown.join(", "))));
    }

    let entry_field = |r: Rejection| (Some(addr), r);
    Ok((
        addr,
        Reading {
            at,
            leak_ma: channel_array(map, "leak", Quantity::Leak, path).map_err(entry_field)?,
            temp_c: channel_array(map, "temp", Quantity::Temp, path).map_err(entry_field)?,
            voltage_v: channel_array(map, "u", Quantity::Voltage, path).map_err(entry_field)?,
            current_a: channel_array(map, "i", Quantity::Current, path).map_err(entry_field)?,
            digital_in: bit_set(map, "di", path).map_err(entry_field)?,
            digital_out: bit_set(map, "do", path).map_err(entry_field)?,
        },
    ))
}

/// A channel array (`leak`, `temp`, `u`, `i`): absent → no channels; `null` elements → that
/// channel has no value; longer than the quantity has channels → out of range.
fn channel_array(
    map: &Map<String, Value>,
    name: &str,
    quantity: Quantity,
    path: fmt::Arguments<'_>,
) -> Result<Vec<Option<f64>>, Rejection> {
    let values = match field(map, name) {
        None => return Ok(Vec::new()),
        Some(Value::Array(values)) => values,
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::WrongType,
                format!("{path}.{name} must be an array, got {}", type_name(other)),
            ));
        }
    };
    let most = usize::from(max_channels(quantity));
    if values.len() > most {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("{path}.{name} has {} channels; at most {most} are allowed", values.len()),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(n, v)| match v {
            Value::Null => Ok(None),
            v => measurement(v, format_args!("{path}.{name}[{n}]"), quantity).map(Some),
        })
        .collect()
}

/// `di`/`do`: an integer 0–65535.
fn bit_set(map: &Map<String, Value>, name: &str, path: fmt::Arguments<'_>) -> Result<Option<u16>, Rejection> {
    match field(map, name) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_f64() => {
            Err(Rejection::new(RejectReason::WrongType, format!("{path}.{name} = {n} must be an integer bit set")))
        }
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|b| u16::try_from(b).ok()).map(Some).ok_or_else(|| {
                Rejection::new(RejectReason::OutOfRange, format!("{path}.{name} = {n} is outside 0–65535"))
            })
        }
        Some(other) => Err(Rejection::new(
            RejectReason::WrongType,
            format!("{path}.{name} must be an integer 0–65535, got {} {}", type_name(other), shown_value(other)),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The event kinds a device may report and their names on the wire, in contract order.
const WIRE_EVENT_TYPES: [(&str, EventKind); 12] = [
    ("leak_alarm", EventKind::LeakAlarm),
    ("temp_alarm", EventKind::TempAlarm),
    ("overvoltage", EventKind::Overvoltage),
    ("undervoltage", EventKind::Undervoltage),
    ("overcurrent", EventKind::Overcurrent),
    ("phase_loss", EventKind::PhaseLoss),
    ("arc_fault", EventKind::ArcFault),
    ("sensor_open", EventKind::SensorOpen),
    ("sensor_short", EventKind::SensorShort),
    ("power_fault", EventKind::PowerFault),
    ("trip", EventKind::Trip),
    ("recovered", EventKind::Recovered),
];

/// The wire name of an event kind a device may report (`leak_alarm`); `None` for the kinds
/// only the server produces (offline, online, command).
pub fn event_type_name(kind: EventKind) -> Option<&'static str> {
    WIRE_EVENT_TYPES.iter().find(|(_, k)| *k == kind).map(|(name, _)| *name)
}

/// Parses a wire event type (`leak_alarm`); exact, case-sensitive.
pub fn event_type_from_name(name: &str) -> Option<EventKind> {
    WIRE_EVENT_TYPES.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// Decodes an event payload (`{"ts", "addr", "type", "ch", "value", "setpoint", "cause"}`).
///
/// `type` must be a contract type; `recovered` needs a `cause` naming an alarm or fault type
/// and no other type may carry one. The event's channel is `ch` (1-based) within the quantity
/// of the kind — of the `cause` for `recovered` — per [`quantity_of`]; absent `ch` gives number
/// 0 (the whole quantity, or [`Channel::DETECTOR`] for detector-wide kinds). Sensor faults have
/// no quantity of their own on MQTT, so `sensor_open` with `ch` 2 is `Detector` channel 2.
/// `value` and `setpoint` are optional numbers in the range of that quantity.
pub fn decode_event(
    bytes: &[u8],
    received_at: DateTime<Utc>,
    is_registered: impl Fn(u8) -> bool,
) -> Result<DeviceEvent, Rejection> {
    let map = object(bytes)?;
    let at = timestamp(&map, received_at)?;
    let address = address(field(&map, "addr"), "addr")?;
    if !is_registered(address) {
        return Err(Rejection::new(
            RejectReason::UnknownAddress,
            format!("addr {address} is not a detector registered on this device"),
        ));
    }
    let kind = match field(&map, "type") {
        None => return Err(Rejection::new(RejectReason::BadEventType, "type is missing")),
        Some(Value::String(name)) => event_type_from_name(name).ok_or_else(|| {
            Rejection::new(RejectReason::BadEventType, format!("type {} is not a device event type", shown(name)))
        })?,
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::BadEventType,
                format!("type must be a text, got {}", type_name(other)),
            ));
        }
    };
    let cause = match (kind, field(&map, "cause")) {
        (EventKind::Recovered, None) => {
            return Err(Rejection::new(RejectReason::BadCause, "a recovered event needs a cause"));
        }
        (EventKind::Recovered, Some(Value::String(name))) => {
            match event_type_from_name(name).filter(|c| c.is_alarm() || c.is_fault()) {
                Some(cause) => Some(cause),
                None => {
                    return Err(Rejection::new(
                        RejectReason::BadCause,
                        format!("cause {} is not an alarm or fault type", shown(name)),
                    ));
                }
            }
        }
        (EventKind::Recovered, Some(other)) => {
            return Err(Rejection::new(
                RejectReason::BadCause,
                format!("cause must be a text, got {}", type_name(other)),
            ));
        }
        (_, None) => None,
        (_, Some(_)) => {
            return Err(Rejection::new(RejectReason::BadCause, "only a recovered event carries a cause"));
        }
    };
    let quantity = quantity_of(cause.unwrap_or(kind));
    let number = match field(&map, "ch") {
        None => 0,
        Some(value) => {
            let most = max_channels(quantity);
            match value {
                Value::Number(n) => n.as_u64().and_then(|c| u8::try_from(c).ok()).filter(|c| (1..=most).contains(c)),
                _ => None,
            }
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::BadChannel,
                    format!("ch {} is not a channel number from 1 to {most}", shown_value(value)),
                )
            })?
        }
    };
    let value = field(&map, "value").map(|v| measurement(v, "value", quantity)).transpose()?;
    let setpoint = field(&map, "setpoint").map(|v| measurement(v, "setpoint", quantity)).transpose()?;
    Ok(DeviceEvent { at, address, kind, cause, channel: Channel::new(quantity, number), value, setpoint })
}

// ---------------------------------------------------------------------------------------------
// Status and command results
// ---------------------------------------------------------------------------------------------

/// Decodes a status payload `{"online": true|false}` into the online flag.
pub fn decode_status(bytes: &[u8]) -> Result<bool, Rejection> {
    let map = object(bytes)?;
    match field(&map, "online") {
        Some(Value::Bool(online)) => Ok(*online),
        Some(other) => Err(Rejection::new(
            RejectReason::BadStatus,
            format!("online must be true or false, got {}", shown_value(other)),
        )),
        None => Err(Rejection::new(RejectReason::BadStatus, "online is missing")),
    }
}

/// A device's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    /// The command's id; an unknown id is logged and ignored by the caller.
    pub id: Uuid,
    /// Whether the device carried the command out.
    pub ok: bool,
    /// The device's result code (0 on success by convention).
    pub code: i64,
    /// The device's message, if any.
    pub msg: Option<String>,
}

/// Decodes a command result `{"id", "ok", "code", "msg"}`: `id` a UUID text, `ok` a boolean and
/// `code` an integer are required (all appear in the contract's only example), `msg` is an
/// optional text.
pub fn decode_command_result(bytes: &[u8]) -> Result<CommandResult, Rejection> {
    let map = object(bytes)?;
    let bad = |what: String| Rejection::new(RejectReason::BadCommandResult, what);
    let id = match field(&map, "id") {
        Some(Value::String(s)) => Uuid::try_parse(s).map_err(|_| bad(format!("id {} is not a UUID", shown(s))))?,
        Some(other) => return Err(bad(format!("id must be a UUID text, got {}", type_name(other)))),
        None => return Err(bad("id is missing".to_owned())),
    };
    let ok = match field(&map, "ok") {
        Some(Value::Bool(ok)) => *ok,
        Some(other) => return Err(bad(format!("ok must be true or false, got {}", shown_value(other)))),
        None => return Err(bad("ok is missing".to_owned())),
    };
    let code = match field(&map, "code") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(format!("code {n} is not an integer")))?,
        Some(other) => return Err(bad(format!("code must be an integer, got {}", type_name(other)))),
        None => return Err(bad("code is missing".to_owned())),
    };
    let msg = match field(&map, "msg") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(bad(format!("msg must be a text, got {}", type_name(other)))),
        None => None,
    };
    Ok(CommandResult { id, ok, code, msg })
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A remote operation on a detector, with its wire name (`op`) and Modbus coil
/// ([`crate::modbus::coil_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOp {
    /// Open the detector's relay (分闸).
    Trip,
    /// Close the relay (合闸).
    Close,
    /// Reset latched alarms (复位).
    Reset,
    /// Run the detector's self-test (自检).
    SelfTest,
    /// Silence the sounder (消音); the alarm stays.
    Silence,
    /// Write alarm set-points (设定参数); the only op with params.
    SetThresholds,
}

impl CommandOp {
    /// Every op in contract order.
    pub const ALL: [CommandOp; 6] = [
        CommandOp::Trip,
        CommandOp::Close,
        CommandOp::Reset,
        CommandOp::SelfTest,
        CommandOp::Silence,
        CommandOp::SetThresholds,
    ];

    /// The wire name (`self_test`).
    pub const fn code(self) -> &'static str {
        match self {
            CommandOp::Trip => "trip",
            CommandOp::Close => "close",
            CommandOp::Reset => "reset",
            CommandOp::SelfTest => "self_test",
            CommandOp::Silence => "silence",
            CommandOp::SetThresholds => "set_thresholds",
        }
    }

    /// Parses a wire name.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.code() == code)
    }
}

/// The set-points a `set_thresholds` command writes; `None` leaves the device's value alone.
/// Values must be whole multiples of the device's resolution (the Modbus register units:
/// 1 mA, 0.1 s, 1 °C, 0.1 V, 0.1 V, 0.01 A) so that what is sent is exactly what is stored
/// and the read-back comparison can be exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetThresholds {
    /// Residual-current alarm set-point, mA (20–1000, whole mA).
    pub leak_ma: Option<f64>,
    /// Residual-current alarm delay, s (0–60, steps of 0.1 s).
    pub leak_delay_s: Option<f64>,
    /// Temperature alarm set-point, °C (55–140, whole °C).
    pub temp_c: Option<f64>,
    /// Over-voltage set-point, V (100–1000, steps of 0.1 V).
    pub overvoltage_v: Option<f64>,
    /// Under-voltage set-point, V (50–400, below the over-voltage set-point, steps of 0.1 V).
    pub undervoltage_v: Option<f64>,
    /// Over-current set-point, A (0.1–10000, steps of 0.01 A).
    pub overcurrent_a: Option<f64>,
}

impl SetThresholds {
    /// Field name (as the API spells it), value, resolution and unit of every set-point, in
    /// holding-register order (100–105).
    pub(crate) fn fields(&self) -> [(&'static str, Option<f64>, f64, &'static str); 6] {
        [
            ("leakMa", self.leak_ma, 1.0, "mA"),
            ("leakDelayS", self.leak_delay_s, 0.1, "s"),
            ("tempC", self.temp_c, 1.0, "°C"),
            ("overvoltageV", self.overvoltage_v, 0.1, "V"),
            ("undervoltageV", self.undervoltage_v, 0.1, "V"),
            ("overcurrentA", self.overcurrent_a, 0.01, "A"),
        ]
    }

    /// Checks that at least one set-point is given, each is within the ranges the API accepts
    /// for thresholds (GB 14287: 20–1000 mA, 55–140 °C, delay 0–60 s; see
    /// [`ThresholdOverrides::validate`]) and a whole multiple of the device's resolution.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.fields().iter().all(|(_, v, _, _)| v.is_none()) {
            return Err(ValidationError::new("params", "must set at least one threshold"));
        }
        // One source for the ranges and the under < over rule: the API's threshold validation.
        ThresholdOverrides {
            leak_ma: self.leak_ma,
            leak_delay_s: self.leak_delay_s,
            temp_c: self.temp_c,
            overvoltage_v: self.overvoltage_v,
            undervoltage_v: self.undervoltage_v,
            overcurrent_a: self.overcurrent_a,
            ..ThresholdOverrides::default()
        }
        .validate()?;
        for (name, value, step, unit) in self.fields() {
            if let Some(v) = value {
                let steps = v / step;
                if (steps - steps.round()).abs() > 1e-6 {
                    return Err(ValidationError::new(name, format!("must be a whole multiple of {step} {unit}")));
                }
            }
        }
        Ok(())
    }
}

/// A command for one detector of a device, published on [`command_topic`].
#[derive(Clone, Debug, PartialEq)]
pub struct CommandMessage {
    /// The command's id; the device echoes it in its [`CommandResult`].
    pub id: Uuid,
    /// The detector's bus address (1–247).
    pub addr: u8,
    /// The operation.
    pub op: CommandOp,
    /// Set-points, for [`CommandOp::SetThresholds`] only.
    pub params: Option<SetThresholds>,
    /// The device ignores the command after this time.
    pub expires: DateTime<Utc>,
}

/// Encodes a command as the contract's JSON:
/// `{"id": "…", "addr": 1, "op": "set_thresholds", "params": {"leak_ma": 300, …}, "expires": <ms>}`.
/// `params` appears only for `set_thresholds` and holds only the set-points given; `leak_ma`
/// and `temp_c` are written as integers (as in the contract's example), the others as numbers.
/// Errors name the field: `address`, `params`, or a set-point (`leakMa`, …).
pub fn encode_command(command: &CommandMessage) -> Result<Vec<u8>, ValidationError> {
    detector_address("address", i64::from(command.addr))?;
    let mut map = Map::new();
    map.insert("id".to_owned(), Value::from(command.id.hyphenated().to_string()));
    map.insert("addr".to_owned(), Value::from(command.addr));
    map.insert("op".to_owned(), Value::from(command.op.code()));
    match (command.op, &command.params) {
        (CommandOp::SetThresholds, Some(params)) => {
            params.validate()?;
            map.insert("params".to_owned(), Value::Object(params_json(params)));
        }
        (CommandOp::SetThresholds, None) => {
            return Err(ValidationError::new("params", "set_thresholds needs at least one threshold"));
        }
        (_, Some(_)) => return Err(ValidationError::new("params", "only set_thresholds carries params")),
        (_, None) => {}
    }
    map.insert("expires".to_owned(), Value::from(command.expires.timestamp_millis()));
    Ok(Value::Object(map).to_string().into_bytes())
}

/// The `params` object of a validated [`SetThresholds`].
fn params_json(params: &SetThresholds) -> Map<String, Value> {
    // Whole-unit set-points go out as integers: 300, not 300.0 (validated to be whole).
    let whole = |v: f64| Value::from(v.round() as i64);
    let entries = [
        ("leak_ma", params.leak_ma.map(whole)),
        ("leak_delay_s", params.leak_delay_s.map(Value::from)),
        ("temp_c", params.temp_c.map(whole)),
        ("overvoltage_v", params.overvoltage_v.map(Value::from)),
        ("undervoltage_v", params.undervoltage_v.map(Value::from)),
        ("overcurrent_a", params.overcurrent_a.map(Value::from)),
    ];
    entries.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// 2025-11-23T10:15:30Z, 123 ms before the contract's example telemetry time.
    fn received() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_763_892_930_000).unwrap()
    }

    fn ms(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    /// Detectors 1–10 are registered.
    fn registered(addr: u8) -> bool {
        (1..=10).contains(&addr)
    }

    fn telemetry(json: &str) -> Result<Telemetry, Rejection> {
        decode_telemetry(json.as_bytes(), received(), registered)
    }

    fn event(json: &str) -> Result<DeviceEvent, Rejection> {
        decode_event(json.as_bytes(), received(), registered)
    }

    /// The reason of the single entry of `{"detectors": [entry]}`, or `None` when accepted.
    fn entry_reason(entry: &str) -> Option<RejectReason> {
        let t = telemetry(&format!(r#"{{"detectors": [{entry}]}}"#)).unwrap();
        assert_eq!(t.readings.len() + t.rejected.len(), 1);
        t.rejected.first().map(|r| r.rejection.reason)
    }

    #[test]
    fn reason_codes_are_unique_snake_case_and_round_trip() {
        let mut codes: Vec<_> = RejectReason::ALL.iter().map(|r| r.code()).collect();
        for (r, code) in RejectReason::ALL.iter().zip(&codes) {
            assert_eq!(RejectReason::from_code(code), Some(*r));
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), RejectReason::ALL.len());
        let r = Rejection::new(RejectReason::OutOfRange, "leak too big");
        assert_eq!(r.to_string(), "out_of_range: leak too big");
    }

    #[test]
    fn topics() {
        use TopicKind::*;
        let long = format!("sw/{}/telemetry", "x".repeat(64));
        let too_long = format!("sw/{}/telemetry", "x".repeat(65));
        type Case<'a> = (&'a str, &'a str, Result<(&'a str, TopicKind), RejectReason>);
        let cases: &[Case] = &[
            ("sw", "sw/SW-0001_a/telemetry", Ok(("SW-0001_a", Telemetry))),
            ("sw", "sw/dev1/event", Ok(("dev1", Event))),
            ("sw", "sw/dev1/status", Ok(("dev1", Status))),
            ("sw", "sw/dev1/cmd/ack", Ok(("dev1", CommandAck))),
            ("sw/", "sw/dev1/status", Ok(("dev1", Status))),
            ("acme/sw", "acme/sw/dev1/event", Ok(("dev1", Event))),
            ("sw", &long, Ok((&long[3..67], Telemetry))),
            ("sw", &too_long, Err(RejectReason::BadSerial)),
            ("sw", "sw/bad serial/telemetry", Err(RejectReason::BadSerial)),
            ("sw", "sw/dev.1/telemetry", Err(RejectReason::BadSerial)),
            ("sw", "sw/设备/telemetry", Err(RejectReason::BadSerial)),
            ("sw", "sw//telemetry", Err(RejectReason::BadSerial)),
            ("sw", "sw/+/telemetry", Err(RejectReason::BadSerial)),
            ("sw", "sw/dev1/cmd", Err(RejectReason::BadTopic)),
            ("sw", "sw/dev1/telemetry/extra", Err(RejectReason::BadTopic)),
            ("sw", "sw/dev1/Telemetry", Err(RejectReason::BadTopic)),
            ("sw", "sw/dev1/", Err(RejectReason::BadTopic)),
            ("sw", "sw/dev1", Err(RejectReason::BadTopic)),
            ("sw", "xx/dev1/telemetry", Err(RejectReason::BadTopic)),
            ("sw", "swx/dev1/telemetry", Err(RejectReason::BadTopic)),
            ("sw", "$share/g/sw/dev1/telemetry", Err(RejectReason::BadTopic)),
            ("sw", "", Err(RejectReason::BadTopic)),
        ];
        for (prefix, topic, expected) in cases {
            let got = parse_topic(prefix, topic).map_err(|r| r.reason);
            assert_eq!(&got, expected, "{prefix} {topic}");
        }
        assert_eq!(command_topic("sw/", "dev1"), "sw/dev1/cmd");
        for kind in TopicKind::ALL {
            assert_eq!(parse_topic("sw", &format!("sw/d/{}", kind.suffix())).unwrap(), ("d", kind));
        }
    }

    #[test]
    fn the_contract_example_decodes() {
        let t = telemetry(
            r#"{"ts": 1763892930123, "seq": 1024, "detectors": [{"addr": 1, "leak": [35.2],
                "temp": [41.5, 40.1, null, null], "u": [220.1, 221.0, 219.8], "i": [10.2, 9.8, 11.0],
                "di": 1, "do": 0}]}"#,
        )
        .unwrap();
        let at = ms(1_763_892_930_123);
        assert_eq!(t.at, at);
        assert_eq!(t.seq, Some(1024));
        assert!(t.rejected.is_empty());
        let expected = Reading {
            at,
            leak_ma: vec![Some(35.2)],
            temp_c: vec![Some(41.5), Some(40.1), None, None],
            voltage_v: vec![Some(220.1), Some(221.0), Some(219.8)],
            current_a: vec![Some(10.2), Some(9.8), Some(11.0)],
            digital_in: Some(1),
            digital_out: Some(0),
        };
        assert_eq!(t.readings, vec![(1, expected)]);
    }

    #[test]
    fn timestamps() {
        let hour = 3_600_000;
        let cases: &[(&str, Result<DateTime<Utc>, RejectReason>)] = &[
            (r#""ts": 1763892930123,"#, Ok(ms(1_763_892_930_123))),
            (r#""ts": 0,"#, Ok(ms(0))),
            (r#""ts": "2025-11-23T10:15:30.123Z","#, Ok(ms(1_763_892_930_123))),
            (r#""ts": "2025-11-23T18:15:30.123+08:00","#, Ok(ms(1_763_892_930_123))),
            ("", Ok(received())),
            (r#""ts": null,"#, Ok(received())),
            // Exactly 24 h ahead is still accepted; one millisecond more is not.
            (&format!(r#""ts": {},"#, 1_763_892_930_000 + 24 * hour), Ok(ms(1_763_892_930_000 + 24 * hour))),
            (&format!(r#""ts": {},"#, 1_763_892_930_001 + 24 * hour), Err(RejectReason::FutureTimestamp)),
            (r#""ts": "2025-11-24T10:15:30.001Z","#, Err(RejectReason::FutureTimestamp)),
            (r#""ts": -1,"#, Err(RejectReason::BadTimestamp)),
            (r#""ts": 1763892930123.5,"#, Err(RejectReason::BadTimestamp)),
            (r#""ts": 1e300,"#, Err(RejectReason::BadTimestamp)),
            (r#""ts": 9223372036854775807,"#, Err(RejectReason::BadTimestamp)),
            (r#""ts": 18446744073709551615,"#, Err(RejectReason::BadTimestamp)),
            (r#""ts": "1763892930123","#, Err(RejectReason::BadTimestamp)),
            (r#""ts": "2025-11-23 10:15","#, Err(RejectReason::BadTimestamp)),
            (r#""ts": "2025-11-23T10:15:30","#, Err(RejectReason::BadTimestamp)),
            (r#""ts": true,"#, Err(RejectReason::BadTimestamp)),
            (r#""ts": {},"#, Err(RejectReason::BadTimestamp)),
        ];
        for (ts, expected) in cases {
            let json = format!(r#"{{{ts} "detectors": [{{"addr": 1, "leak": [1]}}]}}"#);
            let got = telemetry(&json).map(|t| t.at).map_err(|r| r.reason);
            assert_eq!(&got, expected, "{json}");
            if let Ok(at) = expected {
                assert_eq!(telemetry(&json).unwrap().readings[0].1.at, *at);
            }
            // Events share the timestamp rules.
            let json = format!(r#"{{{ts} "addr": 1, "type": "trip"}}"#);
            assert_eq!(&event(&json).map(|e| e.at).map_err(|r| r.reason), expected, "{json}");
        }
    }

    #[test]
    fn whole_message_rejections() {
        let entry = r#"{"addr": 1}"#;
        let many = |n: usize| {
            let entries: Vec<String> = (0..n).map(|_| entry.to_owned()).collect();
            format!(r#"{{"detectors": [{}]}}"#, entries.join(","))
        };
        let cases: &[(&str, RejectReason)] = &[
            ("", RejectReason::NotJson),
            ("not json", RejectReason::NotJson),
            (r#"{"detectors": [{"addr": 1, "leak": [NaN]}]}"#, RejectReason::NotJson),
            (r#"{"detectors": [{"addr": 1}]"#, RejectReason::NotJson),
            (r#"{"detectors": [{"addr": 1, "leak": [1e400]}]}"#, RejectReason::NotJson),
            ("[]", RejectReason::WrongType),
            ("42", RejectReason::WrongType),
            ("null", RejectReason::WrongType),
            ("{}", RejectReason::MissingDetectors),
            (r#"{"ts": 1}"#, RejectReason::MissingDetectors),
            (r#"{"detectors": null}"#, RejectReason::MissingDetectors),
            (r#"{"detectors": []}"#, RejectReason::MissingDetectors),
            (r#"{"detectors": {"addr": 1}}"#, RejectReason::WrongType),
            (r#"{"detectors": "1"}"#, RejectReason::WrongType),
            (&many(65), RejectReason::TooManyDetectors),
            (r#"{"seq": -1, "detectors": [{"addr": 1}]}"#, RejectReason::BadSeq),
            (r#"{"seq": 1.5, "detectors": [{"addr": 1}]}"#, RejectReason::BadSeq),
            (r#"{"seq": "7", "detectors": [{"addr": 1}]}"#, RejectReason::BadSeq),
        ];
        for (json, reason) in cases {
            assert_eq!(telemetry(json).map_err(|r| r.reason), Err(*reason), "{json}");
        }
        assert!(decode_telemetry(&[0xff, 0xfe], received(), registered).is_err());
        // 64 entries is the limit (all but the first are duplicates, but the message counts).
        let t = telemetry(&many(64)).unwrap();
        assert_eq!((t.readings.len(), t.rejected.len()), (1, 63));
        assert_eq!(telemetry(r#"{"seq": null, "detectors": [{"addr": 1}]}"#).unwrap().seq, None);
        assert_eq!(telemetry(r#"{"seq": 0, "detectors": [{"addr": 1}]}"#).unwrap().seq, Some(0));
        let max = format!(r#"{{"seq": {}, "detectors": [{{"addr": 1}}]}}"#, u64::MAX);
        assert_eq!(telemetry(&max).unwrap().seq, Some(u64::MAX));
    }

    #[test]
    fn unknown_top_level_fields_are_ignored() {
        let t = telemetry(r#"{"rssi": -70, "fw": "1.2", "detectors": [{"addr": 2}]}"#).unwrap();
        assert_eq!(t.readings.len(), 1);
    }

    #[test]
    fn detector_entries() {
        use RejectReason::*;
        let cases: &[(&str, Option<RejectReason>)] = &[
            // Addresses.
            (r#"{"addr": 1}"#, None),
            (r#"{"addr": 10}"#, None),
            (r#"{"addr": 11}"#, Some(UnknownAddress)),
            (r#"{"addr": 247}"#, Some(UnknownAddress)),
            (r#"{"addr": 0}"#, Some(BadAddress)),
            (r#"{"addr": 248}"#, Some(BadAddress)),
            (r#"{"addr": -1}"#, Some(BadAddress)),
            (r#"{"addr": 1.0}"#, Some(BadAddress)),
            (r#"{"addr": "1"}"#, Some(BadAddress)),
            (r#"{"addr": null}"#, Some(BadAddress)),
            (r#"{"leak": [1]}"#, Some(BadAddress)),
            ("1", Some(WrongType)),
            ("[1]", Some(WrongType)),
            ("null", Some(WrongType)),
            // Leakage: 0–10000 mA, at most 8 channels.
            (r#"{"addr": 1, "leak": [0]}"#, None),
            (r#"{"addr": 1, "leak": [10000]}"#, None),
            (r#"{"addr": 1, "leak": [10000.0001]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "leak": [-0.1]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "leak": [-50]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "leak": [1e300]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "leak": [18446744073709551616]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "leak": [1, 2, 3, 4, 5, 6, 7, 8]}"#, None),
            (r#"{"addr": 1, "leak": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "leak": []}"#, None),
            (r#"{"addr": 1, "leak": null}"#, None),
            (r#"{"addr": 1, "leak": [null]}"#, None),
            (r#"{"addr": 1, "leak": 35.2}"#, Some(WrongType)),
            (r#"{"addr": 1, "leak": ["35.2"]}"#, Some(WrongType)),
            (r#"{"addr": 1, "leak": [true]}"#, Some(WrongType)),
            (r#"{"addr": 1, "leak": [{}]}"#, Some(WrongType)),
            (r#"{"addr": 1, "leak": [[1]]}"#, Some(WrongType)),
            (r#"{"addr": 1, "leak": ["NaN"]}"#, Some(NotANumber)),
            (r#"{"addr": 1, "leak": ["-Infinity"]}"#, Some(NotANumber)),
            (r#"{"addr": 1, "leak": ["inf"]}"#, Some(NotANumber)),
            // Temperature: −40–200 °C, null = not fitted, at most 4 channels.
            (r#"{"addr": 1, "temp": [-40, 200, null, null]}"#, None),
            (r#"{"addr": 1, "temp": [-40.1]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "temp": [200.1]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "temp": [1, 2, 3, 4, 5]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "temp": [false]}"#, Some(WrongType)),
            (r#"{"addr": 1, "temp": {"1": 20}}"#, Some(WrongType)),
            // Voltage: 0–1000 V, at most 3 phases.
            (r#"{"addr": 1, "u": [0, 1000, 230]}"#, None),
            (r#"{"addr": 1, "u": [1000.1]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "u": [-1]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "u": [220, 220, 220, 220]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "u": "220"}"#, Some(WrongType)),
            // Current: 0–10000 A, at most 3 phases.
            (r#"{"addr": 1, "i": [0, 10000]}"#, None),
            (r#"{"addr": 1, "i": [10000.5]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "i": [-0.01]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "i": [1, 2, 3, 4]}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "i": ["nan"]}"#, Some(NotANumber)),
            // Bit sets: integers 0–65535.
            (r#"{"addr": 1, "di": 0, "do": 65535}"#, None),
            (r#"{"addr": 1, "di": null, "do": null}"#, None),
            (r#"{"addr": 1, "di": 65536}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "do": -1}"#, Some(OutOfRange)),
            (r#"{"addr": 1, "di": 1.5}"#, Some(WrongType)),
            (r#"{"addr": 1, "di": 1.0}"#, Some(WrongType)),
            (r#"{"addr": 1, "do": "1"}"#, Some(WrongType)),
            (r#"{"addr": 1, "do": true}"#, Some(WrongType)),
            (r#"{"addr": 1, "di": [1]}"#, Some(WrongType)),
            // Unknown fields inside a detector.
            (r#"{"addr": 1, "tmp": [20]}"#, Some(UnknownField)),
            (r#"{"addr": 1, "Leak": [20]}"#, Some(UnknownField)),
            (r#"{"addr": 1, "extra": null}"#, Some(UnknownField)),
            // Unknown address wins over other problems of the entry: register it first.
            (r#"{"addr": 99, "tmp": [20]}"#, Some(UnknownAddress)),
        ];
        for (entry, expected) in cases {
            assert_eq!(entry_reason(entry), *expected, "{entry}");
        }
    }

    #[test]
    fn absent_fields_are_not_measured() {
        let t = telemetry(r#"{"detectors": [{"addr": 3}]}"#).unwrap();
        assert_eq!(t.readings, vec![(3, Reading { at: received(), ..Reading::default() })]);
        let t = telemetry(r#"{"detectors": [{"addr": 3, "leak": [null, 12], "u": [220, null, null]}]}"#).unwrap();
        assert_eq!(t.readings[0].1.leak_ma, vec![None, Some(12.0)]);
        assert_eq!(t.readings[0].1.voltage_v, vec![Some(220.0), None, None]);
        assert!(t.readings[0].1.temp_c.is_empty());
    }

    #[test]
    fn bad_entries_do_not_spoil_good_ones() {
        let t = telemetry(
            r#"{"ts": 1763892930123, "detectors": [
                {"addr": 1, "leak": [35]},
                {"addr": 2, "leak": [-50]},
                {"addr": 99, "leak": [1]},
                {"addr": 3, "temp": ["hot"]},
                {"addr": 1, "leak": [36]},
                "x",
                {"addr": 4, "leak": [40], "colour": "red"},
                {"addr": 5, "temp": [20, null]}
            ]}"#,
        )
        .unwrap();
        let addrs: Vec<u8> = t.readings.iter().map(|(a, _)| *a).collect();
        assert_eq!(addrs, vec![1, 5]);
        assert_eq!(t.readings[0].1.leak_ma, vec![Some(35.0)], "the first of a duplicated address is kept");
        let rejected: Vec<(usize, Option<u8>, RejectReason)> =
            t.rejected.iter().map(|r| (r.index, r.address, r.rejection.reason)).collect();
        assert_eq!(
            rejected,
            vec![
                (1, Some(2), RejectReason::OutOfRange),
                (2, Some(99), RejectReason::UnknownAddress),
                (3, Some(3), RejectReason::WrongType),
                (4, Some(1), RejectReason::DuplicateAddress),
                (5, None, RejectReason::WrongType),
                (6, Some(4), RejectReason::UnknownField),
            ]
        );
        assert!(t.rejected[0].rejection.detail.contains("detectors[1].leak[0]"), "{}", t.rejected[0].rejection);
        assert!(t.rejected[5].rejection.detail.contains("\"colour\""), "{}", t.rejected[5].rejection);
    }

    #[test]
    fn duplicates_are_refused_even_after_a_bad_first_entry() {
        let t = telemetry(r#"{"detectors": [{"addr": 1, "leak": [-1]}, {"addr": 1, "leak": [1]}]}"#).unwrap();
        assert!(t.readings.is_empty());
        let reasons: Vec<_> = t.rejected.iter().map(|r| r.rejection.reason).collect();
        assert_eq!(reasons, vec![RejectReason::OutOfRange, RejectReason::DuplicateAddress]);
    }

    #[test]
    fn registration_is_asked_once_per_address() {
        let asked = std::cell::RefCell::new(Vec::new());
        let t = decode_telemetry(
            br#"{"detectors": [{"addr": 7}, {"addr": 7}, {"addr": 8}, {"addr": 0}]}"#,
            received(),
            |a| {
                asked.borrow_mut().push(a);
                true
            },
        )
        .unwrap();
        assert_eq!(t.readings.len(), 2);
        assert_eq!(*asked.borrow(), vec![7, 8]);
    }

    #[test]
    fn long_device_text_is_shortened_in_details() {
        let key = "k".repeat(10_000);
        let t = telemetry(&format!(r#"{{"detectors": [{{"addr": 1, "{key}": 1}}]}}"#)).unwrap();
        assert!(t.rejected[0].rejection.detail.len() < 200);
    }

    #[test]
    fn events_of_every_type() {
        use EventKind::*;
        let cases: &[(&str, EventKind, Channel)] = &[
            (r#""type": "leak_alarm", "ch": 1"#, LeakAlarm, Channel::new(Quantity::Leak, 1)),
            (r#""type": "leak_alarm""#, LeakAlarm, Channel::new(Quantity::Leak, 0)),
            (r#""type": "temp_alarm", "ch": 4"#, TempAlarm, Channel::new(Quantity::Temp, 4)),
            (r#""type": "overvoltage", "ch": 3"#, Overvoltage, Channel::new(Quantity::Voltage, 3)),
            (r#""type": "undervoltage""#, Undervoltage, Channel::new(Quantity::Voltage, 0)),
            (r#""type": "overcurrent", "ch": 2"#, Overcurrent, Channel::new(Quantity::Current, 2)),
            (r#""type": "phase_loss", "ch": 1"#, PhaseLoss, Channel::new(Quantity::Voltage, 1)),
            (r#""type": "arc_fault""#, ArcFault, Channel::DETECTOR),
            (r#""type": "sensor_open", "ch": 2"#, SensorOpen, Channel::new(Quantity::Detector, 2)),
            (r#""type": "sensor_short""#, SensorShort, Channel::DETECTOR),
            (r#""type": "power_fault""#, PowerFault, Channel::DETECTOR),
            (r#""type": "trip""#, Trip, Channel::DETECTOR),
        ];
        for (fields, kind, channel) in cases {
            let json = format!(r#"{{"ts": 1763892931000, "addr": 1, {fields}}}"#);
            let e = event(&json).unwrap();
            let expected = DeviceEvent {
                at: ms(1_763_892_931_000),
                address: 1,
                kind: *kind,
                cause: None,
                channel: *channel,
                value: None,
                setpoint: None,
            };
            assert_eq!(e, expected, "{json}");
            assert_eq!(event_type_from_name(event_type_name(*kind).unwrap()), Some(*kind));
        }
        for kind in [Offline, Online, Command] {
            assert_eq!(event_type_name(kind), None);
        }
    }

    #[test]
    fn the_contract_event_example_decodes() {
        let e = event(
            r#"{"ts": 1763892931000, "addr": 1, "type": "leak_alarm", "ch": 1, "value": 512.0, "setpoint": 300.0}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::LeakAlarm);
        assert_eq!(e.channel, Channel::new(Quantity::Leak, 1));
        assert_eq!((e.value, e.setpoint), (Some(512.0), Some(300.0)));
        let e = event(r#"{"type":"recovered","cause":"leak_alarm","ch":1,"addr":2}"#).unwrap();
        assert_eq!((e.kind, e.cause, e.at), (EventKind::Recovered, Some(EventKind::LeakAlarm), received()));
        assert_eq!(e.channel, Channel::new(Quantity::Leak, 1));
    }

    #[test]
    fn event_rules() {
        use RejectReason::*;
        let cases: &[(&str, Result<(), RejectReason>)] = &[
            // Recovered needs an alarm or fault cause; its channel follows the cause.
            (r#""addr": 1, "type": "recovered", "cause": "temp_alarm", "ch": 2"#, Ok(())),
            (r#""addr": 1, "type": "recovered", "cause": "power_fault""#, Ok(())),
            (r#""addr": 1, "type": "recovered", "cause": "sensor_open", "ch": 1"#, Ok(())),
            (r#""addr": 1, "type": "recovered""#, Err(BadCause)),
            (r#""addr": 1, "type": "recovered", "cause": null"#, Err(BadCause)),
            (r#""addr": 1, "type": "recovered", "cause": "trip""#, Err(BadCause)),
            (r#""addr": 1, "type": "recovered", "cause": "recovered""#, Err(BadCause)),
            (r#""addr": 1, "type": "recovered", "cause": "offline""#, Err(BadCause)),
            (r#""addr": 1, "type": "recovered", "cause": 1"#, Err(BadCause)),
            (r#""addr": 1, "type": "recovered", "cause": "temp_alarm", "ch": 5"#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "cause": "leak_alarm""#, Err(BadCause)),
            // Types.
            (r#""addr": 1"#, Err(BadEventType)),
            (r#""addr": 1, "type": "LEAK_ALARM""#, Err(BadEventType)),
            (r#""addr": 1, "type": "offline""#, Err(BadEventType)),
            (r#""addr": 1, "type": "command""#, Err(BadEventType)),
            (r#""addr": 1, "type": "fire""#, Err(BadEventType)),
            (r#""addr": 1, "type": 1"#, Err(BadEventType)),
            // Addresses.
            (r#""type": "trip""#, Err(BadAddress)),
            (r#""addr": 0, "type": "trip""#, Err(BadAddress)),
            (r#""addr": 248, "type": "trip""#, Err(BadAddress)),
            (r#""addr": "1", "type": "trip""#, Err(BadAddress)),
            (r#""addr": 11, "type": "trip""#, Err(UnknownAddress)),
            // Channels are 1-based and bounded by the quantity.
            (r#""addr": 1, "type": "leak_alarm", "ch": 8"#, Ok(())),
            (r#""addr": 1, "type": "leak_alarm", "ch": 9"#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "ch": 0"#, Err(BadChannel)),
            (r#""addr": 1, "type": "temp_alarm", "ch": 4"#, Ok(())),
            (r#""addr": 1, "type": "temp_alarm", "ch": 5"#, Err(BadChannel)),
            (r#""addr": 1, "type": "overvoltage", "ch": 4"#, Err(BadChannel)),
            (r#""addr": 1, "type": "overcurrent", "ch": 4"#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "ch": 1.5"#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "ch": -1"#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "ch": "1""#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "ch": 256"#, Err(BadChannel)),
            (r#""addr": 1, "type": "leak_alarm", "ch": null"#, Ok(())),
            // Values and set-points in the range of the kind's quantity.
            (r#""addr": 1, "type": "leak_alarm", "value": 10000, "setpoint": 20"#, Ok(())),
            (r#""addr": 1, "type": "leak_alarm", "value": 10001"#, Err(OutOfRange)),
            (r#""addr": 1, "type": "leak_alarm", "setpoint": -1"#, Err(OutOfRange)),
            (r#""addr": 1, "type": "temp_alarm", "value": -40, "setpoint": 200"#, Ok(())),
            (r#""addr": 1, "type": "temp_alarm", "value": 250"#, Err(OutOfRange)),
            (r#""addr": 1, "type": "overvoltage", "value": 1001"#, Err(OutOfRange)),
            (r#""addr": 1, "type": "overcurrent", "value": 10001"#, Err(OutOfRange)),
            (r#""addr": 1, "type": "recovered", "cause": "temp_alarm", "value": 300"#, Err(OutOfRange)),
            (r#""addr": 1, "type": "arc_fault", "value": 123456.0"#, Ok(())),
            (r#""addr": 1, "type": "arc_fault", "value": 1e308"#, Ok(())),
            (r#""addr": 1, "type": "leak_alarm", "value": "512""#, Err(WrongType)),
            (r#""addr": 1, "type": "leak_alarm", "value": true"#, Err(WrongType)),
            (r#""addr": 1, "type": "leak_alarm", "value": "NaN""#, Err(NotANumber)),
            (r#""addr": 1, "type": "leak_alarm", "value": null, "setpoint": null"#, Ok(())),
            // Unknown top-level fields are ignored.
            (r#""addr": 1, "type": "trip", "source": "button""#, Ok(())),
        ];
        for (fields, expected) in cases {
            let json = format!("{{{fields}}}");
            assert_eq!(event(&json).map(|_| ()).map_err(|r| r.reason), *expected, "{json}");
        }
        let e = event(r#"{"addr": 1, "type": "recovered", "cause": "temp_alarm", "ch": 2}"#).unwrap();
        assert_eq!(e.channel, Channel::new(Quantity::Temp, 2));
        let e = event(r#"{"addr": 1, "type": "recovered", "cause": "power_fault"}"#).unwrap();
        assert_eq!(e.channel, Channel::DETECTOR);
        for json in ["", "x", "[]"] {
            assert!(event(json).is_err());
        }
    }

    #[test]
    fn statuses() {
        let cases: &[(&str, Result<bool, RejectReason>)] = &[
            (r#"{"online": true}"#, Ok(true)),
            (r#"{"online": false}"#, Ok(false)),
            (r#"{"online": false, "reason": "will"}"#, Ok(false)),
            (r#"{"online": "true"}"#, Err(RejectReason::BadStatus)),
            (r#"{"online": 1}"#, Err(RejectReason::BadStatus)),
            (r#"{"online": null}"#, Err(RejectReason::BadStatus)),
            ("{}", Err(RejectReason::BadStatus)),
            ("true", Err(RejectReason::WrongType)),
            ("online", Err(RejectReason::NotJson)),
            ("", Err(RejectReason::NotJson)),
        ];
        for (json, expected) in cases {
            assert_eq!(decode_status(json.as_bytes()).map_err(|r| r.reason), *expected, "{json}");
        }
    }

    #[test]
    fn command_results() {
        let id = Uuid::parse_str("8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10").unwrap();
        let ok = CommandResult { id, ok: true, code: 0, msg: Some("done".into()) };
        let cases: &[(&str, Result<CommandResult, RejectReason>)] = &[
            (r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": 0, "msg": "done"}"#, Ok(ok.clone())),
            (
                r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": false, "code": -3}"#,
                Ok(CommandResult { id, ok: false, code: -3, msg: None }),
            ),
            (
                r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": false, "code": 2, "msg": null}"#,
                Ok(CommandResult { id, ok: false, code: 2, msg: None }),
            ),
            (r#"{"ok": true, "code": 0}"#, Err(RejectReason::BadCommandResult)),
            (r#"{"id": "nope", "ok": true, "code": 0}"#, Err(RejectReason::BadCommandResult)),
            (r#"{"id": 5, "ok": true, "code": 0}"#, Err(RejectReason::BadCommandResult)),
            (r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "code": 0}"#, Err(RejectReason::BadCommandResult)),
            (
                r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": "yes", "code": 0}"#,
                Err(RejectReason::BadCommandResult),
            ),
            (r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true}"#, Err(RejectReason::BadCommandResult)),
            (
                r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": 0.5}"#,
                Err(RejectReason::BadCommandResult),
            ),
            (
                r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": "0"}"#,
                Err(RejectReason::BadCommandResult),
            ),
            (
                r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": 0, "msg": 1}"#,
                Err(RejectReason::BadCommandResult),
            ),
            ("[]", Err(RejectReason::WrongType)),
            ("{", Err(RejectReason::NotJson)),
        ];
        for (json, expected) in cases {
            assert_eq!(decode_command_result(json.as_bytes()).map_err(|r| r.reason), *expected, "{json}");
        }
    }

    fn command(op: CommandOp, params: Option<SetThresholds>) -> CommandMessage {
        CommandMessage {
            id: Uuid::parse_str("8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10").unwrap(),
            addr: 1,
            op,
            params,
            expires: ms(1_763_893_230_000),
        }
    }

    fn encoded(c: &CommandMessage) -> Value {
        serde_json::from_slice(&encode_command(c).unwrap()).unwrap()
    }

    #[test]
    fn commands_encode_as_the_contract() {
        let params =
            SetThresholds { leak_ma: Some(300.0), leak_delay_s: Some(5.0), temp_c: Some(85.0), ..Default::default() };
        let json =
            String::from_utf8(encode_command(&command(CommandOp::SetThresholds, Some(params))).unwrap()).unwrap();
        assert!(json.contains(r#""leak_ma":300,"#) || json.contains(r#""leak_ma":300}"#), "{json}");
        assert!(json.contains(r#""leak_delay_s":5.0"#), "{json}");
        let expected = serde_json::json!({
            "id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "addr": 1, "op": "set_thresholds",
            "params": {"leak_ma": 300, "leak_delay_s": 5.0, "temp_c": 85},
            "expires": 1_763_893_230_000_i64
        });
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), expected);

        for op in CommandOp::ALL.into_iter().filter(|op| *op != CommandOp::SetThresholds) {
            let v = encoded(&command(op, None));
            let expected = serde_json::json!({
                "id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "addr": 1, "op": op.code(),
                "expires": 1_763_893_230_000_i64
            });
            assert_eq!(v, expected);
            assert_eq!(CommandOp::from_code(op.code()), Some(op));
        }
        let all = SetThresholds {
            leak_ma: Some(500.0),
            leak_delay_s: Some(0.5),
            temp_c: Some(140.0),
            overvoltage_v: Some(253.1),
            undervoltage_v: Some(187.0),
            overcurrent_a: Some(63.25),
        };
        let v = encoded(&command(CommandOp::SetThresholds, Some(all)));
        assert_eq!(
            v["params"],
            serde_json::json!({"leak_ma": 500, "leak_delay_s": 0.5, "temp_c": 140, "overvoltage_v": 253.1,
                "undervoltage_v": 187.0, "overcurrent_a": 63.25})
        );
        assert_eq!(serde_json::to_value(CommandOp::SelfTest).unwrap(), "self_test");
    }

    #[test]
    fn command_validation_names_the_field() {
        let t = |f: fn(&mut SetThresholds)| {
            let mut s = SetThresholds::default();
            f(&mut s);
            encode_command(&command(CommandOp::SetThresholds, Some(s))).map(|_| ()).map_err(|e| e.field)
        };
        type Tweak = fn(&mut SetThresholds);
        let cases: &[(Tweak, Result<(), &str>)] = &[
            (|s| s.leak_ma = Some(20.0), Ok(())),
            (|s| s.leak_ma = Some(1000.0), Ok(())),
            (|s| s.leak_ma = Some(19.0), Err("leakMa")),
            (|s| s.leak_ma = Some(1001.0), Err("leakMa")),
            (|s| s.leak_ma = Some(300.5), Err("leakMa")),
            (|s| s.leak_ma = Some(f64::NAN), Err("leakMa")),
            (|s| s.leak_delay_s = Some(0.0), Ok(())),
            (|s| s.leak_delay_s = Some(60.0), Ok(())),
            (|s| s.leak_delay_s = Some(0.3), Ok(())),
            (|s| s.leak_delay_s = Some(60.1), Err("leakDelayS")),
            (|s| s.leak_delay_s = Some(-0.1), Err("leakDelayS")),
            (|s| s.leak_delay_s = Some(1.25), Err("leakDelayS")),
            (|s| s.temp_c = Some(55.0), Ok(())),
            (|s| s.temp_c = Some(140.0), Ok(())),
            (|s| s.temp_c = Some(54.0), Err("tempC")),
            (|s| s.temp_c = Some(141.0), Err("tempC")),
            (|s| s.temp_c = Some(85.5), Err("tempC")),
            (|s| s.overvoltage_v = Some(253.1), Ok(())),
            (|s| s.overvoltage_v = Some(253.15), Err("overvoltageV")),
            (|s| s.overvoltage_v = Some(1000.1), Err("overvoltageV")),
            (|s| s.undervoltage_v = Some(187.0), Ok(())),
            (|s| s.undervoltage_v = Some(10.0), Err("undervoltageV")),
            (
                |s| {
                    s.overvoltage_v = Some(200.0);
                    s.undervoltage_v = Some(200.0);
                },
                Err("undervoltageV"),
            ),
            (|s| s.overcurrent_a = Some(63.25), Ok(())),
            (|s| s.overcurrent_a = Some(0.05), Err("overcurrentA")),
            (|s| s.overcurrent_a = Some(63.255), Err("overcurrentA")),
            (|_| {}, Err("params")),
        ];
        for (i, (f, expected)) in cases.iter().enumerate() {
            assert_eq!(t(*f), expected.map_err(String::from), "case {i}");
        }
        let mut c = command(CommandOp::SetThresholds, None);
        assert_eq!(encode_command(&c).unwrap_err().field, "params");
        c.op = CommandOp::Trip;
        c.params = Some(SetThresholds { leak_ma: Some(300.0), ..Default::default() });
        assert_eq!(encode_command(&c).unwrap_err().field, "params");
        c.params = None;
        for (addr, ok) in [(0, false), (1, true), (247, true), (248, false), (255, false)] {
            c.addr = addr;
            assert_eq!(encode_command(&c).is_ok(), ok, "{addr}");
            if !ok {
                assert_eq!(encode_command(&c).unwrap_err().field, "address");
            }
        }
    }
}
