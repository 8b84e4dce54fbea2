//! Push notifications: who is told about what, the delivery queue with retries, and
//! escalation of unacknowledged alarms (phones' tokens, preferences and the tenant's policy
//! are managed in [`super::push_settings`]; work orders and patrol tasks notify named people
//! through [`Services::notify_people`]).
//!
//! - **Routing.** An event (alarm, pre-alarm, fault, recovery) in a project goes to the
//!   people *responsible* for it: active users holding `hazard.read` who are assigned to the
//!   project. When none of them has a phone registered, it goes to the *supervisors*:
//!   users holding `hazard.manage` for every project (tenant administrators), so an alarm
//!   always reaches someone who can act. Each person's preferences then decide
//!   (categories, minimum severity, quiet hours — alarms ignore all three).
//! - **Queue.** Every (notification, phone) is a row in `notifications`, which is also the
//!   delivery log. Senders on every instance claim due rows with a lease, send them through
//!   [`crate::push::Push`], and record the outcome: sent; retried with exponential backoff
//!   (at least the provider's `Retry-After`) on throttling and outages; the token deleted
//!   when the provider says it is invalid; logged only when no credentials are configured.
//!   Ingestion never waits for any of it.
//! - **Escalation.** A new alarm hazard schedules a reminder (`reminders`) for the tenant's
//!   `escalation.after_min`; when it fires and the hazard is still OPEN, the supervisors and
//!   the responsible people are told, and it repeats every `escalation.every_min` until
//!   someone acknowledges. Reminders are claimed with a lease like the queue, so one
//!   instance fires each. The mechanism is general: a reminder names a purpose and subject.
//! - **Routing is durable.** Every pushed event gets a routing reminder
//!   ([`ROUTE_EVENT`]) in the transaction that records it, due [`ROUTING_GRACE`] later.
//!   The instance that recorded the event routes it at once from the bus and deletes the
//!   reminder in the transaction that queues the notifications; if it crashed after the
//!   commit, fell behind or met a database error, the reminder job of any instance routes
//!   the event when the reminder falls due. Deleting the reminder is the claim, so an event
//!   is routed exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sparkwatch_domain::access::{Permission, ProjectScope};
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_domain::notify::{self, Decision, EscalationPolicy, Locale, Notice, Reason, Severity};
use sparkwatch_domain::reading::{Channel, EventCategory, EventKind};
use sparkwatch_entity::notification;
use uuid::Uuid;

use super::Services;
use crate::bus::{BusMessage, Envelope, Listener};
use crate::error::AppResult;
use crate::push::{PushError, PushMessage, PushPlatform, PushPriority};
use crate::store::hazards::{EventView, Hazard};
use crate::store::notify::{self as st, Candidate, NewNotification, NewReminder, Outcome, PushToken};
use crate::store::{access, sites, tenants};

/// The purpose of the reminder every new alarm hazard gets.
pub const UNACKNOWLEDGED_ALARM: &str = "hazard.unacknowledged";
/// The purpose of the reminder every pushed event gets: route it if nobody has.
pub const ROUTE_EVENT: &str = "event.route";
/// How long the recording instance has to route an event before the reminder job does.
pub const ROUTING_GRACE: chrono::Duration = chrono::Duration::seconds(30);
/// Attempts before a notification is given up.
pub const MAX_ATTEMPTS: i32 = 8;

/// How long the notifications an instance queued stay reserved for its own dispatcher.
const HANDED_OVER_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// A notification queued and claimed by this instance, and the phone it goes to.
pub(crate) type HandedOver = (notification::Model, st::PushToken);

/// How the background jobs pace themselves.
#[derive(Clone, Copy, Debug)]
pub struct JobSettings {
    /// How often due notifications and reminders are looked for (besides being woken).
    pub tick: Duration,
    /// How long a claimed row is reserved for its instance.
    pub lease: Duration,
    /// Notifications sent at once.
    pub concurrency: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings { tick: Duration::from_secs(1), lease: Duration::from_secs(60), concurrency: 64 }
    }
}

