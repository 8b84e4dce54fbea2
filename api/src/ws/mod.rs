//! GraphQL over WebSocket: the `graphql-transport-ws` protocol (of the `graphql-ws` library)
//! and the legacy `graphql-ws` protocol (of `subscriptions-transport-ws`).
//!
//! Written here rather than taken from async-graphql because its handler closes with 1002
//! or 1011 where the protocol asks for 4400 (bad message), 4401 (subscribe before ack),
//! 4403 (refused `connection_init`), 4408 (no `connection_init` in time) and 4409 (duplicate
//! subscription id), and has no answer to a client that stops reading.
//!
//! One task per connection. Subscriptions are streams in a `StreamMap` polled fairly; a
//! client that does not take a message within [`WsLimits::write_timeout`] is dropped (its
//! subscriptions end, nobody else waits), and a subscription that falls behind ends with
//! `SLOW_CONSUMER`. The connection closes with 4403 when its access token expires.
//!
//! Limits (issue 16): messages over [`WsLimits::max_message_bytes`] close the connection
//! with 1009; a connection whose `connection_init` carried no credentials is acknowledged
//! (subscriptions then fail with `UNAUTHENTICATED`) but closed with 4401 when the
//! initialisation time is up; a caller holding [`WsLimits::max_sockets_per_user`]
//! connections is refused another with 4429; a connection holds at most
//! [`WsLimits::max_subscriptions`]. A client's close frame is answered with a close frame,
//! and close reasons are cut to the 123 bytes a control frame has room for.
//! Identical subscriptions of callers with the same access share one execution
//! ([`shared`]).

mod per_user;
mod shared;

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};
pub use shared::Hub;
use shared::{Caller, Out};
use tokio_stream::{StreamExt, StreamMap};

use crate::auth::Auth;
use crate::graphql::ClientAddr;
use crate::service::Services;

/// Which protocol the client chose with `Sec-WebSocket-Protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// Legacy `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    /// The subprotocol names, preferred first.
    pub const NAMES: [&'static str; 2] = ["graphql-transport-ws", "graphql-ws"];

    /// The protocol for a subprotocol name.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name.trim() {
            "graphql-transport-ws" => Some(Protocol::TransportWs),
            "graphql-ws" => Some(Protocol::Legacy),
            _ => None,
        }
    }
}

/// Limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Time allowed between the upgrade and `connection_init`.
    pub init_timeout: Duration,
    /// Time a client may take to accept one message before it is dropped as too slow.
    pub write_timeout: Duration,
    /// Subscriptions one connection may hold at once.
    pub max_subscriptions: usize,
    /// Largest message (and frame) a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Connections one user or API key may hold open at once (`--ws-max-per-user`).
    pub max_sockets_per_user: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            init_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_subscriptions: 100,
            max_message_bytes: 64 * 1024,
            max_sockets_per_user: 32,
        }
    }
}

/// What the client sent, in either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    #[serde(alias = "start")]
    Subscribe {
        id: String,
        payload: Box<async_graphql::Request>,
    },
    #[serde(alias = "stop")]
    Complete {
        id: String,
    },
    ConnectionTerminate {},
}

/// Why the connection ends.
struct Close(u16, String);

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Close {
        Close(code, reason.into())
    }
}

struct Connection {
    socket: WebSocket,
    protocol: Protocol,
    hub: Hub,
    limits: WsLimits,
    client: ClientAddr,
    /// The caller, once `connection_init` is acknowledged.
    signed_in: Option<SignedIn>,
    streams: StreamMap<String, BoxStream<'static, Out>>,
    /// This connection's place in its caller's count of connections.
    _slot: Option<per_user::SocketSlot>,
}

/// How long a connection's access, once read, serves new subscriptions without being read
/// again: a client opening its subscriptions right after `connection_init` costs one
/// authentication, not one per subscription, and later subscriptions see current access.
const ACCESS_FRESH: Duration = Duration::from_secs(2);

