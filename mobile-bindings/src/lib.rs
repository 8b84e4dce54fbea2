//! uniffi bindings over `sparkwatch-domain` for the iOS and Android apps.
//!
//! The API is synchronous on purpose (Kotlin async would need coroutine jars the apps'
//! build does not carry). It starts with the checks a field app needs offline before it
//! submits a form; generated bindings and foreign-language tests come with the mobile issue.

uniffi::setup_scaffolding!();

/// A field that failed validation, as the app shows it next to the input.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FieldError {
    /// The input's name, e.g. `serial`.
    pub field: String,
    /// What is wrong, for a person to read.
    pub reason: String,
}

impl From<sparkwatch_domain::ValidationError> for FieldError {
    fn from(e: sparkwatch_domain::ValidationError) -> Self {
        FieldError { field: e.field, reason: e.reason }
    }
}

/// Checks a device serial as the device protocol defines it; `None` when valid.
#[uniffi::export]
pub fn check_device_serial(serial: String) -> Option<FieldError> {
    sparkwatch_domain::validate::device_serial("serial", &serial).err().map(Into::into)
}

/// Checks a detector bus address (1–247); `None` when valid.
#[uniffi::export]
pub fn check_detector_address(address: i64) -> Option<FieldError> {
    sparkwatch_domain::validate::detector_address("address", address).err().map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_map_domain_errors() {
        assert_eq!(check_device_serial("SW-1".into()), None);
        assert_eq!(check_device_serial("bad serial".into()).map(|e| e.field), Some("serial".into()));
        assert_eq!(check_detector_address(0).map(|e| e.field), Some("address".into()));
    }
}
