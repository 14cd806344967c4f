//! Rotations of the webhook secret: GitHub updated, refusals, outages, emergencies.

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
async fn webhook_rotation_updates_github_and_moves_aliases() {
    let env = TestEnv::new(true).await;
    let out = env.rotator().rotate(WH, false).await.unwrap();
    assert_eq!(out.result, NoticeEvent::Rotated);
    assert_eq!((out.version, out.previous_version), (Some(2), Some(1)));
    assert!(!out.resumed);

    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&2));
    assert_eq!(s.aliases.get("previous"), Some(&1));
    assert!(!s.aliases.contains_key("pending"));
    assert!(!s.annotations.contains_key(ANNOTATION_ROTATION));
    let new_value = env.value(WH, 2).await;
    assert_eq!(new_value.len(), 64);
    assert_eq!(env.github().hook_secret(), new_value);
    let until = s.annotations[names::ANNOTATION_PREVIOUS_VALID_UNTIL].clone();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&until).unwrap(),
        env.clock.now() + chrono::Duration::hours(1)
    );

    let notices = env.bus.notices();
    let events: Vec<_> = notices.iter().map(|n| n.event).collect();
    // The second `started` announces the pending version before GitHub signs
    // with it, so webhook-ingest accepts deliveries signed with it.
    assert_eq!(
        events,
        [
            NoticeEvent::Started,
            NoticeEvent::Started,
            NoticeEvent::Rotated
        ]
    );
    assert_eq!(notices[0].version, None);
    assert_eq!(notices[1].version, Some(2));
    assert_eq!(notices[1].rotation_id, notices[0].rotation_id);
    let rotated = env.bus.on(names::TOPIC_ROTATION_EVENTS).pop().unwrap();
    assert_eq!(rotated.attributes["secret"], WH);
    assert_eq!(rotated.attributes["event"], "rotated");
    assert_eq!(rotated.attributes["version"], "2");
    assert_eq!(rotated.attributes["previous_version"], "1");
    assert_eq!(notices[0].rotation_id, notices[1].rotation_id);
    assert_eq!(
        notices[1].principal.as_deref(),
        Some(names::PRINCIPAL_ROTATION_WORKER)
    );
    // Every GitHub call carried a JWT signed with the current App key.
    assert!(env.github().keys_seen().iter().all(|k| *k == "app"));
    assert!(env.github().patches.load(Ordering::SeqCst) == 1);
}

#[tokio::test]
async fn without_a_github_app_the_rotation_completes_and_says_so() {
    let env = TestEnv::new(false).await;
    let out = env.rotator().rotate(WH, false).await.unwrap();
    assert_eq!(out.version, Some(2));
    let detail = out.detail.unwrap();
    assert!(detail.contains("no GitHub App configured"), "{detail}");
    let rotated = env.bus.notices().pop().unwrap();
    assert!(rotated.detail.unwrap().contains("set and test skipped"));
}

#[tokio::test]
async fn github_rejecting_the_patch_rolls_back() {
    let env = TestEnv::new(true).await;
    let gh = env.github();
    let before = gh.hook_secret();
    gh.patch_status.store(422, Ordering::SeqCst);

    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    assert!(matches!(err, RotationError::RolledBack { .. }), "{err}");
    assert!(err.to_string().contains("422"), "{err}");
    assert_eq!(
        HandlerError::from(err).status(),
        StatusCode::FAILED_DEPENDENCY
    );

    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert!(!s.aliases.contains_key("pending"));
    assert!(!s.annotations.contains_key(ANNOTATION_ROTATION));
    let v2 = env.version(WH, 2).await;
    assert_eq!(v2.state, VersionState::Disabled);
    assert_eq!(gh.hook_secret(), before);
    // GitHub refused, so there was nothing to restore.
    assert_eq!(gh.patches.load(Ordering::SeqCst), 1);
    let events: Vec<_> = env.bus.notices().iter().map(|n| n.event).collect();
    assert_eq!(
        events,
        [
            NoticeEvent::Started,
            NoticeEvent::Started,
            NoticeEvent::RolledBack
        ]
    );
    let status = env.rotator().status().await.unwrap();
    let wh = status.secrets.iter().find(|s| s.secret == WH).unwrap();
    assert_eq!(
        wh.last_rotation.as_ref().unwrap().result,
        NoticeEvent::RolledBack
    );

    // Not stuck: the next rotation goes through.
    gh.patch_status.store(0, Ordering::SeqCst);
    let out = env.rotator().rotate(WH, false).await.unwrap();
    assert_eq!((out.version, out.previous_version), (Some(3), Some(1)));
    assert_eq!(gh.hook_secret(), env.value(WH, 3).await);
}

