//! The hazards reported within a patrol check-in (a check-in may report several; a hazard
//! belongs to at most one check-in).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{fk, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000008_check_in_hazards"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("check_in_hazards")
                    .col(uuid("check_in_id"))
                    .col(uuid("hazard_id"))
                    .primary_key(Index::create().col("check_in_id").col("hazard_id"))
                    .foreign_key(&mut fk("check_in_hazards", "check_in_id", "check_ins"))
                    .foreign_key(&mut fk("check_in_hazards", "hazard_id", "hazards"))
                    .take(),
            )
            .await?;
        manager.create_index(index("check_in_hazards", "check_in_hazards_hazard", &["hazard_id"], true)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("check_in_hazards").if_exists().take()).await
    }
}
