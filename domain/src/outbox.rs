//! The phone's offline outbox: field operations queued with a client id (a UUID) and the
//! device time, kept as bytes the app stores, sent as exactly the variables of
//! `syncFieldOperations`, and settled by the server's answers.
//!
//! - **Queueing** checks each operation's form as the server would (the same functions,
//!   the same field names), so a mistake shows next to its input at once rather than as a
//!   `REJECTED` answer hours later. A client id can be queued once.
//! - **Sending**: [`Outbox::next_batch`] takes the oldest operations (at most
//!   [`MAX_SYNC_OPERATIONS`]) in queue order; the server applies them in that order, so
//!   operations on one object keep their order.
//! - **Settling**: [`Outbox::settle`] reads the answers and says for each operation what to
//!   do ([`Disposition`]): drop it, show the object as it is now, show why it was refused,
//!   or keep it to send again. An operation kept for retry holds back the later
//!   operations on the same object that were not applied (their answer may only be the
//!   consequence of the first one failing), so the object's operations are sent again in
//!   their order. An operation the answers do not mention is kept.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::field::{Disposition, FieldOutcome, MAX_SYNC_OPERATIONS};
use crate::hazard::{self, MAX_NOTE_CHARS};
use crate::patrol::{Answer, MAX_ITEM_CHARS, QrPayload};
use crate::validate::{ValidationError, optional_text};
use crate::workorder::{self, OrderState, WorkOrderAction, WorkOrderStatus};

/// The format version of [`Outbox::to_bytes`].
pub const FORMAT_VERSION: u32 = 1;

/// The mutation the variables of [`Outbox::next_batch`] are for.
pub const SYNC_MUTATION: &str = "mutation Sync($operations: [FieldOperationInput!]!) { \
syncFieldOperations(operations: $operations) { clientId status code field message entityId } }";

/// A hazard found by a person (`ReportHazardInput`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportDraft {
    /// The project it is in.
    pub project_id: Uuid,
    /// The detector it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector_id: Option<Uuid>,
    /// The checkpoint it was found at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<Uuid>,
    /// What was found.
    pub description: String,
    /// Uploaded photos.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_ids: Vec<Uuid>,
    /// When it was seen (device time); the operation's time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// One operation, shaped as the `FieldOperationInput` member it becomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum FieldOp {
    /// `reportHazard`.
    ReportHazard(ReportDraft),
    /// `acknowledgeHazard`.
    AcknowledgeHazard {
        /// The hazard.
        hazard_id: Uuid,
        /// A note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// `startWorkOrder`.
    StartWorkOrder {
        /// The order.
        id: Uuid,
    },
    /// `submitWorkOrder`.
    SubmitWorkOrder {
        /// The order.
        id: Uuid,
        /// What was done.
        report: String,
        /// Photos of the fix.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachment_ids: Vec<Uuid>,
    },
    /// `checkIn` (its `clientId` and `at` are the operation's).
    CheckIn {
        /// The task.
        task_id: Uuid,
        /// The scanned code.
        qr_payload: String,
        /// An answer to every checklist item.
        answers: Vec<Answer>,
        /// A note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Uploaded photos.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachment_ids: Vec<Uuid>,
        /// Hazards found there.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hazards: Vec<ReportDraft>,
    },
}

/// The object an operation is about, for keeping one object's operations in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A hazard.
    Hazard(Uuid),
    /// A work order.
    WorkOrder(Uuid),
    /// A patrol task.
    PatrolTask(Uuid),
}

impl FieldOp {
    /// The object it changes; `None` for a new hazard (nothing queued can refer to it).
    pub fn subject(&self) -> Option<Subject> {
        match self {
            FieldOp::ReportHazard(_) => None,
            FieldOp::AcknowledgeHazard { hazard_id, .. } => Some(Subject::Hazard(*hazard_id)),
            FieldOp::StartWorkOrder { id } | FieldOp::SubmitWorkOrder { id, .. } => Some(Subject::WorkOrder(*id)),
            FieldOp::CheckIn { task_id, .. } => Some(Subject::PatrolTask(*task_id)),
        }
    }

