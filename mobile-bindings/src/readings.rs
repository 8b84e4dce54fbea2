//! Readings for display (`domain::display`): each channel classified against the effective
//! thresholds, values with units, names in zh-CN or English; and the push texts the server
//! sends (`domain::notify`, `domain::patrol`), so an app can show the same words offline.

use sparkwatch_domain::display::{self, ChannelClass as Class};
use sparkwatch_domain::notify::{self, Notice, Reason, Text, WorkNotice as Work};
use sparkwatch_domain::reading::{Channel, EventCategory, EventKind, Reading};
use sparkwatch_domain::thresholds::{EffectiveThresholds, ThresholdOverrides as Overrides};

use crate::{MobileError, locale};

/// The set-points that apply to a detector (`Detector.effectiveThresholds`).
#[derive(Debug, Clone, Copy, PartialEq, uniffi::Record)]
pub struct Thresholds {
    /// Residual-current alarm set-point, mA.
    pub leak_ma: f64,
    /// Residual-current alarm delay, s.
    pub leak_delay_s: f64,
    /// Temperature alarm set-point, °C.
    pub temp_c: f64,
    /// Temperature alarm delay, s.
    pub temp_delay_s: f64,
    /// Over-voltage set-point, V.
    pub overvoltage_v: f64,
    /// Under-voltage set-point, V.
    pub undervoltage_v: f64,
    /// Over-current set-point, A, when the circuit's rating is known.
    pub overcurrent_a: Option<f64>,
    /// Pre-alarm level, % of the set-point.
    pub prealarm_percent: f64,
    /// Hysteresis band, %.
    pub hysteresis_percent: f64,
}

impl From<EffectiveThresholds> for Thresholds {
    fn from(t: EffectiveThresholds) -> Self {
        Thresholds {
            leak_ma: t.leak_ma,
            leak_delay_s: t.leak_delay_s,
            temp_c: t.temp_c,
            temp_delay_s: t.temp_delay_s,
            overvoltage_v: t.overvoltage_v,
            undervoltage_v: t.undervoltage_v,
            overcurrent_a: t.overcurrent_a,
            prealarm_percent: t.prealarm_percent,
            hysteresis_percent: t.hysteresis_percent,
        }
    }
}

impl From<Thresholds> for EffectiveThresholds {
    fn from(t: Thresholds) -> Self {
        EffectiveThresholds {
            leak_ma: t.leak_ma,
            leak_delay_s: t.leak_delay_s,
            temp_c: t.temp_c,
            temp_delay_s: t.temp_delay_s,
            overvoltage_v: t.overvoltage_v,
            undervoltage_v: t.undervoltage_v,
            overcurrent_a: t.overcurrent_a,
            prealarm_percent: t.prealarm_percent,
            hysteresis_percent: t.hysteresis_percent,
        }
    }
}

/// Set-points configured at one level (tenant, project, detector); absent ones inherit.
/// Field names follow the API's `ThresholdsInput`.
#[derive(Debug, Clone, Copy, Default, PartialEq, uniffi::Record)]
pub struct ThresholdOverrides {
    /// `leakMa`.
    pub leak_ma: Option<f64>,
    /// `leakDelayS`.
    pub leak_delay_s: Option<f64>,
    /// `tempC`.
    pub temp_c: Option<f64>,
    /// `tempDelayS`.
    pub temp_delay_s: Option<f64>,
    /// `overvoltageV`.
    pub overvoltage_v: Option<f64>,
    /// `undervoltageV`.
    pub undervoltage_v: Option<f64>,
    /// `overcurrentA`.
    pub overcurrent_a: Option<f64>,
    /// `prealarmPercent`.
    pub prealarm_percent: Option<f64>,
    /// `hysteresisPercent`.
    pub hysteresis_percent: Option<f64>,
}

impl From<ThresholdOverrides> for Overrides {
    fn from(t: ThresholdOverrides) -> Self {
        Overrides {
            leak_ma: t.leak_ma,
            leak_delay_s: t.leak_delay_s,
            temp_c: t.temp_c,
            temp_delay_s: t.temp_delay_s,
            overvoltage_v: t.overvoltage_v,
            undervoltage_v: t.undervoltage_v,
            overcurrent_a: t.overcurrent_a,
            prealarm_percent: t.prealarm_percent,
            hysteresis_percent: t.hysteresis_percent,
        }
    }
}

/// The platform defaults (300 mA / 5 s, 85 °C, 115 % / 85 % of 220 V).
#[uniffi::export]
pub fn default_thresholds() -> Thresholds {
    EffectiveThresholds::DEFAULT.into()
}

