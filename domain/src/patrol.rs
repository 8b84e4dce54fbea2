//! Patrol: schedules and their periods, the task lifecycle, checklists and the QR payload
//! printed on each checkpoint.
//!
//! - A plan's schedule cuts time into **periods** (a day, an ISO week from Monday, a
//!   calendar month) in the site's local time (a fixed UTC offset); one task per plan and
//!   period, due at the period's end.
//! - A task is `DUE` until its first check-in (`IN_PROGRESS`), `DONE` once every
//!   checkpoint of the plan has a check-in, and `MISSED` when its due time passes first. A
//!   check-in made (device time) before the due time still counts when it is synced after
//!   the task was marked missed — the electrician was there, the phone was offline.
//! - The **QR payload** names a checkpoint and carries a tag the server computes over
//!   (tenant, checkpoint) with its secret: `SWQ1.<checkpoint>.<tag>`, both base64url
//!   without padding, 44 characters — a small QR code on a printed label. The app can parse
//!   it ([`QrPayload::parse`]); only the server can check the tag.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::notify::{Locale, Text};
use crate::validate::{ValidationError, optional_text, required_text};

/// Longest checkpoint name, characters.
pub const MAX_NAME_CHARS: usize = 120;
/// Most checklist items per checkpoint.
pub const MAX_CHECKLIST_ITEMS: usize = 50;
/// Longest checklist item or answer note, characters.
pub const MAX_ITEM_CHARS: usize = 500;
/// Most checkpoints in a plan.
pub const MAX_PLAN_CHECKPOINTS: usize = 200;
/// Most assignees of a plan.
pub const MAX_PLAN_ASSIGNEES: usize = 50;
/// Bytes of the QR tag.
pub const QR_TAG_BYTES: usize = 12;
/// The QR payload's prefix (format version 1).
pub const QR_PREFIX: &str = "SWQ1";

/// How often a plan's checkpoints are walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatrolSchedule {
    /// Every day.
    Daily,
    /// Every ISO week (Monday to Sunday).
    Weekly,
    /// Every calendar month.
    Monthly,
}

impl PatrolSchedule {
    /// Every schedule.
    pub const ALL: [PatrolSchedule; 3] = [PatrolSchedule::Daily, PatrolSchedule::Weekly, PatrolSchedule::Monthly];

    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            PatrolSchedule::Daily => "DAILY",
            PatrolSchedule::Weekly => "WEEKLY",
            PatrolSchedule::Monthly => "MONTHLY",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The first day of the period containing `day`.
    pub fn period_start(self, day: NaiveDate) -> NaiveDate {
        match self {
            PatrolSchedule::Daily => day,
            PatrolSchedule::Weekly => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            PatrolSchedule::Monthly => day.with_day(1).unwrap_or(day),
        }
    }

    /// The first day of the period after the one starting at `start`.
    pub fn next_start(self, start: NaiveDate) -> NaiveDate {
        match self {
            PatrolSchedule::Daily => start + Duration::days(1),
            PatrolSchedule::Weekly => start + Duration::days(7),
            PatrolSchedule::Monthly => {
                let (y, m) =
                    if start.month() == 12 { (start.year() + 1, 1) } else { (start.year(), start.month() + 1) };
                NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(start + Duration::days(31))
            }
        }
    }
}

/// One period of a plan: the task for it is due at `due_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// The period's first day (local).
    pub start: NaiveDate,
    /// When the period starts (UTC).
    pub starts_at: DateTime<Utc>,
    /// When it ends: the task's due time (UTC).
    pub due_at: DateTime<Utc>,
}

fn local_midnight(day: NaiveDate, offset: FixedOffset) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    offset.from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc)).unwrap_or_else(|| naive.and_utc())
}

/// The period of `schedule` containing `now`, if the plan has started by then.
pub fn current_period(
    schedule: PatrolSchedule,
    starts_on: NaiveDate,
    now: DateTime<Utc>,
    offset: FixedOffset,
) -> Option<Period> {
    let today = now.with_timezone(&offset).date_naive();
    if today < starts_on {
        return None;
    }
    let start = schedule.period_start(today);
    Some(Period {
        start,
        starts_at: local_midnight(start, offset),
        due_at: local_midnight(schedule.next_start(start), offset),
    })
}

/// Where a patrol task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatrolTaskStatus {
    /// Not started.
    Due,
    /// Some checkpoints checked.
    InProgress,
    /// Every checkpoint checked.
    Done,
    /// The due time passed before it was done.
    Missed,
}

