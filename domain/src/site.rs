//! Sites as plain data: tenants, projects, devices and detectors, and the rules that make a
//! draft of each valid. Services build a draft from API input (or a CSV row), call
//! `validate`, and store the normalised result.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use crate::validate::{
    Checked, ValidationError, detector_address, device_serial, int_in, number_in, optional_text, phone, required_text,
};

/// A customer organisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Display name, unique on the platform.
    pub name: String,
    /// Suspended tenants cannot sign in; their devices keep being recorded.
    pub active: bool,
    /// When the tenant was created.
    pub created_at: DateTime<Utc>,
    /// When unacknowledged alarms are escalated to the tenant's administrators.
    pub escalation: crate::notify::EscalationPolicy,
}

/// The editable fields of a project.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectDraft {
    /// Site name, unique within the tenant.
    pub name: String,
    /// Street address.
    pub address: Option<String>,
    /// Contact person on site.
    pub contact_name: Option<String>,
    /// Contact phone.
    pub contact_phone: Option<String>,
    /// Building area, m².
    pub building_area_m2: Option<f64>,
    /// Latitude for the map, WGS 84.
    pub latitude: Option<f64>,
    /// Longitude for the map, WGS 84.
    pub longitude: Option<f64>,
    /// Administrative region or district.
    pub region: Option<String>,
}

impl ProjectDraft {
    /// Normalises and checks every field.
    pub fn validate(self) -> Checked<Self> {
        if self.latitude.is_some() != self.longitude.is_some() {
            let field = if self.latitude.is_none() { "latitude" } else { "longitude" };
            return Err(ValidationError::new(field, "latitude and longitude go together"));
        }
        Ok(ProjectDraft {
            name: required_text("name", &self.name, 200)?,
            address: optional_text("address", self.address.as_deref(), 500)?,
            contact_name: optional_text("contactName", self.contact_name.as_deref(), 100)?,
            contact_phone: self
                .contact_phone
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(|p| phone("contactPhone", p))
                .transpose()?,
            building_area_m2: self
                .building_area_m2
                .map(|v| number_in("buildingArea", v, 0.0, 10_000_000.0, "m²"))
                .transpose()?,
            latitude: self.latitude.map(|v| number_in("latitude", v, -90.0, 90.0, "°")).transpose()?,
            longitude: self.longitude.map(|v| number_in("longitude", v, -180.0, 180.0, "°")).transpose()?,
            region: optional_text("region", self.region.as_deref(), 200)?,
        })
    }
}

/// A monitored site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Id.
    pub id: ProjectId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The editable fields.
    pub draft: ProjectDraft,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// How the server talks to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceTransport {
    /// The device publishes to the MQTT broker.
    Mqtt,
    /// The server polls the device (a gateway) over Modbus TCP.
    ModbusTcp,
}

impl DeviceTransport {
    /// The stored code.
    pub const fn code(self) -> &'static str {
        match self {
            DeviceTransport::Mqtt => "MQTT",
            DeviceTransport::ModbusTcp => "MODBUS_TCP",
        }
    }

    /// Parses a stored or user-typed code (case-insensitive; `modbus-tcp` also accepted).
    pub fn parse(field: &str, value: &str) -> Checked<Self> {
        match value.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "MQTT" => Ok(DeviceTransport::Mqtt),
            "MODBUS_TCP" | "MODBUS" => Ok(DeviceTransport::ModbusTcp),
            _ => Err(ValidationError::new(field, "must be MQTT or MODBUS_TCP")),
        }
    }
}

/// Default reporting / polling interval of a device, seconds.
pub const DEFAULT_INTERVAL_S: u32 = 10;
/// Default Modbus TCP port.
pub const DEFAULT_MODBUS_PORT: u16 = 502;

/// The editable fields of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDraft {
    /// The project it is installed in.
    pub project_id: ProjectId,
    /// Serial / IMEI; the MQTT client id and topic segment, unique on the platform.
    pub serial: String,
    /// Display name.
    pub name: String,
    /// Model, e.g. `ARCM300T-Z-4G`.
    pub model: Option<String>,
    /// Kind of unit, e.g. "4G detector module" or "Modbus gateway".
    pub device_type: Option<String>,
    /// How it talks to the server.
    pub transport: DeviceTransport,
    /// Gateway host (Modbus TCP only).
    pub host: Option<String>,
    /// Gateway port (Modbus TCP only).
    pub port: Option<u16>,
    /// Reporting (MQTT) or polling (Modbus) interval, seconds.
    pub interval_s: u32,
    /// Region within the site.
    pub region: Option<String>,
    /// Position, e.g. "Building B, 2F distribution room".
    pub position: Option<String>,
}

