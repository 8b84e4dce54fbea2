//! Newtype ids. Every aggregate has its own id type so a `DeviceId` can never be passed
//! where a `DetectorId` is expected. Ids are UUIDv7 (time-ordered, so they double as a
//! stable sort key for cursor pagination); generating one reads the clock, so that
//! happens outside this crate and the value is wrapped here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type!(
    /// A customer organisation, the billing and isolation unit.
    TenantId,
    /// A person who signs in.
    UserId,
    /// A tenant-defined role (built-in roles are identified by their key instead).
    RoleId,
    /// A monitored site.
    ProjectId,
    /// A monitoring unit or gateway, identified in the field by its serial.
    DeviceId,
    /// An electrical-fire detector on a device's bus.
    DetectorId,
    /// An integrator's API key.
    ApiKeyId,
    /// One entry of the append-only operation log.
    OperationId,
    /// A remote command sent to a detector.
    CommandId,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let id = ProjectId::from_uuid(uuid);
        assert_eq!(id.to_string().parse::<ProjectId>().ok(), Some(id));
        assert!("not-a-uuid".parse::<ProjectId>().is_err());
    }
}
