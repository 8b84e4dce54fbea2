//! The hazard lifecycle and the alarm latch it controls.
//!
//! ```text
//! open ──acknowledge──▶ acknowledged ──dispatch──▶ dispatched ──rectify──▶ rectified ──verify ✓ / auto-close──▶ closed
//!   │                      │                          ▲                        │
//!   ├──dispatch────────────┼──────────────────────────┘◀──────verify ✗─────────┘
//!   └─ open/acknowledged ──┴──▶ false_alarm | ignored   (both need a reason)
//! ```
//!
//! [`transition`] is the single rule book: services call it for every change (batch
//! operations call it once per hazard and apply only the ones that succeed) and record who,
//! when and the note themselves. Rectification needs a note and at least one photo
//! reference; a failed verification needs a note telling the electrician what is still
//! wrong. Closed, false-alarm and ignored hazards are terminal.
//!
//! # The alarm latch (contract for the ingestion pipeline)
//! An alarm stays indicated until someone deals with it (GB 14287: until reset). In
//! Sparkwatch "dealing with it" is moving its hazard out of `OPEN`:
//!
//! - While the hazard is `OPEN`, the alarm episode for (detector, channel, kind) is
//!   **latched**: it stays open even after the condition clears, and a new
//!   [`Raised`](crate::alarm::Change::Raised) for the same triple adds an occurrence to it
//!   instead of opening another episode.
//! - Any transition out of `OPEN` (acknowledge, dispatch, false alarm, ignore) **releases**
//!   the latch. If the condition has already cleared, the episode ends now; otherwise it ends
//!   at the next [`Cleared`](crate::alarm::Change::Cleared). The next `Raised` after that
//!   opens a new episode. [`episode_is_open`] is this rule as a function.
//! - Leaving `OPEN` is also the hazard's *first acknowledgement* for response-time reporting
//!   (rule 7), whichever action did it.
//! - Pre-alarm and fault episodes are never latched: they end when their condition clears.

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::access::Permission;
use crate::reading::EventCategory;
use crate::validate::{Needs, ValidationError, required_text};

/// Longest note or reason accepted, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Most photo references one rectification may carry.
pub const MAX_PHOTOS: usize = 20;

/// Longest photo reference (an object-store key or URL), in characters.
pub const MAX_PHOTO_REF_CHARS: usize = 512;

/// Where a hazard is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HazardStatus {
    /// Raised and not yet looked at; its alarm is latched.
    Open,
    /// Someone responsible has seen it.
    Acknowledged,
    /// An electrician has been sent (usually through a work order).
    Dispatched,
    /// The electrician reports it fixed; waiting for verification.
    Rectified,
    /// Verified fixed (terminal).
    Closed,
    /// Not a real problem, with a reason (terminal).
    FalseAlarm,
    /// Deliberately not acted on, with a reason (terminal).
    Ignored,
}

impl HazardStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [HazardStatus; 7] = [
        HazardStatus::Open,
        HazardStatus::Acknowledged,
        HazardStatus::Dispatched,
        HazardStatus::Rectified,
        HazardStatus::Closed,
        HazardStatus::FalseAlarm,
        HazardStatus::Ignored,
    ];

    /// The stable code stored and shown in the API (`FALSE_ALARM`).
    pub const fn code(self) -> &'static str {
        match self {
            HazardStatus::Open => "OPEN",
            HazardStatus::Acknowledged => "ACKNOWLEDGED",
            HazardStatus::Dispatched => "DISPATCHED",
            HazardStatus::Rectified => "RECTIFIED",
            HazardStatus::Closed => "CLOSED",
            HazardStatus::FalseAlarm => "FALSE_ALARM",
            HazardStatus::Ignored => "IGNORED",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether no action can move the hazard any further.
    pub const fn is_terminal(self) -> bool {
        matches!(self, HazardStatus::Closed | HazardStatus::FalseAlarm | HazardStatus::Ignored)
    }

    /// Whether a hazard in this status keeps its alarm episode latched (only `OPEN` does).
    pub const fn latches_alarm(self) -> bool {
        matches!(self, HazardStatus::Open)
    }

    /// The status as an adjective phrase for messages ("already …").
    const fn label(self) -> &'static str {
        match self {
            HazardStatus::Open => "open",
            HazardStatus::Acknowledged => "acknowledged",
            HazardStatus::Dispatched => "dispatched",
            HazardStatus::Rectified => "rectified",
            HazardStatus::Closed => "closed",
            HazardStatus::FalseAlarm => "marked as a false alarm",
            HazardStatus::Ignored => "ignored",
        }
    }

    /// "a closed hazard" — the subject of a refusal message.
    const fn subject(self) -> &'static str {
        match self {
            HazardStatus::Open => "an open hazard",
            HazardStatus::Acknowledged => "an acknowledged hazard",
            HazardStatus::Dispatched => "a dispatched hazard",
            HazardStatus::Rectified => "a rectified hazard",
            HazardStatus::Closed => "a closed hazard",
            HazardStatus::FalseAlarm => "a hazard marked as a false alarm",
            HazardStatus::Ignored => "an ignored hazard",
        }
    }
}

