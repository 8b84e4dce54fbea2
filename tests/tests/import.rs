//! `sparkwatch import devices`: CSV onboarding is all or nothing and reports every bad row.
//!
//! Runs against SQLite in a temporary directory, and also against a fresh PostgreSQL database
//! when `SPARKWATCH_TEST_DATABASE_URL` is set (e.g. `postgres://postgres@127.0.0.1/test`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sea_orm::ConnectionTrait;
use sparkwatch_api::auth::Principal;
use sparkwatch_api::config::Settings;
use sparkwatch_api::import::import_devices_file;
use sparkwatch_api::service::import::{ImportError, parse_csv};
use sparkwatch_api::service::{Services, SystemClock, page_request};
use sparkwatch_api::store::oplog;
use sparkwatch_api::store::sites::{DetectorFilter, DeviceFilter, ProjectFilter};

/// The documented example: 4 devices with 8 detectors in two projects.
const EXAMPLE: &str = include_str!("../../docs/import-example.csv");
const EXAMPLE_DEVICES: u64 = 4;
const EXAMPLE_DETECTORS: u64 = 8;

const HEADER: &str = "project,serial,device_name,model,device_type,transport,host,port,interval_s,device_region,device_position,\
                      address,detector_name,detector_region,detector_position,leak_channels,temp_channels,has_voltage,has_current";

struct Env {
    services: Services,
    who: Principal,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(database_url: Option<String>) -> anyhow::Result<Env> {
        let dir = tempfile::tempdir()?;
        let config = Settings {
            data_dir: Some(dir.path().to_path_buf()),
            jwt_secret: Some("x".repeat(40)),
            database_url,
            ..Default::default()
        }
        .resolve()?;
        let services = sparkwatch_api::services(&config, Arc::new(SystemClock), Default::default()).await?;
        let tenant = services.create_tenant(&Principal::platform_system("t"), "T").await?;
        let who = Principal::system(tenant.id, "t");
        for name in ["Riverside Mall", "No. 3 Primary School"] {
            // This crate does not depend on `sparkwatch-domain`, so `ProjectDraft` cannot be
            // named here; an (empty) project page yields its default through inference.
            let none = services.projects(&who, &ProjectFilter::default(), page_request(Some(0), None)?).await?;
            let mut draft = none.items.into_iter().next().map(|p| p.draft).unwrap_or_default();
            draft.name = name.to_owned();
            services.create_project(&who, draft).await?;
        }
        Ok(Env { services, who, dir })
    }

    fn write(&self, name: &str, content: &str) -> anyhow::Result<std::path::PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content)?;
        Ok(path)
    }

    async fn import(&self, path: &Path) -> anyhow::Result<()> {
        import_devices_file(&self.services, &self.who, path, None).await
    }

    async fn counts(&self) -> anyhow::Result<(u64, u64)> {
        let devices =
            self.services.devices(&self.who, &DeviceFilter::default(), page_request(Some(200), None)?).await?;
        let detectors =
            self.services.detectors(&self.who, &DetectorFilter::default(), page_request(Some(200), None)?).await?;
        Ok((devices.total, detectors.total))
    }

    async fn logged(&self, action: &str) -> anyhow::Result<usize> {
        let tenant = self.who.tenant()?;
        let page = oplog::list(self.services.store().db(), tenant, None, page_request(Some(200), None)?).await?;
        Ok(page.items.iter().filter(|o| o.action == action).count())
    }
}

/// Every scenario, on one database.
async fn scenarios(env: &Env) -> anyhow::Result<()> {
    good_file_imports_everything(env).await.context("good file")?;
    bad_rows_import_nothing(env).await.context("bad rows")?;
    reimport_fails_on_taken_serials(env).await.context("re-import")?;
    header_problems_are_reported(env).await.context("header")?;
    long_error_lists_are_capped(env).await.context("many errors")?;
    credentials_are_issued_into_a_private_file(env).await.context("credentials")?;
    Ok(())
}

