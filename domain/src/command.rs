//! Remote commands (遥控): the lifecycle, who must re-authenticate, the per-detector
//! cool-down, expiry, the API's `params` of set-threshold commands and what a command's
//! outcome records.
//!
//! The wire formats live with their transport: [`crate::payload`] encodes the MQTT command
//! (`encode_command`) and decodes the device's result (`decode_command_result`);
//! [`crate::modbus`] maps an operation to its coil (`coil_for`) and set-points to holding
//! registers with the read-back comparison (`encode_thresholds`, `thresholds_match`).
//!
//! Layout:
//! - [`CommandStatus`] and [`transition`] — `QUEUED → SENT → ACKNOWLEDGED | FAILED | EXPIRED`.
//! - [`needs_reauthentication`], [`cooldown_left`], [`expires_at`] — the rules of sending.
//! - [`parse_params`] — the API's `params` JSON → [`SetThresholds`], errors named `params.<field>`.
//! - [`CommandOutcome`] — what the `result` of a finished command says; [`outcome_of_ack`].

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::modbus::ThresholdMismatch;
pub use crate::payload::{CommandOp, CommandResult, SetThresholds};
use crate::thresholds::ThresholdOverrides;
use crate::validate::ValidationError;

/// Where a command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    /// Recorded, not yet handed to the device's transport.
    Queued,
    /// Handed to the broker (MQTT) or being written (Modbus); waiting for the result.
    Sent,
    /// The device carried it out (MQTT `ok: true`, or a successful Modbus write and read-back).
    Acknowledged,
    /// The device refused it, the transport failed, or set-points read back differently.
    Failed,
    /// No result before its expiry; a result arriving later is ignored.
    Expired,
}

impl CommandStatus {
    /// Every status in lifecycle order.
    pub const ALL: [CommandStatus; 5] = [
        CommandStatus::Queued,
        CommandStatus::Sent,
        CommandStatus::Acknowledged,
        CommandStatus::Failed,
        CommandStatus::Expired,
    ];

    /// The stored code (`QUEUED`, …).
    pub const fn code(self) -> &'static str {
        match self {
            CommandStatus::Queued => "QUEUED",
            CommandStatus::Sent => "SENT",
            CommandStatus::Acknowledged => "ACKNOWLEDGED",
            CommandStatus::Failed => "FAILED",
            CommandStatus::Expired => "EXPIRED",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether the command is finished; a finished command never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(self, CommandStatus::Acknowledged | CommandStatus::Failed | CommandStatus::Expired)
    }

    /// The statuses from which a command may move to `self`.
    pub fn reachable_from(self) -> &'static [CommandStatus] {
        use CommandStatus::*;
        match self {
            Queued => &[],
            Sent => &[Queued],
            // A device may answer before SENT is recorded (the publish and the answer race),
            // and a transport may fail before anything was sent: both skip SENT.
            Acknowledged | Failed | Expired => &[Queued, Sent],
        }
    }
}

/// A status change that the lifecycle does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {} command cannot become {}", .from.code(), .to.code())]
pub struct TransitionError {
    /// The current status.
    pub from: CommandStatus,
    /// The status asked for.
    pub to: CommandStatus,
}

/// Checks a status change: only forward along `QUEUED → SENT → ACKNOWLEDGED | FAILED |
/// EXPIRED`; finished commands stay finished (a late result after expiry changes nothing).
pub fn transition(from: CommandStatus, to: CommandStatus) -> Result<CommandStatus, TransitionError> {
    if to.reachable_from().contains(&from) { Ok(to) } else { Err(TransitionError { from, to }) }
}

/// Control operations: they change what the installation does — open or close a circuit
/// (DOMAIN.md), clear latched alarms (RESET: the alarm indication must stay until an
/// authorised person resets it, GB 14287), quiet the sounder (SILENCE), or change set-points
/// (reserved to authorised people with a password). Only SELF_TEST, a diagnostic that
/// changes nothing, is not one.
///
/// A person sending one needs a fresh password (or step-up token) on top of
/// `device.control`; an API key needs the `controlCommands` scope, given when it was issued.
pub const fn needs_reauthentication(op: CommandOp) -> bool {
    !matches!(op, CommandOp::SelfTest)
}

/// Commands one caller (a person or an API key) may send per minute by default, across all
/// detectors: one request must not be able to trip every breaker of a tenant in turn.
pub const COMMANDS_PER_MINUTE: u32 = 10;

