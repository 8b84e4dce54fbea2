//! Work orders and hazards to closure: dispatching hazards through an order, the order's
//! lifecycle (take, accept, start, submit, approve, reject) with its hazards moving along,
//! notifications and overdue reminders.
//!
//! - **Rules** are [`sparkwatch_domain::workorder::transition`]'s (who, from where, with what
//!   input) and [`sparkwatch_domain::hazard::transition`]'s for each linked hazard. A change
//!   is all or nothing: the order, its hazards, both histories, the operation log and the
//!   client-id record are written in one transaction, then published (`workOrderChanged`,
//!   `hazardChanged`) and notified.
//! - **Races.** Status updates are conditional on the status read (taking also on nobody
//!   being assigned), so of two electricians taking one order exactly one wins; the other
//!   gets `CONFLICT`.
//! - **Visibility.** Everyone with `hazard.read` sees the orders of the projects in their
//!   scope — electricians see their colleagues' orders on their sites, which is also what
//!   `workOrderChanged` can deliver: a subscription is shared by everyone with the same
//!   access (role and scope), so it cannot depend on who the person is. `assignedToMe` and
//!   `unassigned` give an electrician's own work bench.
//! - **Overdue.** An order with a deadline gets a reminder ([`OVERDUE`]) due at the
//!   deadline. While the order still waits on field work it fires: level 1 tells the
//!   assignee (or the managers, when nobody took it), later levels the project's managers,
//!   repeating every `escalation.every_min` of the tenant; it finishes once the order is
//!   submitted, and a rejection re-arms it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::access::{Permission, ProjectScope};
use sparkwatch_domain::field::FieldOperationKind;
use sparkwatch_domain::hazard::{self, HazardAction, TransitionError};
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_domain::notify::{WorkNotice, render_work};
use sparkwatch_domain::site::Project;
use sparkwatch_domain::workorder::{
    self as wo, ActionInput, Actor, OrderState, WorkOrderAction, WorkOrderError, WorkOrderStatus,
};
use uuid::Uuid;

use super::field::{Claim, ClientOp};
use super::notify::PeopleNotice;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::bus::{BusMessage, Envelope, Feed};
use crate::error::{AppError, AppResult};
use crate::store::access::{self, RoleRef, User};
use crate::store::attachments::{self as attachments, Attachment};
use crate::store::hazards::{self as hz, Hazard};
use crate::store::notify::{self as reminders, NewReminder};
use crate::store::oplog::Entry;
use crate::store::sites::{self, ProjectFilter};
use crate::store::workorders::{self as st, Change, OrderTransition, WorkOrder, WorkOrderFilter};
use crate::store::{Page, PageRequest, new_id, tenants};

/// The purpose of an order's overdue reminder.
pub const OVERDUE: &str = "workorder.overdue";
/// The subject type of work orders (reminders, attachments).
pub const SUBJECT: &str = "work_order";

/// A new work order: by hand (`createWorkOrder`) or from hazards (`dispatchHazards`).
#[derive(Clone, Debug, Default)]
pub struct NewOrder {
    /// Project; `None` when dispatching (taken from the hazards).
    pub project: Option<ProjectId>,
    /// Title; `None` when dispatching (made from the hazards).
    pub title: Option<String>,
    /// What is to be done (the dispatch note).
    pub description: Option<String>,
    /// Hazards to dispatch through it.
    pub hazard_ids: Vec<Uuid>,
    /// The electrician; `None` leaves it open for any electrician in scope to take.
    pub assignee: Option<UserId>,
    /// Deadline.
    pub due_at: Option<DateTime<Utc>>,
}

/// What [`Services::act_tx`] did.
#[derive(Clone, Debug)]
pub(crate) enum Acted {
    /// The client id was used before: nothing changed; this order is the answer.
    Replay(Uuid),
    /// Applied; publish and notify after the commit.
    Done(Done),
}

