//! Device credentials (DEVICE-PROTOCOL.md §3): one secret per MQTT device, stored only as a
//! keyed digest. A device without a row here cannot connect.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::fk;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000009_device_credentials"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("device_credentials")
                    // One secret per device; issuing again replaces it (rotation).
                    .col(uuid("device_id").primary_key())
                    .col(string("digest"))
                    .col(timestamp_with_time_zone("issued_at"))
                    .col(uuid_null("issued_by"))
                    .foreign_key(&mut fk("device_credentials", "device_id", "devices"))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("device_credentials").if_exists().take()).await
    }
}
