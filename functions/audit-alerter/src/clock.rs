//! Where "now" comes from: the system clock in production, a hand-moved one
//! in tests and benchmarks (windows, holds and silences are all time-based).

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The shared hand-moved clock (`patchpanda_shared::testing`, behind this
/// crate's `testing` feature) drives the alerter in tests, the benchmark
/// and the fuzz target.
#[cfg(feature = "testing")]
pub use patchpanda_shared::testing::ManualClock;

#[cfg(feature = "testing")]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        ManualClock::now(self)
    }
}
