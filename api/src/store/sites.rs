//! Projects, devices and detectors.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
};
use sparkwatch_domain::access::ProjectScope;
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::site::{Detector, DetectorDraft, Device, DeviceDraft, DeviceTransport, Project, ProjectDraft};
use sparkwatch_entity::{detector, device, project};

use super::{Page, PageRequest, in_scope, new_id, page};

// ---- projects ----

pub(crate) fn project_from(m: project::Model) -> Project {
    Project {
        id: m.id.into(),
        tenant_id: m.tenant_id.into(),
        draft: ProjectDraft {
            name: m.name,
            address: m.address,
            contact_name: m.contact_name,
            contact_phone: m.contact_phone,
            building_area_m2: m.building_area_m2,
            latitude: m.latitude,
            longitude: m.longitude,
            region: m.region,
        },
        created_at: m.created_at,
    }
}

fn project_row(p: &Project) -> project::ActiveModel {
    let d = &p.draft;
    project::ActiveModel {
        id: Set(p.id.as_uuid()),
        tenant_id: Set(p.tenant_id.as_uuid()),
        name: Set(d.name.clone()),
        address: Set(d.address.clone()),
        contact_name: Set(d.contact_name.clone()),
        contact_phone: Set(d.contact_phone.clone()),
        building_area_m2: Set(d.building_area_m2),
        latitude: Set(d.latitude),
        longitude: Set(d.longitude),
        region: Set(d.region.clone()),
        created_at: Set(p.created_at),
    }
}

/// Inserts a project.
pub async fn insert_project<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    draft: ProjectDraft,
    now: DateTime<Utc>,
) -> Result<Project, DbErr> {
    let p = Project { id: new_id().into(), tenant_id: tenant, draft, created_at: now };
    project::Entity::insert(project_row(&p)).exec_without_returning(db).await?;
    Ok(p)
}

/// Rewrites a project's editable fields.
pub async fn update_project<C: ConnectionTrait>(db: &C, p: &Project) -> Result<(), DbErr> {
    project::Entity::update(project_row(p)).exec(db).await.map(|_| ())
}

/// Deletes a project.
pub async fn delete_project<C: ConnectionTrait>(db: &C, p: &Project) -> Result<(), DbErr> {
    project::Entity::delete_by_id(p.id.as_uuid()).exec(db).await.map(|_| ())
}

/// A project of the tenant, if visible in `scope`.
pub async fn project<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: ProjectId,
) -> Result<Option<Project>, DbErr> {
    if !scope.contains(id) {
        return Ok(None);
    }
    Ok(project::Entity::find_by_id(id.as_uuid())
        .filter(project::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(project_from))
}

/// A project of the tenant by exact name (ignores scope; for imports).
pub async fn project_by_name<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    name: &str,
) -> Result<Option<Project>, DbErr> {
    Ok(project::Entity::find()
        .filter(project::Column::TenantId.eq(tenant.as_uuid()))
        .filter(project::Column::Name.eq(name))
        .one(db)
        .await?
        .map(project_from))
}

/// Filters for project lists.
#[derive(Clone, Debug, Default)]
pub struct ProjectFilter {
    /// Name or address contains this text.
    pub search: Option<String>,
    /// Exact region.
    pub region: Option<String>,
}

/// A page of visible projects.
pub async fn projects<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    filter: &ProjectFilter,
    req: PageRequest,
) -> Result<Page<Project>, DbErr> {
    let mut q = in_scope(project::Entity::find(), project::Column::Id, scope)
        .filter(project::Column::TenantId.eq(tenant.as_uuid()));
    if let Some(s) = &filter.search {
        q = q.filter(Condition::any().add(project::Column::Name.contains(s)).add(project::Column::Address.contains(s)));
    }
    if let Some(r) = &filter.region {
        q = q.filter(project::Column::Region.eq(r.as_str()));
    }
    Ok(page(db, q, project::Column::Id, req).await?.map(project_from))
}

// ---- devices ----

pub(crate) fn device_from(m: device::Model) -> Device {
    Device {
        id: m.id.into(),
        tenant_id: m.tenant_id.into(),
        draft: DeviceDraft {
            project_id: m.project_id.into(),
            serial: m.serial,
            name: m.name,
            model: m.model,
            device_type: m.device_type,
            transport: DeviceTransport::parse("transport", &m.transport).unwrap_or(DeviceTransport::Mqtt),
            host: m.host,
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            interval_s: u32::try_from(m.interval_s).unwrap_or(sparkwatch_domain::site::DEFAULT_INTERVAL_S),
            region: m.region,
            position: m.position,
        },
        online: m.online,
        last_seen_at: m.last_seen_at,
        created_at: m.created_at,
    }
}