/// Time between two commands to the same detector, so that a relay is not switched back and
/// forth faster than a person can check what happened.
pub const COOLDOWN: Duration = Duration::seconds(30);

/// Whole seconds until another command may be sent to a detector whose last command was
/// created at `last`; `None` when one may be sent now.
pub fn cooldown_left(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<u64> {
    let left = last? + COOLDOWN - now;
    let ms = left.num_milliseconds();
    // Rounded up: "retry after 0 s" while still refused would be a lie.
    (ms > 0).then(|| (ms as u64).div_ceil(1000))
}

/// How long a device has to answer. A minute covers a 4G module that is reconnecting, yet is
/// short enough that nobody trips a circuit hours after asking for it (devices ignore
/// commands past `expires`).
pub const EXPIRY: Duration = Duration::seconds(60);

/// When a command created at `created_at` expires.
pub fn expires_at(created_at: DateTime<Utc>) -> DateTime<Utc> {
    created_at + EXPIRY
}

/// Reads the API's `params` of an operation. Only `SET_THRESHOLDS` takes params: an object
/// with any of `leakMa`, `leakDelayS`, `tempC`, `overvoltageV`, `undervoltageV`,
/// `overcurrentA` (numbers, the ranges of [`SetThresholds::validate`]). Errors name the field
/// as `params.leakMa` (or `params` for the object itself).
pub fn parse_params(op: CommandOp, params: Option<&Value>) -> Result<Option<SetThresholds>, ValidationError> {
    let params = params.filter(|p| !p.is_null());
    let map = match (op, params) {
        (CommandOp::SetThresholds, None) => {
            return Err(ValidationError::new("params", "SET_THRESHOLDS needs at least one set-point"));
        }
        (CommandOp::SetThresholds, Some(Value::Object(map))) => map,
        (CommandOp::SetThresholds, Some(_)) => {
            return Err(ValidationError::new("params", "must be an object of set-points"));
        }
        (_, None) => return Ok(None),
        (_, Some(_)) => return Err(ValidationError::new("params", "only SET_THRESHOLDS takes params")),
    };
    // The API's names (camelCase, like `UpdateDetectorThresholdsInput`) in register order.
    let names = SetThresholds::default().fields().map(|(name, ..)| name);
    let mut values: [Option<f64>; 6] = [None; 6];
    for (key, value) in map {
        let Some(slot) = names.iter().position(|n| n == key) else {
            let known = names.join(", ");
            return Err(ValidationError::new(format!("params.{key}"), format!("is not a set-point; use {known}")));
        };
        match value {
            Value::Number(n) => values[slot] = n.as_f64(),
            Value::Null => {}
            _ => return Err(ValidationError::new(format!("params.{key}"), "must be a number")),
        }
    }
    let [leak_ma, leak_delay_s, temp_c, overvoltage_v, undervoltage_v, overcurrent_a] = values;
    let set = SetThresholds { leak_ma, leak_delay_s, temp_c, overvoltage_v, undervoltage_v, overcurrent_a };
    set.validate().map_err(|e| {
        let field = if e.field == "params" { e.field } else { format!("params.{}", e.field) };
        ValidationError { field, reason: e.reason }
    })?;
    Ok(Some(set))
}

/// The `params` JSON of validated set-points, as the API names them (`{"leakMa": 300, …}`);
/// [`parse_params`] reads it back.
pub fn params_json(set: &SetThresholds) -> Value {
    set.fields().into_iter().filter_map(|(name, value, ..)| Some((name.to_owned(), Value::from(value?)))).collect()
}

/// A detector's own threshold overrides after a set-threshold command succeeded: the values
/// written replace the detector's own, the rest stay.
pub fn thresholds_after(written: &SetThresholds, own: &ThresholdOverrides) -> ThresholdOverrides {
    ThresholdOverrides {
        leak_ma: written.leak_ma.or(own.leak_ma),
        leak_delay_s: written.leak_delay_s.or(own.leak_delay_s),
        temp_c: written.temp_c.or(own.temp_c),
        overvoltage_v: written.overvoltage_v.or(own.overvoltage_v),
        undervoltage_v: written.undervoltage_v.or(own.undervoltage_v),
        overcurrent_a: written.overcurrent_a.or(own.overcurrent_a),
        ..*own
    }
}

/// Why a command finished the way it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeSource {
    /// The device's own answer (MQTT result, or the Modbus write response).
    Device,
    /// The gateway answered with a Modbus exception (`code` is the exception code).
    ModbusException,
    /// No answer in time, or the connection failed.
    Transport,
    /// Set-points read back differently from what was written.
    ReadBack,
    /// No device answer before the command expired.
    Expired,
}

