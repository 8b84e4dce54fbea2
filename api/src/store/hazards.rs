//! Hazards and their transitions, events with the event view's columns, and dead letters —
//! read within the caller's tenant and project scope (both applied in SQL, so counts agree).
//!
//! **Order.** These lists are *newest first*, unlike the id-ordered [`super::page`]: people
//! read alarms and events from the latest down. Events are ordered by device time (`at`),
//! hazards by `opened_at`, dead letters by `received_at`, each with the id as tie-breaker.
//! Device time is not monotonic in id order (a device that was offline replays older
//! readings later), so the id alone would not give time order. The cursor is still the
//! item's id (as everywhere in the API); the keyset position `(time, id)` is looked up from
//! it by [`Keyset`] helpers, within the tenant only — a hazard that left the filter since the
//! page was read (e.g. acknowledged while paging through `OPEN` ones) still positions the
//! next page. `totalCount` counts the whole filtered list, independent of the cursor.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Select,
};
use serde::{Deserialize, Serialize};
use sparkwatch_domain::access::ProjectScope;
use sparkwatch_domain::hazard::HazardStatus;
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId, UserId};
use sparkwatch_domain::reading::{EventCategory, EventKind};
use sparkwatch_entity::{dead_letter, detector, device, event, hazard, hazard_transition};
use uuid::Uuid;

use super::{Page, in_scope, new_id};

/// Where a newest-first page starts: the time and id of the last item of the previous page.
#[derive(Clone, Copy, Debug)]
pub struct Keyset {
    /// The sort time of that item.
    pub at: DateTime<Utc>,
    /// Its id (tie-breaker between equal times).
    pub id: Uuid,
}

/// A request for a newest-first page.
#[derive(Clone, Copy, Debug)]
pub struct NewestFirst {
    /// Page size.
    pub first: u64,
    /// Items strictly older than this position.
    pub after: Option<Keyset>,
}

/// Runs `select` as a newest-first keyset page on `(at, id)`.
async fn page_newest<E, C>(
    db: &C,
    select: Select<E>,
    at: E::Column,
    id: E::Column,
    req: NewestFirst,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    C: ConnectionTrait,
{
    let total = select.clone().count(db).await?;
    let mut q = select.order_by_desc(at).order_by_desc(id);
    if let Some(k) = req.after {
        q = q.filter(Condition::any().add(at.lt(k.at)).add(Condition::all().add(at.eq(k.at)).add(id.lt(k.id))));
    }
    super::fetch_page(db, q, req.first, req.after.is_some(), total).await
}

// ---- hazards ----

/// A hazard as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hazard {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Project.
    pub project_id: ProjectId,
    /// Device, unless the hazard was found without one (patrol).
    pub device_id: Option<DeviceId>,
    /// Detector, unless the condition is device-wide.
    pub detector_id: Option<DetectorId>,
    /// The alarm/fault episode behind it.
    pub episode_id: Option<Uuid>,
    /// What happened.
    pub kind: EventKind,
    /// Alarm, fault, …
    pub category: EventCategory,
    /// Channel code (`leak:1`).
    pub channel: String,
    /// Lifecycle status.
    pub status: HazardStatus,
    /// How often the condition occurred while the episode was open.
    pub occurrences: u32,
    /// Highest value seen.
    pub peak_value: Option<f64>,
    /// Latest value seen.
    pub last_value: Option<f64>,
    /// Set-point that was exceeded.
    pub setpoint: Option<f64>,
    /// Device time of the first occurrence.
    pub device_at: DateTime<Utc>,
    /// When the server received it.
    pub ingested_at: DateTime<Utc>,
    /// When the hazard was created.
    pub opened_at: DateTime<Utc>,
    /// First push notification request.
    pub first_push_at: Option<DateTime<Utc>>,
    /// When it first left `OPEN`.
    pub first_ack_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The work order handling it (the latest one, once dispatched).
    pub work_order_id: Option<Uuid>,
    /// What the person who found it wrote (hazards reported in the field).
    pub description: Option<String>,
    /// Who reported it (hazards reported in the field).
    pub reported_by: Option<UserId>,
    /// The patrol checkpoint it was found at.
    pub checkpoint_id: Option<Uuid>,
}

