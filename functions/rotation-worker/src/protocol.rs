//! The rotation protocol: four idempotent steps (create, set, test, finish),
//! with the rotation's state kept in the secret's own annotations and every
//! write guarded by the secret's etag.
//!
//! The state doubles as a lease: a worker holds the rotation until
//! `lease_until`, renewing it with each step. Two workers can never both take
//! a free secret (the etag lets one write win), and a crashed worker's lease
//! lapses, after which the next trigger (a rotate, an event, or the hourly
//! finish) resumes the rotation where it stopped, or rolls it back. The end
//! state is always `pending` gone: either promoted or removed and disabled.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patchpanda_shared::Error;
use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{Secret, SecretUpdate, StateChange, VersionRef, VersionState};
use serde::{Deserialize, Serialize};

use crate::kinds::{self, Kind, StepError};
use crate::{RotationError, RotationOutcome, Rotator};

/// The in-flight rotation (JSON). Absent when no rotation is in progress.
pub const ANNOTATION_ROTATION: &str = "patchpanda-rotation";
/// How the last rotation ended (JSON), for `status`.
pub const ANNOTATION_LAST_ROTATION: &str = "patchpanda-last-rotation";
/// Version -> when it was seen disabled (JSON), to time retention from.
pub const ANNOTATION_DISABLED_AT: &str = "patchpanda-disabled-at";

/// How often an etag-guarded write is retried against a secret that keeps
/// changing under us before giving up (retryably).
const CAS_ATTEMPTS: usize = 8;

/// Where a rotation is: the last step whose effect is durably recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Lease taken and `started` announced; nothing created yet.
    Started,
    /// The new version exists and carries the `pending` alias.
    Created,
    /// The new value was applied where it is used (GitHub).
    Set,
    /// The new value was proven to work.
    Tested,
    /// Aliases moved (`pending` -> `current` -> `previous`); the notice and
    /// clean-up remain.
    Finished,
    /// Undoing the rotation: GitHub restored, `pending` removed and disabled.
    RollingBack,
    /// An operator's rollback: making `previous` current again.
    Reverting,
    /// The operator's rollback moved the aliases; the notice remains.
    Reverted,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// Fault injection points (see [`crate::Settings::crash_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// After the lease is taken and `started` announced.
    Started,
    /// After the new version is added, before `pending` points at it.
    VersionAdded,
    Created,
    Set,
    Tested,
    /// After the aliases moved, before the `rotated` notice.
    Finished,
}

/// The in-flight rotation, as stored in [`ANNOTATION_ROTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// Ties the rotation's notices together; survives takeovers.
    pub id: String,
    /// The attempt holding the lease; a takeover changes it.
    pub holder: String,
    pub lease_until: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub step: Step,
    #[serde(default)]
    pub emergency: bool,
    /// `current` when the rotation began.
    #[serde(default)]
    pub base: Option<u64>,
    /// The new version (or, for a revert, the version being restored).
    #[serde(default)]
    pub pending: Option<u64>,
    /// SHA-256 of a generated value, recorded before it is added: Secret
    /// Manager's add has no idempotency token, so this is how a resumed
    /// rotation recognises the version a crashed attempt added. A digest of
    /// 256 random bits reveals nothing usable.
    #[serde(default)]
    pub digest: Option<String>,
    /// Set before GitHub is asked to take the new value; cleared once GitHub
    /// is known to hold the old one. A rollback restores GitHub while set.
    #[serde(default)]
    pub github_may_have_pending: bool,
    #[serde(default)]
    pub grace_until: Option<DateTime<Utc>>,
    /// Why the rotation is being rolled back, or the last retryable failure.
    #[serde(default)]
    pub reason: Option<String>,
    /// Lines for the final notice (skipped steps, reminders).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// How the last rotation ended, as stored in [`ANNOTATION_LAST_ROTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRotation {
    pub id: String,
    /// `rotated`, `rolled_back` or `failed`.
    pub result: NoticeEvent,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub previous_version: Option<u64>,
    #[serde(default)]
    pub emergency: bool,
    #[serde(default)]
    pub detail: Option<String>,
}

/// The in-flight rotation recorded on a secret, if any. A value that does not
/// parse (edited by hand) counts as none and is overwritten by the next one.
pub fn rotation_state(secret: &Secret) -> Option<RotationState> {
    let raw = secret.annotations.get(ANNOTATION_ROTATION)?;
    match serde_json::from_str(raw) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(secret = %secret.id, error = %e, "unreadable rotation state ignored");
            None
        }
    }
}

