//! Device accounts in Mosquitto's dynamic security: one client and one role per device,
//! whose access lists are written from [`sparkwatch_domain::identity`] (the rules of the
//! embedded broker's gate and the EMQX hooks), and the server's own account.
//!
//! - Device client: username = client id = the serial (the client id is pinned, so nobody
//!   else can take it and the device cannot take another), the secret as password, the text
//!   name [`DEVICE_MARK`] (how Sparkwatch knows its own accounts from the operator's), and
//!   the role `sparkwatch-device-{serial}`.
//! - Device role: `publishClientSend` allowed on the device's own device → server topics,
//!   `subscribeLiteral` and `publishClientReceive` allowed on its own `cmd`, then deny
//!   everything else at a lower priority, so the result does not depend on the broker's
//!   default access.
//! - Server role `sparkwatch-server`, given to the `--mqtt-url` account: publish the
//!   command topics, subscribe to the device topics (directly or through `$share`).

use std::collections::HashSet;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use sparkwatch_domain::identity;
use sparkwatch_domain::payload::command_topic;

use super::control::{Control, DynsecError};
use crate::service::identity::{AccountError, BrokerAccounts};

/// The text name of every client Sparkwatch creates for a device. Clients without it are
/// the operator's and are never changed or removed.
pub const DEVICE_MARK: &str = "sparkwatch device";
/// The server account's role.
pub const SERVER_ROLE: &str = "sparkwatch-server";

/// The role of the device `serial`.
pub fn device_role(serial: &str) -> String {
    format!("sparkwatch-device-{serial}")
}

/// Sparkwatch's side of the plugin: its administrator connection and the rules.
pub struct DynsecAccounts {
    control: Control,
    prefix: String,
    /// User names and client ids no device account may take: the administrator's, the
    /// server's account and client ids.
    reserved: Vec<String>,
    /// Serials whose account this process wrote. The account is written before the digest
    /// is committed, so the reconciliation must not take such an account for a stale one
    /// (the demo issues credentials while the keeper runs).
    written: Mutex<HashSet<String>>,
}

/// What [`DynsecAccounts::reconcile`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Device accounts kept (their device has credentials, or this process wrote them).
    pub kept: usize,
    /// Device accounts removed (device deleted, or credentials Sparkwatch does not know).
    pub removed: usize,
    /// Devices with credentials but no account: their secret must be issued again.
    pub missing: Vec<String>,
}

fn acl(acltype: &str, topic: &str, allow: bool, priority: i64) -> Value {
    json!({ "acltype": acltype, "topic": topic, "allow": allow, "priority": priority })
}

impl DynsecAccounts {
    /// Wraps an administrator connection; `reserved` are the names no device may take.
    pub fn new(control: Control, prefix: &str, reserved: Vec<String>) -> DynsecAccounts {
        DynsecAccounts { control, prefix: prefix.trim_end_matches('/').to_owned(), reserved, written: Mutex::default() }
    }

    /// The administrator connection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The device role's access list, from the same rules as the gate.
    fn device_acls(&self, serial: &str) -> Vec<Value> {
        let mut acls: Vec<Value> = identity::publish_topics(&self.prefix, serial)
            .iter()
            .map(|t| acl("publishClientSend", t, true, 10))
            .collect();
        let cmd = command_topic(&self.prefix, serial);
        debug_assert!(identity::may_subscribe(&self.prefix, serial, &cmd));
        acls.push(acl("subscribeLiteral", &cmd, true, 10));
        acls.push(acl("publishClientReceive", &cmd, true, 10));
        // Everything else is refused whatever the broker's default access says. `#` does
        // not match `$` topics, so the plugin's control topic is refused by name too (2.0.11
        // already ignores devices there even with an open default: tests/tests/dynsec.rs).
        for kind in ["publishClientSend", "publishClientReceive", "subscribePattern"] {
            acls.push(acl(kind, "#", false, 0));
            acls.push(acl(kind, "$CONTROL/#", false, 0));
        }
        acls
    }

