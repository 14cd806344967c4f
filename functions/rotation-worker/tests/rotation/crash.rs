//! Crashes after every step, takeovers, and concurrent triggers.

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
async fn a_crash_after_any_step_is_resumed_by_the_next_trigger() {
    for point in [
        CrashPoint::Started,
        CrashPoint::VersionAdded,
        CrashPoint::Created,
        CrashPoint::Set,
        CrashPoint::Tested,
        CrashPoint::Finished,
    ] {
        let env = TestEnv::new(true).await;
        let crashing = env.rotator_with(|s| s.crash_at = Some(point));
        let err = crashing.rotate(WH, false).await.unwrap_err();
        assert_eq!(err, RotationError::Crashed(point));

        let status = env.rotator().status().await.unwrap();
        let wh = status.secrets.iter().find(|s| s.secret == WH).unwrap();
        let in_flight = wh.rotation.as_ref().expect("the crash left a rotation");
        assert!(!in_flight.lapsed, "{point:?}");

        let err = env.rotator().rotate(WH, false).await.unwrap_err();
        assert!(
            matches!(err, RotationError::InProgress { .. }),
            "{point:?}: {err}"
        );

        env.clock.advance_std(Duration::from_secs(301));
        let out = env.rotator().rotate(WH, false).await.unwrap();
        assert!(out.resumed, "{point:?}");
        assert_eq!(out.result, NoticeEvent::Rotated);
        assert_eq!(
            (out.version, out.previous_version),
            (Some(2), Some(1)),
            "{point:?}"
        );

        let s = env.secret(WH).await;
        assert_eq!(s.aliases.get("current"), Some(&2), "{point:?}");
        assert!(!s.aliases.contains_key("pending"), "{point:?}");
        assert!(!s.annotations.contains_key(ANNOTATION_ROTATION));
        assert_eq!(
            env.store.list_versions(&env.id(WH)).await.unwrap().len(),
            2,
            "{point:?}"
        );
        assert_eq!(
            env.github().hook_secret(),
            env.value(WH, 2).await,
            "{point:?}"
        );
        let last = env.bus.notices().pop().unwrap();
        assert_eq!(last.event, NoticeEvent::Rotated, "{point:?}");
    }
}

#[tokio::test]
async fn the_hourly_finish_carries_on_a_crashed_rotation() {
    let env = TestEnv::new(true).await;
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::Set));
    crashing.rotate(WH, false).await.unwrap_err();
    env.clock.advance_std(Duration::from_secs(600));
    let report = env.rotator().finish().await.unwrap();
    assert_eq!(report.resumed.len(), 1);
    assert_eq!(report.resumed[0].result, "rotated");
    assert_eq!(env.secret(WH).await.aliases.get("current"), Some(&2));
}

#[tokio::test]
async fn concurrent_triggers_make_exactly_one_rotation() {
    let env = TestEnv::new(true).await;
    let gh = env.github();
    let hold = gh.hold_patches().await;
    let first = {
        let r = env.rotator();
        tokio::spawn(async move { r.rotate(WH, false).await })
    };
    gh.patch_entered.notified().await;

    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    let RotationError::InProgress { step, .. } = &err else {
        panic!("expected in progress, got {err}");
    };
    assert_eq!(step, "created");
    assert!(err.to_string().contains("rotation already in progress"));
    assert_eq!(HandlerError::from(err).status(), StatusCode::CONFLICT);

    drop(hold);
    let out = first.await.unwrap().unwrap();
    assert_eq!(out.version, Some(2));
    assert_eq!(env.store.list_versions(&env.id(WH)).await.unwrap().len(), 2);
    // One rotation: every `started` (the start, then the pending version's
    // announcement) belongs to the same rotation id.
    let started: std::collections::BTreeSet<String> = env
        .bus
        .notices()
        .iter()
        .filter(|n| n.event == NoticeEvent::Started)
        .map(|n| n.rotation_id.clone())
        .collect();
    assert_eq!(started.len(), 1);
}

#[tokio::test]
async fn racing_workers_never_both_take_the_lease() {
    let env = TestEnv::new(false).await;
    let (a, b) = (env.rotator(), env.rotator());
    let (ra, rb) = tokio::join!(a.rotate(WH, false), b.rotate(WH, false));
    let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    // Either one ran and the other was refused, or they ran one after the
    // other; never two rotations interleaved.
    for r in [&ra, &rb] {
        if let Err(e) = r {
            assert!(matches!(e, RotationError::InProgress { .. }), "{e}");
        }
    }
    let versions = env.store.list_versions(&env.id(WH)).await.unwrap().len();
    assert_eq!(versions, 1 + oks);
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&(1 + oks as u64)));
    assert!(!s.aliases.contains_key("pending"));
}
