//! The API over real HTTP against SQLite and (when configured) PostgreSQL: sign-in,
//! tokens, permissions, tenant isolation, project scope, validation, paging, audit.

use serde_json::{Value, json};
use sparkwatch_api::auth::rate_limit::Limits;
use sparkwatch_tests::{TestServer, backends};

const PROJECTS: &str = "query($first: Int, $after: String) { projects(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { id name } } } }";

/// Ids of the Demo tenant's objects, read as its admin.
async fn demo_ids(server: &TestServer) -> anyhow::Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let admin = server.demo_login("admin@demo.local").await?;
    let data = admin
        .ok(
            "{ projects { edges { node { id name } } } devices { edges { node { id } } } detectors(first: 200) { edges { node { id } } } }",
            json!({}),
        )
        .await?;
    let ids = |k: &str| -> Vec<String> {
        data[k]["edges"]
            .as_array()
            .map(|a| a.iter().map(|e| e["node"]["id"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    };
    Ok((ids("projects"), ids("devices"), ids("detectors")))
}

#[tokio::test]
async fn sign_in_refresh_rotation_and_logout() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let anon = server.anonymous();
        let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken expiresAt user { email roleKey } } }";
        let res = anon.ok(login, json!({"i": {"login": "Admin@Demo.Local", "password": "sparkwatch-demo"}})).await?;
        assert_eq!(res["login"]["user"]["email"], "admin@demo.local", "{backend:?}");
        assert_eq!(res["login"]["user"]["roleKey"], "tenant_admin");
        let refresh = res["login"]["refreshToken"].as_str().unwrap_or_default().to_owned();
        let token = res["login"]["accessToken"].as_str().unwrap_or_default().to_owned();
        let me = anon.with_token(&token).ok("{ me { email displayName } }", json!({})).await?;
        assert_eq!(me["me"]["email"], "admin@demo.local");

        assert_eq!(
            anon.code(login, json!({"i": {"login": "admin@demo.local", "password": "wrong-pass1"}})).await?,
            "UNAUTHENTICATED"
        );
        assert_eq!(
            anon.code(login, json!({"i": {"login": "nobody@demo.local", "password": "wrong-pass1"}})).await?,
            "UNAUTHENTICATED"
        );
        assert_eq!(anon.code("{ me { email } }", json!({})).await?, "UNAUTHENTICATED");
        assert_eq!(anon.with_token("garbage").code("{ me { email } }", json!({})).await?, "UNAUTHENTICATED");

        // Rotation: the new pair works, the old refresh token is single-use, and reusing it
        // revokes the whole family (the new refresh token stops working too).
        let rotate = "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken } }";
        let next = anon.ok(rotate, json!({"t": refresh})).await?;
        let refresh2 = next["refreshToken"]["refreshToken"].as_str().unwrap_or_default().to_owned();
        assert_ne!(refresh2, refresh);
        assert_eq!(anon.code(rotate, json!({"t": refresh})).await?, "UNAUTHENTICATED");
        assert_eq!(anon.code(rotate, json!({"t": refresh2})).await?, "UNAUTHENTICATED", "family revoked after reuse");

        let again = anon.ok(login, json!({"i": {"login": "admin@demo.local", "password": "sparkwatch-demo"}})).await?;
        let refresh3 = again["login"]["refreshToken"].as_str().unwrap_or_default().to_owned();
        let out = anon.ok("mutation($t: String!) { logout(refreshToken: $t) }", json!({"t": refresh3})).await?;
        assert_eq!(out["logout"], true);
        assert_eq!(anon.code(rotate, json!({"t": refresh3})).await?, "UNAUTHENTICATED");
    }
    Ok(())
}

