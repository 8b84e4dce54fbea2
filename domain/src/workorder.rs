//! The work-order lifecycle: who may move an order, from where, to where, with what input.
//!
//! ```text
//! pending ──accept / take──▶ accepted ──start──▶ in_progress ──submit──▶ submitted ──approve──▶ approved
//!    └──────────start (assignee)──────────────────▲     ▲                    │
//!                                                       └──────reject────────┘
//! ```
//!
//! - A `pending` order either has an assignee (who accepts it) or is open for any
//!   electrician in scope to **take** (taking assigns it to the taker and accepts it; the
//!   store makes the first taker win).
//! - **Reject** sends a submitted order back to `in_progress` (API-CONTRACT: "back to
//!   IN_PROGRESS"); the history records the action as `REJECT`, so `REJECTED` is how the
//!   rejection appears in the history, never a status an order rests in.
//! - **Submit** needs a report; an order with linked hazards also needs at least one photo
//!   (the hazards become rectified with it).
//! - Field actions (take, accept, start, submit) belong to electricians (`fieldwork`);
//!   accept, start and submit only to the order's assignee. Approve and reject belong to
//!   whoever verifies hazards (`hazard.manage`).
//!
//! [`transition`] is the rule book the server applies and the mobile app shows
//! ([`allowed_actions`]), so the two cannot drift.

use serde::{Deserialize, Serialize};

use crate::access::Permission;
use crate::validate::{Needs, ValidationError, optional_text, required_text};

/// Longest title, characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, report or note, characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Most photos one report may carry.
pub const MAX_PHOTOS: usize = 20;
/// Most hazards one work order may hold.
pub const MAX_HAZARDS: usize = 100;

/// Where a work order is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkOrderStatus {
    /// Created; waiting for its assignee to accept it, or for any electrician to take it.
    Pending,
    /// The assignee has accepted it.
    Accepted,
    /// Work has started (or restarted after a rejection).
    InProgress,
    /// The completion report is in; waiting for verification.
    Submitted,
    /// Verified: the work is done (terminal).
    Approved,
    /// Appears in the history only: a submission that failed verification (the order goes
    /// back to `InProgress`).
    Rejected,
}

impl WorkOrderStatus {
    /// Every status.
    pub const ALL: [WorkOrderStatus; 6] = [
        WorkOrderStatus::Pending,
        WorkOrderStatus::Accepted,
        WorkOrderStatus::InProgress,
        WorkOrderStatus::Submitted,
        WorkOrderStatus::Approved,
        WorkOrderStatus::Rejected,
    ];

    /// Stable code (`IN_PROGRESS`).
    pub const fn code(self) -> &'static str {
        match self {
            WorkOrderStatus::Pending => "PENDING",
            WorkOrderStatus::Accepted => "ACCEPTED",
            WorkOrderStatus::InProgress => "IN_PROGRESS",
            WorkOrderStatus::Submitted => "SUBMITTED",
            WorkOrderStatus::Approved => "APPROVED",
            WorkOrderStatus::Rejected => "REJECTED",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether the order is finished.
    pub const fn is_terminal(self) -> bool {
        matches!(self, WorkOrderStatus::Approved)
    }

    /// Whether the order still waits on the electrician (the deadline applies).
    pub const fn is_open_for_field(self) -> bool {
        matches!(self, WorkOrderStatus::Pending | WorkOrderStatus::Accepted | WorkOrderStatus::InProgress)
    }

    /// Whether the deadline has passed without the work being handed in.
    pub fn is_overdue(self, due_at: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.is_open_for_field() && due_at.is_some_and(|d| d <= now)
    }

    const fn label(self) -> &'static str {
        match self {
            WorkOrderStatus::Pending => "pending",
            WorkOrderStatus::Accepted => "accepted",
            WorkOrderStatus::InProgress => "in progress",
            WorkOrderStatus::Submitted => "submitted",
            WorkOrderStatus::Approved => "approved",
            WorkOrderStatus::Rejected => "rejected",
        }
    }
}

/// What someone does to a work order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkOrderAction {
    /// Take an unassigned pending order (becomes its assignee; accepted).
    Take,
    /// The assignee accepts a pending order.
    Accept,
    /// The assignee starts work (from pending or accepted).
    Start,
    /// The assignee hands in the completion report.
    Submit,
    /// A manager approves the submitted work (hazards closed).
    Approve,
    /// A manager rejects the submitted work (back to in progress, hazards dispatched again).
    Reject,
}