/// What someone (or the auto-close job) does to a hazard, with the input it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HazardAction {
    /// Confirm the hazard has been seen (`OPEN` → `ACKNOWLEDGED`).
    Acknowledge,
    /// Send someone to fix it (`OPEN`/`ACKNOWLEDGED` → `DISPATCHED`).
    Dispatch,
    /// Report it fixed (`DISPATCHED` → `RECTIFIED`); a note and at least one photo required.
    Rectify {
        /// What was done.
        note: String,
        /// References to uploaded photos (object keys or URLs).
        photos: Vec<String>,
    },
    /// Check the fix (`RECTIFIED` → `CLOSED` if passed, → `DISPATCHED` if not; a failed
    /// verification needs a note).
    Verify {
        /// Whether the fix holds.
        passed: bool,
        /// What was checked, or what is still wrong.
        note: Option<String>,
    },
    /// Declare it not a real problem (`OPEN`/`ACKNOWLEDGED` → `FALSE_ALARM`).
    MarkFalseAlarm {
        /// Why, for the record.
        reason: String,
    },
    /// Decide not to act (`OPEN`/`ACKNOWLEDGED` → `IGNORED`).
    Ignore {
        /// Why, for the record.
        reason: String,
    },
    /// Close a rectified hazard whose channel has stayed normal for the configured time
    /// (`RECTIFIED` → `CLOSED`); issued by the system, not a person.
    AutoClose,
}

/// The kind of a [`HazardAction`] without its input, for messages and the operation log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HazardActionKind {
    /// See [`HazardAction::Acknowledge`].
    Acknowledge,
    /// See [`HazardAction::Dispatch`].
    Dispatch,
    /// See [`HazardAction::Rectify`].
    Rectify,
    /// See [`HazardAction::Verify`].
    Verify,
    /// See [`HazardAction::MarkFalseAlarm`].
    MarkFalseAlarm,
    /// See [`HazardAction::Ignore`].
    Ignore,
    /// See [`HazardAction::AutoClose`].
    AutoClose,
}

impl HazardActionKind {
    /// Every action kind.
    pub const ALL: [HazardActionKind; 7] = [
        HazardActionKind::Acknowledge,
        HazardActionKind::Dispatch,
        HazardActionKind::Rectify,
        HazardActionKind::Verify,
        HazardActionKind::MarkFalseAlarm,
        HazardActionKind::Ignore,
        HazardActionKind::AutoClose,
    ];