    /// Whether a device may have an account named `serial`: the shape rules of the gate
    /// plus the administrator's and server's names.
    fn check_name(&self, serial: &str) -> Result<(), AccountError> {
        let reserved: Vec<&str> = self.reserved.iter().map(String::as_str).collect();
        identity::connect_serial(serial, Some(serial), true, &reserved).map(|_| ()).map_err(|why| {
            AccountError::Taken(format!("the serial {serial} cannot be an MQTT account name ({})", why.describe()))
        })
    }

    /// The client `username`, if the plugin has it.
    async fn client(&self, username: &str) -> Result<Option<Value>, DynsecError> {
        match self.control.one(json!({ "command": "getClient", "username": username })).await {
            Ok(data) => Ok(Some(data.get("client").cloned().unwrap_or(data))),
            Err(e) if e.refused_as("Client not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn put(&self, serial: &str, secret: &str) -> Result<(), AccountError> {
        self.check_name(serial)?;
        self.written().insert(serial.to_owned());
        let role = device_role(serial);
        let answers = self
            .control
            .run(vec![
                json!({ "command": "createRole", "rolename": role, "textname": DEVICE_MARK, "acls": self.device_acls(serial) }),
                json!({
                    "command": "createClient", "username": serial, "clientid": serial, "password": secret,
                    "textname": DEVICE_MARK, "roles": [{ "rolename": role }],
                }),
            ])
            .await
            .map_err(unavailable)?;
        let mut answers = answers.into_iter();
        match answers.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) if e.refused_as("Role already exists") => {}
            Some(Err(e)) => return Err(unavailable(e)),
            None => {}
        }
        match answers.next() {
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) if e.refused_as("Client already exists") => {}
            Some(Err(e)) => return Err(unavailable(e)),
            None => return Err(AccountError::Unavailable("no answer to createClient".into())),
        }
        // Rotation. Only a client Sparkwatch created may be changed: a device whose serial
        // is the name of an operator's account must not take it over.
        let existing = self.client(serial).await.map_err(unavailable)?;
        if existing.as_ref().and_then(|c| c.get("textname")).and_then(Value::as_str) != Some(DEVICE_MARK) {
            return Err(AccountError::Taken(format!(
                "the MQTT broker has an account named {serial} that Sparkwatch did not create"
            )));
        }
        // Mosquitto disconnects the client's open sessions when its password changes
        // (setClientPassword kicks it: tests/tests/dynsec.rs holds a session across a
        // rotation), so the old secret's sessions end here.
        self.control
            .one(json!({ "command": "setClientPassword", "username": serial, "password": secret }))
            .await
            .map_err(unavailable)?;
        // Repairs an account an operator edited by hand (`addClientRole` twice is an error).
        let has_role = existing.as_ref().and_then(|c| c.get("roles")?.as_array().cloned()).is_some_and(|roles| {
            roles.iter().any(|r| r.get("rolename").and_then(Value::as_str) == Some(role.as_str()))
        });
        // Each change costs a rewrite of Mosquitto's state file: repair only what differs.
        let mut repair = Vec::new();
        if existing.as_ref().and_then(|c| c.get("clientid")).and_then(Value::as_str) != Some(serial) {
            repair.push(json!({ "command": "setClientId", "username": serial, "clientid": serial }));
        }
        if !has_role {
            repair.push(json!({ "command": "addClientRole", "username": serial, "rolename": role }));
        }
        if repair.is_empty() {
            return Ok(());
        }
        for answer in self.control.run(repair).await.map_err(unavailable)? {
            answer.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn remove(&self, serial: &str) -> Result<(), AccountError> {
        if self.check_name(serial).is_err() {
            return Ok(()); // never created
        }
        match self.client(serial).await.map_err(unavailable)? {
            Some(c) if c.get("textname").and_then(Value::as_str) == Some(DEVICE_MARK) => {}
            _ => return Ok(()), // none, or the operator's
        }
        self.written().remove(serial);
        self.delete(serial).await.map_err(unavailable)
    }

    /// Deletes a device's client (Mosquitto disconnects it) and role.
    async fn delete(&self, serial: &str) -> Result<(), DynsecError> {
        let answers = self
            .control
            .run(vec![
                json!({ "command": "deleteClient", "username": serial }),
                json!({ "command": "deleteRole", "rolename": device_role(serial) }),
            ])
            .await?;
        for a in answers {
            match a {
                Ok(_) => {}
                Err(e) if e.refused_as("Client not found") || e.refused_as("Role not found") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Gives the `--mqtt-url` account (`user`) the server's role, creating the account with
    /// `password` when it does not exist (a separate administrator account was given).
    pub async fn ensure_server_account(&self, user: &str, password: &str) -> Result<(), DynsecError> {
        let p = &self.prefix;
        let mut acls = vec![acl("publishClientSend", &format!("{p}/+/cmd"), true, 10)];
        for pattern in [format!("{p}/#"), format!("$share/+/{p}/#")] {
            acls.push(acl("subscribePattern", &pattern, true, 10));
        }
        acls.push(acl("publishClientReceive", &format!("{p}/#"), true, 10));
        match self
            .control
            .one(json!({ "command": "createRole", "rolename": SERVER_ROLE, "textname": "sparkwatch server", "acls": acls }))
            .await
        {
            Ok(_) => {}
            Err(e) if e.refused_as("Role already exists") => {}
            Err(e) => return Err(e),
        }
        let roles: Vec<String> = match self.client(user).await? {
            Some(c) => c
                .get("roles")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(|r| r.get("rolename")?.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            None => {
                let create = json!({
                    "command": "createClient", "username": user, "password": password,
                    "textname": "sparkwatch server", "roles": [{ "rolename": SERVER_ROLE }],
                });
                return self.control.one(create).await.map(|_| ());
            }
        };
        if !roles.iter().any(|r| r == SERVER_ROLE) {
            self.control.one(json!({ "command": "addClientRole", "username": user, "rolename": SERVER_ROLE })).await?;
        }
        Ok(())
    }

    /// The user names of the device clients Sparkwatch created.
    pub async fn device_clients(&self) -> Result<Vec<String>, DynsecError> {
        let data =
            self.control.one(json!({ "command": "listClients", "verbose": true, "count": -1, "offset": 0 })).await?;
        Ok(data
            .get("clients")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|c| c.get("textname").and_then(Value::as_str) == Some(DEVICE_MARK))
                    .filter_map(|c| c.get("username")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Brings the plugin in line with the database at start: device accounts whose device
    /// is gone or has no credentials are removed. `with_credentials` must be read *after*
    /// the plugin's list (this function does so through the closure), so that an account
    /// created meanwhile is never taken for a stale one. Accounts cannot be created here:
    /// the database keeps only digests, and the plugin needs the secret itself.
    pub async fn reconcile<F>(&self, with_credentials: F) -> anyhow::Result<Reconciled>
    where
        F: AsyncFnOnce() -> anyhow::Result<Vec<String>>,
    {
        let present = self.device_clients().await?;
        let known: HashSet<String> = with_credentials().await?.into_iter().collect();
        let mut done = Reconciled::default();
        let present_set: HashSet<&str> = present.iter().map(String::as_str).collect();
        for serial in &present {
            let written = self.written().contains(serial);
            if known.contains(serial) || written {
                done.kept += 1;
            } else {
                self.delete(serial).await?;
                done.removed += 1;
            }
        }
        let written = self.written().clone();
        done.missing =
            known.iter().filter(|s| !present_set.contains(s.as_str()) && !written.contains(*s)).cloned().collect();
        done.missing.sort();
        Ok(done)
    }
}

fn unavailable(e: DynsecError) -> AccountError {
    AccountError::Unavailable(format!("{} ({})", e, e.code()))
}

impl BrokerAccounts for DynsecAccounts {
    fn put_device<'a>(&'a self, serial: &'a str, secret: &'a str) -> BoxFuture<'a, Result<(), AccountError>> {
        Box::pin(self.put(serial, secret))
    }

    fn remove_device<'a>(&'a self, serial: &'a str) -> BoxFuture<'a, Result<(), AccountError>> {
        Box::pin(self.remove(serial))
    }
}
