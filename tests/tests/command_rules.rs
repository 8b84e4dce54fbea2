//! Rules per command kind over real HTTP, on SQLite and (when configured) PostgreSQL: every
//! control command (TRIP, CLOSE, RESET, SILENCE, SET_THRESHOLDS) needs the sender's password
//! or a step-up token, API keys may send them only when issued with `controlCommands`, and
//! each person or key sends at most 10 commands a minute (`RATE_LIMITED` with `retryAfter`).
//! Issuing a key for control commands asks for the same re-authentication as sending one.

use serde_json::{Value, json};
use sparkwatch_tests::{Gql, TestServer, backends};

const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;
const SEND: &str = "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id op } }";
const KEY: &str = "mutation($r: ID!, $c: Boolean, $p: String, $s: String) { createApiKey(input: {name: \"bms\", roleId: $r, controlCommands: $c, password: $p, stepUpToken: $s}) { secret apiKey { controlCommands } } }";

/// `(code, field)` of the first error of a request that must fail.
async fn refused(gql: &Gql, input: Value) -> anyhow::Result<(String, String)> {
    let res = gql.run(SEND, json!({"i": input})).await?;
    let ext = &res["errors"][0]["extensions"];
    let code = ext["code"].as_str().ok_or_else(|| anyhow::anyhow!("expected an error: {res}"))?;
    Ok((code.to_owned(), ext["field"].as_str().unwrap_or("-").to_owned()))
}

fn pair(code: &str, field: &str) -> (String, String) {
    (code.into(), field.into())
}

/// Every detector of the demo tenant (12).
async fn detectors(server: &TestServer) -> anyhow::Result<Vec<String>> {
    let mut list = Vec::new();
    for (serial, n) in
        [("SW-DEMO-0001", 3), ("SW-DEMO-0002", 2), ("GW-DEMO-0001", 4), ("SW-DEMO-0101", 2), ("SW-DEMO-0102", 1)]
    {
        for address in 1..=n {
            list.push(server.detector_id(serial, address).await?);
        }
    }
    Ok(list)
}

