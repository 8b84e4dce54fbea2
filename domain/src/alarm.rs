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
mod tests;
