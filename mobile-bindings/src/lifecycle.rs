//! Hazard, work-order and patrol-task state machines: for a state and a role, which actions
//! are allowed and what each needs, and the transition itself — the server's own functions
//! (`domain::hazard`, `domain::workorder`, `domain::patrol`), whose refusals map to the
//! codes the server answers with (`FORBIDDEN`, `CONFLICT`, `VALIDATION` + field).

use sparkwatch_domain::access::Permission;
use sparkwatch_domain::hazard::{self as hz, Refusal, TransitionError};
use sparkwatch_domain::patrol as pt;
use sparkwatch_domain::validate::Needs;
use sparkwatch_domain::workorder::{self as wo, WorkOrderError};

use crate::{MobileError, time};

/// Where a hazard is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HazardStatus {
    /// Raised, not yet looked at.
    Open,
    /// Seen by someone responsible.
    Acknowledged,
    /// Sent to an electrician through a work order.
    Dispatched,
    /// Reported fixed; waiting for verification.
    Rectified,
    /// Verified fixed (terminal).
    Closed,
    /// Not a real problem (terminal).
    FalseAlarm,
    /// Deliberately not acted on (terminal).
    Ignored,
}

/// What is done to a hazard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HazardAction {
    /// `acknowledgeHazards`.
    Acknowledge,
    /// `dispatchHazards`.
    Dispatch,
    /// Submitting its work order.
    Rectify,
    /// Approving (passed) or rejecting its work order.
    Verify,
    /// `markHazardsFalseAlarm`.
    MarkFalseAlarm,
    /// `ignoreHazards`.
    Ignore,
    /// The system closing a fixed hazard whose channel stayed normal.
    AutoClose,
}

/// What an action takes: the text input and photos, with the API's field names.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ActionNeeds {
    /// The text input (`note`, `report`, `reason`, `description`), if any.
    pub text_field: Option<String>,
    /// Whether the text is required.
    pub text_required: bool,
    /// Longest text, characters.
    pub max_text_chars: u32,
    /// The photos input (`attachmentIds`, `photos`), if any.
    pub photos_field: Option<String>,
    /// Fewest photos.
    pub min_photos: u32,
    /// Most photos.
    pub max_photos: u32,
}

impl From<Needs> for ActionNeeds {
    fn from(n: Needs) -> Self {
        let count = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        ActionNeeds {
            text_field: n.text_field.map(str::to_owned),
            text_required: n.text_required,
            max_text_chars: count(n.max_text_chars),
            photos_field: n.photos_field.map(str::to_owned),
            min_photos: count(n.min_photos),
            max_photos: count(n.max_photos),
        }
    }
}

/// An action a person may take now, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HazardActionOption {
    /// The action.
    pub action: HazardAction,
    /// Its API code (`MARK_FALSE_ALARM`).
    pub code: String,
    /// What it takes.
    pub needs: ActionNeeds,
    /// Done through the hazard's work order (submit, approve, reject), not on the hazard.
    pub through_work_order: bool,
}

/// What an action carries (unused parts are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct ActionInput {
    /// The note, report or reason.
    pub text: Option<String>,
    /// Photo references (attachment ids).
    pub photos: Vec<String>,
    /// For verification: whether the fix holds.
    pub passed: bool,
}

/// The result of a hazard action.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HazardStep {
    /// The status after the action.
    pub status: HazardStatus,
    /// False when the hazard already was where the action leads (the server returns it
    /// unchanged, as a retried request).
    pub changed: bool,
}

fn to_hazard_status(s: HazardStatus) -> hz::HazardStatus {
    match s {
        HazardStatus::Open => hz::HazardStatus::Open,
        HazardStatus::Acknowledged => hz::HazardStatus::Acknowledged,
        HazardStatus::Dispatched => hz::HazardStatus::Dispatched,
        HazardStatus::Rectified => hz::HazardStatus::Rectified,
        HazardStatus::Closed => hz::HazardStatus::Closed,
        HazardStatus::FalseAlarm => hz::HazardStatus::FalseAlarm,
        HazardStatus::Ignored => hz::HazardStatus::Ignored,
    }
}

