//! Device identity: issuing MQTT credentials (DEVICE-PROTOCOL.md §3).

use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use sparkwatch_domain::access::Permission;

use super::Result;
use super::guard::{Require, caller};
use super::input::parse_id;

/// Write operations on device identity (merged into [`super::Mutation`]).
#[derive(Default)]
pub struct IdentityMutation;

/// The MQTT credentials of a device. The password is shown only here, once: the server
/// keeps a digest of it.
#[derive(SimpleObject)]
pub struct DeviceCredentials {
    /// MQTT username, and the client id the device must connect with: its serial.
    pub username: String,
    /// MQTT password: the device secret.
    pub password: String,
    /// When it was issued; the previous secret stopped working at this moment.
    pub issued_at: DateTime<Utc>,
}

#[Object]
impl IdentityMutation {
    /// Issues MQTT credentials for a device (MQTT transport only). Calling it again rotates
    /// the secret: the old one is refused from then on, also by an external broker that
    /// Sparkwatch provisions.
    #[graphql(guard = "Require(Permission::DeviceManage)")]
    async fn issue_device_credentials(&self, ctx: &Context<'_>, device_id: ID) -> Result<DeviceCredentials> {
        let (s, who) = caller(ctx)?;
        let c = s.issue_device_credentials(who, parse_id("deviceId", &device_id)?).await?;
        Ok(DeviceCredentials { username: c.username, password: c.password, issued_at: c.issued_at })
    }
}
