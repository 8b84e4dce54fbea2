//! Drives simulated devices: every interval each device produces its scenario's messages,
//! which go either to an MQTT broker (one connection per device, client id = serial, last
//! will `{"online": false}` — like real devices) or straight into this process's ingestion
//! queue (the demo, which needs no broker).

use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
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
            if let Some((u, p)) = &s.credentials {
                opts.set_credentials(u.clone(), p.clone());
            }
            let (client, mut lp) = AsyncClient::new(opts, 64);
            tokio::spawn(async move {
                loop {
                    if let Err(e) = lp.poll().await {
                        tracing::debug!(error = %e, "simulated device connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
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