    /// Checks the operation's form as the server does, with the API's field names. What
    /// depends on the object's state (a submission's photos for an order with hazards, a
    /// checklist's items) is checked with the state machines before queueing.
    pub fn check(&self) -> Result<(), ValidationError> {
        match self {
            FieldOp::ReportHazard(r) => hazard::check_report(&r.description).map(|_| ()),
            FieldOp::AcknowledgeHazard { note, .. } => {
                optional_text("note", note.as_deref(), MAX_NOTE_CHARS).map(|_| ())
            }
            FieldOp::StartWorkOrder { .. } => Ok(()),
            FieldOp::SubmitWorkOrder { report, attachment_ids, .. } => {
                let state = OrderState { status: WorkOrderStatus::InProgress, assigned: true, has_hazards: false };
                workorder::needs(WorkOrderAction::Submit, &state).check(Some(report), attachment_ids.len()).map(|_| ())
            }
            FieldOp::CheckIn { qr_payload, answers, note, hazards, .. } => {
                QrPayload::parse(qr_payload)?;
                for (i, a) in answers.iter().enumerate() {
                    if answers[..i].iter().any(|b| b.item == a.item) {
                        return Err(ValidationError::new("answers", format!("\"{}\" is answered twice", a.item)));
                    }
                    optional_text("answers", a.note.as_deref(), MAX_ITEM_CHARS)?;
                }
                optional_text("note", note.as_deref(), MAX_ITEM_CHARS)?;
                for h in hazards {
                    hazard::check_report(&h.description).map_err(|e| ValidationError::new("hazards", e.reason))?;
                }
                Ok(())
            }
        }
    }
}

/// A queued operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    /// The client id (idempotency key).
    pub client_id: Uuid,
    /// When it was done on the device.
    pub at: DateTime<Utc>,
    /// How many times it was sent without a final answer.
    pub attempts: u32,
    /// The operation.
    pub op: FieldOp,
}

impl Queued {
    /// The operation as one `FieldOperationInput`.
    pub fn variables(&self) -> Value {
        let mut op = serde_json::to_value(&self.op).unwrap_or(Value::Null);
        if let Some(Value::Object(check_in)) = op.get_mut("checkIn") {
            check_in.insert("clientId".into(), json!(self.client_id));
            check_in.insert("at".into(), json!(self.at));
        }
        let mut input = json!({ "clientId": self.client_id, "at": self.at });
        if let (Value::Object(input), Value::Object(op)) = (&mut input, op) {
            input.extend(op);
        }
        input
    }
}

/// What the app does with one sent operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The operation's client id.
    pub client_id: Uuid,
    /// What to do.
    pub disposition: Disposition,
    /// The server's outcome, when it answered.
    pub outcome: Option<FieldOutcome>,
    /// The error code (`CONFLICT`, `VALIDATION`, …).
    pub code: Option<String>,
    /// The input field at fault.
    pub field: Option<String>,
    /// The server's message.
    pub message: Option<String>,
    /// The object created or changed (or the one that moved on).
    pub entity_id: Option<String>,
    /// Kept only because an earlier operation on the same object is kept.
    pub held_back: bool,
}

/// Why an answer could not be used: the whole request failed (keep everything).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The server refused the whole request (`UNAUTHENTICATED`, …).
    #[error("{code}: {message}")]
    Server {
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The answer is not a `syncFieldOperations` result.
    #[error("the answer is not a syncFieldOperations result: {0}")]
    Malformed(String),
}

/// A batch to send: its client ids and the variables of [`SYNC_MUTATION`].
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The operations' client ids, in order.
    pub client_ids: Vec<Uuid>,
    /// `{"operations": [...]}`.
    pub variables: Value,
}

