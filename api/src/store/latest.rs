//! Latest reading per detector: in process for a single instance, in Redis when
//! `--redis-url` is given so that every instance (and every API node) sees the same values.

use std::collections::HashMap;
use std::sync::RwLock;

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
    Redis(ConnectionManager),
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
        Ok(LatestCache::Redis(manager))
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
            LatestCache::Redis(conn) => {
                let mut newest: HashMap<DetectorId, (DateTime<Utc>, Reading)> = HashMap::new();
                for (d, order, r) in batch {
                    if newest.get(&d).is_none_or(|(e, _)| *e < order) {
                        newest.insert(d, (order, r));
                    }
                }
                // Readings arrive in device-time order per detector within a batch; across
                // batches an out-of-order one may overwrite a newer value for one interval.
                let mut pipe = redis::pipe();
                for (d, (_, r)) in &newest {
                    if let Ok(json) = serde_json::to_string(r) {
                        pipe.set(key(*d), json).ignore();
                    }
                }
                let mut conn = conn.clone();
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    tracing::warn!(error = %e, "could not update latest values in Redis");
                }
            }
        }
    }

    /// The latest reading of a detector, if known.
    pub async fn get(&self, detector: DetectorId) -> Option<Reading> {
        match self {
            LatestCache::InProcess(map) => {
                map.read().unwrap_or_else(|e| e.into_inner()).get(&detector).map(|(_, r)| r.clone())
            }
            LatestCache::Redis(conn) => {
                let mut conn = conn.clone();
                let json: Option<String> = conn.get(key(detector)).await.ok()?;
                json.and_then(|j| serde_json::from_str(&j).ok())
            }
        }
    }

    /// Whether the backing store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            LatestCache::InProcess(_) => Ok(()),
            LatestCache::Redis(conn) => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}
