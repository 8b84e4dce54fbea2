//! The reading evaluator: rules 1–3 and 5 of the alarm engine, as a pure state machine.
//!
//! The ingestion pipeline keeps one [`DetectorState`] per detector and calls [`evaluate`] for
//! every reading of that detector, in arrival order. `evaluate` compares each measured channel
//! with the detector's [`EffectiveThresholds`], applies the delay (debounce) and the hysteresis
//! band, and returns [`Signal`]s that say how each *condition* changed. Storing episodes,
//! events and hazards is the caller's job; this module never reads the clock — time comes only
//! from [`Reading::at`].
//!
//! # Conditions
//! A condition is one (channel, kind, level) triple, e.g. leakage channel 2 / `LEAK_ALARM` /
//! alarm. Each reading checks, per channel:
//!
//! | quantity | condition | enters when | clears when (h = hysteresis %) | delay |
//! |---|---|---|---|---|
//! | leakage *n* | `LEAK_ALARM` alarm | value ≥ `leak_ma` | value < `leak_ma` × (1 − h) | `leak_delay_s` |
//! | leakage *n* | `LEAK_ALARM` pre-alarm | value ≥ `leak_ma` × p | value < `leak_ma` × p × (1 − h) | `leak_delay_s` |
//! | temperature *n* | `TEMP_ALARM` alarm | value ≥ `temp_c` | value < `temp_c` × (1 − h) | `temp_delay_s` |
//! | temperature *n* | `TEMP_ALARM` pre-alarm | value ≥ `temp_c` × p | value < `temp_c` × p × (1 − h) | `temp_delay_s` |
//! | voltage *n* | `OVERVOLTAGE` alarm | value > `overvoltage_v` | value < `overvoltage_v` × (1 − h) | [`POWER_DELAY_S`] |
//! | voltage *n* | `PHASE_LOSS` alarm | value < 50 % of nominal **and** another phase ≥ `undervoltage_v` | value > that level × (1 + h) | [`POWER_DELAY_S`] |
//! | voltage *n* | `UNDERVOLTAGE` alarm | value < `undervoltage_v` (and no phase loss) | value > `undervoltage_v` × (1 + h) | [`POWER_DELAY_S`] |
//! | current *n* | `OVERCURRENT` alarm | value > `overcurrent_a` (only when set) | value < `overcurrent_a` × (1 − h) | [`POWER_DELAY_S`] |
//!
//! (p = `prealarm_percent` / 100.) Pre-alarms exist for leakage and temperature only: the
//! domain's voltage warning (110 % of nominal) is not a percentage of the over-voltage
//! set-point, and 80 % of an over-current set-point is an ordinary loaded circuit — a warning
//! there would fire all day. A `prealarm_percent` of 100 or more effectively disables
//! pre-alarms, because the alarm always takes over first.
//!
//! # Delay and hysteresis
//! A condition is *pending* from the first reading that enters it and is raised by the first
//! reading whose timestamp is at least the delay later, provided every reading in between
//! also entered it; a reading that does not enter it resets the timer silently. Because only
//! readings are seen, a 5 s delay on a device that reports every 60 s raises on the *second*
//! reading over the set-point — the device's own events (rule 4) are the fast path for
//! slow-reporting devices. Delay 0 raises on the first reading.
//!
//! An active condition stays active until the value leaves the hysteresis band, so a value
//! oscillating around the set-point yields one `Raised`, `Continuing`s, and no `Cleared`.
//!
//! # Escalation
//! Within one channel a more severe condition supersedes a milder one: a leakage/temperature
//! alarm supersedes that channel's pre-alarm, and a phase loss supersedes that phase's
//! under-voltage. While the severe condition is active the mild one is neither pending nor
//! raised; if the mild one was active it ends with [`Change::Superseded`]. Once the severe
//! condition clears, the mild one is evaluated again from that reading on (e.g. a leakage that
//! falls from 320 mA to 280 mA clears the alarm and, at 80 %, starts the pre-alarm).
//!
//! # What the caller does with each signal
//! See [`Change`]. In short: `Raised` opens an episode (or, while an alarm episode for the
//! same detector/channel/kind is still latched, counts a re-occurrence on it) and records an
//! event; `Continuing` updates the open episode's last and peak value without an event;
//! `Cleared` records a `RECOVERY` event and ends pre-alarm episodes (alarm episodes stay
//! latched until their hazard leaves `OPEN`, see [`crate::hazard::episode_is_open`]);
//! `Superseded` ends the mild condition without a recovery event.
//!
//! # Persistence
//! [`DetectorState`] is serde-serialisable (no map keys other than strings, so JSON works)
//! and small: only pending or active conditions and one timestamp per channel are kept. A
//! caller that does not persist it can rebuild it with [`DetectorState::restore_active`] from
//! the episodes whose condition has not cleared; otherwise, after a restart, conditions that
//! are still on are raised again once their delay has passed (and count as re-occurrences).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::reading::{Channel, EventCategory, EventKind, Quantity, Reading};
use crate::thresholds::{EffectiveThresholds, NOMINAL_PHASE_VOLTAGE_V};

/// Delay, in seconds, of the voltage and current conditions. The thresholds carry delays for
/// leakage and temperature only (the GB-configurable ones); 5 s is the typical device default
/// and rides through motor starts and switching transients without coupling the voltage
/// behaviour to whatever someone set for leakage.
pub const POWER_DELAY_S: f64 = 5.0;

/// A phase whose voltage falls below this fraction of [`NOMINAL_PHASE_VOLTAGE_V`] while
/// another phase is normal is lost rather than low.
pub const PHASE_LOSS_FRACTION: f64 = 0.5;

/// How many reporting intervals a device may miss before it is considered offline (rule 5).
pub const HEARTBEAT_MISSED_INTERVALS: i64 = 3;

/// Upper bound of the heartbeat timeout, in seconds (rule 5: at most 5 minutes).
pub const MAX_HEARTBEAT_TIMEOUT_S: i64 = 300;

/// How a condition changed with a reading. Every variant tells the caller what to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// The condition has held for its delay and is now active. Open an episode for
    /// (detector, channel, kind) — or, if an alarm episode for that triple is still open
    /// (latched, or its condition never cleared), add one to its occurrence count — update
    /// its last/peak value and record an event of `category` (a new alarm sounds again).
    Raised,
    /// The condition is still active. Update the open episode's last value and peak; record
    /// no event.
    Continuing,
    /// The value left the hysteresis band: the condition ended. Record a `RECOVERY` event and
    /// mark the episode's condition as cleared. A pre-alarm episode ends here; an alarm
    /// episode ends here only if its latch was already released (its hazard left `OPEN`),
    /// otherwise it stays latched until then.
    Cleared,
    /// The condition was active and a more severe condition of the same channel (alarm over
    /// pre-alarm, phase loss over under-voltage) has just been raised, which is reported in
    /// the same batch. Treat like `Cleared` but record no `RECOVERY` event: nothing recovered.
    Superseded,
}

