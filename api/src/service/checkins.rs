//! Patrol check-ins: an assignee scans a checkpoint's code during a task and answers its
//! checklist, with a note, photos and the hazards found there.
//!
//! A check-in is an offline operation: it carries a client id (required) and the device
//! time of the scan. Repeating it returns the check-in as stored; a second check-in of the
//! same checkpoint in the same task (another client id) is a `CONFLICT`. Check-ins of one
//! task are serialised by a row lock on the task, so whatever order they arrive in, the last
//! one sees the others and the task ends `DONE` once every checkpoint is checked — also
//! when it was marked `MISSED` meanwhile, if the scans were made before the due time.

use chrono::{DateTime, Duration, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::field::FieldOperationKind;
use sparkwatch_domain::patrol::{self as rules, Answer, MAX_ITEM_CHARS};
use sparkwatch_domain::validate::optional_text;
use uuid::Uuid;

use super::field::{Claim, ClientOp};
use super::patrol::CheckInView;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::new_id;
use crate::store::oplog::Entry;
use crate::store::patrol::{self as st, CheckIn};

/// How far ahead of the server's clock a device's time may be.
const MAX_CLOCK_AHEAD: Duration = Duration::minutes(5);

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
}

impl Services {
    /// Checks in at a checkpoint (see the module docs). Returns the check-in as stored, also
    /// when it is a repeat of an earlier one (same client id).
    pub(crate) async fn check_in(&self, who: &Principal, input: CheckInDraft) -> AppResult<CheckInView> {
        let tenant = who.tenant()?;
        let me = who.user_id().ok_or_else(|| AppError::Forbidden("only people check in".into()))?;
        let checkpoint_id = self.verify_qr(tenant, &input.qr_payload)?;
        let now = self.now();
        if input.at > now + MAX_CLOCK_AHEAD {
            return Err(AppError::invalid("at", "lies in the future; check the phone's clock"));
        }
        let note = optional_text("note", input.note.as_deref(), MAX_ITEM_CHARS)?;
        let id = new_id();
        let tx = self.begin().await?;
        let op = ClientOp { client_id: input.client_id, kind: FieldOperationKind::CheckIn, device_at: Some(input.at) };
        if let Claim::Replay(earlier) = self.claim(&tx, who, Some(&op), id).await? {
            drop(tx);
            return self.check_in_view(who, earlier).await;
        }
        let task = st::lock_task(&tx, tenant, &who.access.scope, input.task, now)
            .await?
            .ok_or(AppError::NotFound("patrol task"))?;
        let plans = st::plans_by_ids(&tx, tenant, &[task.plan_id]).await?;
        let plan = plans.into_iter().next().ok_or(AppError::NotFound("patrol task"))?;
        if !plan.assignees.contains(&me) {
            return Err(if who.access.can(Permission::PatrolManage) {
                AppError::Forbidden("only the plan's assignees check in on its tasks".into())
            } else {
                AppError::NotFound("patrol task")
            });
        }
        if !plan.checkpoints.contains(&checkpoint_id) {
            return Err(AppError::invalid("qrPayload", "this code belongs to a checkpoint that is not on this patrol"));
        }
        let found = st::checkpoints_by_ids(&tx, tenant, &who.access.scope, &[checkpoint_id]).await?;
        let checkpoint = found.into_iter().next().ok_or_else(|| {
            AppError::invalid("qrPayload", "this code belongs to a checkpoint that is not on this patrol")
        })?;
        rules::check_answers(&checkpoint.checklist, &input.answers)?;
        let existing = st::check_ins_of_tasks(&tx, tenant, &[task.id]).await?;
        if existing.iter().any(|c| c.checkpoint_id == checkpoint_id) {
            return Err(AppError::Conflict(format!(
                "checkpoint \"{}\" is already checked in this task",
                checkpoint.name
            )));
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
        if !st::insert_check_in(&tx, &row).await? {
            return Err(AppError::Conflict(format!(
                "checkpoint \"{}\" is already checked in this task",
                checkpoint.name
            )));
        }
        if status != task.status && !st::set_task_status(&tx, task.id, task.status, status, now).await? {
            return Err(AppError::Conflict("the task changed meanwhile; sync again".into()));
        }
        self.link_attachments(&tx, who, &input.attachment_ids, task.project_id, "check_in", id).await?;
        let entry = Entry::new(Some(tenant), "patrol.check_in", "check_in", Some(id.to_string()));
        let after =
            serde_json::json!({"checkIn": row, "taskStatus": status.code(), "attachments": input.attachment_ids});
        self.log(&tx, who, entry.before(snapshot(&task)).after(Some(after))).await?;
        tx.commit().await?;
        self.check_in_view(who, id).await
    }

    /// A check-in of the caller's tenant with what it references.
    pub(crate) async fn check_in_view(&self, who: &Principal, id: Uuid) -> AppResult<CheckInView> {
        let tenant = who.tenant()?;
        let row = st::check_in_by_id(self.inner.store.db(), tenant, id).await?.ok_or(AppError::NotFound("check-in"))?;
        self.check_in_views(tenant, vec![row]).await?.pop().ok_or(AppError::NotFound("check-in"))
    }
}