impl PatrolTaskStatus {
    /// Every status.
    pub const ALL: [PatrolTaskStatus; 4] =
        [PatrolTaskStatus::Due, PatrolTaskStatus::InProgress, PatrolTaskStatus::Done, PatrolTaskStatus::Missed];

    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            PatrolTaskStatus::Due => "DUE",
            PatrolTaskStatus::InProgress => "IN_PROGRESS",
            PatrolTaskStatus::Done => "DONE",
            PatrolTaskStatus::Missed => "MISSED",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// What someone does to a patrol task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskAction {
    /// Scan a checkpoint of the plan and answer its checklist.
    CheckIn,
}

impl TaskAction {
    /// Stable code.
    pub const fn code(self) -> &'static str {
        match self {
            TaskAction::CheckIn => "CHECK_IN",
        }
    }

    /// The permission it takes (besides being one of the plan's assignees).
    pub const fn permissions(self) -> &'static [crate::access::Permission] {
        &[crate::access::Permission::FieldWork]
    }
}

/// Whether a task in `status`, due at `due_at`, still takes a check-in made at
/// `checked_at` (device time): not when done, nor when missed and the check-in was made
/// after the due time (one made before still counts when it syncs late).
pub fn check_in_open(
    status: PatrolTaskStatus,
    due_at: DateTime<Utc>,
    checked_at: DateTime<Utc>,
) -> Result<(), ValidationError> {
    if status == PatrolTaskStatus::Done {
        return Err(ValidationError::new("taskId", "this patrol task is already done"));
    }
    if status == PatrolTaskStatus::Missed && checked_at >= due_at {
        return Err(ValidationError::new(
            "at",
            "this patrol task was missed: its due time passed before this check-in",
        ));
    }
    Ok(())
}

/// What a person may do to a task in `status` at `at` (device time): `field_worker`
/// holds `fieldwork`, `on_plan` is one of the plan's assignees.
pub fn task_actions(
    status: PatrolTaskStatus,
    due_at: DateTime<Utc>,
    at: DateTime<Utc>,
    field_worker: bool,
    on_plan: bool,
) -> Vec<TaskAction> {
    let open = field_worker && on_plan && check_in_open(status, due_at, at).is_ok();
    if open { vec![TaskAction::CheckIn] } else { Vec::new() }
}

/// The status a task has after a check-in made at `checked_at` (device time), given how
/// many of its `total` checkpoints are checked now (this one included).
///
/// Returns `Err` when the check-in cannot be accepted ([`check_in_open`]).
pub fn after_check_in(
    status: PatrolTaskStatus,
    due_at: DateTime<Utc>,
    checked_at: DateTime<Utc>,
    checked: usize,
    total: usize,
) -> Result<PatrolTaskStatus, ValidationError> {
    check_in_open(status, due_at, checked_at)?;
    Ok(if checked >= total { PatrolTaskStatus::Done } else { PatrolTaskStatus::InProgress })
}

/// Whether a task is missed at `now`.
pub fn is_missed(status: PatrolTaskStatus, due_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    matches!(status, PatrolTaskStatus::Due | PatrolTaskStatus::InProgress) && due_at <= now
}

/// The push text of a missed task for a site (`project`) in `locale`: `escalated` for the
/// managers, else for the assignees; `due` is the due time as the site reads it.
pub fn render_missed(plan: &str, due: &str, escalated: bool, project: &str, locale: Locale) -> Text {
    let (tag, body) = match (locale, escalated) {
        (Locale::En, false) => ("PATROL MISSED", format!("{plan} was not done by {due}")),
        (Locale::En, true) => ("PATROL MISSED", format!("{plan} was not done by {due}; its patrollers were reminded")),
        (Locale::ZhCn, false) => ("巡检漏检", format!("{plan} 未在 {due} 前完成")),
        (Locale::ZhCn, true) => ("巡检漏检", format!("{plan} 未在 {due} 前完成，已提醒巡检人员")),
    };
    let title = match locale {
        Locale::En => format!("{tag} · {project}"),
        Locale::ZhCn => format!("【{tag}】{project}"),
    };
    Text { title, body }
}

