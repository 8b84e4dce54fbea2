//! Patrol check-ins: an assignee scans a checkpoint's code during a task and answers its
//! checklist, with a note, photos and the hazards found there.
//!
//! A check-in is an offline operation: it carries a client id (required) and the device
//! time of the scan. Repeating it returns the check-in as stored; a second check-in of the
//! same checkpoint in the same task (another client id) is a `CONFLICT`. Check-ins of one
//! task are serialised by a row lock on the task, so whatever order they arrive in, the last
//! one sees the others and the task ends `DONE` once every checkpoint is checked — also
//! when it was marked `MISSED` meanwhile, if the scans were made before the due time.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::field::FieldOperationKind;
use sparkwatch_domain::patrol::{self as rules, Answer, MAX_ITEM_CHARS};
use sparkwatch_domain::validate::optional_text;
use uuid::Uuid;

use super::field::{Claim, ClientOp};
use super::patrol::CheckInView;
use super::reports::ReportDraft;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::hazards::Hazard;
use crate::store::new_id;
use crate::store::oplog::Entry;
use crate::store::patrol::{self as st, CheckIn};

/// A check-in as the app sends it (GraphQL `CheckInInput`, or one operation of a sync).
#[derive(Clone, Debug)]
pub struct CheckInDraft {
    /// The client's id of this operation.
    pub client_id: Uuid,
    /// The task.
    pub task: Uuid,
    /// The scanned code.
    pub qr_payload: String,
    /// When it was scanned (device time).
    pub at: DateTime<Utc>,
    /// Checklist answers.
    pub answers: Vec<Answer>,
    /// A note.
    pub note: Option<String>,
    /// Uploaded photos.
    pub attachment_ids: Vec<Uuid>,
    /// Hazards found there: each becomes a `FIELD_REPORT` hazard of the task's project, at
    /// this checkpoint unless it names another, seen at the check-in's time unless it says.
    /// Their own client ids are not used: the check-in's covers them.
    pub hazards: Vec<ReportDraft>,
}

impl Services {
    /// Checks in at a checkpoint (see the module docs). Returns the check-in as stored, also
    /// when it is a repeat of an earlier one (same client id).
    pub(crate) async fn check_in(&self, who: &Principal, input: CheckInDraft) -> AppResult<CheckInView> {
        let id = new_id();
        let tx = self.begin().await?;
        let op = ClientOp { client_id: input.client_id, kind: FieldOperationKind::CheckIn, device_at: Some(input.at) };
        if let Claim::Replay(earlier) = self.claim(&tx, who, Some(&op), id).await? {
            drop(tx);
            return self.check_in_view(who, earlier).await;
        }
        let hazards = self.check_in_tx(&tx, who, &input, id).await?;
        tx.commit().await?;
        self.publish_hazards(&hazards);
        self.announce_reported(who, &hazards).await;
        self.check_in_view(who, id).await
    }

