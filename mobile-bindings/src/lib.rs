//! uniffi bindings over `sparkwatch-domain` for the iOS and Android apps: the field apps run
//! the server's own rules offline, with no second implementation in Kotlin or Swift.
//!
//! - [`lifecycle`] — hazard, work-order and patrol-task state machines: allowed actions per
//!   state and role, what each action needs, the transition itself.
//! - [`outbox`] — the offline outbox: queue, stored bytes, `syncFieldOperations` variables,
//!   settling the server's answers (retry, drop, show).
//! - [`readings`] — channels classified for display, values and push texts in zh-CN/en.
//! - [`forms`] — validation of thresholds and forms with the API's field names; QR codes.
//!
//! Conventions: a synchronous API (Kotlin async would need coroutine jars the apps' build
//! does not carry); ids are UUID strings and times RFC 3339 strings, as in the GraphQL API;
//! permissions are the API's codes (`fieldwork`, `hazard.manage`); every failure is one
//! [`MobileError`]. Nothing here unwraps, so no panic crosses the boundary (uniffi would
//! turn one into an internal error anyway).

use chrono::{DateTime, Utc};
use sparkwatch_domain::ValidationError;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::notify::Locale;
use uuid::Uuid;

uniffi::setup_scaffolding!();

pub mod forms;
pub mod lifecycle;
pub mod outbox;
pub mod readings;

/// Why a call failed. `Invalid` names the API field at fault, as the server would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum MobileError {
    /// An input breaks a rule (`VALIDATION` on the server).
    #[error("{field}: {reason}")]
    Invalid {
        /// The API's field name (`report`, `attachmentIds`, `qrPayload`).
        field: String,
        /// What is wrong, for a person to read.
        reason: String,
    },
    /// The caller's role may not do this (`FORBIDDEN`).
    #[error("{reason}")]
    Forbidden {
        /// Why, for a person to read (`reason` rather than `message`, which Kotlin's
        /// exceptions already have).
        reason: String,
    },
    /// The object is not in a state the action applies to (`CONFLICT`).
    #[error("{reason}")]
    Conflict {
        /// Why, for a person to read (`reason` rather than `message`, which Kotlin's
        /// exceptions already have).
        reason: String,
    },
    /// The whole sync request failed (the outbox keeps everything).
    #[error("{code}: {reason}")]
    Sync {
        /// The server's error code (`UNAUTHENTICATED`, …), or `MALFORMED`.
        code: String,
        /// Why, for a person to read (`reason` rather than `message`, which Kotlin's
        /// exceptions already have).
        reason: String,
    },
}

impl MobileError {
    /// An invalid `field`.
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        MobileError::Invalid { field: field.to_owned(), reason: reason.into() }
    }
}

impl From<ValidationError> for MobileError {
    fn from(e: ValidationError) -> Self {
        MobileError::Invalid { field: e.field, reason: e.reason }
    }
}

/// A field that failed validation, as the app shows it next to the input.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FieldError {
    /// The input's name, e.g. `serial`.
    pub field: String,
    /// What is wrong, for a person to read.
    pub reason: String,
}

impl From<ValidationError> for FieldError {
    fn from(e: ValidationError) -> Self {
        FieldError { field: e.field, reason: e.reason }
    }
}

/// Reads permission codes (`fieldwork`, `hazard.manage`, …) into a checker.
pub(crate) fn permissions(codes: &[String]) -> Result<Vec<Permission>, MobileError> {
    codes
        .iter()
        .map(|c| c.parse::<Permission>().map_err(|e| MobileError::invalid("permissions", e.to_string())))
        .collect()
}

/// Reads an RFC 3339 time (`2026-12-06T08:30:00Z`) of `field`.
pub(crate) fn time(field: &str, text: &str) -> Result<DateTime<Utc>, MobileError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| MobileError::invalid(field, "must be an RFC 3339 time like 2026-12-06T08:30:00Z"))
}

/// Reads a UUID of `field`.
pub(crate) fn uuid(field: &str, text: &str) -> Result<Uuid, MobileError> {
    Uuid::parse_str(text.trim()).map_err(|_| MobileError::invalid(field, "must be an id (a UUID)"))
}

/// Reads UUIDs of `field`.
pub(crate) fn uuids(field: &str, texts: &[String]) -> Result<Vec<Uuid>, MobileError> {
    texts.iter().map(|t| uuid(field, t)).collect()
}

/// Reads a locale tag leniently (any Chinese tag is zh-CN, everything else English).
pub(crate) fn locale(tag: &str) -> Locale {
    Locale::from_tag(tag)
}

/// A new client id for an offline operation (a UUIDv7: time-ordered, so the server's
/// records of one phone sort by when they were made).
#[uniffi::export]
pub fn new_client_id() -> String {
    Uuid::now_v7().to_string()
}

/// The permission codes of a built-in role (`electrician`, `manager`, `tenant_admin`,
/// `viewer`), for an app that knows its role rather than its permissions.
#[uniffi::export]
pub fn builtin_role_permissions(role: String) -> Result<Vec<String>, MobileError> {
    let role = sparkwatch_domain::access::BuiltinRole::from_key(role.trim())
        .ok_or_else(|| MobileError::invalid("role", "not a built-in role"))?;
    Ok(role.permissions().into_iter().map(|p| p.code().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_name_their_field() {
        assert!(matches!(time("at", "yesterday"), Err(MobileError::Invalid { ref field, .. }) if field == "at"));
        assert!(time("at", "2026-12-06T16:30:00+08:00").is_ok());
        assert!(matches!(uuid("id", "x"), Err(MobileError::Invalid { ref field, .. }) if field == "id"));
        let bad = permissions(&["fieldwork".into(), "root".into()]);
        assert!(matches!(bad, Err(MobileError::Invalid { ref field, .. }) if field == "permissions"));
        assert_eq!(builtin_role_permissions("electrician".into()).map(|p| p.contains(&"fieldwork".into())), Ok(true));
        assert!(builtin_role_permissions("god".into()).is_err());
        assert_ne!(new_client_id(), new_client_id());
    }
}
