//! Input types and their conversion into service inputs. Ids are checked here so that a
//! malformed id is a `VALIDATION` error naming the field.

use std::str::FromStr;

use async_graphql::{ID, InputObject, MaybeUndefined};
use chrono::{DateTime, Utc};
use sparkwatch_domain::ids::ProjectId;
use sparkwatch_domain::thresholds::ThresholdOverrides;

use super::object::TransportGql;
use crate::error::{AppError, AppResult};

/// Parses an id argument.
pub fn parse_id<T: FromStr>(field: &str, id: &ID) -> AppResult<T> {
    id.parse().map_err(|_| AppError::invalid(field, "is not a valid id"))
}

/// Parses a list of project ids.
pub fn parse_projects(field: &str, ids: &[ID]) -> AppResult<Vec<ProjectId>> {
    ids.iter().map(|id| parse_id(field, id)).collect()
}

/// Sign-in credentials.
#[derive(InputObject)]
pub struct LoginInput {
    /// E-mail address or phone number.
    pub login: String,
    /// Password.
    pub password: String,
}

/// A new tenant.
#[derive(InputObject)]
pub struct CreateTenantInput {
    /// Unique name.
    pub name: String,
}

/// Changes to a tenant.
#[derive(InputObject)]
pub struct UpdateTenantInput {
    /// The tenant.
    pub id: ID,
    /// New name.
    pub name: Option<String>,
    /// Suspend (false) or reactivate (true).
    pub active: Option<bool>,
}

/// A new user of the caller's tenant.
#[derive(InputObject)]
pub struct CreateUserInput {
    /// Sign-in e-mail (this or `phone` is required).
    pub email: Option<String>,
    /// Sign-in phone.
    pub phone: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Initial password (8+ characters, not only letters or digits).
    pub password: String,
    /// `zh-CN` (default) or `en`.
    pub locale: Option<String>,
    /// Role: a built-in key (`tenant_admin`, `manager`, `electrician`, `viewer`) or a custom role's id.
    pub role_id: ID,
    /// Projects the user may see.
    pub project_ids: Option<Vec<ID>>,
}

/// Changes to a user; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateUserInput {
    /// The user.
    pub id: ID,
    /// New display name.
    pub display_name: Option<String>,
    /// New locale.
    pub locale: Option<String>,
    /// Deactivate (false) or reactivate (true).
    pub active: Option<bool>,
    /// New role.
    pub role_id: Option<ID>,
    /// New project list (replaces the old one).
    pub project_ids: Option<Vec<ID>>,
    /// New password set by an administrator.
    pub password: Option<String>,
}

/// A tenant-defined role.
#[derive(InputObject)]
pub struct CreateRoleInput {
    /// Name, unique in the tenant.
    pub name: String,
    /// Permission codes (see `permissions`).
    pub permissions: Vec<String>,
}

/// Changes to a tenant-defined role.
#[derive(InputObject)]
pub struct UpdateRoleInput {
    /// The role.
    pub id: ID,
    /// New name.
    pub name: Option<String>,
    /// New permission codes (replace the old ones).
    pub permissions: Option<Vec<String>>,
}

/// A new API key.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// What it is for.
    pub name: String,
    /// Role granting its permissions (not `tenant_admin`).
    pub role_id: ID,
    /// Limit it to these projects.
    pub project_ids: Option<Vec<ID>>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Allow control commands (trip, close, reset, silence, set-points), which API keys are
    /// otherwise refused; needs `device.control` in the key's role and the caller's, and the
    /// caller's password or a `stepUpToken` (as sending a control command does).
    #[graphql(default = false)]
    pub control_commands: bool,
    /// The caller's password: required with `controlCommands` unless a `stepUpToken` is given.
    pub password: Option<String>,
    /// A token from `reauthenticate` (same user, same sign-in, at most 5 minutes old),
    /// instead of the password; when given, it decides.
    pub step_up_token: Option<String>,
}

/// A new project.
#[derive(InputObject)]
pub struct CreateProjectInput {
    /// Site name, unique in the tenant.
    pub name: String,
    /// Street address.
    pub address: Option<String>,
    /// Contact person.
    pub contact_name: Option<String>,
    /// Contact phone.
    pub contact_phone: Option<String>,
    /// Building area, m².
    pub building_area: Option<f64>,
    /// Latitude, WGS 84.
    pub latitude: Option<f64>,
    /// Longitude, WGS 84.
    pub longitude: Option<f64>,
    /// Administrative region.
    pub region: Option<String>,
}

