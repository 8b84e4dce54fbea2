//! Live feeds for subscriptions: the bus messages a caller may see, as a stream.
//!
//! Every message is checked against the caller's tenant, permission and project scope.
//! When the tenant's roles, scopes or accounts change (an `AccessChanged` message on the
//! tenant feed), the caller's credentials are checked again: a deactivated account or a
//! lost permission ends the stream with the error, a narrowed scope applies to the next
//! message. A listener that falls [`crate::bus::FEED_CAPACITY`] messages behind is ended
//! with `SLOW_CONSUMER` instead of slowing anybody else down.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::Stream;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::ids::{DetectorId, ProjectId, TenantId};
use tokio::sync::broadcast::error::RecvError;

use super::Services;
use crate::auth::{Auth, Principal};
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
}

impl Want {
    fn permission(&self) -> Permission {
        match self {
            Want::Events(_) | Want::Hazards(_) => Permission::HazardRead,
            Want::DeviceStatus(_) | Want::Readings(_) => Permission::SiteRead,
        }
    }

    fn projects(&self) -> Option<&HashSet<ProjectId>> {
        match self {
            Want::Events(p) | Want::Hazards(p) | Want::DeviceStatus(p) => p.as_ref(),
            Want::Readings(_) => None,
        }
    }

    /// The project of a message this subscription wants, if it wants it.
    fn project_of(&self, message: &BusMessage) -> Option<ProjectId> {
        match (self, message) {
            (Want::Events(_), BusMessage::Event(e)) => Some(e.project_id),
            (Want::Hazards(_), BusMessage::Hazard(h)) => Some(h.project_id),
            (Want::DeviceStatus(_), BusMessage::DeviceStatus(s)) => Some(s.project_id),
            (Want::Readings(d), BusMessage::Reading(r)) if r.detector_id == *d => Some(r.project_id),
            _ => None,
        }
    }
}

/// The state of one live stream.
struct Live {
    services: Services,
    who: Principal,
    tenant: TenantId,
    credentials: Option<String>,
    want: Want,
    tenant_feed: Listener,
    readings_feed: Option<Listener>,
    done: bool,
}

/// Keeps the open-subscriptions gauge right however the stream ends.
struct Counted(crate::metrics::Metrics);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.subscriptions.dec();
    }
}

impl Services {
    /// Starts a live feed for `who`. `credentials` (the `Authorization` value the connection
    /// signed in with) are re-checked when the tenant's access changes.
    pub async fn live(
        &self,
        who: &Principal,
        credentials: Option<String>,
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
            _ => None,
        };
        let live = Live {
            services: self.clone(),
            who: who.clone(),
            tenant,
            credentials,
            want,
            tenant_feed: self.inner.bus.subscribe(Feed::Tenant(tenant)),
            readings_feed,
            done: false,
        };
        self.inner.metrics.subscriptions.inc();
        let counted = Counted(self.inner.metrics.clone());
        Ok(futures_util::stream::unfold((live, counted), |(mut live, counted)| async move {
            let item = live.next().await?;
            Some((item, (live, counted)))
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
            if matches!(env.message, BusMessage::AccessChanged) {
                // Boxed: re-authenticating is rare and its future large; inline, it would
                // be held by every open subscription.
                if let Err(e) = Box::pin(self.recheck()).await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            let Some(project) = self.want.project_of(&env.message) else { continue };
            if !self.who.sees_project(project) || self.want.projects().is_some_and(|p| !p.contains(&project)) {
                continue;
            }
            return Some(Ok(env));
        }
    }

    /// Loads the caller's access again; fails when it may no longer follow this feed.
    async fn recheck(&mut self) -> AppResult<()> {
        let who = match self.services.authenticate(self.credentials.as_deref()).await {
            Auth::Authenticated(p) => *p,
            Auth::Invalid(reason) => return Err(AppError::Unauthenticated(reason)),
            // A connection without credentials has nothing to re-check (system principals in tests).
            Auth::Anonymous if self.credentials.is_none() => return Ok(()),
            Auth::Anonymous => return Err(AppError::Unauthenticated("credentials are no longer valid".into())),
        };
        who.require(self.want.permission())?;
        if who.access.tenant != Some(self.tenant) {
            return Err(AppError::Forbidden("the account changed tenant".into()));
        }
        if let Want::Readings(detector) = self.want {
            self.services.detector(&who, detector).await?;
        }
        self.who = who;
        Ok(())
    }
}
