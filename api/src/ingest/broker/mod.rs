//! The embedded MQTT broker (rumqttd 0.20), so that one `sparkwatch` binary is a complete
//! site installation: `serve` without `--mqtt-url` starts it on `--mqtt-listen` (default
//! `127.0.0.1:1883`), devices connect to it with their serial as client id, and our
//! subscriber ([`super::mqtt`]) connects to it like to any external broker.
//!
//! # Device identity
//! Devices never reach rumqttd directly. They connect to the device gate ([`gate`]) on
//! `--mqtt-listen` (plain) and `--mqtt-tls-listen` (TLS, with `--mqtt-tls-cert` and
//! `--mqtt-tls-key`), which authenticates each CONNECT against the device's issued secret and
//! lets a device publish only its own topics and subscribe only its own command topic
//! (DEVICE-PROTOCOL.md §3). rumqttd listens on a loopback port of its own and accepts only
//! the internal login, which the gate and our subscriber present. Why a gate rather than
//! rumqttd's hooks: rumqttd 0.20 can authenticate (`external_auth`) but has no per-topic
//! authorisation, and no embeddable Rust broker has both while keeping rumqttd's QoS 1
//! sessions; the gate adds the rules in front and leaves sessions, QoS 1 and shared
//! subscriptions to rumqttd (ARCHITECTURE.md, "Device identity").
//!
//! Configuration is programmatic: one MQTT 3.1.1 (v4) listener, no websocket. rumqttd
//! serves MQTT 5 only on a listener of its own, so there is none. Limits: 10 000
//! connections, payloads up to 256 KiB (a client sending more is disconnected), keep-alive
//! must not be 0 (rumqttd refuses it). Reconnect storms: the gate listens with a large
//! accept backlog and bounds the CONNECTs waiting on rumqttd (`bind_device_listener`,
//! docs/DEVICE-IDENTITY.md). A second connection with a client id already
//! connected replaces the first; devices cannot take the server's client ids (the gate
//! reserves them).
//!
//! How rumqttd stores messages matters for delivery: every subscription filter has an
//! in-memory commit log, and each session holds a cursor into it. The log keeps the newest
//! messages up to its size whether or not they were delivered: `{prefix}/+/telemetry` keeps
//! 64 MiB (8 × 8 MiB segments), `event`, `status` and `cmd/ack` 8 MiB each, any other filter
//! (device command subscriptions) 2 MiB. That is the buffer for a subscriber that is away
//! or behind (backpressure while the database is slow): a cursor that falls behind the
//! oldest segment jumps forward and the skipped messages are lost (rumqttd warns "Read
//! cursor start jumped"). Memory grows to those sizes over time. Our ingest filters exist
//! from the start (`initialized_filters`), so device publishes never create stray per-topic
//! logs; publishing to a topic nobody subscribes to creates a small log (`dynamic_filters`)
//! instead of the rumqttd default of disconnecting the device.
//!
//! # What rumqttd does (checked by `tests/tests/broker.rs`)
//! - **Persistent sessions work** within one broker lifetime: a subscriber with
//!   `clean_session = false` that disconnects and reconnects with the same client id gets
//!   `session_present = true`, keeps its subscriptions, and receives the QoS 1 messages
//!   published while it was away — as far as they still fit in the log (see above).
//! - **Unacknowledged QoS 1 deliveries are redelivered** after a reconnect, in order, before
//!   the newer ones; acknowledged ones are not. So acknowledging only after the commit is
//!   safe: a stop between receipt and commit means redelivery, which the pipeline
//!   deduplicates. At most 100 deliveries are in flight per connection (fixed in rumqttd).
//! - **A new subscription starts at the end of the log**: what was published before a
//!   session first subscribed is not delivered to it (as with Mosquitto).
//! - **Shared subscriptions** (`$share/group/filter`) work: members get the messages
//!   round-robin, one at a time. Do **not** combine them with persistent sessions on this
//!   broker: when the last member of a group disconnects with `clean_session = false` and
//!   unacknowledged deliveries, rumqttd 0.20 panics in its router thread (`"group must
//!   exists"` in `handle_disconnection`) and the broker stops working. Any client can cause
//!   this; we notice it, log an error, and [`EmbeddedBroker::is_running`] turns false. The
//!   embedded broker serves one Sparkwatch instance, so
//!   [`EmbeddedBroker::subscriber_settings`] never sets a group.
//! - **A connection can be cut by another's late end.** rumqttd 0.20 reuses connection ids,
//!   and a link whose client left with DISCONNECT reports its end a second time when the
//!   socket closes; if a new connection holds that id by then, the router ends it. Clients
//!   reconnect (ours does, with backoff) and unacknowledged deliveries come again, so
//!   nothing is lost, but a device may see an unexpected disconnect. Likewise, acks still
//!   unprocessed in a connection's buffer when it ends are dropped, so those deliveries
//!   come again after a reconnect (at least once; the pipeline deduplicates).
//! - **Nothing survives the process.** Sessions, logs and retained messages live in
//!   memory, and the broker runs inside Sparkwatch.
//!
//! # Limitation
//! The guarantee "a restart mid-stream loses no QoS 1 message" holds with the embedded
//! broker only for restarts of the subscriber inside a running process (reconnects, the
//! stop switch, backpressure within the log sizes above). A restart of the process —
//! upgrade, crash, power loss — restarts the broker too, and loses (a) messages the broker
//! had acknowledged to devices but Sparkwatch had not yet committed, and (b) messages
//! devices publish after the restart before our subscriber has subscribed again (a new
//! session starts at the end of the log). Devices that keep unacknowledged QoS 1 messages
//! and resend them on reconnect lose nothing while the broker is down, only those windows.
//! Installations that need the guarantee across process restarts use an external broker
//! that persists sessions (Mosquitto with `persistence true`, EMQX) with `--mqtt-url`.
//!
//! # Operation
//! rumqttd logs through `tracing` under the target `rumqttd`: every connection at info, and
//! some ordinary events at error (a client that sends DISCONNECT: "router-drop"; a TCP
//! connection without an MQTT CONNECT, e.g. a port check: "Error while handling MQTT
//! connect packet"; a duplicate client id). The server's default filter should include
//! [`LOG_DIRECTIVE`] so that only warnings and errors remain.
//!
//! rumqttd runs its router and listener on threads of its own, each with its own runtime,
//! and reports a failed bind only in its log; [`start`] therefore binds the device
//! addresses itself (the gate keeps those sockets), and returns only after an MQTT CONNECT
//! to rumqttd's internal port got its CONNACK. A panicking
//! rumqttd thread ends only that thread, never the process; a watch thread notices when
//! the router is gone. rumqttd has no shutdown: the broker lives until the process exits.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rumqttc::mqttbytes::v4::Login;
use rumqttd::{Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use super::mqtt::MqttSettings;

pub mod gate;
pub mod tls;

pub use gate::{Sessions, Verdict, Verifier};

/// The `tracing` filter directive that keeps rumqttd to warnings and errors; add it to the
/// server's default filter (e.g. `info,rumqttd=warn`).
pub const LOG_DIRECTIVE: &str = "rumqttd=warn";

/// Largest accepted payload.
pub const MAX_PAYLOAD: usize = 256 * 1024;

const MAX_CONNECTIONS: usize = 10_000;
/// The device listeners' accept backlog: as many connections as the gate admits may wait to
/// be accepted (the kernel caps it at `net.core.somaxconn`); see [`bind_device_listener`].
const DEVICE_BACKLOG: u32 = MAX_CONNECTIONS as u32;
const MAX_INFLIGHT: usize = 100;
const MIB: usize = 1024 * 1024;
/// Log per ingest filter: telemetry gets the most, the rest are small and rare.
const TELEMETRY_SEGMENTS: SegmentConfig = SegmentConfig { max_segment_size: 8 * MIB, max_segment_count: 8 };
const OTHER_INGEST_SEGMENTS: SegmentConfig = SegmentConfig { max_segment_size: 2 * MIB, max_segment_count: 4 };
/// Any other filter (device command subscriptions, topics nobody subscribes to).
const DEFAULT_SEGMENTS: SegmentConfig = SegmentConfig { max_segment_size: MIB, max_segment_count: 2 };
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_CLIENT_ID: &str = "sparkwatch-broker-probe";
/// The user name of the internal login (the gate's and our subscriber's).
const INTERNAL_USER: &str = "sparkwatch-internal";

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Another process listens on the address.
    #[error(
        "cannot start the embedded MQTT broker on {addr}: the address is in use — stop the other broker, pass \
         --mqtt-listen ADDR (SPARKWATCH_MQTT_LISTEN) to pick another address, or --mqtt-url to use an external broker"
    )]
    AddressInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address cannot be bound for another reason (not local, no permission, …).
    #[error(
        "cannot start the embedded MQTT broker on {addr}: {cause} — pass --mqtt-listen ADDR (SPARKWATCH_MQTT_LISTEN) \
         to pick another address, or --mqtt-url to use an external broker"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        cause: io::Error,
    },
    /// The broker's threads did not come up (details are in the log).
    #[error("the embedded MQTT broker on {addr} did not start: {detail}")]
    NotStarted {
        /// The address asked for.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// The TLS certificate or key cannot be used.
    #[error("the embedded MQTT broker's TLS setup failed: {0}")]
    Tls(String),
}