/// The platform code stored for a [`PushPlatform`].
pub fn platform_code(p: PushPlatform) -> &'static str {
    match p {
        PushPlatform::Ios => "IOS",
        PushPlatform::Android => "ANDROID",
    }
}

/// The [`PushPlatform`] of a stored platform code.
pub fn platform_from(code: &str) -> PushPlatform {
    if code == "IOS" { PushPlatform::Ios } else { PushPlatform::Android }
}

impl Services {
    // ---- routing ----

    /// Queues the notifications an event calls for (see the module docs).
    pub async fn notify_event(&self, tenant: TenantId, e: &EventView) -> AppResult<usize> {
        if !Severity::pushed(e.category) {
            return Ok(0);
        }
        let hazard = match e.episode_id {
            Some(ep) => crate::store::hazards::hazard_of_episode(self.inner.store.db(), ep).await?,
            None => None,
        };
        let subject = Subject {
            tenant,
            project: e.project_id,
            kind: e.kind,
            category: e.category,
            channel: e.channel.clone(),
            device: e.device_name.clone().unwrap_or_else(|| "?".into()),
            position: e.position.clone(),
            value: e.value,
            setpoint: e.setpoint,
            hazard: hazard.map(|h| h.id),
            event: Some(e.id),
            detector: e.detector_id.map(|d| d.to_string()),
            at: e.at,
        };
        self.route(&subject, Reason::Event).await
    }

    /// Queues the notifications for `s`. For an event, the queueing transaction also takes
    /// its routing reminder; when that is gone, someone else has routed it and nothing is
    /// queued.
    async fn route(&self, s: &Subject, reason: Reason) -> AppResult<usize> {
        let db = self.inner.store.db();
        let candidates = st::candidates(db, s.tenant).await?;
        let mut people: Vec<(Candidate, Role)> = Vec::new();
        for c in candidates {
            let permissions = self.permissions_of(s.tenant, &c).await?;
            let scope = ProjectScope::new(&permissions, c.projects.iter().copied());
            let role = if permissions.contains(&Permission::HazardManage) && scope == ProjectScope::All {
                Role::Supervisor
            } else if permissions.contains(&Permission::HazardRead) && scope.contains(s.project) {
                Role::Responsible
            } else {
                continue;
            };
            people.push((c, role));
        }
        let has_responsible = people.iter().any(|(_, r)| *r == Role::Responsible);
        let escalation = matches!(reason, Reason::Unacknowledged { .. });
        people.retain(|(_, r)| match r {
            Role::Responsible => true,
            // Supervisors hear of escalations, and of events nobody else would hear of.
            Role::Supervisor => escalation || !has_responsible,
        });
        // Nobody to tell: the routing reminder below is still taken, but no text is written.
        let project_name = if people.is_empty() {
            String::new()
        } else {
            let project = sites::project(db, s.tenant, &ProjectScope::All, s.project).await?;
            project.map(|p| p.draft.name).unwrap_or_default()
        };
        let now = self.now();
        let mut rows = Vec::new();
        // The phone of each row, in the same order.
        let mut phones = Vec::new();
        for (c, _) in &people {
            let decision = if escalation { Decision::Send } else { c.preferences.decide(s.category, now) };
            let status = match decision {
                Decision::Send => "QUEUED",
                Decision::Quiet => "QUIET",
                Decision::NotWanted => continue,
            };
            for t in &c.tokens {
                phones.push(t.clone());
                let locale = Locale::from_tag(&t.locale);
                let notice = Notice {
                    reason,
                    kind: s.kind,
                    category: s.category,
                    project: &project_name,
                    device: &s.device,
                    position: s.position.as_deref(),
                    channel: Channel::parse(&s.channel).unwrap_or(Channel::DETECTOR),
                    value: s.value,
                    setpoint: s.setpoint,
                };
                let text = notify::render(&notice, locale);
                let mut data = BTreeMap::new();
                data.insert("eventKind".to_owned(), s.kind.code().to_owned());
                data.insert("category".to_owned(), s.category.code().to_owned());
                data.insert("projectId".to_owned(), s.project.to_string());
                data.insert("at".to_owned(), s.at.to_rfc3339());
                if let Some(h) = s.hazard {
                    data.insert("hazardId".to_owned(), h.to_string());
                }
                if let Some(e) = s.event {
                    data.insert("eventId".to_owned(), e.to_string());
                }
                if let Some(d) = &s.detector {
                    data.insert("detectorId".to_owned(), d.clone());
                }
                if let Reason::Unacknowledged { level, .. } = reason {
                    data.insert("escalationLevel".to_owned(), level.to_string());
                }
                let high = s.category == EventCategory::Alarm || escalation;
                rows.push(NewNotification {
                    tenant: s.tenant,
                    user: c.user.id,
                    token_id: t.id,
                    platform: t.platform.clone(),
                    token_tail: st::token_tail(&t.token),
                    project: Some(s.project),
                    hazard: s.hazard,
                    event: s.event,
                    reason: if escalation { "escalation".into() } else { "event".into() },
                    category: s.category.code().to_owned(),
                    title: text.title,
                    body: text.body,
                    data: serde_json::to_string(&data).unwrap_or_else(|_| "{}".into()),
                    priority: if high { "HIGH".into() } else { "NORMAL".into() },
                    status,
                });
            }
        }
        let tx = self.inner.store.begin().await?;
        if let Some(event) = s.event.filter(|_| reason == Reason::Event)
            && !st::take_reminder(&tx, ROUTE_EVENT, "event", event).await?
        {
            return Ok(0);
        }
        self.enqueue(tx, &rows, phones, now).await
    }

