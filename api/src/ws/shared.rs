//! Shared execution of identical subscriptions.
//!
//! Thousands of managers' phones typically hold the *same* subscription document with the
//! same variables and the same access (tenant, permissions, project scope). Executing the
//! document and serialising its result once per subscriber cost ~50 µs of CPU per delivery,
//! half a second for one alarm to 10k phones. Here subscribers with equal [`GroupKey`]s form
//! a group: the document runs once per group ([`drive`]), each result is serialised once,
//! and every member only wraps the shared text in its own `next` frame.
//!
//! Access stays per subscriber. The group runs as an access (not as a person) and never
//! re-checks credentials itself; when the tenant's access changes, every member
//! re-authenticates its own credentials and, if its access is no longer the group's,
//! leaves for the group of its new access (or ends with the error). Operations other than
//! subscriptions (legacy clients may send queries and mutations over the socket) are never
//! shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Data, Request, Response, Variables};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sparkwatch_domain::access::Access;
use tokio::sync::{broadcast, oneshot};

use crate::auth::Auth;
use crate::bus::{BusMessage, FEED_CAPACITY, Feed, Listener};
use crate::error::{ApiError, AppError};
use crate::graphql::{AppSchema, ClientAddr};
use crate::service::Services;

/// What a subscription sends its client.
#[derive(Clone, Debug)]
pub enum Out {
    /// A result: the serialised GraphQL response (`next` / legacy `data` payload).
    Next(Arc<str>),
    /// The operation failed: the serialised error list. Nothing follows.
    Error(Arc<str>),
    /// The operation ended normally. Nothing follows.
    Complete,
    /// The caller's credentials were revoked (sign-out, password change, deactivation, key
    /// revocation): the connection closes with 4403 and this reason.
    Revoked(Arc<str>),
}

/// What a group tells its members.
enum Item {
    Out(Out),
    /// The tenant's roles, scopes or accounts changed: members check their access again.
    AccessChanged,
}

/// Subscriptions with equal keys share one execution.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    /// The caller's access (`None`: not signed in).
    access: Option<Access>,
    /// Document, operation name and variables.
    request: String,
}

/// One shared execution. Dropped with its last member, which stops [`drive`].
struct Group {
    tx: broadcast::Sender<Arc<Item>>,
    /// Set, under the lock, when the execution has sent its last item: a joiner that
    /// subscribes after that would wait forever.
    ended: Arc<Mutex<bool>>,
    _stop: oneshot::Sender<()>,
}

/// The shared executions of one server; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    schema: AppSchema,
    services: Services,
    groups: Mutex<Groups>,
    /// Open connections per caller.
    sockets: super::per_user::SocketCounts,
}

/// The groups by key; entries of ended groups are pruned when the map has doubled.
#[derive(Default)]
struct Groups {
    by_key: HashMap<GroupKey, Weak<Group>>,
    prune_at: usize,
}

/// The caller of a subscription, as the connection knows it.
#[derive(Clone)]
pub struct Caller {
    /// Who signed in (checked again at every subscribe).
    pub auth: Auth,
    /// The `Authorization` value, for re-checks.
    pub credentials: Option<String>,
    /// The client's address.
    pub client: ClientAddr,
}

impl Hub {
    /// A hub executing against `schema`.
    pub fn new(schema: AppSchema, services: Services) -> Hub {
        Hub { inner: Arc::new(HubInner { schema, services, groups: Mutex::default(), sockets: Default::default() }) }
    }

    /// Open connections per caller.
    pub(crate) fn sockets(&self) -> &super::per_user::SocketCounts {
        &self.inner.sockets
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.inner.services
    }

