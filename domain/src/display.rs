//! Readings for display: every channel of a reading classified — normal, pre-alarm, alarm,
//! fault, not fitted — against the detector's effective thresholds, with its name, value
//! and state in zh-CN or English.
//!
//! The levels come from [`crate::alarm::instant`], the evaluator's own rules without delay
//! or hysteresis: a screen shows what a value *is*, the server decides what *happened*
//! (events, hazards). Faults are not in readings: the caller passes the channels whose
//! fault is active (the detector's open `FAULT` episodes), and those show as faults
//! whatever they measure.

use crate::alarm::instant;
use crate::notify::{Locale, fmt_value};
use crate::reading::{Channel, EventCategory, EventKind, Quantity, Reading};
use crate::thresholds::EffectiveThresholds;

/// How a channel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelClass {
    /// Within its set-points.
    Normal,
    /// At or above the pre-alarm level.
    PreAlarm,
    /// Beyond an alarm set-point.
    Alarm,
    /// The sensor or the monitoring is broken (an active fault on the channel).
    Fault,
    /// No value: the channel is not fitted or not measured.
    NotFitted,
}

impl ChannelClass {
    /// Stable code (`PRE_ALARM`).
    pub const fn code(self) -> &'static str {
        match self {
            ChannelClass::Normal => "NORMAL",
            ChannelClass::PreAlarm => "PRE_ALARM",
            ChannelClass::Alarm => "ALARM",
            ChannelClass::Fault => "FAULT",
            ChannelClass::NotFitted => "NOT_FITTED",
        }
    }

    /// The class in words.
    pub const fn label(self, locale: Locale) -> &'static str {
        match (self, locale) {
            (ChannelClass::Normal, Locale::En) => "normal",
            (ChannelClass::PreAlarm, Locale::En) => "pre-alarm",
            (ChannelClass::Alarm, Locale::En) => "alarm",
            (ChannelClass::Fault, Locale::En) => "fault",
            (ChannelClass::NotFitted, Locale::En) => "not fitted",
            (ChannelClass::Normal, Locale::ZhCn) => "正常",
            (ChannelClass::PreAlarm, Locale::ZhCn) => "预警",
            (ChannelClass::Alarm, Locale::ZhCn) => "报警",
            (ChannelClass::Fault, Locale::ZhCn) => "故障",
            (ChannelClass::NotFitted, Locale::ZhCn) => "未接入",
        }
    }
}

/// One channel as a screen shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelView {
    /// The channel.
    pub channel: Channel,
    /// How it reads.
    pub class: ChannelClass,
    /// The value, when measured.
    pub value: Option<f64>,
    /// The condition it is in (alarm and pre-alarm only).
    pub kind: Option<EventKind>,
    /// The level the value was compared with (alarm and pre-alarm only).
    pub setpoint: Option<f64>,
    /// The channel's name (`Leakage 1`, `A相电压`).
    pub name: String,
    /// The value with its unit (`320 mA`), empty when not measured.
    pub value_text: String,
    /// One line: name, value, state and set-point.
    pub summary: String,
}

/// The channel's name in `locale`.
pub fn channel_name(channel: &Channel, locale: Locale) -> String {
    let n = channel.number;
    let phase = match n {
        1 => "A".to_owned(),
        2 => "B".to_owned(),
        3 => "C".to_owned(),
        other => other.to_string(),
    };
    match (channel.quantity, locale) {
        (Quantity::Leak, Locale::En) => format!("Leakage {n}"),
        (Quantity::Leak, Locale::ZhCn) => format!("剩余电流{n}"),
        (Quantity::Temp, Locale::En) => format!("Temperature {n}"),
        (Quantity::Temp, Locale::ZhCn) => format!("温度{n}"),
        (Quantity::Voltage, Locale::En) => format!("Phase {phase} voltage"),
        (Quantity::Voltage, Locale::ZhCn) => format!("{phase}相电压"),
        (Quantity::Current, Locale::En) => format!("Phase {phase} current"),
        (Quantity::Current, Locale::ZhCn) => format!("{phase}相电流"),
        (Quantity::Detector, Locale::En) => "Detector".to_owned(),
        (Quantity::Detector, Locale::ZhCn) => "探测器".to_owned(),
    }
}

