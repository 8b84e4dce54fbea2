//! The alarm path: a batch is split into its quiet readings (for the readings lane) and
//! everything else, which is applied in ONE transaction — its readings stored with it, the
//! alarm engine's signals, device events, online/offline changes — and published once it
//! commits. A failed transaction is retried with the evaluation state put back as it was.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::alarm::{self, Change, DetectorState, Signal};
use sparkwatch_domain::ids::{DetectorId, DeviceId};
use sparkwatch_domain::reading::{Channel, DeviceEvent, EventCategory, EventKind, EventSource, Reading};

use super::lane::{Settled, key, new_reading, stored_keys};
use super::liveness::Liveness;
use super::record::{Sighting, Times, describe, fmt_value, kind_label};
use super::settle::{Conflict, READING_CONFLICT};
use super::{Pipeline, Work};
use crate::store::telemetry::{self as tel, DetectorInfo, DeviceInfo, NewReading, values_json};

/// Devices and detectors with a message of the batch on the alarm path so far.
#[derive(Default)]
struct Loud {
    devices: foldhash::HashSet<DeviceId>,
    detectors: foldhash::HashSet<DetectorId>,
}

/// A batch split for the store stage.
struct Split {
    /// Quiet readings, for the readings lane.
    quiet_rows: Vec<NewReading>,
    /// The batch's new readings so far (the quiet ones), in order.
    settled: Vec<Settled>,
    /// Everything else, in batch order, for the transaction.
    applied: Vec<Work>,
    /// The rows of `applied`'s readings, except `conflicts`.
    rows: Vec<NewReading>,
    /// Positions in `applied` of readings with the device time of an earlier reading of the
    /// batch but other values, with that reading's values.
    conflicts: foldhash::HashMap<usize, String>,
}

/// What became of a reading on the alarm path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stored now: evaluated and settled.
    New,
    /// Stored before with the same values (a redelivery): neither evaluated nor settled.
    Again,
    /// Another reading at the same device time is stored: evaluated and dead-lettered.
    Conflict,
}

/// A reading of a batch with the key of an earlier one.
enum Repeat {
    /// The same reading again (a redelivery within the batch).
    Same,
    /// Another reading at the same device time; the earlier one's values.
    Other(String),
}

/// The positions of the readings of `work` whose key (detector, device time) an earlier
/// reading of `work` has, with what they are. Only keys are remembered per reading; the rare
/// repeats are compared afterwards.
fn repeated_keys(work: &[Work]) -> foldhash::HashMap<usize, Repeat> {
    let mut first: foldhash::HashMap<(DetectorId, DateTime<Utc>), usize> = Default::default();
    let mut repeats = foldhash::HashMap::default();
    for (i, w) in work.iter().enumerate() {
        let Work::Reading { detector, reading, .. } = w else { continue };
        let earlier = *first.entry((detector.id, reading.at)).or_insert(i);
        if earlier != i
            && let Work::Reading { reading: earlier, .. } = &work[earlier]
        {
            let repeat = if earlier == reading { Repeat::Same } else { Repeat::Other(values_json(earlier)) };
            repeats.insert(i, repeat);
        }
    }
    repeats
}

/// The evaluation state and liveness of what a transaction touches, as they were before it.
struct Snapshot {
    states: Vec<(DetectorId, Option<DetectorState>)>,
    liveness: Vec<(DeviceId, Option<Liveness>)>,
}

impl Pipeline {
    /// Splits a batch into its quiet readings ([`alarm::is_quiet`]: for a detector with
    /// nothing pending or active, a reading that enters no rule) and the rest, applies the
    /// rest in one transaction — its readings stored with it, alarm signals, device events,
    /// online/offline changes — and publishes what that changed. Returns the quiet readings
    /// to store and every new reading of the batch, in order, for [`Pipeline::settle`].
    ///
    /// Quiet readings go to the readings lane because storing them is most of a batch's
    /// work, and an alarm must not wait behind it (BENCHMARKS.md, bench-live runs 8–9). They
    /// need no redelivery check before they are evaluated: evaluating a quiet reading changes
    /// nothing but the channels' latest times. Every other reading is still checked against
    /// the store first, so a redelivered alarm reading never counts twice.
    ///
    /// Database errors are retried until the batch is stored: the thresholds' look-up as it
    /// is, the transaction after putting back the evaluation state and liveness it changed.
    pub(super) async fn apply(&mut self, work: Vec<Work>) -> (Vec<NewReading>, Vec<Settled>) {
        if work.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut retrying = self.health.retrying("thresholds");
        while let Err(e) = self.thresholds.load(&self.store, &work).await {
            retrying.wait(&e).await;
        }
        retrying.done();
        let Split { quiet_rows, mut settled, applied, rows, conflicts } = self.split(work);
        if applied.is_empty() {
            return (quiet_rows, settled);
        }
        let before = self.snapshot(&applied);
        let mut retrying = self.health.retrying("alarm_path");
        let fates = loop {
            match self.transaction(&applied, &rows, &conflicts).await {
                Ok(fates) => break fates,
                Err(e) => {
                    self.restore(&before);
                    retrying.wait(&e).await;
                }
            }
        };
        retrying.done();
        for (w, fate) in applied.into_iter().zip(fates) {
            if let (Work::Reading { device, detector, reading, received_at }, Fate::New) = (w, fate) {
                settled.push(Settled::of(&device, &detector, reading, received_at, false));
            }
        }
        (quiet_rows, settled)
    }