impl WorkOrderAction {
    /// Every action.
    pub const ALL: [WorkOrderAction; 6] = [
        WorkOrderAction::Take,
        WorkOrderAction::Accept,
        WorkOrderAction::Start,
        WorkOrderAction::Submit,
        WorkOrderAction::Approve,
        WorkOrderAction::Reject,
    ];

    /// Stable code for the history and the operation log.
    pub const fn code(self) -> &'static str {
        match self {
            WorkOrderAction::Take => "TAKE",
            WorkOrderAction::Accept => "ACCEPT",
            WorkOrderAction::Start => "START",
            WorkOrderAction::Submit => "SUBMIT",
            WorkOrderAction::Approve => "APPROVE",
            WorkOrderAction::Reject => "REJECT",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.code() == code)
    }

    /// The statuses this action may start from.
    pub const fn allowed_from(self) -> &'static [WorkOrderStatus] {
        match self {
            WorkOrderAction::Take | WorkOrderAction::Accept => &[WorkOrderStatus::Pending],
            WorkOrderAction::Start => &[WorkOrderStatus::Pending, WorkOrderStatus::Accepted],
            WorkOrderAction::Submit => &[WorkOrderStatus::InProgress],
            WorkOrderAction::Approve | WorkOrderAction::Reject => &[WorkOrderStatus::Submitted],
        }
    }

    /// Where the action leads.
    pub const fn target(self) -> WorkOrderStatus {
        match self {
            WorkOrderAction::Take | WorkOrderAction::Accept => WorkOrderStatus::Accepted,
            WorkOrderAction::Start | WorkOrderAction::Reject => WorkOrderStatus::InProgress,
            WorkOrderAction::Submit => WorkOrderStatus::Submitted,
            WorkOrderAction::Approve => WorkOrderStatus::Approved,
        }
    }

    /// The permission the action takes (the server's guard and the app's buttons):
    /// `hazard.manage` to verify, `fieldwork` for everything else.
    pub const fn permissions(self) -> &'static [Permission] {
        if self.is_verification() { &[Permission::HazardManage] } else { &[Permission::FieldWork] }
    }

    /// Whether managers (verifiers) do this, rather than the electrician.
    pub const fn is_verification(self) -> bool {
        matches!(self, WorkOrderAction::Approve | WorkOrderAction::Reject)
    }

    const fn done(self) -> &'static str {
        match self {
            WorkOrderAction::Take => "taken",
            WorkOrderAction::Accept => "accepted",
            WorkOrderAction::Start => "started",
            WorkOrderAction::Submit => "submitted",
            WorkOrderAction::Approve => "approved",
            WorkOrderAction::Reject => "rejected",
        }
    }
}

/// Who is acting, as far as work-order rules are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// Holds `fieldwork` (electricians).
    pub field_worker: bool,
    /// Holds `hazard.manage` (managers, tenant admins).
    pub verifier: bool,
    /// Is the order's assignee.
    pub is_assignee: bool,
}

impl Actor {
    /// The actor a caller is: `can` answers whether it holds a permission.
    pub fn of(can: impl Fn(Permission) -> bool, is_assignee: bool) -> Actor {
        Actor { field_worker: can(Permission::FieldWork), verifier: can(Permission::HazardManage), is_assignee }
    }
}

/// The order as far as rules are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderState {
    /// Current status.
    pub status: WorkOrderStatus,
    /// Whether someone is assigned.
    pub assigned: bool,
    /// Whether hazards are linked (a submission then needs a photo).
    pub has_hazards: bool,
}

/// Why an action is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkOrderError {
    /// The caller may not do this to this order.
    #[error("{0}")]
    Forbidden(String),
    /// The order is not in a status the action applies to (someone else moved it).
    #[error("{0}")]
    Conflict(String),
    /// The input is not acceptable.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// What an action carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionInput {
    /// Completion report (submit) or note (approve, reject).
    pub text: Option<String>,
    /// Number of photos attached (submit).
    pub photos: usize,
}

/// What `action` takes on an order in `state`: the report (submit, with at least one photo
/// when hazards are linked), the note on what is still wrong (reject), or an optional note.
pub const fn needs(action: WorkOrderAction, state: &OrderState) -> Needs {
    match action {
        WorkOrderAction::Submit => Needs {
            text_field: Some("report"),
            text_required: true,
            when_blank: "a completion report is required",
            max_text_chars: MAX_TEXT_CHARS,
            photos_field: Some("attachmentIds"),
            min_photos: if state.has_hazards { 1 } else { 0 },
            when_no_photos: "at least one photo of the fix is required for an order with hazards",
            max_photos: MAX_PHOTOS,
        },
        WorkOrderAction::Reject => Needs {
            text_required: true,
            when_blank: "a note on what is still wrong is required",
            ..Needs::optional_note(MAX_TEXT_CHARS)
        },
        _ => Needs::optional_note(MAX_TEXT_CHARS),
    }
}

