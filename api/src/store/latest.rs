//! Latest reading per detector: in process for a single instance, in Redis when
//! `--redis-url` is given so that every instance (and every API node) sees the same values.
//!
//! Redis is a cache here, never a dependency of ingestion: every Redis call has a short
//! deadline, and after a failure Redis is left alone for a moment (reads fall back to the
//! stored readings, writes are skipped). The detectors whose values could not be written are
//! remembered, and their keys are deleted once Redis answers again, so a stale value never
//! hides a newer stored one.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sparkwatch_domain::ids::DetectorId;
use sparkwatch_domain::reading::Reading;

/// Latest values by detector.
pub enum LatestCache {
    /// In this process, with the time that orders each reading (see [`LatestCache::put_all`]).
    InProcess(RwLock<HashMap<DetectorId, (DateTime<Utc>, Reading)>>),
    /// In Redis, one key per detector (`sw:latest:{id}`), JSON values.
    Redis(RedisLatest),
}

/// How long one Redis call may take before ingestion goes on without it.
const REDIS_WAIT: Duration = Duration::from_millis(250);
/// After a failure Redis is left alone this long.
const REDIS_PAUSE: Duration = Duration::from_secs(1);
/// Detectors remembered as stale; past this, every cached value is dropped on recovery.
const STALE_MAX: usize = 100_000;

/// The Redis side of the cache, with its failure state.
pub struct RedisLatest {
    conn: ConnectionManager,
    state: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Redis is not asked until then.
    paused_until: Option<Instant>,
    /// Detectors whose newest value did not reach Redis.
    stale: HashSet<DetectorId>,
    /// More than [`STALE_MAX`] went stale: drop every cached value.
    stale_all: bool,
}

impl RedisLatest {
    fn paused(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.paused_until.is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self, what: &str, error: &str, stale: impl IntoIterator<Item = DetectorId>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.paused_until.is_none_or(|t| Instant::now() >= t) {
            tracing::warn!(error, "Redis: could not {what}; latest values come from the database for now");
        }
        state.paused_until = Some(Instant::now() + REDIS_PAUSE);
        if !state.stale_all {
            state.stale.extend(stale);
            if state.stale.len() > STALE_MAX {
                state.stale = HashSet::new();
                state.stale_all = true;
            }
        }
    }

    /// Runs `pipe` with the deadline.
    async fn run(&self, pipe: &redis::Pipeline) -> Result<(), String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(REDIS_WAIT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", REDIS_WAIT.as_millis())),
        }
    }

    /// Deletes the values that went stale while Redis was away (before new ones are
    /// written, so a write of this batch is not deleted after it).
    async fn forget_stale(&self) -> Result<(), String> {
        let (stale, all) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut state.stale), std::mem::take(&mut state.stale_all))
        };
        if all {
            let mut conn = self.conn.clone();
            let keys: Vec<String> = tokio::time::timeout(Duration::from_secs(5), async {
                let mut iter: redis::AsyncIter<String> = conn.scan_match("sw:latest:*").await?;
                let mut keys = Vec::new();
                while let Some(k) = iter.next_item().await {
                    keys.push(k?);
                }
                Ok::<_, redis::RedisError>(keys)
            })
            .await
            .map_err(|_| "scan timed out".to_owned())?
            .map_err(|e| e.to_string())?;
            let mut pipe = redis::pipe();
            for chunk in keys.chunks(1000) {
                pipe.unlink(chunk).ignore();
            }
            return self
                .run(&pipe)
                .await
                .inspect_err(|_| self.state.lock().unwrap_or_else(|e| e.into_inner()).stale_all = true);
        }
        if stale.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = stale.iter().map(|d| key(*d)).collect();
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(1000) {
            pipe.unlink(chunk).ignore();
        }
        self.run(&pipe).await.inspect_err(|_| {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).stale.extend(stale);
        })
    }
}

impl Default for LatestCache {
    fn default() -> Self {
        LatestCache::InProcess(RwLock::default())
    }
}

impl std::fmt::Debug for LatestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LatestCache::InProcess(_) => "LatestCache::InProcess",
            LatestCache::Redis(_) => "LatestCache::Redis",
        })
    }
}

fn key(detector: DetectorId) -> String {
    format!("sw:latest:{detector}")
}

