//! Decoding and validation of what devices publish: telemetry, events, status and command
//! results.

use super::*;

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
