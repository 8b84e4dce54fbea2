//! Hazards, events, dead letters and detector readings within the caller's scope, and the
//! batch hazard transitions (acknowledge, false alarm, ignore).
//!
//! A batch is all or nothing: every id is checked (unknown or out of scope → `NOT_FOUND`),
//! then the action's input (→ `VALIDATION` with the field), then every hazard's transition
//! through [`sparkwatch_domain::hazard::transition`] (refused → `CONFLICT` naming the
//! hazard); only then are all changes written in one transaction. A hazard that is already
//! where the action leads (acknowledging an acknowledged hazard) is left as it is and
//! returned, so a retried request succeeds.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sparkwatch_domain::hazard::{self, HazardAction, HazardStatus, TransitionError};
use sparkwatch_domain::ids::DetectorId;
use sparkwatch_domain::reading::{Channel, Reading};
use sparkwatch_domain::validate::optional_text;
use uuid::Uuid;

use super::field::{Claim, ClientOp};
use super::{MAX_PAGE, Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::hazards::{
    self as st, DeadLetter, EventFilter, EventView, Hazard, HazardFilter, Keyset, NewTransition, NewestFirst,
    Transition,
};
use crate::store::oplog::Entry;
use crate::store::{Page, PageRequest, telemetry};
use sea_orm::DatabaseTransaction;

/// The distinct ids of a batch, in order; at most a page of them.
fn distinct_ids(ids: &[Uuid]) -> AppResult<Vec<Uuid>> {
    if ids.len() as u64 > MAX_PAGE {
        return Err(AppError::invalid("ids", format!("at most {MAX_PAGE} hazards per request")));
    }
    let mut wanted: Vec<Uuid> = Vec::with_capacity(ids.len());
    for id in ids {
        if !wanted.contains(id) {
            wanted.push(*id);
        }
    }
    Ok(wanted)
}

/// Raw readings returned at most per request (oldest first); longer ranges need a bucket.
pub const MAX_RAW_READINGS: u64 = 5000;
/// Longest range of raw readings, days.
pub const MAX_RAW_DAYS: i64 = 7;
/// Most buckets one request may cover (a week of minutes, ~14 months of hours).
pub const MAX_BUCKETS: i64 = 10_080;

/// The time buckets of stored rollups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadingBucket {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl ReadingBucket {
    /// The code stored in `reading_rollups.bucket`.
    pub const fn code(self) -> &'static str {
        match self {
            ReadingBucket::Minute => "minute",
            ReadingBucket::Hour => "hour",
            ReadingBucket::Day => "day",
        }
    }

    /// The bucket's length.
    pub fn span(self) -> Duration {
        match self {
            ReadingBucket::Minute => Duration::minutes(1),
            ReadingBucket::Hour => Duration::hours(1),
            ReadingBucket::Day => Duration::days(1),
        }
    }
}

/// Statistics of one channel within one point of a curve.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    /// Channel code (`leak:1`, `temp:2`, `voltage:3`, `current:1`).
    pub channel: String,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub avg: f64,
    /// Number of readings behind the figures (1 for a raw reading).
    pub count: i64,
}

/// One point of a curve: a raw reading or a bucket of them.
#[derive(Clone, Debug)]
pub struct ReadingPoint {
    /// The reading's time, or the bucket's start.
    pub at: DateTime<Utc>,
    /// The bucket, when this point aggregates one.
    pub bucket: Option<ReadingBucket>,
    /// Per-channel figures, in channel order (leakage, temperature, voltage, current).
    pub channels: Vec<ChannelStats>,
    /// The raw reading (raw points only).
    pub reading: Option<Reading>,
}

fn raw_point(r: Reading) -> ReadingPoint {
    let series = [("leak", &r.leak_ma), ("temp", &r.temp_c), ("voltage", &r.voltage_v), ("current", &r.current_a)];
    let channels = series
        .into_iter()
        .flat_map(|(q, values)| {
            values.iter().enumerate().filter_map(move |(i, v)| {
                v.map(|v| ChannelStats { channel: format!("{q}:{}", i + 1), min: v, max: v, avg: v, count: 1 })
            })
        })
        .collect();
    ReadingPoint { at: r.at, bucket: None, channels, reading: Some(r) }
}

