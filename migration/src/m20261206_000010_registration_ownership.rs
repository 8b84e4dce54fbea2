//! Who may register what in a hosted deployment (issue 14, DEVICE-PROTOCOL.md §3 "Modbus
//! gateways"): the tenant owning each Modbus gateway address, and the pool of serial claim
//! codes loaded from the manufacturers' lists (only digests of the codes are stored).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::fk;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000010_registration_ownership"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("gateway_owners")
                    // `host:port` as polled (host lower-cased): one owner per address.
                    .col(string("endpoint").primary_key())
                    .col(uuid("tenant_id"))
                    .col(timestamp_with_time_zone("claimed_at"))
                    // Set when the owner's last device on the address is removed; the address
                    // stays the owner's for a hold period after it, then anyone may take it.
                    .col(timestamp_with_time_zone_null("released_at"))
                    .foreign_key(&mut fk("gateway_owners", "tenant_id", "tenants"))
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("serial_claims")
                    .col(string("serial").primary_key())
                    // HMAC-SHA256 of the claim code keyed with the serial (`c1:` + hex).
                    .col(string("digest"))
                    .col(timestamp_with_time_zone("loaded_at"))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("serial_claims").if_exists().take()).await?;
        manager.drop_table(Table::drop().table("gateway_owners").if_exists().take()).await
    }
}
