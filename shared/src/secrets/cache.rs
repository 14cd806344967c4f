//! The per-function secret cache: each function loads its secrets at cold
//! start (in parallel), refreshes one on a rotation notice, and re-reads
//! after a TTL as a fallback. A failing backend does not take the function
//! down at once: the last good value is served, with a warning, until it is
//! `max_stale` old.
//!
//! Fetches are coalesced per secret: callers that only need a value no older
//! than the TTL join whatever fetch is in flight; an explicit `refresh` (a
//! rotation notice says the secret just changed) never accepts a fetch that
//! started before it was called, so it joins the one queued behind the
//! in-flight fetch. Any burst of refreshes costs at most two fetches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::{AccessedVersion, Secret, SecretStore, VersionRef};
use crate::names::{ALIAS_CURRENT, ALIAS_PENDING, ALIAS_PREVIOUS};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long a value is served without asking the backend again.
    pub ttl: Duration,
    /// How old a value may get, while the backend fails, before the error is
    /// returned instead.
    pub max_stale: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5 * 60),
            max_stale: Duration::from_secs(30 * 60),
        }
    }
}

/// One secret as the functions use it: the `current` version and, during a
/// rotation's grace period, the `previous` one.
#[derive(Debug, Clone)]
pub struct SecretSnapshot {
    pub secret: Secret,
    /// The version aliased `current`; without that alias (a secret made by
    /// hand), the newest enabled version.
    pub current: AccessedVersion,
    /// The version aliased `previous`, if it is enabled.
    pub previous: Option<AccessedVersion>,
    /// The version aliased `pending` (a rotation in flight), if it is enabled.
    pub pending: Option<AccessedVersion>,
    pub fetched_at: Instant,
}

type Flight = Shared<BoxFuture<'static, Result<Arc<SecretSnapshot>>>>;

#[derive(Default)]
struct Entry {
    snapshot: Option<Arc<SecretSnapshot>>,
    /// The fetch in flight, if any.
    current: Option<(u64, Flight)>,
    /// The fetch queued behind it, for refreshes that arrived meanwhile.
    next: Option<(u64, Flight)>,
}

struct Inner {
    store: Arc<dyn SecretStore>,
    options: CacheOptions,
    entries: Mutex<HashMap<String, Entry>>,
    flights: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Entries hold only finished values and futures; a panic elsewhere
        // cannot leave one half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Secrets of one function, cached. Works with any [`SecretStore`].
pub struct SecretCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<String> = self.inner.entries().keys().cloned().collect();
        ids.sort();
        f.debug_struct("SecretCache")
            .field("options", &self.inner.options)
            .field("secrets", &ids)
            .finish()
    }
}

