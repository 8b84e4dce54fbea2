//! The device gate: the embedded broker's only door for devices. It speaks MQTT 3.1.1 to
//! each device (plain TCP or TLS), authenticates the CONNECT against the device's issued
//! secret, and then relays packets to rumqttd on its loopback port, checking every PUBLISH,
//! SUBSCRIBE and last will against [`sparkwatch_domain::identity`]:
//!
//! - CONNECT: client id = username = a registered serial with a matching secret, else
//!   CONNACK "not authorized" (return code 5); "server unavailable" (3) while the database
//!   cannot answer, so a device retries instead of concluding that its secret is wrong.
//!   A last will must be on the device's own topics. MQTT 5 gets "unacceptable protocol
//!   version" (1): rumqttd speaks 3.1.1 here.
//! - PUBLISH to anything but its own device → server topics: the connection is closed, so
//!   the message never reaches the broker (DEVICE-PROTOCOL.md §3 allows drop or disconnect;
//!   a disconnect is what a misbehaving device notices).
//! - SUBSCRIBE to anything but its own `cmd` topic: answered here with SUBACK 0x80 for every
//!   filter of that request, and not forwarded.
//!
//! The gate rewrites the login to rumqttd's internal one, which only the gate and the
//! server's own client know; rumqttd itself listens on loopback only. Frames are relayed as
//! they came (only their headers and topics are read), so QoS 1 flows, persistent sessions
//! and packet ids are rumqttd's, unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Publish, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, FixedHeader, PacketType, Protocol, check};
use sparkwatch_domain::identity::{self, ConnectRefusal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, Semaphore};

/// What the verifier says of a device's serial and secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The secret is the device's current one.
    Accept,
    /// Unknown serial, no credentials, or a wrong secret.
    Refuse,
    /// The answer cannot be known now (database unreachable).
    Unavailable,
}

/// Checks a device's serial and secret (wired to the device-identity service).
pub type Verifier = Arc<dyn Fn(String, String) -> BoxFuture<'static, Verdict> + Send + Sync>;

/// A CONNECT must arrive this soon after the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many device CONNECTs wait for rumqttd's CONNACK at once: half rumqttd's
/// accept backlog (128, fixed by the library), so its queue never overflows.
pub(crate) const UPSTREAM_HANDSHAKES: usize = 64;

/// What every connection of one gate shares.
pub(crate) struct GateShared {
    pub(crate) prefix: String,
    /// Client ids devices may not use (the server's subscriber, the broker probe).
    pub(crate) reserved: Vec<String>,
    /// rumqttd's loopback address and the internal login the gate presents there.
    pub(crate) internal: SocketAddr,
    pub(crate) internal_login: Login,
    pub(crate) verifier: Verifier,
    /// Largest frame relayed either way.
    pub(crate) max_frame: usize,
    /// Bounds open device connections.
    pub(crate) slots: Arc<Semaphore>,
    /// Bounds the CONNECTs waiting for rumqttd's CONNACK (see `connection`).
    pub(crate) upstream_handshakes: Arc<Semaphore>,
    /// TLS for this listener, if any.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The open device connections, so that a rotated secret or a deleted device ends them.
    pub(crate) sessions: Arc<Sessions>,
}

/// One open connection: its number and the signal that ends it.
type OpenSession = (u64, Arc<Notify>);

/// The devices connected through the gates (plain and TLS share one), by serial. A secret
/// checked at CONNECT stays good for the connection's life unless the device's credentials
/// change: then [`Sessions::end`] closes every connection of that serial, as Mosquitto's
/// dynamic security does when a client's password is changed, and the device must connect
/// again with its new secret.
#[derive(Debug, Default)]
pub struct Sessions {
    next: AtomicU64,
    open: SyncMutex<HashMap<String, Vec<OpenSession>>>,
}

impl Sessions {
    /// Closes every open connection of `serial`; returns how many there were.
    pub fn end(&self, serial: &str) -> usize {
        let ended = self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(serial).unwrap_or_default();
        for (_, stop) in &ended {
            // `notify_one` keeps a permit, so a connection not yet waiting still ends.
            stop.notify_one();
        }
        ended.len()
    }

    fn enter(self: &Arc<Self>, serial: &str) -> SessionGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.entry(serial.to_owned()).or_default().push((id, stop.clone()));
        SessionGuard { sessions: self.clone(), serial: serial.to_owned(), id, stop }
    }
}

/// One registered connection; leaves the registry when dropped.
struct SessionGuard {
    sessions: Arc<Sessions>,
    serial: String,
    id: u64,
    stop: Arc<Notify>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = open.get_mut(&self.serial) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                open.remove(&self.serial);
            }
        }
    }
}

