//! API keys scoped for control commands (docs/PRIVILEGES.md): trip, close, reset, silence
//! and set-points are refused to API keys unless the key was issued with this scope.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000011_control_commands"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Existing keys stay unscoped: they lose control commands, which is the point.
        manager
            .alter_table(Table::alter().table("api_keys").add_column(boolean("control_commands").default(false)).take())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("api_keys").drop_column("control_commands").take()).await
    }
}