/// An applied action, for what follows the commit.
#[derive(Clone, Debug)]
pub(crate) struct Done {
    /// The order.
    pub order: Uuid,
    /// What was done.
    pub action: WorkOrderAction,
    /// Hazards that moved with it.
    pub moved: Vec<Uuid>,
    /// The report or note.
    pub note: Option<String>,
}

/// A completion report.
#[derive(Clone, Debug, Default)]
pub struct Submission {
    /// The order.
    pub id: Uuid,
    /// What was done.
    pub report: String,
    /// Photos (uploaded with `POST /attachments`).
    pub attachment_ids: Vec<Uuid>,
}

/// What a caller may do to an order, as the domain rules see the caller.
pub fn actor_of(who: &Principal, order: &WorkOrder) -> Actor {
    Actor::of(|p| who.access.can(p), order.assignee_id.is_some() && order.assignee_id == who.user_id())
}

/// The order's state for the rules.
pub fn state_of(order: &WorkOrder, has_hazards: bool) -> OrderState {
    OrderState { status: order.status, assigned: order.assignee_id.is_some(), has_hazards }
}

fn refused(e: WorkOrderError) -> AppError {
    match e {
        WorkOrderError::Forbidden(m) => AppError::Forbidden(m),
        WorkOrderError::Conflict(m) => AppError::Conflict(m),
        WorkOrderError::Invalid(v) => AppError::Validation(v),
    }
}

impl Services {
    // ---- reads ----

    /// Visible orders, newest first (see the module docs for who sees what).
    pub async fn work_orders(
        &self,
        who: &Principal,
        filter: WorkOrderFilter,
        req: PageRequest,
    ) -> AppResult<Page<WorkOrder>> {
        let tenant = who.tenant()?;
        let filter = WorkOrderFilter { now: self.now(), ..filter };
        Ok(st::list(self.inner.store.db(), tenant, &who.access.scope, &filter, req).await?)
    }

    /// A visible order.
    pub async fn work_order(&self, who: &Principal, id: Uuid) -> AppResult<WorkOrder> {
        st::by_id(self.inner.store.db(), who.tenant()?, &who.access.scope, id)
            .await?
            .ok_or(AppError::NotFound("work order"))
    }

    /// The hazards of visible orders `ids` (one query for a whole page).
    pub(crate) async fn work_order_hazards(&self, who: &Principal, ids: &[Uuid]) -> AppResult<Vec<Hazard>> {
        let hazards = st::hazards_of(self.inner.store.db(), who.tenant()?, ids).await?;
        Ok(hazards.into_iter().filter(|h| who.sees_project(h.project_id)).collect())
    }

    /// The photos of orders `ids` (one query).
    pub(crate) async fn work_order_attachments(&self, who: &Principal, ids: &[Uuid]) -> AppResult<Vec<Attachment>> {
        let found = attachments::of_subjects(self.inner.store.db(), who.tenant()?, SUBJECT, ids).await?;
        Ok(found.into_iter().filter(|a| a.project_id.is_some_and(|p| who.sees_project(p))).collect())
    }

    /// The histories of orders `ids`, oldest first (one query).
    pub(crate) async fn work_order_history(&self, who: &Principal, ids: &[Uuid]) -> AppResult<Vec<OrderTransition>> {
        Ok(st::history_of(self.inner.store.db(), who.tenant()?, ids).await?)
    }

    /// Users of the caller's tenant among `ids` (assignees; one query).
    pub(crate) async fn users_by_ids(&self, who: &Principal, ids: &[Uuid]) -> AppResult<Vec<User>> {
        Ok(st::users(self.inner.store.db(), who.tenant()?, ids).await?)
    }

