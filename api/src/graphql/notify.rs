//! Push notifications in the API: phones' tokens, the caller's preferences, the tenant's
//! escalation policy and the delivery log.

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::notify::{EscalationPolicy, Preferences, QuietHours, Severity};

use super::Result;
use super::guard::{Require, SignedIn, caller};
use super::hazards::EventCategoryGql;
use super::input::parse_id;
use super::object::{Conn, connection};
use crate::push::PushPlatform;
use crate::service::notify::platform_from;
use crate::service::page_request;
use crate::store::notify::{Notification, NotificationFilter as StoreFilter, PushToken, token_tail};

/// The push service a phone uses.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "PushPlatform", remote = "PushPlatform")]
pub enum PushPlatformGql {
    /// Apple Push Notification service.
    Ios,
    /// Firebase Cloud Messaging.
    Android,
}

/// How urgent an event is (alarms are critical).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "Severity", remote = "Severity")]
pub enum SeverityGql {
    /// Recoveries, status, operations.
    Info,
    /// Pre-alarms.
    Warning,
    /// Faults of the monitoring equipment.
    Major,
    /// Alarms.
    Critical,
}

/// Where one notification to one phone stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum NotificationStatus {
    /// Waiting to be sent (or to be retried).
    Queued,
    /// Held back by the recipient's quiet hours.
    Quiet,
    /// Accepted by FCM or APNs.
    Sent,
    /// The provider said the phone's token is no longer valid; it was deleted.
    InvalidToken,
    /// Refused for good, or given up after repeated failures.
    Failed,
    /// Not sent: no credentials are configured for the platform (written to the server log).
    Logged,
}

impl NotificationStatus {
    fn code(self) -> &'static str {
        match self {
            NotificationStatus::Queued => "QUEUED",
            NotificationStatus::Quiet => "QUIET",
            NotificationStatus::Sent => "SENT",
            NotificationStatus::InvalidToken => "INVALID_TOKEN",
            NotificationStatus::Failed => "FAILED",
            NotificationStatus::Logged => "LOGGED",
        }
    }

    fn from_code(code: &str) -> NotificationStatus {
        [
            NotificationStatus::Queued,
            NotificationStatus::Quiet,
            NotificationStatus::Sent,
            NotificationStatus::InvalidToken,
            NotificationStatus::Failed,
            NotificationStatus::Logged,
        ]
        .into_iter()
        .find(|s| s.code() == code)
        .unwrap_or(NotificationStatus::Failed)
    }
}

/// A phone registered for push notifications.
#[derive(InputObject)]
pub struct RegisterPushTokenInput {
    /// IOS or ANDROID.
    pub platform: PushPlatformGql,
    /// The token APNs or FCM gave the app.
    pub token: String,
    /// The app's bundle id / package name.
    pub app_id: String,
    /// Language of the notifications (`zh-CN` or `en`); the account's language by default.
    pub locale: Option<String>,
}

