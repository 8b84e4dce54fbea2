//! Remote commands (遥控): the command ledger. One row per command from the moment it is
//! accepted; the status moves `QUEUED → SENT → ACKNOWLEDGED | FAILED | EXPIRED` with
//! conditional UPDATEs (`WHERE status IN (…)`), so several instances and late device answers
//! can never move a finished command.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{fk, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000004_commands"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("commands")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    // Denormalised from the detector so scope checks need no join.
                    .col(uuid("project_id"))
                    .col(uuid("device_id"))
                    .col(uuid("detector_id"))
                    // trip | close | reset | self_test | silence | set_thresholds (wire names)
                    .col(string("op"))
                    // Set-points of set_thresholds, as the API named them (`leakMa`, …).
                    .col(json_binary_null("params"))
                    .col(string("status"))
                    .col(text_null("reason"))
                    // The actor as the operation log shows it, and who it was.
                    .col(string("actor"))
                    .col(uuid_null("actor_user_id"))
                    .col(uuid_null("actor_api_key_id"))
                    // MQTT | MODBUS_TCP, fixed when the command is accepted.
                    .col(string("transport"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("sent_at"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    // The outcome: the device's ok/code/msg, an exception code or read-back mismatches.
                    .col(json_binary_null("result"))
                    .foreign_key(&mut fk("commands", "detector_id", "detectors"))
                    .take(),
            )
            .await?;
        // Open commands by expiry (the expiry job) and by transport (Modbus dispatch).
        manager.create_index(index("commands", "commands_open", &["status", "expires_at"], false)).await?;
        // A detector's commands, newest first (cool-down, lists); ids are time-ordered.
        manager.create_index(index("commands", "commands_detector", &["detector_id", "id"], false)).await?;
        manager.create_index(index("commands", "commands_tenant", &["tenant_id", "id"], false)).await?;
        Ok(())
    }
}