    /// Starts `request` for `caller`: shared with identical subscriptions, or on its own for
    /// queries and mutations.
    pub fn start(&self, caller: Caller, mut request: Request) -> BoxStream<'static, Out> {
        if !is_subscription(&request) {
            request.data = data_of(&caller);
            return single(self.inner.schema.execute_stream(request)).boxed();
        }
        let doc = Doc { query: request.query, operation_name: request.operation_name, variables: request.variables };
        let key = GroupKey { access: access_of(&caller.auth), request: doc.key() };
        let metrics = self.inner.services.metrics().clone();
        metrics.subscriptions.inc();
        let member = Member { hub: self.clone(), joined: self.join(&key, &caller, &doc), key, caller, doc };
        let counted = Counted(metrics);
        futures_util::stream::unfold(Some((member, counted)), |state| async move {
            let (mut member, counted) = state?;
            let out = member.next().await;
            let more = matches!(out, Out::Next(_));
            Some((out, more.then_some((member, counted))))
        })
        .boxed()
    }

    /// The receiving end of the group for `key`, starting the group if needed.
    fn join(&self, key: &GroupKey, caller: &Caller, doc: &Doc) -> Joined {
        let mut groups = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = groups.by_key.get(key).and_then(Weak::upgrade) {
            let ended = group.ended.lock().unwrap_or_else(|e| e.into_inner());
            if !*ended {
                let rx = group.tx.subscribe();
                drop(ended);
                return Joined { rx, _group: group };
            }
        }
        if groups.by_key.len() >= groups.prune_at {
            groups.by_key.retain(|_, g| g.strong_count() > 0);
            groups.prune_at = (2 * groups.by_key.len()).max(64);
        }
        let (tx, rx) = broadcast::channel(FEED_CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let ended = Arc::new(Mutex::new(false));
        let request = doc.request(data_of(caller));
        let stream = self.inner.schema.execute_stream(request).boxed();
        let access_feed = key
            .access
            .as_ref()
            .and_then(|a| a.tenant)
            .map(|tenant| self.inner.services.bus().subscribe(Feed::Tenant(tenant)));
        let executions = self.inner.services.metrics().subscription_executions.clone();
        executions.inc();
        let (driver_tx, driver_ended) = (tx.clone(), ended.clone());
        tokio::spawn(async move {
            drive(stream, driver_tx, driver_ended, stop_rx, access_feed).await;
            executions.dec();
        });
        let group = Arc::new(Group { tx, ended, _stop: stop_tx });
        groups.by_key.insert(key.clone(), Arc::downgrade(&group));
        Joined { rx, _group: group }
    }
}

/// A subscription document with its variables.
struct Doc {
    query: String,
    operation_name: Option<String>,
    variables: Variables,
}

impl Doc {
    fn key(&self) -> String {
        let variables = serde_json::to_string(&self.variables).unwrap_or_default();
        format!("{}\u{0}{}\u{0}{}", self.query, self.operation_name.as_deref().unwrap_or(""), variables)
    }

    fn request(&self, data: Data) -> Request {
        let mut request = Request::new(self.query.clone()).variables(self.variables.clone());
        if let Some(name) = &self.operation_name {
            request = request.operation_name(name.clone());
        }
        request.data = data;
        request
    }
}

/// A member's receiving end; holding the group keeps its execution running.
struct Joined {
    rx: broadcast::Receiver<Arc<Item>>,
    _group: Arc<Group>,
}

/// One subscriber's place in a group.
struct Member {
    hub: Hub,
    joined: Joined,
    key: GroupKey,
    caller: Caller,
    doc: Doc,
}

impl Member {
    async fn next(&mut self) -> Out {
        loop {
            let item = match self.joined.rx.recv().await {
                Ok(item) => item,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.hub.services().metrics().slow_consumers.inc();
                    return Out::Error(errors_json(AppError::SlowConsumer { missed }));
                }
                Err(broadcast::error::RecvError::Closed) => return Out::Complete,
            };
            match &*item {
                Item::Out(out) => return out.clone(),
                Item::AccessChanged => {
                    // Boxed: re-authenticating is rare and its future large; inline, it
                    // would be held by every open subscription.
                    if let Err(out) = Box::pin(self.recheck()).await {
                        return out;
                    }
                }
            }
        }
    }

    /// Loads the caller's access again and moves to the group of the new access.
    async fn recheck(&mut self) -> Result<(), Out> {
        let services = self.hub.services().clone();
        let auth = match services.authenticate(self.caller.credentials.as_deref()).await {
            Auth::Invalid(reason) => return Err(Out::Revoked(reason.into())),
            Auth::Anonymous if self.caller.credentials.is_some() => {
                return Err(Out::Revoked("credentials are no longer valid".into()));
            }
            auth => auth,
        };
        let access = access_of(&auth);
        if access == self.key.access {
            return Ok(());
        }
        // The new group executes the document again under the new access: its checks
        // (permission, project scope, detector) decide whether the feed goes on.
        self.caller.auth = auth;
        self.key.access = access;
        self.joined = self.hub.join(&self.key, &self.caller, &self.doc);
        Ok(())
    }
}

