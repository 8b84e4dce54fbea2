//! Notifications: phones' push tokens, each user's notification preferences, the delivery
//! log (which is also the delivery queue), general reminders (escalation of unacknowledged
//! alarms now, overdue work orders later) and each tenant's escalation policy.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{fk, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000003_notifications"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A token identifies one app install; it belongs to whoever registered it last.
        // `session_id` is the sign-in (refresh-token family) it was registered in, so that
        // signing out of one phone removes that phone's token only.
        manager
            .create_table(
                Table::create()
                    .table("push_tokens")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(uuid_null("session_id"))
                    .col(string("platform"))
                    .col(string_uniq("token"))
                    .col(string("app_id"))
                    .col(string("locale"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk("push_tokens", "user_id", "users"))
                    .take(),
            )
            .await?;
        manager.create_index(index("push_tokens", "push_tokens_user", &["user_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("notification_preferences")
                    .col(pk_uuid("user_id"))
                    .col(uuid("tenant_id"))
                    // JSON list of event category codes the user wants pushed; alarms always are.
                    .col(text("categories"))
                    .col(string("min_severity"))
                    // Quiet hours as minutes after midnight in the user's UTC offset; alarms ignore them.
                    .col(integer_null("quiet_start_min"))
                    .col(integer_null("quiet_end_min"))
                    .col(integer("utc_offset_min"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk("notification_preferences", "user_id", "users"))
                    .take(),
            )
            .await?;

        // One row per (notification, device token): the delivery log admins read and the
        // queue senders claim (`status` QUEUED, `next_attempt_at` due, lease expired).
        manager
            .create_table(
                Table::create()
                    .table("notifications")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(uuid_null("token_id"))
                    .col(string("platform"))
                    .col(string("token_tail"))
                    .col(uuid_null("project_id"))
                    .col(uuid_null("hazard_id"))
                    .col(uuid_null("event_id"))
                    // alarm | escalation | reminder
                    .col(string("reason"))
                    .col(string("category"))
                    .col(string("title"))
                    .col(text("body"))
                    .col(text("data"))
                    .col(string("priority"))
                    .col(string("status"))
                    .col(integer("attempts"))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    .col(timestamp_with_time_zone_null("lease_until"))
                    .col(string_null("provider_id"))
                    .col(integer_null("last_status"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("first_attempt_at"))
                    .col(timestamp_with_time_zone_null("sent_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("notifications", "notifications_queue", &["status", "next_attempt_at"], false))
            .await?;
        manager.create_index(index("notifications", "notifications_tenant", &["tenant_id", "id"], false)).await?;
        manager.create_index(index("notifications", "notifications_hazard", &["hazard_id"], false)).await?;

        // General reminders: something must happen to `subject` by `due_at`; the job fires
        // it (at `level`), then repeats every `every_s` until the subject is dealt with.
        // `lease_until` is the cross-instance lock: an instance claims a due reminder with a
        // conditional UPDATE, so exactly one fires it.
        manager
            .create_table(
                Table::create()
                    .table("reminders")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string("purpose"))
                    .col(string("subject_type"))
                    .col(uuid("subject_id"))
                    .col(timestamp_with_time_zone("due_at"))
                    .col(integer("every_s"))
                    .col(integer("level"))
                    .col(timestamp_with_time_zone_null("lease_until"))
                    .col(timestamp_with_time_zone_null("done_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .take(),
            )
            .await?;
        manager.create_index(index("reminders", "reminders_due", &["done_at", "due_at"], false)).await?;
        manager
            .create_index(index("reminders", "reminders_subject", &["subject_type", "subject_id", "purpose"], true))
            .await?;

        // The tenant's escalation policy (minutes), one column each so both databases can
        // add them in place.
        for (col, default) in [("escalate_after_min", 10), ("escalate_every_min", 10)] {
            manager
                .alter_table(
                    Table::alter().table("tenants").add_column(integer(col).default(default).not_null()).take(),
                )
                .await?;
        }
        Ok(())
    }
}
