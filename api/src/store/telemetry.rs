//! Telemetry storage: device lookups for ingestion, batched readings, rollups, episodes,
//! hazards, events and dead letters.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_entity::{dead_letter, detector, device, episode, event, hazard, reading, reading_rollup};
use uuid::Uuid;

use super::hazards::EventPlace;
use super::new_id;

/// What ingestion needs to know about a detector.
#[derive(Clone, Debug)]
pub struct DetectorInfo {
    /// Id.
    pub id: DetectorId,
    /// Bus address.
    pub address: u8,
    /// Project.
    pub project: ProjectId,
    /// Region, for the event view.
    pub region: Option<String>,
    /// Position, for the event view.
    pub position: Option<String>,
}

/// What ingestion needs to know about a device and its detectors.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Id.
    pub id: DeviceId,
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// Serial.
    pub serial: String,
    /// Name (device name, type, region and position are for the event view).
    pub name: String,
    /// Device type.
    pub device_type: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Position.
    pub position: Option<String>,
    /// Transport.
    pub transport: DeviceTransport,
    /// Gateway host (Modbus).
    pub host: Option<String>,
    /// Gateway port (Modbus).
    pub port: Option<u16>,
    /// Reporting / polling interval, seconds.
    pub interval_s: u32,
    /// Online flag as stored.
    pub online: bool,
    /// Last time it was heard from.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Detectors on its bus.
    pub detectors: Vec<DetectorInfo>,
}

impl DeviceInfo {
    /// The detector at a bus address.
    pub fn detector(&self, address: u8) -> Option<&DetectorInfo> {
        self.detectors.iter().find(|d| d.address == address)
    }

    /// The event view's columns for an event of this device (and one of its detectors), as
    /// [`super::hazards::events_by_ids`] would join them.
    pub fn place(&self, detector: Option<DetectorId>) -> EventPlace {
        let det = detector.and_then(|id| self.detectors.iter().find(|d| d.id == id));
        EventPlace {
            device_name: Some(self.name.clone()),
            device_type: self.device_type.clone(),
            detector_address: det.map(|d| d.address),
            region: det.and_then(|d| d.region.clone()).or_else(|| self.region.clone()),
            position: det.and_then(|d| d.position.clone()).or_else(|| self.position.clone()),
        }
    }
}

async fn with_detectors<C: ConnectionTrait>(db: &C, devices: Vec<device::Model>) -> Result<Vec<DeviceInfo>, DbErr> {
    if devices.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = devices.iter().map(|d| d.id).collect();
    let mut detectors: HashMap<Uuid, Vec<detector::Model>> = HashMap::new();
    for chunk in ids.chunks(500) {
        let found = detector::Entity::find()
            .filter(detector::Column::DeviceId.is_in(chunk.iter().copied()))
            .order_by_asc(detector::Column::Address)
            .all(db)
            .await?;
        for x in found {
            detectors.entry(x.device_id).or_default().push(x);
        }
    }
    Ok(devices
        .into_iter()
        .map(|d| DeviceInfo {
            id: d.id.into(),
            tenant: d.tenant_id.into(),
            project: d.project_id.into(),
            transport: DeviceTransport::parse("transport", &d.transport).unwrap_or(DeviceTransport::Mqtt),
            host: d.host,
            port: d.port.and_then(|p| u16::try_from(p).ok()),
            interval_s: u32::try_from(d.interval_s).unwrap_or(10),
            online: d.online,
            last_seen_at: d.last_seen_at,
            detectors: detectors
                .remove(&d.id)
                .unwrap_or_default()
                .into_iter()
                .map(|x| DetectorInfo {
                    id: x.id.into(),
                    address: u8::try_from(x.address).unwrap_or(0),
                    project: x.project_id.into(),
                    region: x.region,
                    position: x.position,
                })
                .collect(),
            serial: d.serial,
            name: d.name,
            device_type: d.device_type,
            region: d.region,
            position: d.position,
        })
        .collect())
}

