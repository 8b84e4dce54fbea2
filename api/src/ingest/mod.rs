//! Ingestion: device messages in, readings, events, episodes and hazards out.
//!
//! Layout:
//! - [`pipeline`] — the single consumer of the bounded inbound queue: decode and validate
//!   (domain), deduplicate, store readings in batches, evaluate the alarm rules, open and
//!   update episodes and hazards, record events, keep the latest values.
//! - [`mqtt`] — the MQTT subscriber (persistent session, QoS 1, acknowledged only after the
//!   batch holding the message is committed).
//! - [`modbus`] — the Modbus TCP poller: one connection per gateway, polls spread over the
//!   interval, bit edges as device events, three failed polls = communication fault.
//! - `broker` — the embedded MQTT broker (rumqttd, feature `embedded-broker`, on by default).
//! - [`health`] — which parts are retrying a database failure; requests between the pipeline
//!   and the MQTT subscriber (reconnect, finished).
//!
//! The receive side never waits on the database: it only pushes into the bounded queue,
//! and when the queue is full the MQTT subscriber holds what it reads (up to 1,000, still
//! writing acknowledgements), then stops reading, so the broker buffers.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod dynsec;
pub mod health;
pub mod modbus;
pub mod mqtt;
pub mod pipeline;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

/// Acknowledges a delivery once its effects are stored (QoS 1: unacknowledged messages are
/// redelivered after a reconnect).
pub type Ack = Box<dyn FnOnce() + Send + Sync>;

/// One message from a device.
pub struct Inbound {
    /// Topic it arrived on (`sw/{serial}/telemetry`, …); for Modbus a descriptive
    /// `modbus/{serial}/{address}` used in logs and the dead-letter log.
    pub topic: String,
    /// Raw payload (MQTT); empty for Modbus.
    pub payload: Vec<u8>,
    /// Already-decoded input from the Modbus poller.
    pub modbus: Option<ModbusReport>,
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

    /// Enqueues a message if there is room now; otherwise gives it back (`Ok(Some)`).
    /// `Err` once the pipeline is gone.
    pub(crate) fn try_push(&self, msg: Inbound) -> Result<Option<Inbound>, ()> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(msg)) => Ok(Some(msg)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }

    /// Waits for room for one message (cancel-safe: nothing is taken until it resolves).
    pub(crate) async fn room(self) -> Option<mpsc::OwnedPermit<Inbound>> {
        self.tx.reserve_owned().await.ok()
    }
}

/// What one Modbus poll of one detector produced.
#[derive(Clone, Debug)]
pub struct ModbusReport {
    /// Device (gateway) serial.
    pub serial: String,
    /// Detector address (unit id).
    pub address: u8,
    /// The outcome.
    pub outcome: ModbusOutcome,
}

/// The outcome of a Modbus poll.
#[derive(Clone, Debug)]
pub enum ModbusOutcome {
    /// Measurements, plus events derived from alarm/fault/relay bit edges.
    Polled {
        /// The decoded measurements.
        reading: sparkwatch_domain::reading::Reading,
        /// Bit edges since the previous poll.
        events: Vec<sparkwatch_domain::reading::DeviceEvent>,
        /// Register values refused (out of range), each `(reason code, detail)`.
        rejected: Vec<(String, String)>,
    },
    /// The third failed poll in a row: communication fault for this detector.
    CommLost {
        /// The last error, for the event's remarks.
        detail: String,
    },
    /// A good poll after a communication fault.
    CommRestored,
}
