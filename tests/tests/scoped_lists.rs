//! Tenant-wide lists respect project scope for custom roles, and push tokens stay in their
//! tenant, over real HTTP on SQLite and (when configured) PostgreSQL: a user limited to the
//! school sees only the school's dead letters and notifications, and only its own operations;
//! a push token registered by another tenant's user is refused (`CONFLICT`), not moved.

use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::json;
use sparkwatch_api::store::telemetry::{self, DeadLetter};
use sparkwatch_entity::{device, notification};
use sparkwatch_tests::{TestServer, backends};

const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;
const REGISTER: &str = "mutation($t: String!) { registerPushToken(input: {platform: ANDROID, token: $t, appId: \"cn.sparkwatch\"}) { id } }";

/// A notification row of `tenant` about `project`.
fn notification_of(tenant: uuid::Uuid, user: uuid::Uuid, project: uuid::Uuid) -> notification::ActiveModel {
    let now = chrono::Utc::now();
    notification::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant),
        user_id: Set(user),
        token_id: Set(None),
        platform: Set("ANDROID".into()),
        token_tail: Set("abcd".into()),
        project_id: Set(Some(project)),
        hazard_id: Set(None),
        event_id: Set(None),
        reason: Set("responsible".into()),
        category: Set("ALARM".into()),
        title: Set("t".into()),
        body: Set("b".into()),
        data: Set("{}".into()),
        priority: Set("high".into()),
        status: Set("SENT".into()),
        attempts: Set(1),
        next_attempt_at: Set(now),
        lease_until: Set(None),
        provider_id: Set(None),
        last_status: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        first_attempt_at: Set(None),
        sent_at: Set(None),
        updated_at: Set(now),
    }
}

#[tokio::test]
async fn dead_letters_notifications_and_the_log_follow_project_scope() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let db = server.services.store().db();
        let devices = device::Entity::find().all(db).await?;
        let dev = |serial: &str| devices.iter().find(|d| d.serial == serial).cloned();
        let (mall, school) = (dev("SW-DEMO-0001"), dev("SW-DEMO-0101"));
        let (mall, school) =
            (mall.ok_or_else(|| anyhow::anyhow!("mall"))?, school.ok_or_else(|| anyhow::anyhow!("school"))?);
        for d in [&mall, &school] {
            let topic = format!("sw/{}/telemetry", d.serial);
            let letter = DeadLetter {
                tenant: Some(d.tenant_id.into()),
                serial: Some(&d.serial),
                topic: &topic,
                reason: "malformed",
                detail: "not JSON",
                payload: b"x",
                at: chrono::Utc::now(),
            };
            telemetry::insert_dead_letter(db, letter).await?;
        }
        let admin_id = admin.ok("{ me { id } }", json!({})).await?["me"]["id"].as_str().unwrap_or_default().parse()?;
        for d in [&mall, &school] {
            notification::Entity::insert(notification_of(d.tenant_id, admin_id, d.project_id))
                .exec_without_returning(db)
                .await?;
        }
        let role = admin
            .ok("mutation { createRole(input: {name: \"Auditor\", permissions: [\"site.read\", \"hazard.read\", \"device.manage\", \"oplog.read\"]}) { id } }", json!({}))
            .await?["createRole"]["id"]
            .clone();
        let input = json!({"email": "audit@demo.local", "password": PASSWORD, "roleId": role, "projectIds": [school.project_id.to_string()]});
        admin.ok("mutation($i: CreateUserInput!) { createUser(input: $i) { id } }", json!({"i": input})).await?;
        let auditor = server.login("audit@demo.local", PASSWORD).await?;

        let letters = "{ deadLetters { totalCount edges { node { serial } } } }";
        assert_eq!(admin.ok(letters, json!({})).await?["deadLetters"]["totalCount"], 2);
        let mine = auditor.ok(letters, json!({})).await?;
        assert_eq!(mine["deadLetters"]["totalCount"], 1, "{mine}");
        assert_eq!(mine["deadLetters"]["edges"][0]["node"]["serial"], "SW-DEMO-0101");

        let notes = "{ notifications(first: 50) { totalCount } }";
        assert_eq!(admin.ok(notes, json!({})).await?["notifications"]["totalCount"], 2);
        assert_eq!(auditor.ok(notes, json!({})).await?["notifications"]["totalCount"], 1);

        // The log has no project column: a scoped caller sees its own operations only.
        let log = "{ operationLog(first: 200) { totalCount edges { node { actor } } } }";
        let all = admin.ok(log, json!({})).await?;
        assert!(all["operationLog"]["totalCount"].as_u64().is_some_and(|n| n > 2), "{all}");
        auditor.ok(REGISTER, json!({"t": "auditor-phone-token"})).await?;
        let own = auditor.ok(log, json!({})).await?;
        let actors: Vec<_> = own["operationLog"]["edges"].as_array().cloned().unwrap_or_default();
        assert_eq!(actors.len(), 1, "{own}");
        assert_eq!(actors[0]["node"]["actor"], "audit@demo.local");
    }
    Ok(())
}

#[tokio::test]
async fn push_tokens_do_not_move_across_tenants() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let a = server.demo_login("manager@demo.local").await?;
        let b = server.demo_login("admin@demo-b.local").await?;
        a.ok(REGISTER, json!({"t": "phone-token-1"})).await?;
        let res = b.run(REGISTER, json!({"t": "phone-token-1"})).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "CONFLICT", "{res}");
        let tokens = server.services.store().db();
        let stored = sparkwatch_entity::push_token::Entity::find().all(tokens).await?;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].tenant_id, a_tenant(&server, "manager@demo.local").await?);
        // Within a tenant a phone may change hands (the same install, another colleague).
        let admin = server.demo_login("admin@demo.local").await?;
        admin.ok(REGISTER, json!({"t": "phone-token-1"})).await?;
    }
    Ok(())
}

async fn a_tenant(server: &TestServer, email: &str) -> anyhow::Result<uuid::Uuid> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let u = sparkwatch_entity::user::Entity::find()
        .filter(sparkwatch_entity::user::Column::Email.eq(email))
        .one(server.services.store().db())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no {email}"))?;
    u.tenant_id.ok_or_else(|| anyhow::anyhow!("no tenant"))
}