    /// Stores `rows` (one per phone in `phones`, same order) in `tx`, commits, and hands the
    /// queued ones to this instance's dispatcher; returns how many were queued.
    async fn enqueue(
        &self,
        tx: sea_orm::DatabaseTransaction,
        rows: &[NewNotification],
        phones: Vec<PushToken>,
        now: DateTime<Utc>,
    ) -> AppResult<usize> {
        // Claimed in this transaction and handed to this instance's dispatcher: claiming them
        // back from the database cost four round trips and two commits before the first send.
        // Should this instance stop before sending, any instance claims them after the lease.
        let stored = st::insert_notifications(&tx, rows, now, now + HANDED_OVER_LEASE).await?;
        let mut queued: Vec<HandedOver> =
            stored.into_iter().zip(phones).filter(|(n, _)| n.status == "QUEUED").collect();
        crate::store::hazards::mark_first_push(&tx, queued.iter().filter_map(|(n, _)| n.hazard_id), now).await?;
        tx.commit().await?;
        let count = queued.len();
        if count > 0 {
            self.inner.handed_over.lock().unwrap_or_else(|e| e.into_inner()).append(&mut queued);
            self.inner.push_wakeup.notify_one();
        }
        Ok(count)
    }

    async fn permissions_of(&self, tenant: TenantId, c: &Candidate) -> AppResult<BTreeSet<Permission>> {
        Ok(match st::custom_role(c) {
            Some(id) => {
                access::role(self.inner.store.db(), tenant, id).await?.map(|r| r.permissions).unwrap_or_default()
            }
            None => match c.user.role {
                access::RoleRef::Builtin(b) => b.permissions(),
                access::RoleRef::Custom(_) => Default::default(),
            },
        })
    }

    /// The people field work in `project` escalates to: active users of `tenant` holding
    /// `hazard.manage` with the project in scope, who have a phone (nobody else can be
    /// pushed to). For [`Self::notify_people`].
    pub(crate) async fn managers_of(&self, tenant: TenantId, project: ProjectId) -> AppResult<Vec<UserId>> {
        let mut out = Vec::new();
        for c in st::candidates(self.inner.store.db(), tenant).await? {
            let permissions = self.permissions_of(tenant, &c).await?;
            let scope = ProjectScope::new(&permissions, c.projects.iter().copied());
            if permissions.contains(&Permission::HazardManage) && scope.contains(project) {
                out.push(c.user.id);
            }
        }
        Ok(out)
    }

