//! Mutation root.

use async_graphql::{Context, ID, Object, SimpleObject};

use super::Result;
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::site::{DetectorInput, DeviceInput, ProjectDraft};

use super::ClientAddr;
use super::guard::{Require, SignedIn, caller};
use super::input::*;
use super::object::{ApiKeyObj, DetectorObj, DeviceObj, ProjectObj, RoleObj, TenantObj, ThresholdsObj, UserObj};
use crate::error::AppError;
use crate::service::Services;
use crate::service::auth::Session;
use crate::service::thresholds::ThresholdTarget;
use crate::service::users::{NewApiKey, NewUser, UserPatch};

/// Write operations on accounts, sites and set-points (merged into [`super::Mutation`]).
#[derive(Default)]
pub struct CoreMutation;

/// Tokens returned by `login` and `refreshToken`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Bearer token for `Authorization: Bearer …` (short-lived).
    pub access_token: String,
    /// Single-use token for `refreshToken`; keep it secret.
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// The signed-in user.
    pub user: UserObj,
}

impl From<Session> for AuthPayload {
    fn from(s: Session) -> Self {
        AuthPayload {
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            expires_at: s.expires_at,
            user: UserObj(s.user),
        }
    }
}

/// A new API key with its secret, shown only this once.
#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    /// The key's record.
    pub api_key: ApiKeyObj,
    /// The secret to send as `Authorization: Bearer <secret>`; it cannot be shown again.
    pub secret: String,
}

fn services<'a>(ctx: &'a Context<'_>) -> std::result::Result<&'a Services, AppError> {
    ctx.data::<Services>().map_err(|_| AppError::Internal("services missing from the schema".into()))
}

fn opt_i64(v: Option<i32>) -> Option<i64> {
    v.map(i64::from)
}

