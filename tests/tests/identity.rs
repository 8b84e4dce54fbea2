//! Device identity (DEVICE-PROTOCOL.md §3) on the embedded broker, attacked with real MQTT
//! clients: who may connect, what a device may publish and subscribe to, TLS with a test
//! CA, and `issueDeviceCredentials` itself (permissions, tenancy, rotation, the log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, SubscribeReasonCode, TlsConfiguration, Transport};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use sparkwatch_entity::{detector, device, operation_log, reading};
use sparkwatch_tests::mqtt_client::{WAIT, connect, next_publish, puback, refused, reset_heard_by, suback};
use sparkwatch_tests::{Backend, TestServer, backends, eventually};

fn gate(server: &TestServer, tls: Option<&sparkwatch_api::config::MqttTls>) -> anyhow::Result<Gate> {
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let broker = sparkwatch_api::start_embedded_broker(&server.services, listen, tls, "sw", "sparkwatch")?;
    Ok(Gate { broker })
}

struct Gate {
    broker: sparkwatch_api::ingest::broker::EmbeddedBroker,
}

impl Gate {
    fn options(&self, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
        let addr = self.broker.connect_addr();
        let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(10));
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        opts
    }
}

fn telemetry(seq: u64, leak: f64) -> String {
    json!({"ts": chrono::Utc::now().timestamp_millis() - 1000 + seq as i64, "seq": seq, "detectors": [{"addr": 1, "leak": [leak]}]})
        .to_string()
}

async fn readings_of(server: &TestServer, serial: &str) -> anyhow::Result<u64> {
    let db = server.services.store().db();
    let dev = device::Entity::find().filter(device::Column::Serial.eq(serial)).one(db).await?;
    let Some(dev) = dev else { anyhow::bail!("no device {serial}") };
    let detectors = detector::Entity::find().filter(detector::Column::DeviceId.eq(dev.id)).all(db).await?;
    let ids: Vec<_> = detectors.into_iter().map(|d| d.id).collect();
    Ok(reading::Entity::find().filter(reading::Column::DetectorId.is_in(ids)).count(db).await?)
}

