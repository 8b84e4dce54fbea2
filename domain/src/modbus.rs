//! The Modbus TCP side of the device protocol (version 1, `shared/design/DEVICE-PROTOCOL.md` §2)
//! as pure encoding and decoding of register values; the I/O (function 04 polls, 05 coil
//! writes, 06/16 writes and 03 read-backs) belongs to the caller.
//!
//! Layout:
//! - [`decode_input_registers`] → [`Poll`]: the [`Reading`] and [`BitStatus`] of input
//!   registers 0–15.
//! - [`status_events`] — edges of the alarm, fault and relay bits between two polls →
//!   [`DeviceEvent`]s, in the same shape as MQTT events.
//! - [`encode_thresholds`] / [`decode_thresholds`] / [`thresholds_match`] — set-points in
//!   holding registers 100–105 and the read-back check after writing them.
//! - [`coil_for`] — the coil (0–4) of each operation.
//!
//! Register values outside the contract's ranges (the same ranges as MQTT telemetry) are not
//! measurements: such a value becomes `None` and is listed in [`Poll::rejected`], while the
//! rest of the poll — above all the alarm bits — still counts. Only a block of the wrong
//! length or a relay register other than 0/1 refuses the whole poll, because the status
//! derived from it could not be trusted.

use chrono::{DateTime, Utc};

use crate::payload::{CommandOp, RejectReason, Rejection, SetThresholds, range_of};
use crate::reading::{Channel, DeviceEvent, EventKind, Quantity, Reading};
use crate::validate::ValidationError;

/// First input register of a poll.
pub const INPUT_REGISTER_START: u16 = 0;
/// Number of input registers a poll reads in one function 04 request.
pub const INPUT_REGISTER_COUNT: u16 = 16;
/// First set-point holding register.
pub const THRESHOLD_REGISTER_START: u16 = 100;
/// Number of set-point holding registers (100–105).
pub const THRESHOLD_REGISTER_COUNT: u16 = 6;
/// Temperature register value meaning "sensor open / not fitted".
pub const TEMP_SENSOR_OPEN: u16 = 0x7FFF;
/// Temperature register value meaning "sensor short".
pub const TEMP_SENSOR_SHORT: u16 = 0x8000;
/// Failed polls in a row after which a detector has a communication fault; the next good
/// poll clears it.
pub const FAILED_POLLS_FOR_COMM_FAULT: u32 = 3;

/// The alarm, fault and relay state of one poll (registers 13–15). Bits the contract does
/// not define are cleared, so that equal statuses mean "nothing changed".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BitStatus {
    /// Register 13: bit 0 leak, 1–4 temperature 1–4, 5 over-voltage, 6 under-voltage,
    /// 7 over-current, 8 phase loss, 9 arc fault.
    pub alarms: u16,
    /// Register 14: bit 0 leak sensor open, 1 leak sensor short, 2–5 temperature sensor 1–4
    /// open, 6–9 temperature sensor 1–4 short, 10 power fault.
    pub faults: u16,
    /// Register 15: whether the relay is tripped (1) rather than closed (0).
    pub tripped: bool,
}

impl BitStatus {
    /// The alarm bits the contract defines (0–9).
    pub const ALARM_MASK: u16 = 0x03FF;
    /// The fault bits the contract defines (0–10).
    pub const FAULT_MASK: u16 = 0x07FF;
}

/// One decoded poll of a detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Poll {
    /// The measured values: one leakage channel, four temperatures, three voltages, three
    /// currents, DI and DO. A channel whose sensor is open/short (sentinel or fault bit) or
    /// whose value is out of range is `None`.
    pub reading: Reading,
    /// Alarm, fault and relay bits.
    pub status: BitStatus,
    /// Out-of-range register values (reason `out_of_range`), to count and dead-letter.
    pub rejected: Vec<Rejection>,
}