fn from_hazard_status(s: hz::HazardStatus) -> HazardStatus {
    match s {
        hz::HazardStatus::Open => HazardStatus::Open,
        hz::HazardStatus::Acknowledged => HazardStatus::Acknowledged,
        hz::HazardStatus::Dispatched => HazardStatus::Dispatched,
        hz::HazardStatus::Rectified => HazardStatus::Rectified,
        hz::HazardStatus::Closed => HazardStatus::Closed,
        hz::HazardStatus::FalseAlarm => HazardStatus::FalseAlarm,
        hz::HazardStatus::Ignored => HazardStatus::Ignored,
    }
}

fn kind_of(a: HazardAction) -> hz::HazardActionKind {
    match a {
        HazardAction::Acknowledge => hz::HazardActionKind::Acknowledge,
        HazardAction::Dispatch => hz::HazardActionKind::Dispatch,
        HazardAction::Rectify => hz::HazardActionKind::Rectify,
        HazardAction::Verify => hz::HazardActionKind::Verify,
        HazardAction::MarkFalseAlarm => hz::HazardActionKind::MarkFalseAlarm,
        HazardAction::Ignore => hz::HazardActionKind::Ignore,
        HazardAction::AutoClose => hz::HazardActionKind::AutoClose,
    }
}

fn from_kind(k: hz::HazardActionKind) -> HazardAction {
    match k {
        hz::HazardActionKind::Acknowledge => HazardAction::Acknowledge,
        hz::HazardActionKind::Dispatch => HazardAction::Dispatch,
        hz::HazardActionKind::Rectify => HazardAction::Rectify,
        hz::HazardActionKind::Verify => HazardAction::Verify,
        hz::HazardActionKind::MarkFalseAlarm => HazardAction::MarkFalseAlarm,
        hz::HazardActionKind::Ignore => HazardAction::Ignore,
        hz::HazardActionKind::AutoClose => HazardAction::AutoClose,
    }
}

fn hazard_action(a: HazardAction, input: &ActionInput) -> hz::HazardAction {
    let text = input.text.clone().unwrap_or_default();
    match a {
        HazardAction::Acknowledge => hz::HazardAction::Acknowledge,
        HazardAction::Dispatch => hz::HazardAction::Dispatch,
        HazardAction::Rectify => hz::HazardAction::Rectify { note: text, photos: input.photos.clone() },
        HazardAction::Verify => hz::HazardAction::Verify { passed: input.passed, note: input.text.clone() },
        HazardAction::MarkFalseAlarm => hz::HazardAction::MarkFalseAlarm { reason: text },
        HazardAction::Ignore => hz::HazardAction::Ignore { reason: text },
        HazardAction::AutoClose => hz::HazardAction::AutoClose,
    }
}

fn can(held: &[Permission]) -> impl Fn(Permission) -> bool + '_ {
    move |p| held.contains(&p)
}

/// The API code of a hazard status (`FALSE_ALARM`).
#[uniffi::export]
pub fn hazard_status_code(status: HazardStatus) -> String {
    to_hazard_status(status).code().to_owned()
}

/// The API code of a hazard action (`MARK_FALSE_ALARM`).
#[uniffi::export]
pub fn hazard_action_code(action: HazardAction) -> String {
    kind_of(action).code().to_owned()
}

/// Reads a hazard status code from the API.
#[uniffi::export]
pub fn hazard_status_from_code(code: String) -> Result<HazardStatus, MobileError> {
    hz::HazardStatus::from_code(code.trim())
        .map(from_hazard_status)
        .ok_or_else(|| MobileError::invalid("status", "not a hazard status"))
}

/// The actions a person holding `permissions` may take on a hazard in `status` (inputs
/// aside), with what each needs.
#[uniffi::export]
pub fn hazard_allowed_actions(
    status: HazardStatus,
    permissions: Vec<String>,
) -> Result<Vec<HazardActionOption>, MobileError> {
    let held = crate::permissions(&permissions)?;
    Ok(hz::allowed_actions(to_hazard_status(status), can(&held))
        .into_iter()
        .map(|k| HazardActionOption {
            action: from_kind(k),
            code: k.code().to_owned(),
            needs: k.needs().into(),
            through_work_order: k.through_work_order(),
        })
        .collect())
}

