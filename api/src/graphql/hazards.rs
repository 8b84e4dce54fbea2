//! Hazards, events, dead letters and readings: their output types, filters, and the
//! `HazardQuery`/`HazardMutation` parts merged into the roots.
//!
//! Lists here are newest first (see `store::hazards` for why and how cursors work).
//! Reading curves come as [`ReadingPointObj`]s: one point per raw reading or per time bucket,
//! each with per-channel `min`/`max`/`avg`/`count` (for a raw reading all three equal the
//! value and `count` is 1), so a chart draws one series per channel code whatever the bucket.

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::hazard::{HazardActionKind, HazardStatus};
use sparkwatch_domain::reading::{EventCategory, EventKind, Reading};
use uuid::Uuid;

use super::Result;
use super::attachments::AttachmentObj;
use super::guard::{Require, RequireAny, caller};
use super::input::{parse_id, parse_projects};
use super::object::{Conn, DetectorObj, DeviceObj, ProjectObj, UserObj, connection};
use super::patrol::CheckpointObj;
use crate::error::AppResult;
use crate::service::hazards::{ChannelStats, ReadingBucket, ReadingPoint};
use crate::service::page_request;
use crate::store::hazards::{self as st, DeadLetter, EventView, Hazard, Transition};

// ---- enums ----

/// Where a hazard is in its lifecycle.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "HazardStatus", remote = "HazardStatus")]
pub enum HazardStatusGql {
    /// Raised and not yet looked at; its alarm is latched.
    Open,
    /// Someone responsible has seen it.
    Acknowledged,
    /// An electrician has been sent.
    Dispatched,
    /// Reported fixed; waiting for verification.
    Rectified,
    /// Verified fixed.
    Closed,
    /// Not a real problem.
    FalseAlarm,
    /// Deliberately not acted on.
    Ignored,
}

/// What happened on a detector or device.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "EventKind", remote = "EventKind")]
pub enum EventKindGql {
    /// Residual current beyond its set-point.
    LeakAlarm,
    /// Temperature beyond its set-point.
    TempAlarm,
    /// Phase voltage above its set-point.
    Overvoltage,
    /// Phase voltage below its set-point.
    Undervoltage,
    /// Phase current above its set-point.
    Overcurrent,
    /// One phase lost while the others are normal.
    PhaseLoss,
    /// Arc fault detected by the device.
    ArcFault,
    /// Sensor open circuit.
    SensorOpen,
    /// Sensor short circuit.
    SensorShort,
    /// Device power fault.
    PowerFault,
    /// Device offline / communication lost.
    Offline,
    /// Device back online.
    Online,
    /// A condition ended.
    Recovered,
    /// The detector's relay opened.
    Trip,
    /// A remote operation.
    Command,
    /// A hazard found by a person (patrol, walk-by).
    FieldReport,
}

/// How an event is classified in the event view and for notifications.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "EventCategory", remote = "EventCategory")]
pub enum EventCategoryGql {
    /// An alarm, latched until acknowledged.
    Alarm,
    /// An early warning, not latched.
    PreAlarm,
    /// The monitoring itself is broken; clears by itself.
    Fault,
    /// A condition ended.
    Recovery,
    /// A trip or remote operation.
    Operation,
    /// Online/offline and other status changes.
    Status,
}

/// The time bucket of a reading curve.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ReadingBucket", remote = "ReadingBucket")]
pub enum ReadingBucketGql {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

// ---- inputs ----

/// Filters for `hazards`.
#[derive(InputObject, Default)]
pub struct HazardFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ID>>,
    /// Only this detector.
    pub detector_id: Option<ID>,
    /// Only these statuses.
    pub statuses: Option<Vec<HazardStatusGql>>,
    /// Only these kinds.
    pub kinds: Option<Vec<EventKindGql>>,
    /// Opened at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Opened before this time.
    pub to: Option<DateTime<Utc>>,
}

impl HazardFilter {
    fn into_store(self) -> AppResult<st::HazardFilter> {
        Ok(st::HazardFilter {
            project_ids: self.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?,
            detector_id: self.detector_id.as_ref().map(|d| parse_id("detectorId", d)).transpose()?,
            statuses: self.statuses.map(|s| s.into_iter().map(Into::into).collect()),
            kinds: self.kinds.map(|k| k.into_iter().map(Into::into).collect()),
            from: self.from,
            to: self.to,
        })
    }
}