/// How often an open connection's credentials are read again while the bus delivers
/// "access changed" (revocations reach open subscriptions at once through it).
const RECHECK: Duration = Duration::from_secs(30);
/// The same while the bus (Redis) is down: revocations on other instances are not announced.
const RECHECK_BUS_DOWN: Duration = Duration::from_secs(3);

/// The caller of a connection.
struct SignedIn {
    /// The `Authorization` value of `connection_init`.
    credentials: Option<String>,
    /// Its access when last read.
    auth: Auth,
    /// When that was.
    read_at: tokio::time::Instant,
}

/// Serves one upgraded connection until it closes.
pub async fn serve(socket: WebSocket, protocol: Protocol, hub: Hub, client: ClientAddr, limits: WsLimits) {
    let mut conn =
        Connection { socket, protocol, hub, limits, client, signed_in: None, streams: StreamMap::new(), _slot: None };
    let outcome = conn.run().await;
    let metrics = conn.services().metrics().clone();
    if let Err(Close(code, reason)) = outcome {
        if code == 4499 {
            // The client stopped reading: there is nobody to say goodbye to.
            metrics.slow_consumers.inc();
            tracing::info!("dropped a WebSocket client that stopped reading");
            return;
        }
        let frame = CloseFrame { code, reason: Utf8Bytes::from(control_frame_reason(reason)) };
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.socket.send(Message::Close(Some(frame)))).await;
    }
}

