//! The Cloud KMS key (logical name `kms-key`): a rotation is a new version
//! made primary, then proven (encrypt and decrypt with it; the primary goes
//! back if that fails). Old versions stay enabled, since whatever they
//! encrypted (secret versions, backups) still needs them to decrypt; that is
//! also why an emergency rotation cannot disable them.
//!
//! KMS versions carry no labels, so the rotation's record (its id, the old
//! primary, the version it created, a lease) lives in an annotation of the
//! webhook secret, written before each KMS call. A resumed rotation adopts
//! only the version its record names, never a newer one someone imported,
//! and a crash after set-primary still ends in the `rotated` notice.
//!
//! Creating a version and noting it are two calls, so the record first
//! notes the intent (the newest version number before the create). A crash
//! between the two leaves a version nobody can prove this rotation made:
//! the resume disables it (disabling loses nothing and can be undone, and
//! this rotation never made it primary, so nothing was encrypted with it) and
//! creates its own.

use chrono::{DateTime, Utc};
use patchpanda_shared::Error;
use patchpanda_shared::kms::KeyVersionState;
use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{Secret, SecretUpdate};
use serde::{Deserialize, Serialize};

use crate::protocol::CrashPoint;
use crate::protocol::lease::{CAS_ATTEMPTS, lost_race};
use crate::{RotationError, RotationOutcome, Rotator};

/// The KMS rotation in flight (JSON), on the webhook secret.
pub const ANNOTATION_KMS_ROTATION: &str = "patchpanda-kms-rotation";

const KEEP_OLD: &str =
    "older versions stay enabled: data encrypted with them still needs them to decrypt";
const PROBE: &[u8] = b"patchpanda kms rotation probe";
const PROBE_AAD: &[u8] = b"patchpanda-kms-rotation-probe";

/// The KMS rotation's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsRecord {
    pub id: String,
    pub lease_until: DateTime<Utc>,
    /// The primary when the rotation began.
    pub old: Option<u64>,
    /// The version this rotation created, once created.
    pub created: Option<u64>,
    /// Written before CreateCryptoKeyVersion: the newest version number
    /// then. With `created` unset, an enabled non-primary version above it
    /// is an orphan of an interrupted create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creating_after: Option<u64>,
    #[serde(default)]
    pub emergency: bool,
}

fn record_of(secret: &Secret) -> Option<KmsRecord> {
    serde_json::from_str(secret.annotations.get(ANNOTATION_KMS_ROTATION)?).ok()
}

impl Rotator {
    fn record_host(&self) -> String {
        self.settings.secret_id(names::WEBHOOK_SECRET)
    }

    /// Writes (or with `None` clears) the record, guarded by the etag the
    /// record was read under; `Ok(false)` when someone else wrote first.
    async fn write_record(
        &self,
        expect: Option<&KmsRecord>,
        record: Option<&KmsRecord>,
    ) -> Result<bool, RotationError> {
        let host = self.record_host();
        for _ in 0..CAS_ATTEMPTS {
            let secret = match self.store.get_secret(&host).await {
                Ok(s) => s,
                // No webhook secret (a bare test stack): no durable record;
                // the in-process lock still keeps rotations apart.
                Err(Error::NotFound(_)) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            let current = record_of(&secret);
            if current.as_ref().map(|r| &r.id) != expect.map(|r| &r.id) {
                return Ok(false);
            }
            let mut annotations = secret.annotations.clone();
            match record {
                Some(r) => {
                    annotations.insert(
                        ANNOTATION_KMS_ROTATION.to_string(),
                        serde_json::to_string(r).unwrap_or_default(),
                    );
                }
                None => {
                    annotations.remove(ANNOTATION_KMS_ROTATION);
                }
            }
            let update = SecretUpdate {
                aliases: None,
                annotations: Some(annotations),
            };
            match self
                .store
                .update_secret(&host, update, Some(&secret.etag))
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!(
            "{host} kept changing while recording the KMS rotation"
        ))
        .into())
    }

