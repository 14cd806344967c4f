//! A clock that moves only when told to.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

/// "Now", set by the test. Clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Default for ManualClock {
    /// Starts at the real now, rounded to microseconds (what stores keep).
    fn default() -> Self {
        let t = Utc::now();
        Self::new(DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t))
    }
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn advance(&self, by: TimeDelta) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// Advances by a `std` duration (panics past chrono's range, a test bug).
    pub fn advance_std(&self, by: std::time::Duration) {
        self.advance(TimeDelta::from_std(by).expect("duration within chrono's range"));
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    /// The clock as a plain function, for code that takes `Fn() -> now`.
    pub fn as_fn(&self) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
        let clock = self.clone();
        Arc::new(move || clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_when_told_and_clones_share_it() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let c = ManualClock::new(t0);
        let f = c.as_fn();
        assert_eq!(c.now(), t0);
        c.clone().advance(TimeDelta::seconds(90));
        assert_eq!(f(), t0 + TimeDelta::seconds(90));
        c.advance_std(std::time::Duration::from_secs(10));
        assert_eq!(c.now(), t0 + TimeDelta::seconds(100));
        c.set(t0);
        assert_eq!(f(), t0);
    }
}
