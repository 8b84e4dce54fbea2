//! Telemetry and its consequences: raw readings, rollups for curves, events, alarm/fault
//! episodes, hazards with their transitions, and the dead-letter log of rejected input.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::index;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000002_telemetry"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Raw readings: one row per detector per message. (detector_id, at) is unique so a
        // redelivered message (same device time) is stored once, across restarts too.
        manager
            .create_table(
                Table::create()
                    .table("readings")
                    .col(big_pk_auto("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("detector_id"))
                    .col(timestamp_with_time_zone("at"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(text("values"))
                    .take(),
            )
            .await?;
        manager.create_index(index("readings", "readings_detector_at", &["detector_id", "at"], true)).await?;

        // Per-channel min/max/sum/count per bucket (minute, hour, day) for curves.
        manager
            .create_table(
                Table::create()
                    .table("reading_rollups")
                    .col(uuid("detector_id"))
                    .col(string("bucket"))
                    .col(timestamp_with_time_zone("bucket_start"))
                    .col(string("channel"))
                    .col(double("min"))
                    .col(double("max"))
                    .col(double("sum"))
                    .col(big_integer("count"))
                    .primary_key(Index::create().col("detector_id").col("bucket").col("bucket_start").col("channel"))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("episodes")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(uuid("device_id"))
                    .col(uuid_null("detector_id"))
                    // The detector, or the device for device-wide conditions (offline).
                    .col(uuid("subject_id"))
                    .col(string("channel"))
                    .col(string("kind"))
                    .col(string("category"))
                    .col(string("source"))
                    .col(timestamp_with_time_zone("opened_at"))
                    .col(timestamp_with_time_zone("ingested_at"))
                    .col(timestamp_with_time_zone("last_at"))
                    .col(timestamp_with_time_zone_null("cleared_at"))
                    .col(timestamp_with_time_zone_null("closed_at"))
                    .col(integer("occurrences"))
                    .col(double_null("peak_value"))
                    .col(double_null("last_value"))
                    .col(double_null("setpoint"))
                    .take(),
            )
            .await?;
        // Rule 3: one open episode per (subject, channel, kind), race-free in the database.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX episodes_open ON episodes (subject_id, channel, kind) WHERE closed_at IS NULL",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("hazards")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(uuid_null("device_id"))
                    .col(uuid_null("detector_id"))
                    .col(uuid_null("episode_id"))
                    .col(string("kind"))
                    .col(string("category"))
                    .col(string("channel"))
                    .col(string("status"))
                    .col(integer("occurrences"))
                    .col(double_null("peak_value"))
                    .col(double_null("last_value"))
                    .col(double_null("setpoint"))
                    .col(timestamp_with_time_zone("device_at"))
                    .col(timestamp_with_time_zone("ingested_at"))
                    .col(timestamp_with_time_zone("opened_at"))
                    .col(timestamp_with_time_zone_null("first_push_at"))
                    .col(timestamp_with_time_zone_null("first_ack_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("hazards", "hazards_tenant_project", &["tenant_id", "project_id", "status"], false))
            .await?;
        manager.create_index(index("hazards", "hazards_episode", &["episode_id"], true)).await?;

        manager
            .create_table(
                Table::create()
                    .table("hazard_transitions")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("hazard_id"))
                    .col(string("from_status"))
                    .col(string("to_status"))
                    .col(string("actor"))
                    .col(uuid_null("actor_user_id"))
                    .col(text_null("note"))
                    .col(timestamp_with_time_zone("at"))
                    .take(),
            )
            .await?;
        manager.create_index(index("hazard_transitions", "hazard_transitions_hazard", &["hazard_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("events")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(uuid("device_id"))
                    .col(uuid_null("detector_id"))
                    .col(uuid_null("episode_id"))
                    .col(string("kind"))
                    .col(string("category"))
                    .col(string("source"))
                    .col(string("channel"))
                    .col(timestamp_with_time_zone("at"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(double_null("value"))
                    .col(double_null("setpoint"))
                    .col(text_null("remarks"))
                    .take(),
            )
            .await?;
        manager.create_index(index("events", "events_tenant_at", &["tenant_id", "at"], false)).await?;
        manager.create_index(index("events", "events_detector_at", &["detector_id", "at"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("dead_letters")
                    .col(pk_uuid("id"))
                    .col(uuid_null("tenant_id"))
                    .col(string_null("serial"))
                    .col(string("topic"))
                    .col(string("reason"))
                    .col(text("detail"))
                    .col(text("payload"))
                    .col(timestamp_with_time_zone("received_at"))
                    .take(),
            )
            .await?;
        manager
            .create_index(index("dead_letters", "dead_letters_tenant_at", &["tenant_id", "received_at"], false))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in
            ["dead_letters", "events", "hazard_transitions", "hazards", "episodes", "reading_rollups", "readings"]
        {
            manager.drop_table(Table::drop().table(table).if_exists().take()).await?;
        }
        Ok(())
    }
}