    /// Visible projects among `ids` (the projects of a page of orders; two queries).
    pub(crate) async fn projects_by_ids(&self, who: &Principal, ids: &[ProjectId]) -> AppResult<Vec<Project>> {
        let wanted = ProjectScope::Only(ids.iter().copied().filter(|p| who.sees_project(*p)).collect());
        let req = PageRequest { first: ids.len() as u64, after: None };
        let filter = ProjectFilter::default();
        Ok(sites::projects(self.inner.store.db(), who.tenant()?, &wanted, &filter, req).await?.items)
    }

    // ---- creating ----

    /// Dispatches open or acknowledged hazards (all of one project) through one new order.
    pub async fn dispatch_hazards(
        &self,
        who: &Principal,
        new: NewOrder,
        client: Option<ClientOp>,
    ) -> AppResult<WorkOrder> {
        if new.hazard_ids.is_empty() {
            return Err(AppError::invalid("hazardIds", "name at least one hazard to dispatch"));
        }
        self.create_order(who, new, client).await
    }

    /// Creates an order by hand, dispatching `hazard_ids` (if any) through it.
    pub async fn create_work_order(
        &self,
        who: &Principal,
        new: NewOrder,
        client: Option<ClientOp>,
    ) -> AppResult<WorkOrder> {
        if new.project.is_none() {
            return Err(AppError::invalid("projectId", "is required"));
        }
        self.create_order(who, new, client).await
    }

