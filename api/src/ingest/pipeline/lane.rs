//! The readings lane: quiet readings on their way to the store, off the alarm path. Batches
//! wait in order, are merged into inserts that run beside the alarm path's transaction, and
//! settle in the order they came ([`super::settle`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use sparkwatch_domain::ids::{DetectorId, ProjectId, TenantId};
use sparkwatch_domain::reading::Reading;

use super::validate::SeqSeen;
use crate::ingest::Ack;
use crate::ingest::health::IngestHealth;
use crate::store::Store;
use crate::store::telemetry::{self as tel, DetectorInfo, DeviceInfo, NewReading, micros, values_json};

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
pub(super) struct Settling {
    pub(super) rows: Vec<NewReading>,
    /// Every new reading of the batch, in batch order.
    pub(super) readings: Vec<Settled>,
    pub(super) acks: Vec<Ack>,
    /// Its `(serial, seq)`s, remembered once it is stored.
    pub(super) seqs: Vec<SeqSeen>,
    pub(super) started: Instant,
}

/// A reading on its way to the rollups, the latest values and the `readings` feeds.
pub(super) struct Settled {
    pub(super) device: Arc<DeviceInfo>,
    pub(super) tenant: TenantId,
    pub(super) detector: DetectorId,
    pub(super) address: u8,
    pub(super) project: ProjectId,
    pub(super) reading: Reading,
    /// The time it was evaluated at ([`sparkwatch_domain::alarm::as_evaluated`]), which
    /// orders it among the detector's latest values: a reading dated ahead must not hide the
    /// ones after it there either.
    pub(super) evaluated_at: DateTime<Utc>,
    /// Stored by the readings lane: it counts only if that insert reports it as new.
    pub(super) quiet: bool,
}

impl Settled {
    pub(super) fn of(
        device: &Arc<DeviceInfo>,
        detector: &DetectorInfo,
        reading: Reading,
        received_at: DateTime<Utc>,
        quiet: bool,
    ) -> Self {
        Settled {
            device: device.clone(),
            tenant: device.tenant,
            detector: detector.id,
            address: detector.address,
            project: detector.project,
            evaluated_at: reading.at.min(received_at),
            reading,
            quiet,
        }
    }
}

/// The row of a reading.
pub(super) fn new_reading(
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
pub(super) struct LaneInsert {
    /// The readings that were new, keyed as in [`key`].
    pub(super) inserted: foldhash::HashSet<(DetectorId, DateTime<Utc>)>,
    pub(super) rows: usize,
    pub(super) took: Duration,
}

/// An insert of the lane: what it stored, or the insert task's panic.
type LaneFuture = BoxFuture<'static, (Result<LaneInsert, tokio::task::JoinError>, Vec<Settling>)>;

/// Quiet readings on their way to the store: batches waiting in order, and the inserts
/// running.
pub(super) struct ReadingsLane {
    waiting: VecDeque<Settling>,
    waiting_rows: usize,
    pub(super) storing: FuturesOrdered<LaneFuture>,
    /// Whether an insert may run beside the alarm path's transaction. Not on SQLite: with
    /// one writer, the transaction would only wait for the insert in the busy handler's
    /// sleeps, so there the store task waits for the lane before its next batch.
    beside: bool,
}

impl ReadingsLane {
    pub(super) fn new(store: &Store) -> Self {
        let beside = store.db().get_database_backend() != sea_orm::DbBackend::Sqlite;
        ReadingsLane { waiting: VecDeque::new(), waiting_rows: 0, storing: FuturesOrdered::new(), beside }
    }

    /// Whether the store task may take the next batch.
    pub(super) fn has_room(&self) -> bool {
        self.waiting_rows < LANE_MAX_WAITING && (self.beside || self.storing.is_empty())
    }

    pub(super) fn push(&mut self, part: Settling) {
        self.waiting_rows += part.rows.len();
        self.waiting.push_back(part);
    }

    /// Starts inserts of the waiting batches while fewer than [`LANE_INSERTS`] run. Each
    /// insert is a task of its own: polled only by the store task, it would stall while
    /// that task works on the alarm path — on SQLite holding the write lock that the
    /// alarm path's transaction waits for. A failed insert is retried until it succeeds
    /// (the batches wait for it, unacknowledged); rows a failed attempt did store come back
    /// as not new from the next, and count as redeliveries.
    pub(super) fn start(&mut self, store: &Store, health: &IngestHealth) {
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
            let (store, health) = (store.clone(), health.clone());
            let insert = tokio::spawn(async move {
                let started = Instant::now();
                let inserted = if rows.is_empty() {
                    Default::default()
                } else {
                    health.retry("readings", || tel::insert_readings(store.db(), &rows)).await
                };
                LaneInsert { inserted: stored_keys(inserted), rows: rows.len(), took: started.elapsed() }
            });
            self.storing.push_back(Box::pin(async move { (insert.await, parts) }));
        }
    }
}

/// The keys of stored readings, as [`key`] spells them.
pub(super) fn stored_keys(
    inserted: impl IntoIterator<Item = (DetectorId, DateTime<Utc>)>,
) -> foldhash::HashSet<(DetectorId, DateTime<Utc>)> {
    inserted.into_iter().map(|(d, at)| (d, micros(at))).collect()
}

/// A reading's key `(detector_id, at)`, at the store's microsecond precision.
pub(super) fn key(detector: DetectorId, reading: &Reading) -> (DetectorId, DateTime<Utc>) {
    (detector, micros(reading.at))
}