/// The device fields as typed in a form or a CSV row, before checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInput {
    /// See [`DeviceDraft::serial`].
    pub serial: String,
    /// See [`DeviceDraft::name`].
    pub name: String,
    /// See [`DeviceDraft::model`].
    pub model: Option<String>,
    /// See [`DeviceDraft::device_type`].
    pub device_type: Option<String>,
    /// `MQTT` or `MODBUS_TCP`.
    pub transport: String,
    /// See [`DeviceDraft::host`].
    pub host: Option<String>,
    /// See [`DeviceDraft::port`].
    pub port: Option<i64>,
    /// See [`DeviceDraft::interval_s`].
    pub interval_s: Option<i64>,
    /// See [`DeviceDraft::region`].
    pub region: Option<String>,
    /// See [`DeviceDraft::position`].
    pub position: Option<String>,
}

impl DeviceInput {
    /// Checks the input and produces a draft for `project_id`.
    pub fn validate(self, project_id: ProjectId) -> Checked<DeviceDraft> {
        let transport = DeviceTransport::parse("transport", &self.transport)?;
        let host = optional_text("host", self.host.as_deref(), 253)?;
        if let Some(h) = &host
            && !h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(ValidationError::new("host", "must be a host name or IP address"));
        }
        let port = self.port.map(|p| int_in("port", p, 1, 65535)).transpose()?.map(|p| p as u16);
        let (host, port) = match transport {
            DeviceTransport::ModbusTcp => {
                let host =
                    host.ok_or_else(|| ValidationError::new("host", "a MODBUS_TCP device needs the gateway's host"))?;
                (Some(host), Some(port.unwrap_or(DEFAULT_MODBUS_PORT)))
            }
            DeviceTransport::Mqtt => {
                if host.is_some() || port.is_some() {
                    return Err(ValidationError::new("host", "only MODBUS_TCP devices have a host and port"));
                }
                (None, None)
            }
        };
        Ok(DeviceDraft {
            project_id,
            serial: device_serial("serial", &self.serial)?,
            name: required_text("name", &self.name, 200)?,
            model: optional_text("model", self.model.as_deref(), 100)?,
            device_type: optional_text("deviceType", self.device_type.as_deref(), 100)?,
            transport,
            host,
            port,
            interval_s: int_in("intervalS", self.interval_s.unwrap_or(i64::from(DEFAULT_INTERVAL_S)), 1, 3600)? as u32,
            region: optional_text("region", self.region.as_deref(), 200)?,
            position: optional_text("position", self.position.as_deref(), 200)?,
        })
    }
}

/// A monitoring unit or gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Id.
    pub id: DeviceId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The editable fields.
    pub draft: DeviceDraft,
    /// Whether the device is currently connected / answering.
    pub online: bool,
    /// When it was last heard from.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Largest number of leakage channels a detector may declare.
pub const MAX_LEAK_CHANNELS: u8 = 8;
/// Largest number of temperature channels (NTC inputs) a detector may declare.
pub const MAX_TEMP_CHANNELS: u8 = 4;

/// The editable fields of a detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorDraft {
    /// The device whose bus it is on.
    pub device_id: DeviceId,
    /// Bus address / Modbus unit id, 1–247, unique per device.
    pub address: u8,
    /// Display name.
    pub name: Option<String>,
    /// Region within the site.
    pub region: Option<String>,
    /// Position, e.g. "2F distribution box".
    pub position: Option<String>,
    /// Number of residual-current channels.
    pub leak_channels: u8,
    /// Number of temperature channels.
    pub temp_channels: u8,
    /// Whether phase voltages are measured.
    pub has_voltage: bool,
    /// Whether phase currents are measured.
    pub has_current: bool,
}

/// The detector fields as typed, before checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorInput {
    /// See [`DetectorDraft::address`].
    pub address: i64,
    /// See [`DetectorDraft::name`].
    pub name: Option<String>,
    /// See [`DetectorDraft::region`].
    pub region: Option<String>,
    /// See [`DetectorDraft::position`].
    pub position: Option<String>,
    /// Defaults to 1.
    pub leak_channels: Option<i64>,
    /// Defaults to 4.
    pub temp_channels: Option<i64>,
    /// Defaults to true.
    pub has_voltage: Option<bool>,
    /// Defaults to true.
    pub has_current: Option<bool>,
}

