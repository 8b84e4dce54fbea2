//! The grants rule over real HTTP, on SQLite and (when configured) PostgreSQL: nobody grants
//! what they do not hold or manages a user (or edits a role) holding more. A `user.manage`
//! holder cannot make itself tenant admin, reset an admin's password or deactivate one; a
//! `role.manage` holder cannot build a role with permissions it lacks; an `apikey.manage`
//! holder cannot issue a key holding more than itself. Refusals are `FORBIDDEN` with
//! `extensions.field` naming the input.

use serde_json::{Value, json};
use sparkwatch_tests::{Gql, TestServer, backends, forbidden};

const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;
const NEW_PASSWORD: &str = "N3w-passw0rd!";
const CREATE_ROLE: &str = "mutation($i: CreateRoleInput!) { createRole(input: $i) { id permissions } }";
const UPDATE_ROLE: &str = "mutation($i: UpdateRoleInput!) { updateRole(input: $i) { id permissions } }";
const DELETE_ROLE: &str = "mutation($id: ID!) { deleteRole(id: $id) }";
const CREATE_USER: &str = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }";
const UPDATE_USER: &str = "mutation($i: UpdateUserInput!) { updateUser(input: $i) { id active role { id } } }";
const CREATE_KEY: &str = "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }";

/// The ids of the demo mall and school.
async fn projects(admin: &Gql) -> anyhow::Result<(String, String)> {
    let r = admin.ok("{ projects(first: 10) { nodes { id name } } }", json!({})).await?;
    let nodes = r["projects"]["nodes"].as_array().cloned().unwrap_or_default();
    let id = |prefix: &str| {
        nodes
            .iter()
            .find(|n| n["name"].as_str().is_some_and(|s| s.contains(prefix)))
            .and_then(|n| n["id"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no project {prefix} in {r}"))
    };
    Ok((id("Mall")?, id("School")?))
}

/// The id of the user signing in as `email`.
async fn user_id(admin: &Gql, email: &str) -> anyhow::Result<String> {
    let r = admin
        .ok("query($s: String) { users(search: $s, first: 5) { nodes { id email } } }", json!({"s": email}))
        .await?;
    r["users"]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|u| u["email"] == email))
        .and_then(|u| u["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no user {email}: {r}"))
}

/// Creates a custom role as `admin`; returns its id.
async fn role(admin: &Gql, name: &str, permissions: &[&str]) -> anyhow::Result<String> {
    let r = admin.ok(CREATE_ROLE, json!({"i": {"name": name, "permissions": permissions}})).await?;
    Ok(r["createRole"]["id"].as_str().unwrap_or_default().to_owned())
}

/// Creates a user with `role` in `projects` as `admin` and signs in as it.
async fn desk(server: &TestServer, admin: &Gql, email: &str, role: &str, projects: &[&str]) -> anyhow::Result<Gql> {
    let input = json!({"email": email, "password": PASSWORD, "roleId": role, "projectIds": projects});
    admin.ok(CREATE_USER, json!({"i": input})).await?;
    server.login(email, PASSWORD).await
}