/// Decodes input registers 0–15 of one detector, read at `at`.
///
/// Encodings: register 0 leakage in mA; 1–4 temperatures in 0.1 °C, signed, with
/// [`TEMP_SENSOR_OPEN`] and [`TEMP_SENSOR_SHORT`] as "no value"; 5–7 voltages in 0.1 V;
/// 8–10 currents in 0.01 A; 11 DI; 12 DO; 13 alarm bits; 14 fault bits; 15 relay.
/// A leakage or temperature channel whose sensor fault bit is set has no value either: what
/// a broken sensor reads is not a measurement and must not raise an alarm.
pub fn decode_input_registers(regs: &[u16], at: DateTime<Utc>) -> Result<Poll, Rejection> {
    let regs: &[u16; 16] = regs.try_into().map_err(|_| {
        Rejection::new(
            RejectReason::BadRegisterCount,
            format!("a poll returned {} registers instead of {INPUT_REGISTER_COUNT}", regs.len()),
        )
    })?;
    let tripped = match regs[15] {
        0 => false,
        1 => true,
        other => {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("register 15 (relay) = {other} is neither 0 (closed) nor 1 (tripped)"),
            ));
        }
    };
    let status =
        BitStatus { alarms: regs[13] & BitStatus::ALARM_MASK, faults: regs[14] & BitStatus::FAULT_MASK, tripped };
    let fault = |bit: u16| status.faults & (1 << bit) != 0;

    let mut rejected = Vec::new();
    let mut checked = |register: usize, what: &str, value: f64, quantity: Quantity| {
        let (min, max, unit) = range_of(quantity);
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            rejected.push(Rejection::new(
                RejectReason::OutOfRange,
                format!(
                    "register {register} ({what}) = {:#06X} → {value} {unit} is outside {min}–{max} {unit}",
                    regs[register]
                ),
            ));
            None
        }
    };

    let leak = if fault(0) || fault(1) { None } else { checked(0, "leakage 1", f64::from(regs[0]), Quantity::Leak) };
    let mut temp_c = Vec::with_capacity(4);
    for n in 1..=4_u16 {
        let raw = regs[usize::from(n)];
        // Fault bits: temperature n open is bit n + 1, short is bit n + 5.
        let no_value = raw == TEMP_SENSOR_OPEN || raw == TEMP_SENSOR_SHORT || fault(n + 1) || fault(n + 5);
        temp_c.push(if no_value {
            None
        } else {
            let tenths = f64::from(raw.cast_signed());
            checked(usize::from(n), &format!("temperature {n}"), tenths / 10.0, Quantity::Temp)
        });
    }
    let voltage_v = (5..=7)
        .map(|r| checked(r, &format!("voltage {}", r - 4), f64::from(regs[r]) / 10.0, Quantity::Voltage))
        .collect();
    let current_a = (8..=10)
        .map(|r| checked(r, &format!("current {}", r - 7), f64::from(regs[r]) / 100.0, Quantity::Current))
        .collect();

    let reading = Reading {
        at,
        leak_ma: vec![leak],
        temp_c,
        voltage_v,
        current_a,
        digital_in: Some(regs[11]),
        digital_out: Some(regs[12]),
    };
    Ok(Poll { reading, status, rejected })
}

/// A bit table: bit, kind, channel.
type BitTable = [(u16, EventKind, Channel)];

/// Alarm bits: bit, kind, channel. Voltage and current alarms do not say which phase, so
/// they concern the whole quantity (channel number 0).
const ALARM_BITS: [(u16, EventKind, Channel); 10] = [
    (0, EventKind::LeakAlarm, Channel::new(Quantity::Leak, 1)),
    (1, EventKind::TempAlarm, Channel::new(Quantity::Temp, 1)),
    (2, EventKind::TempAlarm, Channel::new(Quantity::Temp, 2)),
    (3, EventKind::TempAlarm, Channel::new(Quantity::Temp, 3)),
    (4, EventKind::TempAlarm, Channel::new(Quantity::Temp, 4)),
    (5, EventKind::Overvoltage, Channel::new(Quantity::Voltage, 0)),
    (6, EventKind::Undervoltage, Channel::new(Quantity::Voltage, 0)),
    (7, EventKind::Overcurrent, Channel::new(Quantity::Current, 0)),
    (8, EventKind::PhaseLoss, Channel::new(Quantity::Voltage, 0)),
    (9, EventKind::ArcFault, Channel::DETECTOR),
];

