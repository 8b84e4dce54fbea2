//! Ingestion end to end: device messages → readings, events, episodes and hazards, on
//! SQLite and (when configured) PostgreSQL; and over a real MQTT broker when
//! `SPARKWATCH_TEST_MQTT_URL` is set.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::json;
use sparkwatch_entity::{dead_letter, episode, event, hazard, reading};
use sparkwatch_tests::{Feeder, TestServer, after_job_passes, backends, eventually, eventually_within};

fn telemetry(ts: DateTime<Utc>, seq: Option<u64>, detectors: serde_json::Value) -> String {
    let mut m = json!({"ts": ts.timestamp_millis(), "detectors": detectors});
    if let Some(s) = seq {
        m["seq"] = json!(s);
    }
    m.to_string()
}

fn leak(addr: u8, ma: f64) -> serde_json::Value {
    json!([{"addr": addr, "leak": [ma], "temp": [30.0, 31.0, null, null], "u": [220.0, 221.0, 219.0], "i": [10.0, 9.0, 11.0]}])
}

const TOPIC: &str = "sw/SW-DEMO-0001/telemetry";

async fn count<E: EntityTrait>(server: &TestServer, q: sea_orm::Select<E>) -> u64
where
    E::Model: Sync,
{
    let _ = E::default();
    q.count(server.services.store().db()).await.unwrap_or(u64::MAX)
}

#[tokio::test]
async fn over_threshold_becomes_one_hazard_with_delay_and_hysteresis() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        // Devices send milliseconds.
        let t0 =
            DateTime::from_timestamp_millis((Utc::now() - Duration::minutes(5)).timestamp_millis()).unwrap_or_default();
        let alarms = || hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"));
        // Default set-point 300 mA with a 5 s delay: held 3 s → nothing yet.
        for (s, ma) in [(0, 350.0), (3, 360.0)] {
            feed.send(TOPIC, &telemetry(t0 + Duration::seconds(s), Some(s as u64), leak(1, ma))).await;
        }
        feed.settle().await?;
        assert_eq!(count(&server, alarms()).await, 0, "{backend:?}: the delay has not elapsed");
        // Held 6 s → one alarm; further readings only update the peak.
        for (s, ma) in [(6, 370.0), (7, 420.0), (8, 400.0)] {
            feed.send(TOPIC, &telemetry(t0 + Duration::seconds(s), Some(s as u64), leak(1, ma))).await;
        }
        feed.settle().await?;
        let db = server.services.store().db();
        let list = alarms().all(db).await?;
        assert_eq!(list.len(), 1, "{backend:?}");
        assert_eq!((list[0].occurrences, list[0].peak_value, list[0].status.as_str()), (1, Some(420.0), "OPEN"));
        assert_eq!(list[0].device_at, t0 + Duration::seconds(6));
        // Inside the 5 % hysteresis band (> 285 mA) nothing clears; below it the condition
        // ends, the alarm stays latched, and a new over-threshold period counts as a second
        // occurrence of the same hazard.
        for (s, ma) in [(9, 290.0), (10, 299.0), (11, 280.0), (12, 350.0), (18, 351.0)] {
            feed.send(TOPIC, &telemetry(t0 + Duration::seconds(s), Some(s as u64), leak(1, ma))).await;
        }
        feed.settle().await?;
        let list = alarms().all(db).await?;
        assert_eq!(list.len(), 1, "{backend:?}: latched alarm, no new hazard");
        assert_eq!(list[0].occurrences, 2);
        let recoveries = count(&server, event::Entity::find().filter(event::Column::Kind.eq("RECOVERED"))).await;
        assert_eq!(recoveries, 1, "one clear, no flapping");
        let alarm_events = count(&server, event::Entity::find().filter(event::Column::Category.eq("ALARM"))).await;
        assert_eq!(alarm_events, 2);
        let stored = count(&server, reading::Entity::find()).await;
        assert_eq!(stored, 10);
        // The event view's remarks say what happened.
        let ev = event::Entity::find()
            .filter(event::Column::Category.eq("ALARM"))
            .order_by_asc(event::Column::Id)
            .one(db)
            .await?;
        let remarks = ev.and_then(|e| e.remarks).unwrap_or_default();
        assert!(remarks.contains("370 mA") && remarks.contains("300 mA"), "{remarks}");
    }
    Ok(())
}