/// A hazard row as the API shows it.
pub fn hazard_from(m: hazard::Model) -> Hazard {
    // Codes are written by this program from the same enums; an unknown one can only come
    // from a newer version's rows and is shown as the closest neutral value.
    let kind = EventKind::from_code(&m.kind).unwrap_or(EventKind::Command);
    Hazard {
        id: m.id,
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        device_id: m.device_id.map(Into::into),
        detector_id: m.detector_id.map(Into::into),
        episode_id: m.episode_id,
        category: EventCategory::from_code(&m.category).unwrap_or(kind.category()),
        kind,
        channel: m.channel,
        status: HazardStatus::from_code(&m.status).unwrap_or(HazardStatus::Open),
        occurrences: u32::try_from(m.occurrences).unwrap_or(0),
        peak_value: m.peak_value,
        last_value: m.last_value,
        setpoint: m.setpoint,
        device_at: m.device_at,
        ingested_at: m.ingested_at,
        opened_at: m.opened_at,
        first_push_at: m.first_push_at,
        first_ack_at: m.first_ack_at,
        updated_at: m.updated_at,
        work_order_id: m.work_order_id,
        description: m.description,
        reported_by: m.reported_by.map(Into::into),
        checkpoint_id: m.checkpoint_id,
    }
}

fn visible_hazards(tenant: TenantId, scope: &ProjectScope) -> Select<hazard::Entity> {
    in_scope(hazard::Entity::find(), hazard::Column::ProjectId, scope)
        .filter(hazard::Column::TenantId.eq(tenant.as_uuid()))
}

/// Filters for hazard lists.
#[derive(Clone, Debug, Default)]
pub struct HazardFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only this detector.
    pub detector_id: Option<DetectorId>,
    /// Only these statuses.
    pub statuses: Option<Vec<HazardStatus>>,
    /// Only these kinds.
    pub kinds: Option<Vec<EventKind>>,
    /// Opened at or after.
    pub from: Option<DateTime<Utc>>,
    /// Opened before.
    pub to: Option<DateTime<Utc>>,
}

/// The keyset position of a hazard of the tenant (for a cursor).
pub async fn hazard_keyset<C: ConnectionTrait>(db: &C, tenant: TenantId, id: Uuid) -> Result<Option<Keyset>, DbErr> {
    Ok(hazard::Entity::find_by_id(id)
        .filter(hazard::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(|m| Keyset { at: m.opened_at, id: m.id }))
}

/// A page of visible hazards, newest first.
pub async fn hazards<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    filter: &HazardFilter,
    req: NewestFirst,
) -> Result<Page<Hazard>, DbErr> {
    let mut q = visible_hazards(tenant, scope);
    if let Some(ids) = &filter.project_ids {
        q = q.filter(hazard::Column::ProjectId.is_in(ids.iter().map(|p| p.as_uuid())));
    }
    if let Some(d) = filter.detector_id {
        q = q.filter(hazard::Column::DetectorId.eq(d.as_uuid()));
    }
    if let Some(s) = &filter.statuses {
        q = q.filter(hazard::Column::Status.is_in(s.iter().map(|s| s.code())));
    }
    if let Some(k) = &filter.kinds {
        q = q.filter(hazard::Column::Kind.is_in(k.iter().map(|k| k.code())));
    }
    if let Some(from) = filter.from {
        q = q.filter(hazard::Column::OpenedAt.gte(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(hazard::Column::OpenedAt.lt(to));
    }
    Ok(page_newest(db, q, hazard::Column::OpenedAt, hazard::Column::Id, req).await?.map(hazard_from))
}

/// A visible hazard.
pub async fn hazard<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: Uuid,
) -> Result<Option<Hazard>, DbErr> {
    Ok(visible_hazards(tenant, scope).filter(hazard::Column::Id.eq(id)).one(db).await?.map(hazard_from))
}

/// The visible hazards among `ids` (any order; invisible and unknown ids are left out).
pub async fn hazards_by_ids<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    ids: &[Uuid],
) -> Result<Vec<Hazard>, DbErr> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        out.extend(
            visible_hazards(tenant, scope)
                .filter(hazard::Column::Id.is_in(chunk.iter().copied()))
                .all(db)
                .await?
                .into_iter()
                .map(hazard_from),
        );
    }
    Ok(out)
}

