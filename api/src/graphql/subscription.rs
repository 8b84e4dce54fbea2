//! The subscription root: live events, hazards, readings and device status, each limited
//! to the caller's tenant, permissions and project scope (see [`crate::service::live`]).

use std::collections::HashSet;

use async_graphql::{Context, ID, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::reading::EventCategory;

use super::Result;
use super::commands::CommandObj;
use super::guard::{Require, caller};
use super::hazards::{EventCategoryGql, EventObj, HazardObj, ReadingObj};
use super::input::{parse_id, parse_projects};
use super::workorders::{WorkOrderObj, new_loaders};
use crate::bus::{BusMessage, DeviceStatus};
use crate::error::ApiError;
use crate::service::live::Want;

/// Live updates over WebSocket (`graphql-transport-ws`, or the legacy `graphql-ws`).
#[derive(Default)]
pub struct Subscription;

/// A device went online or offline.
pub struct DeviceStatusObj(pub DeviceStatus);

#[Object(name = "DeviceStatusChange")]
impl DeviceStatusObj {
    /// The device.
    async fn device_id(&self) -> ID {
        ID(self.0.device_id.to_string())
    }
    /// Its project.
    async fn project_id(&self) -> ID {
        ID(self.0.project_id.to_string())
    }
    /// Serial number.
    async fn serial(&self) -> &str {
        &self.0.serial
    }
    /// Whether it is online now.
    async fn online(&self) -> bool {
        self.0.online
    }
    /// When it changed.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

/// Categories `alarmEvents` sends when none are asked for, as the contract says: alarms,
/// pre-alarms, faults and recoveries. Online/offline (`STATUS`) has `deviceStatusChanged`
/// and comes here only when asked for.
const ALARM_EVENT_CATEGORIES: [EventCategory; 4] =
    [EventCategory::Alarm, EventCategory::PreAlarm, EventCategory::Fault, EventCategory::Recovery];

fn projects(ids: Option<Vec<ID>>) -> std::result::Result<Option<HashSet<sparkwatch_domain::ids::ProjectId>>, ApiError> {
    Ok(ids.map(|ids| parse_projects("projectIds", &ids)).transpose()?.map(|p| p.into_iter().collect()))
}

/// What a subscription resolver returns: items, or the error that ended the feed.
type Feed<T> = BoxStream<'static, async_graphql::Result<T>>;

/// Starts a live feed for the caller and maps its messages with `pick`.
async fn follow<T: Send + 'static>(
    ctx: &Context<'_>,
    want: Want,
    pick: impl Fn(BusMessage) -> Option<T> + Send + 'static,
) -> Result<Feed<T>> {
    let (services, who) = caller(ctx)?;
    let feed = services.live(who, want).await?;
    Ok(feed
        .filter_map(move |item| {
            let out = match item {
                Ok(env) => pick(env.message.clone()).map(Ok),
                Err(e) => Some(Err(ApiError(e).into())),
            };
            async move { out }
        })
        .boxed())
}

#[Subscription]
impl Subscription {
    /// Alarms, pre-alarms, faults and recoveries in the caller's scope as they are recorded;
    /// `projectIds` narrows to those projects, `categories` picks the categories (`STATUS`,
    /// online/offline, only when asked for). A subscriber that falls far behind gets a `SLOW_CONSUMER` error and
    /// must subscribe again.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn alarm_events(
        &self,
        ctx: &Context<'_>,
        project_ids: Option<Vec<ID>>,
        categories: Option<Vec<EventCategoryGql>>,
    ) -> Result<Feed<EventObj>> {
        let categories: Vec<EventCategory> = match categories {
            Some(c) => c.into_iter().map(Into::into).collect(),
            None => ALARM_EVENT_CATEGORIES.to_vec(),
        };
        follow(ctx, Want::Events(projects(project_ids)?), move |m| match m {
            BusMessage::Event(e) if categories.contains(&e.category) => Some(EventObj(*e)),
            _ => None,
        })
        .await
    }

    /// Hazards opened or changed (new occurrence, acknowledged, closed, …) in the caller's
    /// scope; `projectIds` narrows to those projects.
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn hazard_changed(&self, ctx: &Context<'_>, project_ids: Option<Vec<ID>>) -> Result<Feed<HazardObj>> {
        follow(ctx, Want::Hazards(projects(project_ids)?), |m| match m {
            BusMessage::Hazard(h) => Some(HazardObj(*h)),
            _ => None,
        })
        .await
    }

    /// Work orders created or changed (taken, started, submitted, approved, rejected, …) in
    /// the caller's scope; `projectIds` narrows to those projects. The event is shared by
    /// everyone with the same role and scope, so its `allowedActions` are the role's (see
    /// `WorkOrder.allowedActions`).
    #[graphql(guard = "Require(Permission::HazardRead)")]
    async fn work_order_changed(&self, ctx: &Context<'_>, project_ids: Option<Vec<ID>>) -> Result<Feed<WorkOrderObj>> {
        let (s, who) = caller(ctx)?;
        let (s, who) = (s.clone(), who.clone());
        follow(ctx, Want::WorkOrders(projects(project_ids)?), move |m| match m {
            BusMessage::WorkOrder(o) => Some(WorkOrderObj::with(*o, &new_loaders(&s, &who), false)),
            _ => None,
        })
        .await
    }

    /// Every new reading of one detector (`NOT_FOUND` when the caller cannot see it).
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn readings(&self, ctx: &Context<'_>, detector_id: ID) -> Result<Feed<ReadingObj>> {
        let detector = parse_id("detectorId", &detector_id)?;
        follow(ctx, Want::Readings(detector), |m| match m {
            BusMessage::Reading(r) => Some(ReadingObj(r.reading)),
            _ => None,
        })
        .await
    }

    /// Devices going online or offline in the caller's scope; `projectIds` narrows to those
    /// projects.
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn device_status_changed(
        &self,
        ctx: &Context<'_>,
        project_ids: Option<Vec<ID>>,
    ) -> Result<Feed<DeviceStatusObj>> {
        follow(ctx, Want::DeviceStatus(projects(project_ids)?), |m| match m {
            BusMessage::DeviceStatus(s) => Some(DeviceStatusObj(*s)),
            _ => None,
        })
        .await
    }

    /// Remote commands accepted or changing status (sent, acknowledged, failed, expired) on
    /// detectors the caller can see; `projectIds` narrows to those projects, `detectorId` to
    /// one detector (`NOT_FOUND` when the caller cannot see it).
    #[graphql(guard = "Require(Permission::SiteRead)")]
    async fn command_changed(
        &self,
        ctx: &Context<'_>,
        project_ids: Option<Vec<ID>>,
        detector_id: Option<ID>,
    ) -> Result<Feed<CommandObj>> {
        let detector = detector_id.map(|d| parse_id("detectorId", &d)).transpose()?;
        follow(ctx, Want::Commands(projects(project_ids)?, detector), |m| match m {
            BusMessage::Command(c) => Some(CommandObj(*c)),
            _ => None,
        })
        .await
    }
}
