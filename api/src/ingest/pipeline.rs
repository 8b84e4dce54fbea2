//! The ingestion pipeline: two tasks that drain the inbound queue in batches — the first
//! validates batch n+1 while the second stores batch n.
//!
//! Per batch: decode and validate every message (rejections go to the dead-letter log and
//! are counted by reason), drop redeliveries (same `(serial, seq, ts)` within 10 minutes, or a
//! reading already stored for the same detector and device time), then split the batch:
//! - the **alarm path**: every reading that may change a detector's alarm state, device
//!   events and online/offline changes, in ONE transaction that stores those readings and
//!   applies what they mean to episodes, hazards and events; published when it commits;
//! - the **readings lane**: quiet readings ([`alarm::is_quiet`] — the bulk of a healthy
//!   site's traffic) are stored by inserts of their own beside it, batches merged while
//!   they wait, so an alarm never queues behind them.
//!
//! Batches settle in order once their quiet readings are stored: rollups, latest values,
//! followed `readings`, and only then are the batch's deliveries acknowledged.
//!
//! Evaluation state (delay timers, active conditions) lives in memory; the episodes it
//! produces live in the store, so a restart neither loses nor duplicates episodes (at worst
//! a pending delay timer starts again).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use sparkwatch_domain::alarm::{self, Change, DetectorState, Signal};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::notify::{self, EscalationPolicy, Locale, Severity};
use sparkwatch_domain::payload::{self, TopicKind};
use sparkwatch_domain::reading::{Channel, DeviceEvent, EventCategory, EventKind, Reading};
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_domain::thresholds::EffectiveThresholds;
use tokio::sync::mpsc;

use super::latest::LatestCache;
use super::{Inbound, ModbusOutcome, ModbusReport};
use crate::bus::{Bus, BusMessage, DeviceStatus, Envelope, Feed, ReadingNote};
use crate::metrics::Metrics;
use crate::service::commands::{AckApplied, Ledger};
use crate::service::notify::{schedule_escalation, schedule_routing};
use crate::service::{Clock, Services};
use crate::store::Store;
use crate::store::hazards::{EventView, Hazard, event_view, hazard_from};
use crate::store::telemetry::{self as tel, DetectorInfo, DeviceInfo, NewEvent, NewReading, Occurrence, Rollup};
use crate::store::thresholds::{self as th, Level};

/// Tuning of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// MQTT topic prefix (`sw`).
    pub prefix: String,
    /// Most messages per batch.
    pub batch_max: usize,
    /// How long to wait for a batch to fill once its first message arrived. Short: while
    /// the store stage is busy the next batch fills anyway; when it is idle, waiting only
    /// delays the alarm in the batch (10 ms cost 10 ms of publish → hazard p50 and no
    /// throughput: BENCHMARKS.md, ingestion run 9).
    pub batch_wait: Duration,
    /// How long device and threshold lookups are cached.
    pub cache_ttl: Duration,
    /// How often heartbeats are checked.
    pub housekeeping: Duration,
    /// How often `last_seen_at` and the rollups are written back. Each write-back is a few
    /// statements per device/cell, so doing it every heartbeat tick cost PostgreSQL more
    /// round trips than the readings themselves.
    pub flush_every: Duration,
    /// Raw readings older than this are deleted (rollups are kept); `None` keeps everything.
    pub raw_retention: Option<chrono::Duration>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            prefix: "sw".into(),
            batch_max: 1000,
            batch_wait: Duration::from_millis(2),
            // Local changes invalidate at once (see `site_generation`); the TTL only bounds how
            // long a change made through another instance takes to apply.
            cache_ttl: Duration::from_secs(60),
            housekeeping: Duration::from_secs(2),
            flush_every: Duration::from_secs(15),
            raw_retention: None,
        }
    }
}

/// A message that passed validation, waiting for the batch's transaction.
pub(super) enum Work {
    Reading { device: Arc<DeviceInfo>, detector: DetectorInfo, reading: Reading, received_at: DateTime<Utc> },
    Event { device: Arc<DeviceInfo>, detector: DetectorInfo, event: DeviceEvent, received_at: DateTime<Utc> },
    Status { device: Arc<DeviceInfo>, online: bool, received_at: DateTime<Utc> },
    CommLost { device: Arc<DeviceInfo>, detector: DetectorInfo, detail: String, received_at: DateTime<Utc> },
    CommRestored { device: Arc<DeviceInfo>, detector: DetectorInfo, received_at: DateTime<Utc> },
}

impl Work {
    /// The device and receive time when this work means the device itself was heard from
    /// (Modbus communication faults are the poller's word, not the device's).
    fn heard_from(&self) -> Option<(&Arc<DeviceInfo>, DateTime<Utc>)> {
        match self {
            Work::Reading { device, received_at, .. }
            | Work::Event { device, received_at, .. }
            | Work::Status { device, online: true, received_at } => Some((device, *received_at)),
            _ => None,
        }
    }
}

/// What the pipeline knows about a device's liveness.
struct Liveness {
    device: Arc<DeviceInfo>,
    online: bool,
    last_seen: DateTime<Utc>,
    dirty: bool,
}

/// The pipeline's state; owned by its task.
pub struct Pipeline {
    store: Store,
    metrics: Metrics,
    latest: Arc<LatestCache>,
    clock: Arc<dyn Clock>,
    config: PipelineConfig,
    // Maps looked up per reading are keyed by ids and hashed with foldhash (SipHash showed
    // in profiles).
    thresholds: foldhash::HashMap<DetectorId, (Instant, EffectiveThresholds)>,
    states: foldhash::HashMap<DetectorId, DetectorState>,
    liveness: foldhash::HashMap<DeviceId, Liveness>,
    /// Minute cells since the last write-back.
    rollups: Cells,
    last_prune: Option<Instant>,
    last_flush: Instant,
    site_generation: Arc<std::sync::atomic::AtomicU64>,
    seen_generation: u64,
    bus: Bus,
    outbox: Outbox,
    policies: HashMap<TenantId, (Instant, EscalationPolicy)>,
    commands: Ledger,
    /// The write-back task's inbox, while `run` runs.
    write_back: Option<mpsc::Sender<WriteBack>>,
}

/// What a transaction changed, published on the bus once it commits. Built from the rows
/// as the transaction wrote them: reading them back after the commit cost four round trips
/// between the commit and the first subscriber.
#[derive(Default)]
struct Outbox {
    events: Vec<(TenantId, EventView)>,
    /// The hazards' latest versions, by id.
    hazards: HashMap<uuid::Uuid, Hazard>,
    statuses: Vec<(TenantId, DeviceStatus)>,
}

/// Recently seen `(seq, device time)` of one device: in arrival order with their receive
/// time (for expiry) and as a set (for the look-up). A device reporting every second keeps
/// 600 in the window; scanning them per message showed in profiles.
#[derive(Default)]
struct RecentSeqs {
    order: VecDeque<(u64, DateTime<Utc>, DateTime<Utc>)>,
    set: foldhash::HashSet<(u64, DateTime<Utc>)>,
}