/// Creates the custom role "Operator" (site.read, device.control, project.all and `extra`).
async fn operator_role(admin: &Gql, extra: &[&str]) -> anyhow::Result<String> {
    let mut permissions = vec!["site.read", "device.control", "project.all"];
    permissions.extend_from_slice(extra);
    let input = json!({"name": "Operator", "permissions": permissions});
    let r = admin.ok("mutation($i: CreateRoleInput!) { createRole(input: $i) { id } }", json!({"i": input})).await?;
    Ok(r["createRole"]["id"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn control_commands_need_a_password_or_a_scoped_key() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let d = detectors(&server).await?;
        // People: every control command asks for the password; SELF_TEST does not.
        for (i, op) in ["TRIP", "CLOSE", "RESET", "SILENCE"].into_iter().enumerate() {
            let res = refused(&admin, json!({"detectorId": d[i], "op": op})).await?;
            assert_eq!(res, pair("FORBIDDEN", "password"), "{op}");
            let res = refused(&admin, json!({"detectorId": d[i], "op": op, "password": "wrong-one-2026"})).await?;
            assert_eq!(res, pair("FORBIDDEN", "password"), "{op}");
        }
        let set = json!({"detectorId": d[4], "op": "SET_THRESHOLDS", "params": {"leakMa": 300}});
        assert_eq!(refused(&admin, set).await?, pair("FORBIDDEN", "password"));
        admin.ok(SEND, json!({"i": {"detectorId": d[5], "op": "SELF_TEST"}})).await?;
        admin.ok(SEND, json!({"i": {"detectorId": d[6], "op": "SILENCE", "password": PASSWORD}})).await?;

        // API keys: refused unless issued for control commands.
        let role = operator_role(&admin, &[]).await?;
        let plain = admin.ok(KEY, json!({"r": &role, "c": false})).await?;
        assert_eq!(plain["createApiKey"]["apiKey"]["controlCommands"], false);
        let plain = admin.with_token(plain["createApiKey"]["secret"].as_str().unwrap_or_default());
        for op in ["TRIP", "CLOSE", "RESET", "SILENCE"] {
            let res = refused(&plain, json!({"detectorId": d[7], "op": op, "password": PASSWORD})).await?;
            assert_eq!(res.0, "FORBIDDEN", "{op}");
        }
        plain.ok(SEND, json!({"i": {"detectorId": d[7], "op": "SELF_TEST"}})).await?;
        let scoped = admin.ok(KEY, json!({"r": &role, "c": true, "p": PASSWORD})).await?;
        assert_eq!(scoped["createApiKey"]["apiKey"]["controlCommands"], true);
        let scoped = admin.with_token(scoped["createApiKey"]["secret"].as_str().unwrap_or_default());
        let reset = scoped.ok(SEND, json!({"i": {"detectorId": d[8], "op": "RESET"}})).await?;
        assert_eq!(reset["sendCommand"]["op"], "RESET");
        // The scope needs device.control in the key's role.
        let res = admin.run(KEY, json!({"r": "viewer", "c": true, "p": PASSWORD})).await?;
        assert_eq!(res["errors"][0]["extensions"]["field"], "controlCommands", "{res}");
    }
    Ok(())
}

/// `(code, field)` of the first error of a `createApiKey` that must fail.
async fn key_refused(gql: &Gql, vars: Value) -> anyhow::Result<(String, String)> {
    let res = gql.run(KEY, vars).await?;
    let ext = &res["errors"][0]["extensions"];
    let code = ext["code"].as_str().ok_or_else(|| anyhow::anyhow!("expected an error: {res}"))?;
    Ok((code.to_owned(), ext["field"].as_str().unwrap_or("-").to_owned()))
}

#[tokio::test]
async fn issuing_a_key_for_control_commands_needs_reauthentication() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let role = operator_role(&admin, &["apikey.manage"]).await?;
        // The same refusals as a control command without proof: code and field.
        let d = detectors(&server).await?;
        let command = refused(&admin, json!({"detectorId": d[0], "op": "RESET"})).await?;
        assert_eq!(command, pair("FORBIDDEN", "password"));
        assert_eq!(key_refused(&admin, json!({"r": &role, "c": true})).await?, command);
        assert_eq!(key_refused(&admin, json!({"r": &role, "c": true, "p": ""})).await?, command);
        let wrong = json!({"r": &role, "c": true, "p": "wrong-one-2026"});
        assert_eq!(key_refused(&admin, wrong).await?, pair("FORBIDDEN", "password"));
        let fake = json!({"r": &role, "c": true, "p": PASSWORD, "s": "garbage"});
        assert_eq!(key_refused(&admin, fake).await?, pair("FORBIDDEN", "stepUpToken"));
        // With the password, or a step-up token, it is issued; a key without the scope needs neither.
        let issued = admin.ok(KEY, json!({"r": &role, "c": true, "p": PASSWORD})).await?;
        assert_eq!(issued["createApiKey"]["apiKey"]["controlCommands"], true);
        let step_up = admin
            .ok("mutation($p: String!) { reauthenticate(password: $p) { token } }", json!({"p": PASSWORD}))
            .await?["reauthenticate"]["token"]
            .clone();
        let issued = admin.ok(KEY, json!({"r": &role, "c": true, "s": step_up})).await?;
        assert_eq!(issued["createApiKey"]["apiKey"]["controlCommands"], true);
        let plain = admin.ok(KEY, json!({"r": &role, "c": false})).await?;
        assert_eq!(plain["createApiKey"]["apiKey"]["controlCommands"], false);
        // A key cannot re-authenticate, so it cannot issue one for control commands.
        let scoped = admin.with_token(issued["createApiKey"]["secret"].as_str().unwrap_or_default());
        let res = key_refused(&scoped, json!({"r": &role, "c": true, "p": PASSWORD})).await?;
        assert_eq!(res.0, "FORBIDDEN");
        scoped.ok(KEY, json!({"r": &role, "c": false})).await?;
    }
    Ok(())
}

#[tokio::test]
async fn each_caller_sends_at_most_ten_commands_a_minute() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let d = detectors(&server).await?;
        // A refused command (wrong password) does not use up the minute.
        let res = refused(&admin, json!({"detectorId": d[0], "op": "RESET", "password": "wrong-one-2026"})).await?;
        assert_eq!(res, pair("FORBIDDEN", "password"));
        for detector in &d[..10] {
            admin.ok(SEND, json!({"i": {"detectorId": detector, "op": "SELF_TEST"}})).await?;
        }
        let res = admin.run(SEND, json!({"i": {"detectorId": d[10], "op": "SELF_TEST"}})).await?;
        let ext = &res["errors"][0]["extensions"];
        assert_eq!(ext["code"], "RATE_LIMITED", "{res}");
        assert!(ext["retryAfter"].as_u64().is_some_and(|s| (1..=60).contains(&s)), "{res}");
        // The limit is per person, not per sign-in; another person has a minute of its own.
        let other = server.demo_login("admin@demo.local").await?;
        let res = other.run(SEND, json!({"i": {"detectorId": d[11], "op": "SELF_TEST"}})).await?;
        assert_eq!(res["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{res}");
        let role = admin
            .ok("mutation { createRole(input: {name: \"Operator\", permissions: [\"site.read\", \"device.control\", \"project.all\"]}) { id } }", json!({}))
            .await?["createRole"]["id"]
            .clone();
        let input = json!({"email": "op@demo.local", "password": PASSWORD, "roleId": role});
        admin.ok("mutation($i: CreateUserInput!) { createUser(input: $i) { id } }", json!({"i": input})).await?;
        let operator = server.login("op@demo.local", PASSWORD).await?;
        operator.ok(SEND, json!({"i": {"detectorId": d[11], "op": "SELF_TEST"}})).await?;
    }
    Ok(())
}