/// How to start the embedded broker.
pub struct BrokerOptions {
    /// Plain MQTT listener for devices (`--mqtt-listen`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// TLS listener for devices (`--mqtt-tls-listen`) and its certificate chain and key.
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// Topic prefix (`sw`).
    pub prefix: String,
    /// Client ids devices may not take (the server's subscriber's).
    pub reserved_client_ids: Vec<String>,
    /// Checks a device's serial and secret.
    pub verifier: Verifier,
}

/// A running embedded broker. Dropping it does not stop the broker (rumqttd cannot be
/// stopped); it runs until the process exits.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    internal: SocketAddr,
    internal_password: String,
    listener: JoinHandle<()>,
    router_alive: Arc<AtomicBool>,
    sessions: Arc<Sessions>,
}

impl EmbeddedBroker {
    /// The address devices connect to with plain MQTT (port 0 in [`start`] is resolved to
    /// the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address devices connect to with MQTT over TLS, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Where a device on this machine reaches the broker: the plain listen address, with
    /// an unspecified IP (`0.0.0.0`, `::`) replaced by loopback.
    pub fn connect_addr(&self) -> SocketAddr {
        connect_addr(self.addr)
    }

    /// rumqttd's own loopback address, behind the gate. Only server-side clients (our
    /// subscriber, tests of rumqttd's behaviour) connect here, with [`Self::internal_login`].
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal
    }

    /// The login rumqttd accepts on its internal port: `(user, password)`, a random
    /// password per process.
    pub fn internal_login(&self) -> (String, String) {
        (INTERNAL_USER.to_owned(), self.internal_password.clone())
    }

    /// The devices connected through the gate; ending a serial's sessions makes it connect
    /// again (after a rotation, or when the device was deleted).
    pub fn sessions(&self) -> Arc<Sessions> {
        self.sessions.clone()
    }

    /// Whether the broker still works: its listener and router threads are running (a
    /// router panic is noticed within a second).
    pub fn is_running(&self) -> bool {
        !self.listener.is_finished() && self.router_alive.load(Ordering::SeqCst)
    }

    /// Settings for our subscriber to connect to this broker: rumqttd's internal port with
    /// the internal login, persistent session under `client_id`, topics under `prefix`, no
    /// shared-subscription group (see the module documentation).
    pub fn subscriber_settings(&self, client_id: &str, prefix: &str) -> MqttSettings {
        MqttSettings {
            host: self.internal.ip().to_string(),
            port: self.internal.port(),
            client_id: client_id.to_owned(),
            prefix: prefix.to_owned(),
            shared_group: None,
            credentials: Some(self.internal_login()),
        }
    }
}

