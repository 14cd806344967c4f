//! "The same delivery id seen twice by one instance is published once": an
//! LRU of recently published ids, plus the ids being published right now so
//! that a concurrent copy waits for the first instead of racing it. An id is
//! remembered only once its publish succeeded, so a failed one can be
//! retried (by GitHub's redelivery) and published then.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use tokio::sync::Notify;

/// Ids remembered by default: about a day of a busy App's deliveries in a
/// few MiB at most (a GUID plus LRU bookkeeping is ~100 bytes).
pub const DEFAULT_CAPACITY: usize = 20_000;

pub struct Dedupe {
    state: Mutex<State>,
}

struct State {
    published: LruCache<String, ()>,
    in_flight: HashMap<String, Arc<Notify>>,
}

/// What to do with a delivery id.
pub enum Claim<'a> {
    /// Already published by this instance: acknowledge without publishing.
    Duplicate,
    /// Ours to publish; call [`Publishing::published`] once the bus confirms.
    /// Dropping it without that forgets the id.
    Publish(Publishing<'a>),
}

pub struct Publishing<'a> {
    dedupe: &'a Dedupe,
    id: String,
    done: bool,
}

impl Dedupe {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            state: Mutex::new(State {
                published: LruCache::new(capacity),
                in_flight: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent; a panic mid-way elsewhere
        // cannot corrupt it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `id` for publishing, waiting while another request publishes
    /// the same id.
    pub async fn claim(&self, id: &str) -> Claim<'_> {
        loop {
            let notify = {
                let mut st = self.state();
                if st.published.get(id).is_some() {
                    return Claim::Duplicate;
                }
                match st.in_flight.get(id) {
                    Some(n) => n.clone(),
                    None => {
                        st.in_flight.insert(id.to_string(), Arc::new(Notify::new()));
                        return Claim::Publish(Publishing {
                            dedupe: self,
                            id: id.to_string(),
                            done: false,
                        });
                    }
                }
            };
            let waiting = notify.notified();
            tokio::pin!(waiting);
            // Registered before re-checking, so a finish in between is not missed.
            waiting.as_mut().enable();
            if !self.state().in_flight.contains_key(id) {
                continue;
            }
            waiting.await;
        }
    }

    /// Whether `id` was published by this instance (and is still remembered).
    pub fn contains(&self, id: &str) -> bool {
        self.state().published.contains(id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state().published.len()
    }

    fn finish(&self, id: &str, published: bool) {
        let mut st = self.state();
        if published {
            st.published.put(id.to_string(), ());
        }
        if let Some(n) = st.in_flight.remove(id) {
            n.notify_waiters();
        }
    }
}

impl Publishing<'_> {
    /// The bus confirmed the publish: remember the id.
    pub fn published(mut self) {
        self.done = true;
        self.dedupe.finish(&self.id, true);
    }
}

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.dedupe.finish(&self.id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_only_after_a_successful_publish() {
        let d = Dedupe::new(2);
        match d.claim("a").await {
            Claim::Publish(p) => drop(p),
            Claim::Duplicate => panic!("first sight"),
        }
        assert!(!d.contains("a"), "a failed publish is forgotten");
        match d.claim("a").await {
            Claim::Publish(p) => p.published(),
            Claim::Duplicate => panic!("retry after failure must publish"),
        }
        assert!(matches!(d.claim("a").await, Claim::Duplicate));
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let d = Dedupe::new(2);
        for id in ["a", "b", "c"] {
            if let Claim::Publish(p) = d.claim(id).await {
                p.published();
            }
        }
        assert_eq!(d.len(), 2);
        assert!(!d.contains("a"), "the oldest id is evicted");
        assert!(d.contains("b") && d.contains("c"));
    }

    #[tokio::test]
    async fn a_concurrent_copy_waits_for_the_first() {
        let d = Arc::new(Dedupe::new(10));
        let Claim::Publish(first) = d.claim("x").await else {
            panic!("first sight")
        };
        let d2 = d.clone();
        let second = tokio::spawn(async move { matches!(d2.claim("x").await, Claim::Duplicate) });
        tokio::task::yield_now().await;
        first.published();
        assert!(
            second.await.unwrap(),
            "the copy sees the first one's publish"
        );

        // And if the first fails, the copy gets to publish.
        let Claim::Publish(first) = d.claim("y").await else {
            panic!("first sight")
        };
        let d3 = d.clone();
        let second = tokio::spawn(async move {
            match d3.claim("y").await {
                Claim::Publish(p) => {
                    p.published();
                    true
                }
                Claim::Duplicate => false,
            }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert!(second.await.unwrap());
        assert!(d.contains("y"));
    }
}
