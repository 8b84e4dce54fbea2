//! Patrol operations: types and the `PatrolQuery`/`PatrolMutation` parts merged into the roots.

use async_graphql::Object;

/// Read operations on patrol.
#[derive(Default)]
pub struct PatrolQuery;

#[Object]
impl PatrolQuery {
    /// Placeholder until the patrol operations land.
    async fn patrol_placeholder(&self) -> bool {
        false
    }
}

/// Write operations on patrol.
#[derive(Default)]
pub struct PatrolMutation;

#[Object]
impl PatrolMutation {
    /// Placeholder until the patrol operations land.
    async fn patrol_placeholder(&self) -> bool {
        false
    }
}