/// Starts rumqttd on a loopback port and the device gate on `options.listen` (and the TLS
/// address), and returns once rumqttd accepts MQTT connections. Needs a Tokio runtime (the
/// gate runs on it).
pub fn start(options: BrokerOptions) -> Result<EmbeddedBroker, BrokerError> {
    let BrokerOptions { listen, tls, prefix, mut reserved_client_ids, verifier } = options;
    let plain = bind_device_listener(listen)?;
    let addr = plain.local_addr().map_err(|cause| BrokerError::Bind { addr: listen, cause })?;
    let tls_listener = match &tls {
        Some((tls_listen, config)) => Some((bind_device_listener(*tls_listen)?, config.clone())),
        None => None,
    };
    let tls_addr = match &tls_listener {
        Some((l, _)) => Some(l.local_addr().map_err(|cause| BrokerError::Bind { addr, cause })?),
        None => None,
    };
    // rumqttd's own port: loopback only, free now (rumqttd binds it on its thread).
    let internal = check_free(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let internal_password = crate::auth::token::random_token(32);
    let not_started = |detail: String| BrokerError::NotStarted { addr, detail };
    let config = config(internal, &prefix, &internal_password);
    // `Broker::new` starts the router thread (and unwraps the spawn).
    let mut broker = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || rumqttd::Broker::new(config)))
        .map_err(|_| not_started("its router thread could not start".to_owned()))?;
    // The router keeps the sending side of this link; it never sends (no metrics timer is
    // configured), so the link turns disconnected exactly when the router thread ends.
    let router = broker.meters().map_err(|e| not_started(format!("its router does not answer: {e}")))?;
    let listener = std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            // Returns only when every listener thread has ended.
            match broker.start() {
                Ok(()) => tracing::error!(%addr, "the embedded MQTT broker stopped listening; devices cannot connect"),
                Err(e) => tracing::error!(%addr, error = %e, "the embedded MQTT broker failed"),
            }
        })
        .map_err(|e| not_started(format!("cannot start its thread: {e}")))?;
    let router_alive = Arc::new(AtomicBool::new(true));
    let alive = router_alive.clone();
    std::thread::Builder::new()
        .name("mqtt-broker-watch".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(WATCH_INTERVAL);
                if let Some(Err(_)) = router.next().now_or_never() {
                    alive.store(false, Ordering::SeqCst);
                    tracing::error!(
                        %addr,
                        "the embedded MQTT broker's router thread ended (a rumqttd panic, see above): devices \
                         and ingestion are cut off until Sparkwatch restarts"
                    );
                    return;
                }
            }
        })
        .map_err(|e| not_started(format!("cannot start its watch thread: {e}")))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if listener.is_finished() {
            return Err(not_started("its listener ended; see the log above".to_owned()));
        }
        match probe(internal, &internal_password) {
            Ok(()) => break,
            Err(e) if Instant::now() >= deadline => {
                return Err(not_started(format!("no MQTT answer within {} s: {e}", STARTUP_TIMEOUT.as_secs())));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    reserved_client_ids.push(PROBE_CLIENT_ID.to_owned());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let upstream_handshakes = Arc::new(tokio::sync::Semaphore::new(gate::UPSTREAM_HANDSHAKES));
    let sessions = Arc::new(Sessions::default());
    let shared = |tls: Option<tokio_rustls::TlsAcceptor>| {
        Arc::new(gate::GateShared {
            prefix: prefix.clone(),
            reserved: reserved_client_ids.clone(),
            internal,
            internal_login: Login::new(INTERNAL_USER, internal_password.clone()),
            verifier: verifier.clone(),
            max_frame: MAX_PAYLOAD + 1024,
            slots: slots.clone(),
            upstream_handshakes: upstream_handshakes.clone(),
            tls,
            sessions: sessions.clone(),
        })
    };
    tokio::spawn(gate::serve(plain, shared(None)));
    if let Some((l, config)) = tls_listener {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(gate::serve(l, shared(Some(acceptor))));
    }
    tracing::info!(%addr, tls = ?tls_addr, "embedded MQTT broker listening for devices (MQTT 3.1.1, device credentials required)");
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "devices send their secrets in clear text on the plain MQTT listener; use it only on a trusted network \
             and give devices outside the building the TLS listener"
        );
    }
    Ok(EmbeddedBroker { addr, tls_addr, internal, internal_password, listener, router_alive, sessions })
}

