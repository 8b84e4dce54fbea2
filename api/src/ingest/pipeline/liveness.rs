//! Liveness: any message marks its device online; the last will or a heartbeat timeout
//! (rule 5, checked against receive times) opens an `OFFLINE` fault. Tracked in memory; the
//! changes are written in the transaction that notices them, `last_seen_at` by the
//! write-back.
//!
//! Heartbeat timeouts are not checked while ingestion cannot store, and count from its
//! recovery at the earliest: a device's messages may be waiting behind the failure (in the
//! broker, the queue, a batch being retried), so its silence says nothing about the device.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::alarm;
use sparkwatch_domain::ids::DeviceId;
use sparkwatch_domain::reading::{Channel, EventCategory, EventKind, EventSource};
use sparkwatch_domain::site::DeviceTransport;

use super::Pipeline;
use super::record::{Sighting, Times};
use crate::store::telemetry::{self as tel, DeviceInfo};

/// What the pipeline knows about a device's liveness.
#[derive(Clone)]
pub(super) struct Liveness {
    device: Arc<DeviceInfo>,
    pub(super) online: bool,
    last_seen: DateTime<Utc>,
    /// `last_seen` changed since the last write-back.
    dirty: bool,
}

impl Pipeline {
    /// Loads the stored liveness of every MQTT device, so heartbeats continue across a restart.
    pub(super) async fn load_liveness(&mut self) -> Result<(), sea_orm::DbErr> {
        let now = self.clock.now();
        for d in tel::devices_by_transport(self.store.db(), DeviceTransport::Mqtt).await? {
            let last_seen = d.last_seen_at.unwrap_or(now);
            self.liveness.insert(d.id, Liveness { online: d.online, last_seen, dirty: false, device: Arc::new(d) });
        }
        Ok(())
    }

    /// Notes that a device was heard from at `at`; true when it was offline, and
    /// [`Pipeline::came_online`] is to record that it is back.
    pub(super) fn note_seen(&mut self, device: &Arc<DeviceInfo>, at: DateTime<Utc>) -> bool {
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
    pub(super) async fn came_online(
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
        let online = Sighting {
            device,
            detector: None,
            channel: Channel::DETECTOR,
            kind: EventKind::Online,
            category: EventCategory::Status,
            source: EventSource::System,
            times: Times { at, ingested_at: now, processed_at: now },
            value: None,
            setpoint: None,
        };
        self.record(tx, device, &online.occurrence().event(episode, Some("device online".to_owned()))).await
    }

    /// Records that a device went offline, unless it already was.
    pub(super) async fn went_offline(
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
        let offline = Sighting {
            device,
            detector: None,
            channel: Channel::DETECTOR,
            kind: EventKind::Offline,
            category: EventCategory::Fault,
            source: EventSource::System,
            times: Times { at, ingested_at: at, processed_at: now },
            value: None,
            setpoint: None,
        };
        let occ = offline.occurrence();
        let episode = self.raise(tx, &occ).await?;
        self.record(tx, device, &occ.event(Some(episode), Some(why.to_owned()))).await
    }

    /// The online MQTT devices whose heartbeat timeout has passed at `now`, with when they
    /// were last heard from; none while ingestion is failing, and timeouts count from its
    /// last recovery at the earliest.
    pub(super) fn offline_due(&self, now: DateTime<Utc>) -> Vec<(Arc<DeviceInfo>, DateTime<Utc>)> {
        if self.health.is_failing() {
            return Vec::new();
        }
        let recovered = self.health.recovered_at();
        self.liveness
            .values()
            .filter(|l| {
                l.online
                    && l.device.transport == DeviceTransport::Mqtt
                    && alarm::offline_due(l.last_seen.max(recovered.unwrap_or(l.last_seen)), l.device.interval_s, now)
            })
            .map(|l| (l.device.clone(), l.last_seen))
            .collect()
    }

    /// Declares the `due` devices offline in one transaction and publishes the changes.
    pub(super) async fn declare_offline(
        &mut self,
        due: Vec<(Arc<DeviceInfo>, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        if due.is_empty() {
            return Ok(());
        }
        self.outbox = Default::default();
        let ids: Vec<DeviceId> = due.iter().map(|(d, _)| d.id).collect();
        let result = async {
            let tx = self.store.begin().await?;
            for (device, last_seen) in due {
                let why = format!("no message since {} (heartbeat timeout)", last_seen.format("%Y-%m-%d %H:%M:%S UTC"));
                self.went_offline(&tx, &device, now, now, &why).await?;
            }
            tx.commit().await
        }
        .await;
        if result.is_err() {
            // Not recorded: still online, so the next tick tries again.
            for id in ids {
                if let Some(l) = self.liveness.get_mut(&id) {
                    l.online = true;
                }
            }
        } else {
            self.publish();
        }
        result
    }

    /// The last-seen times that changed since the last call, for the write-back.
    pub(super) fn take_seen(&mut self) -> HashMap<DeviceId, DateTime<Utc>> {
        let mut seen = HashMap::new();
        for l in self.liveness.values_mut().filter(|l| l.dirty) {
            l.dirty = false;
            seen.insert(l.device.id, l.last_seen);
        }
        seen
    }
}
