//! CSV onboarding of devices and detectors (`sparkwatch import devices FILE.csv`).

use std::path::Path;

use crate::auth::Principal;
use crate::service::Services;

/// Imports a CSV file of devices and detectors: all rows or none.
pub async fn import_devices_file(_services: &Services, _who: &Principal, path: &Path) -> anyhow::Result<()> {
    anyhow::bail!("importing {} is being implemented", path.display())
}