/// The devices with any of `serials`, with their detectors: two queries per 500 serials, so
/// ingestion looks up a whole batch's devices at once.
pub async fn devices_by_serials<C: ConnectionTrait>(db: &C, serials: &[String]) -> Result<Vec<DeviceInfo>, DbErr> {
    let mut found = Vec::new();
    for chunk in serials.chunks(500) {
        found.extend(device::Entity::find().filter(device::Column::Serial.is_in(chunk.iter().cloned())).all(db).await?);
    }
    with_detectors(db, found).await
}

/// Every device of a transport (all tenants), with detectors; for pollers and heartbeats.
pub async fn devices_by_transport<C: ConnectionTrait>(db: &C, t: DeviceTransport) -> Result<Vec<DeviceInfo>, DbErr> {
    let found = device::Entity::find().filter(device::Column::Transport.eq(t.code())).all(db).await?;
    with_detectors(db, found).await
}

/// Records that a device was heard from (or went offline).
pub async fn set_device_seen<C: ConnectionTrait>(
    db: &C,
    id: DeviceId,
    online: bool,
    at: Option<DateTime<Utc>>,
) -> Result<(), DbErr> {
    let mut q = device::Entity::update_many().col_expr(device::Column::Online, Expr::value(online));
    if let Some(at) = at {
        q = q.col_expr(device::Column::LastSeenAt, Expr::value(at));
    }
    q.filter(device::Column::Id.eq(id.as_uuid())).exec(db).await.map(|_| ())
}

/// Writes back when many devices were last heard from: one statement on PostgreSQL, one per
/// device on SQLite (where a statement costs no round trip). Only `last_seen_at`: the online
/// flag changes in the transaction that records the change, and this write-back runs beside
/// that transaction, so writing it here could undo a newer change.
pub async fn set_last_seen<C: ConnectionTrait>(db: &C, seen: &[(DeviceId, DateTime<Utc>)]) -> Result<(), DbErr> {
    if seen.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        for (id, at) in seen {
            device::Entity::update_many()
                .col_expr(device::Column::LastSeenAt, Expr::value(*at))
                .filter(device::Column::Id.eq(id.as_uuid()))
                .exec(db)
                .await?;
        }
        return Ok(());
    }
    let rows = seen.iter().map(|(id, at)| {
        serde_json::json!({"id": id.as_uuid(), "at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)})
    });
    for batch in json_batches(rows) {
        let stmt = sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE devices SET last_seen_at = v.at \
             FROM jsonb_to_recordset($1::jsonb) AS v(id uuid, at timestamptz) WHERE devices.id = v.id",
            [batch.into()],
        );
        db.execute_raw(stmt).await?;
    }
    Ok(())
}

/// Largest parameter of one PostgreSQL batch statement: bounds a statement's size, not its
/// round trips — a full batch of readings (~150 KB) goes as one statement. Until sqlx 0.9.1
/// set `TCP_NODELAY` (transact-rs/sqlx#4335) this was 12 KiB: a statement bigger than the
/// send buffer left in two writes and the second waited 40 ms for the server's delayed ACK,
/// so batches were cut into a dozen statements (BENCHMARKS.md, ingestion run 10).
const MAX_PARAM_BYTES: usize = 1024 * 1024;

/// JSON arrays of `rows`, each at most [`MAX_PARAM_BYTES`] long (a single bigger row goes
/// alone).
fn json_batches(rows: impl Iterator<Item = serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::from("[");
    for row in rows {
        let row = row.to_string();
        if cur.len() > 1 && cur.len() + row.len() + 2 > MAX_PARAM_BYTES {
            cur.push(']');
            out.push(std::mem::replace(&mut cur, String::from("[")));
        }
        if cur.len() > 1 {
            cur.push(',');
        }
        cur.push_str(&row);
    }
    if cur.len() > 1 {
        cur.push(']');
        out.push(cur);
    }
    out
}

/// A reading row to store.
#[derive(Clone, Debug)]
pub struct NewReading {
    /// Tenant.
    pub tenant: TenantId,
    /// Detector.
    pub detector: DetectorId,
    /// Device time.
    pub at: DateTime<Utc>,
    /// Ingest time.
    pub received_at: DateTime<Utc>,
    /// The values as compact JSON.
    pub values: String,
}

