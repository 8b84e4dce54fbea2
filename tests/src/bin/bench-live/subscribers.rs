//! The WebSocket subscribers: opening, listening and tallying deliveries.

use super::*;

/// What all subscriber connections report.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) delivered: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) close_codes: Mutex<BTreeMap<String, u64>>,
    pub(crate) first_error: Mutex<Option<String>>,
}

impl Tally {
    pub(crate) fn closed_with(&self, why: String) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        *self.close_codes.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
    }
}

/// One subscriber: its task and the alarms it received (device time ms, receive time µs).
pub(crate) struct Conn {
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) seen: Arc<Mutex<Vec<(i64, i64)>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Open `graphql-transport-ws` connections, one task each, each with one `alarmEvents`
/// subscription.
pub(crate) struct Pool {
    pub(crate) url: String,
    pub(crate) token: String,
    /// Distinct subscription documents to spread the subscribers over.
    pub(crate) documents: usize,
    pub(crate) conns: Vec<Conn>,
    pub(crate) tally: Arc<Tally>,
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscription document number `variant`: the same fields, a distinct document.
pub(crate) fn document(variant: usize) -> String {
    match variant {
        0 => SUBSCRIPTION.to_owned(),
        k => SUBSCRIPTION.replace(" at }", &format!(" at v{k}: __typename }}")),
    }
}

/// Connects, signs in and subscribes.
pub(crate) async fn open(url: &str, token: &str, query: &str) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    // Small buffers, as the server uses: many connections, few small messages each.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let wait = Duration::from_secs(30);
    let (mut ws, _) = tokio::time::timeout(wait, tokio_tungstenite::connect_async_with_config(req, Some(config), true))
        .await
        .context("WebSocket handshake timed out")??;
    let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await?;
    loop {
        match tokio::time::timeout(wait, ws.next()).await.context("no connection_ack within 30 s")? {
            Some(Ok(Message::Text(t))) if t.contains("connection_ack") => break,
            Some(Ok(Message::Close(f))) => bail!("closed before connection_ack: {f:?}"),
            Some(Err(e)) => bail!("before connection_ack: {e}"),
            None => bail!("closed before connection_ack"),
            Some(Ok(_)) => {}
        }
    }
    let subscribe = json!({"type": "subscribe", "id": "1", "payload": {"query": query}});
    ws.send(Message::text(subscribe.to_string())).await?;
    Ok(ws)
}

/// The device time (ms) of an `alarmEvents` message, without parsing all of it.
pub(crate) fn event_at_ms(text: &str) -> Option<i64> {
    let start = text.find("\"at\":\"")? + 6;
    let end = start + text[start..].find('"')?;
    chrono::DateTime::parse_from_rfc3339(&text[start..end]).ok().map(|t| t.timestamp_millis())
}

/// Reads one connection until it ends, noting every `LEAK_ALARM` with its receive time.
pub(crate) async fn listen(mut ws: Ws, seen: Arc<Mutex<Vec<(i64, i64)>>>, tally: Arc<Tally>) {
    while let Some(msg) = ws.next().await {
        let received = now_us();
        match msg {
            Ok(Message::Text(t)) => {
                if t.contains("\"LEAK_ALARM\"") {
                    if let Some(at) = event_at_ms(&t) {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push((at, received));
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                } else if t.contains("\"type\":\"error\"") || t.contains("\"type\":\"complete\"") {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    tally.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| t.to_string());
                }
            }
            Ok(Message::Close(frame)) => {
                tally.closed_with(frame.map_or("close without code".into(), |f| format!("{} {}", f.code, f.reason)));
                return;
            }
            Err(e) => {
                tally.closed_with(format!("error: {e}"));
                return;
            }
            Ok(_) => {}
        }
    }
    tally.closed_with("ended".into());
}

impl Pool {
    /// Opens connections until `n` are open; returns (newly opened, failed, first failure).
    pub(crate) async fn grow_to(&mut self, n: usize) -> (usize, usize, Option<String>) {
        let add = n.saturating_sub(self.conns.len());
        let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut pending = Vec::with_capacity(add);
        for i in 0..add {
            let Ok(permit) = gate.clone().acquire_owned().await else { break };
            let (tx, rx) = oneshot::channel::<Result<(), String>>();
            let seen: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
            let (url, token, tally, sink) = (self.url.clone(), self.token.clone(), self.tally.clone(), seen.clone());
            let query = document((self.conns.len() + i) % self.documents);
            let task = tokio::spawn(async move {
                let ws = open(&url, &token, &query).await;
                drop(permit);
                match ws {
                    Ok(ws) => {
                        let _ = tx.send(Ok(()));
                        listen(ws, sink, tally).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
            pending.push((Conn { task, seen }, rx));
            if (i + 1) % 1000 == 0 {
                eprintln!("    {} connecting …", self.conns.len() + i + 1);
            }
        }
        let (mut opened, mut failed, mut first) = (0, 0, None);
        for (conn, rx) in pending {
            match rx.await {
                Ok(Ok(())) => {
                    opened += 1;
                    self.conns.push(conn);
                }
                Ok(Err(e)) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
                Err(_) => failed += 1,
            }
        }
        (opened, failed, first)
    }

    /// Closes connections until at most `n` are open.
    pub(crate) fn shrink_to(&mut self, n: usize) {
        self.conns.truncate(n);
    }

    /// Takes every connection's received alarms.
    pub(crate) fn take_seen(&self) -> Vec<Vec<(i64, i64)>> {
        self.conns.iter().map(|c| std::mem::take(&mut *c.seen.lock().unwrap_or_else(|e| e.into_inner()))).collect()
    }
}

// ---------------------------------------------------------------------------------------
