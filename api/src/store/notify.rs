//! Push tokens, notification preferences, the notification queue / delivery log and
//! reminders.
//!
//! The queue and the reminders are claimed with one conditional `UPDATE … RETURNING`
//! each: a row whose lease has not expired is skipped, so several instances share the work
//! and each row is handled by exactly one of them (a PostgreSQL row lock held only for
//! that statement; on SQLite the single writer does the same).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, sea_query::OnConflict,
};
use sparkwatch_domain::ids::{ProjectId, TenantId, UserId};
use sparkwatch_domain::notify::{Preferences, QuietHours, Severity};
use sparkwatch_domain::reading::EventCategory;
use sparkwatch_entity::{notification, notification_preference, push_token, reminder, user, user_project_scope};
use uuid::Uuid;

use super::access::{RoleRef, User};
use super::{Page, PageRequest, new_id, page_desc};

// ---- push tokens ----

/// A registered push token.
#[derive(Clone, Debug)]
pub struct PushToken {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// `IOS` or `ANDROID`.
    pub platform: String,
    /// The provider's token.
    pub token: String,
    /// App id (APNs topic / Android package).
    pub app_id: String,
    /// Language of the texts sent to it.
    pub locale: String,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last registered again.
    pub updated_at: DateTime<Utc>,
}

/// The last six characters of a device token: enough to tell phones apart in lists and
/// logs without showing the token.
pub fn token_tail(token: &str) -> String {
    let n = token.chars().count();
    token.chars().skip(n.saturating_sub(6)).collect()
}