#[tokio::test]
async fn duplicates_and_redeliveries_do_not_double_count() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let t0 = Utc::now() - Duration::minutes(5);
        {
            let mut feed = Feeder::start(&server.services);
            for s in [0, 6, 7] {
                let msg = telemetry(t0 + Duration::seconds(s), Some(s as u64), leak(2, 500.0));
                feed.send(TOPIC, &msg).await;
                feed.send(TOPIC, &msg).await; // QoS 1 redelivery
            }
            feed.settle().await?;
        }
        // A new pipeline (as after a restart) gets the same messages again, without seq.
        let mut feed = Feeder::start(&server.services);
        for s in [0, 6, 7] {
            feed.send(TOPIC, &telemetry(t0 + Duration::seconds(s), None, leak(2, 500.0))).await;
        }
        feed.settle().await?;
        assert_eq!(count(&server, reading::Entity::find()).await, 3, "{backend:?}");
        let h = hazard::Entity::find().all(server.services.store().db()).await?;
        assert_eq!(h.len(), 1, "{backend:?}");
        assert_eq!(h[0].occurrences, 1, "{backend:?}: redeliveries are not occurrences");
    }
    Ok(())
}

#[tokio::test]
async fn bad_entries_are_rejected_with_reasons_and_good_ones_kept() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let now = Utc::now();
        let entries = json!([
            {"addr": 1, "leak": [35.2], "temp": [41.5, 40.1, null, null]},
            {"addr": 99, "leak": [10.0]},
            {"addr": 2, "leak": [-5.0]},
            {"addr": 3, "leak": [20.0], "colour": "red"},
        ]);
        feed.send(TOPIC, &telemetry(now, Some(1), entries)).await;
        feed.send(TOPIC, "not json").await;
        // No ts: the receive time (nanoseconds here, microseconds in PostgreSQL) is used.
        feed.send(TOPIC, r#"{"detectors": [{"addr": 2, "leak": [12.5]}]}"#).await;
        feed.send("sw/NO-SUCH-DEVICE/telemetry", &telemetry(now, None, leak(1, 10.0))).await;
        feed.send(TOPIC, &json!({"ts": now.timestamp_millis()}).to_string()).await;
        feed.send("sw/bad serial/telemetry", "{}").await;
        feed.settle().await?;
        assert_eq!(count(&server, reading::Entity::find()).await, 2, "{backend:?}: only the good entries");
        // The latest-value cache (in process, or Redis with SPARKWATCH_TEST_REDIS_URL) has them.
        let stored = reading::Entity::find()
            .order_by_asc(reading::Column::At)
            .one(server.services.store().db())
            .await?
            .expect("a reading");
        let latest = server.services.latest().get(stored.detector_id.into()).await.expect("latest value cached");
        assert_eq!(
            (latest.leak_ma.clone(), latest.temp_c.clone()),
            (vec![Some(35.2)], vec![Some(41.5), Some(40.1), None, None])
        );
        let letters =
            dead_letter::Entity::find().order_by_asc(dead_letter::Column::Id).all(server.services.store().db()).await?;
        let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
        for expected in
            ["unknown_address", "out_of_range", "unknown_field", "not_json", "unknown_device", "missing_detectors"]
        {
            assert!(reasons.contains(&expected), "{backend:?}: {expected} missing from {reasons:?}");
        }
        assert!(letters.iter().all(|l| !l.detail.is_empty()));
        assert_eq!(count(&server, hazard::Entity::find()).await, 0, "bad input never becomes an alarm");
        let metrics = server.http.get(format!("{}/metrics", server.base)).send().await?.text().await?;
        assert!(metrics.contains("sparkwatch_ingest_rejected_total{reason=\"out_of_range\"} 1"), "{metrics}");
    }
    Ok(())
}

#[tokio::test]
async fn device_events_faults_and_online_status() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let t = Utc::now() - Duration::minutes(1);
        let ev = |s: i64, body: serde_json::Value| {
            let mut b = body;
            b["ts"] = json!((t + Duration::seconds(s)).timestamp_millis());
            b.to_string()
        };
        let topic = "sw/SW-DEMO-0001/event";
        feed.send(topic, &ev(0, json!({"addr": 1, "type": "leak_alarm", "ch": 1, "value": 512.0, "setpoint": 300.0})))
            .await;
        feed.send(topic, &ev(1, json!({"addr": 1, "type": "sensor_open", "ch": 2}))).await;
        feed.send(topic, &ev(1, json!({"addr": 1, "type": "sensor_open", "ch": 2}))).await; // redelivery
        feed.send(topic, &ev(5, json!({"addr": 1, "type": "recovered", "cause": "sensor_open", "ch": 2}))).await;
        feed.send(topic, &ev(6, json!({"addr": 1, "type": "recovered", "cause": "leak_alarm", "ch": 1}))).await;
        feed.send("sw/SW-DEMO-0001/status", r#"{"online": false}"#).await;
        feed.settle().await?;
        let db = server.services.store().db();
        let eps = episode::Entity::find().order_by_asc(episode::Column::Id).all(db).await?;
        let summary: Vec<(String, String, bool)> =
            eps.iter().map(|e| (e.kind.clone(), e.source.clone(), e.closed_at.is_some())).collect();
        assert_eq!(
            summary,
            vec![
                ("LEAK_ALARM".into(), "device".into(), false), // latched until acknowledged
                ("SENSOR_OPEN".into(), "device".into(), true), // faults clear themselves
                ("OFFLINE".into(), "system".into(), false),
            ],
            "{backend:?}"
        );
        assert_eq!(eps[1].occurrences, 1, "the redelivered fault counted once");
        let h = hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM")).one(db).await?;
        assert_eq!(h.map(|h| (h.peak_value, h.setpoint)), Some((Some(512.0), Some(300.0))));
        // The device talks again: it is online, the OFFLINE fault closes.
        feed.send(TOPIC, &telemetry(Utc::now(), None, leak(1, 20.0))).await;
        feed.settle().await?;
        let offline = episode::Entity::find().filter(episode::Column::Kind.eq("OFFLINE")).one(db).await?;
        assert!(offline.is_some_and(|e| e.closed_at.is_some()), "{backend:?}");
        // Online at its first message, offline by its last will, online again now.
        assert_eq!(count(&server, event::Entity::find().filter(event::Column::Kind.eq("ONLINE"))).await, 2);
    }
    Ok(())
}