/// Fault bits: bit, kind, channel (the faulty sensor's channel).
const FAULT_BITS: [(u16, EventKind, Channel); 11] = [
    (0, EventKind::SensorOpen, Channel::new(Quantity::Leak, 1)),
    (1, EventKind::SensorShort, Channel::new(Quantity::Leak, 1)),
    (2, EventKind::SensorOpen, Channel::new(Quantity::Temp, 1)),
    (3, EventKind::SensorOpen, Channel::new(Quantity::Temp, 2)),
    (4, EventKind::SensorOpen, Channel::new(Quantity::Temp, 3)),
    (5, EventKind::SensorOpen, Channel::new(Quantity::Temp, 4)),
    (6, EventKind::SensorShort, Channel::new(Quantity::Temp, 1)),
    (7, EventKind::SensorShort, Channel::new(Quantity::Temp, 2)),
    (8, EventKind::SensorShort, Channel::new(Quantity::Temp, 3)),
    (9, EventKind::SensorShort, Channel::new(Quantity::Temp, 4)),
    (10, EventKind::PowerFault, Channel::DETECTOR),
];

/// The events between two polls of the detector at `address`: a newly set alarm or fault bit
/// raises its kind on its channel, a cleared one gives `Recovered` with that kind as `cause`,
/// and the relay going from closed to tripped gives `Trip` (closing it gives nothing: the
/// contract has no event for it). Alarms come first (by bit), then faults, then the relay.
///
/// `previous = None` (the first poll since start) reports what is set — alarms, faults and a
/// tripped relay — and no recoveries. Pass the last status persisted for the detector instead
/// of `None` where one exists, so that a restart does not report standing conditions again.
pub fn status_events(
    previous: Option<BitStatus>,
    current: BitStatus,
    address: u8,
    at: DateTime<Utc>,
) -> Vec<DeviceEvent> {
    let event = |kind: EventKind, cause: Option<EventKind>, channel: Channel| DeviceEvent {
        at,
        address,
        kind,
        cause,
        channel,
        value: None,
        setpoint: None,
    };
    let mut events = Vec::new();
    let tables: [(&BitTable, Option<u16>, u16); 2] = [
        (&ALARM_BITS, previous.map(|p| p.alarms), current.alarms),
        (&FAULT_BITS, previous.map(|p| p.faults), current.faults),
    ];
    for (table, before, now) in tables {
        for &(bit, kind, channel) in table {
            let was = before.map(|b| b & (1 << bit) != 0);
            let is = now & (1 << bit) != 0;
            match (was, is) {
                (None | Some(false), true) => events.push(event(kind, None, channel)),
                (Some(true), false) => events.push(event(EventKind::Recovered, Some(kind), channel)),
                _ => {}
            }
        }
    }
    if current.tripped && !previous.is_some_and(|p| p.tripped) {
        events.push(event(EventKind::Trip, None, Channel::DETECTOR));
    }
    events
}

/// Register units per set-point, in register order 100–105: leak mA, delay 0.1 s, temperature
/// °C, over-voltage 0.1 V, under-voltage 0.1 V, over-current 0.01 A.
const THRESHOLD_SCALES: [f64; 6] = [1.0, 10.0, 1.0, 10.0, 10.0, 100.0];

/// Encodes set-points as (holding register, value) pairs for functions 06/16, only for the
/// set-points given, in register order. Validates first ([`SetThresholds::validate`]); besides,
/// an over-current set-point above 655.35 A does not fit register 105 (0.01 A units).
pub fn encode_thresholds(thresholds: &SetThresholds) -> Result<Vec<(u16, u16)>, ValidationError> {
    thresholds.validate()?;
    let mut writes = Vec::new();
    for ((register, (field, value, _, unit)), scale) in
        (THRESHOLD_REGISTER_START..).zip(thresholds.fields()).zip(THRESHOLD_SCALES)
    {
        if let Some(v) = value {
            let raw = (v * scale).round();
            let raw = if (0.0..=f64::from(u16::MAX)).contains(&raw) {
                // In range and whole, so the conversion is exact.
                raw as u16
            } else {
                return Err(ValidationError::new(
                    field,
                    format!("must be at most {} {unit} on a Modbus detector", f64::from(u16::MAX) / scale),
                ));
            };
            writes.push((register, raw));
        }
    }
    Ok(writes)
}

/// Decodes holding registers 100–105 as read back (function 03) into set-points in physical
/// units; every field is `Some`. No range check: this is what the device holds.
pub fn decode_thresholds(regs: &[u16; 6]) -> SetThresholds {
    let [leak_ma, leak_delay_s, temp_c, overvoltage_v, undervoltage_v, overcurrent_a] =
        std::array::from_fn(|i| Some(f64::from(regs[i]) / THRESHOLD_SCALES[i]));
    SetThresholds { leak_ma, leak_delay_s, temp_c, overvoltage_v, undervoltage_v, overcurrent_a }
}