    /// Splits a batch: quiet readings are evaluated here (in memory) and go to the readings
    /// lane; the rest is for the transaction. A reading repeating an earlier one of the batch
    /// (same detector, device time and values) is dropped as a redelivery; one with the same
    /// device time but other values goes to the alarm path, to be evaluated and
    /// dead-lettered.
    fn split(&mut self, work: Vec<Work>) -> Split {
        let mut split = Split {
            quiet_rows: Vec::new(),
            settled: Vec::with_capacity(work.len()),
            applied: Vec::new(),
            rows: Vec::new(),
            conflicts: Default::default(),
        };
        let mut repeats = repeated_keys(&work);
        // Once a detector has a reading on the alarm path, its later readings of the batch
        // follow it there: they must be evaluated after it. So do a device's readings after
        // any other message of it (a last will, say: the reading after it brings it back).
        let mut loud = Loud::default();
        for (i, w) in work.into_iter().enumerate() {
            let mut conflict = None;
            if let Work::Reading { detector, .. } = &w {
                match repeats.remove(&i) {
                    Some(Repeat::Same) => {
                        self.metrics.duplicates.inc();
                        continue;
                    }
                    Some(Repeat::Other(values)) => {
                        conflict = Some(values);
                        loud.detectors.insert(detector.id);
                    }
                    None => {}
                }
            }
            match w {
                Work::Reading { device, detector, reading, received_at }
                    if self.evaluate_if_quiet(&loud, &device, &detector, &reading, received_at) =>
                {
                    // The device is online, so this only moves its last-seen time.
                    self.note_seen(&device, received_at);
                    split.quiet_rows.push(new_reading(&device, &detector, &reading, received_at));
                    split.settled.push(Settled::of(&device, &detector, reading, received_at, true));
                }
                w => {
                    match &w {
                        Work::Reading { device, detector, reading, received_at } => {
                            loud.detectors.insert(detector.id);
                            match conflict {
                                Some(values) => {
                                    split.conflicts.insert(split.applied.len(), values);
                                }
                                None => split.rows.push(new_reading(device, detector, reading, *received_at)),
                            }
                        }
                        Work::Event { device, .. }
                        | Work::Status { device, .. }
                        | Work::CommLost { device, .. }
                        | Work::CommRestored { device, .. } => {
                            loud.devices.insert(device.id);
                        }
                    }
                    split.applied.push(w);
                }
            }
        }
        split
    }

