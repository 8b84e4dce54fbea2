//! Device identity (DEVICE-PROTOCOL.md §3): issuing MQTT credentials and checking them at
//! CONNECT.
//!
//! A secret is 32 random bytes (base64url, 43 characters), shown once. The store keeps only
//! HMAC-SHA256(key = the device id, secret): a keyed digest rather than argon2 because the
//! secret is a random 256-bit value that no dictionary or brute force can reach, and because
//! a reconnect storm of thousands of devices after an outage must cost microseconds per
//! device, not a second of CPU each. Keying by the device id means two devices never share
//! a digest and a digest copied onto another device's row does not verify.
//!
//! An external broker that keeps its own accounts (Mosquitto's dynamic security) is told of
//! every issued secret *before* the digest is stored, so a broker that cannot be reached
//! leaves the old secret in force on both sides and the caller gets UNAVAILABLE.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sparkwatch_domain::identity::{self, ConnectRefusal};
use sparkwatch_domain::ids::{DeviceId, TenantId};
use sparkwatch_domain::site::{Device, DeviceTransport};

use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::identity as st;
use crate::store::oplog::Entry;

/// The credentials of an MQTT device, as issued: the only time the password is shown.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCredentials {
    /// The device.
    pub device_id: DeviceId,
    /// MQTT username and client id: the serial.
    pub username: String,
    /// MQTT password: the device secret.
    pub password: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
}

/// A broker that keeps device accounts of its own (Mosquitto dynamic security): Sparkwatch
/// creates, rotates and removes them as it issues secrets and deletes devices.
pub trait BrokerAccounts: Send + Sync + 'static {
    /// Creates the device's account, or sets its new secret; the device may then publish
    /// its own topics and subscribe to its command topic only.
    fn put_device<'a>(&'a self, serial: &'a str, secret: &'a str) -> BoxFuture<'a, Result<(), AccountError>>;
    /// Removes the device's account (the device was deleted); an account Sparkwatch did not
    /// create is left alone.
    fn remove_device<'a>(&'a self, serial: &'a str) -> BoxFuture<'a, Result<(), AccountError>>;
}

/// Why a broker did not take a device's account.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The broker cannot be reached or did not confirm: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The name belongs to an account that is not this device's (the broker's
    /// administrator, the server's account, an operator's own client): never taken over.
    #[error("{0}")]
    Taken(String),
}

impl AccountError {
    /// The error a caller sees: CONFLICT on `serial` for a taken name, else UNAVAILABLE.
    fn into_app(self, serial: &str) -> AppError {
        match self {
            AccountError::Taken(why) => AppError::Conflict(format!("{why}; give the device another serial")),
            AccountError::Unavailable(why) => AppError::Unavailable(format!(
                "the MQTT broker did not take the new secret of {serial} ({why}); the previous secret still works — \
                 try again"
            )),
        }
    }
}

/// Per-process identity settings: the external broker's account keeper, once connected,
/// and the EMQX hooks' settings when enabled.
#[derive(Default)]
pub(crate) struct Identity {
    accounts: OnceLock<Arc<dyn BrokerAccounts>>,
    hooks: OnceLock<HookSettings>,
    sessions: OnceLock<SessionEnder>,
}

/// Ends the open MQTT connections of a serial (the embedded broker's device gate), called
/// once new credentials are stored or the device is gone.
pub type SessionEnder = Arc<dyn Fn(&str) + Send + Sync>;

/// Settings of the EMQX HTTP authentication and authorisation hooks.
#[derive(Clone, Debug)]
pub struct HookSettings {
    /// The shared secret EMQX sends as `Authorization: Bearer …`.
    pub secret: String,
    /// Topic prefix (`sw`).
    pub prefix: String,
    /// Client ids no device may take (the server's own).
    pub reserved_client_ids: Vec<String>,
}

/// A hook's answer, in EMQX's words: `allow`, `deny`, or `ignore` (not a device: the next
/// authenticator or authoriser in EMQX's chain decides, e.g. its built-in database holding
/// Sparkwatch's own account).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookAnswer {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
    /// Not ours to decide.
    Ignore,
}

