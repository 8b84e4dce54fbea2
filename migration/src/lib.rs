//! Schema migrations of the Sparkwatch store, for SQLite and PostgreSQL alike.
//!
//! Layout: one module per migration, applied in order by [`Migrator`]. Migrations only
//! shape the schema; they never insert data (demo data is seeded by the server) and never
//! import the entity crate, so old migrations keep compiling as models change.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_foundation;
mod m20261124_000002_telemetry;
mod m20261124_000003_notifications;
mod m20261124_000004_commands;
mod m20261203_000005_readings_key;
mod m20261206_000006_field_operations;
mod m20261206_000008_check_in_hazards;
mod m20261206_000009_device_credentials;
mod m20261206_000010_registration_ownership;
mod m20261206_000011_control_commands;
mod m20261206_000013_dead_letter_expiry;

/// Applies the project's migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_foundation::Migration),
            Box::new(m20261124_000002_telemetry::Migration),
            Box::new(m20261124_000003_notifications::Migration),
            Box::new(m20261124_000004_commands::Migration),
            Box::new(m20261203_000005_readings_key::Migration),
            Box::new(m20261206_000006_field_operations::Migration),
            Box::new(m20261206_000008_check_in_hazards::Migration),
            Box::new(m20261206_000009_device_credentials::Migration),
            Box::new(m20261206_000010_registration_ownership::Migration),
            Box::new(m20261206_000011_control_commands::Migration),
            Box::new(m20261206_000013_dead_letter_expiry::Migration),
        ]
    }
}

/// An index on `cols` of `table`, unique or not; the one spelling all migrations share.
pub(crate) fn index(table: &'static str, name: &str, cols: &[&'static str], unique: bool) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for c in cols {
        stmt.col(*c);
    }
    if unique {
        stmt.unique();
    }
    stmt.take()
}

/// A foreign key to `to_table.id` that cascades deletes.
pub(crate) fn fk(
    from_table: &'static str,
    from_col: &'static str,
    to_table: &'static str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create().from(from_table, from_col).to(to_table, "id").on_delete(ForeignKeyAction::Cascade).take()
}
