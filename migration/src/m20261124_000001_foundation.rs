//! Tenants, identity and access, sites (projects, devices, detectors), thresholds and the
//! append-only operation log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::{fk, index};
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000001_foundation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenants")
                    .col(pk_uuid("id"))
                    .col(string_uniq("name"))
                    .col(boolean("active"))
                    .col(timestamp_with_time_zone("created_at"))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("roles")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string("name"))
                    .col(json_binary("permissions"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("roles", "tenant_id", "tenants"))
                    .take(),
            )
            .await?;
        manager.create_index(index("roles", "roles_tenant_name", &["tenant_id", "name"], true)).await?;

        // Built-in roles live in code (domain::access::BuiltinRole) and are named by
        // `role_key`; a tenant-defined role is `role_key = 'custom'` plus `custom_role_id`.
        manager
            .create_table(
                Table::create()
                    .table("users")
                    .col(pk_uuid("id"))
                    .col(uuid_null("tenant_id"))
                    .col(string_null("email"))
                    .col(string_null("phone"))
                    .col(string("display_name"))
                    .col(string("password_hash"))
                    .col(string("locale"))
                    .col(boolean("active"))
                    .col(string("role_key"))
                    .col(uuid_null("custom_role_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("last_login_at"))
                    .foreign_key(&mut fk("users", "tenant_id", "tenants"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("users", "custom_role_id")
                            .to("roles", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .take(),
            )
            .await?;
        manager.create_index(index("users", "users_email", &["email"], true)).await?;
        manager.create_index(index("users", "users_phone", &["phone"], true)).await?;
        manager.create_index(index("users", "users_tenant", &["tenant_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("projects")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string("name"))
                    .col(string_null("address"))
                    .col(string_null("contact_name"))
                    .col(string_null("contact_phone"))
                    .col(double_null("building_area_m2"))
                    .col(double_null("latitude"))
                    .col(double_null("longitude"))
                    .col(string_null("region"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("projects", "tenant_id", "tenants"))
                    .take(),
            )
            .await?;
        manager.create_index(index("projects", "projects_tenant_name", &["tenant_id", "name"], true)).await?;

        manager
            .create_table(
                Table::create()
                    .table("user_project_scopes")
                    .col(uuid("user_id"))
                    .col(uuid("project_id"))
                    .primary_key(Index::create().col("user_id").col("project_id"))
                    .foreign_key(&mut fk("user_project_scopes", "user_id", "users"))
                    .foreign_key(&mut fk("user_project_scopes", "project_id", "projects"))
                    .take(),
            )
            .await?;

        // The serial is the MQTT client id and topic segment, so it is unique platform-wide.
        manager
            .create_table(
                Table::create()
                    .table("devices")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(string_uniq("serial"))
                    .col(string("name"))
                    .col(string_null("model"))
                    .col(string_null("device_type"))
                    .col(string("transport"))
                    .col(string_null("host"))
                    .col(integer_null("port"))
                    .col(integer("interval_s"))
                    .col(string_null("region"))
                    .col(string_null("position"))
                    .col(boolean("online"))
                    .col(timestamp_with_time_zone_null("last_seen_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("devices", "tenant_id", "tenants"))
                    .foreign_key(&mut fk("devices", "project_id", "projects"))
                    .take(),
            )
            .await?;
        manager.create_index(index("devices", "devices_tenant_project", &["tenant_id", "project_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("detectors")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("project_id"))
                    .col(uuid("device_id"))
                    .col(integer("address"))
                    .col(string_null("name"))
                    .col(string_null("region"))
                    .col(string_null("position"))
                    .col(integer("leak_channels"))
                    .col(integer("temp_channels"))
                    .col(boolean("has_voltage"))
                    .col(boolean("has_current"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("detectors", "tenant_id", "tenants"))
                    .foreign_key(&mut fk("detectors", "project_id", "projects"))
                    .foreign_key(&mut fk("detectors", "device_id", "devices"))
                    .take(),
            )
            .await?;
        manager.create_index(index("detectors", "detectors_device_address", &["device_id", "address"], true)).await?;
        manager
            .create_index(index("detectors", "detectors_tenant_project", &["tenant_id", "project_id"], false))
            .await?;

        // One row per (scope, scope_id); `scope` is tenant | project | detector. NULL = inherit.
        manager
            .create_table(
                Table::create()
                    .table("thresholds")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string("scope"))
                    .col(uuid("scope_id"))
                    .col(double_null("leak_ma"))
                    .col(double_null("leak_delay_s"))
                    .col(double_null("temp_c"))
                    .col(double_null("temp_delay_s"))
                    .col(double_null("overvoltage_v"))
                    .col(double_null("undervoltage_v"))
                    .col(double_null("overcurrent_a"))
                    .col(double_null("prealarm_percent"))
                    .col(double_null("hysteresis_percent"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk("thresholds", "tenant_id", "tenants"))
                    .take(),
            )
            .await?;
        manager.create_index(index("thresholds", "thresholds_scope", &["scope", "scope_id"], true)).await?;

        // Rotation: each refresh replaces its token; reuse of a replaced token revokes the family.
        manager
            .create_table(
                Table::create()
                    .table("refresh_tokens")
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    .col(uuid("family_id"))
                    .col(string_uniq("token_hash"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .col(timestamp_with_time_zone_null("replaced_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk("refresh_tokens", "user_id", "users"))
                    .take(),
            )
            .await?;
        manager.create_index(index("refresh_tokens", "refresh_tokens_family", &["family_id"], false)).await?;

        manager
            .create_table(
                Table::create()
                    .table("api_keys")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string("name"))
                    .col(string("prefix"))
                    .col(string_uniq("key_hash"))
                    .col(string("role_key"))
                    .col(uuid_null("custom_role_id"))
                    .col(json_binary_null("project_ids"))
                    .col(uuid_null("created_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("expires_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .col(timestamp_with_time_zone_null("last_used_at"))
                    .foreign_key(&mut fk("api_keys", "tenant_id", "tenants"))
                    .take(),
            )
            .await?;

        // No foreign keys: the log outlives what it talks about.
        manager
            .create_table(
                Table::create()
                    .table("operation_log")
                    .col(pk_uuid("id"))
                    .col(uuid_null("tenant_id"))
                    .col(uuid_null("actor_user_id"))
                    .col(uuid_null("actor_api_key_id"))
                    .col(string("actor"))
                    .col(string("action"))
                    .col(string("target_type"))
                    .col(string_null("target_id"))
                    .col(json_binary_null("before"))
                    .col(json_binary_null("after"))
                    .col(timestamp_with_time_zone("at"))
                    .take(),
            )
            .await?;
        manager.create_index(index("operation_log", "operation_log_tenant_at", &["tenant_id", "at"], false)).await?;
        append_only(manager, "operation_log").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "operation_log",
            "api_keys",
            "refresh_tokens",
            "thresholds",
            "detectors",
            "devices",
            "user_project_scopes",
            "projects",
            "users",
            "roles",
            "tenants",
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().take()).await?;
        }
        Ok(())
    }
}

/// Makes the database itself refuse UPDATE and DELETE on an audit table, so that no code
/// path (or hand-typed SQL) can rewrite history. GB 14287 asks that records are never
/// overwritten before export.
async fn append_only(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    match manager.get_database_backend() {
        DbBackend::Sqlite => {
            for op in ["UPDATE", "DELETE"] {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {table}_no_{op} BEFORE {op} ON {table} \
                     BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;",
                    op = op.to_lowercase()
                ))
                .await?;
            }
        }
        DbBackend::Postgres => {
            db.execute_unprepared(&format!(
                "CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION '{table} is append-only'; END; $$;"
            ))
            .await?;
            db.execute_unprepared(&format!(
                "CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {table}_append_only();"
            ))
            .await?;
        }
        _ => {}
    }
    Ok(())
}