/// A hazard by id, whatever its tenant (for jobs that hold only its id).
pub async fn hazard_by_id<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<Hazard>, DbErr> {
    Ok(hazard::Entity::find_by_id(id).one(db).await?.map(hazard_from))
}

/// The hazard opened for an episode.
pub async fn hazard_of_episode<C: ConnectionTrait>(db: &C, episode: Uuid) -> Result<Option<Hazard>, DbErr> {
    Ok(hazard::Entity::find().filter(hazard::Column::EpisodeId.eq(episode)).one(db).await?.map(hazard_from))
}

/// Device name and position (the detector's, else the device's) for notification texts.
pub async fn place_of<C: ConnectionTrait>(
    db: &C,
    device_id: DeviceId,
    detector_id: Option<DetectorId>,
) -> Result<(String, Option<String>), DbErr> {
    let dev = device::Entity::find_by_id(device_id.as_uuid()).one(db).await?;
    let det = match detector_id {
        Some(d) => detector::Entity::find_by_id(d.as_uuid()).one(db).await?,
        None => None,
    };
    let name = dev.as_ref().map_or_else(|| "?".to_owned(), |d| d.name.clone());
    let position = det.and_then(|d| d.position).or_else(|| dev.and_then(|d| d.position));
    Ok((name, position))
}