pub fn last_rotation(secret: &Secret) -> Option<LastRotation> {
    serde_json::from_str(secret.annotations.get(ANNOTATION_LAST_ROTATION)?).ok()
}

pub fn disabled_at(secret: &Secret) -> BTreeMap<u64, DateTime<Utc>> {
    secret
        .annotations
        .get(ANNOTATION_DISABLED_AT)
        .and_then(|raw| serde_json::from_str::<BTreeMap<String, DateTime<Utc>>>(raw).ok())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_disabled_at(
    annotations: &mut BTreeMap<String, String>,
    map: &BTreeMap<u64, DateTime<Utc>>,
) {
    if map.is_empty() {
        annotations.remove(ANNOTATION_DISABLED_AT);
        return;
    }
    let m: BTreeMap<String, DateTime<Utc>> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    if let Ok(json) = serde_json::to_string(&m) {
        annotations.insert(ANNOTATION_DISABLED_AT.to_string(), json);
    }
}

/// Adds `versions` to the disabled-at record, keeping earlier times.
fn note_disabled(annotations: &mut BTreeMap<String, String>, versions: &[u64], at: DateTime<Utc>) {
    if versions.is_empty() {
        return;
    }
    let mut map: BTreeMap<u64, DateTime<Utc>> = annotations
        .get(ANNOTATION_DISABLED_AT)
        .and_then(|raw| serde_json::from_str::<BTreeMap<String, DateTime<Utc>>>(raw).ok())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect()
        })
        .unwrap_or_default();
    for v in versions {
        map.entry(*v).or_insert(at);
    }
    set_disabled_at(annotations, &map);
}

/// A held rotation lease.
pub(crate) struct Lease {
    pub kind: Kind,
    /// Secret Manager id.
    pub id: String,
    pub state: RotationState,
    /// Whether this attempt took over a rotation an earlier one began.
    pub resumed: bool,
}

