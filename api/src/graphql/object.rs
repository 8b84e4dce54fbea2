//! Output types. Each wraps a domain or service value; the database schema is not the API.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject};

use super::Result;
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::site::{self, Detector, Device, Project, Tenant};
use sparkwatch_domain::thresholds::{EffectiveThresholds, ThresholdOverrides};

use super::guard::{Require, caller};
use super::hazards::{ReadingBucketGql, ReadingObj, ReadingPointObj};
use crate::service::page_request;
use crate::service::tenants::TenantUsage;
use crate::service::thresholds::ThresholdTarget;
use crate::service::users::RoleView;
use crate::store::Page;
use crate::store::access::{ApiKey, RoleRef, User};
use crate::store::oplog::Operation;
use crate::store::sites::{DetectorFilter, DeviceFilter};

/// Extra fields of every connection.
#[derive(SimpleObject)]
pub struct TotalCount {
    /// Number of items matching the filter across all pages.
    pub total_count: u64,
}

/// A Relay connection with `totalCount`; cursors are the items' ids.
pub type Conn<N> = Connection<String, N, TotalCount, EmptyFields>;

/// Turns a page into a connection.
pub fn connection<T, N>(page: Page<T>, cursor: impl Fn(&T) -> String, node: impl Fn(T) -> N) -> Conn<N>
where
    N: async_graphql::OutputType,
{
    let mut conn =
        Connection::with_additional_fields(page.has_previous, page.has_next, TotalCount { total_count: page.total });
    conn.edges.extend(page.items.into_iter().map(|item| Edge::new(cursor(&item), node(item))));
    conn
}

/// How the server talks to a device.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "DeviceTransport", remote = "site::DeviceTransport")]
pub enum TransportGql {
    /// The device publishes over MQTT.
    Mqtt,
    /// The server polls the gateway over Modbus TCP.
    ModbusTcp,
}

/// A customer organisation.
pub struct TenantObj(pub Tenant);

#[Object(name = "Tenant")]
impl TenantObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Name, unique on the platform.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Suspended tenants cannot sign in.
    async fn active(&self) -> bool {
        self.0.active
    }
    /// When the tenant was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Registered and connected devices — the billing figures.
    #[graphql(guard = "Require(Permission::TenantUsageRead)")]
    async fn usage(&self, ctx: &Context<'_>) -> Result<TenantUsageObj> {
        let (s, _) = caller(ctx)?;
        Ok(TenantUsageObj(s.tenant_usage(self.0.id).await?))
    }
}

/// Device counts of a tenant.
pub struct TenantUsageObj(pub TenantUsage);

#[Object(name = "TenantUsage")]
impl TenantUsageObj {
    /// Devices registered.
    async fn devices(&self) -> u64 {
        self.0.devices
    }
    /// Devices connected now; tenants are billed by this number.
    async fn connected_devices(&self) -> u64 {
        self.0.connected_devices
    }
}

/// A person who signs in.
pub struct UserObj(pub User);

#[Object(name = "User")]
impl UserObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Sign-in e-mail.
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
    /// Sign-in phone.
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_deref()
    }
    /// Display name.
    async fn display_name(&self) -> &str {
        &self.0.display_name
    }
    /// Locale of notifications and texts (`zh-CN` or `en`).
    async fn locale(&self) -> &str {
        &self.0.locale
    }
    /// Deactivated users cannot sign in.
    async fn active(&self) -> bool {
        self.0.active
    }
    /// The user's role and its permissions.
    async fn role(&self, ctx: &Context<'_>) -> Result<RoleObj> {
        let (s, _) = caller(ctx)?;
        Ok(RoleObj(s.role_view(self.0.role, self.0.tenant_id).await?))
    }
    /// Whether the role sees every project of the tenant regardless of `projects`.
    async fn all_projects(&self, ctx: &Context<'_>) -> Result<bool> {
        let (s, _) = caller(ctx)?;
        Ok(s.role_view(self.0.role, self.0.tenant_id).await?.permissions.contains(&Permission::AllProjects))
    }
    /// Projects the user is explicitly scoped to (those the caller may see).
    async fn projects(&self, ctx: &Context<'_>) -> Result<Vec<ProjectObj>> {
        let (s, who) = caller(ctx)?;
        let mut out = Vec::new();
        for id in s.user_projects(self.0.id).await? {
            if let Some(p) = super::absent(s.project(who, id).await)? {
                out.push(ProjectObj(p));
            }
        }
        Ok(out)
    }
    /// When the account was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last successful sign-in.
    async fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_login_at
    }
    /// The user's built-in role key, or `custom`.
    async fn role_key(&self) -> &str {
        match self.0.role {
            RoleRef::Builtin(b) => b.key(),
            RoleRef::Custom(_) => "custom",
        }
    }
}