/// Filters for `events`.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ID>>,
    /// Only this detector.
    pub detector_id: Option<ID>,
    /// Only this device (with its detectors).
    pub device_id: Option<ID>,
    /// Only these categories.
    pub categories: Option<Vec<EventCategoryGql>>,
    /// Only these kinds.
    pub kinds: Option<Vec<EventKindGql>>,
    /// At or after this device time.
    pub from: Option<DateTime<Utc>>,
    /// Before this device time.
    pub to: Option<DateTime<Utc>>,
    /// Remarks, channel, device name or serial, detector name, region or position contains this text.
    pub search: Option<String>,
}

impl EventFilter {
    fn into_store(self) -> AppResult<st::EventFilter> {
        Ok(st::EventFilter {
            project_ids: self.project_ids.as_deref().map(|p| parse_projects("projectIds", p)).transpose()?,
            detector_id: self.detector_id.as_ref().map(|d| parse_id("detectorId", d)).transpose()?,
            device_id: self.device_id.as_ref().map(|d| parse_id("deviceId", d)).transpose()?,
            categories: self.categories.map(|c| c.into_iter().map(Into::into).collect()),
            kinds: self.kinds.map(|k| k.into_iter().map(Into::into).collect()),
            from: self.from,
            to: self.to,
            search: self.search,
        })
    }
}

fn parse_hazard_ids(ids: &[ID]) -> AppResult<Vec<Uuid>> {
    ids.iter().map(|id| parse_id("ids", id)).collect()
}

// ---- objects ----

/// The managed problem behind one alarm or fault episode: it has a status and a history and
/// ends only when verified fixed (or declared a false alarm / ignored).
pub struct HazardObj(pub Hazard);