/// `--credentials-out` and `sparkwatch devices credentials`: secrets for the MQTT devices
/// only, in a new owner-only file, each verifying at the broker's check.
async fn credentials_are_issued_into_a_private_file(env: &Env) -> anyhow::Result<()> {
    let csv = format!(
        "{HEADER}\nNew site,CR-0001,Panel 1,,,MQTT,,,,,,1,,,,,,,\nNew site,CR-0002,Panel 2,,,mqtt,,,,,,1,,,,,,,\n\
         New site,CR-GW-1,Gateway,,,MODBUS_TCP,10.0.0.9,502,,,,1,,,,,,,\n"
    );
    let none = env.services.projects(&env.who, &ProjectFilter::default(), page_request(Some(0), None)?).await?;
    let mut draft = none.items.into_iter().next().map(|p| p.draft).unwrap_or_default();
    draft.name = "New site".to_owned();
    env.services.create_project(&env.who, draft).await?;
    let file = env.write("with-credentials.csv", &csv)?;
    let out = env.dir.path().join("credentials.csv");
    import_devices_file(&env.services, &env.who, &file, Some(&out)).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out)?.permissions().mode() & 0o777, 0o600);
    }
    let rows: Vec<Vec<String>> = csv::Reader::from_path(&out)?
        .records()
        .map(|r| r.map(|r| r.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()?;
    assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["CR-0001", "CR-0002"]);
    for r in &rows {
        assert!(env.services.verify_device(&r[0], &r[2]).await?.is_ok(), "{} does not verify", r[0]);
    }
    // An existing file is never overwritten (it may hold the only copy of secrets).
    let again = env.write("again.csv", &format!("{HEADER}\nNew site,CR-0003,Panel 3,,,MQTT,,,,,,1,,,,,,,\n"))?;
    let err = import_devices_file(&env.services, &env.who, &again, Some(&out)).await.err().map(|e| format!("{e:#}"));
    assert!(err.as_deref().is_some_and(|e| e.contains("exists already")), "{err:?}");
    // The upgrade path: every MQTT device without credentials (the example's three).
    let missing = env.services.issue_missing_credentials(&env.who).await?;
    let mut serials: Vec<&str> = missing.iter().map(|c| c.username.as_str()).collect();
    serials.sort_unstable();
    assert_eq!(serials, ["MS3-4G-0101", "MS3-4G-0102", "RM-4G-0001"]);
    assert!(env.services.issue_missing_credentials(&env.who).await?.is_empty());
    // Modbus gateways and unknown serials are refused by name.
    for serial in ["CR-GW-1", "NOPE-1"] {
        let err = env.services.issue_credentials_for_serials(&env.who, &[serial.to_owned()]).await.err();
        assert!(err.map(|e| e.to_string()).is_some_and(|e| e.contains(serial)), "{serial}");
    }
    Ok(())
}

async fn good_file_imports_everything(env: &Env) -> anyhow::Result<()> {
    let path = env.write("good.csv", EXAMPLE)?;
    env.import(&path).await?;
    assert_eq!(env.counts().await?, (EXAMPLE_DEVICES, EXAMPLE_DETECTORS));

    let devices = env.services.devices(&env.who, &DeviceFilter::default(), page_request(Some(200), None)?).await?;
    let gateway = devices.items.iter().find(|d| d.draft.serial == "RM-GW-0002").context("gateway imported")?;
    assert_eq!(gateway.draft.host.as_deref(), Some("192.168.10.20"));
    assert_eq!(gateway.draft.port, Some(502));
    assert_eq!(gateway.draft.interval_s, 5);
    let detectors =
        env.services.detectors(&env.who, &DetectorFilter::default(), page_request(Some(200), None)?).await?;
    let on_gateway: Vec<_> = detectors.items.iter().filter(|d| d.draft.device_id == gateway.id).collect();
    assert_eq!(on_gateway.len(), 3);
    assert!(on_gateway.iter().all(|d| d.project_id == gateway.draft.project_id));
    let retail = on_gateway.iter().find(|d| d.draft.address == 3).context("address 3")?;
    assert_eq!(
        (retail.draft.leak_channels, retail.draft.temp_channels, retail.draft.has_voltage, retail.draft.has_current),
        (1, 0, false, false)
    );
    let lab = detectors.items.iter().find(|d| d.draft.name.as_deref() == Some("Computer lab")).context("lab")?;
    assert_eq!(lab.draft.position.as_deref(), Some("3F distribution box, room 305"));

    assert_eq!(env.logged("device.create").await?, EXAMPLE_DEVICES as usize);
    assert_eq!(env.logged("detector.create").await?, EXAMPLE_DETECTORS as usize);
    assert_eq!(env.logged("import.devices").await?, 1);
    Ok(())
}

