//! Telemetry storage: device lookups for ingestion, batched readings, rollups, episodes,
//! hazards, events and dead letters.
//!
//! Layout: [`devices`] (what ingestion knows of devices, last-seen times), [`readings`]
//! (raw readings, their stored-value codec, the retention purge), [`rollups`], [`episodes`]
//! (episodes and the hazards they open), [`events`] (events, the device-event redelivery
//! check, dead letters). Everything is re-exported here, so callers name
//! `store::telemetry::…`.

mod devices;
mod episodes;
mod events;
mod readings;
mod rollups;

pub use devices::*;
pub use episodes::*;
pub use events::*;
pub use readings::*;
pub use rollups::*;

/// Largest parameter of one PostgreSQL batch statement: bounds a statement's size, not its
/// round trips — a full batch of readings (~150 KB) goes as one statement. Until sqlx 0.9.1
/// set `TCP_NODELAY` (transact-rs/sqlx#4335) this was 12 KiB: a statement bigger than the
/// send buffer left in two writes and the second waited 40 ms for the server's delayed ACK,
/// so batches were cut into a dozen statements (BENCHMARKS.md, ingestion run 10).
const MAX_PARAM_BYTES: usize = 1024 * 1024;

/// JSON arrays of `rows`, each at most [`MAX_PARAM_BYTES`] long (a single bigger row goes
/// alone).
fn json_batches(rows: impl Iterator<Item = serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::from("[");
    for row in rows {
        let row = row.to_string();
        if cur.len() > 1 && cur.len() + row.len() + 2 > MAX_PARAM_BYTES {
            cur.push(']');
            out.push(std::mem::replace(&mut cur, String::from("[")));
        }
        if cur.len() > 1 {
            cur.push(',');
        }
        cur.push_str(&row);
    }
    if cur.len() > 1 {
        cur.push(']');
        out.push(cur);
    }
    out
}
