//! Latest reading per detector, kept in process. (The Redis-backed variant for several
//! instances arrives with the Redis issue.)

use std::collections::HashMap;
use std::sync::RwLock;

use sparkwatch_domain::ids::DetectorId;
use sparkwatch_domain::reading::Reading;

/// Latest values by detector.
#[derive(Debug, Default)]
pub struct LatestCache {
    map: RwLock<HashMap<DetectorId, Reading>>,
}

impl LatestCache {
    /// Keeps `reading` unless a newer one is already there.
    pub fn put(&self, detector: DetectorId, reading: Reading) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&detector) {
            Some(existing) if existing.at >= reading.at => {}
            _ => {
                map.insert(detector, reading);
            }
        }
    }

    /// The latest reading of a detector, if one arrived since start.
    pub fn get(&self, detector: DetectorId) -> Option<Reading> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(&detector).cloned()
    }
}
