//! Hazards found by people: `reportHazard`, and the same report inside a patrol check-in.
//!
//! A report names its project and, optionally, the detector or the patrol checkpoint it
//! concerns (both must belong to that project), a description, photos and the time it was
//! seen on the device. It becomes an `OPEN` hazard of kind `FIELD_REPORT` that then follows
//! the same lifecycle as a detector's (acknowledge, dispatch, rectify, verify).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::field::FieldOperationKind;
use sparkwatch_domain::hazard;
use sparkwatch_domain::ids::{DetectorId, ProjectId, UserId};
use sparkwatch_domain::notify::{WorkNotice, render_work};
use sparkwatch_domain::reading::EventKind;
use uuid::Uuid;

use super::field::{Claim, ClientOp};
use super::notify::PeopleNotice;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::bus::{BusMessage, Envelope, Feed};
use crate::error::{AppError, AppResult};
use crate::store::hazards::Hazard;
use crate::store::oplog::Entry;
use crate::store::{new_id, reports, sites};

/// A hazard someone found, as the app sends it.
#[derive(Clone, Debug, Default)]
pub struct ReportDraft {
    /// The project it is in.
    pub project: Option<ProjectId>,
    /// The detector it concerns.
    pub detector: Option<DetectorId>,
    /// The patrol checkpoint it was found at.
    pub checkpoint: Option<Uuid>,
    /// What was seen.
    pub description: String,
    /// Uploaded photos.
    pub attachment_ids: Vec<Uuid>,
    /// When it was seen (device time); now when absent.
    pub at: Option<DateTime<Utc>>,
}

impl Services {
    /// Reports a hazard found by a person (see the module docs). With a client id, repeating
    /// the report returns the hazard of the first time.
    pub async fn report_hazard(
        &self,
        who: &Principal,
        draft: &ReportDraft,
        client: Option<ClientOp>,
    ) -> AppResult<Hazard> {
        let id = new_id();
        let tx = self.begin().await?;
        let client = client.map(|c| ClientOp { kind: FieldOperationKind::ReportHazard, ..c });
        if let Claim::Replay(earlier) = self.claim(&tx, who, client.as_ref(), id).await? {
            drop(tx);
            return self.hazard(who, earlier).await;
        }
        let hazard = self.report_hazard_tx(&tx, who, draft, id).await?;
        tx.commit().await?;
        self.publish_hazards(std::slice::from_ref(&hazard));
        self.announce_reported(who, std::slice::from_ref(&hazard)).await;
        Ok(hazard)
    }

    /// Tells the project's managers (push, with their preferences) about hazards people
    /// found — after the commit; a failure is logged, never the reporter's error.
    pub(crate) async fn announce_reported(&self, who: &Principal, hazards: &[Hazard]) {
        for h in hazards.iter().filter(|h| h.kind == EventKind::FieldReport) {
            let managers = match self.managers_of(h.tenant_id, h.project_id).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, hazard = %h.id, "could not find the managers to tell of a reported hazard");
                    continue;
                }
            };
            let to: Vec<UserId> = managers.into_iter().filter(|m| Some(*m) != who.user_id()).collect();
            let notice = WorkNotice::HazardReported {
                description: h.description.as_deref().unwrap_or_default(),
                by: &who.label,
            };
            let text = move |locale, project: &str| render_work(&notice, project, locale);
            let mut data = BTreeMap::new();
            data.insert("hazardId".to_owned(), h.id.to_string());
            let n = PeopleNotice { project: h.project_id, reason: "hazard.reported", data, urgent: false, text: &text };
            if let Err(e) = self.notify_people(h.tenant_id, &to, &n).await {
                tracing::warn!(error = %e, hazard = %h.id, "could not queue the notifications of a reported hazard");
            }
        }
    }

    /// Stores a report as hazard `id` inside `tx` (for check-ins, which report hazards in
    /// their own transaction). The caller publishes the hazard after its commit
    /// ([`Services::publish_hazards`]).
    pub(crate) async fn report_hazard_tx(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        draft: &ReportDraft,
        id: Uuid,
    ) -> AppResult<Hazard> {
        let tenant = who.tenant()?;
        let now = self.now();
        let project = draft.project.ok_or_else(|| AppError::invalid("projectId", "a project is required"))?;
        if !who.sees_project(project) || sites::project(tx, tenant, &who.access.scope, project).await?.is_none() {
            return Err(AppError::NotFound("project"));
        }
        let description = hazard::check_report(&draft.description)?;
        let detector = match draft.detector {
            None => None,
            Some(d) => {
                let det = sites::detector(tx, tenant, &who.access.scope, d)
                    .await?
                    .filter(|det| det.project_id == project)
                    .ok_or_else(|| AppError::invalid("detectorId", "no such detector in this project"))?;
                Some((det.id, det.draft.device_id))
            }
        };
        if let Some(c) = draft.checkpoint
            && reports::checkpoint_project(tx, tenant, c).await? != Some(project)
        {
            return Err(AppError::invalid("checkpointId", "no such checkpoint in this project"));
        }
        let seen_at = draft.at.unwrap_or(now);
        hazard::check_device_time("at", seen_at, now)?;
        let report = reports::NewReport {
            id,
            tenant,
            project,
            detector,
            checkpoint: draft.checkpoint,
            description,
            reported_by: who.user_id(),
            seen_at,
            now,
        };
        let hazard = reports::insert(tx, &report).await?;
        self.link_attachments(tx, who, &draft.attachment_ids, project, "hazard", id).await?;
        self.log(
            tx,
            who,
            Entry::new(Some(tenant), "hazard.report", "hazard", Some(id.to_string()))
                .after(snapshot(&serde_json::json!({"hazard": hazard, "attachments": draft.attachment_ids}))),
        )
        .await?;
        Ok(hazard)
    }

    /// Tells subscribers that hazards were opened or changed (after the commit).
    pub(crate) fn publish_hazards(&self, hazards: &[Hazard]) {
        self.inner.bus.publish(hazards.iter().map(|h| Envelope {
            tenant: h.tenant_id,
            feed: Feed::Tenant(h.tenant_id),
            message: BusMessage::Hazard(Box::new(h.clone())),
        }));
    }
}
