//! Field operations (API version 2): work orders and their history, hazards found by people
//! and linked to work orders, patrol checkpoints, plans, tasks and check-ins, photo
//! attachments, and the idempotency record of offline operations.
//!
//! Race-freedom lives here as constraints: one task per (plan, period) — so every instance
//! may run the generation job and the database keeps one — one check-in per (task,
//! checkpoint), and one answer per (user, client id) for offline operations. Taking an open
//! work order is a conditional UPDATE (`WHERE assignee_id IS NULL`), so the first taker wins.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{fk, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000006_field_operations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Photos and other uploads. The bytes live in the object store under `storage_key`;
        // `project_id` and the subject are set when the upload is linked to something, and
        // until then only its uploader may read it.
        manager
            .create_table(
                Table::create()
                    .table("attachments")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("uploaded_by"))
                    .col(string("content_type"))
                    .col(big_integer("size"))
                    .col(string("storage_key"))
                    .col(string("sha256"))
                    .col(uuid_null("project_id"))
                    .col(string_null("subject_type"))
                    .col(uuid_null("subject_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("attachments", "tenant_id", "tenants"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("attachments", "attachments_subject", &["subject_type", "subject_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("work_orders")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(string("title"))
                    .col(text_null("description"))
                    // PENDING | ACCEPTED | IN_PROGRESS | SUBMITTED | APPROVED
                    .col(string("status"))
                    .col(uuid_null("assignee_id"))
                    .col(timestamp_with_time_zone_null("due_at"))
                    .col(text_null("report"))
                    .col(string("created_by"))
                    .col(uuid_null("created_by_user_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("submitted_at"))
                    .col(timestamp_with_time_zone_null("approved_at"))
                    .foreign_key(&mut fk("work_orders", "tenant_id", "tenants"))
                    .foreign_key(&mut fk("work_orders", "project_id", "projects"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "work_orders",
                "work_orders_tenant_project",
                &["tenant_id", "project_id", "status"],
                false,
            ))
            .await?;
        manager.create_index(index("work_orders", "work_orders_assignee", &["assignee_id", "status"], false)).await?;

        // One row per action on an order: who, when (server and device time), the note.
        manager
            .create_table(
                Table::create()
                    .table("work_order_transitions")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("work_order_id"))
                    .col(string("action"))
                    .col(string("from_status"))
                    .col(string("to_status"))
                    .col(string("actor"))
                    .col(uuid_null("actor_user_id"))
                    .col(text_null("note"))
                    .col(timestamp_with_time_zone("at"))
                    .col(timestamp_with_time_zone_null("device_at"))
                    .foreign_key(&mut fk("work_order_transitions", "work_order_id", "work_orders"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("work_order_transitions", "work_order_transitions_order", &["work_order_id"], false))
            .await?;

        // Hazards: the work order that handles them, and what a person reported. SQLite adds
        // one column per statement.
        for col in [
            ColumnDef::new("work_order_id").uuid().null().take(),
            ColumnDef::new("description").text().null().take(),
            ColumnDef::new("reported_by").uuid().null().take(),
            ColumnDef::new("checkpoint_id").uuid().null().take(),
        ] {
            manager.alter_table(Table::alter().table("hazards").add_column(col).take()).await?;
        }
        manager.create_index(index("hazards", "hazards_work_order", &["work_order_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("checkpoints")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(string("name"))
                    .col(string_null("position"))
                    // The checklist items, in order (a JSON array of strings).
                    .col(json_binary("checklist"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("checkpoints", "tenant_id", "tenants"))
                    .foreign_key(&mut fk("checkpoints", "project_id", "projects"))
                    .take(),
            )
            .await?;
        manager.create_index(index("checkpoints", "checkpoints_project", &["project_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("patrol_plans")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(string("name"))
                    // DAILY | WEEKLY | MONTHLY
                    .col(string("schedule"))
                    .col(date("starts_on"))
                    .col(boolean("active"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("patrol_plans", "tenant_id", "tenants"))
                    .foreign_key(&mut fk("patrol_plans", "project_id", "projects"))
                    .take(),
            )
            .await?;
        manager.create_index(index("patrol_plans", "patrol_plans_project", &["project_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("patrol_plan_checkpoints")
                    .col(uuid("plan_id"))
                    .col(uuid("checkpoint_id"))
                    .col(integer("position"))
                    .primary_key(Index::create().col("plan_id").col("checkpoint_id"))
                    .foreign_key(&mut fk("patrol_plan_checkpoints", "plan_id", "patrol_plans"))
                    .foreign_key(&mut fk("patrol_plan_checkpoints", "checkpoint_id", "checkpoints"))
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("patrol_plan_assignees")
                    .col(uuid("plan_id"))
                    .col(uuid("user_id"))
                    .primary_key(Index::create().col("plan_id").col("user_id"))
                    .foreign_key(&mut fk("patrol_plan_assignees", "plan_id", "patrol_plans"))
                    .foreign_key(&mut fk("patrol_plan_assignees", "user_id", "users"))
                    .take(),
            )
            .await?;
        manager.create_index(index("patrol_plan_assignees", "patrol_plan_assignees_user", &["user_id"], false)).await?;

        // One task per plan and period: the unique key lets every instance generate and the
        // database keep exactly one.
        manager
            .create_table(
                Table::create()
                    .table("patrol_tasks")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(uuid("plan_id"))
                    .col(date("period_start"))
                    .col(timestamp_with_time_zone("starts_at"))
                    .col(timestamp_with_time_zone("due_at"))
                    // DUE | IN_PROGRESS | DONE | MISSED
                    .col(string("status"))
                    .col(timestamp_with_time_zone_null("done_at"))
                    .col(timestamp_with_time_zone_null("missed_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk("patrol_tasks", "plan_id", "patrol_plans"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("patrol_tasks", "patrol_tasks_plan_period", &["plan_id", "period_start"], true))
            .await?;
        manager
            .create_index(index("patrol_tasks", "patrol_tasks_status_due", &["tenant_id", "status", "due_at"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("check_ins")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(uuid("task_id"))
                    .col(uuid("checkpoint_id"))
                    .col(string("actor"))
                    .col(uuid_null("user_id"))
                    // Device time of the scan, and when the server received it.
                    .col(timestamp_with_time_zone("at"))
                    .col(timestamp_with_time_zone("received_at"))
                    // [{"item": …, "ok": …, "note": …}] in checklist order.
                    .col(json_binary("answers"))
                    .col(text_null("note"))
                    .foreign_key(&mut fk("check_ins", "task_id", "patrol_tasks"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("check_ins", "check_ins_task_checkpoint", &["task_id", "checkpoint_id"], true))
            .await?;

        // The answer given to an offline operation the first time, under (user, client id).
        manager
            .create_table(
                Table::create()
                    .table("field_operations")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(uuid("client_id"))
                    .col(string("kind"))
                    .col(uuid_null("entity_id"))
                    .col(timestamp_with_time_zone_null("device_at"))
                    .col(timestamp_with_time_zone("recorded_at"))
                    .foreign_key(&mut fk("field_operations", "user_id", "users"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("field_operations", "field_operations_client", &["user_id", "client_id"], true))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "field_operations",
            "check_ins",
            "patrol_tasks",
            "patrol_plan_assignees",
            "patrol_plan_checkpoints",
            "patrol_plans",
            "checkpoints",
            "work_order_transitions",
            "work_orders",
            "attachments",
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().take()).await?;
        }
        manager.drop_index(Index::drop().name("hazards_work_order").table("hazards").to_owned()).await?;
        for col in ["checkpoint_id", "reported_by", "description", "work_order_id"] {
            manager.alter_table(Table::alter().table("hazards").drop_column(col).take()).await?;
        }
        Ok(())
    }
}
