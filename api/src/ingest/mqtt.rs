//! The MQTT subscriber (rumqttc). It subscribes to the device contract's topics with QoS 1
//! on a persistent session (`clean_session = false`, a stable client id), so messages
//! published while Sparkwatch is down are delivered when it reconnects. Acknowledgements
//! are manual: a message is acknowledged only after the pipeline committed its batch, so a
//! crash between receipt and storage means redelivery, never loss.
//!
//! The same connection carries commands down to devices ([`Downlink`]): the subscriber
//! registers its client there while it runs, and command results come back on
//! `{prefix}/+/cmd/ack` through the pipeline like every other device message.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use super::health::IngestHealth;
use super::{Inbound, IngestQueue};
use crate::downlink::Downlink;

/// How to reach the broker.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id; must be stable across restarts for the persistent session.
    pub client_id: String,
    /// Topic prefix (`sw`).
    pub prefix: String,
    /// Shared-subscription group, so several instances split the load.
    pub shared_group: Option<String>,
    /// Optional user name and password.
    pub credentials: Option<(String, String)>,
}

impl MqttSettings {
    /// Parses `mqtt://[user:password@]host:port`.
    pub fn from_url(url: &str, client_id: &str, prefix: &str, shared_group: Option<String>) -> anyhow::Result<Self> {
        let rest =
            url.strip_prefix("mqtt://").ok_or_else(|| anyhow::anyhow!("only mqtt:// URLs are supported, got {url}"))?;
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((u.to_owned(), p.to_owned())), hp)
            }
            None => (None, rest),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("{url} names no port"))?;
        Ok(MqttSettings {
            host: host.to_owned(),
            port: port.parse()?,
            client_id: client_id.to_owned(),
            prefix: prefix.to_owned(),
            shared_group,
            credentials,
        })
    }

    /// The subscriptions: telemetry, events, status and command results.
    pub fn topics(&self) -> Vec<String> {
        ["telemetry", "event", "status", "cmd/ack"]
            .iter()
            .map(|suffix| {
                let topic = format!("{}/+/{suffix}", self.prefix);
                match &self.shared_group {
                    Some(g) => format!("$share/{g}/{topic}"),
                    None => topic,
                }
            })
            .collect()
    }
}

/// The largest packet the subscriber reads: MQTT's own limit. A bigger limit in the broker
/// than in the client made the client drop the connection on every redelivery of one big
/// message — a reconnect loop in which no other device was heard. Messages beyond the
/// contract's size are refused by the pipeline with a dead letter instead
/// ([`sparkwatch_domain::payload::MAX_PAYLOAD_BYTES`]); the broker should refuse them first
/// (README).
const MAX_INCOMING_PACKET: usize = 268_435_455;

/// How long a stopping subscriber waits for the pipeline's last acknowledgements.
const FINAL_ACKS_WITHIN: Duration = Duration::from_secs(30);

/// Most messages the subscriber holds while the pipeline has no room. Polling the event
/// loop on meanwhile writes the acknowledgements of what the pipeline settled; waiting for
/// room without polling left them unwritten (BENCHMARKS.md, ingestion run 14).
const HOLD_MAX: usize = 1_000;

/// How long a reconnect or the final DISCONNECT may wait to be written.
const DISCONNECT_WITHIN: Duration = Duration::from_secs(2);