/// A bundle of permissions: built-in (`manager`, …) or defined by the tenant.
pub struct RoleObj(pub RoleView);

#[Object(name = "Role")]
impl RoleObj {
    /// The built-in key (`manager`) or the custom role's id; pass it as `roleId`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Built-in roles cannot be changed.
    async fn builtin(&self) -> bool {
        self.0.builtin
    }
    /// Permission codes granted, e.g. `device.control`.
    async fn permissions(&self) -> Vec<&'static str> {
        self.0.permissions.iter().map(|p| p.code()).collect()
    }
}

/// A monitored site.
pub struct ProjectObj(pub Project);

#[Object(name = "Project")]
impl ProjectObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Site name.
    async fn name(&self) -> &str {
        &self.0.draft.name
    }
    /// Street address.
    async fn address(&self) -> Option<&str> {
        self.0.draft.address.as_deref()
    }
    /// Contact person on site.
    async fn contact_name(&self) -> Option<&str> {
        self.0.draft.contact_name.as_deref()
    }
    /// Contact phone.
    async fn contact_phone(&self) -> Option<&str> {
        self.0.draft.contact_phone.as_deref()
    }
    /// Building area, m².
    async fn building_area(&self) -> Option<f64> {
        self.0.draft.building_area_m2
    }
    /// Latitude (WGS 84) for the map.
    async fn latitude(&self) -> Option<f64> {
        self.0.draft.latitude
    }
    /// Longitude (WGS 84) for the map.
    async fn longitude(&self) -> Option<f64> {
        self.0.draft.longitude
    }
    /// Administrative region.
    async fn region(&self) -> Option<&str> {
        self.0.draft.region.as_deref()
    }
    /// When the project was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Number of devices installed.
    async fn device_count(&self, ctx: &Context<'_>) -> Result<u64> {
        let (s, _) = caller(ctx)?;
        Ok(s.project_device_count(self.0.id).await?)
    }
    /// Devices installed in the project.
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity")]
    async fn devices(&self, ctx: &Context<'_>, first: Option<i32>, after: Option<String>) -> Result<Conn<DeviceObj>> {
        let (s, who) = caller(ctx)?;
        let filter = DeviceFilter { project_ids: Some(vec![self.0.id]), ..Default::default() };
        let page = s.devices(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |d| d.id.to_string(), DeviceObj))
    }
    /// Set-points overridden at project level (`null` = inherited from the tenant).
    async fn thresholds(&self, ctx: &Context<'_>) -> Result<ThresholdsObj> {
        let (s, who) = caller(ctx)?;
        Ok(ThresholdsObj(s.thresholds(who, ThresholdTarget::Project(self.0.id)).await?))
    }
}

/// A monitoring unit or gateway.
pub struct DeviceObj(pub Device);

