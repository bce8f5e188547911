//! The wall clock as the shared config records it: unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 for a clock set before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
