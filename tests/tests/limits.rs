//! Limits (issue 16): one unauthenticated client must not take the process down. Each test
//! attacks over real HTTP, TCP or WebSocket and then checks that the server still serves.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sparkwatch_api::http::HttpLimits;
use sparkwatch_api::ws::WsLimits;
use sparkwatch_tests::{Backend, Options, TestServer, WsClient, WsEvent, backends, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(10);

async fn server_with(backend: &Backend, http: HttpLimits, ws: WsLimits) -> anyhow::Result<TestServer> {
    let server = TestServer::start_opts(backend, Options { http, ws, ..Options::default() }).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    Ok(server)
}

/// The server still answers a query.
async fn still_serving(server: &TestServer) -> anyhow::Result<()> {
    let res = server.anonymous().run("{ __typename }", json!({})).await?;
    anyhow::ensure!(res["data"]["__typename"] == "Query", "the server stopped answering: {res}");
    Ok(())
}

async fn token(server: &TestServer, login: &str) -> anyhow::Result<String> {
    Ok(server.demo_login(login).await?.token.unwrap_or_default())
}

/// Posts `body` to `/graphql`; returns the status and the JSON answer.
async fn post(server: &TestServer, body: reqwest::Body) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let res = server
        .http
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn a_100_mib_body_is_refused_while_it_is_read() -> anyhow::Result<()> {
    for backend in backends() {
        let server = server_with(&backend, HttpLimits::default(), WsLimits::default()).await?;
        // Announced length: refused before the body is read.
        let mut big = br#"{"query":"{ __typename }","variables":{"x":""#.to_vec();
        big.resize(100 * 1024 * 1024, b'a');
        big.extend_from_slice(br#""}}"#);
        let (status, res) = post(&server, reqwest::Body::from(big)).await?;
        assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{res}");
        assert_eq!(res["errors"][0]["extensions"]["code"], "TOO_LARGE", "{res}");
        assert_eq!(res["errors"][0]["extensions"]["field"], "body", "{res}");

        // No length (chunked): refused once the cap is passed, not after 100 MiB.
        let chunks = (0..100).map(|i| {
            let chunk = if i == 0 { br#"{"query":"{ __typename }","x":""#.to_vec() } else { vec![b'a'; 1024 * 1024] };
            Ok::<_, std::io::Error>(chunk)
        });
        let started = Instant::now();
        match post(&server, reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).await {
            Ok((status, res)) => {
                assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{res}");
                assert_eq!(res["errors"][0]["extensions"]["code"], "TOO_LARGE", "{res}");
            }
            // The server may close while the client is still writing: also a refusal.
            Err(e) => eprintln!("chunked upload cut off by the server ({e}) after {:?}", started.elapsed()),
        }
        // Just under the cap is read and answered.
        let mut fits = br#"{"query":"{ __typename }","variables":{"x":""#.to_vec();
        fits.resize(1024 * 1024 - 16, b'a');
        fits.extend_from_slice(br#""}}"#);
        let (status, res) = post(&server, reqwest::Body::from(fits)).await?;
        assert_eq!(status, reqwest::StatusCode::OK, "{res}");
        still_serving(&server).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_10000_operation_batch_is_refused_and_20_are_answered() -> anyhow::Result<()> {
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), WsLimits::default()).await?;
    let batch = |n: usize| json!(vec![json!({"query": "{ __typename }"}); n]).to_string();
    let (status, res) = post(&server, batch(10_000).into()).await?;
    assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{res}");
    assert_eq!(res["errors"][0]["extensions"]["code"], "TOO_LARGE", "{res}");
    assert_eq!(res["errors"][0]["extensions"]["field"], "batch", "{res}");
    let (status, res) = post(&server, batch(21).into()).await?;
    assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{res}");
    let (status, res) = post(&server, batch(20).into()).await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{res}");
    assert_eq!(res.as_array().map(Vec::len), Some(20), "{res}");
    still_serving(&server).await
}

/// Sends raw bytes on a new connection from `source` (an address on loopback).
async fn connect_from(server: &TestServer, source: &str) -> anyhow::Result<TcpStream> {
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse()?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    Ok(socket.connect(addr).await?)
}

/// Reads what the server answers until it pauses or closes (at most `WAIT`).
async fn answer(conn: &mut TcpStream) -> anyhow::Result<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, conn.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A keep-alive request on `conn`; the connection stays open after it.
async fn healthz(conn: &mut TcpStream) -> anyhow::Result<String> {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    answer(conn).await
}

#[tokio::test]
async fn a_request_trickling_its_body_ends_with_408() -> anyhow::Result<()> {
    let http = HttpLimits { request_timeout: Duration::from_millis(800), ..HttpLimits::default() };
    let server = server_with(&Backend::Sqlite, http, WsLimits::default()).await?;
    let mut conn = connect_from(&server, "127.0.0.1").await?;
    conn.write_all(
        b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"qu",
    )
    .await?;
    let started = Instant::now();
    let reply = answer(&mut conn).await?;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5), "408 only after {:?}", started.elapsed());
    still_serving(&server).await
}

#[tokio::test]
async fn connections_are_capped_in_total_and_per_address() -> anyhow::Result<()> {
    let http = HttpLimits { max_connections: 4, max_connections_per_address: 2, ..HttpLimits::default() };
    let server = server_with(&Backend::Sqlite, http, WsLimits::default()).await?;
    let mut a1 = connect_from(&server, "127.0.0.1").await?;
    let mut a2 = connect_from(&server, "127.0.0.1").await?;
    assert!(healthz(&mut a1).await?.starts_with("HTTP/1.1 200"));
    assert!(healthz(&mut a2).await?.starts_with("HTTP/1.1 200"));
    // A third from the same address is refused; other addresses are not.
    let mut a3 = connect_from(&server, "127.0.0.1").await?;
    let refused = answer(&mut a3).await?;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let mut b1 = connect_from(&server, "127.0.0.2").await?;
    let mut c1 = connect_from(&server, "127.0.0.3").await?;
    assert!(healthz(&mut b1).await?.starts_with("HTTP/1.1 200"));
    assert!(healthz(&mut c1).await?.starts_with("HTTP/1.1 200"));
    // Four open: the total cap refuses a fourth address.
    let mut d1 = connect_from(&server, "127.0.0.4").await?;
    assert!(answer(&mut d1).await?.starts_with("HTTP/1.1 503"));
    // A closed connection gives its slot back.
    drop(a1);
    eventually("a slot freed by a closed connection", || async {
        let mut again = connect_from(&server, "127.0.0.1").await?;
        let reply = healthz(&mut again).await.unwrap_or_default();
        Ok(reply.starts_with("HTTP/1.1 200").then_some(()))
    })
    .await?;
    drop((a2, b1, c1));
    eventually("served again", || async { Ok(still_serving(&server).await.ok()) }).await
}

/// Waits until the server closes `conn` (end of stream or reset); fails when it is still
/// open after `WAIT`. Whatever the server sends first (a 408, a GOAWAY) is read and dropped.
async fn closed_by_server(conn: &mut TcpStream) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => anyhow::bail!("the server kept the connection open for {WAIT:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_without_a_request_are_closed_after_the_header_timeout() -> anyhow::Result<()> {
    let timeout = Duration::from_secs(1);
    let http = HttpLimits { header_read_timeout: timeout, ..HttpLimits::default() };
    let server = server_with(&Backend::Sqlite, http, WsLimits::default()).await?;
    let opened = Instant::now();
    // Sends nothing at all.
    let mut silent = connect_from(&server, "127.0.0.1").await?;
    // Sends half a request head and stops.
    let mut partial = connect_from(&server, "127.0.0.1").await?;
    partial.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await?;
    // Half the HTTP/2 preface: the protocol is never known.
    let mut half_preface = connect_from(&server, "127.0.0.1").await?;
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await?;
    // HTTP/2 (prior knowledge): the preface and SETTINGS, then no stream ever.
    let mut h2_idle = connect_from(&server, "127.0.0.1").await?;
    h2_idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await?;
    // One request, then idle on a keep-alive connection.
    let mut idle = connect_from(&server, "127.0.0.1").await?;
    assert!(healthz(&mut idle).await?.starts_with("HTTP/1.1 200"));
    // Trickles its head a byte every 200 ms (slowloris): never completes it, never idle.
    let mut slow = connect_from(&server, "127.0.0.1").await?;
    let (mut slow_read, mut slow_write) = slow.split();
    let trickle = async {
        let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: ".iter().chain(std::iter::repeat(&b'a'));
        let mut every = tokio::time::interval(Duration::from_millis(200));
        for byte in head.take(100) {
            every.tick().await;
            if slow_write.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
    };
    let slow_closed = async {
        let mut buf = vec![0u8; 1024];
        let started = Instant::now();
        loop {
            match slow_read.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let slow_after = tokio::select! {
        took = slow_closed => took,
        () = trickle => anyhow::bail!("a slowloris head was still being read after 20 s"),
    };
    // HTTP/2 closes once its ping goes unanswered: two periods.
    let bound = 2 * timeout + Duration::from_secs(2);
    for (what, conn) in [
        ("silent", &mut silent),
        ("partial head", &mut partial),
        ("idle keep-alive", &mut idle),
        ("half an HTTP/2 preface", &mut half_preface),
        ("idle HTTP/2", &mut h2_idle),
    ] {
        closed_by_server(conn).await.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        // Checked in turn: the time since they were opened is an upper bound for each.
        let took = opened.elapsed();
        eprintln!("{what}: closed by the server within {took:?} of opening (timeout {timeout:?})");
        assert!(took < bound, "{what}: closed only after {took:?}");
    }
    eprintln!("slowloris: closed by the server {slow_after:?} after its first byte");
    assert!(slow_after < bound, "slowloris: closed only after {slow_after:?}");
    // Everyone else is still served, over HTTP/1.1 and HTTP/2.
    still_serving(&server).await?;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let res = h2.get(format!("{}/healthz", server.base)).send().await?;
    assert_eq!((res.status(), res.version()), (reqwest::StatusCode::OK, reqwest::Version::HTTP_2));
    Ok(())
}

#[tokio::test]
async fn one_address_cannot_take_the_default_connection_cap() -> anyhow::Result<()> {
    let limits = HttpLimits::default();
    assert!(limits.max_connections_per_address <= limits.max_connections / 16, "{limits:?}");
    let server = server_with(&Backend::Sqlite, limits, WsLimits::default()).await?;
    let mut held = Vec::new();
    for _ in 0..limits.max_connections_per_address {
        held.push(connect_from(&server, "127.0.0.1").await?);
    }
    // Accepted in order: by the time this one is, every one before it holds a slot.
    let mut one_more = connect_from(&server, "127.0.0.1").await?;
    let refused = answer(&mut one_more).await?;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let mut other = connect_from(&server, "127.0.0.2").await?;
    assert!(healthz(&mut other).await?.starts_with("HTTP/1.1 200"));
    drop(held);
    Ok(())
}

#[tokio::test]
async fn detector_readings_are_weighed_by_the_points_they_return() -> anyhow::Result<()> {
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), WsLimits::default()).await?;
    let admin = server.demo_login("admin@demo.local").await?;
    let q = "query($f: DateTime!, $t: DateTime!, $n: Int) { detectors(first: $n) { nodes { readings(from: $f, to: $t) { at } } } }";
    let to = chrono::Utc::now();
    let week = json!({"f": to - chrono::Duration::days(7), "t": to, "n": 100});
    let res = admin.run(q, week).await?;
    let message = res["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("complex"), "100 detectors × a week of readings was answered: {res}");
    // One detector's week, or a hundred detectors' minute, are fine.
    admin.ok(q, json!({"f": to - chrono::Duration::days(7), "t": to, "n": 1})).await?;
    admin.ok(q, json!({"f": to - chrono::Duration::minutes(1), "t": to, "n": 100})).await?;
    Ok(())
}

#[tokio::test]
async fn a_10_mib_websocket_message_closes_with_1009() -> anyhow::Result<()> {
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), WsLimits::default()).await?;
    let good = token(&server, "admin@demo.local").await?;
    let ping = |bytes: usize| format!(r#"{{"type":"ping","payload":{{"x":"{}"}}}}"#, "a".repeat(bytes));
    // Just over the limit (small enough to be written whole): closed with 1009.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send_raw(Message::text(ping(80 * 1024))).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 1009);
    // 10 MiB: refused from the frame header on, so the server may hang up while the
    // client is still writing; either way no pong comes back.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    if ws.send_raw(Message::text(ping(10 * 1024 * 1024))).await.is_ok() {
        let code = ws.closed(WAIT).await?.0;
        assert!(code == 1009 || code == 1006, "closed with {code}");
    }
    // Under the limit is fine.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send(json!({"type": "ping", "payload": {"x": "a".repeat(60 * 1024)}})).await?;
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "pong"));
    still_serving(&server).await
}

