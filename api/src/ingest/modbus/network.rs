//! What the poller may reach (`--modbus-allow-networks`): a list of CIDR networks checked
//! when a gateway is registered and again on every connection the poller opens.
//!
//! Why twice: a gateway given by host name could resolve to an allowed address when it is
//! registered and to an internal one later (DNS rebinding). So the poller resolves the name
//! itself, keeps only allowed addresses and connects to exactly the address it checked —
//! it never hands the name to a second resolution.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// The networks Modbus gateways may be in. The empty list allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedNetworks {
    nets: Vec<IpNet>,
}

/// Why a gateway address may not be polled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkRefusal {
    /// The host name did not resolve (or not in time).
    #[error("`{0}` does not resolve")]
    Unresolvable(String),
    /// It resolved only to addresses outside the allowed networks.
    #[error("`{host}` resolves to {addrs}, outside --modbus-allow-networks")]
    NotAllowed {
        /// The host as registered.
        host: String,
        /// What it resolved to.
        addrs: String,
    },
}

impl AllowedNetworks {
    /// Every IPv4 and IPv6 address (a small site on SQLite).
    pub fn any() -> Self {
        let all = ["0.0.0.0/0", "::/0"].iter().filter_map(|n| n.parse().ok()).collect();
        AllowedNetworks { nets: all }
    }

    /// Nothing: no gateway may be polled (a hosted deployment that did not choose).
    pub fn none() -> Self {
        AllowedNetworks::default()
    }

    /// `any`, `none`, or a comma-separated list of CIDR networks and single addresses
    /// (`10.20.0.0/16, 192.168.1.10`).
    pub fn parse(list: &str) -> Result<Self, String> {
        match list.trim() {
            "any" => return Ok(Self::any()),
            "none" | "" => return Ok(Self::none()),
            _ => {}
        }
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("`{item}` is not a network like 10.20.0.0/16 or an address")),
                },
            };
            nets.push(net);
        }
        Ok(AllowedNetworks { nets })
    }

    /// Whether `ip` is in an allowed network (IPv4-mapped IPv6 addresses count as IPv4, so
    /// `::ffff:127.0.0.1` is not a way around a list without loopback).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The list as given to `--modbus-allow-networks` (for logs).
    pub fn describe(&self) -> String {
        if self.nets.is_empty() {
            return "none".to_owned();
        }
        self.nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    /// Resolves `host:port` (a name or an address, IPv6 with or without brackets) and returns
    /// its allowed socket addresses, in resolver order; refuses when there are none.
    pub async fn resolve(&self, host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, NetworkRefusal> {
        let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port))).await {
                Ok(Ok(addrs)) => addrs.collect(),
                _ => return Err(NetworkRefusal::Unresolvable(host.to_owned())),
            },
        };
        if found.is_empty() {
            return Err(NetworkRefusal::Unresolvable(host.to_owned()));
        }
        let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| self.allows(a.ip())).collect();
        if allowed.is_empty() {
            let addrs = found.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
            return Err(NetworkRefusal::NotAllowed { host: host.to_owned(), addrs });
        }
        Ok(allowed)
    }
}

/// The key of a gateway address, as owned and polled: the host lower-cased (an IP address
/// in its canonical spelling, so `::1` and `[0:0::1]` are one gateway) and the port.
pub fn endpoint_key(host: &str, port: u16) -> String {
    let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Ok(ip) => format!("{ip}:{port}"),
        Err(_) => format!("{}:{port}", bare.trim_end_matches('.').to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_contain() {
        let n = AllowedNetworks::parse("10.20.0.0/16, 192.168.1.10 ,fd00::/8").unwrap();
        assert!(n.allows("10.20.3.4".parse().unwrap()));
        assert!(!n.allows("10.21.0.1".parse().unwrap()));
        assert!(n.allows("192.168.1.10".parse().unwrap()));
        assert!(!n.allows("192.168.1.11".parse().unwrap()));
        assert!(n.allows("fd12::1".parse().unwrap()));
        assert!(AllowedNetworks::parse("10.0.0.0/33").is_err());
        assert!(AllowedNetworks::parse("gateway.local").is_err());
        assert!(AllowedNetworks::parse("none").unwrap().is_empty());
        assert!(AllowedNetworks::any().allows("8.8.8.8".parse().unwrap()));
        assert!(AllowedNetworks::any().allows("::1".parse().unwrap()));
    }

    #[test]
    fn mapped_addresses_are_checked_as_ipv4() {
        let n = AllowedNetworks::parse("::/0").unwrap();
        assert!(!n.allows("::ffff:127.0.0.1".parse().unwrap()), "an IPv6-only list must not admit mapped IPv4");
        let v4 = AllowedNetworks::parse("10.0.0.0/8").unwrap();
        assert!(v4.allows("::ffff:10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn endpoint_keys_are_canonical() {
        assert_eq!(endpoint_key(" GW.Example.com. ", 502), "gw.example.com:502");
        assert_eq!(endpoint_key("[0:0::1]", 502), endpoint_key("::1", 502));
        assert_eq!(endpoint_key("::ffff:10.0.0.1", 502), "10.0.0.1:502");
        assert_eq!(endpoint_key("10.0.0.1", 1502), "10.0.0.1:1502");
    }

    #[tokio::test]
    async fn resolution_keeps_only_allowed_addresses() {
        let none = AllowedNetworks::none();
        let t = Duration::from_secs(2);
        assert!(matches!(none.resolve("127.0.0.1", 502, t).await, Err(NetworkRefusal::NotAllowed { .. })));
        let lo = AllowedNetworks::parse("127.0.0.0/8").unwrap();
        assert_eq!(lo.resolve("127.0.0.1", 502, t).await.unwrap(), vec!["127.0.0.1:502".parse().unwrap()]);
        assert!(matches!(lo.resolve("no-such-host.invalid", 502, t).await, Err(NetworkRefusal::Unresolvable(_))));
    }
}