    /// Pushes a notice to named people — the assignee of a work order, the managers of a
    /// project, the electricians of a patrol plan — through the same queue, delivery log and
    /// retries as alarms. Each of `users` who is an active user of `tenant` with a phone gets
    /// one notification per phone, in that phone's language. Their preferences apply as for
    /// any personal notice ([`Preferences::decide_personal`]): the event category and
    /// severity filters do not (this is not an event), quiet hours do unless the notice is
    /// urgent (an escalation), in which case it is also sent with high priority. Returns how
    /// many notifications were queued for sending now.
    pub(crate) async fn notify_people(
        &self,
        tenant: TenantId,
        users: &[UserId],
        notice: &PeopleNotice<'_>,
    ) -> AppResult<usize> {
        if users.is_empty() {
            return Ok(0);
        }
        let db = self.inner.store.db();
        let people: Vec<Candidate> =
            st::candidates(db, tenant).await?.into_iter().filter(|c| users.contains(&c.user.id)).collect();
        if people.is_empty() {
            return Ok(0);
        }
        let project = sites::project(db, tenant, &ProjectScope::All, notice.project).await?;
        let project_name = project.map(|p| p.draft.name).unwrap_or_default();
        let now = self.now();
        let mut data = notice.data.clone();
        data.insert("projectId".to_owned(), notice.project.to_string());
        data.insert("reason".to_owned(), notice.reason.to_owned());
        let data = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into());
        let (mut rows, mut phones) = (Vec::new(), Vec::new());
        for c in &people {
            let status = match c.preferences.decide_personal(now, notice.urgent) {
                Decision::Send => "QUEUED",
                Decision::Quiet => "QUIET",
                Decision::NotWanted => continue,
            };
            for t in &c.tokens {
                let text = (notice.text)(Locale::from_tag(&t.locale), &project_name);
                rows.push(NewNotification {
                    tenant,
                    user: c.user.id,
                    token_id: t.id,
                    platform: t.platform.clone(),
                    token_tail: st::token_tail(&t.token),
                    project: Some(notice.project),
                    hazard: None,
                    event: None,
                    reason: notice.reason.to_owned(),
                    category: EventCategory::Operation.code().to_owned(),
                    title: text.title,
                    body: text.body,
                    data: data.clone(),
                    priority: if notice.urgent { "HIGH".into() } else { "NORMAL".into() },
                    status,
                });
                phones.push(t.clone());
            }
        }
        let tx = self.inner.store.begin().await?;
        self.enqueue(tx, &rows, phones, now).await
    }

    // ---- delivery ----

    /// Sends the notifications this instance queued and claimed itself.
    async fn deliver_handed_over(&self, jobs: &JobSettings) {
        let taken = std::mem::take(&mut *self.inner.handed_over.lock().unwrap_or_else(|e| e.into_inner()));
        self.send_all(taken.into_iter().map(|(n, phone)| (n, Some(phone))), jobs.concurrency).await;
    }

    async fn send_all(
        &self,
        items: impl Iterator<Item = (notification::Model, Option<st::PushToken>)>,
        concurrency: usize,
    ) {
        futures_util::stream::iter(items)
            .for_each_concurrent(concurrency, |(n, token)| async move {
                if let Err(e) = self.deliver_one(n, token).await {
                    tracing::warn!(error = %e, "recording a push attempt failed; it is retried after its lease");
                }
            })
            .await;
    }

    /// Claims and sends due notifications until none are due; returns how many were tried.
    pub async fn deliver_due(&self, jobs: &JobSettings) -> AppResult<usize> {
        let db = self.inner.store.db();
        let mut total = 0;
        loop {
            let now = self.now();
            let lease = now + chrono::Duration::from_std(jobs.lease).unwrap_or(chrono::Duration::seconds(60));
            let claimed = st::claim_due(db, now, lease, 200).await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            total += claimed.len();
            // One stamp per hazard for the whole claim, not one contended row update per phone.
            crate::store::hazards::mark_first_push(db, claimed.iter().filter_map(|n| n.hazard_id), now).await?;
            let ids: Vec<Uuid> = claimed.iter().filter_map(|n| n.token_id).collect();
            let tokens = st::tokens_by_id(db, &ids).await?;
            let items = claimed.into_iter().map(|n| {
                let token = n.token_id.and_then(|id| tokens.iter().find(|t| t.id == id)).cloned();
                (n, token)
            });
            self.send_all(items, jobs.concurrency).await;
        }
    }

    async fn deliver_one(&self, n: notification::Model, token: Option<st::PushToken>) -> AppResult<()> {
        let db = self.inner.store.db();
        let attempted_at = self.now();
        let Some(token) = token else {
            let outcome = Outcome::Final { status: "INVALID_TOKEN", error: Some("the phone unregistered".into()) };
            st::record_attempt(db, &n, &outcome, None, attempted_at, attempted_at).await?;
            return Ok(());
        };
        let message = PushMessage {
            platform: platform_from(&n.platform),
            token: token.token.clone(),
            app_id: token.app_id.clone(),
            title: n.title.clone(),
            body: n.body.clone(),
            collapse_id: n.hazard_id.or(n.event_id).unwrap_or(n.id).to_string(),
            thread_id: n.project_id.map(|p| p.to_string()),
            priority: if n.priority == "HIGH" { PushPriority::High } else { PushPriority::Normal },
            data: serde_json::from_str(&n.data).unwrap_or_default(),
        };
        let result = self.inner.push.send(&message).await;
        let now = self.now();
        let platform = n.platform.as_str();
        let (outcome, status) = match result {
            Ok(receipt) => (Outcome::Sent { provider_id: receipt.provider_id }, Some(200)),
            Err(PushError::InvalidToken { reason }) => {
                st::delete_token_by_id(db, token.id).await?;
                tracing::info!(platform, %reason, "push token rejected by the provider; deleted");
                (Outcome::Final { status: "INVALID_TOKEN", error: Some(reason) }, None)
            }
            Err(PushError::Retryable { after, reason }) if n.attempts + 1 < MAX_ATTEMPTS => {
                let wait = retry_delay(n.attempts + 1, after);
                let at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(15));
                tracing::info!(platform, %reason, retry_in = ?wait, "push failed for now; will retry");
                (Outcome::Retry { at, error: reason }, None)
            }
            Err(PushError::Retryable { reason, .. }) => (
                Outcome::Final {
                    status: "FAILED",
                    error: Some(format!("gave up after {MAX_ATTEMPTS} attempts: {reason}")),
                },
                None,
            ),
            Err(PushError::Rejected { status, reason }) => {
                tracing::warn!(platform, status, %reason, "push rejected by the provider");
                (Outcome::Final { status: "FAILED", error: Some(reason) }, Some(status))
            }
            Err(PushError::NotConfigured) => {
                tracing::info!(platform, title = %n.title, body = %n.body, "push not configured for this platform; logged instead");
                (Outcome::Final { status: "LOGGED", error: None }, None)
            }
        };
        let label = match &outcome {
            Outcome::Sent { .. } => "sent",
            Outcome::Retry { .. } => "retry",
            Outcome::Final { status, .. } => status,
        };
        self.inner.metrics.push_attempts.with_label_values(&[platform, label]).inc();
        st::record_attempt(db, &n, &outcome, status, attempted_at, now).await?;
        Ok(())
    }

    // ---- escalation ----

    /// Fires due reminders; returns how many fired.
    pub async fn fire_reminders(&self, jobs: &JobSettings) -> AppResult<usize> {
        let db = self.inner.store.db();
        let now = self.now();
        let lease = now + chrono::Duration::from_std(jobs.lease).unwrap_or(chrono::Duration::seconds(60));
        let due = st::claim_reminders(db, now, lease).await?;
        let mut fired = 0;
        for r in due {
            if r.purpose == ROUTE_EVENT {
                fired += self.route_late(&r).await?;
                continue;
            }
            // Field work's reminders (overdue work orders, missed patrol tasks) live with
            // their aggregates; each hook answers `None` for purposes that are not its own.
            if let Some(n) = self.fire_work_order_reminder(&r).await? {
                fired += n;
                continue;
            }
            if let Some(n) = self.fire_patrol_reminder(&r).await? {
                fired += n;
                continue;
            }
            if r.purpose != UNACKNOWLEDGED_ALARM {
                // A purpose this version does not know (written by a newer one): leave it.
                continue;
            }
            let hazard = crate::store::hazards::hazard_by_id(db, r.subject_id).await?;
            let Some(h) = hazard.filter(|h| h.status == sparkwatch_domain::hazard::HazardStatus::Open) else {
                st::finish_reminder(db, r.id, now).await?;
                continue;
            };
            let level = r.level + 1;
            let open_min = (now - h.opened_at).num_minutes().max(0) as u32;
            let subject = self.subject_of_hazard(&h).await?;
            self.route(&subject, Reason::Unacknowledged { level: level as u32, open_min }).await?;
            let policy = tenants::get(db, h.tenant_id).await?.map(|t| t.escalation).unwrap_or_default();
            let next = r.due_at.max(now - chrono::Duration::seconds(1))
                + chrono::Duration::minutes(i64::from(policy.every_min));
            st::reschedule_reminder(db, r.id, level, next).await?;
            tracing::info!(hazard = %h.id, level, open_min, "unacknowledged alarm escalated");
            fired += 1;
        }
        Ok(fired)
    }

    /// Routes an event whose recording instance did not (it stopped after the commit, fell
    /// behind, or met an error); the reminder is taken in [`Self::route`].
    async fn route_late(&self, r: &sparkwatch_entity::reminder::Model) -> AppResult<usize> {
        let db = self.inner.store.db();
        let Some((tenant, event)) = crate::store::hazards::events_by_ids(db, &[r.subject_id]).await?.into_iter().next()
        else {
            st::take_reminder(db, ROUTE_EVENT, "event", r.subject_id).await?;
            return Ok(0);
        };
        tracing::warn!(
            event = %event.id,
            "push routing of an event taken over by the reminder job: the instance that recorded it did not route it \
             within {} s (stopped, behind, or a database error: see its log)",
            ROUTING_GRACE.num_seconds()
        );
        self.notify_event(tenant, &event).await?;
        Ok(1)
    }

    async fn subject_of_hazard(&self, h: &Hazard) -> AppResult<Subject> {
        let db = self.inner.store.db();
        let (device, position) = match h.device_id {
            Some(d) => crate::store::hazards::place_of(db, d, h.detector_id).await?,
            None => ("?".to_owned(), None),
        };
        Ok(Subject {
            tenant: h.tenant_id,
            project: h.project_id,
            kind: h.kind,
            category: h.category,
            channel: h.channel.clone(),
            device,
            position,
            value: h.peak_value,
            setpoint: h.setpoint,
            hazard: Some(h.id),
            event: None,
            detector: h.detector_id.map(|d| d.to_string()),
            at: h.device_at,
        })
    }
}

