//! Modbus TCP end to end: the poller reads a simulated gateway (real Modbus TCP on
//! 127.0.0.1:0) and the pipeline turns its polls into readings, events, episodes and
//! hazards — on SQLite and (when configured) PostgreSQL. Intervals, timeouts and back-offs
//! are shortened so that every scenario takes a second or two.

use std::future::Future;
use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sparkwatch_api::auth::Principal;
use sparkwatch_api::ingest::modbus::{GatewayConnection, ModbusError};
use sparkwatch_api::service::thresholds::ThresholdTarget;
use sparkwatch_api::simulate::modbus_server::{self, ModbusSim};
use sparkwatch_api::store::telemetry::{self as tel, reading_from_json};
use sparkwatch_domain::ids::DetectorId;
use sparkwatch_domain::modbus::decode_input_registers;
use sparkwatch_domain::payload::{CommandOp, SetThresholds};
use sparkwatch_domain::site::{DetectorInput, DeviceInput, ProjectDraft};
use sparkwatch_entity::{dead_letter, episode, event, hazard};
use sparkwatch_tests::{Backend, TestServer, backends, eventually, start_modbus};

/// A running server with a Modbus gateway device whose detectors are at `addresses`, the
/// simulated gateway it points at, the pipeline and the poller.
struct Site {
    server: TestServer,
    sim: ModbusSim,
    /// Detector ids by address order of `addresses`.
    detectors: Vec<DetectorId>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Site {
    /// `prepare` runs after the site is registered and before polling starts (thresholds).
    async fn start<F, Fut>(backend: &Backend, addresses: &[u8], sim_units: &[u8], prepare: F) -> anyhow::Result<Site>
    where
        F: FnOnce(TestServer, Principal, Vec<DetectorId>) -> Fut,
        Fut: Future<Output = anyhow::Result<TestServer>>,
    {
        let (sim, addr) = modbus_server::start("127.0.0.1:0".parse()?).await?;
        for unit in sim_units {
            sim.add_unit(*unit);
        }
        let server = TestServer::start(backend).await?;
        let s = &server.services;
        let tenant = s.create_tenant(&Principal::platform_system("modbus test"), "Modbus Co").await?;
        let who = Principal::system(tenant.id, "modbus test");
        let project = s.create_project(&who, ProjectDraft { name: "Plant".into(), ..Default::default() }).await?;
        let device = s
            .create_device(
                &who,
                project.id,
                DeviceInput {
                    serial: "GW-TEST-0001".into(),
                    name: "Plant gateway".into(),
                    transport: "MODBUS_TCP".into(),
                    host: Some("127.0.0.1".into()),
                    port: Some(i64::from(addr.port())),
                    interval_s: Some(1),
                    ..Default::default()
                },
            )
            .await?;
        let mut detectors = Vec::new();
        for a in addresses {
            let input = DetectorInput { address: i64::from(*a), ..Default::default() };
            detectors.push(s.create_detector(&who, device.id, input).await?.id);
        }
        let server = prepare(server, who, detectors.clone()).await?;
        let stop = Self::ingest(&server);
        Ok(Site { server, sim, detectors, stop })
    }

    /// Starts the pipeline and the poller; returns their stop switch.
    fn ingest(server: &TestServer) -> tokio::sync::watch::Sender<bool> {
        start_modbus(&server.services)
    }

    /// Stops the pipeline and the poller and starts new ones, as a server restart would.
    fn restart(&mut self) {
        let _ = self.stop.send(true);
        self.stop = Self::ingest(&self.server);
    }

    fn db(&self) -> &sea_orm::DatabaseConnection {
        self.server.services.store().db()
    }

    /// Episodes of a kind on a detector.
    async fn episodes(&self, detector: DetectorId, kind: &str) -> anyhow::Result<Vec<episode::Model>> {
        Ok(episode::Entity::find()
            .filter(episode::Column::DetectorId.eq(detector.as_uuid()))
            .filter(episode::Column::Kind.eq(kind))
            .all(self.db())
            .await?)
    }

    /// Events of a kind on a detector.
    async fn events(&self, detector: DetectorId, kind: &str) -> anyhow::Result<Vec<event::Model>> {
        Ok(event::Entity::find()
            .filter(event::Column::DetectorId.eq(detector.as_uuid()))
            .filter(event::Column::Kind.eq(kind))
            .all(self.db())
            .await?)
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.server.http.get(format!("{}/metrics", self.server.base)).send().await?.text().await?)
    }