/// Resolves tenant → project → detector overrides over the defaults, as the server does.
#[uniffi::export]
pub fn resolve_thresholds(
    tenant: ThresholdOverrides,
    project: ThresholdOverrides,
    detector: ThresholdOverrides,
) -> Thresholds {
    EffectiveThresholds::resolve(&tenant.into(), &project.into(), &detector.into()).into()
}

/// One reading's values; `None` = not fitted / not measured (as the API's `null`).
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct ReadingValues {
    /// Residual current per channel, mA.
    pub leak_ma: Vec<Option<f64>>,
    /// Temperature per channel, °C.
    pub temp_c: Vec<Option<f64>>,
    /// Phase voltages A, B, C, V.
    pub voltage_v: Vec<Option<f64>>,
    /// Phase currents A, B, C, A.
    pub current_a: Vec<Option<f64>>,
}

/// How a channel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChannelClass {
    /// Within its set-points.
    Normal,
    /// At or above the pre-alarm level.
    PreAlarm,
    /// Beyond an alarm set-point.
    Alarm,
    /// An active fault on the channel.
    Fault,
    /// Not fitted or not measured.
    NotFitted,
}

/// One channel as a screen shows it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChannelDisplay {
    /// The channel's code (`leak:1`, `voltage:2`).
    pub channel: String,
    /// How it reads.
    pub class: ChannelClass,
    /// Its class's code (`PRE_ALARM`).
    pub class_code: String,
    /// The value.
    pub value: Option<f64>,
    /// The condition's kind (`LEAK_ALARM`, `PHASE_LOSS`), alarm and pre-alarm only.
    pub kind: Option<String>,
    /// The level compared with, alarm and pre-alarm only.
    pub setpoint: Option<f64>,
    /// The channel's name (`Leakage 1`, `A相电压`).
    pub name: String,
    /// The value with its unit (`320 mA`).
    pub value_text: String,
    /// One line for the screen.
    pub summary: String,
}

fn channel(field: &str, code: &str) -> Result<Channel, MobileError> {
    Channel::parse(code.trim()).ok_or_else(|| MobileError::invalid(field, "not a channel like leak:1 or temp:2"))
}

/// Classifies every channel of a reading against `thresholds`; `faults` are the channels
/// with an active fault (codes like `temp:2`, `detector:0`); `locale` a tag (`zh-CN`, `en`).
#[uniffi::export]
pub fn classify_reading(
    thresholds: Thresholds,
    reading: ReadingValues,
    faults: Vec<String>,
    locale: String,
) -> Result<Vec<ChannelDisplay>, MobileError> {
    let faults: Vec<Channel> = faults.iter().map(|f| channel("faults", f)).collect::<Result<_, _>>()?;
    let reading = Reading {
        leak_ma: reading.leak_ma,
        temp_c: reading.temp_c,
        voltage_v: reading.voltage_v,
        current_a: reading.current_a,
        ..Reading::default()
    };
    let views = display::classify(&thresholds.into(), &reading, &faults, crate::locale(&locale));
    Ok(views
        .into_iter()
        .map(|v| ChannelDisplay {
            channel: v.channel.code(),
            class: match v.class {
                Class::Normal => ChannelClass::Normal,
                Class::PreAlarm => ChannelClass::PreAlarm,
                Class::Alarm => ChannelClass::Alarm,
                Class::Fault => ChannelClass::Fault,
                Class::NotFitted => ChannelClass::NotFitted,
            },
            class_code: v.class.code().to_owned(),
            value: v.value,
            kind: v.kind.map(|k| k.code().to_owned()),
            setpoint: v.setpoint,
            name: v.name,
            value_text: v.value_text,
            summary: v.summary,
        })
        .collect())
}

/// A value of `channel` with its unit, without needless decimals (`480 mA`, `72.5 °C`).
#[uniffi::export]
pub fn format_value(channel: String, value: f64) -> Result<String, MobileError> {
    Ok(notify::fmt_value(&self::channel("channel", &channel)?, value))
}

/// A channel's name in `locale`.
#[uniffi::export]
pub fn channel_name(channel: String, locale: String) -> Result<String, MobileError> {
    Ok(display::channel_name(&self::channel("channel", &channel)?, crate::locale(&locale)))
}

/// A push notification's text.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushText {
    /// Title line.
    pub title: String,
    /// Body.
    pub body: String,
}

impl From<Text> for PushText {
    fn from(t: Text) -> Self {
        PushText { title: t.title, body: t.body }
    }
}

