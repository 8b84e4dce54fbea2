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
//! subscriptions end, nobody else waits), and a subscription that falls behind the bus ends
//! with `SLOW_CONSUMER`. The connection closes with 4403 when its access token expires.

use std::time::Duration;

use async_graphql::{Data, Response};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::{StreamExt, StreamMap};

use crate::auth::Auth;
use crate::graphql::{AppSchema, ClientAddr, Credentials};
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
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            init_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_subscriptions: 100,
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

/// A `next`/`data`/`error` message.
#[derive(serde::Serialize)]
struct Outgoing<'a, P: serde::Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    payload: &'a P,
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
    schema: AppSchema,
    services: Services,
    limits: WsLimits,
    client: ClientAddr,
    data: Option<(Auth, Credentials)>,
    streams: StreamMap<String, BoxStream<'static, Response>>,
}

/// Serves one upgraded connection until it closes.
pub async fn serve(
    socket: WebSocket,
    protocol: Protocol,
    schema: AppSchema,
    services: Services,
    client: ClientAddr,
    limits: WsLimits,
) {
    let mut conn =
        Connection { socket, protocol, schema, services, limits, client, data: None, streams: StreamMap::new() };
    let outcome = conn.run().await;
    let metrics = conn.services.metrics().clone();
    if let Err(Close(code, reason)) = outcome {
        if code == 4499 {
            // The client stopped reading: there is nobody to say goodbye to.
            metrics.slow_consumers.inc();
            tracing::info!("dropped a WebSocket client that stopped reading");
            return;
        }
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.socket.send(Message::Close(Some(frame)))).await;
    }
}

impl Connection {
    async fn run(&mut self) -> Result<(), Close> {
        let init_deadline = tokio::time::Instant::now() + self.limits.init_timeout;
        let mut expiry: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                incoming = self.socket.recv() => {
                    let Some(Ok(msg)) = incoming else { return Ok(()) };
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Binary(_) => return Err(Close::new(4400, "binary messages are not part of the protocol")),
                        Message::Close(_) => return Ok(()),
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    let parsed: ClientMessage = serde_json::from_str(text.as_str())
                        .map_err(|e| Close::new(4400, format!("invalid message: {e}")))?;
                    // Boxed: `handle` may authenticate (database queries), a large future that
                    // would otherwise be part of every idle connection's task for its lifetime.
                    if let Some(at) = Box::pin(self.handle(parsed)).await? {
                        expiry = Some(at);
                    }
                }
                Some((id, response)) = self.streams.next(), if !self.streams.is_empty() => {
                    self.forward(id, response).await?;
                }
                _ = tokio::time::sleep_until(init_deadline), if self.data.is_none() => {
                    return Err(Close::new(4408, "connection initialisation timeout"));
                }
                _ = sleep_until_opt(expiry) => {
                    return Err(Close::new(4403, "the access token expired; reconnect with a fresh token"));
                }
            }
        }
    }

    /// Handles one client message; returns when the connection's credentials expire once
    /// they are known.
    async fn handle(&mut self, msg: ClientMessage) -> Result<Option<tokio::time::Instant>, Close> {
        match msg {
            ClientMessage::ConnectionInit { payload } => {
                if self.data.is_some() {
                    return Err(Close::new(4429, "too many initialisation requests"));
                }
                // Clients differ in the key's case (`authorization`, `Authorization`).
                let credentials = payload
                    .as_ref()
                    .and_then(Value::as_object)
                    .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                    .and_then(|(_, v)| v.as_str().map(str::to_owned));
                let auth = self.services.authenticate(credentials.as_deref()).await;
                if let Auth::Invalid(reason) = &auth {
                    if self.protocol == Protocol::Legacy {
                        self.send(json!({"type": "connection_error", "payload": {"message": reason}})).await?;
                    }
                    return Err(Close::new(4403, format!("forbidden: {reason}")));
                }
                let expires = self.services.credentials_expire_at(credentials.as_deref()).map(|at| {
                    let left = (at - self.services.clock().now()).to_std().unwrap_or_default();
                    tokio::time::Instant::now() + left
                });
                self.data = Some((auth, Credentials(credentials)));
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
                let Some((auth, credentials)) = &self.data else {
                    return Err(Close::new(4401, "unauthorized: send connection_init first"));
                };
                if self.streams.contains_key(&id) {
                    return Err(Close::new(4409, format!("subscriber for {id} already exists")));
                }
                if self.streams.len() >= self.limits.max_subscriptions {
                    let message = format!("at most {} subscriptions per connection", self.limits.max_subscriptions);
                    let errors = json!([{"message": message, "extensions": {"code": "RATE_LIMITED"}}]);
                    self.send(json!({"type": "error", "id": id, "payload": errors})).await?;
                    return Ok(None);
                }
                let mut data = Data::default();
                data.insert(auth.clone());
                data.insert(credentials.clone());
                data.insert(self.client.clone());
                let mut request = *payload;
                request.data = data;
                let stream = self.schema.execute_stream(request);
                self.streams.insert(id, Box::pin(stream));
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

    /// Sends one result of subscription `id`; a request error ends the subscription.
    async fn forward(&mut self, id: String, response: Response) -> Result<(), Close> {
        let failed = response.data == async_graphql::Value::Null && !response.errors.is_empty();
        let kind = match self.protocol {
            Protocol::TransportWs if failed => "error",
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        // Serialised once, straight to text: this runs per subscriber per event.
        let text = if kind == "error" {
            serde_json::to_string(&Outgoing { kind, id: &id, payload: &response.errors })
        } else {
            serde_json::to_string(&Outgoing { kind, id: &id, payload: &response })
        };
        self.send_text(text.unwrap_or_else(|_| String::from("{}"))).await?;
        if failed {
            // `error` ends an operation in graphql-transport-ws; legacy clients expect `complete`.
            self.streams.remove(&id);
            if self.protocol == Protocol::Legacy {
                self.send(json!({"type": "complete", "id": id})).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, message: Value) -> Result<(), Close> {
        self.send_text(message.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), Close> {
        let text = Utf8Bytes::from(text);
        match tokio::time::timeout(self.limits.write_timeout, self.socket.send(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::new(1000, "gone")),
            Err(_) => Err(Close::new(4499, "too slow")),
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
