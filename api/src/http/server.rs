//! The HTTP server loop: accepts connections from a [`Listener`] and serves each with
//! hyper-util's `auto` builder (HTTP/1.1 with upgrades for WebSockets, and HTTP/2 with the
//! extended CONNECT that WebSockets over HTTP/2 use), like `axum::serve` does, plus what
//! `axum::serve` cannot be told: how long a connection may go without a request.
//!
//! `axum::serve` sets no timer, so a client that connects and sends nothing, or sends its
//! request head a byte at a time (slowloris), kept its connection and its slot under the
//! connection caps for good. Here:
//! - HTTP/1: hyper's `header_read_timeout` closes a connection whose request head is not
//!   complete in time. hyper starts that clock whenever it waits for a head, so it bounds
//!   the wait between two keep-alive requests too.
//! - Before the protocol is known (the auto builder waits for the first bytes to tell
//!   HTTP/1 from HTTP/2), and on an HTTP/2 connection: when no request has been in progress
//!   for the same time, the connection is shut down gracefully (HTTP/2: GOAWAY; open
//!   streams, a WebSocket among them, run to their end). HTTP/2 pings after each idle
//!   period and closes a connection whose client does not answer within another.
//!
//! A WebSocket over HTTP/1 leaves this loop at its upgrade: the socket has its own limits
//! ([`crate::ws`]). Shutdown: no new connections; open ones finish their requests and close.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `router` on the connections of `listener` until `shutdown` completes, then waits
/// for the open connections to finish. A connection with no request in progress for
/// `idle_timeout` (an HTTP/1 request head included) is closed.
pub(crate) async fn serve<L>(
    mut listener: L,
    router: Router,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = std::net::SocketAddr>,
    L::Io: Unpin,
{
    // Dropped by the shutdown signal: every connection task sees it closed.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    // Each connection task holds a receiver; the loop waits for all of them to go.
    let (close_tx, close_rx) = watch::channel(());
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle_timeout);
    // HTTP/2 answers an idle shutdown with GOAWAY and waits for the client to acknowledge a
    // ping before it closes: the keep-alive ping closes a client that never acknowledges
    // one (dead, or holding the connection on purpose) after two idle periods.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle_timeout)
        .keep_alive_timeout(idle_timeout)
        .enable_connect_protocol();
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = signal_tx.closed() => break,
        };
        let conn = Connection {
            builder: builder.clone(),
            router: router.clone(),
            signal: signal_tx.clone(),
            _close: close_rx.clone(),
            idle_timeout,
        };
        tokio::spawn(conn.serve(io, peer));
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// One connection's task and what it needs.
struct Connection {
    builder: Builder<TokioExecutor>,
    router: Router,
    /// Closed when the server shuts down.
    signal: watch::Sender<()>,
    /// Held while the connection is open (the server waits for it at shutdown).
    _close: watch::Receiver<()>,
    idle_timeout: Duration,
}

impl Connection {
    async fn serve<I>(self, io: I, peer: std::net::SocketAddr)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        // Requests in progress on this connection.
        let (busy, mut busy_rx) = watch::channel(0usize);
        let router = self.router;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let request = InProgress::start(&busy);
            let router = router.clone();
            async move {
                let response = router.oneshot(req).await;
                drop(request);
                response
            }
        });
        let mut conn = pin!(self.builder.serve_connection_with_upgrades(TokioIo::new(io), service));
        let mut shut_down = pin!(self.signal.closed());
        let mut idle = pin!(idle_for(&mut busy_rx, self.idle_timeout));
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = &mut shut_down, if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = &mut idle, if !closing => {
                    tracing::debug!(%peer, "closing a connection without a request for {:?}", self.idle_timeout);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// One request in progress, counted in the connection's `busy` until dropped.
struct InProgress(watch::Sender<usize>);

impl InProgress {
    fn start(busy: &watch::Sender<usize>) -> InProgress {
        busy.send_modify(|n| *n += 1);
        InProgress(busy.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Completes once no request has been in progress for `timeout` in a row.
async fn idle_for(busy: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if *busy.borrow_and_update() == 0 {
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                changed = busy.changed() => if changed.is_err() { return std::future::pending().await },
            }
        } else if busy.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
