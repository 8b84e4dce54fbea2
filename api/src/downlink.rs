//! The way commands go down to MQTT devices. The command service publishes through it;
//! ingestion's MQTT subscriber attaches its client while it runs (the same connection
//! carries commands down and results back). Kept apart from both so that neither imports
//! the other for it.

use std::sync::{Arc, RwLock};

use rumqttc::{AsyncClient, QoS};

/// The running subscriber's client and topic prefix, shared with the command service.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Downlink(Arc<RwLock<Option<(AsyncClient, String)>>>);

impl Downlink {
    /// Attaches the subscriber's client and topic prefix (`None` when it stops).
    pub(crate) fn attach(&self, client: Option<(AsyncClient, String)>) {
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
