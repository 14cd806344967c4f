//! The operator's rollback.

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
async fn rollback_makes_previous_current_again_everywhere() {
    let env = TestEnv::new(true).await;
    env.rotator().rotate(WH, false).await.unwrap();
    let out = env.rotator().rollback(WH).await.unwrap();
    assert_eq!(out.result, NoticeEvent::RolledBack);
    assert_eq!((out.version, out.previous_version), (Some(1), Some(2)));
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert_eq!(s.aliases.get("previous"), Some(&2));
    assert_eq!(env.version(WH, 1).await.state, VersionState::Enabled);
    assert!(!s.aliases.contains_key("pending"));
    assert_eq!(env.github().hook_secret(), env.value(WH, 1).await);
    assert_eq!(
        env.bus.notices().pop().unwrap().event,
        NoticeEvent::RolledBack
    );

    let err = env
        .rotator()
        .rollback(names::OIDC_CLIENT_SECRET)
        .await
        .unwrap_err();
    assert!(matches!(err, RotationError::Backend(_)), "{err}");
}

#[tokio::test]
async fn rollback_of_a_crashed_rotation_undoes_it_whatever_the_step() {
    // Before the alias move: the pending version is rolled back.
    let env = TestEnv::new(true).await;
    let before = env.github().hook_secret();
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::Set));
    crashing.rotate(WH, false).await.unwrap_err();
    // While the crashed worker's lease lasts, the operator is told to wait.
    let err = env.rotator().rollback(WH).await.unwrap_err();
    assert!(matches!(err, RotationError::InProgress { .. }), "{err}");
    env.clock.advance_std(Duration::from_secs(301));
    let out = env.rotator().rollback(WH).await.unwrap();
    assert_eq!(out.result, NoticeEvent::RolledBack);
    assert_eq!(out.version, Some(1));
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert!(!s.aliases.contains_key("pending"));
    assert_eq!(env.version(WH, 2).await.state, VersionState::Disabled);
    // GitHub had been given version 2: it got version 1 back.
    assert_eq!(env.github().hook_secret(), before);

    // After the alias move: the rotation is completed, then reverted.
    let env = TestEnv::new(true).await;
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::Finished));
    crashing.rotate(WH, false).await.unwrap_err();
    env.clock.advance_std(Duration::from_secs(301));
    let out = env.rotator().rollback(WH).await.unwrap();
    assert_eq!((out.version, out.previous_version), (Some(1), Some(2)));
    assert_eq!(env.github().hook_secret(), env.value(WH, 1).await);
    let events: Vec<_> = env.bus.notices().iter().map(|n| n.event).collect();
    assert_eq!(
        events,
        [
            NoticeEvent::Started,
            NoticeEvent::Started,
            NoticeEvent::Rotated,
            NoticeEvent::Started,
            NoticeEvent::RolledBack
        ]
    );
}