/// Stores readings in multi-row inserts; rows already stored (same detector and device
/// time: a redelivery) are skipped. Returns the keys of the rows that were new, so that only
/// those are evaluated — one statement both stores and deduplicates.
pub async fn insert_readings<C: ConnectionTrait>(
    db: &C,
    rows: &[NewReading],
) -> Result<std::collections::HashSet<(DetectorId, DateTime<Utc>)>, DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        return insert_readings_postgres(db, rows).await;
    }
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    // 5 parameters per row; stay far below SQLite's parameter limit.
    for chunk in rows.chunks(1000) {
        let models = chunk.iter().map(|r| reading::ActiveModel {
            tenant_id: Set(r.tenant.as_uuid()),
            detector_id: Set(r.detector.as_uuid()),
            at: Set(r.at),
            received_at: Set(r.received_at),
            values: Set(r.values.clone()),
        });
        let res = reading::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([reading::Column::DetectorId, reading::Column::At]).do_nothing().to_owned(),
            )
            .exec_with_returning(db)
            .await;
        match res {
            Ok(models) => inserted.extend(models.into_iter().map(|m| (DetectorId::from(m.detector_id), m.at))),
            Err(DbErr::RecordNotInserted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(inserted)
}

/// PostgreSQL: the batch as five array parameters (binary on the wire) expanded by
/// `unnest`, in slices of at most [`MAX_PARAM_BYTES`]. The statement text never changes with
/// the batch size, so it is prepared once per connection; a multi-row VALUES list would be a
/// new 5000-parameter statement to parse and plan for every batch size (measured: that, not
/// the insert, capped ingestion at ~5k readings/s). Arrays instead of one JSON parameter
/// carry a reading in about half the bytes and spare PostgreSQL parsing JSON: half the
/// round trips per batch (BENCHMARKS.md, ingestion run 8).
async fn insert_readings_postgres<C: ConnectionTrait>(
    db: &C,
    rows: &[NewReading],
) -> Result<std::collections::HashSet<(DetectorId, DateTime<Utc>)>, DbErr> {
    const SQL: &str = "INSERT INTO readings (tenant_id, detector_id, at, received_at, \"values\") \
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::text[]) \
        ON CONFLICT (detector_id, at) DO NOTHING RETURNING detector_id, at";
    // Two UUIDs, two timestamps, array element headers (4 bytes each) and the values text.
    let size = |r: &NewReading| 16 * 2 + 8 * 2 + 4 * 5 + r.values.len();
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    let mut rest = rows;
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest.iter().take_while(|r| {
            bytes += size(r);
            bytes <= MAX_PARAM_BYTES
        });
        let n = n.count().max(1);
        let (slice, tail) = rest.split_at(n);
        rest = tail;
        let values: [sea_orm::Value; 5] = [
            slice.iter().map(|r| r.tenant.as_uuid()).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.detector.as_uuid()).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.at).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.received_at).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.values.clone()).collect::<Vec<_>>().into(),
        ];
        let stmt = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, SQL, values);
        for row in db.query_all_raw(stmt).await? {
            let detector: Uuid = row.try_get("", "detector_id")?;
            let at: DateTime<Utc> = row.try_get("", "at")?;
            inserted.insert((DetectorId::from(detector), at));
        }
    }
    Ok(inserted)
}

/// Stored readings of a detector in `[from, to)`, oldest first, at most `limit`.
pub async fn readings<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<(DateTime<Utc>, String)>, DbErr> {
    Ok(reading::Entity::find()
        .filter(reading::Column::DetectorId.eq(detector.as_uuid()))
        .filter(reading::Column::At.gte(from))
        .filter(reading::Column::At.lt(to))
        .order_by_asc(reading::Column::At)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|r| (r.at, r.values))
        .collect())
}

/// The newest stored reading of a detector.
pub async fn latest_reading<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
) -> Result<Option<(DateTime<Utc>, String)>, DbErr> {
    Ok(reading::Entity::find()
        .filter(reading::Column::DetectorId.eq(detector.as_uuid()))
        .order_by_desc(reading::Column::At)
        .one(db)
        .await?
        .map(|r| (r.at, r.values)))
}

