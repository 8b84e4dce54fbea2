//! The first stage: batches the queue, decodes and validates each message (rejections go to
//! the dead-letter log), drops `(serial, seq)` redeliveries, and applies command results.
//!
//! A database error here (device look-up, dead letter, command result) is retried until it
//! succeeds: a message is acknowledged only once it is stored or dead-lettered, never
//! because the database failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sparkwatch_domain::payload::{self, TopicKind};
use tokio::sync::mpsc;

use super::{PipelineConfig, Work};
use crate::ingest::health::IngestHealth;
use crate::ingest::{Ack, Inbound, ModbusOutcome, ModbusReport};
use crate::metrics::Metrics;
use crate::service::commands::{AckApplied, Ledger};
use crate::store::Store;
use crate::store::telemetry::{self as tel, DeviceInfo};

/// Redeliveries are recognised for this long by `(serial, seq, ts)`.
const SEQ_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// The first stage's state; owned by its task.
pub(super) struct Validator {
    store: Store,
    metrics: Metrics,
    health: IngestHealth,
    config: PipelineConfig,
    devices: HashMap<String, (Instant, Option<Arc<DeviceInfo>>)>,
    seqs: Arc<SeqWindow>,
    /// `(serial, seq, device time)` of the batch being validated, with the receive time.
    batch_seqs: HashMap<(String, u64, DateTime<Utc>), DateTime<Utc>>,
    site_generation: Arc<AtomicU64>,
    seen_generation: u64,
    commands: Ledger,
    /// The batch's dead letters and their sampling (see [`super::dead_letters`]).
    dead: Mutex<super::dead_letters::DeadLetters>,
}

/// A validated batch on its way to the store stage.
pub(super) struct Validated {
    pub(super) work: Vec<Work>,
    pub(super) acks: Vec<Ack>,
    /// Its `(serial, seq)`s, remembered once the batch is stored ([`SeqWindow::remember`]).
    pub(super) seqs: Vec<SeqSeen>,
    /// When the validator took it, and when it was ready for the store task.
    pub(super) started: Instant,
    pub(super) validated: Instant,
}

/// A telemetry message's `(serial, seq, device time)` and when it was received.
pub(super) struct SeqSeen {
    serial: String,
    seq: u64,
    at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

/// The `(serial, seq)`s of stored messages within [`SEQ_WINDOW`], shared by the two
/// stages: the validator looks redeliveries up, the store stage remembers a batch's seqs
/// once the batch is stored — remembered any earlier, a batch that failed would have its
/// redelivery dropped as a duplicate and acknowledged, unstored.
#[derive(Default)]
pub(super) struct SeqWindow(Mutex<HashMap<String, RecentSeqs>>);

impl SeqWindow {
    /// Whether the message was stored within the window.
    fn contains(&self, s: &SeqSeen) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get_mut(&s.serial).is_some_and(|q| q.contains(s.seq, s.at, s.received_at))
    }

    /// Remembers a stored batch's messages.
    pub(super) fn remember(&self, seqs: Vec<SeqSeen>) {
        if seqs.is_empty() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for s in seqs {
            map.entry(s.serial).or_default().remember(s.seq, s.at, s.received_at);
        }
    }
}

/// Recently seen `(seq, device time)` of one device: in arrival order with their receive
/// time (for expiry) and as a set (for the look-up). A device reporting every second keeps
/// 600 in the window; scanning them per message showed in profiles.
#[derive(Default)]
struct RecentSeqs {
    order: VecDeque<(u64, DateTime<Utc>, DateTime<Utc>)>,
    set: foldhash::HashSet<(u64, DateTime<Utc>)>,
}

