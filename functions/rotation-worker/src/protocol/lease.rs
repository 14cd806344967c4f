//! The rotation lease: the in-flight state doubles as a lock. Taking it,
//! saving a step under it (every write guarded by the secret's etag, re-read
//! and retried when someone else wrote first), and pausing (letting it lapse
//! at once so the next trigger resumes).

use std::collections::BTreeMap;

use patchpanda_shared::Error;
use patchpanda_shared::names;
use patchpanda_shared::secrets::{Secret, SecretUpdate, StateChange, VersionRef, VersionState};

use super::state::{
    ANNOTATION_LAST_ROTATION, ANNOTATION_ROTATION, LastRotation, RotationState, json,
    rotation_state,
};
use crate::kinds::Kind;
use crate::{RotationError, Rotator};

/// How often an etag-guarded write is retried against a secret that keeps
/// changing under us before giving up (retryably).
pub(crate) const CAS_ATTEMPTS: usize = 8;

/// Clock skew tolerated between workers when judging a lease's length.
const LEASE_SKEW: chrono::Duration = chrono::Duration::seconds(30);

/// Whether an etag-guarded write lost a race: Secret Manager answers a stale
/// etag with FAILED_PRECONDITION (the local store and older fakes used
/// ABORTED). Either way: read again and retry.
pub(crate) fn lost_race(e: &Error) -> bool {
    matches!(e, Error::FailedPrecondition(_) | Error::Aborted(_))
}

/// A held rotation lease.
pub(crate) struct Lease {
    pub kind: Kind,
    /// Secret Manager id.
    pub id: String,
    pub state: RotationState,
    /// Whether this attempt took over a rotation an earlier one began.
    pub resumed: bool,
    /// When this attempt wrote the lease (our clock, read before the
    /// write). The `started` notice carries this time, so the alerter's
    /// window covers the lease write itself however long the steps between
    /// the write and the notice take.
    pub taken_at: chrono::DateTime<chrono::Utc>,
}

/// What a write does to the rotation state besides the edit.
pub(crate) enum Fin<'a> {
    /// Keep holding the lease.
    Keep,
    /// Drop the state without recording a result (nothing happened).
    Clear,
    /// Drop the state and record how the rotation ended.
    Done(&'a LastRotation),
}

fn is_state_race(e: &Error) -> bool {
    matches!(e, Error::FailedPrecondition(_) | Error::NotFound(_))
}

impl Rotator {
    /// Takes the secret's rotation lease for a new rotation: a free secret
    /// gets `fresh`, a lapsed lease is taken over with its state (to resume),
    /// a live one is refused.
    pub(crate) async fn acquire(
        &self,
        kind: Kind,
        fresh: RotationState,
    ) -> Result<Lease, RotationError> {
        let emergency = fresh.emergency;
        match self.lease(kind, Some(fresh), emergency).await? {
            Some(lease) => Ok(lease),
            None => Err(Error::Internal("a fresh lease was not taken".into()).into()),
        }
    }

    /// Takes over a lapsed rotation only; `None` when the secret has none
    /// (it may have finished meanwhile: nothing new is started).
    pub(crate) async fn take_over(&self, kind: Kind) -> Result<Option<Lease>, RotationError> {
        self.lease(kind, None, false).await
    }

    /// Whether a lease claims more time than any rotation writes: at most
    /// `lease_ttl` from its last renewal. Such a lease was planted (or
    /// written by a clock far ahead) and is not honoured.
    pub(crate) fn is_planted(&self, s: &RotationState) -> bool {
        let ttl =
            chrono::Duration::from_std(self.settings.lease_ttl).unwrap_or(chrono::Duration::MAX);
        s.lease_until > self.now() + ttl + LEASE_SKEW
    }

    async fn lease(
        &self,
        kind: Kind,
        fresh: Option<RotationState>,
        emergency: bool,
    ) -> Result<Option<Lease>, RotationError> {
        let id = self.settings.secret_id(kind.logical());
        for _ in 0..CAS_ATTEMPTS {
            let secret = self.store.get_secret(&id).await?;
            let now = self.now();
            let holder = uuid::Uuid::new_v4().to_string();
            let in_flight = match rotation_state(&secret) {
                Some(s) if self.is_planted(&s) => {
                    // Its fields (pending, base) are as untrusted as its
                    // length: discard it rather than resume it.
                    tracing::warn!(secret = %id, lease_until = %s.lease_until, "rotation lease longer than any rotation writes: discarded as planted");
                    None
                }
                other => other,
            };
            let (state, resumed) = match in_flight {
                Some(s) if s.lease_until > now => {
                    return Err(RotationError::InProgress {
                        secret: kind.logical().to_string(),
                        rotation_id: s.id,
                        step: s.step.to_string(),
                        since: s.started,
                    });
                }
                Some(mut s) => {
                    tracing::warn!(secret = %id, rotation_id = %s.id, step = %s.step, "taking over a lapsed rotation");
                    // An emergency request upgrades a resumed rotation while
                    // its grace is still undecided.
                    if emergency && s.step.is_forward() {
                        s.emergency = true;
                    }
                    s.holder = holder;
                    s.lease_until = now + self.settings.lease_ttl;
                    (s, true)
                }
                None => {
                    let Some(mut s) = fresh.clone() else {
                        if secret.annotations.contains_key(ANNOTATION_ROTATION) {
                            // A planted (or unreadable) state: clear it so
                            // finish does not skip the secret forever.
                            self.clear_state(&id, &secret).await?;
                        }
                        return Ok(None);
                    };
                    s.holder = holder;
                    s.started = now;
                    s.lease_until = now + self.settings.lease_ttl;
                    s.base = secret.aliases.get(names::ALIAS_CURRENT).copied();
                    (s, false)
                }
            };
            let mut annotations = secret.annotations.clone();
            annotations.insert(ANNOTATION_ROTATION.to_string(), json(&state));
            let update = SecretUpdate {
                aliases: None,
                annotations: Some(annotations),
            };
            match self
                .store
                .update_secret(&id, update, Some(&secret.etag))
                .await
            {
                Ok(_) => {
                    return Ok(Some(Lease {
                        kind,
                        id,
                        state,
                        resumed,
                        taken_at: now,
                    }));
                }
                // Someone wrote first: look again (they may hold it now).
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!(
            "{id} kept changing while taking the rotation lease"
        ))
        .into())
    }