/// One change of one condition, produced by [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// What happened to the condition.
    pub change: Change,
    /// The condition's kind (`LEAK_ALARM`, `PHASE_LOSS`, …).
    pub kind: EventKind,
    /// The channel the condition concerns.
    pub channel: Channel,
    /// [`EventCategory::Alarm`] or [`EventCategory::PreAlarm`].
    pub category: EventCategory,
    /// The value of this reading on that channel (for `Continuing`, feed it to last/peak).
    pub value: f64,
    /// The level the value is compared with: the alarm set-point, or for a pre-alarm the
    /// pre-alarm level (set-point × `prealarm_percent` %). For a `Cleared` caused by a
    /// removed over-current set-point, the last set-point used.
    pub setpoint: f64,
    /// The reading's timestamp.
    pub at: DateTime<Utc>,
}

/// The two levels a reading-derived condition can have; private so the public API speaks
/// [`EventCategory`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Level {
    Alarm,
    PreAlarm,
}

impl Level {
    const fn category(self) -> EventCategory {
        match self {
            Level::Alarm => EventCategory::Alarm,
            Level::PreAlarm => EventCategory::PreAlarm,
        }
    }

    const fn of(category: EventCategory) -> Option<Level> {
        match category {
            EventCategory::Alarm => Some(Level::Alarm),
            EventCategory::PreAlarm => Some(Level::PreAlarm),
            _ => None,
        }
    }
}

/// Identifies one condition of a detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Key {
    channel: Channel,
    kind: EventKind,
    level: Level,
}

/// The state of one condition. Entries that are neither pending nor active are removed, so
/// the state of a healthy detector is just its per-channel timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Condition {
    /// Time of the first reading of the current unbroken run that entered the condition.
    pending_since: Option<DateTime<Utc>>,
    /// Raised and not yet cleared.
    active: bool,
    /// The level last compared with; kept so that a condition whose set-point disappears
    /// can still report what it was.
    setpoint: f64,
}

/// The evaluator's memory for one detector: which conditions are pending or active, and the
/// timestamp of the last reading evaluated per channel (to ignore out-of-order readings).
///
/// Start with `DetectorState::default()`; persist it with serde if the pipeline wants
/// conditions to survive a restart (or use [`DetectorState::restore_active`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StateRepr", into = "StateRepr")]
pub struct DetectorState {
    conditions: BTreeMap<Key, Condition>,
    last_at: BTreeMap<Channel, DateTime<Utc>>,
}

/// Serialised form of [`DetectorState`]: lists instead of maps, because JSON object keys
/// must be strings and ours are structs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StateRepr {
    conditions: Vec<ConditionRepr>,
    last_at: Vec<(Channel, DateTime<Utc>)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ConditionRepr {
    channel: Channel,
    kind: EventKind,
    level: Level,
    pending_since: Option<DateTime<Utc>>,
    active: bool,
    setpoint: f64,
}

impl From<DetectorState> for StateRepr {
    fn from(state: DetectorState) -> Self {
        StateRepr {
            conditions: state
                .conditions
                .into_iter()
                .map(|(k, c)| ConditionRepr {
                    channel: k.channel,
                    kind: k.kind,
                    level: k.level,
                    pending_since: c.pending_since,
                    active: c.active,
                    setpoint: c.setpoint,
                })
                .collect(),
            last_at: state.last_at.into_iter().collect(),
        }
    }
}

impl From<StateRepr> for DetectorState {
    fn from(repr: StateRepr) -> Self {
        DetectorState {
            conditions: repr
                .conditions
                .into_iter()
                .map(|c| {
                    let key = Key { channel: c.channel, kind: c.kind, level: c.level };
                    (key, Condition { pending_since: c.pending_since, active: c.active, setpoint: c.setpoint })
                })
                .collect(),
            last_at: repr.last_at.into_iter().collect(),
        }
    }
}

impl DetectorState {
    /// Whether the condition (channel, kind, category) is currently active.
    pub fn is_active(&self, channel: Channel, kind: EventKind, category: EventCategory) -> bool {
        Level::of(category)
            .and_then(|level| self.conditions.get(&Key { channel, kind, level }))
            .is_some_and(|c| c.active)
    }

    /// Every active condition as (channel, kind, category), in a stable order.
    pub fn active(&self) -> impl Iterator<Item = (Channel, EventKind, EventCategory)> + '_ {
        self.conditions.iter().filter(|(_, c)| c.active).map(|(k, _)| (k.channel, k.kind, k.level.category()))
    }

    /// Marks a condition as active without a signal, for rebuilding the state after a restart
    /// from stored episodes whose condition has not cleared. The next reading then continues
    /// or clears it instead of raising it again. Returns `false` (and changes nothing) when
    /// `category` is neither `Alarm` nor `PreAlarm`.
    pub fn restore_active(
        &mut self,
        channel: Channel,
        kind: EventKind,
        category: EventCategory,
        setpoint: f64,
    ) -> bool {
        let Some(level) = Level::of(category) else {
            return false;
        };
        let setpoint = if setpoint.is_finite() { setpoint } else { 0.0 };
        self.conditions.insert(Key { channel, kind, level }, Condition { pending_since: None, active: true, setpoint });
        true
    }
}

/// How a condition's level is compared with a value.
#[derive(Clone, Copy, Debug)]
enum Bound {
    /// Enters at value ≥ level (leakage, temperature).
    AtLeast,
    /// Enters at value > level (over-voltage, over-current).
    Above,
    /// Enters at value < level (under-voltage, phase loss).
    Below,
}

/// One condition's rule as derived from the thresholds for this reading.
#[derive(Clone, Copy, Debug)]
struct Rule {
    kind: EventKind,
    level_kind: Level,
    bound: Bound,
    level: f64,
    delay: Duration,
}

impl Rule {
    fn enters(&self, value: f64) -> bool {
        match self.bound {
            Bound::AtLeast => value >= self.level,
            Bound::Above => value > self.level,
            Bound::Below => value < self.level,
        }
    }

    /// Whether the value has left the hysteresis band of `band_percent` %. Computed as
    /// `level × (100 ± h) / 100` rather than with a fraction so that round set-points give
    /// round clearing levels (300 mA, 5 % → exactly 285 mA).
    fn clears(&self, value: f64, band_percent: f64) -> bool {
        match self.bound {
            Bound::AtLeast | Bound::Above => value < self.level * (100.0 - band_percent) / 100.0,
            Bound::Below => value > self.level * (100.0 + band_percent) / 100.0,
        }
    }
}