    async fn read_record(&self) -> Result<Option<KmsRecord>, RotationError> {
        match self.store.get_secret(&self.record_host()).await {
            Ok(s) => Ok(record_of(&s)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn lease_end(&self) -> DateTime<Utc> {
        self.now() + self.settings.lease_ttl
    }

    /// Encrypts and decrypts with the primary: the runbook's "test" step.
    async fn prove_kms(&self) -> Result<(), String> {
        let sealed = self
            .kms
            .encrypt(PROBE, PROBE_AAD)
            .await
            .map_err(|e| format!("encrypting with the new primary failed: {e}"))?;
        let opened = self
            .kms
            .decrypt(&sealed, PROBE_AAD)
            .await
            .map_err(|e| format!("decrypting with the new primary failed: {e}"))?;
        if opened.expose() != PROBE {
            return Err("the new primary decrypted to something else".to_string());
        }
        Ok(())
    }
}

pub(crate) async fn rotate(
    rot: &Rotator,
    emergency: bool,
) -> Result<RotationOutcome, RotationError> {
    let _one_at_a_time = rot.kms_lock.lock().await;
    let ttl = chrono::Duration::from_std(rot.settings.lease_ttl).unwrap_or(chrono::Duration::MAX);
    let found = rot.read_record().await?;
    // A record claiming more than a lease's length from now was planted:
    // its versions are not trusted, so it is replaced, not resumed.
    let limit = rot.now() + ttl + chrono::Duration::seconds(30);
    let trusted = found.clone().filter(|r| r.lease_until <= limit);
    let (mut record, resumed) = match trusted {
        Some(r) if r.lease_until > rot.now() => {
            return Err(RotationError::InProgress {
                secret: names::KMS_KEY.to_string(),
                rotation_id: r.id,
                step: if r.created.is_some() {
                    "created"
                } else if r.creating_after.is_some() {
                    "creating"
                } else {
                    "started"
                }
                .to_string(),
                since: r.lease_until - ttl,
            });
        }
        Some(mut r) => {
            r.lease_until = rot.lease_end();
            r.emergency |= emergency;
            (r, true)
        }
        None => {
            let info = rot.kms.key_info().await?;
            let r = KmsRecord {
                id: uuid::Uuid::new_v4().to_string(),
                lease_until: rot.lease_end(),
                old: info.primary.as_ref().map(|v| v.number),
                created: None,
                creating_after: None,
                emergency,
            };
            (r, false)
        }
    };
    // The `started` notice carries the time the record was written: the
    // write (an UpdateSecret of the webhook secret) precedes the notice.
    let taken_at = rot.now();
    if !rot.write_record(found.as_ref(), Some(&record)).await? {
        return Err(RotationError::LostLease {
            secret: names::KMS_KEY.to_string(),
        });
    }
    match drive(rot, &mut record, resumed, taken_at).await {
        Err(e @ RotationError::Backend(_)) => {
            // A backend outage: let the record's lease lapse now so the next
            // trigger resumes at once (best effort; it lapses anyway).
            let mut paused = record.clone();
            paused.lease_until = rot.now();
            if let Err(w) = rot.write_record(Some(&record), Some(&paused)).await {
                tracing::warn!(error = %w, "could not release the KMS rotation's lease");
            }
            Err(e)
        }
        other => other,
    }
}

/// The KMS rotation under its record: create (or adopt its own), set
/// primary, prove, announce.
async fn drive(
    rot: &Rotator,
    record: &mut KmsRecord,
    resumed: bool,
    taken_at: DateTime<Utc>,
) -> Result<RotationOutcome, RotationError> {
    let rotation_id = record.id.clone();
    let old = record.old;

    let mut started = rot.notice(names::KMS_KEY, NoticeEvent::Started, &rotation_id);
    started.time = taken_at;
    started.previous_version = old;
    started.emergency = record.emergency;
    started.detail = Some(if resumed {
        "resuming the KMS rotation".to_string()
    } else {
        "new KMS key version to be made primary".to_string()
    });
    rot.publish(&started).await?;

    let mut orphans = Vec::new();
    let new = match record.created {
        Some(n) => n,
        None => {
            orphans = disable_orphans(rot, record).await?;
            let newest = rot
                .kms
                .list_versions()
                .await?
                .iter()
                .map(|v| v.number)
                .max();
            let before = record.clone();
            record.creating_after = Some(newest.unwrap_or(0));
            record.lease_until = rot.lease_end();
            if !rot.write_record(Some(&before), Some(record)).await? {
                return Err(RotationError::LostLease {
                    secret: names::KMS_KEY.to_string(),
                });
            }
            let v = rot.kms.create_version().await?;
            rot.crash(CrashPoint::KmsVersionCreated)?;
            let before = record.clone();
            record.created = Some(v.number);
            record.lease_until = rot.lease_end();
            if !rot.write_record(Some(&before), Some(record)).await? {
                return Err(RotationError::LostLease {
                    secret: names::KMS_KEY.to_string(),
                });
            }
            rot.crash(CrashPoint::VersionAdded)?;
            v.number
        }
    };
    let primary = rot.kms.key_info().await?.primary.map(|v| v.number);
    if primary != Some(new) {
        rot.kms.set_primary(new).await?;
    }
    rot.crash(CrashPoint::KmsPrimarySet)?;

    if let Err(why) = rot.prove_kms().await {
        let mut detail = format!("version {new} failed its test: {why}");
        match old {
            Some(o) => match rot.kms.set_primary(o).await {
                Ok(_) => detail.push_str(&format!("; version {o} is the primary again")),
                // The record stays: the next trigger tries again.
                Err(e) => {
                    return Err(RotationError::Paused {
                        secret: names::KMS_KEY.to_string(),
                        reason: format!("{detail}; putting version {o} back failed: {e}"),
                    });
                }
            },
            None => detail.push_str("; there was no earlier primary to put back"),
        }
        let mut n = rot.notice(names::KMS_KEY, NoticeEvent::RolledBack, &rotation_id);
        n.version = Some(new);
        n.previous_version = old;
        n.emergency = record.emergency;
        n.detail = Some(detail.clone());
        rot.publish(&n).await?;
        rot.write_record(Some(record), None).await?;
        return Err(RotationError::RolledBack {
            secret: names::KMS_KEY.to_string(),
            rotation_id,
            reason: detail,
        });
    }

    let mut detail = vec![
        format!("version {new} is the primary (encrypt and decrypt tested)"),
        KEEP_OLD.to_string(),
    ];
    if !orphans.is_empty() {
        detail.push(orphan_note(&orphans));
    }
    if record.emergency {
        detail.push(
            "emergency: old versions were not disabled (existing ciphertext needs them); re-encrypt and restore from backup to retire them"
                .to_string(),
        );
    }
    let detail = detail.join("; ");
    let mut n = rot.notice(names::KMS_KEY, NoticeEvent::Rotated, &rotation_id);
    n.version = Some(new);
    n.previous_version = old;
    n.emergency = record.emergency;
    n.detail = Some(detail.clone());
    rot.publish(&n).await?;
    rot.write_record(Some(record), None).await?;
    Ok(RotationOutcome {
        secret: names::KMS_KEY.to_string(),
        rotation_id,
        result: NoticeEvent::Rotated,
        version: Some(new),
        previous_version: old,
        emergency: record.emergency,
        grace_until: None,
        resumed,
        detail: Some(detail),
    })
}

/// Disables the versions an interrupted attempt created before its record
/// noted them: never adopted, since nothing proves who made them. Only
/// enabled versions above the intent's mark that are not the primary.
async fn disable_orphans(rot: &Rotator, record: &KmsRecord) -> Result<Vec<u64>, RotationError> {
    let Some(mark) = record.creating_after else {
        return Ok(Vec::new());
    };
    let primary = rot.kms.key_info().await?.primary.map(|v| v.number);
    let mut orphans: Vec<u64> = rot
        .kms
        .list_versions()
        .await?
        .into_iter()
        .filter(|v| v.number > mark && v.state == KeyVersionState::Enabled)
        .map(|v| v.number)
        .filter(|n| Some(*n) != primary)
        .collect();
    orphans.sort_unstable();
    for &n in &orphans {
        rot.kms.disable_version(n).await?;
        tracing::warn!(
            version = n,
            rotation_id = %record.id,
            "KMS version left by an interrupted rotation disabled, not adopted"
        );
    }
    Ok(orphans)
}

fn orphan_note(orphans: &[u64]) -> String {
    let list: Vec<String> = orphans.iter().map(u64::to_string).collect();
    format!(
        "version(s) {} created by an interrupted attempt before its record noted them were disabled, not adopted (never primary; enable again only if you made them)",
        list.join(", ")
    )
}

/// Makes the newest enabled version below the primary primary again.
pub(crate) async fn rollback(rot: &Rotator) -> Result<RotationOutcome, RotationError> {
    let _one_at_a_time = rot.kms_lock.lock().await;
    let info = rot.kms.key_info().await?;
    let Some(current) = info.primary.as_ref().map(|v| v.number) else {
        return Err(RotationError::Precondition {
            secret: names::KMS_KEY.to_string(),
            message: "the key has no primary version".to_string(),
        });
    };
    let Some(target) = rot
        .kms
        .list_versions()
        .await?
        .into_iter()
        .filter(|v| v.state == KeyVersionState::Enabled && v.number < current)
        .map(|v| v.number)
        .max()
    else {
        return Err(RotationError::Precondition {
            secret: names::KMS_KEY.to_string(),
            message: "there is no earlier enabled version to roll back to".to_string(),
        });
    };
    let rotation_id = uuid::Uuid::new_v4().to_string();
    rot.kms.set_primary(target).await?;
    let detail = format!(
        "rolled back by the operator: version {target} is the primary again; version {current} stays enabled"
    );
    let mut n = rot.notice(names::KMS_KEY, NoticeEvent::RolledBack, &rotation_id);
    n.version = Some(target);
    n.previous_version = Some(current);
    n.detail = Some(detail.clone());
    rot.publish(&n).await?;
    Ok(RotationOutcome {
        secret: names::KMS_KEY.to_string(),
        rotation_id,
        result: NoticeEvent::RolledBack,
        version: Some(target),
        previous_version: Some(current),
        emergency: false,
        grace_until: None,
        resumed: false,
        detail: Some(detail),
    })
}
