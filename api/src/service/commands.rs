//! Remote commands (遥控): sending, dispatch per transport, results, expiry.
//!
//! [`Services::send_command`] checks scope, permission, re-authentication and the cool-down,
//! then records the command (`QUEUED`), its operation-log entry and a `COMMAND` event in one
//! transaction, and dispatches it:
//! - MQTT: published on `{prefix}/{serial}/cmd` through the ingestion's client
//!   ([`Downlink`]) → `SENT`; the device's answer on `cmd/ack` comes back through the
//!   pipeline ([`Ledger::apply_ack`]).
//! - Modbus TCP: the Modbus poller's supervisor is woken; it claims queued commands
//!   (`QUEUED → SENT`, a conditional UPDATE, so one instance writes) and hands each to the task
//!   owning the gateway's connection, which reports the outcome ([`Ledger::finish`]). Queued
//!   commands are also picked up from the database every second, so a command accepted by an
//!   instance that does not poll the gateway still reaches the one that does.
//!
//! [`Ledger`] is the part that ingestion and jobs share: every status change is written with
//! a conditional UPDATE, recorded in the operation log and published on the tenant's bus feed.
//! A successful set-threshold command also stores the written set-points as the detector's
//! own thresholds in the same transaction, so the server's alarm engine and the device agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::DatabaseTransaction;
use serde_json::{Value, json};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::command::{
    self as cmd, CommandOp, CommandOutcome, CommandResult, CommandStatus, params_json, parse_params,
};
use sparkwatch_domain::ids::{CommandId, DetectorId, DeviceId};
use sparkwatch_domain::payload::{CommandMessage, encode_command};
use sparkwatch_domain::reading::{Channel, EventCategory, EventKind, EventSource};
use sparkwatch_domain::site::DeviceTransport;
use sparkwatch_domain::validate::optional_text;
use tokio::sync::Notify;

use super::{Clock, Services, snapshot};
use crate::auth::{Actor, Principal};
use crate::bus::{Bus, BusMessage, Envelope, Feed};
use crate::downlink::Downlink;
use crate::error::{AppError, AppResult};
use crate::store::commands::{self as sc, Command};
use crate::store::oplog::{self, Entry};
use crate::store::telemetry::{self as tel, NewEvent};
use crate::store::thresholds::{self as th, Level};
use crate::store::{Page, PageRequest, Store, new_id};

/// Longest `reason` accepted.
const MAX_REASON: usize = 500;

/// A command as asked for by a caller.
#[derive(Clone, Debug)]
pub struct SendCommand {
    /// The detector.
    pub detector_id: DetectorId,
    /// The operation.
    pub op: CommandOp,
    /// Set-points (`SET_THRESHOLDS` only), as the API names them.
    pub params: Option<Value>,
    /// The caller's password, for operations that need re-authentication.
    pub password: Option<String>,
    /// A step-up token from `reauthenticate`, instead of the password.
    pub step_up_token: Option<String>,
    /// Why (kept in the operation log).
    pub reason: Option<String>,
}

/// What became of a device's answer on `cmd/ack`.
#[derive(Clone, Debug)]
pub enum AckApplied {
    /// The command finished with it.
    Applied(Box<Command>),
    /// No command with this id was sent to the device that answered.
    Unknown,
    /// The command had already finished (e.g. expired); the answer changes nothing.
    Late(CommandStatus),
}

/// The command ledger as ingestion, the Modbus poller and jobs use it. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    store: Store,
    bus: Bus,
    clock: Arc<dyn Clock>,
    site_generation: Arc<AtomicU64>,
    downlink: Downlink,
    modbus_wakeup: Arc<Notify>,
}

impl Ledger {
    /// A ledger over the store, publishing on `bus`.
    pub(crate) fn new(store: Store, bus: Bus, clock: Arc<dyn Clock>, site_generation: Arc<AtomicU64>) -> Self {
        Ledger { store, bus, clock, site_generation, downlink: Downlink::default(), modbus_wakeup: Arc::default() }
    }

    /// Where MQTT commands are published (the ingestion's MQTT client registers itself there).
    pub fn downlink(&self) -> &Downlink {
        &self.downlink
    }

    /// Notified when a Modbus command was queued on this instance.
    pub fn modbus_wakeup(&self) -> &Arc<Notify> {
        &self.modbus_wakeup
    }

