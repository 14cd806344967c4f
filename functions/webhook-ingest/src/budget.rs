//! The byte budget for request bodies whose signature is not checked yet.
//!
//! Anyone can POST 25 MiB with a made-up signature, and the signature can
//! only be checked once the whole body is in memory. Without a bound, a
//! handful of such bodies in parallel exhaust the instance (and kill the
//! valid deliveries in flight with it). Every body therefore holds a
//! [`Reservation`] for its bytes, all bodies together at most `total`;
//! past that, new bodies are refused.
//!
//! Large bodies may use only `total - small_reserve`: the rest is kept for
//! small bodies (GitHub's ordinary deliveries are a few KiB), so a flood of
//! large forged bodies cannot starve them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held by bodies in flight, all requests together.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    total: usize,
    small_body: usize,
    small_reserve: usize,
}

/// Bytes held for one body; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    held: usize,
}

impl ByteBudget {
    /// `total` bytes; bodies up to `small_body` bytes may also use the last
    /// `small_reserve` of them.
    pub fn new(total: usize, small_body: usize, small_reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            total,
            small_body,
            small_reserve: small_reserve.min(total),
        })
    }

    /// An empty reservation, to grow as bytes arrive.
    pub fn start(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes held by all bodies in flight.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// How far `used` may go for a body that will have `size` bytes.
    fn cap(&self, size: usize) -> usize {
        if size <= self.small_body {
            self.total
        } else {
            self.total - self.small_reserve
        }
    }
}

impl Reservation {
    /// Grows the reservation to `size` bytes; false, and unchanged, if the
    /// budget cannot hold that much.
    pub fn grow_to(&mut self, size: usize) -> bool {
        if size <= self.held {
            return true;
        }
        let more = size - self.held;
        let cap = self.budget.cap(size);
        let grown = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(more)?;
                (after <= cap).then_some(after)
            });
        if grown.is_ok() {
            self.held = size;
        }
        grown.is_ok()
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_leave_the_reserve_to_small_ones() {
        let b = ByteBudget::new(100, 10, 30);
        let mut big = b.start();
        assert!(big.grow_to(60));
        let mut other = b.start();
        assert!(!other.grow_to(20), "large bodies stop at total - reserve");
        assert_eq!(other.held(), 0, "a refused growth changes nothing");
        assert!(other.grow_to(10), "a small body may use the reserve");
        let mut small = b.start();
        assert!(small.grow_to(10));
        assert!(!b.start().grow_to(21), "no room left for a large body");
        assert_eq!(b.used(), 80);
        drop(big);
        assert_eq!(b.used(), 20, "dropping gives the bytes back");
        assert!(b.start().grow_to(50));
        drop(other);
        drop(small);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn growth_is_all_or_nothing_under_contention() {
        let b = ByteBudget::new(1000, 0, 0);
        let all_tried = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                let all_tried = all_tried.clone();
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for _ in 0..100 {
                        let mut r = b.start();
                        if r.grow_to(7) {
                            kept.push(r);
                        }
                    }
                    // Hold on until every thread has tried.
                    all_tried.wait();
                    kept.len()
                })
            })
            .collect();
        let held: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(held, 1000 / 7, "exactly as many as fit");
        assert_eq!(b.used(), 0, "all given back once the threads are done");
    }
}
