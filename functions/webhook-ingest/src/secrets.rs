//! The webhook-secret keyring: which secret versions a delivery's signature
//! may match. `current` always; `previous` only while the rotation's grace
//! lasts, i.e. while the secret's `patchpanda-previous-valid-until`
//! annotation names a future time. Without that annotation `previous` is not
//! accepted: the rotation worker always writes it for a graceful rotation
//! and removes it for an emergency one, so its absence means "no grace".

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchpanda_shared::SecretValue;
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::secrets::SecretStore;
use patchpanda_shared::secrets::cache::{SecretCache, SecretSnapshot};

use crate::settings::Settings;
use crate::watch::{SecretWatch, now};

/// While a rotation is announced, a mismatch may re-read the secret this
/// often: GitHub may start signing with the new secret any moment.
pub const ANNOUNCED_REREAD_INTERVAL: Duration = Duration::from_secs(1);
/// How long a `started` notice counts without the notice that ends it.
pub const ANNOUNCEMENT_MAX: Duration = Duration::from_secs(15 * 60);

/// The webhook secret's valid versions, from the shared cache.
pub struct WebhookKeyring {
    cache: Arc<SecretCache>,
    id: String,
    watch: SecretWatch,
    /// Outside an announced rotation, how often a mismatch may re-read.
    reread_interval: Duration,
    /// When a signature mismatch last made us read the secret again.
    last_miss_refresh: Mutex<Option<Instant>>,
    /// Until when a `started` notice says a rotation is under way.
    announced_until: Mutex<Option<Instant>>,
}

impl WebhookKeyring {
    /// `id` is the Secret Manager id, e.g. `patchpanda-webhook-secret`;
    /// `store` answers the metadata checks (see [`crate::watch`]).
    pub fn new(
        cache: Arc<SecretCache>,
        store: Arc<dyn SecretStore>,
        id: String,
        settings: &Settings,
    ) -> Self {
        Self {
            watch: SecretWatch::new(store, id.clone(), settings.secret_check_interval),
            cache,
            id,
            reread_interval: settings.mismatch_reread_interval,
            last_miss_refresh: Mutex::new(None),
            announced_until: Mutex::new(None),
        }
    }

    /// After a mismatch: reads the secret again, if what we held was fetched
    /// before the delivery arrived (a rotation may have moved on since, and
    /// its notice may still be on its way) and no such read ran within the
    /// interval: [`ANNOUNCED_REREAD_INTERVAL`] while a rotation is announced
    /// and not finished, else the configured one (a minute by default). A
    /// flood of forged signatures thus costs at most one audited read a
    /// minute. Returns the fresh snapshot to check the delivery against.
    pub async fn refresh_after_miss(
        &self,
        arrived: Instant,
        held: &SecretSnapshot,
    ) -> Option<Arc<SecretSnapshot>> {
        if held.fetched_at >= arrived {
            return None;
        }
        let interval = if self.rotation_announced(held) {
            ANNOUNCED_REREAD_INTERVAL
        } else {
            self.reread_interval
        };
        {
            let mut last = lock(&self.last_miss_refresh);
            let now = now();
            if last.is_some_and(|t| now.saturating_duration_since(t) < interval) {
                return None;
            }
            *last = Some(now);
        }
        match self.cache.refresh(&self.id).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(secret = %self.id, error = %e, "re-reading the webhook secret after a mismatch failed");
                None
            }
        }
    }

    /// Whether a rotation is under way: the secret has a `pending` version
    /// (the worker sets it before GitHub signs with it), or a `started`
    /// notice arrived and neither its end nor [`ANNOUNCEMENT_MAX`] has.
    pub fn rotation_announced(&self, held: &SecretSnapshot) -> bool {
        held.secret.aliases.contains_key(names::ALIAS_PENDING)
            || lock(&self.announced_until).is_some_and(|until| now() < until)
    }

    /// A `started` notice for the webhook secret arrived.
    pub fn rotation_started(&self) {
        *lock(&self.announced_until) = Some(now() + ANNOUNCEMENT_MAX);
    }

    /// A notice that ends a rotation arrived.
    pub fn rotation_ended(&self) {
        *lock(&self.announced_until) = None;
    }

    pub fn secret_id(&self) -> &str {
        &self.id
    }

    /// The snapshot: fetched again after the cache's TTL, or as soon as a
    /// metadata check finds the secret changed (see [`crate::watch`]).
    pub async fn snapshot(&self) -> patchpanda_shared::Result<Arc<SecretSnapshot>> {
        let held = self.cache.get(&self.id).await?;
        self.watch.fresh(&self.cache, held).await
    }

    /// Reads the secret again now (a rotation notice said it changed).
    pub async fn reload(&self) -> patchpanda_shared::Result<()> {
        self.cache.refresh(&self.id).await.map(|_| ())
    }

    pub fn is_loaded(&self) -> bool {
        self.cache.is_loaded(&self.id)
    }

    /// The version whose secret signed `body` with `header`, trying every
    /// valid version (each comparison constant time). None if none did.
    pub fn verify(
        snapshot: &SecretSnapshot,
        body: &[u8],
        header: &str,
        now: DateTime<Utc>,
    ) -> Option<u64> {
        let digest = signature::parse_header(header)?;
        // Try every key even after a match, so the time taken does not tell
        // which version matched.
        let mut matched = None;
        for (version, secret) in valid_keys(snapshot, now) {
            if signature::verify_digest(secret.expose(), body, &digest) && matched.is_none() {
                matched = Some(version);
            }
        }
        matched
    }
}