/// The queue (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    version: u32,
    ops: Vec<Queued>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox { version: FORMAT_VERSION, ops: Vec::new() }
    }

    /// Reads what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Outbox, ValidationError> {
        let outbox: Outbox = serde_json::from_slice(bytes)
            .map_err(|e| ValidationError::new("outbox", format!("not a stored outbox: {e}")))?;
        if outbox.version != FORMAT_VERSION {
            return Err(ValidationError::new("outbox", format!("format version {} is not known", outbox.version)));
        }
        Ok(outbox)
    }

    /// The bytes to store (JSON, format [`FORMAT_VERSION`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Queues an operation after checking its form ([`FieldOp::check`]).
    pub fn push(&mut self, client_id: Uuid, at: DateTime<Utc>, op: FieldOp) -> Result<(), ValidationError> {
        if self.ops.iter().any(|q| q.client_id == client_id) {
            return Err(ValidationError::new("clientId", "this client id is already queued"));
        }
        op.check()?;
        self.ops.push(Queued { client_id, at, attempts: 0, op });
        Ok(())
    }

    /// The queued operations, oldest first.
    pub fn pending(&self) -> &[Queued] {
        &self.ops
    }

    /// Removes an operation the person gave up on; whether it was queued.
    pub fn remove(&mut self, client_id: Uuid) -> bool {
        let before = self.ops.len();
        self.ops.retain(|q| q.client_id != client_id);
        before != self.ops.len()
    }

    /// The oldest operations, at most `max` (and [`MAX_SYNC_OPERATIONS`]), as variables.
    pub fn next_batch(&self, max: usize) -> Batch {
        let ops = &self.ops[..self.ops.len().min(max.clamp(1, MAX_SYNC_OPERATIONS))];
        Batch {
            client_ids: ops.iter().map(|q| q.client_id).collect(),
            variables: json!({ "operations": ops.iter().map(Queued::variables).collect::<Vec<_>>() }),
        }
    }

    /// Settles the operations `sent` with the server's `answer` (the whole GraphQL response,
    /// or its `syncFieldOperations` list): drops what is done, keeps what is to be retried,
    /// and says what to do with each. A failed request keeps everything and says why.
    pub fn settle(&mut self, sent: &[Uuid], answer: &Value) -> Result<Vec<Settled>, SyncError> {
        let results = results_of(answer)?;
        let mut held: Vec<Subject> = Vec::new();
        let mut out = Vec::with_capacity(sent.len());
        for client_id in sent {
            let Some(queued) = self.ops.iter_mut().find(|q| q.client_id == *client_id) else { continue };
            let found =
                results.iter().find(|r| r.get("clientId").and_then(Value::as_str) == Some(&client_id.to_string()));
            let text = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
            let mut settled = Settled {
                client_id: *client_id,
                disposition: Disposition::Retry,
                outcome: None,
                code: None,
                field: None,
                message: None,
                entity_id: None,
                held_back: false,
            };
            if let Some(r) = found {
                settled.outcome = text(r, "status").as_deref().and_then(FieldOutcome::from_code);
                settled.code = text(r, "code");
                settled.field = text(r, "field");
                settled.message = text(r, "message");
                settled.entity_id = text(r, "entityId");
                if let Some(outcome) = settled.outcome {
                    settled.disposition = Disposition::of(outcome, settled.code.as_deref());
                }
            }
            let subject = queued.op.subject();
            let applied = matches!(settled.outcome, Some(FieldOutcome::Applied | FieldOutcome::Duplicate));
            if !applied && settled.disposition != Disposition::Retry && subject.is_some_and(|s| held.contains(&s)) {
                settled.disposition = Disposition::Retry;
                settled.held_back = true;
            }
            if settled.disposition == Disposition::Retry {
                queued.attempts = queued.attempts.saturating_add(1);
                held.extend(subject);
            }
            out.push(settled);
        }
        let done: Vec<Uuid> = out.iter().filter(|s| s.disposition != Disposition::Retry).map(|s| s.client_id).collect();
        self.ops.retain(|q| !done.contains(&q.client_id));
        Ok(out)
    }
}

