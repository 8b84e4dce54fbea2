//! Readings and events: what detectors report, in one shape whatever the transport.
//!
//! MQTT telemetry and Modbus polls both decode into a [`Reading`] (measured values) and
//! [`DeviceEvent`]s (what the device's own logic reported). The alarm engine turns readings
//! into [`EventKind`]s of its own; both end up as events of the event view.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One timestamped set of channel values from one detector. `None` = not measured / not
/// fitted; vectors are indexed by channel number − 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Device time (or receive time when the device sent none).
    pub at: DateTime<Utc>,
    /// Residual current per leakage channel, mA.
    pub leak_ma: Vec<Option<f64>>,
    /// Temperature per channel, °C.
    pub temp_c: Vec<Option<f64>>,
    /// Phase voltages Ua, Ub, Uc, V.
    pub voltage_v: Vec<Option<f64>>,
    /// Phase currents Ia, Ib, Ic, A.
    pub current_a: Vec<Option<f64>>,
    /// Digital input bits.
    pub digital_in: Option<u16>,
    /// Digital output bits.
    pub digital_out: Option<u16>,
}

/// The measured quantity a channel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Quantity {
    /// Residual current.
    Leak,
    /// Temperature.
    Temp,
    /// Phase voltage.
    Voltage,
    /// Phase current.
    Current,
    /// The detector as a whole (power, communication, relay, arc).
    Detector,
}

/// A channel of a detector: quantity and 1-based number (0 for detector-wide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Channel {
    /// Quantity.
    pub quantity: Quantity,
    /// 1-based channel number within the quantity; 0 for detector-wide conditions.
    pub number: u8,
}

impl Channel {
    /// A detector-wide pseudo-channel.
    pub const DETECTOR: Channel = Channel { quantity: Quantity::Detector, number: 0 };

    /// Builds a channel.
    pub const fn new(quantity: Quantity, number: u8) -> Self {
        Channel { quantity, number }
    }

    /// Stable text form used in storage and the API: `leak:1`, `temp:2`, `voltage:3`,
    /// `current:1`, `detector:0`.
    pub fn code(&self) -> String {
        let q = match self.quantity {
            Quantity::Leak => "leak",
            Quantity::Temp => "temp",
            Quantity::Voltage => "voltage",
            Quantity::Current => "current",
            Quantity::Detector => "detector",
        };
        format!("{q}:{}", self.number)
    }

    /// Parses [`Channel::code`].
    pub fn parse(code: &str) -> Option<Self> {
        let (q, n) = code.split_once(':')?;
        let quantity = match q {
            "leak" => Quantity::Leak,
            "temp" => Quantity::Temp,
            "voltage" => Quantity::Voltage,
            "current" => Quantity::Current,
            "detector" => Quantity::Detector,
            _ => return None,
        };
        Some(Channel { quantity, number: n.parse().ok()? })
    }
}

/// What happened. Names follow the API contract (`LEAK_ALARM`, `SENSOR_OPEN`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// Residual current beyond its set-point.
    LeakAlarm,
    /// Temperature beyond its set-point.
    TempAlarm,
    /// Phase voltage above its set-point.
    Overvoltage,
    /// Phase voltage below its set-point.
    Undervoltage,
    /// Phase current above its set-point.
    Overcurrent,
    /// One phase lost while the others are normal.
    PhaseLoss,
    /// Arc fault detected by the device.
    ArcFault,
    /// Sensor open circuit (fault).
    SensorOpen,
    /// Sensor short circuit (fault).
    SensorShort,
    /// Device power fault.
    PowerFault,
    /// Device offline / communication lost (fault).
    Offline,
    /// Device back online.
    Online,
    /// A condition ended.
    Recovered,
    /// The detector's relay opened.
    Trip,
    /// A remote operation.
    Command,
    /// A hazard found by a person (patrol, walk-by), not by a detector.
    FieldReport,
}

/// How an event is classified in the event view and for notification routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventCategory {
    /// An alarm (latched until reset/acknowledged).
    Alarm,
    /// An early warning, not latched.
    PreAlarm,
    /// The monitoring itself is broken; self-clearing.
    Fault,
    /// A condition ended.
    Recovery,
    /// A trip or remote operation.
    Operation,
    /// Online/offline and other status changes.
    Status,
}

impl EventKind {
    /// Every kind, in a stable order.
    pub const ALL: [EventKind; 16] = [
        EventKind::LeakAlarm,
        EventKind::TempAlarm,
        EventKind::Overvoltage,
        EventKind::Undervoltage,
        EventKind::Overcurrent,
        EventKind::PhaseLoss,
        EventKind::ArcFault,
        EventKind::SensorOpen,
        EventKind::SensorShort,
        EventKind::PowerFault,
        EventKind::Offline,
        EventKind::Online,
        EventKind::Recovered,
        EventKind::Trip,
        EventKind::Command,
        EventKind::FieldReport,
    ];