impl Validator {
    pub(super) fn new(pipeline: &super::Pipeline) -> Self {
        Validator {
            store: pipeline.store.clone(),
            metrics: pipeline.metrics.clone(),
            health: pipeline.health.clone(),
            config: pipeline.config.clone(),
            devices: HashMap::new(),
            seqs: pipeline.seqs.clone(),
            batch_seqs: HashMap::new(),
            site_generation: pipeline.site_generation.clone(),
            seen_generation: 0,
            commands: pipeline.commands.clone(),
            dead: Mutex::new(super::dead_letters::DeadLetters::new()),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Inbound>, out: mpsc::Sender<Validated>) {
        while let Some(first) = rx.recv().await {
            let started = Instant::now();
            let queued = (chrono::Utc::now() - first.received_at).to_std().unwrap_or_default();
            self.metrics.stage_seconds.with_label_values(&["queued"]).observe(queued.as_secs_f64());
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.batch_wait;
            while batch.len() < self.config.batch_max {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(m)) => batch.push(m),
                        _ => break,
                    },
                }
            }
            self.metrics.queue_depth.set(rx.len() as i64);
            let generation = self.site_generation.load(Ordering::Relaxed);
            if generation != self.seen_generation {
                self.seen_generation = generation;
                self.devices.clear();
            }
            self.load_devices(&batch).await;
            let mut work = Vec::with_capacity(batch.len());
            let mut acks = Vec::with_capacity(batch.len());
            for msg in batch {
                self.validate(&msg, &mut work).await;
                if let Some(ack) = msg.ack {
                    acks.push(ack);
                }
            }
            // Before the batch moves on: its acknowledgements mean "stored", letters included.
            let letters = self.dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if !letters.is_empty() {
                let db = self.store.db();
                self.health.retry("dead_letters", || tel::insert_dead_letters(db, letters.clone())).await;
            }
            let seqs = self
                .batch_seqs
                .drain()
                .map(|((serial, seq, at), received_at)| SeqSeen { serial, seq, at, received_at })
                .collect();
            self.metrics.stage_seconds.with_label_values(&["validate"]).observe(started.elapsed().as_secs_f64());
            let validated = Instant::now();
            if out.send(Validated { work, acks, seqs, started, validated }).await.is_err() {
                return;
            }
        }
    }

    async fn reject(
        &self,
        tenant: Option<&DeviceInfo>,
        serial: Option<&str>,
        msg: &Inbound,
        reason: &str,
        detail: &str,
    ) {
        self.metrics.rejected.with_label_values(&[reason]).inc();
        tracing::debug!(topic = %msg.topic, reason, detail, "rejected device input");
        let tenant = tenant.map(|d| d.tenant);
        let letter = tel::DeadLetter {
            tenant,
            serial,
            topic: &msg.topic,
            reason,
            detail,
            payload: &msg.payload,
            at: msg.received_at,
        };
        let mut dead = self.dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if dead.admit(serial.unwrap_or(&msg.topic), Instant::now()) {
            dead.push(tel::dead_letter_row(letter));
        } else {
            self.metrics.dead_letters_dropped.inc();
        }
    }

    /// Looks up, in one go, the devices of `batch` that are not cached or whose entry
    /// expired (one by one, a thousand expiring together held the batch for a second);
    /// retried until the database answers.
    async fn load_devices(&mut self, batch: &[Inbound]) {
        let (ttl, now) = (self.config.cache_ttl, Instant::now());
        let stale: HashSet<&str> = batch
            .iter()
            .filter_map(|m| match &m.modbus {
                Some(report) => Some(report.serial.as_str()),
                None => payload::parse_topic(&self.config.prefix, &m.topic).ok().map(|(serial, _)| serial),
            })
            .filter(|serial| self.devices.get(*serial).is_none_or(|(at, _)| now.duration_since(*at) >= ttl))
            .collect();
        if stale.is_empty() {
            return;
        }
        let serials: Vec<String> = stale.into_iter().map(str::to_owned).collect();
        let found = self.health.retry("devices", || tel::devices_by_serials(self.store.db(), &serials)).await;
        let mut found: HashMap<String, Arc<DeviceInfo>> =
            found.into_iter().map(|d| (d.serial.clone(), Arc::new(d))).collect();
        for serial in serials {
            let device = found.remove(&serial);
            self.devices.insert(serial, (now, device));
        }
    }

    /// The device with this serial (cached; [`Validator::load_devices`] loaded the batch's).
    async fn device(&mut self, serial: &str) -> Option<Arc<DeviceInfo>> {
        if let Some((at, d)) = self.devices.get(serial)
            && at.elapsed() < self.config.cache_ttl
        {
            return d.clone();
        }
        let serials = [serial.to_owned()];
        let found = self.health.retry("devices", || tel::devices_by_serials(self.store.db(), &serials)).await;
        let d = found.into_iter().next().map(Arc::new);
        self.devices.insert(serial.to_owned(), (Instant::now(), d.clone()));
        d
    }

    async fn validate(&mut self, msg: &Inbound, work: &mut Vec<Work>) {
        if let Some(report) = &msg.modbus {
            return self.validate_modbus(msg, report, work).await;
        }
        let (serial, kind) = match payload::parse_topic(&self.config.prefix, &msg.topic) {
            Ok(found) => found,
            Err(r) => return self.reject(None, None, msg, r.reason.code(), &r.detail).await,
        };
        let topic_label = match kind {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Event => "event",
            TopicKind::Status => "status",
            TopicKind::CommandAck => "cmd_ack",
        };
        self.metrics.messages.with_label_values(&[topic_label]).inc();
        let Some(device) = self.device(serial).await else {
            return self
                .reject(None, Some(serial), msg, "unknown_device", "no device is registered with this serial")
                .await;
        };
        // Before anything reads it: bigger than any valid message (and than the embedded
        // broker takes); a dead letter, not a reason to drop the connection.
        if let Err(r) = payload::check_size(&msg.payload) {
            return self.reject(Some(&device), Some(serial), msg, r.reason.code(), &r.detail).await;
        }
        let registered = |addr: u8| device.detector(addr).is_some();
        match kind {
            TopicKind::Telemetry => match payload::decode_telemetry(&msg.payload, msg.received_at, registered) {
                Err(r) => self.reject(Some(&device), Some(serial), msg, r.reason.code(), &r.detail).await,
                Ok(t) => {
                    if let Some(seq) = t.seq
                        && self.seen_seq(SeqSeen {
                            serial: serial.to_owned(),
                            seq,
                            at: t.at,
                            received_at: msg.received_at,
                        })
                    {
                        self.metrics.duplicates.inc();
                        return;
                    }
                    for bad in &t.rejected {
                        let detail =
                            format!("detector entry {} (addr {:?}): {}", bad.index, bad.address, bad.rejection.detail);
                        self.reject(Some(&device), Some(serial), msg, bad.rejection.reason.code(), &detail).await;
                    }
                    for (addr, reading) in t.readings {
                        if let Some(detector) = device.detector(addr) {
                            work.push(Work::Reading {
                                device: device.clone(),
                                detector: detector.clone(),
                                reading,
                                received_at: msg.received_at,
                            });
                        }
                    }
                }
            },
            TopicKind::Event => match payload::decode_event(&msg.payload, msg.received_at, registered) {
                Err(r) => self.reject(Some(&device), Some(serial), msg, r.reason.code(), &r.detail).await,
                Ok(event) => {
                    if let Some(detector) = device.detector(event.address) {
                        work.push(Work::Event {
                            device: device.clone(),
                            detector: detector.clone(),
                            event,
                            received_at: msg.received_at,
                        });
                    }
                }
            },
            TopicKind::Status => match payload::decode_status(&msg.payload) {
                Err(r) => self.reject(Some(&device), Some(serial), msg, r.reason.code(), &r.detail).await,
                Ok(online) => work.push(Work::Status { device: device.clone(), online, received_at: msg.received_at }),
            },
            TopicKind::CommandAck => match payload::decode_command_result(&msg.payload) {
                Err(r) => self.reject(Some(&device), Some(serial), msg, r.reason.code(), &r.detail).await,
                Ok(result) => self.command_result(&device, msg, &result).await,
            },
        }
    }

    /// Applies a device's answer to its command at once (its own transaction, retried while
    /// the database fails): the answer is acknowledged to the broker with the batch, after it
    /// was applied. Answers that match no open command of this device are counted and
    /// dead-lettered, never applied.
    async fn command_result(&self, device: &DeviceInfo, msg: &Inbound, result: &payload::CommandResult) {
        let serial = device.serial.as_str();
        match self.health.retry("command_results", || self.commands.apply_ack(device.id, serial, result)).await {
            AckApplied::Applied(_) => {}
            AckApplied::Unknown => {
                let detail = format!("no command {} was sent to this device", result.id);
                tracing::info!(serial, id = %result.id, "command result for an unknown command ignored");
                self.reject(Some(device), Some(serial), msg, "unknown_command", &detail).await;
            }
            AckApplied::Late(status) => {
                let detail = format!("command {} is already {}; the result changes nothing", result.id, status.code());
                tracing::info!(serial, id = %result.id, status = status.code(), "late command result ignored");
                self.reject(Some(device), Some(serial), msg, "command_finished", &detail).await;
            }
        }
    }

    async fn validate_modbus(&mut self, msg: &Inbound, report: &ModbusReport, work: &mut Vec<Work>) {
        self.metrics.messages.with_label_values(&["modbus"]).inc();
        let serial = report.serial.as_str();
        // None: the gateway was deleted while being polled; the poller drops it on its next refresh.
        let Some(device) = self.device(serial).await else { return };
        let Some(detector) = device.detector(report.address).cloned() else { return };
        let received_at = msg.received_at;
        match &report.outcome {
            ModbusOutcome::Polled { reading, events, rejected } => {
                for (reason, detail) in rejected {
                    self.reject(Some(&device), Some(serial), msg, reason, detail).await;
                }
                work.push(Work::Reading {
                    device: device.clone(),
                    detector: detector.clone(),
                    reading: reading.clone(),
                    received_at,
                });
                for event in events {
                    work.push(Work::Event {
                        device: device.clone(),
                        detector: detector.clone(),
                        event: event.clone(),
                        received_at,
                    });
                }
            }
            ModbusOutcome::CommLost { detail } => {
                work.push(Work::CommLost { device, detector, detail: detail.clone(), received_at });
            }
            ModbusOutcome::CommRestored => work.push(Work::CommRestored { device, detector, received_at }),
        }
    }

    /// Whether `(serial, seq)` was stored within the window, or came earlier in this batch,
    /// with the same device time. A QoS 1 redelivery repeats the whole payload, so seq *and*
    /// timestamp match; a device that rebooted and restarted its counter sends new times, and
    /// its readings must not be thrown away as duplicates. A redelivery of a message that is
    /// still on its way to the store passes here; the store recognises it by its readings'
    /// keys.
    fn seen_seq(&mut self, s: SeqSeen) -> bool {
        if self.seqs.contains(&s) {
            return true;
        }
        let SeqSeen { serial, seq, at, received_at } = s;
        self.batch_seqs.insert((serial, seq, at), received_at).is_some()
    }
}