/// What a hazard action takes (a failed verification also needs its note).
#[uniffi::export]
pub fn hazard_action_needs(action: HazardAction, passed: bool) -> ActionNeeds {
    let input = ActionInput { passed, ..ActionInput::default() };
    hazard_action(action, &input).needs().into()
}

/// Moves a hazard in `status` by `action` as a person holding `permissions`: the role,
/// then the status (`Conflict`), then the input (`Invalid` with the field).
#[uniffi::export]
pub fn hazard_transition(
    status: HazardStatus,
    action: HazardAction,
    permissions: Vec<String>,
    input: ActionInput,
) -> Result<HazardStep, MobileError> {
    let held = crate::permissions(&permissions)?;
    let from = to_hazard_status(status);
    match hz::transition_as(from, &hazard_action(action, &input), can(&held)) {
        Ok(to) => Ok(HazardStep { status: from_hazard_status(to), changed: true }),
        Err(Refusal::Transition(TransitionError::Already { .. })) => Ok(HazardStep { status, changed: false }),
        Err(Refusal::Transition(TransitionError::Invalid(v))) => Err(v.into()),
        Err(e @ Refusal::Transition(TransitionError::NotAllowed { .. })) => {
            Err(MobileError::Conflict { reason: e.to_string() })
        }
        Err(e @ Refusal::Forbidden(_)) => Err(MobileError::Forbidden { reason: e.to_string() }),
    }
}

/// Where a work order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum WorkOrderStatus {
    /// Waiting for its assignee to accept it, or for anyone to take it.
    Pending,
    /// Accepted.
    Accepted,
    /// Work under way.
    InProgress,
    /// Handed in; waiting for verification.
    Submitted,
    /// Verified (terminal).
    Approved,
    /// Only in the history: a rejected submission.
    Rejected,
}

/// What is done to a work order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum WorkOrderAction {
    /// Take an unassigned order.
    Take,
    /// Accept an order assigned to you.
    Accept,
    /// Start work.
    Start,
    /// Hand in the report.
    Submit,
    /// Approve the work (managers).
    Approve,
    /// Reject the work (managers).
    Reject,
}

/// A work order as far as the rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct OrderState {
    /// Its status.
    pub status: WorkOrderStatus,
    /// Whether someone is assigned.
    pub assigned: bool,
    /// Whether hazards are linked (a submission then needs a photo).
    pub has_hazards: bool,
}

/// An action a person may take now on an order, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct WorkOrderActionOption {
    /// The action.
    pub action: WorkOrderAction,
    /// Its API code (`SUBMIT`).
    pub code: String,
    /// What it takes.
    pub needs: ActionNeeds,
}

const ORDER_STATUSES: [(WorkOrderStatus, wo::WorkOrderStatus); 6] = [
    (WorkOrderStatus::Pending, wo::WorkOrderStatus::Pending),
    (WorkOrderStatus::Accepted, wo::WorkOrderStatus::Accepted),
    (WorkOrderStatus::InProgress, wo::WorkOrderStatus::InProgress),
    (WorkOrderStatus::Submitted, wo::WorkOrderStatus::Submitted),
    (WorkOrderStatus::Approved, wo::WorkOrderStatus::Approved),
    (WorkOrderStatus::Rejected, wo::WorkOrderStatus::Rejected),
];

const ORDER_ACTIONS: [(WorkOrderAction, wo::WorkOrderAction); 6] = [
    (WorkOrderAction::Take, wo::WorkOrderAction::Take),
    (WorkOrderAction::Accept, wo::WorkOrderAction::Accept),
    (WorkOrderAction::Start, wo::WorkOrderAction::Start),
    (WorkOrderAction::Submit, wo::WorkOrderAction::Submit),
    (WorkOrderAction::Approve, wo::WorkOrderAction::Approve),
    (WorkOrderAction::Reject, wo::WorkOrderAction::Reject),
];

fn to_order_status(s: WorkOrderStatus) -> wo::WorkOrderStatus {
    ORDER_STATUSES.iter().find(|(m, _)| *m == s).map_or(wo::WorkOrderStatus::Pending, |(_, d)| *d)
}