    /// The stable code for the operation log (`MARK_FALSE_ALARM`).
    pub const fn code(self) -> &'static str {
        match self {
            HazardActionKind::Acknowledge => "ACKNOWLEDGE",
            HazardActionKind::Dispatch => "DISPATCH",
            HazardActionKind::Rectify => "RECTIFY",
            HazardActionKind::Verify => "VERIFY",
            HazardActionKind::MarkFalseAlarm => "MARK_FALSE_ALARM",
            HazardActionKind::Ignore => "IGNORE",
            HazardActionKind::AutoClose => "AUTO_CLOSE",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The statuses this action may start from.
    pub const fn allowed_from(self) -> &'static [HazardStatus] {
        match self {
            HazardActionKind::Acknowledge => &[HazardStatus::Open],
            HazardActionKind::Dispatch | HazardActionKind::MarkFalseAlarm | HazardActionKind::Ignore => {
                &[HazardStatus::Open, HazardStatus::Acknowledged]
            }
            HazardActionKind::Rectify => &[HazardStatus::Dispatched],
            HazardActionKind::Verify | HazardActionKind::AutoClose => &[HazardStatus::Rectified],
        }
    }

    /// Who may do it: any of these permissions. Acknowledging is for whoever is on site or
    /// responsible (`hazard.manage` or `fieldwork`); dispatching, verifying, false alarms
    /// and ignoring for managers; rectifying for electricians; nobody closes automatically
    /// but the system (empty).
    pub const fn permissions(self) -> &'static [Permission] {
        match self {
            HazardActionKind::Acknowledge => &[Permission::HazardManage, Permission::FieldWork],
            HazardActionKind::Dispatch
            | HazardActionKind::Verify
            | HazardActionKind::MarkFalseAlarm
            | HazardActionKind::Ignore => &[Permission::HazardManage],
            HazardActionKind::Rectify => &[Permission::FieldWork],
            HazardActionKind::AutoClose => &[],
        }
    }

    /// Whether people do this through the hazard's work order (submitting it rectifies,
    /// approving or rejecting it verifies) rather than on the hazard itself.
    pub const fn through_work_order(self) -> bool {
        matches!(self, HazardActionKind::Rectify | HazardActionKind::Verify)
    }

    /// What the action takes (a verification that fails also needs its note, see
    /// [`HazardAction::needs`]).
    pub const fn needs(self) -> Needs {
        let nothing = Needs { text_field: None, ..Needs::optional_note(0) };
        match self {
            HazardActionKind::Acknowledge | HazardActionKind::Verify => Needs::optional_note(MAX_NOTE_CHARS),
            HazardActionKind::Dispatch => Needs { text_field: Some("description"), ..Needs::optional_note(4000) },
            HazardActionKind::Rectify => Needs {
                text_field: Some("note"),
                text_required: true,
                when_blank: "a note on what was done is required",
                max_text_chars: MAX_NOTE_CHARS,
                photos_field: Some("photos"),
                min_photos: 1,
                when_no_photos: "at least one photo of the fix is required",
                max_photos: MAX_PHOTOS,
            },
            HazardActionKind::MarkFalseAlarm | HazardActionKind::Ignore => Needs {
                text_field: Some("reason"),
                text_required: true,
                when_blank: "a reason is required",
                ..Needs::optional_note(MAX_NOTE_CHARS)
            },
            HazardActionKind::AutoClose => nothing,
        }
    }

    /// The status this action always leads to; `None` for verification, whose result decides.
    const fn target(self) -> Option<HazardStatus> {
        match self {
            HazardActionKind::Acknowledge => Some(HazardStatus::Acknowledged),
            HazardActionKind::Dispatch => Some(HazardStatus::Dispatched),
            HazardActionKind::Rectify => Some(HazardStatus::Rectified),
            HazardActionKind::Verify => None,
            HazardActionKind::MarkFalseAlarm => Some(HazardStatus::FalseAlarm),
            HazardActionKind::Ignore => Some(HazardStatus::Ignored),
            HazardActionKind::AutoClose => Some(HazardStatus::Closed),
        }
    }

    /// The past participle for "cannot be …".
    const fn done(self) -> &'static str {
        match self {
            HazardActionKind::Acknowledge => "acknowledged",
            HazardActionKind::Dispatch => "dispatched",
            HazardActionKind::Rectify => "rectified",
            HazardActionKind::Verify => "verified",
            HazardActionKind::MarkFalseAlarm => "marked as a false alarm",
            HazardActionKind::Ignore => "ignored",
            HazardActionKind::AutoClose => "closed automatically",
        }
    }

    /// "open or acknowledged" — the statuses this action may start from, in words.
    fn allowed_words(self) -> String {
        let labels: Vec<&str> = self.allowed_from().iter().map(|s| s.label()).collect();
        labels.join(" or ")
    }
}