/// Deletes raw readings older than `before` (retention; rollups are kept), at most `chunk`
/// rows per statement, and returns how many went. In chunks because one statement over
/// months of readings held SQLite's single writer (and with it ingestion) for its whole run;
/// between chunks the pipeline's transactions get their turn.
pub async fn prune_readings<C: ConnectionTrait>(db: &C, before: DateTime<Utc>, chunk: u64) -> Result<u64, DbErr> {
    let chunk = Ord::max(chunk, 1);
    let mut total = 0;
    loop {
        let oldest = reading::Entity::find()
            .select_only()
            .columns([reading::Column::DetectorId, reading::Column::At])
            .filter(reading::Column::At.lt(before))
            .limit(chunk)
            .into_query();
        let key = Expr::tuple([Expr::col(reading::Column::DetectorId), Expr::col(reading::Column::At)]);
        let deleted = reading::Entity::delete_many().filter(key.in_subquery(oldest)).exec(db).await?.rows_affected;
        total += deleted;
        if deleted < chunk {
            return Ok(total);
        }
    }
}

/// One rollup cell to merge.
#[derive(Clone, Debug)]
pub struct Rollup {
    /// Detector.
    pub detector: DetectorId,
    /// `minute`, `hour` or `day`.
    pub bucket: &'static str,
    /// Bucket start.
    pub start: DateTime<Utc>,
    /// Channel code.
    pub channel: String,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Sum.
    pub sum: f64,
    /// Count.
    pub count: i64,
}