/// Checks the input an action needs ([`needs`]), whatever the order's status.
pub fn check_input(action: WorkOrderAction, state: &OrderState, input: &ActionInput) -> Result<(), ValidationError> {
    needs(action, state).check(input.text.as_deref(), input.photos).map(|_| ())
}

/// Whether `actor` may do `action` to an order in `state`, and where it leads.
///
/// Order of checks: who (forbidden), then the status (conflict), then the input
/// (validation) — so an electrician is told it may not approve whatever the status, and a
/// submission racing an approval is told about the status before its photos.
pub fn transition(
    state: &OrderState,
    actor: &Actor,
    action: WorkOrderAction,
    input: &ActionInput,
) -> Result<WorkOrderStatus, WorkOrderError> {
    if action.is_verification() {
        if !actor.verifier {
            return Err(WorkOrderError::Forbidden("only managers approve or reject work orders".into()));
        }
    } else {
        if !actor.field_worker {
            return Err(WorkOrderError::Forbidden(format!(
                "only electricians can work on orders; this one cannot be {} by you",
                action.done()
            )));
        }
        match action {
            WorkOrderAction::Take if state.assigned && actor.is_assignee => {
                return Err(WorkOrderError::Conflict("this work order is already assigned to you; accept it".into()));
            }
            WorkOrderAction::Take if state.assigned => {
                return Err(WorkOrderError::Conflict("this work order has already been taken by someone else".into()));
            }
            WorkOrderAction::Take => {}
            _ if !actor.is_assignee => {
                return Err(WorkOrderError::Forbidden(format!(
                    "only the assignee can have this work order {}",
                    action.done()
                )));
            }
            _ => {}
        }
    }
    if !action.allowed_from().contains(&state.status) {
        let words: Vec<&str> = action.allowed_from().iter().map(|s| s.label()).collect();
        return Err(WorkOrderError::Conflict(format!(
            "a {} work order cannot be {}; only {} ones can",
            state.status.label(),
            action.done(),
            words.join(" or ")
        )));
    }
    check_input(action, state, input)?;
    Ok(action.target())
}

/// The actions `actor` may take on an order in `state` (inputs aside): what the app offers.
pub fn allowed_actions(state: &OrderState, actor: &Actor) -> Vec<WorkOrderAction> {
    let full = ActionInput { text: Some("x".into()), photos: 1 };
    WorkOrderAction::ALL.into_iter().filter(|a| transition(state, actor, *a, &full).is_ok()).collect()
}