#[tokio::test]
async fn a_failed_test_step_gives_github_the_old_secret_back() {
    let env = TestEnv::new(true).await;
    let gh = env.github();
    let before = gh.hook_secret();
    gh.hook_get_status.store(403, Ordering::SeqCst);
    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    assert!(matches!(err, RotationError::RolledBack { .. }), "{err}");
    assert_eq!(gh.patches.load(Ordering::SeqCst), 2);
    assert_eq!(gh.hook_secret(), before);
    assert_eq!(env.secret(WH).await.aliases.get("current"), Some(&1));
}

#[tokio::test]
async fn a_github_outage_pauses_then_resumes_or_times_out_into_a_rollback() {
    let env = TestEnv::new(true).await;
    let gh = env.github();
    gh.patch_status.store(502, Ordering::SeqCst);
    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    assert!(matches!(err, RotationError::Paused { .. }), "{err}");
    assert_eq!(
        HandlerError::from(err).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Paused: the lease is released at once, so the next trigger resumes.
    gh.patch_status.store(0, Ordering::SeqCst);
    let out = env.rotator().rotate(WH, false).await.unwrap();
    assert!(out.resumed);
    assert_eq!(out.version, Some(2));

    // An outage that outlasts the rotation's budget ends in a rollback.
    gh.patch_status.store(502, Ordering::SeqCst);
    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    assert!(matches!(err, RotationError::Paused { .. }));
    env.clock.advance_std(Duration::from_secs(2 * 3600));
    // GitHub still down: the rollback cannot give it the old secret back
    // yet (the 502 may have been applied), so it pauses too.
    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    assert!(matches!(err, RotationError::Paused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("restoring GitHub's hook secret failed")
    );
    let status = env.rotator().status().await.unwrap();
    let wh = status.secrets.iter().find(|s| s.secret == WH).unwrap();
    assert_eq!(
        wh.rotation.as_ref().unwrap().step,
        rotation_worker::Step::RollingBack
    );
    gh.patch_status.store(0, Ordering::SeqCst);
    let err = env.rotator().rotate(WH, false).await.unwrap_err();
    assert!(matches!(err, RotationError::RolledBack { .. }), "{err}");
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&2));
    assert!(!s.aliases.contains_key("pending"));
    // The 502 may have been applied: GitHub was given the current secret.
    assert_eq!(gh.hook_secret(), env.value(WH, 2).await);
}

#[tokio::test]
async fn an_emergency_rotation_disables_the_old_version_at_once() {
    let env = TestEnv::new(true).await;
    let out = env.rotator().rotate(WH, true).await.unwrap();
    assert!(out.emergency);
    assert_eq!(out.grace_until, None);
    assert_eq!(env.version(WH, 1).await.state, VersionState::Disabled);
    let s = env.secret(WH).await;
    assert!(
        !s.annotations
            .contains_key(names::ANNOTATION_PREVIOUS_VALID_UNTIL)
    );
    let rotated = env.bus.on(names::TOPIC_ROTATION_EVENTS).pop().unwrap();
    assert_eq!(rotated.attributes["emergency"], "true");
    assert!(
        env.bus
            .notices()
            .pop()
            .unwrap()
            .detail
            .unwrap()
            .contains("emergency")
    );
}

#[tokio::test]
async fn unknown_secrets_are_refused_without_changes() {
    let env = TestEnv::new(false).await;
    let err = env
        .rotator()
        .rotate("database-password", false)
        .await
        .unwrap_err();
    assert_eq!(HandlerError::from(err).status(), StatusCode::BAD_REQUEST);
    assert!(env.bus.notices().is_empty());
}

/// Issue 14.3: GitHub's answer is judged by its status. A 2xx from PATCH
/// /app/hook/config with no body (204, GitHub Enterprise or a proxy) or a
/// body that is not JSON means GitHub took the secret: the rotation
/// completes, and nothing disables the secret GitHub now signs with.
#[tokio::test]
async fn a_2xx_with_an_unreadable_body_means_github_took_the_secret() {
    for answer in [1u8, 2] {
        let env = TestEnv::new(true).await;
        let gh = env.github();
        gh.patch_answer.store(answer, Ordering::SeqCst);
        let out = env
            .rotator()
            .rotate(WH, false)
            .await
            .unwrap_or_else(|e| panic!("answer {answer}: {e}"));
        assert_eq!(out.version, Some(2));
        assert_eq!(gh.hook_secret(), env.value(WH, 2).await);
        assert_eq!(env.version(WH, 2).await.state, VersionState::Enabled);
        assert_eq!(env.secret(WH).await.aliases.get("current"), Some(&2));
    }
}
