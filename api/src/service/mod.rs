//! Use cases, one module per aggregate. A service method takes the calling [`Principal`],
//! applies the tenant and project scope, validates through `domain`, changes the store in
//! one transaction and appends to the operation log in that same transaction.
//!
//! Permissions are checked by GraphQL guards before a method is called; methods used from
//! the CLI are called with a system principal.

pub mod attachments;
pub mod auth;
pub mod checkins;
pub mod commands;
pub mod field;
mod grants;
pub mod hazards;
pub mod identity;
pub mod import;
pub mod live;
pub mod notify;
pub mod patrol;
pub mod push_settings;
pub mod registration;
pub mod reports;
pub mod sites;
pub mod sync;
pub mod tenants;
pub mod thresholds;
pub mod users;
pub mod workorders;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use serde::Serialize;

use crate::auth::Principal;
use crate::auth::rate_limit::{Limits, LoginLimiter};
use crate::auth::token::AccessTokens;
use crate::error::{AppError, AppResult};
use crate::store::{PageRequest, Store, oplog};

/// Where "now" comes from; tests substitute a clock they control.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// Starts at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Settings the services need from the configuration.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Secret for access tokens.
    pub jwt_secret: String,
    /// Access-token lifetime.
    pub access_token_ttl: std::time::Duration,
    /// Refresh-token lifetime.
    pub refresh_token_ttl: std::time::Duration,
    /// Login rate limits.
    pub login_limits: Limits,
    /// Sign-in counters shared through Redis (with `--redis-url`).
    pub shared_limits: Option<crate::auth::shared_limits::SharedLimits>,
    /// Remote commands per caller per minute.
    pub commands_per_minute: std::num::NonZeroU32,
    /// Proxies trusted to name the client in forwarding headers.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The sites' UTC offset (patrol periods).
    pub patrol_utc_offset: chrono::FixedOffset,
    /// Attachments' storage.
    pub objects: crate::objects::Objects,
    /// Who may register which gateway and serial (hosted deployments).
    pub registration: registration::RegistrationPolicy,
}

/// The use cases, shared by the GraphQL layer, the CLI and background jobs.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Bumped on every change to devices, detectors or thresholds, so ingestion caches
    /// refresh at once.
    site_generation: Arc<std::sync::atomic::AtomicU64>,
    metrics: crate::metrics::Metrics,
    latest: Arc<crate::store::latest::LatestCache>,
    bus: crate::bus::Bus,
    push: crate::push::Push,
    /// Wakes the push dispatcher when notifications were queued.
    push_wakeup: Arc<tokio::sync::Notify>,
    /// Notifications this instance queued and already claimed, with their phones: the
    /// dispatcher sends them without claiming them from the database again.
    handed_over: std::sync::Mutex<Vec<notify::HandedOver>>,
    clock: Arc<dyn Clock>,
    tokens: AccessTokens,
    refresh_ttl: chrono::Duration,
    limiter: LoginLimiter,
    /// Proxies trusted to name the client (`--trusted-proxies`).
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Remote commands per caller (person or API key) per minute.
    command_limiter: commands::CommandLimiter,
    commands: commands::Ledger,
    /// Patrol settings: the key of checkpoint QR tags and the sites' UTC offset.
    patrol: patrol::PatrolKeys,
    objects: crate::objects::Objects,
    /// Device credentials: the external broker's account keeper, once connected.
    identity: identity::Identity,
    /// Allowed networks and serial claiming.
    registration: registration::RegistrationPolicy,
    /// Failed serial claims per tenant.
    claims: LoginLimiter,
}

impl Services {
    /// Wires the services over a store.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: ServiceSettings,
        metrics: crate::metrics::Metrics,
        latest: crate::store::latest::LatestCache,
        bus: crate::bus::Bus,
        push: crate::push::Push,
    ) -> Self {
        let site_generation = Arc::<std::sync::atomic::AtomicU64>::default();
        let commands = commands::Ledger::new(store.clone(), bus.clone(), clock.clone(), site_generation.clone());
        Services {
            inner: Arc::new(Inner {
                store,
                site_generation,
                metrics,
                latest: Arc::new(latest),
                bus,
                push,
                push_wakeup: Arc::default(),
                handed_over: Default::default(),
                clock,
                tokens: AccessTokens::new(&settings.jwt_secret, settings.access_token_ttl),
                refresh_ttl: chrono::Duration::from_std(settings.refresh_token_ttl)
                    .unwrap_or(chrono::Duration::days(30)),
                limiter: LoginLimiter::new(settings.login_limits).shared(settings.shared_limits),
                trusted_proxies: settings.trusted_proxies,
                command_limiter: commands::CommandLimiter::new(settings.commands_per_minute),
                commands,
                patrol: patrol::PatrolKeys::new(&settings.jwt_secret, settings.patrol_utc_offset),
                objects: settings.objects,
                identity: identity::Identity::default(),
                registration: settings.registration,
                claims: registration::claim_limiter(),
            }),
        }
    }

    /// Proxies whose `X-Forwarded-For`/`Forwarded` name the client.
    pub fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.inner.trusted_proxies
    }

    /// The store (for health checks).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Counter of device/detector changes, watched by the ingestion caches.
    pub fn site_generation(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.site_generation.clone()
    }

    /// Tells ingestion that devices or detectors changed.
    pub(crate) fn sites_changed(&self) {
        self.inner.site_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Latest value per detector (fed by ingestion).
    pub fn latest(&self) -> &Arc<crate::store::latest::LatestCache> {
        &self.inner.latest
    }

    /// The event bus (subscriptions and push listen to it).
    pub fn bus(&self) -> &crate::bus::Bus {
        &self.inner.bus
    }

    /// Tells listeners in `tenant` to re-check their callers' permissions and scope.
    pub(crate) fn access_changed(&self, tenant: sparkwatch_domain::ids::TenantId) {
        let feed = crate::bus::Feed::Tenant(tenant);
        self.inner.bus.publish([crate::bus::Envelope { tenant, feed, message: crate::bus::BusMessage::AccessChanged }]);
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    async fn begin(&self) -> AppResult<DatabaseTransaction> {
        Ok(self.inner.store.begin().await?)
    }

    async fn log(&self, tx: &DatabaseTransaction, who: &Principal, entry: oplog::Entry<'_>) -> AppResult<()> {
        Ok(oplog::append(tx, who, entry, self.now()).await?)
    }
}

/// Largest page a client may ask for.
pub const MAX_PAGE: u64 = 200;
/// Page size when the client does not say.
pub const DEFAULT_PAGE: u64 = 50;

/// Checks a client's paging arguments.
pub fn page_request(first: Option<i32>, after: Option<&str>) -> AppResult<PageRequest> {
    let first = match first {
        None => DEFAULT_PAGE,
        Some(n) if n >= 0 && (n as u64) <= MAX_PAGE => n as u64,
        Some(_) => return Err(AppError::invalid("first", format!("must be between 0 and {MAX_PAGE}"))),
    };
    let after = after
        .map(|c| c.parse().map_err(|_| AppError::invalid("after", "is not a cursor returned by this list")))
        .transpose()?;
    Ok(PageRequest { first, after })
}

/// JSON of a value for the operation log.
pub fn snapshot<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}