/// Stamps the hazards' first push request (only the first stamp counts). One statement for
/// all of them, each hazard once however many phones it went to.
pub async fn mark_first_push<C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = Uuid>,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let mut ids: Vec<Uuid> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    hazard::Entity::update_many()
        .col_expr(hazard::Column::FirstPushAt, Expr::value(at))
        .filter(hazard::Column::Id.is_in(ids))
        .filter(hazard::Column::FirstPushAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Moves a hazard from the status it was read in to `to`, stamping `first_ack_at` when it
/// leaves `OPEN`. Returns false when the hazard's status changed in the meantime (another
/// writer got there first), in which case nothing was written.
pub async fn set_hazard_status<C: ConnectionTrait>(
    db: &C,
    h: &Hazard,
    to: HazardStatus,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let mut q = hazard::Entity::update_many()
        .col_expr(hazard::Column::Status, Expr::value(to.code()))
        .col_expr(hazard::Column::UpdatedAt, Expr::value(at));
    if h.status == HazardStatus::Open && h.first_ack_at.is_none() {
        q = q.col_expr(hazard::Column::FirstAckAt, Expr::value(at));
    }
    let res = q
        .filter(hazard::Column::Id.eq(h.id))
        .filter(hazard::Column::TenantId.eq(h.tenant_id.as_uuid()))
        .filter(hazard::Column::Status.eq(h.status.code()))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// One recorded status change of a hazard.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    /// Id.
    pub id: Uuid,
    /// The hazard.
    pub hazard_id: Uuid,
    /// Status before.
    pub from: HazardStatus,
    /// Status after.
    pub to: HazardStatus,
    /// Who (e-mail, phone, key name or `system`).
    pub actor: String,
    /// The user, when a user did it.
    pub actor_user_id: Option<UserId>,
    /// Note or reason.
    pub note: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A transition to record.
#[derive(Clone, Debug)]
pub struct NewTransition<'a> {
    /// Tenant.
    pub tenant: TenantId,
    /// The hazard.
    pub hazard_id: Uuid,
    /// Status before.
    pub from: HazardStatus,
    /// Status after.
    pub to: HazardStatus,
    /// Who (the principal's label).
    pub actor: &'a str,
    /// The user, when a user did it.
    pub actor_user_id: Option<UserId>,
    /// Note or reason.
    pub note: Option<&'a str>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Records a transition.
pub async fn insert_transition<C: ConnectionTrait>(db: &C, t: &NewTransition<'_>) -> Result<(), DbErr> {
    let row = hazard_transition::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(t.tenant.as_uuid()),
        hazard_id: Set(t.hazard_id),
        from_status: Set(t.from.code().to_owned()),
        to_status: Set(t.to.code().to_owned()),
        actor: Set(t.actor.to_owned()),
        actor_user_id: Set(t.actor_user_id.map(|u| u.as_uuid())),
        note: Set(t.note.map(str::to_owned)),
        at: Set(t.at),
    };
    hazard_transition::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// The transitions of a hazard of the tenant, oldest first.
pub async fn transitions<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    hazard_id: Uuid,
) -> Result<Vec<Transition>, DbErr> {
    Ok(hazard_transition::Entity::find()
        .filter(hazard_transition::Column::TenantId.eq(tenant.as_uuid()))
        .filter(hazard_transition::Column::HazardId.eq(hazard_id))
        .order_by_asc(hazard_transition::Column::At)
        .order_by_asc(hazard_transition::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|m| Transition {
            id: m.id,
            hazard_id: m.hazard_id,
            from: HazardStatus::from_code(&m.from_status).unwrap_or(HazardStatus::Open),
            to: HazardStatus::from_code(&m.to_status).unwrap_or(HazardStatus::Open),
            actor: m.actor,
            actor_user_id: m.actor_user_id.map(Into::into),
            note: m.note,
            at: m.at,
        })
        .collect())
}

// ---- events ----

/// An event with the event view's columns (device name and type, detector address, region,
/// position) joined in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventView {
    /// Id.
    pub id: Uuid,
    /// Project.
    pub project_id: ProjectId,
    /// Device.
    pub device_id: DeviceId,
    /// Detector, unless device-wide.
    pub detector_id: Option<DetectorId>,
    /// The episode it belongs to.
    pub episode_id: Option<Uuid>,
    /// What happened.
    pub kind: EventKind,
    /// Alarm, pre-alarm, fault, …
    pub category: EventCategory,
    /// `engine`, `device` or `system`.
    pub source: String,
    /// Channel code.
    pub channel: String,
    /// Device time.
    pub at: DateTime<Utc>,
    /// Ingest time.
    pub received_at: DateTime<Utc>,
    /// Value.
    pub value: Option<f64>,
    /// Set-point.
    pub setpoint: Option<f64>,
    /// Human-readable description.
    pub remarks: Option<String>,
    /// Device name (absent when the device was deleted since).
    pub device_name: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Detector bus address.
    pub detector_address: Option<u8>,
    /// Region: the detector's, else the device's.
    pub region: Option<String>,
    /// Position: the detector's, else the device's.
    pub position: Option<String>,
}

/// Filters for event lists.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only this detector.
    pub detector_id: Option<DetectorId>,
    /// Only this device (its detectors' events included).
    pub device_id: Option<DeviceId>,
    /// Only these categories.
    pub categories: Option<Vec<EventCategory>>,
    /// Only these kinds.
    pub kinds: Option<Vec<EventKind>>,
    /// At or after (device time).
    pub from: Option<DateTime<Utc>>,
    /// Before (device time).
    pub to: Option<DateTime<Utc>>,
    /// Remarks, channel, device name/serial or detector name/region/position contains this.
    pub search: Option<String>,
}

