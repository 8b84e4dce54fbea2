//! Registration in a hosted deployment (issue 14, docs/MODBUS.md): two tenants over real
//! HTTP GraphQL, in-test Modbus TCP gateways (tokio-modbus's server) and the real poller.
//!
//! - A gateway address belongs to one tenant: another tenant is refused under every spelling
//!   of the address (IPv4-mapped, a name resolving to it, moving a device onto it), the
//!   refusal says nothing of the owner, and the address stays held for 7 days after the
//!   owner's last device on it is removed (a manual clock moves time).
//! - `--modbus-allow-networks`: registration outside the networks is refused (names that do
//!   not resolve read the same); a gateway whose address changed after registration is not
//!   contacted by the poller.
//! - A closed port, a silent gateway and a non-Modbus service read the same `NO_ANSWER`.
//! - Serial claiming: no, a wrong or another tenant's claim all read the same; a freed claim
//!   can be used by the label's holder; failed claims are rate-limited; loading claims is for
//!   platform operators (GraphQL and `sparkwatch claims load`).
//! - Without claiming, another tenant's serial is refused without a CONFLICT naming it.

use std::sync::Arc;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sparkwatch_api::auth::Principal;
use sparkwatch_api::config::Config;
use sparkwatch_api::ingest::modbus::NO_ANSWER;
use sparkwatch_api::ingest::modbus::network::AllowedNetworks;
use sparkwatch_api::service::ManualClock;
use sparkwatch_api::service::users::NewUser;
use sparkwatch_api::simulate::modbus_server::{self, ModbusSim};
use sparkwatch_entity::device;
use sparkwatch_tests::{Backend, Gql, Options, TestServer, backends, eventually, metric, start_modbus};

const CREATE: &str = "mutation($i: CreateDeviceInput!) { createDevice(input: $i) { id serial } }";
const UPDATE: &str = "mutation($i: UpdateDeviceInput!) { updateDevice(input: $i) { id } }";
const DELETE: &str = "mutation($id: ID!) { deleteDevice(id: $id) }";
const LOAD: &str = "mutation($c: [SerialClaimInput!]!) { loadSerialClaims(claims: $c) }";

/// The demo's two tenants (Demo = A, Demo B = B), signed in over HTTP, with a project each.
struct Tenants {
    server: TestServer,
    a: Gql,
    b: Gql,
    project_a: String,
    project_b: String,
}

impl Tenants {
    async fn start(backend: &Backend, opts: Options) -> anyhow::Result<Tenants> {
        let server = TestServer::start_opts(backend, opts).await?;
        sparkwatch_api::demo::seed(&server.services).await?;
        let a = server.demo_login("admin@demo.local").await?;
        let b = server.demo_login("admin@demo-b.local").await?;
        let project_a = first_project(&a).await?;
        let project_b = first_project(&b).await?;
        Ok(Tenants { server, a, b, project_a, project_b })
    }

    /// Signs both in again (after the clock moved past their tokens' lifetime).
    async fn relogin(&mut self) -> anyhow::Result<()> {
        self.a = self.server.demo_login("admin@demo.local").await?;
        self.b = self.server.demo_login("admin@demo-b.local").await?;
        Ok(())
    }
}

async fn first_project(gql: &Gql) -> anyhow::Result<String> {
    let data = gql.ok("{ projects(first: 1) { edges { node { id } } } }", json!({})).await?;
    Ok(data["projects"]["edges"][0]["node"]["id"].as_str().unwrap_or_default().to_owned())
}

fn gateway(project: &str, serial: &str, host: &str, port: u16) -> Value {
    json!({"i": {"projectId": project, "serial": serial, "name": serial, "transport": "MODBUS_TCP",
                 "host": host, "port": port}})
}

fn mqtt(project: &str, serial: &str, claim: Option<&str>) -> Value {
    json!({"i": {"projectId": project, "serial": serial, "name": serial, "transport": "MQTT", "claimCode": claim}})
}

/// What a client reads of a failed mutation: the message and the extensions (code, field,
/// reason) — everything but the path and locations.
async fn refusal(gql: &Gql, query: &str, vars: Value) -> anyhow::Result<Value> {
    let res = gql.run(query, vars).await?;
    let e = &res["errors"][0];
    anyhow::ensure!(!e.is_null(), "expected an error: {res}");
    Ok(json!({"message": e["message"], "extensions": e["extensions"]}))
}