/// One set-point register that read back differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBackMismatch {
    /// Holding register (100–105).
    pub register: u16,
    /// The `params` field it holds (`leakMa`, …).
    pub field: Option<String>,
    /// The register value written.
    pub written: u16,
    /// The value read back, if the register was read.
    pub read: Option<u16>,
}

impl From<&ThresholdMismatch> for ReadBackMismatch {
    fn from(m: &ThresholdMismatch) -> Self {
        ReadBackMismatch { register: m.register, field: m.field.map(str::to_owned), written: m.written, read: m.read }
    }
}

/// What a finished command's `result` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// Whether the operation was carried out.
    pub ok: bool,
    /// Who decided.
    pub source: OutcomeSource,
    /// The device's result code, or the Modbus exception code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// A message for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Set-point registers that read back differently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<ReadBackMismatch>,
}

impl CommandOutcome {
    /// The status a command with this outcome ends in.
    pub fn status(&self) -> CommandStatus {
        match (self.ok, self.source) {
            (_, OutcomeSource::Expired) => CommandStatus::Expired,
            (true, _) => CommandStatus::Acknowledged,
            (false, _) => CommandStatus::Failed,
        }
    }

    /// A failure of the transport (timeout, connection, no broker).
    pub fn transport_failure(msg: impl Into<String>) -> Self {
        CommandOutcome {
            ok: false,
            source: OutcomeSource::Transport,
            code: None,
            msg: Some(msg.into()),
            mismatches: vec![],
        }
    }

    /// No answer before expiry.
    pub fn expired() -> Self {
        CommandOutcome {
            ok: false,
            source: OutcomeSource::Expired,
            code: None,
            msg: Some("no result from the device before the command expired".into()),
            mismatches: vec![],
        }
    }

