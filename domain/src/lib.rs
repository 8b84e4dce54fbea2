//! Pure rules and types of Sparkwatch, shared by the server and (through uniffi) the mobile apps.
//!
//! Nothing here performs I/O, spawns tasks or reads the clock: time is always a parameter.
//!
//! Layout:
//! - [`ids`] — newtype ids (`TenantId`, `ProjectId`, `DetectorId`, …) over UUIDv7 values.
//! - [`access`] — permissions, the built-in roles and the project scope of a principal.
//! - [`site`] — tenants, projects, devices and detectors as plain data.
//! - [`thresholds`] — alarm set-points with the GB 14287 ranges and tenant → project → detector inheritance.
//! - [`validate`] — field validation with errors that name the field.

pub mod access;
pub mod ids;
pub mod site;
pub mod thresholds;
pub mod validate;

pub use validate::ValidationError;