#[Object]
impl CoreMutation {
    /// Signs in with e-mail or phone and password. Rate-limited per account and per address.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<AuthPayload> {
        let addr = ctx.data_opt::<ClientAddr>().map_or("unknown", |a| a.0.as_str());
        Ok(services(ctx)?.login(&input.login, &input.password, addr).await?.into())
    }

    /// Exchanges a refresh token for a new token pair; each refresh token works once.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload> {
        Ok(services(ctx)?.refresh(&refresh_token).await?.into())
    }

    /// Ends the session of a refresh token; `false` when it was not known.
    async fn logout(&self, ctx: &Context<'_>, refresh_token: String) -> Result<bool> {
        Ok(services(ctx)?.logout(&refresh_token).await?)
    }

    /// Changes the signed-in user's password.
    #[graphql(guard = "SignedIn")]
    async fn change_password(&self, ctx: &Context<'_>, current_password: String, new_password: String) -> Result<bool> {
        let (s, who) = caller(ctx)?;
        Ok(s.change_password(who, &current_password, &new_password).await?)
    }

    /// Creates a tenant (platform operators).
    #[graphql(guard = "Require(Permission::TenantManage)")]
    async fn create_tenant(&self, ctx: &Context<'_>, input: CreateTenantInput) -> Result<TenantObj> {
        let (s, who) = caller(ctx)?;
        Ok(TenantObj(s.create_tenant(who, &input.name).await?))
    }

    /// Renames, suspends or reactivates a tenant (platform operators).
    #[graphql(guard = "Require(Permission::TenantManage)")]
    async fn update_tenant(&self, ctx: &Context<'_>, input: UpdateTenantInput) -> Result<TenantObj> {
        let (s, who) = caller(ctx)?;
        Ok(TenantObj(s.update_tenant(who, parse_id("id", &input.id)?, input.name.as_deref(), input.active).await?))
    }

    /// Loads claim codes from a manufacturer's list into the pool that serial claiming checks
    /// against (platform operators); a serial already in the pool gets the new code. Only a
    /// digest of each code is stored. Returns how many were loaded.
    #[graphql(guard = "Require(Permission::TenantManage)")]
    async fn load_serial_claims(&self, ctx: &Context<'_>, claims: Vec<SerialClaimInput>) -> Result<i32> {
        let (s, who) = caller(ctx)?;
        let claims = claims
            .into_iter()
            .map(|c| crate::service::registration::SerialClaim { serial: c.serial, code: c.claim_code })
            .collect();
        let n = s.load_serial_claims(who, claims).await?;
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// Creates a user in the caller's tenant.
    #[graphql(guard = "Require(Permission::UserManage)")]
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> Result<UserObj> {
        let (s, who) = caller(ctx)?;
        let new = NewUser {
            email: input.email,
            phone: input.phone,
            display_name: input.display_name,
            password: input.password,
            locale: input.locale,
            role: input.role_id.to_string(),
            project_ids: parse_projects("projectIds", input.project_ids.as_deref().unwrap_or_default())?,
        };
        Ok(UserObj(s.create_user(who, new).await?))
    }

    /// Changes a user of the caller's tenant: name, locale, role, projects, password, active.
    #[graphql(guard = "Require(Permission::UserManage)")]
    async fn update_user(&self, ctx: &Context<'_>, input: UpdateUserInput) -> Result<UserObj> {
        let (s, who) = caller(ctx)?;
        let patch = UserPatch {
            display_name: input.display_name,
            locale: input.locale,
            active: input.active,
            role: input.role_id.map(|r| r.to_string()),
            project_ids: input.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?,
            password: input.password,
        };
        Ok(UserObj(s.update_user(who, parse_id("id", &input.id)?, patch).await?))
    }

    /// Defines a tenant role from permission codes.
    #[graphql(guard = "Require(Permission::RoleManage)")]
    async fn create_role(&self, ctx: &Context<'_>, input: CreateRoleInput) -> Result<RoleObj> {
        let (s, who) = caller(ctx)?;
        Ok(RoleObj(s.create_role(who, &input.name, &input.permissions).await?))
    }

    /// Renames a tenant role or replaces its permissions.
    #[graphql(guard = "Require(Permission::RoleManage)")]
    async fn update_role(&self, ctx: &Context<'_>, input: UpdateRoleInput) -> Result<RoleObj> {
        let (s, who) = caller(ctx)?;
        Ok(RoleObj(
            s.update_role(who, parse_id("id", &input.id)?, input.name.as_deref(), input.permissions.as_deref()).await?,
        ))
    }

    /// Deletes a tenant role that nobody holds.
    #[graphql(guard = "Require(Permission::RoleManage)")]
    async fn delete_role(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let (s, who) = caller(ctx)?;
        Ok(s.delete_role(who, parse_id("id", &id)?).await?)
    }

    /// Issues an API key for an integrator; the secret is in the payload, once. On every
    /// request the key holds no more than the person who issued it holds then: demoting the
    /// issuer narrows the key at once (`FORBIDDEN` on `authorization`), deactivating the
    /// issuer stops it (`UNAUTHENTICATED`) until they are reactivated. `controlCommands` needs
    /// the issuer's `password` or a `stepUpToken`, as sending a control command does.
    #[graphql(guard = "Require(Permission::ApiKeyManage)")]
    async fn create_api_key(&self, ctx: &Context<'_>, input: CreateApiKeyInput) -> Result<CreateApiKeyPayload> {
        let (s, who) = caller(ctx)?;
        let projects = input.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?;
        let new = NewApiKey {
            name: &input.name,
            role: input.role_id.as_str(),
            project_ids: projects,
            expires_at: input.expires_at,
            control_commands: input.control_commands,
            password: input.password.as_deref(),
            step_up_token: input.step_up_token.as_deref(),
        };
        let (key, secret) = s.create_api_key(who, new).await?;
        Ok(CreateApiKeyPayload { api_key: ApiKeyObj(key), secret })
    }

    /// Revokes an API key; requests with it fail from now on.
    #[graphql(guard = "Require(Permission::ApiKeyManage)")]
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKeyObj> {
        let (s, who) = caller(ctx)?;
        Ok(ApiKeyObj(s.revoke_api_key(who, parse_id("id", &id)?).await?))
    }

    /// Creates a project in the caller's tenant.
    #[graphql(guard = "Require(Permission::ProjectManage)")]
    async fn create_project(&self, ctx: &Context<'_>, input: CreateProjectInput) -> Result<ProjectObj> {
        let (s, who) = caller(ctx)?;
        let draft = ProjectDraft {
            name: input.name,
            address: input.address,
            contact_name: input.contact_name,
            contact_phone: input.contact_phone,
            building_area_m2: input.building_area,
            latitude: input.latitude,
            longitude: input.longitude,
            region: input.region,
        };
        Ok(ProjectObj(s.create_project(who, draft).await?))
    }

    /// Changes a project.
    #[graphql(guard = "Require(Permission::ProjectManage)")]
    async fn update_project(&self, ctx: &Context<'_>, input: UpdateProjectInput) -> Result<ProjectObj> {
        let (s, who) = caller(ctx)?;
        let id = parse_id("id", &input.id)?;
        let p = s
            .update_project(who, id, |d| {
                if let Some(n) = input.name {
                    d.name = n;
                }
                apply(&mut d.address, input.address);
                apply(&mut d.contact_name, input.contact_name);
                apply(&mut d.contact_phone, input.contact_phone);
                apply(&mut d.building_area_m2, input.building_area);
                apply(&mut d.latitude, input.latitude);
                apply(&mut d.longitude, input.longitude);
                apply(&mut d.region, input.region);
            })
            .await?;
        Ok(ProjectObj(p))
    }

    /// Deletes a project that has no devices.
    #[graphql(guard = "Require(Permission::ProjectManage)")]
    async fn delete_project(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let (s, who) = caller(ctx)?;
        Ok(s.delete_project(who, parse_id("id", &id)?).await?)
    }

    /// Registers a device in a project.
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn create_device(&self, ctx: &Context<'_>, input: CreateDeviceInput) -> Result<DeviceObj> {
        let (s, who) = caller(ctx)?;
        let project = parse_id("projectId", &input.project_id)?;
        let claim = input.claim_code;
        let transport: sparkwatch_domain::site::DeviceTransport = input.transport.into();
        let device = DeviceInput {
            serial: input.serial,
            name: input.name,
            model: input.model,
            device_type: input.device_type,
            transport: transport.code().to_owned(),
            host: input.host,
            port: opt_i64(input.port),
            interval_s: opt_i64(input.interval_s),
            region: input.region,
            position: input.position,
        };
        Ok(DeviceObj(s.register_device(who, project, device, claim.as_deref()).await?))
    }

    /// Changes a device or moves it to another project (its detectors move with it).
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn update_device(&self, ctx: &Context<'_>, input: UpdateDeviceInput) -> Result<DeviceObj> {
        let (s, who) = caller(ctx)?;
        let id = parse_id("id", &input.id)?;
        let project = input.project_id.as_ref().map(|p| parse_id("projectId", p)).transpose()?;
        let claim = input.claim_code.clone();
        let d = s
            .update_device_claimed(who, id, project, claim.as_deref(), |d| {
                if let Some(v) = input.serial {
                    d.serial = v;
                }
                if let Some(v) = input.name {
                    d.name = v;
                }
                if let Some(t) = input.transport {
                    d.transport = sparkwatch_domain::site::DeviceTransport::from(t).code().to_owned();
                }
                if let Some(v) = input.interval_s {
                    d.interval_s = Some(i64::from(v));
                }
                apply(&mut d.model, input.model);
                apply(&mut d.device_type, input.device_type);
                apply(&mut d.host, input.host);
                apply(&mut d.port, input.port.map_value(i64::from));
                apply(&mut d.region, input.region);
                apply(&mut d.position, input.position);
            })
            .await?;
        Ok(DeviceObj(d))
    }

    /// Deletes a device and its detectors.
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn delete_device(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let (s, who) = caller(ctx)?;
        Ok(s.delete_device(who, parse_id("id", &id)?).await?)
    }

    /// Adds a detector to a device's bus.
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn create_detector(&self, ctx: &Context<'_>, input: CreateDetectorInput) -> Result<DetectorObj> {
        let (s, who) = caller(ctx)?;
        let device = parse_id("deviceId", &input.device_id)?;
        let detector = DetectorInput {
            address: i64::from(input.address),
            name: input.name,
            region: input.region,
            position: input.position,
            leak_channels: opt_i64(input.leak_channels),
            temp_channels: opt_i64(input.temp_channels),
            has_voltage: input.has_voltage,
            has_current: input.has_current,
        };
        Ok(DetectorObj(s.create_detector(who, device, detector).await?))
    }

    /// Changes a detector.
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn update_detector(&self, ctx: &Context<'_>, input: UpdateDetectorInput) -> Result<DetectorObj> {
        let (s, who) = caller(ctx)?;
        let id = parse_id("id", &input.id)?;
        let d = s
            .update_detector(who, id, |d| {
                if let Some(v) = input.address {
                    d.address = i64::from(v);
                }
                apply(&mut d.name, input.name);
                apply(&mut d.region, input.region);
                apply(&mut d.position, input.position);
                if let Some(v) = input.leak_channels {
                    d.leak_channels = Some(i64::from(v));
                }
                if let Some(v) = input.temp_channels {
                    d.temp_channels = Some(i64::from(v));
                }
                if input.has_voltage.is_some() {
                    d.has_voltage = input.has_voltage;
                }
                if input.has_current.is_some() {
                    d.has_current = input.has_current;
                }
            })
            .await?;
        Ok(DetectorObj(d))
    }

    /// Deletes a detector.
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn delete_detector(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let (s, who) = caller(ctx)?;
        Ok(s.delete_detector(who, parse_id("id", &id)?).await?)
    }

    /// Sets a detector's own set-points (omitted = unchanged, `null` = inherit). Values outside
    /// the GB 14287 ranges fail with `VALIDATION` and the offending field.
    #[graphql(guard = "Require(Permission::ThresholdManage)")]
    async fn update_detector_thresholds(
        &self,
        ctx: &Context<'_>,
        input: UpdateDetectorThresholdsInput,
    ) -> Result<DetectorObj> {
        let (s, who) = caller(ctx)?;
        let id = parse_id("detectorId", &input.detector_id)?;
        s.set_thresholds(who, ThresholdTarget::Detector(id), |t| input.values.apply_to(t)).await?;
        Ok(DetectorObj(s.detector(who, id).await?))
    }

    /// Sets a project's set-points, inherited by its detectors.
    #[graphql(guard = "Require(Permission::ThresholdManage)")]
    async fn update_project_thresholds(
        &self,
        ctx: &Context<'_>,
        input: UpdateProjectThresholdsInput,
    ) -> Result<ProjectObj> {
        let (s, who) = caller(ctx)?;
        let id = parse_id("projectId", &input.project_id)?;
        s.set_thresholds(who, ThresholdTarget::Project(id), |t| input.values.apply_to(t)).await?;
        Ok(ProjectObj(s.project(who, id).await?))
    }

    /// Sets the tenant-wide set-points, inherited by every project.
    #[graphql(guard = "Require(Permission::ThresholdManage)")]
    async fn update_tenant_thresholds(
        &self,
        ctx: &Context<'_>,
        input: UpdateTenantThresholdsInput,
    ) -> Result<ThresholdsObj> {
        let (s, who) = caller(ctx)?;
        s.set_thresholds(who, ThresholdTarget::Tenant, |t| input.values.apply_to(t)).await?;
        Ok(ThresholdsObj(s.thresholds(who, ThresholdTarget::Tenant).await?))
    }
}
