//! How ingestion is doing, shared by its tasks and the MQTT subscriber: which parts are
//! retrying a database failure right now, when they last recovered, and the requests that
//! pass between the pipeline and the subscriber (reconnect; the pipeline has finished).
//!
//! Nothing that was received is given up on a database error: the part that failed retries
//! with backoff ([`IngestHealth::retry`]) and holds what it has — and its acknowledgements —
//! meanwhile, so backpressure reaches the broker. While anything is retrying,
//! `sparkwatch_ingest_failing` is 1, `/readyz` says `"ingestion": "failing"`, and heartbeat
//! timeouts are not checked: a device whose messages wait behind the failure is not offline.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::service::Clock;

/// First wait before a failed step is tried again; doubled per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts: one cheap attempt every 2 s is nothing for a database
/// that is down, and a recovered one is used again within 2 s.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Failures in a row of one step after which the MQTT subscriber reconnects (once per
/// streak), so the broker redelivers whatever it still counts as in flight — about 10 s.
pub const RECONNECT_AFTER: u32 = 8;

/// Shared view of ingestion's health. Cheap to clone.
#[derive(Clone)]
pub struct IngestHealth {
    inner: Arc<Inner>,
}

struct Inner {
    /// Steps retrying right now.
    failing: AtomicU32,
    /// When the last retrying step succeeded and nothing else was failing.
    recovered_at: Mutex<Option<DateTime<Utc>>>,
    reconnect: Notify,
    finished: watch::Sender<bool>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
}

impl IngestHealth {
    /// A healthy state reporting to `metrics`, with time from `clock`.
    pub fn new(metrics: Metrics, clock: Arc<dyn Clock>) -> Self {
        let inner = Inner {
            failing: AtomicU32::new(0),
            recovered_at: Mutex::new(None),
            reconnect: Notify::new(),
            finished: watch::channel(false).0,
            metrics,
            clock,
        };
        IngestHealth { inner: Arc::new(inner) }
    }

    /// Whether some step is retrying a failure right now.
    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Relaxed) > 0
    }

    /// When ingestion last recovered from a failure (heartbeat timeouts count from then at
    /// the earliest: what waited behind the failure is arriving only now).
    pub fn recovered_at(&self) -> Option<DateTime<Utc>> {
        *self.inner.recovered_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` until it succeeds, waiting 100 ms doubling to 5 s between attempts. Each
    /// failure is logged and counted under `stage`; while it fails, ingestion counts as
    /// failing, and after [`RECONNECT_AFTER`] failures in a row the MQTT subscriber is asked to
    /// reconnect once.
    pub async fn retry<T, E, F, Fut>(&self, stage: &'static str, mut op: F) -> T
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut retrying = self.retrying(stage);
        loop {
            match op().await {
                Ok(value) => {
                    retrying.done();
                    return value;
                }
                Err(e) => {
                    let pause = retrying.wait(&e);
                    drop(e);
                    pause.await;
                }
            }
        }
    }

    /// Notes the `attempt`-th failure in a row of `stage`; returns how long to wait before
    /// the next attempt.
    pub fn failed(&self, stage: &'static str, attempt: u32, error: &dyn std::fmt::Display) -> Duration {
        let m = &self.inner.metrics;
        m.ingest_failures.with_label_values(&[stage]).inc();
        if attempt == 1 {
            self.inner.failing.fetch_add(1, Ordering::Relaxed);
            m.ingest_failing.set(1);
        }
        let wait = BACKOFF_MIN.saturating_mul(1 << attempt.saturating_sub(1).min(8)).min(BACKOFF_MAX);
        tracing::warn!(stage, attempt, error = %error, retry_in_ms = wait.as_millis() as u64, "ingestion cannot store; retrying, nothing is acknowledged meanwhile");
        if attempt == RECONNECT_AFTER {
            self.request_reconnect("store_failing");
        }
        wait
    }

    /// Notes that `stage` succeeded after `attempts` failures.
    pub fn recovered(&self, stage: &'static str, attempts: u32) {
        let before = self.inner.failing.fetch_sub(1, Ordering::Relaxed);
        if before <= 1 {
            *self.inner.recovered_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.inner.clock.now());
            self.inner.metrics.ingest_failing.set(0);
        }
        tracing::info!(stage, attempts, "ingestion stores again");
    }

    /// Asks the MQTT subscriber to reconnect (same persistent session): the broker then
    /// redelivers every message it has not seen acknowledged.
    pub fn request_reconnect(&self, reason: &'static str) {
        self.inner.metrics.ingest_reconnects.with_label_values(&[reason]).inc();
        self.inner.reconnect.notify_one();
    }

    /// Notes how many messages the MQTT subscriber holds while the queue is full.
    pub fn holding(&self, messages: usize) {
        self.inner.metrics.held.set(messages as i64);
    }

    /// Notes an acknowledgement that had to wait for room in the MQTT client.
    pub fn ack_deferred(&self) {
        self.inner.metrics.acks_deferred.inc();
    }

    /// Resolves when a reconnect was asked for.
    pub async fn reconnect_requested(&self) {
        self.inner.reconnect.notified().await;
    }

    /// Marks the pipeline as finished: everything it took is stored, settled and flushed.
    pub fn finish(&self) {
        self.inner.finished.send_replace(true);
    }

    /// Resolves once the pipeline has finished.
    pub async fn finished(&self) {
        let mut rx = self.inner.finished.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}

/// The failures in a row of one step, for a retry loop the step writes itself (when it
/// must undo something between attempts):
/// `while let Err(e) = step().await { undo(); retrying.wait(&e).await } retrying.done()`.
pub struct Retrying {
    health: IngestHealth,
    stage: &'static str,
    attempts: u32,
}

impl IngestHealth {
    /// Starts counting the failures of `stage`.
    pub fn retrying(&self, stage: &'static str) -> Retrying {
        Retrying { health: self.clone(), stage, attempts: 0 }
    }
}

impl Retrying {
    /// Notes a failure; the returned sleep is the wait before the next attempt.
    pub fn wait(&mut self, error: &dyn std::fmt::Display) -> tokio::time::Sleep {
        self.attempts += 1;
        tokio::time::sleep(self.health.failed(self.stage, self.attempts, error))
    }

    /// The step succeeded.
    pub fn done(self) {
        if self.attempts > 0 {
            self.health.recovered(self.stage, self.attempts);
        }
    }
}
