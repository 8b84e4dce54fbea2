//! The raw fan-out floor: what this machine needs to hand one small message to `n` sockets.

use super::*;

/// Size of one floor message: about an `alarmEvents { id kind at }` frame.
pub(crate) const FLOOR_MESSAGE: usize = 150;
/// Messages per floor measurement, 300 ms apart.
pub(crate) const FLOOR_ROUNDS: usize = 10;

/// What this machine needs to hand one small message to `n` local TCP sockets, each read by
/// its own task in this process, under the same background load: a child process
/// (`bench-live fanout N`) writes a timestamped message to all `n` sockets in one loop —
/// no WebSocket, no GraphQL, no task per connection on the sending side. Latency is
/// receive time − send time, per socket per message, in ms, sorted.
pub(crate) async fn fanout_floor(n: usize) -> anyhow::Result<Vec<f64>> {
    use std::io::{BufRead, Write};
    use tokio::io::AsyncReadExt;
    let exe = std::env::current_exe()?;
    let mut child = KillOnDrop(
        Command::new(exe).args(["fanout", &n.to_string()]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?,
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().context("fan-out child stdout")?).lines();
    let port: u16 = lines.next().context("fan-out child ended")??.trim().parse()?;
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut readers = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        drop(permit);
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; FLOOR_MESSAGE];
            while socket.read_exact(&mut buf).await.is_ok() {
                let received = now_us();
                let sent: i64 = std::str::from_utf8(&buf[..16]).ok().and_then(|t| t.parse().ok()).unwrap_or(received);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((received - sent) as f64 / 1000.0);
            }
        }));
    }
    ensure!(lines.next().context("fan-out child ended")??.trim() == "ready", "fan-out child not ready");
    let mut stdin = child.0.stdin.take().context("fan-out child stdin")?;
    for _ in 0..FLOOR_ROUNDS {
        writeln!(stdin, "go")?;
        stdin.flush()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap_or_else(|e| e.into_inner()).len() < n * FLOOR_ROUNDS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stdin);
    for r in &readers {
        r.abort();
    }
    let mut ms = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    ensure!(ms.len() == n * FLOOR_ROUNDS, "fan-out floor: {} of {} messages arrived", ms.len(), n * FLOOR_ROUNDS);
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// The sending side of [`fanout_floor`]: `bench-live fanout N` accepts N connections, says
/// `ready`, and for every line on stdin writes one timestamped message to all of them.
pub(crate) async fn fanout_sender(args: &[String]) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let n: usize = args.get(2).context("bench-live fanout N")?.parse()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    println!("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {
        let message = format!("{:016}{}", now_us(), " ".repeat(FLOOR_MESSAGE - 16));
        for socket in &mut sockets {
            socket.write_all(message.as_bytes()).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
