//! The forward drive: announce, then create -> set -> test -> promote ->
//! complete, each step saved before the next begins, so any worker can take
//! over where a crashed one stopped. A failed set or test hands over to the
//! automatic abort ([`super::abort`]).

use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{VersionRef, VersionState};

use super::lease::{Fin, Lease};
use super::state::{CrashPoint, LastRotation, Step, note_compromised, note_disabled, push_note};
use crate::kinds::{self, Kind, StepError};
use crate::{RotationError, RotationOutcome, Rotator};

impl Rotator {
    /// Announces the (re)start, then drives the steps. Failures that leave
    /// the rotation in flight release the lease so the next trigger resumes.
    pub(crate) async fn run(&self, mut lease: Lease) -> Result<RotationOutcome, RotationError> {
        if lease.state.step.is_forward() {
            let mut n = self.notice(lease.kind.logical(), NoticeEvent::Started, &lease.state.id);
            // Announced from the lease write on: the write precedes the
            // notice (the lease is what makes this attempt the rotator).
            n.time = lease.taken_at;
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

    pub(crate) async fn drive(&self, lease: &mut Lease) -> Result<RotationOutcome, RotationError> {
        loop {
            match lease.state.step {
                Step::Started => {
                    self.create(lease).await?;
                    self.crash(CrashPoint::Created)?;
                }
                Step::Created => {
                    // Recorded before GitHub is asked, so that a crash during
                    // the call still leads an abort to restore GitHub.
                    let marked_before = lease.state.github_may_have_pending;
                    if kinds::set_touches_github(&self.settings, lease.kind) && !marked_before {
                        self.announce_pending(lease).await?;
                        self.save(lease, Fin::Keep, |st, _, _| {
                            st.github_may_have_pending = true
                        })
                        .await?;
                    }
                    let note = match kinds::set(&self.step_ctx(lease)).await {
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
                    let note = match kinds::test(&self.step_ctx(lease)).await {
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
                Step::RollingBack => return self.abort(lease).await,
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
        let number = if lease.kind.is_upload() || lease.state.restoring {
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
                    let value = kinds::generate(&self.step_ctx(lease)).await?;
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
    pub(crate) async fn abandon(&self, lease: &mut Lease, why: &str) -> Result<(), RotationError> {
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
    /// time budget), otherwise abort.
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
        self.abort(lease).await
    }

    /// Step 4: the aliases move in one write; `pending` disappears. An
    /// emergency records the versions it retires as compromised in the same
    /// write, before any of them is disabled.
    async fn promote(&self, lease: &mut Lease) -> Result<(), RotationError> {
        let Some(pending) = lease.state.pending else {
            return self.abandon(lease, "no pending version to promote").await;
        };
        let now = self.now();
        let grace_until = (!lease.state.emergency).then(|| now + self.settings.grace);
        let retired: Vec<u64> = if lease.state.emergency {
            self.store
                .list_versions(&lease.id)
                .await?
                .into_iter()
                .filter(|v| v.number < pending && v.state != VersionState::Destroyed)
                .map(|v| v.number)
                .collect()
        } else {
            Vec::new()
        };
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
            note_compromised(annotations, &retired);
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
                if v.number >= current {
                    continue;
                }
                if lease.kind == Kind::ServiceAccountKey && v.state == VersionState::Enabled {
                    // A leaked key dies at IAM now, not after a grace.
                    kinds::service_account_key::delete_key_of(
                        &self.settings,
                        self.store.as_ref(),
                        &lease.id,
                        v.number,
                    )
                    .await?;
                }
                if self.disable_version(&lease.id, v.number).await? {
                    disabled.push(v.number);
                }
            }
        }
        let mut detail = lease.state.notes.clone();
        if lease.state.emergency {
            detail.push(match lease.state.base {
                Some(b) => format!(
                    "emergency: no grace, version {b} and older disabled at once and recorded as compromised"
                ),
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
}