#[tokio::test]
async fn only_a_device_with_its_current_secret_connects() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let gate = gate(&server, None)?;
    let serial = "SW-DEMO-0001";
    // A device registered before credentials existed is refused until it gets them.
    assert!(refused(connect(gate.options(serial, Some((serial, "anything")))).await));
    let old = server.device_secret(serial).await?;
    let (_kept, mut kept_loop) = connect(gate.options(serial, Some((serial, &old)))).await?;

    // No credentials, a wrong secret, another device's secret, a client id that is not the
    // user name, an unknown serial, the server's own client id: all "not authorized".
    let other = server.device_secret("SW-DEMO-0002").await?;
    assert!(refused(connect(gate.options(serial, None)).await));
    assert!(refused(connect(gate.options(serial, Some((serial, "wrong")))).await));
    assert!(refused(connect(gate.options(serial, Some((serial, &other)))).await));
    assert!(refused(connect(gate.options("SW-DEMO-0002", Some((serial, &old)))).await));
    assert!(refused(connect(gate.options("SW-NOBODY", Some(("SW-NOBODY", &old)))).await));
    assert!(refused(connect(gate.options("sparkwatch", Some(("sparkwatch", &old)))).await));

    // Rotation: the old secret stops working at once, the new one works, and the connection
    // made with the old one is ended (not kept until the device happens to reconnect).
    let new = server.device_secret(serial).await?;
    assert!(refused(connect(gate.options(serial, Some((serial, &old)))).await));
    let ended = async {
        loop {
            if kept_loop.poll().await.is_err() {
                return;
            }
        }
    };
    assert!(tokio::time::timeout(WAIT, ended).await.is_ok(), "the connection with the rotated secret was not ended");
    assert!(connect(gate.options(serial, Some((serial, &new)))).await.is_ok());

    // A last will on another device's topics would publish for it: refused at CONNECT.
    let mut will = gate.options(serial, Some((serial, &new)));
    will.set_last_will(LastWill::new("sw/SW-DEMO-0002/status", r#"{"online":false}"#, QoS::AtLeastOnce, true));
    assert!(refused(connect(will).await));
    let mut own_will = gate.options(serial, Some((serial, &new)));
    own_will.set_last_will(LastWill::new(format!("sw/{serial}/status"), r#"{"online":false}"#, QoS::AtLeastOnce, true));
    assert!(connect(own_will).await.is_ok());

    // rumqttd's own port takes only the internal login.
    let internal = gate.broker.internal_addr();
    let mut direct = MqttOptions::new(serial, internal.ip().to_string(), internal.port());
    direct.set_credentials(serial, new.as_str());
    assert!(connect(direct).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_device_touches_only_its_own_topics() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let gate = gate(&server, None)?;
    let settings = gate.broker.subscriber_settings("sparkwatch", "sw");
    let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, "sw", Some(settings));
    let (a, b) = ("SW-DEMO-0001", "SW-DEMO-0002");
    let secret = server.device_secret(a).await?;
    let (client, mut lp) = connect(gate.options(a, Some((a, &secret)))).await.map_err(anyhow::Error::from)?;

    // Subscriptions: only its own command topic, spelled exactly.
    assert_eq!(
        suback(&client, &mut lp, &format!("sw/{a}/cmd")).await?,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    for filter in [format!("sw/{b}/cmd"), "sw/+/cmd".into(), "sw/#".into(), "#".into(), "sw/+/telemetry".into()] {
        assert_eq!(suback(&client, &mut lp, &filter).await?, [SubscribeReasonCode::Failure], "{filter}");
    }

    // Its own telemetry is stored.
    assert!(puback(&client, &mut lp, &format!("sw/{a}/telemetry"), telemetry(1, 12.0)).await?);
    eventually("A's reading stored", || async { Ok((readings_of(&server, a).await? >= 1).then_some(())) }).await?;

    // Publishing as B, or a command, closes the connection; nothing reaches ingestion.
    for forged in [format!("sw/{b}/telemetry"), format!("sw/{a}/cmd"), format!("sw/{b}/cmd"), "sw/x".into()] {
        let (c, mut l) = connect(gate.options(a, Some((a, &secret)))).await.map_err(anyhow::Error::from)?;
        assert!(!puback(&c, &mut l, &forged, telemetry(2, 900.0)).await?, "{forged} was accepted");
    }
    // A later message of A is stored, and B still has nothing (the forged alarm never came).
    let (c, mut l) = connect(gate.options(a, Some((a, &secret)))).await.map_err(anyhow::Error::from)?;
    assert!(puback(&c, &mut l, &format!("sw/{a}/telemetry"), telemetry(3, 13.0)).await?);
    eventually("A's second reading stored", || async { Ok((readings_of(&server, a).await? >= 2).then_some(())) })
        .await?;
    assert_eq!(readings_of(&server, b).await?, 0);
    Ok(())
}

#[tokio::test]
async fn commands_reach_only_the_addressed_device() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let gate = gate(&server, None)?;
    let settings = gate.broker.subscriber_settings("sparkwatch", "sw");
    let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, "sw", Some(settings));
    let (a, b) = ("SW-DEMO-0001", "SW-DEMO-0002");
    let (sa, sb) = (server.device_secret(a).await?, server.device_secret(b).await?);
    let (ca, mut la) = connect(gate.options(a, Some((a, &sa)))).await.map_err(anyhow::Error::from)?;
    let (cb, mut lb) = connect(gate.options(b, Some((b, &sb)))).await.map_err(anyhow::Error::from)?;
    suback(&ca, &mut la, &format!("sw/{a}/cmd")).await?;
    suback(&cb, &mut lb, &format!("sw/{b}/cmd")).await?;
    let got = reset_heard_by(&server, a, &mut la).await?;
    assert_eq!(got.topic, format!("sw/{a}/cmd"));
    // B hears nothing of it.
    assert!(next_publish(&mut lb, Duration::from_millis(300)).await?.is_none(), "device B heard A's command");
    Ok(())
}

/// A throw-away CA and a certificate for 127.0.0.1 signed by it, written as PEM files.
fn test_pki(dir: &std::path::Path) -> anyhow::Result<(sparkwatch_api::config::MqttTls, rustls::RootCertStore)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))?;
    let (cert_path, key_path) = (dir.join("broker.pem"), dir.join("broker.key"));
    std::fs::write(&cert_path, leaf.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let tls = sparkwatch_api::config::MqttTls {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert: cert_path,
        key: key_path,
    };
    Ok((tls, roots))
}

