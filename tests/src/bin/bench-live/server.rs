//! The server under test: its database, the `sparkwatch serve` child process, its CLI, and the
//! site seeded over GraphQL.

use super::*;

/// Where the server keeps its data.
pub(crate) enum Db {
    Sqlite,
    Postgres { admin: String, url: String, name: String },
}

impl Db {
    pub(crate) async fn choose() -> anyhow::Result<Db> {
        let Some(admin) = std::env::var("SPARKWATCH_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
            return Ok(Db::Sqlite);
        };
        let url = sparkwatch_tests::fresh_postgres(&admin)
            .await
            .context("PostgreSQL is not reachable; unset SPARKWATCH_TEST_DATABASE_URL to measure on SQLite")?;
        let name = url.rsplit_once('/').map(|(_, n)| n.to_owned()).unwrap_or_default();
        Ok(Db::Postgres { admin, url, name })
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres { .. } => "postgres",
        }
    }

    /// `--database-url` for the server (none: SQLite in its data dir).
    pub(crate) fn url(&self) -> Option<&str> {
        match self {
            Db::Sqlite => None,
            Db::Postgres { url, .. } => Some(url),
        }
    }

    /// Drops the fresh PostgreSQL database (best effort, after the server is gone).
    pub(crate) async fn drop_database(&self) {
        if let Db::Postgres { admin, name, .. } = self
            && let Ok(conn) = Database::connect(admin.as_str()).await
            && let Err(e) = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
        {
            eprintln!("could not drop database {name}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server under test

pub(crate) struct Server {
    pub(crate) child: KillOnDrop,
    pub(crate) base: String,
    pub(crate) log: PathBuf,
    pub(crate) http: reqwest::Client,
}

impl Server {
    /// Seeds a tenant and its administrator with the CLI, then starts `sparkwatch serve`.
    pub(crate) async fn start(
        exe: &Path,
        dir: &Path,
        database_url: Option<&str>,
        broker_port: u16,
        fcm: &FcmStandIn,
        fcm_credentials: &Path,
    ) -> anyhow::Result<Server> {
        let log = dir.join("server.log");
        let mut common = vec!["--data-dir".to_owned(), dir.join("data").display().to_string()];
        if let Some(url) = database_url {
            common.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        cli(exe, &common, &["tenant", "create", "Bench"], &log).await?;
        cli(
            exe,
            &common,
            &["user", "create", "--tenant", "Bench", "--email", ADMIN, "--role", "tenant_admin", "--locale", "en"],
            &log,
        )
        .await?;
        let port = sparkwatch_tests::bench::free_port()?;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(&common)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--mqtt-url", &format!("mqtt://127.0.0.1:{broker_port}")])
            .args(["--mqtt-client-id", &format!("bench-live-{}", std::process::id())])
            .args(["--mqtt-prefix", PREFIX])
            .args(["--fcm-credentials", &fcm_credentials.display().to_string()])
            .args(["--fcm-base-url", &fcm.base_url])
            // The subscribers sign in once; their connections must outlive the run.
            .args(["--access-token-ttl-s", "86400"])
            // Every subscriber signs in as the one bench user, from 127.0.0.1.
            .args(["--ws-max-per-user", "1000000", "--max-connections", "1000000"])
            .args(["--max-connections-per-address", "1000000"]);
        let child = child_env(&mut cmd)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build()?;
        let mut server = Server { child: KillOnDrop(child), base: format!("http://127.0.0.1:{port}"), log, http };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.0.try_wait() {
                bail!("the server exited ({status}) while starting:\n{}", server.log_tail(30));
            }
            let ready = server.http.get(format!("{}/readyz", server.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within 60 s:\n{}", server.log_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) fn stats(&self) -> ProcStats {
        ProcStats::of(self.child.id())
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails with the end of the server's log when it has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.0.try_wait() {
            bail!("the server exited ({status}):\n{}", self.log_tail(30));
        }
        Ok(())
    }

    /// A value from `/metrics` (the sum over its labels).
    pub(crate) async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum())
    }

    /// Runs a GraphQL operation over HTTP; fails on errors.
    pub(crate) async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut req =
            self.http.post(format!("{}/graphql", self.base)).json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res: Value = req.send().await?.json().await?;
        if res.get("errors").is_some_and(|e| !e.is_null()) {
            let text = res.to_string();
            bail!("GraphQL errors: {}", &text[..text.len().min(1000)]);
        }
        Ok(res["data"].clone())
    }

    /// Runs many mutation fields that select `{ id }` (`createDevice(…) { id }`), 100 per
    /// request, and returns the ids in order.
    pub(crate) async fn batch(&self, token: &str, fields: &[String]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(fields.len());
        for chunk in fields.chunks(100) {
            let body: String = chunk.iter().enumerate().map(|(i, f)| format!("a{i}: {f}\n")).collect();
            let data = self.gql(Some(token), &format!("mutation {{\n{body}}}"), json!({})).await?;
            for i in 0..chunk.len() {
                let id = data[format!("a{i}")]["id"].as_str().with_context(|| format!("no id in {data}"))?;
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    pub(crate) async fn login(&self, login: &str) -> anyhow::Result<String> {
        let data = self
            .gql(
                None,
                "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                json!({"i": {"login": login, "password": PASSWORD}}),
            )
            .await?;
        data["login"]["accessToken"].as_str().map(str::to_owned).with_context(|| format!("login of {login}: {data}"))
    }
}

/// The environment of the server and its CLI: secrets, no proxies (everything is local).
pub(crate) fn child_env(cmd: &mut Command) -> &mut Command {
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(v);
    }
    cmd.env("SPARKWATCH_JWT_SECRET", JWT_SECRET).env("SPARKWATCH_USER_PASSWORD", PASSWORD)
}

/// Runs `sparkwatch ARGS COMMON` to completion (at most 2 minutes), output into `log`.
pub(crate) async fn cli(exe: &Path, common: &[String], args: &[&str], log: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(exe);
    cmd.args(args).args(common);
    child_env(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let what = format!("sparkwatch {}", args.join(" "));
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .with_context(|| format!("`{what}` did not finish within 2 minutes"))?
        .with_context(|| format!("running `{what}`"))?;
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    std::io::Write::write_all(&mut std::fs::OpenOptions::new().create(true).append(true).open(log)?, &text)?;
    ensure!(out.status.success(), "`{what}` failed ({}):\n{}", out.status, String::from_utf8_lossy(&text));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Seeding over GraphQL

pub(crate) struct Site {
    /// Access token of the manager (subscriptions, push tokens).
    pub(crate) manager: String,
    /// Ids of the alarm detectors, used once each, in order.
    pub(crate) alarm_detectors: Vec<String>,
}

/// The device and bus address of alarm detector `j`: address 2, 3, … on the load devices,
/// which report address 1 all the time, so they are online and no heartbeat fault fires.
pub(crate) fn alarm_place(j: usize, devices: u64) -> (u64, u64) {
    (j as u64 % devices, 2 + j as u64 / devices)
}

pub(crate) async fn seed(server: &Server, opts: &Opts, alarm_detectors: usize) -> anyhow::Result<Site> {
    let admin = server.login(ADMIN).await?;
    let project = server
        .gql(Some(&admin), r#"mutation { createProject(input: {name: "Bench site"}) { id } }"#, json!({}))
        .await?;
    let project = project["createProject"]["id"].as_str().context("project id")?.to_owned();
    // No escalation reminders during the run: they would add pushes to every phone.
    server
        .gql(
            Some(&admin),
            "mutation { updateEscalationPolicy(input: {afterMinutes: 1440, everyMinutes: 1440}) { afterMinutes } }",
            json!({}),
        )
        .await?;
    eprintln!("  {} devices with one detector each …", opts.devices);
    let devices: Vec<String> = (0..opts.devices)
        .map(|d| {
            format!(
                r#"createDevice(input: {{projectId: "{project}", serial: "BENCH-{d}", name: "Bench {d}", transport: MQTT, intervalS: 60}}) {{ id }}"#
            )
        })
        .collect();
    let device_ids = server.batch(&admin, &devices).await?;
    let detector = |device: &str, address: u64| {
        format!(r#"createDetector(input: {{deviceId: "{device}", address: {address}}}) {{ id }}"#)
    };
    let load: Vec<String> = device_ids.iter().map(|d| detector(d, 1)).collect();
    server.batch(&admin, &load).await?;
    eprintln!("  {alarm_detectors} alarm detectors (leak set-point 300 mA, delay 0) …");
    let alarms: Vec<String> = (0..alarm_detectors)
        .map(|j| {
            let (d, address) = alarm_place(j, opts.devices);
            detector(&device_ids[d as usize], address)
        })
        .collect();
    let alarm_ids = server.batch(&admin, &alarms).await?;
    let thresholds: Vec<String> = alarm_ids
        .iter()
        .map(|id| {
            format!(r#"updateDetectorThresholds(input: {{detectorId: "{id}", leakMa: 300, leakDelayS: 0}}) {{ id }}"#)
        })
        .collect();
    server.batch(&admin, &thresholds).await?;
    // The manager is assigned to the project: alarms there are pushed to their phones.
    server
        .gql(
            Some(&admin),
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({"i": {"email": MANAGER, "password": PASSWORD, "roleId": "manager", "projectIds": [project], "locale": "en"}}),
        )
        .await?;
    let manager = server.login(MANAGER).await?;
    Ok(Site { manager, alarm_detectors: alarm_ids })
}

/// Registers push tokens `from..to` for the manager (Android, FCM).
pub(crate) async fn register_tokens(server: &Server, manager: &str, from: usize, to: usize) -> anyhow::Result<()> {
    let fields: Vec<String> = (from..to)
        .map(|i| {
            format!(
                r#"registerPushToken(input: {{platform: ANDROID, token: "bench-fcm-token-{i:05}", appId: "com.sparkwatch.bench"}}) {{ id }}"#
            )
        })
        .collect();
    server.batch(manager, &fields).await?;
    Ok(())
}