#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, school) = projects(&admin).await?;
        let user_desk = role(&admin, "User desk", &["user.manage", "site.read", "hazard.read"]).await?;
        let role_desk = role(&admin, "Role desk", &["role.manage", "site.read"]).await?;
        let key_desk = role(&admin, "Key desk", &["apikey.manage", "site.read", "hazard.read"]).await?;
        let users = desk(&server, &admin, "users@demo.local", &user_desk, &[&mall]).await?;
        let roles = desk(&server, &admin, "roles@demo.local", &role_desk, &[&mall]).await?;
        let keys = desk(&server, &admin, "keys@demo.local", &key_desk, &[&mall]).await?;
        let me = user_id(&admin, "users@demo.local").await?;
        let admin_id = user_id(&admin, "admin@demo.local").await?;
        let manager_id = user_id(&admin, "manager@demo.local").await?;
        let update = |id: &str, patch: Value| {
            let mut input = json!({"id": id});
            if let (Some(i), Value::Object(p)) = (input.as_object_mut(), patch) {
                i.extend(p);
            }
            json!({"i": input})
        };

        // user.manage: no self-promotion, no managing anyone holding more.
        let res = users.refused(UPDATE_USER, update(&me, json!({"roleId": "tenant_admin"}))).await?;
        assert_eq!(res, forbidden("roleId"), "self-promotion to tenant admin");
        let res = users.refused(UPDATE_USER, update(&me, json!({"roleId": &role_desk}))).await?;
        assert_eq!(res, forbidden("roleId"), "a role holding role.manage");
        let res = users.refused(UPDATE_USER, update(&me, json!({"projectIds": [&mall, &school]}))).await?;
        assert_eq!(res, forbidden("projectIds"), "a project outside the caller's scope");
        for patch in [json!({"password": NEW_PASSWORD}), json!({"active": false}), json!({"displayName": "x"})] {
            assert_eq!(users.refused(UPDATE_USER, update(&admin_id, patch.clone())).await?, forbidden("id"), "{patch}");
            // The manager holds hazard.manage and the school: more than the caller.
            assert_eq!(
                users.refused(UPDATE_USER, update(&manager_id, patch.clone())).await?,
                forbidden("id"),
                "{patch}"
            );
        }
        server.demo_login("admin@demo.local").await?;
        for (role_id, projects, field) in [
            ("tenant_admin", vec![], "roleId"),
            ("manager", vec![mall.as_str()], "roleId"),
            (key_desk.as_str(), vec![mall.as_str()], "roleId"),
            ("viewer", vec![school.as_str()], "projectIds"),
        ] {
            let input =
                json!({"email": "new@demo.local", "password": PASSWORD, "roleId": role_id, "projectIds": projects});
            assert_eq!(users.refused(CREATE_USER, json!({"i": input})).await?, forbidden(field), "{role_id}");
        }
        // What the caller holds it may hand out, and manage afterwards.
        let input =
            json!({"email": "reader@demo.local", "password": PASSWORD, "roleId": "viewer", "projectIds": [&mall]});
        let reader = users.ok(CREATE_USER, json!({"i": input})).await?["createUser"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        users.ok(UPDATE_USER, update(&reader, json!({"password": NEW_PASSWORD, "active": false}))).await?;
        let res = users.refused(UPDATE_USER, update(&reader, json!({"projectIds": [&school]}))).await?;
        assert_eq!(res, forbidden("projectIds"));
        users.ok(UPDATE_USER, update(&me, json!({"displayName": "Desk"}))).await?;

        // role.manage: no role with more than the caller holds, nor editing one that does.
        let input = json!({"name": "Everything", "permissions": ["role.manage", "site.read", "user.manage"]});
        assert_eq!(roles.refused(CREATE_ROLE, json!({"i": input})).await?, forbidden("permissions"));
        let input = json!({"id": &role_desk, "permissions": ["role.manage", "site.read", "device.control"]});
        assert_eq!(roles.refused(UPDATE_ROLE, json!({"i": input})).await?, forbidden("permissions"), "own role");
        let input = json!({"id": &user_desk, "permissions": ["site.read"]});
        assert_eq!(roles.refused(UPDATE_ROLE, json!({"i": input})).await?, forbidden("id"), "a role holding more");
        let spare = role(&admin, "Spare", &["site.read", "device.control"]).await?;
        assert_eq!(roles.refused(DELETE_ROLE, json!({"id": &spare})).await?, forbidden("id"));
        let made = roles.ok(CREATE_ROLE, json!({"i": {"name": "Reader", "permissions": ["site.read"]}})).await?;
        assert_eq!(made["createRole"]["permissions"], json!(["site.read"]));
        let made = made["createRole"]["id"].as_str().unwrap_or_default().to_owned();
        roles.ok(UPDATE_ROLE, json!({"i": {"id": &made, "name": "Readers"}})).await?;
        roles.ok(DELETE_ROLE, json!({"id": &made})).await?;
        // A role holder cannot widen the role it holds through someone else either.
        let held = admin.ok("{ roles { id permissions } }", json!({})).await?;
        let desk_role =
            held["roles"].as_array().and_then(|r| r.iter().find(|r| r["id"] == role_desk.as_str())).cloned();
        assert_eq!(desk_role.map(|r| r["permissions"].clone()), Some(json!(["role.manage", "site.read"])));

        // apikey.manage: a key holds no more than its creator.
        for (role_id, projects, field) in [
            ("manager", None, "roleId"),
            (user_desk.as_str(), None, "roleId"),
            ("viewer", Some(vec![school.as_str()]), "projectIds"),
        ] {
            let input = json!({"name": "bms", "roleId": role_id, "projectIds": projects});
            assert_eq!(keys.refused(CREATE_KEY, json!({"i": input})).await?, forbidden(field), "{role_id}");
        }
        let key = keys.ok(CREATE_KEY, json!({"i": {"name": "bms", "roleId": "viewer", "projectIds": [&mall]}})).await?;
        assert!(key["createApiKey"]["secret"].as_str().is_some_and(|s| s.starts_with("swk_")));

        // The tenant admin holds all of it: the rule does not get in its way.
        admin.ok(UPDATE_USER, update(&me, json!({"roleId": "manager", "projectIds": [&mall, &school]}))).await?;
        admin.ok(UPDATE_USER, update(&manager_id, json!({"password": NEW_PASSWORD}))).await?;
        admin.ok(CREATE_KEY, json!({"i": {"name": "ops", "roleId": "manager"}})).await?;
    }
    Ok(())
}

