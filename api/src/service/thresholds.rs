//! Alarm set-points at tenant, project and detector level. Changing them is a privileged,
//! audited operation (GB 14287: set-points change only by authorised people).

use sparkwatch_domain::ids::{DetectorId, ProjectId};
use sparkwatch_domain::thresholds::{EffectiveThresholds, ThresholdOverrides, ThresholdWarning};

use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::oplog::Entry;
use crate::store::thresholds::{self as st, Level};

/// Where a set of overrides applies.
#[derive(Clone, Copy, Debug)]
pub enum ThresholdTarget {
    /// The caller's whole tenant.
    Tenant,
    /// One visible project.
    Project(ProjectId),
    /// One visible detector.
    Detector(DetectorId),
}

/// Overrides of one level and the values that result for a detector.
#[derive(Clone, Debug)]
pub struct DetectorThresholds {
    /// What the detector itself overrides.
    pub own: ThresholdOverrides,
    /// What applies after inheritance.
    pub effective: EffectiveThresholds,
}

impl Services {
    async fn level_of(&self, who: &Principal, target: ThresholdTarget) -> AppResult<(Level, uuid::Uuid)> {
        Ok(match target {
            ThresholdTarget::Tenant => (Level::Tenant, who.tenant()?.as_uuid()),
            ThresholdTarget::Project(p) => (Level::Project, self.project(who, p).await?.id.as_uuid()),
            ThresholdTarget::Detector(d) => (Level::Detector, self.detector(who, d).await?.id.as_uuid()),
        })
    }

    /// The overrides stored at one level.
    pub async fn thresholds(&self, who: &Principal, target: ThresholdTarget) -> AppResult<ThresholdOverrides> {
        let (level, id) = self.level_of(who, target).await?;
        Ok(st::get(self.inner.store.db(), who.tenant()?, level, id).await?)
    }

    /// Replaces the overrides at one level after checking the GB ranges; returns warnings
    /// for values that are valid but outside design guidance.
    pub async fn set_thresholds(
        &self,
        who: &Principal,
        target: ThresholdTarget,
        change: impl FnOnce(&mut ThresholdOverrides),
    ) -> AppResult<Vec<ThresholdWarning>> {
        let tenant = who.tenant()?;
        let (level, id) = self.level_of(who, target).await?;
        let tx = self.begin().await?;
        let before = st::get(&tx, tenant, level, id).await?;
        let mut after = before;
        change(&mut after);
        let warnings = after.validate()?;
        // Cross-level rules (under- below over-voltage) must hold for what finally applies.
        if let ThresholdTarget::Detector(d) = target {
            let detector = self.detector(who, d).await?;
            let t = st::get(&tx, tenant, Level::Tenant, tenant.as_uuid()).await?;
            let p = st::get(&tx, tenant, Level::Project, detector.project_id.as_uuid()).await?;
            after.over(&p.over(&t)).validate()?;
        }
        st::put(&tx, tenant, level, id, &after, self.now()).await?;
        let action = match level {
            Level::Tenant => "thresholds.tenant.update",
            Level::Project => "thresholds.project.update",
            Level::Detector => "thresholds.detector.update",
        };
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), action, "thresholds", Some(id.to_string()))
                .before(snapshot(&before))
                .after(snapshot(&after)),
        )
        .await?;
        tx.commit().await?;
        self.sites_changed();
        for w in &warnings {
            tracing::info!(field = %w.field, message = %w.message, "threshold warning");
        }
        Ok(warnings)
    }

    /// A detector's own overrides and the values that apply to it.
    pub async fn detector_thresholds(&self, who: &Principal, id: DetectorId) -> AppResult<DetectorThresholds> {
        let tenant = who.tenant()?;
        let d = self.detector(who, id).await?;
        let db = self.inner.store.db();
        let t = st::get(db, tenant, Level::Tenant, tenant.as_uuid()).await?;
        let p = st::get(db, tenant, Level::Project, d.project_id.as_uuid()).await?;
        let own = st::get(db, tenant, Level::Detector, id.as_uuid()).await?;
        if tenant != d.tenant_id {
            return Err(AppError::NotFound("detector"));
        }
        Ok(DetectorThresholds { own, effective: EffectiveThresholds::resolve(&t, &p, &own) })
    }
}
