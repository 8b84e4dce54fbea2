//! One Modbus TCP connection to a gateway ([`GatewayConnection`]) and why a request fails
//! ([`ModbusError`]).
//!
//! What tenants see of a failure is [`ModbusError::public`]: every way of not getting a
//! Modbus answer — connection refused, reset, timed out, an address outside the allowed
//! networks, something that is not Modbus answering — reads the same `NO_ANSWER`, so a
//! tenant cannot use the poller to learn which ports of a network are open. The detail
//! stays in [`ModbusError`]'s `Display` for the server log and the metrics.

use std::net::SocketAddr;
use std::time::Duration;

use sparkwatch_domain::modbus::{
    self as mb, INPUT_REGISTER_COUNT, INPUT_REGISTER_START, THRESHOLD_REGISTER_COUNT, THRESHOLD_REGISTER_START,
    ThresholdMismatch,
};
use sparkwatch_domain::payload::{CommandOp, SetThresholds};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context as ModbusContext, Reader, Writer};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

/// The one text tenants see for a gateway that gave no Modbus answer, whatever the cause.
pub const NO_ANSWER: &str = "NO_ANSWER: the gateway did not answer";

/// Why a Modbus request failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModbusError {
    /// The gateway is being backed off from after failures; nothing was sent.
    #[error("gateway unreachable ({0})")]
    Unreachable(String),
    /// The gateway's host resolves to no address inside `--modbus-allow-networks` (or does
    /// not resolve); nothing was sent.
    #[error("{0}")]
    NotAllowed(String),
    /// No answer in time (connecting or waiting for a reply).
    #[error("{0}")]
    Timeout(String),
    /// The connection failed or was closed.
    #[error("{0}")]
    Io(String),
    /// The gateway answered with a Modbus exception.
    #[error("Modbus exception {code:#04X} ({text})")]
    Exception {
        /// The exception code, e.g. `0x0B` (gateway target device failed to respond).
        code: u8,
        /// Its meaning.
        text: String,
    },
    /// The answer did not match the request (transaction id, function code or length).
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The request cannot be made: invalid set-points, or an operation without a coil.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Set-points read back differently from what was written.
    #[error("set-points read back differently: {}", describe_mismatches(.0))]
    ReadBack(Vec<ThresholdMismatch>),
}

impl ModbusError {
    /// What the tenant may see: the gateway's own answers (a Modbus exception, set-points
    /// read back differently, an invalid request) as they are; everything else — no
    /// connection, no answer in time, a reset, an address that may not be polled, a reply
    /// that is not Modbus — as [`NO_ANSWER`] (see the module documentation).
    pub fn public(&self) -> String {
        match self {
            ModbusError::Exception { .. } | ModbusError::ReadBack(_) | ModbusError::Invalid(_) => self.to_string(),
            ModbusError::Unreachable(_)
            | ModbusError::Timeout(_)
            | ModbusError::Io(_)
            | ModbusError::Protocol(_)
            | ModbusError::NotAllowed(_) => NO_ANSWER.to_owned(),
        }
    }

