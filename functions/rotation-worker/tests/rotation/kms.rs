//! The KMS key.

#![allow(unused_imports)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use patchpanda_shared::kms::Kms;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::runtime::HandlerError;
use patchpanda_shared::secrets::{SecretStore, VersionState};
use patchpanda_shared::{Error, names};
use rotation_worker::protocol::ANNOTATION_ROTATION;
use rotation_worker::{CrashPoint, RotationError};

use crate::support::{self, APP_KEY, Call, NEXT_KEY, TestEnv, WEAK_KEY};
use crate::{PK, WH};

#[tokio::test]
async fn kms_rotation_makes_a_new_primary_and_old_ciphertext_still_decrypts() {
    let env = TestEnv::new(false).await;
    let old = env.kms.encrypt(b"sealed before", b"aad").await.unwrap();
    let before = env.kms.key_info().await.unwrap().primary.unwrap().number;
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert_eq!(
        (out.version, out.previous_version),
        (Some(before + 1), Some(before))
    );
    assert_eq!(
        env.kms.key_info().await.unwrap().primary.unwrap().number,
        before + 1
    );
    assert_eq!(
        env.kms.decrypt(&old, b"aad").await.unwrap().expose(),
        b"sealed before"
    );
    let fresh = env.kms.encrypt(b"sealed after", b"aad").await.unwrap();
    assert_eq!(
        env.kms.decrypt(&fresh, b"aad").await.unwrap().expose(),
        b"sealed after"
    );
    let events: Vec<_> = env.bus.notices().iter().map(|n| n.event).collect();
    assert_eq!(events, [NoticeEvent::Started, NoticeEvent::Rotated]);
    assert_eq!(env.bus.notices()[1].secret, names::KMS_KEY);

    // A rotation that stopped before promoting is finished without a
    // second new version.
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::VersionAdded));
    crashing.rotate(names::KMS_KEY, false).await.unwrap_err();
    // Its record is a lease: refused while it lasts, resumed after.
    let err = env
        .rotator()
        .rotate(names::KMS_KEY, false)
        .await
        .unwrap_err();
    assert!(matches!(err, RotationError::InProgress { .. }), "{err}");
    env.clock.advance_std(Duration::from_secs(301));
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert_eq!(out.version, Some(before + 2));
    assert!(out.resumed);
    assert_eq!(
        env.kms.list_versions().await.unwrap().len() as u64,
        before + 2
    );
}

/// Issue 14.5: the new primary is proven by an encrypt and a decrypt; if
/// that fails the old primary is put back and the rotation says so.
#[tokio::test]
async fn a_kms_version_that_fails_its_test_is_not_left_primary() {
    let env = TestEnv::new(false).await;
    let before = env.kms.key_info().await.unwrap().primary.unwrap().number;
    // A new primary that does not work.
    env.kms.fail_always(
        Call::Encrypt,
        Error::FailedPrecondition(
            "The request cannot be fulfilled: key version is not enabled".into(),
        ),
    );
    let err = env
        .rotator()
        .rotate(names::KMS_KEY, false)
        .await
        .unwrap_err();
    assert!(matches!(err, RotationError::RolledBack { .. }), "{err}");
    assert!(err.to_string().contains("failed its test"), "{err}");
    assert_eq!(
        env.kms.key_info().await.unwrap().primary.unwrap().number,
        before
    );
    let last = env.bus.notices().pop().unwrap();
    assert_eq!(last.event, NoticeEvent::RolledBack);
    assert_eq!(last.version, Some(before + 1));
    // Nothing is left in flight: the next rotation starts afresh.
    env.kms.heal();
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert!(!out.resumed);
    assert_eq!(out.version, Some(before + 2));
}

/// Issue 14.5: a version newer than the primary that this rotation did not
/// create (someone imported it) is never adopted.
#[tokio::test]
async fn a_newer_version_the_rotation_did_not_create_is_not_adopted() {
    let env = TestEnv::new(false).await;
    let before = env.kms.key_info().await.unwrap().primary.unwrap().number;
    let imported = env.kms.create_version().await.unwrap().number;
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert_eq!(out.version, Some(imported + 1));
    assert!(!out.resumed);
    // Made before the rotation began: not an orphan, so left enabled.
    let imported_state = env
        .kms
        .list_versions()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.number == imported)
        .unwrap()
        .state;
    assert_eq!(
        imported_state,
        patchpanda_shared::kms::KeyVersionState::Enabled
    );
    assert_eq!(out.previous_version, Some(before));
    assert_eq!(
        env.kms.key_info().await.unwrap().primary.unwrap().number,
        imported + 1
    );
}

