//! Field work that does not belong to one aggregate: hazards reported by people
//! (`reportHazard`, also inside check-ins and offline batches) and the offline sync
//! (`syncFieldOperations`).

use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::field::FieldOperationKind;
use uuid::Uuid;

use super::Result;
use super::guard::{RequireAny, caller};
use super::hazards::HazardObj;
use super::input::parse_id;
use crate::error::AppResult;
use crate::service::field::ClientOp;
use crate::service::reports::ReportDraft;

/// Who may report and acknowledge hazards: managers and electricians alike.
pub(crate) const HAZARD_REPORTERS: &[Permission] = &[Permission::HazardManage, Permission::FieldWork];

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
}
