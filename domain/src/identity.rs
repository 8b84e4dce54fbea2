//! Device identity (DEVICE-PROTOCOL.md §3): who an MQTT client claims to be at CONNECT, and
//! which topics it may then touch. The embedded broker's gate, the EMQX hooks and the
//! Mosquitto dynamic-security roles all apply these rules, so the three cannot drift.
//!
//! A device connects with username = client id = its serial and password = its secret. It
//! may publish only its own device → server topics (`{prefix}/{serial}/telemetry`, `event`,
//! `status`, `cmd/ack`) and subscribe only to `{prefix}/{serial}/cmd`, with no wildcards.
//! Everything else (other devices' topics, command topics, `$SYS`, `$share`) is the
//! server's.

use crate::payload::{TopicKind, command_topic, parse_topic};

/// Why a CONNECT is refused. Every variant is answered the same way on the wire ("not
/// authorized"), so a client cannot tell an unknown serial from a wrong secret; the variant
/// is for the server's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// No username or no password.
    NoCredentials,
    /// The client id is not the username.
    ClientIdMismatch,
    /// The username is not a serial as the protocol defines it.
    NotASerial,
    /// The client id is reserved for the server (its subscriber, its probes).
    Reserved,
    /// No device has this serial, it has no credentials yet, or the secret is wrong.
    BadCredentials,
}

impl ConnectRefusal {
    /// A short phrase for logs.
    pub const fn describe(self) -> &'static str {
        match self {
            ConnectRefusal::NoCredentials => "no username or password",
            ConnectRefusal::ClientIdMismatch => "client id differs from the username",
            ConnectRefusal::NotASerial => "username is not a device serial",
            ConnectRefusal::Reserved => "client id is reserved for the server",
            ConnectRefusal::BadCredentials => "unknown serial, no credentials issued, or wrong secret",
        }
    }
}

/// Checks the shape of a CONNECT before any secret is looked at: the client id must be the
/// username, a serial, and not one of `reserved` (the server's own client ids). Returns the
/// serial to verify the password against.
pub fn connect_serial<'a>(
    client_id: &'a str,
    username: Option<&str>,
    has_password: bool,
    reserved: &[&str],
) -> Result<&'a str, ConnectRefusal> {
    let Some(username) = username.filter(|u| !u.is_empty()) else {
        return Err(ConnectRefusal::NoCredentials);
    };
    if !has_password {
        return Err(ConnectRefusal::NoCredentials);
    }
    if client_id != username {
        return Err(ConnectRefusal::ClientIdMismatch);
    }
    if reserved.contains(&client_id) {
        return Err(ConnectRefusal::Reserved);
    }
    if crate::validate::device_serial("username", client_id).ok().as_deref() != Some(client_id) {
        return Err(ConnectRefusal::NotASerial);
    }
    Ok(client_id)
}

/// Whether the device `serial` may publish on `topic`: only its own device → server topics.
pub fn may_publish(prefix: &str, serial: &str, topic: &str) -> bool {
    matches!(parse_topic(prefix, topic), Ok((s, _)) if s == serial)
}

/// Whether the device `serial` may subscribe to `filter`: only its own command topic,
/// spelled exactly (no wildcards, no shared subscription).
pub fn may_subscribe(prefix: &str, serial: &str, filter: &str) -> bool {
    filter == command_topic(prefix, serial)
}

/// The topics the device `serial` may publish on, for brokers that take explicit access
/// lists (Mosquitto's dynamic-security roles).
pub fn publish_topics(prefix: &str, serial: &str) -> Vec<String> {
    let prefix = prefix.trim_end_matches('/');
    TopicKind::ALL.iter().map(|k| format!("{prefix}/{serial}/{}", k.suffix())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_needs_matching_ids_and_a_serial() {
        let reserved = ["sparkwatch"];
        assert_eq!(connect_serial("SW-1", Some("SW-1"), true, &reserved), Ok("SW-1"));
        assert_eq!(connect_serial("SW-1", None, true, &reserved), Err(ConnectRefusal::NoCredentials));
        assert_eq!(connect_serial("SW-1", Some(""), true, &reserved), Err(ConnectRefusal::NoCredentials));
        assert_eq!(connect_serial("SW-1", Some("SW-1"), false, &reserved), Err(ConnectRefusal::NoCredentials));
        assert_eq!(connect_serial("SW-2", Some("SW-1"), true, &reserved), Err(ConnectRefusal::ClientIdMismatch));
        assert_eq!(connect_serial("sparkwatch", Some("sparkwatch"), true, &reserved), Err(ConnectRefusal::Reserved));
        for bad in ["a/b", "+", "#", " SW-1", "x".repeat(65).as_str(), "$SYS"] {
            assert_eq!(connect_serial(bad, Some(bad), true, &reserved), Err(ConnectRefusal::NotASerial), "{bad}");
        }
    }

    #[test]
    fn a_device_touches_only_its_own_topics() {
        for kind in ["telemetry", "event", "status", "cmd/ack"] {
            assert!(may_publish("sw", "A", &format!("sw/A/{kind}")));
            assert!(!may_publish("sw", "A", &format!("sw/B/{kind}")));
        }
        for topic in ["sw/A/cmd", "sw/A", "sw/A/telemetry/x", "other/A/telemetry", "$SYS/x", "sw/+/telemetry", "sw/A/#"]
        {
            assert!(!may_publish("sw", "A", topic), "{topic}");
        }
        assert!(may_subscribe("sw", "A", "sw/A/cmd"));
        for filter in ["sw/B/cmd", "sw/+/cmd", "sw/#", "#", "sw/A/#", "sw/A/telemetry", "$share/g/sw/A/cmd", "$SYS/#"] {
            assert!(!may_subscribe("sw", "A", filter), "{filter}");
        }
        assert_eq!(publish_topics("sw/", "A"), ["sw/A/telemetry", "sw/A/event", "sw/A/status", "sw/A/cmd/ack"]);
    }
}
