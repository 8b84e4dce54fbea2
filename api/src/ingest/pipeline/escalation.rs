//! The cache of tenants' escalation policies: every new alarm hazard schedules its
//! escalation in the transaction that opens it, with its tenant's policy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::notify::EscalationPolicy;

use crate::store::Store;

/// Escalation policies by tenant, with when they were looked up.
pub(super) struct Escalations {
    ttl: Duration,
    cached: HashMap<TenantId, (Instant, EscalationPolicy)>,
}

impl Escalations {
    pub(super) fn new(ttl: Duration) -> Self {
        Escalations { ttl, cached: HashMap::new() }
    }

    /// Forgets everything (a tenant's policy may have changed).
    pub(super) fn clear(&mut self) {
        self.cached.clear();
    }

    /// The tenant's policy, from the cache while it is fresh.
    pub(super) async fn of(&mut self, store: &Store, tenant: TenantId) -> Result<EscalationPolicy, sea_orm::DbErr> {
        if let Some((at, p)) = self.cached.get(&tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(*p);
        }
        let policy = crate::store::tenants::get(store.db(), tenant).await?.map(|t| t.escalation).unwrap_or_default();
        self.cached.insert(tenant, (Instant::now(), policy));
        Ok(policy)
    }
}
