//! A simulated Modbus TCP gateway speaking the contract's register map
//! (`shared/design/DEVICE-PROTOCOL.md` §2) over real Modbus TCP (tokio-modbus's server).
//!
//! Each unit id (detector address) behind the gateway has its own [`UnitBank`]:
//! - input registers 0–15 (function 04): leakage, four temperatures, three voltages, three
//!   currents, DI, DO, alarm bits, fault bits, relay;
//! - holding registers 100–105 (functions 03, 06, 16): the set-points, checked against the
//!   contract's ranges (a value out of range is refused with exception 0x03);
//! - coils 0–4 (function 05): trip, close, reset, self-test, silence. Writing ON performs the
//!   operation (trip → relay 1, close → relay 0, reset → alarm bits cleared) and is recorded;
//!   coils read back as OFF because the device resets them itself.
//!
//! A request for a unit id with no bank gets exception 0x0B ("gateway target device failed to
//! respond"), as a real gateway answers for a detector that is missing on its bus. Other
//! functions get 0x01, addresses outside the map 0x02. [`ModbusSim::set_dead`] makes the
//! whole gateway dead (connections are closed and new ones refused) and
//! [`ModbusSim::set_mute`] makes it silent (connections stay up, requests go unanswered).
//!
//! The server runs until [`ModbusSim::shutdown`] or until the last clone of the
//! [`ModbusSim`] handle is dropped.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use sparkwatch_domain::modbus::{
    INPUT_REGISTER_COUNT, TEMP_SENSOR_OPEN, TEMP_SENSOR_SHORT, THRESHOLD_REGISTER_COUNT, THRESHOLD_REGISTER_START,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Number of coils: 0 trip, 1 close, 2 reset, 3 self-test, 4 silence.
pub const COIL_COUNT: u16 = 5;

/// Input register of the alarm bits.
const REG_ALARMS: usize = 13;
/// Input register of the fault bits.
const REG_FAULTS: usize = 14;
/// Input register of the relay state.
const REG_RELAY: usize = 15;
/// Most registers or coils one request may address (the Modbus limit for register reads).
const MAX_QUANTITY: u16 = 125;

/// What a temperature register reports instead of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TempSentinel {
    /// `0x7FFF`: sensor open / not fitted.
    Open,
    /// `0x8000`: sensor short.
    Short,
}

/// The registers of one unit id (one detector behind the gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitBank {
    /// Input registers 0–15, raw.
    pub input: [u16; INPUT_REGISTER_COUNT as usize],
    /// Holding registers 100–105, raw.
    pub holding: [u16; THRESHOLD_REGISTER_COUNT as usize],
    /// Coils written ON, oldest first (the operations performed).
    pub coil_writes: Vec<u16>,
    /// When set, writes to holding registers are acknowledged but not stored — a device that
    /// silently ignores set-points, for testing the read-back check.
    pub ignore_holding_writes: bool,
}

impl Default for UnitBank {
    /// A healthy detector: 12 mA, 25.0/26.0 °C with channels 3–4 not fitted,
    /// 220.0/220.5/219.8 V, 5.00/4.80/5.10 A, no DI/DO, alarms or faults, relay closed;
    /// set-points 300 mA, 5.0 s, 85 °C, 253.0 V, 187.0 V, 63.00 A.
    fn default() -> Self {
        UnitBank {
            input: [12, 250, 260, TEMP_SENSOR_OPEN, TEMP_SENSOR_OPEN, 2200, 2205, 2198, 500, 480, 510, 0, 0, 0, 0, 0],
            holding: [300, 50, 85, 2530, 1870, 6300],
            coil_writes: Vec::new(),
            ignore_holding_writes: false,
        }
    }
}

/// `value × scale` rounded into a register (saturating; NaN → 0).
fn unsigned(value: f64, scale: f64) -> u16 {
    // `as` saturates and maps NaN to 0, which is what a register can hold.
    (value * scale).round() as u16
}

/// A temperature in 0.1 °C, signed, kept clear of the two sentinels.
fn tenths_signed(celsius: f64) -> u16 {
    let tenths = (celsius * 10.0).round().clamp(-32767.0, 32766.0);
    (tenths as i16).cast_unsigned()
}