fn token_from(m: push_token::Model) -> PushToken {
    PushToken {
        id: m.id,
        user_id: m.user_id.into(),
        platform: m.platform,
        token: m.token,
        app_id: m.app_id,
        locale: m.locale,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// What a registration stores.
#[derive(Clone, Debug)]
pub struct NewPushToken<'a> {
    /// Tenant of the user.
    pub tenant: TenantId,
    /// Owner.
    pub user: UserId,
    /// Sign-in it was registered in.
    pub session: Option<Uuid>,
    /// `IOS` / `ANDROID`.
    pub platform: &'a str,
    /// Token.
    pub token: &'a str,
    /// App id.
    pub app_id: &'a str,
    /// Locale tag.
    pub locale: &'a str,
}

/// Registers a token; a token already known (same install, maybe another user) moves to
/// this user and sign-in.
pub async fn upsert_token<C: ConnectionTrait>(
    db: &C,
    t: &NewPushToken<'_>,
    now: DateTime<Utc>,
) -> Result<PushToken, DbErr> {
    let row = push_token::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(t.tenant.as_uuid()),
        user_id: Set(t.user.as_uuid()),
        session_id: Set(t.session),
        platform: Set(t.platform.to_owned()),
        token: Set(t.token.to_owned()),
        app_id: Set(t.app_id.to_owned()),
        locale: Set(t.locale.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let on_conflict = OnConflict::column(push_token::Column::Token)
        .update_columns([
            push_token::Column::TenantId,
            push_token::Column::UserId,
            push_token::Column::SessionId,
            push_token::Column::Platform,
            push_token::Column::AppId,
            push_token::Column::Locale,
            push_token::Column::UpdatedAt,
        ])
        .to_owned();
    push_token::Entity::insert(row).on_conflict(on_conflict).exec_without_returning(db).await?;
    let stored = push_token::Entity::find().filter(push_token::Column::Token.eq(t.token)).one(db).await?;
    stored.map(token_from).ok_or_else(|| DbErr::RecordNotFound("push token just stored".into()))
}

/// The tenant holding a push token, if it is registered.
pub async fn token_tenant<C: ConnectionTrait>(db: &C, token: &str) -> Result<Option<TenantId>, DbErr> {
    let row = push_token::Entity::find().filter(push_token::Column::Token.eq(token)).one(db).await?;
    Ok(row.map(|r| r.tenant_id.into()))
}

/// The tokens of a user, newest first.
pub async fn tokens_of<C: ConnectionTrait>(db: &C, user: UserId) -> Result<Vec<PushToken>, DbErr> {
    let rows = push_token::Entity::find()
        .filter(push_token::Column::UserId.eq(user.as_uuid()))
        .order_by_desc(push_token::Column::UpdatedAt)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(token_from).collect())
}

/// Removes a user's token; false when the user has no such token.
pub async fn delete_token<C: ConnectionTrait>(db: &C, user: UserId, token: &str) -> Result<bool, DbErr> {
    let res = push_token::Entity::delete_many()
        .filter(push_token::Column::UserId.eq(user.as_uuid()))
        .filter(push_token::Column::Token.eq(token))
        .exec(db)
        .await?;
    Ok(res.rows_affected > 0)
}

/// Removes the tokens registered in a sign-in (on logout).
pub async fn delete_session_tokens<C: ConnectionTrait>(db: &C, session: Uuid) -> Result<u64, DbErr> {
    let res = push_token::Entity::delete_many().filter(push_token::Column::SessionId.eq(session)).exec(db).await?;
    Ok(res.rows_affected)
}

/// Removes a token the provider declared invalid.
pub async fn delete_token_by_id<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<(), DbErr> {
    push_token::Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

// ---- preferences ----

fn preferences_from(m: notification_preference::Model) -> Preferences {
    let categories: Vec<String> = serde_json::from_str(&m.categories).unwrap_or_default();
    let quiet = match (m.quiet_start_min, m.quiet_end_min) {
        (Some(s), Some(e)) => Some(QuietHours { start_min: s as u16, end_min: e as u16 }),
        _ => None,
    };
    Preferences {
        categories: categories.iter().filter_map(|c| EventCategory::from_code(c)).collect(),
        min_severity: Severity::from_code(&m.min_severity).unwrap_or(Severity::Warning),
        quiet,
        utc_offset_min: m.utc_offset_min as i16,
    }
}

/// A user's preferences, or the defaults.
pub async fn preferences<C: ConnectionTrait>(db: &C, user: UserId) -> Result<Preferences, DbErr> {
    let row = notification_preference::Entity::find_by_id(user.as_uuid()).one(db).await?;
    Ok(row.map(preferences_from).unwrap_or_default())
}

/// Stores a user's preferences.
pub async fn save_preferences<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    user: UserId,
    p: &Preferences,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let categories: Vec<&str> = p.categories.iter().map(|c| c.code()).collect();
    let row = notification_preference::ActiveModel {
        user_id: Set(user.as_uuid()),
        tenant_id: Set(tenant.as_uuid()),
        categories: Set(serde_json::to_string(&categories).unwrap_or_else(|_| "[]".into())),
        min_severity: Set(p.min_severity.code().to_owned()),
        quiet_start_min: Set(p.quiet.map(|q| i32::from(q.start_min))),
        quiet_end_min: Set(p.quiet.map(|q| i32::from(q.end_min))),
        utc_offset_min: Set(i32::from(p.utc_offset_min)),
        updated_at: Set(now),
    };
    let on_conflict = OnConflict::column(notification_preference::Column::UserId)
        .update_columns([
            notification_preference::Column::Categories,
            notification_preference::Column::MinSeverity,
            notification_preference::Column::QuietStartMin,
            notification_preference::Column::QuietEndMin,
            notification_preference::Column::UtcOffsetMin,
            notification_preference::Column::UpdatedAt,
        ])
        .to_owned();
    notification_preference::Entity::insert(row).on_conflict(on_conflict).exec_without_returning(db).await?;
    Ok(())
}

// ---- recipients ----

/// An active user of a tenant with what routing needs: role, explicit projects, tokens,
/// preferences.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The user.
    pub user: User,
    /// Projects the user is explicitly assigned to.
    pub projects: Vec<ProjectId>,
    /// Their phones.
    pub tokens: Vec<PushToken>,
    /// Their preferences.
    pub preferences: Preferences,
}

