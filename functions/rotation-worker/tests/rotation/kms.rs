//! The KMS key.

#![allow(unused_imports)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::runtime::HandlerError;
use patchpanda_shared::secrets::{SecretStore, VersionState};
use rotation_worker::protocol::ANNOTATION_ROTATION;
use rotation_worker::{CrashPoint, RotationError};

use crate::support::{self, APP_KEY, NEXT_KEY, TestEnv, WEAK_KEY};
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
    env.clock.advance(Duration::from_secs(301));
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert_eq!(out.version, Some(before + 2));
    assert!(out.resumed);
    assert_eq!(
        env.kms.list_versions().await.unwrap().len() as u64,
        before + 2
    );
}
