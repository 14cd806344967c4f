//! The Cloud KMS key (logical name `kms-key`): a rotation is a new version
//! made primary. Old versions stay enabled, since whatever they encrypted
//! (secret versions, backups) still needs them to decrypt; that is also why
//! an emergency rotation cannot disable them.

use patchpanda_shared::kms::KeyVersionState;
use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;

use crate::protocol::CrashPoint;
use crate::{RotationError, RotationOutcome, Rotator};

const KEEP_OLD: &str =
    "older versions stay enabled: data encrypted with them still needs them to decrypt";

pub(crate) async fn rotate(
    rot: &Rotator,
    emergency: bool,
) -> Result<RotationOutcome, RotationError> {
    let _one_at_a_time = rot.kms_lock.lock().await;
    let rotation_id = uuid::Uuid::new_v4().to_string();
    let info = rot.kms.key_info().await?;
    let old = info.primary.as_ref().map(|v| v.number);

    let mut started = rot.notice(names::KMS_KEY, NoticeEvent::Started, &rotation_id);
    started.previous_version = old;
    started.emergency = emergency;
    started.detail = Some("new KMS key version to be made primary".to_string());
    rot.publish(&started).await?;

    // A version newer than the primary that is still enabled was made by a
    // rotation that stopped before promoting it (KMS keys carry no state to
    // resume from): promote that one instead of adding another.
    let stranded = rot
        .kms
        .list_versions()
        .await?
        .into_iter()
        .filter(|v| v.state == KeyVersionState::Enabled && old.is_none_or(|p| v.number > p))
        .map(|v| v.number)
        .max();
    let (new, resumed) = match stranded {
        Some(n) => (n, true),
        None => {
            let v = rot.kms.create_version().await?;
            rot.crash(CrashPoint::VersionAdded)?;
            (v.number, false)
        }
    };
    rot.kms.set_primary(new).await?;

    let mut detail = vec![
        format!("version {new} is the primary"),
        KEEP_OLD.to_string(),
    ];
    if emergency {
        detail.push(
            "emergency: old versions were not disabled (existing ciphertext needs them); re-encrypt and restore from backup to retire them"
                .to_string(),
        );
    }
    let detail = detail.join("; ");
    let mut n = rot.notice(names::KMS_KEY, NoticeEvent::Rotated, &rotation_id);
    n.version = Some(new);
    n.previous_version = old;
    n.emergency = emergency;
    n.detail = Some(detail.clone());
    rot.publish(&n).await?;
    Ok(RotationOutcome {
        secret: names::KMS_KEY.to_string(),
        rotation_id,
        result: NoticeEvent::Rotated,
        version: Some(new),
        previous_version: old,
        emergency,
        grace_until: None,
        resumed,
        detail: Some(detail),
    })
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