/// Classifies every channel of `reading` (see the module docs); `faults` are the channels
/// with an active fault. Channels come in order: leakage, temperature, voltage, current, then
/// faults on channels the reading does not carry (e.g. the whole detector).
pub fn classify(
    thresholds: &EffectiveThresholds,
    reading: &Reading,
    faults: &[Channel],
    locale: Locale,
) -> Vec<ChannelView> {
    let levels = instant(thresholds, reading);
    let series = [
        (Quantity::Leak, &reading.leak_ma),
        (Quantity::Temp, &reading.temp_c),
        (Quantity::Voltage, &reading.voltage_v),
        (Quantity::Current, &reading.current_a),
    ];
    let mut out = Vec::new();
    for (quantity, values) in series {
        for (i, value) in values.iter().enumerate() {
            let Ok(number) = u8::try_from(i + 1) else { break };
            let channel = Channel::new(quantity, number);
            let value = value.filter(|v| v.is_finite());
            let condition = levels.iter().find(|l| l.channel == channel).and_then(|l| l.condition);
            out.push(view(channel, value, condition, faults.contains(&channel), locale));
        }
    }
    for fault in faults {
        if !out.iter().any(|v| v.channel == *fault) {
            out.push(view(*fault, None, None, true, locale));
        }
    }
    out
}

fn view(
    channel: Channel,
    value: Option<f64>,
    condition: Option<(EventKind, EventCategory, f64)>,
    fault: bool,
    locale: Locale,
) -> ChannelView {
    let class = match (fault, value, condition) {
        (true, _, _) => ChannelClass::Fault,
        (false, None, _) => ChannelClass::NotFitted,
        (false, Some(_), Some((_, EventCategory::Alarm, _))) => ChannelClass::Alarm,
        (false, Some(_), Some(_)) => ChannelClass::PreAlarm,
        (false, Some(_), None) => ChannelClass::Normal,
    };
    let (kind, setpoint) = match class {
        ChannelClass::Alarm | ChannelClass::PreAlarm => (condition.map(|c| c.0), condition.map(|c| c.2)),
        _ => (None, None),
    };
    let name = channel_name(&channel, locale);
    let value_text = value.map(|v| fmt_value(&channel, v)).unwrap_or_default();
    let state = class.label(locale);
    let mut summary = match (locale, value_text.is_empty()) {
        (Locale::En, false) => format!("{name}: {value_text} — {state}"),
        (Locale::ZhCn, false) => format!("{name}：{value_text} — {state}"),
        (Locale::En, true) => format!("{name}: {state}"),
        (Locale::ZhCn, true) => format!("{name}：{state}"),
    };
    if let Some(s) = setpoint {
        summary.push_str(&match locale {
            Locale::En => format!(" (set-point {})", fmt_value(&channel, s)),
            Locale::ZhCn => format!("（设定值 {}）", fmt_value(&channel, s)),
        });
    }
    ChannelView { channel, class, value, kind, setpoint, name, value_text, summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            leak_ma: vec![Some(120.0), Some(250.0), Some(320.0), None],
            temp_c: vec![Some(40.5), None],
            voltage_v: vec![Some(221.0), Some(80.0), Some(260.0)],
            current_a: vec![Some(12.0)],
            ..Reading::default()
        }
    }

    #[test]
    fn every_class_against_the_default_thresholds() {
        let faults = [Channel::new(Quantity::Temp, 2), Channel::DETECTOR];
        let views = classify(&EffectiveThresholds::DEFAULT, &reading(), &faults, Locale::En);
        let got: Vec<(String, &str)> = views.iter().map(|v| (v.channel.code(), v.class.code())).collect();
        let expected = [
            ("leak:1", "NORMAL"),
            ("leak:2", "PRE_ALARM"),
            ("leak:3", "ALARM"),
            ("leak:4", "NOT_FITTED"),
            ("temp:1", "NORMAL"),
            ("temp:2", "FAULT"),
            ("voltage:1", "NORMAL"),
            ("voltage:2", "ALARM"),
            ("voltage:3", "ALARM"),
            ("current:1", "NORMAL"),
            ("detector:0", "FAULT"),
        ];
        let expected: Vec<(String, &str)> = expected.iter().map(|(c, k)| (c.to_string(), *k)).collect();
        assert_eq!(got, expected);
        assert_eq!(views[1].kind, Some(EventKind::LeakAlarm));
        assert_eq!(views[7].kind, Some(EventKind::PhaseLoss));
        assert_eq!(views[8].kind, Some(EventKind::Overvoltage));
        assert_eq!(views[2].summary, "Leakage 3: 320 mA — alarm (set-point 300 mA)");
        assert_eq!(views[1].summary, "Leakage 2: 250 mA — pre-alarm (set-point 240 mA)");
        assert_eq!(views[3].summary, "Leakage 4: not fitted");
    }

    #[test]
    fn chinese_names_and_punctuation() {
        let views = classify(&EffectiveThresholds::DEFAULT, &reading(), &[], Locale::ZhCn);
        assert_eq!(views[2].summary, "剩余电流3：320 mA — 报警（设定值 300 mA）");
        assert_eq!(views[7].summary, "B相电压：80 V — 报警（设定值 110 V）");
        assert_eq!(views[4].summary, "温度1：40.5 °C — 正常");
        assert_eq!(views[5].summary, "温度2：未接入");
    }
}