/// Merges rollup cells into the stored ones (min of mins, max of maxes, sums added).
pub async fn merge_rollups<C: ConnectionTrait>(db: &C, cells: &[Rollup]) -> Result<(), DbErr> {
    use reading_rollup::Column as R;
    // Chunks of 100: every full chunk is the same statement, prepared once per connection.
    for chunk in cells.chunks(100) {
        let models = chunk.iter().map(|c| reading_rollup::ActiveModel {
            detector_id: Set(c.detector.as_uuid()),
            bucket: Set(c.bucket.to_owned()),
            bucket_start: Set(c.start),
            channel: Set(c.channel.clone()),
            min: Set(c.min),
            max: Set(c.max),
            sum: Set(c.sum),
            count: Set(c.count),
        });
        let table = "reading_rollups";
        reading_rollup::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([R::DetectorId, R::Bucket, R::BucketStart, R::Channel])
                    .value(
                        R::Min,
                        Expr::cust(format!(
                            "CASE WHEN {table}.min < excluded.min THEN {table}.min ELSE excluded.min END"
                        )),
                    )
                    .value(
                        R::Max,
                        Expr::cust(format!(
                            "CASE WHEN {table}.max > excluded.max THEN {table}.max ELSE excluded.max END"
                        )),
                    )
                    .value(R::Sum, Expr::cust(format!("{table}.sum + excluded.sum")))
                    .value(R::Count, Expr::cust(format!("{table}.count + excluded.count")))
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Rollup cells of a detector in a range.
pub async fn rollups<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
    bucket: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Rollup>, DbErr> {
    Ok(reading_rollup::Entity::find()
        .filter(reading_rollup::Column::DetectorId.eq(detector.as_uuid()))
        .filter(reading_rollup::Column::Bucket.eq(bucket))
        .filter(reading_rollup::Column::BucketStart.gte(from))
        .filter(reading_rollup::Column::BucketStart.lt(to))
        .order_by_asc(reading_rollup::Column::BucketStart)
        .all(db)
        .await?
        .into_iter()
        .map(|m| Rollup {
            detector,
            bucket: match m.bucket.as_str() {
                "hour" => "hour",
                "day" => "day",
                _ => "minute",
            },
            start: m.bucket_start,
            channel: m.channel,
            min: m.min,
            max: m.max,
            sum: m.sum,
            count: m.count,
        })
        .collect())
}

/// Something that opens or re-occurs an episode.
#[derive(Clone, Debug)]
pub struct Occurrence {
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// Device.
    pub device: DeviceId,
    /// Detector, unless the condition is device-wide.
    pub detector: Option<DetectorId>,
    /// Channel code.
    pub channel: String,
    /// Event kind code.
    pub kind: &'static str,
    /// Category code (`ALARM`, `FAULT`).
    pub category: &'static str,
    /// `engine` (our rules) or `device` (its own logic) or `system` (heartbeat, polls).
    pub source: &'static str,
    /// Device time.
    pub at: DateTime<Utc>,
    /// Ingest time.
    pub ingested_at: DateTime<Utc>,
    /// When the pipeline processed it (the hazard's creation time).
    pub processed_at: DateTime<Utc>,
    /// Value.
    pub value: Option<f64>,
    /// Set-point.
    pub setpoint: Option<f64>,
}

impl Occurrence {
    fn subject(&self) -> Uuid {
        self.detector.map_or(self.device.as_uuid(), |d| d.as_uuid())
    }
}

/// The open episode of (subject, channel, kind), if any.
pub async fn open_episode<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    channel: &str,
    kind: &str,
) -> Result<Option<episode::Model>, DbErr> {
    episode::Entity::find()
        .filter(episode::Column::SubjectId.eq(subject))
        .filter(episode::Column::Channel.eq(channel))
        .filter(episode::Column::Kind.eq(kind))
        .filter(episode::Column::ClosedAt.is_null())
        .one(db)
        .await
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// The outcome of [`raise`].
#[derive(Clone, Debug)]
pub struct Raised {
    /// The episode.
    pub episode: Uuid,
    /// Its hazard as this transaction left it (`None` only if the hazard row is gone).
    pub hazard: Option<hazard::Model>,
    /// Whether the episode (and hazard) were created now.
    pub new: bool,
}

/// Opens the episode and its hazard, or — when one is open — counts another occurrence.
/// The partial unique index makes concurrent raisers agree on one episode.
pub async fn raise<C: ConnectionTrait>(db: &C, o: &Occurrence) -> Result<Raised, DbErr> {
    let subject = o.subject();
    if let Some(ep) = open_episode(db, subject, &o.channel, o.kind).await? {
        return reoccur(db, ep, o).await;
    }
    let episode_id = new_id();
    let row = episode::ActiveModel {
        id: Set(episode_id),
        tenant_id: Set(o.tenant.as_uuid()),
        project_id: Set(o.project.as_uuid()),
        device_id: Set(o.device.as_uuid()),
        detector_id: Set(o.detector.map(|d| d.as_uuid())),
        subject_id: Set(subject),
        channel: Set(o.channel.clone()),
        kind: Set(o.kind.to_owned()),
        category: Set(o.category.to_owned()),
        source: Set(o.source.to_owned()),
        opened_at: Set(o.at),
        ingested_at: Set(o.ingested_at),
        last_at: Set(o.at),
        cleared_at: Set(None),
        closed_at: Set(None),
        occurrences: Set(1),
        peak_value: Set(o.value),
        last_value: Set(o.value),
        setpoint: Set(o.setpoint),
    };
    match episode::Entity::insert(row).exec_without_returning(db).await {
        Ok(_) => {}
        Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
            // Another writer opened it first: count ours as an occurrence of theirs.
            let ep = open_episode(db, subject, &o.channel, o.kind).await?.ok_or(e)?;
            return reoccur(db, ep, o).await;
        }
        Err(e) => return Err(e),
    }
    let h = hazard::Model {
        id: new_id(),
        tenant_id: o.tenant.as_uuid(),
        project_id: o.project.as_uuid(),
        device_id: Some(o.device.as_uuid()),
        detector_id: o.detector.map(|d| d.as_uuid()),
        episode_id: Some(episode_id),
        kind: o.kind.to_owned(),
        category: o.category.to_owned(),
        channel: o.channel.clone(),
        status: "OPEN".to_owned(),
        occurrences: 1,
        peak_value: o.value,
        last_value: o.value,
        setpoint: o.setpoint,
        device_at: o.at,
        ingested_at: o.ingested_at,
        opened_at: o.processed_at,
        first_push_at: None,
        first_ack_at: None,
        updated_at: o.processed_at,
        work_order_id: None,
        description: None,
        reported_by: None,
        checkpoint_id: None,
    };
    hazard::Entity::insert(h.clone().into_active_model().reset_all()).exec_without_returning(db).await?;
    Ok(Raised { episode: episode_id, hazard: Some(h), new: true })
}

async fn reoccur<C: ConnectionTrait>(db: &C, ep: episode::Model, o: &Occurrence) -> Result<Raised, DbErr> {
    let peak = max_opt(ep.peak_value, o.value);
    episode::Entity::update_many()
        .col_expr(episode::Column::Occurrences, Expr::col(episode::Column::Occurrences).add(1))
        .col_expr(episode::Column::PeakValue, Expr::value(peak))
        .col_expr(episode::Column::LastValue, Expr::value(o.value))
        .col_expr(episode::Column::LastAt, Expr::value(o.at))
        .col_expr(episode::Column::ClearedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(episode::Column::Id.eq(ep.id))
        .exec(db)
        .await?;
    let h = hazard::Entity::find().filter(hazard::Column::EpisodeId.eq(ep.id)).one(db).await?;
    let mut updated = None;
    if let Some(h) = h {
        // RETURNING: the row as this update left it (a concurrent acknowledgement
        // included), which is what subscribers are told.
        updated = hazard::Entity::update_many()
            .col_expr(hazard::Column::Occurrences, Expr::col(hazard::Column::Occurrences).add(1))
            .col_expr(hazard::Column::PeakValue, Expr::value(max_opt(h.peak_value, o.value)))
            .col_expr(hazard::Column::LastValue, Expr::value(o.value))
            .col_expr(hazard::Column::UpdatedAt, Expr::value(o.processed_at))
            .filter(hazard::Column::Id.eq(h.id))
            .exec_with_returning(db)
            .await?
            .pop();
    }
    Ok(Raised { episode: ep.id, hazard: updated, new: false })
}

/// Updates the peak and last value of an open episode (and its hazard) while the
/// condition continues. Returns false when no episode is open.
pub async fn touch<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    channel: &str,
    kind: &str,
    value: f64,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let Some(ep) = open_episode(db, subject, channel, kind).await? else { return Ok(false) };
    if ep.peak_value.is_some_and(|p| p >= value) && ep.last_value == Some(value) {
        return Ok(true);
    }
    let peak = max_opt(ep.peak_value, Some(value));
    episode::Entity::update_many()
        .col_expr(episode::Column::PeakValue, Expr::value(peak))
        .col_expr(episode::Column::LastValue, Expr::value(value))
        .col_expr(episode::Column::LastAt, Expr::value(at))
        .filter(episode::Column::Id.eq(ep.id))
        .exec(db)
        .await?;
    hazard::Entity::update_many()
        .col_expr(hazard::Column::PeakValue, Expr::value(peak))
        .col_expr(hazard::Column::LastValue, Expr::value(value))
        .filter(hazard::Column::EpisodeId.eq(ep.id))
        .exec(db)
        .await?;
    Ok(true)
}

/// Marks the condition of an open episode as ended. Faults close (self-clearing); alarms
/// only record the time and stay latched until their hazard is handled. Returns the
/// episode id when one was open.
pub async fn clear<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    channel: &str,
    kind: &str,
    at: DateTime<Utc>,
    close: bool,
) -> Result<Option<Uuid>, DbErr> {
    let Some(ep) = open_episode(db, subject, channel, kind).await? else { return Ok(None) };
    let mut q = episode::Entity::update_many().col_expr(episode::Column::ClearedAt, Expr::value(at));
    if close {
        q = q.col_expr(episode::Column::ClosedAt, Expr::value(at));
    }
    q.filter(episode::Column::Id.eq(ep.id)).exec(db).await?;
    Ok(Some(ep.id))
}

