//! The Modbus TCP poller (`shared/design/DEVICE-PROTOCOL.md` §2): the server side of devices
//! of transport `MODBUS_TCP`, i.e. gateways with detectors behind them.
//!
//! Layout:
//! - [`run`] — the supervisor: loads the Modbus devices from the store (again every
//!   [`PollerConfig::refresh`], so added and removed gateways and detectors are picked up
//!   without a restart) and runs one task per gateway endpoint (`host:port`).
//! - A gateway task holds ONE TCP connection to its gateway, shared by every detector behind
//!   it; its requests are sequential. Each detector is read every interval with one function
//!   04 request for input registers 0–15 (unit id = detector address). Detector *i* of *n*
//!   is polled at offset *i*/*n* of the interval, shifted by a per-gateway phase, so a large
//!   site never bursts. The decoded poll, the events of its status-bit edges and its rejected
//!   register values go into the ingestion queue as a [`ModbusReport`]; the third failed poll
//!   in a row reports [`ModbusOutcome::CommLost`] once, and the next good poll
//!   [`ModbusOutcome::CommRestored`] before its reading.
//! - [`GatewayConnection`] — one Modbus TCP connection with a timeout on every request:
//!   poll reads, coil writes and set-point writes with read-back (for remote commands).
//! - Remote commands: the supervisor looks for queued Modbus commands every
//!   [`PollerConfig::command_check`] and at once when this instance queued one, claims each
//!   (`QUEUED → SENT`, a conditional UPDATE, so exactly one instance writes it) and hands it
//!   to the task of its gateway, which writes it between polls on the same connection — the
//!   coil ON (function 05) or the set-points (06/16) with their read-back (03) — and finishes
//!   it: a successful write is the acknowledgement; an exception fails it with the exception
//!   code, a timeout or connection failure with the error, a read-back difference with the
//!   registers that differ. A write is never retried: the device may have acted on it.
//!
//! Failures: a timeout, an I/O error or a Modbus exception fails the poll. The connection is
//! re-established lazily: after an I/O error or timeout it is dropped (a late answer would be
//! mistaken for the next request's), the next poll connects again, and when the gateway itself
//! is unreachable (cannot connect, or nothing on it answers) polls fail at once, without
//! network traffic, until a back-off (doubling from [`PollerConfig::backoff_min`] to
//! [`PollerConfig::backoff_max`]) has passed. So a dead gateway costs one connection attempt
//! per back-off, and its detectors still reach their communication fault on schedule.
//!
//! Restarts: a detector's previous status bits are seeded from its open device-reported
//! episodes and its communication fault from its open detector-level `OFFLINE` episode, so a
//! restart neither reports standing conditions again nor leaves a fault that ended unclosed.
//! The relay state is not persisted: a relay that is tripped at start is reported once more.
//!
//! Metrics: `sparkwatch_modbus_polls_total{outcome}` with outcome `ok`, `timeout`,
//! `io_error`, `exception`, `unreachable` (failed at once while backing off), `not_allowed`
//! (the host resolves outside `--modbus-allow-networks`) or `rejected` (an answer that is not
//! a valid poll: wrong register count, relay value other than 0/1).
//!
//! Hosted deployments (issue 14): every connection resolves the gateway's host again and
//! connects only to an address inside [`PollerConfig::allowed`] ([`network`]); what tenants
//! see of a failed poll or command is [`ModbusError::public`] — `NO_ANSWER` for every
//! transport failure — while the log keeps the detail. Failed polls are dated when they
//! started, so their time does not tell a refused connection from a timed-out one either.
//!
//! Files: this one (supervisor, gateway tasks, link), [`connection`] (one Modbus TCP
//! connection and its errors), [`network`] (allowed networks, gateway address keys).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sparkwatch_domain::command::{CommandOutcome, OutcomeSource, ReadBackMismatch};
use sparkwatch_domain::ids::DetectorId;
use sparkwatch_domain::modbus::{self as mb, BitStatus, FAILED_POLLS_FOR_COMM_FAULT};
use sparkwatch_domain::reading::{Channel, EventKind};
use sparkwatch_domain::site::DeviceTransport;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub mod connection;
pub mod network;

pub use connection::{GatewayConnection, ModbusError, NO_ANSWER};
use network::AllowedNetworks;