async fn bad_rows_import_nothing(env: &Env) -> anyhow::Result<()> {
    let before = env.counts().await?;
    let rows = [
        // line 2: good
        "Riverside Mall,NEW-0001,Roof plant,,,MQTT,,,,,,1,,,,,,,",
        // line 3: serial with a space and a `!`
        "Riverside Mall,BAD SERIAL!,Roof plant,,,MQTT,,,,,,1,,,,,,,",
        // line 4: bus address out of range
        "Riverside Mall,NEW-0003,Car park,,,MQTT,,,,,,300,,,,,,,",
        // line 5: no such project
        "Atlantis,NEW-0004,Car park,,,MQTT,,,,,,1,,,,,,,",
        // line 6: same serial as line 2 but another device name
        "Riverside Mall,NEW-0001,Other name,,,MQTT,,,,,,2,,,,,,,",
        // line 7: same serial and address as line 2
        "Riverside Mall,NEW-0001,Roof plant,,,MQTT,,,,,,1,,,,,,,",
        // line 8: interval 0 (the domain says `intervalS`)
        "Riverside Mall,NEW-0005,Lift room,,,MQTT,,,0,,,1,,,,,,,",
        // line 9: not a boolean
        "Riverside Mall,NEW-0006,Lift room,,,MQTT,,,,,,1,,,,,,maybe,",
        // line 10: a cell beyond the last column
        "Riverside Mall,NEW-0007,Lift room,,,MQTT,,,,,,1,,,,,,,,stray",
    ];
    let content = format!("{HEADER}\n{}\n", rows.join("\n"));
    let path = env.write("bad.csv", &content)?;
    let message = format!("{:#}", env.import(&path).await.expect_err("the import must fail"));
    for expected in [
        "row 3, column serial:",
        "row 4, column address:",
        "row 5, column project: there is no project named `Atlantis`",
        "row 6, column device_name:",
        "row 7, column address: duplicates row 2",
        "row 8, column interval_s:",
        "row 9, column has_voltage:",
        "row 10: has 20 cells but the header has only 19 columns",
    ] {
        assert!(message.contains(expected), "`{expected}` missing from:\n{message}");
    }
    assert!(!message.lines().any(|l| l.trim_start().starts_with("row 2,")), "the good row is not an error:\n{message}");
    assert!(message.contains("nothing was imported"), "{message}");
    assert_eq!(env.counts().await?, before, "nothing is half-imported");

    // The structured error lists exactly these eight problems.
    match env.services.import_devices(&env.who, "bad.csv", &parse_csv(content.as_bytes())?, &()).await {
        Err(ImportError::Rows(errors)) => {
            let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
            assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10], "{errors:?}");
        }
        other => panic!("expected row errors, got {other:?}"),
    }
    assert_eq!(env.counts().await?, before);
    Ok(())
}

async fn reimport_fails_on_taken_serials(env: &Env) -> anyhow::Result<()> {
    let before = env.counts().await?;
    let path = env.write("again.csv", EXAMPLE)?;
    let message = format!("{:#}", env.import(&path).await.expect_err("serials are taken"));
    // The first row of each of the four devices.
    for line in [2, 4, 7, 9] {
        let expected = format!("row {line}, column serial: a device with serial");
        assert!(message.contains(&expected), "`{expected}` missing from:\n{message}");
    }
    assert!(message.contains("already registered"), "{message}");
    assert_eq!(env.counts().await?, before);
    assert_eq!(env.logged("import.devices").await?, 1);
    Ok(())
}

async fn header_problems_are_reported(env: &Env) -> anyhow::Result<()> {
    let path = env.write("header.csv", "Project,Serial,Device Name,Colour,address\nRiverside Mall,H-1,x,red,1\n")?;
    let message = format!("{:#}", env.import(&path).await.expect_err("bad header"));
    assert!(message.contains("row 1: unknown column `Colour`"), "{message}");
    assert!(message.contains("row 1, column transport: is required"), "{message}");
    Ok(())
}

async fn long_error_lists_are_capped(env: &Env) -> anyhow::Result<()> {
    let before = env.counts().await?;
    let rows: Vec<String> =
        (1..=60).map(|i| format!("Riverside Mall,MANY-{i},Board,,,MQTT,,,,,,{},,,,,,,", 247 + i)).collect();
    let path = env.write("many.csv", &format!("{HEADER}\n{}\n", rows.join("\n")))?;
    let message = format!("{:#}", env.import(&path).await.expect_err("60 bad addresses"));
    assert!(message.contains("60 problems"), "{message}");
    assert!(message.contains("row 51, column address"), "{message}");
    assert!(!message.contains("row 52, column address"), "{message}");
    assert!(message.contains("… and 10 more"), "{message}");
    assert_eq!(env.counts().await?, before);
    Ok(())
}

#[tokio::test]
async fn import_on_sqlite() -> anyhow::Result<()> {
    let env = Env::new(None).await?;
    scenarios(&env).await
}

#[tokio::test]
async fn import_on_postgres() -> anyhow::Result<()> {
    let Ok(admin_url) = std::env::var("SPARKWATCH_TEST_DATABASE_URL") else {
        eprintln!("skipped: SPARKWATCH_TEST_DATABASE_URL is not set (the PostgreSQL import run)");
        return Ok(());
    };
    let name = format!("sw_import_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(&admin_url).await.context("connecting to SPARKWATCH_TEST_DATABASE_URL")?;
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;

    let (base, query) = admin_url.split_once('?').map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').context("the URL has no database name")?;
    let url = match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    };
    let result = async {
        let env = Env::new(Some(url)).await?;
        let outcome = scenarios(&env).await;
        env.services.store().db().clone().close().await?;
        outcome
    }
    .await;
    // Best effort: the test's own connections are closed; FORCE ends any stragglers.
    let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    result
}