    /// The `outcome` label of `sparkwatch_modbus_polls_total` for a poll failing this way.
    pub fn outcome(&self) -> &'static str {
        match self {
            ModbusError::Unreachable(_) => "unreachable",
            ModbusError::NotAllowed(_) => "not_allowed",
            ModbusError::Timeout(_) => "timeout",
            ModbusError::Exception { .. } => "exception",
            ModbusError::Io(_) | ModbusError::Protocol(_) | ModbusError::Invalid(_) | ModbusError::ReadBack(_) => {
                "io_error"
            }
        }
    }

    /// The Modbus exception code, when the gateway answered with one.
    pub fn exception_code(&self) -> Option<u8> {
        match self {
            ModbusError::Exception { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub(super) fn describe_mismatches(list: &[ThresholdMismatch]) -> String {
    list.iter()
        .map(|m| {
            let read = m.read.map_or_else(|| "nothing".to_owned(), |r| r.to_string());
            format!("register {} ({}) written {}, read {read}", m.register, m.field.unwrap_or("?"), m.written)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn exception(code: ExceptionCode) -> ModbusError {
    ModbusError::Exception { code: u8::from(code), text: code.to_string() }
}

/// Maps the nested results of a timed tokio-modbus call.
fn settle<T>(
    r: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    timeout: Duration,
    what: &str,
) -> Result<T, ModbusError> {
    match r {
        Err(_) => Err(ModbusError::Timeout(format!("no answer to {what} within {} ms", timeout.as_millis()))),
        Ok(Err(tokio_modbus::Error::Transport(e))) => {
            // tokio-modbus reports a connection closed by the peer as the last OS error,
            // which then reads "Success (os error 0)".
            let detail =
                if e.raw_os_error() == Some(0) { "connection closed by the gateway".to_owned() } else { e.to_string() };
            Err(ModbusError::Io(format!("{what} failed: {detail}")))
        }
        Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(ModbusError::Protocol(e.to_string())),
        Ok(Ok(Err(code))) => Err(exception(code)),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

/// One Modbus TCP connection to a gateway. Requests are sequential (`&mut self`) and each
/// is bounded by the timeout given at connect time. After a timeout or I/O error the
/// connection must be dropped: a late answer would be taken for the next request's.
pub struct GatewayConnection {
    ctx: ModbusContext,
    timeout: Duration,
    pub(super) peer: String,
}

impl std::fmt::Debug for GatewayConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConnection").field("peer", &self.peer).field("timeout", &self.timeout).finish()
    }
}

impl GatewayConnection {
    /// Connects to `addr` (an address already checked against the allowed networks; `peer`
    /// names it in messages) within `connect_timeout`; every later request gets
    /// `request_timeout`.
    pub async fn connect(
        addr: SocketAddr,
        peer: String,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ModbusError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ModbusError::Timeout(format!(
                    "connecting to {peer} ({addr}) timed out after {} ms",
                    connect_timeout.as_millis()
                )));
            }
            Ok(Err(e)) => return Err(ModbusError::Io(format!("cannot connect to {peer} ({addr}): {e}"))),
            Ok(Ok(s)) => s,
        };
        // Small request/response frames: send them at once.
        let _ = stream.set_nodelay(true);
        let ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(1));
        Ok(GatewayConnection { ctx, timeout: request_timeout, peer })
    }

    /// Reads input registers 0–15 of `unit` (function 04, quantity 16): one poll.
    pub async fn read_inputs(&mut self, unit: u8) -> Result<Vec<u16>, ModbusError> {
        self.ctx.set_slave(Slave(unit));
        let r = tokio::time::timeout(
            self.timeout,
            self.ctx.read_input_registers(INPUT_REGISTER_START, INPUT_REGISTER_COUNT),
        )
        .await;
        settle(r, self.timeout, &format!("reading unit {unit} at {}", self.peer))
    }

    /// Reads the set-points, holding registers 100–105 of `unit` (function 03).
    pub async fn read_thresholds(&mut self, unit: u8) -> Result<[u16; 6], ModbusError> {
        self.ctx.set_slave(Slave(unit));
        let r = tokio::time::timeout(
            self.timeout,
            self.ctx.read_holding_registers(THRESHOLD_REGISTER_START, THRESHOLD_REGISTER_COUNT),
        )
        .await;
        let regs = settle(r, self.timeout, &format!("reading the set-points of unit {unit} at {}", self.peer))?;
        let n = regs.len();
        regs.try_into().map_err(|_| ModbusError::Protocol(format!("{n} set-point registers instead of 6")))
    }

    /// Performs an operation by writing its coil ON (function 05); the write's answer is the
    /// acknowledgement. `SetThresholds` has no coil: use [`Self::write_thresholds`].
    pub async fn write_coil(&mut self, unit: u8, op: CommandOp) -> Result<(), ModbusError> {
        let coil = mb::coil_for(op)
            .ok_or_else(|| ModbusError::Invalid(format!("{} writes set-points, not a coil", op.code())))?;
        self.ctx.set_slave(Slave(unit));
        let r = tokio::time::timeout(self.timeout, self.ctx.write_single_coil(coil, true)).await;
        settle(r, self.timeout, &format!("writing coil {coil} of unit {unit} at {}", self.peer))
    }

    /// Writes set-points (function 06 for a lone register, 16 for a run of adjacent ones),
    /// then reads registers 100–105 back and fails with the differences if any written
    /// register reads differently.
    pub async fn write_thresholds(&mut self, unit: u8, thresholds: &SetThresholds) -> Result<(), ModbusError> {
        let writes = mb::encode_thresholds(thresholds).map_err(|e| ModbusError::Invalid(e.to_string()))?;
        self.ctx.set_slave(Slave(unit));
        let mut i = 0;
        while i < writes.len() {
            let start = writes[i].0;
            let mut run = vec![writes[i].1];
            while let Some(&(register, value)) = writes.get(i + run.len()) {
                if u32::from(register) != u32::from(start) + run.len() as u32 {
                    break;
                }
                run.push(value);
            }
            i += run.len();
            let what = format!("writing set-point registers from {start} of unit {unit} at {}", self.peer);
            if let [value] = run.as_slice() {
                let r = tokio::time::timeout(self.timeout, self.ctx.write_single_register(start, *value)).await;
                settle(r, self.timeout, &what)?;
            } else {
                let r = tokio::time::timeout(self.timeout, self.ctx.write_multiple_registers(start, &run)).await;
                settle(r, self.timeout, &what)?;
            }
        }
        let back = self.read_thresholds(unit).await?;
        mb::thresholds_match(&writes, &back).map_err(ModbusError::ReadBack)
    }
}