/// The part of a register block `[first, first + count)` that a request for `qty` registers
/// from `addr` addresses, as indices into the block.
fn span(addr: u16, qty: u16, first: u16, count: u16) -> Result<Range<usize>, ExceptionCode> {
    if qty == 0 || qty > MAX_QUANTITY {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = addr.checked_sub(first).ok_or(ExceptionCode::IllegalDataAddress)?;
    let end = u32::from(start) + u32::from(qty);
    if end > u32::from(count) {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(usize::from(start)..end as usize)
}

/// Refuses a set-point outside the contract's range (registers 100–102; 103–105 have none).
fn check_setpoint(register: u16, value: u16) -> Result<(), ExceptionCode> {
    let ok = match register {
        100 => (20..=1000).contains(&value),
        101 => value <= 600,
        102 => (55..=140).contains(&value),
        _ => true,
    };
    if ok { Ok(()) } else { Err(ExceptionCode::IllegalDataValue) }
}

impl UnitBank {
    /// Answers one request addressed to this unit.
    fn apply(&mut self, request: Request<'_>) -> Result<Response, ExceptionCode> {
        match request {
            Request::ReadInputRegisters(addr, qty) => {
                let r = span(addr, qty, 0, INPUT_REGISTER_COUNT)?;
                Ok(Response::ReadInputRegisters(self.input[r].to_vec()))
            }
            Request::ReadHoldingRegisters(addr, qty) => {
                let r = span(addr, qty, THRESHOLD_REGISTER_START, THRESHOLD_REGISTER_COUNT)?;
                Ok(Response::ReadHoldingRegisters(self.holding[r].to_vec()))
            }
            Request::WriteSingleRegister(addr, word) => {
                let r = span(addr, 1, THRESHOLD_REGISTER_START, THRESHOLD_REGISTER_COUNT)?;
                check_setpoint(addr, word)?;
                if !self.ignore_holding_writes {
                    self.holding[r.start] = word;
                }
                Ok(Response::WriteSingleRegister(addr, word))
            }
            Request::WriteMultipleRegisters(addr, words) => {
                let qty = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                let r = span(addr, qty, THRESHOLD_REGISTER_START, THRESHOLD_REGISTER_COUNT)?;
                for (register, word) in (addr..).zip(words.iter()) {
                    check_setpoint(register, *word)?;
                }
                if !self.ignore_holding_writes {
                    self.holding[r].copy_from_slice(&words);
                }
                Ok(Response::WriteMultipleRegisters(addr, qty))
            }
            Request::ReadCoils(addr, qty) => {
                let r = span(addr, qty, 0, COIL_COUNT)?;
                Ok(Response::ReadCoils(vec![false; r.len()]))
            }
            Request::WriteSingleCoil(addr, on) => {
                span(addr, 1, 0, COIL_COUNT)?;
                if on {
                    self.operate(addr);
                }
                Ok(Response::WriteSingleCoil(addr, on))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// Performs the operation of a coil written ON.
    fn operate(&mut self, coil: u16) {
        self.coil_writes.push(coil);
        match coil {
            0 => self.input[REG_RELAY] = 1,
            1 => self.input[REG_RELAY] = 0,
            2 => self.input[REG_ALARMS] = 0,
            // Self-test and silence change no register.
            _ => {}
        }
    }
}

/// State shared by the handle, the connections and the request handler.
#[derive(Default)]
struct Shared {
    units: Mutex<HashMap<u8, UnitBank>>,
    dead: AtomicBool,
    mute: AtomicBool,
    connections: AtomicU64,
    requests: AtomicU64,
}

impl Shared {
    fn units(&self) -> MutexGuard<'_, HashMap<u8, UnitBank>> {
        // A panic while holding the lock cannot leave a bank half-written in a way that
        // matters to a simulator; keep serving.
        self.units.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self, req: SlaveRequest<'_>) -> Result<Option<Response>, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.mute.load(Ordering::SeqCst) || self.dead.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut units = self.units();
        let bank = units.get_mut(&req.slave).ok_or(ExceptionCode::GatewayTargetDevice)?;
        bank.apply(req.request).map(Some)
    }
}

/// The tokio-modbus service of one connection.
struct SimService {
    shared: Arc<Shared>,
}

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.shared.handle(req))
    }
}

/// A client connection that ends (reads end-of-file, so the server closes it) once the
/// gateway is dead.
struct SimConn {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for SimConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shared.dead.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Aborts the server task when the last handle is dropped.
struct ServerTask(tokio::task::AbortHandle);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running simulated gateway and its controls. Clones share the same gateway; it stops when
/// [`ModbusSim::shutdown`] is called or the last clone is dropped.
///
/// Every setter creates the unit with [`UnitBank::default`] values when it does not exist yet.
#[derive(Clone)]
pub struct ModbusSim {
    shared: Arc<Shared>,
    task: Arc<ServerTask>,
    addr: SocketAddr,
}

impl std::fmt::Debug for ModbusSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSim").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Starts a simulated gateway listening on `addr` (`127.0.0.1:0` picks a free port) with no
/// units; returns its handle and the address it listens on.
pub async fn start(addr: SocketAddr) -> io::Result<(ModbusSim, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared::default());
    let for_server = shared.clone();
    let task = tokio::spawn(async move {
        let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
            let shared = for_server.clone();
            async move {
                if shared.dead.load(Ordering::SeqCst) {
                    // Dropping the stream closes it: a dead gateway refuses to talk.
                    return Ok::<_, io::Error>(None);
                }
                shared.connections.fetch_add(1, Ordering::SeqCst);
                // Small request/response frames: do not wait to coalesce them.
                let _ = stream.set_nodelay(true);
                Ok(Some((SimService { shared: shared.clone() }, SimConn { stream, shared })))
            }
        };
        let on_error = |e: io::Error| tracing::debug!(error = %e, "simulated Modbus connection ended with an error");
        if let Err(e) = Server::new(listener).serve(&on_connected, on_error).await {
            tracing::warn!(error = %e, "the simulated Modbus gateway stopped accepting connections");
        }
    });
    let sim = ModbusSim { shared, task: Arc::new(ServerTask(task.abort_handle())), addr: local };
    Ok((sim, local))
}

