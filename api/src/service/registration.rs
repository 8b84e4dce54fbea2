//! Who may register which device, for a platform shared by tenants who do not trust each
//! other (issue 14; docs/MODBUS.md "Hosted deployments"):
//!
//! - **Gateway ownership.** A Modbus gateway address (`host:port`) belongs to the first
//!   tenant that registers a device on it. Another tenant is refused (`REFUSED`, field
//!   `host`, reason `GATEWAY_TAKEN`) with a message that does not say whose it is. When the
//!   owner's last device on it is removed the address stays the owner's for
//!   [`GATEWAY_HOLD_DAYS`], so a tenant cannot take over a gateway that is briefly unused
//!   (a device being replaced) and read or command it.
//! - **Allowed networks.** A gateway's host must resolve to an address inside
//!   `--modbus-allow-networks` (`REFUSED`, field `host`, reason `NETWORK_NOT_ALLOWED`); a
//!   name that does not resolve is refused the same way, so registration does not tell a
//!   tenant which internal names exist. The poller checks again on every connection.
//! - **Serial claiming** (`--serial-claiming`). A device is registered by its serial plus the
//!   claim code from its label, checked against the pool the platform admin loaded from the
//!   manufacturer's list. A missing or wrong code and a serial another tenant already has
//!   get the same answer (`REFUSED`, field `claimCode`, reason `CLAIM_INVALID`), so answers
//!   never reveal other tenants' serials. Failed claims are rate-limited per tenant. The pool
//!   keeps an HMAC-SHA256 of each code keyed with its serial, never the code. Operators at the
//!   command line (import, demo) act for the platform and need no claim code.
//!
//! Without claiming, a serial another tenant has is still refused without a `CONFLICT` that
//! names it (`REFUSED`, field `serial`, reason `SERIAL_UNAVAILABLE`); only a serial of the
//! caller's own tenant is a `CONFLICT`.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sea_orm::DatabaseTransaction;
use sha2::Sha256;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::ids::TenantId;
use sparkwatch_domain::site::{DeviceDraft, DeviceTransport};

use super::Services;
use super::identity::{hex, unhex};
use crate::auth::rate_limit::{Limits, LoginLimiter};
use crate::auth::{Actor, Principal};
use crate::error::{AppError, AppResult};
use crate::ingest::modbus::network::{AllowedNetworks, endpoint_key};
use crate::store::oplog::Entry;
use crate::store::registration as st;

/// Days a gateway address stays its owner's after the owner's last device on it is removed.
pub const GATEWAY_HOLD_DAYS: i64 = 7;

/// How long resolving a gateway's host name may take at registration.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Failed claims a tenant may make per window before `RATE_LIMITED`.
const CLAIM_FAILURES: usize = 10;

/// Most claims one load takes (a larger list is loaded in parts).
const MAX_CLAIMS_PER_LOAD: usize = 100_000;

/// The registration settings of the platform.
#[derive(Clone, Debug, Default)]
pub struct RegistrationPolicy {
    /// Where Modbus gateways may be (`--modbus-allow-networks`).
    pub networks: AllowedNetworks,
    /// Register devices by serial plus claim code only (`--serial-claiming`).
    pub serial_claiming: bool,
}

/// One line of a manufacturer's list: a serial and the claim code on its label.
#[derive(Clone, Debug)]
pub struct SerialClaim {
    /// The device serial.
    pub serial: String,
    /// The claim code as printed.
    pub code: String,
}

/// The limiter of failed claims (per tenant).
pub(crate) fn claim_limiter() -> LoginLimiter {
    LoginLimiter::new(Limits {
        account_failures: CLAIM_FAILURES,
        account_window: chrono::Duration::minutes(15),
        address_attempts: 10_000,
        address_window: chrono::Duration::minutes(1),
    })
}

