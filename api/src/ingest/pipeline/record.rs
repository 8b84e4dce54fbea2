//! What the alarm path writes about an occurrence — episodes (and their hazards) and
//! events — and the bus messages it publishes once the transaction commits.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::notify::{self, Locale, Severity};
use sparkwatch_domain::reading::{Channel, EventCategory, EventKind, EventSource};

use super::Pipeline;
use crate::bus::{BusMessage, DeviceStatus, Envelope, Feed};
use crate::service::notify::{schedule_escalation, schedule_routing};
use crate::store::hazards::{EventView, Hazard, event_view, hazard_from};
use crate::store::telemetry::{self as tel, DetectorInfo, DeviceInfo, NewEvent, Occurrence, micros};

/// What a transaction changed, published on the bus once it commits. Built from the rows
/// as the transaction wrote them: reading them back after the commit cost four round trips
/// between the commit and the first subscriber.
#[derive(Default)]
pub(super) struct Outbox {
    events: Vec<(TenantId, EventView)>,
    /// The hazards' latest versions, by id.
    hazards: HashMap<uuid::Uuid, Hazard>,
    statuses: Vec<(TenantId, DeviceStatus)>,
    /// What to count once it committed.
    pub(super) counts: Counts,
}

/// Counters a transaction adds to the metrics when it commits (an attempt that failed and
/// is retried must not count).
#[derive(Default)]
pub(super) struct Counts {
    pub(super) readings_stored: u64,
    pub(super) duplicates: u64,
    /// Kinds of the episodes opened.
    pub(super) opened: Vec<&'static str>,
    /// Reasons of the input rejected.
    pub(super) rejected: Vec<&'static str>,
}

/// When something happened: the device's time, when the message arrived, and when the
/// pipeline processed it (a hazard's creation time).
#[derive(Clone, Copy, Debug)]
pub(super) struct Times {
    pub(super) at: DateTime<Utc>,
    pub(super) ingested_at: DateTime<Utc>,
    pub(super) processed_at: DateTime<Utc>,
}

/// Something the pipeline saw happen — where, what, who decided, when and the values —
/// from which the stored [`Occurrence`] and its event are made.
pub(super) struct Sighting<'a> {
    pub(super) device: &'a DeviceInfo,
    /// The detector, unless the condition is device-wide.
    pub(super) detector: Option<&'a DetectorInfo>,
    pub(super) channel: Channel,
    pub(super) kind: EventKind,
    pub(super) category: EventCategory,
    pub(super) source: EventSource,
    pub(super) times: Times,
    pub(super) value: Option<f64>,
    pub(super) setpoint: Option<f64>,
}

impl Sighting<'_> {
    /// The occurrence as the store keeps it.
    pub(super) fn occurrence(&self) -> Occurrence {
        let Times { at, ingested_at, processed_at } = self.times;
        Occurrence {
            tenant: self.device.tenant,
            project: self.detector.map_or(self.device.project, |d| d.project),
            device: self.device.id,
            detector: self.detector.map(|d| d.id),
            channel: self.channel.code(),
            kind: self.kind.code(),
            category: self.category.code(),
            source: self.source,
            // Stored with microseconds (PostgreSQL): subscribers are told what a query returns.
            at: micros(at),
            ingested_at: micros(ingested_at),
            processed_at: micros(processed_at),
            value: self.value,
            setpoint: self.setpoint,
        }
    }
}

impl Pipeline {
    /// Records an event of `device` and remembers it for the bus.
    pub(super) async fn record(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        e: &NewEvent,
    ) -> Result<(), sea_orm::DbErr> {
        let row = tel::insert_event(tx, e).await?;
        if EventCategory::from_code(e.category).is_some_and(Severity::pushed) {
            schedule_routing(tx, e.tenant, row.id, self.clock.now()).await?;
        }
        self.outbox.events.push(event_view(row, device.place(e.detector)));
        Ok(())
    }

    /// Opens or repeats an episode and remembers its hazard for the bus.
    pub(super) async fn raise(
        &mut self,
        tx: &DatabaseTransaction,
        o: &Occurrence,
    ) -> Result<uuid::Uuid, sea_orm::DbErr> {
        let raised = tel::raise(tx, o).await?;
        if let Some(hazard) = raised.hazard {
            if raised.new && o.category == EventCategory::Alarm.code() {
                // In this transaction: a committed alarm always has its escalation scheduled.
                let policy = self.escalations.of(&self.store, o.tenant).await?;
                schedule_escalation(tx, o.tenant, hazard.id, policy, o.processed_at).await?;
            }
            self.outbox.hazards.insert(hazard.id, hazard_from(hazard));
        }
        if raised.new {
            self.outbox.counts.opened.push(o.kind);
        }
        Ok(raised.episode)
    }

    /// Remembers a device's new status for the bus.
    pub(super) fn note_status(&mut self, device: &DeviceInfo, online: bool, at: DateTime<Utc>) {
        let status = DeviceStatus {
            device_id: device.id,
            project_id: device.project,
            serial: device.serial.clone(),
            online,
            at,
        };
        self.outbox.statuses.push((device.tenant, status));
    }

    /// Publishes what the committed transaction changed, and counts it.
    pub(super) fn publish(&mut self) {
        let Outbox { events, hazards, statuses, counts } = std::mem::take(&mut self.outbox);
        let m = &self.metrics;
        m.readings_stored.inc_by(counts.readings_stored);
        m.duplicates.inc_by(counts.duplicates);
        counts.opened.into_iter().for_each(|kind| m.episodes_opened.with_label_values(&[kind]).inc());
        counts.rejected.into_iter().for_each(|reason| m.rejected.with_label_values(&[reason]).inc());
        let mut out = Vec::new();
        let statuses = statuses.into_iter().map(|(tenant, s)| (tenant, BusMessage::DeviceStatus(Box::new(s))));
        let events = events.into_iter().map(|(tenant, v)| (tenant, BusMessage::Event(Box::new(v))));
        let hazards = hazards.into_values().map(|h| (h.tenant_id, BusMessage::Hazard(Box::new(h))));
        out.extend(statuses.chain(events).chain(hazards).map(|(tenant, message)| Envelope {
            tenant,
            feed: Feed::Tenant(tenant),
            message,
        }));
        self.bus.publish(out);
    }
}

pub(super) fn fmt_value(channel: &Channel, v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| notify::fmt_value(channel, v))
}

pub(super) fn kind_label(kind: EventKind, category: EventCategory) -> String {
    notify::kind_label(kind, category, Locale::En)
}

/// "leakage current alarm on leak:1: 512 mA (set-point 300 mA)" — the event view's remarks.
pub(super) fn describe(
    kind: EventKind,
    category: EventCategory,
    channel: &Channel,
    value: Option<f64>,
    setpoint: Option<f64>,
) -> String {
    let mut s = format!("{} on {}", kind_label(kind, category), channel.code());
    if value.is_some() {
        s.push_str(&format!(": {}", fmt_value(channel, value)));
    }
    if setpoint.is_some() {
        s.push_str(&format!(" (set-point {})", fmt_value(channel, setpoint)));
    }
    s
}