async fn created(gql: &Gql, vars: Value) -> anyhow::Result<String> {
    let data = gql.ok(CREATE, vars).await?;
    Ok(data["createDevice"]["id"].as_str().unwrap_or_default().to_owned())
}

fn assert_refused(r: &Value, field: &str, reason: &str) {
    assert_eq!(r["extensions"]["code"], "REFUSED", "{r}");
    assert_eq!(r["extensions"]["field"], field, "{r}");
    assert_eq!(r["extensions"]["reason"], reason, "{r}");
}

/// An in-test Modbus gateway with unit 1.
async fn sim() -> anyhow::Result<(ModbusSim, u16)> {
    let (sim, addr) = modbus_server::start("127.0.0.1:0".parse()?).await?;
    sim.add_unit(1);
    Ok((sim, addr.port()))
}

#[tokio::test]
async fn a_gateway_belongs_to_one_tenant_and_is_held_after_removal() -> anyhow::Result<()> {
    for backend in backends() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let mut t = Tenants::start(&backend, Options { clock: clock.clone(), ..Options::default() }).await?;
        let (_sim, port) = sim().await?;
        let (_other, other_port) = sim().await?;
        let a_device = created(&t.a, gateway(&t.project_a, "GW-A-1", "127.0.0.1", port)).await?;

        // Tenant B, under every spelling of A's address: one refusal that names nobody.
        let taken = refusal(&t.b, CREATE, gateway(&t.project_b, "GW-B-1", "127.0.0.1", port)).await?;
        assert_refused(&taken, "host", "GATEWAY_TAKEN");
        let text = taken["message"].as_str().unwrap_or_default();
        for secret in ["GW-A-1", "Demo", "demo.local"] {
            assert!(!text.contains(secret), "{backend:?}: the refusal leaks {secret}: {text}");
        }
        for host in ["::ffff:127.0.0.1", "[::ffff:7f00:1]", "localhost"] {
            let r = refusal(&t.b, CREATE, gateway(&t.project_b, "GW-B-1", host, port)).await?;
            assert_eq!(r, taken, "{backend:?}: {host}");
        }
        let b_devices = t.b.ok("{ devices { edges { node { id } } } }", json!({})).await?;
        let b_device = b_devices["devices"]["edges"][0]["node"]["id"].clone();
        let moved = json!({"i": {"id": b_device, "transport": "MODBUS_TCP", "host": "127.0.0.1", "port": port}});
        assert_eq!(refusal(&t.b, UPDATE, moved).await?, taken, "{backend:?}: moving a device onto it");
        // Another port of the same host is another gateway.
        created(&t.b, gateway(&t.project_b, "GW-B-2", "127.0.0.1", other_port)).await?;

        // Removed by A: held for A for 7 days, and the answer to B does not change.
        t.a.ok(DELETE, json!({"id": a_device})).await?;
        let b_try = || gateway(&t.project_b, "GW-B-1", "127.0.0.1", port);
        assert_eq!(refusal(&t.b, CREATE, b_try()).await?, taken, "{backend:?}: just released");
        clock.advance(chrono::Duration::days(6));
        t.relogin().await?;
        assert_eq!(refusal(&t.b, CREATE, gateway(&t.project_b, "GW-B-1", "127.0.0.1", port)).await?, taken);
        // The owner may come back during the hold; removing it again restarts the hold.
        let again = created(&t.a, gateway(&t.project_a, "GW-A-2", "127.0.0.1", port)).await?;
        t.a.ok(DELETE, json!({"id": again})).await?;
        clock.advance(chrono::Duration::days(6));
        t.relogin().await?;
        assert_eq!(refusal(&t.b, CREATE, gateway(&t.project_b, "GW-B-1", "127.0.0.1", port)).await?, taken);
        clock.advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
        t.relogin().await?;
        created(&t.b, gateway(&t.project_b, "GW-B-1", "127.0.0.1", port)).await?;
        let r = refusal(&t.a, CREATE, gateway(&t.project_a, "GW-A-3", "127.0.0.1", port)).await?;
        assert_refused(&r, "host", "GATEWAY_TAKEN");
        assert!(!r["message"].as_str().unwrap_or_default().contains("GW-B-1"), "{backend:?}: {r}");
    }
    Ok(())
}

/// Remote sites and this machine's 127.0.0.1 (the demo's gateway); not the rest of loopback.
fn narrow(config: &mut Config) {
    config.modbus_allow_networks = AllowedNetworks::parse("10.20.0.0/16,127.0.0.1").unwrap_or_default();
}

