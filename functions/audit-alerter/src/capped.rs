//! A map with a hard cap that forgets its oldest keys first. Every map the
//! alerter keys by something an attacker chooses (principals, resources,
//! fingerprints, IPs, entry ids) is one of these, so a flood of distinct
//! keys costs a bounded amount of memory.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct Capped<K, V> {
    map: HashMap<K, (u64, V)>,
    /// Insertion order with the generation each key was inserted at; keys
    /// removed or re-inserted since leave stale rows, skipped on eviction
    /// and compacted away when they pile up.
    order: VecDeque<(K, u64)>,
    next: u64,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V> Capped<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(k).map(|(_, v)| v)
    }

    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(k)
    }

    /// Inserts or replaces; a new key may evict the oldest. Returns what
    /// was evicted, so callers can say so.
    pub fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        let generation = self.next;
        self.next += 1;
        if let Some(slot) = self.map.get_mut(&k) {
            *slot = (slot.0, v);
            return None;
        }
        let mut out = None;
        if self.map.len() >= self.cap {
            out = self.pop_oldest();
        }
        self.order.push_back((k.clone(), generation));
        self.map.insert(k, (generation, v));
        self.compact();
        out
    }

    /// The value for `k`, inserted with `make` when absent.
    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&k) {
            self.insert(k.clone(), make());
        }
        self.map
            .get_mut(&k)
            .map(|(_, v)| v)
            .unwrap_or_else(|| unreachable!("inserted just above"))
    }

    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let v = self.map.remove(k).map(|(_, v)| v);
        self.compact();
        v
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(|k, (_, v)| keep(k, v));
        self.compact();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (_, v))| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.map.iter_mut().map(|(k, (_, v))| (k, v))
    }

    /// Keys oldest first.
    pub fn keys_oldest_first(&self) -> Vec<K> {
        self.order
            .iter()
            .filter(|(k, g)| self.map.get(k).is_some_and(|(mg, _)| mg == g))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((k, g)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|(mg, _)| *mg == g) {
                return self.map.remove(&k).map(|(_, v)| (k, v));
            }
        }
        None
    }

    fn compact(&mut self) {
        if self.order.len() > 2 * self.cap.max(self.map.len()) + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(mg, _)| mg == g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_and_stays_bounded_under_churn() {
        let mut m = Capped::new(3);
        for i in 0..3 {
            assert!(m.insert(i, i).is_none());
        }
        m.insert(1, 10);
        assert_eq!(m.insert(3, 3), Some((0, 0)), "the oldest goes first");
        assert_eq!(m.get(&1), Some(&10));
        for i in 0..100_000 {
            m.insert(1000 + i, i);
            m.remove(&(1000 + i));
        }
        assert!(m.len() <= 3);
        assert!(m.order.len() <= 2 * 3 + 16 + 1, "{}", m.order.len());
        for i in 0..10_000 {
            m.insert(i + 50_000, i);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.keys_oldest_first(), vec![59_997, 59_998, 59_999]);
    }
}
