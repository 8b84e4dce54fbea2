//! Query root.

use async_graphql::{Context, ID, Object};

use super::Result;
use sparkwatch_domain::access::Permission;

use super::guard::{Require, SignedIn, caller};
use super::input::{DetectorFilter, DeviceFilter, ProjectFilter, parse_id, parse_projects};
use super::object::{
    ApiKeyObj, Conn, DetectorObj, DeviceObj, OperationObj, PermissionObj, ProjectObj, RoleObj, TenantObj,
    ThresholdsObj, UserObj, connection,
};
use crate::service::page_request;
use crate::service::thresholds::ThresholdTarget;
use crate::store::sites;

/// Read operations on accounts, sites and set-points (merged into [`super::Query`]).
#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// The signed-in user.
    #[graphql(guard = "SignedIn")]
    async fn me(&self, ctx: &Context<'_>) -> Result<UserObj> {
        let (s, who) = caller(ctx)?;
        Ok(UserObj(s.me(who).await?))
    }

    /// Every permission code a role can grant.
    #[graphql(guard = "SignedIn")]
    async fn permissions(&self) -> Vec<PermissionObj> {
        Permission::ALL.into_iter().map(|p| PermissionObj { code: p.code(), platform_only: p.is_platform() }).collect()
    }

    /// All tenants with their usage (platform operators).
    #[graphql(
        guard = "Require(Permission::TenantManage)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn tenants(&self, ctx: &Context<'_>, first: Option<i32>, after: Option<String>) -> Result<Conn<TenantObj>> {
        let (s, _) = caller(ctx)?;
        let page = s.tenants(page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |t| t.id.to_string(), TenantObj))
    }

    /// One tenant (platform operators).
    #[graphql(guard = "Require(Permission::TenantManage)")]
    async fn tenant(&self, ctx: &Context<'_>, id: ID) -> Result<Option<TenantObj>> {
        let (s, _) = caller(ctx)?;
        Ok(s.tenant(parse_id("id", &id)?).await?.map(TenantObj))
    }

    /// Projects in the caller's scope.
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn projects(
        &self,
        ctx: &Context<'_>,
        filter: Option<ProjectFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<ProjectObj>> {
        let (s, who) = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let filter = sites::ProjectFilter { search: f.search, region: f.region };
        let page = s.projects(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |p| p.id.to_string(), ProjectObj))
    }

    /// One project in scope; `null` when it does not exist for the caller.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn project(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ProjectObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.project(who, parse_id("id", &id)?).await.ok().map(ProjectObj))
    }

    /// Devices in the caller's scope.
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn devices(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeviceFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<DeviceObj>> {
        let (s, who) = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let filter = sites::DeviceFilter {
            project_ids: f.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?,
            transport: f.transport.map(Into::into),
            online: f.online,
            search: f.search,
        };
        let page = s.devices(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |d| d.id.to_string(), DeviceObj))
    }

    /// One device in scope.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn device(&self, ctx: &Context<'_>, id: ID) -> Result<Option<DeviceObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.device(who, parse_id("id", &id)?).await.ok().map(DeviceObj))
    }

    /// Detectors in the caller's scope.
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn detectors(
        &self,
        ctx: &Context<'_>,
        filter: Option<DetectorFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<DetectorObj>> {
        let (s, who) = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let filter = sites::DetectorFilter {
            project_ids: f.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?,
            device_id: f.device_id.as_ref().map(|d| parse_id("deviceId", d)).transpose()?,
            search: f.search,
        };
        let page = s.detectors(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |d| d.id.to_string(), DetectorObj))
    }

    /// One detector in scope.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn detector(&self, ctx: &Context<'_>, id: ID) -> Result<Option<DetectorObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.detector(who, parse_id("id", &id)?).await.ok().map(DetectorObj))
    }

    /// Tenant-wide set-points (`null` = platform default).
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn tenant_thresholds(&self, ctx: &Context<'_>) -> Result<ThresholdsObj> {
        let (s, who) = caller(ctx)?;
        Ok(ThresholdsObj(s.thresholds(who, ThresholdTarget::Tenant).await?))
    }

    /// Users of the caller's tenant.
    #[graphql(
        guard = "Require(Permission::UserManage)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<UserObj>> {
        let (s, who) = caller(ctx)?;
        let page = s.users(who, search.as_deref(), page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |u| u.id.to_string(), UserObj))
    }

    /// One user of the caller's tenant.
    #[graphql(guard = "Require(Permission::UserManage)")]
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<UserObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.user(who, parse_id("id", &id)?).await.ok().map(UserObj))
    }

    /// Built-in roles and the tenant's own.
    #[graphql(guard = "Require(Permission::UserManage)")]
    async fn roles(&self, ctx: &Context<'_>) -> Result<Vec<RoleObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.roles(who).await?.into_iter().map(RoleObj).collect())
    }

    /// The tenant's API keys.
    #[graphql(guard = "Require(Permission::ApiKeyManage)")]
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKeyObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.api_keys(who).await?.into_iter().map(ApiKeyObj).collect())
    }

    /// The tenant's append-only operation log, oldest first.
    #[graphql(
        guard = "Require(Permission::OperationLogRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn operation_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<OperationObj>> {
        let (s, who) = caller(ctx)?;
        let page = s.operation_log(who, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |o| o.id.to_string(), OperationObj))
    }
}
