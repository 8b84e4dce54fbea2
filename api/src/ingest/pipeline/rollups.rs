//! Rollups: per-minute min/max/sum/count per channel accumulated in memory, merged into
//! hour and day cells when handed over, and written — with `last_seen_at` and the retention
//! purge — by a write-back task of its own.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, Utc};
use sparkwatch_domain::ids::{DetectorId, DeviceId};
use sparkwatch_domain::reading::Reading;
use tokio::sync::mpsc;

use super::Pipeline;
use crate::store::Store;
use crate::store::telemetry::{self as tel, Rollup};

/// Raw readings deleted per statement by the retention purge.
const PRUNE_CHUNK: u64 = 10_000;

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

/// The minute cells accumulated since the last write-back.
#[derive(Default)]
pub(super) struct Rollups(Cells);

impl Rollups {
    /// Adds a reading to the in-memory minute cells, one per channel; the hour and day
    /// cells are merged from those when they are handed to the write-back
    /// ([`with_coarser_buckets`]) — updating all three per reading showed in profiles.
    /// Keys are small integers so the per-reading work allocates nothing; channel codes are
    /// spelled out only when the cells are written back.
    pub(super) fn accumulate(&mut self, detector: DetectorId, r: &Reading) {
        let Ok(start) = r.at.duration_trunc(BUCKETS[MINUTE].1) else { return };
        let series: [&Vec<Option<f64>>; 4] = [&r.leak_ma, &r.temp_c, &r.voltage_v, &r.current_a];
        for (q, values) in series.iter().enumerate() {
            for (i, v) in values.iter().enumerate() {
                let Some(v) = *v else { continue };
                let key = CellKey { detector, bucket: MINUTE as u8, start, series: q as u8, index: i as u8 };
                let one = Cell { min: v, max: v, sum: v, count: 1 };
                self.0.entry(key).and_modify(|c| c.merge(one)).or_insert(one);
            }
        }
    }
}

/// Last-seen times and rollup cells on their way to the database, and raw readings to
/// delete. A task of their own does that ([`write_back`]): done by the store stage, the
/// thousands of rows of a write-back held up the next batch, and the alarms in it, for a few
/// hundred milliseconds every interval (and a retention purge for far longer).
#[derive(Default)]
pub(super) struct WriteBack {
    seen: HashMap<DeviceId, DateTime<Utc>>,
    cells: Cells,
    /// Delete raw readings older than this.
    prune_before: Option<DateTime<Utc>>,
}

impl Pipeline {
    /// Hands the minute cells (with their hour and day cells), the last-seen times that
    /// changed and a due retention purge to the write-back task.
    pub(super) async fn hand_over_write_back(&mut self, prune_before: Option<DateTime<Utc>>) {
        let cells = with_coarser_buckets(std::mem::take(&mut self.rollups.0));
        let out = WriteBack { cells, prune_before, seen: self.take_seen() };
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
pub(super) async fn write_back(store: Store, mut rx: mpsc::Receiver<WriteBack>) {
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
