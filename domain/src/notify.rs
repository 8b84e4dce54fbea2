//! Notification rules: severity of an event category, each user's preferences (categories,
//! minimum severity, quiet hours — which never silence alarms), the tenant's escalation
//! policy, and the localized text (zh-CN, en) a person understands at a glance: where,
//! what, value against set-point.

use std::collections::BTreeSet;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::ValidationError;
use crate::reading::{Channel, EventCategory, EventKind, Quantity};

/// How urgent an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Recoveries, status, operations.
    Info,
    /// Pre-alarms.
    Warning,
    /// Faults of the monitoring itself.
    Major,
    /// Alarms.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [Severity::Info, Severity::Warning, Severity::Major, Severity::Critical];

    /// The severity of events of a category.
    pub const fn of(category: EventCategory) -> Severity {
        match category {
            EventCategory::Alarm => Severity::Critical,
            EventCategory::Fault => Severity::Major,
            EventCategory::PreAlarm => Severity::Warning,
            EventCategory::Recovery | EventCategory::Operation | EventCategory::Status => Severity::Info,
        }
    }

    /// Whether events of a category are pushed to phones at all: alarms, pre-alarms, faults
    /// and recoveries are; operations (commands) and status changes only show in the app.
    pub const fn pushed(category: EventCategory) -> bool {
        !matches!(category, EventCategory::Operation | EventCategory::Status)
    }

    /// Stable code (`CRITICAL`).
    pub const fn code(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Major => "MAJOR",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Parses a code.
    pub fn from_code(code: &str) -> Option<Severity> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// The language of a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Locale {
    /// English.
    En,
    /// Simplified Chinese.
    ZhCn,
}

impl Locale {
    /// Reads a BCP 47 tag leniently: any Chinese tag is zh-CN, everything else English.
    pub fn from_tag(tag: &str) -> Locale {
        if tag.trim().to_ascii_lowercase().starts_with("zh") { Locale::ZhCn } else { Locale::En }
    }

    /// The tag stored (`zh-CN`, `en`).
    pub const fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::ZhCn => "zh-CN",
        }
    }
}

/// When unacknowledged alarm hazards are escalated to the tenant's administrators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    /// Minutes after the hazard opened.
    pub after_min: u32,
    /// Minutes between repeats until someone acknowledges.
    pub every_min: u32,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        EscalationPolicy { after_min: 10, every_min: 10 }
    }
}

impl EscalationPolicy {
    /// Checks both values (1 minute to 24 hours).
    pub fn new(after_min: u32, every_min: u32) -> Result<EscalationPolicy, ValidationError> {
        for (field, v) in [("afterMinutes", after_min), ("everyMinutes", every_min)] {
            if !(1..=1440).contains(&v) {
                return Err(ValidationError::new(field, "must be between 1 and 1440 minutes"));
            }
        }
        Ok(EscalationPolicy { after_min, every_min })
    }
}

/// A daily quiet period in the user's local time; it may wrap past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Start, minutes after local midnight.
    pub start_min: u16,
    /// End (exclusive), minutes after local midnight.
    pub end_min: u16,
}

impl QuietHours {
    /// Parses `HH:MM` start and end; `field` names the input for errors.
    pub fn parse(start: &str, end: &str) -> Result<QuietHours, ValidationError> {
        let one = |field: &str, s: &str| -> Result<u16, ValidationError> {
            let bad = || ValidationError::new(field, "must be a time of day as HH:MM (00:00–23:59)");
            let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let q = QuietHours { start_min: one("quietHours.start", start)?, end_min: one("quietHours.end", end)? };
        if q.start_min == q.end_min {
            return Err(ValidationError::new("quietHours.end", "must differ from the start"));
        }
        Ok(q)
    }

    /// `HH:MM` of a minute of the day.
    pub fn hhmm(min: u16) -> String {
        format!("{:02}:{:02}", min / 60, min % 60)
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&minute)
        } else {
            minute >= self.start_min || minute < self.end_min
        }
    }
}