impl RecentSeqs {
    /// Forgets entries received more than [`SEQ_WINDOW`] before `now`.
    fn expire(&mut self, now: DateTime<Utc>) {
        while let Some(&(s, t, seen)) = self.order.front()
            && seen < now - SEQ_WINDOW
        {
            self.order.pop_front();
            self.set.remove(&(s, t));
        }
    }

    /// Whether `(seq, at)` was remembered within [`SEQ_WINDOW`] before `now`.
    fn contains(&mut self, seq: u64, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.expire(now);
        self.set.contains(&(seq, at))
    }

    /// Remembers `(seq, at)`, received at `now`.
    fn remember(&mut self, seq: u64, at: DateTime<Utc>, now: DateTime<Utc>) {
        self.expire(now);
        if self.set.insert((seq, at)) {
            self.order.push_back((seq, at, now));
        }
    }

    /// [`RecentSeqs::contains`], remembering it when it was not.
    #[cfg(test)]
    fn seen(&mut self, seq: u64, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if self.contains(seq, at, now) {
            return true;
        }
        self.remember(seq, at, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_seqs_know_redeliveries_not_restarted_counters_and_forget_after_the_window() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let s = chrono::Duration::seconds;
        let mut q = RecentSeqs::default();
        assert!(!q.seen(1, t0, t0));
        assert!(!q.seen(2, t0 + s(1), t0 + s(1)));
        assert!(q.seen(1, t0, t0 + s(2)), "a redelivery repeats seq and device time");
        assert!(!q.seen(1, t0 + s(60), t0 + s(60)), "a restarted counter sends new device times");
        assert!(q.seen(2, t0 + s(1), t0 + s(61)));
        // Past the window the first entries are forgotten, and the set with them.
        let later = t0 + SEQ_WINDOW + s(30);
        assert!(!q.seen(1, t0, later));
        assert!(!q.seen(2, t0 + s(1), later));
        assert!(q.seen(1, t0 + s(60), later), "still within the window");
        assert_eq!(q.order.len(), q.set.len());
    }
}