/// Changes to a project; omitted fields stay, `null` clears.
#[derive(InputObject)]
pub struct UpdateProjectInput {
    /// The project.
    pub id: ID,
    /// New name.
    pub name: Option<String>,
    /// Street address.
    pub address: MaybeUndefined<String>,
    /// Contact person.
    pub contact_name: MaybeUndefined<String>,
    /// Contact phone.
    pub contact_phone: MaybeUndefined<String>,
    /// Building area, m².
    pub building_area: MaybeUndefined<f64>,
    /// Latitude.
    pub latitude: MaybeUndefined<f64>,
    /// Longitude.
    pub longitude: MaybeUndefined<f64>,
    /// Region.
    pub region: MaybeUndefined<String>,
}

/// A new device.
#[derive(InputObject)]
pub struct CreateDeviceInput {
    /// The project it is installed in.
    pub project_id: ID,
    /// Serial / IMEI: 1–64 of A–Z a–z 0–9 - _.
    pub serial: String,
    /// Display name.
    pub name: String,
    /// Model.
    pub model: Option<String>,
    /// Kind of unit.
    pub device_type: Option<String>,
    /// MQTT or MODBUS_TCP.
    pub transport: TransportGql,
    /// Gateway host (MODBUS_TCP only).
    pub host: Option<String>,
    /// Gateway port (MODBUS_TCP only; default 502).
    pub port: Option<i32>,
    /// Reporting/polling interval, seconds (default 10).
    pub interval_s: Option<i32>,
    /// Region within the site.
    pub region: Option<String>,
    /// Position within the site.
    pub position: Option<String>,
    /// The claim code printed on the device's label; required when the platform has serial
    /// claiming on (hosted deployments), ignored otherwise.
    pub claim_code: Option<String>,
}

/// Changes to a device; omitted fields stay, `null` clears.
#[derive(InputObject)]
pub struct UpdateDeviceInput {
    /// The device.
    pub id: ID,
    /// Move it to another project.
    pub project_id: Option<ID>,
    /// New serial (after replacing the unit).
    pub serial: Option<String>,
    /// New name.
    pub name: Option<String>,
    /// Model.
    pub model: MaybeUndefined<String>,
    /// Kind of unit.
    pub device_type: MaybeUndefined<String>,
    /// Transport.
    pub transport: Option<TransportGql>,
    /// Gateway host.
    pub host: MaybeUndefined<String>,
    /// Gateway port.
    pub port: MaybeUndefined<i32>,
    /// Interval, seconds.
    pub interval_s: Option<i32>,
    /// Region.
    pub region: MaybeUndefined<String>,
    /// Position.
    pub position: MaybeUndefined<String>,
    /// The claim code of the new serial (with serial claiming on).
    pub claim_code: Option<String>,
}

/// One line of a manufacturer's claim list.
#[derive(InputObject)]
pub struct SerialClaimInput {
    /// The device serial.
    pub serial: String,
    /// The claim code printed on its label (6–64 letters and digits; spaces and dashes are
    /// ignored).
    pub claim_code: String,
}

/// A new detector.
#[derive(InputObject)]
pub struct CreateDetectorInput {
    /// The device whose bus it is on.
    pub device_id: ID,
    /// Bus address / Modbus unit id, 1–247, unique per device.
    pub address: i32,
    /// Display name.
    pub name: Option<String>,
    /// Region within the site.
    pub region: Option<String>,
    /// Position, e.g. "2F distribution box".
    pub position: Option<String>,
    /// Residual-current channels (default 1).
    pub leak_channels: Option<i32>,
    /// Temperature channels (default 4).
    pub temp_channels: Option<i32>,
    /// Whether phase voltages are measured (default true).
    pub has_voltage: Option<bool>,
    /// Whether phase currents are measured (default true).
    pub has_current: Option<bool>,
}

