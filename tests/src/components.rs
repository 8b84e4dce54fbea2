//! Real components a test owns and may break: a database fault switch, and private
//! Mosquitto, PostgreSQL and Redis servers on free ports, so a suite can stop and start
//! them without disturbing the shared services other suites use.

use sea_orm::ConnectionTrait;

use crate::{TestServer, eventually};

/// A database fault that the test turns on and off: BEFORE INSERT triggers on the tables
/// ingestion writes (readings, events, episodes, dead letters) that fail while
/// `fault_switch.failing` is set — a database that returns errors for a while, on a database
/// the test owns.
pub struct FaultSwitch {
    db: sea_orm::DatabaseConnection,
}

impl FaultSwitch {
    /// Installs the triggers (off) in `server`'s database.
    pub async fn install(server: &TestServer) -> anyhow::Result<FaultSwitch> {
        let db = server.services.store().db().clone();
        let tables = ["readings", "events", "episodes", "dead_letters"];
        if db.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.execute_unprepared(
                "CREATE TABLE fault_switch (failing boolean NOT NULL); INSERT INTO fault_switch VALUES (false);
                 CREATE FUNCTION fault_check() RETURNS trigger AS $$ BEGIN
                   IF (SELECT failing FROM fault_switch) THEN RAISE EXCEPTION 'injected fault'; END IF;
                   RETURN NULL; END $$ LANGUAGE plpgsql;",
            )
            .await?;
            for t in tables {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER fault_{t} BEFORE INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION fault_check()"
                ))
                .await?;
            }
        } else {
            db.execute_unprepared(
                "CREATE TABLE fault_switch (failing INTEGER NOT NULL); INSERT INTO fault_switch VALUES (0);",
            )
            .await?;
            for t in tables {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER fault_{t} BEFORE INSERT ON {t} WHEN (SELECT failing FROM fault_switch) = 1 \
                     BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
                ))
                .await?;
            }
        }
        Ok(FaultSwitch { db })
    }

    /// Turns the fault on or off.
    pub async fn set(&self, failing: bool) -> anyhow::Result<()> {
        let value = match (self.db.get_database_backend(), failing) {
            (sea_orm::DbBackend::Postgres, f) => f.to_string(),
            (_, f) => u8::from(f).to_string(),
        };
        self.db.execute_unprepared(&format!("UPDATE fault_switch SET failing = {value}")).await?;
        Ok(())
    }
}

/// A Mosquitto of the test's own, on a free port with its own persistence directory, so a
/// test can restart it or send it what it likes without disturbing other suites.
pub struct PrivateMosquitto {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateMosquitto {
    /// Starts one; `None` (the caller says "skipped") when `mosquitto` is not installed.
    pub async fn start() -> anyhow::Result<Option<PrivateMosquitto>> {
        let Some(binary) = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        // `user root`: started as root, Mosquitto would otherwise switch to its own user, which
        // cannot write the private directory (it ignores the line when not root).
        let conf = format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\nlog_dest file {}/mosquitto.log\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut broker = PrivateMosquitto { child: None, port, dir };
        broker.launch(binary)?;
        broker.until_up().await?;
        Ok(Some(broker))
    }

    fn launch(&mut self, binary: &str) -> anyhow::Result<()> {
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn until_up(&self) -> anyhow::Result<()> {
        let port = self.port;
        eventually("the private Mosquitto to listen", || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ()))
        })
        .await
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM: it saves its sessions and queued messages) and starts it again on
    /// the same port and persistence file.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| anyhow::anyhow!("mosquitto went away"))?;
        self.launch(binary)?;
        self.until_up().await
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A counter or gauge of a server's `/metrics`, e.g. `sparkwatch_ingest_failing`
/// (0 when absent).
pub async fn metric(server: &TestServer, name: &str) -> anyhow::Result<f64> {
    let text = server.http.get(format!("{}/metrics", server.base)).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Waits until each background job of `jobs` (`push_delivery`, `reminders`,
/// `ingest_housekeeping`: the `job` label of `sparkwatch_job_passes_total`) has completed `n`
/// more passes on `server`, one job after the other. With `n >= 2` at least one whole pass
/// started after the call: how a test shows that a job had its chance to do something it
/// must not do (send twice, escalate early) before asserting that it did not.
pub async fn after_job_passes(server: &TestServer, jobs: &[&str], n: u32) -> anyhow::Result<()> {
    for job in jobs {
        let name = format!("sparkwatch_job_passes_total{{job=\"{job}\"}}");
        let start = metric(server, &name).await?;
        eventually(&format!("{n} more passes of the {job} job"), || async {
            Ok((metric(server, &name).await? >= start + f64::from(n)).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// A PostgreSQL cluster of the test's own (`initdb` into a temporary directory, a free
/// port), so a test can stop and start it without disturbing the other suites. Run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root).
pub struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates and starts one; `None` (the caller says "skipped") without `initdb`.
    pub async fn start() -> anyhow::Result<Option<PrivatePostgres>> {
        let mut candidates = vec![std::path::PathBuf::from("/usr/local/bin")];
        if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
            candidates.extend(versions.flatten().map(|v| v.path().join("bin")));
        }
        let Some(bin) = candidates.into_iter().find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists()) else {
            return Ok(None);
        };
        let as_postgres = std::process::Command::new("id").arg("-u").output()?.stdout.starts_with(b"0\n");
        let dir = tempfile::tempdir()?;
        if as_postgres {
            let ok = std::process::Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status()?;
            anyhow::ensure!(ok.success(), "cannot hand the cluster directory to the postgres user");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = PrivatePostgres { bin, dir, port, as_postgres };
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"])?;
        pg.up()?;
        Ok(Some(pg))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let tool = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(tool);
            c
        } else {
            std::process::Command::new(tool)
        };
        let out = cmd.args(args).stdin(std::process::Stdio::null()).output()?;
        anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Starts the server (waits until it accepts connections).
    pub fn up(&self) -> anyhow::Result<()> {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"])
    }

    /// Stops the server at once (`immediate`: like a crash, no shutdown checkpoint).
    pub fn down(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}

/// A Redis of the test's own (`redis-server` on a free port, nothing kept on disk), so a
/// test can stop and start it without disturbing the shared one.
pub struct PrivateRedis {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PrivateRedis {
    /// Starts one; `None` (the caller says "skipped") when `redis-server` is not installed.
    pub async fn start() -> anyhow::Result<Option<PrivateRedis>> {
        if Self::binary().is_none() {
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut redis = PrivateRedis { child: None, port };
        redis.up().await?;
        Ok(Some(redis))
    }

    fn binary() -> Option<&'static str> {
        ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].into_iter().find(|p| std::path::Path::new(p).exists())
    }

    /// Starts the server again on the same port (empty: it keeps nothing) and waits until
    /// it answers PING.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        let binary = Self::binary().ok_or_else(|| anyhow::anyhow!("redis-server went away"))?;
        let child = std::process::Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let url = self.url();
        eventually("the private Redis to answer PING", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url)?;
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return Ok(None) };
                Ok(redis::cmd("PING").query_async::<String>(&mut conn).await.ok().map(|_| ()))
            }
        })
        .await
    }

    /// Kills it (SIGKILL: connections drop at once, like a crash).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many connections subscribe to each channel matching `pattern`, summed.
    pub async fn subscribers(&self, pattern: &str) -> anyhow::Result<u64> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").arg(pattern).query_async(&mut conn).await?;
        if channels.is_empty() {
            return Ok(0);
        }
        let counts: Vec<(String, u64)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channels).query_async(&mut conn).await?;
        Ok(counts.iter().map(|(_, n)| n).sum())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}