/// Releases the latch of an episode (its hazard was acknowledged, reset or closed), so the
/// next occurrence opens a new episode and hazard.
pub async fn release_episode<C: ConnectionTrait>(db: &C, episode_id: Uuid, at: DateTime<Utc>) -> Result<(), DbErr> {
    episode::Entity::update_many()
        .col_expr(episode::Column::ClosedAt, Expr::value(at))
        .filter(episode::Column::Id.eq(episode_id))
        .filter(episode::Column::ClosedAt.is_null())
        .exec(db)
        .await
        .map(|_| ())
}

/// An event to record.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Tenant.
    pub tenant: TenantId,
    /// Project.
    pub project: ProjectId,
    /// Device.
    pub device: DeviceId,
    /// Detector, unless device-wide.
    pub detector: Option<DetectorId>,
    /// Episode it belongs to.
    pub episode: Option<Uuid>,
    /// Kind code.
    pub kind: &'static str,
    /// Category code.
    pub category: &'static str,
    /// `engine`, `device` or `system`.
    pub source: &'static str,
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
    /// Remarks for the event view.
    pub remarks: Option<String>,
}

impl Occurrence {
    /// The event recording this occurrence (or its end, with another kind).
    pub fn event(&self, episode: Option<Uuid>, remarks: Option<String>) -> NewEvent {
        NewEvent {
            tenant: self.tenant,
            project: self.project,
            device: self.device,
            detector: self.detector,
            episode,
            kind: self.kind,
            category: self.category,
            source: self.source,
            channel: self.channel.clone(),
            at: self.at,
            received_at: self.ingested_at,
            value: self.value,
            setpoint: self.setpoint,
            remarks,
        }
    }
}

