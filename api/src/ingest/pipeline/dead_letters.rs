//! Dead letters (rejected device input) collected per batch and written in one INSERT, and
//! sampled: at most [`PER_SOURCE`] a minute per device (or topic, for unknown devices) and
//! [`IN_TOTAL`] a minute overall. One INSERT per rejected message, unsampled, let a junk
//! flood hold up real alarms behind it and fill the disk (issue 16). What is not kept is
//! counted in `sparkwatch_dead_letters_dropped_total` and by reason in
//! `sparkwatch_ingest_rejected_total`; old letters expire with `--dead-letter-retention-days`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sparkwatch_entity::dead_letter;

/// Letters kept per device (or topic) per minute.
pub(super) const PER_SOURCE: u32 = 10;
/// Letters kept per minute in all.
pub(super) const IN_TOTAL: u32 = 1000;
/// Sources counted per minute; further new sources in the minute are not kept (the map
/// stays bounded however many serials a flood makes up).
const MAX_SOURCES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

/// The batch's letters and the minute's counts.
pub(super) struct DeadLetters {
    rows: Vec<dead_letter::ActiveModel>,
    window_start: Instant,
    total: u32,
    by_source: HashMap<String, u32>,
}

impl DeadLetters {
    pub(super) fn new() -> DeadLetters {
        DeadLetters { rows: Vec::new(), window_start: Instant::now(), total: 0, by_source: HashMap::new() }
    }

    /// Whether a letter from `source` is kept; counts it if so.
    pub(super) fn admit(&mut self, source: &str, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.total = 0;
            self.by_source.clear();
        }
        if self.total >= IN_TOTAL {
            return false;
        }
        if !self.by_source.contains_key(source) && self.by_source.len() >= MAX_SOURCES {
            return false;
        }
        let count = self.by_source.entry(source.to_owned()).or_default();
        if *count >= PER_SOURCE {
            return false;
        }
        *count += 1;
        self.total += 1;
        true
    }

    /// Adds a kept letter to the batch.
    pub(super) fn push(&mut self, row: dead_letter::ActiveModel) {
        self.rows.push(row);
    }

    /// The batch's letters, to be written.
    pub(super) fn take(&mut self) -> Vec<dead_letter::ActiveModel> {
        std::mem::take(&mut self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_per_source_and_in_total_per_minute() {
        let mut d = DeadLetters::new();
        let t0 = Instant::now();
        let kept = (0..100).filter(|_| d.admit("SW-1", t0)).count();
        assert_eq!(kept, PER_SOURCE as usize);
        assert!(d.admit("SW-2", t0), "another device has its own share");
        let many = (0..5000).filter(|i| d.admit(&format!("fake-{i}"), t0)).count();
        assert_eq!(many as u32 + PER_SOURCE + 1, IN_TOTAL);
        assert!(d.admit("SW-1", t0 + WINDOW), "a new minute starts afresh");
    }
}
