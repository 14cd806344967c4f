//! The automatic abort: a rotation whose set or test failed for good (or
//! that an operator undid while it was still in flight) is undone. GitHub
//! gets the old secret back if it may hold the new one, `pending` is removed
//! and its version disabled, and `rolled_back` (for a rejected upload:
//! `failed`) is announced. Each part is idempotent, so a crashed abort is
//! simply run again. The operator's rollback of a finished rotation is
//! [`super::rollback`].

use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::VersionRef;

use super::lease::{Fin, Lease};
use super::state::{LastRotation, note_disabled};
use crate::kinds::{self, Kind};
use crate::{RotationError, RotationOutcome, Rotator};

impl Rotator {
    pub(crate) async fn abort(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        let logical = lease.kind.logical();
        let reason = lease
            .state
            .reason
            .clone()
            .unwrap_or_else(|| "rolled back".into());
        if lease.state.github_may_have_pending {
            if let Err(e) = kinds::restore_github(&self.step_ctx(lease)).await {
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
        {
            if lease.kind == Kind::ServiceAccountKey
                && self
                    .store
                    .access(&lease.id, &VersionRef::Number(p))
                    .await
                    .is_ok()
            {
                // The key this rotation created dies with its version.
                kinds::service_account_key::delete_key_of(
                    &self.settings,
                    self.store.as_ref(),
                    &lease.id,
                    p,
                )
                .await?;
            }
            if self.disable_version(&lease.id, p).await? {
                disabled.push(p);
            }
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
}