impl DetectorInput {
    /// Checks the input and produces a draft on `device_id`.
    pub fn validate(self, device_id: DeviceId) -> Checked<DetectorDraft> {
        let leak = int_in("leakChannels", self.leak_channels.unwrap_or(1), 0, i64::from(MAX_LEAK_CHANNELS))? as u8;
        let temp = int_in("tempChannels", self.temp_channels.unwrap_or(4), 0, i64::from(MAX_TEMP_CHANNELS))? as u8;
        let has_voltage = self.has_voltage.unwrap_or(true);
        let has_current = self.has_current.unwrap_or(true);
        if leak == 0 && temp == 0 && !has_voltage && !has_current {
            return Err(ValidationError::new("leakChannels", "a detector must measure at least one channel"));
        }
        Ok(DetectorDraft {
            device_id,
            address: detector_address("address", self.address)?,
            name: optional_text("name", self.name.as_deref(), 200)?,
            region: optional_text("region", self.region.as_deref(), 200)?,
            position: optional_text("position", self.position.as_deref(), 200)?,
            leak_channels: leak,
            temp_channels: temp,
            has_voltage,
            has_current,
        })
    }
}

/// An electrical-fire detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// Id.
    pub id: DetectorId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Project of its device (denormalised so scope checks need no join).
    pub project_id: ProjectId,
    /// The editable fields.
    pub draft: DetectorDraft,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn project() -> ProjectId {
        ProjectId::from_uuid(Uuid::from_u128(7))
    }

    fn mqtt(serial: &str) -> DeviceInput {
        DeviceInput { serial: serial.into(), name: "Main board".into(), transport: "MQTT".into(), ..Default::default() }
    }

    #[test]
    fn device_rules() {
        let ok = mqtt("SW-1").validate(project()).expect("valid");
        assert_eq!(ok.interval_s, DEFAULT_INTERVAL_S);
        assert_eq!(ok.host, None);

        let cases: Vec<(DeviceInput, &str)> = vec![
            (mqtt("bad serial"), "serial"),
            (DeviceInput { transport: "LORA".into(), ..mqtt("A") }, "transport"),
            (DeviceInput { transport: "MODBUS_TCP".into(), ..mqtt("A") }, "host"),
            (DeviceInput { host: Some("10.0.0.1".into()), ..mqtt("A") }, "host"),
            (DeviceInput { interval_s: Some(0), ..mqtt("A") }, "intervalS"),
            (
                DeviceInput { transport: "modbus-tcp".into(), host: Some("gw".into()), port: Some(70000), ..mqtt("A") },
                "port",
            ),
            (DeviceInput { name: " ".into(), ..mqtt("A") }, "name"),
        ];
        for (input, field) in cases {
            let err = input.clone().validate(project()).expect_err("invalid");
            assert_eq!(err.field, field, "{input:?}");
        }

        let modbus = DeviceInput { transport: "modbus_tcp".into(), host: Some("192.168.1.20".into()), ..mqtt("GW-1") }
            .validate(project())
            .expect("valid");
        assert_eq!(modbus.port, Some(DEFAULT_MODBUS_PORT));
    }

    #[test]
    fn detector_rules() {
        let dev = DeviceId::from_uuid(Uuid::from_u128(9));
        let d = DetectorInput { address: 3, ..Default::default() }.validate(dev).expect("valid");
        assert_eq!((d.leak_channels, d.temp_channels), (1, 4));
        let cases = [
            (DetectorInput { address: 0, ..Default::default() }, "address"),
            (DetectorInput { address: 1, temp_channels: Some(5), ..Default::default() }, "tempChannels"),
            (DetectorInput { address: 1, leak_channels: Some(-1), ..Default::default() }, "leakChannels"),
            (
                DetectorInput {
                    address: 1,
                    leak_channels: Some(0),
                    temp_channels: Some(0),
                    has_voltage: Some(false),
                    has_current: Some(false),
                    ..Default::default()
                },
                "leakChannels",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(input.clone().validate(dev).expect_err("invalid").field, field, "{input:?}");
        }
    }

    #[test]
    fn project_rules() {
        let p =
            ProjectDraft { name: " Mall ".into(), contact_phone: Some("139 1234 5678".into()), ..Default::default() }
                .validate()
                .expect("valid");
        assert_eq!(p.name, "Mall");
        assert_eq!(p.contact_phone.as_deref(), Some("13912345678"));
        let bad = ProjectDraft { name: "x".into(), latitude: Some(31.0), ..Default::default() };
        assert_eq!(bad.validate().expect_err("invalid").field, "longitude");
        let bad = ProjectDraft { name: "x".into(), latitude: Some(95.0), longitude: Some(1.0), ..Default::default() };
        assert_eq!(bad.validate().expect_err("invalid").field, "latitude");
    }
}
