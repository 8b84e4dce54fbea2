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
