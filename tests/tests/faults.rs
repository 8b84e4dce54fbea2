//! Fault injection: components break mid-stream and the suites count that nothing was lost,
//! nothing counted twice and no device was declared offline because of it. Each test
//! breaks only what it owns: its own database (SQLite file or PostgreSQL database, with a
//! trigger that fails on demand), its own Mosquitto, PostgreSQL or Redis.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use sparkwatch_api::ingest::pipeline::PipelineConfig;
use sparkwatch_api::service::ManualClock;
use sparkwatch_entity::{dead_letter, device, event, hazard, reading, reading_rollup};
use sparkwatch_tests::{
    Backend, FaultSwitch, Feeder, Options, PrivateMosquitto, PrivatePostgres, PrivateRedis, TestServer, WsClient,
    backends, eventually, metric,
};

fn telemetry(at: DateTime<Utc>, seq: u64, detectors: Value) -> String {
    json!({"ts": at.timestamp_millis(), "seq": seq, "detectors": detectors}).to_string()
}

/// A demo server on a manual clock, with ingestion checking heartbeats and writing back
/// every 100 ms (so a test sees a housekeeping pass happen).
async fn server(backend: &Backend) -> anyhow::Result<(TestServer, Arc<ManualClock>, Feeder)> {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let server = TestServer::start_opts(backend, Options { clock: clock.clone(), ..Options::default() }).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let config = PipelineConfig {
        housekeeping: Duration::from_millis(100),
        flush_every: Duration::from_millis(100),
        ..PipelineConfig::default()
    };
    let (queue, stop) = sparkwatch_api::start_ingest_with(&server.services, config, None);
    Ok((server, clock, Feeder::on(queue).holding(stop)))
}

/// One report of each of the two devices the database tests use, for second `s` at `at`:
/// detector 2 of the first is over its 300 mA set-point from second 5 on. Four readings.
async fn round(feed: &mut Feeder, s: i64, at: DateTime<Utc>) {
    let first = json!([{"addr": 1, "leak": [20.0]}, {"addr": 2, "leak": [if s >= 5 { 480.0 } else { 20.0 }]}]);
    feed.send("sw/SW-DEMO-0001/telemetry", &telemetry(at, s as u64, first)).await;
    let second = json!([{"addr": 1, "leak": [21.0]}, {"addr": 2, "leak": [21.0]}]);
    feed.send("sw/SW-DEMO-0002/telemetry", &telemetry(at, s as u64, second)).await;
}

/// After a database failure ended: once a housekeeping pass has run (the last-seen times
/// of the messages held during the failure are written back), every reading is stored
/// once, the alarm of [`round`] is one hazard, and nobody went offline.
async fn nothing_lost(server: &TestServer, t0: DateTime<Utc>, readings: u64) -> anyhow::Result<()> {
    let db = server.services.store().db();
    eventually("last-seen times written back after the recovery", || async {
        let d = device::Entity::find().filter(device::Column::Serial.eq("SW-DEMO-0002")).one(db).await?;
        Ok(d.and_then(|d| d.last_seen_at).filter(|seen| *seen > t0 + chrono::Duration::minutes(1)).map(|_| ()))
    })
    .await?;
    anyhow::ensure!(count(server, reading::Entity::find()).await? == readings, "every reading once");
    let alarms = hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"));
    anyhow::ensure!(count(server, alarms).await? == 1, "one alarm episode, one hazard");
    let offline = event::Entity::find().filter(event::Column::Kind.eq("OFFLINE"));
    anyhow::ensure!(count(server, offline).await? == 0, "nobody went offline because the database failed");
    Ok(())
}

/// Failed attempts to store in any of `stages`.
async fn failures(server: &TestServer, stages: &[&str]) -> anyhow::Result<f64> {
    let mut n = 0.0;
    for stage in stages {
        n += metric(server, &format!("sparkwatch_ingest_failures_total{{stage=\"{stage}\"}}")).await?;
    }
    Ok(n)
}