/// Raw readings deleted per statement by the retention purge.
const PRUNE_CHUNK: u64 = 10_000;

/// Inserts of quiet readings running at once (each on its own pooled connection, beside the
/// alarm path's transaction).
const LANE_INSERTS: usize = 2;
/// Most quiet readings in one insert; batches waiting for the lane are merged up to this.
const LANE_ROWS_PER_INSERT: usize = 5_000;
/// Quiet readings waiting for the lane at which the pipeline stops taking batches: the
/// backpressure reaches the broker as before, with the memory bounded.
const LANE_MAX_WAITING: usize = 10_000;

/// A batch whose alarm path is done: its quiet readings still to be stored and what
/// follows once they are.
struct Settling {
    rows: Vec<NewReading>,
    /// Every new reading of the batch, in batch order.
    readings: Vec<Settled>,
    acks: Vec<super::Ack>,
    started: Instant,
}

/// A reading on its way to the rollups, the latest values and the `readings` feeds.
struct Settled {
    tenant: TenantId,
    detector: DetectorId,
    project: ProjectId,
    reading: Reading,
    /// Stored by the readings lane: it counts only if that insert reports it as new.
    quiet: bool,
}

impl Settled {
    fn of(device: &DeviceInfo, detector: &DetectorInfo, reading: Reading, quiet: bool) -> Self {
        Settled { tenant: device.tenant, detector: detector.id, project: detector.project, reading, quiet }
    }
}

/// Devices and detectors with a message of the batch on the alarm path so far.
#[derive(Default)]
struct Loud {
    devices: foldhash::HashSet<DeviceId>,
    detectors: foldhash::HashSet<DetectorId>,
}

/// The row of a reading.
fn new_reading(
    device: &DeviceInfo,
    detector: &DetectorInfo,
    reading: &Reading,
    received_at: DateTime<Utc>,
) -> NewReading {
    NewReading {
        tenant: device.tenant,
        detector: detector.id,
        at: reading.at,
        received_at,
        values: values_json(reading),
    }
}

/// What one insert of the readings lane reported.
struct LaneInsert {
    /// The readings that were new, keyed as in [`key`].
    inserted: foldhash::HashSet<(DetectorId, DateTime<Utc>)>,
    rows: usize,
    took: Duration,
}

type LaneFuture = BoxFuture<'static, (Result<LaneInsert, sea_orm::DbErr>, Vec<Settling>)>;

/// Quiet readings on their way to the store, off the alarm path: batches wait in order,
/// are merged into inserts, and settle in the order they came.
struct ReadingsLane {
    waiting: VecDeque<Settling>,
    waiting_rows: usize,
    storing: FuturesOrdered<LaneFuture>,
    /// Whether an insert may run beside the alarm path's transaction. Not on SQLite: with
    /// one writer, the transaction would only wait for the insert in the busy handler's
    /// sleeps, so there the store task waits for the lane before its next batch.
    beside: bool,
}

impl ReadingsLane {
    fn new(store: &Store) -> Self {
        let beside = store.db().get_database_backend() != sea_orm::DbBackend::Sqlite;
        ReadingsLane { waiting: VecDeque::new(), waiting_rows: 0, storing: FuturesOrdered::new(), beside }
    }

    /// Whether the store task may take the next batch.
    fn has_room(&self) -> bool {
        self.waiting_rows < LANE_MAX_WAITING && (self.beside || self.storing.is_empty())
    }

    fn push(&mut self, part: Settling) {
        self.waiting_rows += part.rows.len();
        self.waiting.push_back(part);
    }

    /// Starts inserts of the waiting batches while fewer than [`LANE_INSERTS`] run. Each
    /// insert is a task of its own: polled only by the store task, it would stall while
    /// that task works on the alarm path — on SQLite holding the write lock that the
    /// alarm path's transaction waits for.
    fn start(&mut self, store: &Store) {
        while self.storing.len() < LANE_INSERTS && !self.waiting.is_empty() {
            let mut parts = Vec::new();
            let mut rows = Vec::new();
            while let Some(next) = self.waiting.front()
                && (rows.is_empty() || rows.len() + next.rows.len() <= LANE_ROWS_PER_INSERT)
                && let Some(mut part) = self.waiting.pop_front()
            {
                rows.append(&mut part.rows);
                parts.push(part);
            }
            self.waiting_rows -= rows.len();
            let store = store.clone();
            let insert = tokio::spawn(async move {
                let started = Instant::now();
                let inserted =
                    if rows.is_empty() { Default::default() } else { tel::insert_readings(store.db(), &rows).await? };
                Ok(LaneInsert { inserted: stored_keys(inserted), rows: rows.len(), took: started.elapsed() })
            });
            self.storing.push_back(Box::pin(async move {
                let result = insert
                    .await
                    .unwrap_or_else(|e| Err(sea_orm::DbErr::Custom(format!("the readings insert task failed: {e}"))));
                (result, parts)
            }));
        }
    }
}

/// Redeliveries are recognised for this long by `(serial, seq, ts)`.
const SEQ_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

impl Pipeline {
    /// A pipeline over the services' ingestion store, publishing on their bus.
    pub fn new(services: &Services, config: PipelineConfig) -> Self {
        Pipeline {
            store: services.store().ingestion(),
            metrics: services.metrics().clone(),
            latest: services.latest().clone(),
            clock: services.clock(),
            config,
            thresholds: Default::default(),
            states: Default::default(),
            liveness: Default::default(),
            rollups: Cells::default(),
            last_prune: None,
            last_flush: Instant::now(),
            site_generation: services.site_generation(),
            seen_generation: 0,
            bus: services.bus().clone(),
            outbox: Outbox::default(),
            policies: HashMap::new(),
            commands: services.commands().clone(),
            write_back: None,
        }
    }