impl ModbusSim {
    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the gateway: the listener and every connection are closed.
    pub fn shutdown(&self) {
        self.task.0.abort();
    }

    fn with_unit<T>(&self, unit: u8, f: impl FnOnce(&mut UnitBank) -> T) -> T {
        f(self.shared.units().entry(unit).or_default())
    }

    /// Adds a unit with healthy values (see [`UnitBank::default`]), or leaves an existing one.
    pub fn add_unit(&self, unit: u8) {
        self.with_unit(unit, |_| ());
    }

    /// Removes a unit: requests for it get exception 0x0B from then on.
    pub fn remove_unit(&self, unit: u8) {
        self.shared.units().remove(&unit);
    }

    /// Sets the measurements: leakage in mA, temperatures 1–4 in °C (`None` = sensor open / not
    /// fitted), voltages A/B/C in V and currents A/B/C in A, encoded as the contract says
    /// (mA; 0.1 °C signed; 0.1 V; 0.01 A). Values that do not fit saturate.
    pub fn set_reading(&self, unit: u8, leak_ma: f64, temps: [Option<f64>; 4], volts: [f64; 3], amps: [f64; 3]) {
        self.with_unit(unit, |b| {
            b.input[0] = unsigned(leak_ma, 1.0);
            for (i, t) in temps.iter().enumerate() {
                b.input[1 + i] = t.map_or(TEMP_SENSOR_OPEN, tenths_signed);
            }
            for (i, v) in volts.iter().enumerate() {
                b.input[5 + i] = unsigned(*v, 10.0);
            }
            for (i, a) in amps.iter().enumerate() {
                b.input[8 + i] = unsigned(*a, 100.0);
            }
        });
    }

    /// Sets one input register (0–15) to a raw value, e.g. an out-of-range one; other
    /// registers are ignored.
    pub fn set_register(&self, unit: u8, register: u16, value: u16) {
        self.with_unit(unit, |b| {
            if let Some(slot) = b.input.get_mut(usize::from(register)) {
                *slot = value;
            }
        });
    }

    /// Sets the alarm bits (register 13): 0 leak, 1–4 temperature 1–4, 5 over-voltage,
    /// 6 under-voltage, 7 over-current, 8 phase loss, 9 arc fault.
    pub fn set_alarm_bits(&self, unit: u8, bits: u16) {
        self.with_unit(unit, |b| b.input[REG_ALARMS] = bits);
    }

    /// Sets the fault bits (register 14): 0 leak sensor open, 1 leak sensor short,
    /// 2–5 temperature sensor 1–4 open, 6–9 temperature sensor 1–4 short, 10 power fault.
    pub fn set_fault_bits(&self, unit: u8, bits: u16) {
        self.with_unit(unit, |b| b.input[REG_FAULTS] = bits);
    }

    /// Sets the relay state (register 15): tripped or closed.
    pub fn set_relay(&self, unit: u8, tripped: bool) {
        self.with_unit(unit, |b| b.input[REG_RELAY] = u16::from(tripped));
    }