fn from_order_status(s: wo::WorkOrderStatus) -> WorkOrderStatus {
    ORDER_STATUSES.iter().find(|(_, d)| *d == s).map_or(WorkOrderStatus::Pending, |(m, _)| *m)
}

fn to_order_action(a: WorkOrderAction) -> wo::WorkOrderAction {
    ORDER_ACTIONS.iter().find(|(m, _)| *m == a).map_or(wo::WorkOrderAction::Take, |(_, d)| *d)
}

fn from_order_action(a: wo::WorkOrderAction) -> WorkOrderAction {
    ORDER_ACTIONS.iter().find(|(_, d)| *d == a).map_or(WorkOrderAction::Take, |(m, _)| *m)
}

fn order_state(s: &OrderState) -> wo::OrderState {
    wo::OrderState { status: to_order_status(s.status), assigned: s.assigned, has_hazards: s.has_hazards }
}

/// The API code of a work-order status (`IN_PROGRESS`).
#[uniffi::export]
pub fn work_order_status_code(status: WorkOrderStatus) -> String {
    to_order_status(status).code().to_owned()
}

/// Reads a work-order status code from the API.
#[uniffi::export]
pub fn work_order_status_from_code(code: String) -> Result<WorkOrderStatus, MobileError> {
    wo::WorkOrderStatus::from_code(code.trim())
        .map(from_order_status)
        .ok_or_else(|| MobileError::invalid("status", "not a work-order status"))
}

/// The actions a person holding `permissions` (`is_assignee`: the order is theirs) may take
/// on an order in `state`, with what each needs — the buttons that will work.
#[uniffi::export]
pub fn work_order_allowed_actions(
    state: OrderState,
    permissions: Vec<String>,
    is_assignee: bool,
) -> Result<Vec<WorkOrderActionOption>, MobileError> {
    let held = crate::permissions(&permissions)?;
    let actor = wo::Actor::of(can(&held), is_assignee);
    let state = order_state(&state);
    Ok(wo::allowed_actions(&state, &actor)
        .into_iter()
        .map(|a| WorkOrderActionOption {
            action: from_order_action(a),
            code: a.code().to_owned(),
            needs: wo::needs(a, &state).into(),
        })
        .collect())
}

/// What a work-order action takes on an order in `state`.
#[uniffi::export]
pub fn work_order_action_needs(action: WorkOrderAction, state: OrderState) -> ActionNeeds {
    wo::needs(to_order_action(action), &order_state(&state)).into()
}

/// Moves an order in `state` by `action`: who (`Forbidden`), then the status (`Conflict`),
/// then the input (`Invalid`: `report`, `attachmentIds`, `note`). Returns the new status.
#[uniffi::export]
pub fn work_order_transition(
    state: OrderState,
    action: WorkOrderAction,
    permissions: Vec<String>,
    is_assignee: bool,
    input: ActionInput,
) -> Result<WorkOrderStatus, MobileError> {
    let held = crate::permissions(&permissions)?;
    let actor = wo::Actor::of(can(&held), is_assignee);
    let text = input.text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let carried = wo::ActionInput { text, photos: input.photos.len() };
    match wo::transition(&order_state(&state), &actor, to_order_action(action), &carried) {
        Ok(to) => Ok(from_order_status(to)),
        Err(WorkOrderError::Forbidden(message)) => Err(MobileError::Forbidden { reason: message }),
        Err(WorkOrderError::Conflict(message)) => Err(MobileError::Conflict { reason: message }),
        Err(WorkOrderError::Invalid(v)) => Err(v.into()),
    }
}

/// Where a patrol task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PatrolTaskStatus {
    /// Not started.
    Due,
    /// Some checkpoints checked.
    InProgress,
    /// Every checkpoint checked.
    Done,
    /// Its due time passed first.
    Missed,
}

const TASK_STATUSES: [(PatrolTaskStatus, pt::PatrolTaskStatus); 4] = [
    (PatrolTaskStatus::Due, pt::PatrolTaskStatus::Due),
    (PatrolTaskStatus::InProgress, pt::PatrolTaskStatus::InProgress),
    (PatrolTaskStatus::Done, pt::PatrolTaskStatus::Done),
    (PatrolTaskStatus::Missed, pt::PatrolTaskStatus::Missed),
];