/// A checkpoint's name and checklist, checked.
pub fn check_checkpoint(
    name: &str,
    position: Option<&str>,
    checklist: &[String],
) -> Result<(String, Option<String>, Vec<String>), ValidationError> {
    if name.trim().is_empty() {
        return Err(ValidationError::new("name", "a name is required"));
    }
    let name = required_text("name", name, MAX_NAME_CHARS)?;
    let position = optional_text("position", position, MAX_NAME_CHARS)?;
    if checklist.is_empty() {
        return Err(ValidationError::new("checklist", "at least one checklist item is required"));
    }
    if checklist.len() > MAX_CHECKLIST_ITEMS {
        return Err(ValidationError::new("checklist", format!("at most {MAX_CHECKLIST_ITEMS} items")));
    }
    let mut items: Vec<String> = Vec::with_capacity(checklist.len());
    for item in checklist {
        if item.trim().is_empty() {
            return Err(ValidationError::new("checklist", "checklist items must not be empty"));
        }
        let item = required_text("checklist", item, MAX_ITEM_CHARS)?;
        if items.contains(&item) {
            return Err(ValidationError::new("checklist", format!("\"{item}\" is listed twice")));
        }
        items.push(item);
    }
    Ok((name, position, items))
}

/// A plan's name and the sizes of its (de-duplicated) checkpoint and assignee lists,
/// checked; returns the name, trimmed.
pub fn check_plan(name: &str, checkpoints: usize, assignees: usize) -> Result<String, ValidationError> {
    let name = required_text("name", name, MAX_NAME_CHARS)?;
    if !(1..=MAX_PLAN_CHECKPOINTS).contains(&checkpoints) {
        return Err(ValidationError::new("checkpointIds", format!("give 1 to {MAX_PLAN_CHECKPOINTS} checkpoints")));
    }
    if !(1..=MAX_PLAN_ASSIGNEES).contains(&assignees) {
        return Err(ValidationError::new("assigneeIds", format!("give 1 to {MAX_PLAN_ASSIGNEES} assignees")));
    }
    Ok(name)
}

/// One answer to a checklist item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The item, as written in the checklist.
    pub item: String,
    /// Whether it is in order.
    pub ok: bool,
    /// A note (what is wrong).
    pub note: Option<String>,
}

/// Checks answers against the checkpoint's checklist: every item answered exactly once,
/// nothing that is not on the list.
pub fn check_answers(checklist: &[String], answers: &[Answer]) -> Result<(), ValidationError> {
    for (i, a) in answers.iter().enumerate() {
        if !checklist.contains(&a.item) {
            return Err(ValidationError::new(
                "answers",
                format!("\"{}\" is not on this checkpoint's checklist", a.item),
            ));
        }
        if answers[..i].iter().any(|b| b.item == a.item) {
            return Err(ValidationError::new("answers", format!("\"{}\" is answered twice", a.item)));
        }
        optional_text("answers", a.note.as_deref(), MAX_ITEM_CHARS)?;
    }
    if let Some(missing) = checklist.iter().find(|item| !answers.iter().any(|a| &a.item == *item)) {
        return Err(ValidationError::new("answers", format!("\"{missing}\" is not answered")));
    }
    Ok(())
}

/// A scanned checkpoint label: which checkpoint it names and the server's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QrPayload {
    /// The checkpoint.
    pub checkpoint: Uuid,
    /// The server's tag over (tenant, checkpoint).
    pub tag: [u8; QR_TAG_BYTES],
}

