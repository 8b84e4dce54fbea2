//! Patrol: use cases (filled in by the patrol change).

use super::Services;
use crate::error::AppResult;

impl Services {
    /// Fires a patrol reminder (missed tasks); `None` when `r` is not one.
    pub(crate) async fn fire_patrol_reminder(
        &self,
        r: &sparkwatch_entity::reminder::Model,
    ) -> AppResult<Option<usize>> {
        let _ = r;
        Ok(None)
    }
}