/// Converts a configured delay to a duration; negative or non-finite delays count as 0 so a
/// bad configuration errs towards alarming.
fn delay(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 {
        // `as` saturates; delays are validated to 0–60 s long before this point.
        Duration::milliseconds((seconds * 1000.0).round() as i64)
    } else {
        Duration::zero()
    }
}

/// Everything needed to evaluate one value of one channel.
struct Ctx<'a> {
    channel: Channel,
    value: f64,
    at: DateTime<Utc>,
    band_percent: f64,
    out: &'a mut Vec<Signal>,
}

impl DetectorState {
    /// Advances one condition with one value. `gate` must also hold for the condition to be
    /// entered (used by phase loss: "another phase is normal"); it does not affect clearing.
    /// Returns whether the condition is active afterwards.
    fn step(&mut self, ctx: &mut Ctx<'_>, rule: &Rule, gate: bool) -> bool {
        let key = Key { channel: ctx.channel, kind: rule.kind, level: rule.level_kind };
        let mut cond = self.conditions.get(&key).copied().unwrap_or(Condition {
            pending_since: None,
            active: false,
            setpoint: 0.0,
        });
        cond.setpoint = rule.level;
        let change = if cond.active {
            if rule.clears(ctx.value, ctx.band_percent) {
                cond.active = false;
                cond.pending_since = None;
                Some(Change::Cleared)
            } else {
                Some(Change::Continuing)
            }
        } else if gate && rule.enters(ctx.value) {
            let since = *cond.pending_since.get_or_insert(ctx.at);
            if ctx.at.signed_duration_since(since) >= rule.delay {
                cond.active = true;
                cond.pending_since = None;
                Some(Change::Raised)
            } else {
                None
            }
        } else {
            // Not entered before the delay elapsed: the run is broken, start over next time.
            cond.pending_since = None;
            None
        };
        if let Some(change) = change {
            ctx.out.push(Signal {
                change,
                kind: rule.kind,
                channel: ctx.channel,
                category: rule.level_kind.category(),
                value: ctx.value,
                setpoint: rule.level,
                at: ctx.at,
            });
        }
        self.store(key, cond);
        cond.active
    }

    /// Ends a condition because a more severe one of the same channel is active: an active
    /// one reports `Superseded`, a pending one is forgotten.
    fn supersede(&mut self, ctx: &mut Ctx<'_>, kind: EventKind, level: Level) {
        let key = Key { channel: ctx.channel, kind, level };
        if let Some(cond) = self.conditions.remove(&key)
            && cond.active
        {
            ctx.out.push(Signal {
                change: Change::Superseded,
                kind,
                channel: ctx.channel,
                category: level.category(),
                value: ctx.value,
                setpoint: cond.setpoint,
                at: ctx.at,
            });
        }
    }

    /// Ends a condition whose set-point no longer exists: an active one reports `Cleared`
    /// (the platform stopped watching it, so its episode must be able to end), a pending one
    /// is forgotten.
    fn retire(&mut self, ctx: &mut Ctx<'_>, kind: EventKind, level: Level) {
        let key = Key { channel: ctx.channel, kind, level };
        if let Some(cond) = self.conditions.remove(&key)
            && cond.active
        {
            ctx.out.push(Signal {
                change: Change::Cleared,
                kind,
                channel: ctx.channel,
                category: level.category(),
                value: ctx.value,
                setpoint: cond.setpoint,
                at: ctx.at,
            });
        }
    }

    /// Evaluates a severe condition and the milder one it supersedes.
    fn step_pair(&mut self, ctx: &mut Ctx<'_>, severe: &Rule, severe_gate: bool, mild: Option<&Rule>) {
        let severe_active = self.step(ctx, severe, severe_gate);
        if let Some(mild) = mild {
            if severe_active {
                self.supersede(ctx, mild.kind, mild.level_kind);
            } else {
                self.step(ctx, mild, true);
            }
        }
    }

    fn store(&mut self, key: Key, cond: Condition) {
        if cond.active || cond.pending_since.is_some() {
            self.conditions.insert(key, cond);
        } else {
            self.conditions.remove(&key);
        }
    }

    /// Whether a reading at `at` may change `channel`'s state; records `at` as the channel's
    /// latest time when it may. Equal timestamps are evaluated (a redelivered reading yields
    /// the same result again, which is harmless: no second `Raised`).
    fn accept(&mut self, channel: Channel, at: DateTime<Utc>) -> bool {
        match self.last_at.get(&channel) {
            Some(last) if at < *last => false,
            _ => {
                self.last_at.insert(channel, at);
                true
            }
        }
    }
}

/// The finite values of a channel vector with their 1-based channel numbers; `None`,
/// non-finite values and channels beyond 255 are skipped (they leave the state untouched).
fn measured(values: &[Option<f64>]) -> impl Iterator<Item = (u8, f64)> + '_ {
    values.iter().enumerate().filter_map(|(i, v)| {
        let number = u8::try_from(i + 1).ok()?;
        v.filter(|x| x.is_finite()).map(|x| (number, x))
    })
}

/// The reading as the engine is to evaluate it: at its device time, but never later than
/// it arrived (`received_at`). [`evaluate`] ignores a reading older than the last one
/// evaluated per channel and times delays by reading time, so a device clock that runs ahead
/// would otherwise silence the detector: one reading dated 23 h ahead made every later
/// reading "older" for 23 h, and a delay started in the future never elapsed. Readings dated
/// in the past (buffered by the device while it was cut off) keep their time. Borrowed
/// unless the time changes — almost always.
pub fn as_evaluated(reading: &Reading, received_at: DateTime<Utc>) -> Cow<'_, Reading> {
    if reading.at <= received_at {
        Cow::Borrowed(reading)
    } else {
        Cow::Owned(Reading { at: received_at, ..reading.clone() })
    }
}

/// Checks one reading of a detector against its thresholds and advances `state`.
///
/// Returns the condition changes in channel order (leakage, temperature, voltage, current;
/// within a channel the severe condition before the mild one). Readings must come from one
/// detector; the caller feeds them in arrival order — a reading older than the last one
/// evaluated for a channel is ignored for that channel. See the [module docs](self) for
/// the rules.
pub fn evaluate(state: &mut DetectorState, thresholds: &EffectiveThresholds, reading: &Reading) -> Vec<Signal> {
    evaluate_with(state, &Rules::new(thresholds), thresholds, reading)
}