impl QrPayload {
    /// Parses a payload (format only; the tag is checked by the server).
    pub fn parse(text: &str) -> Result<QrPayload, ValidationError> {
        let bad = || ValidationError::new("qrPayload", "this is not a Sparkwatch checkpoint code");
        let mut parts = text.trim().split('.');
        let (Some(prefix), Some(id), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if prefix != QR_PREFIX {
            return Err(bad());
        }
        let id = URL_SAFE_NO_PAD.decode(id).ok().and_then(|b| <[u8; 16]>::try_from(b).ok()).ok_or_else(bad)?;
        let tag =
            URL_SAFE_NO_PAD.decode(tag).ok().and_then(|b| <[u8; QR_TAG_BYTES]>::try_from(b).ok()).ok_or_else(bad)?;
        Ok(QrPayload { checkpoint: Uuid::from_bytes(id), tag })
    }

    /// The payload as printed.
    pub fn encode(&self) -> String {
        format!(
            "{QR_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.checkpoint.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.tag)
        )
    }

    /// The bytes the server's tag covers.
    pub fn signed_bytes(tenant: Uuid, checkpoint: Uuid) -> Vec<u8> {
        let mut m = Vec::with_capacity(4 + 32);
        m.extend_from_slice(QR_PREFIX.as_bytes());
        m.extend_from_slice(tenant.as_bytes());
        m.extend_from_slice(checkpoint.as_bytes());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap_or_default()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn periods_in_local_time() {
        let cst = FixedOffset::east_opt(8 * 3600).unwrap_or(FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
        // 2026-12-06 20:00 UTC is 2026-12-07 04:00 in China (a Monday).
        let now = utc("2026-12-06T20:00:00Z");
        let p = current_period(PatrolSchedule::Daily, day("2026-12-01"), now, cst).unwrap_or_else(|| unreachable!());
        assert_eq!(p.start, day("2026-12-07"));
        assert_eq!(p.starts_at, utc("2026-12-06T16:00:00Z"));
        assert_eq!(p.due_at, utc("2026-12-07T16:00:00Z"));
        let w = current_period(PatrolSchedule::Weekly, day("2026-12-01"), now, cst).unwrap_or_else(|| unreachable!());
        assert_eq!(w.start, day("2026-12-07"));
        assert_eq!(w.due_at, utc("2026-12-13T16:00:00Z"));
        let m = current_period(PatrolSchedule::Monthly, day("2026-01-01"), utc("2026-12-20T00:00:00Z"), cst)
            .unwrap_or_else(|| unreachable!());
        assert_eq!(m.start, day("2026-12-01"));
        assert_eq!(m.due_at, utc("2026-12-31T16:00:00Z"));
        assert_eq!(current_period(PatrolSchedule::Daily, day("2026-12-08"), now, cst), None);
    }

    #[test]
    fn task_status_after_check_ins() {
        let due = utc("2026-12-06T16:00:00Z");
        let before = due - Duration::hours(1);
        let after = due + Duration::hours(1);
        use PatrolTaskStatus::*;
        assert_eq!(after_check_in(Due, due, before, 1, 3), Ok(InProgress));
        assert_eq!(after_check_in(InProgress, due, before, 3, 3), Ok(Done));
        assert_eq!(after_check_in(Missed, due, before, 1, 1), Ok(Done));
        assert!(after_check_in(Missed, due, after, 1, 1).is_err());
        assert!(after_check_in(Done, due, before, 1, 1).is_err());
        assert!(is_missed(Due, due, due));
        assert!(!is_missed(Done, due, after));
    }

    #[test]
    fn plans_need_a_name_checkpoints_and_people() {
        assert_eq!(check_plan(" Night round ", 3, 1), Ok("Night round".to_owned()));
        assert_eq!(check_plan(" ", 3, 1).map_err(|e| e.field), Err("name".to_owned()));
        assert_eq!(check_plan("x", 0, 1).map_err(|e| e.field), Err("checkpointIds".to_owned()));
        assert_eq!(check_plan("x", MAX_PLAN_CHECKPOINTS + 1, 1).map_err(|e| e.field), Err("checkpointIds".to_owned()));
        assert_eq!(check_plan("x", 1, 0).map_err(|e| e.field), Err("assigneeIds".to_owned()));
    }

    #[test]
    fn missed_texts_name_the_plan_and_site() {
        let t = render_missed("夜间巡检", "2026-12-07 00:00", true, "滨江商场", Locale::ZhCn);
        assert_eq!(t.title, "【巡检漏检】滨江商场");
        assert!(t.body.contains("夜间巡检") && t.body.contains("已提醒"));
        let t = render_missed("Night round", "2026-12-07 00:00", false, "Mall", Locale::En);
        assert_eq!(
            (t.title.as_str(), t.body.as_str()),
            ("PATROL MISSED · Mall", "Night round was not done by 2026-12-07 00:00")
        );
    }

    #[test]
    fn answers_cover_the_checklist_exactly() {
        let list = vec!["Cabinet closed".to_owned(), "No smell of burning".to_owned()];
        let a = |item: &str, ok| Answer { item: item.into(), ok, note: None };
        assert!(check_answers(&list, &[a("Cabinet closed", true), a("No smell of burning", false)]).is_ok());
        assert!(check_answers(&list, &[a("Cabinet closed", true)]).is_err());
        assert!(check_answers(&list, &[a("Cabinet closed", true), a("Cabinet closed", true)]).is_err());
        assert!(check_answers(&list, &[a("Cabinet closed", true), a("Other", true)]).is_err());
    }

    #[test]
    fn qr_payload_round_trips_and_rejects_junk() {
        let p = QrPayload { checkpoint: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00ff), tag: [7; 12] };
        let text = p.encode();
        assert_eq!(text.len(), 44, "{text}");
        assert_eq!(QrPayload::parse(&text), Ok(p));
        for junk in ["", "SWQ1", "SWQ2.AAAA.BBBB", &text.replacen("SWQ1", "SWQ2", 1), &format!("{text}.x"), &text[..40]]
        {
            assert!(QrPayload::parse(junk).is_err(), "{junk}");
        }
    }
}
