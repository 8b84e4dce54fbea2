//! The MQTT subscriber (rumqttc). It subscribes to the device contract's topics with QoS 1
//! on a persistent session (`clean_session = false`, a stable client id), so messages
//! published while Sparkwatch is down are delivered when it reconnects. Acknowledgements
//! are manual: a message is acknowledged only after the pipeline committed its batch, so a
//! crash between receipt and storage means redelivery, never loss.
//!
//! The same connection carries commands down to devices ([`Downlink`]): the subscriber
//! registers its client there while it runs, and command results come back on
//! `{prefix}/+/cmd/ack` through the pipeline like every other device message.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use super::{Inbound, IngestQueue};

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

/// The way commands go down to MQTT devices: the running subscriber's client and topic
/// prefix, shared with the command service. Cheap to clone.
#[derive(Clone, Default)]
pub struct Downlink(Arc<RwLock<Option<(AsyncClient, String)>>>);

impl Downlink {
    fn attach(&self, client: Option<(AsyncClient, String)>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = client;
    }

    /// Publishes a command on `{prefix}/{serial}/cmd` (QoS 1, not retained: a device that
    /// is away must not act on it later than its expiry allows). Done once the client
    /// accepted it; while the broker is unreachable the client holds it and sends it on
    /// reconnection. Fails when this instance has no MQTT connection at all.
    pub async fn publish_command(&self, serial: &str, payload: Vec<u8>) -> Result<(), String> {
        let Some((client, prefix)) = self.0.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err("this server has no MQTT connection (no broker configured)".to_owned());
        };
        let topic = sparkwatch_domain::payload::command_topic(&prefix, serial);
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| format!("MQTT publish failed: {e}"))
    }
}

/// Runs the subscriber until `stop` turns true. Connection problems are logged and retried
/// with backoff (1 s doubling to 30 s); they never end the task.
pub async fn run(settings: MqttSettings, queue: IngestQueue, downlink: Downlink, mut stop: watch::Receiver<bool>) {
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((u, p)) = &settings.credentials {
        options.set_credentials(u.clone(), p.clone());
    }
    // Acknowledgements of a whole batch are queued at once; the request channel must hold them.
    let (client, mut eventloop) = AsyncClient::new(options, 32_768);
    downlink.attach(Some((client.clone(), settings.prefix.clone())));
    let topics = settings.topics();
    let mut backoff = Duration::from_secs(1);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.changed() => break,
        };
        match event {
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
                let ack_client = client.clone();
                let ack_publish = publish.clone();
                let msg = Inbound {
                    topic: publish.topic.clone(),
                    payload: publish.payload.to_vec(),
                    modbus: None,
                    received_at: chrono::Utc::now(),
                    ack: Some(Box::new(move || {
                        if let Err(e) = ack_client.try_ack(&ack_publish) {
                            tracing::warn!(error = %e, "could not acknowledge a delivery; the broker will redeliver it");
                        }
                    })),
                };
                // Waiting here is the backpressure: while the pipeline is behind, we stop
                // reading and the broker holds the messages.
                if !queue.push(msg).await {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(host = %settings.host, port = settings.port, error = %e, retry_in_s = backoff.as_secs(), "MQTT connection problem");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    downlink.attach(None);
    let _ = client.try_disconnect();
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