/// Runs the subscriber until `stop` turns true. Connection problems are logged and retried
/// with backoff (1 s doubling to 30 s); they never end the task.
///
/// When the pipeline asks ([`IngestHealth::request_reconnect`]: a store failure that lasts,
/// or an acknowledgement that could not be queued) it reconnects on the same persistent
/// session, so the broker redelivers whatever it has not seen acknowledged. When stopped it
/// stops taking messages but stays connected until the pipeline has finished (at most
/// 30 s), so the acknowledgements of what the pipeline stored last reach the broker; then
/// it disconnects.
pub async fn run(
    settings: MqttSettings,
    queue: IngestQueue,
    downlink: Downlink,
    health: IngestHealth,
    mut stop: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, 256 * 1024);
    if let Some((u, p)) = &settings.credentials {
        options.set_credentials(u.clone(), p.clone());
    }
    // Acknowledgements of a whole batch are queued at once; the request channel must hold them.
    let (client, mut eventloop) = AsyncClient::new(options, 32_768);
    downlink.attach(Some((client.clone(), settings.prefix.clone())));
    let topics = settings.topics();
    // Acknowledgements that found the request channel full, written in order as it drains.
    // Bounded by what the broker delivered and the pipeline holds unacknowledged.
    let (ack_later, mut acks_waiting) = tokio::sync::mpsc::unbounded_channel::<rumqttc::Publish>();
    let (ack_client, ack_health) = (client.clone(), health.clone());
    tokio::spawn(async move {
        while let Some(publish) = acks_waiting.recv().await {
            if let Err(e) = ack_client.ack(&publish).await {
                // The event loop is gone: the next connection redelivers.
                tracing::warn!(error = %e, "could not acknowledge a delivery; reconnecting so the broker redelivers it");
                ack_health.request_reconnect("ack_failed");
            }
        }
    });
    let mut backoff = Duration::from_secs(1);
    let mut queue = Some(queue);
    // Set while a requested reconnect waits for its DISCONNECT to be written.
    let mut reconnecting: Option<tokio::time::Instant> = None;
    let mut stopped_at: Option<tokio::time::Instant> = None;
    let finished = health.finished();
    tokio::pin!(finished);
    let mut pipeline_done = false;
    // Messages read while the pipeline had no room, in arrival order. The loop keeps
    // polling the event loop meanwhile — only that writes the acknowledgements queued by
    // settled batches (and keep-alive pings) — and stops reading only when [`HOLD_MAX`]
    // wait here.
    let mut held: VecDeque<Inbound> = VecDeque::new();
    // One timer, moved only when its deadline changes: a timer made on every turn of the
    // loop cost a registration and a removal per message and per acknowledgement.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        let deadline = match (reconnecting, stopped_at) {
            (Some(r), _) => Some(r + DISCONNECT_WITHIN),
            (None, Some(s)) => Some(s + FINAL_ACKS_WITHIN),
            (None, None) => None,
        };
        if deadline != armed {
            armed = deadline;
            if let Some(at) = deadline {
                timer.as_mut().reset(at);
            }
        }
        // A sender of its own for the wait, so that stopping can still drop `queue`.
        let room = if held.is_empty() { None } else { queue.clone() };
        let event = tokio::select! {
            room = async move { room?.room().await }, if !held.is_empty() && queue.is_some() => {
                match (room, held.pop_front()) {
                    (Some(room), Some(msg)) => {
                        room.send(msg);
                        health.holding(held.len());
                    }
                    _ => break,
                }
                continue;
            }
            e = eventloop.poll(), if held.len() < HOLD_MAX => e,
            _ = stop.changed(), if stopped_at.is_none() => {
                // No more messages into the pipeline; what arrives from now on, and what
                // is held here, is left unacknowledged for the next start.
                stopped_at = Some(tokio::time::Instant::now());
                queue = None;
                held.clear();
                health.holding(0);
                continue;
            }
            _ = &mut finished, if stopped_at.is_some() && !pipeline_done => {
                pipeline_done = true;
                break;
            }
            _ = health.reconnect_requested(), if reconnecting.is_none() && stopped_at.is_none() => {
                tracing::warn!("reconnecting to the MQTT broker so that it redelivers what was not acknowledged");
                reconnecting = Some(tokio::time::Instant::now());
                if client.try_disconnect().is_err() {
                    eventloop.clean();
                    reconnecting = None;
                }
                continue;
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                if reconnecting.take().is_some() {
                    eventloop.clean();
                    continue;
                }
                break;
            }
        };
        match event {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if reconnecting.take().is_some() => {
                // Written after every acknowledgement queued before it; the next poll
                // connects again on the same session.
                eventloop.clean();
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_secs(1);
                tracing::info!(host = %settings.host, port = settings.port, session_present = ack.session_present, "connected to the MQTT broker");
                // Subscribing again is harmless when the session kept the subscriptions.
                for t in &topics {
                    if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(topic = %t, error = %e, "could not subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Some(queue) = &queue else { continue };
                let (ack_client, ack_later, ack_health) = (client.clone(), ack_later.clone(), health.clone());
                let ack_publish = publish.clone();
                let msg = Inbound {
                    topic: publish.topic.clone(),
                    payload: publish.payload.to_vec(),
                    modbus: None,
                    received_at: chrono::Utc::now(),
                    ack: Some(Box::new(move || {
                        if ack_client.try_ack(&ack_publish).is_err() {
                            // The request channel is full while this loop waits for room in
                            // the pipeline (backpressure): the forwarder waits for room
                            // instead. Reconnecting here made the broker redeliver its whole
                            // window on every full channel — under overload a storm of
                            // duplicates (bench-ingest, SQLite at 40k msg/s: 1.5 M
                            // redeliveries, 0 hazards).
                            ack_health.ack_deferred();
                            let _ = ack_later.send(ack_publish);
                        }
                    })),
                };
                // While the pipeline is behind, messages wait here in order (at most
                // HOLD_MAX; then the loop stops reading and the broker holds them).
                if held.is_empty() {
                    match queue.try_push(msg) {
                        Ok(None) => continue,
                        Ok(Some(msg)) => held.push_back(msg),
                        Err(()) => break,
                    }
                } else {
                    held.push_back(msg);
                }
                health.holding(held.len());
            }
            Ok(_) => {}
            Err(e) if stopped_at.is_some() => {
                tracing::info!(error = %e, "MQTT connection ended while stopping");
                break;
            }
            Err(e) => {
                tracing::warn!(host = %settings.host, port = settings.port, error = %e, retry_in_s = backoff.as_secs(), "MQTT connection problem");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => {
                        stopped_at = Some(tokio::time::Instant::now());
                        queue = None;
                        held.clear();
                        health.holding(0);
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if stopped_at.is_some() {
                    break;
                }
            }
        }
    }
    drop(queue);
    downlink.attach(None);
    if pipeline_done {
        // An orderly goodbye: written after the last acknowledgements.
        if client.try_disconnect().is_ok() {
            let goodbye = async {
                while let Ok(event) = eventloop.poll().await {
                    if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DISCONNECT_WITHIN, goodbye).await;
        }
    } else {
        let _ = client.try_disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_topics() {
        let s =
            MqttSettings::from_url("mqtt://u:p@broker:1884", "sw-1", "sw", Some("sparkwatch".into())).expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("broker", 1884));
        assert_eq!(s.credentials, Some(("u".into(), "p".into())));
        assert_eq!(s.topics()[0], "$share/sparkwatch/sw/+/telemetry");
        assert!(MqttSettings::from_url("tcp://x:1", "a", "sw", None).is_err());
    }
}
