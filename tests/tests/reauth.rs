//! Re-authentication over real HTTP, on SQLite and (when configured) PostgreSQL:
//! `reauthenticate(password)` gives a 5-minute step-up token that `sendCommand` accepts
//! instead of the password for TRIP, CLOSE and SET_THRESHOLDS — for the same user and
//! sign-in only, never an access token in its place nor the other way round.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use sparkwatch_api::service::{Clock, ManualClock};
use sparkwatch_entity::operation_log;
use sparkwatch_tests::{Gql, Options, TestServer, backends, forbidden};

const PASSWORD: &str = sparkwatch_api::demo::DEMO_PASSWORD;
const REAUTH: &str = "mutation($p: String!) { reauthenticate(password: $p) { token expiresAt } }";
const SEND: &str = "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id op } }";

/// A step-up token for `gql`'s caller.
async fn step_up(gql: &Gql) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>)> {
    let r = gql.ok(REAUTH, json!({"p": PASSWORD})).await?["reauthenticate"].clone();
    let token = r["token"].as_str().ok_or_else(|| anyhow::anyhow!("no token: {r}"))?.to_owned();
    Ok((token, r["expiresAt"].as_str().unwrap_or_default().parse()?))
}

#[tokio::test]
async fn step_up_tokens_stand_in_for_the_password_for_their_sign_in_only() -> anyhow::Result<()> {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let server = TestServer::start_opts(&backend, Options { clock: clock.clone(), ..Options::default() }).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let admin = server.demo_login("admin@demo.local").await?;
        let manager = server.demo_login("manager@demo.local").await?;
        let mut detectors = Vec::new();
        for (serial, address) in [("SW-DEMO-0001", 1), ("SW-DEMO-0001", 2), ("SW-DEMO-0001", 3), ("SW-DEMO-0002", 1)] {
            detectors.push(server.detector_id(serial, address).await?);
        }
        let cmd = |detector: &str, op: &str, proof: Value| {
            let mut input = json!({"detectorId": detector, "op": op});
            if op == "SET_THRESHOLDS" {
                input["params"] = json!({"leakMa": 300});
            }
            if let (Value::Object(proof), Some(input)) = (proof, input.as_object_mut()) {
                input.extend(proof);
            }
            json!({ "i": input })
        };

        // A step-up token lasts five minutes and works for trip and set-points.
        let (token, expires_at) = step_up(&admin).await?;
        assert_eq!(expires_at.timestamp(), (clock.now() + chrono::Duration::minutes(5)).timestamp());
        let trip = admin.ok(SEND, cmd(&detectors[0], "TRIP", json!({"stepUpToken": token}))).await?;
        assert_eq!(trip["sendCommand"]["op"], "TRIP");
        let set = admin.ok(SEND, cmd(&detectors[1], "SET_THRESHOLDS", json!({"stepUpToken": token}))).await?;
        assert_eq!(set["sendCommand"]["op"], "SET_THRESHOLDS");

        // A wrong password gets no token.
        assert_eq!(admin.refused(REAUTH, json!({"p": "not-the-password"})).await?, forbidden("password"));
        // Not a step-up token: an access token, garbage, or the empty string.
        let access = admin.token.clone().unwrap_or_default();
        for fake in [access.as_str(), "garbage", ""] {
            let res = admin.refused(SEND, cmd(&detectors[2], "TRIP", json!({"stepUpToken": fake}))).await?;
            assert_eq!(res, forbidden("stepUpToken"), "{fake}");
        }
        // Nor is a step-up token an access token.
        assert_eq!(admin.with_token(&token).code("{ me { id } }", json!({})).await?, "UNAUTHENTICATED");
        // Someone else's token, and the same user's token from another sign-in, are refused.
        let (theirs, _) = step_up(&manager).await?;
        let res = admin.refused(SEND, cmd(&detectors[2], "CLOSE", json!({"stepUpToken": theirs}))).await?;
        assert_eq!(res, forbidden("stepUpToken"));
        let elsewhere = server.demo_login("admin@demo.local").await?;
        let res = elsewhere.refused(SEND, cmd(&detectors[2], "CLOSE", json!({"stepUpToken": token}))).await?;
        assert_eq!(res, forbidden("stepUpToken"));

        // Until it expires (on the server's clock).
        clock.advance(chrono::Duration::seconds(299));
        let close = admin.ok(SEND, cmd(&detectors[2], "CLOSE", json!({"stepUpToken": token}))).await?;
        assert_eq!(close["sendCommand"]["op"], "CLOSE");
        clock.advance(chrono::Duration::seconds(1));
        let res = admin.refused(SEND, cmd(&detectors[3], "TRIP", json!({"stepUpToken": token}))).await?;
        assert_eq!(res, forbidden("stepUpToken"));
        // The password keeps working; without either the password is asked for.
        assert_eq!(admin.refused(SEND, cmd(&detectors[3], "TRIP", Value::Null)).await?, forbidden("password"));
        let trip = admin.ok(SEND, cmd(&detectors[3], "TRIP", json!({"password": PASSWORD}))).await?;
        assert_eq!(trip["sendCommand"]["op"], "TRIP");

        // Only people signed in re-authenticate.
        let key = admin
            .ok("mutation { createApiKey(input: {name: \"bms\", roleId: \"viewer\"}) { secret } }", json!({}))
            .await?;
        let bms = admin.with_token(key["createApiKey"]["secret"].as_str().unwrap_or_default());
        assert_eq!(bms.refused(REAUTH, json!({"p": PASSWORD})).await?.0, "FORBIDDEN");
        assert_eq!(server.anonymous().refused(REAUTH, json!({"p": PASSWORD})).await?.0, "UNAUTHENTICATED");

        // Each re-authentication is in the operation log; failures are not tokens.
        let db = server.services.store().db();
        let logged = operation_log::Entity::find()
            .filter(operation_log::Column::Action.eq("auth.reauthenticate"))
            .count(db)
            .await?;
        assert_eq!(logged, 2);
        // Wrong passwords are limited like sign-ins: after five, even the right one waits.
        for _ in 0..5 {
            assert_eq!(manager.refused(REAUTH, json!({"p": "guess"})).await?, forbidden("password"));
        }
        assert_eq!(manager.refused(REAUTH, json!({"p": PASSWORD})).await?.0, "RATE_LIMITED");
    }
    Ok(())
}
