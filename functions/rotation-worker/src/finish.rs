//! The hourly `/tasks/finish` and the daily due-check.
//!
//! Finish ends grace periods (`previous` disabled once its grace is over),
//! disables superseded versions, destroys disabled versions past retention
//! (never `current`, `previous` or `pending`), and carries on any rotation
//! whose worker vanished, so none stays in flight. Every part is idempotent,
//! so scheduler retries are harmless.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use patchpanda_shared::Error;
use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{SecretUpdate, StateChange, VersionRef, VersionState};
use serde::Serialize;

use crate::kinds::Kind;
use crate::protocol::lease::lost_race;
use crate::protocol::{self, ANNOTATION_DISABLED_AT};
use crate::status::due_reason;
use crate::{RotationError, Rotator};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinishReport {
    pub disabled: Vec<VersionChange>,
    pub destroyed: Vec<VersionChange>,
    /// Rotations left behind by a vanished worker, carried on here.
    pub resumed: Vec<Resumed>,
    /// Secrets skipped because a rotation holds them right now.
    pub skipped: Vec<String>,
    /// Per-secret failures; the other secrets were still handled.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    pub secret: String,
    pub version: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resumed {
    pub secret: String,
    /// `rotated`, or the error line (rolled back, paused, ...).
    pub result: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DueReport {
    pub due: Vec<DueSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueSecret {
    pub secret: String,
    pub reason: String,
    pub current_version: Option<u64>,
}

impl Rotator {
    /// Ends grace periods and retention for every secret.
    pub async fn finish(&self) -> Result<FinishReport, RotationError> {
        let mut report = FinishReport::default();
        let run_id = uuid::Uuid::new_v4().to_string();
        for kind in self.secret_kinds() {
            if let Err(e) = self.finish_secret(kind, &run_id, &mut report).await {
                tracing::warn!(secret = kind.logical(), error = %e, "finish failed for one secret");
                report.errors.push(format!("{}: {e}", kind.logical()));
            }
        }
        Ok(report)
    }

    async fn finish_secret(
        &self,
        kind: Kind,
        run_id: &str,
        report: &mut FinishReport,
    ) -> Result<(), RotationError> {
        let logical = kind.logical();
        let id = self.settings.secret_id(logical);
        let secret = match self.store.get_secret(&id).await {
            Ok(s) => s,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Some(result) = self.resume_lapsed(kind, &secret).await {
            report.resumed.push(Resumed {
                secret: logical.to_string(),
                result: match result {
                    Ok(o) => o.result.to_string(),
                    Err(e) => e.to_string(),
                },
            });
        }
        let secret = self.store.get_secret(&id).await?;
        if protocol::rotation_state(&secret).is_some() {
            report.skipped.push(logical.to_string());
            return Ok(());
        }
        let now = self.now();
        let alias = |a: &str| secret.aliases.get(a).copied();
        let (current, previous) = (alias(names::ALIAS_CURRENT), alias(names::ALIAS_PREVIOUS));
        let keep: BTreeSet<u64> = secret.aliases.values().copied().collect();
        let grace_until = secret
            .annotations
            .get(names::ANNOTATION_PREVIOUS_VALID_UNTIL)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let versions = self.store.list_versions(&id).await?;

        let mut to_disable = Vec::new();
        for v in versions.iter().filter(|v| v.state == VersionState::Enabled) {
            if Some(v.number) == previous && previous != current {
                if grace_until.is_none_or(|t| t <= now) {
                    to_disable.push((v.number, "grace period over"));
                }
            } else if !keep.contains(&v.number) && current.is_some_and(|c| v.number < c) {
                // Older than current and no longer named by any alias: no
                // reader can be using it.
                to_disable.push((v.number, "superseded"));
            }
        }
        let mut disabled_now = Vec::new();
        for (n, reason) in to_disable {
            if !self.still_quiet(&id).await? {
                continue;
            }
            if kind == Kind::ServiceAccountKey {
                // The key dies at IAM before its version is disabled (a
                // disabled version cannot be read back to name the key).
                crate::kinds::service_account_key::delete_key_of(
                    &self.settings,
                    self.store.as_ref(),
                    &id,
                    n,
                )
                .await?;
            }
            if self.disable_version(&id, n).await? {
                disabled_now.push(n);
                report.disabled.push(VersionChange {
                    secret: logical.to_string(),
                    version: n,
                    reason: reason.to_string(),
                });
                self.announce(logical, NoticeEvent::Disabled, n, current, run_id, reason)
                    .await?;
            }
        }

        // Retention runs from when a version was first seen disabled: Secret
        // Manager records no disable time.
        let mut seen = protocol::disabled_at(&secret);
        for n in &disabled_now {
            seen.insert(*n, now);
        }
        for v in &versions {
            match v.state {
                VersionState::Disabled => {
                    seen.entry(v.number).or_insert(now);
                }
                VersionState::Destroyed => {
                    seen.remove(&v.number);
                }
                VersionState::Enabled if !disabled_now.contains(&v.number) => {
                    seen.remove(&v.number);
                }
                VersionState::Enabled => {}
            }
        }
        let retention =
            chrono::Duration::from_std(self.settings.retention).unwrap_or(chrono::Duration::MAX);
        let expired: Vec<u64> = seen
            .iter()
            .filter(|(n, t)| !keep.contains(n) && now - **t >= retention)
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            if !self.still_quiet(&id).await? {
                break;
            }
            match self.store.get_version(&id, &VersionRef::Number(n)).await {
                Ok(v) if v.state == VersionState::Disabled => {}
                Ok(_) | Err(Error::NotFound(_)) => {
                    seen.remove(&n);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            match self.store.set_state(&id, n, StateChange::Destroy).await {
                Ok(_) => {}
                Err(Error::FailedPrecondition(_) | Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            seen.remove(&n);
            report.destroyed.push(VersionChange {
                secret: logical.to_string(),
                version: n,
                reason: "retention over".to_string(),
            });
            self.announce(
                logical,
                NoticeEvent::Destroyed,
                n,
                current,
                run_id,
                "retention over",
            )
            .await?;
        }
        let announced: BTreeSet<u64> = disabled_now
            .iter()
            .copied()
            .chain(
                report
                    .destroyed
                    .iter()
                    .filter(|c| c.secret == logical)
                    .map(|c| c.version),
            )
            .collect();
        self.store_disabled_at(logical, &id, &seen, &announced, run_id)
            .await
    }

    /// No rotation took the secret since we looked (a rotation or an
    /// operator's rollback must not see versions change under it).
    async fn still_quiet(&self, id: &str) -> Result<bool, RotationError> {
        let s = self.store.get_secret(id).await?;
        Ok(protocol::rotation_state(&s).is_none())
    }

    /// Records when versions were first seen disabled (the retention
    /// clock). Entries this run did not announce (a version disabled, enabled
    /// again or destroyed by someone else) are announced before the write,
    /// as every change the worker makes is: the alerter otherwise files the
    /// UpdateSecret as a rotator's change outside any rotation.
    async fn store_disabled_at(
        &self,
        logical: &str,
        id: &str,
        seen: &std::collections::BTreeMap<u64, DateTime<Utc>>,
        announced: &BTreeSet<u64>,
        run_id: &str,
    ) -> Result<(), RotationError> {
        let mut noticed = false;
        for _ in 0..protocol::lease::CAS_ATTEMPTS {
            let secret = self.store.get_secret(id).await?;
            let mut annotations = secret.annotations.clone();
            protocol::state::set_disabled_at(&mut annotations, seen);
            if annotations.get(ANNOTATION_DISABLED_AT)
                == secret.annotations.get(ANNOTATION_DISABLED_AT)
            {
                return Ok(());
            }
            if !noticed {
                let before = protocol::disabled_at(&secret);
                let recorded: Vec<u64> = seen
                    .iter()
                    .filter(|(n, t)| !announced.contains(n) && before.get(n) != Some(t))
                    .map(|(n, _)| *n)
                    .collect();
                let dropped: Vec<u64> = before
                    .keys()
                    .filter(|n| !announced.contains(n) && !seen.contains_key(n))
                    .copied()
                    .collect();
                if !recorded.is_empty() || !dropped.is_empty() {
                    let mut n = self.notice(logical, NoticeEvent::Disabled, run_id);
                    n.version = recorded.first().copied();
                    n.detail = Some(format!(
                        "retention record ({ANNOTATION_DISABLED_AT}): versions {recorded:?} first seen disabled, versions {dropped:?} no longer disabled"
                    ));
                    self.publish(&n).await?;
                }
                noticed = true;
            }
            let update = SecretUpdate {
                aliases: None,
                annotations: Some(annotations),
            };
            match self
                .store
                .update_secret(id, update, Some(&secret.etag))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!(
            "{id} kept changing while recording disabled versions"
        ))
        .into())
    }

    async fn announce(
        &self,
        logical: &str,
        event: NoticeEvent,
        version: u64,
        current: Option<u64>,
        run_id: &str,
        reason: &str,
    ) -> Result<(), RotationError> {
        let mut n = self.notice(logical, event, run_id);
        n.version = Some(version);
        n.previous_version = current;
        n.detail = Some(format!("version {version} {event}: {reason}"));
        self.publish(&n).await
    }

    /// The daily due-check: a `due` notice for each secret whose current
    /// version is too old or whose Secret Manager rotation time has passed.
    pub async fn due_check(&self) -> Result<DueReport, RotationError> {
        let now = self.now();
        let mut report = DueReport::default();
        for kind in self.secret_kinds() {
            let id = self.settings.secret_id(kind.logical());
            let secret = match self.store.get_secret(&id).await {
                Ok(s) => s,
                // Optional secrets (oidc) need not exist.
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let current = match secret.aliases.get(names::ALIAS_CURRENT) {
                Some(n) => Some(self.store.get_version(&id, &VersionRef::Number(*n)).await?),
                None => None,
            };
            let Some(reason) = due_reason(&self.settings, kind, &secret, current.as_ref(), now)
            else {
                continue;
            };
            if kind.is_upload() {
                self.announce_due(kind, &secret, &reason).await?;
            } else {
                let mut n = self.notice(
                    kind.logical(),
                    NoticeEvent::Due,
                    &uuid::Uuid::new_v4().to_string(),
                );
                n.version = current.as_ref().map(|v| v.number);
                n.detail = Some(format!("{reason}: patchpanda rotate {}", kind.logical()));
                self.publish(&n).await?;
            }
            report.due.push(DueSecret {
                secret: kind.logical().to_string(),
                reason,
                current_version: current.map(|v| v.number),
            });
        }
        Ok(report)
    }
}
