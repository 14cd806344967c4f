//! Every instance drops a leaked webhook secret within seconds.
//!
//! A rotation notice reaches one instance of webhook-ingest (a push
//! subscription delivers each message once, to any instance); the others
//! would keep the old secret until their cache's TTL. Cloud Run gives an
//! instance no CPU between requests, so a background timer cannot be
//! relied on either. Instead, requests check: at most once per `interval`
//! (10 s by default), the first delivery to arrive reads the secret's
//! metadata (`GetSecret`: aliases, annotations, etag; never a payload) and
//! compares it with what this instance holds. Any change (an emergency
//! rotation moves `current` and drops the grace annotation) re-reads the
//! secret before that delivery is checked. So no instance accepts an old
//! secret for longer than `interval` plus one metadata read after the
//! rotation, whichever instance its notice reached.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchpanda_shared::Result;
use patchpanda_shared::secrets::cache::{SecretCache, SecretSnapshot};
use patchpanda_shared::secrets::{Secret, SecretStore};

/// Compares the webhook secret's metadata with the cached snapshot.
pub struct SecretWatch {
    store: Arc<dyn SecretStore>,
    id: String,
    interval: Duration,
    /// When the metadata last matched what we held (or a check failed).
    last_check: Mutex<Option<Instant>>,
    /// One check at a time: requests arriving meanwhile wait for its verdict.
    checking: tokio::sync::Mutex<()>,
}

impl SecretWatch {
    pub fn new(store: Arc<dyn SecretStore>, id: String, interval: Duration) -> Self {
        Self {
            store,
            id,
            interval,
            last_check: Mutex::new(None),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    /// `held`, or the secret read again if its metadata changed since.
    /// An error only when it changed and could not be read again: the old
    /// value may be the leaked one, so it must not be used.
    pub async fn fresh(
        &self,
        cache: &SecretCache,
        held: Arc<SecretSnapshot>,
    ) -> Result<Arc<SecretSnapshot>> {
        if !self.due(&held) {
            return Ok(held);
        }
        let _one = self.checking.lock().await;
        // The check before ours may have re-read it while we waited.
        let held = cache.get(&self.id).await.unwrap_or(held);
        if !self.due(&held) {
            return Ok(held);
        }
        match self.store.get_secret(&self.id).await {
            Ok(meta) if same(&meta, &held.secret) => {
                self.checked();
                Ok(held)
            }
            Ok(meta) => {
                let fresh = cache.refresh(&self.id).await.inspect_err(|e| {
                    tracing::warn!(secret = %self.id, error = %e, "the webhook secret changed but could not be read again; refusing deliveries until it can");
                })?;
                self.checked();
                tracing::info!(
                    secret = %self.id,
                    etag = %meta.etag,
                    current = fresh.current.version.number,
                    "the webhook secret changed; reloaded on a metadata check"
                );
                Ok(fresh)
            }
            Err(e) if transient(&e) => {
                // Secret Manager is down: nothing can have rotated the
                // secret through it either. Try again next interval.
                self.checked();
                tracing::warn!(secret = %self.id, error = %e, "could not check the webhook secret's metadata; keeping the value held");
                Ok(held)
            }
            Err(e) => {
                // Gone, or no longer ours to read: a value nobody can vouch
                // for any more is not used.
                tracing::warn!(secret = %self.id, error = %e, "the webhook secret's metadata cannot be read; refusing deliveries");
                Err(e)
            }
        }
    }

    /// Whether neither a check nor a read of the secret happened within
    /// the interval.
    fn due(&self, held: &SecretSnapshot) -> bool {
        let last = *self.last_check.lock().unwrap_or_else(|p| p.into_inner());
        let seen = last.map_or(held.fetched_at, |l| l.max(held.fetched_at));
        now().saturating_duration_since(seen) >= self.interval
    }

    fn checked(&self) {
        *self.last_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(now());
    }
}

/// Failures that may pass, as the secret cache counts them.
fn transient(e: &patchpanda_shared::Error) -> bool {
    use patchpanda_shared::Error;
    matches!(
        e,
        Error::Unavailable(_) | Error::Aborted(_) | Error::Internal(_)
    )
}

/// The metadata that decides which versions are valid.
fn same(a: &Secret, b: &Secret) -> bool {
    a.etag == b.etag && a.aliases == b.aliases && a.annotations == b.annotations
}

/// Tokio's clock, as the secret cache uses, so tests can move time.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
