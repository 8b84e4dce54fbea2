//! Offline field operations: what a phone queues while it has no signal, and what the
//! server answers for each when it syncs.
//!
//! Every operation carries a client-generated id (a UUID) and the device time it was made.
//! The server keeps the answer it gave the first time under (user, client id), so repeating
//! an operation — twice, out of order, after a partial sync — gives the result of doing it
//! once ([`FieldOutcome::Duplicate`] with the first answer's entity).

use serde::{Deserialize, Serialize};

/// Most operations one sync may carry.
pub const MAX_SYNC_OPERATIONS: usize = 1000;

/// The kinds of operation a phone may queue offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldOperationKind {
    /// A patrol check-in.
    CheckIn,
    /// A hazard found by a person.
    ReportHazard,
    /// A hazard acknowledged.
    AcknowledgeHazard,
    /// Work started on an order.
    StartWorkOrder,
    /// An order's completion report.
    SubmitWorkOrder,
    /// Any other mutation that takes a client id (dispatch, create, take, …).
    Other,
}

impl FieldOperationKind {
    /// Every kind.
    pub const ALL: [FieldOperationKind; 6] = [
        FieldOperationKind::CheckIn,
        FieldOperationKind::ReportHazard,
        FieldOperationKind::AcknowledgeHazard,
        FieldOperationKind::StartWorkOrder,
        FieldOperationKind::SubmitWorkOrder,
        FieldOperationKind::Other,
    ];

    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            FieldOperationKind::CheckIn => "CHECK_IN",
            FieldOperationKind::ReportHazard => "REPORT_HAZARD",
            FieldOperationKind::AcknowledgeHazard => "ACKNOWLEDGE_HAZARD",
            FieldOperationKind::StartWorkOrder => "START_WORK_ORDER",
            FieldOperationKind::SubmitWorkOrder => "SUBMIT_WORK_ORDER",
            FieldOperationKind::Other => "OTHER",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// What happened to one synced operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldOutcome {
    /// Done now.
    Applied,
    /// Done before (same client id): nothing changed, the first answer's entity is returned.
    Duplicate,
    /// The object moved on meanwhile (someone else took the order, the hazard was closed):
    /// the app shows the current state and drops the operation.
    Conflict,
    /// The operation itself is wrong (validation, permission, not found): the app shows the
    /// reason and drops it; retrying cannot help.
    Rejected,
}

impl FieldOutcome {
    /// Every outcome.
    pub const ALL: [FieldOutcome; 4] =
        [FieldOutcome::Applied, FieldOutcome::Duplicate, FieldOutcome::Conflict, FieldOutcome::Rejected];

    /// Parses a code (`APPLIED`).
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    /// The outcome of an operation refused with the API error `code`: the object moving on
    /// (`CONFLICT`) is a conflict, everything else a rejection.
    pub fn of_refusal(code: &str) -> FieldOutcome {
        if code == "CONFLICT" { FieldOutcome::Conflict } else { FieldOutcome::Rejected }
    }

    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            FieldOutcome::Applied => "APPLIED",
            FieldOutcome::Duplicate => "DUPLICATE",
            FieldOutcome::Conflict => "CONFLICT",
            FieldOutcome::Rejected => "REJECTED",
        }
    }
}

/// Error codes of a refusal that may go away by themselves: the one answer worth sending
/// the same operation again for.
pub const RETRY_CODES: [&str; 2] = ["UNAVAILABLE", "INTERNAL"];

/// What the app does with a queued operation once the server has answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Disposition {
    /// Done (applied now or before): drop it.
    Drop,
    /// The object moved on: drop it and show the object as it is now.
    ShowCurrent,
    /// Refused for good: drop it and show why (code, field, message).
    ShowError,
    /// Not done for a reason that may pass: keep it and send it again later.
    Retry,
}

impl Disposition {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            Disposition::Drop => "DROP",
            Disposition::ShowCurrent => "SHOW_CURRENT",
            Disposition::ShowError => "SHOW_ERROR",
            Disposition::Retry => "RETRY",
        }
    }

    /// What to do after `outcome` with error `code` (see `docs/FIELD.md`, "Offline first").
    pub fn of(outcome: FieldOutcome, code: Option<&str>) -> Disposition {
        match outcome {
            FieldOutcome::Applied | FieldOutcome::Duplicate => Disposition::Drop,
            FieldOutcome::Conflict => Disposition::ShowCurrent,
            FieldOutcome::Rejected if code.is_some_and(|c| RETRY_CODES.contains(&c)) => Disposition::Retry,
            FieldOutcome::Rejected => Disposition::ShowError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_follow_the_outcome_and_code() {
        let cases = [
            (FieldOutcome::Applied, None, Disposition::Drop),
            (FieldOutcome::Duplicate, None, Disposition::Drop),
            (FieldOutcome::Conflict, Some("CONFLICT"), Disposition::ShowCurrent),
            (FieldOutcome::Rejected, Some("VALIDATION"), Disposition::ShowError),
            (FieldOutcome::Rejected, Some("FORBIDDEN"), Disposition::ShowError),
            (FieldOutcome::Rejected, Some("UNAVAILABLE"), Disposition::Retry),
            (FieldOutcome::Rejected, Some("INTERNAL"), Disposition::Retry),
        ];
        for (outcome, code, expected) in cases {
            assert_eq!(Disposition::of(outcome, code), expected, "{outcome:?} {code:?}");
        }
        for o in FieldOutcome::ALL {
            assert_eq!(FieldOutcome::from_code(o.code()), Some(o));
        }
        assert_eq!(FieldOutcome::of_refusal("CONFLICT"), FieldOutcome::Conflict);
        assert_eq!(FieldOutcome::of_refusal("NOT_FOUND"), FieldOutcome::Rejected);
    }
}
