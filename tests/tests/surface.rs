//! The HTTP surface besides GraphQL operations: health, readiness, metrics, the offline
//! explorer, GraphQL-over-HTTP content negotiation, the WebSocket handshake, the committed
//! schema, the append-only audit table and the purity of the domain crate.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sparkwatch_tests::{Backend, TestServer, backends};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn health_readiness_and_metrics() -> anyhow::Result<()> {
    let server = TestServer::start(&Backend::Sqlite).await?;
    let get = |path: &str| server.http.get(format!("{}{path}", server.base)).send();
    assert_eq!(get("/healthz").await?.text().await?, "ok");
    let ready: Value = get("/readyz").await?.json().await?;
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["cache"], "ok");
    server.anonymous().run("{ __typename }", json!({})).await?;
    let metrics = get("/metrics").await?.text().await?;
    assert!(metrics.contains("sparkwatch_graphql_requests_total{outcome=\"ok\",transport=\"http\"}"), "{metrics}");
    let res = get("/graphql").await?;
    assert_eq!(res.status(), 405, "plain GET is not a query transport");
    Ok(())
}

#[tokio::test]
async fn explorer_is_served_from_the_binary() -> anyhow::Result<()> {
    let server = TestServer::start(&Backend::Sqlite).await?;
    let page = server.http.get(format!("{}/graphiql", server.base)).send().await?;
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await?;
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not load anything from the internet"
    );
    // Every script and stylesheet it references is served here.
    let mut assets = 0;
    for part in html.split(['"', '\'']).filter(|p| p.starts_with("/graphiql/assets/")) {
        let res = server.http.get(format!("{}{part}", server.base)).send().await?;
        assert_eq!(res.status(), 200, "{part}");
        assert!(res.bytes().await?.len() > 100, "{part}");
        assets += 1;
    }
    assert!(assets >= 4, "expected GraphiQL, React, ReactDOM and the stylesheet, found {assets}");
    Ok(())
}

#[tokio::test]
async fn graphql_over_http_negotiates_the_response_type() -> anyhow::Result<()> {
    let server = TestServer::start(&Backend::Sqlite).await?;
    let url = format!("{}/graphql", server.base);
    let send = |accept: &'static str, query: &'static str| {
        server.http.post(&url).header("accept", accept).json(&json!({"query": query})).send()
    };
    let modern = send("application/graphql-response+json", "{ __typename }").await?;
    assert_eq!(modern.status(), 200);
    assert_eq!(modern.headers()["content-type"], "application/graphql-response+json");
    let bad = send("application/graphql-response+json", "{ nope }").await?;
    assert_eq!(bad.status(), 400, "a request error is a 4xx with the modern media type");
    let legacy = send("application/json", "{ nope }").await?;
    assert_eq!(legacy.status(), 200);
    assert_eq!(legacy.headers()["content-type"], "application/json");
    Ok(())
}

#[tokio::test]
async fn websocket_handshake_checks_the_token() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let token = server.demo_login("manager@demo.local").await?.token.unwrap_or_default();
    let ws_url = format!("{}/graphql", server.base.replace("http://", "ws://"));
    for (auth, expect_ack) in [(format!("Bearer {token}"), true), ("Bearer forged".to_owned(), false)] {
        let mut req = ws_url.as_str().into_client_request()?;
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
        let (mut ws, response) = tokio_tungstenite::connect_async(req).await?;
        assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
        ws.send(Message::text(json!({"type": "connection_init", "payload": {"authorization": auth}}).to_string()))
            .await?;
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await?;
        match reply {
            Some(Ok(Message::Text(t))) => {
                assert!(expect_ack, "a forged token must not be acknowledged: {t}");
                assert_eq!(serde_json::from_str::<Value>(&t)?["type"], "connection_ack");
            }
            Some(Ok(Message::Close(frame))) => {
                assert!(!expect_ack, "a valid token must be acknowledged: {frame:?}");
                let frame = anyhow::Context::context(frame, "closed without a frame")?;
                assert_eq!(u16::from(frame.code), 4403, "graphql-transport-ws: Forbidden");
                assert!(frame.reason.contains("not valid"), "{}", frame.reason);
            }
            other => anyhow::bail!("unexpected reply {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_operation_log_is_append_only_in_the_database() -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let db = server.services.store().db();
        for sql in ["UPDATE operation_log SET actor = 'forger'", "DELETE FROM operation_log"] {
            let err = db.execute_unprepared(sql).await.expect_err("the database must refuse");
            assert!(err.to_string().contains("append-only"), "{backend:?}: {err}");
        }
    }
    Ok(())
}

#[test]
fn schema_graphql_is_up_to_date() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let current = sparkwatch_api::graphql::sdl();
    if std::env::var_os("SPARKWATCH_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current)?;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "schema.graphql is stale: run `SPARKWATCH_UPDATE_SCHEMA=1 cargo test -p sparkwatch-tests --test surface schema` \
         (or `cargo run -p sparkwatch-api -- print-schema > schema.graphql`) and commit it"
    );
    Ok(())
}

#[test]
fn domain_stays_pure() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "sparkwatch-domain", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(&root)
        .output()?;
    anyhow::ensure!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout)?;
    for forbidden in ["tokio", "sea-orm", "sqlx", "async-graphql", "axum", "redis", "rumqttc", "reqwest"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{forbidden} "))),
            "domain depends on {forbidden}:\n{tree}"
        );
    }
    // No clock reads: time is always a parameter.
    let mut dirs = vec![root.join("domain/src")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    anyhow::ensure!(files.len() > 10, "domain/src not found under {}", root.display());
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        for clock in ["Utc::now", "SystemTime::now", "Instant::now", "Local::now", "now_v7"] {
            assert!(!text.contains(clock), "{} reads the clock ({clock})", path.display());
        }
    }
    Ok(())
}
