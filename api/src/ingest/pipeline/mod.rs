//! The ingestion pipeline: two tasks that drain the inbound queue in batches — the first
//! validates batch n+1 while the second stores batch n.
//!
//! Per batch: decode and validate every message (rejections go to the dead-letter log and
//! are counted by reason), drop redeliveries (same `(serial, seq, ts)` within 10 minutes, or a
//! reading already stored for the same detector and device time), then split the batch:
//! - the **alarm path**: every reading that may change a detector's alarm state, device
//!   events and online/offline changes, in ONE transaction that stores those readings and
//!   applies what they mean to episodes, hazards and events; published when it commits;
//! - the **readings lane**: quiet readings ([`sparkwatch_domain::alarm::is_quiet`] — the bulk of a healthy
//!   site's traffic) are stored by inserts of their own beside it, batches merged while
//!   they wait, so an alarm never queues behind them.
//!
//! Batches settle in order once their quiet readings are stored: rollups, latest values,
//! followed `readings`, and only then are the batch's deliveries acknowledged.
//!
//! Nothing is given up on a database error: every step that writes retries with backoff
//! ([`IngestHealth`]) holding its batch and the batch's acknowledgements, so the broker keeps
//! the messages and the queue's backpressure reaches it; the in-memory evaluation state is
//! put back as it was before a failed transaction, so the retry evaluates the same readings
//! the same way.
//!
//! Evaluation state (delay timers, active conditions) lives in memory; the episodes it
//! produces live in the store, so a restart neither loses nor duplicates episodes (at worst
//! a pending delay timer starts again).
//!
//! Parts, one job each:
//! - [`validate`] — the first stage: batching, decoding, device look-ups, `(serial, seq)`
//!   redeliveries, command results, dead letters;
//! - [`alarm_path`] — the batch's split and its transaction: evaluation, episodes, events;
//! - [`record`] — what a transaction writes about an occurrence, and the bus messages it
//!   publishes after the commit;
//! - [`lane`] — the readings lane; [`settle`] — settling batches in order, then the acks;
//! - [`liveness`] — online/offline and heartbeat timeouts;
//! - [`thresholds`] and [`escalation`] — the caches of effective thresholds and tenants'
//!   escalation policies;
//! - [`rollups`] — per-minute cells in memory and the write-back task.

mod alarm_path;
mod dead_letters;
mod escalation;
mod lane;
mod liveness;
mod record;
mod rollups;
mod settle;
mod thresholds;
mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sparkwatch_domain::alarm::DetectorState;
use sparkwatch_domain::ids::{DetectorId, DeviceId};
use sparkwatch_domain::reading::{DeviceEvent, Reading};
use tokio::sync::mpsc;

use self::escalation::Escalations;
use self::lane::{ReadingsLane, Settling};
use self::liveness::Liveness;
use self::record::Outbox;
use self::rollups::{Rollups, WriteBack};
use self::thresholds::Thresholds;
use self::validate::{SeqWindow, Validated, Validator};
use super::Inbound;
use super::health::IngestHealth;
use crate::bus::Bus;
use crate::metrics::Metrics;
use crate::service::commands::Ledger;
use crate::service::{Clock, Services};
use crate::store::Store;
use crate::store::latest::LatestCache;
use crate::store::telemetry::{DetectorInfo, DeviceInfo};

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
    /// Dead letters older than this are deleted; `None` keeps them.
    pub dead_letter_retention: Option<chrono::Duration>,
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
            dead_letter_retention: None,
        }
    }
}

/// A message that passed validation, waiting for the batch's transaction.
enum Work {
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

/// The pipeline's state; owned by its task.
pub struct Pipeline {
    store: Store,
    metrics: Metrics,
    latest: Arc<LatestCache>,
    clock: Arc<dyn Clock>,
    config: PipelineConfig,
    // Maps looked up per reading are keyed by ids and hashed with foldhash (SipHash showed
    // in profiles).
    thresholds: Thresholds,
    states: foldhash::HashMap<DetectorId, DetectorState>,
    liveness: foldhash::HashMap<DeviceId, Liveness>,
    /// Minute cells since the last write-back.
    rollups: Rollups,
    last_prune: Option<Instant>,
    last_dead_letter_prune: Option<Instant>,
    last_flush: Instant,
    site_generation: Arc<AtomicU64>,
    seen_generation: u64,
    bus: Bus,
    outbox: Outbox,
    escalations: Escalations,
    commands: Ledger,
    /// The write-back task's inbox, while `run` runs.
    write_back: Option<mpsc::Sender<WriteBack>>,
    health: IngestHealth,
    /// `(serial, seq)`s of stored messages, shared with the validator.
    seqs: Arc<SeqWindow>,
}

impl Pipeline {
    /// A pipeline over the services' ingestion store, publishing on their bus.
    pub fn new(services: &Services, config: PipelineConfig) -> Self {
        Pipeline {
            store: services.store().ingestion(),
            metrics: services.metrics().clone(),
            latest: services.latest().clone(),
            clock: services.clock(),
            thresholds: Thresholds::new(config.cache_ttl),
            escalations: Escalations::new(config.cache_ttl),
            config,
            states: Default::default(),
            liveness: Default::default(),
            rollups: Rollups::default(),
            last_prune: None,
            last_dead_letter_prune: None,
            last_flush: Instant::now(),
            site_generation: services.site_generation(),
            seen_generation: 0,
            bus: services.bus().clone(),
            outbox: Outbox::default(),
            commands: services.commands().clone(),
            write_back: None,
            health: IngestHealth::new(services.metrics().clone(), services.clock()),
            seqs: Arc::default(),
        }
    }

