//! Field operations: types and the `FieldQuery`/`FieldMutation` parts merged into the roots.

use async_graphql::Object;

/// Read operations on field.
#[derive(Default)]
pub struct FieldQuery;

#[Object]
impl FieldQuery {
    /// Placeholder until the field operations land.
    async fn field_placeholder(&self) -> bool {
        false
    }
}

/// Write operations on field.
#[derive(Default)]
pub struct FieldMutation;

#[Object]
impl FieldMutation {
    /// Placeholder until the field operations land.
    async fn field_placeholder(&self) -> bool {
        false
    }
}