#[tokio::test]
async fn a_socket_that_never_authenticates_is_closed_with_4401() -> anyhow::Result<()> {
    let ws_limits = WsLimits { init_timeout: Duration::from_millis(500), ..WsLimits::default() };
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), ws_limits).await?;
    for init in [json!({"type": "connection_init"}), json!({"type": "connection_init", "payload": {}})] {
        let mut ws = WsClient::connect(&server, "graphql-transport-ws").await?;
        ws.send(init).await?;
        assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "connection_ack"));
        let started = Instant::now();
        assert_eq!(ws.closed(WAIT).await?.0, 4401);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // A signed-in socket outlives the init timeout.
    let good = token(&server, "admin@demo.local").await?;
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.silent_for(Duration::from_secs(1)).await?;
    Ok(())
}

#[tokio::test]
async fn sockets_per_user_and_subscriptions_per_socket_are_capped() -> anyhow::Result<()> {
    let ws_limits = WsLimits { max_sockets_per_user: 2, max_subscriptions: 2, ..WsLimits::default() };
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), ws_limits).await?;
    let manager = token(&server, "manager@demo.local").await?;
    let first = WsClient::signed_in(&server, &manager).await?;
    let mut second = WsClient::signed_in(&server, &manager).await?;
    let mut third = WsClient::connect(&server, "graphql-transport-ws").await?;
    third.send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {manager}")}})).await?;
    assert_eq!(third.closed(WAIT).await?.0, 4429);
    // Another user is not affected.
    WsClient::signed_in(&server, &token(&server, "admin@demo.local").await?).await?;
    // A closed socket gives its place back.
    drop(first);
    eventually("a place freed by a closed socket", || async { Ok(WsClient::signed_in(&server, &manager).await.ok()) })
        .await?;

    let q = "subscription { hazardChanged { id } }";
    second.subscribe("1", q, json!({})).await?;
    second.subscribe("2", q, json!({})).await?;
    second.subscribe("3", q, json!({})).await?;
    match second.recv(WAIT).await? {
        WsEvent::Message(m) => {
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["id"], "3", "{m}");
            assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
        }
        other => anyhow::bail!("expected an error for the third subscription, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn close_frames_are_valid_and_a_client_close_is_answered() -> anyhow::Result<()> {
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), WsLimits::default()).await?;
    let good = token(&server, "admin@demo.local").await?;
    // An unknown message type: 4400 with a reason short enough for a control frame
    // (the parse error quoting the message made the frame invalid: clients saw 1006).
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send(json!({"type": "bogus", "padding": "x".repeat(300)})).await?;
    let (code, reason) = ws.closed(WAIT).await?;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.len() <= 123, "{reason}");
    // The client closes: the server answers with a close frame (1000), not by hanging up.
    let mut ws = WsClient::signed_in(&server, &good).await?;
    ws.send_raw(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))).await?;
    assert_eq!(ws.closed(WAIT).await?.0, 1000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_does_not_starve_ingestion_or_queries() -> anyhow::Result<()> {
    use sparkwatch_api::auth::rate_limit::Limits;
    // Rate limiting off: the flood must reach argon2.
    let limits = Limits { account_failures: 1_000_000, address_attempts: 1_000_000, ..Limits::default() };
    let server =
        TestServer::start_opts(&Backend::Sqlite, Options { login_limits: limits, ..Options::default() }).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let mut feed = sparkwatch_tests::Feeder::start(&server.services);
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let anonymous = server.anonymous();
            tokio::spawn(async move {
                for _ in 0..6 {
                    let _ = anonymous
                        .run(
                            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                            json!({"i": {"login": "admin@demo.local", "password": "wrong-password"}}),
                        )
                        .await;
                }
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let at = chrono::Utc::now() - chrono::Duration::seconds(60 - i);
        let reading = json!({"ts": at.timestamp_millis(), "detectors": [{"addr": 1, "leak": [20.0]}]});
        feed.send("sw/SW-DEMO-0101/telemetry", &reading.to_string()).await;
        feed.settle().await?;
        still_serving(&server).await?;
        slowest = slowest.max(started.elapsed());
    }
    let flooding = flood.iter().filter(|t| !t.is_finished()).count();
    eprintln!(
        "slowest reading stored + query answered during the login flood: {slowest:?} ({flooding} of 64 still flooding)"
    );
    assert!(flooding > 0, "the flood ended before the measurement did: the test proved nothing");
    assert!(slowest < Duration::from_secs(1), "ingestion or queries waited {slowest:?} behind the login flood");
    for t in flood {
        t.abort();
    }
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_the_sqlite_file_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("new").join("data");
    let config = sparkwatch_api::config::Settings {
        data_dir: Some(dir.clone()),
        jwt_secret: Some("t".repeat(40)),
        ..Default::default()
    }
    .resolve()?;
    let _services = sparkwatch_api::services(
        &config,
        std::sync::Arc::new(sparkwatch_api::service::SystemClock),
        Default::default(),
    )
    .await?;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&dir)?, 0o700, "data directory");
    assert_eq!(mode(&dir.join("sparkwatch.db"))?, 0o600, "database file");
    for side in ["sparkwatch.db-wal", "sparkwatch.db-shm"] {
        if let Ok(m) = mode(&dir.join(side)) {
            assert_eq!(m & 0o077, 0, "{side} is readable by others: {m:o}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address_and_ask_for_a_token() -> anyhow::Result<()> {
    const TOKEN: &str = "metrics-token-0123456789";
    let server = TestServer::start(&Backend::Sqlite).await?;
    let http = reqwest::Client::new();
    let get = |url: String, bearer: Option<&'static str>| {
        let mut req = http.get(url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        async move { anyhow::Ok(req.send().await?) }
    };
    // Default: open on the API's address (the harness's server).
    assert_eq!(get(format!("{}/metrics", server.base), None).await?.status(), 200);

    // Own address and a token: gone from the API's address, 401 without the token.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (api_url, metrics_url) = (format!("http://{}", api.local_addr()?), format!("http://{}", metrics.local_addr()?));
    let serve = sparkwatch_api::Serve::new(server.services.clone(), api)
        .metrics_listener(Some(metrics))
        .metrics_token(Some(TOKEN.to_owned()));
    tokio::spawn(serve.run(std::future::pending()));
    assert_eq!(get(format!("{api_url}/metrics"), Some(TOKEN)).await?.status(), 404);
    assert_eq!(get(format!("{api_url}/healthz"), None).await?.status(), 200);
    let refused = get(format!("{metrics_url}/metrics"), None).await?;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await?;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    assert_eq!(get(format!("{metrics_url}/metrics"), Some("metrics-token-wrong-guess")).await?.status(), 401);
    let ok = get(format!("{metrics_url}/metrics"), Some(TOKEN)).await?;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await?.contains("sparkwatch_"));

    // A token alone protects it on the API's address.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_url = format!("http://{}", api.local_addr()?);
    tokio::spawn(
        sparkwatch_api::Serve::new(server.services.clone(), api)
            .metrics_token(Some(TOKEN.to_owned()))
            .run(std::future::pending()),
    );
    assert_eq!(get(format!("{api_url}/metrics"), None).await?.status(), 401);
    assert_eq!(get(format!("{api_url}/metrics"), Some(TOKEN)).await?.status(), 200);
    Ok(())
}

/// Leak readings over the threshold, 6 s apart in device time, so the 5 s delay elapses.
fn leak(at: chrono::DateTime<chrono::Utc>, ma: f64) -> String {
    json!({"ts": at.timestamp_millis(), "detectors": [{"addr": 1, "leak": [ma]}]}).to_string()
}

#[tokio::test]
async fn a_junk_flood_is_sampled_and_does_not_delay_a_real_alarm() -> anyhow::Result<()> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    for backend in backends() {
        let server = server_with(&backend, HttpLimits::default(), WsLimits::default()).await?;
        let mut feed = sparkwatch_tests::Feeder::start(&server.services);
        let started = Instant::now();
        for i in 0..20_000 {
            let topic =
                if i % 2 == 0 { "sw/SW-DEMO-0101/telemetry".to_owned() } else { format!("sw/FAKE-{i}/telemetry") };
            feed.send(&topic, "not json at all").await;
        }
        let t0 = chrono::Utc::now() - chrono::Duration::seconds(30);
        feed.send("sw/SW-DEMO-0101/telemetry", &leak(t0, 450.0)).await;
        feed.send("sw/SW-DEMO-0101/telemetry", &leak(t0 + chrono::Duration::seconds(6), 480.0)).await;
        feed.settle().await?;
        let admin = server.demo_login("admin@demo.local").await?;
        eventually("the leak alarm's hazard", || async {
            let res = admin.run("{ hazards(first: 5) { nodes { kind } } }", json!({})).await?;
            Ok(res["data"]["hazards"]["nodes"].as_array().is_some_and(|n| !n.is_empty()).then_some(()))
        })
        .await?;
        let took = started.elapsed();
        eprintln!("{backend:?}: 20,000 junk messages then an alarm: hazard after {took:?}");
        assert!(took < Duration::from_secs(8), "the alarm waited {took:?} behind the junk");
        // Sampled: far fewer letters than messages, the rest counted.
        let stored = sparkwatch_entity::dead_letter::Entity::find().count(server.services.store().db()).await?;
        assert!((1..=1000).contains(&stored), "{stored} dead letters stored");
        assert!(sparkwatch_tests::metric(&server, "sparkwatch_dead_letters_dropped_total").await? > 0.0);
    }
    Ok(())
}

#[tokio::test]
async fn dead_letters_expire() -> anyhow::Result<()> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    use sparkwatch_api::ingest::pipeline::PipelineConfig;
    for backend in backends() {
        let server = server_with(&backend, HttpLimits::default(), WsLimits::default()).await?;
        let db = server.services.store().db();
        let old = chrono::Utc::now() - chrono::Duration::days(40);
        for at in [old, chrono::Utc::now()] {
            let letter = sparkwatch_api::store::telemetry::DeadLetter {
                tenant: None,
                serial: Some("SW-OLD"),
                topic: "sw/SW-OLD/telemetry",
                reason: "parse",
                detail: "test",
                payload: b"junk",
                at,
            };
            sparkwatch_api::store::telemetry::insert_dead_letter(db, letter).await?;
        }
        let config = PipelineConfig {
            dead_letter_retention: Some(chrono::Duration::days(30)),
            housekeeping: Duration::from_millis(50),
            ..PipelineConfig::default()
        };
        let (_queue, _stop) = sparkwatch_api::start_ingest_with(&server.services, config, None);
        eventually("the 40-day-old dead letter deleted", || async {
            Ok((sparkwatch_entity::dead_letter::Entity::find().count(db).await? == 1).then_some(()))
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn alarm_events_leave_out_online_and_offline_unless_asked() -> anyhow::Result<()> {
    let server = server_with(&Backend::Sqlite, HttpLimits::default(), WsLimits::default()).await?;
    let mut feed = sparkwatch_tests::Feeder::start(&server.services);
    let mut ws = WsClient::signed_in(&server, &token(&server, "manager@demo.local").await?).await?;
    ws.subscribe("default", "subscription { alarmEvents { kind } }", json!({})).await?;
    ws.subscribe("status", "subscription { alarmEvents(categories: [STATUS]) { kind } }", json!({})).await?;
    // Subscribed once the hub answers on the same socket (frames are handled in order).
    ws.send(json!({"type": "ping"})).await?;
    assert!(matches!(ws.recv(WAIT).await?, WsEvent::Message(m) if m["type"] == "pong"));
    // The device's first message brings it ONLINE, then it raises a leak alarm.
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(30);
    feed.send("sw/SW-DEMO-0101/telemetry", &leak(t0, 450.0)).await;
    feed.send("sw/SW-DEMO-0101/telemetry", &leak(t0 + chrono::Duration::seconds(6), 480.0)).await;
    feed.settle().await?;
    let first = ws.next_of("default", WAIT).await?;
    assert_eq!(first["data"]["alarmEvents"]["kind"], "LEAK_ALARM", "{first}");
    let status = ws.next_of("status", WAIT).await?;
    assert_eq!(status["data"]["alarmEvents"]["kind"], "ONLINE", "{status}");
    Ok(())
}