    /// The JSON stored and shown as the command's `result`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The outcome a device's result gives a command that is currently `status`; an error when
/// the command is already finished (the result is then ignored).
pub fn outcome_of_ack(status: CommandStatus, result: &CommandResult) -> Result<CommandOutcome, TransitionError> {
    let outcome = CommandOutcome {
        ok: result.ok,
        source: OutcomeSource::Device,
        code: Some(result.code),
        msg: result.msg.clone(),
        mismatches: vec![],
    };
    transition(status, outcome.status())?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_763_892_930 + s, 0).unwrap()
    }

    #[test]
    fn lifecycle_moves_forward_only() {
        use CommandStatus::*;
        let allowed = [
            (Queued, Sent),
            (Queued, Acknowledged),
            (Queued, Failed),
            (Queued, Expired),
            (Sent, Acknowledged),
            (Sent, Failed),
            (Sent, Expired),
        ];
        for from in CommandStatus::ALL {
            for to in CommandStatus::ALL {
                assert_eq!(transition(from, to).is_ok(), allowed.contains(&(from, to)), "{from:?} → {to:?}");
            }
        }
        for s in [Acknowledged, Failed, Expired] {
            assert!(s.is_terminal());
        }
        assert!(!Queued.is_terminal() && !Sent.is_terminal());
        assert_eq!(
            transition(Expired, Acknowledged).unwrap_err().to_string(),
            "a EXPIRED command cannot become ACKNOWLEDGED"
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for s in CommandStatus::ALL {
            assert_eq!(CommandStatus::from_code(s.code()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.code()));
        }
        assert_eq!(CommandStatus::from_code("queued"), None);
    }

    #[test]
    fn late_acks_do_not_resurrect() {
        let ok = CommandResult { id: uuid::Uuid::nil(), ok: true, code: 0, msg: Some("done".into()) };
        let refused = CommandResult { ok: false, code: 7, msg: None, ..ok.clone() };
        assert_eq!(outcome_of_ack(CommandStatus::Sent, &ok).map(|o| o.status()), Ok(CommandStatus::Acknowledged));
        assert_eq!(outcome_of_ack(CommandStatus::Queued, &ok).map(|o| o.status()), Ok(CommandStatus::Acknowledged));
        let failed = outcome_of_ack(CommandStatus::Sent, &refused).unwrap();
        assert_eq!(
            (failed.status(), failed.code, failed.source),
            (CommandStatus::Failed, Some(7), OutcomeSource::Device)
        );
        for done in [CommandStatus::Expired, CommandStatus::Failed, CommandStatus::Acknowledged] {
            assert!(outcome_of_ack(done, &ok).is_err(), "{done:?}");
        }
    }

    #[test]
    fn reauthentication_for_every_control_operation() {
        let free: Vec<_> = CommandOp::ALL.into_iter().filter(|op| !needs_reauthentication(*op)).collect();
        assert_eq!(free, vec![CommandOp::SelfTest]);
    }

    #[test]
    fn cooldown_is_thirty_seconds_rounded_up() {
        assert_eq!(cooldown_left(None, at(0)), None);
        assert_eq!(cooldown_left(Some(at(0)), at(0)), Some(30));
        assert_eq!(cooldown_left(Some(at(0)), at(29)), Some(1));
        assert_eq!(cooldown_left(Some(at(0)), at(0) + Duration::milliseconds(29_001)), Some(1));
        assert_eq!(cooldown_left(Some(at(0)), at(30)), None);
        assert_eq!(cooldown_left(Some(at(0)), at(100)), None);
        assert_eq!(expires_at(at(0)), at(60));
    }

    #[test]
    fn params_only_for_set_thresholds() {
        for op in CommandOp::ALL.into_iter().filter(|op| *op != CommandOp::SetThresholds) {
            assert_eq!(parse_params(op, None), Ok(None));
            assert_eq!(parse_params(op, Some(&Value::Null)), Ok(None));
            assert_eq!(parse_params(op, Some(&json!({}))).unwrap_err().field, "params");
        }
        let p = parse_params(CommandOp::SetThresholds, Some(&json!({"leakMa": 300, "leakDelayS": 5.5, "tempC": null})));
        let set = SetThresholds { leak_ma: Some(300.0), leak_delay_s: Some(5.5), ..Default::default() };
        assert_eq!(p, Ok(Some(set)));
        assert_eq!(params_json(&set), json!({"leakMa": 300.0, "leakDelayS": 5.5}));
        assert_eq!(parse_params(CommandOp::SetThresholds, Some(&params_json(&set))), Ok(Some(set)));
    }

    #[test]
    fn bad_params_name_their_field() {
        let cases = [
            (json!(null), "params"),
            (json!([1]), "params"),
            (json!({}), "params"),
            (json!({"leakMa": 10}), "params.leakMa"),
            (json!({"leakMa": "300"}), "params.leakMa"),
            (json!({"leak_ma": 300}), "params.leak_ma"),
            (json!({"tempC": 141}), "params.tempC"),
            (json!({"tempC": 54}), "params.tempC"),
            (json!({"leakDelayS": 61}), "params.leakDelayS"),
            (json!({"leakDelayS": 0.05}), "params.leakDelayS"),
            (json!({"overvoltageV": 240, "undervoltageV": 250}), "params.undervoltageV"),
            (json!({"overcurrentA": 0.001}), "params.overcurrentA"),
        ];
        for (params, field) in cases {
            let err = parse_params(CommandOp::SetThresholds, Some(&params)).unwrap_err();
            assert_eq!(err.field, field, "{params}");
        }
    }

    #[test]
    fn written_setpoints_replace_the_detectors_own() {
        let own = ThresholdOverrides {
            leak_ma: Some(400.0),
            temp_c: Some(70.0),
            temp_delay_s: Some(3.0),
            ..Default::default()
        };
        let written = SetThresholds { leak_ma: Some(300.0), overcurrent_a: Some(40.0), ..Default::default() };
        let after = thresholds_after(&written, &own);
        assert_eq!(
            after,
            ThresholdOverrides {
                leak_ma: Some(300.0),
                temp_c: Some(70.0),
                temp_delay_s: Some(3.0),
                overcurrent_a: Some(40.0),
                ..Default::default()
            }
        );
    }

    #[test]
    fn outcomes_serialise_compactly() {
        let o = CommandOutcome {
            ok: false,
            source: OutcomeSource::ReadBack,
            code: None,
            msg: Some("differs".into()),
            mismatches: vec![ReadBackMismatch {
                register: 102,
                field: Some("tempC".into()),
                written: 90,
                read: Some(85),
            }],
        };
        assert_eq!(
            o.to_json(),
            json!({"ok": false, "source": "read_back", "msg": "differs",
                   "mismatches": [{"register": 102, "field": "tempC", "written": 90, "read": 85}]})
        );
        assert_eq!(o.status(), CommandStatus::Failed);
        assert_eq!(CommandOutcome::expired().status(), CommandStatus::Expired);
        assert_eq!(CommandOutcome::transport_failure("x").status(), CommandStatus::Failed);
    }
}