/// A set-point register that did not read back as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdMismatch {
    /// The holding register.
    pub register: u16,
    /// The set-point's field name as the API spells it (`leakMa`); `None` for a register
    /// outside 100–105.
    pub field: Option<&'static str>,
    /// The value written.
    pub written: u16,
    /// The value read back; `None` for a register outside 100–105.
    pub read: Option<u16>,
}

/// Compares the writes of [`encode_thresholds`] with registers 100–105 read back afterwards;
/// the command fails with the mismatches when any written register differs. Registers not
/// written are not compared. The comparison is in register units, so it is exact.
pub fn thresholds_match(written: &[(u16, u16)], read_back: &[u16; 6]) -> Result<(), Vec<ThresholdMismatch>> {
    let names = SetThresholds::default().fields().map(|(name, ..)| name);
    let mismatches: Vec<ThresholdMismatch> = written
        .iter()
        .filter_map(|&(register, value)| {
            let slot = register
                .checked_sub(THRESHOLD_REGISTER_START)
                .map(usize::from)
                .filter(|i| *i < usize::from(THRESHOLD_REGISTER_COUNT));
            let read = slot.map(|i| read_back[i]);
            (read != Some(value)).then_some(ThresholdMismatch {
                register,
                field: slot.map(|i| names[i]),
                written: value,
                read,
            })
        })
        .collect();
    if mismatches.is_empty() { Ok(()) } else { Err(mismatches) }
}

