//! The bus over Redis pub/sub: a publisher task that pipelines `PUBLISH` commands from a
//! bounded queue, and a subscriber task that keeps one pub/sub connection subscribed to the
//! channels local listeners need, reconnecting (and re-subscribing) when Redis goes away.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sparkwatch_domain::ids::DetectorId;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::Envelope;
use crate::metrics::Metrics;

/// Messages waiting for Redis before new ones are dropped (counted).
const QUEUE: usize = 20_000;

/// The sorted set of followed detectors: member = `{instance}:{detector id}` (so an
/// instance can withdraw its own interest without touching another's), score = expiry (ms).
const READERS_KEY: &str = "sw:bus:readers";
/// How long an advertisement lasts, and how often it is renewed.
const READERS_TTL: Duration = Duration::from_secs(30);
const READERS_RENEW: Duration = Duration::from_secs(10);
/// How often the followed set is read back.
const READERS_POLL: Duration = Duration::from_secs(1);

pub(super) struct RedisLink {
    client: redis::Client,
    outbox: mpsc::Sender<Vec<Envelope>>,
    wanted: watch::Sender<HashSet<String>>,
    connected: watch::Receiver<Result<(), String>>,
    metrics: Metrics,
    readers: Arc<RwLock<HashSet<DetectorId>>>,
}

impl RedisLink {
    pub(super) fn start(
        url: &str,
        metrics: Metrics,
        deliver: impl Fn(Envelope) + Send + Sync + 'static,
    ) -> anyhow::Result<RedisLink> {
        let client = redis::Client::open(url)?;
        let (outbox, rx) = mpsc::channel(QUEUE / 100);
        let (wanted, wanted_rx) = watch::channel(HashSet::new());
        let (connected_tx, connected) = watch::channel(Err("connecting".to_owned()));
        let readers = Arc::new(RwLock::new(HashSet::new()));
        let instance = uuid::Uuid::now_v7().simple().to_string();
        tokio::spawn(publisher(client.clone(), rx, metrics.clone(), instance.clone()));
        tokio::spawn(interest(client.clone(), instance.clone(), wanted_rx.clone(), readers.clone()));
        tokio::spawn(subscriber(client.clone(), wanted_rx, connected_tx, instance, deliver));
        Ok(RedisLink { client, outbox, wanted, connected, metrics, readers })
    }

    /// Whether the subscriber connection is up now.
    pub(super) fn is_connected(&self) -> bool {
        self.connected.borrow().is_ok()
    }

    /// The subscriber connection's state, to be told when it goes down or comes back.
    pub(super) fn connectivity(&self) -> watch::Receiver<Result<(), String>> {
        self.connected.clone()
    }

    /// Waits (at most 10 s) until the subscriber connection is up.
    pub(super) async fn ready(&self) -> anyhow::Result<()> {
        let mut rx = self.connected.clone();
        let wait = rx.wait_for(|r| r.is_ok());
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let why = self.connected.borrow().clone().err().unwrap_or_default();
                anyhow::bail!("Redis did not accept a pub/sub connection within 10 s ({why})")
            }
        }
    }

    pub(super) fn publish(&self, messages: impl IntoIterator<Item = Envelope>) {
        let batch: Vec<Envelope> = messages.into_iter().collect();
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if self.outbox.try_send(batch).is_err() {
            self.metrics.bus_dropped.inc_by(n);
        }
    }

    /// Makes the subscriber follow exactly these channels.
    pub(super) fn listen(&self, channels: Vec<String>) {
        let set: HashSet<String> = channels.into_iter().collect();
        self.wanted.send_if_modified(|cur| {
            if *cur == set {
                false
            } else {
                *cur = set;
                true
            }
        });
    }

    /// Detectors whose readings some instance follows.
    pub(super) fn remote_readers(&self) -> HashSet<DetectorId> {
        self.readers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether Redis answers PING within a second (a blackholed Redis must not hang `/readyz`).
    pub(super) async fn ping(&self) -> Result<(), String> {
        let ping = async {
            let mut conn = self.client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(1), ping).await.unwrap_or_else(|_| Err("no answer within 1 s".into()))
    }
}

/// A message on the wire: the publishing instance's id, a space, the JSON envelope. The id
/// lets an instance skip its own messages, which it already delivered to its listeners.
fn wire(instance: &str, env: &Envelope) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(instance.as_bytes());
    out.push(b' ');
    serde_json::to_writer(&mut out, env)?;
    Ok(out)
}

/// The envelope of a message from another instance; `None` for this instance's own.
fn unwire<'a>(instance: &str, payload: &'a [u8]) -> Option<&'a [u8]> {
    let space = payload.iter().position(|b| *b == b' ')?;
    (payload[..space] != *instance.as_bytes()).then(|| &payload[space + 1..])
}