/// [`evaluate`] with the thresholds' rules already built.
fn evaluate_with(
    state: &mut DetectorState,
    rules: &Rules,
    thresholds: &EffectiveThresholds,
    reading: &Reading,
) -> Vec<Signal> {
    let band_percent = rules.band_percent;
    let mut out = Vec::new();

    for (quantity, values, (alarm, pre)) in
        [(Quantity::Leak, &reading.leak_ma, &rules.leak), (Quantity::Temp, &reading.temp_c, &rules.temp)]
    {
        for (number, value) in measured(values) {
            let channel = Channel::new(quantity, number);
            if state.accept(channel, reading.at) {
                let mut ctx = Ctx { channel, value, at: reading.at, band_percent, out: &mut out };
                state.step_pair(&mut ctx, alarm, true, pre.as_ref());
            }
        }
    }

    let phases: Vec<(u8, f64)> = measured(&reading.voltage_v).collect();
    for &(number, value) in &phases {
        let channel = Channel::new(Quantity::Voltage, number);
        if state.accept(channel, reading.at) {
            let others_normal = phases.iter().any(|&(n, v)| n != number && v >= thresholds.undervoltage_v);
            let mut ctx = Ctx { channel, value, at: reading.at, band_percent, out: &mut out };
            state.step(&mut ctx, &rules.over_v, true);
            state.step_pair(&mut ctx, &rules.phase_loss, others_normal, Some(&rules.under_v));
        }
    }

    for (number, value) in measured(&reading.current_a) {
        let channel = Channel::new(Quantity::Current, number);
        if state.accept(channel, reading.at) {
            let mut ctx = Ctx { channel, value, at: reading.at, band_percent, out: &mut out };
            match &rules.over_current {
                Some(rule) => {
                    state.step(&mut ctx, rule, true);
                }
                None => state.retire(&mut ctx, EventKind::Overcurrent, Level::Alarm),
            }
        }
    }
    out
}

/// The condition one measured value enters, without delay or hysteresis: what a reading
/// shows on a screen (a display, not an alarm — [`evaluate`] decides those).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Instant {
    /// The channel.
    pub channel: Channel,
    /// Its value.
    pub value: f64,
    /// The most severe condition the value enters (kind, alarm or pre-alarm, the level it is
    /// compared with), if any.
    pub condition: Option<(EventKind, EventCategory, f64)>,
}

/// Every measured channel of `reading` with the most severe condition its value enters
/// under `thresholds`, by the very rules [`evaluate`] applies (a phase is lost only while
/// another phase is normal), in channel order.
pub fn instant(thresholds: &EffectiveThresholds, reading: &Reading) -> Vec<Instant> {
    let rules = Rules::new(thresholds);
    let first = |rules: &[Option<&Rule>], value: f64| {
        rules.iter().flatten().find(|r| r.enters(value)).map(|r| (r.kind, r.level_kind.category(), r.level))
    };
    let mut out = Vec::new();
    for (quantity, values, (alarm, pre)) in
        [(Quantity::Leak, &reading.leak_ma, &rules.leak), (Quantity::Temp, &reading.temp_c, &rules.temp)]
    {
        for (number, value) in measured(values) {
            let condition = first(&[Some(alarm), pre.as_ref()], value);
            out.push(Instant { channel: Channel::new(quantity, number), value, condition });
        }
    }
    let phases: Vec<(u8, f64)> = measured(&reading.voltage_v).collect();
    for &(number, value) in &phases {
        let others_normal = phases.iter().any(|&(n, v)| n != number && v >= thresholds.undervoltage_v);
        let loss = others_normal.then_some(&rules.phase_loss);
        let condition = first(&[Some(&rules.over_v), loss, Some(&rules.under_v)], value);
        out.push(Instant { channel: Channel::new(Quantity::Voltage, number), value, condition });
    }
    for (number, value) in measured(&reading.current_a) {
        let condition = first(&[rules.over_current.as_ref()], value);
        out.push(Instant { channel: Channel::new(Quantity::Current, number), value, condition });
    }
    out
}

/// Whether [`evaluate`] would change nothing for `reading` but the channels' latest times and
/// return no signal: the detector has no pending or active condition and no measured value
/// enters any rule (phase loss's "another phase is normal" is not checked, which can only
/// call a quiet reading not quiet). Most readings of a healthy site are quiet; the pipeline
/// stores them off the alarm path, so an alarm never queues behind them.
pub fn is_quiet(state: &DetectorState, thresholds: &EffectiveThresholds, reading: &Reading) -> bool {
    quiet_under(state, &Rules::new(thresholds), reading)
}

/// Evaluates `reading` if it [is quiet](is_quiet) — which yields no signal but records the
/// channels' times, so that an older reading arriving later is ignored — and says whether
/// it was; a reading that is not quiet leaves `state` untouched, for [`evaluate`] later.
pub fn evaluate_if_quiet(state: &mut DetectorState, thresholds: &EffectiveThresholds, reading: &Reading) -> bool {
    let rules = Rules::new(thresholds);
    if !quiet_under(state, &rules, reading) {
        return false;
    }
    evaluate_with(state, &rules, thresholds, reading);
    true
}

/// [`is_quiet`] with the thresholds' rules already built.
fn quiet_under(state: &DetectorState, rules: &Rules, reading: &Reading) -> bool {
    if !state.conditions.is_empty() {
        return false;
    }
    let enters = |values: &[Option<f64>], rules: &[Option<&Rule>]| {
        measured(values).any(|(_, v)| rules.iter().flatten().any(|rule| rule.enters(v)))
    };
    let (leak, leak_pre) = &rules.leak;
    let (temp, temp_pre) = &rules.temp;
    !(enters(&reading.leak_ma, &[Some(leak), leak_pre.as_ref()])
        || enters(&reading.temp_c, &[Some(temp), temp_pre.as_ref()])
        || enters(&reading.voltage_v, &[Some(&rules.over_v), Some(&rules.under_v), Some(&rules.phase_loss)])
        || enters(&reading.current_a, &[rules.over_current.as_ref()]))
}

/// The rules that a detector's thresholds give, for [`evaluate`] and [`is_quiet`] alike.
struct Rules {
    band_percent: f64,
    /// Leakage alarm and pre-alarm.
    leak: (Rule, Option<Rule>),
    /// Temperature alarm and pre-alarm.
    temp: (Rule, Option<Rule>),
    over_v: Rule,
    under_v: Rule,
    phase_loss: Rule,
    /// Only when an over-current set-point is set.
    over_current: Option<Rule>,
}