#[Object(name = "Device")]
impl DeviceObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Serial / IMEI (the MQTT client id).
    async fn serial(&self) -> &str {
        &self.0.draft.serial
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.draft.name
    }
    /// Model.
    async fn model(&self) -> Option<&str> {
        self.0.draft.model.as_deref()
    }
    /// Kind of unit.
    async fn device_type(&self) -> Option<&str> {
        self.0.draft.device_type.as_deref()
    }
    /// How the server talks to it.
    async fn transport(&self) -> TransportGql {
        self.0.draft.transport.into()
    }
    /// Gateway host (Modbus TCP).
    async fn host(&self) -> Option<&str> {
        self.0.draft.host.as_deref()
    }
    /// Gateway port (Modbus TCP).
    async fn port(&self) -> Option<u16> {
        self.0.draft.port
    }
    /// Reporting or polling interval, seconds.
    async fn interval_s(&self) -> u32 {
        self.0.draft.interval_s
    }
    /// Region within the site.
    async fn region(&self) -> Option<&str> {
        self.0.draft.region.as_deref()
    }
    /// Position within the site.
    async fn position(&self) -> Option<&str> {
        self.0.draft.position.as_deref()
    }
    /// Whether it is connected now.
    async fn online(&self) -> bool {
        self.0.online
    }
    /// When it was last heard from.
    async fn last_seen_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_seen_at
    }
    /// When it was registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The project it is installed in.
    async fn project(&self, ctx: &Context<'_>) -> Result<ProjectObj> {
        let (s, who) = caller(ctx)?;
        Ok(ProjectObj(s.project(who, self.0.draft.project_id).await?))
    }
    /// Detectors on its bus.
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity")]
    async fn detectors(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<DetectorObj>> {
        let (s, who) = caller(ctx)?;
        let filter = DetectorFilter { device_id: Some(self.0.id), ..Default::default() };
        let page = s.detectors(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |d| d.id.to_string(), DetectorObj))
    }
}

/// An electrical-fire detector on a device's bus.
pub struct DetectorObj(pub Detector);

#[Object(name = "Detector")]
impl DetectorObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Bus address / Modbus unit id (1–247).
    async fn address(&self) -> u8 {
        self.0.draft.address
    }
    /// Display name.
    async fn name(&self) -> Option<&str> {
        self.0.draft.name.as_deref()
    }
    /// Region within the site.
    async fn region(&self) -> Option<&str> {
        self.0.draft.region.as_deref()
    }
    /// Position, e.g. "2F distribution box".
    async fn position(&self) -> Option<&str> {
        self.0.draft.position.as_deref()
    }
    /// Number of residual-current channels.
    async fn leak_channels(&self) -> u8 {
        self.0.draft.leak_channels
    }
    /// Number of temperature channels.
    async fn temp_channels(&self) -> u8 {
        self.0.draft.temp_channels
    }
    /// Whether phase voltages are measured.
    async fn has_voltage(&self) -> bool {
        self.0.draft.has_voltage
    }
    /// Whether phase currents are measured.
    async fn has_current(&self) -> bool {
        self.0.draft.has_current
    }
    /// When it was registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The device whose bus it is on.
    async fn device(&self, ctx: &Context<'_>) -> Result<DeviceObj> {
        let (s, who) = caller(ctx)?;
        Ok(DeviceObj(s.device(who, self.0.draft.device_id).await?))
    }
    /// The project it belongs to.
    async fn project(&self, ctx: &Context<'_>) -> Result<ProjectObj> {
        let (s, who) = caller(ctx)?;
        Ok(ProjectObj(s.project(who, self.0.project_id).await?))
    }
    /// Set-points overridden on this detector (`null` = inherited).
    async fn thresholds(&self, ctx: &Context<'_>) -> Result<ThresholdsObj> {
        let (s, who) = caller(ctx)?;
        Ok(ThresholdsObj(s.detector_thresholds(who, self.0.id).await?.own))
    }
    /// Set-points that apply after tenant → project → detector inheritance and defaults.
    async fn effective_thresholds(&self, ctx: &Context<'_>) -> Result<EffectiveThresholdsObj> {
        let (s, who) = caller(ctx)?;
        Ok(EffectiveThresholdsObj(s.detector_thresholds(who, self.0.id).await?.effective))
    }
    /// Remote commands sent to it, newest first.
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn commands(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<super::commands::CommandObj>> {
        super::commands::detector_commands(ctx, self.0.id, first, after).await
    }
    /// The newest reading (live when ingestion has seen one since start, else the newest stored).
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn latest(&self, ctx: &Context<'_>) -> Result<Option<ReadingObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.latest_reading(who, self.0.id).await?.map(ReadingObj))
    }
    /// Values in `[from, to)` for a chart. Without `bucket`: raw readings, oldest first (at
    /// most 7 days and 5000 points). With `bucket`: per-bucket min/max/avg per channel from
    /// the stored aggregates, starting with the bucket containing `from` (at most 10080 buckets).
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "readings_complexity(from, to, bucket, child_complexity)"
    )]
    async fn readings(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Option<ReadingBucketGql>,
    ) -> Result<Vec<ReadingPointObj>> {
        let (s, who) = caller(ctx)?;
        let points = s.readings(who, self.0.id, from, to, bucket.map(Into::into)).await?;
        Ok(points.into_iter().map(ReadingPointObj).collect())
    }
    /// Valid set-points that are outside design guidance (e.g. leakage above 500 mA).
    async fn threshold_warnings(&self, ctx: &Context<'_>) -> Result<Vec<ThresholdWarningObj>> {
        let (s, who) = caller(ctx)?;
        let eff = s.detector_thresholds(who, self.0.id).await?.effective;
        let as_overrides = ThresholdOverrides { leak_ma: Some(eff.leak_ma), ..Default::default() };
        Ok(as_overrides
            .validate()
            .unwrap_or_default()
            .into_iter()
            .map(|w| ThresholdWarningObj { field: w.field, message: w.message })
            .collect())
    }
}

