//! Threshold overrides per level.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::thresholds::ThresholdOverrides;
use sparkwatch_entity::threshold;
use uuid::Uuid;

use super::new_id;

/// The level a set of overrides applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Tenant-wide defaults.
    Tenant,
    /// One project.
    Project,
    /// One detector.
    Detector,
}

impl Level {
    fn code(self) -> &'static str {
        match self {
            Level::Tenant => "tenant",
            Level::Project => "project",
            Level::Detector => "detector",
        }
    }

    fn from_code(code: &str) -> Option<Level> {
        [Level::Tenant, Level::Project, Level::Detector].into_iter().find(|l| l.code() == code)
    }
}

/// The overrides stored for (`level`, `id`); empty when none were set.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    level: Level,
    id: Uuid,
) -> Result<ThresholdOverrides, DbErr> {
    let row = threshold::Entity::find()
        .filter(threshold::Column::TenantId.eq(tenant.as_uuid()))
        .filter(threshold::Column::Scope.eq(level.code()))
        .filter(threshold::Column::ScopeId.eq(id))
        .one(db)
        .await?;
    Ok(row.map(overrides).unwrap_or_default())
}

/// Every override stored for any of `ids` (tenants, projects or detectors), keyed by
/// (tenant, level, id): what ingestion needs to resolve a batch's thresholds in one query
/// instead of three per detector.
pub async fn get_many<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<HashMap<(TenantId, Level, Uuid), ThresholdOverrides>, DbErr> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let rows =
            threshold::Entity::find().filter(threshold::Column::ScopeId.is_in(chunk.iter().copied())).all(db).await?;
        for m in rows {
            let Some(level) = Level::from_code(&m.scope) else { continue };
            out.insert((m.tenant_id.into(), level, m.scope_id), overrides(m));
        }
    }
    Ok(out)
}

fn overrides(m: threshold::Model) -> ThresholdOverrides {
    ThresholdOverrides {
        leak_ma: m.leak_ma,
        leak_delay_s: m.leak_delay_s,
        temp_c: m.temp_c,
        temp_delay_s: m.temp_delay_s,
        overvoltage_v: m.overvoltage_v,
        undervoltage_v: m.undervoltage_v,
        overcurrent_a: m.overcurrent_a,
        prealarm_percent: m.prealarm_percent,
        hysteresis_percent: m.hysteresis_percent,
    }
}

/// Stores the overrides for (`level`, `id`), replacing what was there.
pub async fn put<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    level: Level,
    id: Uuid,
    t: &ThresholdOverrides,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = threshold::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(tenant.as_uuid()),
        scope: Set(level.code().to_owned()),
        scope_id: Set(id),
        leak_ma: Set(t.leak_ma),
        leak_delay_s: Set(t.leak_delay_s),
        temp_c: Set(t.temp_c),
        temp_delay_s: Set(t.temp_delay_s),
        overvoltage_v: Set(t.overvoltage_v),
        undervoltage_v: Set(t.undervoltage_v),
        overcurrent_a: Set(t.overcurrent_a),
        prealarm_percent: Set(t.prealarm_percent),
        hysteresis_percent: Set(t.hysteresis_percent),
        updated_at: Set(now),
    };
    use threshold::Column as C;
    threshold::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([C::Scope, C::ScopeId])
                .update_columns([
                    C::LeakMa,
                    C::LeakDelayS,
                    C::TempC,
                    C::TempDelayS,
                    C::OvervoltageV,
                    C::UndervoltageV,
                    C::OvercurrentA,
                    C::PrealarmPercent,
                    C::HysteresisPercent,
                    C::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await
        .map(|_| ())
}