impl HazardAction {
    /// The action's kind.
    pub const fn kind(&self) -> HazardActionKind {
        match self {
            HazardAction::Acknowledge => HazardActionKind::Acknowledge,
            HazardAction::Dispatch => HazardActionKind::Dispatch,
            HazardAction::Rectify { .. } => HazardActionKind::Rectify,
            HazardAction::Verify { .. } => HazardActionKind::Verify,
            HazardAction::MarkFalseAlarm { .. } => HazardActionKind::MarkFalseAlarm,
            HazardAction::Ignore { .. } => HazardActionKind::Ignore,
            HazardAction::AutoClose => HazardActionKind::AutoClose,
        }
    }

    /// What this action takes ([`HazardActionKind::needs`]; a failed verification needs a
    /// note on what is still wrong).
    pub const fn needs(&self) -> Needs {
        match self {
            HazardAction::Verify { passed: false, .. } => Needs {
                text_required: true,
                when_blank: "a note on what is still wrong is required",
                ..Needs::optional_note(MAX_NOTE_CHARS)
            },
            other => other.kind().needs(),
        }
    }

    /// Checks the action's own input (independent of the hazard's status) against
    /// [`Self::needs`].
    fn check_input(&self) -> Result<(), ValidationError> {
        let (text, photos): (Option<&str>, &[String]) = match self {
            HazardAction::Acknowledge | HazardAction::Dispatch | HazardAction::AutoClose => (None, &[]),
            HazardAction::Rectify { note, photos } => (Some(note), photos),
            HazardAction::Verify { note, .. } => (note.as_deref(), &[]),
            HazardAction::MarkFalseAlarm { reason } | HazardAction::Ignore { reason } => (Some(reason), &[]),
        };
        self.needs().check(text, photos.len())?;
        for photo in photos {
            required("photos", photo, "a photo reference must not be empty", MAX_PHOTO_REF_CHARS)?;
        }
        Ok(())
    }
}

/// A required text with a specific message when it is blank; other problems (length,
/// control characters) use the shared wording.
fn required(field: &str, value: &str, when_blank: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, when_blank));
    }
    required_text(field, value, max).map(|_| ())
}

/// Why a hazard cannot make a transition, worded for the person who asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The action does not apply to the hazard's current status (a state conflict, not an
    /// input problem).
    #[error("{} cannot be {}; only {} hazards can", .from.subject(), .action.done(), .action.allowed_words())]
    NotAllowed {
        /// The hazard's current status.
        from: HazardStatus,
        /// What was asked.
        action: HazardActionKind,
    },
    /// The hazard is already where the action would take it. Batch operations and retries
    /// may treat this as success.
    #[error("the hazard is already {}", .status.label())]
    Already {
        /// The hazard's current (and requested) status.
        status: HazardStatus,
    },
    /// The action's input is missing or invalid; `field` names the input (`note`, `photos`,
    /// `reason`).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl TransitionError {
    /// The input field at fault, when the problem is an input rather than the status.
    pub fn field(&self) -> Option<&str> {
        match self {
            TransitionError::Invalid(e) => Some(&e.field),
            TransitionError::NotAllowed { .. } | TransitionError::Already { .. } => None,
        }
    }
}

/// The status a hazard in `from` moves to under `action`, or why it cannot.
///
/// The status is checked before the input, so asking for something impossible is reported as
/// such even when the input is also incomplete.
pub fn transition(from: HazardStatus, action: &HazardAction) -> Result<HazardStatus, TransitionError> {
    let kind = action.kind();
    if !kind.allowed_from().contains(&from) {
        return Err(match kind.target() {
            Some(target) if target == from => TransitionError::Already { status: from },
            _ => TransitionError::NotAllowed { from, action: kind },
        });
    }
    action.check_input()?;
    Ok(match action {
        HazardAction::Acknowledge => HazardStatus::Acknowledged,
        HazardAction::Dispatch | HazardAction::Verify { passed: false, .. } => HazardStatus::Dispatched,
        HazardAction::Rectify { .. } => HazardStatus::Rectified,
        HazardAction::Verify { passed: true, .. } | HazardAction::AutoClose => HazardStatus::Closed,
        HazardAction::MarkFalseAlarm { .. } => HazardStatus::FalseAlarm,
        HazardAction::Ignore { .. } => HazardStatus::Ignored,
    })
}

