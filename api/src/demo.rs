//! Demo data for `sparkwatch serve --demo`: two tenants, users of every role and two sites,
//! seeded once (a second start finds the "Demo" tenant and leaves everything as it is),
//! with field work to look at ([`seed_field_work`]).

use anyhow::Context;
use sparkwatch_domain::patrol::PatrolSchedule;
use sparkwatch_domain::site::{DetectorInput, DeviceInput, ProjectDraft};

use crate::auth::Principal;
use crate::service::Services;
use crate::service::patrol::{CheckpointDraft, PlanDraft};
use crate::service::reports::ReportDraft;
use crate::service::users::NewUser;
use crate::service::workorders::NewOrder;
use crate::store::PageRequest;
use crate::store::sites::ProjectFilter;

/// The demo's mall (the electrician's project).
const MALL: &str = "Riverside Mall";

/// Password of every demo account.
pub const DEMO_PASSWORD: &str = "sparkwatch-demo";

fn project(name: &str, address: &str, contact: &str, lat: f64, lon: f64, area: f64) -> ProjectDraft {
    ProjectDraft {
        name: name.into(),
        address: Some(address.into()),
        contact_name: Some(contact.into()),
        contact_phone: Some("13912345678".into()),
        building_area_m2: Some(area),
        latitude: Some(lat),
        longitude: Some(lon),
        region: Some("Jiangyin".into()),
    }
}

fn device(serial: &str, name: &str, transport: &str, host: Option<&str>, position: &str) -> DeviceInput {
    DeviceInput {
        serial: serial.into(),
        name: name.into(),
        model: Some(if host.is_some() { "ARCM300-Z gateway" } else { "ARCM300T-Z-4G" }.into()),
        device_type: Some(if host.is_some() { "Modbus gateway" } else { "4G detector module" }.into()),
        transport: transport.into(),
        host: host.map(Into::into),
        port: host.map(|_| 5020),
        interval_s: Some(10),
        region: Some("Building A".into()),
        position: Some(position.into()),
    }
}

fn user(email: &str, name: &str, role: &str, projects: Vec<sparkwatch_domain::ids::ProjectId>) -> NewUser {
    NewUser {
        email: Some(email.into()),
        display_name: Some(name.into()),
        password: DEMO_PASSWORD.into(),
        locale: Some("en".into()),
        role: role.into(),
        project_ids: projects,
        ..Default::default()
    }
}