impl SecretCache {
    pub fn new(store: Arc<dyn SecretStore>, options: CacheOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                options,
                entries: Mutex::new(HashMap::new()),
                flights: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Loads every secret at cold start, all in parallel; fails (naming the
    /// secret) if any cannot be loaded.
    pub async fn load(&self, ids: &[String]) -> Result<()> {
        let loads = ids.iter().map(|id| async move {
            self.refresh(id)
                .await
                .map_err(|e| with_context(e, &format!("loading secret {id}")))
        });
        futures::future::try_join_all(loads).await.map(|_| ())
    }

    /// The secret, fetched again if it is older than the TTL. If that fetch
    /// fails for a reason that may pass (the backend is unavailable), the
    /// last good value is served until it is `max_stale` old.
    pub async fn get(&self, id: &str) -> Result<Arc<SecretSnapshot>> {
        let (stale, flight) = {
            let mut entries = self.inner.entries();
            let entry = entries.entry(id.to_string()).or_default();
            if let Some(s) = &entry.snapshot
                && age(s) < self.inner.options.ttl
            {
                return Ok(s.clone());
            }
            let flight = match (&entry.current, &entry.next) {
                (Some((_, f)), _) | (None, Some((_, f))) => f.clone(),
                (None, None) => self.start(entry, id, None, false),
            };
            (entry.snapshot.clone(), flight)
        };
        match flight.await {
            Ok(s) => Ok(s),
            Err(e) => match stale {
                Some(s) if is_transient(&e) && age(&s) < self.inner.options.max_stale => {
                    tracing::warn!(
                        secret = id,
                        age_secs = age(&s).as_secs(),
                        error = %e,
                        "serving the last good value of a secret; refreshing it failed"
                    );
                    Ok(s)
                }
                _ => Err(e),
            },
        }
    }

    /// Fetches the secret now, with a fetch that starts after this call
    /// (shared with other refreshes arriving meanwhile). Use on a rotation
    /// notice. On failure the cached value is left as it was.
    pub async fn refresh(&self, id: &str) -> Result<Arc<SecretSnapshot>> {
        let flight = {
            let mut entries = self.inner.entries();
            let entry = entries.entry(id.to_string()).or_default();
            match (&entry.current, &entry.next) {
                (_, Some((_, f))) => f.clone(),
                (Some((_, f)), None) => {
                    let after = f.clone();
                    self.start(entry, id, Some(after), true)
                }
                (None, None) => self.start(entry, id, None, false),
            }
        };
        flight.await
    }

    /// Refreshes every secret the cache holds a value for, in parallel.
    /// (A secret whose value was dropped after a definitive failure is
    /// fetched again by its next `get`.)
    pub async fn refresh_all(&self) -> Result<()> {
        let ids: Vec<String> = self
            .inner
            .entries()
            .iter()
            .filter(|(_, e)| e.snapshot.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let all = ids.iter().map(|id| async move {
            self.refresh(id)
                .await
                .map_err(|e| with_context(e, &format!("refreshing secret {id}")))
        });
        futures::future::try_join_all(all).await.map(|_| ())
    }

    /// Whether a value is cached for the secret (fresh or not).
    pub fn is_loaded(&self, id: &str) -> bool {
        self.inner
            .entries()
            .get(id)
            .is_some_and(|e| e.snapshot.is_some())
    }

    /// Registers a new fetch in `entry` (as `next` if it must wait for
    /// `after`, else as `current`) and returns it.
    fn start(&self, entry: &mut Entry, id: &str, after: Option<Flight>, queued: bool) -> Flight {
        let no = self
            .inner
            .flights
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let flight = run(self.inner.clone(), id.to_string(), no, after)
            .boxed()
            .shared();
        if queued {
            entry.next = Some((no, flight.clone()));
        } else {
            entry.current = Some((no, flight.clone()));
        }
        flight
    }
}

/// One fetch: waits for the fetch ahead of it, becomes the current one,
/// fetches, and records the outcome. Fetches of one secret therefore run one
/// at a time and finish in order, so an older value never replaces a newer.
async fn run(
    inner: Arc<Inner>,
    id: String,
    no: u64,
    after: Option<Flight>,
) -> Result<Arc<SecretSnapshot>> {
    if let Some(ahead) = after {
        // Its outcome is its callers' business; this fetch starts afresh.
        let _ = ahead.await;
        let mut entries = inner.entries();
        let entry = entries.entry(id.clone()).or_default();
        if entry.next.as_ref().is_some_and(|(n, _)| *n == no) {
            entry.current = entry.next.take();
        }
    }
    let result = fetch(inner.store.as_ref(), &id).await.map(Arc::new);
    let mut entries = inner.entries();
    let entry = entries.entry(id.clone()).or_default();
    if entry.current.as_ref().is_some_and(|(n, _)| *n == no) {
        entry.current = None;
    }
    match &result {
        Ok(s) => entry.snapshot = Some(s.clone()),
        // The secret is gone or unusable: a stale copy must not outlive it.
        Err(e) if !is_transient(e) => entry.snapshot = None,
        Err(_) => {}
    }
    result
}

async fn fetch(store: &dyn SecretStore, id: &str) -> Result<SecretSnapshot> {
    let secret = store.get_secret(id).await?;
    let current_no = match secret.aliases.get(ALIAS_CURRENT) {
        Some(&n) => n,
        None => store
            .list_versions(id)
            .await?
            .into_iter()
            .filter(|v| v.state == super::VersionState::Enabled)
            .map(|v| v.number)
            .max()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "secret {id} has no `current` alias and no enabled version"
                ))
            })?,
    };
    let previous_no = secret
        .aliases
        .get(ALIAS_PREVIOUS)
        .copied()
        .filter(|&n| n != current_no);
    let pending_no = secret
        .aliases
        .get(ALIAS_PENDING)
        .copied()
        .filter(|&n| n != current_no);
    let current_ref = VersionRef::Number(current_no);
    let current = store.access(id, &current_ref);
    let (current, previous, pending) = futures::future::try_join3(
        current,
        optional(store, id, previous_no),
        optional(store, id, pending_no),
    )
    .await?;
    Ok(SecretSnapshot {
        secret,
        current,
        previous,
        pending,
        fetched_at: now(),
    })
}