#[tokio::test]
async fn a_silent_device_goes_offline_after_its_heartbeat_timeout() -> anyhow::Result<()> {
    for backend in backends() {
        let clock = std::sync::Arc::new(sparkwatch_api::service::ManualClock::new(Utc::now()));
        let server = TestServer::start_full(&backend, Default::default(), clock.clone()).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let mut feed = Feeder::start(&server.services);
        // Received "now" on the test clock: setting up the server takes real time.
        use sparkwatch_api::service::Clock;
        feed.send_at(TOPIC, &telemetry(clock.now(), Some(1), leak(1, 20.0)), clock.now()).await;
        feed.settle().await?;
        let offline = || episode::Entity::find().filter(episode::Column::Kind.eq("OFFLINE"));
        // Interval 10 s → timeout 30 s (3 intervals). At 25 s nothing; at 31 s a fault.
        clock.advance(Duration::seconds(25));
        // Two more housekeeping passes (every 2 s): heartbeats were checked at 25 s.
        after_job_passes(&server, &["ingest_housekeeping"], 2).await?;
        assert_eq!(count(&server, offline()).await, 0, "{backend:?}");
        clock.advance(Duration::seconds(6));
        let faults = eventually("an OFFLINE fault", || async {
            let n = count(&server, offline()).await;
            Ok((n > 0).then_some(n))
        })
        .await?;
        assert_eq!(faults, 1, "{backend:?}: one OFFLINE fault for the silent device");
        let ev =
            event::Entity::find().filter(event::Column::Kind.eq("OFFLINE")).one(server.services.store().db()).await?;
        assert!(ev.and_then(|e| e.remarks).unwrap_or_default().contains("heartbeat timeout"));
    }
    Ok(())
}

