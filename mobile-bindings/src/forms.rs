//! Validation of what the app submits, with the API's field names (`domain::validate`,
//! `domain::thresholds`, the form checks of `hazard`, `workorder` and `patrol`), and the
//! checkpoint QR code's format (the server checks its signature).

use sparkwatch_domain::patrol::{self as pt, QrPayload};
use sparkwatch_domain::thresholds::ThresholdOverrides as Overrides;
use sparkwatch_domain::{hazard, validate, workorder};

use crate::outbox::ChecklistAnswer;
use crate::readings::ThresholdOverrides;
use crate::{FieldError, MobileError, time};

/// Checks a device serial as the device protocol defines it; `None` when valid.
#[uniffi::export]
pub fn check_device_serial(serial: String) -> Option<FieldError> {
    validate::device_serial("serial", &serial).err().map(Into::into)
}

/// Checks a detector bus address (1–247); `None` when valid.
#[uniffi::export]
pub fn check_detector_address(address: i64) -> Option<FieldError> {
    validate::detector_address("address", address).err().map(Into::into)
}

/// Checks set-points against the GB 14287 ranges (`Invalid` with the field, e.g. `leakMa`);
/// a valid set returns its design-guidance warnings (e.g. leakage above 500 mA).
#[uniffi::export]
pub fn validate_thresholds(overrides: ThresholdOverrides) -> Result<Vec<FieldError>, MobileError> {
    let warnings = Overrides::from(overrides).validate()?;
    Ok(warnings.into_iter().map(|w| FieldError { field: w.field, reason: w.message }).collect())
}

/// Checks a hazard report's `description`; returns it trimmed.
#[uniffi::export]
pub fn check_hazard_report(description: String) -> Result<String, MobileError> {
    Ok(hazard::check_report(&description)?)
}

/// Checks a device time (`at`) against the server time the app last saw (`now`): more than
/// five minutes ahead is a wrong clock, which the server refuses.
#[uniffi::export]
pub fn check_device_time(at: String, now: String) -> Result<(), MobileError> {
    Ok(hazard::check_device_time("at", time("at", &at)?, time("now", &now)?)?)
}

/// Checks a new work order's `title` and `description`.
#[uniffi::export]
pub fn check_work_order_form(title: String, description: Option<String>) -> Result<(), MobileError> {
    workorder::check_new(&title, description.as_deref())?;
    Ok(())
}

/// Checks a checkpoint's `name`, `position` and `checklist`.
#[uniffi::export]
pub fn check_checkpoint_form(
    name: String,
    position: Option<String>,
    checklist: Vec<String>,
) -> Result<(), MobileError> {
    pt::check_checkpoint(&name, position.as_deref(), &checklist)?;
    Ok(())
}

/// Checks a patrol plan's `name` and the sizes of its `checkpointIds` and `assigneeIds`.
#[uniffi::export]
pub fn check_patrol_plan_form(name: String, checkpoints: u32, assignees: u32) -> Result<(), MobileError> {
    pt::check_plan(&name, checkpoints as usize, assignees as usize)?;
    Ok(())
}

/// Checks check-in `answers` against the checkpoint's checklist: every item answered once,
/// nothing else.
#[uniffi::export]
pub fn check_checklist_answers(checklist: Vec<String>, answers: Vec<ChecklistAnswer>) -> Result<(), MobileError> {
    let answers: Vec<pt::Answer> = answers.into_iter().map(Into::into).collect();
    Ok(pt::check_answers(&checklist, &answers)?)
}

/// The checkpoint a scanned code names (its id), or `Invalid` on `qrPayload` when it is not
/// a Sparkwatch checkpoint code. Only the server can tell a forged code.
#[uniffi::export]
pub fn parse_checkpoint_qr(payload: String) -> Result<String, MobileError> {
    Ok(QrPayload::parse(&payload)?.checkpoint.to_string())
}

/// Whether a scanned text has the format of a checkpoint code.
#[uniffi::export]
pub fn is_checkpoint_qr(payload: String) -> bool {
    QrPayload::parse(&payload).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_name_their_fields() {
        assert_eq!(check_device_serial("SW-1".into()), None);
        assert_eq!(check_device_serial("bad serial".into()).map(|e| e.field), Some("serial".into()));
        assert_eq!(check_detector_address(0).map(|e| e.field), Some("address".into()));
        let high = ThresholdOverrides { leak_ma: Some(800.0), ..ThresholdOverrides::default() };
        assert_eq!(validate_thresholds(high).map(|w| w.len()), Ok(1));
        let bad = ThresholdOverrides { temp_c: Some(20.0), ..ThresholdOverrides::default() };
        assert!(matches!(validate_thresholds(bad), Err(MobileError::Invalid { ref field, .. }) if field == "tempC"));
        assert!(
            matches!(check_hazard_report(" ".into()), Err(MobileError::Invalid { ref field, .. }) if field == "description")
        );
        assert!(check_device_time("2026-12-06T08:10:00Z".into(), "2026-12-06T08:00:00Z".into()).is_err());
        assert!(check_device_time("2026-12-06T08:04:00Z".into(), "2026-12-06T08:00:00Z".into()).is_ok());
        assert!(!is_checkpoint_qr("https://example.com".into()));
    }
}