#[tokio::test]
async fn login_attempts_are_rate_limited() -> anyhow::Result<()> {
    let server =
        TestServer::start_with(&sparkwatch_tests::Backend::Sqlite, Limits { account_failures: 3, ..Limits::default() })
            .await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let anon = server.anonymous();
    let login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }";
    let bad = json!({"i": {"login": "manager@demo.local", "password": "wrong-pass1"}});
    for _ in 0..3 {
        assert_eq!(anon.code(login, bad.clone()).await?, "UNAUTHENTICATED");
    }
    let res = anon.run(login, json!({"i": {"login": "manager@demo.local", "password": "sparkwatch-demo"}})).await?;
    assert_eq!(res["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{res}");
    assert!(res["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap_or(0) > 0);
    // Other accounts are not locked out.
    server.demo_login("electrician@demo.local").await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_cannot_see_or_change_another_tenants_data() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let (projects, devices, detectors) = demo_ids(&server).await?;
        assert_eq!((projects.len(), devices.len(), detectors.len()), (2, 5, 12), "{backend:?}");
        let b = server.demo_login("admin@demo-b.local").await?;

        // Lists show only B's own objects.
        let lists = b
            .ok(
                "{ projects { totalCount } devices { totalCount } detectors { totalCount } users { totalCount } }",
                json!({}),
            )
            .await?;
        assert_eq!(lists["projects"]["totalCount"], 1);
        assert_eq!(lists["devices"]["totalCount"], 1);
        assert_eq!(lists["detectors"]["totalCount"], 1);
        assert_eq!(lists["users"]["totalCount"], 1);

        // Single reads by id come back empty.
        let (p, d, x) = (&projects[0], &devices[0], &detectors[0]);
        let reads = b.ok("query($p: ID!, $d: ID!, $x: ID!) { project(id: $p) { id } device(id: $d) { id } detector(id: $x) { id } }", json!({"p": p, "d": d, "x": x})).await?;
        assert_eq!(reads, json!({"project": null, "device": null, "detector": null}));
        let filtered = b
            .ok("query($p: [ID!]) { devices(filter: {projectIds: $p}) { totalCount } }", json!({"p": projects}))
            .await?;
        assert_eq!(filtered["devices"]["totalCount"], 0);

        // Every mutation naming A's objects is NOT_FOUND.
        let attempts = [
            ("mutation($id: ID!) { updateProject(input: {id: $id, name: \"pwned\"}) { id } }", json!({"id": p})),
            ("mutation($id: ID!) { deleteProject(id: $id) }", json!({"id": p})),
            (
                "mutation($id: ID!) { createDevice(input: {projectId: $id, serial: \"X-1\", name: \"x\", transport: MQTT}) { id } }",
                json!({"id": p}),
            ),
            ("mutation($id: ID!) { updateDevice(input: {id: $id, name: \"pwned\"}) { id } }", json!({"id": d})),
            ("mutation($id: ID!) { deleteDevice(id: $id) }", json!({"id": d})),
            ("mutation($id: ID!) { createDetector(input: {deviceId: $id, address: 99}) { id } }", json!({"id": d})),
            ("mutation($id: ID!) { updateDetector(input: {id: $id, name: \"pwned\"}) { id } }", json!({"id": x})),
            ("mutation($id: ID!) { deleteDetector(id: $id) }", json!({"id": x})),
            (
                "mutation($id: ID!) { updateDetectorThresholds(input: {detectorId: $id, leakMa: 500}) { id } }",
                json!({"id": x}),
            ),
            (
                "mutation($id: ID!) { updateProjectThresholds(input: {projectId: $id, leakMa: 500}) { id } }",
                json!({"id": p}),
            ),
            (
                "mutation($id: ID!) { createUser(input: {email: \"spy@b.local\", password: \"sparkwatch-1\", roleId: \"viewer\", projectIds: [$id]}) { id } }",
                json!({"id": p}),
            ),
        ];
        for (query, vars) in attempts {
            assert_eq!(b.code(query, vars).await?, "NOT_FOUND", "{backend:?}: {query}");
        }
        // Users of A are invisible and unchangeable for B.
        let a_admin = server.demo_login("admin@demo.local").await?;
        let a_users = a_admin.ok("{ users { edges { node { id } } } }", json!({})).await?;
        let a_user = a_users["users"]["edges"][0]["node"]["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(b.ok("query($id: ID!) { user(id: $id) { id } }", json!({"id": a_user})).await?["user"], Value::Null);
        assert_eq!(
            b.code("mutation($id: ID!) { updateUser(input: {id: $id, active: false}) { id } }", json!({"id": a_user}))
                .await?,
            "NOT_FOUND"
        );

        // And nothing of A changed.
        let after = a_admin.ok("query($p: ID!) { project(id: $p) { name deviceCount } }", json!({"p": p})).await?;
        assert_ne!(after["project"]["name"], "pwned");
        assert_eq!(demo_ids(&server).await?.2.len(), 12);
    }
    Ok(())
}

#[tokio::test]
async fn project_scope_limits_what_a_user_sees() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let (projects, _, _) = demo_ids(&server).await?;
        let e = server.demo_login("electrician@demo.local").await?;
        let data = e
            .ok(
                "{ projects { totalCount edges { node { name } } } devices { totalCount } detectors { totalCount } }",
                json!({}),
            )
            .await?;
        assert_eq!(data["projects"]["totalCount"], 1, "{backend:?}");
        assert_eq!(data["projects"]["edges"][0]["node"]["name"], "Riverside Mall");
        assert_eq!(data["devices"]["totalCount"], 3);
        assert_eq!(data["detectors"]["totalCount"], 9);
        let mut seen = 0;
        for p in &projects {
            let r = e.ok("query($p: ID!) { project(id: $p) { name } }", json!({"p": p})).await?;
            if !r["project"].is_null() {
                seen += 1;
            }
        }
        assert_eq!(seen, 1, "the school is outside the electrician's scope");
        let m = server.demo_login("manager@demo.local").await?;
        assert_eq!(m.ok("{ projects { totalCount } }", json!({})).await?["projects"]["totalCount"], 2);
    }
    Ok(())
}