/// Issue 14.1: after an emergency rotation the old version is compromised.
/// A plain rollback refuses to bring it back and changes nothing; `force`
/// does, re-enabling it, and says so in the notices.
#[tokio::test]
async fn rollback_refuses_a_compromised_version_unless_forced() {
    let env = TestEnv::new(true).await;
    let leaked = env.value(WH, 1).await;
    env.rotator().rotate(WH, true).await.unwrap();
    let notices_before = env.bus.notices().len();
    let err = env.rotator().rollback(WH).await.unwrap_err();
    assert!(matches!(err, RotationError::Precondition { .. }), "{err}");
    assert!(err.to_string().contains("compromised"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(HandlerError::from(err).status(), StatusCode::CONFLICT);
    // Nothing changed: v1 still disabled, GitHub keeps v2, no notice.
    assert_eq!(env.version(WH, 1).await.state, VersionState::Disabled);
    assert_eq!(env.secret(WH).await.aliases.get("current"), Some(&2));
    assert_ne!(env.github().hook_secret(), leaked);
    assert_eq!(env.bus.notices().len(), notices_before);
    let status = env.rotator().status().await.unwrap();
    let wh = status.secrets.iter().find(|s| s.secret == WH).unwrap();
    assert!(wh.emergency);
    assert_eq!(wh.compromised, [1]);

    let out = env
        .rotator()
        .rollback_with(WH, rotation_worker::RollbackOptions { force: true })
        .await
        .unwrap();
    assert_eq!((out.version, out.previous_version), (Some(1), Some(2)));
    assert!(out.detail.as_deref().unwrap().contains("compromised"));
    assert_eq!(env.version(WH, 1).await.state, VersionState::Enabled);
    assert_eq!(env.github().hook_secret(), leaked);
    let notices = env.bus.notices();
    let started = &notices[notices_before];
    assert_eq!(started.event, NoticeEvent::Started);
    assert_eq!(started.version, Some(1));
    assert!(started.detail.as_deref().unwrap().contains("forced"));
    let done = notices.last().unwrap();
    assert_eq!(done.event, NoticeEvent::RolledBack);
    assert!(done.detail.as_deref().unwrap().contains("forced"));
}

/// Issue 14.1: the rollback marks its target `pending` and announces it
/// before GitHub is given it, so a crash between GitHub and the alias move
/// leaves deliveries signed with the target accepted, and the next trigger
/// finishes the rollback.
#[tokio::test]
async fn a_rollback_crashed_after_github_is_marked_and_finished_later() {
    let env = TestEnv::new(true).await;
    env.rotator().rotate(WH, false).await.unwrap();
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::RevertApplied));
    let err = crashing.rollback(WH).await.unwrap_err();
    assert_eq!(err, RotationError::Crashed(CrashPoint::RevertApplied));
    // GitHub signs with v1 now; v1 is marked pending (readers accept it)
    // and was announced before GitHub got it.
    assert_eq!(env.github().hook_secret(), env.value(WH, 1).await);
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("pending"), Some(&1));
    assert_eq!(s.aliases.get("current"), Some(&2));
    let announced = env.bus.notices().pop().unwrap();
    assert_eq!(
        (announced.event, announced.version),
        (NoticeEvent::Started, Some(1))
    );

    env.clock.advance_std(Duration::from_secs(301));
    let report = env.rotator().finish().await.unwrap();
    assert_eq!(report.resumed.len(), 1, "{report:?}");
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert_eq!(s.aliases.get("previous"), Some(&2));
    assert!(!s.aliases.contains_key("pending"));
    assert_eq!(
        env.bus
            .notices()
            .iter()
            .rev()
            .find(|n| n.event == NoticeEvent::RolledBack)
            .map(|n| n.version),
        Some(Some(1))
    );
}

/// Issue 14.2: a restored version becomes current only through the
/// protocol: announced, given to GitHub, the replaced one kept in grace.
#[tokio::test]
async fn a_restored_version_is_promoted_through_the_protocol() {
    let env = TestEnv::new(true).await;
    env.rotator().rotate(WH, false).await.unwrap();
    // What `patchpanda restore --move-aliases` adds: v1's value again.
    let restored = env.upload(WH, &env.value(WH, 1).await).await;
    let out = env.rotator().restore_version(WH, restored).await.unwrap();
    assert_eq!(
        (out.version, out.previous_version),
        (Some(restored), Some(2))
    );
    assert_eq!(env.github().hook_secret(), env.value(WH, 1).await);
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&restored));
    assert_eq!(s.aliases.get("previous"), Some(&2));
    let events: Vec<_> = env.bus.notices().iter().map(|n| n.event).collect();
    assert_eq!(events.last(), Some(&NoticeEvent::Rotated));
    // An older version is a rollback, not a restore.
    let err = env.rotator().restore_version(WH, 1).await.unwrap_err();
    assert!(matches!(err, RotationError::Precondition { .. }), "{err}");
}

/// Two operators rolling back at once: one holds the lease while GitHub is
/// slow, the other is told a rollback is in progress; one revert happens.
#[tokio::test]
async fn concurrent_rollbacks_make_exactly_one_revert() {
    let env = TestEnv::new(true).await;
    env.rotator().rotate(WH, false).await.unwrap();
    let gh = env.github();
    let patched = gh.patches.load(Ordering::SeqCst);
    let hold = gh.hold_patches().await;
    let first = {
        let r = env.rotator();
        tokio::spawn(async move { r.rollback(WH).await })
    };
    // (The rotation's PATCH left a stored notify permit: count instead.)
    while gh.patches.load(Ordering::SeqCst) == patched {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = env.rotator().rollback(WH).await.unwrap_err();
    let RotationError::InProgress { step, .. } = &err else {
        panic!("expected in progress, got {err}");
    };
    assert_eq!(step, "reverting");
    drop(hold);
    let out = first.await.unwrap().unwrap();
    assert_eq!((out.version, out.previous_version), (Some(1), Some(2)));
    let reverts = env
        .bus
        .notices()
        .iter()
        .filter(|n| n.event == NoticeEvent::RolledBack)
        .count();
    assert_eq!(reverts, 1);
    assert_eq!(env.github().hook_secret(), env.value(WH, 1).await);
}
