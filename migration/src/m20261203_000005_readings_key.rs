//! Raw readings are keyed by `(detector_id, at)`, which was unique already: the surrogate
//! `id` went. It cost a sequence value and a second index entry for every reading stored,
//! and nothing looked rows up by it; 1,000-row batch inserts on PostgreSQL took ~40 % less
//! time without it (BENCHMARKS.md, ingestion run 11).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::index;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000005_readings_key"
    }
}

/// The readings columns, copied as they are when the table is rebuilt.
const COLUMNS: &str = r#"tenant_id, detector_id, at, received_at, "values""#;

/// `readings` rebuilt under `name`: with the surrogate id (`keyed` false) or keyed by
/// detector and device time.
fn readings_table(name: &'static str, keyed: bool) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(name);
    if !keyed {
        t.col(big_pk_auto("id"));
    }
    t.col(uuid("tenant_id"))
        .col(uuid("detector_id"))
        .col(timestamp_with_time_zone("at"))
        .col(timestamp_with_time_zone("received_at"))
        .col(text("values"));
    if keyed {
        t.primary_key(Index::create().col("detector_id").col("at"));
    }
    t.take()
}

/// Copies every reading into `into` (shaped by [`readings_table`]) and puts it in the place
/// of `readings`.
async fn rebuild(manager: &SchemaManager<'_>, into: &'static str, keyed: bool) -> Result<(), DbErr> {
    manager.create_table(readings_table(into, keyed)).await?;
    manager
        .get_connection()
        .execute_unprepared(&format!("INSERT INTO {into} ({COLUMNS}) SELECT {COLUMNS} FROM readings"))
        .await?;
    manager.drop_table(Table::drop().table("readings").take()).await?;
    manager.rename_table(Table::rename().table(into, "readings").take()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too: the rebuild's statements must run on one connection.
    /// Spread over the pool, a connection whose cached schema still had the old `readings`
    /// refused the rename now and then ("there is already another table or index with this
    /// name"), and a failure half-way would have left the table dropped.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            // In place, without copying: the unique index becomes the primary key.
            let db = manager.get_connection();
            db.execute_unprepared("ALTER TABLE readings DROP COLUMN id").await?;
            db.execute_unprepared(
                "ALTER TABLE readings ADD CONSTRAINT readings_pkey PRIMARY KEY USING INDEX readings_detector_at",
            )
            .await?;
            return Ok(());
        }
        // SQLite cannot drop a primary-key column: the table is rebuilt.
        rebuild(manager, "readings_keyed", true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, "readings_with_id", false).await?;
        manager.create_index(index("readings", "readings_detector_at", &["detector_id", "at"], true)).await
    }
}