    /// Publishes command changes on their tenant feeds.
    fn publish(&self, commands: impl IntoIterator<Item = Command>) {
        self.bus.publish(commands.into_iter().map(|c| Envelope {
            tenant: c.tenant_id,
            feed: Feed::Tenant(c.tenant_id),
            message: BusMessage::Command(Box::new(c)),
        }));
    }

    /// Hands a just-recorded command to its transport; returns it as it then stands.
    async fn dispatch(&self, command: Command, serial: &str, address: u8) -> AppResult<Command> {
        if command.transport == DeviceTransport::ModbusTcp {
            self.modbus_wakeup.notify_one();
            return Ok(command);
        }
        let params = command.params.as_ref().map(|p| parse_params(command.op, Some(p))).transpose()?.flatten();
        let message = CommandMessage {
            id: command.id.as_uuid(),
            addr: address,
            op: command.op,
            params,
            expires: command.expires_at,
        };
        let published = match encode_command(&message) {
            Ok(payload) => self.downlink.publish_command(serial, payload).await,
            Err(e) => Err(format!("cannot encode the command: {e}")),
        };
        let changed = match published {
            Ok(()) => self.mark_sent(command.id).await?,
            Err(detail) => {
                tracing::warn!(command = %command.id, serial, error = %detail, "command not sent");
                self.finish(command.id, &CommandOutcome::transport_failure(detail), "sparkwatch").await?
            }
        };
        Ok(changed.unwrap_or(command))
    }

    /// Marks a command `SENT` (if still queued) and publishes the change; the row when it
    /// moved. For Modbus this is the claim that makes exactly one instance write it.
    pub async fn mark_sent(&self, id: CommandId) -> AppResult<Option<Command>> {
        let sent = sc::mark_sent(self.store.db(), id, self.clock.now()).await?;
        if let Some(c) = &sent {
            tracing::info!(command = %c.id, op = c.op.code(), "command sent");
            self.publish([c.clone()]);
        }
        Ok(sent)
    }

    /// Finishes a command with `outcome` — recorded by `label` (the device, the gateway, the
    /// expiry job) in the operation log — if it is still open; the row when it changed.
    pub async fn finish(&self, id: CommandId, outcome: &CommandOutcome, label: &str) -> AppResult<Option<Command>> {
        let tx = self.store.begin().await?;
        let Some(done) = sc::finish(&tx, id, outcome, self.clock.now()).await? else {
            return Ok(None);
        };
        let thresholds_changed = self.record_finish(&tx, &done, label).await?;
        tx.commit().await?;
        if thresholds_changed {
            self.site_generation.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(command = %done.id, status = done.status.code(), "command finished");
        self.publish([done.clone()]);
        Ok(Some(done))
    }

    /// The operation-log entry of a finished command and, for a set-threshold command that
    /// succeeded, the detector's new thresholds; whether thresholds changed.
    async fn record_finish(&self, tx: &DatabaseTransaction, done: &Command, label: &str) -> AppResult<bool> {
        let now = self.clock.now();
        let system = Principal::system(done.tenant_id, label);
        let after = json!({"status": done.status, "result": done.result});
        let action = match done.status {
            CommandStatus::Acknowledged => "command.acknowledged",
            CommandStatus::Expired => "command.expired",
            _ => "command.failed",
        };
        let entry = Entry::new(Some(done.tenant_id), action, "command", Some(done.id.to_string())).after(Some(after));
        oplog::append(tx, &system, entry, now).await?;
        let written = match (done.status, &done.params) {
            (CommandStatus::Acknowledged, Some(p)) => parse_params(done.op, Some(p))?,
            _ => None,
        };
        let Some(written) = written else { return Ok(false) };
        let detector = done.detector_id.as_uuid();
        let before = th::get(tx, done.tenant_id, Level::Detector, detector).await?;
        let after = cmd::thresholds_after(&written, &before);
        th::put(tx, done.tenant_id, Level::Detector, detector, &after, now).await?;
        let entry =
            Entry::new(Some(done.tenant_id), "thresholds.detector.update", "thresholds", Some(detector.to_string()))
                .before(snapshot(&before))
                .after(snapshot(&after));
        oplog::append(tx, &system, entry, now).await?;
        Ok(true)
    }

    /// Applies a device's answer from `cmd/ack` of the device `device` (`serial`): only to a
    /// command sent to that device, and only while it is open.
    pub async fn apply_ack(&self, device: DeviceId, serial: &str, result: &CommandResult) -> AppResult<AckApplied> {
        let id = CommandId::from_uuid(result.id);
        let Some(command) = sc::for_device(self.store.db(), id, device).await? else {
            return Ok(AckApplied::Unknown);
        };
        let outcome = match cmd::outcome_of_ack(command.status, result) {
            Ok(o) => o,
            Err(_) => return Ok(AckApplied::Late(command.status)),
        };
        match self.finish(id, &outcome, &format!("device {serial}")).await? {
            Some(done) => Ok(AckApplied::Applied(Box::new(done))),
            // Finished in between (expired, or an answer delivered twice).
            None => Ok(AckApplied::Late(
                sc::for_device(self.store.db(), id, device).await?.map_or(command.status, |c| c.status),
            )),
        }
    }

    /// Expires open commands past their expiry; how many expired.
    pub async fn expire_due(&self) -> AppResult<usize> {
        let now = self.clock.now();
        // A read first: most ticks find nothing, and must not take SQLite's write lock.
        if !sc::any_due(self.store.db(), now).await? {
            return Ok(0);
        }
        let tx = self.store.begin().await?;
        let expired = sc::expire_due(&tx, now).await?;
        for c in &expired {
            self.record_finish(&tx, c, "sparkwatch").await?;
        }
        tx.commit().await?;
        let n = expired.len();
        if n > 0 {
            tracing::info!(count = n, "commands expired without a result");
            self.publish(expired);
        }
        Ok(n)
    }

    /// Queued Modbus commands that may still be sent.
    pub async fn queued_modbus(&self) -> AppResult<Vec<Command>> {
        Ok(sc::queued_modbus(self.store.db(), self.clock.now()).await?)
    }
}

impl Services {
    /// The command ledger (ingestion, the Modbus poller and jobs use it).
    pub fn commands(&self) -> &Ledger {
        &self.inner.commands
    }