use super::{Inbound, IngestQueue, ModbusOutcome, ModbusReport};
use crate::metrics::Metrics;
use crate::service::commands::Ledger;
use crate::store::Store;
use crate::store::commands::Command;
use crate::store::telemetry::{self as tel, DeviceInfo};

/// Tuning of the poller. The defaults suit production; tests shorten everything.
#[derive(Clone, Debug)]
pub struct PollerConfig {
    /// How long one request (or reply) may take before the poll fails.
    pub request_timeout: Duration,
    /// How long connecting to a gateway may take.
    pub connect_timeout: Duration,
    /// How often the device list is reloaded from the store.
    pub refresh: Duration,
    /// First wait before reconnecting to an unreachable gateway.
    pub backoff_min: Duration,
    /// Longest wait before reconnecting; the wait doubles up to this.
    pub backoff_max: Duration,
    /// Polls every detector at this interval instead of its device's `interval_s` (tests and
    /// the simulator); `None` in production.
    pub interval_override: Option<Duration>,
    /// How often queued remote commands are looked for in the store (commands queued on
    /// this instance are picked up at once).
    pub command_check: Duration,
    /// Where gateways may be (`--modbus-allow-networks`); checked on every connection.
    pub allowed: AllowedNetworks,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            refresh: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            interval_override: None,
            command_check: Duration::from_secs(1),
            // Nothing until the configuration says (see `Config::modbus_allow_networks`).
            allowed: AllowedNetworks::none(),
        }
    }
}

/// Shortest polling interval accepted, so a zero override cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One detector to poll.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    serial: String,
    address: u8,
    detector: DetectorId,
    interval: Duration,
}

/// What the store says about a detector at the time it is first polled.
#[derive(Clone, Copy, Debug, Default)]
struct Seed {
    status: BitStatus,
    lost: bool,
}

/// Polling state of one detector.
struct Slot {
    target: Target,
    next_due: Instant,
    previous: Option<BitStatus>,
    failures: u32,
    lost: bool,
}

/// The connection of a gateway task, with lazy reconnection and back-off.
struct Link {
    host: String,
    port: u16,
    config: PollerConfig,
    conn: Option<GatewayConnection>,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error: String,
    silent_in_row: usize,
}

impl Link {
    fn new(host: String, port: u16, config: PollerConfig) -> Self {
        let backoff = config.backoff_min;
        Link { host, port, config, conn: None, backoff, retry_at: None, last_error: String::new(), silent_in_row: 0 }
    }

    /// The gateway answered: it is reachable.
    fn up(&mut self) {
        self.backoff = self.config.backoff_min;
        self.retry_at = None;
        self.silent_in_row = 0;
    }