/// What a write does to the rotation state besides the edit.
enum Fin<'a> {
    /// Keep holding the lease.
    Keep,
    /// Drop the state without recording a result (nothing happened).
    Clear,
    /// Drop the state and record how the rotation ended.
    Done(&'a LastRotation),
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn is_state_race(e: &Error) -> bool {
    matches!(e, Error::FailedPrecondition(_) | Error::NotFound(_))
}

impl Rotator {
    pub(crate) fn crash(&self, at: CrashPoint) -> Result<(), RotationError> {
        if self.settings.crash_at == Some(at) {
            tracing::warn!(?at, "injected crash");
            return Err(RotationError::Crashed(at));
        }
        Ok(())
    }

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
            let (state, resumed) = match rotation_state(&secret) {
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
                    if emergency
                        && matches!(
                            s.step,
                            Step::Started | Step::Created | Step::Set | Step::Tested
                        )
                    {
                        s.emergency = true;
                    }
                    s.holder = holder;
                    s.lease_until = now + self.settings.lease_ttl;
                    (s, true)
                }
                None => {
                    let Some(mut s) = fresh.clone() else {
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
                    }));
                }
                // Someone wrote first: look again (they may hold it now).
                Err(Error::Aborted(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!(
            "{id} kept changing while taking the rotation lease"
        ))
        .into())
    }

    /// One etag-guarded write of the rotation state plus `edit`'s changes to
    /// aliases and annotations, renewing the lease. Fails with `LostLease` if
    /// another attempt holds the secret now.
    async fn save<F>(
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
                Err(Error::Aborted(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!("{} kept changing during the rotation", lease.id)).into())
    }

    /// Lets the lease lapse now, keeping the state, so that the next trigger
    /// resumes at once. Best effort: if it fails, the lease lapses by itself.
    async fn pause(&self, lease: &mut Lease, reason: &str) -> RotationError {
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

    /// Rotates one secret (or the KMS key) now. Resumes a rotation a crashed
    /// or paused attempt left behind instead of starting another.
    pub async fn rotate(
        &self,
        logical: &str,
        emergency: bool,
    ) -> Result<RotationOutcome, RotationError> {
        let kind = Kind::parse(logical)?;
        if kind == Kind::KmsKey {
            return kinds::kms_key::rotate(self, emergency).await;
        }
        let id = self.settings.secret_id(kind.logical());
        let secret = self.store.get_secret(&id).await?;
        let in_flight = rotation_state(&secret);
        let mut fresh = self.fresh_state(emergency);
        if kind.is_upload() && in_flight.is_none() {
            match kinds::newest_upload(self, &id, &secret).await? {
                Some(v) => fresh.pending = Some(v),
                None => {
                    kinds::announce_due(self, kind, &secret, "rotation requested").await?;
                    return Err(RotationError::NeedsUpload {
                        secret: kind.logical().to_string(),
                    });
                }
            }
        }
        let lease = self.acquire(kind, fresh).await?;
        self.run(lease).await
    }

    /// Promotes an uploaded version (Secret Manager's SECRET_VERSION_ADD).
    /// `None` when there is nothing to do: the event is stale or a duplicate.
    pub async fn promote_upload(
        &self,
        logical: &str,
        version: u64,
    ) -> Result<Option<RotationOutcome>, RotationError> {
        let kind = Kind::parse(logical)?;
        if !kind.is_upload() {
            return Ok(None);
        }
        let id = self.settings.secret_id(kind.logical());
        let mut secret = self.store.get_secret(&id).await?;
        if let Some(s) = rotation_state(&secret) {
            if s.pending == Some(version) && s.lease_until > self.now() {
                // Our own rotation of this very version: a duplicate event.
                return Ok(None);
            }
            // Finish what is in flight first (a live one is refused, and the
            // event comes back later).
            if let Some(lease) = self.take_over(kind).await? {
                let outcome = self.run(lease).await;
                if s.pending == Some(version) {
                    return outcome.map(Some);
                }
                if let Err(e) = outcome
                    && e.is_retryable()
                {
                    return Err(e);
                }
            }
            secret = self.store.get_secret(&id).await?;
        }
        if !kinds::is_unpromoted_upload(self, &id, &secret, version).await? {
            return Ok(None);
        }
        let mut fresh = self.fresh_state(false);
        fresh.pending = Some(version);
        let lease = self.acquire(kind, fresh).await?;
        self.run(lease).await.map(Some)
    }

    /// Resumes (or rolls back) a rotation whose lease lapsed; `None` if the
    /// secret has none.
    pub(crate) async fn resume_lapsed(
        &self,
        kind: Kind,
        secret: &Secret,
    ) -> Option<Result<RotationOutcome, RotationError>> {
        let s = rotation_state(secret)?;
        if s.lease_until > self.now() {
            return None;
        }
        Some(match self.take_over(kind).await {
            Ok(Some(lease)) => self.run(lease).await,
            // Finished by its own worker meanwhile.
            Ok(None) => return None,
            Err(e) => Err(e),
        })
    }

    pub(crate) fn fresh_state(&self, emergency: bool) -> RotationState {
        let now = self.now();
        RotationState {
            id: uuid::Uuid::new_v4().to_string(),
            holder: String::new(),
            lease_until: now,
            started: now,
            step: Step::Started,
            emergency,
            base: None,
            pending: None,
            digest: None,
            github_may_have_pending: false,
            grace_until: None,
            reason: None,
            notes: Vec::new(),
        }
    }

    /// Announces the (re)start, then drives the steps. Failures that leave
    /// the rotation in flight release the lease so the next trigger resumes.
    async fn run(&self, mut lease: Lease) -> Result<RotationOutcome, RotationError> {
        if matches!(
            lease.state.step,
            Step::Started | Step::Created | Step::Set | Step::Tested
        ) {
            let mut n = self.notice(lease.kind.logical(), NoticeEvent::Started, &lease.state.id);
            n.previous_version = lease.state.base;
            n.emergency = lease.state.emergency;
            n.detail = Some(if lease.resumed {
                format!("resuming the rotation at step {}", lease.state.step)
            } else if lease.state.emergency {
                "emergency rotation: the old version will be disabled at once".to_string()
            } else {
                "rotation started".to_string()
            });
            if let Err(e) = self.publish(&n).await {
                // Nothing may change unannounced: give the secret back.
                if lease.resumed {
                    return Err(self.pause(&mut lease, &e.to_string()).await);
                }
                let _ = self.save(&mut lease, Fin::Clear, |_, _, _| {}).await;
                return Err(e);
            }
            self.crash(CrashPoint::Started)?;
        }
        match self.drive(&mut lease).await {
            Ok(o) => Ok(o),
            Err(e @ RotationError::Backend(_)) => {
                let reason = e.to_string();
                self.pause(&mut lease, &reason).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn drive(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        loop {
            match lease.state.step {
                Step::Started => {
                    self.create(lease).await?;
                    self.crash(CrashPoint::Created)?;
                }
                Step::Created => {
                    // Recorded before GitHub is asked, so that a crash during
                    // the call still leads a rollback to restore GitHub.
                    let marked_before = lease.state.github_may_have_pending;
                    if kinds::set_touches_github(self, lease.kind) && !marked_before {
                        self.announce_pending(lease).await?;
                        self.save(lease, Fin::Keep, |st, _, _| {
                            st.github_may_have_pending = true
                        })
                        .await?;
                    }
                    let note = match kinds::set(self, lease).await {
                        Ok(note) => note,
                        Err(mut e) => {
                            // A definite refusal proves GitHub kept the old
                            // secret, unless an earlier attempt got through.
                            e.github_unchanged &= !marked_before;
                            return self.step_failed(lease, e).await;
                        }
                    };
                    self.save(lease, Fin::Keep, |st, _, _| {
                        st.step = Step::Set;
                        push_note(st, note.as_deref());
                    })
                    .await?;
                    self.crash(CrashPoint::Set)?;
                }
                Step::Set => {
                    let note = match kinds::test(self, lease).await {
                        Ok(note) => note,
                        Err(e) => return self.step_failed(lease, e).await,
                    };
                    self.save(lease, Fin::Keep, |st, _, _| {
                        st.step = Step::Tested;
                        st.reason = None;
                        push_note(st, note.as_deref());
                    })
                    .await?;
                    self.crash(CrashPoint::Tested)?;
                }
                Step::Tested => {
                    self.promote(lease).await?;
                    self.crash(CrashPoint::Finished)?;
                }
                Step::Finished => return self.complete(lease).await,
                Step::RollingBack => return self.roll_back(lease).await,
                Step::Reverting | Step::Reverted => return self.revert(lease).await,
            }
        }
    }

    /// Before GitHub signs with the pending secret, tell its readers which
    /// version that is (webhook-ingest accepts `pending` once it knows it),
    /// and give the notice time to arrive.
    async fn announce_pending(&self, lease: &Lease) -> Result<(), RotationError> {
        let mut n = self.notice(lease.kind.logical(), NoticeEvent::Started, &lease.state.id);
        n.version = lease.state.pending;
        n.previous_version = lease.state.base;
        n.emergency = lease.state.emergency;
        n.detail = Some("pending version created; setting it at GitHub next".to_string());
        self.publish(&n).await?;
        if !self.settings.propagation.is_zero() {
            tokio::time::sleep(self.settings.propagation).await;
        }
        Ok(())
    }

    /// Step 1: a `pending` version. Generated kinds add one (or adopt the one
    /// a crashed attempt added); uploaded kinds point `pending` at the upload.
    async fn create(&self, lease: &mut Lease) -> Result<(), RotationError> {
        let number = if lease.kind.is_upload() {
            let Some(p) = lease.state.pending else {
                return self.abandon(lease, "no uploaded version to promote").await;
            };
            if lease.state.base.is_some_and(|b| p <= b) {
                return self
                    .abandon(lease, &format!("version {p} is not newer than current"))
                    .await;
            }
            p
        } else {
            match self.adopt_added(lease).await? {
                Some(n) => n,
                None => {
                    let value = kinds::generate(lease.kind)?;
                    let digest = kinds::digest(&value);
                    self.save(lease, Fin::Keep, |st, _, _| {
                        st.digest = Some(digest.clone())
                    })
                    .await?;
                    let v = self.store.add_version(&lease.id, value.expose()).await?;
                    self.crash(CrashPoint::VersionAdded)?;
                    v.number
                }
            }
        };
        self.save(lease, Fin::Keep, |st, aliases, _| {
            aliases.insert(names::ALIAS_PENDING.to_string(), number);
            st.pending = Some(number);
            st.step = Step::Created;
        })
        .await?;
        Ok(())
    }

    /// The version a crashed attempt added, recognised by its digest.
    async fn adopt_added(&self, lease: &Lease) -> Result<Option<u64>, RotationError> {
        let Some(digest) = &lease.state.digest else {
            return Ok(None);
        };
        let secret = self.store.get_secret(&lease.id).await?;
        let aliased: Vec<u64> = secret.aliases.values().copied().collect();
        for v in self.store.list_versions(&lease.id).await? {
            let newer = lease.state.base.is_none_or(|b| v.number > b);
            if !newer || v.state != VersionState::Enabled || aliased.contains(&v.number) {
                continue;
            }
            let got = self
                .store
                .access(&lease.id, &VersionRef::Number(v.number))
                .await?;
            if kinds::digest(&got.value) == *digest {
                tracing::info!(secret = %lease.id, version = v.number, "adopting the version a crashed attempt added");
                return Ok(Some(v.number));
            }
        }
        Ok(None)
    }

    /// Ends a rotation that turned out to have nothing to do.
    async fn abandon(&self, lease: &mut Lease, why: &str) -> Result<(), RotationError> {
        self.save(lease, Fin::Clear, |_, aliases, _| {
            aliases.remove(names::ALIAS_PENDING);
        })
        .await?;
        Err(RotationError::Precondition {
            secret: lease.kind.logical().to_string(),
            message: why.to_string(),
        })
    }

    /// A set or test failed: pause if time may fix it (within the rotation's
    /// time budget), otherwise roll back.
    async fn step_failed(
        &self,
        lease: &mut Lease,
        e: StepError,
    ) -> Result<RotationOutcome, RotationError> {
        let age = self.now() - lease.state.started;
        let within_budget = age
            .to_std()
            .is_ok_and(|a| a < self.settings.rotation_timeout);
        if e.retryable && within_budget {
            return Err(self.pause(lease, &e.message).await);
        }
        let reason = e.message.clone();
        self.save(lease, Fin::Keep, |st, _, _| {
            st.step = Step::RollingBack;
            st.reason = Some(reason.clone());
            if e.github_unchanged {
                st.github_may_have_pending = false;
            }
        })
        .await?;
        self.roll_back(lease).await
    }

    /// Step 4: the aliases move in one write; `pending` disappears.
    async fn promote(&self, lease: &mut Lease) -> Result<(), RotationError> {
        let Some(pending) = lease.state.pending else {
            return self.abandon(lease, "no pending version to promote").await;
        };
        let now = self.now();
        let grace_until = (!lease.state.emergency).then(|| now + self.settings.grace);
        self.save(lease, Fin::Keep, |st, aliases, annotations| {
            if let Some(b) = st.base.filter(|b| *b != pending) {
                aliases.insert(names::ALIAS_PREVIOUS.to_string(), b);
            }
            aliases.insert(names::ALIAS_CURRENT.to_string(), pending);
            aliases.remove(names::ALIAS_PENDING);
            match grace_until {
                Some(t) => {
                    annotations.insert(
                        names::ANNOTATION_PREVIOUS_VALID_UNTIL.to_string(),
                        t.to_rfc3339(),
                    );
                }
                None => {
                    annotations.remove(names::ANNOTATION_PREVIOUS_VALID_UNTIL);
                }
            }
            st.grace_until = grace_until;
            st.step = Step::Finished;
        })
        .await?;
        Ok(())
    }

    /// After the aliases moved: emergency disables, the `rotated` notice,
    /// the lease released with the result recorded.
    async fn complete(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        let logical = lease.kind.logical();
        let version = lease.state.pending;
        let mut disabled = Vec::new();
        if lease.state.emergency
            && let Some(current) = version
        {
            for v in self.store.list_versions(&lease.id).await? {
                if v.number < current && self.disable_version(&lease.id, v.number).await? {
                    disabled.push(v.number);
                }
            }
        }
        let mut detail = lease.state.notes.clone();
        if lease.state.emergency {
            detail.push(match lease.state.base {
                Some(b) => format!("emergency: no grace, version {b} and older disabled at once"),
                None => "emergency: no grace".to_string(),
            });
        } else if let Some(t) = lease.state.grace_until {
            detail.push(format!("previous stays valid until {}", t.to_rfc3339()));
        }
        if let Some(extra) = kinds::after_promotion(lease.kind, lease.state.base) {
            tracing::warn!(secret = logical, "{extra}");
            detail.push(extra);
        }
        let detail = (!detail.is_empty()).then(|| detail.join("; "));
        let mut n = self.notice(logical, NoticeEvent::Rotated, &lease.state.id);
        n.version = version;
        n.previous_version = lease.state.base;
        n.emergency = lease.state.emergency;
        n.grace_until = lease.state.grace_until;
        n.detail = detail.clone();
        if let Err(e) = self.publish(&n).await {
            return Err(self.pause(lease, &e.to_string()).await);
        }
        let last = LastRotation {
            id: lease.state.id.clone(),
            result: NoticeEvent::Rotated,
            time: self.now(),
            version,
            previous_version: lease.state.base,
            emergency: lease.state.emergency,
            detail: detail.clone(),
        };
        let now = self.now();
        self.save(lease, Fin::Done(&last), |_, _, annotations| {
            note_disabled(annotations, &disabled, now);
        })
        .await?;
        tracing::info!(secret = logical, version = ?version, previous = ?lease.state.base, "rotation finished");
        Ok(RotationOutcome {
            secret: logical.to_string(),
            rotation_id: lease.state.id.clone(),
            result: NoticeEvent::Rotated,
            version,
            previous_version: lease.state.base,
            emergency: lease.state.emergency,
            grace_until: lease.state.grace_until,
            resumed: lease.resumed,
            detail,
        })
    }

    /// Undoes a rotation: GitHub back to the old secret (if it may hold the
    /// new one), `pending` removed and its version disabled, `rolled_back`
    /// (or, for a rejected upload, `failed`) announced. Each part is
    /// idempotent, so a crashed rollback is simply run again.
    async fn roll_back(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        let logical = lease.kind.logical();
        let reason = lease
            .state
            .reason
            .clone()
            .unwrap_or_else(|| "rolled back".into());
        if lease.state.github_may_have_pending {
            if let Err(e) = kinds::restore_github(self, lease).await {
                let why = format!(
                    "{reason}; restoring GitHub's hook secret failed: {}",
                    e.message
                );
                return Err(self.pause(lease, &why).await);
            }
            self.save(lease, Fin::Keep, |st, _, _| {
                st.github_may_have_pending = false
            })
            .await?;
        }
        let pending = lease.state.pending;
        self.save(lease, Fin::Keep, |st, aliases, _| {
            if aliases.get(names::ALIAS_PENDING) == st.pending.as_ref() {
                aliases.remove(names::ALIAS_PENDING);
            }
        })
        .await?;
        let mut disabled = Vec::new();
        if let Some(p) = pending
            && lease.state.base != Some(p)
            && self.disable_version(&lease.id, p).await?
        {
            disabled.push(p);
        }
        let event = if lease.kind.is_upload() {
            NoticeEvent::Failed
        } else {
            NoticeEvent::RolledBack
        };
        let detail = match (pending, lease.state.base) {
            (Some(p), Some(b)) => {
                format!("{reason}; version {p} disabled, version {b} stays current")
            }
            (Some(p), None) => format!("{reason}; version {p} disabled"),
            _ => reason.clone(),
        };
        let mut n = self.notice(logical, event, &lease.state.id);
        n.version = pending;
        n.previous_version = lease.state.base;
        n.emergency = lease.state.emergency;
        n.detail = Some(detail.clone());
        if let Err(e) = self.publish(&n).await {
            return Err(self.pause(lease, &e.to_string()).await);
        }
        let last = LastRotation {
            id: lease.state.id.clone(),
            result: event,
            time: self.now(),
            version: pending,
            previous_version: lease.state.base,
            emergency: lease.state.emergency,
            detail: Some(detail.clone()),
        };
        let now = self.now();
        self.save(lease, Fin::Done(&last), |_, _, annotations| {
            note_disabled(annotations, &disabled, now);
        })
        .await?;
        tracing::warn!(secret = logical, version = ?pending, %detail, "rotation rolled back");
        Err(match (event, pending) {
            (NoticeEvent::Failed, Some(version)) => RotationError::Rejected {
                secret: logical.to_string(),
                version,
                reason,
            },
            _ => RotationError::RolledBack {
                secret: logical.to_string(),
                rotation_id: lease.state.id.clone(),
                reason,
            },
        })
    }

    /// Makes `previous` current again. A rotation still in flight (its lease
    /// lapsed) is rolled back instead, which is what undoing it means.
    pub async fn rollback(&self, logical: &str) -> Result<RotationOutcome, RotationError> {
        let kind = Kind::parse(logical)?;
        if kind == Kind::KmsKey {
            return kinds::kms_key::rollback(self).await;
        }
        let id = self.settings.secret_id(kind.logical());
        let mut secret = self.store.get_secret(&id).await?;
        if rotation_state(&secret).is_some()
            && let Some(mut lease) = self.take_over(kind).await?
        {
            // Undoing a rotation still in flight means rolling it back.
            if matches!(
                lease.state.step,
                Step::Started | Step::Created | Step::Set | Step::Tested
            ) {
                self.save(&mut lease, Fin::Keep, |st, _, _| {
                    st.step = Step::RollingBack;
                    st.reason = Some("rolled back by the operator".to_string());
                })
                .await?;
            }
            let rotation_id = lease.state.id.clone();
            match self.drive(&mut lease).await {
                Err(
                    RotationError::RolledBack { reason, .. }
                    | RotationError::Rejected { reason, .. },
                ) => {
                    return self
                        .outcome_of_rollback(kind, rotation_id, Some(reason))
                        .await;
                }
                // Past its alias move the rotation was completed; undo it
                // below like any finished one.
                Ok(o) if o.result == NoticeEvent::Rotated => {}
                other => return other,
            }
            secret = self.store.get_secret(&id).await?;
        }
        let Some(previous) = secret.aliases.get(names::ALIAS_PREVIOUS).copied() else {
            return Err(RotationError::Precondition {
                secret: kind.logical().to_string(),
                message: "there is no previous version to roll back to".to_string(),
            });
        };
        let mut fresh = self.fresh_state(false);
        fresh.step = Step::Reverting;
        fresh.pending = Some(previous);
        let mut lease = self.acquire(kind, fresh).await?;
        if lease.resumed {
            // Someone else's rotation lapsed in between: deal with that first.
            return self.drive(&mut lease).await;
        }
        self.revert(&mut lease).await
    }

    async fn outcome_of_rollback(
        &self,
        kind: Kind,
        rotation_id: String,
        detail: Option<String>,
    ) -> Result<RotationOutcome, RotationError> {
        let secret = self
            .store
            .get_secret(&self.settings.secret_id(kind.logical()))
            .await?;
        Ok(RotationOutcome {
            secret: kind.logical().to_string(),
            rotation_id,
            result: NoticeEvent::RolledBack,
            version: secret.aliases.get(names::ALIAS_CURRENT).copied(),
            previous_version: secret.aliases.get(names::ALIAS_PREVIOUS).copied(),
            emergency: false,
            grace_until: None,
            resumed: true,
            detail,
        })
    }

    /// The operator's rollback: `previous` re-enabled, GitHub given its value
    /// back (webhook secret), aliases swapped, `rolled_back` announced.
    async fn revert(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        let logical = lease.kind.logical();
        let (Some(target), from) = (lease.state.pending, lease.state.base) else {
            self.save(lease, Fin::Clear, |_, _, _| {}).await?;
            return Err(RotationError::Precondition {
                secret: logical.to_string(),
                message: "there is no previous version to roll back to".to_string(),
            });
        };
        let now = self.now();
        let grace_until = now + self.settings.grace;
        if lease.state.step == Step::Reverting {
            let v = self
                .store
                .get_version(&lease.id, &VersionRef::Number(target))
                .await?;
            if v.state == VersionState::Destroyed {
                self.save(lease, Fin::Clear, |_, _, _| {}).await?;
                return Err(RotationError::Precondition {
                    secret: logical.to_string(),
                    message: format!(
                        "previous version {target} is destroyed; nothing to roll back to"
                    ),
                });
            }
            if v.state == VersionState::Disabled {
                self.store
                    .set_state(&lease.id, target, StateChange::Enable)
                    .await?;
            }
            match kinds::apply_to_github(self, lease.kind, &lease.id, target).await {
                Ok(note) => {
                    self.save(lease, Fin::Keep, |st, _, _| push_note(st, note.as_deref()))
                        .await?;
                }
                Err(e) if e.retryable => return Err(self.pause(lease, &e.message).await),
                Err(e) => {
                    self.save(lease, Fin::Clear, |_, _, _| {}).await?;
                    return Err(RotationError::Precondition {
                        secret: logical.to_string(),
                        message: format!(
                            "GitHub refused the previous secret, nothing changed: {}",
                            e.message
                        ),
                    });
                }
            }
            self.save(lease, Fin::Keep, |st, aliases, annotations| {
                aliases.insert(names::ALIAS_CURRENT.to_string(), target);
                match st.base {
                    Some(b) if b != target => {
                        aliases.insert(names::ALIAS_PREVIOUS.to_string(), b);
                    }
                    _ => {
                        aliases.remove(names::ALIAS_PREVIOUS);
                    }
                }
                annotations.insert(
                    names::ANNOTATION_PREVIOUS_VALID_UNTIL.to_string(),
                    grace_until.to_rfc3339(),
                );
                st.grace_until = Some(grace_until);
                st.step = Step::Reverted;
            })
            .await?;
        }
        let mut detail = lease.state.notes.clone();
        detail.push(match from {
            Some(f) => format!("rolled back by the operator: version {target} is current again, version {f} is previous"),
            None => format!("rolled back by the operator: version {target} is current again"),
        });
        if let Some(extra) = kinds::after_promotion(lease.kind, from) {
            detail.push(extra);
        }
        let detail = detail.join("; ");
        let mut n = self.notice(logical, NoticeEvent::RolledBack, &lease.state.id);
        n.version = Some(target);
        n.previous_version = from;
        n.grace_until = lease.state.grace_until;
        n.detail = Some(detail.clone());
        if let Err(e) = self.publish(&n).await {
            return Err(self.pause(lease, &e.to_string()).await);
        }
        let last = LastRotation {
            id: lease.state.id.clone(),
            result: NoticeEvent::RolledBack,
            time: self.now(),
            version: Some(target),
            previous_version: from,
            emergency: false,
            detail: Some(detail.clone()),
        };
        self.save(lease, Fin::Done(&last), |_, _, _| {}).await?;
        Ok(RotationOutcome {
            secret: logical.to_string(),
            rotation_id: lease.state.id.clone(),
            result: NoticeEvent::RolledBack,
            version: Some(target),
            previous_version: from,
            emergency: false,
            grace_until: lease.state.grace_until,
            resumed: lease.resumed,
            detail: Some(detail),
        })
    }
}

fn push_note(st: &mut RotationState, note: Option<&str>) {
    if let Some(n) = note
        && !st.notes.iter().any(|x| x == n)
    {
        st.notes.push(n.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_old_fields_default() {
        let now = Utc::now();
        let s = RotationState {
            id: "r".into(),
            holder: "h".into(),
            lease_until: now,
            started: now,
            step: Step::RollingBack,
            emergency: true,
            base: Some(3),
            pending: Some(4),
            digest: Some("ab".into()),
            github_may_have_pending: true,
            grace_until: None,
            reason: Some("x".into()),
            notes: vec!["n".into()],
        };
        let back: RotationState = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(back, s);
        let minimal = format!(
            r#"{{"id":"r","holder":"h","lease_until":"{0}","started":"{0}","step":"created"}}"#,
            now.to_rfc3339()
        );
        let m: RotationState = serde_json::from_str(&minimal).unwrap();
        assert_eq!(m.step, Step::Created);
        assert!(!m.github_may_have_pending);
        assert_eq!(Step::RollingBack.to_string(), "rolling_back");
    }

    #[test]
    fn disabled_at_keeps_the_first_time() {
        let t1 = Utc::now();
        let t2 = t1 + chrono::Duration::hours(1);
        let mut ann = BTreeMap::new();
        note_disabled(&mut ann, &[3, 4], t1);
        note_disabled(&mut ann, &[4, 5], t2);
        let secret = Secret {
            id: "s".into(),
            create_time: t1,
            aliases: BTreeMap::new(),
            annotations: ann,
            etag: "e".into(),
            next_rotation_time: None,
            rotation_period: None,
        };
        let m = disabled_at(&secret);
        assert_eq!(m[&3], t1);
        assert_eq!(m[&4], t1);
        assert_eq!(m[&5], t2);
    }

    #[test]
    fn unreadable_state_counts_as_none() {
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_ROTATION.to_string(), "{not json".to_string());
        let secret = Secret {
            id: "s".into(),
            create_time: Utc::now(),
            aliases: BTreeMap::new(),
            annotations,
            etag: "e".into(),
            next_rotation_time: None,
            rotation_period: None,
        };
        assert!(rotation_state(&secret).is_none());
    }
}