/// Records an event; returns its id.
pub async fn insert_event<C: ConnectionTrait>(db: &C, e: &NewEvent) -> Result<event::Model, DbErr> {
    let row = event::Model {
        id: new_id(),
        tenant_id: e.tenant.as_uuid(),
        project_id: e.project.as_uuid(),
        device_id: e.device.as_uuid(),
        detector_id: e.detector.map(|d| d.as_uuid()),
        episode_id: e.episode,
        kind: e.kind.to_owned(),
        category: e.category.to_owned(),
        source: e.source.to_owned(),
        channel: e.channel.clone(),
        at: e.at,
        received_at: e.received_at,
        value: e.value,
        setpoint: e.setpoint,
        remarks: e.remarks.clone(),
    };
    event::Entity::insert(row.clone().into_active_model().reset_all()).exec_without_returning(db).await?;
    Ok(row)
}

/// Rejected device input, as kept in the dead-letter log.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    /// Tenant of the device, when it is known.
    pub tenant: Option<TenantId>,
    /// Serial from the topic, when it was readable.
    pub serial: Option<&'a str>,
    /// Topic.
    pub topic: &'a str,
    /// Reason code (the metrics label).
    pub reason: &'a str,
    /// What exactly was wrong.
    pub detail: &'a str,
    /// The payload as received.
    pub payload: &'a [u8],
    /// When it was received.
    pub at: DateTime<Utc>,
}

/// Keeps rejected input with its reason (payload truncated to 4 KiB).
pub async fn insert_dead_letter<C: ConnectionTrait>(db: &C, d: DeadLetter<'_>) -> Result<(), DbErr> {
    let text = String::from_utf8_lossy(&d.payload[..d.payload.len().min(4096)]).into_owned();
    let row = dead_letter::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(d.tenant.map(|t| t.as_uuid())),
        serial: Set(d.serial.map(str::to_owned)),
        topic: Set(d.topic.to_owned()),
        reason: Set(d.reason.to_owned()),
        detail: Set(d.detail.to_owned()),
        payload: Set(text),
        received_at: Set(d.at),
    };
    dead_letter::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// Ids of open episodes of a subject (used when a device comes back online).
pub async fn open_episodes_of<C: ConnectionTrait>(
    db: &C,
    subject: Uuid,
    kind: &str,
) -> Result<Vec<episode::Model>, DbErr> {
    episode::Entity::find()
        .filter(Condition::all().add(episode::Column::SubjectId.eq(subject)).add(episode::Column::Kind.eq(kind)))
        .filter(episode::Column::ClosedAt.is_null())
        .all(db)
        .await
}

/// Open engine-raised alarm episodes of a detector whose condition has not cleared.
pub async fn active_conditions<C: ConnectionTrait>(db: &C, detector: Uuid) -> Result<Vec<episode::Model>, DbErr> {
    episode::Entity::find()
        .filter(episode::Column::SubjectId.eq(detector))
        .filter(episode::Column::ClosedAt.is_null())
        .filter(episode::Column::ClearedAt.is_null())
        .filter(episode::Column::Category.eq("ALARM"))
        .filter(episode::Column::Source.eq("engine"))
        .all(db)
        .await
}
