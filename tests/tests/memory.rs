//! Memory under a hostile upload (issue 16): a 100 MiB `POST /graphql` must cost the server
//! about its 1 MiB body cap, not the body. The server runs in this process, so the process's
//! peak resident set is the server's; the test streams the body from one reused 1 MiB
//! buffer, so its own share stays small. The only test of its binary: nothing else runs in
//! the process while it measures.

use std::time::Duration;

use serde_json::json;
use sparkwatch_tests::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;
/// Growth of the peak resident set allowed for two 100 MiB uploads (the cap is 1 MiB).
const ALLOWED_GROWTH_KIB: u64 = 16 * 1024;

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `head`, then `chunks` × `chunk` without waiting, while reading the answer; returns
/// what the server answered (the first bytes) once it closes or 10 s pass.
async fn upload(server: &TestServer, head: String, chunk: &[u8], chunks: usize) -> anyhow::Result<String> {
    let conn = TcpStream::connect(server.base.trim_start_matches("http://")).await?;
    let (mut read, mut write) = conn.into_split();
    let sender = async move {
        write.write_all(head.as_bytes()).await?;
        for _ in 0..chunks {
            write.write_all(chunk).await?;
        }
        anyhow::Ok(())
    };
    let receiver = async move {
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    // The server may hang up while the body is still being written: that is a refusal too.
    let (sent, answer) = tokio::join!(sender, receiver);
    if let Err(e) = sent {
        eprintln!("upload cut off by the server: {e}");
    }
    Ok(answer)
}

#[tokio::test]
async fn a_100_mib_body_costs_the_server_far_less_than_100_mib() -> anyhow::Result<()> {
    if status_kib("VmHWM:").is_none() {
        eprintln!("skipped: no /proc/self/status to read the peak resident set from");
        return Ok(());
    }
    let server = TestServer::start(&Backend::Sqlite).await?;
    sparkwatch_api::demo::seed(&server.services).await?;
    let alive = server.anonymous().run("{ __typename }", json!({})).await?;
    assert_eq!(alive["data"]["__typename"], "Query", "{alive}");

    // The peak so far is reset to the current resident set (Linux `clear_refs` 5), so that
    // growth is measured from now and not hidden under a higher peak of the start-up.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmHWM:").unwrap_or_default();

    let chunk = vec![b'a'; MIB];
    let total = 100 * MIB;
    let prefix = r#"{"query":"{ __typename }","variables":{"x":""#;
    // A declared length: refusable from the head.
    let declared = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n{prefix}"
    );
    let first = upload(&server, declared, &chunk, 100).await?;
    // Chunked, no length: refusable only by reading through the cap.
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    let chunked = format!(
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{prefix}\r\n",
        prefix.len()
    );
    let second = upload(&server, chunked, &framed, 100).await?;

    let peak = status_kib("VmHWM:").unwrap_or_default();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "peak resident set {before} KiB → {peak} KiB (+{growth} KiB) over two 100 MiB uploads \
         (peak reset before: {reset}); answers: {:?} / {:?}",
        first.lines().next(),
        second.lines().next()
    );
    for answer in [&first, &second] {
        // Cut off before the answer was read is a refusal too; an answer must be 413.
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    assert!(
        growth < ALLOWED_GROWTH_KIB,
        "the server's peak memory grew by {growth} KiB for a body it should refuse after 1 MiB"
    );
    let alive = server.anonymous().run("{ __typename }", json!({})).await?;
    assert_eq!(alive["data"]["__typename"], "Query", "{alive}");
    Ok(())
}
