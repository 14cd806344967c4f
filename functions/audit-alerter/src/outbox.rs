//! Work not finished yet, by the message it came from (contract 6).
//!
//! An audit entry's alerts and held changes stay here until every working
//! sink took the alerts and every hold was settled; until then its push is
//! answered 503, so Pub/Sub keeps the message (and redelivers it after a
//! restart, when this memory is gone). A redelivered entry finds its work
//! here, with per-sink delivered marks, so a sink that already took an
//! alert is not paged twice. Finished keys move to the dedup set, so a
//! redelivery after the ack is a duplicate. Both are capped.

use crate::alert::Alert;
use crate::capped::Capped;
use crate::dedup::Dedup;
use crate::delivery::Mask;
use crate::rules::Hold;

#[derive(Debug)]
pub struct Queued {
    pub alert: Alert,
    /// The sinks that took it.
    pub delivered: Mask,
}

#[derive(Debug, Default)]
pub struct Pending {
    pub alerts: Vec<Queued>,
    pub holds: Vec<Hold>,
    /// A request is sending these alerts right now: another (a redelivery
    /// racing it, or a tick) must not send them too and page twice.
    pub sending: bool,
}

impl Pending {
    pub fn new(alerts: Vec<Alert>, holds: Vec<Hold>) -> Self {
        Self {
            alerts: alerts
                .into_iter()
                .map(|alert| Queued {
                    alert,
                    delivered: 0,
                })
                .collect(),
            holds,
            sending: false,
        }
    }
}

#[derive(Debug)]
pub struct Outbox {
    pending: Capped<String, Pending>,
    done: Dedup,
}

impl Outbox {
    pub fn new(pending_cap: usize, done_cap: usize) -> Self {
        Self {
            pending: Capped::new(pending_cap),
            done: Dedup::new(done_cap),
        }
    }

    pub fn is_done(&self, key: &str) -> bool {
        self.done.contains(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Pending> {
        self.pending.get_mut(key)
    }

    pub fn insert(&mut self, key: String, pending: Pending) {
        if let Some((old, p)) = self.pending.insert(key, pending) {
            // Only under a flood: its message is still unacknowledged and
            // comes back; a tick's own alerts are in the log already.
            tracing::error!(key = %old, alerts = p.alerts.len(), holds = p.holds.len(), "outbox full: forgot the oldest pending work");
        }
    }

    /// Finished: forget the work, remember the key as done.
    pub fn finish(&mut self, key: &str) {
        self.pending.remove(key);
        self.done.first_time(key);
    }

    /// Every pending key, oldest first.
    pub fn keys(&self) -> Vec<String> {
        self.pending.keys_oldest_first()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Pending)> {
        self.pending.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn holds(&self) -> usize {
        self.pending.iter().map(|(_, p)| p.holds.len()).sum()
    }
}
