//! Field work that does not belong to one aggregate: hazards reported by people
//! (`reportHazard`, also inside check-ins and offline batches) and the offline sync
//! (`syncFieldOperations`).

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::field::{FieldOperationKind, FieldOutcome};
use uuid::Uuid;

use super::Result;
use super::guard::{Require, RequireAny, SignedIn, caller};
use super::hazards::HazardObj;
use super::input::parse_id;
use super::patrol::{CheckInInput, CheckInObj};
use super::workorders::{SubmitWorkOrderInput, WorkOrderObj};
use crate::error::{AppError, AppResult};
use crate::service::field::ClientOp;
use crate::service::reports::ReportDraft;
use crate::service::sync::{EntityType, FieldOp, SyncAnswer, SyncItem};
use crate::service::workorders::Submission;

/// Who may report and acknowledge hazards: managers and electricians alike.
pub(crate) const HAZARD_REPORTERS: &[Permission] = sparkwatch_domain::hazard::REPORT_PERMISSIONS;

/// A hazard found by a person (on patrol or walking by).
#[derive(InputObject, Clone, Debug)]
pub struct ReportHazardInput {
    /// Client-generated UUID: repeating the report with it returns the same hazard.
    pub client_id: Option<ID>,
    /// The project it is in.
    pub project_id: ID,
    /// The detector it concerns, if any.
    pub detector_id: Option<ID>,
    /// The patrol checkpoint it was found at, if any.
    pub checkpoint_id: Option<ID>,
    /// What was found.
    pub description: String,
    /// Uploaded photos (`POST /attachments`).
    pub attachment_ids: Option<Vec<ID>>,
    /// When it was seen (device time); now when absent.
    pub at: Option<DateTime<Utc>>,
}

impl ReportHazardInput {
    /// The client id, checked.
    pub(crate) fn client_id(&self) -> AppResult<Option<Uuid>> {
        self.client_id.as_ref().map(|c| parse_id("clientId", c)).transpose()
    }

    /// The report as the service takes it.
    pub(crate) fn draft(&self) -> AppResult<ReportDraft> {
        Ok(ReportDraft {
            project: Some(parse_id("projectId", &self.project_id)?),
            detector: self.detector_id.as_ref().map(|d| parse_id("detectorId", d)).transpose()?,
            checkpoint: self.checkpoint_id.as_ref().map(|c| parse_id("checkpointId", c)).transpose()?,
            description: self.description.clone(),
            attachment_ids: parse_ids("attachmentIds", self.attachment_ids.as_deref().unwrap_or_default())?,
            at: self.at,
        })
    }
}

/// Parses a list of ids, naming `field` on the first bad one.
pub(crate) fn parse_ids(field: &str, ids: &[ID]) -> AppResult<Vec<Uuid>> {
    ids.iter().map(|id| parse_id(field, id)).collect()
}

/// Acknowledging one hazard in an offline batch.
#[derive(InputObject, Clone, Debug)]
pub struct AcknowledgeHazardOpInput {
    /// The hazard.
    pub hazard_id: ID,
    /// A note.
    pub note: Option<String>,
}

/// One queued offline operation: `clientId`, device time `at`, and exactly one operation.
#[derive(InputObject)]
pub struct FieldOperationInput {
    /// Client-generated UUID of the operation (idempotency key).
    pub client_id: ID,
    /// When it was done on the device.
    pub at: DateTime<Utc>,
    /// A hazard found by a person.
    pub report_hazard: Option<ReportHazardInput>,
    /// A hazard acknowledged.
    pub acknowledge_hazard: Option<AcknowledgeHazardOpInput>,
    /// Work started on an order.
    pub start_work_order: Option<StartWorkOrderOpInput>,
    /// An order's completion report (its own `clientId` is ignored: the operation's counts).
    pub submit_work_order: Option<SubmitWorkOrderInput>,
    /// A patrol check-in (its own `clientId` is ignored: the operation's counts).
    pub check_in: Option<CheckInInput>,
}

/// Starting work on an order in an offline batch.
#[derive(InputObject, Clone, Debug)]
pub struct StartWorkOrderOpInput {
    /// The order.
    pub id: ID,
}

impl FieldOperationInput {
    fn into_item(self) -> SyncItem {
        let at = self.at;
        let client_id = parse_id::<Uuid>("clientId", &self.client_id);
        let op = self.op();
        match client_id {
            Ok(client_id) => SyncItem { client_id, at, op },
            // Without a readable client id the answer cannot name the operation; the nil id
            // marks it (the app sent something it cannot match anyway).
            Err(e) => SyncItem { client_id: Uuid::nil(), at, op: Err(e) },
        }
    }