#[tokio::test]
async fn gateways_outside_the_allowed_networks_are_refused_and_never_contacted() -> anyhow::Result<()> {
    for backend in backends() {
        let t = Tenants::start(&backend, Options { configure: Some(narrow), ..Options::default() }).await?;
        let outside = refusal(&t.a, CREATE, gateway(&t.project_a, "GW-N-1", "192.168.5.5", 502)).await?;
        assert_refused(&outside, "host", "NETWORK_NOT_ALLOWED");
        // A name that does not resolve, a mapped address, the unspecified address (which
        // reaches this machine) and the cloud metadata address read exactly the same: the
        // answer does not tell which internal names exist.
        for host in ["gateway.invalid", "::ffff:192.168.5.5", "0.0.0.0", "169.254.169.254", "127.0.0.2", "::1"] {
            let r = refusal(&t.a, CREATE, gateway(&t.project_a, "GW-N-1", host, 502)).await?;
            assert_eq!(r, outside, "{backend:?}: {host}");
        }
        created(&t.a, gateway(&t.project_a, "GW-N-2", "10.20.1.1", 502)).await?;

        // The poller checks again on every connection: a gateway whose address now lies
        // outside the networks (as a rebound DNS name would) is never contacted.
        let (sim, addr) = modbus_server::start("127.0.0.2:0".parse()?).await?;
        sim.add_unit(1);
        let id = created(&t.a, gateway(&t.project_a, "GW-R-1", "10.20.1.1", addr.port())).await?;
        t.a.ok("mutation($d: ID!) { createDetector(input: {deviceId: $d, address: 1}) { id } }", json!({"d": id}))
            .await?;
        device::Entity::update_many()
            .col_expr(device::Column::Host, Expr::value("127.0.0.2"))
            .filter(device::Column::Id.eq(uuid::Uuid::parse_str(&id)?))
            .exec(t.server.services.store().db())
            .await?;
        let _poller = start_modbus(&t.server.services);
        let remark = offline_remark(&t.a, &id).await?;
        assert_eq!(remark, format!("communication lost: 3 polls in a row failed ({NO_ANSWER})"), "{backend:?}");
        assert_eq!((sim.connections(), sim.requests()), (0, 0), "{backend:?}: the gateway was contacted");
        let refused = polls(&t.server, "not_allowed").await?;
        assert!(refused >= 1.0, "{backend:?}: {refused}");
    }
    Ok(())
}

/// `sparkwatch_modbus_polls_total` of one outcome.
async fn polls(server: &TestServer, outcome: &str) -> anyhow::Result<f64> {
    metric(server, &format!("sparkwatch_modbus_polls_total{{outcome=\"{outcome}\"}}")).await
}

/// The remarks of the device's first OFFLINE event, waiting for it over GraphQL.
async fn offline_remark(gql: &Gql, device: &str) -> anyhow::Result<String> {
    let query = "query($d: ID!) { events(filter: {deviceId: $d, kinds: [OFFLINE]}) { edges { node { remarks } } } }";
    eventually(&format!("an OFFLINE event of {device}"), || async {
        let data = gql.ok(query, json!({"d": device})).await?;
        Ok(data["events"]["edges"][0]["node"]["remarks"].as_str().map(str::to_owned))
    })
    .await
}

#[tokio::test]
async fn a_closed_port_a_silent_gateway_and_a_stranger_read_the_same() -> anyhow::Result<()> {
    for backend in backends() {
        let t = Tenants::start(&backend, Options::default()).await?;
        // Closed: bound, then released, so nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Silent: a Modbus gateway that accepts and never answers (a blackhole past connect).
        let (mute, mute_port) = sim().await?;
        mute.set_mute(true);
        // A stranger: a service that is not Modbus answers with text and hangs up.
        let stranger = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let stranger_port = stranger.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = stranger.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\nHTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let mut devices = Vec::new();
        for (serial, port) in [("GW-C-1", closed), ("GW-C-2", mute_port), ("GW-C-3", stranger_port)] {
            let id = created(&t.a, gateway(&t.project_a, serial, "127.0.0.1", port)).await?;
            t.a.ok("mutation($d: ID!) { createDetector(input: {deviceId: $d, address: 1}) { id } }", json!({"d": id}))
                .await?;
            devices.push(id);
        }
        let _poller = start_modbus(&t.server.services);
        let mut remarks = Vec::new();
        for d in &devices {
            remarks.push(offline_remark(&t.a, d).await?);
        }
        assert!(remarks.iter().all(|r| r == &remarks[0]), "{backend:?}: {remarks:?}");
        assert!(remarks[0].contains(NO_ANSWER), "{backend:?}: {remarks:?}");
        for detail in ["refused", "timed out", "os error", "closed", "unexpected", "127.0.0.1"] {
            assert!(!remarks[0].contains(detail), "{backend:?}: {detail} in {remarks:?}");
        }
        // The operator still sees the difference.
        for outcome in ["timeout", "io_error"] {
            assert!(polls(&t.server, outcome).await? >= 1.0, "{backend:?}: no {outcome} polls");
        }
    }
    Ok(())
}