#[tokio::test]
async fn readings_roll_up_and_last_seen_is_written_back_beside_ingestion() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let db = server.services.store().db();
        let config = sparkwatch_api::ingest::pipeline::PipelineConfig {
            housekeeping: std::time::Duration::from_millis(100),
            flush_every: std::time::Duration::from_millis(200),
            ..Default::default()
        };
        let (queue, _stop) = sparkwatch_api::start_ingest_with(&server.services, config, None);
        let mut feed = Feeder::on(queue);
        let minute =
            |m: i64| DateTime::from_timestamp(Utc::now().timestamp() / 60 * 60 - 3600 + m * 60, 0).unwrap_or_default();
        let device = || {
            sparkwatch_entity::device::Entity::find()
                .filter(sparkwatch_entity::device::Column::Serial.eq("SW-DEMO-0001"))
                .one(db)
        };
        let device_id = device().await?.ok_or_else(|| anyhow::anyhow!("demo device"))?.id;
        let detector = sparkwatch_entity::detector::Entity::find()
            .filter(sparkwatch_entity::detector::Column::DeviceId.eq(device_id))
            .filter(sparkwatch_entity::detector::Column::Address.eq(1))
            .one(db)
            .await?
            .ok_or_else(|| anyhow::anyhow!("demo detector"))?;
        let leak_cell_in = |bucket: &'static str, start: DateTime<Utc>| {
            sparkwatch_entity::reading_rollup::Entity::find()
                .filter(sparkwatch_entity::reading_rollup::Column::DetectorId.eq(detector.id))
                .filter(sparkwatch_entity::reading_rollup::Column::Bucket.eq(bucket))
                .filter(sparkwatch_entity::reading_rollup::Column::BucketStart.eq(start))
                .filter(sparkwatch_entity::reading_rollup::Column::Channel.eq("leak:1"))
                .one(db)
        };
        let leak_cell = |start| leak_cell_in("minute", start);
        // Two write-backs into the same minute add up; the next minute is a cell of its own.
        // The newest receive time of the test (the others are "now").
        let last = Utc::now() + Duration::seconds(5);
        let sends = [(minute(0), 100.0, 1), (minute(0) + Duration::seconds(20), 40.0, 2)];
        for (at, ma, seq) in sends {
            feed.send(TOPIC, &telemetry(at, Some(seq), leak(1, ma))).await;
        }
        feed.settle().await?;
        // The first write-back is flushed before the third reading arrives.
        eventually("the first write-back of minute 0", || async {
            Ok(leak_cell(minute(0)).await?.filter(|c| c.count == 2).map(|_| ()))
        })
        .await?;
        feed.send(TOPIC, &telemetry(minute(0) + Duration::seconds(40), Some(3), leak(1, 160.0))).await;
        feed.send_at(TOPIC, &telemetry(minute(1), Some(4), leak(1, 7.0)), last).await;
        feed.settle().await?;
        let cell = eventually("minute 0 rolled up to 3 readings", || async {
            Ok(leak_cell(minute(0)).await?.filter(|c| c.count == 3))
        })
        .await?;
        assert_eq!((cell.min, cell.max, cell.sum), (40.0, 160.0, 300.0), "{backend:?}");
        let next = leak_cell(minute(1)).await?.map(|c| (c.count, c.sum));
        assert_eq!(next, Some((1, 7.0)), "{backend:?}");
        // Hours and days add up the same readings (minute 1 may start the next hour or day).
        for (bucket, span) in [("hour", Duration::hours(1)), ("day", Duration::days(1))] {
            let start = |t: DateTime<Utc>| t.duration_trunc(span).unwrap_or(t);
            let with_next = start(minute(1)) == start(minute(0));
            let want = if with_next { (4, 7.0, 160.0, 307.0) } else { (3, 40.0, 160.0, 300.0) };
            let got = leak_cell_in(bucket, start(minute(0))).await?.map(|c| (c.count, c.min, c.max, c.sum));
            assert_eq!(got, Some(want), "{backend:?} {bucket}");
        }
        // The device's last-seen time is its newest receive time.
        eventually("the device's last-seen time to be its newest receive time", || async {
            let seen = device().await?.and_then(|d| d.last_seen_at);
            Ok(seen.is_some_and(|s| (s - last).num_milliseconds().abs() < 1).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// Publishes `n` telemetry messages with QoS 1 to `url`, waiting for every PUBACK.
async fn publish(url: &str, prefix: &str, from: usize, n: usize, t0: DateTime<Utc>) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let s = sparkwatch_api::ingest::mqtt::MqttSettings::from_url(url, "x", prefix, None)?;
    let mut opts = MqttOptions::new(format!("pub-{}", uuid::Uuid::now_v7().simple()), s.host, s.port);
    opts.set_inflight(100);
    let (client, mut lp) = AsyncClient::new(opts, 100);
    let topic = format!("{prefix}/SW-DEMO-0001/telemetry");
    let sender = tokio::spawn(async move {
        for i in from..from + n {
            let body = telemetry(
                t0 + Duration::milliseconds(i as i64 * 100),
                Some(i as u64),
                json!([{"addr": 1, "leak": [10.0 + i as f64 / 10.0]}]),
            );
            client.publish(topic.clone(), QoS::AtLeastOnce, false, body).await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(std::time::Duration::from_secs(10), lp.poll()).await?? {
            Event::Incoming(Packet::PubAck(_)) => acked += 1,
            Event::Outgoing(Outgoing::Disconnect) => break,
            _ => {}
        }
    }
    let client = sender.await??;
    client.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_mid_stream_loses_no_qos1_message() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("SPARKWATCH_TEST_MQTT_URL") else {
        eprintln!("skipped: SPARKWATCH_TEST_MQTT_URL is not set (the broker round trip is covered by .ci/run)");
        return Ok(());
    };
    let server = TestServer::demo(&sparkwatch_tests::Backend::Sqlite).await?;
    // A private topic prefix and client id keep parallel runs on a shared broker apart.
    let prefix = format!("swt{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let client_id = format!("sparkwatch-test-{prefix}");
    let settings = || sparkwatch_api::ingest::mqtt::MqttSettings::from_url(&url, &client_id, &prefix, None);
    // Whole milliseconds, as stored: readings from t0 on are the devices', older is the probe.
    let t0 =
        DateTime::from_timestamp_millis((Utc::now() - Duration::minutes(10)).timestamp_millis()).unwrap_or_default();
    // The devices' readings (the probe's is older).
    let stored = || async {
        let found = reading::Entity::find().filter(reading::Column::At.gte(t0));
        found.count(server.services.store().db()).await.unwrap_or(0)
    };

    let (queue, stop) = sparkwatch_api::start_ingest(&server.services, &prefix, Some(settings()?));
    // The subscriber must be connected and subscribed (its session persists from here on):
    // a probe reading (another detector, before t0, no sequence number), sent again until
    // one is stored.
    let probe_at = t0 - Duration::minutes(1);
    eventually("the subscriber to be subscribed", || async {
        let s = sparkwatch_api::ingest::mqtt::MqttSettings::from_url(&url, "x", &prefix, None)?;
        let opts = rumqttc::MqttOptions::new(format!("probe-{prefix}"), s.host, s.port);
        let (c, mut lp) = rumqttc::AsyncClient::new(opts, 4);
        let body = telemetry(probe_at, None, json!([{"addr": 2, "leak": [10.0]}]));
        c.publish(format!("{prefix}/SW-DEMO-0001/telemetry"), rumqttc::QoS::AtLeastOnce, false, body).await?;
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), async { while lp.poll().await.is_ok() {} })
            .await;
        let probes = reading::Entity::find().filter(reading::Column::At.lt(t0));
        Ok((probes.count(server.services.store().db()).await? > 0).then_some(()))
    })
    .await?;
    publish(&url, &prefix, 0, 150, t0).await?;
    // Stop mid-stream: some messages are stored, others are in flight or still queued.
    eventually("the first readings", || async { Ok((stored().await > 0).then_some(())) }).await?;
    let _ = stop.send(true);
    drop(queue);
    // While Sparkwatch is down the devices keep publishing.
    publish(&url, &prefix, 150, 150, t0).await?;
    let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, &prefix, Some(settings()?));
    let n = eventually_within(std::time::Duration::from_secs(20), "300 readings", || async {
        let n = stored().await;
        Ok((n >= 300).then_some(n))
    })
    .await?;
    assert_eq!(n, 300, "every QoS 1 message is stored exactly once after the restart");
    Ok(())
}

/// Raw readings past their retention are deleted — in chunks, so SQLite's single writer is
/// not held for the whole purge — and newer ones stay; the pipeline's first housekeeping
/// after a start runs the purge.
#[tokio::test]
async fn readings_past_their_retention_are_deleted_in_chunks() -> anyhow::Result<()> {
    use sparkwatch_api::store::telemetry::{self as tel, NewReading};
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let db = server.services.store().db();
        let detector = sparkwatch_entity::detector::Entity::find()
            .filter(sparkwatch_entity::detector::Column::Address.eq(1))
            .one(db)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a demo detector"))?;
        let now = Utc::now();
        let rows = |days_ago: i64, n: i64| -> Vec<NewReading> {
            (0..n)
                .map(|i| NewReading {
                    tenant: detector.tenant_id.into(),
                    detector: detector.id.into(),
                    at: now - Duration::days(days_ago) + Duration::seconds(i),
                    received_at: now,
                    values: r#"{"l":[1.0]}"#.into(),
                })
                .collect()
        };
        let old = reading::Entity::find().filter(reading::Column::At.lt(now - Duration::days(1)));

        // Five old rows in chunks of two: three statements, all five gone, the new row kept.
        tel::insert_readings(db, &[rows(3, 5), rows(0, 1)].concat()).await?;
        assert_eq!(tel::prune_readings(db, now - Duration::days(1), 2).await?, 5, "{backend:?}");
        assert_eq!(count(&server, old.clone()).await, 0, "{backend:?}");
        assert_eq!(count(&server, reading::Entity::find()).await, 1, "{backend:?}");

        // Through the pipeline, with a retention of one day.
        tel::insert_readings(db, &rows(2, 3)).await?;
        let config = sparkwatch_api::ingest::pipeline::PipelineConfig {
            housekeeping: std::time::Duration::from_millis(100),
            raw_retention: Some(Duration::days(1)),
            ..Default::default()
        };
        let (_queue, _stop) = sparkwatch_api::start_ingest_with(&server.services, config, None);
        eventually("readings past the retention to be deleted", || async {
            Ok((count(&server, old.clone()).await == 0).then_some(()))
        })
        .await?;
        assert_eq!(count(&server, reading::Entity::find()).await, 1, "{backend:?}");
    }
    Ok(())
}

/// The migration that keys raw readings by detector and device time keeps the readings
/// stored before it (SQLite rebuilds the table, PostgreSQL alters it in place), the key
/// still drops a redelivery, and undoing it restores the surrogate id with every row.
#[tokio::test]
async fn keying_readings_by_detector_and_time_keeps_stored_readings() -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, sea_query::Query};
    use sparkwatch_api::store::telemetry::{self as tel, NewReading};
    use sparkwatch_migration::{Migrator, MigratorTrait};
    const BEFORE: u32 = 4; // migrations before the readings key
    for backend in backends() {
        let dir = tempfile::tempdir()?;
        let url = match &backend {
            sparkwatch_tests::Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
            sparkwatch_tests::Backend::Postgres(url) => sparkwatch_tests::fresh_postgres(url).await?,
        };
        let db = sea_orm::Database::connect(&url).await?;
        Migrator::up(&db, Some(BEFORE)).await?;
        let (tenant, detector) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let t0 = DateTime::<Utc>::from_timestamp(1_764_000_000, 0).unwrap_or_default();
        let mut insert = Query::insert();
        insert.into_table("readings").columns(["tenant_id", "detector_id", "at", "received_at", "values"]);
        for s in 0..3 {
            let at = t0 + Duration::seconds(s);
            insert.values_panic([
                tenant.into(),
                detector.into(),
                at.into(),
                at.into(),
                format!(r#"{{"l":[{s}]}}"#).into(),
            ]);
        }
        db.execute(&insert).await?;

        Migrator::up(&db, None).await?;
        let select_id = || sea_orm::Statement::from_string(db.get_database_backend(), "SELECT id FROM readings");
        assert!(db.query_all_raw(select_id()).await.is_err(), "{backend:?}: the surrogate id is gone");
        let rows = reading::Entity::find().order_by_asc(reading::Column::At).all(&db).await?;
        let kept: Vec<(DateTime<Utc>, String)> = rows.into_iter().map(|r| (r.at, r.values)).collect();
        assert_eq!(
            kept,
            (0..3).map(|s| (t0 + Duration::seconds(s), format!(r#"{{"l":[{s}]}}"#))).collect::<Vec<_>>(),
            "{backend:?}"
        );
        let again = |s: i64| NewReading {
            tenant: tenant.into(),
            detector: detector.into(),
            at: t0 + Duration::seconds(s),
            received_at: t0,
            values: "{}".into(),
        };
        let inserted = tel::insert_readings(&db, &[again(2), again(3)]).await?;
        assert_eq!(inserted.len(), 1, "{backend:?}: the stored second is a redelivery, the next one is new");

        // Down to just before the readings-key migration, whatever came after it.
        let after_it = Migrator::migrations().len() as u32 - BEFORE;
        Migrator::down(&db, Some(after_it)).await?;
        let ids = db.query_all_raw(select_id()).await?;
        assert_eq!(ids.len(), 4, "{backend:?}: every reading back, with an id");
    }
    Ok(())
}

/// Quiet readings are stored off the alarm path: while their insert is held up (here by
/// another transaction holding one of their keys, on PostgreSQL), an alarm reading of the
/// same device still becomes a hazard; the held batch is acknowledged only once its readings
/// are stored. On SQLite (one writer) the same traffic is checked without the hold.
#[tokio::test]
async fn an_alarm_is_not_held_behind_storing_quiet_readings() -> anyhow::Result<()> {
    const BURST: u64 = 600;
    use sea_orm::{ActiveModelTrait, Set, TransactionTrait};
    use sparkwatch_entity::{detector, device};
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let db = server.services.store().db();
        let mut feed = Feeder::start(&server.services);
        let t0 =
            DateTime::from_timestamp_millis((Utc::now() - Duration::minutes(5)).timestamp_millis()).unwrap_or_default();
        // The device comes online and both detectors' states load on the alarm path first.
        let both = json!([{"addr": 1, "leak": [20.0]}, {"addr": 2, "leak": [20.0]}]);
        feed.send(TOPIC, &telemetry(t0 - Duration::seconds(60), Some(1), both)).await;
        feed.settle().await?;

        let held_at = t0 - Duration::seconds(30);
        let dev = device::Entity::find().filter(device::Column::Serial.eq("SW-DEMO-0001")).one(db).await?;
        let dev = dev.expect("the demo device");
        let det1 = detector::Entity::find()
            .filter(detector::Column::DeviceId.eq(dev.id))
            .filter(detector::Column::Address.eq(1))
            .one(db)
            .await?
            .expect("detector 1");
        let blocker = match &backend {
            sparkwatch_tests::Backend::Postgres(_) => {
                let tx = db.begin().await?;
                reading::ActiveModel {
                    tenant_id: Set(det1.tenant_id),
                    detector_id: Set(det1.id),
                    at: Set(held_at),
                    received_at: Set(held_at),
                    values: Set(r#"{"l":[20.0]}"#.into()),
                }
                .insert(&tx)
                .await?;
                Some(tx)
            }
            sparkwatch_tests::Backend::Sqlite => None,
        };
        // A quiet reading whose insert now waits for the other transaction, and a burst of
        // them (on SQLite an insert whose results nobody reads holds the write lock)…
        feed.send(TOPIC, &telemetry(held_at, Some(2), json!([{"addr": 1, "leak": [21.0]}]))).await;
        for n in 0..BURST {
            let at = held_at + Duration::milliseconds(10 * (n as i64 + 1));
            feed.send(TOPIC, &telemetry(at, Some(100 + n), json!([{"addr": 1, "leak": [22.0]}]))).await;
        }
        // …then detector 2 over its set-point for longer than the 5 s delay.
        for (n, s) in [(3, 0), (4, 6)] {
            feed.send(TOPIC, &telemetry(t0 + Duration::seconds(s), Some(n), json!([{"addr": 2, "leak": [500.0]}])))
                .await;
        }
        let alarms = || hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"));
        eventually("the alarm to become a hazard", || async {
            Ok((count(&server, alarms()).await == 1).then_some(()))
        })
        .await?;
        if let Some(tx) = blocker {
            // The alarm, sent after the quiet reading, is a hazard already: the pipeline got
            // past the held reading without storing it.
            let held = reading::Entity::find().filter(reading::Column::At.eq(held_at));
            assert_eq!(count(&server, held).await, 0, "{backend:?}: the quiet reading is still held");
            assert!(feed.unacknowledged() >= 1, "{backend:?}: its batch is not acknowledged yet");
            tx.rollback().await?;
        }
        feed.settle().await?;
        let held = reading::Entity::find()
            .filter(reading::Column::DetectorId.eq(det1.id))
            .filter(reading::Column::At.eq(held_at))
            .one(db)
            .await?;
        assert!(
            held.is_some_and(|r| r.values.contains("21")),
            "{backend:?}: the quiet reading is stored once released"
        );
        let all = count(&server, reading::Entity::find()).await;
        assert_eq!(all, 5 + BURST, "{backend:?}: 2 + 1 + {BURST} + 2 readings");
    }
    Ok(())
}

/// A readings-lane insert and the alarm path's transaction over and over: a burst of quiet
/// readings then, after a pause of 0–19 ms, a reading on the alarm path, twenty times. Each round must be stored and
/// acknowledged promptly — an insert left unpolled while the transaction waited for SQLite's
/// write lock once stalled both for the 30 s busy timeout.
#[tokio::test]
async fn quiet_bursts_and_alarm_readings_interleave_without_stalling() -> anyhow::Result<()> {
    const ROUNDS: i64 = 20;
    const BURST: i64 = 600;
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let t0 = DateTime::from_timestamp_millis((Utc::now() - Duration::minutes(30)).timestamp_millis())
            .unwrap_or_default();
        let mut seq = 0;
        for round in 0..ROUNDS {
            let start = t0 + Duration::seconds(round * 60);
            for n in 0..BURST {
                seq += 1;
                let at = start + Duration::milliseconds(n * 10);
                feed.send(TOPIC, &telemetry(at, Some(seq), json!([{"addr": 1, "leak": [20.0]}]))).await;
            }
            // Let the burst reach the readings lane first; how long that takes varies, so the
            // pause does too (part of the scenario, not synchronisation).
            tokio::time::sleep(std::time::Duration::from_millis(round as u64)).await;
            seq += 1;
            let at = start + Duration::seconds(30);
            feed.send(TOPIC, &telemetry(at, Some(seq), json!([{"addr": 2, "leak": [500.0]}]))).await;
            let began = std::time::Instant::now();
            feed.settle().await?;
            assert!(
                began.elapsed() < std::time::Duration::from_secs(5),
                "{backend:?}: round {round} took {:?}",
                began.elapsed()
            );
        }
        let all = count(&server, reading::Entity::find()).await;
        assert_eq!(all, (ROUNDS * (BURST + 1)) as u64, "{backend:?}");
        let alarms = count(&server, hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"))).await;
        assert_eq!(alarms, 1, "{backend:?}: detector 2 over its set-point for minutes: one alarm");
    }
    Ok(())
}

/// A last will and a reading right behind it, in one batch: the reading brings the device
/// back (it must not be stored off the alarm path as a quiet reading of an online device).
#[tokio::test]
async fn a_reading_right_after_the_last_will_brings_the_device_back() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let t = Utc::now() - Duration::minutes(1);
        feed.send(TOPIC, &telemetry(t, Some(1), leak(1, 20.0))).await;
        feed.settle().await?;
        // Queued together, so one batch holds both.
        feed.send("sw/SW-DEMO-0001/status", r#"{"online": false}"#).await;
        feed.send(TOPIC, &telemetry(t + Duration::seconds(1), Some(2), leak(1, 21.0))).await;
        feed.settle().await?;
        let db = server.services.store().db();
        let offline = episode::Entity::find().filter(episode::Column::Kind.eq("OFFLINE")).one(db).await?;
        assert!(offline.is_some_and(|e| e.closed_at.is_some()), "{backend:?}: the OFFLINE fault is closed again");
        let online = count(&server, event::Entity::find().filter(event::Column::Kind.eq("ONLINE"))).await;
        assert_eq!(online, 2, "{backend:?}: online at first, and again after the last will");
    }
    Ok(())
}

/// DEVICE-PROTOCOL.md §3 "Time": a device clock that runs ahead must not silence a
/// detector. One normal reading dated 23 h ahead used to make every later reading "older"
/// for the alarm engine, so the alarm after it raised nothing for 23 h. The reading is
/// stored with the time the device gave; it is evaluated — and ordered among the latest
/// values — no later than it arrived.
#[tokio::test]
async fn a_reading_dated_ahead_does_not_silence_the_detector() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let t = DateTime::from_timestamp_millis((Utc::now() - Duration::seconds(20)).timestamp_millis())
            .unwrap_or_default();
        let at = |s: i64| t + Duration::seconds(s);
        // A first reading loads the detector's state, so the one dated ahead is quiet (the
        // readings lane), and a second detector takes the alarm path with one dated ahead.
        feed.send_at(TOPIC, &telemetry(at(0), Some(1), leak(1, 20.0)), at(0)).await;
        feed.settle().await?;
        feed.send_at(TOPIC, &telemetry(at(1) + Duration::hours(23), Some(2), leak(1, 20.0)), at(1)).await;
        let ahead = json!([{"addr": 2, "leak": [20.0]}]);
        feed.send_at(TOPIC, &telemetry(at(1) + Duration::hours(23), Some(3), ahead), at(1)).await;
        feed.settle().await?;
        // The next alarm: over the 300 mA set-point for longer than its 5 s delay.
        for (seq, s) in [(4, 10), (5, 16)] {
            let both = json!([{"addr": 1, "leak": [500.0]}, {"addr": 2, "leak": [500.0]}]);
            feed.send_at(TOPIC, &telemetry(at(s), Some(seq), both), at(s)).await;
        }
        feed.settle().await?;
        let db = server.services.store().db();
        let alarms = hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM")).all(db).await?;
        assert_eq!(alarms.len(), 2, "{backend:?}: both detectors raise their alarm");
        assert!(alarms.iter().all(|h| h.device_at == at(16)), "{backend:?}: {alarms:?}");
        // Stored as the device dated it.
        let ahead = reading::Entity::find().filter(reading::Column::At.gt(at(3600))).count(db).await?;
        assert_eq!(ahead, 2, "{backend:?}");
        // The latest value is the alarm's reading, not the one dated ahead.
        let d1 = server.detector_id("SW-DEMO-0001", 1).await?.parse::<uuid::Uuid>()?;
        let latest = server.services.latest().get(d1.into()).await.map(|r| (r.at, r.leak_ma));
        assert_eq!(latest, Some((at(16), vec![Some(500.0)])), "{backend:?}");
    }
    Ok(())
}