/// Binds a device address for the gate, with an accept backlog of [`DEVICE_BACKLOG`].
///
/// Why not `TcpListener::bind`: the standard library (and Tokio, through mio) listens with a
/// backlog of 128. When thousands of devices reconnect at once the queue overflows; Linux
/// then drops the handshake's last ACK (or answers with a SYN cookie and drops it later), so a
/// device believes it is connected and has sent its CONNECT, while the server has no such
/// connection. The device's retransmissions back off exponentially (0.2 s, 0.4 s, … 51 s),
/// so it sits there for a minute or more waiting for a CONNACK — bench-identity run 1 lost a
/// third of 5,000 devices this way (BENCHMARKS.md, run 2). The kernel caps the backlog at
/// `net.core.somaxconn` (4096 by default since Linux 5.4, 128 before).
pub(crate) fn bind_device_listener(listen: SocketAddr) -> Result<tokio::net::TcpListener, BrokerError> {
    let socket = if listen.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let bound = socket.and_then(|s| {
        // As `TcpListener::bind` does on Unix: a restarted server can bind while old
        // connections linger in TIME_WAIT.
        #[cfg(unix)]
        s.set_reuseaddr(true)?;
        s.bind(listen)?;
        s.listen(DEVICE_BACKLOG)
    });
    match bound {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(BrokerError::AddressInUse { addr: listen }),
        Err(cause) => Err(BrokerError::Bind { addr: listen, cause }),
    }
}