    /// The transaction of the alarm path; says what became of each of `applied`'s readings.
    /// Counters are kept in the outbox and added when it is published, after the commit, so
    /// an attempt that failed counts nothing.
    async fn transaction(
        &mut self,
        applied: &[Work],
        rows: &[NewReading],
        conflicts: &foldhash::HashMap<usize, String>,
    ) -> Result<Vec<Fate>, sea_orm::DbErr> {
        let now = self.clock.now();
        // Whatever an earlier, rolled-back transaction noted never happened.
        self.outbox = Default::default();
        let t_begin = Instant::now();
        let tx = self.store.begin().await?;
        let inserted: foldhash::HashSet<(DetectorId, DateTime<Utc>)> =
            if rows.is_empty() { Default::default() } else { stored_keys(tel::insert_readings(&tx, rows).await?) };
        self.outbox.counts.readings_stored += inserted.len() as u64;
        let (fates, stored) = self.fates(&tx, applied, &inserted, conflicts).await?;
        let t_inserted = Instant::now();
        for (i, w) in applied.iter().enumerate() {
            if fates[i] == Fate::Again {
                // Evaluated the first time (e.g. before a restart): must not count again.
                self.outbox.counts.duplicates += 1;
                continue;
            }
            // The rare cases are awaited behind a check: building their futures (with their
            // queries' futures inside) for every reading showed in profiles.
            if let Some((device, at)) = w.heard_from()
                && self.note_seen(device, at)
            {
                self.came_online(&tx, device, at, now).await?;
            }
            match w {
                Work::Reading { device, detector, reading, received_at } => {
                    self.evaluate(&tx, device, detector, reading, *received_at, now).await?;
                    if fates[i] == Fate::Conflict {
                        let other = conflicts.get(&i).or_else(|| stored.get(&key(detector.id, reading)));
                        let other = other.map_or("?", String::as_str);
                        let prefix = &self.config.prefix;
                        let conflict = Conflict::new(prefix, device, detector.address, reading, other, *received_at);
                        tel::insert_dead_letter(&tx, conflict.letter()).await?;
                        self.outbox.counts.rejected.push(READING_CONFLICT);
                    }
                }
                Work::Event { device, detector, event, received_at } => {
                    self.apply_device_event(&tx, device, detector, event, *received_at, now).await?;
                }
                Work::CommLost { device, detector, detail, received_at } => {
                    self.comm_lost(&tx, device, detector, detail, *received_at, now).await?;
                }
                Work::CommRestored { device, detector, received_at } => {
                    self.comm_restored(&tx, device, detector, *received_at, now).await?;
                }
                Work::Status { device, online, received_at } => {
                    if !*online {
                        self.went_offline(&tx, device, *received_at, now, "the device reported offline (last will)")
                            .await?;
                    }
                }
            }
        }
        let t_applied = Instant::now();
        tx.commit().await?;
        let t_committed = Instant::now();
        self.publish();
        tracing::debug!(
            readings = rows.len(),
            insert_ms = (t_inserted - t_begin).as_secs_f64() * 1e3,
            apply_ms = (t_applied - t_inserted).as_secs_f64() * 1e3,
            commit_ms = (t_committed - t_applied).as_secs_f64() * 1e3,
            publish_ms = t_committed.elapsed().as_secs_f64() * 1e3,
            "batch applied"
        );
        Ok(fates)
    }

    /// What became of each reading of `applied` given the keys the insert stored: new, or —
    /// looking up the stored values of those it did not — the same reading again, or
    /// another at the same device time. Returns the stored values it looked up.
    async fn fates(
        &mut self,
        tx: &DatabaseTransaction,
        applied: &[Work],
        inserted: &foldhash::HashSet<(DetectorId, DateTime<Utc>)>,
        conflicts: &foldhash::HashMap<usize, String>,
    ) -> Result<(Vec<Fate>, std::collections::HashMap<(DetectorId, DateTime<Utc>), String>), sea_orm::DbErr> {
        let mut fates = vec![Fate::New; applied.len()];
        let mut again = Vec::new();
        for (i, w) in applied.iter().enumerate() {
            if let Work::Reading { detector, reading, .. } = w {
                if conflicts.contains_key(&i) {
                    fates[i] = Fate::Conflict;
                } else if !inserted.contains(&key(detector.id, reading)) {
                    fates[i] = Fate::Again;
                    again.push((detector.id, reading.at));
                }
            }
        }
        if again.is_empty() {
            return Ok((fates, Default::default()));
        }
        let stored = tel::stored_values(tx, &again).await?;
        for (i, w) in applied.iter().enumerate() {
            if let (Work::Reading { detector, reading, .. }, Fate::Again) = (w, fates[i])
                && stored.get(&key(detector.id, reading)).is_some_and(|v| *v != values_json(reading))
            {
                fates[i] = Fate::Conflict;
            }
        }
        Ok((fates, stored))
    }

    /// The evaluation state and liveness `applied` may change.
    fn snapshot(&self, applied: &[Work]) -> Snapshot {
        let mut states: Vec<(DetectorId, Option<DetectorState>)> = Vec::new();
        let mut liveness: Vec<(DeviceId, Option<Liveness>)> = Vec::new();
        let (mut detectors, mut devices) = (foldhash::HashSet::default(), foldhash::HashSet::default());
        for w in applied {
            let (device, detector) = match w {
                Work::Reading { device, detector, .. } => (device, Some(detector.id)),
                Work::Event { device, .. }
                | Work::Status { device, .. }
                | Work::CommLost { device, .. }
                | Work::CommRestored { device, .. } => (device, None),
            };
            if let Some(d) = detector
                && detectors.insert(d)
            {
                states.push((d, self.states.get(&d).cloned()));
            }
            if devices.insert(device.id) {
                liveness.push((device.id, self.liveness.get(&device.id).cloned()));
            }
        }
        Snapshot { states, liveness }
    }