#[tokio::test]
async fn permissions_are_enforced_by_role() -> anyhow::Result<()> {
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    let (projects, _, detectors) = demo_ids(&server).await?;
    let e = server.demo_login("electrician@demo.local").await?;
    let m = server.demo_login("manager@demo.local").await?;
    let create = "mutation { createProject(input: {name: \"New site\"}) { id } }";
    assert_eq!(e.code(create, json!({})).await?, "FORBIDDEN");
    assert_eq!(m.code(create, json!({})).await?, "FORBIDDEN");
    assert_eq!(server.anonymous().code(create, json!({})).await?, "UNAUTHENTICATED");
    assert_eq!(m.code("{ users { totalCount } }", json!({})).await?, "FORBIDDEN");
    assert_eq!(m.code("{ operationLog { totalCount } }", json!({})).await?, "FORBIDDEN");
    let thresholds = "mutation($id: ID!) { updateDetectorThresholds(input: {detectorId: $id, leakMa: 400}) { id } }";
    assert_eq!(m.code(thresholds, json!({"id": detectors[0]})).await?, "FORBIDDEN");
    let tenants = "{ tenants { totalCount } }";
    let admin = server.demo_login("admin@demo.local").await?;
    assert_eq!(admin.code(tenants, json!({})).await?, "FORBIDDEN", "tenant admins are not platform operators");

    // A custom role grants exactly its permissions.
    let role = admin.ok("mutation { createRole(input: {name: \"Auditor\", permissions: [\"site.read\", \"oplog.read\"]}) { id permissions } }", json!({})).await?;
    let role_id = role["createRole"]["id"].as_str().unwrap_or_default().to_owned();
    admin
        .ok(
            "mutation($r: ID!, $p: [ID!]) { createUser(input: {email: \"auditor@demo.local\", password: \"audit-2026\", roleId: $r, projectIds: $p}) { id } }",
            json!({"r": role_id, "p": [projects[1]]}),
        )
        .await?;
    let auditor = server.login("auditor@demo.local", "audit-2026").await?;
    assert_eq!(auditor.ok("{ projects { totalCount } }", json!({})).await?["projects"]["totalCount"], 1);
    // Limited to one project, it reads the log of its own operations only (none yet): the
    // log's entries carry no project (docs/PRIVILEGES.md).
    assert_eq!(
        auditor.ok("{ operationLog(first: 5) { totalCount } }", json!({})).await?["operationLog"]["totalCount"],
        0
    );
    assert_eq!(auditor.code(create, json!({})).await?, "FORBIDDEN");
    assert_eq!(
        admin
            .code("mutation { createRole(input: {name: \"X\", permissions: [\"tenant.manage\"]}) { id } }", json!({}))
            .await?,
        "VALIDATION"
    );

    // Deactivating a user takes effect on their very next request.
    let users = admin.ok("{ users(search: \"auditor\") { edges { node { id } } } }", json!({})).await?;
    let uid = users["users"]["edges"][0]["node"]["id"].clone();
    admin
        .ok("mutation($id: ID!) { updateUser(input: {id: $id, active: false}) { active } }", json!({"id": uid}))
        .await?;
    assert_eq!(auditor.code("{ projects { totalCount } }", json!({})).await?, "UNAUTHENTICATED");
    Ok(())
}