/// A daily period without pushes, in the user's local time (`22:00`–`07:00`); alarms still
/// come through.
#[derive(InputObject)]
pub struct QuietHoursInput {
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM` (may be earlier than the start: the period runs over midnight).
    pub end: String,
}

/// What the caller wants pushed. Alarms are always pushed, whatever is set here.
#[derive(InputObject)]
pub struct NotificationPreferencesInput {
    /// Event categories to push.
    pub categories: Vec<EventCategoryGql>,
    /// Events below this severity are not pushed.
    pub min_severity: SeverityGql,
    /// No pushes in this period (except alarms); null = none.
    pub quiet_hours: Option<QuietHoursInput>,
    /// The caller's offset from UTC in minutes (480 for China).
    pub utc_offset_minutes: i32,
}

/// When unacknowledged alarms are escalated.
#[derive(InputObject)]
pub struct EscalationPolicyInput {
    /// Minutes an alarm hazard may stay unacknowledged before the tenant's administrators
    /// are told (1–1440).
    pub after_minutes: i32,
    /// Minutes between repeats until someone acknowledges (1–1440).
    pub every_minutes: i32,
}

/// Filters of the delivery log.
#[derive(InputObject, Default)]
pub struct NotificationFilter {
    /// Only notifications about this hazard.
    pub hazard_id: Option<ID>,
    /// Only notifications to this user.
    pub user_id: Option<ID>,
    /// Only these statuses.
    pub statuses: Option<Vec<NotificationStatus>>,
}

/// A phone registered for push notifications.
pub struct PushTokenObj(pub PushToken);

#[Object(name = "PushToken")]
impl PushTokenObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// IOS or ANDROID.
    async fn platform(&self) -> PushPlatformGql {
        platform_from(&self.0.platform).into()
    }
    /// The app's bundle id / package name.
    async fn app_id(&self) -> &str {
        &self.0.app_id
    }
    /// Language of the notifications.
    async fn locale(&self) -> &str {
        &self.0.locale
    }
    /// The token's last six characters (enough to tell phones apart).
    async fn token_tail(&self) -> String {
        token_tail(&self.0.token)
    }
    /// When it was first registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was last registered again.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A period without pushes.
pub struct QuietHoursObj(pub QuietHours);

#[Object(name = "QuietHours")]
impl QuietHoursObj {
    /// Start, `HH:MM` local time.
    async fn start(&self) -> String {
        QuietHours::hhmm(self.0.start_min)
    }
    /// End, `HH:MM` local time.
    async fn end(&self) -> String {
        QuietHours::hhmm(self.0.end_min)
    }
}

/// What a user wants pushed (alarms always are).
pub struct PreferencesObj(pub Preferences);

#[Object(name = "NotificationPreferences")]
impl PreferencesObj {
    /// Event categories pushed.
    async fn categories(&self) -> Vec<EventCategoryGql> {
        self.0.categories.iter().map(|c| (*c).into()).collect()
    }
    /// Events below this severity are not pushed.
    async fn min_severity(&self) -> SeverityGql {
        self.0.min_severity.into()
    }
    /// No pushes in this period, except alarms.
    async fn quiet_hours(&self) -> Option<QuietHoursObj> {
        self.0.quiet.map(QuietHoursObj)
    }
    /// Offset from UTC, minutes.
    async fn utc_offset_minutes(&self) -> i32 {
        i32::from(self.0.utc_offset_min)
    }
}

/// When unacknowledged alarms are escalated to the tenant's administrators.
pub struct EscalationPolicyObj(pub EscalationPolicy);

#[Object(name = "EscalationPolicy")]
impl EscalationPolicyObj {
    /// Minutes before the first escalation.
    async fn after_minutes(&self) -> i32 {
        self.0.after_min as i32
    }
    /// Minutes between repeats.
    async fn every_minutes(&self) -> i32 {
        self.0.every_min as i32
    }
}

/// One push to one phone: what was sent, to whom, and what became of it.
pub struct NotificationObj(pub Notification);

#[Object(name = "Notification")]
impl NotificationObj {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The recipient.
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }
    /// IOS or ANDROID.
    async fn platform(&self) -> PushPlatformGql {
        platform_from(&self.0.platform).into()
    }
    /// The phone token's last six characters.
    async fn token_tail(&self) -> &str {
        &self.0.token_tail
    }
    /// The hazard it is about.
    async fn hazard_id(&self) -> Option<ID> {
        self.0.hazard_id.map(|h| ID(h.to_string()))
    }
    /// The event it is about.
    async fn event_id(&self) -> Option<ID> {
        self.0.event_id.map(|e| ID(e.to_string()))
    }
    /// `event` (the event itself) or `escalation` (nobody acknowledged in time).
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// Title sent.
    async fn title(&self) -> &str {
        &self.0.title
    }
    /// Text sent.
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// Delivery status.
    async fn status(&self) -> NotificationStatus {
        NotificationStatus::from_code(&self.0.status)
    }
    /// Attempts made.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// The provider's message id.
    async fn provider_id(&self) -> Option<&str> {
        self.0.provider_id.as_deref()
    }
    /// The provider's last error, if any.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// When it was queued.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// First delivery attempt.
    async fn first_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.first_attempt_at
    }
    /// When the provider accepted it.
    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent_at
    }
    /// Next attempt, while queued.
    async fn next_attempt_at(&self) -> DateTime<Utc> {
        self.0.next_attempt_at
    }
}

/// Notification queries.
#[derive(Default)]
pub struct NotifyQuery;

#[Object]
impl NotifyQuery {
    /// The caller's phones registered for push notifications.
    #[graphql(guard = "SignedIn")]
    async fn push_tokens(&self, ctx: &Context<'_>) -> Result<Vec<PushTokenObj>> {
        let (s, who) = caller(ctx)?;
        Ok(s.push_tokens(who).await?.into_iter().map(PushTokenObj).collect())
    }

    /// What the caller wants pushed.
    #[graphql(guard = "SignedIn")]
    async fn notification_preferences(&self, ctx: &Context<'_>) -> Result<PreferencesObj> {
        let (s, who) = caller(ctx)?;
        Ok(PreferencesObj(s.notification_preferences(who).await?))
    }

    /// When the tenant escalates unacknowledged alarms.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn escalation_policy(&self, ctx: &Context<'_>) -> Result<EscalationPolicyObj> {
        let (s, who) = caller(ctx)?;
        Ok(EscalationPolicyObj(s.escalation_policy(who).await?))
    }

    /// The tenant's push delivery log, newest first.
    #[graphql(
        guard = "Require(Permission::OperationLogRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        filter: Option<NotificationFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<NotificationObj>> {
        let (s, who) = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let filter = StoreFilter {
            hazard: f.hazard_id.as_ref().map(|h| parse_id("hazardId", h)).transpose()?,
            user: f.user_id.as_ref().map(|u| parse_id("userId", u)).transpose()?,
            statuses: f.statuses.map(|s| s.into_iter().map(|x| x.code().to_owned()).collect()),
        };
        let page = s.notifications(who, &filter, page_request(first, after.as_deref())?).await?;
        Ok(connection(page, |n| n.id.to_string(), NotificationObj))
    }
}

/// Notification mutations.
#[derive(Default)]
pub struct NotifyMutation;

#[Object]
impl NotifyMutation {
    /// Registers the caller's phone for push notifications. Registering the same token
    /// again updates it (and moves it to the caller); signing out removes it.
    #[graphql(guard = "SignedIn")]
    async fn register_push_token(&self, ctx: &Context<'_>, input: RegisterPushTokenInput) -> Result<PushTokenObj> {
        let (s, who) = caller(ctx)?;
        let t = s
            .register_push_token(who, input.platform.into(), &input.token, &input.app_id, input.locale.as_deref())
            .await?;
        Ok(PushTokenObj(t))
    }

    /// Stops push notifications to one of the caller's phones; false when it was not
    /// registered.
    #[graphql(guard = "SignedIn")]
    async fn unregister_push_token(&self, ctx: &Context<'_>, token: String) -> Result<bool> {
        let (s, who) = caller(ctx)?;
        Ok(s.unregister_push_token(who, &token).await?)
    }

    /// Replaces what the caller wants pushed. Alarms are always pushed.
    #[graphql(guard = "SignedIn")]
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        input: NotificationPreferencesInput,
    ) -> Result<PreferencesObj> {
        let (s, who) = caller(ctx)?;
        let quiet = input.quiet_hours.map(|q| QuietHours::parse(&q.start, &q.end)).transpose()?;
        let prefs = Preferences {
            categories: input.categories.into_iter().map(Into::into).collect(),
            min_severity: input.min_severity.into(),
            quiet,
            utc_offset_min: Preferences::check_offset(input.utc_offset_minutes)?,
        };
        Ok(PreferencesObj(s.update_notification_preferences(who, prefs).await?))
    }

    /// Changes when the tenant escalates unacknowledged alarms to its administrators.
    #[graphql(guard = "Require(Permission::ThresholdManage)")]
    async fn update_escalation_policy(
        &self,
        ctx: &Context<'_>,
        input: EscalationPolicyInput,
    ) -> Result<EscalationPolicyObj> {
        let (s, who) = caller(ctx)?;
        let minutes = |field: &str, v: i32| {
            u32::try_from(v).map_err(|_| crate::error::AppError::invalid(field, "must be between 1 and 1440 minutes"))
        };
        let p = EscalationPolicy::new(
            minutes("afterMinutes", input.after_minutes)?,
            minutes("everyMinutes", input.every_minutes)?,
        )?;
        Ok(EscalationPolicyObj(s.update_escalation_policy(who, p).await?))
    }
}