/// Seeds the demo tenants unless they exist. Returns whether anything was created.
pub async fn seed(s: &Services) -> anyhow::Result<bool> {
    if s.tenant_by_name("Demo").await.is_ok() {
        return Ok(false);
    }
    let platform = Principal::platform_system("demo seed");
    let demo = s.create_tenant(&platform, "Demo").await?;
    let who = Principal::system(demo.id, "demo seed");
    let mall =
        s.create_project(&who, project(MALL, "5 Dongsheng Rd, Jiangyin", "Zhang San", 31.84, 120.29, 18500.0)).await?;
    let school = s
        .create_project(&who, project("No. 3 Primary School", "18 Renmin Rd, Jiangyin", "Li Si", 31.90, 120.26, 9200.0))
        .await?;

    let sites = [
        (mall.id, device("SW-DEMO-0001", "Mall main distribution", "MQTT", None, "B1 main switch room"), 3),
        (mall.id, device("SW-DEMO-0002", "Mall food court", "MQTT", None, "3F food court panel"), 2),
        (
            mall.id,
            device("GW-DEMO-0001", "Mall Modbus gateway", "MODBUS_TCP", Some("127.0.0.1"), "1F electrical room"),
            4,
        ),
        (school.id, device("SW-DEMO-0101", "Teaching building", "MQTT", None, "1F distribution room"), 2),
        (school.id, device("SW-DEMO-0102", "Canteen", "MQTT", None, "Kitchen panel"), 1),
    ];
    for (project_id, input, detectors) in sites {
        let position = input.position.clone().unwrap_or_default();
        let d = s.create_device(&who, project_id, input).await?;
        for addr in 1..=detectors {
            let det = DetectorInput {
                address: addr,
                name: Some(format!("Circuit {addr}")),
                region: Some("Building A".into()),
                position: Some(format!("{position}, feeder {addr}")),
                ..Default::default()
            };
            s.create_detector(&who, d.id, det).await?;
        }
    }
    s.create_user(&who, user("admin@demo.local", "Demo admin", "tenant_admin", vec![])).await?;
    s.create_user(&who, user("manager@demo.local", "Wang Wu (safety manager)", "manager", vec![mall.id, school.id]))
        .await?;
    s.create_user(&who, user("electrician@demo.local", "Zhao Liu (electrician)", "electrician", vec![mall.id])).await?;

    let demo_b = s.create_tenant(&platform, "Demo B").await?;
    let who_b = Principal::system(demo_b.id, "demo seed");
    let depot = s
        .create_project(&who_b, project("Harbour Depot", "2 Port Ave, Jiangyin", "Chen Qi", 31.95, 120.30, 30000.0))
        .await?;
    let d = s
        .create_device(&who_b, depot.id, device("SW-DEMOB-0001", "Depot main board", "MQTT", None, "Gatehouse"))
        .await?;
    s.create_detector(
        &who_b,
        d.id,
        DetectorInput { address: 1, name: Some("Main feeder".into()), ..Default::default() },
    )
    .await?;
    s.create_user(&who_b, user("admin@demo-b.local", "Demo B admin", "tenant_admin", vec![])).await?;
    Ok(true)
}

/// Seeds the field work a new user of the demo sees at once: a hazard found on a
/// walk-round, an open work order for it that any electrician of the mall can take, three
/// checkpoints with their checklists and a daily patrol plan over them for the electrician
/// (today's task is due at once).
/// `serve --demo` calls it right after [`seed`] created the tenants; the test suites, which
/// count hazards and orders from zero, start from [`seed`] alone.
pub async fn seed_field_work(s: &Services) -> anyhow::Result<()> {
    let tenant = s.tenant_by_name("Demo").await?;
    let who = Principal::system(tenant.id, "demo seed");
    let filter = ProjectFilter { search: Some(MALL.into()), ..Default::default() };
    let projects = s.projects(&who, &filter, PageRequest { first: 1, after: None }).await?;
    let mall = projects.items.first().map(|p| p.id).context("the demo mall is missing")?;
    let found = ReportDraft {
        project: Some(mall),
        description: "Scorched insulation on the B1 cable tray next to the main switch room".into(),
        ..Default::default()
    };
    let hazard = s.report_hazard(&who, &found, None).await?;
    let order = NewOrder {
        project: Some(mall),
        title: Some("Replace the scorched cable section on the B1 tray".into()),
        description: Some("Isolate the feeder, replace the damaged section, photograph the repair.".into()),
        hazard_ids: vec![hazard.id],
        assignee: None,
        due_at: Some(s.clock().now() + chrono::Duration::days(2)),
    };
    s.create_work_order(&who, order, None).await?;

    let electricians = s.users(&who, Some("electrician@demo.local"), PageRequest { first: 1, after: None }).await?;
    let electrician = electricians.items.first().map(|u| u.id).context("the demo electrician is missing")?;
    let rounds = [
        ("B1 main switch room, cabinet 1", "B1, switch room", "Cabinet closed and locked"),
        ("3F food court panel", "3F, behind the kitchen", "No grease or water near the panel"),
        ("Roof air-handling units", "Roof, east side", "Cable glands sealed"),
    ];
    let mut checkpoints = Vec::new();
    for (name, position, item) in rounds {
        let draft = CheckpointDraft {
            project: mall,
            name: name.into(),
            position: Some(position.into()),
            checklist: vec![item.into(), "No smell of burning".into(), "Indicator lamps normal".into()],
        };
        checkpoints.push(s.create_checkpoint(&who, draft).await?.id);
    }
    let plan = PlanDraft {
        project: mall,
        name: "Daily round of the mall's switchgear".into(),
        checkpoints,
        schedule: PatrolSchedule::Daily,
        assignees: vec![electrician],
        starts_on: None,
    };
    s.create_patrol_plan(&who, plan).await?;
    Ok(())
}