/// Sort key of a channel code: by quantity, then number; unknown codes last.
fn channel_order(code: &str) -> (Option<Channel>, String) {
    (Channel::parse(code), code.to_owned())
}

/// A newest-first page request; `keyset` is the position of the cursor `req.after`, absent
/// when no such item exists for the caller.
fn newest_first(req: PageRequest, keyset: Option<Keyset>) -> AppResult<NewestFirst> {
    match (req.after, keyset) {
        (Some(_), None) => Err(AppError::invalid("after", "is not a cursor returned by this list")),
        (_, after) => Ok(NewestFirst { first: req.first, after }),
    }
}

impl Services {
    // ---- hazards ----

    /// Visible hazards, newest first.
    pub async fn hazards(&self, who: &Principal, filter: &HazardFilter, req: PageRequest) -> AppResult<Page<Hazard>> {
        let tenant = who.tenant()?;
        let db = self.inner.store.db();
        let keyset = match req.after {
            Some(id) => st::hazard_keyset(db, tenant, id).await?,
            None => None,
        };
        let req = newest_first(req, keyset)?;
        Ok(st::hazards(db, tenant, &who.access.scope, filter, req).await?)
    }

    /// A visible hazard.
    pub async fn hazard(&self, who: &Principal, id: Uuid) -> AppResult<Hazard> {
        st::hazard(self.inner.store.db(), who.tenant()?, &who.access.scope, id)
            .await?
            .ok_or(AppError::NotFound("hazard"))
    }

    /// The status changes of a visible hazard, oldest first.
    pub async fn hazard_transitions(&self, who: &Principal, hazard: &Hazard) -> AppResult<Vec<Transition>> {
        Ok(st::transitions(self.inner.store.db(), who.tenant()?, hazard.id).await?)
    }

    /// Acknowledges hazards: they have been seen by someone responsible.
    pub async fn acknowledge_hazards(
        &self,
        who: &Principal,
        ids: &[Uuid],
        note: Option<&str>,
    ) -> AppResult<Vec<Hazard>> {
        let note = optional_text("note", note, hazard::MAX_NOTE_CHARS)?;
        self.transition_hazards(who, ids, HazardAction::Acknowledge, note, "hazard.acknowledge").await
    }

    /// Marks hazards as false alarms, with the reason.
    pub async fn mark_hazards_false_alarm(
        &self,
        who: &Principal,
        ids: &[Uuid],
        reason: &str,
    ) -> AppResult<Vec<Hazard>> {
        let action = HazardAction::MarkFalseAlarm { reason: reason.trim().to_owned() };
        self.transition_hazards(who, ids, action, Some(reason.trim().to_owned()), "hazard.false_alarm").await
    }

    /// Ignores hazards deliberately, with the reason.
    pub async fn ignore_hazards(&self, who: &Principal, ids: &[Uuid], reason: &str) -> AppResult<Vec<Hazard>> {
        let action = HazardAction::Ignore { reason: reason.trim().to_owned() };
        self.transition_hazards(who, ids, action, Some(reason.trim().to_owned()), "hazard.ignore").await
    }

    /// Applies `action` to every hazard in `ids`, all or nothing (see the module docs).
    async fn transition_hazards(
        &self,
        who: &Principal,
        ids: &[Uuid],
        action: HazardAction,
        note: Option<String>,
        log_action: &str,
    ) -> AppResult<Vec<Hazard>> {
        let wanted = distinct_ids(ids)?;
        let tx = self.begin().await?;
        let changed = self.transition_hazards_tx(&tx, who, &wanted, &action, note.as_deref(), log_action).await?;
        tx.commit().await?;
        self.hazards_after(who, &wanted, &changed).await
    }

    /// Acknowledges one hazard as an offline field operation: with a client id, a repeat
    /// changes nothing and returns the hazard as it is now.
    pub(crate) async fn acknowledge_hazard_tx(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        id: Uuid,
        note: Option<&str>,
        client: Option<&ClientOp>,
    ) -> AppResult<Vec<Uuid>> {
        let note = optional_text("note", note, hazard::MAX_NOTE_CHARS)?;
        if let Claim::Replay(_) = self.claim(tx, who, client, id).await? {
            return Ok(Vec::new());
        }
        self.transition_hazards_tx(tx, who, &[id], &HazardAction::Acknowledge, note.as_deref(), "hazard.acknowledge")
            .await
    }