    async fn create_order(&self, who: &Principal, new: NewOrder, client: Option<ClientOp>) -> AppResult<WorkOrder> {
        let tenant = who.tenant()?;
        who.require(Permission::HazardManage)?;
        // A repeat gives the first result before anything is checked again (its hazards have
        // moved on since); the claim in the transaction below settles concurrent repeats.
        if let Some(op) = &client
            && let Some(earlier) = self.recorded_op(who, op.client_id).await?
            && earlier.kind == Some(op.kind)
            && let Some(id) = earlier.entity
        {
            return self.work_order(who, id).await;
        }
        let now = self.now();
        let db = self.inner.store.db();
        let mut ids: Vec<Uuid> = Vec::with_capacity(new.hazard_ids.len());
        for id in &new.hazard_ids {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        if ids.len() > wo::MAX_HAZARDS {
            return Err(AppError::invalid("hazardIds", format!("at most {} hazards per work order", wo::MAX_HAZARDS)));
        }
        let found = hz::hazards_by_ids(db, tenant, &who.access.scope, &ids).await?;
        let mut hazards = Vec::with_capacity(ids.len());
        for id in &ids {
            hazards.push(found.iter().find(|h| h.id == *id).cloned().ok_or(AppError::NotFound("hazard"))?);
        }
        let project = match (new.project, hazards.first()) {
            (Some(p), _) => p,
            (None, Some(h)) => h.project_id,
            (None, None) => return Err(AppError::invalid("projectId", "is required")),
        };
        self.project(who, project).await?;
        if hazards.iter().any(|h| h.project_id != project) {
            return Err(AppError::invalid("hazardIds", "a work order's hazards must all be in its project"));
        }
        let title = match &new.title {
            Some(t) => t.clone(),
            None => dispatch_title(&hazards),
        };
        let (title, description) = wo::check_new(&title, new.description.as_deref())?;
        if new.due_at.is_some_and(|d| d <= now) {
            return Err(AppError::invalid("dueAt", "must be in the future"));
        }
        if let Some(a) = new.assignee {
            self.check_assignee(tenant, a, project).await?;
        }
        let mut moves = Vec::with_capacity(hazards.len());
        for h in &hazards {
            match hazard::transition(h.status, &HazardAction::Dispatch) {
                Ok(to) => moves.push((h.clone(), to)),
                Err(TransitionError::Already { .. }) => {
                    return Err(AppError::Conflict(format!("hazard {} is already dispatched", h.id)));
                }
                Err(e) => return Err(AppError::Conflict(format!("hazard {}: {e}", h.id))),
            }
        }
        let order = WorkOrder {
            id: new_id(),
            tenant_id: tenant,
            project_id: project,
            title,
            description,
            status: WorkOrderStatus::Pending,
            assignee_id: new.assignee,
            due_at: new.due_at,
            report: None,
            created_by: who.label.clone(),
            created_by_user_id: who.user_id(),
            created_at: now,
            updated_at: now,
            submitted_at: None,
            approved_at: None,
        };
        let tx = self.begin().await?;
        if let Claim::Replay(id) = self.claim(&tx, who, client.as_ref(), order.id).await? {
            drop(tx);
            return self.work_order(who, id).await;
        }
        st::insert(&tx, &order).await?;
        st::link_hazards(&tx, &ids, order.id).await?;
        self.move_hazards(&tx, who, &moves, new.description.as_deref(), "hazard.dispatch", now).await?;
        let action = if ids.is_empty() { "CREATE" } else { "DISPATCH" };
        let history = OrderTransition {
            work_order_id: order.id,
            action: action.to_owned(),
            from: None,
            to: WorkOrderStatus::Pending,
            actor: who.label.clone(),
            actor_user_id: who.user_id(),
            note: order.description.clone(),
            at: now,
            device_at: client.and_then(|c| c.device_at),
        };
        st::insert_transition(&tx, tenant, &history).await?;
        if let Some(due) = order.due_at {
            let policy = tenants::get(&tx, tenant).await?.map(|t| t.escalation).unwrap_or_default();
            let reminder = NewReminder {
                tenant,
                purpose: OVERDUE,
                subject_type: SUBJECT,
                subject: order.id,
                due_at: due,
                every_s: (policy.every_min * 60) as i32,
            };
            reminders::schedule_reminder(&tx, &reminder, now).await?;
        }
        let entry = Entry::new(Some(tenant), "work_order.create", SUBJECT, Some(order.id.to_string()))
            .after(snapshot(&serde_json::json!({"order": order, "hazardIds": ids})));
        self.log(&tx, who, entry).await?;
        tx.commit().await?;
        let stored = self.work_order(who, order.id).await?;
        self.publish_changes(&stored, &ids).await?;
        if let Some(a) = stored.assignee_id {
            let notice = WorkNotice::Assigned { title: &stored.title };
            self.tell(&stored, &[a], "work_order.assigned", false, notice).await;
        }
        Ok(stored)
    }

    /// Checks that `user` may be given an order in `project`: an active user of the tenant
    /// who does field work and has the project in scope.
    async fn check_assignee(&self, tenant: TenantId, user: UserId, project: ProjectId) -> AppResult<()> {
        let db = self.inner.store.db();
        let bad = || AppError::invalid("assigneeId", "must be an active electrician with the project in scope");
        let u = access::user_by_id(db, user).await?.filter(|u| u.tenant_id == Some(tenant) && u.active);
        let Some(u) = u else { return Err(bad()) };
        let permissions = match u.role {
            RoleRef::Builtin(b) => b.permissions(),
            RoleRef::Custom(id) => access::role(db, tenant, id).await?.map(|r| r.permissions).unwrap_or_default(),
        };
        let scope = ProjectScope::new(&permissions, access::user_projects(db, u.id).await?);
        if permissions.contains(&Permission::FieldWork) && scope.contains(project) { Ok(()) } else { Err(bad()) }
    }

    // ---- the lifecycle ----

    /// Takes an unassigned pending order (first taker wins; the others get `CONFLICT`).
    pub async fn take_work_order(&self, who: &Principal, id: Uuid, client: Option<ClientOp>) -> AppResult<WorkOrder> {
        self.act(who, id, WorkOrderAction::Take, None, &[], client).await
    }

    /// The assignee accepts a pending order.
    pub async fn accept_work_order(&self, who: &Principal, id: Uuid, client: Option<ClientOp>) -> AppResult<WorkOrder> {
        self.act(who, id, WorkOrderAction::Accept, None, &[], client).await
    }

    /// The assignee starts work (also what offline sync applies for `startWorkOrder`).
    pub(crate) async fn start_work_order(
        &self,
        who: &Principal,
        id: Uuid,
        client: Option<ClientOp>,
    ) -> AppResult<WorkOrder> {
        self.act(who, id, WorkOrderAction::Start, None, &[], client).await
    }

    /// The assignee hands in the completion report with photos; the linked hazards become
    /// rectified (also what offline sync applies for `submitWorkOrder`).
    pub(crate) async fn submit_work_order(
        &self,
        who: &Principal,
        s: Submission,
        client: Option<ClientOp>,
    ) -> AppResult<WorkOrder> {
        self.act(who, s.id, WorkOrderAction::Submit, Some(s.report), &s.attachment_ids, client).await
    }

    /// A manager approves the submitted work; the linked hazards close.
    pub async fn approve_work_order(&self, who: &Principal, id: Uuid, note: Option<String>) -> AppResult<WorkOrder> {
        self.act(who, id, WorkOrderAction::Approve, note, &[], None).await
    }

    /// A manager rejects the submitted work: back to in progress, hazards dispatched again.
    pub async fn reject_work_order(&self, who: &Principal, id: Uuid, note: String) -> AppResult<WorkOrder> {
        self.act(who, id, WorkOrderAction::Reject, Some(note), &[], None).await
    }

    /// Applies `action` (see the module docs): [`Self::act_tx`] in a transaction of its own,
    /// then [`Self::after_act`].
    async fn act(
        &self,
        who: &Principal,
        id: Uuid,
        action: WorkOrderAction,
        text: Option<String>,
        photos: &[Uuid],
        client: Option<ClientOp>,
    ) -> AppResult<WorkOrder> {
        let tx = self.begin().await?;
        let acted = self.act_tx(&tx, who, id, action, text, photos, client.as_ref()).await?;
        tx.commit().await?;
        match acted {
            Acted::Replay(id) => self.work_order(who, id).await,
            Acted::Done(done) => self.after_act(who, &done).await,
        }
    }

    /// Applies `action` inside `tx` (offline sync runs it in a savepoint). Publishing and
    /// notifying wait for the commit: pass the result to [`Self::after_act`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn act_tx(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        id: Uuid,
        action: WorkOrderAction,
        text: Option<String>,
        photos: &[Uuid],
        client: Option<&ClientOp>,
    ) -> AppResult<Acted> {
        let tenant = who.tenant()?;
        let text = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let now = self.now();
        if let Claim::Replay(id) = self.claim(tx, who, client, id).await? {
            return Ok(Acted::Replay(id));
        }
        let order = st::by_id(tx, tenant, &who.access.scope, id).await?.ok_or(AppError::NotFound("work order"))?;
        let hazards = st::hazards_of(tx, tenant, &[id]).await?;
        let input = ActionInput { text: text.clone(), photos: photos.len() };
        let to = wo::transition(&state_of(&order, !hazards.is_empty()), &actor_of(who, &order), action, &input)
            .map_err(refused)?;
        let hazard_action = match action {
            WorkOrderAction::Submit => Some(HazardAction::Rectify {
                note: text.clone().unwrap_or_default(),
                photos: photos.iter().map(Uuid::to_string).collect(),
            }),
            WorkOrderAction::Approve => Some(HazardAction::Verify { passed: true, note: text.clone() }),
            WorkOrderAction::Reject => Some(HazardAction::Verify { passed: false, note: text.clone() }),
            _ => None,
        };
        let mut moves = Vec::new();
        for (h, a) in hazards.iter().filter_map(|h| hazard_action.as_ref().map(|a| (h, a))) {
            match hazard::transition(h.status, a) {
                Ok(next) => moves.push((h.clone(), next)),
                Err(TransitionError::Already { .. }) => {}
                // The hazard's note is the report (submit) or the manager's note.
                Err(TransitionError::Invalid(e)) if e.field == "note" => {
                    let field = if action == WorkOrderAction::Submit { "report" } else { "note" };
                    return Err(AppError::invalid(field, e.reason));
                }
                Err(TransitionError::Invalid(e)) => return Err(AppError::invalid("attachmentIds", e.reason)),
                Err(e) => return Err(AppError::Conflict(format!("hazard {}: {e}", h.id))),
            }
        }
        let change = Change {
            assignee: (action == WorkOrderAction::Take).then(|| who.user_id()).flatten(),
            report: text.clone().filter(|_| action == WorkOrderAction::Submit),
        };
        if action == WorkOrderAction::Take && change.assignee.is_none() {
            return Err(AppError::Forbidden("only people can take work orders".into()));
        }
        if !st::set_status(tx, &order, action, to, &change, now).await? {
            return Err(AppError::Conflict(match action {
                WorkOrderAction::Take => "this work order has already been taken by someone else".into(),
                _ => "the work order was changed by someone else meanwhile; reload and try again".into(),
            }));
        }
        if action == WorkOrderAction::Submit {
            self.link_attachments(tx, who, photos, order.project_id, SUBJECT, order.id).await?;
        }
        let log_action = match action {
            WorkOrderAction::Submit => "hazard.rectify",
            _ => "hazard.verify",
        };
        self.move_hazards(tx, who, &moves, text.as_deref(), log_action, now).await?;
        let history = OrderTransition {
            work_order_id: order.id,
            action: action.code().to_owned(),
            from: Some(order.status),
            to,
            actor: who.label.clone(),
            actor_user_id: who.user_id(),
            note: text.clone(),
            at: now,
            device_at: client.and_then(|c| c.device_at),
        };
        st::insert_transition(tx, tenant, &history).await?;
        if action == WorkOrderAction::Reject
            && let Some(due) = order.due_at
        {
            st::rearm_reminder(tx, OVERDUE, order.id, due.max(now)).await?;
        }
        let log = format!("work_order.{}", action.code().to_ascii_lowercase());
        let after = st::by_id(tx, tenant, &who.access.scope, id).await?;
        let entry = Entry::new(Some(tenant), &log, SUBJECT, Some(order.id.to_string()))
            .before(snapshot(&order))
            .after(snapshot(&serde_json::json!({"order": after, "note": text, "attachmentIds": photos})));
        self.log(tx, who, entry).await?;
        let moved = moves.iter().map(|(h, _)| h.id).collect();
        Ok(Acted::Done(Done { order: id, action, moved, note: text }))
    }