/// Runs the demo's simulated devices in this process until `stop` turns true. With a broker
/// (`broker`: where devices connect) the MQTT devices are real MQTT clients with freshly
/// issued credentials (DEVICE-PROTOCOL.md §3), so the demo shows device identity, QoS 1
/// delivery and remote commands end to end; without one they feed the ingestion queue
/// directly. The Modbus gateway `GW-DEMO-0001` is a simulated gateway on 127.0.0.1:5020
/// that the poller reads.
pub async fn simulate(
    services: Services,
    queue: crate::ingest::IngestQueue,
    prefix: String,
    broker: Option<(String, u16)>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use crate::simulate::scenarios::{Scenario, SimDevice};
    let mut devices = vec![
        SimDevice::new("SW-DEMO-0001", 3, Scenario::LeakCreep, 1),
        SimDevice::new("SW-DEMO-0002", 2, Scenario::Overheat, 2),
        SimDevice::new("SW-DEMO-0101", 2, Scenario::Flapping, 3),
        SimDevice::new("SW-DEMO-0102", 1, Scenario::SensorOpen, 4),
        SimDevice::new("SW-DEMOB-0001", 1, Scenario::Normal, 5),
    ];
    let sink = match broker {
        Some((host, port)) => match issue_demo_credentials(&services, &mut devices).await {
            Ok(()) => crate::simulate::run::Sink::Mqtt(crate::ingest::mqtt::MqttSettings {
                host,
                port,
                client_id: String::new(),
                prefix: prefix.clone(),
                shared_group: None,
                credentials: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not issue the demo devices' MQTT credentials; they feed ingestion directly");
                crate::simulate::run::Sink::Queue(queue.clone())
            }
        },
        None => crate::simulate::run::Sink::Queue(queue.clone()),
    };
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 5020).into();
    match crate::simulate::modbus_server::start(addr).await {
        Ok((sim, _)) => {
            let mut stop = stop.clone();
            tokio::spawn(async move {
                for unit in 1..=4 {
                    sim.add_unit(unit);
                }
                let mut t: u64 = 0;
                loop {
                    for unit in 1..=4u8 {
                        // Unit 2's leakage creeps past 300 mA every few minutes; the rest idle.
                        let leak = if unit == 2 { 120.0 + (t % 60) as f64 * 4.0 } else { 35.0 + f64::from(unit) };
                        let temp = 33.0 + f64::from(unit) + (t % 7) as f64 * 0.3;
                        sim.set_reading(
                            unit,
                            leak,
                            [Some(temp), Some(temp - 1.0), None, None],
                            [220.4, 221.1, 219.6],
                            [8.2, 7.9, 8.5],
                        );
                    }
                    t += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {},
                        _ = stop.changed() => break,
                    }
                }
                sim.shutdown();
            });
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "the demo's simulated Modbus gateway could not start; GW-DEMO-0001 will show a communication fault")
        }
    }
    crate::simulate::run::run(devices, prefix, std::time::Duration::from_secs(5), sink, stop).await;
}

/// Issues (rotates) the MQTT credentials of the demo's simulated devices, as an installer
/// would with `issueDeviceCredentials`, and hands each device its secret.
async fn issue_demo_credentials(
    services: &Services,
    devices: &mut [crate::simulate::scenarios::SimDevice],
) -> anyhow::Result<()> {
    for sim in devices {
        let (device, tenant) = services.device_by_serial_for_system(&sim.serial).await?;
        let who = Principal::system(tenant, "demo");
        sim.secret = Some(services.issue_for(&who, &device).await?.password);
    }
    Ok(())
}