/// Accepts device connections on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<GateShared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "the MQTT device gate could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "MQTT device gate full; connection refused");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            match &shared.tls {
                Some(acceptor) => match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(tls, peer, &shared).await,
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "MQTT TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "MQTT TLS handshake timed out"),
                },
                None => connection(stream, peer, &shared).await,
            }
        });
    }
}

/// Reads one whole MQTT frame (fixed header included) into `buf`'s front and splits it off.
/// `None` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(FixedHeader, Bytes)>, String> {
    loop {
        match check(buf.iter(), max) {
            Ok(header) => return Ok(Some((header, buf.split_to(header.frame_length()).freeze()))),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed or oversized MQTT frame: {e:?}")),
        }
        if rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return if buf.is_empty() { Ok(None) } else { Err("connection closed mid-frame".to_owned()) };
        }
    }
}

fn connack(code: ConnectReturnCode) -> BytesMut {
    let mut out = BytesMut::new();
    let _ = ConnAck::new(code, false).write(&mut out);
    out
}

async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, code: ConnectReturnCode) {
    let _ = wr.write_all(&connack(code)).await;
    let _ = wr.shutdown().await;
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    shared: &GateShared,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(1024);
    let first = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut rd, &mut buf, shared.max_frame)).await;
    let (header, frame) = match first {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "MQTT device connection ended before CONNECT"),
        Err(_) => return tracing::debug!(%peer, "no MQTT CONNECT in time"),
    };
    if !matches!(header.packet_type(), Ok(PacketType::Connect)) {
        return tracing::debug!(%peer, "first MQTT packet is not CONNECT");
    }
    let mut connect = match Connect::read(header, frame) {
        Ok(c) if c.protocol == Protocol::V4 => c,
        Ok(_) | Err(CodecError::InvalidProtocolLevel(_)) => {
            return refuse(&mut wr, ConnectReturnCode::RefusedProtocolVersion).await;
        }
        Err(e) => return tracing::debug!(%peer, error = ?e, "malformed MQTT CONNECT"),
    };
    let serial = match authenticate(&connect, shared).await {
        Ok(serial) => serial,
        Err(code) => return refuse(&mut wr, code).await,
    };
    // rumqttd binds its own listener with a backlog of 128, and under a storm accepts slowly
    // (one router round trip per connection, on its single listener thread). More handshakes
    // at once than that overflow its queue and leave the gate's upstream connection
    // half-open, waiting out TCP's retransmission backoff (see `bind_device_listener`). So at
    // most UPSTREAM_HANDSHAKES CONNECTs wait for rumqttd's CONNACK at a time; the rest wait
    // here, where waiting costs nothing.
    let Ok(handshake) = shared.upstream_handshakes.acquire().await else {
        return refuse(&mut wr, ConnectReturnCode::ServiceUnavailable).await;
    };
    let upstream = match TcpStream::connect(shared.internal).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the device gate cannot reach the embedded broker");
            return refuse(&mut wr, ConnectReturnCode::ServiceUnavailable).await;
        }
    };
    let _ = upstream.set_nodelay(true);
    connect.login = Some(shared.internal_login.clone());
    let mut out = BytesMut::new();
    if connect.write(&mut out).is_err() {
        return;
    }
    let (mut up_rd, mut up_wr) = upstream.into_split();
    if up_wr.write_all(&out).await.is_err() {
        return refuse(&mut wr, ConnectReturnCode::ServiceUnavailable).await;
    }
    let mut up_buf = BytesMut::with_capacity(4096);
    let connack = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut up_rd, &mut up_buf, shared.max_frame)).await;
    drop(handshake);
    // rumqttd's answer goes to the device as it came (a refusal too: rumqttd then closes
    // its side, which ends the relay below).
    match connack {
        Ok(Ok(Some((_, frame)))) => {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        _ => {
            tracing::warn!(%peer, serial = %serial, "the embedded broker did not answer the device's CONNECT in time");
            return refuse(&mut wr, ConnectReturnCode::ServiceUnavailable).await;
        }
    }
    tracing::debug!(%peer, serial = %serial, "device connected through the gate");
    let session = shared.sessions.enter(&serial);
    let device_wr = Mutex::new(wr);
    let inbound = relay_from_device(&mut rd, buf, &mut up_wr, &device_wr, &serial, peer, shared);
    let outbound = relay_to_device(&mut up_rd, up_buf, &device_wr, shared.max_frame);
    // Either side ending ends both: the device sees its connection close, rumqttd sees the
    // link close (and publishes the last will, as for any other unexpected end).
    tokio::select! {
        () = inbound => {},
        () = outbound => {},
        () = session.stop.notified() => {
            tracing::info!(%peer, serial = %serial, "device disconnected: its credentials were rotated or it was deleted");
        }
    }
    let _ = device_wr.lock().await.shutdown().await;
}

