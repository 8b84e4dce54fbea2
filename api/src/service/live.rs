//! Live feeds for subscriptions: the bus messages a caller may see, as a stream.
//!
//! Every message is checked against the access the feed was started with: tenant,
//! permission and project scope. A feed serves every subscriber with that access (see
//! `crate::ws`), so it does not re-check credentials itself: when the tenant's roles,
//! scopes or accounts change, each subscriber re-authenticates and moves to the feed of its
//! new access or ends. A listener that falls [`crate::bus::FEED_CAPACITY`] messages behind
//! is ended with `SLOW_CONSUMER` instead of slowing anybody else down.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::Stream;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::ids::{DetectorId, ProjectId, TenantId};
use tokio::sync::broadcast::error::RecvError;

use super::Services;
use crate::auth::Principal;
use crate::bus::{BusMessage, Envelope, Feed, Listener};
use crate::error::{AppError, AppResult};

/// What a subscription follows.
#[derive(Clone, Debug)]
pub enum Want {
    /// Events (alarms, pre-alarms, faults, recoveries, status) in these projects (`None`: all visible).
    Events(Option<HashSet<ProjectId>>),
    /// Hazard changes in these projects.
    Hazards(Option<HashSet<ProjectId>>),
    /// Device online/offline changes in these projects.
    DeviceStatus(Option<HashSet<ProjectId>>),
    /// Readings of one detector.
    Readings(DetectorId),
    /// Command changes in these projects, of one detector if given.
    Commands(Option<HashSet<ProjectId>>, Option<DetectorId>),
    /// Work-order changes in these projects.
    WorkOrders(Option<HashSet<ProjectId>>),
}

impl Want {
    fn permission(&self) -> Permission {
        match self {
            Want::Events(_) | Want::Hazards(_) | Want::WorkOrders(_) => Permission::HazardRead,
            Want::DeviceStatus(_) | Want::Readings(_) | Want::Commands(..) => Permission::SiteRead,
        }
    }

    fn projects(&self) -> Option<&HashSet<ProjectId>> {
        match self {
            Want::Events(p) | Want::Hazards(p) | Want::DeviceStatus(p) | Want::Commands(p, _) | Want::WorkOrders(p) => {
                p.as_ref()
            }
            Want::Readings(_) => None,
        }
    }

    /// The project of a message this subscription wants, if it wants it.
    fn project_of(&self, message: &BusMessage) -> Option<ProjectId> {
        match (self, message) {
            (Want::Events(_), BusMessage::Event(e)) => Some(e.project_id),
            (Want::Hazards(_), BusMessage::Hazard(h)) => Some(h.project_id),
            (Want::WorkOrders(_), BusMessage::WorkOrder(o)) => Some(o.project_id),
            (Want::DeviceStatus(_), BusMessage::DeviceStatus(s)) => Some(s.project_id),
            (Want::Readings(d), BusMessage::Reading(r)) if r.detector_id == *d => Some(r.project_id),
            (Want::Commands(_, d), BusMessage::Command(c)) if d.is_none_or(|d| d == c.detector_id) => {
                Some(c.project_id)
            }
            _ => None,
        }
    }
}

/// The state of one live stream.
struct Live {
    services: Services,
    who: Principal,
    tenant: TenantId,
    want: Want,
    tenant_feed: Listener,
    readings_feed: Option<Listener>,
    done: bool,
}

impl Services {
    /// Starts a live feed of what `who` may see of `want`.
    pub async fn live(
        &self,
        who: &Principal,
        want: Want,
    ) -> AppResult<impl Stream<Item = AppResult<Arc<Envelope>>> + Send + 'static> {
        let tenant = who.tenant()?;
        who.require(want.permission())?;
        if let Some(projects) = want.projects() {
            for p in projects {
                // Asking for a project outside the scope is an error, not a silent empty feed.
                self.project(who, *p).await?;
            }
        }
        let readings_feed = match &want {
            Want::Readings(detector) => {
                self.detector(who, *detector).await?;
                Some(self.inner.bus.subscribe(Feed::Readings(*detector)))
            }
            Want::Commands(_, Some(detector)) => {
                self.detector(who, *detector).await?;
                None
            }
            _ => None,
        };
        let live = Live {
            services: self.clone(),
            who: who.clone(),
            tenant,
            want,
            tenant_feed: self.inner.bus.subscribe(Feed::Tenant(tenant)),
            readings_feed,
            done: false,
        };
        Ok(futures_util::stream::unfold(live, |mut live| async move {
            let item = live.next().await?;
            Some((item, live))
        }))
    }
}

impl Live {
    /// The next message for the caller; `None` after an error ended the stream.
    async fn next(&mut self) -> Option<AppResult<Arc<Envelope>>> {
        if self.done {
            return None;
        }
        loop {
            let received = match &mut self.readings_feed {
                Some(readings) => tokio::select! {
                    biased;
                    r = self.tenant_feed.recv() => r,
                    r = readings.recv() => r,
                },
                None => self.tenant_feed.recv().await,
            };
            let env = match received {
                Ok(env) => env,
                Err(RecvError::Lagged(missed)) => {
                    self.done = true;
                    self.services.inner.metrics.slow_consumers.inc();
                    return Some(Err(AppError::SlowConsumer { missed }));
                }
                Err(RecvError::Closed) => return None,
            };
            if env.tenant != self.tenant {
                continue;
            }
            let Some(project) = self.want.project_of(&env.message) else { continue };
            if !self.who.sees_project(project) || self.want.projects().is_some_and(|p| !p.contains(&project)) {
                continue;
            }
            return Some(Ok(env));
        }
    }
}