#[tokio::test]
async fn a_device_connects_over_tls_with_the_sites_ca() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let dir = tempfile::tempdir()?;
    let (tls, roots) = test_pki(dir.path())?;
    let gate = gate(&server, Some(&tls))?;
    let settings = gate.broker.subscriber_settings("sparkwatch", "sw");
    let (_queue, _stop) = sparkwatch_api::start_ingest(&server.services, "sw", Some(settings));
    let tls_addr = gate.broker.tls_addr().ok_or_else(|| anyhow::anyhow!("no TLS listener"))?;
    let serial = "SW-DEMO-0001";
    let secret = server.device_secret(serial).await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = |roots: rustls::RootCertStore| -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(Arc::new(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    };
    let over_tls = |config: Arc<rustls::ClientConfig>| {
        let mut opts = MqttOptions::new(serial, "127.0.0.1", tls_addr.port());
        opts.set_keep_alive(Duration::from_secs(10)).set_credentials(serial, secret.as_str());
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        opts
    };
    let (client, mut lp) = connect(over_tls(client_config(roots)?)).await.map_err(anyhow::Error::from)?;
    assert!(puback(&client, &mut lp, &format!("sw/{serial}/telemetry"), telemetry(1, 11.0)).await?);
    eventually("the TLS device's reading stored", || async {
        Ok((readings_of(&server, serial).await? >= 1).then_some(()))
    })
    .await?;
    // A client that does not trust the site's CA does not get through, nor does plain MQTT
    // on the TLS port.
    assert!(connect(over_tls(client_config(rustls::RootCertStore::empty())?)).await.is_err());
    let mut plain = MqttOptions::new(serial, "127.0.0.1", tls_addr.port());
    plain.set_keep_alive(Duration::from_secs(10)).set_credentials(serial, secret.as_str());
    assert!(connect(plain).await.is_err());
    Ok(())
}

#[tokio::test]
async fn issuing_credentials_is_guarded_scoped_and_logged() -> anyhow::Result<()> {
    const ISSUE: &str = "mutation($d: ID!) { issueDeviceCredentials(deviceId: $d) { username password issuedAt } }";
    for backend in backends() {
        let server = TestServer::demo(&backend).await?;
        let db = server.services.store().db();
        let id_of = |serial: &'static str| async move {
            let d = device::Entity::find().filter(device::Column::Serial.eq(serial)).one(db).await?;
            anyhow::Ok(d.ok_or_else(|| anyhow::anyhow!("no {serial}"))?.id.to_string())
        };
        let (mall, other_tenant, gateway) =
            (id_of("SW-DEMO-0001").await?, id_of("SW-DEMOB-0001").await?, id_of("GW-DEMO-0001").await?);
        let admin = server.demo_login("admin@demo.local").await?;
        let issued = admin.ok(ISSUE, json!({"d": mall})).await?["issueDeviceCredentials"].clone();
        assert_eq!(issued["username"], "SW-DEMO-0001");
        let password = issued["password"].as_str().unwrap_or_default().to_owned();
        assert!(password.len() >= 43, "{password}");
        assert!(server.services.verify_device("SW-DEMO-0001", &password).await?.is_ok());
        // Rotation.
        let again = admin.ok(ISSUE, json!({"d": mall})).await?["issueDeviceCredentials"]["password"].clone();
        assert_ne!(again.as_str(), Some(password.as_str()));
        assert!(server.services.verify_device("SW-DEMO-0001", &password).await?.is_err());

        // Another tenant's device looks absent; Modbus gateways have no MQTT credentials;
        // an electrician (no device.manage) may not; an anonymous caller is not signed in.
        assert_eq!(admin.code(ISSUE, json!({"d": other_tenant})).await?, "NOT_FOUND");
        assert_eq!(admin.code(ISSUE, json!({"d": gateway})).await?, "VALIDATION");
        let electrician = server.demo_login("electrician@demo.local").await?;
        assert_eq!(electrician.code(ISSUE, json!({"d": mall})).await?, "FORBIDDEN");
        assert_eq!(server.anonymous().code(ISSUE, json!({"d": mall})).await?, "UNAUTHENTICATED");

        // Logged, without the secret.
        let log = operation_log::Entity::find()
            .filter(operation_log::Column::Action.eq("device.credentials.issue"))
            .all(db)
            .await?;
        assert_eq!(log.len(), 2);
        let text = serde_json::to_string(&log.iter().map(|l| (&l.before, &l.after)).collect::<Vec<_>>())?;
        assert!(!text.contains(&password), "the secret is in the operation log");
    }
    Ok(())
}