impl LatestCache {
    /// Connects to Redis.
    pub async fn redis(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let manager =
            tokio::time::timeout(std::time::Duration::from_secs(10), ConnectionManager::new(client)).await.map_err(
                |_| anyhow::anyhow!("Redis at {} did not answer within 10 s", crate::config::redact_url(url)),
            )??;
        Ok(LatestCache::Redis(RedisLatest { conn: manager, state: Mutex::default() }))
    }

    /// Keeps the newest reading of each detector in `batch` by device time, unless a newer
    /// one is stored.
    pub async fn put_all(&self, batch: Vec<(DetectorId, Reading)>) {
        self.put_ordered(batch.into_iter().map(|(d, r)| (d, r.at, r)).collect()).await;
    }

    /// Keeps the newest reading of each detector in `batch`, unless a newer one is stored.
    /// "Newest" by the time given with each reading — the time it was evaluated at, which is
    /// its device time but never later than its arrival: a device clock running ahead must
    /// not pin one reading as the latest for hours.
    pub async fn put_ordered(&self, batch: Vec<(DetectorId, DateTime<Utc>, Reading)>) {
        match self {
            LatestCache::InProcess(map) => {
                let mut map = map.write().unwrap_or_else(|e| e.into_inner());
                for (detector, order, reading) in batch {
                    match map.get(&detector) {
                        Some((existing, _)) if *existing >= order => {}
                        _ => {
                            map.insert(detector, (order, reading));
                        }
                    }
                }
            }
            LatestCache::Redis(redis) => {
                let mut newest: HashMap<DetectorId, (DateTime<Utc>, Reading)> = HashMap::new();
                for (d, order, r) in batch {
                    if newest.get(&d).is_none_or(|(e, _)| *e < order) {
                        newest.insert(d, (order, r));
                    }
                }
                if newest.is_empty() {
                    return;
                }
                if redis.paused() {
                    redis.failed("update latest values", "paused after a failure", newest.into_keys());
                    return;
                }
                if let Err(e) = redis.forget_stale().await {
                    redis.failed("delete values that went stale", &e, newest.into_keys());
                    return;
                }
                // Readings arrive in device-time order per detector within a batch; across
                // batches an out-of-order one may overwrite a newer value for one interval.
                let mut pipe = redis::pipe();
                for (d, (_, r)) in &newest {
                    if let Ok(json) = serde_json::to_string(r) {
                        pipe.set(key(*d), json).ignore();
                    }
                }
                if let Err(e) = redis.run(&pipe).await {
                    redis.failed("update latest values", &e, newest.into_keys());
                }
            }
        }
    }

    /// The latest reading of a detector, if known here; `None` also while Redis is away or
    /// the value may be stale, and the caller then reads the stored readings.
    pub async fn get(&self, detector: DetectorId) -> Option<Reading> {
        match self {
            LatestCache::InProcess(map) => {
                map.read().unwrap_or_else(|e| e.into_inner()).get(&detector).map(|(_, r)| r.clone())
            }
            LatestCache::Redis(redis) => {
                // While Redis is away, or values written during its absence are not yet
                // cleared, the caller reads the stored readings instead.
                let unsettled = {
                    let state = redis.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.stale_all || state.stale.contains(&detector)
                };
                if unsettled || redis.paused() {
                    return None;
                }
                let mut conn = redis.conn.clone();
                match tokio::time::timeout(REDIS_WAIT, conn.get::<_, Option<String>>(key(detector))).await {
                    Ok(Ok(json)) => json.and_then(|j| serde_json::from_str(&j).ok()),
                    Ok(Err(e)) => {
                        redis.failed("read a latest value", &e.to_string(), []);
                        None
                    }
                    Err(_) => {
                        redis.failed("read a latest value", "no answer in time", []);
                        None
                    }
                }
            }
        }
    }

    /// Whether the backing store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            LatestCache::InProcess(_) => Ok(()),
            LatestCache::Redis(redis) => {
                let mut conn = redis.conn.clone();
                let cmd = redis::cmd("PING");
                match tokio::time::timeout(Duration::from_secs(1), cmd.query_async::<String>(&mut conn)).await {
                    Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                    Err(_) => Err("no answer within 1 s".into()),
                }
            }
        }
    }
}