/// The escalation matrix: every grant, role and user mutation tried by every built-in tenant
/// role and by custom "desk" roles, each aimed at more than the caller holds. Nothing passes,
/// and afterwards nobody holds a permission they did not hold before.
#[tokio::test]
async fn escalation_matrix_grants_nobody_anything_new() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, _) = projects(&admin).await?;
        let all: Vec<&str> = [
            "user.manage",
            "role.manage",
            "apikey.manage",
            "site.read",
            "project.manage",
            "device.manage",
            "threshold.manage",
            "hazard.read",
            "hazard.manage",
            "device.control",
            "fieldwork",
            "patrol.manage",
            "oplog.read",
            "project.all",
        ]
        .to_vec();
        let mut callers = vec![
            ("manager", server.demo_login("manager@demo.local").await?),
            ("electrician", server.demo_login("electrician@demo.local").await?),
        ];
        for (name, perms) in [
            ("users", vec!["user.manage", "site.read"]),
            ("roles", vec!["role.manage", "site.read"]),
            ("keys", vec!["apikey.manage", "site.read"]),
            ("all-desks", vec!["user.manage", "role.manage", "apikey.manage", "site.read"]),
        ] {
            let id = role(&admin, &format!("Desk {name}"), &perms).await?;
            callers.push((name, desk(&server, &admin, &format!("{name}@demo.local"), &id, &[&mall]).await?));
        }
        // The tenant admin holds everything (field work through hazard.manage).
        let everything = role(&admin, "Everything", &all).await?;
        let admin_id = user_id(&admin, "admin@demo.local").await?;
        let before = admin.ok("{ roles { id permissions } }", json!({})).await?;
        for (name, caller) in &callers {
            let me = caller.ok("{ me { id role { id } } }", json!({})).await?;
            let my_id = me["me"]["id"].as_str().unwrap_or_default().to_owned();
            let my_role = me["me"]["role"]["id"].as_str().unwrap_or_default().to_owned();
            let attempts = [
                (UPDATE_USER, json!({"i": {"id": &my_id, "roleId": "tenant_admin"}})),
                (UPDATE_USER, json!({"i": {"id": &my_id, "roleId": &everything}})),
                (UPDATE_USER, json!({"i": {"id": &admin_id, "password": NEW_PASSWORD}})),
                (UPDATE_USER, json!({"i": {"id": &admin_id, "active": false}})),
                (
                    CREATE_USER,
                    json!({"i": {"email": format!("{name}-x@demo.local"), "password": PASSWORD, "roleId": "tenant_admin"}}),
                ),
                (
                    CREATE_USER,
                    json!({"i": {"email": format!("{name}-y@demo.local"), "password": PASSWORD, "roleId": &everything}}),
                ),
                (CREATE_ROLE, json!({"i": {"name": format!("{name} all"), "permissions": &all}})),
                (UPDATE_ROLE, json!({"i": {"id": &my_role, "permissions": &all}})),
                (UPDATE_ROLE, json!({"i": {"id": &everything, "name": "mine"}})),
                (DELETE_ROLE, json!({"id": &everything})),
                (CREATE_KEY, json!({"i": {"name": "k", "roleId": &everything}})),
                (CREATE_KEY, json!({"i": {"name": "k", "roleId": "manager"}})),
            ];
            for (query, vars) in attempts {
                let (code, _) = caller.refused(query, vars.clone()).await?;
                assert_eq!(code, "FORBIDDEN", "{name}: {vars}");
            }
        }
        // The admin's password and account still work; no role changed.
        server.demo_login("admin@demo.local").await?;
        assert_eq!(admin.ok("{ roles { id permissions } }", json!({})).await?, before);
        for (name, caller) in &callers {
            let me = caller.ok("{ me { role { id permissions } } }", json!({})).await?;
            assert_ne!(me["me"]["role"]["id"], "tenant_admin", "{name}");
            assert_ne!(me["me"]["role"]["id"], everything.as_str(), "{name}");
        }
    }
    Ok(())
}