/// Query complexity of `Detector.readings`: weighted by the points it can return (one
/// complexity unit per 100 points, at most 5000 raw points or 10080 buckets), so that a
/// list of detectors each asking for a week of readings is refused by the complexity limit
/// rather than answered with millions of points. Raw readings are counted at most one a
/// second of the range.
fn readings_complexity(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Option<ReadingBucketGql>,
    child_complexity: usize,
) -> usize {
    let span_s = usize::try_from((to - from).num_seconds()).unwrap_or(0);
    let points = match bucket {
        None => span_s.min(5000),
        Some(b) => {
            let len = match b {
                ReadingBucketGql::Minute => 60,
                ReadingBucketGql::Hour => 3600,
                ReadingBucketGql::Day => 86_400,
            };
            (span_s / len + 1).min(10_080)
        }
    };
    1 + points.div_ceil(100).max(1) * child_complexity
}

/// A set-point that is valid but deserves a second look.
#[derive(SimpleObject)]
#[graphql(name = "ThresholdWarning")]
pub struct ThresholdWarningObj {
    /// The input field it concerns.
    pub field: String,
    /// Why.
    pub message: String,
}

/// Set-points set at one level; `null` means inherited from the level above.
pub struct ThresholdsObj(pub ThresholdOverrides);

#[Object(name = "Thresholds")]
impl ThresholdsObj {
    /// Residual-current alarm set-point, mA (20–1000).
    async fn leak_ma(&self) -> Option<f64> {
        self.0.leak_ma
    }
    /// Residual-current alarm delay, s (0–60).
    async fn leak_delay_s(&self) -> Option<f64> {
        self.0.leak_delay_s
    }
    /// Temperature alarm set-point, °C (55–140).
    async fn temp_c(&self) -> Option<f64> {
        self.0.temp_c
    }
    /// Temperature alarm delay, s (0–60).
    async fn temp_delay_s(&self) -> Option<f64> {
        self.0.temp_delay_s
    }
    /// Over-voltage set-point, V.
    async fn overvoltage_v(&self) -> Option<f64> {
        self.0.overvoltage_v
    }
    /// Under-voltage set-point, V.
    async fn undervoltage_v(&self) -> Option<f64> {
        self.0.undervoltage_v
    }
    /// Over-current set-point, A.
    async fn overcurrent_a(&self) -> Option<f64> {
        self.0.overcurrent_a
    }
    /// Pre-alarm level, % of the set-point.
    async fn prealarm_percent(&self) -> Option<f64> {
        self.0.prealarm_percent
    }
    /// Hysteresis band, %.
    async fn hysteresis_percent(&self) -> Option<f64> {
        self.0.hysteresis_percent
    }
}

