//! Tenants (platform operators only).

use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::site::Tenant;
use sparkwatch_domain::validate;

use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::{Page, PageRequest, oplog::Entry, tenants};

/// A tenant with its billing figures.
#[derive(Clone, Debug)]
pub struct TenantUsage {
    /// Devices registered.
    pub devices: u64,
    /// Devices connected now (the billing figure).
    pub connected_devices: u64,
}

impl Services {
    /// Creates a tenant.
    pub async fn create_tenant(&self, who: &Principal, name: &str) -> AppResult<Tenant> {
        let name = validate::required_text("name", name, 200)?;
        let tx = self.begin().await?;
        if tenants::by_name(&tx, &name).await?.is_some() {
            return Err(AppError::Conflict(format!("a tenant named `{name}` already exists")));
        }
        let t = tenants::insert(&tx, &name, self.now()).await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(t.id), "tenant.create", "tenant", Some(t.id.to_string())).after(snapshot(&t)),
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Renames or suspends/reactivates a tenant.
    pub async fn update_tenant(
        &self,
        who: &Principal,
        id: TenantId,
        name: Option<&str>,
        active: Option<bool>,
    ) -> AppResult<Tenant> {
        let tx = self.begin().await?;
        let before = tenants::get(&tx, id).await?.ok_or(AppError::NotFound("tenant"))?;
        let mut after = before.clone();
        if let Some(n) = name {
            after.name = validate::required_text("name", n, 200)?;
            if after.name != before.name && tenants::by_name(&tx, &after.name).await?.is_some() {
                return Err(AppError::Conflict(format!("a tenant named `{}` already exists", after.name)));
            }
        }
        if let Some(a) = active {
            after.active = a;
        }
        let after = tenants::update(&tx, &after).await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(id), "tenant.update", "tenant", Some(id.to_string()))
                .before(snapshot(&before))
                .after(snapshot(&after)),
        )
        .await?;
        tx.commit().await?;
        self.access_changed(id);
        Ok(after)
    }

    /// All tenants.
    pub async fn tenants(&self, req: PageRequest) -> AppResult<Page<Tenant>> {
        Ok(tenants::list(self.inner.store.db(), req).await?)
    }

    /// One tenant.
    pub async fn tenant(&self, id: TenantId) -> AppResult<Option<Tenant>> {
        Ok(tenants::get(self.inner.store.db(), id).await?)
    }

    /// A tenant by name (CLI).
    pub async fn tenant_by_name(&self, name: &str) -> AppResult<Tenant> {
        tenants::by_name(self.inner.store.db(), name).await?.ok_or(AppError::NotFound("tenant"))
    }

    /// Device counts of a tenant.
    pub async fn tenant_usage(&self, id: TenantId) -> AppResult<TenantUsage> {
        let (devices, connected_devices) = tenants::device_counts(self.inner.store.db(), id).await?;
        Ok(TenantUsage { devices, connected_devices })
    }
}