/// Why a person may not do an action to a hazard.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller's role does not allow the action.
    #[error("your role may not do this to a hazard")]
    Forbidden(HazardActionKind),
    /// The status or the input does not allow it.
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// [`transition`] for a person: first whether the role allows the action (`can` answers
/// whether the caller holds a permission), then the status, then the input.
pub fn transition_as(
    from: HazardStatus,
    action: &HazardAction,
    can: impl Fn(Permission) -> bool,
) -> Result<HazardStatus, Refusal> {
    let kind = action.kind();
    if !kind.permissions().iter().any(|p| can(*p)) {
        return Err(Refusal::Forbidden(kind));
    }
    Ok(transition(from, action)?)
}

/// The actions a person holding permissions (`can`) may take on a hazard in `from`,
/// inputs aside — what the app offers. Rectifying and verifying are listed where they
/// apply although people do them through the work order
/// ([`HazardActionKind::through_work_order`]); automatic closing never is.
pub fn allowed_actions(from: HazardStatus, can: impl Fn(Permission) -> bool) -> Vec<HazardActionKind> {
    HazardActionKind::ALL
        .into_iter()
        .filter(|k| k.allowed_from().contains(&from) && k.permissions().iter().any(|p| can(*p)))
        .collect()
}

/// Who may report a hazard they found: managers and electricians alike.
pub const REPORT_PERMISSIONS: &[Permission] = &[Permission::HazardManage, Permission::FieldWork];

/// How far ahead of the server a phone's clock may be before a device time is refused.
pub const MAX_CLOCK_AHEAD_MIN: i64 = 5;

/// Checks a device time (`field`) against the server's `now`: a time more than
/// [`MAX_CLOCK_AHEAD_MIN`] minutes ahead is a wrong clock.
pub fn check_device_time(field: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), ValidationError> {
    if at > now + chrono::Duration::minutes(MAX_CLOCK_AHEAD_MIN) {
        return Err(ValidationError::new(field, "lies in the future; check the phone's clock"));
    }
    Ok(())
}

/// Checks what a person found (`reportHazard`'s `description`); returns it trimmed.
pub fn check_report(description: &str) -> Result<String, ValidationError> {
    if description.trim().is_empty() {
        return Err(ValidationError::new("description", "a description of what was found is required"));
    }
    required_text("description", description, MAX_NOTE_CHARS)
}

/// Whether an episode of `category` is held open by the latch of a hazard in `hazard`: only
/// alarms are latched, and only while their hazard is `OPEN`.
pub fn is_latched_alarm(category: EventCategory, hazard: Option<HazardStatus>) -> bool {
    category == EventCategory::Alarm && hazard.is_some_and(HazardStatus::latches_alarm)
}