    /// The gateway is unreachable: fail polls at once until the back-off has passed.
    fn down(&mut self, e: &ModbusError) {
        self.conn = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.backoff_max).max(self.config.backoff_min);
        self.last_error = e.to_string();
    }

    /// The open connection, connecting first if there is none (failing at once while
    /// backing off from an unreachable gateway).
    async fn connection(&mut self) -> Result<&mut GatewayConnection, ModbusError> {
        if self.conn.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                return Err(ModbusError::Unreachable(self.last_error.clone()));
            }
            let (connect, request) = (self.config.connect_timeout, self.config.request_timeout);
            match open(&self.host, self.port, &self.config.allowed, connect, request).await {
                Ok(conn) => {
                    tracing::debug!(gateway = %conn.peer, "connected to the Modbus gateway");
                    self.conn = Some(conn);
                }
                Err(e) => {
                    self.down(&e);
                    return Err(e);
                }
            }
        }
        self.conn.as_mut().ok_or_else(|| ModbusError::Unreachable(self.last_error.clone()))
    }

    /// Writes a command to `unit`: its coil, or its set-points with the read-back. Never
    /// retried — the device may have acted on a write whose answer was lost.
    async fn write(&mut self, unit: u8, command: &Command) -> Result<(), ModbusError> {
        let params = command
            .params
            .as_ref()
            .map(|p| sparkwatch_domain::command::parse_params(command.op, Some(p)))
            .transpose()
            .map_err(|e| ModbusError::Invalid(e.to_string()))?
            .flatten();
        let conn = self.connection().await?;
        let written = match &params {
            Some(set) => conn.write_thresholds(unit, set).await,
            None => conn.write_coil(unit, command.op).await,
        };
        match &written {
            Ok(()) | Err(ModbusError::Exception { .. } | ModbusError::ReadBack(_)) => self.up(),
            // A late answer would be taken for the next request's.
            Err(ModbusError::Timeout(_) | ModbusError::Io(_) | ModbusError::Protocol(_)) => self.conn = None,
            Err(ModbusError::Unreachable(_) | ModbusError::Invalid(_) | ModbusError::NotAllowed(_)) => {}
        }
        written
    }

    /// One poll of `unit`; `units` is how many units the gateway has (when that many timeouts
    /// come in a row, nothing on the gateway answers and it is backed off from).
    async fn read(&mut self, unit: u8, units: usize) -> Result<Vec<u16>, ModbusError> {
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            let conn = self.connection().await?;
            match conn.read_inputs(unit).await {
                Ok(regs) => {
                    self.up();
                    return Ok(regs);
                }
                Err(e @ ModbusError::Exception { .. }) => {
                    // The gateway answered; only this unit is in trouble.
                    self.up();
                    return Err(e);
                }
                Err(e @ ModbusError::Timeout(_)) => {
                    self.conn = None;
                    self.silent_in_row += 1;
                    if self.silent_in_row >= units.max(1) {
                        self.down(&e);
                    }
                    return Err(e);
                }
                Err(e) => {
                    self.conn = None;
                    if !fresh && attempt == 0 {
                        // The kept connection went stale (gateway restarted or closed it):
                        // connect again and retry once.
                        continue;
                    }
                    self.down(&e);
                    return Err(e);
                }
            }
        }
        Err(ModbusError::Unreachable(self.last_error.clone()))
    }
}

/// Resolves `host` (again: its address may have changed since registration), keeps the
/// allowed addresses and connects to the first that accepts. (A free function, not a method
/// of [`Link`]: a borrowed connection across the await would make the task not `Send`.)
async fn open(
    host: &str,
    port: u16,
    allowed: &AllowedNetworks,
    connect: Duration,
    request: Duration,
) -> Result<GatewayConnection, ModbusError> {
    let peer = format!("{host}:{port}");
    let addrs =
        allowed.resolve(host, port, connect).await.map_err(|refusal| ModbusError::NotAllowed(refusal.to_string()))?;
    let mut last = None;
    for addr in addrs {
        match GatewayConnection::connect(addr, peer.clone(), connect, request).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ModbusError::Unreachable(format!("{peer} has no address"))))
}

/// The bit of every device-reported (kind, channel): `(kind code, channel code, is alarm, bit)`.
fn bit_table() -> Vec<(&'static str, String, bool, u16)> {
    let mut table = Vec::new();
    for bit in 0..16 {
        for alarm in [true, false] {
            let status = if alarm {
                BitStatus { alarms: 1 << bit, ..Default::default() }
            } else {
                BitStatus { faults: 1 << bit, ..Default::default() }
            };
            if let Some(e) = mb::status_events(Some(BitStatus::default()), status, 1, DateTime::UNIX_EPOCH).first() {
                table.push((e.kind.code(), e.channel.code(), alarm, bit));
            }
        }
    }
    table
}

