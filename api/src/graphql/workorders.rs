//! Work orders: the `WorkOrder` type, its inputs and filter, and the
//! `WorkOrderQuery`/`WorkOrderMutation` parts merged into the roots.
//!
//! **No N+1 on lists.** Every `WorkOrder` object carries the caching [`DataLoader`] of the
//! request that made it (or, in a subscription, of the event). Its `project`, `hazards`,
//! `assignee`, `attachments`, `history` and `allowedActions` ask that loader. A list
//! prefetches, for the whole page, what its selection asks for (one query per kind of
//! thing) before the items resolve, so a page of 200 orders costs the same number of
//! queries as a page of 2 — relying on the loader's batching window alone split a page of
//! 200 into several batches in debug builds.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::field::FieldOperationKind;
use sparkwatch_domain::hazard::HazardActionKind;
use sparkwatch_domain::ids::ProjectId;
use sparkwatch_domain::workorder::{self as wo, WorkOrderAction, WorkOrderStatus};
use uuid::Uuid;

use super::Result;
use super::attachments::AttachmentObj;
use super::guard::{Require, RequireAny, caller};
use super::hazards::HazardObj;
use super::input::{parse_id, parse_projects};
use super::object::{Conn, ProjectObj, UserObj, connection};
use crate::auth::Principal;
use crate::error::{ApiError, AppError, AppResult};
use crate::service::workorders::{NewOrder, Submission, actor_of, client_op, state_of};
use crate::service::{Services, page_request};
use crate::store::workorders::{OrderTransition, WorkOrder, WorkOrderFilter as StoreFilter};

// ---- enums ----

/// Where a work order is in its lifecycle.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkOrderStatus", remote = "WorkOrderStatus")]
pub enum WorkOrderStatusGql {
    /// Waiting for its assignee to accept it, or for any electrician in scope to take it.
    Pending,
    /// Accepted by its assignee.
    Accepted,
    /// Work has started (or restarted after a rejection).
    InProgress,
    /// The completion report is in; waiting for a manager's verification.
    Submitted,
    /// Verified: done.
    Approved,
    /// In `history` only: a submission that failed verification (the order went back to
    /// `IN_PROGRESS`).
    Rejected,
}

/// What someone did (or may do) to a work order.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkOrderAction", remote = "WorkOrderAction")]
pub enum WorkOrderActionGql {
    /// Take an unassigned pending order.
    Take,
    /// Accept an order assigned to you.
    Accept,
    /// Start work.
    Start,
    /// Hand in the completion report.
    Submit,
    /// Approve the work (managers).
    Approve,
    /// Reject the work (managers).
    Reject,
}

// ---- inputs ----

fn parse_client(id: Option<&ID>) -> AppResult<Option<Uuid>> {
    id.map(|c| parse_id("clientId", c)).transpose()
}

fn parse_ids(field: &str, ids: &[ID]) -> AppResult<Vec<Uuid>> {
    ids.iter().map(|id| parse_id(field, id)).collect()
}

/// Hazards to send an electrician to, through one new work order.
#[derive(InputObject)]
pub struct DispatchHazardsInput {
    /// Client-generated UUID: repeating the request with it gives the same order.
    pub client_id: Option<ID>,
    /// Open or acknowledged hazards, all of one project.
    pub hazard_ids: Vec<ID>,
    /// The electrician; none leaves the order open for any electrician in scope to take.
    pub assignee_id: Option<ID>,
    /// Deadline (in the future).
    pub due_at: Option<DateTime<Utc>>,
    /// Instructions (become the order's description and the hazards' transition note).
    pub note: Option<String>,
    /// Title; by default made from the hazards.
    pub title: Option<String>,
}