#[tokio::test]
async fn crud_validation_conflicts_and_thresholds() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let p = admin
            .ok("mutation { createProject(input: {name: \"Hospital\", contactPhone: \"139 0000 1111\", latitude: 31.5, longitude: 120.1, buildingArea: 12000}) { id name contactPhone } }", json!({}))
            .await?;
        let pid = p["createProject"]["id"].clone();
        assert_eq!(p["createProject"]["contactPhone"], "13900001111");
        let dup = admin.code("mutation { createProject(input: {name: \"Hospital\"}) { id } }", json!({})).await?;
        assert_eq!(dup, "CONFLICT", "{backend:?}");

        let res = admin.run("mutation($p: ID!) { createDevice(input: {projectId: $p, serial: \"bad serial\", name: \"x\", transport: MQTT}) { id } }", json!({"p": pid})).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "VALIDATION");
        assert_eq!(res["errors"][0]["extensions"]["field"], "serial");
        let res = admin.run("mutation($p: ID!) { createDevice(input: {projectId: $p, serial: \"GW-9\", name: \"gw\", transport: MODBUS_TCP}) { id } }", json!({"p": pid})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "host");
        let dev = admin
            .ok("mutation($p: ID!) { createDevice(input: {projectId: $p, serial: \"GW-9\", name: \"gw\", transport: MODBUS_TCP, host: \"10.0.0.9\"}) { id port transport } }", json!({"p": pid}))
            .await?;
        assert_eq!(dev["createDevice"]["port"], 502);
        let did = dev["createDevice"]["id"].clone();
        assert_eq!(admin.code("mutation($p: ID!) { createDevice(input: {projectId: $p, serial: \"SW-DEMO-0001\", name: \"x\", transport: MQTT}) { id } }", json!({"p": pid})).await?, "CONFLICT");

        let det = admin.ok("mutation($d: ID!) { createDetector(input: {deviceId: $d, address: 7, position: \"ICU panel\"}) { id address effectiveThresholds { leakMa tempC } } }", json!({"d": did})).await?;
        let xid = det["createDetector"]["id"].clone();
        assert_eq!(det["createDetector"]["effectiveThresholds"], json!({"leakMa": 300.0, "tempC": 85.0}));
        assert_eq!(
            admin
                .code(
                    "mutation($d: ID!) { createDetector(input: {deviceId: $d, address: 7}) { id } }",
                    json!({"d": did})
                )
                .await?,
            "CONFLICT"
        );
        let res = admin
            .run("mutation($d: ID!) { createDetector(input: {deviceId: $d, address: 248}) { id } }", json!({"d": did}))
            .await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "address");

        // GB ranges: out-of-range set-points are rejected with the field; inheritance applies.
        let set = "mutation($x: ID!, $v: Float) { updateDetectorThresholds(input: {detectorId: $x, leakMa: $v}) { thresholds { leakMa } effectiveThresholds { leakMa tempC } thresholdWarnings { field } } }";
        for bad in [5.0, 1001.0] {
            let res = admin.run(set, json!({"x": xid, "v": bad})).await?;
            assert_eq!(res["errors"][0]["extensions"]["code"], "VALIDATION");
            assert_eq!(res["errors"][0]["extensions"]["field"], "leakMa");
        }
        admin
            .ok(
                "mutation($p: ID!) { updateProjectThresholds(input: {projectId: $p, tempC: 70}) { id } }",
                json!({"p": pid}),
            )
            .await?;
        let ok = admin.ok(set, json!({"x": xid, "v": 600.0})).await?;
        let t = &ok["updateDetectorThresholds"];
        assert_eq!(t["effectiveThresholds"], json!({"leakMa": 600.0, "tempC": 70.0}));
        assert_eq!(t["thresholdWarnings"], json!([{"field": "leakMa"}]));
        let inherit = admin.ok(set, json!({"x": xid, "v": null})).await?;
        assert_eq!(inherit["updateDetectorThresholds"]["thresholds"]["leakMa"], Value::Null);
        assert_eq!(inherit["updateDetectorThresholds"]["effectiveThresholds"]["leakMa"], 300.0);

        // Moving a device moves its detectors; a project with devices cannot be deleted.
        assert_eq!(admin.code("mutation($p: ID!) { deleteProject(id: $p) }", json!({"p": pid})).await?, "CONFLICT");
        admin.ok("mutation($d: ID!) { deleteDevice(id: $d) }", json!({"d": did})).await?;
        assert_eq!(
            admin.ok("query($x: ID!) { detector(id: $x) { id } }", json!({"x": xid})).await?["detector"],
            Value::Null
        );
        admin.ok("mutation($p: ID!) { deleteProject(id: $p) }", json!({"p": pid})).await?;

        // Every mutation above is in the operation log, with before/after.
        let log = admin
            .ok("{ operationLog(first: 200) { totalCount edges { node { actor action before after } } } }", json!({}))
            .await?;
        let actions: Vec<&str> = log["operationLog"]["edges"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["node"]["action"].as_str()).collect())
            .unwrap_or_default();
        for expected in [
            "project.create",
            "device.create",
            "detector.create",
            "thresholds.detector.update",
            "thresholds.project.update",
            "device.delete",
            "project.delete",
        ] {
            assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
        }
        let last = &log["operationLog"]["edges"].as_array().and_then(|a| a.last()).cloned().unwrap_or_default()["node"];
        assert_eq!(last["actor"], "admin@demo.local");
        assert_eq!(last["action"], "project.delete");
        assert!(last["after"].is_null() && last["before"]["draft"]["name"] == "Hospital", "{last}");
    }
    Ok(())
}