async fn count<E: EntityTrait>(server: &TestServer, q: sea_orm::Select<E>) -> anyhow::Result<u64>
where
    E::Model: Sync,
{
    Ok(q.count(server.services.store().db()).await?)
}

/// The database refuses every insert of ingestion's tables for a while (PostgreSQL and
/// SQLite alike, through a trigger). Meanwhile: nothing is acknowledged, `/readyz` and
/// `/metrics` say ingestion is failing, a malformed message waits for its dead letter, and
/// an hour passes on the clock. Afterwards every reading is stored exactly once (a
/// redelivery sent during the failure included), the alarm is one hazard, and no device was
/// declared offline.
#[tokio::test]
async fn a_database_that_fails_for_a_while_loses_nothing() -> anyhow::Result<()> {
    for backend in backends() {
        let (server, clock, mut feed) = server(&backend).await?;
        let fault = FaultSwitch::install(&server).await?;
        let t0 = Utc::now() - chrono::Duration::minutes(2);
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let (a, b) = ("sw/SW-DEMO-0001/telemetry", "sw/SW-DEMO-0002/telemetry");
        let calm = |ma: f64| json!([{"addr": 1, "leak": [ma]}, {"addr": 2, "leak": [ma]}]);
        feed.send(a, &telemetry(at(0), 0, calm(20.0))).await;
        feed.send(b, &telemetry(at(0), 0, calm(20.0))).await;
        feed.settle().await?;

        fault.set(true).await?;
        let mut sent_readings = 4;
        for s in 1..=20 {
            round(&mut feed, s, at(s)).await;
            sent_readings += 4;
        }
        eventually("ingestion to say it is failing", || async {
            let ready = server.http.get(format!("{}/readyz", server.base)).send().await?;
            let status = ready.status();
            let body: Value = ready.json().await?;
            let tried = failures(&server, &["alarm_path", "readings"]).await?;
            Ok((status == 503 && body["ingestion"] == "failing" && tried >= 3.0).then_some(()))
        })
        .await?;
        // Behind the held batches: a malformed message (its dead letter cannot be written
        // either) and a redelivery — as the broker sends after a reconnect — of a message
        // that is held.
        feed.send(a, "{not json").await;
        feed.send(a, &telemetry(at(3), 3, calm(20.0))).await;
        eventually("the dead letter to be retried", || async {
            Ok((failures(&server, &["dead_letters"]).await? >= 1.0).then_some(()))
        })
        .await?;
        assert_eq!(metric(&server, "sparkwatch_ingest_failing").await?, 1.0, "{backend:?}");
        assert_eq!(feed.unacknowledged(), 42, "{backend:?}: nothing is acknowledged while nothing is stored");
        // Heartbeat timeouts would have passed many times over.
        clock.advance(chrono::Duration::hours(1));

        fault.set(false).await?;
        feed.settle().await?;
        nothing_lost(&server, t0, sent_readings).await.map_err(|e| e.context(format!("{backend:?}")))?;
        let letters = dead_letter::Entity::find().filter(dead_letter::Column::Reason.eq("not_json"));
        assert_eq!(count(&server, letters).await?, 1, "{backend:?}");
        assert_eq!(metric(&server, "sparkwatch_ingest_failing").await?, 0.0, "{backend:?}");
        let ready = server.http.get(format!("{}/readyz", server.base)).send().await?;
        assert_eq!(ready.status(), 200, "{backend:?}");
        // The stage times say where the outage went: batches held in a stage that stores,
        // retried with backoff (at least 100 ms), not waiting in a queue.
        let (mut slow, mut quick) = (0.0, 0.0);
        for stage in ["alarm_path", "lane"] {
            let all = metric(&server, &format!("sparkwatch_ingest_stage_seconds_count{{stage=\"{stage}\"}}")).await?;
            let fast =
                metric(&server, &format!("sparkwatch_ingest_stage_seconds_bucket{{stage=\"{stage}\",le=\"0.1\"}}"))
                    .await?;
            slow += all - fast;
            quick += fast;
        }
        assert!(quick >= 1.0, "{backend:?}: the batches before the outage were quick (and the bucket is read)");
        assert!(slow >= 1.0, "{backend:?}: no batch spent the outage in a storing stage");
    }
    Ok(())
}