    /// Stores check-in `id` inside `tx`, after the caller claimed the client id (for
    /// `syncFieldOperations`, which runs it in a savepoint). Returns the hazards it
    /// reported, for the caller to publish after its commit
    /// ([`Services::publish_hazards`]).
    pub(crate) async fn check_in_tx(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        input: &CheckInDraft,
        id: Uuid,
    ) -> AppResult<Vec<Hazard>> {
        let tenant = who.tenant()?;
        let me = who.user_id().ok_or_else(|| AppError::Forbidden("only people check in".into()))?;
        let checkpoint_id = self.verify_qr(tenant, &input.qr_payload)?;
        let now = self.now();
        sparkwatch_domain::hazard::check_device_time("at", input.at, now)?;
        let note = optional_text("note", input.note.as_deref(), MAX_ITEM_CHARS)?;
        let task = st::lock_task(tx, tenant, &who.access.scope, input.task, now)
            .await?
            .ok_or(AppError::NotFound("patrol task"))?;
        let plans = st::plans_by_ids(tx, tenant, &[task.plan_id]).await?;
        let plan = plans.into_iter().next().ok_or(AppError::NotFound("patrol task"))?;
        if !plan.assignees.contains(&me) {
            return Err(if who.access.can(Permission::PatrolManage) {
                AppError::Forbidden("only the plan's assignees check in on its tasks".into())
            } else {
                AppError::NotFound("patrol task")
            });
        }
        let not_on_plan =
            || AppError::invalid("qrPayload", "this code belongs to a checkpoint that is not on this patrol");
        if !plan.checkpoints.contains(&checkpoint_id) {
            return Err(not_on_plan());
        }
        let found = st::checkpoints_by_ids(tx, tenant, &who.access.scope, &[checkpoint_id]).await?;
        let checkpoint = found.into_iter().next().ok_or_else(not_on_plan)?;
        rules::check_answers(&checkpoint.checklist, &input.answers)?;
        let existing = st::check_ins_of_tasks(tx, tenant, &[task.id]).await?;
        let already =
            || AppError::Conflict(format!("checkpoint \"{}\" is already checked in this task", checkpoint.name));
        if existing.iter().any(|c| c.checkpoint_id == checkpoint_id) {
            return Err(already());
        }
        let checked = plan
            .checkpoints
            .iter()
            .filter(|c| **c == checkpoint_id || existing.iter().any(|e| e.checkpoint_id == **c))
            .count();
        let status = rules::after_check_in(task.status, task.due_at, input.at, checked, plan.checkpoints.len())?;
        // In checklist order, whatever order the app sent them in.
        let answers = checkpoint
            .checklist
            .iter()
            .filter_map(|item| input.answers.iter().find(|a| &a.item == item).cloned())
            .collect();
        let row = CheckIn {
            id,
            tenant_id: tenant,
            project_id: task.project_id,
            task_id: task.id,
            checkpoint_id,
            actor: who.label.clone(),
            user_id: Some(me),
            at: input.at,
            received_at: now,
            answers,
            note,
        };
        if !st::insert_check_in(tx, &row).await? {
            return Err(already());
        }
        if status != task.status && !st::set_task_status(tx, task.id, task.status, status, now).await? {
            return Err(AppError::Conflict("the task changed meanwhile; sync again".into()));
        }
        self.link_attachments(tx, who, &input.attachment_ids, task.project_id, "check_in", id).await?;
        let mut hazards = Vec::with_capacity(input.hazards.len());
        for report in &input.hazards {
            if report.project.is_some_and(|p| p != task.project_id) {
                return Err(AppError::invalid("hazards", "hazards found on patrol are in the task's project"));
            }
            let draft = ReportDraft {
                project: Some(task.project_id),
                checkpoint: report.checkpoint.or(Some(checkpoint_id)),
                at: report.at.or(Some(input.at)),
                ..report.clone()
            };
            let hazard = self.report_hazard_tx(tx, who, &draft, new_id()).await?;
            st::link_hazard(tx, id, hazard.id).await?;
            hazards.push(hazard);
        }
        let entry = Entry::new(Some(tenant), "patrol.check_in", "check_in", Some(id.to_string()));
        let hazard_ids: Vec<Uuid> = hazards.iter().map(|h| h.id).collect();
        let after = serde_json::json!({"checkIn": row, "taskStatus": status.code(),
            "attachments": input.attachment_ids, "hazards": hazard_ids});
        self.log(tx, who, entry.before(snapshot(&task)).after(Some(after))).await?;
        Ok(hazards)
    }

    /// A check-in of the caller's tenant with what it references.
    pub(crate) async fn check_in_view(&self, who: &Principal, id: Uuid) -> AppResult<CheckInView> {
        let tenant = who.tenant()?;
        let row = st::check_in_by_id(self.inner.store.db(), tenant, id).await?.ok_or(AppError::NotFound("check-in"))?;
        self.check_in_views(tenant, vec![row]).await?.pop().ok_or(AppError::NotFound("check-in"))
    }
}
