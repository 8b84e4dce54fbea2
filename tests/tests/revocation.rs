//! Revocation takes effect at once, over real HTTP and WebSockets, on SQLite and (when
//! configured) PostgreSQL: after logout the sign-in's access token is refused; a password
//! change ends every other sign-in (access and refresh tokens) but not the caller's own; a
//! password reset or deactivation by an administrator ends all of the user's sign-ins; open
//! WebSockets of a revoked sign-in, user or API key close with 4403.

use std::time::Duration;

use serde_json::{Value, json};
use sparkwatch_tests::{Gql, Options, PrivateRedis, TestServer, WsClient, WsEvent, backends, eventually};

const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;
const NEW_PASSWORD: &str = "N3w-passw0rd!";
const HAZARDS: &str = "subscription { hazardChanged { id status } }";
/// Revocations reach open sockets through "access changed" at once; well under the 30 s
/// safety-net re-check, so a pass proves the message path.
const WAIT: Duration = Duration::from_secs(10);

/// Signs in over HTTP; returns the client and its refresh token.
async fn sign_in(server: &TestServer, login: &str, password: &str) -> anyhow::Result<(Gql, String)> {
    let res = server
        .anonymous()
        .ok(
            "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }",
            json!({"i": {"login": login, "password": password}}),
        )
        .await?;
    let access = res["login"]["accessToken"].as_str().unwrap_or_default();
    let refresh = res["login"]["refreshToken"].as_str().unwrap_or_default().to_owned();
    Ok((server.anonymous().with_token(access), refresh))
}

async fn me(gql: &Gql) -> anyhow::Result<String> {
    let res = gql.run("{ me { id } }", json!({})).await?;
    Ok(res["errors"][0]["extensions"]["code"].as_str().unwrap_or("OK").to_owned())
}

async fn refresh(server: &TestServer, token: &str) -> anyhow::Result<String> {
    let res = server
        .anonymous()
        .run("mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }", json!({"t": token}))
        .await?;
    Ok(res["errors"][0]["extensions"]["code"].as_str().unwrap_or("OK").to_owned())
}

/// A WebSocket signed in with `gql`'s token, holding one subscription.
async fn socket(server: &TestServer, gql: &Gql) -> anyhow::Result<WsClient> {
    let mut ws = WsClient::signed_in(server, gql.token.as_deref().unwrap_or_default()).await?;
    ws.subscribe("h", HAZARDS, json!({})).await?;
    // Subscribed once the socket answers a later ping (frames are handled in order): a
    // revocation published before the subscription joined would only be seen by the 30 s
    // re-check.
    ws.send(json!({"type": "ping"})).await?;
    let pong = ws.recv(WAIT).await?;
    anyhow::ensure!(matches!(&pong, WsEvent::Message(m) if m["type"] == "pong"), "no pong: {pong:?}");
    Ok(ws)
}

#[tokio::test]
async fn logout_and_password_changes_end_sign_ins_at_once() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let (phone, phone_refresh) = sign_in(&server, "manager@demo.local", PASSWORD).await?;
        let (laptop, laptop_refresh) = sign_in(&server, "manager@demo.local", PASSWORD).await?;
        let (tablet, tablet_refresh) = sign_in(&server, "manager@demo.local", PASSWORD).await?;
        let mut phone_ws = socket(&server, &phone).await?;

        // Logout: that sign-in's access token stops at once, on HTTP and on its socket.
        let out = server
            .anonymous()
            .ok("mutation($t: String!) { logout(refreshToken: $t) }", json!({"t": phone_refresh}))
            .await?;
        assert_eq!(out["logout"], true);
        assert_eq!(me(&phone).await?, "UNAUTHENTICATED");
        assert_eq!(phone_ws.closed(WAIT).await?.0, 4403);
        assert_eq!(me(&laptop).await?, "OK", "other sign-ins go on");

        // A password change ends every other sign-in, refresh tokens included.
        let mut tablet_ws = socket(&server, &tablet).await?;
        let changed = laptop
            .ok(
                "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }",
                json!({"c": PASSWORD, "n": NEW_PASSWORD}),
            )
            .await?;
        assert_eq!(changed["changePassword"], true);
        assert_eq!(me(&tablet).await?, "UNAUTHENTICATED");
        assert_eq!(refresh(&server, &tablet_refresh).await?, "UNAUTHENTICATED");
        assert_eq!(tablet_ws.closed(WAIT).await?.0, 4403);
        assert_eq!(me(&laptop).await?, "OK", "the caller's own sign-in goes on");
        assert_eq!(refresh(&server, &laptop_refresh).await?, "OK");

        // A reset by an administrator ends all of the user's sign-ins.
        let admin = server.demo_login("admin@demo.local").await?;
        let (again, again_refresh) = sign_in(&server, "manager@demo.local", NEW_PASSWORD).await?;
        let users = admin.ok("{ users(search: \"manager@\", first: 1) { nodes { id } } }", json!({})).await?;
        let manager_id = users["users"]["nodes"][0]["id"].clone();
        admin
            .ok(
                "mutation($i: UpdateUserInput!) { updateUser(input: $i) { id } }",
                json!({"i": {"id": manager_id, "password": PASSWORD}}),
            )
            .await?;
        assert_eq!(me(&again).await?, "UNAUTHENTICATED");
        assert_eq!(refresh(&server, &again_refresh).await?, "UNAUTHENTICATED");
    }
    Ok(())
}