/// The keyset position of an event of the tenant (for a cursor).
pub async fn event_keyset<C: ConnectionTrait>(db: &C, tenant: TenantId, id: Uuid) -> Result<Option<Keyset>, DbErr> {
    Ok(event::Entity::find_by_id(id)
        .filter(event::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(|m| Keyset { at: m.at, id: m.id }))
}

/// A page of visible events, newest first (device time).
pub async fn events<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    filter: &EventFilter,
    req: NewestFirst,
) -> Result<Page<EventView>, DbErr> {
    let mut q = in_scope(event::Entity::find(), event::Column::ProjectId, scope)
        .filter(event::Column::TenantId.eq(tenant.as_uuid()));
    if let Some(ids) = &filter.project_ids {
        q = q.filter(event::Column::ProjectId.is_in(ids.iter().map(|p| p.as_uuid())));
    }
    if let Some(d) = filter.detector_id {
        q = q.filter(event::Column::DetectorId.eq(d.as_uuid()));
    }
    if let Some(d) = filter.device_id {
        q = q.filter(event::Column::DeviceId.eq(d.as_uuid()));
    }
    if let Some(c) = &filter.categories {
        q = q.filter(event::Column::Category.is_in(c.iter().map(|c| c.code())));
    }
    if let Some(k) = &filter.kinds {
        q = q.filter(event::Column::Kind.is_in(k.iter().map(|k| k.code())));
    }
    if let Some(from) = filter.from {
        q = q.filter(event::Column::At.gte(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(event::Column::At.lt(to));
    }
    if let Some(s) = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        // No relations are declared, so the joined columns are searched through subqueries.
        let devices = Query::select()
            .column(device::Column::Id)
            .from(device::Entity)
            .and_where(device::Column::TenantId.eq(tenant.as_uuid()))
            .cond_where(Condition::any().add(device::Column::Name.contains(s)).add(device::Column::Serial.contains(s)))
            .to_owned();
        let detectors = Query::select()
            .column(detector::Column::Id)
            .from(detector::Entity)
            .and_where(detector::Column::TenantId.eq(tenant.as_uuid()))
            .cond_where(
                Condition::any()
                    .add(detector::Column::Name.contains(s))
                    .add(detector::Column::Region.contains(s))
                    .add(detector::Column::Position.contains(s)),
            )
            .to_owned();
        q = q.filter(
            Condition::any()
                .add(event::Column::Remarks.contains(s))
                .add(event::Column::Channel.contains(s))
                .add(event::Column::DeviceId.in_subquery(devices))
                .add(event::Column::DetectorId.in_subquery(detectors)),
        );
    }
    let page = page_newest(db, q, event::Column::At, event::Column::Id, req).await?;
    let Page { items, has_next, has_previous, total } = page;
    let items = event_views(db, items).await?.into_iter().map(|(_, v)| v).collect();
    Ok(Page { items, has_next, has_previous, total })
}

/// Events by id with the event view's columns, and each one's tenant (for the bus; no scope).
pub async fn events_by_ids<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<Vec<(TenantId, EventView)>, DbErr> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        rows.extend(event::Entity::find().filter(event::Column::Id.is_in(chunk.iter().copied())).all(db).await?);
    }
    event_views(db, rows).await
}

/// Joins the device and detector columns of the event view into event rows (order kept).
async fn event_views<C: ConnectionTrait>(db: &C, rows: Vec<event::Model>) -> Result<Vec<(TenantId, EventView)>, DbErr> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let mut device_ids: Vec<Uuid> = rows.iter().map(|e| e.device_id).collect();
    let mut detector_ids: Vec<Uuid> = rows.iter().filter_map(|e| e.detector_id).collect();
    device_ids.sort_unstable();
    device_ids.dedup();
    detector_ids.sort_unstable();
    detector_ids.dedup();
    let devices = device::Entity::find().filter(device::Column::Id.is_in(device_ids)).all(db).await?;
    let detectors = if detector_ids.is_empty() {
        vec![]
    } else {
        detector::Entity::find().filter(detector::Column::Id.is_in(detector_ids)).all(db).await?
    };
    Ok(rows
        .into_iter()
        .map(|e| {
            let dev = devices.iter().find(|d| d.id == e.device_id);
            let det = e.detector_id.and_then(|id| detectors.iter().find(|d| d.id == id));
            let place = EventPlace {
                device_name: dev.map(|d| d.name.clone()),
                device_type: dev.and_then(|d| d.device_type.clone()),
                detector_address: det.and_then(|d| u8::try_from(d.address).ok()),
                region: det.and_then(|d| d.region.clone()).or_else(|| dev.and_then(|d| d.region.clone())),
                position: det.and_then(|d| d.position.clone()).or_else(|| dev.and_then(|d| d.position.clone())),
            };
            event_view(e, place)
        })
        .collect())
}