/// The state of newly polled detectors as the store records it: open device-reported
/// episodes whose condition has not ended → status bits; an open detector-level `OFFLINE`
/// episode → communication fault.
async fn seeds(store: &Store, ids: &[DetectorId]) -> Result<HashMap<DetectorId, Seed>, sea_orm::DbErr> {
    use sparkwatch_entity::episode;
    let mut out: HashMap<DetectorId, Seed> = ids.iter().map(|id| (*id, Seed::default())).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let table = bit_table();
    let detector_channel = Channel::DETECTOR.code();
    for chunk in ids.chunks(500) {
        let open = episode::Entity::find()
            .filter(episode::Column::SubjectId.is_in(chunk.iter().map(DetectorId::as_uuid)))
            .filter(episode::Column::ClosedAt.is_null())
            .filter(episode::Column::ClearedAt.is_null())
            .filter(episode::Column::Source.is_in(["device", "system"]))
            .all(store.db())
            .await?;
        for ep in open {
            let Some(seed) = out.get_mut(&DetectorId::from(ep.subject_id)) else { continue };
            if ep.source == "system" {
                seed.lost |= ep.kind == EventKind::Offline.code() && ep.channel == detector_channel;
                continue;
            }
            for (kind, channel, alarm, bit) in &table {
                if *kind == ep.kind && *channel == ep.channel {
                    if *alarm {
                        seed.status.alarms |= 1 << bit;
                    } else {
                        seed.status.faults |= 1 << bit;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A stable phase in `[0, 1)` for a gateway (FNV-1a of its endpoint), so gateways with the
/// same interval do not poll in step.
fn phase(host: &str, port: u16) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain(port.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 10_000) as f64 / 10_000.0
}

/// The time of a poll as stored: milliseconds, like device timestamps.
fn poll_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// One gateway's polling task.
struct GatewayTask {
    link: Link,
    phase: f64,
    slots: BTreeMap<(String, u8), Slot>,
    units: usize,
    store: Store,
    queue: IngestQueue,
    metrics: Metrics,
    commands: Ledger,
}

/// A claimed command for a gateway task: write it to `unit`.
struct Job {
    command: Command,
    unit: u8,
}

/// The outcome of a command's Modbus write.
fn command_outcome(written: &Result<(), ModbusError>) -> CommandOutcome {
    let outcome =
        |ok, source, code, msg: String| CommandOutcome { ok, source, code, msg: Some(msg), mismatches: vec![] };
    match written {
        Ok(()) => outcome(true, OutcomeSource::Device, Some(0), "written".to_owned()),
        Err(e @ ModbusError::Exception { code, .. }) => {
            outcome(false, OutcomeSource::ModbusException, Some(i64::from(*code)), e.to_string())
        }
        Err(e @ ModbusError::ReadBack(list)) => CommandOutcome {
            mismatches: list.iter().map(ReadBackMismatch::from).collect(),
            ..outcome(false, OutcomeSource::ReadBack, None, e.to_string())
        },
        // The detail is logged by the caller; the tenant reads NO_ANSWER.
        Err(e) => CommandOutcome::transport_failure(e.public()),
    }
}

impl GatewayTask {
    /// Writes a claimed command and records its outcome.
    async fn execute(&mut self, job: Job) {
        let written = self.link.write(job.unit, &job.command).await;
        let gateway = format!("gateway {}:{}", self.link.host, self.link.port);
        if let Err(e) = &written {
            tracing::warn!(command = %job.command.id, %gateway, unit = job.unit, error = %e, "Modbus command failed");
        }
        if let Err(e) = self.commands.finish(job.command.id, &command_outcome(&written), &gateway).await {
            tracing::warn!(command = %job.command.id, error = %e, "could not record a Modbus command's outcome");
        }
    }

    /// Takes a new list of detectors: keeps the state of those still listed, drops the others
    /// and schedules new ones at their offset in the interval.
    async fn apply_plan(&mut self, plan: Vec<Target>) {
        let wanted: HashSet<(String, u8)> = plan.iter().map(|t| (t.serial.clone(), t.address)).collect();
        self.slots.retain(|k, _| wanted.contains(k));
        let new: Vec<DetectorId> = plan
            .iter()
            .filter(|t| !self.slots.contains_key(&(t.serial.clone(), t.address)))
            .map(|t| t.detector)
            .collect();
        let seeds = match seeds(&self.store, &new).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(gateway = %self.link.host, error = %e, "could not load the detectors' open episodes; standing conditions may be reported again");
                HashMap::new()
            }
        };
        let now = Instant::now();
        let n = plan.len().max(1) as f64;
        for (i, t) in plan.into_iter().enumerate() {
            let offset = t.interval.mul_f64((self.phase + i as f64 / n).fract());
            let key = (t.serial.clone(), t.address);
            match self.slots.get_mut(&key) {
                Some(slot) => {
                    if slot.target.interval != t.interval {
                        slot.next_due = now + offset;
                    }
                    slot.target = t;
                }
                None => {
                    let seed = seeds.get(&t.detector).copied();
                    let slot = Slot {
                        next_due: now + offset,
                        previous: seed.map(|s| s.status),
                        failures: 0,
                        lost: seed.is_some_and(|s| s.lost),
                        target: t,
                    };
                    self.slots.insert(key, slot);
                }
            }
        }
        self.units = self.slots.values().map(|s| s.target.address).collect::<HashSet<_>>().len();
    }

    fn next_due(&self) -> Option<((String, u8), Instant)> {
        self.slots.iter().min_by_key(|(_, s)| s.next_due).map(|(k, s)| (k.clone(), s.next_due))
    }

    /// Polls one detector and queues what it produced; false when the queue is closed.
    async fn poll(&mut self, key: &(String, u8)) -> bool {
        let unit = key.1;
        // A failed poll is dated when it started: a refused connection fails at once, a
        // silent address after the timeout, and the stored time must not tell them apart.
        let started = poll_time();
        let result = self.link.read(unit, self.units).await;
        let at = if result.is_ok() { poll_time() } else { started };
        let Some(slot) = self.slots.get_mut(key) else { return true };
        let now = Instant::now();
        while slot.next_due <= now {
            slot.next_due += slot.target.interval;
        }
        // (outcome label, what the tenant sees, the detail for the log) of a failed poll.
        let decoded = match result {
            Err(e) => Err((e.outcome(), e.public(), e.to_string())),
            Ok(regs) => mb::decode_input_registers(&regs, at).map_err(|r| {
                let text = format!("poll refused ({}): {}", r.reason.code(), r.detail);
                ("rejected", text.clone(), text)
            }),
        };
        let serial = slot.target.serial.clone();
        let mut outcomes = Vec::with_capacity(2);
        match decoded {
            Ok(poll) => {
                self.metrics.modbus_polls.with_label_values(&["ok"]).inc();
                if slot.lost {
                    tracing::info!(serial = %serial, unit, "Modbus communication restored");
                    outcomes.push(ModbusOutcome::CommRestored);
                }
                slot.lost = false;
                slot.failures = 0;
                let events = mb::status_events(slot.previous, poll.status, unit, at);
                slot.previous = Some(poll.status);
                let rejected = poll.rejected.into_iter().map(|r| (r.reason.code().to_owned(), r.detail)).collect();
                outcomes.push(ModbusOutcome::Polled { reading: poll.reading, events, rejected });
            }
            Err((outcome, public, detail)) => {
                self.metrics.modbus_polls.with_label_values(&[outcome]).inc();
                slot.failures = slot.failures.saturating_add(1);
                tracing::debug!(serial = %serial, unit, failures = slot.failures, error = %detail, "Modbus poll failed");
                if slot.failures >= FAILED_POLLS_FOR_COMM_FAULT && !slot.lost {
                    slot.lost = true;
                    tracing::warn!(serial = %serial, unit, error = %detail, "Modbus communication lost");
                    outcomes.push(ModbusOutcome::CommLost { detail: public });
                }
            }
        }
        for outcome in outcomes {
            let msg = Inbound {
                topic: format!("modbus/{serial}/{unit}"),
                payload: Vec::new(),
                modbus: Some(ModbusReport { serial: serial.clone(), address: unit, outcome }),
                received_at: at,
                ack: None,
            };
            // Waiting here is the backpressure: while the pipeline is behind, polls wait.
            if !self.queue.push(msg).await {
                return false;
            }
        }
        true
    }
}

/// Runs one gateway's task until its plan sender is dropped, `stop` fires or the queue closes.
async fn run_gateway(
    mut task: GatewayTask,
    mut plans: watch::Receiver<Vec<Target>>,
    mut jobs: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
    closed: Arc<AtomicBool>,
) {
    let first = plans.borrow_and_update().clone();
    task.apply_plan(first).await;
    loop {
        let next = task.next_due();
        let wake = next.as_ref().map_or_else(|| Instant::now() + Duration::from_secs(3600), |(_, at)| *at);
        tokio::select! {
            _ = stop.changed() => break,
            changed = plans.changed() => {
                if changed.is_err() {
                    break;
                }
                let plan = plans.borrow_and_update().clone();
                task.apply_plan(plan).await;
            }
            Some(job) = jobs.recv() => task.execute(job).await,
            () = tokio::time::sleep_until(wake) => {
                let Some((key, _)) = next else { continue };
                let open = tokio::select! {
                    _ = stop.changed() => break,
                    open = task.poll(&key) => open,
                };
                if !open {
                    closed.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
    }
}

/// A running gateway task.
struct Gateway {
    plan: watch::Sender<Vec<Target>>,
    jobs: mpsc::Sender<Job>,
    task: JoinHandle<()>,
}

/// Commands waiting for one gateway task at most; more are refused (and fail) rather than
/// queued behind a gateway that is not keeping up.
const GATEWAY_JOBS: usize = 64;

/// Claims the queued Modbus commands of gateways this instance polls and hands each to its
/// gateway task. `units` maps a detector to its gateway endpoint and unit id.
async fn dispatch_commands(
    ledger: &Ledger,
    gateways: &HashMap<(String, u16), Gateway>,
    units: &HashMap<DetectorId, ((String, u16), u8)>,
) {
    let queued = match ledger.queued_modbus().await {
        Ok(q) => q,
        Err(e) => return tracing::warn!(error = %e, "could not load queued Modbus commands"),
    };
    for command in queued {
        // Detectors this instance does not poll (yet) are left for the instance that does, or
        // for the next device refresh.
        let Some((endpoint, unit)) = units.get(&command.detector_id) else { continue };
        let Some(gateway) = gateways.get(endpoint) else { continue };
        let claimed = match ledger.mark_sent(command.id).await {
            Ok(Some(c)) => c,
            // Claimed by another instance, or expired meanwhile.
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(command = %command.id, error = %e, "could not claim a Modbus command");
                continue;
            }
        };
        let id = claimed.id;
        if gateway.jobs.try_send(Job { command: claimed, unit: *unit }).is_err() {
            let outcome = CommandOutcome::transport_failure("the gateway's command queue is full");
            if let Err(e) = ledger.finish(id, &outcome, "sparkwatch").await {
                tracing::warn!(command = %id, error = %e, "could not fail a Modbus command");
            }
        }
    }
}

/// The detectors to poll per gateway endpoint (`host` lower-cased, port), in a stable order.
fn plans(devices: &[DeviceInfo], config: &PollerConfig) -> HashMap<(String, u16), Vec<Target>> {
    let mut out: HashMap<(String, u16), Vec<Target>> = HashMap::new();
    for d in devices {
        let (Some(host), Some(port)) = (&d.host, d.port) else {
            tracing::debug!(serial = %d.serial, "a MODBUS_TCP device without host and port is not polled");
            continue;
        };
        let interval = config
            .interval_override
            .unwrap_or_else(|| Duration::from_secs(u64::from(d.interval_s.max(1))))
            .max(MIN_INTERVAL);
        let targets = out.entry((host.trim().to_ascii_lowercase(), port)).or_default();
        for det in &d.detectors {
            // Unit ids 1–247 address devices; 0 is broadcast (never answered).
            if (1..=247).contains(&det.address) {
                targets.push(Target { serial: d.serial.clone(), address: det.address, detector: det.id, interval });
            }
        }
    }
    for targets in out.values_mut() {
        targets.sort_by(|a, b| (&a.serial, a.address).cmp(&(&b.serial, b.address)));
    }
    out.retain(|_, t| !t.is_empty());
    out
}

/// Polls every detector of every `MODBUS_TCP` device until `stop` turns true (or its sender
/// is dropped) or the ingestion queue closes, pushing one [`Inbound`] with a [`ModbusReport`]
/// per outcome into `queue`. Never fails: store and network problems are logged and retried.
pub async fn run(
    store: Store,
    queue: IngestQueue,
    metrics: Metrics,
    commands: Ledger,
    config: PollerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let closed = Arc::new(AtomicBool::new(false));
    let mut gateways: HashMap<(String, u16), Gateway> = HashMap::new();
    let mut units: HashMap<DetectorId, ((String, u16), u8)> = HashMap::new();
    let mut next_refresh = Instant::now();
    loop {
        if *stop.borrow() || closed.load(Ordering::SeqCst) {
            break;
        }
        if Instant::now() < next_refresh {
            dispatch_commands(&commands, &gateways, &units).await;
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep_until(next_refresh.min(Instant::now() + config.command_check)) => {}
                () = commands.modbus_wakeup().notified() => {}
            }
            continue;
        }
        next_refresh = Instant::now() + config.refresh;
        match tel::devices_by_transport(store.db(), DeviceTransport::ModbusTcp).await {
            Ok(devices) => {
                let wanted = plans(&devices, &config);
                units = wanted
                    .iter()
                    .flat_map(|(endpoint, targets)| targets.iter().map(|t| (t.detector, (endpoint.clone(), t.address))))
                    .collect();
                // Dropping a gateway's plan sender ends its task (and closes its connection).
                gateways.retain(|endpoint, g| wanted.contains_key(endpoint) && !g.task.is_finished());
                for (endpoint, targets) in wanted {
                    if let Some(g) = gateways.get(&endpoint) {
                        g.plan.send_if_modified(|current| {
                            let changed = *current != targets;
                            if changed {
                                *current = targets;
                            }
                            changed
                        });
                        continue;
                    }
                    tracing::info!(gateway = %format!("{}:{}", endpoint.0, endpoint.1), detectors = targets.len(), "polling a Modbus gateway");
                    let (plan, plan_rx) = watch::channel(targets);
                    let (jobs, jobs_rx) = mpsc::channel(GATEWAY_JOBS);
                    let task = GatewayTask {
                        link: Link::new(endpoint.0.clone(), endpoint.1, config.clone()),
                        phase: phase(&endpoint.0, endpoint.1),
                        slots: BTreeMap::new(),
                        units: 0,
                        store: store.clone(),
                        queue: queue.clone(),
                        metrics: metrics.clone(),
                        commands: commands.clone(),
                    };
                    let task = tokio::spawn(run_gateway(task, plan_rx, jobs_rx, stop.clone(), closed.clone()));
                    gateways.insert(endpoint, Gateway { plan, jobs, task });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not load the Modbus devices; polling continues with the last list")
            }
        }
    }
    for (_, g) in gateways.drain() {
        drop(g.plan);
        let _ = g.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::connection::exception;
    use super::*;
    use sparkwatch_domain::modbus::ThresholdMismatch;
    use tokio_modbus::ExceptionCode;

    #[test]
    fn every_defined_bit_maps_back() {
        let table = bit_table();
        assert_eq!(table.iter().filter(|t| t.2).count(), 10);
        assert_eq!(table.iter().filter(|t| !t.2).count(), 11);
        assert!(table.contains(&("SENSOR_OPEN", "temp:2".to_owned(), false, 3)));
        assert!(table.contains(&("LEAK_ALARM", "leak:1".to_owned(), true, 0)));
    }

    #[test]
    fn phases_are_stable_and_in_range() {
        let p = phase("10.0.0.5", 502);
        assert_eq!(p, phase("10.0.0.5", 502));
        assert!((0.0..1.0).contains(&p));
        assert_ne!(p, phase("10.0.0.6", 502));
    }

    #[test]
    fn errors_have_outcomes_and_codes() {
        let e = exception(ExceptionCode::GatewayTargetDevice);
        assert_eq!((e.outcome(), e.exception_code()), ("exception", Some(0x0B)));
        assert_eq!(e.to_string(), "Modbus exception 0x0B (Gateway target device failed to respond)");
        let m = ModbusError::ReadBack(vec![ThresholdMismatch {
            register: 102,
            field: Some("tempC"),
            written: 85,
            read: Some(80),
        }]);
        assert_eq!(m.to_string(), "set-points read back differently: register 102 (tempC) written 85, read 80");
    }

    #[test]
    fn tenants_read_no_answer_for_every_transport_failure() {
        let transport = [
            ModbusError::Io("cannot connect to 10.0.0.5:22: Connection refused (os error 111)".into()),
            ModbusError::Timeout("connecting to 10.0.0.5:502 timed out after 2000 ms".into()),
            ModbusError::Unreachable("cannot connect".into()),
            ModbusError::Protocol("invalid transaction id".into()),
            ModbusError::NotAllowed("`db.internal` resolves to 10.9.9.9".into()),
        ];
        for e in &transport {
            assert_eq!(e.public(), NO_ANSWER, "{e}");
            assert_eq!(command_outcome(&Err(e.clone())).msg.as_deref(), Some(NO_ANSWER), "{e}");
        }
        // Answers of the gateway itself stay visible.
        let e = exception(ExceptionCode::IllegalDataAddress);
        assert!(e.public().contains("0x02"), "{}", e.public());
        assert!(command_outcome(&Err(e)).msg.is_some_and(|m| m.contains("0x02")));
    }
}