/// Issue 14.5: a version created just before a crash, before the record
/// noted it, is never adopted and does not stay enabled: the resume finds it
/// from the recorded intent, disables it and makes its own.
#[tokio::test]
async fn a_kms_version_orphaned_by_a_crash_is_disabled_not_adopted() {
    use patchpanda_shared::kms::KeyVersionState;
    let env = TestEnv::new(false).await;
    let before = env.kms.key_info().await.unwrap().primary.unwrap().number;
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::KmsVersionCreated));
    crashing.rotate(names::KMS_KEY, false).await.unwrap_err();
    let orphan = before + 1;
    assert_eq!(env.kms.list_versions().await.unwrap().len() as u64, orphan);
    env.clock.advance_std(Duration::from_secs(301));
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert!(out.resumed);
    assert_eq!(
        (out.version, out.previous_version),
        (Some(orphan + 1), Some(before))
    );
    assert_eq!(
        env.kms.key_info().await.unwrap().primary.unwrap().number,
        orphan + 1
    );
    let state = |versions: &[patchpanda_shared::kms::KeyVersion], n: u64| {
        versions.iter().find(|v| v.number == n).unwrap().state
    };
    let versions = env.kms.list_versions().await.unwrap();
    assert_eq!(state(&versions, orphan), KeyVersionState::Disabled);
    assert_eq!(state(&versions, before), KeyVersionState::Enabled);
    let detail = out.detail.unwrap();
    assert!(
        detail.contains(&format!("version(s) {orphan} ")),
        "{detail}"
    );
    assert!(
        env.bus
            .notices()
            .last()
            .unwrap()
            .detail
            .as_deref()
            .unwrap()
            .contains("not adopted")
    );

    // Nothing is left in flight; the next rotation leaves the disabled
    // orphan and every other version alone.
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert!(!out.resumed);
    assert_eq!(out.version, Some(orphan + 2));
    let versions = env.kms.list_versions().await.unwrap();
    assert_eq!(state(&versions, orphan), KeyVersionState::Disabled);
    assert_eq!(state(&versions, orphan + 1), KeyVersionState::Enabled);
}

/// Issue 14.5: a crash after set-primary still ends, on resume, in the
/// `rotated` notice, without another new version.
#[tokio::test]
async fn a_kms_rotation_crashed_after_set_primary_is_announced_on_resume() {
    let env = TestEnv::new(false).await;
    let before = env.kms.key_info().await.unwrap().primary.unwrap().number;
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::KmsPrimarySet));
    crashing.rotate(names::KMS_KEY, false).await.unwrap_err();
    assert_eq!(
        env.kms.key_info().await.unwrap().primary.unwrap().number,
        before + 1
    );
    assert!(
        env.bus
            .notices()
            .iter()
            .all(|n| n.event != NoticeEvent::Rotated)
    );
    env.clock.advance_std(Duration::from_secs(301));
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert!(out.resumed);
    assert_eq!(
        (out.version, out.previous_version),
        (Some(before + 1), Some(before))
    );
    assert_eq!(
        env.kms.list_versions().await.unwrap().len() as u64,
        before + 1
    );
    let notices = env.bus.notices();
    let rotated = notices.last().unwrap();
    assert_eq!(
        (rotated.event, rotated.version),
        (NoticeEvent::Rotated, Some(before + 1))
    );
    assert_eq!(rotated.rotation_id, notices[0].rotation_id);
}

/// A KMS outage mid-rotation releases the record's lease: the next trigger
/// resumes at once with the version already created, not another one.
#[tokio::test]
async fn a_kms_outage_pauses_and_the_next_trigger_resumes_at_once() {
    let env = TestEnv::new(false).await;
    let before = env.kms.key_info().await.unwrap().primary.unwrap().number;
    env.kms.fail_always(
        Call::SetPrimary,
        Error::Unavailable("The service is currently unavailable.".into()),
    );
    let err = env
        .rotator()
        .rotate(names::KMS_KEY, false)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    env.kms.heal();
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert!(out.resumed);
    assert_eq!(out.version, Some(before + 1));
    assert_eq!(
        env.kms.list_versions().await.unwrap().len() as u64,
        before + 1
    );
}
