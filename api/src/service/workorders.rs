//! Work orders and hazards to closure: use cases (filled in by the work-order change).

use super::Services;
use crate::error::AppResult;

impl Services {
    /// Fires a work-order reminder (overdue orders); `None` when `r` is not one.
    pub(crate) async fn fire_work_order_reminder(
        &self,
        r: &sparkwatch_entity::reminder::Model,
    ) -> AppResult<Option<usize>> {
        let _ = r;
        Ok(None)
    }
}
