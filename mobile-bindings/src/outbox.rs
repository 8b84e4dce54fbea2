//! The offline outbox as an object the app holds (`domain::outbox`): queue operations
//! while offline, store [`Outbox::to_bytes`], send [`Outbox::next_batch`] as the
//! `syncFieldOperations` request, and hand the response to [`Outbox::settle`].

use std::sync::{Arc, Mutex, MutexGuard};

use sparkwatch_domain::field::{Disposition, MAX_SYNC_OPERATIONS};
use sparkwatch_domain::outbox::{self as ob, FieldOp, ReportDraft, SyncError};
use sparkwatch_domain::patrol::Answer;

use crate::{MobileError, time, uuid, uuids};

/// A hazard found on site (`ReportHazardInput`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HazardReport {
    /// The project.
    pub project_id: String,
    /// The detector it concerns.
    pub detector_id: Option<String>,
    /// The checkpoint it was found at.
    pub checkpoint_id: Option<String>,
    /// What was found.
    pub description: String,
    /// Uploaded photos.
    pub attachment_ids: Vec<String>,
    /// When it was seen (RFC 3339); the operation's time when absent.
    pub at: Option<String>,
}

/// One answer to a checklist item (`ChecklistAnswerInput`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChecklistAnswer {
    /// The item, as written in the checklist.
    pub item: String,
    /// Whether it is in order.
    pub ok: bool,
    /// What is wrong.
    pub note: Option<String>,
}

impl From<ChecklistAnswer> for Answer {
    fn from(a: ChecklistAnswer) -> Self {
        Answer { item: a.item, ok: a.ok, note: a.note }
    }
}

/// A queued operation, for the app's list of what waits for signal.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PendingOperation {
    /// Its client id.
    pub client_id: String,
    /// `reportHazard`, `acknowledgeHazard`, `startWorkOrder`, `submitWorkOrder`, `checkIn`.
    pub operation: String,
    /// When it was done (RFC 3339).
    pub at: String,
    /// Times sent without a final answer.
    pub attempts: u32,
    /// The object it is about (hazard, work order, patrol task), if it exists yet.
    pub subject_id: Option<String>,
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncBatch {
    /// The operations' client ids, in order: pass them to [`Outbox::settle`].
    pub client_ids: Vec<String>,
    /// The GraphQL document.
    pub query: String,
    /// The variables, JSON (`{"operations": [...]}`).
    pub variables_json: String,
}

/// What to do with one sent operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncDisposition {
    /// Done: it left the outbox.
    Drop,
    /// The object moved on: it left the outbox; show the object as it is now.
    ShowCurrent,
    /// Refused for good: it left the outbox; show why.
    ShowError,
    /// Kept: send it again later.
    Retry,
}

/// The server's answer to one operation and what the outbox did with it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SettledOperation {
    /// The operation's client id.
    pub client_id: String,
    /// What to do.
    pub disposition: SyncDisposition,
    /// `APPLIED`, `DUPLICATE`, `CONFLICT`, `REJECTED`; none when the server did not answer it.
    pub status: Option<String>,
    /// The error code.
    pub code: Option<String>,
    /// The input field at fault.
    pub field: Option<String>,
    /// The server's message.
    pub message: Option<String>,
    /// The object created or changed (on conflict: the one that moved on).
    pub entity_id: Option<String>,
    /// Kept only because an earlier operation on the same object is kept.
    pub held_back: bool,
}

fn report(r: HazardReport) -> Result<ReportDraft, MobileError> {
    Ok(ReportDraft {
        project_id: uuid("projectId", &r.project_id)?,
        detector_id: r.detector_id.as_deref().map(|d| uuid("detectorId", d)).transpose()?,
        checkpoint_id: r.checkpoint_id.as_deref().map(|c| uuid("checkpointId", c)).transpose()?,
        description: r.description,
        attachment_ids: uuids("attachmentIds", &r.attachment_ids)?,
        at: r.at.as_deref().map(|t| time("at", t)).transpose()?,
    })
}