/// Whether an episode is still open: its condition is still on (no
/// [`Cleared`](crate::alarm::Change::Cleared) since the last `Raised`), or it is a latched
/// alarm. `hazard` is the status of the hazard the episode belongs to; `None` (no hazard)
/// holds nothing, because nobody could ever acknowledge it.
///
/// The pipeline evaluates this after a `Cleared`/`Superseded` (to decide whether the episode
/// ends) and after a hazard transition (to end episodes whose condition had already cleared);
/// a `Raised` for a triple whose episode is open counts an occurrence, otherwise it opens a
/// new episode.
pub fn episode_is_open(category: EventCategory, condition_active: bool, hazard: Option<HazardStatus>) -> bool {
    condition_active || is_latched_alarm(category, hazard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use HazardStatus::*;

    /// One sample of every action, with valid input.
    fn actions() -> [HazardAction; 8] {
        [
            HazardAction::Acknowledge,
            HazardAction::Dispatch,
            HazardAction::Rectify { note: "re-terminated the neutral".into(), photos: vec!["photos/1.jpg".into()] },
            HazardAction::Verify { passed: true, note: None },
            HazardAction::Verify { passed: false, note: Some("still 60 °C at the busbar".into()) },
            HazardAction::MarkFalseAlarm { reason: "sensor test by the installer".into() },
            HazardAction::Ignore { reason: "circuit decommissioned next week".into() },
            HazardAction::AutoClose,
        ]
    }

    #[test]
    fn every_status_and_action() {
        // Columns follow `actions()`: ack, dispatch, rectify, verify ✓, verify ✗, false alarm,
        // ignore, auto-close. A status code is the result; "already" and "-" are refusals.
        let table: [(HazardStatus, [&str; 8]); 7] = [
            (Open, ["ACKNOWLEDGED", "DISPATCHED", "-", "-", "-", "FALSE_ALARM", "IGNORED", "-"]),
            (Acknowledged, ["already", "DISPATCHED", "-", "-", "-", "FALSE_ALARM", "IGNORED", "-"]),
            (Dispatched, ["-", "already", "RECTIFIED", "-", "-", "-", "-", "-"]),
            (Rectified, ["-", "-", "already", "CLOSED", "DISPATCHED", "-", "-", "CLOSED"]),
            (Closed, ["-", "-", "-", "-", "-", "-", "-", "already"]),
            (FalseAlarm, ["-", "-", "-", "-", "-", "already", "-", "-"]),
            (Ignored, ["-", "-", "-", "-", "-", "-", "already", "-"]),
        ];
        for (from, row) in table {
            for (action, expected) in actions().iter().zip(row) {
                let got = match transition(from, action) {
                    Ok(to) => to.code(),
                    Err(TransitionError::Already { status }) => {
                        assert_eq!(status, from);
                        "already"
                    }
                    Err(TransitionError::NotAllowed { from: f, action: a }) => {
                        assert_eq!((f, a), (from, action.kind()));
                        "-"
                    }
                    Err(e @ TransitionError::Invalid(_)) => panic!("{from:?} {action:?}: unexpected {e}"),
                };
                assert_eq!(got, expected, "{from:?} + {action:?}");
            }
        }
    }

    #[test]
    fn refusals_read_well() {
        let cases: [(HazardStatus, HazardAction, &str); 5] = [
            (Closed, HazardAction::Acknowledge, "a closed hazard cannot be acknowledged; only open hazards can"),
            (
                Dispatched,
                HazardAction::MarkFalseAlarm { reason: "x".into() },
                "a dispatched hazard cannot be marked as a false alarm; only open or acknowledged hazards can",
            ),
            (
                Open,
                HazardAction::AutoClose,
                "an open hazard cannot be closed automatically; only rectified hazards can",
            ),
            (Acknowledged, HazardAction::Acknowledge, "the hazard is already acknowledged"),
            (
                FalseAlarm,
                HazardAction::MarkFalseAlarm { reason: "x".into() },
                "the hazard is already marked as a false alarm",
            ),
        ];
        for (from, action, message) in cases {
            let err = transition(from, &action).err();
            assert_eq!(err.as_ref().map(ToString::to_string).as_deref(), Some(message));
            assert_eq!(err.as_ref().and_then(TransitionError::field), None);
        }
    }

    /// The (field, reason) of an expected input error; `None` for success.
    type Expected = Option<(&'static str, &'static str)>;

    #[test]
    fn inputs_are_checked_and_name_their_field() {
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        let photo = || vec!["photos/1.jpg".to_owned()];
        // (status, action, expected (field, reason) or None for success)
        let cases: Vec<(HazardStatus, HazardAction, Expected)> = vec![
            (Dispatched, HazardAction::Rectify { note: "fixed".into(), photos: photo() }, None),
            (
                Dispatched,
                HazardAction::Rectify { note: "  ".into(), photos: photo() },
                Some(("note", "a note on what was done is required")),
            ),
            (
                Dispatched,
                HazardAction::Rectify { note: "fixed".into(), photos: vec![] },
                Some(("photos", "at least one photo of the fix is required")),
            ),
            (
                Dispatched,
                HazardAction::Rectify { note: "fixed".into(), photos: vec!["a.jpg".into(), " ".into()] },
                Some(("photos", "a photo reference must not be empty")),
            ),
            (
                Dispatched,
                HazardAction::Rectify { note: "fixed".into(), photos: vec!["a.jpg".into(); MAX_PHOTOS + 1] },
                Some(("photos", "at most 20 photos are accepted")),
            ),
            (
                Dispatched,
                HazardAction::Rectify { note: long.clone(), photos: photo() },
                Some(("note", "must be at most 2000 characters")),
            ),
            (Rectified, HazardAction::Verify { passed: true, note: Some(" ".into()) }, None),
            (
                Rectified,
                HazardAction::Verify { passed: true, note: Some(long.clone()) },
                Some(("note", "must be at most 2000 characters")),
            ),
            (
                Rectified,
                HazardAction::Verify { passed: false, note: None },
                Some(("note", "a note on what is still wrong is required")),
            ),
            (Open, HazardAction::MarkFalseAlarm { reason: "".into() }, Some(("reason", "a reason is required"))),
            (Acknowledged, HazardAction::Ignore { reason: "\t".into() }, Some(("reason", "a reason is required"))),
            (
                Acknowledged,
                HazardAction::Ignore { reason: "a\u{7}b".into() },
                Some(("reason", "must not contain control characters")),
            ),
        ];
        for (from, action, expected) in cases {
            let got = transition(from, &action).err().map(|e| match e {
                TransitionError::Invalid(v) => (v.field, v.reason),
                other => (String::new(), other.to_string()),
            });
            let expected = expected.map(|(f, r)| (f.to_owned(), r.to_owned()));
            assert_eq!(got, expected, "{from:?} + {action:?}");
        }
        let err = transition(Open, &HazardAction::Ignore { reason: String::new() }).err();
        assert_eq!(err.as_ref().and_then(TransitionError::field), Some("reason"));
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("reason: a reason is required"));
    }

    #[test]
    fn status_is_checked_before_input() {
        let err = transition(Closed, &HazardAction::Ignore { reason: String::new() }).err();
        assert!(matches!(err, Some(TransitionError::NotAllowed { .. })), "{err:?}");
    }

    #[test]
    fn codes_round_trip_and_terminal_statuses() {
        for s in HazardStatus::ALL {
            assert_eq!(HazardStatus::from_code(s.code()), Some(s));
            // A terminal status has no way out; every other one has at least one.
            let has_exit = actions().iter().any(|a| transition(s, a).is_ok());
            assert_eq!(s.is_terminal(), !has_exit, "{s:?}");
        }
        for k in HazardActionKind::ALL {
            assert_eq!(HazardActionKind::from_code(k.code()), Some(k));
        }
        assert_eq!(HazardStatus::from_code("open"), None);
    }

    #[test]
    fn only_an_open_hazard_latches_its_alarm() {
        use EventCategory::{Alarm, Fault, PreAlarm};
        let cases: [(EventCategory, bool, Option<HazardStatus>, bool); 9] = [
            (Alarm, false, Some(Open), true),
            (Alarm, false, Some(Acknowledged), false),
            (Alarm, false, Some(Dispatched), false),
            (Alarm, false, Some(FalseAlarm), false),
            (Alarm, false, None, false),
            (Alarm, true, Some(Closed), true),
            (PreAlarm, false, Some(Open), false),
            (Fault, false, Some(Open), false),
            (Fault, true, Some(Acknowledged), true),
        ];
        for (category, active, hazard, open) in cases {
            assert_eq!(episode_is_open(category, active, hazard), open, "{category:?} {active} {hazard:?}");
        }
        assert!(is_latched_alarm(Alarm, Some(Open)));
        assert!(!is_latched_alarm(Alarm, Some(Rectified)));
    }
}