/// A work order made by hand.
#[derive(InputObject)]
pub struct CreateWorkOrderInput {
    /// Client-generated UUID: repeating the request with it gives the same order.
    pub client_id: Option<ID>,
    /// The project (site).
    pub project_id: ID,
    /// Short title.
    pub title: String,
    /// What is to be done.
    pub description: Option<String>,
    /// Open or acknowledged hazards of the project to dispatch through it.
    pub hazard_ids: Option<Vec<ID>>,
    /// The electrician; none leaves the order open for any electrician in scope to take.
    pub assignee_id: Option<ID>,
    /// Deadline (in the future).
    pub due_at: Option<DateTime<Utc>>,
}

/// A completion report.
#[derive(InputObject)]
pub struct SubmitWorkOrderInput {
    /// Client-generated UUID: repeating the request with it gives the same result.
    pub client_id: Option<ID>,
    /// The work order.
    pub id: ID,
    /// What was done.
    pub report: String,
    /// Photos uploaded with `POST /attachments` (at least one when hazards are linked).
    pub attachment_ids: Option<Vec<ID>>,
}

/// Filters for work-order lists (all given conditions apply).
#[derive(InputObject, Default)]
pub struct WorkOrderFilter {
    /// Only these projects.
    pub project_ids: Option<Vec<ID>>,
    /// Only these statuses.
    pub statuses: Option<Vec<WorkOrderStatusGql>>,
    /// Only orders assigned to the caller.
    pub assigned_to_me: Option<bool>,
    /// Only unassigned orders (`true`) or only assigned ones (`false`).
    pub unassigned: Option<bool>,
    /// Only overdue orders (`true`) or only orders that are not (`false`).
    pub overdue: Option<bool>,
    /// Only orders assigned to this user.
    pub assignee_id: Option<ID>,
}

impl WorkOrderFilter {
    fn into_store(self, who: &Principal) -> AppResult<StoreFilter> {
        let mine = match self.assigned_to_me {
            Some(true) => Some(
                who.user_id()
                    .ok_or_else(|| AppError::invalid("assignedToMe", "API keys have no work orders of their own"))?,
            ),
            _ => None,
        };
        let assignee = self.assignee_id.map(|a| parse_id("assigneeId", &a)).transpose()?;
        if let (Some(m), Some(a)) = (mine, assignee)
            && m != a
        {
            return Err(AppError::invalid("assigneeId", "contradicts assignedToMe"));
        }
        Ok(StoreFilter {
            project_ids: self.project_ids.map(|p| parse_projects("projectIds", &p)).transpose()?,
            statuses: self.statuses.map(|s| s.into_iter().map(Into::into).collect()),
            assignee: mine.or(assignee),
            unassigned: self.unassigned,
            overdue: self.overdue,
            now: DateTime::<Utc>::MIN_UTC,
        })
    }
}

// ---- batch loading ----

/// Loads what a page of orders refers to, for one caller (see the module docs).
pub struct Parts {
    services: Services,
    who: Principal,
}

/// The caching loader of one request (or one subscription event: a cache kept across
/// events would show stale hazards).
pub type Loaders = Arc<DataLoader<Parts, HashMapCache>>;

/// A fresh loader for `who`.
pub fn new_loaders(services: &Services, who: &Principal) -> Loaders {
    let parts = Parts { services: services.clone(), who: who.clone() };
    Arc::new(DataLoader::with_cache(parts, tokio::spawn, HashMapCache::default()))
}

/// A fresh loader for the caller of `ctx`.
pub fn loaders(ctx: &Context<'_>) -> AppResult<Loaders> {
    let (s, who) = caller(ctx)?;
    Ok(new_loaders(s, who))
}

/// Loads, for a whole page of `orders`, what the selection under `edges.node` asks for,
/// into the cache of `parts` (see the module docs).
async fn prefetch(ctx: &Context<'_>, parts: &Loaders, orders: &[WorkOrder]) -> async_graphql::Result<()> {
    let node = ctx.look_ahead().field("edges").field("node");
    let ids = || orders.iter().map(|o| o.id);
    if node.field("hazards").exists() || node.field("allowedActions").exists() {
        parts.load_many(ids().map(HazardsOf)).await?;
    }
    if node.field("attachments").exists() {
        parts.load_many(ids().map(AttachmentsOf)).await?;
    }
    if node.field("history").exists() {
        parts.load_many(ids().map(HistoryOf)).await?;
    }
    if node.field("assignee").exists() {
        parts.load_many(orders.iter().filter_map(|o| o.assignee_id).map(|u| UserKey(u.as_uuid()))).await?;
    }
    if node.field("project").exists() {
        parts.load_many(orders.iter().map(|o| ProjectKey(o.project_id))).await?;
    }
    Ok(())
}