/// Checks the CONNECT's identity; the refusal is the CONNACK return code to answer with.
async fn authenticate(connect: &Connect, shared: &GateShared) -> Result<String, ConnectReturnCode> {
    let login = connect.login.as_ref();
    let reserved: Vec<&str> = shared.reserved.iter().map(String::as_str).collect();
    let shape = identity::connect_serial(
        &connect.client_id,
        login.map(|l| l.username.as_str()),
        login.is_some_and(|l| !l.password.is_empty()),
        &reserved,
    );
    let serial = match shape {
        Ok(s) => s.to_owned(),
        Err(why) => {
            tracing::info!(client_id = %shown(&connect.client_id), reason = why.describe(), "MQTT device refused");
            return Err(ConnectReturnCode::NotAuthorized);
        }
    };
    if let Some(will) = &connect.last_will
        && !identity::may_publish(&shared.prefix, &serial, &will.topic)
    {
        tracing::info!(serial = %serial, topic = %shown(&will.topic), "MQTT device refused: last will on a topic it may not publish");
        return Err(ConnectReturnCode::NotAuthorized);
    }
    let password = login.map(|l| l.password.clone()).unwrap_or_default();
    match (shared.verifier)(serial.clone(), password).await {
        Verdict::Accept => Ok(serial),
        Verdict::Refuse => {
            tracing::info!(serial = %serial, reason = ConnectRefusal::BadCredentials.describe(), "MQTT device refused");
            Err(ConnectReturnCode::NotAuthorized)
        }
        Verdict::Unavailable => Err(ConnectReturnCode::ServiceUnavailable),
    }
}

/// Device → broker: every frame is checked, then written through unchanged.
async fn relay_from_device<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    mut buf: BytesMut,
    up: &mut tokio::net::tcp::OwnedWriteHalf,
    device_wr: &Mutex<W>,
    serial: &str,
    peer: SocketAddr,
    shared: &GateShared,
) {
    loop {
        let (header, frame) = match read_frame(rd, &mut buf, shared.max_frame).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => return tracing::info!(%peer, serial, error = %e, "device connection closed"),
        };
        match header.packet_type() {
            Ok(PacketType::Publish) => match Publish::read(header, frame.clone()) {
                Ok(p) if identity::may_publish(&shared.prefix, serial, &p.topic) => {}
                Ok(p) => {
                    return tracing::warn!(serial, topic = %shown(&p.topic), "device published on a topic that is not its own; disconnected");
                }
                Err(e) => return tracing::info!(serial, error = ?e, "malformed PUBLISH; disconnected"),
            },
            Ok(PacketType::Subscribe) => match Subscribe::read(header, frame.clone()) {
                Ok(s) if s.filters.iter().all(|f| identity::may_subscribe(&shared.prefix, serial, &f.path)) => {}
                Ok(s) => {
                    let filters: Vec<String> = s.filters.iter().map(|f| shown(&f.path)).collect();
                    tracing::warn!(serial, ?filters, "device subscription refused: only its own cmd topic is allowed");
                    let refusal = SubAck::new(s.pkid, vec![SubscribeReasonCode::Failure; s.filters.len()]);
                    let mut out = BytesMut::new();
                    if refusal.write(&mut out).is_err() || device_wr.lock().await.write_all(&out).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => return tracing::info!(serial, error = ?e, "malformed SUBSCRIBE; disconnected"),
            },
            Ok(PacketType::Connect) => return tracing::info!(serial, "second CONNECT; disconnected"),
            Ok(_) => {}
            Err(e) => return tracing::info!(serial, error = ?e, "unknown MQTT packet; disconnected"),
        }
        if up.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Broker → device: frames written whole, so a refusal the gate answers itself never lands
/// in the middle of one.
async fn relay_to_device<W: AsyncWrite + Unpin>(
    up: &mut tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    device_wr: &Mutex<W>,
    max: usize,
) {
    // The broker may send more than a device would (its own frame limit plus headers).
    let max = max + 1024;
    while let Ok(Some((_, frame))) = read_frame(up, &mut buf, max).await {
        let mut wr = device_wr.lock().await;
        if wr.write_all(&frame).await.is_err() {
            return;
        }
        // Write what else is already complete under the same lock: fewer wake-ups per burst.
        while let Ok(header) = check(buf.iter(), max) {
            let more = buf.split_to(header.frame_length());
            if wr.write_all(&more).await.is_err() {
                return;
            }
        }
    }
}

/// At most 80 characters of a client-supplied string, for logs.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect::<String>().escape_debug().to_string();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}
