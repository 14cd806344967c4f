//! The etag guard and the lease: lost races are re-read and retried, and a
//! lease longer than any rotation writes is not honoured.

use std::sync::atomic::Ordering;
use std::time::Duration;

use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{SecretStore, SecretUpdate};
use rotation_worker::protocol::ANNOTATION_ROTATION;

use crate::WH;
use crate::doubles::stale_etag_before_update;
use crate::support::TestEnv;

/// Contract 1: Secret Manager answers a stale etag with FAILED_PRECONDITION.
/// Whichever guarded write of the rotation meets it (the lease, a step, the
/// alias move, the release) re-reads and retries, and the rotation ends as
/// if nothing had happened.
#[tokio::test]
async fn a_stale_etag_answered_failed_precondition_is_retried_at_every_write() {
    for skip in 0.. {
        let env = TestEnv::new(false).await;
        let fired = stale_etag_before_update(&env.store, skip);
        let out = env
            .rotator()
            .rotate(WH, false)
            .await
            .unwrap_or_else(|e| panic!("write {skip}: {e}"));
        if !fired.load(Ordering::SeqCst) {
            // Past the rotation's last write.
            assert!(skip >= 5, "only {skip} guarded writes");
            break;
        }
        assert_eq!((out.version, out.previous_version), (Some(2), Some(1)));
        let s = env.secret(WH).await;
        assert_eq!(s.aliases.get("current"), Some(&2));
        assert!(!s.annotations.contains_key(ANNOTATION_ROTATION));
        assert_eq!(env.store.list_versions(&env.id(WH)).await.unwrap().len(), 2);
    }
    // finish's own bookkeeping write too.
    let env = TestEnv::new(false).await;
    env.rotator().rotate(WH, false).await.unwrap();
    env.clock.advance_std(Duration::from_secs(2 * 3600));
    let fired = stale_etag_before_update(&env.store, 0);
    let report = env.rotator().finish().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(fired.load(Ordering::SeqCst));
}

async fn plant(env: &TestEnv, lease_until: chrono::DateTime<chrono::Utc>) {
    let id = env.id(WH);
    let s = env.store.get_secret(&id).await.unwrap();
    let mut annotations = s.annotations.clone();
    let planted = serde_json::json!({
        "id": "planted", "holder": "attacker", "step": "tested",
        "lease_until": lease_until, "started": env.clock.now(),
        "base": 1, "pending": 1,
    });
    annotations.insert(ANNOTATION_ROTATION.to_string(), planted.to_string());
    let update = SecretUpdate {
        aliases: None,
        annotations: Some(annotations),
    };
    env.store.update_secret(&id, update, None).await.unwrap();
}

/// Issue 14.6: a lease annotation written by hand to last a month does not
/// block rotations: it is honoured only up to a lease's normal length from
/// now, and its fields are not trusted (it is discarded, not resumed).
#[tokio::test]
async fn a_planted_lease_is_not_honoured() {
    let env = TestEnv::new(false).await;
    plant(&env, env.clock.now() + chrono::Duration::days(30)).await;
    let out = env.rotator().rotate(WH, true).await.unwrap();
    assert!(!out.resumed, "the planted state was resumed");
    assert_eq!((out.version, out.previous_version), (Some(2), Some(1)));
    assert!(out.emergency);

    // The hourly finish clears one too, instead of skipping the secret.
    let env = TestEnv::new(false).await;
    plant(&env, env.clock.now() + chrono::Duration::days(30)).await;
    let report = env.rotator().finish().await.unwrap();
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(
        !env.secret(WH)
            .await
            .annotations
            .contains_key(ANNOTATION_ROTATION)
    );

    // A lease of normal length is still honoured.
    let env = TestEnv::new(false).await;
    plant(&env, env.clock.now() + chrono::Duration::seconds(200)).await;
    let err = env.rotator().rotate(WH, true).await.unwrap_err();
    assert!(
        matches!(err, rotation_worker::RotationError::InProgress { .. }),
        "{err}"
    );
    assert!(
        env.bus
            .notices()
            .iter()
            .all(|n| n.event != NoticeEvent::Rotated)
    );
}
