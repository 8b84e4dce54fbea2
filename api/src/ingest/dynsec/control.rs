//! Requests to Mosquitto's dynamic-security plugin over MQTT: commands are published as JSON
//! on `$CONTROL/dynamic-security/v1`, the plugin answers every command of a message on
//! `$CONTROL/dynamic-security/v1/response`, and each answer carries back the command's
//! `correlationData`, which is how an answer finds its request (several requests may be in
//! flight, and another administrator's answers arrive on the same topic).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// How long a request waits for the connection and then for its answers. Mosquitto rewrites
/// its whole state file per change, so thousands of accounts make an answer take a while.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Why a dynamic-security request failed; [`DynsecError::code`] is stable for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DynsecError {
    /// The administrator connection is not up (broker down, login refused).
    #[error("the broker's dynamic-security plugin is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time (the plugin is not loaded, or the account may not administer it).
    #[error(
        "no answer from the dynamic-security plugin within {0:?} (is the plugin loaded, and may the account administer it?)"
    )]
    Timeout(Duration),
    /// The plugin answered with an error for one command.
    #[error("dynamic security refused {command}: {error}")]
    Refused {
        /// The command (`createClient`, …).
        command: String,
        /// The plugin's words (`Client already exists`, …).
        error: String,
    },
}

impl DynsecError {
    /// A stable code: `DYNSEC_UNREACHABLE`, `DYNSEC_TIMEOUT` or `DYNSEC_REFUSED`.
    pub fn code(&self) -> &'static str {
        match self {
            DynsecError::Unreachable(_) => "DYNSEC_UNREACHABLE",
            DynsecError::Timeout(_) => "DYNSEC_TIMEOUT",
            DynsecError::Refused { .. } => "DYNSEC_REFUSED",
        }
    }

    /// Whether the plugin refused with exactly these words.
    pub(crate) fn refused_as(&self, words: &str) -> bool {
        matches!(self, DynsecError::Refused { error, .. } if error == words)
    }
}

/// One command's answer: its `data` (empty object when none) or the plugin's error.
pub(crate) type Answer = Result<Value, DynsecError>;

#[derive(Deserialize)]
struct Responses {
    #[serde(default)]
    responses: Vec<Response>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    command: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default, rename = "correlationData")]
    correlation: Option<String>,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>;

/// The administrator's connection to the plugin. Cheap to share; reconnects by itself.
pub struct Control {
    client: AsyncClient,
    pending: Pending,
    next: AtomicU64,
    /// True while connected and subscribed to the answers.
    ready: watch::Receiver<bool>,
    /// The connection's last error, for [`DynsecError::Unreachable`].
    last_error: Arc<Mutex<String>>,
}

impl Control {
    /// Connects as `user` with client id `client_id` (reserved: no device may take it) and
    /// keeps the connection up in a background task until `self` is dropped.
    pub fn connect(host: &str, port: u16, client_id: &str, user: &str, password: &str) -> Control {
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            // `listClients` of thousands of devices is a big answer.
            .set_max_packet_size(64 * 1024 * 1024, 1024 * 1024)
            .set_credentials(user, password);
        let (client, eventloop) = AsyncClient::new(options, 256);
        let pending: Pending = Arc::default();
        let (ready_tx, ready) = watch::channel(false);
        let last_error = Arc::new(Mutex::new("not connected yet".to_owned()));
        tokio::spawn(drive(eventloop, client.clone(), pending.clone(), ready_tx, last_error.clone()));
        Control { client, pending, next: AtomicU64::new(1), ready, last_error }
    }

    /// Waits until the connection is up and subscribed, at most `within`.
    pub async fn until_ready(&self, within: Duration) -> Result<(), DynsecError> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(within, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(DynsecError::Unreachable(self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone())),
        }
    }

    /// Sends `commands` (JSON objects with a `command` field) in one message and returns
    /// each one's answer, in order. The request fails as a whole only when the plugin cannot
    /// be reached or does not answer.
    pub(crate) async fn run(&self, commands: Vec<Value>) -> Result<Vec<Answer>, DynsecError> {
        self.until_ready(ANSWER_WITHIN).await?;
        let base = self.next.fetch_add(1, Ordering::Relaxed);
        let mut waits = Vec::with_capacity(commands.len());
        let mut tagged = Vec::with_capacity(commands.len());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (i, mut command) in commands.into_iter().enumerate() {
                let tag = format!("sw-{base}-{i}");
                let (tx, rx) = oneshot::channel();
                pending.insert(tag.clone(), tx);
                command["correlationData"] = Value::String(tag.clone());
                waits.push((tag, rx));
                tagged.push(command);
            }
        }
        let tags: Vec<String> = waits.iter().map(|(t, _)| t.clone()).collect();
        let body = json!({ "commands": tagged }).to_string();
        if let Err(e) = self.client.publish(REQUEST_TOPIC, QoS::AtLeastOnce, false, body).await {
            self.forget(&tags);
            return Err(DynsecError::Unreachable(e.to_string()));
        }
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        let mut answers = Vec::with_capacity(waits.len());
        for (_, rx) in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(answer)) => answers.push(answer),
                // The connection dropped: its task failed every pending request.
                Ok(Err(_)) => {
                    self.forget(&tags);
                    return Err(DynsecError::Unreachable(
                        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    ));
                }
                Err(_) => {
                    self.forget(&tags);
                    return Err(DynsecError::Timeout(ANSWER_WITHIN));
                }
            }
        }
        Ok(answers)
    }

    /// Runs one command and returns its answer.
    pub(crate) async fn one(&self, command: Value) -> Answer {
        self.run(vec![command]).await?.pop().unwrap_or(Err(DynsecError::Timeout(ANSWER_WITHIN)))
    }

    fn forget(&self, tags: &[String]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for t in tags {
            pending.remove(t);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // Ends the background task: its next poll sees the disconnect, and a closed client
        // channel stops it.
        let _ = self.client.try_disconnect();
    }
}

/// Polls the connection: subscribes to the answers after every CONNACK, hands answers to
/// their requests, and fails the pending requests when the connection drops.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    pending: Pending,
    ready: watch::Sender<bool>,
    last_error: Arc<Mutex<String>>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                if client.subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                if granted {
                    let _ = ready.send(true);
                } else {
                    *last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        format!("the account may not subscribe to {RESPONSE_TOPIC}: it cannot administer the plugin");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE_TOPIC => {
                let Ok(parsed) = serde_json::from_slice::<Responses>(&p.payload) else {
                    tracing::warn!("an unreadable answer from the dynamic-security plugin was ignored");
                    continue;
                };
                let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                for r in parsed.responses {
                    // Answers to other administrators' requests carry tags we never gave.
                    let Some(tx) = r.correlation.as_deref().and_then(|c| pending.remove(c)) else { continue };
                    let answer = match r.error {
                        Some(error) => Err(DynsecError::Refused { command: r.command, error }),
                        None => Ok(r.data.unwrap_or_else(|| json!({}))),
                    };
                    let _ = tx.send(answer);
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                let _ = ready.send(false);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = ready.send(false);
                *last_error.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
                // Requests in flight get "unreachable" now rather than a timeout later;
                // answers lost with the connection would never come.
                pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
                if ready.is_closed() {
                    return; // the Control is gone
                }
                tracing::warn!(error = %e, "dynamic-security connection lost; reconnecting");
                // Reconnect backoff (rumqttc reconnects on the next poll), not synchronisation.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