fn claiming(config: &mut Config) {
    config.serial_claiming = true;
}

/// A platform operator signed in over HTTP.
async fn operator(server: &TestServer) -> anyhow::Result<Gql> {
    let password = "operator-password-1";
    let user = NewUser {
        email: Some("ops@platform.local".into()),
        phone: None,
        display_name: None,
        password: password.into(),
        locale: None,
        role: "platform_admin".into(),
        project_ids: vec![],
    };
    server.services.create_user(&Principal::platform_system("test"), user).await?;
    server.login("ops@platform.local", password).await
}

#[tokio::test]
async fn serial_claiming_refuses_alike_and_leaks_no_serial() -> anyhow::Result<()> {
    for backend in backends() {
        let t = Tenants::start(&backend, Options { configure: Some(claiming), ..Options::default() }).await?;
        let ops = operator(&t.server).await?;
        let claims = json!({"c": [{"serial": "SW-CLAIM-1", "claimCode": "ABCD-2345-EFGH"},
                                  {"serial": "SW-CLAIM-2", "claimCode": "ZXCV-9876-QWER"}]});
        assert_eq!(t.a.code(LOAD, claims.clone()).await?, "FORBIDDEN", "{backend:?}: tenants cannot load claims");
        let bad = refusal(&ops, LOAD, json!({"c": [{"serial": "SW-CLAIM-3", "claimCode": "abc"}]})).await?;
        assert_eq!(
            (&bad["extensions"]["code"], &bad["extensions"]["field"]),
            (&json!("VALIDATION"), &json!("claims[0].code"))
        );
        assert_eq!(ops.ok(LOAD, claims).await?["loadSerialClaims"], 2, "{backend:?}");
        // Only digests are stored.
        let pool = sparkwatch_entity::serial_claim::Entity::find().all(t.server.services.store().db()).await?;
        assert_eq!(pool.len(), 2);
        assert!(pool.iter().all(|c| c.digest.starts_with("c1:") && !c.digest.to_uppercase().contains("ABCD")));

        // No code, a wrong code, a serial not in the pool: one answer.
        let none = refusal(&t.a, CREATE, mqtt(&t.project_a, "SW-CLAIM-1", None)).await?;
        assert_refused(&none, "claimCode", "CLAIM_INVALID");
        for (serial, code) in [("SW-CLAIM-1", "ABCD-2345-EFGX"), ("SW-NOPE-1", "ABCD-2345-EFGH")] {
            assert_eq!(refusal(&t.a, CREATE, mqtt(&t.project_a, serial, Some(code))).await?, none, "{backend:?}");
        }
        let a_device = created(&t.a, mqtt(&t.project_a, "SW-CLAIM-1", Some(" abcd2345efgh "))).await?;
        assert_eq!(t.a.code(CREATE, mqtt(&t.project_a, "SW-CLAIM-1", Some("ABCD2345EFGH"))).await?, "CONFLICT");

        // B: A's claimed serial with the right code, with a wrong one, and A's demo serial
        // (never in the pool) all read exactly like a wrong code.
        for (serial, code) in
            [("SW-CLAIM-1", "ABCD-2345-EFGH"), ("SW-CLAIM-1", "WRONG-CODE-1"), ("SW-DEMO-0001", "ANY-CODE-12")]
        {
            let r = refusal(&t.b, CREATE, mqtt(&t.project_b, serial, Some(code))).await?;
            assert_eq!(r, none, "{backend:?}: {serial}");
            assert!(!r["message"].as_str().unwrap_or_default().contains(serial));
        }
        // Changing a device's serial is a registration too.
        let b_devices = t.b.ok("{ devices { edges { node { id } } } }", json!({})).await?;
        let b_device = b_devices["devices"]["edges"][0]["node"]["id"].clone();
        let rename = json!({"i": {"id": b_device, "serial": "SW-CLAIM-2"}});
        assert_eq!(refusal(&t.b, UPDATE, rename).await?, none, "{backend:?}");

        // Freed by A, the claim serves whoever holds the label.
        t.a.ok(DELETE, json!({"id": a_device})).await?;
        created(&t.b, mqtt(&t.project_b, "SW-CLAIM-1", Some("ABCD-2345-EFGH"))).await?;

        // B has failed 4 times; 6 more wrong codes, then guessing stops.
        for i in 0..6 {
            let r = refusal(&t.b, CREATE, mqtt(&t.project_b, "SW-CLAIM-2", Some(&format!("GUESS-{i:06}")))).await?;
            assert_eq!(r, none, "{backend:?}: guess {i}");
        }
        let limited = t.b.code(CREATE, mqtt(&t.project_b, "SW-CLAIM-2", Some("ZXCV-9876-QWER"))).await?;
        assert_eq!(limited, "RATE_LIMITED", "{backend:?}");
        // A is not limited by B's guesses.
        created(&t.a, mqtt(&t.project_a, "SW-CLAIM-2", Some("zxcv9876qwer"))).await?;
    }
    Ok(())
}

