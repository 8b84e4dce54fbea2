//! What the benchmark binaries (`bench-ingest`, `bench-live`) share: command-line
//! arguments, a private Mosquitto, the child-process telemetry publisher, the broker's raw
//! relay rate (the same-run baseline), process and machine CPU/memory from `/proc`, and
//! percentiles.
//!
//! The publisher is the benchmark executable itself started as `<exe> publish …`, so every
//! binary using [`spawn_publisher`] must hand that argument to [`publisher`] first thing in
//! `main`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    arg_text(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The text after `name` on the command line.
pub fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// CPU time and memory of one process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// CPU seconds, user + system.
    pub cpu_s: f64,
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub peak_kib: u64,
}

impl ProcStats {
    /// This process.
    pub fn own() -> ProcStats {
        Self::read("self")
    }

    /// Process `pid` (zeros once it is gone).
    pub fn of(pid: u32) -> ProcStats {
        Self::read(&pid.to_string())
    }

    fn read(pid: &str) -> ProcStats {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name, which may itself contain spaces and parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime, in clock ticks of 1/100 s (USER_HZ on Linux).
        let cpu_s = (ticks(11) + ticks(12)) / 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        ProcStats { cpu_s, rss_kib: kib("VmRSS:"), peak_kib: kib("VmHWM:") }
    }
}

/// Busy and total CPU seconds of the whole machine (all cores) from `/proc/stat`; idle and
/// I/O wait count as not busy.
pub fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> = stat
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A private Mosquitto whose queues are large enough not to drop QoS 1 bursts.
pub struct Broker {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `mosquitto` on a free port with a test configuration.
    pub fn start() -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000000\n\
                 max_queued_bytes 0\nmax_inflight_messages 1000\nmax_keepalive 600\nlog_type error\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (Debian package mosquitto)")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Broker { child, port, _dir: dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("mosquitto did not start on port {port}")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed when this is dropped (also on errors and interrupts).
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Child-process publisher: `publish PORT PREFIX DEVICES RATE SECONDS [alarm]` sends
/// single-detector telemetry (detector address 1) of devices `BENCH-0` … `BENCH-{DEVICES-1}`
/// round-robin on `PREFIX/BENCH-{d}/telemetry`, QoS 1, paced to RATE msg/s for SECONDS (rate
/// 0: as fast as possible, and SECONDS is the message count); `alarm` sends 900 mA instead
/// of 20–69 mA.
pub async fn publisher(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = args[2].parse()?;
    let prefix = args[3].clone();
    let devices: u64 = args[4].parse()?;
    let rate: u64 = args[5].parse()?;
    let seconds: u64 = args[6].parse()?;
    let alarm = args.get(7).is_some_and(|a| a == "alarm");
    let mut opts = MqttOptions::new(format!("bench-pub-{}", std::process::id()), "127.0.0.1", port);
    opts.set_inflight(1000).set_keep_alive(Duration::from_secs(60));
    let (client, mut lp) = AsyncClient::new(opts, 10_000);
    tokio::spawn(async move { while lp.poll().await.is_ok() {} });
    // Rate 0 means "as fast as possible", and then `seconds` is the message count.
    let total = if rate == 0 { seconds } else { rate * seconds };
    // Like real devices, counters keep increasing across runs.
    let base = Utc::now().timestamp_micros() as u64;
    let start = Instant::now();
    for i in 0..total {
        // Pace to the target rate (0 = as fast as possible).
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let d = i % devices;
        let now = Utc::now().timestamp_millis();
        let leak = if alarm { 900.0 } else { 20.0 + (i % 50) as f64 };
        let seq = base + i;
        let body = format!(
            r#"{{"ts":{now},"seq":{seq},"detectors":[{{"addr":1,"leak":[{leak}],"temp":[35.5,null,null,null]}}]}}"#
        );
        client.publish(format!("{prefix}/BENCH-{d}/telemetry"), QoS::AtLeastOnce, false, body).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// Starts [`publisher`] as a child process of this executable.
pub fn spawn_publisher(
    port: u16,
    prefix: &str,
    devices: u64,
    rate: u64,
    seconds: u64,
    alarm: bool,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["publish", &port.to_string(), prefix, &devices.to_string(), &rate.to_string(), &seconds.to_string()]);
    if alarm {
        cmd.arg("alarm");
    }
    Ok(cmd.stdout(Stdio::null()).spawn()?)
}

/// Baseline: how fast Mosquitto relays `n` QoS 1 telemetry messages to one plain subscriber.
pub async fn relay_rate(broker: &Broker, devices: u64, n: u64) -> anyhow::Result<f64> {
    let mut opts = MqttOptions::new("bench-plain-sub", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut lp) = AsyncClient::new(opts, 10_000);
    client.subscribe("raw/+/telemetry", QoS::AtLeastOnce).await?;
    // Wait for SUBACK before publishing.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = lp.poll().await? {
            break;
        }
    }
    let mut child = spawn_publisher(broker.port, "raw", devices, 0, n, false)?;
    let mut first = None;
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(20), lp.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                first.get_or_insert_with(Instant::now);
                got += 1;
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = child.wait();
    let secs = first.map_or(1.0, |f| f.elapsed().as_secs_f64());
    Ok(got as f64 / secs)
}

/// The `p` quantile (0–1) of sorted values, NaN when there are none.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