fn gateway_taken() -> AppError {
    AppError::Refused {
        reason: "GATEWAY_TAKEN",
        field: "host",
        message: "this gateway address cannot be registered: it is in use or reserved".into(),
    }
}

fn network_refused() -> AppError {
    AppError::Refused {
        reason: "NETWORK_NOT_ALLOWED",
        field: "host",
        message: "this gateway address is not in a network this platform may poll".into(),
    }
}

fn claim_refused() -> AppError {
    AppError::Refused {
        reason: "CLAIM_INVALID",
        field: "claimCode",
        message: "this serial cannot be registered with this claim code; check the code on the device's label".into(),
    }
}

fn serial_refused() -> AppError {
    AppError::Refused {
        reason: "SERIAL_UNAVAILABLE",
        field: "serial",
        message: "this serial cannot be registered; if the device is yours, ask the platform operator".into(),
    }
}

/// Claim codes as people type them: case, spaces and dashes do not matter.
fn normalize_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_uppercase).collect()
}

fn claim_mac(serial: &str, code: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(serial.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(normalize_code(code).as_bytes());
    mac
}

/// The stored digest of a claim code: HMAC-SHA256 keyed with the serial, so equal codes of
/// two serials differ and a digest copied to another serial does not verify.
fn claim_digest(serial: &str, code: &str) -> String {
    format!("c1:{}", hex(&claim_mac(serial, code).finalize().into_bytes()))
}

/// Whether `code` is `serial`'s claim code, in constant time.
fn claim_verifies(serial: &str, code: &str, stored: &str) -> bool {
    let Some(expected) = stored.strip_prefix("c1:").and_then(unhex) else { return false };
    claim_mac(serial, code).verify_slice(&expected).is_ok()
}

impl Services {
    /// The platform's registration settings.
    pub fn registration_policy(&self) -> &RegistrationPolicy {
        &self.inner.registration
    }

    /// Checks a Modbus gateway's host against the allowed networks (before the transaction:
    /// it may wait for DNS). Returns the addresses it resolved to (none for MQTT devices).
    pub(crate) async fn check_gateway_network(&self, draft: &DeviceDraft) -> AppResult<Vec<SocketAddr>> {
        let (DeviceTransport::ModbusTcp, Some(host), Some(port)) = (draft.transport, &draft.host, draft.port) else {
            return Ok(Vec::new());
        };
        self.inner.registration.networks.resolve(host, port, RESOLVE_TIMEOUT).await.map_err(|refusal| {
            tracing::info!(serial = %draft.serial, %refusal, "gateway registration refused");
            network_refused()
        })
    }

    /// Checks that `tenant` may register `serial` (with `claim` when claiming is on).
    pub(crate) async fn check_serial(
        &self,
        tx: &DatabaseTransaction,
        who: &Principal,
        tenant: TenantId,
        serial: &str,
        claim: Option<&str>,
    ) -> AppResult<()> {
        let owner = st::serial_owner(tx, serial).await?;
        if owner == Some(tenant) {
            return Err(AppError::Conflict(format!("a device with serial `{serial}` is already registered")));
        }
        if !self.inner.registration.serial_claiming || matches!(who.actor, Actor::System) {
            return match owner {
                Some(_) => Err(serial_refused()),
                None => Ok(()),
            };
        }
        let (key, now) = (tenant.to_string(), self.now());
        self.inner.claims.check(&key, &key, now).map_err(|retry_after_s| AppError::RateLimited { retry_after_s })?;
        let valid = match (claim, st::claim_digest(tx, serial).await?) {
            (Some(code), Some(stored)) => claim_verifies(serial, code, &stored),
            _ => false,
        };
        // A serial of another tenant reads exactly like a wrong code, and counts as a failure.
        if !valid || owner.is_some() {
            self.inner.claims.failed(&key, now);
            return Err(claim_refused());
        }
        Ok(())
    }

    /// Makes a Modbus draft's gateway address the tenant's, or refuses. `resolved` are the
    /// addresses its host resolved to: one owned by another tenant under its own spelling
    /// (an IP address registered directly) is refused as well.
    pub(crate) async fn take_gateway(
        &self,
        tx: &DatabaseTransaction,
        tenant: TenantId,
        draft: &DeviceDraft,
        resolved: &[SocketAddr],
    ) -> AppResult<()> {
        let (DeviceTransport::ModbusTcp, Some(host), Some(port)) = (draft.transport, &draft.host, draft.port) else {
            return Ok(());
        };
        let endpoint = endpoint_key(host, port);
        let now = self.now();
        let free_before = now - chrono::Duration::days(GATEWAY_HOLD_DAYS);
        for alias in resolved.iter().map(|a| endpoint_key(&a.ip().to_string(), a.port())) {
            if alias != endpoint && st::held_by_other(tx, &alias, tenant, free_before).await? {
                return Err(gateway_taken());
            }
        }
        if st::tenants_on(tx, &endpoint, None).await?.iter().any(|t| *t != tenant)
            || !st::take_gateway(tx, &endpoint, tenant, now, free_before).await?
        {
            return Err(gateway_taken());
        }
        Ok(())
    }

    /// Starts the hold period of a draft's gateway address when the tenant has no device
    /// left on it (after the device was deleted, moved to another address or made MQTT).
    pub(crate) async fn release_gateway(
        &self,
        tx: &DatabaseTransaction,
        tenant: TenantId,
        before: &DeviceDraft,
    ) -> AppResult<()> {
        if let (DeviceTransport::ModbusTcp, Some(host), Some(port)) = (before.transport, &before.host, before.port) {
            st::release_gateway_if_unused(tx, &endpoint_key(host, port), tenant, self.now()).await?;
        }
        Ok(())
    }

    /// Loads claim codes into the pool (a manufacturer's list; platform admins only). A
    /// serial already in the pool gets the new code. Returns how many were loaded.
    pub async fn load_serial_claims(&self, who: &Principal, claims: Vec<SerialClaim>) -> AppResult<usize> {
        who.require(Permission::TenantManage)?;
        if claims.len() > MAX_CLAIMS_PER_LOAD {
            return Err(AppError::invalid(
                "claims",
                format!("at most {MAX_CLAIMS_PER_LOAD} claims per load; split the list"),
            ));
        }
        let mut rows = Vec::with_capacity(claims.len());
        for (i, c) in claims.iter().enumerate() {
            let serial = sparkwatch_domain::validate::device_serial(&format!("claims[{i}].serial"), &c.serial)?;
            let code = normalize_code(&c.code);
            if !(6..=64).contains(&code.len()) || !code.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                return Err(AppError::invalid(
                    &format!("claims[{i}].code"),
                    "must be 6–64 letters and digits (spaces and dashes are ignored)",
                ));
            }
            let digest = claim_digest(&serial, &code);
            rows.push((serial, digest));
        }
        let count = rows.len();
        let tx = self.begin().await?;
        st::put_claims(&tx, rows, self.now()).await?;
        self.log(
            &tx,
            who,
            Entry::new(None, "claims.load", "serial_claims", None).after(Some(serde_json::json!({ "count": count }))),
        )
        .await?;
        tx.commit().await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_digests_verify_only_their_serial_and_code() {
        let stored = claim_digest("SW-1", "abcd-1234");
        assert!(claim_verifies("SW-1", "ABCD1234", &stored), "case and dashes do not matter");
        assert!(claim_verifies("SW-1", " abcd 1234 ", &stored));
        assert!(!claim_verifies("SW-1", "ABCD1235", &stored));
        assert!(!claim_verifies("SW-2", "ABCD1234", &stored), "a digest copied to another serial must not verify");
        assert!(!claim_verifies("SW-1", "ABCD1234", "garbage"));
        assert!(!stored.contains("ABCD1234"));
    }
}