#[Object(name = "Hazard")]
impl HazardObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Lifecycle status.
    async fn status(&self) -> HazardStatusGql {
        self.0.status.into()
    }
    /// What happened.
    async fn kind(&self) -> EventKindGql {
        self.0.kind.into()
    }
    /// Alarm or fault.
    async fn category(&self) -> EventCategoryGql {
        self.0.category.into()
    }
    /// Channel code: `leak:1`, `temp:2`, `voltage:3`, `current:1`, `detector:0` (detector-wide).
    async fn channel(&self) -> &str {
        &self.0.channel
    }
    /// The detector; `null` for device-wide conditions (e.g. offline).
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn detector(&self, ctx: &Context<'_>) -> Result<Option<DetectorObj>> {
        let (s, who) = caller(ctx)?;
        Ok(match self.0.detector_id {
            Some(id) => super::absent(s.detector(who, id).await)?.map(DetectorObj),
            None => None,
        })
    }
    /// The device; `null` when the hazard has none or the device was deleted since.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn device(&self, ctx: &Context<'_>) -> Result<Option<DeviceObj>> {
        let (s, who) = caller(ctx)?;
        Ok(match self.0.device_id {
            Some(id) => super::absent(s.device(who, id).await)?.map(DeviceObj),
            None => None,
        })
    }
    /// The project; `null` only when it was deleted since.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn project(&self, ctx: &Context<'_>) -> Result<Option<ProjectObj>> {
        let (s, who) = caller(ctx)?;
        Ok(super::absent(s.project(who, self.0.project_id).await)?.map(ProjectObj))
    }
    /// When the hazard was created (server time).
    async fn opened_at(&self) -> DateTime<Utc> {
        self.0.opened_at
    }
    /// How often the condition occurred while its episode was open.
    async fn occurrences(&self) -> u32 {
        self.0.occurrences
    }
    /// Highest value seen (mA, °C, V or A by channel).
    async fn peak_value(&self) -> Option<f64> {
        self.0.peak_value
    }
    /// Latest value seen.
    async fn last_value(&self) -> Option<f64> {
        self.0.last_value
    }
    /// The set-point that was exceeded.
    async fn setpoint(&self) -> Option<f64> {
        self.0.setpoint
    }
    /// Device time of the first occurrence.
    async fn device_at(&self) -> DateTime<Utc> {
        self.0.device_at
    }
    /// When the server received the first occurrence.
    async fn ingested_at(&self) -> DateTime<Utc> {
        self.0.ingested_at
    }
    /// When the first push notification was requested.
    async fn first_push_at(&self) -> Option<DateTime<Utc>> {
        self.0.first_push_at
    }
    /// When the hazard first left `OPEN` (response time = this − `openedAt`).
    async fn first_acknowledged_at(&self) -> Option<DateTime<Utc>> {
        self.0.first_ack_at
    }
    /// Last change.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// What the person who found it wrote (hazards reported in the field; `null` for a
    /// detector's).
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// Who reported it (hazards reported in the field).
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn reported_by(&self, ctx: &Context<'_>) -> Result<Option<UserObj>> {
        let (s, who) = caller(ctx)?;
        Ok(match self.0.reported_by {
            Some(id) => super::absent(s.user(who, id).await)?.map(UserObj),
            None => None,
        })
    }
    /// The patrol checkpoint it was found at.
    async fn checkpoint_id(&self) -> Option<ID> {
        self.0.checkpoint_id.map(|c| ID(c.to_string()))
    }
    /// The patrol checkpoint it was found at, with its checklist and label.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn checkpoint(&self, ctx: &Context<'_>) -> Result<Option<CheckpointObj>> {
        let (s, who) = caller(ctx)?;
        Ok(match self.0.checkpoint_id {
            Some(id) => super::absent(s.checkpoint(who, id).await)?.map(CheckpointObj::new),
            None => None,
        })
    }
    /// Photos: of the report, and of the rectification.
    async fn attachments(&self, ctx: &Context<'_>) -> Result<Vec<AttachmentObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.attachments_of(who, "hazard", self.0.id).await?.into_iter().map(AttachmentObj).collect())
    }
    /// Status changes, oldest first: who, when, and the note or reason.
    async fn transitions(&self, ctx: &Context<'_>) -> Result<Vec<HazardTransitionObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.hazard_transitions(who, &self.0).await?.into_iter().map(HazardTransitionObj).collect())
    }
    /// The work order handling the hazard (the one it was dispatched through); `null`
    /// before it is dispatched.
    async fn work_order(&self, ctx: &Context<'_>) -> Result<Option<super::workorders::WorkOrderObj>> {
        let Some(id) = self.0.work_order_id else { return Ok(None) };
        let (s, who) = caller(ctx)?;
        match s.work_order(who, id).await {
            Ok(o) => Ok(Some(super::workorders::WorkOrderObj::for_caller(ctx, o)?)),
            Err(crate::error::AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// One status change of a hazard.
pub struct HazardTransitionObj(pub Transition);

#[Object(name = "HazardTransition")]
impl HazardTransitionObj {
    /// Status before.
    async fn from_status(&self) -> HazardStatusGql {
        self.0.from.into()
    }
    /// Status after.
    async fn to_status(&self) -> HazardStatusGql {
        self.0.to.into()
    }
    /// Who made it (e-mail, phone, API key name or `system`).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// The note or reason given.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

/// A row of the event view: anything that happened on a detector or device.
pub struct EventObj(pub EventView);

#[Object(name = "Event")]
impl EventObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Event type.
    async fn kind(&self) -> EventKindGql {
        self.0.kind.into()
    }
    /// Alarm, pre-alarm, fault, recovery, operation or status.
    async fn category(&self) -> EventCategoryGql {
        self.0.category.into()
    }
    /// When it happened (device time).
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// When the server received it.
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at
    }
    /// Measured value (mA, °C, V or A by channel).
    async fn value(&self) -> Option<f64> {
        self.0.value
    }
    /// Set-point in force.
    async fn setpoint(&self) -> Option<f64> {
        self.0.setpoint
    }
    /// Channel code: `leak:1`, `temp:2`, `voltage:3`, `current:1`, `detector:0`.
    async fn channel(&self) -> &str {
        &self.0.channel
    }
    /// Device name.
    async fn device_name(&self) -> Option<&str> {
        self.0.device_name.as_deref()
    }
    /// Device type.
    async fn device_type(&self) -> Option<&str> {
        self.0.device_type.as_deref()
    }
    /// Detector bus address; `null` for device-wide events.
    async fn detector_address(&self) -> Option<u8> {
        self.0.detector_address
    }
    /// Region: the detector's, else the device's.
    async fn region(&self) -> Option<&str> {
        self.0.region.as_deref()
    }
    /// Position: the detector's, else the device's.
    async fn position(&self) -> Option<&str> {
        self.0.position.as_deref()
    }
    /// Description, e.g. "leakage current alarm on leak:1: 512.0 mA (set-point 300.0 mA)".
    async fn remarks(&self) -> Option<&str> {
        self.0.remarks.as_deref()
    }
    /// The detector; `null` for device-wide events.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn detector(&self, ctx: &Context<'_>) -> Result<Option<DetectorObj>> {
        let (s, who) = caller(ctx)?;
        Ok(match self.0.detector_id {
            Some(id) => super::absent(s.detector(who, id).await)?.map(DetectorObj),
            None => None,
        })
    }
    /// The device; `null` when it was deleted since.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn device(&self, ctx: &Context<'_>) -> Result<Option<DeviceObj>> {
        let (s, who) = caller(ctx)?;
        Ok(super::absent(s.device(who, self.0.device_id).await)?.map(DeviceObj))
    }
}