impl Rules {
    fn new(t: &EffectiveThresholds) -> Rules {
        let band_percent = if t.hysteresis_percent.is_finite() { t.hysteresis_percent.clamp(0.0, 100.0) } else { 0.0 };
        let prealarm_percent =
            (t.prealarm_percent.is_finite() && t.prealarm_percent > 0.0).then_some(t.prealarm_percent);
        let over_with_prealarm = |kind, setpoint: f64, delay_s: f64| {
            let alarm =
                Rule { kind, level_kind: Level::Alarm, bound: Bound::AtLeast, level: setpoint, delay: delay(delay_s) };
            let pre =
                prealarm_percent.map(|p| Rule { level_kind: Level::PreAlarm, level: setpoint * p / 100.0, ..alarm });
            (alarm, pre)
        };
        let over_v = Rule {
            kind: EventKind::Overvoltage,
            level_kind: Level::Alarm,
            bound: Bound::Above,
            level: t.overvoltage_v,
            delay: delay(POWER_DELAY_S),
        };
        let under_v = Rule { kind: EventKind::Undervoltage, bound: Bound::Below, level: t.undervoltage_v, ..over_v };
        // Never above the under-voltage set-point, so a lost phase is always also a low one.
        let loss_level = (NOMINAL_PHASE_VOLTAGE_V * PHASE_LOSS_FRACTION).min(t.undervoltage_v);
        Rules {
            band_percent,
            leak: over_with_prealarm(EventKind::LeakAlarm, t.leak_ma, t.leak_delay_s),
            temp: over_with_prealarm(EventKind::TempAlarm, t.temp_c, t.temp_delay_s),
            over_v,
            under_v,
            phase_loss: Rule { kind: EventKind::PhaseLoss, level: loss_level, ..under_v },
            over_current: t.overcurrent_a.filter(|a| a.is_finite() && *a > 0.0).map(|a| Rule {
                kind: EventKind::Overcurrent,
                level: a,
                ..over_v
            }),
        }
    }
}

/// The heartbeat timeout of a device reporting every `interval_s` seconds (rule 5):
/// [`HEARTBEAT_MISSED_INTERVALS`] × the interval, at most [`MAX_HEARTBEAT_TIMEOUT_S`].
/// An interval of 0 means "unknown" and gets the maximum.
pub fn heartbeat_timeout(interval_s: u32) -> Duration {
    let max = Duration::seconds(MAX_HEARTBEAT_TIMEOUT_S);
    if interval_s == 0 {
        return max;
    }
    Duration::seconds(i64::from(interval_s) * HEARTBEAT_MISSED_INTERVALS).min(max)
}