    /// [`Self::transition_hazards`] inside `tx` (work orders dispatch, rectify and verify
    /// their hazards in their own transaction). Returns the ids of the hazards that changed;
    /// publish them after the commit with [`Self::hazards_after`].
    pub(crate) async fn transition_hazards_tx(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        wanted: &[Uuid],
        action: &HazardAction,
        note: Option<&str>,
        log_action: &str,
    ) -> AppResult<Vec<Uuid>> {
        let tenant = who.tenant()?;
        let found = st::hazards_by_ids(tx, tenant, &who.access.scope, wanted).await?;
        let mut hazards = Vec::with_capacity(wanted.len());
        for id in wanted {
            hazards.push(found.iter().find(|h| h.id == *id).cloned().ok_or(AppError::NotFound("hazard"))?);
        }
        // The input does not depend on the hazards: check it once, against a status the
        // action applies to, so a missing reason is reported as such whatever the statuses.
        if let Some(&from) = action.kind().allowed_from().first()
            && let Err(TransitionError::Invalid(e)) = hazard::transition(from, action)
        {
            return Err(e.into());
        }
        let mut changes = Vec::new();
        for h in &hazards {
            match hazard::transition(h.status, action) {
                Ok(to) => changes.push((h.clone(), to)),
                Err(TransitionError::Already { .. }) => {}
                Err(TransitionError::Invalid(e)) => return Err(e.into()),
                Err(e @ TransitionError::NotAllowed { .. }) => {
                    return Err(AppError::Conflict(format!("hazard {}: {e}", h.id)));
                }
            }
        }
        self.move_hazards(tx, who, &changes, note, log_action, self.now()).await?;
        Ok(changes.into_iter().map(|(before, _)| before.id).collect())
    }

    /// Moves hazards to the statuses given (already checked by `domain::hazard::transition`),
    /// recording each transition (who, when, note), releasing alarm latches, and logging each
    /// — the one place hazard statuses are written outside ingestion.
    pub(crate) async fn move_hazards(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        moves: &[(Hazard, HazardStatus)],
        note: Option<&str>,
        log_action: &str,
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let tenant = who.tenant()?;
        for (before, to) in moves {
            if !st::set_hazard_status(tx, before, *to, now).await? {
                return Err(AppError::Conflict(format!(
                    "hazard {} was changed by someone else meanwhile; reload and try again",
                    before.id
                )));
            }
            let t = NewTransition {
                tenant,
                hazard_id: before.id,
                from: before.status,
                to: *to,
                actor: &who.label,
                actor_user_id: who.user_id(),
                note,
                at: now,
            };
            st::insert_transition(tx, &t).await?;
            // Only OPEN latches an alarm episode; once the hazard leaves it, the episode ends
            // here, so the next occurrence of the condition opens a new episode and hazard.
            // Fault and pre-alarm episodes end with their condition, in ingestion.
            if let Some(episode) = before.episode_id
                && hazard::is_latched_alarm(before.category, Some(before.status))
                && !hazard::is_latched_alarm(before.category, Some(*to))
            {
                telemetry::release_episode(tx, episode, now).await?;
            }
            let after = st::hazard(tx, tenant, &who.access.scope, before.id).await?;
            let entry = Entry::new(Some(tenant), log_action, "hazard", Some(before.id.to_string()))
                .before(snapshot(before))
                .after(snapshot(&serde_json::json!({"hazard": after, "note": note})));
            self.log(tx, who, entry).await?;
        }
        Ok(())
    }

    /// After a commit: reads `wanted` back (the response then shows exactly what later reads
    /// will — the database may store time with less precision than the clock has), tells
    /// subscribers about the `changed` ones, and returns `wanted` in order.
    pub(crate) async fn hazards_after(
        &self,
        who: &Principal,
        wanted: &[Uuid],
        changed: &[Uuid],
    ) -> AppResult<Vec<Hazard>> {
        let stored = st::hazards_by_ids(self.inner.store.db(), who.tenant()?, &who.access.scope, wanted).await?;
        let published: Vec<Hazard> = stored.iter().filter(|h| changed.contains(&h.id)).cloned().collect();
        self.publish_hazards(&published);
        Ok(wanted.iter().filter_map(|id| stored.iter().find(|h| h.id == *id).cloned()).collect())
    }

