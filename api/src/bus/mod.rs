//! The event bus: what happened (events, readings, hazard changes, device status, access
//! changes) goes out to whoever listens — GraphQL subscriptions and the push dispatcher.
//!
//! Messages are published on *feeds*: one per tenant (events, hazards, device status,
//! access changes — low rate) and one per detector (readings — high rate, so nobody pays
//! for readings they did not ask for). Locally every feed with listeners is a bounded
//! `tokio::sync::broadcast` ring: a slow listener lags and is told so (`RecvError::Lagged`), it never
//! slows the publisher or the other listeners. Feeds without listeners cost nothing.
//!
//! With `--redis-url` every message goes through Redis pub/sub (channel `sw:bus:{feed}`):
//! each instance subscribes to the feeds its own listeners need, so an alarm ingested by
//! one instance reaches subscribers connected to another. Instances also advertise which
//! detectors' readings they follow (a Redis sorted set with expiring entries per instance,
//! refreshed every few seconds and removed when the last follower leaves), so readings
//! nobody follows never leave the ingesting instance; a new readings subscription on
//! another instance is seen within about a second, its end within a few. Publishing never waits for Redis:
//! messages are handed to a bounded queue and pipelined by a background task; when Redis
//! is down, messages for other instances are dropped (counted) rather than stalling
//! ingestion; listeners on the publishing instance are served directly and lose nothing,
//! and the link re-subscribes every wanted feed when Redis returns (docs/SUBSCRIPTIONS.md).
//!
//! Layout: [`Bus`] (publish / subscribe), [`BusMessage`] (what travels), `redis` (the link).

mod redis_link;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sparkwatch_domain::ids::{DetectorId, DeviceId, ProjectId, TenantId};
use sparkwatch_domain::reading::Reading;
use tokio::sync::broadcast;

use crate::store::hazards::{EventView, Hazard};

/// Messages a local listener may fall behind by before it is told it lagged.
pub const FEED_CAPACITY: usize = 1024;

/// Where a message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Feed {
    /// Everything about one tenant except readings.
    Tenant(TenantId),
    /// Readings of one detector.
    Readings(DetectorId),
}

impl Feed {
    /// The Redis channel of the feed.
    fn channel(&self) -> String {
        match self {
            Feed::Tenant(t) => format!("sw:bus:tenant:{t}"),
            Feed::Readings(d) => format!("sw:bus:readings:{d}"),
        }
    }
}

/// A device came online or went offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Device.
    pub device_id: DeviceId,
    /// Its project.
    pub project_id: ProjectId,
    /// Serial number.
    pub serial: String,
    /// Online now?
    pub online: bool,
    /// When it changed.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// One detector's new reading.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadingNote {
    /// Detector.
    pub detector_id: DetectorId,
    /// Its project.
    pub project_id: ProjectId,
    /// The values.
    pub reading: Reading,
}

/// What travels on the bus.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BusMessage {
    /// An event was recorded (alarm, pre-alarm, fault, recovery, status, operation).
    Event(Box<EventView>),
    /// A hazard was opened or changed.
    Hazard(Box<Hazard>),
    /// A detector reported values.
    Reading(Box<ReadingNote>),
    /// A device went online or offline.
    DeviceStatus(Box<DeviceStatus>),
    /// A remote command was accepted or changed status.
    Command(Box<crate::store::commands::Command>),
    /// A work order was created or changed.
    WorkOrder(Box<crate::store::workorders::WorkOrder>),
    /// Roles, scopes or accounts of the tenant changed: listeners re-check their caller.
    AccessChanged,
}

/// A message with its feed, as published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The tenant whose data it is.
    pub tenant: TenantId,
    /// The feed.
    pub feed: Feed,
    /// The message.
    pub message: BusMessage,
}

/// A listener's end of a feed.
pub type Listener = broadcast::Receiver<Arc<Envelope>>;

/// The bus; cheap to clone.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

type Feeds = Arc<Mutex<HashMap<Feed, broadcast::Sender<Arc<Envelope>>>>>;

struct Inner {
    feeds: Feeds,
    link: Option<redis_link::RedisLink>,
    /// Events published by this instance, for jobs that must see each event once across
    /// instances (push routing): every event is published by exactly one instance.
    local: broadcast::Sender<Arc<Envelope>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner { feeds: Feeds::default(), link: None, local: broadcast::channel(LOCAL_CAPACITY).0 }
    }
}

/// How often a Redis bus lets go of feeds nobody listens to any more.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Events the push router may fall behind by.
const LOCAL_CAPACITY: usize = 16_384;

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.link.is_some() { "Bus::Redis" } else { "Bus::InProcess" })
    }
}

impl Bus {
    /// A bus inside this process only.
    pub fn in_process() -> Bus {
        Bus::default()
    }

