//! The GraphQL API: thin resolvers over [`crate::service::Services`].
//!
//! Layout: `guard` (permission checks, the one place they happen), `object` (output types
//! wrapping domain and service types), `input` (input types and their conversion), `query`,
//! `mutation` (the core root parts), `subscription` (live feeds), `notify` (push tokens, preferences, escalation, delivery log), `hazards` (hazards, events, dead letters and readings:
//! types and root parts), `commands` (remote commands: types and root parts), `workorders` (work orders, dispatch and verification), `patrol` (checkpoints, plans, tasks, check-ins), `field` (offline sync, re-authentication, attachments), `identity` (device MQTT credentials). The roots [`Query`] and [`Mutation`] merge the parts. Resolvers
//! never touch the database; the `///` line on each becomes the schema description.

pub mod attachments;
pub mod commands;
pub mod field;
pub mod guard;
pub mod hazards;
pub mod identity;
pub mod input;
pub mod mutation;
pub mod notify;
pub mod object;
pub mod patrol;
pub mod query;
pub mod subscription;
pub mod workorders;

use async_graphql::{MergedObject, Schema};

use crate::service::Services;

/// Read operations.
#[derive(MergedObject, Default)]
pub struct Query(
    query::CoreQuery,
    hazards::HazardQuery,
    notify::NotifyQuery,
    commands::CommandQuery,
    workorders::WorkOrderQuery,
    patrol::PatrolQuery,
    field::FieldQuery,
    attachments::AttachmentQuery,
);

/// Write operations. Every one of them is recorded in the operation log.
#[derive(MergedObject, Default)]
pub struct Mutation(
    mutation::CoreMutation,
    hazards::HazardMutation,
    notify::NotifyMutation,
    commands::CommandMutation,
    workorders::WorkOrderMutation,
    patrol::PatrolMutation,
    field::FieldMutation,
    identity::IdentityMutation,
);

/// The executable schema.
pub type AppSchema = Schema<Query, Mutation, subscription::Subscription>;

/// Deepest query accepted (the explorer's introspection query needs 13).
pub const MAX_DEPTH: usize = 16;
/// Largest query complexity accepted (fields counted, list fields weighted by `first`).
pub const MAX_COMPLEXITY: usize = 5000;

/// Builds the schema with its limits. `services` may be absent for printing the SDL.
pub fn schema(services: Option<Services>) -> AppSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), subscription::Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(16);
    if let Some(s) = services {
        builder = builder.data(s);
    }
    builder.finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    schema(None).sdl()
}

/// Result of a resolver: errors carry `extensions.code` (see [`crate::error::ApiError`]).
pub type Result<T> = std::result::Result<T, crate::error::ApiError>;

/// A lookup for an optional field: `NOT_FOUND` (gone, or outside the caller's sight) and
/// `FORBIDDEN` are `null`; any other error — a database outage above all — is returned, not
/// turned into `null`, which read as "not found" (issue 16).
pub(crate) fn absent<T>(found: crate::error::AppResult<T>) -> Result<Option<T>> {
    use crate::error::AppError;
    match found {
        Ok(v) => Ok(Some(v)),
        Err(AppError::NotFound(_) | AppError::Forbidden(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The client's address, for login rate limiting.
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);

#[cfg(test)]
mod tests {
    use super::absent;
    use crate::error::AppError;

    /// A database outage behind an optional field is an error, not `null` ("not found").
    #[test]
    fn only_absence_reads_as_null() {
        assert!(matches!(absent(Ok::<_, AppError>(1)), Ok(Some(1))));
        assert!(matches!(absent::<()>(Err(AppError::NotFound("device"))), Ok(None)));
        assert!(matches!(absent::<()>(Err(AppError::Forbidden("out of scope".into()))), Ok(None)));
        let outage = absent::<()>(Err(AppError::Unavailable("database unavailable".into())));
        assert!(matches!(outage, Err(crate::error::ApiError(AppError::Unavailable(_)))));
        assert!(absent::<()>(Err(AppError::Internal("no such table".into()))).is_err());
    }
}