    /// Drains the queue until every sender is gone, then flushes.
    pub async fn run(mut self, rx: mpsc::Receiver<Inbound>) {
        if let Err(e) = self.load_liveness().await {
            tracing::warn!(error = %e, "could not load device liveness; heartbeats start fresh");
        }
        // Decoding and validating batch n+1 overlaps with storing batch n: two stages, two
        // tasks, at most one validated batch waiting in between.
        let (validated_tx, mut validated) = mpsc::channel::<Validated>(1);
        let validator = Validator {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            devices: HashMap::new(),
            seqs: HashMap::new(),
            site_generation: self.site_generation.clone(),
            seen_generation: 0,
            commands: self.commands.clone(),
        };
        tokio::spawn(validator.run(rx, validated_tx));
        let (write_back_tx, write_back_rx) = mpsc::channel(1);
        self.write_back = Some(write_back_tx);
        let writer = tokio::spawn(write_back(self.store.clone(), write_back_rx));
        let mut tick = tokio::time::interval(self.config.housekeeping);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lane = ReadingsLane::new(&self.store);
        loop {
            tokio::select! {
                batch = validated.recv(), if lane.has_room() => {
                    let Some(batch) = batch else { break };
                    if let Some(part) = self.store_batch(batch).await {
                        lane.push(part);
                    }
                }
                Some((stored, parts)) = lane.storing.next(), if !lane.storing.is_empty() => {
                    self.settle(stored, parts).await;
                }
                _ = tick.tick() => self.housekeeping(false).await,
            }
            lane.start(&self.store);
        }
        // Every batch taken is stored and settled before the pipeline counts as stopped.
        lane.start(&self.store);
        while let Some((stored, parts)) = lane.storing.next().await {
            self.settle(stored, parts).await;
            lane.start(&self.store);
        }
        self.housekeeping(true).await;
        // The last write-back is done before the pipeline counts as stopped.
        self.write_back = None;
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "the write-back task failed");
        }
    }

    /// Applies one validated batch on the alarm path and hands the rest to the readings
    /// lane; never fails as a whole — a database error leaves the batch unacknowledged so
    /// the broker redelivers it.
    async fn store_batch(&mut self, batch: Validated) -> Option<Settling> {
        // A device, detector, threshold or policy changed: look them up afresh.
        let generation = self.site_generation.load(std::sync::atomic::Ordering::Relaxed);
        if generation != self.seen_generation {
            self.seen_generation = generation;
            self.thresholds.clear();
            self.policies.clear();
        }
        let Validated { work, acks, started } = batch;
        match self.apply(work).await {
            Ok((rows, readings)) => Some(Settling { rows, readings, acks, started }),
            Err(e) => {
                tracing::error!(error = %e, "storing a batch failed; it will be redelivered");
                None
            }
        }
    }

    /// Finishes batches whose quiet readings were stored (`stored` is what the insert
    /// reported as new), in batch order: rollups, latest values, followed `readings`, then
    /// the acknowledgements. When the insert failed, the alarm path's readings still count
    /// (they are committed) but the batches stay unacknowledged, so the broker redelivers
    /// the quiet ones.
    async fn settle(&mut self, stored: Result<LaneInsert, sea_orm::DbErr>, parts: Vec<Settling>) {
        let inserted = match stored {
            Ok(insert) => {
                self.metrics.readings_stored.inc_by(insert.inserted.len() as u64);
                tracing::debug!(
                    readings = insert.rows,
                    batches = parts.len(),
                    insert_ms = insert.took.as_secs_f64() * 1e3,
                    "quiet readings stored"
                );
                Some(insert.inserted)
            }
            Err(e) => {
                tracing::error!(error = %e, "storing quiet readings failed; their batches will be redelivered");
                None
            }
        };
        let followed =
            if parts.iter().all(|p| p.readings.is_empty()) { Default::default() } else { self.bus.readings_wanted() };
        let mut latest = Vec::new();
        let mut notes = Vec::new();
        let mut acks = Vec::new();
        for part in parts {
            for r in part.readings {
                if r.quiet {
                    match &inserted {
                        Some(inserted) if inserted.contains(&key(r.detector, &r.reading)) => {}
                        Some(_) => {
                            self.metrics.duplicates.inc();
                            continue;
                        }
                        None => continue,
                    }
                }
                self.accumulate(r.detector, &r.reading);
                if followed.contains(&r.detector) {
                    let note =
                        ReadingNote { detector_id: r.detector, project_id: r.project, reading: r.reading.clone() };
                    notes.push(Envelope {
                        tenant: r.tenant,
                        feed: Feed::Readings(r.detector),
                        message: BusMessage::Reading(Box::new(note)),
                    });
                }
                latest.push((r.detector, r.reading));
            }
            if inserted.is_some() {
                acks.extend(part.acks);
            }
            self.metrics.batch_seconds.observe(part.started.elapsed().as_secs_f64());
        }
        if !notes.is_empty() {
            self.bus.publish(notes);
        }
        self.latest.put_all(latest).await;
        acks.into_iter().for_each(|ack| ack());
    }

    /// Resolves the thresholds of every detector in `work` that has none cached or an
    /// expired one — one query for the batch: looked up per detector (three queries each),
    /// the cache expiring for a thousand detectors at once held a batch, and the alarms in
    /// it, for a second.
    async fn load_thresholds(&mut self, work: &[Work]) -> Result<(), sea_orm::DbErr> {
        let (ttl, now) = (self.config.cache_ttl, Instant::now());
        let stale: HashMap<DetectorId, (TenantId, ProjectId)> = work
            .iter()
            .filter_map(|w| match w {
                Work::Reading { device, detector, .. } => Some((detector.id, (device.tenant, detector.project))),
                _ => None,
            })
            .filter(|(id, _)| self.thresholds.get(id).is_none_or(|(at, _)| now.duration_since(*at) >= ttl))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<uuid::Uuid> =
            stale.iter().flat_map(|(d, (t, p))| [d.as_uuid(), t.as_uuid(), p.as_uuid()]).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = th::get_many(self.store.db(), &ids).await?;
        let at = |tenant: TenantId, level: Level, id: uuid::Uuid| {
            found.get(&(tenant, level, id)).cloned().unwrap_or_default()
        };
        for (detector, (tenant, project)) in stale {
            let eff = EffectiveThresholds::resolve(
                &at(tenant, Level::Tenant, tenant.as_uuid()),
                &at(tenant, Level::Project, project.as_uuid()),
                &at(tenant, Level::Detector, detector.as_uuid()),
            );
            self.thresholds.insert(detector, (now, eff));
        }
        Ok(())
    }

    /// The first time a detector is evaluated after a start (it has no state yet), conditions
    /// whose alarm episodes are still active are restored, so a restart does not raise them
    /// again.
    async fn restore_state(&mut self, tx: &DatabaseTransaction, detector: DetectorId) -> Result<(), sea_orm::DbErr> {
        let mut state = DetectorState::default();
        for ep in tel::active_conditions(tx, detector.as_uuid()).await? {
            if let (Some(channel), Some(kind)) = (Channel::parse(&ep.channel), EventKind::from_code(&ep.kind)) {
                state.restore_active(channel, kind, EventCategory::Alarm, ep.setpoint.unwrap_or_default());
            }
        }
        self.states.insert(detector, state);
        Ok(())
    }

    /// Splits a batch into its quiet readings ([`alarm::is_quiet`]: for a detector with
    /// nothing pending or active, a reading that enters no rule) and the rest, applies the
    /// rest in one transaction — its readings stored with it, alarm signals, device events,
    /// online/offline changes — and publishes what that changed. Returns the quiet readings
    /// to store and every new reading of the batch, in order, for [`Pipeline::settle`].
    ///
    /// Quiet readings go to the readings lane because storing them is most of a batch's
    /// work, and an alarm must not wait behind it (BENCHMARKS.md, bench-live runs 8–9). They
    /// need no redelivery check before they are evaluated: evaluating a quiet reading changes
    /// nothing but the channels' latest times. Every other reading is still checked against
    /// the store first, so a redelivered alarm reading never counts twice.
    async fn apply(&mut self, work: Vec<Work>) -> Result<(Vec<NewReading>, Vec<Settled>), sea_orm::DbErr> {
        let mut quiet_rows = Vec::new();
        let mut settled = Vec::with_capacity(work.len());
        if work.is_empty() {
            return Ok((quiet_rows, settled));
        }
        let now = self.clock.now();
        let mut seen_in_batch = foldhash::HashSet::default();
        let mut fresh = Vec::with_capacity(work.len());
        for w in work {
            if let Work::Reading { detector, reading, .. } = &w
                && !seen_in_batch.insert((detector.id, reading.at))
            {
                self.metrics.duplicates.inc();
                continue;
            }
            fresh.push(w);
        }
        self.load_thresholds(&fresh).await?;
        // Once a detector has a reading on the alarm path, its later readings of the batch
        // follow it there: they must be evaluated after it. So do a device's readings after
        // any other message of it (a last will, say: the reading after it brings it back).
        let mut loud = Loud::default();
        let mut rows = Vec::new();
        let mut applied = Vec::new();
        for w in fresh {
            match w {
                Work::Reading { device, detector, reading, received_at }
                    if self.evaluate_if_quiet(&loud, &device, &detector, &reading) =>
                {
                    // The device is online, so this only moves its last-seen time.
                    self.note_seen(&device, received_at);
                    quiet_rows.push(new_reading(&device, &detector, &reading, received_at));
                    settled.push(Settled::of(&device, &detector, reading, true));
                }
                w => {
                    match &w {
                        Work::Reading { device, detector, reading, received_at } => {
                            loud.detectors.insert(detector.id);
                            rows.push(new_reading(device, detector, reading, *received_at));
                        }
                        Work::Event { device, .. }
                        | Work::Status { device, .. }
                        | Work::CommLost { device, .. }
                        | Work::CommRestored { device, .. } => {
                            loud.devices.insert(device.id);
                        }
                    }
                    applied.push(w);
                }
            }
        }
        if applied.is_empty() {
            return Ok((quiet_rows, settled));
        }
        // Whatever an earlier, rolled-back transaction noted never happened.
        self.outbox = Outbox::default();
        let t_begin = Instant::now();
        let tx = self.store.begin().await?;
        let inserted: foldhash::HashSet<(DetectorId, DateTime<Utc>)> =
            if rows.is_empty() { Default::default() } else { stored_keys(tel::insert_readings(&tx, &rows).await?) };
        self.metrics.readings_stored.inc_by(inserted.len() as u64);
        // A reading that was already stored is a redelivery (e.g. after a restart): it was
        // evaluated the first time, so it must not count again.
        applied.retain(|w| match w {
            Work::Reading { detector, reading, .. } => {
                let new = inserted.contains(&key(detector.id, reading));
                if !new {
                    self.metrics.duplicates.inc();
                }
                new
            }
            _ => true,
        });
        let t_inserted = Instant::now();
        for w in &applied {
            // The rare cases are awaited behind a check: building their futures (with their
            // queries' futures inside) for every reading showed in profiles.
            if let Some((device, at)) = w.heard_from()
                && self.note_seen(device, at)
            {
                self.came_online(&tx, device, at, now).await?;
            }
            match w {
                Work::Reading { device, detector, reading, received_at } => {
                    let thresholds = self
                        .thresholds
                        .get(&detector.id)
                        .map(|(_, t)| *t)
                        .ok_or_else(|| sea_orm::DbErr::Custom("thresholds were not loaded for the batch".into()))?;
                    if !self.states.contains_key(&detector.id) {
                        self.restore_state(&tx, detector.id).await?;
                    }
                    let state = self.states.entry(detector.id).or_default();
                    for signal in alarm::evaluate(state, &thresholds, reading) {
                        self.apply_signal(&tx, device, detector, signal, *received_at, now).await?;
                    }
                }
                Work::Event { device, detector, event, received_at } => {
                    self.apply_device_event(&tx, device, detector, event, *received_at, now).await?;
                }
                Work::CommLost { device, detector, detail, received_at } => {
                    let occ = occurrence(
                        device,
                        Some(detector),
                        &Channel::DETECTOR,
                        EventKind::Offline,
                        EventCategory::Fault,
                        "system",
                        *received_at,
                        *received_at,
                        now,
                        None,
                        None,
                    );
                    let episode = self.raise(&tx, &occ).await?;
                    let remarks = Some(format!("communication lost: 3 polls in a row failed ({detail})"));
                    self.record(&tx, device, &occ.event(Some(episode), remarks)).await?;
                }
                Work::CommRestored { device, detector, received_at } => {
                    let episode = tel::clear(
                        &tx,
                        detector.id.as_uuid(),
                        &Channel::DETECTOR.code(),
                        EventKind::Offline.code(),
                        *received_at,
                        true,
                    )
                    .await?;
                    let remarks = Some("communication restored".to_owned());
                    self.record(
                        &tx,
                        device,
                        &occurrence(
                            device,
                            Some(detector),
                            &Channel::DETECTOR,
                            EventKind::Online,
                            EventCategory::Status,
                            "system",
                            *received_at,
                            *received_at,
                            now,
                            None,
                            None,
                        )
                        .event(episode, remarks),
                    )
                    .await?;
                }
                Work::Status { device, online, received_at } => {
                    if !*online {
                        self.went_offline(&tx, device, *received_at, now, "the device reported offline (last will)")
                            .await?;
                    }
                }
            }
        }
        let t_applied = Instant::now();
        tx.commit().await?;
        let t_committed = Instant::now();
        self.publish();
        for w in applied {
            if let Work::Reading { device, detector, reading, .. } = w {
                settled.push(Settled::of(&device, &detector, reading, false));
            }
        }
        tracing::debug!(
            readings = rows.len(),
            quiet = quiet_rows.len(),
            insert_ms = (t_inserted - t_begin).as_secs_f64() * 1e3,
            apply_ms = (t_applied - t_inserted).as_secs_f64() * 1e3,
            commit_ms = (t_committed - t_applied).as_secs_f64() * 1e3,
            publish_ms = t_committed.elapsed().as_secs_f64() * 1e3,
            "batch applied"
        );
        Ok((quiet_rows, settled))
    }

    /// Evaluates a reading that can skip the alarm path, and says whether it could: its
    /// device is online (otherwise the reading brings it back, which the transaction
    /// records), neither its device nor its detector has an earlier message of this batch
    /// on the alarm path, its detector's state is loaded, and the reading is quiet
    /// ([`alarm::evaluate_if_quiet`]).
    fn evaluate_if_quiet(
        &mut self,
        loud: &Loud,
        device: &DeviceInfo,
        detector: &DetectorInfo,
        reading: &Reading,
    ) -> bool {
        if loud.detectors.contains(&detector.id)
            || loud.devices.contains(&device.id)
            || !self.liveness.get(&device.id).is_some_and(|l| l.online)
        {
            return false;
        }
        match (self.states.get_mut(&detector.id), self.thresholds.get(&detector.id)) {
            (Some(state), Some((_, thresholds))) => alarm::evaluate_if_quiet(state, thresholds, reading),
            _ => false,
        }
    }

    async fn apply_signal(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        det: &DetectorInfo,
        signal: Signal,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let Signal { change, kind, channel, category, value, setpoint, at } = signal;
        let alarm = category == EventCategory::Alarm;
        match change {
            Change::Raised => {
                let occ = occurrence(
                    device,
                    Some(det),
                    &channel,
                    kind,
                    category,
                    "engine",
                    at,
                    received_at,
                    now,
                    Some(value),
                    Some(setpoint),
                );
                // Pre-alarms are early warnings: recorded as events, not latched, no hazard.
                let episode = if alarm { Some(self.raise(tx, &occ).await?) } else { None };
                let remarks = Some(describe(kind, category, &channel, Some(value), Some(setpoint)));
                self.record(tx, device, &occ.event(episode, remarks)).await?;
            }
            Change::Continuing => {
                if alarm {
                    tel::touch(tx, det.id.as_uuid(), &channel.code(), kind.code(), value, at).await?;
                }
            }
            Change::Cleared | Change::Superseded => {
                // Alarms stay latched: the episode stays open until its hazard is handled.
                let episode = if alarm {
                    tel::clear(tx, det.id.as_uuid(), &channel.code(), kind.code(), at, false).await?
                } else {
                    None
                };
                if change == Change::Cleared {
                    let remarks = Some(format!(
                        "{} back to normal ({})",
                        kind_label(kind, category),
                        fmt_value(&channel, Some(value))
                    ));
                    self.record(
                        tx,
                        device,
                        &occurrence(
                            device,
                            Some(det),
                            &channel,
                            EventKind::Recovered,
                            EventCategory::Recovery,
                            "engine",
                            at,
                            received_at,
                            now,
                            Some(value),
                            None,
                        )
                        .event(episode, remarks),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn apply_device_event(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        det: &DetectorInfo,
        e: &DeviceEvent,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        // A redelivered device event (same detector, kind, channel and device time) counts once.
        use sparkwatch_entity::event as ev;
        let duplicate = ev::Entity::find()
            .filter(ev::Column::DetectorId.eq(det.id.as_uuid()))
            .filter(ev::Column::Kind.eq(e.kind.code()))
            .filter(ev::Column::Channel.eq(e.channel.code()))
            .filter(ev::Column::At.eq(e.at))
            .filter(ev::Column::Source.eq("device"))
            .one(tx)
            .await?
            .is_some();
        if duplicate {
            self.metrics.duplicates.inc();
            return Ok(());
        }
        let category = e.kind.category();
        let occ = occurrence(
            device,
            Some(det),
            &e.channel,
            e.kind,
            category,
            "device",
            e.at,
            received_at,
            now,
            e.value,
            e.setpoint,
        );
        let mut episode = None;
        if e.kind.is_alarm() || e.kind.is_fault() {
            episode = Some(self.raise(tx, &occ).await?);
        } else if e.kind == EventKind::Recovered
            && let Some(cause) = e.cause
        {
            // Faults clear themselves; alarms stay latched until their hazard is handled.
            episode = tel::clear(tx, det.id.as_uuid(), &e.channel.code(), cause.code(), e.at, cause.is_fault()).await?;
        }
        let remarks = Some(match (e.kind, e.cause) {
            (EventKind::Recovered, Some(cause)) => {
                format!("{} ended (reported by the device)", kind_label(cause, cause.category()))
            }
            (kind, _) => {
                format!("{} (reported by the device)", describe(kind, category, &e.channel, e.value, e.setpoint))
            }
        });
        self.record(tx, device, &occ.event(episode, remarks)).await?;
        Ok(())
    }

    /// Notes that a device was heard from at `at`; true when it was offline, and
    /// [`Pipeline::came_online`] is to record that it is back.
    fn note_seen(&mut self, device: &Arc<DeviceInfo>, at: DateTime<Utc>) -> bool {
        let entry = self.liveness.entry(device.id).or_insert_with(|| Liveness {
            device: device.clone(),
            online: device.online,
            last_seen: at,
            dirty: true,
        });
        entry.last_seen = entry.last_seen.max(at);
        entry.dirty = true;
        entry.device = device.clone();
        !std::mem::replace(&mut entry.online, true)
    }

    /// Records that a device that was offline is online again (see [`Pipeline::note_seen`]).
    async fn came_online(
        &mut self,
        tx: &DatabaseTransaction,
        device: &Arc<DeviceInfo>,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        tel::set_device_seen(tx, device.id, true, Some(at)).await?;
        self.note_status(device, true, at);
        let episode =
            tel::clear(tx, device.id.as_uuid(), &Channel::DETECTOR.code(), EventKind::Offline.code(), at, true).await?;
        let remarks = Some("device online".to_owned());
        self.record(
            tx,
            device,
            &occurrence(
                device,
                None,
                &Channel::DETECTOR,
                EventKind::Online,
                EventCategory::Status,
                "system",
                at,
                now,
                now,
                None,
                None,
            )
            .event(episode, remarks),
        )
        .await?;
        Ok(())
    }

    async fn went_offline(
        &mut self,
        tx: &DatabaseTransaction,
        device: &Arc<DeviceInfo>,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), sea_orm::DbErr> {
        let entry = self.liveness.entry(device.id).or_insert_with(|| Liveness {
            device: device.clone(),
            online: true,
            last_seen: at,
            dirty: false,
        });
        if !entry.online {
            return Ok(());
        }
        entry.online = false;
        tel::set_device_seen(tx, device.id, false, None).await?;
        self.note_status(device, false, at);
        let occ = occurrence(
            device,
            None,
            &Channel::DETECTOR,
            EventKind::Offline,
            EventCategory::Fault,
            "system",
            at,
            at,
            now,
            None,
            None,
        );
        let episode = self.raise(tx, &occ).await?;
        self.record(tx, device, &occ.event(Some(episode), Some(why.to_owned()))).await?;
        Ok(())
    }

    /// Records an event of `device` and remembers it for the bus.
    async fn record(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        e: &NewEvent,
    ) -> Result<(), sea_orm::DbErr> {
        let row = tel::insert_event(tx, e).await?;
        if EventCategory::from_code(e.category).is_some_and(Severity::pushed) {
            schedule_routing(tx, e.tenant, row.id, self.clock.now()).await?;
        }
        self.outbox.events.push(event_view(row, device.place(e.detector)));
        Ok(())
    }

    /// Opens or repeats an episode and remembers its hazard for the bus.
    async fn raise(&mut self, tx: &DatabaseTransaction, o: &Occurrence) -> Result<uuid::Uuid, sea_orm::DbErr> {
        let raised = tel::raise(tx, o).await?;
        if let Some(hazard) = raised.hazard {
            if raised.new && o.category == EventCategory::Alarm.code() {
                // In this transaction: a committed alarm always has its escalation scheduled.
                let policy = self.escalation_of(o.tenant).await?;
                schedule_escalation(tx, o.tenant, hazard.id, policy, o.processed_at).await?;
            }
            self.outbox.hazards.insert(hazard.id, hazard_from(hazard));
        }
        if raised.new {
            self.metrics.episodes_opened.with_label_values(&[o.kind]).inc();
        }
        Ok(raised.episode)
    }

    async fn escalation_of(&mut self, tenant: TenantId) -> Result<EscalationPolicy, sea_orm::DbErr> {
        if let Some((at, p)) = self.policies.get(&tenant)
            && at.elapsed() < self.config.cache_ttl
        {
            return Ok(*p);
        }
        let policy =
            crate::store::tenants::get(self.store.db(), tenant).await?.map(|t| t.escalation).unwrap_or_default();
        self.policies.insert(tenant, (Instant::now(), policy));
        Ok(policy)
    }

    fn note_status(&mut self, device: &DeviceInfo, online: bool, at: DateTime<Utc>) {
        let status = DeviceStatus {
            device_id: device.id,
            project_id: device.project,
            serial: device.serial.clone(),
            online,
            at,
        };
        self.outbox.statuses.push((device.tenant, status));
    }

    /// Publishes what the committed transaction changed.
    fn publish(&mut self) {
        let Outbox { events, hazards, statuses } = std::mem::take(&mut self.outbox);
        let mut out = Vec::new();
        let statuses = statuses.into_iter().map(|(tenant, s)| (tenant, BusMessage::DeviceStatus(Box::new(s))));
        let events = events.into_iter().map(|(tenant, v)| (tenant, BusMessage::Event(Box::new(v))));
        let hazards = hazards.into_values().map(|h| (h.tenant_id, BusMessage::Hazard(Box::new(h))));
        out.extend(statuses.chain(events).chain(hazards).map(|(tenant, message)| Envelope {
            tenant,
            feed: Feed::Tenant(tenant),
            message,
        }));
        self.bus.publish(out);
    }

    async fn load_liveness(&mut self) -> Result<(), sea_orm::DbErr> {
        let now = self.clock.now();
        for d in tel::devices_by_transport(self.store.db(), DeviceTransport::Mqtt).await? {
            let last_seen = d.last_seen_at.unwrap_or(now);
            self.liveness.insert(d.id, Liveness { online: d.online, last_seen, dirty: false, device: Arc::new(d) });
        }
        Ok(())
    }

    /// Heartbeat timeouts (rule 5), `last_seen_at` write-back and rollup flushing.
    pub async fn housekeeping(&mut self, flush: bool) {
        if let Err(e) = self.try_housekeeping(flush).await {
            tracing::warn!(error = %e, "ingestion housekeeping failed; retrying on the next tick");
        }
    }

    async fn try_housekeeping(&mut self, force_flush: bool) -> Result<(), sea_orm::DbErr> {
        let now = self.clock.now();
        let flush = force_flush || self.last_flush.elapsed() >= self.config.flush_every;
        let mut prune_before = None;
        if let Some(keep) = self.config.raw_retention
            && self.last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
        {
            self.last_prune = Some(Instant::now());
            prune_before = Some(now - keep);
        }
        let due: Vec<(Arc<DeviceInfo>, DateTime<Utc>)> = self
            .liveness
            .values()
            .filter(|l| {
                l.online
                    && l.device.transport == DeviceTransport::Mqtt
                    && alarm::offline_due(l.last_seen, l.device.interval_s, now)
            })
            .map(|l| (l.device.clone(), l.last_seen))
            .collect();
        if flush || prune_before.is_some() {
            self.last_flush = Instant::now();
            let cells = with_coarser_buckets(std::mem::take(&mut self.rollups));
            let mut out = WriteBack { cells, prune_before, ..Default::default() };
            for l in self.liveness.values_mut().filter(|l| l.dirty) {
                l.dirty = false;
                out.seen.insert(l.device.id, l.last_seen);
            }
            if let Some(to) = &self.write_back
                && let Err(mpsc::error::SendError(lost)) = to.send(out).await
            {
                tracing::error!(
                    devices = lost.seen.len(),
                    cells = lost.cells.len(),
                    "the write-back task is gone; last-seen times and rollups of the last interval are lost"
                );
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        self.outbox = Outbox::default();
        let tx = self.store.begin().await?;
        for (device, last_seen) in due {
            let why = format!("no message since {} (heartbeat timeout)", last_seen.format("%Y-%m-%d %H:%M:%S UTC"));
            self.went_offline(&tx, &device, now, now, &why).await?;
        }
        tx.commit().await?;
        self.publish();
        Ok(())
    }

    /// Adds a reading to the in-memory minute cells, one per channel; the hour and day
    /// cells are merged from those when they are handed to the write-back
    /// ([`with_coarser_buckets`]) — updating all three per reading showed in profiles.
    /// Keys are small integers so the per-reading work allocates nothing; channel codes are
    /// spelled out only when the cells are written back.
    fn accumulate(&mut self, detector: DetectorId, r: &Reading) {
        let Ok(start) = r.at.duration_trunc(BUCKETS[MINUTE].1) else { return };
        let series: [&Vec<Option<f64>>; 4] = [&r.leak_ma, &r.temp_c, &r.voltage_v, &r.current_a];
        for (q, values) in series.iter().enumerate() {
            for (i, v) in values.iter().enumerate() {
                let Some(v) = *v else { continue };
                let key = CellKey { detector, bucket: MINUTE as u8, start, series: q as u8, index: i as u8 };
                let one = Cell { min: v, max: v, sum: v, count: 1 };
                self.rollups.entry(key).and_modify(|c| c.merge(one)).or_insert(one);
            }
        }
    }
}

/// The first stage: batches the queue, decodes and validates each message (rejections go to
/// the dead-letter log), drops `(serial, seq)` redeliveries.
struct Validator {
    store: Store,
    metrics: Metrics,
    config: PipelineConfig,
    devices: HashMap<String, (Instant, Option<Arc<DeviceInfo>>)>,
    seqs: HashMap<String, RecentSeqs>,
    site_generation: Arc<std::sync::atomic::AtomicU64>,
    seen_generation: u64,
    commands: Ledger,
}

/// A validated batch on its way to the store stage.
struct Validated {
    work: Vec<Work>,
    acks: Vec<super::Ack>,
    started: Instant,
}

impl Validator {
    async fn run(mut self, mut rx: mpsc::Receiver<Inbound>, out: mpsc::Sender<Validated>) {
        while let Some(first) = rx.recv().await {
            let started = Instant::now();
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
            let generation = self.site_generation.load(std::sync::atomic::Ordering::Relaxed);
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
            if out.send(Validated { work, acks, started }).await.is_err() {
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
        if let Err(e) = tel::insert_dead_letter(self.store.db(), letter).await {
            tracing::warn!(error = %e, "could not write the dead-letter log");
        }
    }

    /// Looks up, in one go, the devices of `batch` that are not cached or whose entry
    /// expired (one by one, a thousand expiring together held the batch for a second). A
    /// failure here only leaves them to [`Validator::device`].
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
        match tel::devices_by_serials(self.store.db(), &serials).await {
            Ok(found) => {
                let mut found: HashMap<String, Arc<DeviceInfo>> =
                    found.into_iter().map(|d| (d.serial.clone(), Arc::new(d))).collect();
                for serial in serials {
                    let device = found.remove(&serial);
                    self.devices.insert(serial, (now, device));
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking up a batch's devices failed; trying one by one"),
        }
    }

    async fn device(&mut self, serial: &str) -> Result<Option<Arc<DeviceInfo>>, sea_orm::DbErr> {
        if let Some((at, d)) = self.devices.get(serial)
            && at.elapsed() < self.config.cache_ttl
        {
            return Ok(d.clone());
        }
        let d = tel::devices_by_serials(self.store.db(), &[serial.to_owned()]).await?.into_iter().next().map(Arc::new);
        self.devices.insert(serial.to_owned(), (Instant::now(), d.clone()));
        Ok(d)
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
        let device = match self.device(serial).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return self
                    .reject(None, Some(serial), msg, "unknown_device", "no device is registered with this serial")
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "device lookup failed");
                return self.reject(None, Some(serial), msg, "unavailable", "device lookup failed").await;
            }
        };
        let registered = |addr: u8| device.detector(addr).is_some();
        match kind {
            TopicKind::Telemetry => match payload::decode_telemetry(&msg.payload, msg.received_at, registered) {
                Err(r) => self.reject(Some(&device), Some(serial), msg, r.reason.code(), &r.detail).await,
                Ok(t) => {
                    if let Some(seq) = t.seq
                        && self.seen_seq(serial, seq, t.at, msg.received_at)
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

    /// Applies a device's answer to its command at once (its own transaction): the answer is
    /// acknowledged to the broker with the batch, after it was applied. Answers that match no
    /// open command of this device are counted and dead-lettered, never applied.
    async fn command_result(&self, device: &DeviceInfo, msg: &Inbound, result: &payload::CommandResult) {
        let serial = device.serial.as_str();
        match self.commands.apply_ack(device.id, serial, result).await {
            Ok(AckApplied::Applied(_)) => {}
            Ok(AckApplied::Unknown) => {
                let detail = format!("no command {} was sent to this device", result.id);
                tracing::info!(serial, id = %result.id, "command result for an unknown command ignored");
                self.reject(Some(device), Some(serial), msg, "unknown_command", &detail).await;
            }
            Ok(AckApplied::Late(status)) => {
                let detail = format!("command {} is already {}; the result changes nothing", result.id, status.code());
                tracing::info!(serial, id = %result.id, status = status.code(), "late command result ignored");
                self.reject(Some(device), Some(serial), msg, "command_finished", &detail).await;
            }
            Err(e) => tracing::warn!(serial, id = %result.id, error = %e, "could not apply a command result"),
        }
    }

    async fn validate_modbus(&mut self, msg: &Inbound, report: &ModbusReport, work: &mut Vec<Work>) {
        self.metrics.messages.with_label_values(&["modbus"]).inc();
        let serial = report.serial.as_str();
        let device = match self.device(serial).await {
            Ok(Some(d)) => d,
            // The gateway was deleted while being polled; the poller drops it on its next refresh.
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "device lookup failed"),
        };
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

    /// Whether `(serial, seq)` was seen within the window with the same device time;
    /// remembers it otherwise. A QoS 1 redelivery repeats the whole payload, so seq *and*
    /// timestamp match; a device that rebooted and restarted its counter sends new times, and
    /// its readings must not be thrown away as duplicates.
    fn seen_seq(&mut self, serial: &str, seq: u64, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if !self.seqs.contains_key(serial) {
            self.seqs.insert(serial.to_owned(), RecentSeqs::default());
        }
        self.seqs.get_mut(serial).is_some_and(|q| q.seen(seq, at, now))
    }
}

impl RecentSeqs {
    /// Whether `(seq, at)` arrived within [`SEQ_WINDOW`] before `now`; remembers it otherwise.
    fn seen(&mut self, seq: u64, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        while let Some(&(s, t, seen)) = self.order.front()
            && seen < now - SEQ_WINDOW
        {
            self.order.pop_front();
            self.set.remove(&(s, t));
        }
        if !self.set.insert((seq, at)) {
            return true;
        }
        self.order.push_back((seq, at, now));
        false
    }
}

/// Rollup buckets: name and span, finest first.
const BUCKETS: [(&str, chrono::TimeDelta); 3] = [
    ("minute", chrono::TimeDelta::minutes(1)),
    ("hour", chrono::TimeDelta::hours(1)),
    ("day", chrono::TimeDelta::days(1)),
];
/// The finest bucket, the one readings are accumulated into.
const MINUTE: usize = 0;
/// Channel quantity codes in the order `accumulate` walks a reading.
const SERIES: [&str; 4] = ["leak", "temp", "voltage", "current"];

/// One rollup cell's key: detector, bucket (index into [`BUCKETS`]), bucket start, series
/// (index into [`SERIES`]) and channel index.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CellKey {
    detector: DetectorId,
    bucket: u8,
    start: DateTime<Utc>,
    series: u8,
    index: u8,
}

/// Rollup cells by key. Hashed with foldhash: the keys are ids and times this process
/// made, and SipHash on the per-reading path showed in profiles.
type Cells = foldhash::HashMap<CellKey, Cell>;

/// Aggregates of one cell.
#[derive(Clone, Copy)]
struct Cell {
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
}

impl Cell {
    fn merge(&mut self, other: Cell) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// Last-seen times and rollup cells on their way to the database, and raw readings to
/// delete. A task of their own does that ([`write_back`]): done by the store stage, the
/// thousands of rows of a write-back held up the next batch, and the alarms in it, for a few
/// hundred milliseconds every interval (and a retention purge for far longer).
#[derive(Default)]
struct WriteBack {
    seen: HashMap<DeviceId, DateTime<Utc>>,
    cells: Cells,
    /// Delete raw readings older than this.
    prune_before: Option<DateTime<Utc>>,
}

impl WriteBack {
    fn absorb(&mut self, later: WriteBack) {
        for (device, at) in later.seen {
            let seen = self.seen.entry(device).or_insert(at);
            *seen = (*seen).max(at);
        }
        for (key, cell) in later.cells {
            self.cells.entry(key).and_modify(|c| c.merge(cell)).or_insert(cell);
        }
        self.prune_before = self.prune_before.max(later.prune_before);
    }

    async fn write(&mut self, store: &Store) -> Result<(), sea_orm::DbErr> {
        let seen: Vec<(DeviceId, DateTime<Utc>)> = self.seen.iter().map(|(d, at)| (*d, *at)).collect();
        let cells: Vec<Rollup> = self.cells.iter().map(|(k, c)| k.rollup(*c)).collect();
        let tx = store.begin().await?;
        tel::set_last_seen(&tx, &seen).await?;
        tel::merge_rollups(&tx, &cells).await?;
        tx.commit().await?;
        self.seen.clear();
        self.cells.clear();
        if let Some(before) = self.prune_before {
            let pruned = tel::prune_readings(store.db(), before, PRUNE_CHUNK).await?;
            self.prune_before = None;
            if pruned > 0 {
                tracing::info!(pruned, "deleted raw readings past their retention (rollups are kept)");
            }
        }
        Ok(())
    }
}

/// Writes what the pipeline hands over until the pipeline is gone. A write that fails is kept
/// and merged into the next one (cells add up), so a database outage delays rollups and
/// last-seen times but does not lose them while the process runs.
async fn write_back(store: Store, mut rx: mpsc::Receiver<WriteBack>) {
    let mut pending = WriteBack::default();
    while let Some(next) = rx.recv().await {
        pending.absorb(next);
        if let Err(e) = pending.write(&store).await {
            tracing::warn!(
                error = %e,
                devices = pending.seen.len(),
                cells = pending.cells.len(),
                "writing back last-seen times and rollups failed; kept for the next write-back"
            );
        }
    }
}

/// Minute cells with the hour and day cells they add up to. Exact: minimum, maximum, sum
/// and count merge, and every minute lies in one hour and one day (UTC).
fn with_coarser_buckets(minutes: Cells) -> Cells {
    let mut all = Cells::with_capacity_and_hasher(minutes.len() * 2, Default::default());
    for (key, cell) in minutes {
        for (b, (_, span)) in BUCKETS.iter().enumerate().skip(MINUTE + 1) {
            let Ok(start) = key.start.duration_trunc(*span) else { continue };
            let coarser = CellKey { bucket: b as u8, start, ..key };
            all.entry(coarser).and_modify(|c: &mut Cell| c.merge(cell)).or_insert(cell);
        }
        all.insert(key, cell);
    }
    all
}

impl CellKey {
    fn rollup(self, c: Cell) -> Rollup {
        Rollup {
            detector: self.detector,
            bucket: BUCKETS[usize::from(self.bucket)].0,
            start: self.start,
            channel: format!("{}:{}", SERIES[usize::from(self.series)], u16::from(self.index) + 1),
            min: c.min,
            max: c.max,
            sum: c.sum,
            count: c.count,
        }
    }
}

/// PostgreSQL keeps microseconds; compare stored keys at that precision on every backend.
/// The keys of stored readings, as [`key`] spells them.
fn stored_keys(
    inserted: impl IntoIterator<Item = (DetectorId, DateTime<Utc>)>,
) -> foldhash::HashSet<(DetectorId, DateTime<Utc>)> {
    inserted.into_iter().map(|(d, at)| (d, micros(at))).collect()
}

/// A reading's key `(detector_id, at)`, at the store's microsecond precision.
fn key(detector: DetectorId, reading: &Reading) -> (DetectorId, DateTime<Utc>) {
    (detector, micros(reading.at))
}

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::microseconds(1)).unwrap_or(at)
}

#[allow(clippy::too_many_arguments)]
fn occurrence(
    device: &DeviceInfo,
    det: Option<&DetectorInfo>,
    channel: &Channel,
    kind: EventKind,
    category: EventCategory,
    source: &'static str,
    at: DateTime<Utc>,
    ingested_at: DateTime<Utc>,
    now: DateTime<Utc>,
    value: Option<f64>,
    setpoint: Option<f64>,
) -> Occurrence {
    Occurrence {
        tenant: device.tenant,
        project: det.map_or(device.project, |d| d.project),
        device: device.id,
        detector: det.map(|d| d.id),
        channel: channel.code(),
        kind: kind.code(),
        category: category.code(),
        source,
        // Stored with microseconds (PostgreSQL): subscribers are told what a query returns.
        at: micros(at),
        ingested_at: micros(ingested_at),
        processed_at: micros(now),
        value,
        setpoint,
    }
}

fn fmt_value(channel: &Channel, v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| notify::fmt_value(channel, v))
}

fn kind_label(kind: EventKind, category: EventCategory) -> String {
    notify::kind_label(kind, category, Locale::En)
}

/// "leakage current alarm on leak:1: 512 mA (set-point 300 mA)" — the event view's remarks.
fn describe(
    kind: EventKind,
    category: EventCategory,
    channel: &Channel,
    value: Option<f64>,
    setpoint: Option<f64>,
) -> String {
    let mut s = format!("{} on {}", kind_label(kind, category), channel.code());
    if value.is_some() {
        s.push_str(&format!(": {}", fmt_value(channel, value)));
    }
    if setpoint.is_some() {
        s.push_str(&format!(" (set-point {})", fmt_value(channel, setpoint)));
    }
    s
}

/// A reading's values as stored in `readings.values`, borrowed for writing: serialised
/// straight into the text (through a `json!` value it cost eight allocations per reading).
/// Keys in this order, as `json!`'s sorted map wrote them before.
#[derive(serde::Serialize)]
struct StoredValues<'a> {
    di: Option<u16>,
    #[serde(rename = "do")]
    digital_out: Option<u16>,
    i: &'a [Option<f64>],
    l: &'a [Option<f64>],
    t: &'a [Option<f64>],
    u: &'a [Option<f64>],
}

/// Compact JSON of a reading's values, as stored in `readings.values`.
pub fn values_json(r: &Reading) -> String {
    let values = StoredValues {
        di: r.digital_in,
        digital_out: r.digital_out,
        i: &r.current_a,
        l: &r.leak_ma,
        t: &r.temp_c,
        u: &r.voltage_v,
    };
    // Numbers and option arrays cannot fail to serialise.
    serde_json::to_string(&values).unwrap_or_default()
}

/// Parses [`values_json`] back into a reading at `at`.
pub fn reading_from_json(at: DateTime<Utc>, json: &str) -> Reading {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let list = |k: &str| -> Vec<Option<f64>> {
        v[k].as_array().map(|a| a.iter().map(serde_json::Value::as_f64).collect()).unwrap_or_default()
    };
    let bits = |k: &str| v[k].as_u64().and_then(|b| u16::try_from(b).ok());
    Reading {
        at,
        leak_ma: list("l"),
        temp_c: list("t"),
        voltage_v: list("u"),
        current_a: list("i"),
        digital_in: bits("di"),
        digital_out: bits("do"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_keep_their_format_and_read_back() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let r = Reading {
            at,
            leak_ma: vec![Some(12.5), None],
            temp_c: vec![Some(41.0)],
            voltage_v: vec![Some(220.1), Some(219.9), Some(221.0)],
            current_a: Vec::new(),
            digital_in: None,
            digital_out: Some(3),
        };
        let json = values_json(&r);
        assert_eq!(json, r#"{"di":null,"do":3,"i":[],"l":[12.5,null],"t":[41.0],"u":[220.1,219.9,221.0]}"#);
        assert_eq!(reading_from_json(at, &json), r);
    }

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