/// Binds `listen` with the standard library (backlog 128), for the free-port check.
fn bind(listen: SocketAddr) -> Result<TcpListener, BrokerError> {
    match TcpListener::bind(listen) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(BrokerError::AddressInUse { addr: listen }),
        Err(cause) => Err(BrokerError::Bind { addr: listen, cause }),
    }
}

/// Binds `listen` once to learn whether it is free (and which port 0 means), then releases
/// it for rumqttd, which only logs bind failures from its own thread.
fn check_free(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    bind(listen)?.local_addr().map_err(|cause| BrokerError::Bind { addr: listen, cause })
}

fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// An MQTT 3.1.1 round trip with the internal login: CONNECT (clean session), expect an
/// accepting CONNACK, close. (Closing without DISCONNECT is what rumqttd logs quietest: a
/// DISCONNECT followed by the close logs an error.)
fn probe(addr: SocketAddr, password: &str) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(PROBE_CLIENT_ID);
    connect.keep_alive = 10;
    connect.set_login(INTERNAL_USER, password);
    let mut packet = bytes::BytesMut::new();
    connect.write(&mut packet).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
    stream.write_all(&packet)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[1] != 2 || connack[3] != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected CONNACK {connack:02x?}")));
    }
    Ok(())
}

fn config(addr: SocketAddr, prefix: &str, internal_password: &str) -> Config {
    let ingest = MqttSettings {
        host: String::new(),
        port: 0,
        client_id: String::new(),
        prefix: prefix.to_owned(),
        shared_group: None,
        credentials: None,
    }
    .topics();
    let custom_segment = ingest
        .iter()
        .map(|filter| {
            let segments = if filter.ends_with("/telemetry") { TELEMETRY_SEGMENTS } else { OTHER_INGEST_SEGMENTS };
            (filter.clone(), segments)
        })
        .collect();
    let router = RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: 200,
        max_segment_size: DEFAULT_SEGMENTS.max_segment_size,
        max_segment_count: DEFAULT_SEGMENTS.max_segment_count,
        custom_segment: Some(custom_segment),
        initialized_filters: Some(ingest),
        ..Default::default()
    };
    let server = ServerSettings {
        name: "mqtt-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: MAX_INFLIGHT,
            // Only the gate and our own clients know this login; rumqttd's port is loopback.
            auth: Some(HashMap::from([(INTERNAL_USER.to_owned(), internal_password.to_owned())])),
            external_auth: None,
            // The server publishes commands before a device has subscribed; with dynamic
            // filters that creates the command topic's small log instead of disconnecting
            // the server. Devices cannot create topics: the gate admits only their own.
            dynamic_filters: true,
        },
    };
    Config { router, v4: Some(HashMap::from([("v4".to_owned(), server)])), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storm of connections that arrive while the gate is busy waits in the kernel's accept
    /// queue: none is dropped. With the default backlog (128) the 130th handshake's SYN is
    /// dropped and its connect takes TCP's 1 s retransmission (or a minute, when a SYN cookie's
    /// ACK is dropped), which is what kept a third of 5,000 devices out in bench-identity run 1.
    #[tokio::test]
    async fn device_listener_queues_a_storm_of_connections() {
        const STORM: usize = 500;
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok();
        if somaxconn.and_then(|s| s.trim().parse::<usize>().ok()).is_none_or(|max| max < STORM) {
            println!("skipped: net.core.somaxconn is unknown or below {STORM}");
            return;
        }
        let listener = bind_device_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        // Nobody accepts yet. A handshake the kernel refuses to queue is retried by the client
        // after 1 s at the earliest, so a queued one is well within the bound.
        for i in 0..STORM {
            let connect = tokio::time::timeout(Duration::from_millis(900), tokio::net::TcpStream::connect(addr)).await;
            match connect {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(e)) => panic!("connection {i} failed: {e}"),
                Err(_) => panic!("connection {i} was not queued: only {i} fit in the accept backlog"),
            }
        }
        for _ in 0..STORM {
            listener.accept().await.unwrap();
        }
    }
}
