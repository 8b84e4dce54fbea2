//! Pure rules and types of Sparkwatch, shared by the server and (through uniffi) the mobile apps.
//!
//! Nothing here performs I/O, spawns tasks or reads the clock: time is always a parameter.
//!
//! Layout:
//! - [`ids`] — newtype ids (`TenantId`, `ProjectId`, `DetectorId`, …) over UUIDv7 values.
//! - [`access`] — permissions, the built-in roles and the project scope of a principal.
//! - [`field`] — offline field operations: kinds, per-operation sync outcomes and what the app does with each.
//! - [`outbox`] — the phone's offline outbox: queue, stored bytes, `syncFieldOperations` variables, settling answers.
//! - [`display`] — readings for display: channels classified against thresholds, zh-CN/en labels.
//! - [`command`] — remote commands: lifecycle, re-authentication, cool-down, expiry, set-threshold params, outcomes.
//! - [`alarm`] — the reading evaluator: delay, hysteresis, pre-alarms and escalation per channel; heartbeat timeout.
//! - [`identity`] — device identity: who an MQTT client is at CONNECT, which topics it may touch.
//! - [`hazard`] — the hazard lifecycle (`transition`) and the alarm-latch contract.
//! - [`patrol`] — patrol schedules and periods, the task lifecycle, checklists, the checkpoint QR payload.
//! - [`workorder`] — the work-order lifecycle: who may do what, from which status, with what input.
//! - [`reading`] — readings, channels, event kinds and categories.
//! - [`payload`] — MQTT device protocol: topics, payload decoding with counted rejection reasons, commands.
//! - [`modbus`] — Modbus register map: input-register polls, alarm/fault bit edges as events, set-points, coils.
//! - [`notify`] — notification severity, user preferences and quiet hours, escalation policy, zh-CN/en texts.
//! - [`site`] — tenants, projects, devices and detectors as plain data.
//! - [`thresholds`] — alarm set-points with the GB 14287 ranges and tenant → project → detector inheritance.
//! - [`validate`] — field validation with errors that name the field.

pub mod access;
pub mod alarm;
pub mod command;
pub mod display;
pub mod field;
pub mod hazard;
pub mod identity;
pub mod ids;
pub mod modbus;
pub mod notify;
pub mod outbox;
pub mod patrol;
pub mod payload;
pub mod reading;
pub mod site;
pub mod thresholds;
pub mod validate;
pub mod workorder;

pub use validate::ValidationError;
