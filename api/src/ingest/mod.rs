//! Ingestion: device messages in, readings, events, episodes and hazards out.
//!
//! Layout:
//! - [`pipeline`] — the single consumer of the bounded inbound queue: decode and validate
//!   (domain), deduplicate, store readings in batches, evaluate the alarm rules, open and
//!   update episodes and hazards, record events, keep the latest values.
//! - [`mqtt`] — the MQTT subscriber (persistent session, QoS 1, acknowledged only after the
//!   batch holding the message is committed).
//! - [`latest`] — the latest value per detector.
//!
//! The receive side never waits on the database: it only pushes into the bounded queue,
//! and when the queue is full the MQTT client stops reading, so the broker buffers.

pub mod latest;
pub mod mqtt;
pub mod pipeline;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

/// Acknowledges a delivery once its effects are stored (QoS 1: unacknowledged messages are
/// redelivered after a reconnect).
pub type Ack = Box<dyn FnOnce() + Send + Sync>;

/// One message from a device.
pub struct Inbound {
    /// Topic it arrived on (`sw/{serial}/telemetry`, …).
    pub topic: String,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// When the server received it.
    pub received_at: DateTime<Utc>,
    /// Called after the message's batch is committed.
    pub ack: Option<Ack>,
}

/// The sending side of the ingestion queue.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Inbound>,
}

impl IngestQueue {
    /// A queue of `capacity` messages and its receiving end.
    pub fn new(capacity: usize) -> (IngestQueue, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        (IngestQueue { tx }, rx)
    }

    /// Enqueues a message, waiting while the queue is full (backpressure).
    pub async fn push(&self, msg: Inbound) -> bool {
        self.tx.send(msg).await.is_ok()
    }
}