    /// Waits until the poller has made `n` more polls (any outcome) and, when `stored` names a
    /// detector of an answering gateway, until the pipeline has stored a reading of it taken
    /// after those polls: the evidence that whatever those polls could cause has happened.
    async fn after_polls(&self, n: u64, stored: Option<DetectorId>) -> anyhow::Result<()> {
        let start = all_polls(&self.metrics().await?);
        eventually(&format!("{n} more polls"), || async {
            Ok((all_polls(&self.metrics().await?) >= start + n).then_some(()))
        })
        .await?;
        if let Some(d) = stored {
            let since = chrono::Utc::now();
            eventually("a reading taken after those polls is stored", || async {
                Ok(tel::latest_reading(self.db(), d).await?.is_some_and(|(at, _)| at > since).then_some(()))
            })
            .await?;
        }
        Ok(())
    }
}

/// The value of `sparkwatch_modbus_polls_total{outcome="…"}`, 0 when absent.
fn polls(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("sparkwatch_modbus_polls_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Polls of every outcome so far.
fn all_polls(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sparkwatch_modbus_polls_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<u64>().ok()))
        .sum()
}

async fn no_prep(server: TestServer, _: Principal, _: Vec<DetectorId>) -> anyhow::Result<TestServer> {
    Ok(server)
}

#[tokio::test]
async fn polls_are_decoded_and_stored_over_one_connection() -> anyhow::Result<()> {
    for backend in backends() {
        // Detector 3 is registered but missing on the gateway's bus.
        let site = Site::start(&backend, &[1, 2, 3], &[1, 2], no_prep).await?;
        let (d1, d2, d3) = (site.detectors[0], site.detectors[1], site.detectors[2]);
        site.sim.set_reading(1, 512.0, [Some(45.5), Some(-5.0), None, None], [230.5, 229.9, 231.0], [12.34, 0.0, 0.5]);
        site.sim.set_register(1, 11, 0b101); // DI 1 and 3
        site.sim.set_register(2, 5, 10_001); // 1000.1 V: out of range
        let db = site.db();
        eventually("both detectors have a reading with the new values", || async {
            let one = tel::latest_reading(db, d1).await?.map(|(at, v)| reading_from_json(at, &v));
            let two = tel::latest_reading(db, d2).await?;
            Ok((two.is_some() && one.is_some_and(|r| r.leak_ma == vec![Some(512.0)])).then_some(()))
        })
        .await?;
        let (at, values) = tel::latest_reading(db, d1).await?.unwrap_or_default();
        let r = reading_from_json(at, &values);
        assert_eq!(r.leak_ma, vec![Some(512.0)], "{backend:?}");
        assert_eq!(r.temp_c, vec![Some(45.5), Some(-5.0), None, None], "{backend:?}: signed 0.1 °C, open sensors");
        assert_eq!(r.voltage_v, vec![Some(230.5), Some(229.9), Some(231.0)], "{backend:?}: 0.1 V units");
        assert_eq!(r.current_a, vec![Some(12.34), Some(0.0), Some(0.5)], "{backend:?}: 0.01 A units");
        assert_eq!((r.digital_in, r.digital_out), (Some(5), Some(0)));
        // The out-of-range voltage is dead-lettered; the rest of that poll counts.
        let (at2, values2) = tel::latest_reading(db, d2).await?.unwrap_or_default();
        let r2 = reading_from_json(at2, &values2);
        assert_eq!(r2.voltage_v, vec![None, Some(220.5), Some(219.8)], "{backend:?}");
        let letters =
            dead_letter::Entity::find().filter(dead_letter::Column::Reason.eq("out_of_range")).all(db).await?;
        assert!(!letters.is_empty(), "{backend:?}");
        assert!(letters.iter().all(|l| l.detail.starts_with("register 5 ") && l.topic == "modbus/GW-TEST-0001/2"));
        // The missing detector answers with exception 0x0B: after 3 polls it has a
        // communication fault, the others do not, and the connection survives exceptions.
        eventually("detector 3 has a communication fault", || async {
            Ok((!site.episodes(d3, "OFFLINE").await?.is_empty()).then_some(()))
        })
        .await?;
        let remarks = site.events(d3, "OFFLINE").await?.into_iter().filter_map(|e| e.remarks).collect::<Vec<_>>();
        assert!(remarks.iter().any(|r| r.contains("0x0B")), "{backend:?}: {remarks:?}");
        assert!(site.episodes(d1, "OFFLINE").await?.is_empty());
        assert!(site.episodes(d2, "OFFLINE").await?.is_empty());
        assert_eq!(site.sim.connections(), 1, "{backend:?}: one connection shared by every detector");
        let metrics = site.metrics().await?;
        assert!(polls(&metrics, "ok") >= 2, "{metrics}");
        assert!(polls(&metrics, "exception") >= 3, "{metrics}");
    }
    Ok(())
}