/// Readings are keyed by detector and device time, so a second reading of a detector with
/// the same time but other values cannot be stored beside the first. It used to be dropped
/// silently, even an alarm; now it is evaluated — here it completes the alarm's 5 s delay —
/// and kept as a dead letter with both readings' values. Across batches, within one, and
/// on the readings lane.
#[tokio::test]
async fn a_different_reading_at_the_same_device_time_is_evaluated_and_dead_lettered() -> anyhow::Result<()> {
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let mut feed = Feeder::start(&server.services);
        let t =
            DateTime::from_timestamp_millis((Utc::now() - Duration::minutes(1)).timestamp_millis()).unwrap_or_default();
        let six = t + Duration::seconds(6);
        let over = json!([{"addr": 1, "leak": [500.0]}, {"addr": 2, "leak": [500.0]}, {"addr": 3, "leak": [20.0]}]);
        feed.send(TOPIC, &telemetry(t, Some(1), over)).await;
        feed.settle().await?;
        // Detector 1, across batches: a temperature-only reading takes t + 6 s first.
        feed.send(TOPIC, &telemetry(six, Some(2), json!([{"addr": 1, "temp": [30.0]}]))).await;
        feed.settle().await?;
        feed.send(TOPIC, &telemetry(six, Some(3), json!([{"addr": 1, "leak": [500.0]}]))).await;
        // Detector 2, within one batch (queued together).
        feed.send(TOPIC, &telemetry(six, Some(4), json!([{"addr": 2, "temp": [30.0]}]))).await;
        feed.send(TOPIC, &telemetry(six, Some(5), json!([{"addr": 2, "leak": [500.0]}]))).await;
        feed.settle().await?;
        // Detector 3, quiet both times (the readings lane): 20 mA stored at t, then 30 mA.
        feed.send(TOPIC, &telemetry(t, Some(6), json!([{"addr": 3, "leak": [30.0]}]))).await;
        feed.settle().await?;

        let db = server.services.store().db();
        let alarms = hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM")).all(db).await?;
        assert_eq!(alarms.len(), 2, "{backend:?}: detectors 1 and 2 raise their alarm");
        assert!(alarms.iter().all(|h| h.device_at == six), "{backend:?}");
        let letters = dead_letter::Entity::find()
            .filter(dead_letter::Column::Reason.eq("reading_conflict"))
            .order_by_asc(dead_letter::Column::Id)
            .all(db)
            .await?;
        assert_eq!(letters.len(), 3, "{backend:?}: {letters:?}");
        assert!(letters.iter().all(|l| l.serial.as_deref() == Some("SW-DEMO-0001") && l.topic == TOPIC));
        assert!(letters[0].detail.contains(r#""t":[30.0]"#) && letters[0].payload.contains(r#""l":[500.0]"#));
        assert!(letters[2].detail.contains(r#""l":[20.0]"#) && letters[2].payload.contains(r#""l":[30.0]"#));
        assert_eq!(count(&server, reading::Entity::find()).await, 5, "{backend:?}: the first of each stays");
    }
    Ok(())
}