/// What an event notification is about (the push's data).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AlarmNotice {
    /// Event kind code (`LEAK_ALARM`).
    pub kind: String,
    /// Category code (`ALARM`, `PRE_ALARM`, `FAULT`, `RECOVERY`).
    pub category: String,
    /// Project (site) name.
    pub project: String,
    /// Device name.
    pub device: String,
    /// Position, when known.
    pub position: Option<String>,
    /// Channel code (`leak:1`).
    pub channel: String,
    /// Value measured.
    pub value: Option<f64>,
    /// Set-point exceeded.
    pub setpoint: Option<f64>,
    /// For an escalation of an unacknowledged alarm: minutes open.
    pub unacknowledged_min: Option<u32>,
}

/// The text the server pushes for an event, in `locale`.
#[uniffi::export]
pub fn alarm_text(notice: AlarmNotice, locale: String) -> Result<PushText, MobileError> {
    let kind =
        EventKind::from_code(notice.kind.trim()).ok_or_else(|| MobileError::invalid("kind", "not an event kind"))?;
    let category = EventCategory::from_code(notice.category.trim())
        .ok_or_else(|| MobileError::invalid("category", "not an event category"))?;
    let reason = match notice.unacknowledged_min {
        Some(open_min) => Reason::Unacknowledged { level: 1, open_min },
        None => Reason::Event,
    };
    let n = Notice {
        reason,
        kind,
        category,
        project: &notice.project,
        device: &notice.device,
        position: notice.position.as_deref(),
        channel: channel("channel", &notice.channel)?,
        value: notice.value,
        setpoint: notice.setpoint,
    };
    Ok(notify::render(&n, crate::locale(&locale)).into())
}

/// A notice about field work addressed to people.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum WorkNotice {
    /// An order was assigned to the reader.
    Assigned {
        /// The order's title.
        title: String,
    },
    /// The reader's report was rejected.
    Rejected {
        /// The order's title.
        title: String,
        /// What is still wrong.
        note: String,
    },
    /// Work was handed in for verification.
    Submitted {
        /// The order's title.
        title: String,
        /// Who handed it in.
        by: String,
    },
    /// Someone found a hazard.
    HazardReported {
        /// What was found.
        description: String,
        /// Who found it.
        by: String,
    },
    /// An order is past its deadline.
    Overdue {
        /// The order's title.
        title: String,
        /// Minutes past the deadline.
        overdue_min: u32,
        /// Reminder level (1 = first).
        level: u32,
    },
}

/// The text the server pushes about field work at a site (`project`), in `locale`.
#[uniffi::export]
pub fn work_notice_text(notice: WorkNotice, project: String, locale: String) -> PushText {
    let n = match &notice {
        WorkNotice::Assigned { title } => Work::Assigned { title },
        WorkNotice::Rejected { title, note } => Work::Rejected { title, note },
        WorkNotice::Submitted { title, by } => Work::Submitted { title, by },
        WorkNotice::HazardReported { description, by } => Work::HazardReported { description, by },
        WorkNotice::Overdue { title, overdue_min, level } => {
            Work::Overdue { title, overdue_min: *overdue_min, level: *level }
        }
    };
    notify::render_work(&n, &project, crate::locale(&locale)).into()
}

/// The text the server pushes for a missed patrol (`escalated`: to the managers); `due` is
/// the due time as the site reads it.
#[uniffi::export]
pub fn patrol_missed_text(plan: String, due: String, escalated: bool, project: String, locale: String) -> PushText {
    sparkwatch_domain::patrol::render_missed(&plan, &due, escalated, &project, self::locale(&locale)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_and_texts() {
        let reading = ReadingValues { leak_ma: vec![Some(320.0), None], ..ReadingValues::default() };
        let views = classify_reading(default_thresholds(), reading, vec![], "zh-CN".into()).unwrap_or_default();
        assert_eq!(
            views.iter().map(|v| v.class).collect::<Vec<_>>(),
            vec![ChannelClass::Alarm, ChannelClass::NotFitted]
        );
        assert_eq!(views[0].summary, "剩余电流1：320 mA — 报警（设定值 300 mA）");
        let bad = classify_reading(default_thresholds(), ReadingValues::default(), vec!["x".into()], "en".into());
        assert!(matches!(bad, Err(MobileError::Invalid { ref field, .. }) if field == "faults"));
        let notice = AlarmNotice {
            kind: "LEAK_ALARM".into(),
            category: "ALARM".into(),
            project: "Mall".into(),
            device: "Cabinet 1".into(),
            position: None,
            channel: "leak:1".into(),
            value: Some(320.0),
            setpoint: Some(300.0),
            unacknowledged_min: None,
        };
        let t = alarm_text(notice, "en".into()).map(|t| t.title);
        assert_eq!(t.as_deref(), Ok("ELECTRICAL ALARM · Mall"));
        let w = work_notice_text(WorkNotice::Assigned { title: "Fix".into() }, "Mall".into(), "en".into());
        assert_eq!(w.body, "Assigned to you: Fix");
    }
}
