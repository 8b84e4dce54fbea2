//! Open WebSocket connections per caller (user or API key), capped by
//! [`super::WsLimits::max_sockets_per_user`]: one stolen token or one runaway client cannot
//! hold thousands of sockets (and their subscriptions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sparkwatch_domain::ids::{ApiKeyId, UserId};

use crate::auth::{Actor, Principal};

/// Whose connection it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    User(UserId),
    Key(ApiKeyId),
}

/// The counts, shared by every connection of the server.
#[derive(Clone, Default)]
pub(crate) struct SocketCounts {
    by_owner: Arc<Mutex<HashMap<Owner, usize>>>,
}

/// One connection's place in the counts; given back on drop.
pub(crate) struct SocketSlot {
    owner: Owner,
    counts: SocketCounts,
}

impl SocketCounts {
    /// Takes a slot for `who`'s connection, or `None` when it already holds `max`. The
    /// system principal is not counted (it never connects over WebSocket).
    pub(crate) fn take(&self, who: &Principal, max: usize) -> Result<Option<SocketSlot>, usize> {
        let owner = match who.actor {
            Actor::User(id) => Owner::User(id),
            Actor::ApiKey(id) => Owner::Key(id),
            Actor::System => return Ok(None),
        };
        let mut map = self.by_owner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(owner).or_default();
        if *n >= max {
            return Err(*n);
        }
        *n += 1;
        Ok(Some(SocketSlot { owner, counts: self.clone() }))
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut map = self.counts.by_owner.lock().unwrap_or_else(PoisonError::into_inner);
        // The entry goes with its last connection: the map never outgrows the open sockets.
        if let Some(n) = map.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.owner);
            }
        }
    }
}
