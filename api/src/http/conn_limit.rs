//! Connection caps: at most `total` connections open at once, and at most `per_address`
//! from one peer address. A connection over a cap is answered with a bare `503` and
//! closed at once, before hyper reads anything from it; the slot is given back when the
//! connection closes (its guard is dropped with the stream).
//!
//! Written here because neither tower nor tower-http limits *connections* (their
//! `ConcurrencyLimit` counts requests, which an idle keep-alive or WebSocket connection
//! does not hold) and axum's `serve` takes any [`Listener`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Answer to a connection over a cap (written without waiting; a peer that does not read
/// it just sees the close).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\n\
content-length: 34\r\nretry-after: 5\r\n\r\ntoo many connections; retry later\n";

/// Open connections, counted per peer address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A [`TcpListener`] that keeps the connection counts within the caps.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    total: usize,
    per_address: usize,
    counts: Arc<Mutex<Counts>>,
    metrics: Metrics,
}

impl LimitedListener {
    /// Caps `inner` at `total` connections, `per_address` of them from one address.
    pub(crate) fn new(inner: TcpListener, total: usize, per_address: usize, metrics: Metrics) -> LimitedListener {
        LimitedListener { inner, total, per_address, counts: Arc::default(), metrics }
    }

    /// Takes a slot for `ip`, or says which cap is full.
    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.total >= self.total {
            return Err("total");
        }
        let mine = counts.by_address.entry(ip).or_default();
        if *mine >= self.per_address {
            return Err("per_address");
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot { ip, counts: self.counts.clone() })
    }
}

/// One admitted connection's place in the counts; given back on drop.
struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        // Entries go when their last connection does: the map never outgrows the open connections.
        if let Some(n) = counts.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.ip);
            }
        }
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // axum's own accept loop: it retries and backs off on errors such as EMFILE.
            let (stream, peer) = Listener::accept(&mut self.inner).await;
            match self.admit(peer.ip()) {
                Ok(slot) => return (LimitedStream { stream, _slot: slot }, peer),
                Err(cap) => {
                    self.metrics.connections_refused.with_label_values(&[cap]).inc();
                    tracing::debug!(%peer, cap, "connection refused: over the connection cap");
                    let _ = stream.try_write(REFUSAL);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An admitted connection: the stream and its slot in the counts.
pub(crate) struct LimitedStream {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for LimitedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