/// Checks a new order's title and description.
pub fn check_new(title: &str, description: Option<&str>) -> Result<(String, Option<String>), ValidationError> {
    if title.trim().is_empty() {
        return Err(ValidationError::new("title", "a title is required"));
    }
    let title = required_text("title", title, MAX_TITLE_CHARS)?;
    let description = optional_text("description", description, MAX_TEXT_CHARS)?;
    Ok((title, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ELECTRICIAN: Actor = Actor { field_worker: true, verifier: false, is_assignee: true };
    const OTHER_ELECTRICIAN: Actor = Actor { field_worker: true, verifier: false, is_assignee: false };
    const MANAGER: Actor = Actor { field_worker: false, verifier: true, is_assignee: false };

    fn state(status: WorkOrderStatus, assigned: bool, has_hazards: bool) -> OrderState {
        OrderState { status, assigned, has_hazards }
    }

    fn input(text: &str, photos: usize) -> ActionInput {
        ActionInput { text: Some(text.into()), photos }
    }

    #[test]
    fn lifecycle_table() {
        use WorkOrderAction::*;
        use WorkOrderStatus::*;
        let ok = input("done", 1);
        type Case = (WorkOrderStatus, bool, Actor, WorkOrderAction, Result<WorkOrderStatus, &'static str>);
        let cases: &[Case] = &[
            (Pending, false, OTHER_ELECTRICIAN, Take, Ok(Accepted)),
            (Pending, true, OTHER_ELECTRICIAN, Take, Err("conflict")),
            (Accepted, true, OTHER_ELECTRICIAN, Take, Err("conflict")),
            (Pending, true, ELECTRICIAN, Accept, Ok(Accepted)),
            (Pending, true, OTHER_ELECTRICIAN, Accept, Err("forbidden")),
            (Pending, true, ELECTRICIAN, Start, Ok(InProgress)),
            (Accepted, true, ELECTRICIAN, Start, Ok(InProgress)),
            (InProgress, true, ELECTRICIAN, Start, Err("conflict")),
            (InProgress, true, ELECTRICIAN, Submit, Ok(Submitted)),
            (Accepted, true, ELECTRICIAN, Submit, Err("conflict")),
            (Submitted, true, MANAGER, Approve, Ok(Approved)),
            (Submitted, true, MANAGER, Reject, Ok(InProgress)),
            (Submitted, true, ELECTRICIAN, Approve, Err("forbidden")),
            (InProgress, true, MANAGER, Approve, Err("conflict")),
            (Approved, true, MANAGER, Reject, Err("conflict")),
            (Pending, false, MANAGER, Take, Err("forbidden")),
        ];
        for (status, assigned, actor, action, expected) in cases {
            let got = transition(&state(*status, *assigned, true), actor, *action, &ok);
            match (expected, got) {
                (Ok(to), Ok(got)) => assert_eq!(*to, got, "{status:?} {action:?}"),
                (Err("conflict"), Err(WorkOrderError::Conflict(_))) => {}
                (Err("forbidden"), Err(WorkOrderError::Forbidden(_))) => {}
                (e, g) => panic!("{status:?} {action:?} by {actor:?}: expected {e:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn submission_needs_a_report_and_with_hazards_a_photo() {
        let s = state(WorkOrderStatus::InProgress, true, true);
        let e = transition(&s, &ELECTRICIAN, WorkOrderAction::Submit, &input(" ", 1));
        assert!(matches!(e, Err(WorkOrderError::Invalid(ref v)) if v.field == "report"), "{e:?}");
        let e = transition(&s, &ELECTRICIAN, WorkOrderAction::Submit, &input("fixed", 0));
        assert!(matches!(e, Err(WorkOrderError::Invalid(ref v)) if v.field == "attachmentIds"), "{e:?}");
        let no_hazards = state(WorkOrderStatus::InProgress, true, false);
        assert_eq!(
            transition(&no_hazards, &ELECTRICIAN, WorkOrderAction::Submit, &input("fixed", 0)),
            Ok(WorkOrderStatus::Submitted)
        );
        let e = transition(
            &state(WorkOrderStatus::Submitted, true, true),
            &MANAGER,
            WorkOrderAction::Reject,
            &input("", 0),
        );
        assert!(matches!(e, Err(WorkOrderError::Invalid(ref v)) if v.field == "note"), "{e:?}");
    }

    #[test]
    fn allowed_actions_per_role() {
        let pending_open = state(WorkOrderStatus::Pending, false, false);
        assert_eq!(allowed_actions(&pending_open, &OTHER_ELECTRICIAN), vec![WorkOrderAction::Take]);
        let submitted = state(WorkOrderStatus::Submitted, true, true);
        assert_eq!(allowed_actions(&submitted, &MANAGER), vec![WorkOrderAction::Approve, WorkOrderAction::Reject]);
        assert!(allowed_actions(&submitted, &ELECTRICIAN).is_empty());
        let mine = state(WorkOrderStatus::Pending, true, false);
        assert_eq!(allowed_actions(&mine, &ELECTRICIAN), vec![WorkOrderAction::Accept, WorkOrderAction::Start]);
    }

    #[test]
    fn overdue_only_while_waiting_on_the_field() {
        let now: chrono::DateTime<chrono::Utc> = "2026-12-06T10:00:00Z".parse().unwrap_or_default();
        let past = Some(now - chrono::Duration::minutes(1));
        assert!(WorkOrderStatus::InProgress.is_overdue(past, now));
        assert!(!WorkOrderStatus::Submitted.is_overdue(past, now));
        assert!(!WorkOrderStatus::Pending.is_overdue(None, now));
        assert!(!WorkOrderStatus::Pending.is_overdue(Some(now + chrono::Duration::minutes(1)), now));
    }

    #[test]
    fn codes_round_trip() {
        for s in WorkOrderStatus::ALL {
            assert_eq!(WorkOrderStatus::from_code(s.code()), Some(s));
        }
        for a in WorkOrderAction::ALL {
            assert_eq!(WorkOrderAction::from_code(a.code()), Some(a));
        }
    }
}
