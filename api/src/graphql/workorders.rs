//! WorkOrder operations: types and the `WorkOrderQuery`/`WorkOrderMutation` parts merged into the roots.

use async_graphql::Object;

/// Read operations on workorders.
#[derive(Default)]
pub struct WorkOrderQuery;

#[Object]
impl WorkOrderQuery {
    /// Placeholder until the workorders operations land.
    async fn workorders_placeholder(&self) -> bool {
        false
    }
}

/// Write operations on workorders.
#[derive(Default)]
pub struct WorkOrderMutation;

#[Object]
impl WorkOrderMutation {
    /// Placeholder until the workorders operations land.
    async fn workorders_placeholder(&self) -> bool {
        false
    }
}