    /// A bus through Redis pub/sub, shared by every instance using the same Redis.
    pub async fn redis(url: &str, metrics: crate::metrics::Metrics) -> anyhow::Result<Bus> {
        let feeds = Feeds::default();
        let local = feeds.clone();
        let link = redis_link::RedisLink::start(url, metrics, move |env| deliver(&local, Arc::new(env)))?;
        link.ready().await?;
        let inner = Arc::new(Inner { feeds, link: Some(link), ..Inner::default() });
        tokio::spawn(prune_idle(Arc::downgrade(&inner)));
        Ok(Bus { inner })
    }

    /// Publishes messages; never waits for listeners or for Redis.
    pub fn publish(&self, messages: impl IntoIterator<Item = Envelope>) {
        let messages: Vec<Arc<Envelope>> = messages.into_iter().map(Arc::new).collect();
        if self.inner.local.receiver_count() > 0 {
            for m in messages.iter().filter(|m| matches!(m.message, BusMessage::Event(_))) {
                let _ = self.inner.local.send(m.clone());
            }
        }
        // Listeners here hear this instance's messages at once, Redis or not: a Redis outage
        // then only delays what other instances publish (the link skips our own echoes).
        if let Some(link) = &self.inner.link {
            link.publish(messages.iter().map(|m| Envelope::clone(m)));
        }
        for m in messages {
            deliver(&self.inner.feeds, m);
        }
    }

    /// The events this instance publishes (not those arriving from other instances).
    pub fn local_events(&self) -> Listener {
        self.inner.local.subscribe()
    }

    /// Listens to a feed. Dropping every listener of a feed stops its delivery (with Redis:
    /// within [`PRUNE_EVERY`], or at the next subscribe).
    pub fn subscribe(&self, feed: Feed) -> Listener {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        forget_idle(&mut feeds);
        let listener = feeds.entry(feed).or_insert_with(|| broadcast::channel(FEED_CAPACITY).0).subscribe();
        self.follow(feeds);
        listener
    }

    /// Makes the Redis link follow exactly the feeds in `feeds` (and unlocks them).
    fn follow(&self, feeds: std::sync::MutexGuard<'_, HashMap<Feed, broadcast::Sender<Arc<Envelope>>>>) {
        let active: Vec<String> = feeds.keys().map(Feed::channel).collect();
        drop(feeds);
        if let Some(link) = &self.inner.link {
            link.listen(active);
        }
    }

    /// Forgets feeds whose listeners all left, so Redis stops sending them here and other
    /// instances stop publishing readings nobody follows any more.
    fn prune(&self) {
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if forget_idle(&mut feeds) {
            self.follow(feeds);
        }
    }

    /// Detectors whose readings someone follows — here, or (with Redis) on another
    /// instance, as advertised there. Ingestion publishes only those readings, so a busy
    /// site does not push every reading through Redis for nobody.
    pub fn readings_wanted(&self) -> HashSet<DetectorId> {
        let mut wanted: HashSet<DetectorId> = {
            let feeds = self.inner.feeds.lock().unwrap_or_else(|e| e.into_inner());
            feeds
                .iter()
                .filter_map(|(f, s)| match f {
                    Feed::Readings(d) if s.receiver_count() > 0 => Some(*d),
                    _ => None,
                })
                .collect()
        };
        if let Some(link) = &self.inner.link {
            wanted.extend(link.remote_readers());
        }
        wanted
    }

    /// Whether the bus delivers messages between instances right now (always in process):
    /// listeners that must not miss a revocation re-check more often while it does not.
    pub fn is_connected(&self) -> bool {
        self.inner.link.as_ref().is_none_or(redis_link::RedisLink::is_connected)
    }

    /// Changes of the link between instances (none in process): a listener that must not
    /// miss an "access changed" message re-checks when the link drops, and once more when it
    /// returns, since what was published in the gap never arrives.
    pub fn connectivity(&self) -> Option<tokio::sync::watch::Receiver<Result<(), String>>> {
        self.inner.link.as_ref().map(redis_link::RedisLink::connectivity)
    }

    /// Whether Redis is reachable (always true in process).
    pub async fn ping(&self) -> Result<(), String> {
        match &self.inner.link {
            Some(link) => link.ping().await,
            None => Ok(()),
        }
    }
}

/// Removes the feeds without listeners; whether there were any.
fn forget_idle(feeds: &mut HashMap<Feed, broadcast::Sender<Arc<Envelope>>>) -> bool {
    let before = feeds.len();
    feeds.retain(|_, s| s.receiver_count() > 0);
    feeds.len() != before
}

/// Prunes idle feeds until the bus is dropped.
async fn prune_idle(bus: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = bus.upgrade() else { return };
        Bus { inner }.prune();
    }
}

fn deliver(feeds: &Feeds, env: Arc<Envelope>) {
    let feeds = feeds.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = feeds.get(&env.feed) {
        // An error only means nobody listens any more.
        let _ = sender.send(env);
    }
}