#[tokio::test]
async fn relay_paging_with_total_count() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let first = admin.ok(PROJECTS, json!({"first": 1})).await?;
        let page = &first["projects"];
        assert_eq!(page["totalCount"], 2, "{backend:?}");
        assert_eq!(page["pageInfo"]["hasNextPage"], true);
        assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
        let cursor = page["pageInfo"]["endCursor"].clone();
        let second = admin.ok(PROJECTS, json!({"first": 1, "after": cursor})).await?;
        assert_eq!(second["projects"]["pageInfo"]["hasNextPage"], false);
        assert_ne!(second["projects"]["edges"][0]["node"]["id"], page["edges"][0]["node"]["id"]);
        let res = admin.run(PROJECTS, json!({"first": 300})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "first");
        let res = admin.run(PROJECTS, json!({"first": 1, "after": "nonsense"})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "after");
    }
    Ok(())
}

#[tokio::test]
async fn api_keys_authenticate_integrators_until_revoked() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let (projects, _, _) = demo_ids(&server).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let key = admin
            .ok("mutation($p: [ID!]) { createApiKey(input: {name: \"BMS\", roleId: \"viewer\", projectIds: $p}) { secret apiKey { id prefix } } }", json!({"p": [projects[0]]}))
            .await?;
        let secret = key["createApiKey"]["secret"].as_str().unwrap_or_default().to_owned();
        let id = key["createApiKey"]["apiKey"]["id"].clone();
        assert!(secret.starts_with(key["createApiKey"]["apiKey"]["prefix"].as_str().unwrap_or("?")));
        let integrator = server.anonymous().with_token(&secret);
        assert_eq!(
            integrator.ok("{ projects { totalCount } }", json!({})).await?["projects"]["totalCount"],
            1,
            "{backend:?}"
        );
        assert_eq!(
            integrator.code("mutation { createProject(input: {name: \"x\"}) { id } }", json!({})).await?,
            "FORBIDDEN"
        );
        admin.ok("mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", json!({"id": id})).await?;
        assert_eq!(integrator.code("{ projects { totalCount } }", json!({})).await?, "UNAUTHENTICATED");
        assert_eq!(
            admin
                .code(
                    "mutation { createApiKey(input: {name: \"god\", roleId: \"tenant_admin\"}) { secret } }",
                    json!({})
                )
                .await?,
            "VALIDATION"
        );
    }
    Ok(())
}