/// Every active user of `tenant` who has at least one push token.
pub async fn candidates<C: ConnectionTrait>(db: &C, tenant: TenantId) -> Result<Vec<Candidate>, DbErr> {
    let tokens = push_token::Entity::find().filter(push_token::Column::TenantId.eq(tenant.as_uuid())).all(db).await?;
    if tokens.is_empty() {
        return Ok(vec![]);
    }
    let mut ids: Vec<Uuid> = tokens.iter().map(|t| t.user_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let users = user::Entity::find()
        .filter(user::Column::Id.is_in(ids.clone()))
        .filter(user::Column::TenantId.eq(tenant.as_uuid()))
        .filter(user::Column::Active.eq(true))
        .all(db)
        .await?;
    let scopes = user_project_scope::Entity::find()
        .filter(user_project_scope::Column::UserId.is_in(ids.clone()))
        .all(db)
        .await?;
    let prefs = notification_preference::Entity::find()
        .filter(notification_preference::Column::UserId.is_in(ids))
        .all(db)
        .await?;
    Ok(users
        .into_iter()
        .map(|u| {
            let id = u.id;
            Candidate {
                projects: scopes.iter().filter(|s| s.user_id == id).map(|s| s.project_id.into()).collect(),
                tokens: tokens.iter().filter(|t| t.user_id == id).cloned().map(token_from).collect(),
                preferences: prefs.iter().find(|p| p.user_id == id).cloned().map(preferences_from).unwrap_or_default(),
                user: super::access::user_from(u),
            }
        })
        .collect())
}

/// Whether a candidate's role is a tenant-defined one (its permissions need loading).
pub fn custom_role(c: &Candidate) -> Option<sparkwatch_domain::ids::RoleId> {
    match c.user.role {
        RoleRef::Custom(id) => Some(id),
        RoleRef::Builtin(_) => None,
    }
}

// ---- notifications ----

/// A notification to queue (one per device token).
#[derive(Clone, Debug)]
pub struct NewNotification {
    /// Tenant.
    pub tenant: TenantId,
    /// Recipient.
    pub user: UserId,
    /// The device token row.
    pub token_id: Uuid,
    /// `IOS` / `ANDROID`.
    pub platform: String,
    /// Last characters of the token, for the log.
    pub token_tail: String,
    /// Project.
    pub project: Option<ProjectId>,
    /// Hazard.
    pub hazard: Option<Uuid>,
    /// Event.
    pub event: Option<Uuid>,
    /// `event`, `escalation`.
    pub reason: String,
    /// Event category code.
    pub category: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// JSON object of data keys.
    pub data: String,
    /// `HIGH` / `NORMAL`.
    pub priority: String,
    /// `QUEUED`, or `QUIET` when held back by quiet hours.
    pub status: &'static str,
}

/// Stores notifications; those `QUEUED` are claimed by this instance until `lease_until`,
/// so that it sends them at once without claiming them again. Returns the stored rows.
pub async fn insert_notifications<C: ConnectionTrait>(
    db: &C,
    rows: &[NewNotification],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Vec<notification::Model>, DbErr> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let stored: Vec<notification::Model> = rows
        .iter()
        .map(|n| notification::Model {
            id: new_id(),
            tenant_id: n.tenant.as_uuid(),
            user_id: n.user.as_uuid(),
            token_id: Some(n.token_id),
            platform: n.platform.clone(),
            token_tail: n.token_tail.clone(),
            project_id: n.project.map(|p| p.as_uuid()),
            hazard_id: n.hazard,
            event_id: n.event,
            reason: n.reason.clone(),
            category: n.category.clone(),
            title: n.title.clone(),
            body: n.body.clone(),
            data: n.data.clone(),
            priority: n.priority.clone(),
            status: n.status.to_owned(),
            attempts: 0,
            next_attempt_at: now,
            lease_until: (n.status == "QUEUED").then_some(lease_until),
            provider_id: None,
            last_status: None,
            last_error: None,
            created_at: now,
            first_attempt_at: None,
            sent_at: None,
            updated_at: now,
        })
        .collect();
    let models = stored.iter().cloned().map(|m| m.into_active_model().reset_all());
    notification::Entity::insert_many(models).exec_without_returning(db).await?;
    Ok(stored)
}

/// Phones by id.
pub async fn tokens_by_id<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<Vec<PushToken>, DbErr> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let found = push_token::Entity::find().filter(push_token::Column::Id.is_in(ids.iter().copied())).all(db).await?;
    Ok(found.into_iter().map(token_from).collect())
}

/// Claims up to `limit` due notifications until `lease_until`; another instance's claim
/// is respected until its lease expires.
pub async fn claim_due<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<notification::Model>, DbErr> {
    let free = || {
        Condition::any().add(notification::Column::LeaseUntil.is_null()).add(notification::Column::LeaseUntil.lt(now))
    };
    // Look before taking the write lock: most ticks find nothing, and on SQLite an idle
    // UPDATE every tick would still contend with every other writer.
    let any = notification::Entity::find()
        .select_only()
        .column(notification::Column::Id)
        .filter(notification::Column::Status.eq("QUEUED"))
        .filter(notification::Column::NextAttemptAt.lte(now))
        .filter(free())
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    if any.is_none() {
        return Ok(vec![]);
    }
    let due = Query::select()
        .column(notification::Column::Id)
        .from(notification::Entity)
        .and_where(notification::Column::Status.eq("QUEUED"))
        .and_where(notification::Column::NextAttemptAt.lte(now))
        .cond_where(free())
        .order_by(notification::Column::NextAttemptAt, sea_orm::Order::Asc)
        .limit(limit)
        .to_owned();
    notification::Entity::update_many()
        .col_expr(notification::Column::LeaseUntil, Expr::value(lease_until))
        .filter(notification::Column::Id.in_subquery(due))
        .filter(notification::Column::Status.eq("QUEUED"))
        .filter(free())
        .exec_with_returning(db)
        .await
}