/// Key: the hazards of an order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HazardsOf(Uuid);
/// Key: the photos of an order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttachmentsOf(Uuid);
/// Key: the history of an order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryOf(Uuid);
/// Key: a user.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserKey(Uuid);
/// Key: a project.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectKey(ProjectId);

type Loaded<K, V> = std::result::Result<HashMap<K, V>, async_graphql::Error>;

/// `items` by key, with an entry (maybe empty) for every key asked for: the cache then
/// knows that an order has no hazards and does not ask again.
fn grouped<K: std::hash::Hash + Eq + Copy, T>(keys: &[K], items: Vec<T>, key: impl Fn(&T) -> K) -> HashMap<K, Vec<T>> {
    let mut out: HashMap<K, Vec<T>> = keys.iter().map(|k| (*k, Vec::new())).collect();
    for item in items {
        out.entry(key(&item)).or_default().push(item);
    }
    out
}

fn failed(e: AppError) -> async_graphql::Error {
    ApiError(e).into()
}

impl Loader<HazardsOf> for Parts {
    type Value = Vec<crate::store::hazards::Hazard>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[HazardsOf]) -> Loaded<HazardsOf, Self::Value> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let found = self.services.work_order_hazards(&self.who, &ids).await.map_err(failed)?;
        Ok(grouped(keys, found, |h| HazardsOf(h.work_order_id.unwrap_or_default())))
    }
}

impl Loader<AttachmentsOf> for Parts {
    type Value = Vec<crate::store::attachments::Attachment>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[AttachmentsOf]) -> Loaded<AttachmentsOf, Self::Value> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let found = self.services.work_order_attachments(&self.who, &ids).await.map_err(failed)?;
        Ok(grouped(keys, found, |a| AttachmentsOf(a.subject_id.unwrap_or_default())))
    }
}

impl Loader<HistoryOf> for Parts {
    type Value = Vec<OrderTransition>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[HistoryOf]) -> Loaded<HistoryOf, Self::Value> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let found = self.services.work_order_history(&self.who, &ids).await.map_err(failed)?;
        Ok(grouped(keys, found, |t| HistoryOf(t.work_order_id)))
    }
}

impl Loader<UserKey> for Parts {
    type Value = crate::store::access::User;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[UserKey]) -> Loaded<UserKey, Self::Value> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let found = self.services.users_by_ids(&self.who, &ids).await.map_err(failed)?;
        Ok(found.into_iter().map(|u| (UserKey(u.id.as_uuid()), u)).collect())
    }
}

impl Loader<ProjectKey> for Parts {
    type Value = sparkwatch_domain::site::Project;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ProjectKey]) -> Loaded<ProjectKey, Self::Value> {
        let ids: Vec<ProjectId> = keys.iter().map(|k| k.0).collect();
        let found = self.services.projects_by_ids(&self.who, &ids).await.map_err(failed)?;
        Ok(found.into_iter().map(|p| (ProjectKey(p.id), p)).collect())
    }
}

// ---- objects ----

/// A job for an electrician: made from hazards or by hand, with a deadline, a completion
/// report with photos, and its history.
pub struct WorkOrderObj {
    order: WorkOrder,
    parts: Loaders,
    /// Whether the object is for one caller (`allowedActions` may use who they are) or for
    /// a subscription shared by everyone with the same access (it may not).
    personal: bool,
}

