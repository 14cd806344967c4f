//! The operator's rollback (`patchpanda rollback NAME`): `previous` becomes
//! current again. A rotation still in flight is aborted instead (see
//! [`super::abort`]); a finished one is reverted: `previous` re-enabled,
//! marked `pending` and announced before GitHub gets its value back, then the
//! aliases swap and `rolled_back` is announced.
//!
//! A version an emergency rotation retired is compromised: rolling back onto
//! it needs `force`, which the notices and the outcome say in plain words.

use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{Secret, StateChange, VersionRef, VersionState};

use super::lease::{Fin, Lease};
use super::state::{
    CrashPoint, LastRotation, Step, compromised, last_rotation, push_note, rotation_state,
};
use crate::kinds::{self, Kind};
use crate::{RotationError, RotationOutcome, Rotator};

/// How an operator's rollback may proceed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollbackOptions {
    /// Roll back even onto a version an emergency rotation retired as
    /// compromised (re-enables it; announced as forced).
    pub force: bool,
}

/// Whether `version` was retired as compromised. Rotations from before the
/// compromised record existed are judged by their last result.
fn is_compromised(secret: &Secret, version: u64) -> bool {
    compromised(secret).contains(&version)
        || last_rotation(secret).is_some_and(|l| {
            l.emergency && l.result == NoticeEvent::Rotated && l.previous_version == Some(version)
        })
}

impl Rotator {
    /// Makes `previous` current again; refuses a compromised one.
    pub async fn rollback(&self, logical: &str) -> Result<RotationOutcome, RotationError> {
        self.rollback_with(logical, RollbackOptions::default())
            .await
    }

    /// Makes `previous` current again. A rotation still in flight (its lease
    /// lapsed) is aborted instead, which is what undoing it means.
    pub async fn rollback_with(
        &self,
        logical: &str,
        opts: RollbackOptions,
    ) -> Result<RotationOutcome, RotationError> {
        let kind = Kind::parse(logical)?;
        if kind == Kind::KmsKey {
            return crate::kms::rollback(self).await;
        }
        let id = self.settings.secret_id(kind.logical());
        let mut secret = self.store.get_secret(&id).await?;
        if rotation_state(&secret).is_some()
            && let Some(mut lease) = self.take_over(kind).await?
        {
            if lease.state.step.is_forward() {
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
                    return self.outcome_of_abort(kind, rotation_id, Some(reason)).await;
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
        let forced = is_compromised(&secret, previous);
        if forced && !opts.force {
            return Err(RotationError::Precondition {
                secret: kind.logical().to_string(),
                message: format!(
                    "version {previous} was retired by an emergency rotation as compromised; rolling back would make it current again. Nothing changed. If you must, run: patchpanda rollback {} --force (announced)",
                    kind.logical()
                ),
            });
        }
        let mut fresh = self.fresh_state(false);
        fresh.step = Step::Reverting;
        fresh.pending = Some(previous);
        fresh.forced = forced;
        let mut lease = self.acquire(kind, fresh).await?;
        if lease.resumed {
            // Someone else's rotation lapsed in between: deal with that first.
            return self.drive(&mut lease).await;
        }
        self.revert(&mut lease).await
    }

    async fn outcome_of_abort(
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

    /// The revert proper. Before GitHub is given the old value, the target
    /// is marked `pending` and announced, so readers accept deliveries
    /// signed with it at once, and a crash between GitHub and the alias move
    /// leaves a state any trigger finishes.
    pub(crate) async fn revert(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        let logical = lease.kind.logical();
        let (Some(target), from) = (lease.state.pending, lease.state.base) else {
            self.save(lease, Fin::Clear, |_, _, _| {}).await?;
            return Err(RotationError::Precondition {
                secret: logical.to_string(),
                message: "there is no previous version to roll back to".to_string(),
            });
        };
        let forced_line = format!(
            "forced by the operator: version {target} had been retired as compromised by an emergency rotation and is current again"
        );
        if lease.state.step == Step::Reverting {
            let v = self
                .store
                .get_version(&lease.id, &VersionRef::Number(target))
                .await?;
            if v.state == VersionState::Destroyed {
                self.save(lease, Fin::Clear, |_, aliases, _| {
                    aliases.remove(names::ALIAS_PENDING);
                })
                .await?;
                return Err(RotationError::Precondition {
                    secret: logical.to_string(),
                    message: format!(
                        "previous version {target} is destroyed; nothing to roll back to"
                    ),
                });
            }
            if !lease.state.github_may_have_pending {
                if v.state == VersionState::Disabled {
                    self.store
                        .set_state(&lease.id, target, StateChange::Enable)
                        .await?;
                }
                self.save(lease, Fin::Keep, |st, aliases, _| {
                    aliases.insert(names::ALIAS_PENDING.to_string(), target);
                    st.github_may_have_pending = true;
                })
                .await?;
                let mut n = self.notice(logical, NoticeEvent::Started, &lease.state.id);
                // From the lease write on: the enable and the pending alias
                // above were written under it, before this notice.
                n.time = lease.taken_at;
                n.version = Some(target);
                n.previous_version = from;
                n.detail = Some(if lease.state.forced {
                    format!("rollback started; {forced_line}")
                } else {
                    format!("rollback started: version {target} becomes current again")
                });
                if let Err(e) = self.publish(&n).await {
                    return Err(self.pause(lease, &e.to_string()).await);
                }
            }
            match kinds::apply_to_github(&self.step_ctx(lease), target).await {
                Ok(note) => {
                    self.save(lease, Fin::Keep, |st, _, _| push_note(st, note.as_deref()))
                        .await?;
                }
                Err(e) if e.retryable => return Err(self.pause(lease, &e.message).await),
                Err(e) => {
                    // GitHub refused the old value: it keeps the current one.
                    let forced = lease.state.forced;
                    self.save(lease, Fin::Clear, |_, aliases, _| {
                        aliases.remove(names::ALIAS_PENDING);
                    })
                    .await?;
                    if forced {
                        self.disable_version(&lease.id, target).await?;
                    }
                    return Err(RotationError::Precondition {
                        secret: logical.to_string(),
                        message: format!(
                            "GitHub refused the previous secret, nothing changed: {}",
                            e.message
                        ),
                    });
                }
            }
            self.crash(CrashPoint::RevertApplied)?;
            let grace_until = self.now() + self.settings.grace;
            self.save(lease, Fin::Keep, |st, aliases, annotations| {
                aliases.insert(names::ALIAS_CURRENT.to_string(), target);
                aliases.remove(names::ALIAS_PENDING);
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
                st.github_may_have_pending = false;
                st.step = Step::Reverted;
            })
            .await?;
        }
        let mut detail = lease.state.notes.clone();
        if lease.state.forced {
            detail.push(forced_line);
        }
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