/// What a user wants pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Categories pushed (alarms are pushed whatever this says).
    pub categories: BTreeSet<EventCategory>,
    /// Events below this severity are not pushed (alarms always are).
    pub min_severity: Severity,
    /// No pushes in this period, except alarms.
    pub quiet: Option<QuietHours>,
    /// The user's offset from UTC, minutes (quiet hours are local time).
    pub utc_offset_min: i16,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            categories: [EventCategory::Alarm, EventCategory::PreAlarm, EventCategory::Fault].into(),
            min_severity: Severity::Warning,
            quiet: None,
            utc_offset_min: 480,
        }
    }
}

/// Whether a notification goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it.
    Send,
    /// The user does not want this category or severity.
    NotWanted,
    /// Inside the user's quiet hours.
    Quiet,
}

impl Preferences {
    /// Checks a UTC offset (−12:00 … +14:00).
    pub fn check_offset(minutes: i32) -> Result<i16, ValidationError> {
        if (-720..=840).contains(&minutes) {
            Ok(minutes as i16)
        } else {
            Err(ValidationError::new("utcOffsetMinutes", "must be between -720 and 840"))
        }
    }

    /// Whether an event of `category` happening at `at` is pushed to this user. Alarms are,
    /// always: a safety manager cannot mute them by accident.
    pub fn decide(&self, category: EventCategory, at: DateTime<Utc>) -> Decision {
        if category == EventCategory::Alarm {
            return Decision::Send;
        }
        if !self.categories.contains(&category) || Severity::of(category) < self.min_severity {
            return Decision::NotWanted;
        }
        if let Some(q) = self.quiet {
            let local = at + chrono::Duration::minutes(i64::from(self.utc_offset_min));
            let minute = (local.hour() * 60 + local.minute()) as u16;
            if q.contains(minute) {
                return Decision::Quiet;
            }
        }
        Decision::Send
    }
}

/// Why a notification is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The event itself.
    Event,
    /// An alarm hazard nobody acknowledged for `open_min` minutes (escalation `level` ≥ 1).
    Unacknowledged {
        /// Escalation level (1 = first escalation).
        level: u32,
        /// Minutes the hazard has been open.
        open_min: u32,
    },
}

/// What a notification is about.
#[derive(Clone, Debug)]
pub struct Notice<'a> {
    /// Why now.
    pub reason: Reason,
    /// What happened.
    pub kind: EventKind,
    /// Its category.
    pub category: EventCategory,
    /// Project (site) name.
    pub project: &'a str,
    /// Device name.
    pub device: &'a str,
    /// Position (region, room, feeder), when known.
    pub position: Option<&'a str>,
    /// The channel.
    pub channel: Channel,
    /// Value measured.
    pub value: Option<f64>,
    /// Set-point exceeded.
    pub setpoint: Option<f64>,
}

/// A rendered notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    /// Title line.
    pub title: String,
    /// Body.
    pub body: String,
}

/// The unit of a channel's values.
pub const fn unit(channel: &Channel) -> &'static str {
    match channel.quantity {
        Quantity::Leak => "mA",
        Quantity::Temp => "°C",
        Quantity::Voltage => "V",
        Quantity::Current => "A",
        Quantity::Detector => "",
    }
}

/// A value with its unit, without needless decimals (`480 mA`, `72.5 °C`).
pub fn fmt_value(channel: &Channel, v: f64) -> String {
    let n = if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    format!("{n} {}", unit(channel)).trim_end().to_owned()
}

/// What happened, in words (`leakage current alarm`, `剩余电流报警`).
pub fn kind_label(kind: EventKind, category: EventCategory, locale: Locale) -> String {
    let (en, zh) = match kind {
        EventKind::LeakAlarm => ("leakage current", "剩余电流"),
        EventKind::TempAlarm => ("temperature", "温度"),
        EventKind::Overvoltage => ("over-voltage", "过压"),
        EventKind::Undervoltage => ("under-voltage", "欠压"),
        EventKind::Overcurrent => ("over-current", "过流"),
        EventKind::PhaseLoss => ("phase loss", "缺相"),
        EventKind::ArcFault => ("arc fault", "故障电弧"),
        EventKind::SensorOpen => ("sensor open circuit", "传感器开路"),
        EventKind::SensorShort => ("sensor short circuit", "传感器短路"),
        EventKind::PowerFault => ("power fault", "电源故障"),
        EventKind::Offline => ("device offline", "设备离线"),
        EventKind::Online => ("device online", "设备上线"),
        EventKind::Recovered => ("recovery", "恢复"),
        EventKind::Trip => ("relay tripped", "脱扣"),
        EventKind::Command => ("remote operation", "远程操作"),
        EventKind::FieldReport => ("hazard found on site", "现场发现隐患"),
    };
    match (locale, category) {
        (Locale::En, EventCategory::PreAlarm) => format!("{en} pre-alarm"),
        (Locale::En, EventCategory::Alarm) => format!("{en} alarm"),
        (Locale::En, _) => en.to_owned(),
        (Locale::ZhCn, EventCategory::PreAlarm) => format!("{zh}预警"),
        (Locale::ZhCn, EventCategory::Alarm) => format!("{zh}报警"),
        (Locale::ZhCn, _) => zh.to_owned(),
    }
}