impl WorkOrderObj {
    /// The order as the caller of `ctx` sees it.
    pub fn for_caller(ctx: &Context<'_>, order: WorkOrder) -> AppResult<Self> {
        Ok(WorkOrderObj { order, parts: loaders(ctx)?, personal: true })
    }

    /// The order, loading through `parts` (lists and subscriptions share one loader).
    pub fn with(order: WorkOrder, parts: &Loaders, personal: bool) -> Self {
        WorkOrderObj { order, parts: parts.clone(), personal }
    }

    async fn hazard_list(&self) -> async_graphql::Result<Vec<crate::store::hazards::Hazard>> {
        Ok(self.parts.load_one(HazardsOf(self.order.id)).await?.unwrap_or_default())
    }
}

#[Object(name = "WorkOrder")]
impl WorkOrderObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.order.id.to_string())
    }
    /// Short title.
    async fn title(&self) -> &str {
        &self.order.title
    }
    /// What is to be done.
    async fn description(&self) -> Option<&str> {
        self.order.description.as_deref()
    }
    /// Lifecycle status (never `REJECTED`: a rejection sends the order back to `IN_PROGRESS`).
    async fn status(&self) -> WorkOrderStatusGql {
        self.order.status.into()
    }
    /// The project (site).
    async fn project(&self) -> async_graphql::Result<Option<ProjectObj>> {
        Ok(self.parts.load_one(ProjectKey(self.order.project_id)).await?.map(ProjectObj))
    }
    /// The hazards handled by this order, oldest first.
    async fn hazards(&self) -> async_graphql::Result<Vec<HazardObj>> {
        Ok(self.hazard_list().await?.into_iter().map(HazardObj).collect())
    }
    /// The electrician doing it; `null` while open for any electrician in scope to take.
    async fn assignee(&self) -> async_graphql::Result<Option<UserObj>> {
        let Some(id) = self.order.assignee_id else { return Ok(None) };
        Ok(self.parts.load_one(UserKey(id.as_uuid())).await?.map(UserObj))
    }
    /// Deadline.
    async fn due_at(&self) -> Option<DateTime<Utc>> {
        self.order.due_at
    }
    /// Whether the deadline has passed while the order still waits on field work.
    async fn overdue(&self, ctx: &Context<'_>) -> Result<bool> {
        let (s, _) = caller(ctx)?;
        Ok(self.order.status.is_overdue(self.order.due_at, s.clock().now()))
    }
    /// The completion report (the latest submission).
    async fn report(&self) -> Option<&str> {
        self.order.report.as_deref()
    }
    /// Photos of the work (from submissions).
    async fn attachments(&self) -> async_graphql::Result<Vec<AttachmentObj>> {
        let found = self.parts.load_one(AttachmentsOf(self.order.id)).await?.unwrap_or_default();
        Ok(found.into_iter().map(AttachmentObj).collect())
    }
    /// Who created it (e-mail, phone or API key name).
    async fn created_by(&self) -> &str {
        &self.order.created_by
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.order.created_at
    }
    /// Last change.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.order.updated_at
    }
    /// Latest submission.
    async fn submitted_at(&self) -> Option<DateTime<Utc>> {
        self.order.submitted_at
    }
    /// Approval.
    async fn approved_at(&self) -> Option<DateTime<Utc>> {
        self.order.approved_at
    }
    /// Everything done to the order, oldest first: creation, take, accept, start, submit,
    /// approve, reject — who, when (server and device time) and the note.
    async fn history(&self) -> async_graphql::Result<Vec<WorkOrderTransitionObj>> {
        let found = self.parts.load_one(HistoryOf(self.order.id)).await?.unwrap_or_default();
        Ok(found.into_iter().map(WorkOrderTransitionObj).collect())
    }
    /// What the caller may do to the order now (what the app offers). In `workOrderChanged`
    /// events, which are shared by everyone with the same role and scope, this lists what
    /// the role may do (take, approve, reject); the assignee's own actions (accept, start,
    /// submit) show when the order is read with `workOrder`.
    async fn allowed_actions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WorkOrderActionGql>> {
        let (_, who) = caller(ctx).map_err(ApiError)?;
        let mut actor = actor_of(who, &self.order);
        actor.is_assignee &= self.personal;
        let state = state_of(&self.order, !self.hazard_list().await?.is_empty());
        Ok(wo::allowed_actions(&state, &actor).into_iter().map(Into::into).collect())
    }
}