    async fn clear_state(&self, id: &str, secret: &Secret) -> Result<(), RotationError> {
        let mut annotations = secret.annotations.clone();
        annotations.remove(ANNOTATION_ROTATION);
        let update = SecretUpdate {
            aliases: None,
            annotations: Some(annotations),
        };
        match self
            .store
            .update_secret(id, update, Some(&secret.etag))
            .await
        {
            // Lost a race: whoever wrote decides; the next trigger looks again.
            Ok(_) => Ok(()),
            Err(e) if lost_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// One etag-guarded write of the rotation state plus `edit`'s changes to
    /// aliases and annotations, renewing the lease. Fails with `LostLease` if
    /// another attempt holds the secret now.
    pub(crate) async fn save<F>(
        &self,
        lease: &mut Lease,
        fin: Fin<'_>,
        mut edit: F,
    ) -> Result<Secret, RotationError>
    where
        F: FnMut(&mut RotationState, &mut BTreeMap<String, u64>, &mut BTreeMap<String, String>),
    {
        for _ in 0..CAS_ATTEMPTS {
            let secret = self.store.get_secret(&lease.id).await?;
            match rotation_state(&secret) {
                Some(s) if s.holder == lease.state.holder => {}
                _ => {
                    return Err(RotationError::LostLease {
                        secret: lease.kind.logical().to_string(),
                    });
                }
            }
            let mut state = lease.state.clone();
            state.lease_until = self.now() + self.settings.lease_ttl;
            let mut aliases = secret.aliases.clone();
            let mut annotations = secret.annotations.clone();
            edit(&mut state, &mut aliases, &mut annotations);
            match fin {
                Fin::Keep => {
                    annotations.insert(ANNOTATION_ROTATION.to_string(), json(&state));
                }
                Fin::Clear => {
                    annotations.remove(ANNOTATION_ROTATION);
                }
                Fin::Done(last) => {
                    annotations.remove(ANNOTATION_ROTATION);
                    annotations.insert(ANNOTATION_LAST_ROTATION.to_string(), json(last));
                }
            }
            let update = SecretUpdate {
                aliases: (aliases != secret.aliases).then_some(aliases),
                annotations: Some(annotations),
            };
            match self
                .store
                .update_secret(&lease.id, update, Some(&secret.etag))
                .await
            {
                Ok(s) => {
                    lease.state = state;
                    return Ok(s);
                }
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!("{} kept changing during the rotation", lease.id)).into())
    }

    /// Lets the lease lapse now, keeping the state, so that the next trigger
    /// resumes at once. Best effort: if it fails, the lease lapses by itself.
    pub(crate) async fn pause(&self, lease: &mut Lease, reason: &str) -> RotationError {
        let now = self.now();
        let reason_owned = reason.to_string();
        if let Err(e) = self
            .save(lease, Fin::Keep, |st, _, _| {
                st.lease_until = now;
                st.reason = Some(reason_owned.clone());
            })
            .await
        {
            tracing::warn!(secret = %lease.id, error = %e, "could not release the paused rotation's lease");
        }
        tracing::warn!(secret = %lease.id, step = %lease.state.step, reason, "rotation paused");
        RotationError::Paused {
            secret: lease.kind.logical().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Disables a version if it is enabled; true if this call changed it.
    pub(crate) async fn disable_version(
        &self,
        id: &str,
        number: u64,
    ) -> Result<bool, RotationError> {
        match self
            .store
            .get_version(id, &VersionRef::Number(number))
            .await
        {
            Ok(v) if v.state == VersionState::Enabled => {}
            Ok(_) => return Ok(false),
            Err(e) if is_state_race(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match self.store.set_state(id, number, StateChange::Disable).await {
            Ok(_) => Ok(true),
            Err(e) if is_state_race(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
