//! Drives simulated devices: every interval each device produces its scenario's messages,
//! which go either to an MQTT broker (one connection per device, client id = serial, last
//! will `{"online": false}` — like real devices) or straight into this process's ingestion
//! queue (the demo, which needs no broker).
//!
//! Simulated devices carry out the commands they are sent (`{prefix}/{serial}/cmd`): each is
//! answered `ok` on `cmd/ack`, and a trip is also reported as the device's `trip` event, each
//! device on its own connection. Devices fed into the queue have no connection and answer
//! nothing. A device with a [`SimDevice::secret`] connects with its own credentials.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::scenarios::SimDevice;
use crate::ingest::mqtt::MqttSettings;
use crate::ingest::{Inbound, IngestQueue};

/// Where simulated messages go.
#[derive(Clone)]
pub enum Sink {
    /// This process's ingestion queue.
    Queue(IngestQueue),
    /// An MQTT broker.
    Mqtt(MqttSettings),
}

/// Runs `devices` until `stop` turns true, each on its own task, ticks spread over the interval.
pub async fn run(devices: Vec<SimDevice>, prefix: String, interval: Duration, sink: Sink, stop: watch::Receiver<bool>) {
    let n = devices.len().max(1) as u32;
    let mut tasks = Vec::new();
    for (i, device) in devices.into_iter().enumerate() {
        let offset = interval / n * i as u32;
        let (sink, prefix, stop) = (sink.clone(), prefix.clone(), stop.clone());
        tasks.push(tokio::spawn(async move { run_one(device, prefix, interval, offset, sink, stop).await }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn run_one(
    mut device: SimDevice,
    prefix: String,
    interval: Duration,
    offset: Duration,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
) {
    let client = match &sink {
        Sink::Mqtt(s) => {
            let mut opts = MqttOptions::new(device.serial.clone(), s.host.clone(), s.port);
            opts.set_keep_alive(Duration::from_secs(30));
            let will_topic = format!("{prefix}/{}/status", device.serial);
            opts.set_last_will(LastWill::new(will_topic, r#"{"online":false}"#, QoS::AtLeastOnce, true));
            // The device's own identity: username = client id = serial, password = secret.
            match (&device.secret, &s.credentials) {
                (Some(secret), _) => {
                    opts.set_credentials(device.serial.clone(), secret.clone());
                }
                (None, Some((u, p))) => {
                    opts.set_credentials(u.clone(), p.clone());
                }
                (None, None) => {}
            }
            let (client, mut lp) = AsyncClient::new(opts, 64);
            let command_topic = format!("{prefix}/{}/cmd", device.serial);
            let (answering, serial, prefix) = (client.clone(), device.serial.clone(), prefix.clone());
            tokio::spawn(async move {
                loop {
                    match lp.poll().await {
                        // Subscribed on every connection: the session is not kept.
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = answering.try_subscribe(command_topic.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) if p.topic == command_topic => {
                            for (suffix, payload) in answers(&p.payload, chrono::Utc::now()) {
                                let topic = format!("{prefix}/{serial}/{suffix}");
                                let _ = answering.try_publish(topic, QoS::AtLeastOnce, false, payload);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "simulated device connection");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
            Some(client)
        }
        Sink::Queue(_) => None,
    };
    tokio::select! {
        _ = tokio::time::sleep(offset) => {},
        _ = stop.changed() => return,
    }
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.changed() => break,
        }
        for m in device.tick(chrono::Utc::now()) {
            let topic = format!("{prefix}/{}/{}", device.serial, m.suffix);
            match (&sink, &client) {
                (Sink::Queue(q), _) => {
                    let msg = Inbound {
                        topic,
                        payload: m.payload.into_bytes(),
                        modbus: None,
                        received_at: chrono::Utc::now(),
                        ack: None,
                    };
                    if !q.push(msg).await {
                        return;
                    }
                }
                (Sink::Mqtt(_), Some(c)) => {
                    let retain = m.suffix == "status";
                    if let Err(e) = c.publish(topic, QoS::AtLeastOnce, retain, m.payload).await {
                        tracing::warn!(serial = %device.serial, error = %e, "simulated publish failed");
                    }
                }
                (Sink::Mqtt(_), None) => return,
            }
        }
    }
    if let Some(c) = client {
        let _ = c.disconnect().await;
    }
}

/// What a simulated device publishes when it receives `command` (the contract's command
/// JSON): `(topic suffix, payload)` — the `ok` result, and for a trip the `trip` event.
/// Anything that is not a command is left unanswered, as a real device would.
pub fn answers(command: &[u8], now: chrono::DateTime<chrono::Utc>) -> Vec<(&'static str, String)> {
    let Ok(cmd) = serde_json::from_slice::<Value>(command) else { return vec![] };
    let (Some(id), Some(op), Some(addr)) = (cmd["id"].as_str(), cmd["op"].as_str(), cmd["addr"].as_u64()) else {
        return vec![];
    };
    let mut out = vec![("cmd/ack", json!({"id": id, "ok": true, "code": 0, "msg": "done"}).to_string())];
    if op == "trip" {
        out.push(("event", json!({"ts": now.timestamp_millis(), "addr": addr, "type": "trip"}).to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_devices_answer_commands() {
        let now = chrono::DateTime::UNIX_EPOCH;
        let trip = br#"{"id":"8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10","addr":2,"op":"trip","expires":1}"#;
        let out = answers(trip, now);
        assert_eq!(out.len(), 2);
        let ack: Value = serde_json::from_str(&out[0].1).unwrap_or_default();
        assert_eq!(
            (out[0].0, &ack["id"], &ack["ok"]),
            ("cmd/ack", &json!("8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10"), &json!(true))
        );
        assert_eq!(out[1], ("event", r#"{"addr":2,"ts":0,"type":"trip"}"#.to_owned()));
        let reset = br#"{"id":"8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10","addr":2,"op":"reset","expires":1}"#;
        assert_eq!(answers(reset, now).len(), 1);
        for junk in [&b"not json"[..], br#"{"op":"trip"}"#, b"[]"] {
            assert!(answers(junk, now).is_empty());
        }
    }
}