#[tokio::test]
async fn a_leak_above_the_setpoint_becomes_one_hazard() -> anyhow::Result<()> {
    for backend in backends() {
        // No delay, so that the first reading above 300 mA raises the alarm.
        let prep = |server: TestServer, who: Principal, detectors: Vec<DetectorId>| async move {
            server
                .services
                .set_thresholds(&who, ThresholdTarget::Detector(detectors[0]), |t| t.leak_delay_s = Some(0.0))
                .await?;
            Ok(server)
        };
        let site = Site::start(&backend, &[1, 2], &[1, 2], prep).await?;
        let d1 = site.detectors[0];
        site.sim.set_reading(1, 512.0, [Some(30.0), None, None, None], [220.0; 3], [5.0; 3]);
        let alarms = || hazard::Entity::find().filter(hazard::Column::Kind.eq("LEAK_ALARM"));
        eventually("a leakage hazard exists", || async {
            Ok((!alarms().all(site.db()).await?.is_empty()).then_some(()))
        })
        .await?;
        // Several more polls above the set-point: still one hazard, one occurrence.
        site.after_polls(5 * 2, Some(d1)).await?;
        let list = alarms().all(site.db()).await?;
        assert_eq!(list.len(), 1, "{backend:?}");
        assert_eq!(list[0].detector_id, Some(d1.as_uuid()));
        assert_eq!((list[0].occurrences, list[0].peak_value, list[0].setpoint), (1, Some(512.0), Some(300.0)));
        assert_eq!(site.episodes(site.detectors[1], "LEAK_ALARM").await?.len(), 0, "{backend:?}");
    }
    Ok(())
}

#[tokio::test]
async fn status_bits_become_faults_and_events() -> anyhow::Result<()> {
    for backend in backends() {
        let site = Site::start(&backend, &[1, 2], &[1, 2], no_prep).await?;
        let d1 = site.detectors[0];
        eventually("detector 1 has a reading", || async {
            Ok((tel::latest_reading(site.db(), d1).await?.is_some()).then_some(()))
        })
        .await?;
        // Fault bit 3: temperature sensor 2 open.
        site.sim.set_fault_bits(1, 1 << 3);
        eventually("a SENSOR_OPEN fault is open", || async {
            Ok((site.episodes(d1, "SENSOR_OPEN").await?.iter().any(|e| e.closed_at.is_none())).then_some(()))
        })
        .await?;
        let eps = site.episodes(d1, "SENSOR_OPEN").await?;
        assert_eq!(eps.len(), 1, "{backend:?}");
        assert_eq!((eps[0].channel.as_str(), eps[0].source.as_str()), ("temp:2", "device"));
        // The broken sensor's channel has no value meanwhile.
        eventually("temperature 2 reads nothing", || async {
            let r = tel::latest_reading(site.db(), d1).await?.map(|(at, v)| reading_from_json(at, &v));
            Ok((r.is_some_and(|r| r.temp_c.get(1) == Some(&None))).then_some(()))
        })
        .await?;
        // The bit clears: the fault closes by itself.
        site.sim.set_fault_bits(1, 0);
        eventually("the SENSOR_OPEN fault is closed", || async {
            Ok((site.episodes(d1, "SENSOR_OPEN").await?.iter().all(|e| e.closed_at.is_some())).then_some(()))
        })
        .await?;
        assert_eq!(site.episodes(d1, "SENSOR_OPEN").await?.len(), 1, "{backend:?}: no second episode");
        assert_eq!(site.events(d1, "RECOVERED").await?.len(), 1, "{backend:?}");
        // The relay trips: one TRIP event.
        site.sim.set_relay(1, true);
        eventually("a TRIP event is recorded", || async {
            Ok((!site.events(d1, "TRIP").await?.is_empty()).then_some(()))
        })
        .await?;
        site.after_polls(3 * 2, Some(d1)).await?;
        assert_eq!(site.events(d1, "TRIP").await?.len(), 1, "{backend:?}: the edge, not the level");
    }
    Ok(())
}