/// The list of answers in a GraphQL response (or the list itself).
fn results_of(answer: &Value) -> Result<&Vec<Value>, SyncError> {
    if let Some(list) = answer.as_array() {
        return Ok(list);
    }
    if let Some(list) = answer.pointer("/data/syncFieldOperations").and_then(Value::as_array) {
        return Ok(list);
    }
    if let Some(first) = answer.get("errors").and_then(Value::as_array).and_then(|e| e.first()) {
        let code = first.pointer("/extensions/code").and_then(Value::as_str).unwrap_or("INTERNAL");
        let message = first.get("message").and_then(Value::as_str).unwrap_or_default();
        return Err(SyncError::Server { code: code.to_owned(), message: message.to_owned() });
    }
    Err(SyncError::Malformed("no data.syncFieldOperations list".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-06T08:30:00Z".parse().unwrap_or_default()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn answer(client: u128, status: &str, code: Option<&str>) -> Value {
        json!({"clientId": id(client).to_string(), "status": status, "code": code, "field": null,
               "message": code.map(|_| "why"), "entityId": null})
    }

    #[test]
    fn variables_are_field_operation_inputs() {
        let mut o = Outbox::new();
        let order = id(9);
        let qr = QrPayload { checkpoint: id(7), tag: [1; 12] }.encode();
        o.push(id(1), at(), FieldOp::StartWorkOrder { id: order }).unwrap_or_default();
        let answers = vec![Answer { item: "Cabinet closed".into(), ok: true, note: None }];
        let check_in = FieldOp::CheckIn {
            task_id: id(5),
            qr_payload: qr.clone(),
            answers,
            note: None,
            attachment_ids: vec![],
            hazards: vec![],
        };
        o.push(id(2), at(), check_in).unwrap_or_default();
        let batch = o.next_batch(100);
        assert_eq!(batch.client_ids, vec![id(1), id(2)]);
        assert_eq!(
            batch.variables,
            json!({"operations": [
                {"clientId": id(1), "at": "2026-12-06T08:30:00Z", "startWorkOrder": {"id": order}},
                {"clientId": id(2), "at": "2026-12-06T08:30:00Z", "checkIn": {"clientId": id(2),
                 "at": "2026-12-06T08:30:00Z", "taskId": id(5), "qrPayload": qr,
                 "answers": [{"item": "Cabinet closed", "ok": true, "note": null}]}},
            ]})
        );
    }

    #[test]
    fn forms_are_checked_when_queued() {
        let mut o = Outbox::new();
        let blank = FieldOp::SubmitWorkOrder { id: id(1), report: " ".into(), attachment_ids: vec![] };
        assert_eq!(o.push(id(1), at(), blank).map_err(|e| e.field), Err("report".to_owned()));
        let bad_qr = FieldOp::CheckIn {
            task_id: id(5),
            qr_payload: "hello".into(),
            answers: vec![],
            note: None,
            attachment_ids: vec![],
            hazards: vec![],
        };
        assert_eq!(o.push(id(2), at(), bad_qr).map_err(|e| e.field), Err("qrPayload".to_owned()));
        assert!(o.push(id(3), at(), FieldOp::StartWorkOrder { id: id(1) }).is_ok());
        let again = o.push(id(3), at(), FieldOp::StartWorkOrder { id: id(1) });
        assert_eq!(again.map_err(|e| e.field), Err("clientId".to_owned()));
        assert_eq!(o.pending().len(), 1);
    }

    #[test]
    fn settling_drops_keeps_and_holds_back_in_order() {
        let mut o = Outbox::new();
        let (order, other) = (id(100), id(200));
        o.push(id(1), at(), FieldOp::StartWorkOrder { id: order }).unwrap_or_default();
        let submit = FieldOp::SubmitWorkOrder { id: order, report: "done".into(), attachment_ids: vec![] };
        o.push(id(2), at(), submit).unwrap_or_default();
        o.push(id(3), at(), FieldOp::StartWorkOrder { id: other }).unwrap_or_default();
        o.push(id(4), at(), FieldOp::AcknowledgeHazard { hazard_id: id(300), note: None }).unwrap_or_default();
        let batch = o.next_batch(10);
        let stored = Outbox::from_bytes(&o.to_bytes());
        assert_eq!(stored.as_ref(), Ok(&o));
        let reply = json!({"data": {"syncFieldOperations": [
            answer(1, "REJECTED", Some("UNAVAILABLE")),
            answer(2, "CONFLICT", Some("CONFLICT")),
            answer(3, "APPLIED", None),
        ]}});
        let settled = o.settle(&batch.client_ids, &reply).unwrap_or_default();
        let got: Vec<(Disposition, bool)> = settled.iter().map(|s| (s.disposition, s.held_back)).collect();
        assert_eq!(
            got,
            vec![
                (Disposition::Retry, false),
                (Disposition::Retry, true),
                (Disposition::Drop, false),
                (Disposition::Retry, false), // not answered
            ]
        );
        let left: Vec<(Uuid, u32)> = o.pending().iter().map(|q| (q.client_id, q.attempts)).collect();
        assert_eq!(left, vec![(id(1), 1), (id(2), 1), (id(4), 1)]);
    }

    #[test]
    fn a_failed_request_keeps_everything() {
        let mut o = Outbox::new();
        o.push(id(1), at(), FieldOp::StartWorkOrder { id: id(9) }).unwrap_or_default();
        let batch = o.next_batch(10);
        let reply =
            json!({"data": null, "errors": [{"message": "sign in", "extensions": {"code": "UNAUTHENTICATED"}}]});
        let e = o.settle(&batch.client_ids, &reply);
        assert_eq!(e, Err(SyncError::Server { code: "UNAUTHENTICATED".into(), message: "sign in".into() }));
        assert!(matches!(o.settle(&batch.client_ids, &json!({"x": 1})), Err(SyncError::Malformed(_))));
        assert_eq!(o.pending().len(), 1);
        assert!(Outbox::from_bytes(b"junk").is_err());
        assert!(Outbox::from_bytes(br#"{"version": 9, "ops": []}"#).is_err());
    }
}