/// Whether a device last heard from at `last_seen` is overdue at `now` and should get an
/// `OFFLINE` fault: strictly more than [`heartbeat_timeout`] has passed. Pass the *server*
/// receive time of the last message as `last_seen` (device clocks drift) and the scan time as
/// `now`; the fault clears on the next message.
pub fn offline_due(last_seen: DateTime<Utc>, interval_s: u32, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(last_seen) > heartbeat_timeout(interval_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).single().unwrap_or_default() + Duration::seconds(seconds)
    }

    fn leak(seconds: i64, values: &[Option<f64>]) -> Reading {
        Reading { at: at(seconds), leak_ma: values.to_vec(), ..Reading::default() }
    }

    fn temp(seconds: i64, values: &[Option<f64>]) -> Reading {
        Reading { at: at(seconds), temp_c: values.to_vec(), ..Reading::default() }
    }

    fn volts(seconds: i64, values: &[Option<f64>]) -> Reading {
        Reading { at: at(seconds), voltage_v: values.to_vec(), ..Reading::default() }
    }

    fn amps(seconds: i64, values: &[Option<f64>]) -> Reading {
        Reading { at: at(seconds), current_a: values.to_vec(), ..Reading::default() }
    }

    /// Thresholds with the defaults except the given changes.
    fn th(f: impl FnOnce(&mut EffectiveThresholds)) -> EffectiveThresholds {
        let mut t = EffectiveThresholds::DEFAULT;
        f(&mut t);
        t
    }

    /// A signal as a compact, readable line: `raised LEAK_ALARM/ALARM leak1`.
    fn line(s: &Signal) -> String {
        let change = match s.change {
            Change::Raised => "raised",
            Change::Continuing => "continuing",
            Change::Cleared => "cleared",
            Change::Superseded => "superseded",
        };
        let quantity = match s.channel.quantity {
            Quantity::Leak => "leak",
            Quantity::Temp => "temp",
            Quantity::Voltage => "volt",
            Quantity::Current => "amp",
            Quantity::Detector => "detector",
        };
        format!("{change} {}/{} {quantity}{}", s.kind.code(), s.category.code(), s.channel.number)
    }

    struct Case {
        name: &'static str,
        thresholds: EffectiveThresholds,
        /// A reading (optionally with its own thresholds) and the signals it must produce.
        steps: Vec<(Reading, Option<EffectiveThresholds>, Vec<&'static str>)>,
    }

    fn step(reading: Reading, expected: &[&'static str]) -> (Reading, Option<EffectiveThresholds>, Vec<&'static str>) {
        (reading, None, expected.to_vec())
    }

    fn run(case: &Case) -> DetectorState {
        let mut state = DetectorState::default();
        for (i, (reading, thresholds, expected)) in case.steps.iter().enumerate() {
            let t = thresholds.as_ref().unwrap_or(&case.thresholds);
            let got: Vec<String> = evaluate(&mut state, t, reading).iter().map(line).collect();
            assert_eq!(got, *expected, "case '{}', step {i} ({reading:?})", case.name);
        }
        state
    }

    const S: Option<f64> = None;

    fn cases() -> Vec<Case> {
        let quick = |f: fn(&mut EffectiveThresholds)| {
            th(|t| {
                t.leak_delay_s = 0.0;
                t.temp_delay_s = 0.0;
                f(t);
            })
        };
        vec![
            Case {
                name: "delay holds: nothing before 5 s, then raised once",
                thresholds: th(|_| {}),
                steps: vec![
                    step(leak(0, &[Some(310.0)]), &[]),
                    step(leak(3, &[Some(320.0)]), &[]),
                    step(leak(5, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                    step(leak(6, &[Some(330.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "a reading below the level resets the pending timer",
                thresholds: th(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(leak(0, &[Some(310.0)]), &[]),
                    step(leak(3, &[Some(299.0)]), &[]),
                    step(leak(6, &[Some(310.0)]), &[]),
                    step(leak(10, &[Some(310.0)]), &[]),
                    step(leak(11, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "zero delay raises on the first reading",
                thresholds: quick(|_| {}),
                steps: vec![
                    step(leak(0, &[Some(300.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                    step(leak(1, &[Some(100.0)]), &["cleared LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "flapping around 300 mA inside a 5 % band: one raised, cleared only below 285",
                thresholds: quick(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(leak(0, &[Some(299.0)]), &[]),
                    step(leak(1, &[Some(301.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                    step(leak(2, &[Some(299.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(leak(3, &[Some(302.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(leak(4, &[Some(286.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(leak(5, &[Some(300.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(leak(6, &[Some(285.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(leak(7, &[Some(284.9)]), &["cleared LEAK_ALARM/ALARM leak1"]),
                    step(leak(8, &[Some(299.9)]), &[]),
                    step(leak(9, &[Some(300.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "pre-alarm at 80 %, ended by the alarm, back after the alarm clears",
                thresholds: quick(|_| {}),
                steps: vec![
                    step(leak(0, &[Some(239.0)]), &[]),
                    step(leak(1, &[Some(240.0)]), &["raised LEAK_ALARM/PRE_ALARM leak1"]),
                    step(leak(2, &[Some(260.0)]), &["continuing LEAK_ALARM/PRE_ALARM leak1"]),
                    step(
                        leak(3, &[Some(300.0)]),
                        &["raised LEAK_ALARM/ALARM leak1", "superseded LEAK_ALARM/PRE_ALARM leak1"],
                    ),
                    step(leak(4, &[Some(290.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(
                        leak(5, &[Some(280.0)]),
                        &["cleared LEAK_ALARM/ALARM leak1", "raised LEAK_ALARM/PRE_ALARM leak1"],
                    ),
                    step(leak(6, &[Some(229.0)]), &["continuing LEAK_ALARM/PRE_ALARM leak1"]),
                    step(leak(7, &[Some(227.9)]), &["cleared LEAK_ALARM/PRE_ALARM leak1"]),
                ],
            },
            Case {
                name: "pre-alarm uses the alarm delay, counted from the first reading above its own level",
                thresholds: th(|_| {}),
                steps: vec![
                    step(leak(0, &[Some(250.0)]), &[]),
                    step(leak(2, &[Some(310.0)]), &[]),
                    step(leak(5, &[Some(310.0)]), &["raised LEAK_ALARM/PRE_ALARM leak1"]),
                    step(
                        leak(7, &[Some(310.0)]),
                        &["raised LEAK_ALARM/ALARM leak1", "superseded LEAK_ALARM/PRE_ALARM leak1"],
                    ),
                ],
            },
            Case {
                name: "temperature per channel with pre-alarm",
                thresholds: quick(|_| {}),
                steps: vec![
                    step(temp(0, &[Some(40.0), Some(67.9)]), &[]),
                    step(temp(1, &[Some(40.0), Some(68.0)]), &["raised TEMP_ALARM/PRE_ALARM temp2"]),
                    step(
                        temp(2, &[Some(41.0), Some(85.0)]),
                        &["raised TEMP_ALARM/ALARM temp2", "superseded TEMP_ALARM/PRE_ALARM temp2"],
                    ),
                    step(temp(3, &[Some(41.0), Some(81.0)]), &["continuing TEMP_ALARM/ALARM temp2"]),
                    step(
                        temp(4, &[Some(41.0), Some(80.0)]),
                        &["cleared TEMP_ALARM/ALARM temp2", "raised TEMP_ALARM/PRE_ALARM temp2"],
                    ),
                    step(temp(5, &[Some(41.0), Some(50.0)]), &["cleared TEMP_ALARM/PRE_ALARM temp2"]),
                ],
            },
            Case {
                name: "temperature delay is its own",
                thresholds: th(|t| {
                    t.leak_delay_s = 0.0;
                    t.temp_delay_s = 10.0;
                    t.prealarm_percent = 100.0;
                }),
                steps: vec![
                    step(temp(0, &[Some(90.0)]), &[]),
                    step(temp(9, &[Some(90.0)]), &[]),
                    step(temp(10, &[Some(90.0)]), &["raised TEMP_ALARM/ALARM temp1"]),
                ],
            },
            Case {
                name: "over-voltage above 253 V with the 5 s power delay and hysteresis",
                thresholds: th(|_| {}),
                steps: vec![
                    step(volts(0, &[Some(253.0), Some(220.0), Some(220.0)]), &[]),
                    step(volts(1, &[Some(254.0), Some(220.0), Some(220.0)]), &[]),
                    step(volts(6, &[Some(255.0), Some(220.0), Some(220.0)]), &["raised OVERVOLTAGE/ALARM volt1"]),
                    step(volts(7, &[Some(241.0), Some(220.0), Some(220.0)]), &["continuing OVERVOLTAGE/ALARM volt1"]),
                    step(volts(8, &[Some(240.0), Some(220.0), Some(220.0)]), &["cleared OVERVOLTAGE/ALARM volt1"]),
                ],
            },
            Case {
                name: "under-voltage below 187 V clears above 196.35 V",
                thresholds: th(|_| {}),
                steps: vec![
                    step(volts(0, &[Some(220.0), Some(180.0), Some(220.0)]), &[]),
                    step(volts(5, &[Some(220.0), Some(180.0), Some(220.0)]), &["raised UNDERVOLTAGE/ALARM volt2"]),
                    step(volts(6, &[Some(220.0), Some(196.0), Some(220.0)]), &["continuing UNDERVOLTAGE/ALARM volt2"]),
                    step(volts(7, &[Some(220.0), Some(197.0), Some(220.0)]), &["cleared UNDERVOLTAGE/ALARM volt2"]),
                ],
            },
            Case {
                name: "a phase below 110 V with the others normal is phase loss, not under-voltage",
                thresholds: th(|_| {}),
                steps: vec![
                    step(volts(0, &[Some(0.0), Some(220.0), Some(220.0)]), &[]),
                    step(volts(5, &[Some(0.0), Some(221.0), Some(219.0)]), &["raised PHASE_LOSS/ALARM volt1"]),
                    step(volts(6, &[Some(100.0), Some(221.0), Some(219.0)]), &["continuing PHASE_LOSS/ALARM volt1"]),
                    // Back above 115.5 V but still low: the phase is present, the voltage is not.
                    step(volts(7, &[Some(150.0), Some(221.0), Some(219.0)]), &["cleared PHASE_LOSS/ALARM volt1"]),
                    step(volts(12, &[Some(150.0), Some(221.0), Some(219.0)]), &["raised UNDERVOLTAGE/ALARM volt1"]),
                ],
            },
            Case {
                name: "under-voltage that becomes a phase loss is superseded",
                thresholds: th(|_| {}),
                steps: vec![
                    step(volts(0, &[Some(180.0), Some(220.0), Some(220.0)]), &[]),
                    step(volts(5, &[Some(180.0), Some(220.0), Some(220.0)]), &["raised UNDERVOLTAGE/ALARM volt1"]),
                    step(volts(6, &[Some(20.0), Some(220.0), Some(220.0)]), &["continuing UNDERVOLTAGE/ALARM volt1"]),
                    step(
                        volts(11, &[Some(20.0), Some(220.0), Some(220.0)]),
                        &["raised PHASE_LOSS/ALARM volt1", "superseded UNDERVOLTAGE/ALARM volt1"],
                    ),
                ],
            },
            Case {
                name: "all phases low is under-voltage on each, never phase loss",
                thresholds: th(|_| {}),
                steps: vec![
                    step(volts(0, &[Some(90.0), Some(95.0), Some(100.0)]), &[]),
                    step(
                        volts(5, &[Some(90.0), Some(95.0), Some(100.0)]),
                        &[
                            "raised UNDERVOLTAGE/ALARM volt1",
                            "raised UNDERVOLTAGE/ALARM volt2",
                            "raised UNDERVOLTAGE/ALARM volt3",
                        ],
                    ),
                ],
            },
            Case {
                name: "a single measured phase at 0 V is under-voltage (nothing to compare with)",
                thresholds: th(|_| {}),
                steps: vec![
                    step(volts(0, &[Some(0.0), S, S]), &[]),
                    step(volts(5, &[Some(0.0), S, S]), &["raised UNDERVOLTAGE/ALARM volt1"]),
                ],
            },
            Case {
                name: "over-current is ignored until a set-point is configured",
                thresholds: th(|_| {}),
                steps: vec![
                    step(amps(0, &[Some(500.0), Some(10.0), Some(10.0)]), &[]),
                    step(amps(10, &[Some(500.0), Some(10.0), Some(10.0)]), &[]),
                ],
            },
            Case {
                name: "over-current above the configured set-point; removing it ends the alarm",
                thresholds: th(|t| t.overcurrent_a = Some(100.0)),
                steps: vec![
                    step(amps(0, &[Some(100.0), Some(101.0), Some(10.0)]), &[]),
                    step(amps(5, &[Some(100.0), Some(101.0), Some(10.0)]), &["raised OVERCURRENT/ALARM amp2"]),
                    step(amps(6, &[Some(100.0), Some(96.0), Some(10.0)]), &["continuing OVERCURRENT/ALARM amp2"]),
                    (
                        amps(7, &[Some(100.0), Some(120.0), Some(10.0)]),
                        Some(th(|_| {})),
                        vec!["cleared OVERCURRENT/ALARM amp2"],
                    ),
                    (amps(8, &[Some(100.0), Some(120.0), Some(10.0)]), Some(th(|_| {})), vec![]),
                ],
            },
            Case {
                name: "unmeasured channels leave their state untouched",
                thresholds: th(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(leak(0, &[Some(310.0), Some(10.0)]), &[]),
                    // Pending survives a reading without that channel...
                    step(leak(3, &[S, Some(10.0)]), &[]),
                    step(leak(5, &[Some(310.0), Some(10.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                    // ... and so does an active condition: no continuing, no clearing.
                    step(leak(6, &[S, Some(10.0)]), &[]),
                    step(leak(7, &[]), &[]),
                    step(leak(8, &[Some(100.0), S]), &["cleared LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "non-finite values are ignored like unmeasured ones",
                thresholds: quick(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(leak(0, &[Some(f64::NAN)]), &[]),
                    step(leak(1, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                    step(leak(2, &[Some(f64::NEG_INFINITY)]), &[]),
                    step(leak(3, &[Some(f64::INFINITY)]), &[]),
                    step(leak(4, &[Some(305.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "out-of-order readings change nothing",
                thresholds: quick(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(leak(10, &[Some(310.0), Some(10.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                    step(leak(5, &[Some(10.0), Some(400.0)]), &[]),
                    step(leak(10, &[Some(311.0), Some(10.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                    step(leak(11, &[Some(10.0), Some(10.0)]), &["cleared LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "an out-of-order reading does not shorten a pending delay",
                thresholds: th(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(leak(10, &[Some(310.0)]), &[]),
                    step(leak(4, &[Some(310.0)]), &[]),
                    step(leak(12, &[Some(310.0)]), &[]),
                    step(leak(15, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                ],
            },
            Case {
                name: "channels are independent",
                thresholds: quick(|t| t.prealarm_percent = 100.0),
                steps: vec![
                    step(
                        leak(0, &[Some(310.0), Some(100.0), Some(320.0)]),
                        &["raised LEAK_ALARM/ALARM leak1", "raised LEAK_ALARM/ALARM leak3"],
                    ),
                    step(
                        leak(1, &[Some(100.0), Some(100.0), Some(320.0)]),
                        &["cleared LEAK_ALARM/ALARM leak1", "continuing LEAK_ALARM/ALARM leak3"],
                    ),
                    step(
                        Reading {
                            temp_c: vec![Some(90.0)],
                            voltage_v: vec![Some(260.0), Some(220.0), Some(220.0)],
                            ..leak(2, &[Some(100.0), Some(300.0), Some(320.0)])
                        },
                        &[
                            "raised LEAK_ALARM/ALARM leak2",
                            "continuing LEAK_ALARM/ALARM leak3",
                            "raised TEMP_ALARM/ALARM temp1",
                        ],
                    ),
                ],
            },
        ]
    }

    #[test]
    fn rules_table() {
        for case in cases() {
            run(&case);
        }
    }

    /// Every step of the rules table: a reading called quiet yields no signal and leaves no
    /// condition behind; readings that enter a rule, and any reading while a condition is
    /// pending or active, are not quiet.
    #[test]
    fn quiet_readings_change_nothing_but_the_channel_times() {
        let (mut quiet, mut loud) = (0, 0);
        for case in cases() {
            let mut state = DetectorState::default();
            for (i, (reading, thresholds, _)) in case.steps.iter().enumerate() {
                let t = thresholds.as_ref().unwrap_or(&case.thresholds);
                let was_quiet = is_quiet(&state, t, reading);
                let was_idle = state.conditions.is_empty();
                let mut scratch = DetectorState { last_at: BTreeMap::new(), ..state.clone() };
                let enters = !evaluate(&mut scratch, t, reading).is_empty() || !scratch.conditions.is_empty();
                let before = state.clone();
                let mut if_quiet = before.clone();
                assert_eq!(evaluate_if_quiet(&mut if_quiet, t, reading), was_quiet, "case '{}', step {i}", case.name);
                let signals = evaluate(&mut state, t, reading);
                if was_quiet {
                    assert_eq!(if_quiet, state, "case '{}', step {i}: the same evaluation", case.name);
                    quiet += 1;
                    assert!(signals.is_empty() && state.conditions.is_empty(), "case '{}', step {i}", case.name);
                } else {
                    assert_eq!(if_quiet, before, "case '{}', step {i}: left for evaluate", case.name);
                    loud += 1;
                }
                // "Not quiet" means a condition was pending or active, or the reading enters one.
                assert!(was_quiet || !was_idle || enters, "case '{}', step {i}", case.name);
            }
        }
        assert!(quiet >= 5 && loud > 10, "the table has both kinds: {quiet} quiet, {loud} not");

        let t = EffectiveThresholds::DEFAULT;
        let idle = DetectorState::default();
        let healthy = Reading {
            voltage_v: vec![Some(221.0), Some(219.5), None],
            current_a: vec![Some(40.0)],
            ..temp(0, &[Some(35.5), None])
        };
        assert!(is_quiet(&idle, &t, &Reading { leak_ma: vec![Some(20.0)], ..healthy.clone() }));
        assert!(!is_quiet(&idle, &t, &Reading { leak_ma: vec![Some(240.0)], ..healthy.clone() }), "pre-alarm level");
        assert!(!is_quiet(&idle, &t, &Reading { voltage_v: vec![Some(180.0)], ..healthy.clone() }), "under-voltage");
        let rated = th(|t| t.overcurrent_a = Some(32.0));
        assert!(!is_quiet(&idle, &rated, &healthy), "over-current once a rating is set");
        let mut pending = DetectorState::default();
        assert!(evaluate(&mut pending, &t, &leak(0, &[Some(310.0)])).is_empty(), "a 5 s delay: pending");
        assert!(!is_quiet(&pending, &t, &healthy), "a pending condition must see the next reading");
    }

    #[test]
    fn signals_carry_value_setpoint_and_time() {
        let mut state = DetectorState::default();
        let t = th(|t| t.leak_delay_s = 0.0);
        let signals = evaluate(&mut state, &t, &leak(3, &[Some(250.0)]));
        assert_eq!(
            signals,
            vec![Signal {
                change: Change::Raised,
                kind: EventKind::LeakAlarm,
                channel: Channel::new(Quantity::Leak, 1),
                category: EventCategory::PreAlarm,
                value: 250.0,
                setpoint: 240.0,
                at: at(3),
            }]
        );
        assert!(state.is_active(Channel::new(Quantity::Leak, 1), EventKind::LeakAlarm, EventCategory::PreAlarm));
        assert!(!state.is_active(Channel::new(Quantity::Leak, 1), EventKind::LeakAlarm, EventCategory::Alarm));
    }

    /// A reading dated 23 h ahead of its arrival (a device clock running ahead) neither hides
    /// the readings after it nor starts a delay that never elapses.
    #[test]
    fn a_reading_dated_ahead_is_evaluated_at_its_arrival() {
        let t = EffectiveThresholds::DEFAULT;
        let ahead = leak(23 * 3600, &[Some(40.0)]);
        let arrived = at(0);
        assert_eq!(as_evaluated(&ahead, arrived).at, arrived);
        let past = leak(-60, &[Some(40.0)]);
        assert!(matches!(as_evaluated(&past, arrived), Cow::Borrowed(r) if r.at == at(-60)), "buffered: kept");

        // As the device dated them: the alarm readings are "older" and ignored.
        let mut raw = DetectorState::default();
        evaluate(&mut raw, &t, &ahead);
        assert!(evaluate(&mut raw, &t, &leak(10, &[Some(500.0)])).is_empty());
        assert!(evaluate(&mut raw, &t, &leak(16, &[Some(500.0)])).is_empty(), "silenced for 23 h");

        // As evaluated: the alarm is raised once its delay has passed.
        let mut state = DetectorState::default();
        evaluate(&mut state, &t, &as_evaluated(&ahead, arrived));
        assert!(evaluate(&mut state, &t, &as_evaluated(&leak(10, &[Some(500.0)]), at(10))).is_empty(), "pending");
        let raised = evaluate(&mut state, &t, &as_evaluated(&leak(16, &[Some(500.0)]), at(16)));
        assert_eq!(
            raised.iter().map(|s| (s.change, s.kind, s.at)).collect::<Vec<_>>(),
            [(Change::Raised, EventKind::LeakAlarm, at(16))]
        );

        // A pending condition entered by a reading dated ahead is timed from its arrival.
        let mut pending = DetectorState::default();
        evaluate(&mut pending, &t, &as_evaluated(&leak(23 * 3600, &[Some(500.0)]), at(0)));
        let raised = evaluate(&mut pending, &t, &as_evaluated(&leak(6, &[Some(500.0)]), at(6)));
        assert_eq!(raised.len(), 1, "held 6 s since it arrived: raised");
    }

    #[test]
    fn healthy_detector_keeps_only_timestamps() {
        let mut state = DetectorState::default();
        let t = EffectiveThresholds::DEFAULT;
        evaluate(&mut state, &t, &leak(0, &[Some(310.0)]));
        evaluate(&mut state, &t, &leak(1, &[Some(10.0)]));
        assert!(state.conditions.is_empty());
        assert_eq!(state.last_at.len(), 1);
        assert_eq!(state.active().count(), 0);
    }

    #[test]
    fn restored_condition_continues_instead_of_raising_again() {
        let ch = Channel::new(Quantity::Leak, 1);
        let mut state = DetectorState::default();
        assert!(state.restore_active(ch, EventKind::LeakAlarm, EventCategory::Alarm, 300.0));
        assert!(!state.restore_active(ch, EventKind::LeakAlarm, EventCategory::Fault, 300.0));
        let t = EffectiveThresholds::DEFAULT;
        let got: Vec<String> = evaluate(&mut state, &t, &leak(0, &[Some(310.0)])).iter().map(line).collect();
        assert_eq!(got, ["continuing LEAK_ALARM/ALARM leak1"]);
        assert_eq!(state.active().collect::<Vec<_>>(), [(ch, EventKind::LeakAlarm, EventCategory::Alarm)]);
    }

    #[test]
    fn state_round_trips_through_its_serialised_form() {
        // The domain crate has no serde format to test with; this checks the conversion the
        // derive goes through, and that a restored state behaves exactly like the original.
        let t = th(|t| t.overcurrent_a = Some(50.0));
        let mut state = DetectorState::default();
        evaluate(&mut state, &t, &leak(0, &[Some(310.0), Some(250.0)]));
        evaluate(&mut state, &t, &volts(0, &[Some(0.0), Some(220.0), Some(220.0)]));
        evaluate(&mut state, &t, &leak(5, &[Some(310.0), Some(250.0)]));
        evaluate(&mut state, &t, &amps(5, &[Some(60.0)]));
        assert!(!state.conditions.is_empty());

        let mut copy = DetectorState::from(StateRepr::from(state.clone()));
        assert_eq!(copy, state);
        let next = Reading { current_a: vec![Some(60.0)], ..volts(10, &[Some(0.0), Some(220.0), Some(220.0)]) };
        assert_eq!(evaluate(&mut copy, &t, &next), evaluate(&mut state, &t, &next));
        assert_eq!(copy, state);
    }

    #[test]
    fn heartbeat_timeout_is_three_intervals_at_most_five_minutes() {
        let cases: [(u32, i64); 5] = [(10, 30), (60, 180), (100, 300), (600, 300), (0, 300)];
        for (interval, expected) in cases {
            assert_eq!(heartbeat_timeout(interval), Duration::seconds(expected), "interval {interval}");
        }
        assert_eq!(heartbeat_timeout(u32::MAX), Duration::seconds(300));
    }

    #[test]
    fn offline_only_after_the_timeout_has_passed() {
        let cases: [(u32, i64, bool); 6] =
            [(60, 179, false), (60, 180, false), (60, 181, true), (600, 300, false), (600, 301, true), (60, -5, false)];
        for (interval, elapsed, expected) in cases {
            assert_eq!(offline_due(at(0), interval, at(elapsed)), expected, "interval {interval}, {elapsed} s");
        }
    }
}