/// One thing done to a work order.
pub struct WorkOrderTransitionObj(pub OrderTransition);

#[Object(name = "WorkOrderTransition")]
impl WorkOrderTransitionObj {
    /// `CREATE` or `DISPATCH` for the creation, else the action (`TAKE`, `ACCEPT`, `START`,
    /// `SUBMIT`, `APPROVE`, `REJECT`).
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// Status before; `null` for the creation.
    async fn from_status(&self) -> Option<WorkOrderStatusGql> {
        self.0.from.map(Into::into)
    }
    /// Status after.
    async fn to_status(&self) -> WorkOrderStatusGql {
        self.0.to.into()
    }
    /// Who (e-mail, phone or API key name).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// The note, report or reason given.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// When the server applied it.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// When it was done on the phone (operations made offline arrive later).
    async fn device_at(&self) -> Option<DateTime<Utc>> {
        self.0.device_at
    }
}

// ---- roots ----

/// Read operations on work orders.
#[derive(Default)]
pub struct WorkOrderQuery;

#[Object]
impl WorkOrderQuery {
    /// Work orders in the caller's projects, newest first. Everyone with the project in
    /// scope sees its orders; `assignedToMe` and `unassigned` make an electrician's work
    /// bench.
    #[graphql(
        guard = "Require(Permission::HazardRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn work_orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<WorkOrderFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<WorkOrderObj>> {
        let (s, who) = caller(ctx)?;
        let filter = filter.unwrap_or_default().into_store(who)?;
        let page = s.work_orders(who, filter, page_request(first, after.as_deref())?).await?;
        let parts = loaders(ctx)?;
        prefetch(ctx, &parts, &page.items).await.map_err(|e| ApiError(AppError::Internal(e.message)))?;
        Ok(connection(page, |o| o.id.to_string(), |o| WorkOrderObj::with(o, &parts, true)))
    }

    /// One work order in scope; `null` when it does not exist for the caller.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn work_order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<WorkOrderObj>> {
        let (s, who) = caller(ctx)?;
        match s.work_order(who, parse_id("id", &id)?).await {
            Ok(o) => Ok(Some(WorkOrderObj::for_caller(ctx, o)?)),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Dispatching hazards and the work-order lifecycle.
#[derive(Default)]
pub struct WorkOrderMutation;

#[Object]
impl WorkOrderMutation {
    /// Sends open or acknowledged hazards (of one project) to an electrician through one new
    /// work order: they become `DISPATCHED`. Without `assigneeId` any electrician with the
    /// project in scope may take it.
    #[graphql(guard = "RequireAny(HazardActionKind::Dispatch.permissions())")]
    async fn dispatch_hazards(&self, ctx: &Context<'_>, input: DispatchHazardsInput) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        let new = NewOrder {
            project: None,
            title: input.title,
            description: input.note,
            hazard_ids: parse_ids("hazardIds", &input.hazard_ids)?,
            assignee: input.assignee_id.map(|a| parse_id("assigneeId", &a)).transpose()?,
            due_at: input.due_at,
        };
        let client = client_op(parse_client(input.client_id.as_ref())?, FieldOperationKind::Other);
        Ok(WorkOrderObj::for_caller(ctx, s.dispatch_hazards(who, new, client).await?)?)
    }

    /// Creates a work order by hand, dispatching `hazardIds` (if any) through it.
    #[graphql(guard = "RequireAny(HazardActionKind::Dispatch.permissions())")]
    async fn create_work_order(&self, ctx: &Context<'_>, input: CreateWorkOrderInput) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        let new = NewOrder {
            project: Some(parse_id("projectId", &input.project_id)?),
            title: Some(input.title),
            description: input.description,
            hazard_ids: parse_ids("hazardIds", &input.hazard_ids.unwrap_or_default())?,
            assignee: input.assignee_id.map(|a| parse_id("assigneeId", &a)).transpose()?,
            due_at: input.due_at,
        };
        let client = client_op(parse_client(input.client_id.as_ref())?, FieldOperationKind::Other);
        Ok(WorkOrderObj::for_caller(ctx, s.create_work_order(who, new, client).await?)?)
    }

    /// Takes an unassigned pending order in scope: the caller becomes its assignee and it is
    /// accepted. The first taker wins; the others get `CONFLICT`.
    #[graphql(guard = "RequireAny(WorkOrderAction::Take.permissions())")]
    async fn take_work_order(&self, ctx: &Context<'_>, id: ID, client_id: Option<ID>) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        let client = client_op(parse_client(client_id.as_ref())?, FieldOperationKind::Other);
        Ok(WorkOrderObj::for_caller(ctx, s.take_work_order(who, parse_id("id", &id)?, client).await?)?)
    }

    /// Accepts a pending order assigned to the caller.
    #[graphql(guard = "RequireAny(WorkOrderAction::Accept.permissions())")]
    async fn accept_work_order(&self, ctx: &Context<'_>, id: ID, client_id: Option<ID>) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        let client = client_op(parse_client(client_id.as_ref())?, FieldOperationKind::Other);
        Ok(WorkOrderObj::for_caller(ctx, s.accept_work_order(who, parse_id("id", &id)?, client).await?)?)
    }

    /// Starts work on an order assigned to the caller (pending or accepted).
    #[graphql(guard = "RequireAny(WorkOrderAction::Start.permissions())")]
    async fn start_work_order(&self, ctx: &Context<'_>, id: ID, client_id: Option<ID>) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        let client = client_op(parse_client(client_id.as_ref())?, FieldOperationKind::StartWorkOrder);
        Ok(WorkOrderObj::for_caller(ctx, s.start_work_order(who, parse_id("id", &id)?, client).await?)?)
    }

    /// Hands in the completion report of an order in progress: its hazards become
    /// `RECTIFIED` (with the report as note and the photos), the managers are told.
    #[graphql(guard = "RequireAny(WorkOrderAction::Submit.permissions())")]
    async fn submit_work_order(&self, ctx: &Context<'_>, input: SubmitWorkOrderInput) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        let submission = Submission {
            id: parse_id("id", &input.id)?,
            report: input.report,
            attachment_ids: parse_ids("attachmentIds", &input.attachment_ids.unwrap_or_default())?,
        };
        let client = client_op(parse_client(input.client_id.as_ref())?, FieldOperationKind::SubmitWorkOrder);
        Ok(WorkOrderObj::for_caller(ctx, s.submit_work_order(who, submission, client).await?)?)
    }

    /// Approves submitted work: the order is done and its hazards `CLOSED`.
    #[graphql(guard = "RequireAny(WorkOrderAction::Approve.permissions())")]
    async fn approve_work_order(&self, ctx: &Context<'_>, id: ID, note: Option<String>) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        Ok(WorkOrderObj::for_caller(ctx, s.approve_work_order(who, parse_id("id", &id)?, note).await?)?)
    }

    /// Rejects submitted work, saying what is still wrong: the order goes back to
    /// `IN_PROGRESS`, its hazards to `DISPATCHED`, and the assignee is told.
    #[graphql(guard = "RequireAny(WorkOrderAction::Reject.permissions())")]
    async fn reject_work_order(&self, ctx: &Context<'_>, id: ID, note: String) -> Result<WorkOrderObj> {
        let (s, who) = caller(ctx)?;
        Ok(WorkOrderObj::for_caller(ctx, s.reject_work_order(who, parse_id("id", &id)?, note).await?)?)
    }
}