#[tokio::test]
async fn a_dead_gateway_is_a_communication_fault_per_detector() -> anyhow::Result<()> {
    for backend in backends() {
        let site = Site::start(&backend, &[1, 2], &[1, 2], no_prep).await?;
        let dets = site.detectors.clone();
        let db = site.db();
        eventually("both detectors have readings", || async {
            Ok((tel::latest_reading(db, dets[0]).await?.is_some() && tel::latest_reading(db, dets[1]).await?.is_some())
                .then_some(()))
        })
        .await?;
        let open_faults = || async {
            let mut n = 0;
            for d in &dets {
                n += site.episodes(*d, "OFFLINE").await?.iter().filter(|e| e.closed_at.is_none()).count();
            }
            anyhow::Ok(n)
        };

        // Dead: connections are closed and refused.
        site.sim.set_dead(true);
        eventually("both detectors have a communication fault", || async {
            Ok((open_faults().await? == 2).then_some(()))
        })
        .await?;
        // Five more failed polls per detector: the poller must not report the fault again.
        site.after_polls(5 * 2, None).await?;
        for d in &dets {
            let eps = site.episodes(*d, "OFFLINE").await?;
            assert_eq!(eps.len(), 1, "{backend:?}: one fault per detector");
            assert_eq!(
                (eps[0].occurrences, eps[0].channel.as_str(), eps[0].source.as_str()),
                (1, "detector:0", "system")
            );
            assert_eq!(site.events(*d, "OFFLINE").await?.len(), 1, "{backend:?}: reported once");
        }
        site.sim.set_dead(false);
        eventually("the faults close", || async { Ok((open_faults().await? == 0).then_some(())) }).await?;
        for d in &dets {
            let online = site.events(*d, "ONLINE").await?;
            assert_eq!(online.len(), 1, "{backend:?}");
            assert_eq!(online[0].remarks.as_deref(), Some("communication restored"));
        }

        // Mute: the connection stays up but nothing answers, so polls time out.
        site.sim.set_mute(true);
        eventually("both detectors have a new communication fault", || async {
            Ok((open_faults().await? == 2).then_some(()))
        })
        .await?;
        site.sim.set_mute(false);
        eventually("the new faults close", || async { Ok((open_faults().await? == 0).then_some(())) }).await?;
        for d in &dets {
            assert_eq!(site.episodes(*d, "OFFLINE").await?.len(), 2, "{backend:?}");
        }
        // Readings flow again.
        let since = chrono::Utc::now();
        eventually("new readings are stored", || async {
            Ok((tel::latest_reading(db, dets[1]).await?.is_some_and(|(at, _)| at > since)).then_some(()))
        })
        .await?;
        let metrics = site.metrics().await?;
        for outcome in ["ok", "io_error", "timeout"] {
            assert!(polls(&metrics, outcome) > 0, "{backend:?}: no {outcome} polls in {metrics}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn remote_writes_are_acknowledged_and_read_back() -> anyhow::Result<()> {
    let (sim, addr) = modbus_server::start("127.0.0.1:0".parse()?).await?;
    sim.add_unit(1);
    let timeout = Duration::from_millis(500);
    let mut conn = GatewayConnection::connect(addr, addr.to_string(), timeout, timeout).await?;

    // Coils: trip opens the relay, close closes it.
    conn.write_coil(1, CommandOp::Trip).await?;
    let poll =
        decode_input_registers(&conn.read_inputs(1).await?, chrono::Utc::now()).map_err(|r| anyhow::anyhow!("{r}"))?;
    assert!(poll.status.tripped);
    conn.write_coil(1, CommandOp::Close).await?;
    assert_eq!(sim.unit(1).map(|u| (u.input[15], u.coil_writes)), Some((0, vec![0, 1])));
    assert!(matches!(conn.write_coil(1, CommandOp::SetThresholds).await, Err(ModbusError::Invalid(_))));

    // Set-points: written (06 for a lone register, 16 for a run) and read back.
    let t = SetThresholds {
        leak_ma: Some(250.0),
        leak_delay_s: Some(2.0),
        overcurrent_a: Some(40.0),
        ..Default::default()
    };
    conn.write_thresholds(1, &t).await?;
    assert_eq!(sim.unit(1).map(|u| u.holding), Some([250, 20, 85, 2530, 1870, 4000]));
    assert_eq!(conn.read_thresholds(1).await?, [250, 20, 85, 2530, 1870, 4000]);
    // A device that ignores the write fails the read-back.
    sim.set_ignore_holding_writes(1, true);
    let err = conn.write_thresholds(1, &SetThresholds { temp_c: Some(90.0), ..Default::default() }).await;
    match err {
        Err(ModbusError::ReadBack(m)) => assert_eq!((m[0].register, m[0].written, m[0].read), (102, 90, Some(85))),
        other => panic!("expected a read-back mismatch, got {other:?}"),
    }
    // Invalid set-points are refused before anything is sent.
    let bad = conn.write_thresholds(1, &SetThresholds { leak_ma: Some(5.0), ..Default::default() }).await;
    assert!(matches!(bad, Err(ModbusError::Invalid(_))), "{bad:?}");

    // A missing unit: exception 0x0B.
    let missing = conn.write_coil(9, CommandOp::Reset).await;
    assert_eq!(missing.as_ref().err().and_then(ModbusError::exception_code), Some(0x0B), "{missing:?}");
    // A mute gateway: timeout.
    sim.set_mute(true);
    let silent = conn.read_inputs(1).await;
    assert!(matches!(silent, Err(ModbusError::Timeout(_))), "{silent:?}");
    Ok(())
}

#[tokio::test]
async fn a_restart_neither_repeats_standing_conditions_nor_strands_faults() -> anyhow::Result<()> {
    for backend in backends() {
        let mut site = Site::start(&backend, &[1, 2], &[1, 2], no_prep).await?;
        let dets = site.detectors.clone();
        let d1 = dets[0];
        site.sim.set_fault_bits(1, 1 << 3);
        eventually("a SENSOR_OPEN fault is open", || async {
            Ok((!site.episodes(d1, "SENSOR_OPEN").await?.is_empty()).then_some(()))
        })
        .await?;
        site.sim.set_dead(true);
        let open_faults = |site: &Site| {
            let dets = dets.clone();
            let db = site.db().clone();
            async move {
                let n = episode::Entity::find()
                    .filter(episode::Column::DetectorId.is_in(dets.iter().map(DetectorId::as_uuid)))
                    .filter(episode::Column::Kind.eq("OFFLINE"))
                    .filter(episode::Column::ClosedAt.is_null())
                    .all(&db)
                    .await?
                    .len();
                anyhow::Ok(n)
            }
        };
        eventually("both detectors have a communication fault", || async {
            Ok((open_faults(&site).await? == 2).then_some(()))
        })
        .await?;

        // Restart while the gateway is still dead: the faults are not reported again.
        site.restart();
        // Six more failed polls per detector by the new poller.
        site.after_polls(6 * 2, None).await?;
        for d in &dets {
            assert_eq!(site.events(*d, "OFFLINE").await?.len(), 1, "{backend:?}: not reported again");
            let eps = site.episodes(*d, "OFFLINE").await?;
            assert_eq!(eps.iter().map(|e| e.occurrences).collect::<Vec<_>>(), vec![1], "{backend:?}");
        }
        // The gateway answers again: the faults opened before the restart close.
        site.sim.set_dead(false);
        eventually("the faults close", || async { Ok((open_faults(&site).await? == 0).then_some(())) }).await?;
        // The standing sensor fault was not reported again, and its end still closes it.
        assert_eq!(site.events(d1, "SENSOR_OPEN").await?.len(), 1, "{backend:?}");
        site.sim.set_fault_bits(1, 0);
        eventually("the SENSOR_OPEN fault is closed", || async {
            Ok((site.episodes(d1, "SENSOR_OPEN").await?.iter().all(|e| e.closed_at.is_some())).then_some(()))
        })
        .await?;
        let eps = site.episodes(d1, "SENSOR_OPEN").await?;
        assert_eq!((eps.len(), eps[0].occurrences), (1, 1), "{backend:?}");
    }
    Ok(())
}