#[tokio::test]
async fn deactivation_and_key_revocation_close_open_sockets() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let electrician = server.demo_login("electrician@demo.local").await?;
        let mut ws = socket(&server, &electrician).await?;
        let users = admin.ok("{ users(search: \"electrician@\", first: 1) { nodes { id } } }", json!({})).await?;
        let id = users["users"]["nodes"][0]["id"].clone();
        let update = "mutation($i: UpdateUserInput!) { updateUser(input: $i) { id active } }";
        admin.ok(update, json!({"i": {"id": id, "active": false}})).await?;
        assert_eq!(me(&electrician).await?, "UNAUTHENTICATED");
        let (code, reason) = ws.closed(WAIT).await?;
        assert_eq!(code, 4403, "{reason}");

        let key = admin
            .ok(
                "mutation { createApiKey(input: {name: \"bms\", roleId: \"viewer\"}) { secret apiKey { id } } }",
                json!({}),
            )
            .await?;
        let bms = admin.with_token(key["createApiKey"]["secret"].as_str().unwrap_or_default());
        let mut ws = socket(&server, &bms).await?;
        let revoked: Value = admin
            .ok(
                "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
                json!({"id": key["createApiKey"]["apiKey"]["id"]}),
            )
            .await?;
        assert!(revoked["revokeApiKey"]["revokedAt"].is_string());
        assert_eq!(me(&bms).await?, "UNAUTHENTICATED");
        assert_eq!(ws.closed(WAIT).await?.0, 4403);
    }
    Ok(())
}

/// Redis (the test's own) is killed under two instances. An electrician deactivated on A
/// while the bus cannot announce it still loses the socket held on B within seconds:
/// sockets re-check their credentials when the link drops and every 3 s while it is down
/// (and once more when it returns, for what was published in the gap).
#[tokio::test]
async fn revocation_while_redis_is_down() -> anyhow::Result<()> {
    let Some(mut redis) = PrivateRedis::start().await? else {
        eprintln!("skipped: no redis-server binary");
        return Ok(());
    };
    for backend in backends() {
        let a =
            TestServer::start_opts(&backend, Options { redis_url: Some(redis.url()), ..Options::default() }).await?;
        sparkwatch_api::demo::seed(&a.services).await?;
        let b = a.sibling(Options::default()).await?;
        let admin = a.demo_login("admin@demo.local").await?;
        let electrician = b.demo_login("electrician@demo.local").await?;
        let mut ws = socket(&b, &electrician).await?;
        redis.down();
        eventually("B to see the bus down", || async { Ok((!b.services.bus().is_connected()).then_some(())) }).await?;
        let users = admin.ok("{ users(search: \"electrician@\", first: 1) { nodes { id } } }", json!({})).await?;
        let id = users["users"]["nodes"][0]["id"].clone();
        let update = "mutation($i: UpdateUserInput!) { updateUser(input: $i) { id active } }";
        admin.ok(update, json!({"i": {"id": id, "active": false}})).await?;
        let (code, reason) = ws.closed(WAIT).await?;
        assert_eq!(code, 4403, "{reason}");
        redis.up().await?;
    }
    Ok(())
}