    /// Its health: shared with the MQTT subscriber (reconnects, the final flush).
    pub fn health(&self) -> &IngestHealth {
        &self.health
    }

    /// Drains the queue until every sender is gone, then flushes; [`IngestHealth::finished`]
    /// resolves once everything it took is stored, settled and written back.
    pub async fn run(mut self, rx: mpsc::Receiver<Inbound>) {
        if let Err(e) = self.load_liveness().await {
            tracing::warn!(error = %e, "could not load device liveness; heartbeats start fresh");
        }
        // Decoding and validating batch n+1 overlaps with storing batch n: two stages, two
        // tasks, at most one validated batch waiting in between.
        let (validated_tx, mut validated) = mpsc::channel::<Validated>(1);
        let validator = Validator::new(&self);
        tokio::spawn(validator.run(rx, validated_tx));
        let (write_back_tx, write_back_rx) = mpsc::channel(1);
        self.write_back = Some(write_back_tx);
        let writer = tokio::spawn(rollups::write_back(self.store.clone(), write_back_rx));
        let mut tick = tokio::time::interval(self.config.housekeeping);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lane = ReadingsLane::new(&self.store);
        loop {
            tokio::select! {
                batch = validated.recv(), if lane.has_room() => {
                    let Some(batch) = batch else { break };
                    let part = self.store_batch(batch).await;
                    lane.push(part);
                }
                Some((stored, parts)) = lane.storing.next(), if !lane.storing.is_empty() => {
                    self.settle(stored, parts).await;
                }
                _ = tick.tick() => self.housekeeping(false).await,
            }
            lane.start(&self.store, &self.health);
        }
        // Every batch taken is stored and settled before the pipeline counts as stopped.
        lane.start(&self.store, &self.health);
        while let Some((stored, parts)) = lane.storing.next().await {
            self.settle(stored, parts).await;
            lane.start(&self.store, &self.health);
        }
        self.housekeeping(true).await;
        // The last write-back is done before the pipeline counts as stopped.
        self.write_back = None;
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "the write-back task failed");
        }
        tracing::info!("ingestion pipeline finished: everything it took is stored");
        self.health.finish();
    }

    /// Applies one validated batch on the alarm path and hands the rest to the readings
    /// lane. Never fails: a database error is retried (with backoff, holding the batch and
    /// its acknowledgements) until the batch is stored.
    async fn store_batch(&mut self, batch: Validated) -> Settling {
        // A device, detector, threshold or policy changed: look them up afresh.
        let generation = self.site_generation.load(Ordering::Relaxed);
        if generation != self.seen_generation {
            self.seen_generation = generation;
            self.thresholds.clear();
            self.escalations.clear();
        }
        let Validated { work, acks, seqs, started, validated } = batch;
        self.metrics.stage_seconds.with_label_values(&["handover"]).observe(validated.elapsed().as_secs_f64());
        let alarm_path = Instant::now();
        let (rows, readings) = self.apply(work).await;
        self.metrics.stage_seconds.with_label_values(&["alarm_path"]).observe(alarm_path.elapsed().as_secs_f64());
        Settling { rows, readings, acks, seqs, started }
    }

    /// Heartbeat timeouts (rule 5), `last_seen_at` write-back and rollup flushing.
    pub async fn housekeeping(&mut self, flush: bool) {
        if let Err(e) = self.try_housekeeping(flush).await {
            self.metrics.ingest_failures.with_label_values(&["heartbeats"]).inc();
            tracing::warn!(error = %e, "ingestion housekeeping failed; retrying on the next tick");
        }
        self.metrics.job_passes.with_label_values(&["ingest_housekeeping"]).inc();
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
        if let Some(keep) = self.config.dead_letter_retention
            && self.last_dead_letter_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
        {
            self.last_dead_letter_prune = Some(Instant::now());
            let gone = crate::store::telemetry::prune_dead_letters(self.store.db(), now - keep).await?;
            if gone > 0 {
                tracing::info!(gone, "expired dead letters deleted");
            }
        }
        let due = self.offline_due(now);
        if flush || prune_before.is_some() {
            self.last_flush = Instant::now();
            self.hand_over_write_back(prune_before).await;
        }
        self.declare_offline(due, now).await
    }
}