    /// Sends a command to a visible detector. Needs `device.control` (checked by the guard)
    /// and, for set-points, `threshold.manage`; trip, close and set-points need the caller's
    /// password or a step-up token; one command per detector per 30 s.
    pub async fn send_command(&self, who: &Principal, input: SendCommand) -> AppResult<Command> {
        let tenant = who.tenant()?;
        who.require(Permission::DeviceControl)?;
        if input.op == CommandOp::SetThresholds {
            who.require(Permission::ThresholdManage)?;
        }
        let detector = self.detector(who, input.detector_id).await?;
        let device = self.device(who, detector.draft.device_id).await?;
        let params = parse_params(input.op, input.params.as_ref())?;
        let reason = optional_text("reason", input.reason.as_deref(), MAX_REASON)?;
        if cmd::needs_reauthentication(input.op) {
            self.reauthenticate(who, input.op, input.password.as_deref(), input.step_up_token.as_deref()).await?;
        }
        // Counted once the command is otherwise acceptable, so refusals do not use it up.
        self.inner.command_limiter.check(&who.actor)?;
        let now = self.now();
        let tx = self.begin().await?;
        sc::lock_detector(&tx, detector.id).await?;
        let (actor_user, actor_api_key) = match who.actor {
            Actor::User(u) => (Some(u), None),
            Actor::ApiKey(k) => (None, Some(k)),
            Actor::System => (None, None),
        };
        let command = Command {
            id: CommandId::from_uuid(new_id()),
            tenant_id: tenant,
            project_id: detector.project_id,
            device_id: device.id,
            detector_id: detector.id,
            op: input.op,
            params: params.as_ref().map(params_json),
            status: CommandStatus::Queued,
            reason,
            actor: who.label.clone(),
            transport: device.draft.transport,
            created_at: now,
            sent_at: None,
            finished_at: None,
            expires_at: cmd::expires_at(now),
            result: None,
        };
        sc::insert(&tx, &command, actor_user, actor_api_key).await?;
        // Written first, checked after: on SQLite the insert takes the write lock (and a
        // transaction that starts with a write never fails to upgrade a read lock); with the
        // detector locked on PostgreSQL, two commands to one detector never both pass.
        let previous = sc::last_created_before(&tx, detector.id, command.id).await?;
        if let Some(retry_after_s) = cmd::cooldown_left(previous, now) {
            return Err(AppError::RateLimited { retry_after_s });
        }
        let remarks = match &command.reason {
            Some(r) => format!("{} by {}: {r}", command.op.code(), who.label),
            None => format!("{} by {}", command.op.code(), who.label),
        };
        let event = tel::insert_event(
            &tx,
            &NewEvent {
                tenant,
                project: detector.project_id,
                device: device.id,
                detector: Some(detector.id),
                episode: None,
                kind: EventKind::Command.code(),
                category: EventCategory::Operation.code(),
                source: EventSource::System,
                channel: Channel::DETECTOR.code(),
                at: now,
                received_at: now,
                value: None,
                setpoint: None,
                remarks: Some(remarks),
            },
        )
        .await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "command.send", "command", Some(command.id.to_string())).after(snapshot(&command)),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(command = %command.id, op = command.op.code(), detector = %detector.id, actor = %who.label, "command accepted");
        let mut published: Vec<Envelope> = crate::store::hazards::events_by_ids(self.inner.store.db(), &[event.id])
            .await?
            .into_iter()
            .map(|(tenant, v)| Envelope { tenant, feed: Feed::Tenant(tenant), message: BusMessage::Event(Box::new(v)) })
            .collect();
        published.push(Envelope {
            tenant,
            feed: Feed::Tenant(tenant),
            message: BusMessage::Command(Box::new(command.clone())),
        });
        self.inner.bus.publish(published);
        self.inner.commands.dispatch(command, &device.draft.serial, detector.draft.address).await
    }