/// Renders a notification in `locale`. Alarms are marked as *electrical* alarms so they are
/// not mistaken for fire alarms, and faults as faults of the monitoring equipment.
pub fn render(n: &Notice<'_>, locale: Locale) -> Text {
    let what = kind_label(n.kind, n.category, locale);
    let reading = match (n.value, n.setpoint) {
        (Some(v), Some(s)) => match locale {
            Locale::En => format!("{} (set-point {})", fmt_value(&n.channel, v), fmt_value(&n.channel, s)),
            Locale::ZhCn => format!("{}（设定值 {}）", fmt_value(&n.channel, v), fmt_value(&n.channel, s)),
        },
        (Some(v), None) => fmt_value(&n.channel, v),
        _ => String::new(),
    };
    let place = match n.position {
        Some(p) if !p.is_empty() => match locale {
            Locale::En => format!("{}, {p}", n.device),
            Locale::ZhCn => format!("{}，{p}", n.device),
        },
        _ => n.device.to_owned(),
    };
    let tag = match (locale, n.reason, n.category) {
        (Locale::En, Reason::Unacknowledged { open_min, .. }, _) => format!("UNACKNOWLEDGED {open_min} MIN"),
        (Locale::ZhCn, Reason::Unacknowledged { open_min, .. }, _) => format!("{open_min}分钟未确认"),
        (Locale::En, _, EventCategory::Alarm) => "ELECTRICAL ALARM".to_owned(),
        (Locale::ZhCn, _, EventCategory::Alarm) => "电气报警".to_owned(),
        (Locale::En, _, EventCategory::PreAlarm) => "WARNING".to_owned(),
        (Locale::ZhCn, _, EventCategory::PreAlarm) => "预警".to_owned(),
        (Locale::En, _, EventCategory::Fault) => "EQUIPMENT FAULT".to_owned(),
        (Locale::ZhCn, _, EventCategory::Fault) => "设备故障".to_owned(),
        (Locale::En, _, EventCategory::Recovery) => "RECOVERED".to_owned(),
        (Locale::ZhCn, _, EventCategory::Recovery) => "恢复".to_owned(),
        (Locale::En, _, _) => "NOTICE".to_owned(),
        (Locale::ZhCn, _, _) => "通知".to_owned(),
    };
    let title = match locale {
        Locale::En => format!("{tag} · {}", n.project),
        Locale::ZhCn => format!("【{tag}】{}", n.project),
    };
    let mut body = match locale {
        Locale::En => {
            let mut w = what;
            if let Some(first) = w.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            w
        }
        Locale::ZhCn => what,
    };
    if !reading.is_empty() {
        body.push_str(match locale {
            Locale::En => ": ",
            Locale::ZhCn => "：",
        });
        body.push_str(&reading);
    }
    body.push_str(" — ");
    body.push_str(&place);
    if let Reason::Unacknowledged { .. } = n.reason {
        body.push_str(match locale {
            Locale::En => ". Please acknowledge.",
            Locale::ZhCn => "。请尽快确认处理。",
        });
    }
    Text { title, body }
}

/// A notice about field work addressed to named people (not an event of a detector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkNotice<'a> {
    /// A work order was assigned to the reader.
    Assigned {
        /// The order's title.
        title: &'a str,
    },
    /// The reader's completion report was rejected.
    Rejected {
        /// The order's title.
        title: &'a str,
        /// What is still wrong.
        note: &'a str,
    },
    /// A work order was handed in for verification.
    Submitted {
        /// The order's title.
        title: &'a str,
        /// Who handed it in.
        by: &'a str,
    },
    /// Someone found a hazard on site (a report, or a check-in's finding).
    HazardReported {
        /// What was found.
        description: &'a str,
        /// Who found it.
        by: &'a str,
    },
    /// A work order is past its deadline: level 1 reminds the assignee, later levels tell
    /// the managers.
    Overdue {
        /// The order's title.
        title: &'a str,
        /// Minutes past the deadline.
        overdue_min: u32,
        /// Reminder level (1 = first).
        level: u32,
    },
}