/// The device and detector columns of the event view.
#[derive(Clone, Debug, Default)]
pub struct EventPlace {
    /// Device name (absent when the device was deleted since).
    pub device_name: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
    /// Detector bus address.
    pub detector_address: Option<u8>,
    /// Region: the detector's, else the device's.
    pub region: Option<String>,
    /// Position: the detector's, else the device's.
    pub position: Option<String>,
}

/// An event row with its place: the event view, and the event's tenant.
pub fn event_view(e: event::Model, place: EventPlace) -> (TenantId, EventView) {
    let kind = EventKind::from_code(&e.kind).unwrap_or(EventKind::Command);
    let EventPlace { device_name, device_type, detector_address, region, position } = place;
    let view = EventView {
        id: e.id,
        project_id: e.project_id.into(),
        device_id: e.device_id.into(),
        detector_id: e.detector_id.map(Into::into),
        episode_id: e.episode_id,
        category: EventCategory::from_code(&e.category).unwrap_or(kind.category()),
        kind,
        source: e.source,
        channel: e.channel,
        at: e.at,
        received_at: e.received_at,
        value: e.value,
        setpoint: e.setpoint,
        remarks: e.remarks,
        device_name,
        device_type,
        detector_address,
        region,
        position,
    };
    (e.tenant_id.into(), view)
}

// ---- dead letters ----

/// Rejected device input with the reason.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Id.
    pub id: Uuid,
    /// Serial of the sender, when known.
    pub serial: Option<String>,
    /// Topic it arrived on.
    pub topic: String,
    /// Short reason code.
    pub reason: String,
    /// What exactly was wrong.
    pub detail: String,
    /// The payload as text (at most 4 KiB).
    pub payload: String,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

/// The keyset position of a dead letter of the tenant (for a cursor).
pub async fn dead_letter_keyset<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Keyset>, DbErr> {
    Ok(dead_letter::Entity::find_by_id(id)
        .filter(dead_letter::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(|m| Keyset { at: m.received_at, id: m.id }))
}

/// A page of the tenant's dead letters, newest first. Rejected input from unknown senders
/// belongs to no tenant and is not listed; a caller limited to projects sees only those of
/// devices in its projects.
pub async fn dead_letters<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    req: NewestFirst,
) -> Result<Page<DeadLetter>, DbErr> {
    let mut q = dead_letter::Entity::find().filter(dead_letter::Column::TenantId.eq(tenant.as_uuid()));
    if let ProjectScope::Only(projects) = scope {
        let serials = Query::select()
            .column(device::Column::Serial)
            .from(device::Entity)
            .and_where(device::Column::TenantId.eq(tenant.as_uuid()))
            .and_where(device::Column::ProjectId.is_in(projects.iter().map(|p| p.as_uuid())))
            .to_owned();
        q = q.filter(dead_letter::Column::Serial.in_subquery(serials));
    }
    Ok(page_newest(db, q, dead_letter::Column::ReceivedAt, dead_letter::Column::Id, req).await?.map(|m| DeadLetter {
        id: m.id,
        serial: m.serial,
        topic: m.topic,
        reason: m.reason,
        detail: m.detail,
        payload: m.payload,
        received_at: m.received_at,
    }))
}
