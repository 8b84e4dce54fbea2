//! The cache of effective thresholds per detector, filled per batch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sparkwatch_domain::ids::{DetectorId, ProjectId, TenantId};
use sparkwatch_domain::thresholds::EffectiveThresholds;

use super::Work;
use crate::store::Store;
use crate::store::thresholds::{self as th, Level};

/// Effective thresholds by detector, with when they were looked up.
pub(super) struct Thresholds {
    ttl: Duration,
    cached: foldhash::HashMap<DetectorId, (Instant, EffectiveThresholds)>,
}

impl Thresholds {
    pub(super) fn new(ttl: Duration) -> Self {
        Thresholds { ttl, cached: Default::default() }
    }

    /// Forgets everything (a threshold, detector or device changed).
    pub(super) fn clear(&mut self) {
        self.cached.clear();
    }

    /// A detector's thresholds, once [`Thresholds::load`] loaded them.
    pub(super) fn get(&self, detector: DetectorId) -> Option<&EffectiveThresholds> {
        self.cached.get(&detector).map(|(_, t)| t)
    }

    /// Resolves the thresholds of every detector in `work` that has none cached or an
    /// expired one — one query for the batch: looked up per detector (three queries each),
    /// the cache expiring for a thousand detectors at once held a batch, and the alarms in
    /// it, for a second.
    pub(super) async fn load(&mut self, store: &Store, work: &[Work]) -> Result<(), sea_orm::DbErr> {
        let (ttl, now) = (self.ttl, Instant::now());
        let stale: HashMap<DetectorId, (TenantId, ProjectId)> = work
            .iter()
            .filter_map(|w| match w {
                Work::Reading { device, detector, .. } => Some((detector.id, (device.tenant, detector.project))),
                _ => None,
            })
            .filter(|(id, _)| self.cached.get(id).is_none_or(|(at, _)| now.duration_since(*at) >= ttl))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<uuid::Uuid> =
            stale.iter().flat_map(|(d, (t, p))| [d.as_uuid(), t.as_uuid(), p.as_uuid()]).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = th::get_many(store.db(), &ids).await?;
        let at = |tenant: TenantId, level: Level, id: uuid::Uuid| {
            found.get(&(tenant, level, id)).cloned().unwrap_or_default()
        };
        for (detector, (tenant, project)) in stale {
            let eff = EffectiveThresholds::resolve(
                &at(tenant, Level::Tenant, tenant.as_uuid()),
                &at(tenant, Level::Project, project.as_uuid()),
                &at(tenant, Level::Detector, detector.as_uuid()),
            );
            self.cached.insert(detector, (now, eff));
        }
        Ok(())
    }
}