/// What a client asks to do with a topic (EMQX's `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicAction {
    /// Publish.
    Publish,
    /// Subscribe.
    Subscribe,
}

/// The stored digest of `secret` for `device`.
fn digest(device: DeviceId, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(device.as_uuid().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(secret.as_bytes());
    format!("h1:{}", hex(&mac.finalize().into_bytes()))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` matches the stored `stored` digest of `device`, in constant time.
fn verifies(device: DeviceId, secret: &str, stored: &str) -> bool {
    let Some(hex_digest) = stored.strip_prefix("h1:") else { return false };
    let Some(expected) = unhex(hex_digest) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(device.as_uuid().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(secret.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A new device secret: 32 random bytes from the operating system, base64url.
fn new_secret() -> String {
    crate::auth::token::random_token(32)
}

impl Services {
    /// Connects the external broker's account keeper (once, at startup).
    pub fn set_broker_accounts(&self, accounts: Arc<dyn BrokerAccounts>) {
        if self.inner.identity.accounts.set(accounts).is_err() {
            tracing::warn!("broker accounts were already connected; keeping the first");
        }
    }

    fn broker_accounts(&self) -> Option<&Arc<dyn BrokerAccounts>> {
        self.inner.identity.accounts.get()
    }

    /// Connects the embedded broker's gate (once, at startup): a rotated secret or a deleted
    /// device then ends the device's open connections at once, not at its next reconnect.
    pub fn set_session_ender(&self, end: SessionEnder) {
        if self.inner.identity.sessions.set(end).is_err() {
            tracing::warn!("a session ender was already connected; keeping the first");
        }
    }

    fn end_sessions(&self, serial: &str) {
        if let Some(end) = self.inner.identity.sessions.get() {
            end(serial);
        }
    }

    /// Issues new MQTT credentials for a visible device; an earlier secret stops working
    /// (rotation). Modbus devices have none.
    pub async fn issue_device_credentials(&self, who: &Principal, id: DeviceId) -> AppResult<DeviceCredentials> {
        let device = self.device(who, id).await?;
        self.issue_for(who, &device).await
    }

    /// Issues credentials for a device already checked to be visible to `who` (the command
    /// line and the demo look devices up by serial).
    pub async fn issue_for(&self, who: &Principal, device: &Device) -> AppResult<DeviceCredentials> {
        if device.draft.transport != DeviceTransport::Mqtt {
            return Err(AppError::invalid(
                "deviceId",
                "is a Modbus device: the server polls it, so it has no MQTT credentials",
            ));
        }
        let secret = new_secret();
        let serial = &device.draft.serial;
        if let Some(accounts) = self.broker_accounts() {
            accounts.put_device(serial, &secret).await.map_err(|e| e.into_app(serial))?;
        }
        let issued_at = self.now();
        let tx = self.begin().await?;
        st::put_credential(&tx, device.id, digest(device.id, &secret), issued_at, who.user_id()).await?;
        self.log_issue(&tx, who, device, issued_at).await?;
        tx.commit().await?;
        self.end_sessions(serial);
        tracing::info!(serial = %serial, "device credentials issued");
        Ok(DeviceCredentials { device_id: device.id, username: serial.clone(), password: secret, issued_at })
    }

    /// The device with `serial` in any tenant, for system callers (the command line, the
    /// demo) that then act inside its tenant.
    pub async fn device_by_serial_for_system(&self, serial: &str) -> AppResult<(Device, TenantId)> {
        let device = crate::store::sites::device_by_serial(self.inner.store.db(), serial)
            .await?
            .ok_or(AppError::NotFound("device"))?;
        let tenant = device.tenant_id;
        Ok((device, tenant))
    }

    /// Issues credentials for the devices with `serials` in `who`'s tenant, in one
    /// transaction (bulk onboarding, the command line). Unknown serials and Modbus devices
    /// are errors naming the serial; nothing is stored then.
    pub async fn issue_credentials_for_serials(
        &self,
        who: &Principal,
        serials: &[String],
    ) -> AppResult<Vec<DeviceCredentials>> {
        let tenant = who.tenant()?;
        let mut devices = Vec::with_capacity(serials.len());
        for serial in serials {
            let found = crate::store::sites::device_by_serial(self.inner.store.db(), serial).await?;
            match found {
                Some(d) if d.tenant_id == tenant && d.draft.transport == DeviceTransport::Mqtt => devices.push(d),
                Some(d) if d.tenant_id == tenant => {
                    return Err(AppError::invalid(
                        "serial",
                        format!("{serial} is a Modbus device: it has no MQTT credentials"),
                    ));
                }
                _ => return Err(AppError::invalid("serial", format!("no device {serial} in this tenant"))),
            }
        }
        self.issue_many(who, &devices).await
    }

    /// Issues credentials for every MQTT device of `who`'s tenant that has none yet (the
    /// upgrade to device identity).
    pub async fn issue_missing_credentials(&self, who: &Principal) -> AppResult<Vec<DeviceCredentials>> {
        let devices = st::mqtt_devices_without_credentials(self.inner.store.db(), who.tenant()?).await?;
        self.issue_many(who, &devices).await
    }

    async fn issue_many(&self, who: &Principal, devices: &[Device]) -> AppResult<Vec<DeviceCredentials>> {
        let mut issued = Vec::with_capacity(devices.len());
        for device in devices {
            let secret = new_secret();
            if let Some(accounts) = self.broker_accounts() {
                let serial = &device.draft.serial;
                accounts.put_device(serial, &secret).await.map_err(|e| e.into_app(serial))?;
            }
            issued.push((device, secret));
        }
        let issued_at = self.now();
        let tx = self.begin().await?;
        let mut out = Vec::with_capacity(issued.len());
        for (device, secret) in issued {
            st::put_credential(&tx, device.id, digest(device.id, &secret), issued_at, who.user_id()).await?;
            self.log_issue(&tx, who, device, issued_at).await?;
            out.push(DeviceCredentials {
                device_id: device.id,
                username: device.draft.serial.clone(),
                password: secret,
                issued_at,
            });
        }
        tx.commit().await?;
        for c in &out {
            self.end_sessions(&c.username);
        }
        tracing::info!(devices = out.len(), "device credentials issued");
        Ok(out)
    }

    async fn log_issue(
        &self,
        tx: &sea_orm::DatabaseTransaction,
        who: &Principal,
        device: &Device,
        issued_at: DateTime<Utc>,
    ) -> AppResult<()> {
        #[derive(Serialize)]
        struct Issued<'a> {
            serial: &'a str,
            issued_at: DateTime<Utc>,
        }
        let entry =
            Entry::new(Some(device.tenant_id), "device.credentials.issue", "device", Some(device.id.to_string()))
                .after(snapshot(&Issued { serial: &device.draft.serial, issued_at }));
        self.log(tx, who, entry).await
    }

    /// When each of `devices` last had credentials issued.
    pub async fn credentials_issued_at(&self, devices: &[DeviceId]) -> AppResult<Vec<(DeviceId, DateTime<Utc>)>> {
        Ok(st::issued_at(self.inner.store.db(), devices).await?)
    }

    /// Checks an MQTT CONNECT's serial and secret (the shape was checked by
    /// [`sparkwatch_domain::identity::connect_serial`]). Database trouble is an error, not a
    /// refusal, so the caller can answer "server unavailable" instead of "not authorized".
    pub async fn verify_device(&self, serial: &str, secret: &str) -> AppResult<Result<DeviceId, ConnectRefusal>> {
        let stored = st::credential_by_serial(self.inner.store.db(), serial).await?;
        Ok(match stored {
            Some(c) if verifies(c.device_id, secret, &c.digest) => Ok(c.device_id),
            _ => Err(ConnectRefusal::BadCredentials),
        })
    }

    /// Enables the EMQX hooks (once, at startup).
    pub fn set_mqtt_hooks(&self, hooks: HookSettings) {
        let _ = self.inner.identity.hooks.set(hooks);
    }

    /// The EMQX hooks' settings, when enabled.
    pub fn mqtt_hooks(&self) -> Option<&HookSettings> {
        self.inner.identity.hooks.get()
    }

    /// EMQX authentication: a client whose user name is a registered device's serial is
    /// checked like at the embedded broker's gate (a device without credentials yet is
    /// refused); anyone else is left to EMQX's next authenticator.
    pub async fn hook_authenticate(&self, client_id: &str, username: &str, password: &str) -> AppResult<HookAnswer> {
        let Some(hooks) = self.mqtt_hooks() else { return Ok(HookAnswer::Deny) };
        if !looks_like_device(username, &hooks.reserved_client_ids) {
            return Ok(HookAnswer::Ignore);
        }
        let reserved: Vec<&str> = hooks.reserved_client_ids.iter().map(String::as_str).collect();
        if identity::connect_serial(client_id, Some(username), !password.is_empty(), &reserved).is_err() {
            return Ok(HookAnswer::Deny);
        }
        // A serial no device has is not ours to refuse: it may be an account of EMQX's own.
        if st::credential_by_serial(self.inner.store.db(), username).await?.is_none()
            && crate::store::sites::device_by_serial(self.inner.store.db(), username).await?.is_none()
        {
            return Ok(HookAnswer::Ignore);
        }
        Ok(match self.verify_device(username, password).await? {
            Ok(_) => HookAnswer::Allow,
            Err(_) => HookAnswer::Deny,
        })
    }

    /// EMQX authorisation: a client whose client id is its user name, shaped like a serial
    /// (and not the server's), is a device: it may publish its own topics and subscribe to
    /// its own command topic, nothing else. Other clients are left to EMQX's next
    /// authoriser.
    pub fn hook_authorize(&self, client_id: &str, username: &str, topic: &str, action: TopicAction) -> HookAnswer {
        let Some(hooks) = self.mqtt_hooks() else { return HookAnswer::Deny };
        if !looks_like_device(username, &hooks.reserved_client_ids) {
            return HookAnswer::Ignore;
        }
        if client_id != username {
            return HookAnswer::Ignore;
        }
        let allowed = match action {
            TopicAction::Publish => identity::may_publish(&hooks.prefix, username, topic),
            TopicAction::Subscribe => identity::may_subscribe(&hooks.prefix, username, topic),
        };
        if allowed { HookAnswer::Allow } else { HookAnswer::Deny }
    }

    /// Removes a deleted device's account at the external broker, if there is one. A broker
    /// that cannot be reached is logged: the device's secret no longer verifies anywhere
    /// Sparkwatch answers, and the account is removed again at the next start.
    pub(crate) async fn forget_device_account(&self, serial: &str) {
        self.end_sessions(serial);
        if let Some(accounts) = self.broker_accounts()
            && let Err(e) = accounts.remove_device(serial).await
        {
            tracing::warn!(serial, error = %e, "could not remove the deleted device's MQTT account at the broker");
        }
    }
}

/// Whether a user name is a device's: shaped like a serial and not one of the server's ids.
fn looks_like_device(username: &str, reserved: &[String]) -> bool {
    !reserved.iter().any(|r| r == username)
        && sparkwatch_domain::validate::device_serial("username", username).ok().as_deref() == Some(username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_verify_only_the_secret_of_their_device() {
        let a = DeviceId::from_uuid(uuid::Uuid::now_v7());
        let b = DeviceId::from_uuid(uuid::Uuid::now_v7());
        let secret = new_secret();
        assert_eq!(secret.len(), 43);
        let stored = digest(a, &secret);
        assert!(verifies(a, &secret, &stored));
        assert!(!verifies(b, &secret, &stored), "a digest copied to another device must not verify");
        assert!(!verifies(a, &new_secret(), &stored));
        assert!(!verifies(a, &secret, "h1:zz"));
        assert!(!verifies(a, &secret, ""));
        assert_ne!(new_secret(), secret);
    }
}
