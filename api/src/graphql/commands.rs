//! Remote commands (遥控) in the API: `sendCommand`, `reauthenticate` (the step-up token
//! that stands in for the password), `command(id)`, a detector's `commands` list and the
//! `Command` type. The live feed is `commandChanged` in [`super::subscription`].

use async_graphql::{Context, Enum, ID, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::command::{CommandOp, CommandStatus};
use sparkwatch_domain::ids::DetectorId;

use super::Result;
use super::guard::{Require, SignedIn, caller};
use super::input::parse_id;
use super::object::{Conn, DetectorObj, TransportGql, connection};
use crate::error::AppError;
use crate::service::auth::StepUp;
use crate::service::commands::SendCommand;
use crate::service::page_request;
use crate::store::commands::Command;

/// A remote operation on a detector.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "CommandOp", remote = "CommandOp")]
pub enum CommandOpGql {
    /// Open the detector's relay (分闸); needs the caller's password.
    Trip,
    /// Close the relay (合闸); needs the caller's password.
    Close,
    /// Reset latched alarms (复位).
    Reset,
    /// Run the detector's self-test (自检).
    SelfTest,
    /// Silence the sounder (消音); the alarm stays.
    Silence,
    /// Write alarm set-points (设定参数); needs `threshold.manage` and the caller's password.
    SetThresholds,
}

/// Where a command stands: `QUEUED → SENT → ACKNOWLEDGED | FAILED | EXPIRED`.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "CommandStatus", remote = "CommandStatus")]
pub enum CommandStatusGql {
    /// Recorded, not yet handed to the device's transport.
    Queued,
    /// Handed to the broker (MQTT) or being written to the gateway (Modbus).
    Sent,
    /// The device carried it out (for set-points: written and read back).
    Acknowledged,
    /// Refused by the device, a transport failure, or set-points that read back differently.
    Failed,
    /// No result before `expiresAt`; a later result is ignored.
    Expired,
}

/// A remote command and its outcome.
pub struct CommandObj(pub Command);

#[Object(name = "Command")]
impl CommandObj {
    /// Id; the device echoes it in its result.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The operation.
    async fn op(&self) -> CommandOpGql {
        self.0.op.into()
    }
    /// Where it stands.
    async fn status(&self) -> CommandStatusGql {
        self.0.status.into()
    }
    /// Set-points of a `SET_THRESHOLDS` command (`{"leakMa": 300, …}`).
    async fn params(&self) -> Option<Json<serde_json::Value>> {
        self.0.params.clone().map(Json)
    }
    /// The outcome once finished: `ok`, `source` (`device`, `modbus_exception`, `transport`,
    /// `read_back`, `expired`), the device's or the Modbus exception's `code`, `msg`, and for
    /// set-points that read back differently `mismatches` (`register`, `field`, `written`, `read`).
    async fn result(&self) -> Option<Json<serde_json::Value>> {
        self.0.result.clone().map(Json)
    }
    /// Why it was sent.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Who sent it (e-mail, phone or API key name).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// How it travels.
    async fn transport(&self) -> TransportGql {
        self.0.transport.into()
    }
    /// The detector's id.
    async fn detector_id(&self) -> ID {
        ID(self.0.detector_id.to_string())
    }
    /// The detector; `null` when the caller can no longer see it.
    async fn detector(&self, ctx: &Context<'_>) -> Result<Option<DetectorObj>> {
        let (s, who) = caller(ctx)?;
        match s.detector(who, self.0.detector_id).await {
            Ok(d) => Ok(Some(DetectorObj(d))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    /// When it was accepted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was handed to the broker or the gateway.
    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent_at
    }
    /// When it finished.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// The device must answer by then; devices ignore it afterwards.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
}

/// A command to send.
#[derive(InputObject)]
pub struct SendCommandInput {
    /// The detector.
    pub detector_id: ID,
    /// The operation.
    pub op: CommandOpGql,
    /// `SET_THRESHOLDS` only: any of `leakMa` (20–1000), `leakDelayS` (0–60, steps of 0.1),
    /// `tempC` (55–140), `overvoltageV`, `undervoltageV`, `overcurrentA`; errors name the field
    /// as `params.leakMa`.
    pub params: Option<Json<serde_json::Value>>,
    /// The caller's password: required for `TRIP`, `CLOSE` and `SET_THRESHOLDS` unless a
    /// `stepUpToken` is given.
    pub password: Option<String>,
    /// A token from `reauthenticate` (same user, same sign-in, at most 5 minutes old),
    /// instead of the password; when given, it decides.
    pub step_up_token: Option<String>,
    /// Why (kept in the operation log).
    pub reason: Option<String>,
}

/// A short-lived proof of a recent password check (`reauthenticate`).
pub struct StepUpTokenObj(pub StepUp);

#[Object(name = "StepUpToken")]
impl StepUpTokenObj {
    /// Send it as `SendCommandInput.stepUpToken`.
    async fn token(&self) -> &str {
        &self.0.token
    }
    /// When it stops being accepted (5 minutes after it was issued).
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
}

/// Read operations on commands.
#[derive(Default)]
pub struct CommandQuery;

#[Object]
impl CommandQuery {
    /// One command on a detector the caller can see; `null` otherwise.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn command(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CommandObj>> {
        let (s, who) = caller(ctx)?;
        match s.command(who, parse_id("id", &id)?).await {
            Ok(c) => Ok(Some(CommandObj(c))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A visible detector's commands, newest first.
    #[graphql(
        guard = "Require(Permission::SiteRead)",
        complexity = "first.unwrap_or(50).max(0) as usize * child_complexity"
    )]
    async fn commands(
        &self,
        ctx: &Context<'_>,
        detector_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Conn<CommandObj>> {
        detector_commands(ctx, parse_id("detectorId", &detector_id)?, first, after).await
    }
}

/// A page of a visible detector's commands, newest first (`commands` and `Detector.commands`).
pub(super) async fn detector_commands(
    ctx: &Context<'_>,
    detector: DetectorId,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Conn<CommandObj>> {
    let (s, who) = caller(ctx)?;
    let page = s.detector_commands(who, detector, page_request(first, after.as_deref())?).await?;
    Ok(connection(page, |c| c.id.to_string(), CommandObj))
}

/// Write operations on commands.
#[derive(Default)]
pub struct CommandMutation;

#[Object]
impl CommandMutation {
    /// Sends a remote command to a detector (`device.control`; set-points also need
    /// `threshold.manage`). `TRIP`, `CLOSE` and `SET_THRESHOLDS` need the caller's `password`
    /// (`FORBIDDEN` with `extensions.field = "password"` when missing or wrong; API keys cannot
    /// send them); a `stepUpToken` from `reauthenticate` may stand in for the password
    /// (`FORBIDDEN` with `extensions.field = "stepUpToken"` when it is expired, malformed or
    /// another sign-in's). One command per detector per 30 s (`RATE_LIMITED` with `retryAfter`).
    /// Returns the command as it stands after dispatch; follow it with `commandChanged`.
    #[graphql(guard = "Require(Permission::DeviceControl)")]
    async fn send_command(&self, ctx: &Context<'_>, input: SendCommandInput) -> Result<CommandObj> {
        let (s, who) = caller(ctx)?;
        let send = SendCommand {
            detector_id: parse_id("detectorId", &input.detector_id)?,
            op: input.op.into(),
            params: input.params.map(|p| p.0),
            password: input.password,
            step_up_token: input.step_up_token,
            reason: input.reason,
        };
        Ok(CommandObj(s.send_command(who, send).await?))
    }

    /// Checks the caller's password again and returns a step-up token, valid 5 minutes for
    /// this user and sign-in, that `sendCommand` accepts instead of the password for `TRIP`,
    /// `CLOSE` and `SET_THRESHOLDS` — so the app can keep the password behind the phone's
    /// biometric prompt. A wrong password is `FORBIDDEN` with `extensions.field = "password"`
    /// (failures are rate-limited like sign-ins); API keys cannot re-authenticate.
    #[graphql(guard = "SignedIn")]
    async fn reauthenticate(&self, ctx: &Context<'_>, password: String) -> Result<StepUpTokenObj> {
        let (s, who) = caller(ctx)?;
        Ok(StepUpTokenObj(s.step_up(who, &password).await?))
    }
}