/// Graceful shutdown waits for the pipeline's final flush: with a write-back interval of
/// an hour, the rollups and last-seen times exist as soon as `shutdown` returns.
#[tokio::test]
async fn graceful_shutdown_waits_for_the_final_flush() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::start(&backend).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let config = PipelineConfig { flush_every: Duration::from_secs(3600), ..PipelineConfig::default() };
        let ingestion = sparkwatch_api::start_ingestion(&server.services, config, None);
        let mut feed = Feeder::on(ingestion.queue.clone());
        let t0 = Utc::now() - chrono::Duration::minutes(3);
        for s in 0..30 {
            let m = telemetry(t0 + chrono::Duration::seconds(s), s as u64, json!([{"addr": 1, "leak": [30.0]}]));
            feed.send("sw/SW-DEMO-0001/telemetry", &m).await;
        }
        feed.settle().await?;
        drop(feed);
        assert_eq!(count(&server, reading_rollup::Entity::find()).await?, 0, "{backend:?}: not written back yet");
        assert!(ingestion.shutdown(Duration::from_secs(10)).await, "{backend:?}: finished in time");
        let rollups = count(&server, reading_rollup::Entity::find()).await?;
        assert!(rollups >= 3, "{backend:?}: minute, hour and day cells written at shutdown ({rollups})");
        let d = device::Entity::find()
            .filter(device::Column::Serial.eq("SW-DEMO-0001"))
            .one(server.services.store().db())
            .await?;
        assert!(d.and_then(|d| d.last_seen_at).is_some(), "{backend:?}: last-seen time written at shutdown");
    }
    Ok(())
}

/// A publish bigger than the contract allows (300 KB) on a broker that lets it through:
/// dead-lettered as `too_large`, and ingestion goes on — it used to exceed the client's
/// packet limit and reconnect every second without ingesting anything else. Against a
/// Mosquitto of the test's own (default limits).
#[tokio::test]
async fn an_oversized_payload_is_dead_lettered_and_ingestion_goes_on() -> anyhow::Result<()> {
    let Some(broker) = PrivateMosquitto::start().await? else {
        eprintln!("skipped: no mosquitto binary");
        return Ok(());
    };
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let settings = sparkwatch_api::ingest::mqtt::MqttSettings::from_url(&broker.url(), "sparkwatch-big", "sw", None)?;
    let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, "sw", Some(settings));
    let (client, mut lp) = rumqttc::AsyncClient::new(
        {
            let mut o = rumqttc::MqttOptions::new("SW-DEMO-0001", "127.0.0.1", broker.port);
            o.set_max_packet_size(1 << 20, 1 << 20);
            o
        },
        16,
    );
    tokio::spawn(async move { while lp.poll().await.is_ok() {} });
    let topic = "sw/SW-DEMO-0001/telemetry";
    let t0 = Utc::now() - chrono::Duration::minutes(1);
    let stored = || async { count(&server, reading::Entity::find()).await };
    // Until the subscriber is subscribed, publishes are not kept for it.
    let mut seq = 0;
    eventually("the subscriber to receive", || {
        seq += 1;
        let (client, body) = (
            client.clone(),
            telemetry(t0 + chrono::Duration::seconds(seq), seq as u64, json!([{"addr": 1, "leak": [20.0]}])),
        );
        async move {
            client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body).await?;
            Ok((stored().await? > 0).then_some(()))
        }
    })
    .await?;
    let before = stored().await?;
    let big = format!(r#"{{"ts": {}, "detectors": [], "pad": "{}"}}"#, t0.timestamp_millis(), "x".repeat(300_000));
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, big).await?;
    let after = telemetry(t0 + chrono::Duration::seconds(50), 500, json!([{"addr": 1, "leak": [21.0]}]));
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, after).await?;
    let db = server.services.store().db();
    let letter = eventually("the big message's dead letter and the reading after it", || async {
        let letter = dead_letter::Entity::find().filter(dead_letter::Column::Reason.eq("too_large")).one(db).await?;
        let n = stored().await?;
        Ok(letter.filter(|_| n > before))
    })
    .await;
    let letter = match letter {
        Ok(l) => l,
        Err(e) => anyhow::bail!("{e}: {} readings stored, {before} before the big one", stored().await?),
    };
    assert!(letter.detail.contains("300"), "{}", letter.detail);
    assert_eq!(letter.payload.len(), 4096, "the first 4 KiB are kept");
    Ok(())
}