/// An aliased version other than `current`: absent when disabled,
/// destroyed or gone (its grace is over, or its rotation was undone).
async fn optional(
    store: &dyn SecretStore,
    id: &str,
    number: Option<u64>,
) -> Result<Option<AccessedVersion>> {
    match number {
        None => Ok(None),
        Some(n) => match store.access(id, &VersionRef::Number(n)).await {
            Ok(v) => Ok(Some(v)),
            Err(Error::FailedPrecondition(_) | Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// Now on tokio's clock, so tests can move time without sleeping.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn age(s: &SecretSnapshot) -> Duration {
    now().saturating_duration_since(s.fetched_at)
}

/// Failures worth riding out on a cached value; anything else (the secret or
/// its version is gone, disabled, corrupt, or access is denied) is an answer.
fn is_transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Unavailable(_) | Error::Aborted(_) | Error::Internal(_)
    )
}

fn with_context(e: Error, context: &str) -> Error {
    match e {
        Error::NotFound(m) => Error::NotFound(format!("{context}: {m}")),
        Error::AlreadyExists(m) => Error::AlreadyExists(format!("{context}: {m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{context}: {m}")),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{context}: {m}")),
        Error::Aborted(m) => Error::Aborted(format!("{context}: {m}")),
        Error::PermissionDenied(m) => Error::PermissionDenied(format!("{context}: {m}")),
        Error::Unavailable(m) => Error::Unavailable(format!("{context}: {m}")),
        Error::DataLoss(m) => Error::DataLoss(format!("{context}: {m}")),
        Error::Internal(m) => Error::Internal(format!("{context}: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::sync::{Barrier, Notify, Semaphore};

    use super::*;
    use crate::secrets::{SecretUpdate, StateChange};
    use crate::testing::{Call, Flaky, MemorySecretStore};

    const OPTS: CacheOptions = CacheOptions {
        ttl: Duration::from_secs(300),
        max_stale: Duration::from_secs(1800),
    };

    /// The cache's backend: fetches are `get_secret` calls, counted by the
    /// wrapper; tests seed and change secrets through `inner()`, uncounted.
    type Store = Arc<Flaky<MemorySecretStore>>;

    fn store() -> Store {
        Arc::new(Flaky::new(MemorySecretStore::new()))
    }

    fn fetches(s: &Store) -> usize {
        s.calls(Call::GetSecret)
    }

    /// Every fetch waits until `n` of them are in flight.
    fn meet_at_barrier(s: &Store, n: usize) {
        let barrier = Arc::new(Barrier::new(n));
        s.before(
            Call::GetSecret,
            Arc::new(move || {
                let b = barrier.clone();
                Box::pin(async move {
                    b.wait().await;
                })
            }),
        );
    }

    /// Every fetch announces itself, then waits for a permit of the gate.
    fn hold_fetches(s: &Store) -> (Arc<Notify>, Arc<Semaphore>) {
        let entered = Arc::new(Notify::new());
        let gate = Arc::new(Semaphore::new(0));
        let (e, g) = (entered.clone(), gate.clone());
        s.before(
            Call::GetSecret,
            Arc::new(move || {
                let (e, g) = (e.clone(), g.clone());
                Box::pin(async move {
                    e.notify_one();
                    g.acquire().await.unwrap().forget();
                })
            }),
        );
        (entered, gate)
    }

    /// A secret with versions `values` (1..), `current` on the last and
    /// `previous` on the one before.
    async fn seed(s: &dyn SecretStore, id: &str, values: &[&str]) {
        s.create_secret(id).await.unwrap();
        for v in values {
            s.add_version(id, v.as_bytes()).await.unwrap();
        }
        let n = values.len() as u64;
        let mut aliases = BTreeMap::from([(ALIAS_CURRENT.to_string(), n)]);
        if n > 1 {
            aliases.insert(ALIAS_PREVIOUS.to_string(), n - 1);
        }
        set_aliases(s, id, aliases).await;
    }

    async fn set_aliases(s: &dyn SecretStore, id: &str, aliases: BTreeMap<String, u64>) {
        s.update_secret(
            id,
            SecretUpdate {
                aliases: Some(aliases),
                annotations: None,
            },
            None,
        )
        .await
        .unwrap();
    }

    fn text(v: &AccessedVersion) -> &str {
        v.value.expose_str().unwrap()
    }

    #[tokio::test]
    async fn load_fetches_all_in_parallel_and_names_failures() {
        // Each fetch waits until all three are in flight: a sequential load
        // would never get past the first.
        let s = store();
        meet_at_barrier(&s, 3);
        for id in ["a", "b", "c"] {
            seed(s.inner(), id, &["v1"]).await;
        }
        let cache = SecretCache::new(s.clone(), OPTS);
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        tokio::time::timeout(Duration::from_secs(30), cache.load(&ids))
            .await
            .expect("load must fetch in parallel")
            .unwrap();
        for id in &ids {
            assert!(cache.is_loaded(id));
        }
        assert!(!cache.is_loaded("d"));
        assert_eq!(fetches(&s), 3);

        let plain = store();
        seed(plain.inner(), "a", &["v1"]).await;
        let cache = SecretCache::new(plain.clone(), OPTS);
        let err = cache
            .load(&["a".into(), "missing".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotFound(m) if m.contains("loading secret missing")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn pending_is_loaded_while_a_rotation_is_in_flight() {
        let s = store();
        seed(s.inner(), "w", &["old", "new"]).await;
        let cache = SecretCache::new(s.clone(), OPTS);
        assert!(cache.get("w").await.unwrap().pending.is_none());
        s.inner().add_version("w", b"next").await.unwrap();
        set_aliases(
            s.inner(),
            "w",
            BTreeMap::from([
                (ALIAS_CURRENT.into(), 2),
                (ALIAS_PREVIOUS.into(), 1),
                (ALIAS_PENDING.into(), 3),
            ]),
        )
        .await;
        let snap = cache.refresh("w").await.unwrap();
        assert_eq!(text(snap.pending.as_ref().unwrap()), "next");
        assert_eq!(snap.pending.as_ref().unwrap().version.number, 3);
        // A rolled-back rotation disables its pending version: gone.
        s.inner()
            .set_state("w", 3, StateChange::Disable)
            .await
            .unwrap();
        assert!(cache.refresh("w").await.unwrap().pending.is_none());
    }

    #[tokio::test]
    async fn current_previous_and_fallback() {
        let s = store();
        seed(s.inner(), "rotated", &["old", "new"]).await;
        let cache = SecretCache::new(s.clone(), OPTS);
        let snap = cache.get("rotated").await.unwrap();
        assert_eq!(text(&snap.current), "new");
        assert_eq!(snap.current.version.number, 2);
        assert_eq!(text(snap.previous.as_ref().unwrap()), "old");
        assert_eq!(snap.secret.aliases[ALIAS_CURRENT], 2);

        // A disabled `previous` is simply absent.
        s.inner()
            .set_state("rotated", 1, StateChange::Disable)
            .await
            .unwrap();
        let snap = cache.refresh("rotated").await.unwrap();
        assert!(snap.previous.is_none());
        assert_eq!(text(&snap.current), "new");

        // Made by hand, no aliases: the newest enabled version.
        s.inner().create_secret("manual").await.unwrap();
        for v in ["m1", "m2", "m3"] {
            s.inner().add_version("manual", v.as_bytes()).await.unwrap();
        }
        s.inner()
            .set_state("manual", 3, StateChange::Disable)
            .await
            .unwrap();
        let snap = cache.get("manual").await.unwrap();
        assert_eq!(text(&snap.current), "m2");
        assert!(snap.previous.is_none());

        // A rotation notice: refresh sees the new `current` at once.
        s.inner().add_version("rotated", b"newest").await.unwrap();
        set_aliases(
            s.inner(),
            "rotated",
            BTreeMap::from([(ALIAS_CURRENT.into(), 3), (ALIAS_PREVIOUS.into(), 2)]),
        )
        .await;
        assert_eq!(
            text(&cache.get("rotated").await.unwrap().current),
            "new",
            "still fresh"
        );
        let snap = cache.refresh("rotated").await.unwrap();
        assert_eq!(text(&snap.current), "newest");
        assert_eq!(text(snap.previous.as_ref().unwrap()), "new");
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_then_stale_bounded_by_max_stale() {
        let s = store();
        seed(s.inner(), "a", &["v1"]).await;
        let cache = SecretCache::new(s.clone(), OPTS);
        let first = cache.get("a").await.unwrap();
        cache.get("a").await.unwrap();
        assert_eq!(fetches(&s), 1, "fresh within the TTL");
        tokio::time::advance(OPTS.ttl + Duration::from_secs(1)).await;
        let second = cache.get("a").await.unwrap();
        assert_eq!(fetches(&s), 2, "re-read after the TTL");
        assert!(!Arc::ptr_eq(&first, &second));

        s.fail_always(
            Call::GetSecret,
            Error::Unavailable("backend down (test)".into()),
        );
        tokio::time::advance(OPTS.ttl + Duration::from_secs(1)).await;
        let stale = cache.get("a").await.unwrap();
        assert!(Arc::ptr_eq(&stale, &second), "last good value served");
        assert!(matches!(
            cache.refresh("a").await,
            Err(Error::Unavailable(_))
        ));
        assert!(cache.is_loaded("a"), "a failed refresh keeps the value");
        tokio::time::advance(OPTS.max_stale).await;
        assert!(matches!(cache.get("a").await, Err(Error::Unavailable(_))));

        // Back up: served fresh again.
        s.heal();
        assert_eq!(text(&cache.get("a").await.unwrap().current), "v1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_definitive_failure_is_not_hidden_by_a_stale_value() {
        let s = store();
        seed(s.inner(), "a", &["v1"]).await;
        let cache = SecretCache::new(s.clone(), OPTS);
        cache.get("a").await.unwrap();
        s.inner()
            .set_state("a", 1, StateChange::Disable)
            .await
            .unwrap();
        tokio::time::advance(OPTS.ttl + Duration::from_secs(1)).await;
        assert!(matches!(
            cache.get("a").await,
            Err(Error::FailedPrecondition(_))
        ));
        assert!(!cache.is_loaded("a"));
    }

    #[tokio::test]
    async fn concurrent_gets_share_one_fetch() {
        let s = store();
        let (entered, gate) = hold_fetches(&s);
        seed(s.inner(), "a", &["v1"]).await;
        let cache = SecretCache::new(s.clone(), OPTS);
        let gets = futures::future::join_all((0..10).map(|_| cache.get("a")));
        let release = async {
            entered.notified().await;
            gate.add_permits(100);
        };
        let (results, ()) = tokio::join!(gets, release);
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(fetches(&s), 1);
    }

    #[tokio::test]
    async fn refreshes_coalesce_behind_the_fetch_in_flight() {
        let s = store();
        let (entered, gate) = hold_fetches(&s);
        seed(s.inner(), "a", &["v1"]).await;
        let cache = SecretCache::new(s.clone(), OPTS);
        // The first refresh's fetch is held at the gate; the nine others
        // arrive while it is in flight and must not trust it, so they share
        // one fetch queued behind it.
        let refreshes = futures::future::join_all((0..10).map(|_| cache.refresh("a")));
        let release = async {
            entered.notified().await;
            gate.add_permits(100);
        };
        let (results, ()) = tokio::join!(refreshes, release);
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(fetches(&s), 2);
        assert!(Arc::ptr_eq(
            results[1].as_ref().unwrap(),
            results[9].as_ref().unwrap()
        ));

        // With nothing in flight, one refresh is one fetch; refresh_all
        // covers every known secret.
        cache.refresh("a").await.unwrap();
        assert_eq!(fetches(&s), 3);
        cache.refresh_all().await.unwrap();
        assert_eq!(fetches(&s), 4);
        // A secret that never loaded does not break refresh_all.
        assert!(matches!(
            cache.get("missing").await,
            Err(Error::NotFound(_))
        ));
        cache.refresh_all().await.unwrap();
        assert_eq!(fetches(&s), 6);
    }
}
