//! Commands from the server to a device: operations, thresholds, and their encoding.

use super::*;

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A remote operation on a detector, with its wire name (`op`) and Modbus coil
/// ([`crate::modbus::coil_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOp {
    /// Open the detector's relay (分闸).
    Trip,
    /// Close the relay (合闸).
    Close,
    /// Reset latched alarms (复位).
    Reset,
    /// Run the detector's self-test (自检).
    SelfTest,
    /// Silence the sounder (消音); the alarm stays.
    Silence,
    /// Write alarm set-points (设定参数); the only op with params.
    SetThresholds,
}

impl CommandOp {
    /// Every op in contract order.
    pub const ALL: [CommandOp; 6] = [
        CommandOp::Trip,
        CommandOp::Close,
        CommandOp::Reset,
        CommandOp::SelfTest,
        CommandOp::Silence,
        CommandOp::SetThresholds,
    ];

    /// The wire name (`self_test`).
    pub const fn code(self) -> &'static str {
        match self {
            CommandOp::Trip => "trip",
            CommandOp::Close => "close",
            CommandOp::Reset => "reset",
            CommandOp::SelfTest => "self_test",
            CommandOp::Silence => "silence",
            CommandOp::SetThresholds => "set_thresholds",
        }
    }

    /// Parses a wire name.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.code() == code)
    }
}

/// The set-points a `set_thresholds` command writes; `None` leaves the device's value alone.
/// Values must be whole multiples of the device's resolution (the Modbus register units:
/// 1 mA, 0.1 s, 1 °C, 0.1 V, 0.1 V, 0.01 A) so that what is sent is exactly what is stored
/// and the read-back comparison can be exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetThresholds {
    /// Residual-current alarm set-point, mA (20–1000, whole mA).
    pub leak_ma: Option<f64>,
    /// Residual-current alarm delay, s (0–60, steps of 0.1 s).
    pub leak_delay_s: Option<f64>,
    /// Temperature alarm set-point, °C (55–140, whole °C).
    pub temp_c: Option<f64>,
    /// Over-voltage set-point, V (100–1000, steps of 0.1 V).
    pub overvoltage_v: Option<f64>,
    /// Under-voltage set-point, V (50–400, below the over-voltage set-point, steps of 0.1 V).
    pub undervoltage_v: Option<f64>,
    /// Over-current set-point, A (0.1–10000, steps of 0.01 A).
    pub overcurrent_a: Option<f64>,
}

impl SetThresholds {
    /// Field name (as the API spells it), value, resolution and unit of every set-point, in
    /// holding-register order (100–105).
    pub(crate) fn fields(&self) -> [(&'static str, Option<f64>, f64, &'static str); 6] {
        [
            ("leakMa", self.leak_ma, 1.0, "mA"),
            ("leakDelayS", self.leak_delay_s, 0.1, "s"),
            ("tempC", self.temp_c, 1.0, "°C"),
            ("overvoltageV", self.overvoltage_v, 0.1, "V"),
            ("undervoltageV", self.undervoltage_v, 0.1, "V"),
            ("overcurrentA", self.overcurrent_a, 0.01, "A"),
        ]
    }

    /// Checks that at least one set-point is given, each is within the ranges the API accepts
    /// for thresholds (GB 14287: 20–1000 mA, 55–140 °C, delay 0–60 s; see
    /// [`ThresholdOverrides::validate`]) and a whole multiple of the device's resolution.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.fields().iter().all(|(_, v, _, _)| v.is_none()) {
            return Err(ValidationError::new("params", "must set at least one threshold"));
        }
        // One source for the ranges and the under < over rule: the API's threshold validation.
        ThresholdOverrides {
            leak_ma: self.leak_ma,
            leak_delay_s: self.leak_delay_s,
            temp_c: self.temp_c,
            overvoltage_v: self.overvoltage_v,
            undervoltage_v: self.undervoltage_v,
            overcurrent_a: self.overcurrent_a,
            ..ThresholdOverrides::default()
        }
        .validate()?;
        for (name, value, step, unit) in self.fields() {
            if let Some(v) = value {
                let steps = v / step;
                if (steps - steps.round()).abs() > 1e-6 {
                    return Err(ValidationError::new(name, format!("must be a whole multiple of {step} {unit}")));
                }
            }
        }
        Ok(())
    }
}

/// A command for one detector of a device, published on [`command_topic`].
#[derive(Clone, Debug, PartialEq)]
pub struct CommandMessage {
    /// The command's id; the device echoes it in its [`CommandResult`].
    pub id: Uuid,
    /// The detector's bus address (1–247).
    pub addr: u8,
    /// The operation.
    pub op: CommandOp,
    /// Set-points, for [`CommandOp::SetThresholds`] only.
    pub params: Option<SetThresholds>,
    /// The device ignores the command after this time.
    pub expires: DateTime<Utc>,
}

/// Encodes a command as the contract's JSON:
/// `{"id": "…", "addr": 1, "op": "set_thresholds", "params": {"leak_ma": 300, …}, "expires": <ms>}`.
/// `params` appears only for `set_thresholds` and holds only the set-points given; `leak_ma`
/// and `temp_c` are written as integers (as in the contract's example), the others as numbers.
/// Errors name the field: `address`, `params`, or a set-point (`leakMa`, …).
pub fn encode_command(command: &CommandMessage) -> Result<Vec<u8>, ValidationError> {
    detector_address("address", i64::from(command.addr))?;
    let mut map = Map::new();
    map.insert("id".to_owned(), Value::from(command.id.hyphenated().to_string()));
    map.insert("addr".to_owned(), Value::from(command.addr));
    map.insert("op".to_owned(), Value::from(command.op.code()));
    match (command.op, &command.params) {
        (CommandOp::SetThresholds, Some(params)) => {
            params.validate()?;
            map.insert("params".to_owned(), Value::Object(params_json(params)));
        }
        (CommandOp::SetThresholds, None) => {
            return Err(ValidationError::new("params", "set_thresholds needs at least one threshold"));
        }
        (_, Some(_)) => return Err(ValidationError::new("params", "only set_thresholds carries params")),
        (_, None) => {}
    }
    map.insert("expires".to_owned(), Value::from(command.expires.timestamp_millis()));
    Ok(Value::Object(map).to_string().into_bytes())
}

/// The `params` object of a validated [`SetThresholds`].
fn params_json(params: &SetThresholds) -> Map<String, Value> {
    // Whole-unit set-points go out as integers: 300, not 300.0 (validated to be whole).
    let whole = |v: f64| Value::from(v.round() as i64);
    let entries = [
        ("leak_ma", params.leak_ma.map(whole)),
        ("leak_delay_s", params.leak_delay_s.map(Value::from)),
        ("temp_c", params.temp_c.map(whole)),
        ("overvoltage_v", params.overvoltage_v.map(Value::from)),
        ("undervoltage_v", params.undervoltage_v.map(Value::from)),
        ("overcurrent_a", params.overcurrent_a.map(Value::from)),
    ];
    entries.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))).collect()
}