/// Device input that was rejected, with the reason; it never became a reading or an alarm.
pub struct DeadLetterObj(pub DeadLetter);

#[Object(name = "DeadLetter")]
impl DeadLetterObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Why it was rejected (short code).
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// What exactly was wrong.
    async fn detail(&self) -> &str {
        &self.0.detail
    }
    /// MQTT topic (or poll source) it arrived on.
    async fn topic(&self) -> &str {
        &self.0.topic
    }
    /// Serial of the sending device, when known.
    async fn serial(&self) -> Option<&str> {
        self.0.serial.as_deref()
    }
    /// The payload as text (first 4 KiB).
    async fn payload(&self) -> &str {
        &self.0.payload
    }
    /// When it was received.
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at
    }
}

/// One timestamped set of channel values from a detector; `null` items are not measured.
pub struct ReadingObj(pub Reading);

#[Object(name = "Reading")]
impl ReadingObj {
    /// Device time.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// Residual current per leakage channel, mA.
    async fn leak_ma(&self) -> Option<&[Option<f64>]> {
        Some(&self.0.leak_ma)
    }
    /// Temperature per channel, °C.
    async fn temp_c(&self) -> Option<&[Option<f64>]> {
        Some(&self.0.temp_c)
    }
    /// Phase voltages Ua, Ub, Uc, V.
    async fn voltage_v(&self) -> Option<&[Option<f64>]> {
        Some(&self.0.voltage_v)
    }
    /// Phase currents Ia, Ib, Ic, A.
    async fn current_a(&self) -> Option<&[Option<f64>]> {
        Some(&self.0.current_a)
    }
    /// Digital input bits.
    async fn digital_in(&self) -> Option<i32> {
        self.0.digital_in.map(i32::from)
    }
    /// Digital output bits.
    async fn digital_out(&self) -> Option<i32> {
        self.0.digital_out.map(i32::from)
    }
}

/// One point of a reading curve: a raw reading, or one time bucket of stored aggregates.
pub struct ReadingPointObj(pub ReadingPoint);

#[Object(name = "ReadingPoint")]
impl ReadingPointObj {
    /// The reading's device time, or the bucket's start.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The bucket this point aggregates; `null` for a raw reading.
    async fn bucket(&self) -> Option<ReadingBucketGql> {
        self.0.bucket.map(Into::into)
    }
    /// Figures per measured channel, ordered leakage, temperature, voltage, current.
    async fn channels(&self) -> Vec<ChannelStatsObj> {
        self.0.channels.iter().cloned().map(ChannelStatsObj).collect()
    }
    /// The raw reading itself (raw points only).
    async fn reading(&self) -> Option<ReadingObj> {
        self.0.reading.clone().map(ReadingObj)
    }
}

/// Minimum, maximum and mean of one channel within a point.
pub struct ChannelStatsObj(pub ChannelStats);