#[tokio::test]
async fn emqx_hooks_apply_the_device_rules() -> anyhow::Result<()> {
    let server = TestServer::demo(&Backend::Sqlite).await?;
    let hook = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = server.http.post(format!("{}/mqtt/{path}", server.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await?;
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
            anyhow::Ok((status, body["result"].as_str().unwrap_or_default().to_owned()))
        }
    };
    let auth = |c: &str, u: &str, p: &str| json!({"clientid": c, "username": u, "password": p});
    let acl =
        |c: &str, topic: &str, action: &str| json!({"clientid": c, "username": c, "topic": topic, "action": action});
    // Off unless configured.
    assert_eq!(hook("auth", None, auth("a", "a", "b")).await?.0, 404);

    let secret = "h".repeat(40);
    server.services.set_mqtt_hooks(sparkwatch_api::service::identity::HookSettings {
        secret: secret.clone(),
        prefix: "sw".into(),
        reserved_client_ids: vec!["sparkwatch".into()],
    });
    let s = Some(secret.as_str());
    let (a, b) = ("SW-DEMO-0001", "SW-DEMO-0002");
    // Without the shared secret nothing is answered.
    assert_eq!(hook("auth", None, auth(a, a, "x")).await?.0, 401);
    assert_eq!(hook("acl", Some("wrong"), acl(a, "sw/SW-DEMO-0001/telemetry", "publish")).await?.0, 401);

    let ok = |r: (u16, String)| r.1;
    assert_eq!(ok(hook("auth", s, auth(a, a, "x")).await?), "deny", "no credentials issued yet");
    let pw = server.device_secret(a).await?;
    assert_eq!(ok(hook("auth", s, auth(a, a, &pw)).await?), "allow");
    assert_eq!(ok(hook("auth", s, auth(a, a, "wrong")).await?), "deny");
    assert_eq!(ok(hook("auth", s, auth(b, a, &pw)).await?), "deny", "client id must be the serial");
    assert_eq!(ok(hook("auth", s, auth("SW-NOBODY", "SW-NOBODY", &pw)).await?), "ignore");
    assert_eq!(ok(hook("auth", s, auth("sparkwatch", "sparkwatch", "x")).await?), "ignore");
    let rotated = server.device_secret(a).await?;
    assert_eq!(ok(hook("auth", s, auth(a, a, &pw)).await?), "deny");
    assert_eq!(ok(hook("auth", s, auth(a, a, &rotated)).await?), "allow");

    for (topic, action, expected) in [
        ("sw/SW-DEMO-0001/telemetry", "publish", "allow"),
        ("sw/SW-DEMO-0001/cmd/ack", "publish", "allow"),
        ("sw/SW-DEMO-0002/telemetry", "publish", "deny"),
        ("sw/SW-DEMO-0001/cmd", "publish", "deny"),
        ("sw/SW-DEMO-0001/cmd", "subscribe", "allow"),
        ("sw/SW-DEMO-0002/cmd", "subscribe", "deny"),
        ("sw/+/telemetry", "subscribe", "deny"),
        ("#", "subscribe", "deny"),
        ("sw/SW-DEMO-0001/telemetry", "retain", "deny"),
    ] {
        assert_eq!(ok(hook("acl", s, acl(a, topic, action)).await?), expected, "{action} {topic}");
    }
    assert_eq!(ok(hook("acl", s, acl("sparkwatch", "sw/+/telemetry", "subscribe")).await?), "ignore");
    // An oversized body is refused before it is read.
    let huge = json!({"clientid": "x".repeat(10_000), "username": "a", "password": "b"});
    assert_eq!(hook("auth", s, huge).await?.0, 413);
    Ok(())
}