async fn publisher(client: redis::Client, mut rx: mpsc::Receiver<Vec<Envelope>>, metrics: Metrics, instance: String) {
    let mut conn = None;
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        if conn.is_none() {
            match redis::aio::ConnectionManager::new(client.clone()).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, dropped = batch.len(), "bus: Redis unreachable, messages dropped");
                    metrics.bus_dropped.inc_by(batch.len() as u64);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut pipe = redis::pipe();
        for env in &batch {
            match wire(&instance, env) {
                Ok(payload) => {
                    pipe.publish(env.feed.channel(), payload).ignore();
                }
                Err(e) => tracing::error!(error = %e, "bus: message not serialisable"),
            }
        }
        if let Err(e) = pipe.query_async::<()>(c).await {
            tracing::warn!(error = %e, dropped = batch.len(), "bus: publishing to Redis failed");
            metrics.bus_dropped.inc_by(batch.len() as u64);
        }
    }
}

/// Advertises the detectors followed here (at once when that changes, and before the
/// advertisement expires) and reads back what every instance follows.
async fn interest(
    client: redis::Client,
    instance: String,
    mut wanted: watch::Receiver<HashSet<String>>,
    readers: Arc<RwLock<HashSet<DetectorId>>>,
) {
    let mut conn = None;
    // What this instance advertised last, so what it no longer follows can be withdrawn.
    let mut advertised: HashSet<String> = HashSet::new();
    let mut renew = tokio::time::interval(READERS_RENEW);
    let mut poll = tokio::time::interval(READERS_POLL);
    loop {
        let advertise = tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = renew.tick() => true,
            _ = poll.tick() => false,
        };
        if conn.is_none() {
            conn = redis::aio::ConnectionManager::new(client.clone()).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let result: redis::RedisResult<Vec<String>> = async {
            if advertise {
                let mine: HashSet<String> = wanted
                    .borrow_and_update()
                    .iter()
                    .filter_map(|ch| ch.strip_prefix("sw:bus:readings:"))
                    .map(|d| format!("{instance}:{d}"))
                    .collect();
                let expires = now_ms + READERS_TTL.as_millis() as i64;
                let mut pipe = redis::pipe();
                for m in &mine {
                    pipe.zadd(READERS_KEY, m, expires).ignore();
                }
                for gone in advertised.difference(&mine) {
                    pipe.zrem(READERS_KEY, gone).ignore();
                }
                pipe.zrembyscore(READERS_KEY, "-inf", now_ms).ignore();
                pipe.query_async::<()>(c).await?;
                advertised = mine;
            }
            redis::cmd("ZRANGEBYSCORE").arg(READERS_KEY).arg(now_ms).arg("+inf").query_async(c).await
        }
        .await;
        match result {
            Ok(ids) => {
                let set: HashSet<DetectorId> =
                    ids.iter().filter_map(|m| m.rsplit(':').next()).filter_map(|d| d.parse().ok()).collect();
                *readers.write().unwrap_or_else(|e| e.into_inner()) = set;
            }
            Err(e) => {
                tracing::warn!(error = %e, "bus: could not exchange followed detectors with Redis");
                conn = None;
            }
        }
    }
}

async fn subscriber(
    client: redis::Client,
    mut wanted: watch::Receiver<HashSet<String>>,
    connected: watch::Sender<Result<(), String>>,
    instance: String,
    deliver: impl Fn(Envelope) + Send + Sync + 'static,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                let _ = connected.send(Err(e.to_string()));
                tracing::warn!(error = %e, retry_in = ?backoff, "bus: Redis pub/sub connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut current: HashSet<String> = HashSet::new();
        let _ = connected.send(Ok(()));
        backoff = Duration::from_millis(200);
        // The first pass subscribes to what is already wanted (after a reconnect: everything).
        wanted.mark_changed();
        let lost = loop {
            tokio::select! {
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return; // the bus is gone
                    }
                    let want = wanted.borrow_and_update().clone();
                    let add: Vec<&String> = want.difference(&current).collect();
                    let remove: Vec<&String> = current.difference(&want).collect();
                    if !add.is_empty()
                        && let Err(e) = sink.subscribe(add).await
                    {
                        break e.to_string();
                    }
                    if !remove.is_empty()
                        && let Err(e) = sink.unsubscribe(remove).await
                    {
                        break e.to_string();
                    }
                    current = want;
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break "connection closed".to_owned() };
                    let Some(json) = unwire(&instance, msg.get_payload_bytes()) else { continue };
                    match serde_json::from_slice::<Envelope>(json) {
                        Ok(env) => deliver(env),
                        Err(e) => tracing::warn!(error = %e, channel = msg.get_channel_name(), "bus: unreadable message"),
                    }
                }
            }
        };
        let _ = connected.send(Err(lost.clone()));
        tracing::warn!(error = %lost, "bus: Redis pub/sub connection lost; reconnecting");
    }
}
