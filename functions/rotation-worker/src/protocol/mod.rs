//! The rotation protocol: four idempotent steps (create, set, test, finish),
//! with the rotation's state kept in the secret's own annotations and every
//! write guarded by the secret's etag.
//!
//! The state doubles as a lease ([`lease`]): a worker holds the rotation
//! until `lease_until`, renewing it with each step. Two workers can never
//! both take a free secret (the etag lets one write win), and a crashed
//! worker's lease lapses, after which the next trigger (a rotate, an event,
//! or the hourly finish) resumes the rotation where it stopped ([`drive`]),
//! or aborts it ([`abort`]). The end state is always `pending` gone: either
//! promoted or removed and disabled. An operator's rollback is [`rollback`].
//!
//! This module holds the entry points; [`state`] what is stored.

pub mod abort;
pub mod drive;
pub mod lease;
pub mod rollback;
pub mod state;

use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::Secret;

pub use rollback::RollbackOptions;
pub use state::{
    ANNOTATION_COMPROMISED, ANNOTATION_DISABLED_AT, ANNOTATION_LAST_ROTATION, ANNOTATION_ROTATION,
    CrashPoint, LastRotation, RotationState, Step, compromised, disabled_at, last_rotation,
    rotation_state,
};

use crate::kinds::{self, Kind, StepCtx};
use crate::{RotationError, RotationOutcome, Rotator};
use lease::Lease;

impl Rotator {
    /// The Secret Manager secrets this deployment rotates: the three of
    /// every gateway, plus the service-account key when one is configured.
    pub(crate) fn secret_kinds(&self) -> Vec<Kind> {
        let mut kinds = Kind::SECRETS.to_vec();
        if self.settings.service_account_keys.is_some() {
            kinds.push(Kind::ServiceAccountKey);
        }
        kinds
    }

    /// What a kind's step sees of this rotation.
    pub(crate) fn step_ctx<'a>(&'a self, lease: &'a Lease) -> StepCtx<'a> {
        StepCtx {
            kind: lease.kind,
            store: self.store.as_ref(),
            settings: &self.settings,
            id: &lease.id,
            base: lease.state.base,
            pending: lease.state.pending,
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
            return crate::kms::rotate(self, emergency).await;
        }
        if kind == Kind::ServiceAccountKey {
            kinds::service_account_key::configured(&self.settings)?;
        }
        let id = self.settings.secret_id(kind.logical());
        let secret = self.store.get_secret(&id).await?;
        let in_flight = rotation_state(&secret);
        let mut fresh = self.fresh_state(emergency);
        if kind.is_upload() && in_flight.is_none() {
            match kinds::newest_upload(self.store.as_ref(), &id, &secret).await? {
                Some(v) => fresh.pending = Some(v),
                None => {
                    self.announce_due(kind, &secret, "rotation requested")
                        .await?;
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
        if !kinds::is_unpromoted_upload(self.store.as_ref(), &id, &secret, version).await? {
            return Ok(None);
        }
        let mut fresh = self.fresh_state(false);
        fresh.pending = Some(version);
        let lease = self.acquire(kind, fresh).await?;
        self.run(lease).await.map(Some)
    }

    /// Makes an existing version (restored from a backup) current through
    /// the protocol: announced, given to GitHub (webhook secret), tested,
    /// promoted with the usual grace. Only a version newer than `current`
    /// qualifies; an older one is a rollback.
    pub async fn restore_version(
        &self,
        logical: &str,
        version: u64,
    ) -> Result<RotationOutcome, RotationError> {
        let kind = Kind::parse(logical)?;
        if kind == Kind::KmsKey {
            return Err(RotationError::Precondition {
                secret: kind.logical().to_string(),
                message: "KMS key versions are not restored from backups".to_string(),
            });
        }
        let id = self.settings.secret_id(kind.logical());
        let secret = self.store.get_secret(&id).await?;
        if !kinds::is_unpromoted_upload(self.store.as_ref(), &id, &secret, version).await? {
            return Err(RotationError::Precondition {
                secret: kind.logical().to_string(),
                message: format!(
                    "version {version} is not an enabled, unaliased version newer than current"
                ),
            });
        }
        let mut fresh = self.fresh_state(false);
        fresh.pending = Some(version);
        fresh.restoring = true;
        let lease = self.acquire(kind, fresh).await?;
        self.run(lease).await
    }

    /// Resumes (or aborts) a rotation whose lease lapsed; `None` if the
    /// secret has none. A planted lease is cleared (and `None`).
    pub(crate) async fn resume_lapsed(
        &self,
        kind: Kind,
        secret: &Secret,
    ) -> Option<Result<RotationOutcome, RotationError>> {
        let s = rotation_state(secret)?;
        if s.lease_until > self.now() && !self.is_planted(&s) {
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
            forced: false,
            restoring: false,
        }
    }

    /// A `due` notice for a hand-made credential.
    pub(crate) async fn announce_due(
        &self,
        kind: Kind,
        secret: &Secret,
        why: &str,
    ) -> Result<(), RotationError> {
        let mut n = self.notice(
            kind.logical(),
            NoticeEvent::Due,
            &uuid::Uuid::new_v4().to_string(),
        );
        n.version = secret.aliases.get(names::ALIAS_CURRENT).copied();
        n.detail = Some(format!("{why}: {}", kinds::upload_instructions(kind)));
        self.publish(&n).await
    }
}
