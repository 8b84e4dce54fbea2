//! Offline-first field operations: the client id every offline-capable mutation carries,
//! and the idempotency check that makes repeating one give the result of doing it once.
//!
//! A mutation that takes a client id calls [`Services::claim`] inside its transaction,
//! before changing anything, with the id of the object it creates or changes. The claim
//! records (user, client id) → that object; when the pair was recorded before, the claim
//! answers [`Claim::Replay`] with the object of the first time and the mutation rolls back
//! and returns that object as it is now — no second object, no second transition. The
//! record is written in the same transaction as the change, so an operation that failed
//! leaves nothing behind and may be retried.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use sparkwatch_domain::field::FieldOperationKind;
use uuid::Uuid;

use super::Services;
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::field as st;

/// The identity of an offline-capable operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOp {
    /// The client-generated id (a UUID).
    pub client_id: Uuid,
    /// What the operation is.
    pub kind: FieldOperationKind,
    /// When it was made on the device, if the client said.
    pub device_at: Option<DateTime<Utc>>,
}

impl ClientOp {
    /// An operation of `kind` with the client's id, when it sent one.
    pub fn new(client_id: Option<Uuid>, kind: FieldOperationKind, device_at: Option<DateTime<Utc>>) -> Option<Self> {
        client_id.map(|client_id| ClientOp { client_id, kind, device_at })
    }
}

/// What a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First time: go ahead.
    New,
    /// Done before: answer with this object as it is now.
    Replay(Uuid),
}

impl Services {
    /// Claims (user, client id) for `entity` in `tx` (see the module docs). Without a client
    /// id there is nothing to claim. A client id used before for a different kind of
    /// operation is refused (`VALIDATION` on `clientId`).
    pub(crate) async fn claim(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        op: Option<&ClientOp>,
        entity: Uuid,
    ) -> AppResult<Claim> {
        let Some(op) = op else { return Ok(Claim::New) };
        let user = who.user_id().ok_or_else(|| {
            AppError::invalid("clientId", "client ids are for people's devices; API keys do not send them")
        })?;
        if st::record(tx, who.tenant()?, user, op.client_id, op.kind, entity, op.device_at, self.now()).await? {
            return Ok(Claim::New);
        }
        let earlier = st::recorded(tx, user, op.client_id).await?;
        match earlier {
            Some(r) if r.kind == Some(op.kind) => Ok(Claim::Replay(r.entity.unwrap_or(entity))),
            Some(_) => Err(AppError::invalid("clientId", "this client id was already used for a different operation")),
            // Recorded and gone between the two statements cannot happen (rows are never
            // deleted); answer as a conflict rather than guess.
            None => Err(AppError::Conflict("the operation is being applied by another request; sync again".into())),
        }
    }
    /// Whether (user, client id) was recorded before, and for what.
    pub(crate) async fn recorded_op(&self, who: &Principal, client_id: Uuid) -> AppResult<Option<st::Recorded>> {
        match who.user_id() {
            Some(user) => Ok(st::recorded(self.inner.store.db(), user, client_id).await?),
            None => Ok(None),
        }
    }
}