fn device_row(d: &Device) -> device::ActiveModel {
    let x = &d.draft;
    device::ActiveModel {
        id: Set(d.id.as_uuid()),
        tenant_id: Set(d.tenant_id.as_uuid()),
        project_id: Set(x.project_id.as_uuid()),
        serial: Set(x.serial.clone()),
        name: Set(x.name.clone()),
        model: Set(x.model.clone()),
        device_type: Set(x.device_type.clone()),
        transport: Set(x.transport.code().to_owned()),
        host: Set(x.host.clone()),
        port: Set(x.port.map(i32::from)),
        interval_s: Set(x.interval_s as i32),
        region: Set(x.region.clone()),
        position: Set(x.position.clone()),
        online: Set(d.online),
        last_seen_at: Set(d.last_seen_at),
        created_at: Set(d.created_at),
    }
}

/// Inserts a device.
pub async fn insert_device<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    draft: DeviceDraft,
    now: DateTime<Utc>,
) -> Result<Device, DbErr> {
    let d =
        Device { id: new_id().into(), tenant_id: tenant, draft, online: false, last_seen_at: None, created_at: now };
    device::Entity::insert(device_row(&d)).exec_without_returning(db).await?;
    Ok(d)
}

/// Rewrites a device.
pub async fn update_device<C: ConnectionTrait>(db: &C, d: &Device) -> Result<(), DbErr> {
    device::Entity::update(device_row(d)).exec(db).await.map(|_| ())
}

/// Deletes a device (its detectors go with it).
pub async fn delete_device<C: ConnectionTrait>(db: &C, d: &Device) -> Result<(), DbErr> {
    device::Entity::delete_by_id(d.id.as_uuid()).exec(db).await.map(|_| ())
}

/// The device with `serial`, in whatever tenant (serials are unique platform-wide); for the
/// command line and the demo, never for a tenant's caller.
pub async fn device_by_serial<C: ConnectionTrait>(db: &C, serial: &str) -> Result<Option<Device>, DbErr> {
    Ok(device::Entity::find().filter(device::Column::Serial.eq(serial)).one(db).await?.map(device_from))
}

/// A visible device of the tenant.
pub async fn device<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: DeviceId,
) -> Result<Option<Device>, DbErr> {
    Ok(in_scope(device::Entity::find_by_id(id.as_uuid()), device::Column::ProjectId, scope)
        .filter(device::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(device_from))
}

/// Whether any tenant already has a device with this serial.
pub async fn serial_taken<C: ConnectionTrait>(db: &C, serial: &str) -> Result<bool, DbErr> {
    Ok(device::Entity::find().filter(device::Column::Serial.eq(serial)).count(db).await? > 0)
}

/// Filters for device lists.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only this transport.
    pub transport: Option<DeviceTransport>,
    /// Only online (true) or offline (false) devices.
    pub online: Option<bool>,
    /// Serial or name contains this text.
    pub search: Option<String>,
}

/// A page of visible devices.
pub async fn devices<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    filter: &DeviceFilter,
    req: PageRequest,
) -> Result<Page<Device>, DbErr> {
    let mut q = in_scope(device::Entity::find(), device::Column::ProjectId, scope)
        .filter(device::Column::TenantId.eq(tenant.as_uuid()));
    if let Some(ids) = &filter.project_ids {
        q = q.filter(device::Column::ProjectId.is_in(ids.iter().map(|p| p.as_uuid())));
    }
    if let Some(t) = filter.transport {
        q = q.filter(device::Column::Transport.eq(t.code()));
    }
    if let Some(online) = filter.online {
        q = q.filter(device::Column::Online.eq(online));
    }
    if let Some(s) = &filter.search {
        q = q.filter(Condition::any().add(device::Column::Serial.contains(s)).add(device::Column::Name.contains(s)));
    }
    Ok(page(db, q, device::Column::Id, req).await?.map(device_from))
}

/// Number of devices in a project.
pub async fn device_count<C: ConnectionTrait>(db: &C, project: ProjectId) -> Result<u64, DbErr> {
    device::Entity::find().filter(device::Column::ProjectId.eq(project.as_uuid())).count(db).await
}