/// A field device on a broker: publishes `n` telemetry messages (seq 1..=n) with QoS 1 on a
/// persistent session, riding out broker restarts (unacknowledged publishes are sent again
/// when the session resumes). Returns once all are handed to its client.
async fn device_publishes(port: u16, serial: &'static str, n: u64, t0: DateTime<Utc>) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut options = MqttOptions::new(serial, "127.0.0.1", port);
    options.set_clean_session(false).set_keep_alive(Duration::from_secs(5));
    let (client, mut lp) = AsyncClient::new(options, 256);
    tokio::spawn(async move {
        loop {
            if lp.poll().await.is_err() {
                // The broker is restarting: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let topic = format!("sw/{serial}/telemetry");
    for seq in 1..=n {
        let at = t0 + chrono::Duration::milliseconds(seq as i64 * 100);
        client
            .publish(&topic, QoS::AtLeastOnce, false, telemetry(at, seq, json!([{"addr": 1, "leak": [20.0]}])))
            .await?;
        // A device's pace (20 messages a second), not a wait for anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until the server's subscription is in place (its session must exist before the
/// devices publish): a probe reading, sent again until one is stored.
async fn until_subscribed(server: &TestServer, port: u16, t0: DateTime<Utc>) -> anyhow::Result<()> {
    eventually("the server to be subscribed", || async {
        let probe = telemetry(t0 - chrono::Duration::minutes(1), 0, json!([{"addr": 2, "leak": [20.0]}]));
        let (c, mut lp) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("probe", "127.0.0.1", port), 4);
        c.publish("sw/SW-DEMO-0001/telemetry", rumqttc::QoS::AtLeastOnce, false, probe).await?;
        let _ = tokio::time::timeout(Duration::from_millis(300), async { while lp.poll().await.is_ok() {} }).await;
        Ok((count(server, reading::Entity::find()).await? > 0).then_some(()))
    })
    .await
}

/// Mosquitto (the test's own, with persistence) restarts while four devices publish: every
/// message is stored exactly once and no device is declared offline.
#[tokio::test]
async fn a_broker_restart_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let Some(mut broker) = PrivateMosquitto::start().await? else {
        eprintln!("skipped: no mosquitto binary");
        return Ok(());
    };
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let settings =
        sparkwatch_api::ingest::mqtt::MqttSettings::from_url(&broker.url(), "sparkwatch-restart", "sw", None)?;
    let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, "sw", Some(settings));
    let t0 = Utc::now() - chrono::Duration::minutes(5);
    let stored = || async { count(&server, reading::Entity::find()).await };
    // The subscriber's session must exist before the devices publish.
    until_subscribed(&server, broker.port, t0).await?;
    let serials = ["SW-DEMO-0001", "SW-DEMO-0002", "SW-DEMO-0101", "SW-DEMO-0102"];
    let devices = futures_util::future::try_join_all(serials.map(|s| device_publishes(broker.port, s, 60, t0)));
    let restart = async {
        eventually("some readings stored before the restart", || async { Ok((stored().await? > 40).then_some(())) })
            .await?;
        broker.restart().await
    };
    let (published, restarted) = tokio::join!(devices, restart);
    published?;
    restarted?;
    let all = 1 + 4 * 60;
    let n = eventually("every message stored", || async {
        let n = stored().await?;
        Ok((n >= all).then_some(n))
    })
    .await;
    let n = match n {
        Ok(n) => n,
        Err(e) => anyhow::bail!("{e}: {} of {all} stored", stored().await?),
    };
    assert_eq!(n, all, "every message once");
    let offline = event::Entity::find().filter(event::Column::Kind.eq("OFFLINE"));
    assert_eq!(count(&server, offline).await?, 0, "nobody offline");
    Ok(())
}

/// PostgreSQL (a cluster of the test's own) goes away mid-stream — stopped at once, as in a
/// crash — and is unreachable for 20 s, longer than the pool waits for a connection (10 s),
/// so ingestion sees the errors and retries. Two devices keep reporting, one detector over
/// its set-point throughout: every reading is stored once, the alarm is one hazard, and an
/// hour passing on the clock during the outage declares nobody offline.
#[tokio::test]
async fn a_postgres_outage_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let Some(pg) = PrivatePostgres::start().await? else {
        eprintln!("skipped: no initdb/pg_ctl");
        return Ok(());
    };
    let (server, clock, mut feed) = server(&Backend::Postgres(pg.url())).await?;
    let t0 = Utc::now() - chrono::Duration::minutes(2);
    let mut sent = 0;
    for s in 0..260 {
        round(&mut feed, s, t0 + chrono::Duration::milliseconds(s * 500)).await;
        sent += 4;
        match s {
            15 => pg.down()?,
            215 => {
                clock.advance(chrono::Duration::hours(1));
                pg.up()?;
            }
            // A device's pace, not a wait for anything.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    feed.settle().await?;
    assert!(failures(&server, &["alarm_path", "readings", "thresholds", "devices"]).await? > 0.0, "it did fail");
    nothing_lost(&server, t0, sent).await
}

/// The `sparkwatch` binary next to this test's executable (`target/debug/sparkwatch`),
/// built by `cargo test --workspace` runs that include it (`.ci/run` builds it first).
fn server_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let binary = exe.parent()?.parent()?.join("sparkwatch");
    binary.exists().then_some(binary)
}

/// `sparkwatch serve` as a process of its own, on the seeded server's database, ingesting
/// from `broker` with a persistent session.
fn spawn_server(binary: &std::path::Path, seeded: &TestServer, broker: &PrivateMosquitto) -> anyhow::Result<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = std::process::Command::new(binary)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&seeded.config.data_dir)
        .args(["--database-url", seeded.config.database_url.expose()])
        .args(["--mqtt-url", &broker.url(), "--mqtt-client-id", "sparkwatch-killed"])
        .env("SPARKWATCH_JWT_SECRET", "k".repeat(40))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(Child(child))
}

/// Kills the server process with SIGKILL when dropped (a failing test leaves none behind).
struct Child(std::process::Child);

impl Child {
    fn kill_9(&mut self) -> anyhow::Result<()> {
        self.0.kill()?; // SIGKILL on Unix: no flush, no goodbye.
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server process is killed with SIGKILL mid-stream and started again, with an external
/// broker (the test's own Mosquitto with persistence) and a persistent session: everything
/// the broker acknowledged to the devices is stored exactly once, and nobody is declared
/// offline. Messages are acknowledged to the broker only after their commit, so those in
/// flight at the kill come again.
#[tokio::test]
async fn a_server_killed_with_sigkill_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let Some(binary) = server_binary() else {
        eprintln!("skipped: target/debug/sparkwatch is not built (cargo build -p sparkwatch-api)");
        return Ok(());
    };
    let Some(broker) = PrivateMosquitto::start().await? else {
        eprintln!("skipped: no mosquitto binary");
        return Ok(());
    };
    for backend in backends() {
        // Seeded in-process, then served by the binary over the same database.
        let seeded = TestServer::demo(&backend).await?;
        let mut server = spawn_server(&binary, &seeded, &broker)?;
        let t0 = Utc::now() - chrono::Duration::minutes(5);
        let stored = || async { count(&seeded, reading::Entity::find()).await };
        until_subscribed(&seeded, broker.port, t0).await?;
        let serials = ["SW-DEMO-0001", "SW-DEMO-0002", "SW-DEMO-0101", "SW-DEMO-0102"];
        let devices = futures_util::future::try_join_all(serials.map(|s| device_publishes(broker.port, s, 60, t0)));
        let kill = async {
            eventually("some readings stored before the kill", || async { Ok((stored().await? > 40).then_some(())) })
                .await?;
            server.kill_9()?;
            let at_kill = stored().await?;
            server = spawn_server(&binary, &seeded, &broker)?;
            anyhow::Ok(at_kill)
        };
        let (published, at_kill) = tokio::join!(devices, kill);
        published?;
        let at_kill = at_kill?;
        let all = 1 + 4 * 60;
        let n = eventually("every message stored after the restart", || async {
            let n = stored().await?;
            Ok((n >= all).then_some(n))
        })
        .await;
        let n = match n {
            Ok(n) => n,
            Err(e) => anyhow::bail!("{backend:?}: {e}: {} of {all} stored", stored().await?),
        };
        assert!(at_kill < all, "{backend:?}: the kill came mid-stream ({at_kill} of {all} stored)");
        assert_eq!(n, all, "{backend:?}: every message once");
        let offline = event::Entity::find().filter(event::Column::Kind.eq("OFFLINE"));
        assert_eq!(count(&seeded, offline).await?, 0, "{backend:?}: nobody offline");
        drop(server);
    }
    Ok(())
}

const ALARMS: &str = "subscription { alarmEvents { kind deviceName detectorAddress value } }";

/// Two over-threshold readings of `serial`/`addr` 6 s apart (device time), so the 5 s delay
/// elapses and the alarm is confirmed; waits until both are stored or dead-lettered.
async fn leak_alarm(feed: &mut Feeder, serial: &str, addr: u8, ma: f64) -> anyhow::Result<()> {
    let t0 = Utc::now() - chrono::Duration::seconds(30);
    let topic = format!("sw/{serial}/telemetry");
    for (i, at) in [t0, t0 + chrono::Duration::seconds(6)].into_iter().enumerate() {
        let reading = json!([{"addr": addr, "leak": [ma + i as f64]}]);
        feed.send(&topic, &json!({"ts": at.timestamp_millis(), "detectors": reading}).to_string()).await;
    }
    feed.settle().await
}

/// Whether both instances' bus links follow the demo tenant's feed in Redis.
async fn both_follow(redis: &PrivateRedis) -> anyhow::Result<Option<()>> {
    Ok((redis.subscribers("sw:bus:tenant:*").await? >= 2).then_some(()))
}

async fn manager_token(server: &TestServer) -> anyhow::Result<String> {
    Ok(server.demo_login("manager@demo.local").await?.token.unwrap_or_default())
}

/// The next LEAK_ALARM on `ws` (a device coming online is an event too).
async fn next_alarm(ws: &mut WsClient) -> anyhow::Result<Value> {
    loop {
        let payload = ws.next_of("a", Duration::from_secs(10)).await?;
        if payload["data"]["alarmEvents"]["kind"] == "LEAK_ALARM" {
            return Ok(payload["data"]["alarmEvents"].clone());
        }
    }
}

/// Redis (the test's own) is killed while two instances share it, then comes back empty.
/// Meanwhile ingestion is not held up (readings stored, the alarm is a hazard), the
/// ingesting instance's own subscribers still hear the alarm, the latest value comes from
/// the database instead of reading as "no value", and `/readyz` says "degraded" without
/// taking the instance out of service. When Redis returns, the other instance's
/// subscription resumes by itself and hears the next alarm.
#[tokio::test]
async fn a_redis_outage_holds_nothing_up_and_subscriptions_resume() -> anyhow::Result<()> {
    let Some(mut redis) = PrivateRedis::start().await? else {
        eprintln!("skipped: no redis-server binary");
        return Ok(());
    };
    for backend in backends() {
        let opts = Options { redis_url: Some(redis.url()), ..Options::default() };
        let a = TestServer::start_opts(&backend, opts).await?;
        sparkwatch_api::demo::seed(&a.services).await?;
        let b = a.sibling(Options::default()).await?;
        let mut feed = Feeder::start(&a.services);
        let mut here = WsClient::signed_in(&a, &manager_token(&a).await?).await?;
        here.subscribe("a", ALARMS, json!({})).await?;
        let mut there = WsClient::signed_in(&b, &manager_token(&b).await?).await?;
        there.subscribe("a", ALARMS, json!({})).await?;
        // Both instances follow the tenant's feed in Redis before anything is published.
        eventually("both instances subscribed in Redis", || both_follow(&redis)).await?;

        redis.down();
        let started = std::time::Instant::now();
        leak_alarm(&mut feed, "SW-DEMO-0002", 1, 450.0).await?;
        let held = started.elapsed();
        anyhow::ensure!(held < Duration::from_secs(5), "ingestion held up {held:?} by the Redis outage");
        let heard = next_alarm(&mut here).await?;
        assert_eq!(heard["deviceName"], "Mall food court", "{heard}");
        let manager = a.demo_login("manager@demo.local").await?;
        let detector = a.detector_id("SW-DEMO-0002", 1).await?;
        let latest =
            manager.ok("query($d: ID!) { detector(id: $d) { latest { leakMa } } }", json!({"d": detector})).await?;
        assert_eq!(latest["detector"]["latest"]["leakMa"], json!([451.0]), "{latest}");
        let ready = a.http.get(format!("{}/readyz", a.base)).send().await?;
        assert_eq!(ready.status(), 200, "a Redis outage degrades, it does not take the instance out");
        let body: Value = ready.json().await?;
        assert_eq!(body["status"], "degraded", "{body}");
        let hazards = hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"));
        assert_eq!(count(&a, hazards).await?, 1, "the alarm became a hazard during the outage");

        redis.up().await?;
        eventually("both instances subscribed in Redis again", || both_follow(&redis)).await?;
        leak_alarm(&mut feed, "SW-DEMO-0001", 2, 520.0).await?;
        // What was published during the outage may arrive late or not at all (documented);
        // the new alarm must arrive.
        let mut resumed = next_alarm(&mut there).await?;
        while resumed["detectorAddress"] != 2 {
            assert_eq!(resumed["value"], 451.0, "only the outage's alarm may come first: {resumed}");
            resumed = next_alarm(&mut there).await?;
        }
        let ready: Value = a.http.get(format!("{}/readyz", a.base)).send().await?.json().await?;
        assert_eq!(ready["status"], "ready", "{ready}");
        // Counted: four readings sent, four stored; two alarm episodes, two hazards; nobody
        // declared offline.
        assert_eq!(count(&a, reading::Entity::find()).await?, 4, "every reading stored once");
        let hazards = hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"));
        assert_eq!(count(&a, hazards).await?, 2, "one hazard per alarm episode");
        let offline = event::Entity::find().filter(event::Column::Kind.eq("OFFLINE"));
        assert_eq!(count(&a, offline).await?, 0, "nobody offline");
    }
    Ok(())
}

/// One side of an MQTT 3.1.1 connection over a real socket: the broker's, played by the test
/// so that it sees exactly which acknowledgements the subscriber writes, and when.
struct BrokerSide {
    socket: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl BrokerSide {
    async fn read(&mut self) -> anyhow::Result<rumqttc::Packet> {
        use tokio::io::AsyncReadExt;
        loop {
            match rumqttc::Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Ok(packet),
                Err(rumqttc::Error::InsufficientBytes(_)) => {
                    anyhow::ensure!(self.socket.read_buf(&mut self.buf).await? > 0, "the subscriber hung up");
                }
                Err(e) => anyhow::bail!("the subscriber wrote something that is not MQTT: {e:?}"),
            }
        }
    }

    async fn write(&mut self, packet: rumqttc::Packet) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, 1 << 20).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.socket.write_all(&out).await?;
        Ok(())
    }

    /// The next acknowledgement the subscriber writes (pings are answered on the way,
    /// subscriptions ignored).
    async fn next_puback(&mut self) -> anyhow::Result<u16> {
        loop {
            match self.read().await? {
                rumqttc::Packet::PubAck(ack) => return Ok(ack.pkid),
                rumqttc::Packet::PingReq => self.write(rumqttc::Packet::PingResp).await?,
                _ => {}
            }
        }
    }
}