#[tokio::test]
async fn without_claiming_another_tenants_serial_is_refused_without_naming_it() -> anyhow::Result<()> {
    for backend in backends() {
        let t = Tenants::start(&backend, Options::default()).await?;
        let r = refusal(&t.b, CREATE, mqtt(&t.project_b, "SW-DEMO-0001", None)).await?;
        assert_refused(&r, "serial", "SERIAL_UNAVAILABLE");
        assert!(!r["message"].as_str().unwrap_or_default().contains("SW-DEMO-0001"), "{backend:?}: {r}");
        let b_devices = t.b.ok("{ devices { edges { node { id } } } }", json!({})).await?;
        let b_device = b_devices["devices"]["edges"][0]["node"]["id"].clone();
        let rename = json!({"i": {"id": b_device, "serial": "SW-DEMO-0001"}});
        assert_eq!(refusal(&t.b, UPDATE, rename).await?, r, "{backend:?}");
        // The tenant's own duplicate is a plain CONFLICT.
        assert_eq!(t.a.code(CREATE, mqtt(&t.project_a, "SW-DEMO-0001", None)).await?, "CONFLICT");
    }
    Ok(())
}

/// The `sparkwatch` binary next to this test's executable, when built.
fn server_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let binary = exe.parent()?.parent()?.join("sparkwatch");
    binary.exists().then_some(binary)
}

#[tokio::test]
async fn claims_load_from_the_command_line() -> anyhow::Result<()> {
    let Some(binary) = server_binary() else {
        eprintln!("skipped: target/debug/sparkwatch is not built (cargo build -p sparkwatch-api)");
        return Ok(());
    };
    for backend in backends() {
        let t = Tenants::start(&backend, Options { configure: Some(claiming), ..Options::default() }).await?;
        let dir = tempfile::tempdir()?;
        let run = |file: &std::path::Path| {
            std::process::Command::new(&binary)
                .args(["claims", "load"])
                .arg(file)
                .arg("--data-dir")
                .arg(&t.server.config.data_dir)
                .args(["--database-url", t.server.config.database_url.expose()])
                .env("SPARKWATCH_JWT_SECRET", "k".repeat(40))
                .output()
        };
        // A bad line loads nothing.
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "serial,claim_code\nSW-CLI-1,QWER-TYUI-1234\nSW-CLI-2,x\n")?;
        let out = run(&bad)?;
        assert!(!out.status.success(), "{backend:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("claims[1].code"), "{out:?}");
        let r = refusal(&t.a, CREATE, mqtt(&t.project_a, "SW-CLI-1", Some("QWER-TYUI-1234"))).await?;
        assert_refused(&r, "claimCode", "CLAIM_INVALID");

        let good = dir.path().join("claims.csv");
        std::fs::write(&good, "serial,claim_code\nSW-CLI-1,QWER-TYUI-1234\nSW-CLI-2,ASDF-GHJK-5678\n")?;
        let out = run(&good)?;
        assert!(out.status.success(), "{backend:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 2 serial claims"), "{out:?}");
        created(&t.a, mqtt(&t.project_a, "SW-CLI-1", Some("QWER-TYUI-1234"))).await?;
        created(&t.b, mqtt(&t.project_b, "SW-CLI-2", Some("asdf ghjk 5678"))).await?;
    }
    Ok(())
}