// ---- detectors ----

fn detector_from(m: detector::Model) -> Detector {
    Detector {
        id: m.id.into(),
        tenant_id: m.tenant_id.into(),
        project_id: m.project_id.into(),
        draft: DetectorDraft {
            device_id: m.device_id.into(),
            address: u8::try_from(m.address).unwrap_or(0),
            name: m.name,
            region: m.region,
            position: m.position,
            leak_channels: u8::try_from(m.leak_channels).unwrap_or(0),
            temp_channels: u8::try_from(m.temp_channels).unwrap_or(0),
            has_voltage: m.has_voltage,
            has_current: m.has_current,
        },
        created_at: m.created_at,
    }
}

fn detector_row(d: &Detector) -> detector::ActiveModel {
    let x = &d.draft;
    detector::ActiveModel {
        id: Set(d.id.as_uuid()),
        tenant_id: Set(d.tenant_id.as_uuid()),
        project_id: Set(d.project_id.as_uuid()),
        device_id: Set(x.device_id.as_uuid()),
        address: Set(i32::from(x.address)),
        name: Set(x.name.clone()),
        region: Set(x.region.clone()),
        position: Set(x.position.clone()),
        leak_channels: Set(i32::from(x.leak_channels)),
        temp_channels: Set(i32::from(x.temp_channels)),
        has_voltage: Set(x.has_voltage),
        has_current: Set(x.has_current),
        created_at: Set(d.created_at),
    }
}

/// Inserts a detector on a device of `project`.
pub async fn insert_detector<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    project: ProjectId,
    draft: DetectorDraft,
    now: DateTime<Utc>,
) -> Result<Detector, DbErr> {
    let d = Detector { id: new_id().into(), tenant_id: tenant, project_id: project, draft, created_at: now };
    detector::Entity::insert(detector_row(&d)).exec_without_returning(db).await?;
    Ok(d)
}

/// Rewrites a detector.
pub async fn update_detector<C: ConnectionTrait>(db: &C, d: &Detector) -> Result<(), DbErr> {
    detector::Entity::update(detector_row(d)).exec(db).await.map(|_| ())
}

/// Deletes a detector.
pub async fn delete_detector<C: ConnectionTrait>(db: &C, d: &Detector) -> Result<(), DbErr> {
    detector::Entity::delete_by_id(d.id.as_uuid()).exec(db).await.map(|_| ())
}

/// Moves a device's detectors along when the device changes project.
pub async fn move_detectors<C: ConnectionTrait>(db: &C, device: DeviceId, project: ProjectId) -> Result<(), DbErr> {
    detector::Entity::update_many()
        .col_expr(detector::Column::ProjectId, sea_orm::sea_query::Expr::value(project.as_uuid()))
        .filter(detector::Column::DeviceId.eq(device.as_uuid()))
        .exec(db)
        .await
        .map(|_| ())
}

/// A visible detector of the tenant.
pub async fn detector<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    id: DetectorId,
) -> Result<Option<Detector>, DbErr> {
    Ok(in_scope(detector::Entity::find_by_id(id.as_uuid()), detector::Column::ProjectId, scope)
        .filter(detector::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(detector_from))
}

/// Filters for detector lists.
#[derive(Clone, Debug, Default)]
pub struct DetectorFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Only this device.
    pub device_id: Option<DeviceId>,
    /// Name, region or position contains this text.
    pub search: Option<String>,
}

/// A page of visible detectors.
pub async fn detectors<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &ProjectScope,
    filter: &DetectorFilter,
    req: PageRequest,
) -> Result<Page<Detector>, DbErr> {
    let mut q = in_scope(detector::Entity::find(), detector::Column::ProjectId, scope)
        .filter(detector::Column::TenantId.eq(tenant.as_uuid()));
    if let Some(ids) = &filter.project_ids {
        q = q.filter(detector::Column::ProjectId.is_in(ids.iter().map(|p| p.as_uuid())));
    }
    if let Some(d) = filter.device_id {
        q = q.filter(detector::Column::DeviceId.eq(d.as_uuid()));
    }
    if let Some(s) = &filter.search {
        q = q.filter(
            Condition::any()
                .add(detector::Column::Name.contains(s))
                .add(detector::Column::Region.contains(s))
                .add(detector::Column::Position.contains(s)),
        );
    }
    Ok(page(db, q, detector::Column::Id, req).await?.map(detector_from))
}