    /// Re-authenticates the caller for an operation that needs it: a step-up token, when
    /// given, decides; otherwise the password (see [`Services::check_password`]).
    async fn reauthenticate(
        &self,
        who: &Principal,
        op: CommandOp,
        given: Option<&str>,
        step_up: Option<&str>,
    ) -> AppResult<()> {
        let user = match who.actor {
            Actor::User(u) => u,
            // A key is a credential kept by a machine: it may send control commands only when
            // it was issued for them, and never re-authenticates.
            Actor::ApiKey(id) => {
                let key = crate::store::access::key(self.inner.store.db(), who.tenant()?, id).await?;
                if key.is_some_and(|k| k.control_commands) {
                    return Ok(());
                }
                return Err(AppError::Forbidden(format!(
                    "{} is a control command: this API key was not issued for control commands \
                     (controlCommands), and API keys cannot re-authenticate",
                    op.code()
                )));
            }
            // The CLI and tests act as the system, which has nobody to re-authenticate.
            Actor::System => return Ok(()),
        };
        self.check_reauthentication(who, user, op.code(), given, step_up).await
    }

    /// A command the caller may see (`NOT_FOUND` otherwise).
    pub async fn command(&self, who: &Principal, id: CommandId) -> AppResult<Command> {
        sc::get(self.inner.store.db(), who.tenant()?, &who.access.scope, id).await?.ok_or(AppError::NotFound("command"))
    }

    /// A visible detector's commands, newest first.
    pub async fn detector_commands(
        &self,
        who: &Principal,
        detector: DetectorId,
        req: PageRequest,
    ) -> AppResult<Page<Command>> {
        let d = self.detector(who, detector).await?;
        Ok(sc::of_detector(self.inner.store.db(), d.tenant_id, d.id, req).await?)
    }
}

/// Remote commands per caller per minute (`governor`'s keyed GCRA limiter): one request, or
/// one script, must not be able to trip every breaker of a tenant one detector at a time.
/// Keys are the callers that sent commands recently; idle ones are evicted as the map grows.
pub(crate) struct CommandLimiter {
    limiter: governor::DefaultKeyedRateLimiter<Actor>,
}

/// Callers kept before idle ones are evicted.
const COMMAND_LIMITER_KEYS: usize = 10_000;

impl CommandLimiter {
    pub(crate) fn new(per_minute: std::num::NonZeroU32) -> Self {
        CommandLimiter { limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)) }
    }

    /// Counts a command by `actor`; `RATE_LIMITED` with the wait when the minute's are used.
    pub(crate) fn check(&self, actor: &Actor) -> AppResult<()> {
        // The server and the CLI act as the system: nothing to limit.
        if *actor == Actor::System {
            return Ok(());
        }
        if self.limiter.len() > COMMAND_LIMITER_KEYS {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(actor).map_err(|not_until| {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            AppError::RateLimited { retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }
}

/// Expires commands nobody answered, every `tick` until `stop`; safe on every instance
/// (each command expires once).
pub async fn run_expiry(services: Services, tick: std::time::Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = services.commands().expire_due().await {
            tracing::warn!(error = %e, "expiring commands failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
    }
}