/// Runs one shared execution until it ends or its last member leaves.
async fn drive(
    mut stream: BoxStream<'static, Response>,
    tx: broadcast::Sender<Arc<Item>>,
    ended: Arc<Mutex<bool>>,
    mut stop: oneshot::Receiver<()>,
    mut access_feed: Option<Listener>,
) {
    let last = loop {
        tokio::select! {
            biased;
            _ = &mut stop => return,
            changed = access_changed(&mut access_feed) => {
                if !changed {
                    access_feed = None;
                }
                let _ = tx.send(Arc::new(Item::AccessChanged));
            }
            response = stream.next() => match response.map(out_of) {
                Some(Out::Next(text)) => {
                    let _ = tx.send(Arc::new(Item::Out(Out::Next(text))));
                }
                Some(out) => break out,
                None => break Out::Complete,
            },
        }
    };
    let mut ended = ended.lock().unwrap_or_else(|e| e.into_inner());
    *ended = true;
    let _ = tx.send(Arc::new(Item::Out(last)));
}

/// Waits for an access change on the tenant feed (`true`), or for the feed's end (`false`).
/// Falling behind counts as a change: a missed one must not go unnoticed.
async fn access_changed(feed: &mut Option<Listener>) -> bool {
    let Some(rx) = feed else { return std::future::pending().await };
    loop {
        match rx.recv().await {
            Ok(env) if matches!(env.message, BusMessage::AccessChanged) => return true,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
    }
}

/// A response as its client sees it: a failure (no data, errors) ends the operation.
fn out_of(response: Response) -> Out {
    if response.data == async_graphql::Value::Null && !response.errors.is_empty() {
        Out::Error(to_json(&response.errors))
    } else {
        Out::Next(to_json(&response))
    }
}

/// A stream executed for one client alone, as [`Out`]s ending with its last response.
fn single(stream: impl Stream<Item = Response> + Send + 'static) -> impl Stream<Item = Out> + Send + 'static {
    stream.map(out_of).chain(futures_util::stream::iter([Out::Complete])).scan(false, |done, out| {
        let end = std::mem::replace(done, !matches!(out, Out::Next(_)));
        futures_util::future::ready((!end).then_some(out))
    })
}

fn to_json(value: &impl serde::Serialize) -> Arc<str> {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}")).into()
}

fn errors_json(error: AppError) -> Arc<str> {
    let error: async_graphql::Error = ApiError(error).into();
    to_json(&[error.into_server_error(async_graphql::Pos::default())])
}

fn access_of(auth: &Auth) -> Option<Access> {
    match auth {
        Auth::Authenticated(p) => Some(p.access.clone()),
        Auth::Anonymous | Auth::Invalid(_) => None,
    }
}

fn data_of(caller: &Caller) -> Data {
    let mut data = Data::default();
    data.insert(caller.auth.clone());
    data.insert(caller.client.clone());
    data
}

/// Whether the request's operation is a subscription (unparsable: no, it runs alone and
/// reports its own error).
fn is_subscription(request: &Request) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else { return false };
    let ty = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    };
    ty == Some(OperationType::Subscription)
}

/// Keeps the open-subscriptions gauge right however the subscription ends.
struct Counted(crate::metrics::Metrics);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.subscriptions.dec();
    }
}