/// Schedules the escalation reminder of a new alarm hazard (called in ingestion's
/// transaction, so a committed alarm always has one).
pub(crate) async fn schedule_escalation<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    hazard: Uuid,
    policy: EscalationPolicy,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let due = now + chrono::Duration::minutes(i64::from(policy.after_min));
    let every = (policy.every_min * 60) as i32;
    let reminder = NewReminder {
        tenant,
        purpose: UNACKNOWLEDGED_ALARM,
        subject_type: "hazard",
        subject: hazard,
        due_at: due,
        every_s: every,
    };
    st::schedule_reminder(db, &reminder, now).await
}

/// Schedules the routing of a pushed event (called in the transaction that records it, so a
/// committed event is always routed: see the module docs).
pub async fn schedule_routing<C: sea_orm::ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    event: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let reminder = NewReminder {
        tenant,
        purpose: ROUTE_EVENT,
        subject_type: "event",
        subject: event,
        due_at: now + ROUTING_GRACE,
        every_s: 0,
    };
    st::schedule_reminder(db, &reminder, now).await
}

/// A notice for named people (see [`Services::notify_people`]).
pub(crate) struct PeopleNotice<'a> {
    /// The project it concerns: its name goes into the title, its id into the data.
    pub project: ProjectId,
    /// What it is, for the delivery log and the app (`work_order.assigned`, `patrol.missed`).
    pub reason: &'a str,
    /// Data keys the app opens the subject with (`workOrderId`, `patrolTaskId`).
    pub data: BTreeMap<String, String>,
    /// Escalations: sent with high priority, even in quiet hours.
    pub urgent: bool,
    /// The text in a phone's language, given the project's name.
    pub text: &'a (dyn Fn(Locale, &str) -> notify::Text + Send + Sync),
}