/// The set-points that apply to a detector.
pub struct EffectiveThresholdsObj(pub EffectiveThresholds);

#[Object(name = "EffectiveThresholds")]
impl EffectiveThresholdsObj {
    /// Residual-current alarm set-point, mA.
    async fn leak_ma(&self) -> f64 {
        self.0.leak_ma
    }
    /// Residual-current alarm delay, s.
    async fn leak_delay_s(&self) -> f64 {
        self.0.leak_delay_s
    }
    /// Temperature alarm set-point, °C.
    async fn temp_c(&self) -> f64 {
        self.0.temp_c
    }
    /// Temperature alarm delay, s.
    async fn temp_delay_s(&self) -> f64 {
        self.0.temp_delay_s
    }
    /// Over-voltage set-point, V.
    async fn overvoltage_v(&self) -> f64 {
        self.0.overvoltage_v
    }
    /// Under-voltage set-point, V.
    async fn undervoltage_v(&self) -> f64 {
        self.0.undervoltage_v
    }
    /// Over-current set-point, A; `null` until the circuit's rating is entered.
    async fn overcurrent_a(&self) -> Option<f64> {
        self.0.overcurrent_a
    }
    /// Pre-alarm level, % of the set-point.
    async fn prealarm_percent(&self) -> f64 {
        self.0.prealarm_percent
    }
    /// Hysteresis band, %.
    async fn hysteresis_percent(&self) -> f64 {
        self.0.hysteresis_percent
    }
}

/// An integrator's API key (the secret itself is shown only once, at creation).
pub struct ApiKeyObj(pub ApiKey);

#[Object(name = "ApiKey")]
impl ApiKeyObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// What it is for.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// First characters of the key, to recognise it.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    /// Role granting its permissions.
    async fn role(&self, ctx: &Context<'_>) -> Result<RoleObj> {
        let (s, _) = caller(ctx)?;
        Ok(RoleObj(s.role_view(self.0.role, Some(self.0.tenant_id)).await?))
    }
    /// Projects it is limited to; `null` = as its role allows.
    async fn project_ids(&self) -> Option<Vec<ID>> {
        self.0.project_ids.as_ref().map(|p| p.iter().map(|id| ID(id.to_string())).collect())
    }
    /// When it was issued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it stops working, if ever.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    /// When it was revoked.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }

    /// Whether it may send control commands (trip, close, reset, silence, set-points).
    async fn control_commands(&self) -> bool {
        self.0.control_commands
    }
}

/// One entry of the append-only operation log.
pub struct OperationObj(pub Operation);

#[Object(name = "Operation")]
impl OperationObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Who did it.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// What was done, e.g. `device.create`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// Kind of object changed.
    async fn target_type(&self) -> &str {
        &self.0.target_type
    }
    /// Id of the object changed.
    async fn target_id(&self) -> Option<&str> {
        self.0.target_id.as_deref()
    }
    /// State before the change.
    async fn before(&self) -> Option<Json<serde_json::Value>> {
        self.0.before.clone().map(Json)
    }
    /// State after the change.
    async fn after(&self) -> Option<Json<serde_json::Value>> {
        self.0.after.clone().map(Json)
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

/// A permission that roles can grant.
#[derive(SimpleObject)]
#[graphql(name = "PermissionInfo")]
pub struct PermissionObj {
    /// The code used in roles, e.g. `device.control`.
    pub code: &'static str,
    /// Whether only platform operators can hold it.
    pub platform_only: bool,
}