    /// Puts back what [`Pipeline::snapshot`] took.
    fn restore(&mut self, snapshot: &Snapshot) {
        for (id, state) in &snapshot.states {
            match state {
                Some(s) => self.states.insert(*id, s.clone()),
                None => self.states.remove(id),
            };
        }
        for (id, live) in &snapshot.liveness {
            match live {
                Some(l) => self.liveness.insert(*id, l.clone()),
                None => self.liveness.remove(id),
            };
        }
    }

    /// Evaluates a reading that can skip the alarm path, and says whether it could: its
    /// device is online (otherwise the reading brings it back, which the transaction
    /// records), neither its device nor its detector has an earlier message of this batch
    /// on the alarm path, its detector's state is loaded, and the reading is quiet
    /// ([`alarm::evaluate_if_quiet`], at its time [as evaluated](alarm::as_evaluated)).
    fn evaluate_if_quiet(
        &mut self,
        loud: &Loud,
        device: &DeviceInfo,
        detector: &DetectorInfo,
        reading: &Reading,
        received_at: DateTime<Utc>,
    ) -> bool {
        if loud.detectors.contains(&detector.id)
            || loud.devices.contains(&device.id)
            || !self.liveness.get(&device.id).is_some_and(|l| l.online)
        {
            return false;
        }
        match (self.states.get_mut(&detector.id), self.thresholds.get(detector.id)) {
            (Some(state), Some(thresholds)) => {
                alarm::evaluate_if_quiet(state, thresholds, &alarm::as_evaluated(reading, received_at))
            }
            _ => false,
        }
    }

    /// Runs the alarm engine over a reading on the alarm path and applies its signals. The
    /// reading is evaluated no later than it arrived ([`alarm::as_evaluated`]): a device
    /// clock running ahead must not silence the detector (DEVICE-PROTOCOL.md §3, "Time"), so
    /// signals of such a reading carry its arrival time.
    async fn evaluate(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        detector: &DetectorInfo,
        reading: &Reading,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let thresholds = *self
            .thresholds
            .get(detector.id)
            .ok_or_else(|| sea_orm::DbErr::Custom("thresholds were not loaded for the batch".into()))?;
        if !self.states.contains_key(&detector.id) {
            self.restore_state(tx, detector.id).await?;
        }
        let state = self.states.entry(detector.id).or_default();
        for signal in alarm::evaluate(state, &thresholds, &alarm::as_evaluated(reading, received_at)) {
            self.apply_signal(tx, device, detector, signal, received_at, now).await?;
        }
        Ok(())
    }

    /// The first time a detector is evaluated after a start (it has no state yet), conditions
    /// whose alarm episodes are still active are restored, so a restart does not raise them
    /// again.
    async fn restore_state(&mut self, tx: &DatabaseTransaction, detector: DetectorId) -> Result<(), sea_orm::DbErr> {
        let mut state = DetectorState::default();
        for ep in tel::active_conditions(tx, detector.as_uuid()).await? {
            if let (Some(channel), Some(kind)) = (Channel::parse(&ep.channel), EventKind::from_code(&ep.kind)) {
                state.restore_active(channel, kind, EventCategory::Alarm, ep.setpoint.unwrap_or_default());
            }
        }
        self.states.insert(detector, state);
        Ok(())
    }

