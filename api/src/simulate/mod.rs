//! Device simulators: stand-ins for field devices that speak the device protocol
//! (`shared/design/DEVICE-PROTOCOL.md`) for real, used by the test suites and by the
//! `sparkwatch simulate` command.
//!
//! Layout:
//! - [`scenarios`] — simulated MQTT devices, one scenario each (normal, leak creep, overheat,
//!   sensor open, offline, flapping, malformed), tick by tick.
//! - [`run`] — drives simulated devices against a broker or this process's ingestion queue.
//! - [`modbus_server`] — a Modbus TCP gateway ([`modbus_server::ModbusSim`]) with one register
//!   bank per unit id (detector), implementing the contract's register map (§2): input
//!   registers 0–15, holding registers 100–105, coils 0–4; plus controls to change readings,
//!   alarm/fault/relay bits, and to make the gateway dead or mute.

pub mod modbus_server;
pub mod run;
pub mod scenarios;