/// `(version, secret)` of `current`; of `pending`, while a rotation is in
/// flight (the worker announces it before GitHub starts signing with it);
/// then of `previous` if its grace has not ended at `now`.
pub fn valid_keys(snapshot: &SecretSnapshot, now: DateTime<Utc>) -> Vec<(u64, &SecretValue)> {
    let mut keys = vec![(snapshot.current.version.number, &snapshot.current.value)];
    if let Some(pending) = &snapshot.pending {
        keys.push((pending.version.number, &pending.value));
    }
    if let Some(prev) = &snapshot.previous
        && previous_valid_until(snapshot).is_some_and(|until| now < until)
    {
        keys.push((prev.version.number, &prev.value));
    }
    keys
}

/// When `previous` stops being accepted, per the secret's annotation.
pub fn previous_valid_until(snapshot: &SecretSnapshot) -> Option<DateTime<Utc>> {
    snapshot
        .secret
        .annotations
        .get(names::ANNOTATION_PREVIOUS_VALID_UNTIL)
        .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each holds one plain value, consistent whatever panicked elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchpanda_shared::secrets::{AccessedVersion, Secret, SecretVersion, VersionState};
    use std::collections::BTreeMap;

    fn version(n: u64, value: &str) -> AccessedVersion {
        AccessedVersion {
            version: SecretVersion {
                secret: "patchpanda-webhook-secret".into(),
                number: n,
                state: VersionState::Enabled,
                create_time: Utc::now(),
                destroy_time: None,
            },
            value: SecretValue::from(value.to_string()),
        }
    }

    fn snapshot(until: Option<&str>) -> SecretSnapshot {
        let mut annotations = BTreeMap::new();
        if let Some(u) = until {
            annotations.insert(
                names::ANNOTATION_PREVIOUS_VALID_UNTIL.to_string(),
                u.to_string(),
            );
        }
        SecretSnapshot {
            secret: Secret {
                id: "patchpanda-webhook-secret".into(),
                create_time: Utc::now(),
                aliases: BTreeMap::new(),
                annotations,
                etag: "e".into(),
                next_rotation_time: None,
                rotation_period: None,
            },
            current: version(2, "new"),
            previous: Some(version(1, "old")),
            pending: None,
            fetched_at: Instant::now(),
        }
    }

    #[test]
    fn previous_counts_only_during_its_grace() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let body = b"{}";
        let old_sig = signature::sign(b"old", body);
        let new_sig = signature::sign(b"new", body);

        let in_grace = snapshot(Some("2026-01-01T13:00:00Z"));
        assert_eq!(
            WebhookKeyring::verify(&in_grace, body, &new_sig, now),
            Some(2)
        );
        assert_eq!(
            WebhookKeyring::verify(&in_grace, body, &old_sig, now),
            Some(1)
        );

        let over = snapshot(Some("2026-01-01T11:59:59Z"));
        assert_eq!(WebhookKeyring::verify(&over, body, &old_sig, now), None);
        assert_eq!(WebhookKeyring::verify(&over, body, &new_sig, now), Some(2));

        let no_annotation = snapshot(None);
        assert_eq!(
            WebhookKeyring::verify(&no_annotation, body, &old_sig, now),
            None
        );
        let mut rotating = snapshot(None);
        rotating.pending = Some(version(3, "next"));
        let next_sig = signature::sign(b"next", body);
        assert_eq!(
            WebhookKeyring::verify(&rotating, body, &next_sig, now),
            Some(3)
        );
        let garbled = snapshot(Some("tomorrow"));
        assert_eq!(WebhookKeyring::verify(&garbled, body, &old_sig, now), None);

        assert_eq!(
            WebhookKeyring::verify(&in_grace, body, "sha256=00", now),
            None
        );
        assert_eq!(
            WebhookKeyring::verify(&in_grace, b"{ }", &new_sig, now),
            None
        );
    }
}