    async fn apply_signal(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        det: &DetectorInfo,
        signal: Signal,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let Signal { change, kind, channel, category, value, setpoint, at } = signal;
        let alarm = category == EventCategory::Alarm;
        let times = Times { at, ingested_at: received_at, processed_at: now };
        match change {
            Change::Raised => {
                let raised = Sighting {
                    device,
                    detector: Some(det),
                    channel,
                    kind,
                    category,
                    source: EventSource::Engine,
                    times,
                    value: Some(value),
                    setpoint: Some(setpoint),
                };
                let occ = raised.occurrence();
                // Pre-alarms are early warnings: recorded as events, not latched, no hazard.
                let episode = if alarm { Some(self.raise(tx, &occ).await?) } else { None };
                let remarks = Some(describe(kind, category, &channel, Some(value), Some(setpoint)));
                self.record(tx, device, &occ.event(episode, remarks)).await?;
            }
            Change::Continuing => {
                if alarm {
                    tel::touch(tx, det.id.as_uuid(), &channel.code(), kind.code(), value, at).await?;
                }
            }
            Change::Cleared | Change::Superseded => {
                // Alarms stay latched: the episode stays open until its hazard is handled.
                let episode = if alarm {
                    tel::clear(tx, det.id.as_uuid(), &channel.code(), kind.code(), at, false).await?
                } else {
                    None
                };
                if change == Change::Cleared {
                    let remarks = Some(format!(
                        "{} back to normal ({})",
                        kind_label(kind, category),
                        fmt_value(&channel, Some(value))
                    ));
                    let recovered = Sighting {
                        device,
                        detector: Some(det),
                        channel,
                        kind: EventKind::Recovered,
                        category: EventCategory::Recovery,
                        source: EventSource::Engine,
                        times,
                        value: Some(value),
                        setpoint: None,
                    };
                    self.record(tx, device, &recovered.occurrence().event(episode, remarks)).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply_device_event(
        &mut self,
        tx: &DatabaseTransaction,
        device: &DeviceInfo,
        det: &DetectorInfo,
        e: &DeviceEvent,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        // A redelivered device event (same detector, kind, channel and device time) counts once.
        if tel::device_event_recorded(tx, det.id, e.kind, &e.channel, e.at).await? {
            self.outbox.counts.duplicates += 1;
            return Ok(());
        }
        let category = e.kind.category();
        let reported = Sighting {
            device,
            detector: Some(det),
            channel: e.channel,
            kind: e.kind,
            category,
            source: EventSource::Device,
            times: Times { at: e.at, ingested_at: received_at, processed_at: now },
            value: e.value,
            setpoint: e.setpoint,
        };
        let occ = reported.occurrence();
        let mut episode = None;
        if e.kind.is_alarm() || e.kind.is_fault() {
            episode = Some(self.raise(tx, &occ).await?);
        } else if e.kind == EventKind::Recovered
            && let Some(cause) = e.cause
        {
            // Faults clear themselves; alarms stay latched until their hazard is handled.
            episode = tel::clear(tx, det.id.as_uuid(), &e.channel.code(), cause.code(), e.at, cause.is_fault()).await?;
        }
        let remarks = Some(match (e.kind, e.cause) {
            (EventKind::Recovered, Some(cause)) => {
                format!("{} ended (reported by the device)", kind_label(cause, cause.category()))
            }
            (kind, _) => {
                format!("{} (reported by the device)", describe(kind, category, &e.channel, e.value, e.setpoint))
            }
        });
        self.record(tx, device, &occ.event(episode, remarks)).await?;
        Ok(())
    }

    /// The Modbus poller's third failed poll in a row: a detector-level `OFFLINE` fault.
    async fn comm_lost(
        &mut self,
        tx: &DatabaseTransaction,
        device: &Arc<DeviceInfo>,
        detector: &DetectorInfo,
        detail: &str,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let lost = Sighting {
            device,
            detector: Some(detector),
            channel: Channel::DETECTOR,
            kind: EventKind::Offline,
            category: EventCategory::Fault,
            source: EventSource::System,
            times: Times { at: received_at, ingested_at: received_at, processed_at: now },
            value: None,
            setpoint: None,
        };
        let occ = lost.occurrence();
        let episode = self.raise(tx, &occ).await?;
        let remarks = Some(format!("communication lost: 3 polls in a row failed ({detail})"));
        self.record(tx, device, &occ.event(Some(episode), remarks)).await
    }

    /// A good poll after a communication fault: the fault closes.
    async fn comm_restored(
        &mut self,
        tx: &DatabaseTransaction,
        device: &Arc<DeviceInfo>,
        detector: &DetectorInfo,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let episode = tel::clear(
            tx,
            detector.id.as_uuid(),
            &Channel::DETECTOR.code(),
            EventKind::Offline.code(),
            received_at,
            true,
        )
        .await?;
        let restored = Sighting {
            device,
            detector: Some(detector),
            channel: Channel::DETECTOR,
            kind: EventKind::Online,
            category: EventCategory::Status,
            source: EventSource::System,
            times: Times { at: received_at, ingested_at: received_at, processed_at: now },
            value: None,
            setpoint: None,
        };
        let remarks = Some("communication restored".to_owned());
        self.record(tx, device, &restored.occurrence().event(episode, remarks)).await
    }
}