    /// Makes temperature channel `channel` (1–4) report a sentinel instead of a value; other
    /// channel numbers are ignored.
    pub fn set_temp_sentinel(&self, unit: u8, channel: u8, sentinel: TempSentinel) {
        let raw = match sentinel {
            TempSentinel::Open => TEMP_SENSOR_OPEN,
            TempSentinel::Short => TEMP_SENSOR_SHORT,
        };
        if (1..=4).contains(&channel) {
            self.with_unit(unit, |b| b.input[usize::from(channel)] = raw);
        }
    }

    /// Sets the set-point holding registers 100–105, raw.
    pub fn set_holding_registers(&self, unit: u8, registers: [u16; THRESHOLD_REGISTER_COUNT as usize]) {
        self.with_unit(unit, |b| b.holding = registers);
    }

    /// Makes the unit acknowledge holding-register writes without storing them.
    pub fn set_ignore_holding_writes(&self, unit: u8, ignore: bool) {
        self.with_unit(unit, |b| b.ignore_holding_writes = ignore);
    }

    /// A copy of a unit's registers, or `None` when there is no such unit.
    pub fn unit(&self, unit: u8) -> Option<UnitBank> {
        self.shared.units().get(&unit).cloned()
    }

    /// Makes the gateway dead (`true`): open connections are closed at their next request and
    /// new ones are closed as soon as they are accepted. `false` brings it back.
    pub fn set_dead(&self, dead: bool) {
        self.shared.dead.store(dead, Ordering::SeqCst);
    }

    /// Makes the gateway mute (`true`): connections stay open but no request is answered, so
    /// clients time out. `false` makes it answer again.
    pub fn set_mute(&self, mute: bool) {
        self.shared.mute.store(mute, Ordering::SeqCst);
    }

    /// Connections accepted so far (not counting those refused while dead).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far, answered or not.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_register_map() {
        assert_eq!(span(0, 16, 0, 16), Ok(0..16));
        assert_eq!(span(15, 1, 0, 16), Ok(15..16));
        assert_eq!(span(0, 17, 0, 16), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(span(16, 1, 0, 16), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(span(0, 0, 0, 16), Err(ExceptionCode::IllegalDataValue));
        assert_eq!(span(0, 126, 0, 200), Err(ExceptionCode::IllegalDataValue));
        assert_eq!(span(100, 6, 100, 6), Ok(0..6));
        assert_eq!(span(99, 1, 100, 6), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(span(65535, 1, 100, 6), Err(ExceptionCode::IllegalDataAddress));
    }

    #[test]
    fn encodings() {
        assert_eq!(tenths_signed(45.5), 455);
        assert_eq!(tenths_signed(-5.0), 0xFFCE);
        assert_eq!(tenths_signed(1e9), 32766);
        assert_eq!(tenths_signed(-1e9), 0x8001);
        assert_eq!(unsigned(230.5, 10.0), 2305);
        assert_eq!(unsigned(655.35, 100.0), 65535);
        assert_eq!(unsigned(-3.0, 1.0), 0);
        assert_eq!(unsigned(f64::NAN, 1.0), 0);
    }

    #[test]
    fn banks_answer_the_contract() {
        let mut b = UnitBank::default();
        assert_eq!(b.apply(Request::ReadInputRegisters(0, 16)).map(|_| ()), Ok(()));
        assert_eq!(b.apply(Request::WriteSingleCoil(0, true)), Ok(Response::WriteSingleCoil(0, true)));
        assert_eq!(b.input[REG_RELAY], 1);
        b.apply(Request::WriteSingleCoil(1, true)).ok();
        assert_eq!(b.input[REG_RELAY], 0);
        b.input[REG_ALARMS] = 3;
        b.apply(Request::WriteSingleCoil(2, true)).ok();
        assert_eq!(b.input[REG_ALARMS], 0);
        assert_eq!(b.coil_writes, vec![0, 1, 2]);
        assert_eq!(b.apply(Request::WriteSingleCoil(5, true)), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(b.apply(Request::WriteSingleRegister(100, 10)), Err(ExceptionCode::IllegalDataValue));
        let words = vec![250, 30, 90, 2500, 1900, 1000];
        assert_eq!(
            b.apply(Request::WriteMultipleRegisters(100, words.clone().into())),
            Ok(Response::WriteMultipleRegisters(100, 6))
        );
        assert_eq!(b.apply(Request::ReadHoldingRegisters(100, 6)), Ok(Response::ReadHoldingRegisters(words)));
        assert_eq!(b.apply(Request::ReadDiscreteInputs(0, 1)), Err(ExceptionCode::IllegalFunction));
    }
}
