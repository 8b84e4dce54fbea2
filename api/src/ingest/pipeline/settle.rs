//! Settling: batches whose quiet readings were stored finish in batch order — rollups,
//! latest values, followed `readings`, then the acknowledgements, and only then are their
//! `(serial, seq)`s remembered as seen.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sparkwatch_domain::ids::DetectorId;
use sparkwatch_domain::reading::Reading;
use sparkwatch_domain::site::DeviceTransport;

use super::Pipeline;
use super::lane::{LaneInsert, Settled, Settling, key};
use crate::bus::{BusMessage, Envelope, Feed, ReadingNote};
use crate::store::telemetry::{self as tel, DeviceInfo, values_json};

/// Dead-letter reason of a reading with the device time of another, stored reading of its
/// detector but other values.
pub(super) const READING_CONFLICT: &str = "reading_conflict";

impl Pipeline {
    /// Finishes batches whose quiet readings were stored (`stored` is what the insert
    /// reported as new), in batch order: rollups, latest values, followed `readings`, then
    /// the acknowledgements. Only if the insert task itself failed (a panic: the insert is
    /// retried until it succeeds) do the batches stay unacknowledged; the MQTT subscriber then
    /// reconnects so the broker redelivers them.
    pub(super) async fn settle(&mut self, stored: Result<LaneInsert, tokio::task::JoinError>, parts: Vec<Settling>) {
        let settling = std::time::Instant::now();
        let inserted = match stored {
            Ok(insert) => {
                self.metrics.readings_stored.inc_by(insert.inserted.len() as u64);
                self.metrics.stage_seconds.with_label_values(&["lane"]).observe(insert.took.as_secs_f64());
                tracing::debug!(
                    readings = insert.rows,
                    batches = parts.len(),
                    insert_ms = insert.took.as_secs_f64() * 1e3,
                    "quiet readings stored"
                );
                Some(insert.inserted)
            }
            Err(e) => {
                tracing::error!(error = %e, "the readings insert task failed; its batches are redelivered");
                self.health.request_reconnect("insert_task_failed");
                None
            }
        };
        let not_new = match &inserted {
            Some(inserted) => self.quiet_not_new(&parts, inserted).await,
            None => HashSet::new(),
        };
        let followed =
            if parts.iter().all(|p| p.readings.is_empty()) { Default::default() } else { self.bus.readings_wanted() };
        let mut latest = Vec::new();
        let mut notes = Vec::new();
        let mut acks = Vec::new();
        let mut seqs = Vec::new();
        let mut index = 0;
        for part in parts {
            for r in part.readings {
                index += 1;
                if r.quiet && (inserted.is_none() || not_new.contains(&(index - 1))) {
                    continue;
                }
                self.rollups.accumulate(r.detector, &r.reading);
                if followed.contains(&r.detector) {
                    let note =
                        ReadingNote { detector_id: r.detector, project_id: r.project, reading: r.reading.clone() };
                    notes.push(Envelope {
                        tenant: r.tenant,
                        feed: Feed::Readings(r.detector),
                        message: BusMessage::Reading(Box::new(note)),
                    });
                }
                latest.push((r.detector, r.evaluated_at, r.reading));
            }
            if inserted.is_some() {
                acks.extend(part.acks);
                seqs.extend(part.seqs);
            }
            self.metrics.batch_seconds.observe(part.started.elapsed().as_secs_f64());
        }
        if !notes.is_empty() {
            self.bus.publish(notes);
        }
        self.latest.put_ordered(latest).await;
        acks.into_iter().for_each(|ack| ack());
        self.seqs.remember(seqs);
        self.metrics.stage_seconds.with_label_values(&["settle"]).observe(settling.elapsed().as_secs_f64());
    }