    fn op(self) -> AppResult<FieldOp> {
        let mut ops: Vec<AppResult<FieldOp>> = Vec::new();
        if let Some(r) = self.report_hazard {
            ops.push(r.draft().map(FieldOp::ReportHazard));
        }
        if let Some(a) = self.acknowledge_hazard {
            ops.push(
                parse_id("acknowledgeHazard.hazardId", &a.hazard_id)
                    .map(|hazard| FieldOp::AcknowledgeHazard { hazard, note: a.note }),
            );
        }
        if let Some(o) = self.start_work_order {
            ops.push(parse_id("startWorkOrder.id", &o.id).map(|order| FieldOp::StartWorkOrder { order }));
        }
        if let Some(sub) = self.submit_work_order {
            let parsed = parse_id("submitWorkOrder.id", &sub.id).and_then(|id| {
                let attachment_ids = parse_ids("attachmentIds", sub.attachment_ids.as_deref().unwrap_or_default())?;
                Ok(FieldOp::SubmitWorkOrder(Submission { id, report: sub.report, attachment_ids }))
            });
            ops.push(parsed);
        }
        if let Some(c) = self.check_in {
            ops.push(c.into_draft().map(|d| FieldOp::CheckIn(Box::new(d))));
        }
        match ops.len() {
            1 => ops.pop().unwrap_or_else(|| Err(AppError::Internal("operation vanished".into()))),
            _ => Err(AppError::invalid("operations", "each operation must carry exactly one of its kinds")),
        }
    }
}

/// What happened to one synced operation.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "FieldOperationStatus", remote = "FieldOutcome")]
pub enum FieldOperationStatusGql {
    /// Done now.
    Applied,
    /// Done before under this client id: nothing changed; `entityId` is the first result.
    Duplicate,
    /// The object moved on meanwhile; `entityId` names it, to show its current state.
    Conflict,
    /// Refused, with `code` and `message` (retry later only when `code` is `UNAVAILABLE` or
    /// `INTERNAL`).
    Rejected,
}

/// The answer to one synced operation.
pub struct FieldOperationResultObj(pub SyncAnswer);

#[Object(name = "FieldOperationResult")]
impl FieldOperationResultObj {
    /// The operation's client id.
    async fn client_id(&self) -> ID {
        ID(self.0.client_id.to_string())
    }
    /// What happened.
    async fn status(&self) -> FieldOperationStatusGql {
        self.0.outcome.into()
    }
    /// The error code when not applied (`CONFLICT`, `VALIDATION`, `FORBIDDEN`, `NOT_FOUND`, …).
    async fn code(&self) -> Option<&str> {
        self.0.code
    }
    /// The input field at fault (validation errors).
    async fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }
    /// What went wrong, for people.
    async fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }
    /// The object created or changed (on conflict: the one that moved on).
    async fn entity_id(&self) -> Option<ID> {
        self.0.entity.map(|(_, id)| ID(id.to_string()))
    }
    /// The work order, as it is now, when the operation was about one.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn work_order(&self, ctx: &Context<'_>) -> Result<Option<WorkOrderObj>> {
        let Some((EntityType::WorkOrder, id)) = self.0.entity else { return Ok(None) };
        let (s, who) = caller(ctx)?;
        match super::absent(s.work_order(who, id).await)? {
            Some(order) => Ok(Some(WorkOrderObj::for_caller(ctx, order)?)),
            None => Ok(None),
        }
    }
    /// The check-in, when the operation was one.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn check_in(&self, ctx: &Context<'_>) -> Result<Option<CheckInObj>> {
        let Some((EntityType::CheckIn, id)) = self.0.entity else { return Ok(None) };
        let (s, who) = caller(ctx)?;
        Ok(super::absent(s.check_in_view(who, id).await)?.map(CheckInObj))
    }
    /// The hazard, as it is now, when the operation was about one.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn hazard(&self, ctx: &Context<'_>) -> Result<Option<HazardObj>> {
        let Some((EntityType::Hazard, id)) = self.0.entity else { return Ok(None) };
        let (s, who) = caller(ctx)?;
        Ok(super::absent(s.hazard(who, id).await)?.map(HazardObj))
    }
}

/// Read operations of field work.
#[derive(Default)]
pub struct FieldQuery;

#[Object]
impl FieldQuery {
    /// Placeholder until the field operations land.
    async fn field_placeholder(&self) -> bool {
        false
    }
}

/// Write operations of field work.
#[derive(Default)]
pub struct FieldMutation;

#[Object]
impl FieldMutation {
    /// Reports a hazard found by a person: it opens as `OPEN`, kind `FIELD_REPORT`, and then
    /// follows the hazard lifecycle. With `clientId`, a repeated report returns the same hazard.
    #[graphql(guard = "RequireAny(HAZARD_REPORTERS)")]
    async fn report_hazard(&self, ctx: &Context<'_>, input: ReportHazardInput) -> Result<HazardObj> {
        let (s, who) = caller(ctx)?;
        let client = ClientOp::new(input.client_id()?, FieldOperationKind::ReportHazard, input.at);
        Ok(HazardObj(s.report_hazard(who, &input.draft()?, client).await?))
    }

    /// Applies a phone's offline outbox: one result per operation, in order; a bad operation
    /// never rejects the others, and repeating one (same `clientId`) changes nothing.
    #[graphql(guard = "SignedIn")]
    async fn sync_field_operations(
        &self,
        ctx: &Context<'_>,
        operations: Vec<FieldOperationInput>,
    ) -> Result<Vec<FieldOperationResultObj>> {
        let (s, who) = caller(ctx)?;
        let items = operations.into_iter().map(FieldOperationInput::into_item).collect();
        Ok(s.sync_field_operations(who, items).await?.into_iter().map(FieldOperationResultObj).collect())
    }
}