/// Changes to a detector; omitted fields stay, `null` clears.
#[derive(InputObject)]
pub struct UpdateDetectorInput {
    /// The detector.
    pub id: ID,
    /// New bus address.
    pub address: Option<i32>,
    /// Name.
    pub name: MaybeUndefined<String>,
    /// Region.
    pub region: MaybeUndefined<String>,
    /// Position.
    pub position: MaybeUndefined<String>,
    /// Residual-current channels.
    pub leak_channels: Option<i32>,
    /// Temperature channels.
    pub temp_channels: Option<i32>,
    /// Whether phase voltages are measured.
    pub has_voltage: Option<bool>,
    /// Whether phase currents are measured.
    pub has_current: Option<bool>,
}

/// Set-point values: omitted = unchanged, `null` = inherit from the level above.
#[derive(InputObject, Default)]
pub struct ThresholdValues {
    /// Residual-current alarm set-point, mA (20–1000).
    pub leak_ma: MaybeUndefined<f64>,
    /// Residual-current alarm delay, s (0–60).
    pub leak_delay_s: MaybeUndefined<f64>,
    /// Temperature alarm set-point, °C (55–140).
    pub temp_c: MaybeUndefined<f64>,
    /// Temperature alarm delay, s (0–60).
    pub temp_delay_s: MaybeUndefined<f64>,
    /// Over-voltage set-point, V.
    pub overvoltage_v: MaybeUndefined<f64>,
    /// Under-voltage set-point, V.
    pub undervoltage_v: MaybeUndefined<f64>,
    /// Over-current set-point, A.
    pub overcurrent_a: MaybeUndefined<f64>,
    /// Pre-alarm level, % of the set-point (50–100).
    pub prealarm_percent: MaybeUndefined<f64>,
    /// Hysteresis band, % (0–20).
    pub hysteresis_percent: MaybeUndefined<f64>,
}

/// Applies an optional-or-null input to a field.
pub fn apply<T>(target: &mut Option<T>, value: MaybeUndefined<T>) {
    match value {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => *target = None,
        MaybeUndefined::Value(v) => *target = Some(v),
    }
}

impl ThresholdValues {
    /// Applies the given values to stored overrides.
    pub fn apply_to(self, t: &mut ThresholdOverrides) {
        apply(&mut t.leak_ma, self.leak_ma);
        apply(&mut t.leak_delay_s, self.leak_delay_s);
        apply(&mut t.temp_c, self.temp_c);
        apply(&mut t.temp_delay_s, self.temp_delay_s);
        apply(&mut t.overvoltage_v, self.overvoltage_v);
        apply(&mut t.undervoltage_v, self.undervoltage_v);
        apply(&mut t.overcurrent_a, self.overcurrent_a);
        apply(&mut t.prealarm_percent, self.prealarm_percent);
        apply(&mut t.hysteresis_percent, self.hysteresis_percent);
    }
}

/// New set-points for one detector (GB ranges enforced; errors name the field).
#[derive(InputObject)]
pub struct UpdateDetectorThresholdsInput {
    /// The detector.
    pub detector_id: ID,
    /// The values.
    #[graphql(flatten)]
    pub values: ThresholdValues,
}

/// New set-points for a whole project.
#[derive(InputObject)]
pub struct UpdateProjectThresholdsInput {
    /// The project.
    pub project_id: ID,
    /// The values.
    #[graphql(flatten)]
    pub values: ThresholdValues,
}

/// New tenant-wide set-points.
#[derive(InputObject)]
pub struct UpdateTenantThresholdsInput {
    /// The values.
    #[graphql(flatten)]
    pub values: ThresholdValues,
}

/// Filters for `projects`.
#[derive(InputObject, Default)]
pub struct ProjectFilter {
    /// Name or address contains this text.
    pub search: Option<String>,
    /// Exact region.
    pub region: Option<String>,
}

/// Filters for `devices`.
#[derive(InputObject, Default)]
pub struct DeviceFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ID>>,
    /// Only this transport.
    pub transport: Option<TransportGql>,
    /// Only online (true) or offline (false) devices.
    pub online: Option<bool>,
    /// Serial or name contains this text.
    pub search: Option<String>,
}

/// Filters for `detectors`.
#[derive(InputObject, Default)]
pub struct DetectorFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ID>>,
    /// Only this device.
    pub device_id: Option<ID>,
    /// Name, region or position contains this text.
    pub search: Option<String>,
}