    // ---- events ----

    /// Visible events, newest first (device time).
    pub async fn events(&self, who: &Principal, filter: &EventFilter, req: PageRequest) -> AppResult<Page<EventView>> {
        let tenant = who.tenant()?;
        let db = self.inner.store.db();
        let keyset = match req.after {
            Some(id) => st::event_keyset(db, tenant, id).await?,
            None => None,
        };
        let req = newest_first(req, keyset)?;
        Ok(st::events(db, tenant, &who.access.scope, filter, req).await?)
    }

    // ---- dead letters ----

    /// The tenant's rejected device input, newest first.
    pub async fn dead_letters(&self, who: &Principal, req: PageRequest) -> AppResult<Page<DeadLetter>> {
        let tenant = who.tenant()?;
        let db = self.inner.store.db();
        let keyset = match req.after {
            Some(id) => st::dead_letter_keyset(db, tenant, id).await?,
            None => None,
        };
        let req = newest_first(req, keyset)?;
        Ok(st::dead_letters(db, tenant, &who.access.scope, req).await?)
    }

    // ---- readings ----

    /// The newest reading of a visible detector: the in-memory value when ingestion has seen
    /// one since start, else the newest stored one.
    pub async fn latest_reading(&self, who: &Principal, id: DetectorId) -> AppResult<Option<Reading>> {
        let detector = self.detector(who, id).await?;
        if let Some(r) = self.latest().get(detector.id).await {
            return Ok(Some(r));
        }
        Ok(telemetry::latest_reading(self.inner.store.db(), detector.id)
            .await?
            .map(|(at, json)| telemetry::reading_from_json(at, &json)))
    }

    /// A visible detector's values in `[from, to)` for a chart.
    ///
    /// Without a bucket: raw readings, oldest first, over at most [`MAX_RAW_DAYS`] days and
    /// at most [`MAX_RAW_READINGS`] points (a range holding more stops early — ask for a
    /// bucket). With a bucket: one point per stored rollup bucket that has data (gaps are
    /// simply absent), starting with the bucket that contains `from`, at most
    /// [`MAX_BUCKETS`] buckets long.
    pub async fn readings(
        &self,
        who: &Principal,
        id: DetectorId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Option<ReadingBucket>,
    ) -> AppResult<Vec<ReadingPoint>> {
        if to <= from {
            return Err(AppError::invalid("to", "must be later than `from`"));
        }
        let detector = self.detector(who, id).await?;
        let db = self.inner.store.db();
        let Some(bucket) = bucket else {
            if to - from > Duration::days(MAX_RAW_DAYS) {
                return Err(AppError::invalid(
                    "to",
                    format!("raw readings cover at most {MAX_RAW_DAYS} days; pass a bucket for longer ranges"),
                ));
            }
            let rows = telemetry::readings(db, detector.id, from, to, MAX_RAW_READINGS).await?;
            return Ok(rows.into_iter().map(|(at, json)| raw_point(telemetry::reading_from_json(at, &json))).collect());
        };
        let span = bucket.span();
        let start = from.duration_trunc(span).map_err(|e| AppError::invalid("from", e))?;
        if (to - start).num_seconds() > MAX_BUCKETS * span.num_seconds() {
            return Err(AppError::invalid(
                "to",
                format!("at most {MAX_BUCKETS} buckets per request; choose a larger bucket or a shorter range"),
            ));
        }
        let cells = telemetry::rollups(db, detector.id, bucket.code(), start, to).await?;
        let mut points: Vec<ReadingPoint> = Vec::new();
        for c in cells {
            let stats = ChannelStats {
                avg: if c.count > 0 { c.sum / c.count as f64 } else { c.min },
                channel: c.channel,
                min: c.min,
                max: c.max,
                count: c.count,
            };
            match points.last_mut() {
                Some(p) if p.at == c.start => p.channels.push(stats),
                _ => points.push(ReadingPoint {
                    at: c.start,
                    bucket: Some(bucket),
                    channels: vec![stats],
                    reading: None,
                }),
            }
        }
        for p in &mut points {
            p.channels.sort_by_key(|c| channel_order(&c.channel));
        }
        Ok(points)
    }
}