#[tokio::test]
async fn platform_admin_manages_tenants_and_sees_usage() -> anyhow::Result<()> {
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    let platform = sparkwatch_api::auth::Principal::platform_system("test");
    server
        .services
        .create_user(
            &platform,
            sparkwatch_api::service::users::NewUser {
                email: Some("ops@sparkwatch.local".into()),
                password: "platform-2026".into(),
                role: "platform_admin".into(),
                ..Default::default()
            },
        )
        .await?;
    let ops = server.login("ops@sparkwatch.local", "platform-2026").await?;
    let list = ops
        .ok("{ tenants { totalCount edges { node { name usage { devices connectedDevices } } } } }", json!({}))
        .await?;
    assert_eq!(list["tenants"]["totalCount"], 2);
    assert_eq!(list["tenants"]["edges"][0]["node"]["usage"], json!({"devices": 5, "connectedDevices": 0}));
    assert_eq!(
        ops.code("{ projects { totalCount } }", json!({})).await?,
        "FORBIDDEN",
        "operators do not read tenant data"
    );
    let t = ops.ok("mutation { createTenant(input: {name: \"Acme\"}) { id active } }", json!({})).await?;
    assert_eq!(ops.code("mutation { createTenant(input: {name: \"Acme\"}) { id } }", json!({})).await?, "CONFLICT");
    // Suspending a tenant locks its users out.
    let demo_b = list["tenants"]["edges"][1]["node"]["name"].clone();
    assert_eq!(demo_b, "Demo B");
    let b = server.demo_login("admin@demo-b.local").await?;
    let ids = ops.ok("{ tenants { edges { node { id name } } } }", json!({})).await?;
    let b_id = ids["tenants"]["edges"][1]["node"]["id"].clone();
    ops.ok("mutation($id: ID!) { updateTenant(input: {id: $id, active: false}) { active } }", json!({"id": b_id}))
        .await?;
    assert_eq!(b.code("{ projects { totalCount } }", json!({})).await?, "UNAUTHENTICATED");
    assert!(t["createTenant"]["active"].as_bool().unwrap_or(false));
    Ok(())
}

#[tokio::test]
async fn query_depth_is_limited() -> anyhow::Result<()> {
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let mut q = String::from("id");
    for _ in 0..4 {
        q = format!("devices {{ edges {{ node {{ project {{ {q} }} }} }} }}");
    }
    let res = admin.run(&format!("{{ projects {{ edges {{ node {{ {q} }} }} }} }}"), json!({})).await?;
    let message = res["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nested too deep") || message.contains("complex"), "{res}");
    Ok(())
}