/// What became of one delivery attempt.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Accepted by the provider.
    Sent {
        /// Provider's message id.
        provider_id: String,
    },
    /// Try again at this time.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why it failed.
        error: String,
    },
    /// Given up: `INVALID_TOKEN`, `FAILED` or `LOGGED` (no credentials configured).
    Final {
        /// Final status.
        status: &'static str,
        /// Why.
        error: Option<String>,
    },
}

/// Records an attempt made at `attempted_at` and releases the lease.
pub async fn record_attempt<C: ConnectionTrait>(
    db: &C,
    n: &notification::Model,
    outcome: &Outcome,
    http_status: Option<u16>,
    attempted_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let mut q = notification::Entity::update_many()
        .col_expr(notification::Column::Attempts, Expr::value(n.attempts + 1))
        .col_expr(notification::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(notification::Column::LastStatus, Expr::value(http_status.map(i32::from)))
        .col_expr(notification::Column::UpdatedAt, Expr::value(now));
    if n.first_attempt_at.is_none() {
        q = q.col_expr(notification::Column::FirstAttemptAt, Expr::value(attempted_at));
    }
    q = match outcome {
        Outcome::Sent { provider_id } => q
            .col_expr(notification::Column::Status, Expr::value("SENT"))
            .col_expr(notification::Column::ProviderId, Expr::value(provider_id.clone()))
            .col_expr(notification::Column::SentAt, Expr::value(now))
            .col_expr(notification::Column::LastError, Expr::value(Option::<String>::None)),
        Outcome::Retry { at, error } => q
            .col_expr(notification::Column::NextAttemptAt, Expr::value(*at))
            .col_expr(notification::Column::LastError, Expr::value(error.clone())),
        Outcome::Final { status, error } => q
            .col_expr(notification::Column::Status, Expr::value(*status))
            .col_expr(notification::Column::LastError, Expr::value(error.clone())),
    };
    q.filter(notification::Column::Id.eq(n.id)).exec(db).await?;
    Ok(())
}

/// One entry of the delivery log.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Id.
    pub id: Uuid,
    /// Recipient.
    pub user_id: UserId,
    /// `IOS` / `ANDROID`.
    pub platform: String,
    /// Last characters of the device token.
    pub token_tail: String,
    /// Project.
    pub project_id: Option<ProjectId>,
    /// Hazard.
    pub hazard_id: Option<Uuid>,
    /// Event.
    pub event_id: Option<Uuid>,
    /// `event` or `escalation`.
    pub reason: String,
    /// Event category code.
    pub category: String,
    /// Title sent.
    pub title: String,
    /// Body sent.
    pub body: String,
    /// `QUEUED`, `QUIET`, `SENT`, `INVALID_TOKEN`, `FAILED`, `LOGGED`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// The provider's message id.
    pub provider_id: Option<String>,
    /// The provider's last HTTP status.
    pub last_status: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
    /// Queued.
    pub created_at: DateTime<Utc>,
    /// First attempt.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Accepted by the provider.
    pub sent_at: Option<DateTime<Utc>>,
    /// Next attempt, while queued.
    pub next_attempt_at: DateTime<Utc>,
}

fn notification_from(m: notification::Model) -> Notification {
    Notification {
        id: m.id,
        user_id: m.user_id.into(),
        platform: m.platform,
        token_tail: m.token_tail,
        project_id: m.project_id.map(Into::into),
        hazard_id: m.hazard_id,
        event_id: m.event_id,
        reason: m.reason,
        category: m.category,
        title: m.title,
        body: m.body,
        status: m.status,
        attempts: m.attempts,
        provider_id: m.provider_id,
        last_status: m.last_status,
        last_error: m.last_error,
        created_at: m.created_at,
        first_attempt_at: m.first_attempt_at,
        sent_at: m.sent_at,
        next_attempt_at: m.next_attempt_at,
    }
}

/// Filters of the delivery log.
#[derive(Clone, Debug, Default)]
pub struct NotificationFilter {
    /// Only this hazard's.
    pub hazard: Option<Uuid>,
    /// Only this recipient's.
    pub user: Option<UserId>,
    /// Only these statuses.
    pub statuses: Option<Vec<String>>,
}