#[Object(name = "ChannelStats")]
impl ChannelStatsObj {
    /// Channel code: `leak:1`, `temp:2`, `voltage:3`, `current:1`.
    async fn channel(&self) -> &str {
        &self.0.channel
    }
    /// Smallest value.
    async fn min(&self) -> f64 {
        self.0.min
    }
    /// Largest value.
    async fn max(&self) -> f64 {
        self.0.max
    }
    /// Mean value.
    async fn avg(&self) -> f64 {
        self.0.avg
    }
    /// Readings behind the figures (1 for a raw reading).
    async fn count(&self) -> i64 {
        self.0.count
    }
}

// ---- roots ----

/// Read operations on hazards, events and dead letters.
#[derive(Default)]
pub struct HazardQuery;

#[Object]
impl HazardQuery {
    /// Hazards in the caller's scope, newest first (by `openedAt`).
    #[graphql(
        guard = "Require(Permission::HazardRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn hazards(
        &self,
        ctx: &Context<'_>,
        filter: Option<HazardFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<HazardObj>> {
        let (s, who) = caller(ctx)?;
        let filter = filter.unwrap_or_default().into_store()?;
        let page = s.hazards(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |h| h.id.to_string(), HazardObj))
    }

    /// One hazard in scope; `null` when it does not exist for the caller.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn hazard(&self, ctx: &Context<'_>, id: ID) -> Result<Option<HazardObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.hazard(who, parse_id("id", &id)?).await.ok().map(HazardObj))
    }

    /// The event view: events in the caller's scope, newest first (by device time).
    #[graphql(
        guard = "Require(Permission::HazardRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<EventObj>> {
        let (s, who) = caller(ctx)?;
        let filter = filter.unwrap_or_default().into_store()?;
        let page = s.events(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |e| e.id.to_string(), EventObj))
    }

    /// Device input of the caller's tenant that ingestion rejected, newest first.
    #[graphql(
        guard = "Require(Permission::DeviceManage)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<DeadLetterObj>> {
        let (s, who) = caller(ctx)?;
        let page = s.dead_letters(who, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |d| d.id.to_string(), DeadLetterObj))
    }
}

/// Hazard transitions. Each takes a batch: all hazards change or none does.
#[derive(Default)]
pub struct HazardMutation;

#[Object]
impl HazardMutation {
    /// Acknowledges open hazards (releasing their alarm latch); already acknowledged ones are
    /// returned unchanged. Any id outside the caller's scope fails the batch with `NOT_FOUND`,
    /// any hazard that cannot be acknowledged with `CONFLICT`. Managers and electricians.
    #[graphql(guard = "RequireAny(HazardActionKind::Acknowledge.permissions())")]
    async fn acknowledge_hazards(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        note: Option<String>,
    ) -> Result<Vec<HazardObj>> {
        let (s, who) = caller(ctx)?;
        let ids = parse_hazard_ids(&ids)?;
        Ok(s.acknowledge_hazards(who, &ids, note.as_deref()).await?.into_iter().map(HazardObj).collect())
    }

    /// Marks open or acknowledged hazards as false alarms; the reason is required.
    #[graphql(guard = "RequireAny(HazardActionKind::MarkFalseAlarm.permissions())")]
    async fn mark_hazards_false_alarm(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
        reason: String,
    ) -> Result<Vec<HazardObj>> {
        let (s, who) = caller(ctx)?;
        let ids = parse_hazard_ids(&ids)?;
        Ok(s.mark_hazards_false_alarm(who, &ids, &reason).await?.into_iter().map(HazardObj).collect())
    }

    /// Ignores open or acknowledged hazards deliberately; the reason is required.
    #[graphql(guard = "RequireAny(HazardActionKind::Ignore.permissions())")]
    async fn ignore_hazards(&self, ctx: &Context<'_>, ids: Vec<ID>, reason: String) -> Result<Vec<HazardObj>> {
        let (s, who) = caller(ctx)?;
        let ids = parse_hazard_ids(&ids)?;
        Ok(s.ignore_hazards(who, &ids, &reason).await?.into_iter().map(HazardObj).collect())
    }
}
