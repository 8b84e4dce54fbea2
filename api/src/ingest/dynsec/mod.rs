//! Device identity on an external Mosquitto (`--mqtt-dynsec`): Sparkwatch keeps one client
//! and one role per device in Mosquitto's dynamic-security plugin, so that the broker
//! enforces the rules of the embedded broker's gate (DEVICE-PROTOCOL.md §3).
//!
//! - [`control`] — request/answer over `$CONTROL/dynamic-security/v1`, matched by
//!   correlation data, with timeouts and coded errors.
//! - [`accounts`] — devices → clients and roles (access lists from
//!   `sparkwatch_domain::identity`), the server's account, and the reconciliation at start.
//!
//! Secrets reach the plugin only when they are issued (the database keeps digests), so an
//! account is created or its password changed at issue time, before the digest is stored;
//! at start the keeper removes accounts whose device is gone and reports devices whose
//! account is missing (docs/DEVICE-IDENTITY.md).

pub mod accounts;
pub mod control;

use std::sync::Arc;
use std::time::Duration;

use crate::service::Services;

pub use accounts::{DynsecAccounts, Reconciled};
pub use control::{Control, DynsecError};

/// Where and as whom Sparkwatch administers the plugin.
#[derive(Clone, Debug)]
pub struct DynsecSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The administrator's user name and password.
    pub admin: (String, String),
    /// The server's own account (`--mqtt-url`), given the server role.
    pub server: Option<(String, String)>,
    /// The administrator connection's client id (`{--mqtt-client-id}-dynsec`).
    pub client_id: String,
    /// Topic prefix.
    pub prefix: String,
    /// User names and client ids no device may take.
    pub reserved: Vec<String>,
}

impl DynsecSettings {
    /// From the configuration: `None` without `--mqtt-dynsec`. The administrator is
    /// `--mqtt-dynsec-admin-user` when given, else the `--mqtt-url` account.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Option<DynsecSettings>> {
        let crate::config::Broker::External(url) = &config.broker else { return Ok(None) };
        if !config.mqtt_dynsec {
            return Ok(None);
        }
        let url = crate::ingest::mqtt::MqttSettings::from_url(url, &config.mqtt_client_id, &config.mqtt_prefix, None)?;
        let server = url.credentials.clone().filter(|(u, _)| !u.is_empty());
        let admin = match (&config.mqtt_dynsec_admin, &server) {
            (Some((u, p)), _) => (u.clone(), p.expose().to_owned()),
            (None, Some(login)) => login.clone(),
            (None, None) => anyhow::bail!(
                "--mqtt-dynsec needs an account that may administer the plugin: put it in --mqtt-url \
                 (mqtt://user:password@host:port) or give --mqtt-dynsec-admin-user and --mqtt-dynsec-admin-password"
            ),
        };
        Ok(Some(DynsecSettings {
            host: url.host,
            port: url.port,
            admin,
            server,
            client_id: format!("{}-dynsec", config.mqtt_client_id),
            prefix: config.mqtt_prefix.clone(),
            reserved: vec![config.mqtt_client_id.clone(), format!("{}-dynsec", config.mqtt_client_id)],
        }))
    }
}

/// Opens the administrator connection (it connects and reconnects in the background) and
/// returns the accounts; requests wait for the connection up to [`control::ANSWER_WITHIN`].
pub fn open(settings: &DynsecSettings) -> Arc<DynsecAccounts> {
    let (user, password) = &settings.admin;
    let control = Control::connect(&settings.host, settings.port, &settings.client_id, user, password);
    let mut reserved = settings.reserved.clone();
    reserved.push(user.clone());
    if let Some((u, _)) = &settings.server {
        reserved.push(u.clone());
    }
    Arc::new(DynsecAccounts::new(control, &settings.prefix, reserved))
}

/// Once connected: gives the server's account its role, then removes the accounts of
/// devices that are gone or have no credentials, and warns of devices whose account is
/// missing (their secret must be issued again).
pub async fn prepare(
    services: &Services,
    accounts: &DynsecAccounts,
    settings: &DynsecSettings,
    within: Duration,
) -> anyhow::Result<Reconciled> {
    accounts.control().until_ready(within).await?;
    if let Some((u, p)) = &settings.server {
        accounts.ensure_server_account(u, p).await?;
    }
    let db = services.store().db().clone();
    let done =
        accounts.reconcile(async move || Ok(crate::store::identity::mqtt_serials_with_credentials(&db).await?)).await?;
    tracing::info!(kept = done.kept, removed = done.removed, "Mosquitto dynamic-security accounts reconciled");
    if !done.missing.is_empty() {
        tracing::warn!(
            devices = done.missing.len(),
            first = %done.missing.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
            "devices with credentials have no account at the broker and cannot connect: issue their credentials \
             again (sparkwatch devices credentials --serial …)"
        );
    }
    Ok(done)
}

/// The keeper started with `serve`: [`prepare`], retried every few seconds until it
/// succeeds (the broker may start after Sparkwatch).
pub async fn keep(services: Services, accounts: Arc<DynsecAccounts>, settings: DynsecSettings) {
    loop {
        match prepare(&services, &accounts, &settings, Duration::from_secs(10)).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reconcile the Mosquitto dynamic-security accounts yet; retrying");
                // Retry pacing, not synchronisation.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