/// A page of a tenant's delivery log, newest first.
pub async fn notifications<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    scope: &sparkwatch_domain::access::ProjectScope,
    filter: &NotificationFilter,
    req: PageRequest,
) -> Result<Page<Notification>, DbErr> {
    let mut q = notification::Entity::find().filter(notification::Column::TenantId.eq(tenant.as_uuid()));
    // A caller limited to projects sees the notifications of its projects only.
    if let sparkwatch_domain::access::ProjectScope::Only(projects) = scope {
        q = q.filter(notification::Column::ProjectId.is_in(projects.iter().map(|p| p.as_uuid())));
    }
    if let Some(h) = filter.hazard {
        q = q.filter(notification::Column::HazardId.eq(h));
    }
    if let Some(u) = filter.user {
        q = q.filter(notification::Column::UserId.eq(u.as_uuid()));
    }
    if let Some(s) = &filter.statuses {
        q = q.filter(notification::Column::Status.is_in(s.clone()));
    }
    Ok(page_desc(db, q, notification::Column::Id, req).await?.map(notification_from))
}

// ---- reminders ----

/// A reminder to schedule.
#[derive(Clone, Copy, Debug)]
pub struct NewReminder<'a> {
    /// Tenant.
    pub tenant: TenantId,
    /// What it is for (`hazard.unacknowledged`).
    pub purpose: &'a str,
    /// Kind of subject (`hazard`).
    pub subject_type: &'a str,
    /// The subject.
    pub subject: Uuid,
    /// First firing.
    pub due_at: DateTime<Utc>,
    /// Seconds between repeats.
    pub every_s: i32,
}

/// Schedules a reminder unless one for the same subject and purpose exists.
pub async fn schedule_reminder<C: ConnectionTrait>(
    db: &C,
    r: &NewReminder<'_>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = reminder::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(r.tenant.as_uuid()),
        purpose: Set(r.purpose.to_owned()),
        subject_type: Set(r.subject_type.to_owned()),
        subject_id: Set(r.subject),
        due_at: Set(r.due_at),
        every_s: Set(r.every_s),
        level: Set(0),
        lease_until: Set(None),
        done_at: Set(None),
        created_at: Set(now),
    };
    let on_conflict =
        OnConflict::columns([reminder::Column::SubjectType, reminder::Column::SubjectId, reminder::Column::Purpose])
            .do_nothing()
            .to_owned();
    reminder::Entity::insert(row).on_conflict(on_conflict).exec_without_returning(db).await?;
    Ok(())
}

/// Claims due reminders until `lease_until` (see the module docs).
pub async fn claim_reminders<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Vec<reminder::Model>, DbErr> {
    let free =
        || Condition::any().add(reminder::Column::LeaseUntil.is_null()).add(reminder::Column::LeaseUntil.lt(now));
    reminder::Entity::update_many()
        .col_expr(reminder::Column::LeaseUntil, Expr::value(lease_until))
        .filter(reminder::Column::DoneAt.is_null())
        .filter(reminder::Column::DueAt.lte(now))
        .filter(free())
        .exec_with_returning(db)
        .await
}

/// Fired: next time at `next_due`, at `level`; releases the lease.
pub async fn reschedule_reminder<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    level: i32,
    next_due: DateTime<Utc>,
) -> Result<(), DbErr> {
    reminder::Entity::update_many()
        .col_expr(reminder::Column::Level, Expr::value(level))
        .col_expr(reminder::Column::DueAt, Expr::value(next_due))
        .col_expr(reminder::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(reminder::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The subject was dealt with: the reminder stops.
pub async fn finish_reminder<C: ConnectionTrait>(db: &C, id: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
    reminder::Entity::update_many()
        .col_expr(reminder::Column::DoneAt, Expr::value(now))
        .col_expr(reminder::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(reminder::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes the reminder for `purpose` on a subject; `false` when there was none (another
/// instance took it first). Used as the claim of one-shot reminders.
pub async fn take_reminder<C: ConnectionTrait>(
    db: &C,
    purpose: &str,
    subject_type: &str,
    subject: Uuid,
) -> Result<bool, DbErr> {
    let done = reminder::Entity::delete_many()
        .filter(reminder::Column::Purpose.eq(purpose))
        .filter(reminder::Column::SubjectType.eq(subject_type))
        .filter(reminder::Column::SubjectId.eq(subject))
        .exec(db)
        .await?;
    Ok(done.rows_affected > 0)
}