/// The coil an operation writes ON (function 05): trip 0, close 1, reset 2, self-test 3,
/// silence 4. `SetThresholds` writes holding registers instead and has none.
pub const fn coil_for(op: CommandOp) -> Option<u16> {
    match op {
        CommandOp::Trip => Some(0),
        CommandOp::Close => Some(1),
        CommandOp::Reset => Some(2),
        CommandOp::SelfTest => Some(3),
        CommandOp::Silence => Some(4),
        CommandOp::SetThresholds => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_763_892_930_000).unwrap()
    }

    /// A healthy poll: 35 mA, 41.5/40.1 °C and two open sensors, 220.1/221.0/219.8 V,
    /// 10.20/9.80/11.00 A, DI 1, DO 0, no alarms, no faults, relay closed.
    fn healthy() -> [u16; 16] {
        [35, 415, 401, 0x7FFF, 0x7FFF, 2201, 2210, 2198, 1020, 980, 1100, 1, 0, 0, 0, 0]
    }

    fn poll(regs: &[u16]) -> Poll {
        decode_input_registers(regs, at()).unwrap()
    }

    #[test]
    fn a_healthy_poll_decodes() {
        let p = poll(&healthy());
        let expected = Reading {
            at: at(),
            leak_ma: vec![Some(35.0)],
            temp_c: vec![Some(41.5), Some(40.1), None, None],
            voltage_v: vec![Some(220.1), Some(221.0), Some(219.8)],
            current_a: vec![Some(10.2), Some(9.8), Some(11.0)],
            digital_in: Some(1),
            digital_out: Some(0),
        };
        assert_eq!(p.reading, expected);
        assert_eq!(p.status, BitStatus::default());
        assert!(p.rejected.is_empty());
    }

    #[test]
    fn every_register() {
        // The decoded value a register feeds.
        let decoded = |p: &Poll, register: usize| -> Option<f64> {
            let r = &p.reading;
            match register {
                0 => r.leak_ma[0],
                1..=4 => r.temp_c[register - 1],
                5..=7 => r.voltage_v[register - 5],
                8..=10 => r.current_a[register - 8],
                11 => r.digital_in.map(f64::from),
                _ => r.digital_out.map(f64::from),
            }
        };
        // (register, raw value, expected value, no rejection)
        let cases: &[(usize, u16, Option<f64>, bool)] = &[
            // Leakage: mA unsigned, at most 10000.
            (0, 0, Some(0.0), true),
            (0, 10_000, Some(10_000.0), true),
            (0, 10_001, None, false),
            (0, 0xFFFF, None, false),
            // Temperatures: 0.1 °C signed, −40–200, sentinels.
            (1, 0, Some(0.0), true),
            (1, 0xFFCE, Some(-5.0), true),
            (2, 0xFE70, Some(-40.0), true),
            (2, 0xFE6F, None, false),
            (3, 2000, Some(200.0), true),
            (3, 2001, None, false),
            (4, 0x7FFF, None, true),
            (4, 0x8000, None, true),
            (4, 0x7FFE, None, false),
            (4, 0x8001, None, false),
            (4, 255, Some(25.5), true),
            // Voltages: 0.1 V unsigned, at most 1000 V.
            (5, 0, Some(0.0), true),
            (6, 10_000, Some(1000.0), true),
            (7, 10_001, None, false),
            (7, 2305, Some(230.5), true),
            // Currents: 0.01 A unsigned (at most 655.35 A, always in range).
            (8, 0, Some(0.0), true),
            (9, 0xFFFF, Some(655.35), true),
            (10, 1, Some(0.01), true),
            // DI / DO: raw bit sets.
            (11, 0xFFFF, Some(65535.0), true),
            (12, 0x8001, Some(32769.0), true),
        ];
        for &(register, raw, expected, clean) in cases {
            let mut regs = healthy();
            regs[register] = raw;
            let p = poll(&regs);
            assert_eq!(decoded(&p, register), expected, "register {register} = {raw:#06X}");
            assert_eq!(p.rejected.is_empty(), clean, "register {register} = {raw:#06X}: {:?}", p.rejected);
            if !clean {
                assert_eq!(p.rejected.len(), 1);
                assert_eq!(p.rejected[0].reason, RejectReason::OutOfRange);
                assert!(p.rejected[0].detail.starts_with(&format!("register {register} ")), "{}", p.rejected[0]);
            }
        }
    }

    #[test]
    fn broken_polls_are_refused_whole() {
        for len in [0, 15, 17, 125] {
            let regs = vec![0; len];
            let r = decode_input_registers(&regs, at()).unwrap_err();
            assert_eq!(r.reason, RejectReason::BadRegisterCount, "{len}");
        }
        for (relay, result) in [(0, Ok(false)), (1, Ok(true)), (2, Err(RejectReason::OutOfRange))] {
            let mut regs = healthy();
            regs[15] = relay;
            let got = decode_input_registers(&regs, at()).map(|p| p.status.tripped).map_err(|r| r.reason);
            assert_eq!(got, result, "{relay}");
        }
    }

    #[test]
    fn status_bits_are_masked() {
        let mut regs = healthy();
        regs[13] = 0xFFFF;
        regs[14] = 0xFFFF;
        let s = poll(&regs).status;
        assert_eq!((s.alarms, s.faults), (0x03FF, 0x07FF));
    }

    #[test]
    fn faulty_sensors_have_no_value() {
        // (fault bits, channels that lose their value: leak?, temp 1–4?)
        let cases: &[(u16, [bool; 5])] = &[
            (0, [false; 5]),
            (1 << 0, [true, false, false, false, false]),
            (1 << 1, [true, false, false, false, false]),
            (1 << 2, [false, true, false, false, false]),
            (1 << 5, [false, false, false, false, true]),
            (1 << 6, [false, true, false, false, false]),
            (1 << 9, [false, false, false, false, true]),
            (1 << 10, [false; 5]),
        ];
        let mut regs = healthy();
        regs[1..=4].copy_from_slice(&[200, 210, 220, 230]);
        for &(faults, lost) in cases {
            regs[14] = faults;
            let p = poll(&regs);
            let none = [
                p.reading.leak_ma[0],
                p.reading.temp_c[0],
                p.reading.temp_c[1],
                p.reading.temp_c[2],
                p.reading.temp_c[3],
            ]
            .map(|v| v.is_none());
            assert_eq!(none, lost, "faults {faults:#b}");
        }
    }

    fn status(alarms: u16, faults: u16, tripped: bool) -> BitStatus {
        BitStatus { alarms, faults, tripped }
    }

    /// (kind, cause, channel) of each event, for compact expectations.
    fn summary(events: &[DeviceEvent]) -> Vec<(EventKind, Option<EventKind>, Channel)> {
        events.iter().map(|e| (e.kind, e.cause, e.channel)).collect()
    }

    #[test]
    fn every_alarm_and_fault_bit_raises_and_recovers() {
        use EventKind::*;
        let alarms: [(u16, EventKind, Channel); 10] = [
            (0, LeakAlarm, Channel::new(Quantity::Leak, 1)),
            (1, TempAlarm, Channel::new(Quantity::Temp, 1)),
            (2, TempAlarm, Channel::new(Quantity::Temp, 2)),
            (3, TempAlarm, Channel::new(Quantity::Temp, 3)),
            (4, TempAlarm, Channel::new(Quantity::Temp, 4)),
            (5, Overvoltage, Channel::new(Quantity::Voltage, 0)),
            (6, Undervoltage, Channel::new(Quantity::Voltage, 0)),
            (7, Overcurrent, Channel::new(Quantity::Current, 0)),
            (8, PhaseLoss, Channel::new(Quantity::Voltage, 0)),
            (9, ArcFault, Channel::DETECTOR),
        ];
        let faults: [(u16, EventKind, Channel); 11] = [
            (0, SensorOpen, Channel::new(Quantity::Leak, 1)),
            (1, SensorShort, Channel::new(Quantity::Leak, 1)),
            (2, SensorOpen, Channel::new(Quantity::Temp, 1)),
            (3, SensorOpen, Channel::new(Quantity::Temp, 2)),
            (4, SensorOpen, Channel::new(Quantity::Temp, 3)),
            (5, SensorOpen, Channel::new(Quantity::Temp, 4)),
            (6, SensorShort, Channel::new(Quantity::Temp, 1)),
            (7, SensorShort, Channel::new(Quantity::Temp, 2)),
            (8, SensorShort, Channel::new(Quantity::Temp, 3)),
            (9, SensorShort, Channel::new(Quantity::Temp, 4)),
            (10, PowerFault, Channel::DETECTOR),
        ];
        let idle = status(0, 0, false);
        for (bit, kind, channel) in alarms {
            let on = status(1 << bit, 0, false);
            assert_eq!(
                summary(&status_events(Some(idle), on, 7, at())),
                vec![(kind, None, channel)],
                "alarm bit {bit}"
            );
            assert_eq!(summary(&status_events(Some(on), on, 7, at())), vec![], "alarm bit {bit} held");
            assert_eq!(
                summary(&status_events(Some(on), idle, 7, at())),
                vec![(Recovered, Some(kind), channel)],
                "alarm bit {bit} cleared"
            );
        }
        for (bit, kind, channel) in faults {
            let on = status(0, 1 << bit, false);
            assert_eq!(
                summary(&status_events(Some(idle), on, 7, at())),
                vec![(kind, None, channel)],
                "fault bit {bit}"
            );
            assert_eq!(
                summary(&status_events(Some(on), idle, 7, at())),
                vec![(Recovered, Some(kind), channel)],
                "fault bit {bit} cleared"
            );
        }
        // Events carry the address and time; no value or set-point.
        let e = &status_events(None, status(1, 0, false), 7, at())[0];
        assert_eq!((e.address, e.at, e.value, e.setpoint), (7, at(), None, None));
    }

    #[test]
    fn simultaneous_edges_are_ordered_alarms_faults_relay() {
        use EventKind::*;
        let before = status(0b10, 0b100_0000_0000, false);
        let after = status(0b01, 0b1, true);
        assert_eq!(
            summary(&status_events(Some(before), after, 1, at())),
            vec![
                (LeakAlarm, None, Channel::new(Quantity::Leak, 1)),
                (Recovered, Some(TempAlarm), Channel::new(Quantity::Temp, 1)),
                (SensorOpen, None, Channel::new(Quantity::Leak, 1)),
                (Recovered, Some(PowerFault), Channel::DETECTOR),
                (Trip, None, Channel::DETECTOR),
            ]
        );
    }

    #[test]
    fn first_poll_reports_set_bits_only() {
        use EventKind::*;
        assert!(status_events(None, status(0, 0, false), 1, at()).is_empty());
        assert_eq!(
            summary(&status_events(None, status(1 << 9, 1 << 10, true), 1, at())),
            vec![
                (ArcFault, None, Channel::DETECTOR),
                (PowerFault, None, Channel::DETECTOR),
                (Trip, None, Channel::DETECTOR)
            ]
        );
    }

    #[test]
    fn relay_edges() {
        let cases = [
            (Some(false), false, false),
            (Some(false), true, true),
            (Some(true), true, false),
            (Some(true), false, false),
            (None, true, true),
            (None, false, false),
        ];
        for (before, now, trip) in cases {
            let events = status_events(before.map(|t| status(0, 0, t)), status(0, 0, now), 1, at());
            assert_eq!(
                summary(&events) == vec![(EventKind::Trip, None, Channel::DETECTOR)],
                trip,
                "{before:?} → {now}"
            );
            assert!(trip || events.is_empty());
        }
    }

    #[test]
    fn thresholds_encode_and_round_trip() {
        let all = SetThresholds {
            leak_ma: Some(300.0),
            leak_delay_s: Some(5.0),
            temp_c: Some(85.0),
            overvoltage_v: Some(253.1),
            undervoltage_v: Some(187.0),
            overcurrent_a: Some(63.25),
        };
        let writes = encode_thresholds(&all).unwrap();
        assert_eq!(writes, vec![(100, 300), (101, 50), (102, 85), (103, 2531), (104, 1870), (105, 6325)]);
        let regs: [u16; 6] = std::array::from_fn(|i| writes[i].1);
        assert_eq!(decode_thresholds(&regs), all);
        assert_eq!(thresholds_match(&writes, &regs), Ok(()));

        let edges = SetThresholds {
            leak_ma: Some(1000.0),
            leak_delay_s: Some(60.0),
            temp_c: Some(140.0),
            overvoltage_v: Some(1000.0),
            undervoltage_v: Some(50.0),
            overcurrent_a: Some(655.35),
        };
        let writes = encode_thresholds(&edges).unwrap();
        assert_eq!(writes, vec![(100, 1000), (101, 600), (102, 140), (103, 10_000), (104, 500), (105, 65_535)]);
        let regs: [u16; 6] = std::array::from_fn(|i| writes[i].1);
        assert_eq!(decode_thresholds(&regs), edges);

        let partial = SetThresholds { leak_ma: Some(20.0), leak_delay_s: Some(0.1), ..Default::default() };
        assert_eq!(encode_thresholds(&partial).unwrap(), vec![(100, 20), (101, 1)]);
        let only_temp = SetThresholds { temp_c: Some(55.0), ..Default::default() };
        assert_eq!(encode_thresholds(&only_temp).unwrap(), vec![(102, 55)]);
    }

    #[test]
    fn thresholds_are_validated_before_encoding() {
        let cases = [
            (SetThresholds::default(), "params"),
            (SetThresholds { leak_ma: Some(10.0), ..Default::default() }, "leakMa"),
            (SetThresholds { leak_delay_s: Some(0.05), ..Default::default() }, "leakDelayS"),
            (SetThresholds { temp_c: Some(150.0), ..Default::default() }, "tempC"),
            (SetThresholds { overcurrent_a: Some(655.36), ..Default::default() }, "overcurrentA"),
            (SetThresholds { overcurrent_a: Some(1000.0), ..Default::default() }, "overcurrentA"),
        ];
        for (t, field) in cases {
            assert_eq!(encode_thresholds(&t).unwrap_err().field, field, "{t:?}");
        }
        let err = encode_thresholds(&SetThresholds { overcurrent_a: Some(1000.0), ..Default::default() }).unwrap_err();
        assert_eq!(err.reason, "must be at most 655.35 A on a Modbus detector");
    }

    #[test]
    fn read_back_mismatches_are_listed() {
        let writes = vec![(100, 300), (102, 85)];
        // Registers not written may hold anything.
        assert_eq!(thresholds_match(&writes, &[300, 9, 85, 9, 9, 9]), Ok(()));
        assert_eq!(
            thresholds_match(&writes, &[300, 50, 80, 0, 0, 0]),
            Err(vec![ThresholdMismatch { register: 102, field: Some("tempC"), written: 85, read: Some(80) }])
        );
        assert_eq!(
            thresholds_match(&[(105, 1), (106, 1), (99, 1)], &[0; 6]),
            Err(vec![
                ThresholdMismatch { register: 105, field: Some("overcurrentA"), written: 1, read: Some(0) },
                ThresholdMismatch { register: 106, field: None, written: 1, read: None },
                ThresholdMismatch { register: 99, field: None, written: 1, read: None },
            ])
        );
        assert_eq!(thresholds_match(&[], &[0; 6]), Ok(()));
    }

    #[test]
    fn coils() {
        let expected = [
            (CommandOp::Trip, Some(0)),
            (CommandOp::Close, Some(1)),
            (CommandOp::Reset, Some(2)),
            (CommandOp::SelfTest, Some(3)),
            (CommandOp::Silence, Some(4)),
            (CommandOp::SetThresholds, None),
        ];
        assert_eq!(CommandOp::ALL.map(|op| (op, coil_for(op))), expected);
    }
}