/// While the pipeline has no room the subscriber holds what it reads, and still writes the
/// acknowledgements of what the pipeline settled meanwhile. Waiting for room without polling
/// the connection left them unwritten until room came (BENCHMARKS.md, ingestion run 14): under
/// a lasting overload the broker's in-flight window filled with settled messages.
#[tokio::test]
async fn acknowledgements_are_written_while_the_pipeline_is_full() -> anyhow::Result<()> {
    use rumqttc::{ConnAck, ConnectReturnCode, Packet, Publish, QoS};
    use sparkwatch_api::ingest::{IngestQueue, health::IngestHealth, mqtt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    // A queue of one message: the pipeline is "full" as soon as one waits in it.
    let (queue, mut pipeline) = IngestQueue::new(1);
    let metrics = sparkwatch_api::metrics::Metrics::new()?;
    let health = IngestHealth::new(metrics.clone(), Arc::new(sparkwatch_api::service::SystemClock));
    let settings = mqtt::MqttSettings::from_url(&format!("mqtt://127.0.0.1:{port}"), "held-acks", "sw", None)?;
    let (_stop, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(mqtt::run(settings, queue, Default::default(), health, stop));

    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await??;
    let mut broker = BrokerSide { socket, buf: bytes::BytesMut::new() };
    anyhow::ensure!(matches!(broker.read().await?, Packet::Connect(..)), "expected CONNECT first");
    broker.write(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))).await?;
    for pkid in 1..=3u16 {
        let mut publish = Publish::new("sw/SW-DEMO-0001/telemetry", QoS::AtLeastOnce, format!("m{pkid}"));
        publish.pkid = pkid;
        broker.write(Packet::Publish(publish)).await?;
    }
    // Its SUBSCRIBEs go unanswered: the subscriber needs no SUBACK to take deliveries.
    eventually("m1 queued, m2 held", || async { Ok((metrics.held.get() >= 1).then_some(())) }).await?;

    // The pipeline takes m1: m2 moves into the queue, which is full again, and m3 stays held.
    let m1 = pipeline.recv().await.ok_or_else(|| anyhow::anyhow!("the subscriber stopped"))?;
    anyhow::ensure!(m1.payload == b"m1", "messages reach the pipeline in order");
    eventually("m2 queued, m3 still held", || async {
        Ok((pipeline.len() == 1 && metrics.held.get() == 1).then_some(()))
    })
    .await?;

    // m1 is settled: its acknowledgement must reach the broker now, with the queue still full.
    (m1.ack.ok_or_else(|| anyhow::anyhow!("an MQTT message carries its acknowledgement"))?)();
    let pkid = tokio::time::timeout(Duration::from_secs(10), broker.next_puback())
        .await
        .map_err(|_| anyhow::anyhow!("m1's acknowledgement was not written while the pipeline was full"))??;
    assert_eq!(pkid, 1, "only the settled message is acknowledged");
    assert_eq!((pipeline.len(), metrics.held.get()), (1, 1), "m2 and m3 still wait, unacknowledged");

    // Room again: the held message follows in order.
    let m2 = pipeline.recv().await.ok_or_else(|| anyhow::anyhow!("the subscriber stopped"))?;
    let m3 = pipeline.recv().await.ok_or_else(|| anyhow::anyhow!("the subscriber stopped"))?;
    assert_eq!((m2.payload.as_slice(), m3.payload.as_slice()), (&b"m2"[..], &b"m3"[..]));
    assert_eq!(metrics.held.get(), 0);
    Ok(())
}