    /// The stable code stored and shown in the API (`LEAK_ALARM`).
    pub const fn code(self) -> &'static str {
        match self {
            EventKind::LeakAlarm => "LEAK_ALARM",
            EventKind::TempAlarm => "TEMP_ALARM",
            EventKind::Overvoltage => "OVERVOLTAGE",
            EventKind::Undervoltage => "UNDERVOLTAGE",
            EventKind::Overcurrent => "OVERCURRENT",
            EventKind::PhaseLoss => "PHASE_LOSS",
            EventKind::ArcFault => "ARC_FAULT",
            EventKind::SensorOpen => "SENSOR_OPEN",
            EventKind::SensorShort => "SENSOR_SHORT",
            EventKind::PowerFault => "POWER_FAULT",
            EventKind::Offline => "OFFLINE",
            EventKind::Online => "ONLINE",
            EventKind::Recovered => "RECOVERED",
            EventKind::Trip => "TRIP",
            EventKind::Command => "COMMAND",
            EventKind::FieldReport => "FIELD_REPORT",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Whether this kind is an alarm condition (latched), as opposed to a fault or status.
    pub const fn is_alarm(self) -> bool {
        matches!(
            self,
            EventKind::LeakAlarm
                | EventKind::TempAlarm
                | EventKind::Overvoltage
                | EventKind::Undervoltage
                | EventKind::Overcurrent
                | EventKind::PhaseLoss
                | EventKind::ArcFault
        )
    }

    /// Whether this kind is a fault of the monitoring itself (self-clearing).
    pub const fn is_fault(self) -> bool {
        matches!(self, EventKind::SensorOpen | EventKind::SensorShort | EventKind::PowerFault | EventKind::Offline)
    }

    /// The category of an event of this kind when it starts.
    pub const fn category(self) -> EventCategory {
        if self.is_alarm() {
            EventCategory::Alarm
        } else if self.is_fault() {
            EventCategory::Fault
        } else {
            match self {
                EventKind::Recovered => EventCategory::Recovery,
                EventKind::Trip | EventKind::Command | EventKind::FieldReport => EventCategory::Operation,
                _ => EventCategory::Status,
            }
        }
    }
}

impl EventCategory {
    /// The stable code (`PRE_ALARM`).
    pub const fn code(self) -> &'static str {
        match self {
            EventCategory::Alarm => "ALARM",
            EventCategory::PreAlarm => "PRE_ALARM",
            EventCategory::Fault => "FAULT",
            EventCategory::Recovery => "RECOVERY",
            EventCategory::Operation => "OPERATION",
            EventCategory::Status => "STATUS",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Alarm, Self::PreAlarm, Self::Fault, Self::Recovery, Self::Operation, Self::Status]
            .into_iter()
            .find(|c| c.code() == code)
    }
}

/// Who decided that an event or episode happened: stored as `events.source` and
/// `episodes.source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventSource {
    /// Sparkwatch's alarm engine, from readings.
    Engine,
    /// The device's own logic (MQTT `event` topic, Modbus status bits).
    Device,
    /// Sparkwatch itself: heartbeats, Modbus polls, remote commands.
    System,
}

impl EventSource {
    /// The stored code (`engine`, `device`, `system`).
    pub const fn code(self) -> &'static str {
        match self {
            EventSource::Engine => "engine",
            EventSource::Device => "device",
            EventSource::System => "system",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Engine, Self::Device, Self::System].into_iter().find(|s| s.code() == code)
    }
}

/// An event reported by a device's own logic (MQTT event topic, Modbus alarm/fault bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// Device time (or receive time).
    pub at: DateTime<Utc>,
    /// Detector bus address.
    pub address: u8,
    /// What happened; `Recovered` carries the ended kind in `cause`.
    pub kind: EventKind,
    /// For `Recovered`: the condition that ended.
    pub cause: Option<EventKind>,
    /// Channel the event concerns.
    pub channel: Channel,
    /// Measured value, if reported.
    pub value: Option<f64>,
    /// The device's own set-point, if reported.
    pub setpoint: Option<f64>,
}

/// The channel quantity an alarm or fault kind concerns when a device reports it with a
/// channel number (`ch`).
pub const fn quantity_of(kind: EventKind) -> Quantity {
    match kind {
        EventKind::LeakAlarm => Quantity::Leak,
        EventKind::TempAlarm => Quantity::Temp,
        EventKind::Overvoltage | EventKind::Undervoltage | EventKind::PhaseLoss => Quantity::Voltage,
        EventKind::Overcurrent => Quantity::Current,
        _ => Quantity::Detector,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_codes_round_trip() {
        for c in [Channel::new(Quantity::Leak, 1), Channel::new(Quantity::Temp, 4), Channel::DETECTOR] {
            assert_eq!(Channel::parse(&c.code()), Some(c));
        }
        assert_eq!(Channel::parse("volt:1"), None);
        assert_eq!(Channel::parse("leak:x"), None);
    }

    #[test]
    fn codes_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_code(k.code()), Some(k));
        }
        assert_eq!(EventKind::LeakAlarm.category(), EventCategory::Alarm);
        assert_eq!(EventKind::SensorOpen.category(), EventCategory::Fault);
        assert_eq!(EventKind::Offline.category(), EventCategory::Fault);
        assert_eq!(EventKind::Recovered.category(), EventCategory::Recovery);
        assert_eq!(EventCategory::from_code("PRE_ALARM"), Some(EventCategory::PreAlarm));
        for s in [EventSource::Engine, EventSource::Device, EventSource::System] {
            assert_eq!(EventSource::from_code(s.code()), Some(s));
        }
        assert_eq!(EventSource::from_code("patrol"), None);
    }
}
