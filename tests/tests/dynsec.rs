//! Device identity on an external Mosquitto through its dynamic-security plugin
//! (DEVICE-PROTOCOL.md §3, docs/DEVICE-IDENTITY.md): Sparkwatch provisions one client and
//! one role per device, and real MQTT clients then try what a device may and may not do.
//!
//! Each test starts a private Mosquitto with the plugin (tests/src/mqtt_client.rs), so the
//! default test command runs them wherever `mosquitto`, `mosquitto_ctrl` and the plugin are
//! installed (Debian's `mosquitto` package); elsewhere they print "skipped".

use std::sync::Arc;

use anyhow::Context;
use std::time::{Duration, Instant};

use rumqttc::{QoS, SubscribeReasonCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use sparkwatch_api::auth::Principal;
use sparkwatch_api::ingest::dynsec::{self, DynsecAccounts, DynsecSettings};
use sparkwatch_api::ingest::mqtt::MqttSettings;
use sparkwatch_api::service::identity::BrokerAccounts;
use sparkwatch_entity::{detector, device, device_credential, reading};
use sparkwatch_tests::mqtt_client::{
    PrivateDynsec, WAIT, connect, ended, next_publish, options, puback, refused, reset_heard_by, suback,
};
use sparkwatch_tests::{Backend, TestServer, backends, eventually};

const SERVER_CLIENT: &str = "sparkwatch-test";

/// A demo server whose devices are kept in a private dynamic-security Mosquitto, with the
/// server's subscriber connected there under its own account.
struct Setup {
    server: TestServer,
    broker: PrivateDynsec,
    accounts: Arc<DynsecAccounts>,
    settings: DynsecSettings,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Setup {
    async fn start(backend: &Backend) -> anyhow::Result<Option<Setup>> {
        let Some(broker) = PrivateDynsec::start().await? else { return Ok(None) };
        let server = TestServer::demo(backend).await?;
        let settings = DynsecSettings {
            host: "127.0.0.1".into(),
            port: broker.port,
            admin: broker.admin.clone(),
            server: Some(("sparkwatch-server".into(), format!("srv-{}", uuid::Uuid::now_v7().simple()))),
            client_id: format!("{SERVER_CLIENT}-dynsec"),
            prefix: "sw".into(),
            reserved: vec![SERVER_CLIENT.into(), format!("{SERVER_CLIENT}-dynsec")],
        };
        let accounts = dynsec::open(&settings);
        server.services.set_broker_accounts(accounts.clone());
        dynsec::prepare(&server.services, &accounts, &settings, WAIT).await?;
        let subscriber = MqttSettings {
            host: "127.0.0.1".into(),
            port: broker.port,
            client_id: SERVER_CLIENT.into(),
            prefix: "sw".into(),
            shared_group: None,
            credentials: settings.server.clone(),
        };
        let (_queue, stop) = sparkwatch_api::start_ingest(&server.services, "sw", Some(subscriber));
        Ok(Some(Setup { server, broker, accounts, settings, _stop: stop }))
    }

    fn device(&self, serial: &str, secret: Option<&str>) -> rumqttc::MqttOptions {
        options("127.0.0.1", self.broker.port, serial, secret.map(|s| (serial, s)))
    }

    fn admin(&self, client_id: &str) -> rumqttc::MqttOptions {
        let (u, p) = &self.broker.admin;
        options("127.0.0.1", self.broker.port, client_id, Some((u, p)))
    }

    async fn readings_of(&self, serial: &str) -> anyhow::Result<u64> {
        let db = self.server.services.store().db();
        let Some(dev) = device::Entity::find().filter(device::Column::Serial.eq(serial)).one(db).await? else {
            return Ok(0);
        };
        let ids: Vec<_> = detector::Entity::find()
            .filter(detector::Column::DeviceId.eq(dev.id))
            .all(db)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        Ok(reading::Entity::find().filter(reading::Column::DetectorId.is_in(ids)).count(db).await?)
    }

    /// Creates an MQTT device in the demo tenant's first project.
    async fn create_device(&self, serial: &str) -> anyhow::Result<()> {
        let (any, tenant) = self
            .server
            .services
            .device_by_serial_for_system("SW-DEMO-0001")
            .await
            .with_context(|| format!("device {}", "SW-DEMO-0001"))?;
        let who = Principal::system(tenant, "test");
        let input = sparkwatch_domain::site::DeviceInput {
            serial: serial.into(),
            name: format!("device {serial}"),
            transport: "MQTT".into(),
            interval_s: Some(10),
            ..Default::default()
        };
        self.server.services.create_device(&who, any.draft.project_id, input).await.context("create_device")?;
        Ok(())
    }
}

fn skipped(test: &str) -> anyhow::Result<()> {
    eprintln!("skipped: {test} needs mosquitto, mosquitto_ctrl and the dynamic-security plugin");
    Ok(())
}

fn telemetry(seq: u64, leak: f64) -> String {
    json!({"ts": chrono::Utc::now().timestamp_millis() - 1000 + seq as i64, "seq": seq, "detectors": [{"addr": 1, "leak": [leak]}]})
        .to_string()
}

#[tokio::test]
async fn only_a_device_with_its_current_secret_connects() -> anyhow::Result<()> {
    for backend in backends() {
        let Some(s) = Setup::start(&backend).await? else {
            return skipped("only_a_device_with_its_current_secret_connects");
        };
        let (a, b) = ("SW-DEMO-0001", "SW-DEMO-0002");
        // No account before credentials are issued.
        assert!(refused(connect(s.device(a, Some("anything"))).await));
        let old = s.server.device_secret(a).await?;
        let (client, mut lp) = connect(s.device(a, Some(&old))).await?;
        assert!(puback(&client, &mut lp, &format!("sw/{a}/telemetry"), telemetry(1, 12.0)).await?);
        eventually("A's reading ingested", || async { Ok((s.readings_of(a).await? >= 1).then_some(())) }).await?;

        // No password, a wrong one, another device's, a client id that is not the serial,
        // an unknown serial, the server's client id: all "not authorized".
        let other = s.server.device_secret(b).await?;
        assert!(refused(connect(s.device(a, None)).await));
        assert!(refused(connect(s.device(a, Some("wrong"))).await));
        assert!(refused(connect(s.device(a, Some(&other))).await));
        assert!(refused(connect(options("127.0.0.1", s.broker.port, b, Some((a, &old)))).await));
        assert!(refused(connect(options("127.0.0.1", s.broker.port, a, Some((b, &other)))).await));
        assert!(refused(connect(s.device("SW-NOBODY", Some(&old))).await));
        assert!(refused(connect(options("127.0.0.1", s.broker.port, SERVER_CLIENT, Some((a, &old)))).await));

        // Rotation: the session opened with the old secret is ended by the broker, the old
        // secret is refused, the new one works.
        let new = s.server.device_secret(a).await?;
        assert!(ended(&mut lp, WAIT).await, "the session with the rotated secret was not ended");
        assert!(refused(connect(s.device(a, Some(&old))).await));
        let (_c, mut kept) = connect(s.device(a, Some(&new))).await?;

        // Deletion: the account goes, its open session ends, the secret is refused.
        let (dev, tenant) =
            s.server.services.device_by_serial_for_system(a).await.with_context(|| format!("device {}", a))?;
        s.server.services.delete_device(&Principal::system(tenant, "test"), dev.id).await?;
        assert!(ended(&mut kept, WAIT).await, "the deleted device's session was not ended");
        assert!(refused(connect(s.device(a, Some(&new))).await));
        assert!(!s.accounts.device_clients().await?.contains(&a.to_owned()));
        assert!(s.accounts.device_clients().await?.contains(&b.to_owned()));
    }
    Ok(())
}

#[tokio::test]
async fn a_device_touches_only_its_own_topics() -> anyhow::Result<()> {
    for backend in backends() {
        let Some(s) = Setup::start(&backend).await? else { return skipped("a_device_touches_only_its_own_topics") };
        let (a, b) = ("SW-DEMO-0001", "SW-DEMO-0002");
        let secret = s.server.device_secret(a).await?;
        s.server.device_secret(b).await?;
        // A witness that sees every device topic (the administrator may read everything).
        let (spy, mut spy_lp) = connect(s.admin("witness")).await?;
        suback(&spy, &mut spy_lp, "sw/#").await?;

        let (client, mut lp) = connect(s.device(a, Some(&secret))).await?;
        assert_eq!(
            suback(&client, &mut lp, &format!("sw/{a}/cmd")).await?,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        for filter in [
            format!("sw/{b}/cmd"),
            "sw/+/cmd".into(),
            "sw/#".into(),
            "#".into(),
            "sw/+/telemetry".into(),
            format!("$share/g/sw/{b}/cmd"),
        ] {
            assert_eq!(suback(&client, &mut lp, &filter).await?, [SubscribeReasonCode::Failure], "{filter}");
        }

        // Forged messages: as B, a command to itself or to B, a junk topic. Mosquitto drops
        // them (QoS 1 is still acknowledged to the sender under MQTT 3.1.1).
        for forged in [
            format!("sw/{b}/telemetry"),
            format!("sw/{b}/event"),
            format!("sw/{a}/cmd"),
            format!("sw/{b}/cmd"),
            "sw/x".into(),
        ] {
            client.publish(forged, QoS::AtLeastOnce, false, telemetry(2, 900.0)).await?;
        }
        assert!(puback(&client, &mut lp, &format!("sw/{a}/telemetry"), telemetry(3, 13.0)).await?);
        // The witness receives in order: the legitimate message comes first, nothing else.
        let first = next_publish(&mut spy_lp, WAIT).await?.ok_or_else(|| anyhow::anyhow!("witness heard nothing"))?;
        assert_eq!(first.topic, format!("sw/{a}/telemetry"));
        eventually("A's reading ingested", || async { Ok((s.readings_of(a).await? >= 1).then_some(())) }).await?;
        assert_eq!(s.readings_of(b).await?, 0, "a forged reading reached B");
        assert!(next_publish(&mut spy_lp, Duration::from_millis(300)).await?.is_none());

        // A device that sends the plugin a command (take the administrator's password, give
        // itself every right) is ignored, even with the broker's default access opened up.
        let (admin, mut admin_lp) = connect(s.admin("operator-tool")).await?;
        let open_up = json!({"commands": [{"command": "setDefaultACLAccess", "acls": [
            {"acltype": "publishClientSend", "allow": true}, {"acltype": "subscribe", "allow": true}]}]});
        assert!(puback(&admin, &mut admin_lp, "$CONTROL/dynamic-security/v1", open_up.to_string()).await?);
        let takeover = json!({"commands": [
            {"command": "setClientPassword", "username": "admin", "password": "owned"},
            {"command": "addClientRole", "username": a, "rolename": "admin"}]});
        assert!(puback(&client, &mut lp, "$CONTROL/dynamic-security/v1", takeover.to_string()).await?);
        assert_eq!(suback(&client, &mut lp, "$CONTROL/dynamic-security/#").await?, [SubscribeReasonCode::Failure]);
        assert!(puback(&client, &mut lp, &format!("sw/{a}/telemetry"), telemetry(4, 13.0)).await?);
        assert_eq!(suback(&client, &mut lp, &format!("sw/{b}/cmd")).await?, [SubscribeReasonCode::Failure]);
        client.publish(format!("sw/{b}/telemetry"), QoS::AtLeastOnce, false, telemetry(5, 900.0)).await?;
        assert!(puback(&client, &mut lp, &format!("sw/{a}/telemetry"), telemetry(6, 13.0)).await?);
        for _ in 0..2 {
            let p = next_publish(&mut spy_lp, WAIT).await?.ok_or_else(|| anyhow::anyhow!("witness heard nothing"))?;
            assert_eq!(p.topic, format!("sw/{a}/telemetry"), "a forged message got through an open default");
        }
        assert!(connect(s.admin("admin-again")).await.is_ok(), "a device changed the administrator's password");
        assert!(refused(connect(options("127.0.0.1", s.broker.port, "x", Some(("admin", "owned")))).await));
    }
    Ok(())
}

#[tokio::test]
async fn commands_reach_only_the_addressed_device() -> anyhow::Result<()> {
    let Some(s) = Setup::start(&Backend::Sqlite).await? else {
        return skipped("commands_reach_only_the_addressed_device");
    };
    let (a, b) = ("SW-DEMO-0001", "SW-DEMO-0002");
    let (sa, sb) = (s.server.device_secret(a).await?, s.server.device_secret(b).await?);
    let (ca, mut la) = connect(s.device(a, Some(&sa))).await?;
    let (cb, mut lb) = connect(s.device(b, Some(&sb))).await?;
    suback(&ca, &mut la, &format!("sw/{a}/cmd")).await?;
    suback(&cb, &mut lb, &format!("sw/{b}/cmd")).await?;
    let got = reset_heard_by(&s.server, a, &mut la).await?;
    assert_eq!(got.topic, format!("sw/{a}/cmd"));
    assert!(next_publish(&mut lb, Duration::from_millis(300)).await?.is_none(), "device B heard A's command");
    // A device cannot command another even by publishing to its cmd topic.
    cb.publish(format!("sw/{a}/cmd"), QoS::AtLeastOnce, false, r#"{"id":"forged","op":"TRIP"}"#).await?;
    assert!(next_publish(&mut la, Duration::from_millis(300)).await?.is_none(), "B's forged command reached A");
    Ok(())
}

#[tokio::test]
async fn foreign_accounts_are_never_taken_and_stale_ones_go() -> anyhow::Result<()> {
    let Some(s) = Setup::start(&Backend::Sqlite).await? else {
        return skipped("foreign_accounts_are_never_taken_and_stale_ones_go");
    };
    // The operator's own client, made by hand: a device registered under its name must not
    // take it over, nor may a device take the administrator's or the server's name.
    let (admin, mut admin_lp) = connect(s.admin("operator-tool")).await?;
    let (ou, op) = ("nodered", "operator-secret");
    let create = json!({"commands": [{"command": "createClient", "username": ou, "password": op}]});
    assert!(puback(&admin, &mut admin_lp, "$CONTROL/dynamic-security/v1", create.to_string()).await?);
    eventually("the operator's client exists", || async {
        Ok((!refused(connect(options("127.0.0.1", s.broker.port, "nr", Some((ou, op)))).await)).then_some(()))
    })
    .await?;
    for name in [ou, "admin", "sparkwatch-server", SERVER_CLIENT] {
        s.create_device(name).await.with_context(|| format!("create {name}"))?;
        let (dev, tenant) =
            s.server.services.device_by_serial_for_system(name).await.with_context(|| format!("device {}", name))?;
        let err = s.server.services.issue_for(&Principal::system(tenant, "test"), &dev).await.expect_err(name);
        assert_eq!(err.code(), "CONFLICT", "{name}: {err}");
    }
    assert!(
        connect(options("127.0.0.1", s.broker.port, "nr", Some((ou, op)))).await.is_ok(),
        "operator's password changed"
    );
    assert!(connect(s.admin("admin-again")).await.is_ok(), "administrator's password changed");
    // Deleting such a device leaves the operator's client alone.
    let (dev, tenant) =
        s.server.services.device_by_serial_for_system(ou).await.with_context(|| format!("device {}", ou))?;
    s.server.services.delete_device(&Principal::system(tenant, "test"), dev.id).await.context("delete")?;
    assert!(connect(options("127.0.0.1", s.broker.port, "nr", Some((ou, op)))).await.is_ok());

    // Stale accounts: a device whose credentials vanished from the database (restored
    // backup) loses its account at the next start; one with credentials keeps it, and a
    // device with credentials but no account is reported.
    let (a, b, c) = ("SW-DEMO-0001", "SW-DEMO-0002", "SW-DEMO-0101");
    let sa = s.server.device_secret(a).await?;
    s.server.device_secret(b).await?;
    s.server.device_secret(c).await?;
    let db = s.server.services.store().db();
    let (db_b, _) = s.server.services.device_by_serial_for_system(b).await.with_context(|| format!("device {}", b))?;
    device_credential::Entity::delete_by_id(db_b.id.as_uuid()).exec(db).await?;
    s.accounts.remove_device(c).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // This process wrote B's account: it may be an issue whose digest is not committed yet,
    // so it is kept (the demo issues credentials while the keeper runs).
    let same = dynsec::prepare(&s.server.services, &s.accounts, &s.settings, WAIT).await?;
    assert_eq!((same.removed, same.kept), (0, 2));
    // A restarted server (a new administrator connection) removes it.
    let restarted = dynsec::open(&DynsecSettings { client_id: "restarted-dynsec".into(), ..s.settings.clone() });
    let done = dynsec::prepare(&s.server.services, &restarted, &s.settings, WAIT).await?;
    assert_eq!(done.removed, 1);
    assert_eq!(done.missing, [c]);
    assert!(refused(connect(s.device(b, Some("whatever"))).await));
    assert!(connect(s.device(a, Some(&sa))).await.is_ok());
    assert!(
        connect(options("127.0.0.1", s.broker.port, "nr", Some((ou, op)))).await.is_ok(),
        "reconcile removed the operator's client"
    );

    // A renamed device loses the account of its old serial.
    let (dev_a, tenant) =
        s.server.services.device_by_serial_for_system(a).await.with_context(|| format!("device {}", a))?;
    s.server
        .services
        .update_device(&Principal::system(tenant, "test"), dev_a.id, None, |i| i.serial = "SW-RENAMED".into())
        .await
        .context("rename")?;
    assert!(refused(connect(s.device(a, Some(&sa))).await));
    Ok(())
}

/// Cost of creating device accounts as their number grows: Mosquitto rewrites its whole
/// state file on every change. `cargo test -p sparkwatch-tests --test dynsec -- --ignored
/// --nocapture` (BENCHMARKS.md, "Mosquitto dynamic security"); SPARKWATCH_DYNSEC_BENCH_N
/// sets the total (default 2000).
#[tokio::test]
#[ignore]
async fn bench_account_creation() -> anyhow::Result<()> {
    let Some(broker) = PrivateDynsec::start().await? else { return skipped("bench_account_creation") };
    let total: usize = std::env::var("SPARKWATCH_DYNSEC_BENCH_N").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let settings = DynsecSettings {
        host: "127.0.0.1".into(),
        port: broker.port,
        admin: broker.admin.clone(),
        server: None,
        client_id: "bench-dynsec".into(),
        prefix: "sw".into(),
        reserved: vec![],
    };
    let accounts = dynsec::open(&settings);
    accounts.control().until_ready(WAIT).await?;
    let step = (total / 10).max(1);
    let mut start = Instant::now();
    println!("accounts   ms/device (last {step})");
    for i in 0..total {
        let serial = format!("BENCH-{i:06}");
        accounts
            .put_device(&serial, "s3cret-s3cret-s3cret-s3cret-s3cret-s3cret-x")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if (i + 1) % step == 0 {
            let per = start.elapsed().as_secs_f64() * 1000.0 / step as f64;
            println!("{:>8}   {per:.1}", i + 1);
            start = Instant::now();
        }
    }
    let rotate = Instant::now();
    accounts
        .put_device("BENCH-000000", "another-secret-another-secret-another-secret")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("rotation at {total}: {:.1} ms", rotate.elapsed().as_secs_f64() * 1000.0);
    let list = Instant::now();
    let n = accounts.device_clients().await?.len();
    println!("listClients of {n}: {:.1} ms", list.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}
