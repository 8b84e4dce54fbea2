//! Dead letters expire (`--dead-letter-retention-days`): the expiry deletes across tenants by
//! receive time, which the `(tenant_id, received_at)` index does not lead with.

use sea_orm_migration::prelude::*;

use crate::index;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000013_dead_letter_expiry"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(index("dead_letters", "dead_letters_received_at", &["received_at"], false)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("dead_letters_received_at").table("dead_letters").to_owned()).await
    }
}