/// A close reason that fits a control frame: 125 bytes of payload, two of them the code.
/// Longer reasons (a parse error quoting the message) made clients see an invalid frame
/// instead of the close code.
fn control_frame_reason(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let mut cut = MAX - '…'.len_utf8();
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

/// Whether a read failed because the client's message or frame was over the size limit.
fn is_too_big(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

impl Connection {
    fn services(&self) -> &Services {
        self.hub.services()
    }

    /// How long until the connection's credentials are read again.
    fn recheck_period(&self) -> Duration {
        if self.services().bus().is_connected() { RECHECK } else { RECHECK_BUS_DOWN }
    }

    async fn run(&mut self) -> Result<(), Close> {
        // One timer for the connection's life, reset rather than re-created: first the
        // `connection_init` deadline, then the access token's expiry. A timer registered and
        // dropped per loop turn cost two timer-wheel updates per delivered message.
        let deadline = tokio::time::sleep(self.limits.init_timeout);
        tokio::pin!(deadline);
        let mut armed = true;
        // The safety net under the bus: credentials are read again on this period (shorter
        // while the bus is down, when "access changed" messages may be lost), so a revoked
        // sign-in or key never streams for long even if its message never arrives.
        let recheck = tokio::time::sleep(self.recheck_period());
        tokio::pin!(recheck);
        // The bus dropping or returning: re-check now (the gap's messages are lost).
        let mut link = self.services().bus().connectivity();
        loop {
            tokio::select! {
                changed = async {
                    match link.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if changed.is_err() {
                        link = None;
                    }
                    recheck.as_mut().reset(tokio::time::Instant::now());
                }
                _ = &mut recheck => {
                    if let Some(signed_in) = &self.signed_in
                        && signed_in.credentials.is_some()
                    {
                        let credentials = signed_in.credentials.clone();
                        let auth = Box::pin(self.services().authenticate(credentials.as_deref())).await;
                        if let Auth::Invalid(reason) = &auth {
                            return Err(Close::new(4403, format!("forbidden: {reason}")));
                        }
                        self.signed_in = Some(SignedIn { credentials, auth, read_at: tokio::time::Instant::now() });
                    }
                    recheck.as_mut().reset(tokio::time::Instant::now() + self.recheck_period());
                }
                incoming = self.socket.recv() => {
                    let msg = match incoming {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) if is_too_big(&e) => {
                            let max = self.limits.max_message_bytes;
                            return Err(Close::new(1009, format!("messages may have at most {max} bytes")));
                        }
                        Some(Err(_)) | None => return Ok(()),
                    };
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Binary(_) => return Err(Close::new(4400, "binary messages are not part of the protocol")),
                        // Answered with a close frame (the client's code echoed), as RFC 6455
                        // asks; without it clients saw 1006 (abnormal closure). The reply is
                        // queued by the WebSocket library as the close arrives; a flush sends it.
                        Message::Close(_) => {
                            let flush = futures_util::SinkExt::flush(&mut self.socket);
                            let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
                            return Ok(());
                        }
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    let parsed: ClientMessage = serde_json::from_str(text.as_str())
                        .map_err(|e| Close::new(4400, format!("invalid message: {e}")))?;
                    let initialising = self.signed_in.is_none();
                    // Boxed: `handle` may authenticate (database queries), a large future that
                    // would otherwise be part of every idle connection's task for its lifetime.
                    let expires = Box::pin(self.handle(parsed)).await?;
                    // Without credentials the initialisation deadline stays armed: 4401 then.
                    if initialising && self.signed_in.as_ref().is_some_and(|s| !matches!(s.auth, Auth::Anonymous)) {
                        match expires {
                            Some(at) => deadline.as_mut().reset(at),
                            None => armed = false,
                        }
                    }
                }
                Some((id, out)) = self.streams.next(), if !self.streams.is_empty() => {
                    self.forward(id, out).await?;
                }
                _ = &mut deadline, if armed => {
                    return Err(match &self.signed_in {
                        None => Close::new(4408, "connection initialisation timeout"),
                        Some(s) if matches!(s.auth, Auth::Anonymous) => {
                            Close::new(4401, "unauthorized: connection_init carried no credentials")
                        }
                        Some(_) => Close::new(4403, "the access token expired; reconnect with a fresh token"),
                    });
                }
            }
        }
    }

    /// Handles one client message; returns when the connection's credentials expire once
    /// they are known.
    async fn handle(&mut self, msg: ClientMessage) -> Result<Option<tokio::time::Instant>, Close> {
        match msg {
            ClientMessage::ConnectionInit { payload } => {
                if self.signed_in.is_some() {
                    return Err(Close::new(4429, "too many initialisation requests"));
                }
                // Clients differ in the key's case (`authorization`, `Authorization`).
                let credentials = payload
                    .as_ref()
                    .and_then(Value::as_object)
                    .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                    .and_then(|(_, v)| v.as_str().map(str::to_owned));
                let auth = self.services().authenticate(credentials.as_deref()).await;
                if let Auth::Invalid(reason) = &auth {
                    if self.protocol == Protocol::Legacy {
                        self.send(json!({"type": "connection_error", "payload": {"message": reason}})).await?;
                    }
                    return Err(Close::new(4403, format!("forbidden: {reason}")));
                }
                if let Auth::Authenticated(who) = &auth {
                    let max = self.limits.max_sockets_per_user;
                    self._slot = self
                        .hub
                        .sockets()
                        .take(who, max)
                        .map_err(|_| Close::new(4429, format!("too many connections: at most {max} per user")))?;
                }
                let services = self.services();
                let expires = services.credentials_expire_at(credentials.as_deref()).map(|at| {
                    let left = (at - services.clock().now()).to_std().unwrap_or_default();
                    tokio::time::Instant::now() + left
                });
                self.signed_in = Some(SignedIn { credentials, auth, read_at: tokio::time::Instant::now() });
                self.send(json!({"type": "connection_ack"})).await?;
                Ok(expires)
            }
            ClientMessage::Ping { payload } => {
                if self.protocol == Protocol::TransportWs {
                    let mut pong = json!({"type": "pong"});
                    if let Some(p) = payload {
                        pong["payload"] = p;
                    }
                    self.send(pong).await?;
                }
                Ok(None)
            }
            ClientMessage::Pong {} => Ok(None),
            ClientMessage::Subscribe { id, payload } => {
                let Some(signed_in) = &self.signed_in else {
                    return Err(Close::new(4401, "unauthorized: send connection_init first"));
                };
                if self.streams.contains_key(&id) {
                    return Err(Close::new(4409, format!("subscriber for {id} already exists")));
                }
                if self.streams.len() >= self.limits.max_subscriptions {
                    let message = format!("at most {} subscriptions per connection", self.limits.max_subscriptions);
                    self.send_error(&id, &message, "RATE_LIMITED").await?;
                    return Ok(None);
                }
                // Access as it is now, not as it was at `connection_init`: roles and scopes
                // may have changed since, and the access decides which execution is shared.
                let credentials = signed_in.credentials.clone();
                let auth = if signed_in.read_at.elapsed() <= ACCESS_FRESH {
                    signed_in.auth.clone()
                } else {
                    let auth = self.services().authenticate(credentials.as_deref()).await;
                    self.signed_in = Some(SignedIn {
                        credentials: credentials.clone(),
                        auth: auth.clone(),
                        read_at: tokio::time::Instant::now(),
                    });
                    auth
                };
                if let Auth::Invalid(reason) = &auth {
                    self.send_error(&id, reason, "UNAUTHENTICATED").await?;
                    return Ok(None);
                }
                let caller = Caller { auth, credentials, client: self.client.clone() };
                let stream = self.hub.start(caller, *payload);
                self.streams.insert(id, stream);
                Ok(None)
            }
            ClientMessage::Complete { id } => {
                if self.streams.remove(&id).is_some() && self.protocol == Protocol::Legacy {
                    self.send(json!({"type": "complete", "id": id})).await?;
                }
                Ok(None)
            }
            ClientMessage::ConnectionTerminate {} => Err(Close::new(1000, "terminated by the client")),
        }
    }

    /// Sends what subscription `id` produced; an error or completion ends it.
    async fn forward(&mut self, id: String, out: Out) -> Result<(), Close> {
        // The payload is shared text, serialised once for every subscriber of the same
        // execution; only the frame around it is this client's.
        let id_json = serde_json::to_string(&id).unwrap_or_default();
        let frame = match (&out, self.protocol) {
            (Out::Next(p), Protocol::TransportWs) => format!(r#"{{"type":"next","id":{id_json},"payload":{p}}}"#),
            (Out::Next(p), Protocol::Legacy) => format!(r#"{{"type":"data","id":{id_json},"payload":{p}}}"#),
            (Out::Error(p), Protocol::TransportWs) => format!(r#"{{"type":"error","id":{id_json},"payload":{p}}}"#),
            // Legacy clients read a failure as a `data` message without data.
            (Out::Error(p), Protocol::Legacy) => {
                format!(r#"{{"type":"data","id":{id_json},"payload":{{"data":null,"errors":{p}}}}}"#)
            }
            (Out::Complete, _) => {
                self.streams.remove(&id);
                return self.send_text(format!(r#"{{"type":"complete","id":{id_json}}}"#)).await;
            }
            (Out::Revoked(reason), _) => return Err(Close::new(4403, format!("forbidden: {reason}"))),
        };
        self.send_text(frame).await?;
        if let Out::Error(_) = out {
            // `error` ends an operation in graphql-transport-ws; legacy clients expect `complete`.
            self.streams.remove(&id);
            if self.protocol == Protocol::Legacy {
                self.send_text(format!(r#"{{"type":"complete","id":{id_json}}}"#)).await?;
            }
        }
        Ok(())
    }

    /// Ends operation `id` with one error.
    async fn send_error(&mut self, id: &str, message: &str, code: &str) -> Result<(), Close> {
        let errors = json!([{"message": message, "extensions": {"code": code}}]);
        self.send(json!({"type": "error", "id": id, "payload": errors})).await
    }

    async fn send(&mut self, message: Value) -> Result<(), Close> {
        self.send_text(message.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), Close> {
        let send = self.socket.send(Message::Text(Utf8Bytes::from(text)));
        tokio::pin!(send);
        // Almost every send completes at once (the socket has room); only one that has to
        // wait gets a timer.
        let sent = match futures_util::poll!(send.as_mut()) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => match tokio::time::timeout(self.limits.write_timeout, send).await {
                Ok(r) => r,
                Err(_) => return Err(Close::new(4499, "too slow")),
            },
        };
        sent.map_err(|_| Close::new(1000, "gone"))
    }
}