/// Who someone is for a project's notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Assigned to the project.
    Responsible,
    /// Manages hazards in every project (the next level).
    Supervisor,
}

/// What a notification is about, whatever triggered it.
struct Subject {
    tenant: TenantId,
    project: ProjectId,
    kind: EventKind,
    category: EventCategory,
    channel: String,
    device: String,
    position: Option<String>,
    value: Option<f64>,
    setpoint: Option<f64>,
    hazard: Option<Uuid>,
    event: Option<Uuid>,
    detector: Option<String>,
    at: DateTime<Utc>,
}

/// The wait before retrying after failed attempt number `attempt`: the provider's
/// `Retry-After` when it gave one (at most an hour), else 5 s doubling up to 15 min.
pub fn retry_delay(attempt: i32, after: Option<Duration>) -> Duration {
    let backoff = Duration::from_secs(5u64 << attempt.clamp(1, 10).saturating_sub(1)).min(Duration::from_secs(900));
    after.map_or(backoff, |a| a.min(Duration::from_secs(3600)))
}

/// Routes the events this instance recorded (`events`, from [`crate::bus::Bus::local_events`])
/// to phones, until `stop` turns true or the bus goes away.
pub async fn run_router(services: Services, mut events: Listener, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = stop.changed() => return,
        };
        let env: Arc<Envelope> = match received {
            Ok(env) => env,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "push routing fell behind by {n} events; the reminder job routes them within {} s",
                    ROUTING_GRACE.num_seconds()
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if let BusMessage::Event(e) = &env.message
            && let Err(e) = services.notify_event(env.tenant, e).await
        {
            tracing::warn!(error = %e, "could not queue push notifications for an event");
        }
    }
}

/// Sends queued notifications (woken at once by new ones, and every tick for retries and
/// for other instances' rows) until `stop` turns true.
pub async fn run_dispatcher(services: Services, jobs: JobSettings, mut stop: tokio::sync::watch::Receiver<bool>) {
    let wakeup = services.inner.push_wakeup.clone();
    loop {
        services.deliver_handed_over(&jobs).await;
        if let Err(e) = services.deliver_due(&jobs).await {
            tracing::warn!(error = %e, "push delivery failed; retrying");
        }
        services.inner.metrics.job_passes.with_label_values(&["push_delivery"]).inc();
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(jobs.tick) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Fires due reminders every tick until `stop` turns true.
pub async fn run_reminders(services: Services, jobs: JobSettings, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = services.fire_reminders(&jobs).await {
            tracing::warn!(error = %e, "firing reminders failed; retrying");
        }
        services.inner.metrics.job_passes.with_label_values(&["reminders"]).inc();
        tokio::select! {
            _ = tokio::time::sleep(jobs.tick) => {}
            _ = stop.changed() => return,
        }
    }
}