    /// After the commit of [`Self::act_tx`]: reads the order back, tells subscribers about it
    /// and the hazards that moved with it, and notifies the people concerned.
    pub(crate) async fn after_act(&self, who: &Principal, done: &Done) -> AppResult<WorkOrder> {
        let stored = self.work_order(who, done.order).await?;
        self.publish_changes(&stored, &done.moved).await?;
        self.notify_action(who, &stored, done.action, done.note.as_deref()).await;
        Ok(stored)
    }

    /// Publishes the order and the hazards that moved with it.
    async fn publish_changes(&self, order: &WorkOrder, hazards: &[Uuid]) -> AppResult<()> {
        let tenant = order.tenant_id;
        let changed = hz::hazards_by_ids(self.inner.store.db(), tenant, &ProjectScope::All, hazards).await?;
        let feed = Feed::Tenant(tenant);
        let mut messages: Vec<Envelope> =
            changed.into_iter().map(|h| Envelope { tenant, feed, message: BusMessage::Hazard(Box::new(h)) }).collect();
        messages.push(Envelope { tenant, feed, message: BusMessage::WorkOrder(Box::new(order.clone())) });
        self.inner.bus.publish(messages);
        Ok(())
    }

    // ---- notifications ----

    /// Tells the people concerned about an action: the taker's colleagues need nothing, the
    /// managers hear of a submission, the assignee of a rejection.
    async fn notify_action(&self, who: &Principal, order: &WorkOrder, action: WorkOrderAction, note: Option<&str>) {
        match action {
            WorkOrderAction::Submit => {
                let managers = match self.managers_of(order.tenant_id, order.project_id).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, order = %order.id, "could not find the managers to notify");
                        return;
                    }
                };
                let notice = WorkNotice::Submitted { title: &order.title, by: &who.label };
                self.tell(order, &managers, "work_order.submitted", false, notice).await;
            }
            WorkOrderAction::Reject => {
                let to: Vec<UserId> = order.assignee_id.into_iter().collect();
                let notice = WorkNotice::Rejected { title: &order.title, note: note.unwrap_or_default() };
                self.tell(order, &to, "work_order.rejected", false, notice).await;
            }
            _ => {}
        }
    }

    /// Pushes a work-order notice to `users`; a failure is logged, never the caller's error
    /// (the change it reports is committed).
    async fn tell(&self, order: &WorkOrder, users: &[UserId], reason: &str, urgent: bool, notice: WorkNotice<'_>) {
        let text = move |locale, project: &str| render_work(&notice, project, locale);
        let mut data = BTreeMap::new();
        data.insert("workOrderId".to_owned(), order.id.to_string());
        let n = PeopleNotice { project: order.project_id, reason, data, urgent, text: &text };
        if let Err(e) = self.notify_people(order.tenant_id, users, &n).await {
            tracing::warn!(error = %e, order = %order.id, reason, "could not queue work-order notifications");
        }
    }

    /// Fires a work-order reminder (overdue orders); `None` when `r` is not one.
    pub(crate) async fn fire_work_order_reminder(
        &self,
        r: &sparkwatch_entity::reminder::Model,
    ) -> AppResult<Option<usize>> {
        if r.purpose != OVERDUE {
            return Ok(None);
        }
        let db = self.inner.store.db();
        let now = self.now();
        let order = st::by_id_any(db, r.subject_id).await?;
        let Some((order, due)) =
            order.filter(|o| o.status.is_overdue(o.due_at, now)).and_then(|o| o.due_at.map(|d| (o, d)))
        else {
            // Handed in or approved (or gone): nothing left to remind of.
            reminders::finish_reminder(db, r.id, now).await?;
            return Ok(Some(0));
        };
        let level = r.level + 1;
        let recipients = match order.assignee_id {
            Some(a) if level == 1 => vec![a],
            _ => self.managers_of(order.tenant_id, order.project_id).await?,
        };
        let overdue_min = (now - due).num_minutes().max(0) as u32;
        let reason = if level == 1 { "work_order.overdue" } else { "work_order.overdue_escalated" };
        let notice = WorkNotice::Overdue { title: &order.title, overdue_min, level: level as u32 };
        self.tell(&order, &recipients, reason, level > 1, notice).await;
        let policy = tenants::get(db, order.tenant_id).await?.map(|t| t.escalation).unwrap_or_default();
        let next =
            r.due_at.max(now - chrono::Duration::seconds(1)) + chrono::Duration::minutes(i64::from(policy.every_min));
        reminders::reschedule_reminder(db, r.id, level, next).await?;
        tracing::info!(order = %order.id, level, overdue_min, "overdue work order reminded");
        Ok(Some(1))
    }
}

/// The title of an order made by dispatching hazards: what and how many.
fn dispatch_title(hazards: &[Hazard]) -> String {
    match hazards {
        [one] => match &one.description {
            Some(d) => d.chars().take(wo::MAX_TITLE_CHARS).collect(),
            None => format!("Rectify {} on {}", one.kind.code(), one.channel),
        },
        many => format!("Rectify {} hazards", many.len()),
    }
}

/// How offline operations on orders are identified (for the GraphQL layer).
pub fn client_op(client_id: Option<Uuid>, kind: FieldOperationKind) -> Option<ClientOp> {
    ClientOp::new(client_id, kind, None)
}