fn to_task_status(s: PatrolTaskStatus) -> pt::PatrolTaskStatus {
    TASK_STATUSES.iter().find(|(m, _)| *m == s).map_or(pt::PatrolTaskStatus::Due, |(_, d)| *d)
}

fn from_task_status(s: pt::PatrolTaskStatus) -> PatrolTaskStatus {
    TASK_STATUSES.iter().find(|(_, d)| *d == s).map_or(PatrolTaskStatus::Due, |(m, _)| *m)
}

/// Reads a patrol-task status code from the API.
#[uniffi::export]
pub fn patrol_task_status_from_code(code: String) -> Result<PatrolTaskStatus, MobileError> {
    pt::PatrolTaskStatus::from_code(code.trim())
        .map(from_task_status)
        .ok_or_else(|| MobileError::invalid("status", "not a patrol task status"))
}

/// The actions (`CHECK_IN`) a person may take on a task in `status`, due at `due_at`, at
/// device time `at`: electricians on the plan, while the task is open (a missed task still
/// takes check-ins made before its due time).
#[uniffi::export]
pub fn patrol_task_actions(
    status: PatrolTaskStatus,
    due_at: String,
    at: String,
    permissions: Vec<String>,
    on_plan: bool,
) -> Result<Vec<String>, MobileError> {
    let held = crate::permissions(&permissions)?;
    let field_worker = pt::TaskAction::CheckIn.permissions().iter().any(|p| held.contains(p));
    let actions =
        pt::task_actions(to_task_status(status), time("dueAt", &due_at)?, time("at", &at)?, field_worker, on_plan);
    Ok(actions.into_iter().map(|a| a.code().to_owned()).collect())
}

/// The task's status after a check-in made at `at` when `checked` of its `total`
/// checkpoints are checked (this one included), or why the check-in is refused.
#[uniffi::export]
pub fn patrol_task_after_check_in(
    status: PatrolTaskStatus,
    due_at: String,
    at: String,
    checked: u32,
    total: u32,
) -> Result<PatrolTaskStatus, MobileError> {
    let to = pt::after_check_in(
        to_task_status(status),
        time("dueAt", &due_at)?,
        time("at", &at)?,
        checked as usize,
        total as usize,
    )?;
    Ok(from_task_status(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn conversions_cover_every_variant() {
        for s in hz::HazardStatus::ALL {
            assert_eq!(to_hazard_status(from_hazard_status(s)), s);
        }
        for k in hz::HazardActionKind::ALL {
            assert_eq!(kind_of(from_kind(k)), k);
        }
        for s in wo::WorkOrderStatus::ALL {
            assert_eq!(to_order_status(from_order_status(s)), s);
        }
        for a in wo::WorkOrderAction::ALL {
            assert_eq!(to_order_action(from_order_action(a)), a);
        }
        for s in pt::PatrolTaskStatus::ALL {
            assert_eq!(to_task_status(from_task_status(s)), s);
        }
    }

    #[test]
    fn refusals_carry_the_servers_codes() {
        let electrician = perms(&["site.read", "hazard.read", "fieldwork"]);
        let e =
            hazard_transition(HazardStatus::Open, HazardAction::Ignore, electrician.clone(), ActionInput::default());
        assert!(matches!(e, Err(MobileError::Forbidden { .. })), "{e:?}");
        let ack = hazard_transition(
            HazardStatus::Acknowledged,
            HazardAction::Acknowledge,
            electrician.clone(),
            ActionInput::default(),
        );
        assert_eq!(ack, Ok(HazardStep { status: HazardStatus::Acknowledged, changed: false }));
        let state = OrderState { status: WorkOrderStatus::InProgress, assigned: true, has_hazards: true };
        let input = ActionInput { text: Some("fixed".into()), ..ActionInput::default() };
        let e = work_order_transition(state, WorkOrderAction::Submit, electrician, true, input);
        assert!(matches!(e, Err(MobileError::Invalid { ref field, .. }) if field == "attachmentIds"), "{e:?}");
    }
}