/// The names of the projects `gql` sees.
async fn seen_projects(gql: &Gql) -> anyhow::Result<Vec<String>> {
    let r = gql.ok("{ projects(first: 10) { nodes { name } } }", json!({})).await?;
    let mut names: Vec<String> = r["projects"]["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// A key's rights are its own capped by what its issuer holds now, read per request: the
/// issuer demoted (its role edited, or another role and fewer projects) narrows the key at
/// once, the issuer deactivated stops it, and restoring the issuer restores the key.
#[tokio::test]
async fn an_api_key_never_holds_more_than_its_issuer_holds_now() -> anyhow::Result<()> {
    const HAZARDS: &str = "{ hazards(first: 1) { nodes { id } } }";
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let (mall, _) = projects(&admin).await?;
        let desk_perms = ["apikey.manage", "site.read", "hazard.read", "project.all"];
        let key_desk = role(&admin, "Key desk", &desk_perms).await?;
        let reader = role(&admin, "Reader", &["site.read", "hazard.read", "project.all"]).await?;
        let issuer = desk(&server, &admin, "issuer@demo.local", &key_desk, &[]).await?;
        let issuer_id = user_id(&admin, "issuer@demo.local").await?;
        let key = issuer.ok(CREATE_KEY, json!({"i": {"name": "bms", "roleId": &reader}})).await?;
        let bms = admin.with_token(key["createApiKey"]["secret"].as_str().unwrap_or_default());
        bms.ok(HAZARDS, json!({})).await?;
        let everything = seen_projects(&bms).await?;
        assert_eq!(everything.len(), 2, "{everything:?}");

        // hazard.read removed from the issuer's role: the key loses it at the next request.
        let fewer = ["apikey.manage", "site.read", "project.all"];
        admin.ok(UPDATE_ROLE, json!({"i": {"id": &key_desk, "permissions": fewer}})).await?;
        assert_eq!(bms.refused(HAZARDS, json!({})).await?, forbidden("authorization"));
        assert_eq!(seen_projects(&bms).await?, everything, "what the issuer still holds, the key keeps");
        admin.ok(UPDATE_ROLE, json!({"i": {"id": &key_desk, "permissions": desk_perms}})).await?;
        bms.ok(HAZARDS, json!({})).await?;

        // The issuer demoted to a viewer of the mall: the key sees the mall only.
        admin.ok(UPDATE_USER, json!({"i": {"id": &issuer_id, "roleId": "viewer", "projectIds": [&mall]}})).await?;
        let mall_only = seen_projects(&bms).await?;
        assert_eq!(mall_only.len(), 1, "{mall_only:?}");
        assert!(mall_only[0].contains("Mall"), "{mall_only:?}");

        // Deactivated: the key stops, its open WebSocket too (4403); reactivated and promoted
        // back: it works as before.
        let secret = key["createApiKey"]["secret"].as_str().unwrap_or_default();
        let mut ws = sparkwatch_tests::WsClient::signed_in(&server, secret).await?;
        ws.subscribe("h", "subscription { hazardChanged { id } }", json!({})).await?;
        // Subscribed once the socket answers a later ping (frames are handled in order).
        ws.send(json!({"type": "ping"})).await?;
        let pong = ws.recv(std::time::Duration::from_secs(10)).await?;
        assert!(matches!(&pong, sparkwatch_tests::WsEvent::Message(m) if m["type"] == "pong"), "{pong:?}");
        admin.ok(UPDATE_USER, json!({"i": {"id": &issuer_id, "active": false}})).await?;
        assert_eq!(bms.code(HAZARDS, json!({})).await?, "UNAUTHENTICATED");
        assert_eq!(ws.closed(std::time::Duration::from_secs(10)).await?.0, 4403);
        let back = json!({"i": {"id": &issuer_id, "active": true, "roleId": &key_desk, "projectIds": []}});
        admin.ok(UPDATE_USER, back).await?;
        bms.ok(HAZARDS, json!({})).await?;
        assert_eq!(seen_projects(&bms).await?, everything);
    }
    Ok(())
}
