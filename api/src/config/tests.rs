//! Settings → Config: precedence, validation messages, secrets kept out of `Debug`.

use super::*;

fn settings(dir: &Path) -> Settings {
    Settings { data_dir: Some(dir.to_owned()), ..Default::default() }
}

#[test]
fn defaults_resolve_and_secret_is_generated_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = settings(dir.path()).resolve().expect("valid");
    assert_eq!(a.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(a.broker, Broker::Embedded("127.0.0.1:1883".parse().expect("addr")));
    assert!(a.database_url.expose().starts_with("sqlite://"));
    let b = settings(dir.path()).resolve().expect("valid");
    assert_eq!(a.jwt_secret, b.jwt_secret, "the generated secret is reused");
    assert_eq!(format!("{:?}", a.jwt_secret), "***");
}

#[test]
fn bad_values_name_the_flag_and_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(Settings, &str)> = vec![
        (Settings { listen: Some("nope".into()), ..settings(dir.path()) }, "--listen (SPARKWATCH_LISTEN)"),
        (Settings { database_url: Some("mysql://x".into()), ..settings(dir.path()) }, "--database-url"),
        (Settings { redis_url: Some("localhost".into()), ..settings(dir.path()) }, "--redis-url"),
        (
            Settings {
                mqtt_url: Some("mqtt://a:1".into()),
                mqtt_listen: Some("127.0.0.1:1".into()),
                ..settings(dir.path())
            },
            "--mqtt-url",
        ),
        (Settings { mqtt_url: Some("mqtt://host".into()), ..settings(dir.path()) }, "--mqtt-url"),
        (Settings { jwt_secret: Some("short".into()), ..settings(dir.path()) }, "--jwt-secret (SPARKWATCH_JWT_SECRET)"),
        (Settings { access_token_ttl_s: Some(1), ..settings(dir.path()) }, "--access-token-ttl-s"),
        (Settings { attachments_url: Some("ftp://x".into()), ..settings(dir.path()) }, "--attachments-url"),
        (Settings { attachment_max_bytes: Some(1), ..settings(dir.path()) }, "--attachment-max-bytes"),
    ];
    for (s, expected) in cases {
        let err = s.resolve().expect_err("invalid").to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn file_values_fill_gaps_and_flags_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sparkwatch.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nmqtt-url = \"mqtt://127.0.0.1:1883\"\n").expect("write");
    let s = Settings { config: Some(file.clone()), ..settings(dir.path()) };
    let c = s.resolve().expect("valid");
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.broker, Broker::External("mqtt://127.0.0.1:1883".into()));
    let s = Settings { config: Some(file.clone()), listen: Some("127.0.0.1:9001".into()), ..settings(dir.path()) };
    assert_eq!(s.resolve().expect("valid").listen.port(), 9001);
    std::fs::write(&file, "lissten = \"x\"\n").expect("write");
    let err = Settings { config: Some(file), ..settings(dir.path()) }.resolve().expect_err("typo");
    assert!(err.to_string().contains("lissten"), "{err}");
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(redact_url("postgres://sw:hunter2@db/sw"), "postgres://sw:***@db/sw");
    assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
}

#[test]
fn modbus_networks_default_by_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = settings(dir.path()).resolve().expect("valid");
    assert!(sqlite.modbus_allow_networks.allows("10.1.2.3".parse().expect("ip")), "a small site polls its LAN");
    assert!(!sqlite.modbus_allow_networks_set);
    let hosted = Settings { database_url: Some("postgres://sw@db/sw".into()), ..settings(dir.path()) };
    let hosted = hosted.resolve().expect("valid");
    assert!(hosted.modbus_allow_networks.is_empty(), "a hosted platform polls nothing until told");
    let chosen = Settings {
        database_url: Some("postgres://sw@db/sw".into()),
        modbus_allow_networks: Some("10.20.0.0/16".into()),
        ..settings(dir.path())
    };
    let chosen = chosen.resolve().expect("valid");
    assert!(chosen.modbus_allow_networks.allows("10.20.9.9".parse().expect("ip")));
    assert!(!chosen.modbus_allow_networks.allows("10.21.0.1".parse().expect("ip")));
    let err = Settings { modbus_allow_networks: Some("10.0.0.0/40".into()), ..settings(dir.path()) }
        .resolve()
        .expect_err("invalid");
    assert!(err.to_string().contains("--modbus-allow-networks (SPARKWATCH_MODBUS_ALLOW_NETWORKS)"), "{err}");
}

#[test]
fn dynsec_admin_needs_both_halves_and_an_external_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let external = || Settings { mqtt_url: Some("mqtt://sw:pw@127.0.0.1:1883".into()), ..settings(dir.path()) };
    let user_only = Settings { mqtt_dynsec_admin_user: Some("admin".into()), ..external() };
    let err = user_only.resolve().expect_err("no password").to_string();
    assert!(err.contains("--mqtt-dynsec-admin-password (SPARKWATCH_MQTT_DYNSEC_ADMIN_PASSWORD)"), "{err}");
    let password_only = Settings { mqtt_dynsec_admin_password: Some("pw".into()), ..external() };
    assert!(password_only.resolve().expect_err("no user").to_string().contains("--mqtt-dynsec-admin-user"));
    let both = Settings {
        mqtt_dynsec_admin_user: Some("admin".into()),
        mqtt_dynsec_admin_password: Some("pw".into()),
        ..external()
    };
    let c = both.clone().resolve().expect("valid");
    assert!(c.mqtt_dynsec, "an administrator implies --mqtt-dynsec");
    assert_eq!(c.mqtt_dynsec_admin.as_ref().map(|(u, _)| u.as_str()), Some("admin"));
    let embedded = Settings { mqtt_url: None, ..both };
    assert!(embedded.resolve().expect_err("embedded").to_string().contains("--mqtt-dynsec"));
}