    /// The positions (counted over every reading of `parts`, in order) of the quiet readings
    /// that are not new: not stored by the insert, or claiming a key an earlier reading of
    /// these batches was stored under. Each is either the same reading again (a redelivery,
    /// counted as a duplicate) or another reading at the same device time: that one was
    /// evaluated (as quiet, it changed nothing) and is dead-lettered with its values, never
    /// dropped silently.
    async fn quiet_not_new(
        &mut self,
        parts: &[Settling],
        inserted: &foldhash::HashSet<(DetectorId, DateTime<Utc>)>,
    ) -> HashSet<usize> {
        let mut claimed: foldhash::HashMap<(DetectorId, DateTime<Utc>), &Settled> = Default::default();
        let mut not_new = HashSet::new();
        // Readings to compare with the stored row, and pairs to compare with each other.
        let mut against_store = Vec::new();
        let mut conflicts = Vec::new();
        let readings = parts.iter().flat_map(|p| &p.readings).enumerate().filter(|(_, r)| r.quiet);
        for (i, r) in readings {
            let k = key(r.detector, &r.reading);
            if !inserted.contains(&k) {
                not_new.insert(i);
                against_store.push(r);
            } else if let Some(first) = claimed.get(&k) {
                not_new.insert(i);
                if first.reading == r.reading {
                    self.metrics.duplicates.inc();
                } else {
                    conflicts.push((r, values_json(&first.reading)));
                }
            } else {
                claimed.insert(k, r);
            }
        }
        if !against_store.is_empty() {
            let keys: Vec<_> = against_store.iter().map(|r| (r.detector, r.reading.at)).collect();
            let store = self.store.clone();
            let stored: HashMap<_, _> = self.health.retry("readings", || tel::stored_values(store.db(), &keys)).await;
            for r in against_store {
                match stored.get(&key(r.detector, &r.reading)) {
                    Some(values) if *values != values_json(&r.reading) => conflicts.push((r, values.clone())),
                    _ => self.metrics.duplicates.inc(),
                }
            }
        }
        for (r, stored) in conflicts {
            self.dead_letter_conflict(r, &stored).await;
        }
        not_new
    }

    /// Keeps a quiet reading that met another reading of its detector at the same device
    /// time in the dead-letter log, with both readings' values.
    async fn dead_letter_conflict(&self, r: &Settled, stored: &str) {
        let conflict = Conflict::new(&self.config.prefix, &r.device, r.address, &r.reading, stored, r.evaluated_at);
        self.metrics.rejected.with_label_values(&[READING_CONFLICT]).inc();
        self.health.retry("dead_letters", || tel::insert_dead_letter(self.store.db(), conflict.letter())).await;
    }
}

/// A reading that met another reading of its detector at the same device time, as the
/// dead-letter log keeps it: the reading's values as the payload, both readings' values in
/// the detail.
pub(super) struct Conflict<'a> {
    device: &'a DeviceInfo,
    topic: String,
    detail: String,
    values: String,
    at: DateTime<Utc>,
}

impl<'a> Conflict<'a> {
    /// `stored` is the other reading's values; `at` when this one arrived.
    pub(super) fn new(
        prefix: &str,
        device: &'a DeviceInfo,
        address: u8,
        reading: &Reading,
        stored: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let values = values_json(reading);
        let detail = format!(
            "detector {address} already has a reading at {} with other values ({stored}); readings are keyed by \
             detector and device time, so this one ({values}) was evaluated but not stored",
            reading.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let topic = match device.transport {
            DeviceTransport::ModbusTcp => format!("modbus/{}/{address}", device.serial),
            DeviceTransport::Mqtt => format!("{prefix}/{}/telemetry", device.serial),
        };
        tracing::info!(serial = %device.serial, address, at = %reading.at, "a different reading at the same device time; dead-lettered");
        Conflict { device, topic, detail, values, at }
    }

    pub(super) fn letter(&self) -> tel::DeadLetter<'_> {
        tel::DeadLetter {
            tenant: Some(self.device.tenant),
            serial: Some(&self.device.serial),
            topic: &self.topic,
            reason: READING_CONFLICT,
            detail: &self.detail,
            payload: self.values.as_bytes(),
            at: self.at,
        }
    }
}
