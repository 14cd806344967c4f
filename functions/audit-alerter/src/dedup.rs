//! Pub/Sub delivers at least once and Logging may route one entry twice
//! (overlapping sinks): remember the last N logName+insertId keys.

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `key` is seen (and remembers it), false after.
    pub fn first_time(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.to_string());
        self.order.push_back(key.to_string());
        true
    }

    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_capacity() {
        let mut d = Dedup::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c"));
        assert_eq!(d.len(), 2);
        assert!(d.first_time("a"), "a was evicted");
        assert!(!d.first_time("c"));
    }
}