impl Preferences {
    /// Whether a notice about someone's own field work goes out at `at`. It is not an event
    /// of a detector, so the category and severity filters do not apply; quiet hours do,
    /// unless the notice is `urgent` (an escalation).
    pub fn decide_personal(&self, at: DateTime<Utc>, urgent: bool) -> Decision {
        match self.quiet {
            Some(q) if !urgent => {
                let local = at + chrono::Duration::minutes(i64::from(self.utc_offset_min));
                if q.contains((local.hour() * 60 + local.minute()) as u16) { Decision::Quiet } else { Decision::Send }
            }
            _ => Decision::Send,
        }
    }
}

/// Renders a work-order notice for a site (`project`) in `locale`.
pub fn render_work(n: &WorkNotice<'_>, project: &str, locale: Locale) -> Text {
    let (tag, body) = match (locale, *n) {
        (Locale::En, WorkNotice::Assigned { title }) => ("WORK ORDER", format!("Assigned to you: {title}")),
        (Locale::ZhCn, WorkNotice::Assigned { title }) => ("工单", format!("新工单指派给您：{title}")),
        (Locale::En, WorkNotice::Rejected { title, note }) => ("REWORK", format!("{title} was rejected: {note}")),
        (Locale::ZhCn, WorkNotice::Rejected { title, note }) => ("工单退回", format!("{title} 未通过验收：{note}")),
        (Locale::En, WorkNotice::Submitted { title, by }) => {
            ("TO VERIFY", format!("{by} completed {title}; please verify"))
        }
        (Locale::ZhCn, WorkNotice::Submitted { title, by }) => ("待验收", format!("{by} 已完成 {title}，请验收")),
        (Locale::En, WorkNotice::HazardReported { description, by }) => {
            ("HAZARD FOUND", format!("{by} found: {description}"))
        }
        (Locale::ZhCn, WorkNotice::HazardReported { description, by }) => {
            ("现场隐患", format!("{by} 发现隐患：{description}"))
        }
        (Locale::En, WorkNotice::Overdue { title, overdue_min, .. }) => {
            ("OVERDUE", format!("{title} is {overdue_min} min past its deadline"))
        }
        (Locale::ZhCn, WorkNotice::Overdue { title, overdue_min, .. }) => {
            ("工单超期", format!("{title} 已超期 {overdue_min} 分钟"))
        }
    };
    let title = match locale {
        Locale::En => format!("{tag} · {project}"),
        Locale::ZhCn => format!("【{tag}】{project}"),
    };
    Text { title, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hh: u32, mm: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, 24, hh, mm, 0).single().unwrap_or_default()
    }

    #[test]
    fn quiet_hours_never_silence_alarms() {
        // 22:00–07:00 local at UTC+8 = 14:00–23:00 UTC.
        let p = Preferences {
            quiet: Some(QuietHours::parse("22:00", "07:00").unwrap_or(QuietHours { start_min: 0, end_min: 1 })),
            ..Preferences::default()
        };
        let cases = [
            (EventCategory::Alarm, at(15, 0), Decision::Send),
            (EventCategory::Fault, at(15, 0), Decision::Quiet),
            (EventCategory::Fault, at(23, 0), Decision::Send),
            (EventCategory::Fault, at(13, 59), Decision::Send),
            (EventCategory::PreAlarm, at(22, 59), Decision::Quiet),
            (EventCategory::Recovery, at(3, 0), Decision::NotWanted),
            (EventCategory::Status, at(3, 0), Decision::NotWanted),
        ];
        for (category, when, want) in cases {
            assert_eq!(p.decide(category, when), want, "{category:?} at {when}");
        }
    }

    #[test]
    fn severity_and_categories_filter_everything_but_alarms() {
        let p = Preferences {
            categories: [EventCategory::Alarm, EventCategory::Fault, EventCategory::Recovery].into(),
            min_severity: Severity::Major,
            ..Preferences::default()
        };
        assert_eq!(p.decide(EventCategory::Fault, at(1, 0)), Decision::Send);
        assert_eq!(p.decide(EventCategory::Recovery, at(1, 0)), Decision::NotWanted);
        assert_eq!(p.decide(EventCategory::PreAlarm, at(1, 0)), Decision::NotWanted);
        let none = Preferences { categories: BTreeSet::new(), min_severity: Severity::Critical, ..p };
        assert_eq!(none.decide(EventCategory::Alarm, at(1, 0)), Decision::Send);
    }

    #[test]
    fn inputs_are_checked() {
        assert!(QuietHours::parse("24:00", "07:00").is_err());
        assert!(QuietHours::parse("22:00", "7").is_err());
        assert!(QuietHours::parse("07:00", "07:00").is_err());
        assert_eq!(QuietHours::parse("22:30", "06:05").map(|q| (q.start_min, q.end_min)), Ok((1350, 365)));
        assert!(EscalationPolicy::new(0, 10).is_err_and(|e| e.field == "afterMinutes"));
        assert!(EscalationPolicy::new(5, 1441).is_err_and(|e| e.field == "everyMinutes"));
        assert!(Preferences::check_offset(900).is_err());
        assert_eq!(Locale::from_tag("zh-Hans-CN"), Locale::ZhCn);
        assert_eq!(Locale::from_tag("en-GB"), Locale::En);
    }

    #[test]
    fn texts_say_where_what_and_value_against_setpoint() {
        let n = Notice {
            reason: Reason::Event,
            kind: EventKind::LeakAlarm,
            category: EventCategory::Alarm,
            project: "Riverside Mall",
            device: "Mall main distribution",
            position: Some("B1 main switch room, feeder 2"),
            channel: Channel::parse("leak:1").unwrap_or(Channel::DETECTOR),
            value: Some(480.0),
            setpoint: Some(300.0),
        };
        let en = render(&n, Locale::En);
        assert_eq!(en.title, "ELECTRICAL ALARM · Riverside Mall");
        assert_eq!(
            en.body,
            "Leakage current alarm: 480 mA (set-point 300 mA) — Mall main distribution, B1 main switch room, feeder 2"
        );
        let zh = render(&n, Locale::ZhCn);
        assert_eq!(zh.title, "【电气报警】Riverside Mall");
        assert_eq!(
            zh.body,
            "剩余电流报警：480 mA（设定值 300 mA） — Mall main distribution，B1 main switch room, feeder 2"
        );
        let late = Notice { reason: Reason::Unacknowledged { level: 1, open_min: 10 }, ..n.clone() };
        assert_eq!(render(&late, Locale::En).title, "UNACKNOWLEDGED 10 MIN · Riverside Mall");
        assert!(render(&late, Locale::ZhCn).body.ends_with("请尽快确认处理。"));
        let fault = Notice {
            kind: EventKind::Offline,
            category: EventCategory::Fault,
            value: None,
            setpoint: None,
            position: None,
            ..n
        };
        assert_eq!(render(&fault, Locale::En).body, "Device offline — Mall main distribution");
        assert_eq!(render(&fault, Locale::ZhCn).title, "【设备故障】Riverside Mall");
    }

    #[test]
    fn work_notices_read_well_and_respect_quiet_hours_unless_urgent() {
        let n = WorkNotice::Rejected { title: "Fix feeder 2", note: "still 60 °C" };
        let en = render_work(&n, "Riverside Mall", Locale::En);
        assert_eq!(
            (en.title.as_str(), en.body.as_str()),
            ("REWORK · Riverside Mall", "Fix feeder 2 was rejected: still 60 °C")
        );
        assert_eq!(render_work(&WorkNotice::Assigned { title: "T" }, "P", Locale::ZhCn).title, "【工单】P");
        let p = Preferences {
            quiet: Some(QuietHours { start_min: 0, end_min: 1439 }),
            utc_offset_min: 0,
            ..Preferences::default()
        };
        assert_eq!(p.decide_personal(at(12, 0), false), Decision::Quiet);
        assert_eq!(p.decide_personal(at(12, 0), true), Decision::Send);
        assert_eq!(Preferences::default().decide_personal(at(12, 0), false), Decision::Send);
    }
}