fn operation_name(op: &FieldOp) -> &'static str {
    match op {
        FieldOp::ReportHazard(_) => "reportHazard",
        FieldOp::AcknowledgeHazard { .. } => "acknowledgeHazard",
        FieldOp::StartWorkOrder { .. } => "startWorkOrder",
        FieldOp::SubmitWorkOrder { .. } => "submitWorkOrder",
        FieldOp::CheckIn { .. } => "checkIn",
    }
}

/// The queue of field operations made offline (see the module docs). Thread-safe.
#[derive(Debug, uniffi::Object)]
pub struct Outbox {
    inner: Mutex<ob::Outbox>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, ob::Outbox> {
        // A panic cannot happen while the lock is held (nothing in there panics); if one did,
        // the queue it left is still the best there is.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, client_id: &str, at: &str, op: FieldOp) -> Result<(), MobileError> {
        let client_id = uuid("clientId", client_id)?;
        let at = time("at", at)?;
        Ok(self.lock().push(client_id, at, op)?)
    }
}

#[uniffi::export]
impl Outbox {
    /// An empty outbox.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Outbox { inner: Mutex::new(ob::Outbox::new()) })
    }

    /// The outbox stored with [`Outbox::to_bytes`].
    #[uniffi::constructor]
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Arc<Self>, MobileError> {
        Ok(Arc::new(Outbox { inner: Mutex::new(ob::Outbox::from_bytes(&bytes)?) }))
    }

    /// The bytes to store (store them after every change).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lock().to_bytes()
    }

    /// Queues `reportHazard`.
    pub fn report_hazard(&self, client_id: String, at: String, report: HazardReport) -> Result<(), MobileError> {
        let op = FieldOp::ReportHazard(self::report(report)?);
        self.push(&client_id, &at, op)
    }

    /// Queues `acknowledgeHazard`.
    pub fn acknowledge_hazard(
        &self,
        client_id: String,
        at: String,
        hazard_id: String,
        note: Option<String>,
    ) -> Result<(), MobileError> {
        let op = FieldOp::AcknowledgeHazard { hazard_id: uuid("hazardId", &hazard_id)?, note };
        self.push(&client_id, &at, op)
    }

    /// Queues `startWorkOrder`.
    pub fn start_work_order(&self, client_id: String, at: String, order_id: String) -> Result<(), MobileError> {
        let op = FieldOp::StartWorkOrder { id: uuid("id", &order_id)? };
        self.push(&client_id, &at, op)
    }

    /// Queues `submitWorkOrder`.
    pub fn submit_work_order(
        &self,
        client_id: String,
        at: String,
        order_id: String,
        report: String,
        attachment_ids: Vec<String>,
    ) -> Result<(), MobileError> {
        let op = FieldOp::SubmitWorkOrder {
            id: uuid("id", &order_id)?,
            report,
            attachment_ids: uuids("attachmentIds", &attachment_ids)?,
        };
        self.push(&client_id, &at, op)
    }

    /// Queues `checkIn` (the scan time is the operation's `at`).
    #[allow(clippy::too_many_arguments)]
    pub fn check_in(
        &self,
        client_id: String,
        at: String,
        task_id: String,
        qr_payload: String,
        answers: Vec<ChecklistAnswer>,
        note: Option<String>,
        attachment_ids: Vec<String>,
        hazards: Vec<HazardReport>,
    ) -> Result<(), MobileError> {
        let op = FieldOp::CheckIn {
            task_id: uuid("taskId", &task_id)?,
            qr_payload,
            answers: answers.into_iter().map(Into::into).collect(),
            note,
            attachment_ids: uuids("attachmentIds", &attachment_ids)?,
            hazards: hazards.into_iter().map(report).collect::<Result<_, _>>()?,
        };
        self.push(&client_id, &at, op)
    }

    /// How many operations wait.
    pub fn len(&self) -> u32 {
        u32::try_from(self.lock().pending().len()).unwrap_or(u32::MAX)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().pending().is_empty()
    }

    /// The waiting operations, oldest first.
    pub fn pending(&self) -> Vec<PendingOperation> {
        self.lock()
            .pending()
            .iter()
            .map(|q| PendingOperation {
                client_id: q.client_id.to_string(),
                operation: operation_name(&q.op).to_owned(),
                at: q.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                attempts: q.attempts,
                subject_id: q.op.subject().map(|s| match s {
                    ob::Subject::Hazard(id) | ob::Subject::WorkOrder(id) | ob::Subject::PatrolTask(id) => {
                        id.to_string()
                    }
                }),
            })
            .collect()
    }

    /// Removes an operation the person gave up on; whether it was there.
    pub fn remove(&self, client_id: String) -> Result<bool, MobileError> {
        Ok(self.lock().remove(uuid("clientId", &client_id)?))
    }

    /// The next request: the oldest operations, at most `max` (and 1,000), in order.
    pub fn next_batch(&self, max: u32) -> SyncBatch {
        let batch = self.lock().next_batch((max as usize).min(MAX_SYNC_OPERATIONS));
        SyncBatch {
            client_ids: batch.client_ids.iter().map(ToString::to_string).collect(),
            query: ob::SYNC_MUTATION.to_owned(),
            variables_json: batch.variables.to_string(),
        }
    }

    /// Settles the operations of a batch (`client_ids`) with the server's response (the
    /// whole GraphQL response body): drops what is done, keeps what to retry. A failed
    /// request (`Sync` error) keeps everything.
    pub fn settle(&self, client_ids: Vec<String>, response_json: String) -> Result<Vec<SettledOperation>, MobileError> {
        let sent = uuids("clientIds", &client_ids)?;
        let answer: serde_json::Value = serde_json::from_str(&response_json)
            .map_err(|e| MobileError::Sync { code: "MALFORMED".into(), reason: e.to_string() })?;
        let settled = self.lock().settle(&sent, &answer).map_err(|e| match e {
            SyncError::Server { code, message } => MobileError::Sync { code, reason: message },
            SyncError::Malformed(message) => MobileError::Sync { code: "MALFORMED".into(), reason: message },
        })?;
        Ok(settled
            .into_iter()
            .map(|s| SettledOperation {
                client_id: s.client_id.to_string(),
                disposition: match s.disposition {
                    Disposition::Drop => SyncDisposition::Drop,
                    Disposition::ShowCurrent => SyncDisposition::ShowCurrent,
                    Disposition::ShowError => SyncDisposition::ShowError,
                    Disposition::Retry => SyncDisposition::Retry,
                },
                status: s.outcome.map(|o| o.code().to_owned()),
                code: s.code,
                field: s.field,
                message: s.message,
                entity_id: s.entity_id,
                held_back: s.held_back,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "2026-12-06T08:30:00Z";

    #[test]
    fn queue_store_send_settle() {
        let outbox = Outbox::new();
        let order = crate::new_client_id();
        let start = crate::new_client_id();
        assert!(outbox.start_work_order(start.clone(), AT.into(), order.clone()).is_ok());
        let bad = outbox.submit_work_order(crate::new_client_id(), AT.into(), order.clone(), "".into(), vec![]);
        assert!(matches!(bad, Err(MobileError::Invalid { ref field, .. }) if field == "report"));
        let stored = Outbox::from_bytes(outbox.to_bytes());
        let stored = match stored {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(stored.pending(), outbox.pending());
        let batch = stored.next_batch(50);
        assert!(batch.variables_json.contains("\"startWorkOrder\""), "{}", batch.variables_json);
        let reply = format!(
            r#"{{"data":{{"syncFieldOperations":[{{"clientId":"{start}","status":"APPLIED","entityId":"{order}"}}]}}}}"#
        );
        let settled = stored.settle(batch.client_ids, reply);
        assert_eq!(settled.map(|s| s[0].disposition), Ok(SyncDisposition::Drop));
        assert!(stored.is_empty());
        assert!(matches!(Outbox::from_bytes(b"{".to_vec()), Err(MobileError::Invalid { .. })));
    }
}
