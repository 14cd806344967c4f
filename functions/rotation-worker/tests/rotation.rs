//! rotation-worker's integration tests: the Rotator against a faithful
//! in-memory Secret Manager, the local KMS keyring, a recording bus, and a
//! stub GitHub on 127.0.0.1 that checks the App JWT like GitHub does.

mod support;

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

use support::{APP_KEY, NEXT_KEY, TestEnv, WEAK_KEY};

const WH: &str = names::WEBHOOK_SECRET;
const PK: &str = names::GITHUB_PRIVATE_KEY;

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
    let rotated = env.bus.messages().pop().unwrap();
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

/// A crash after every step, then a new trigger: the first is refused while
/// the crashed worker's lease lasts, then taken over and finished; never a
/// stuck `pending`, never a second new version.
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

        env.clock.advance(Duration::from_secs(301));
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
    env.clock.advance(Duration::from_secs(600));
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
    env.clock.advance(Duration::from_secs(2 * 3600));
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
async fn an_uploaded_private_key_is_proven_and_promoted() {
    let env = TestEnv::new(true).await;
    let v = env.upload(PK, NEXT_KEY).await;
    let out = env.rotator().promote_upload(PK, v).await.unwrap().unwrap();
    assert_eq!((out.version, out.previous_version), (Some(v), Some(1)));
    let detail = out.detail.unwrap();
    assert!(
        detail.contains("authenticated as GitHub App 12345"),
        "{detail}"
    );
    assert!(
        detail.contains("delete it in the GitHub App's settings"),
        "{detail}"
    );
    assert!(env.github().keys_seen().contains(&"next"));
    let s = env.secret(PK).await;
    assert_eq!(s.aliases.get("current"), Some(&v));
    assert_eq!(s.aliases.get("previous"), Some(&1));
    // A duplicate event changes nothing.
    assert!(env.rotator().promote_upload(PK, v).await.unwrap().is_none());
    assert_eq!(env.bus.notices().pop().unwrap().event, NoticeEvent::Rotated);
}

#[tokio::test]
async fn a_bad_pem_is_not_promoted() {
    let env = TestEnv::new(true).await;
    let v = env
        .upload(
            PK,
            "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n",
        )
        .await;
    let err = env.rotator().promote_upload(PK, v).await.unwrap_err();
    assert!(
        matches!(err, RotationError::Rejected { version, .. } if version == v),
        "{err}"
    );
    assert_eq!(
        HandlerError::from(err).status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let s = env.secret(PK).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert!(!s.aliases.contains_key("pending"));
    assert_eq!(env.version(PK, v).await.state, VersionState::Disabled);
    let failed = env.bus.notices().pop().unwrap();
    assert_eq!(failed.event, NoticeEvent::Failed);
    assert_eq!(failed.version, Some(v));
    // The key in use still works.
    assert_eq!(env.value(PK, 1).await, APP_KEY);
}

#[tokio::test]
async fn a_1024_bit_key_is_refused() {
    let env = TestEnv::new(true).await;
    let v = env.upload(PK, WEAK_KEY).await;
    let err = env.rotator().promote_upload(PK, v).await.unwrap_err();
    let RotationError::Rejected { reason, .. } = &err else {
        panic!("expected a rejection, got {err}");
    };
    assert!(!reason.contains("BEGIN"), "{reason}");
    assert_eq!(env.secret(PK).await.aliases.get("current"), Some(&1));
    assert_eq!(
        env.github()
            .keys_seen()
            .iter()
            .filter(|k| **k == "weak")
            .count(),
        0
    );
}

#[tokio::test]
async fn rotating_a_hand_made_secret_without_an_upload_says_what_to_do() {
    let env = TestEnv::new(true).await;
    let err = env.rotator().rotate(PK, false).await.unwrap_err();
    assert!(matches!(err, RotationError::NeedsUpload { .. }));
    assert!(
        err.to_string()
            .contains("patchpanda secrets add github-private-key")
    );
    assert_eq!(env.bus.notices().pop().unwrap().event, NoticeEvent::Due);
    // With an upload waiting, rotate promotes it.
    let v = env.upload(PK, NEXT_KEY).await;
    assert_eq!(
        env.rotator().rotate(PK, false).await.unwrap().version,
        Some(v)
    );
}

#[tokio::test]
async fn oidc_uploads_are_checked() {
    let env = TestEnv::new(false).await;
    env.store
        .create_secret(&env.id(names::OIDC_CLIENT_SECRET))
        .await
        .unwrap();
    let bad = env
        .upload(names::OIDC_CLIENT_SECRET, "secret-with-newline\n")
        .await;
    let err = env
        .rotator()
        .promote_upload(names::OIDC_CLIENT_SECRET, bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("newline"), "{err}");
    let good = env
        .upload(names::OIDC_CLIENT_SECRET, "GOCSPX-0123456789abcdef")
        .await;
    let out = env
        .rotator()
        .promote_upload(names::OIDC_CLIENT_SECRET, good)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((out.version, out.previous_version), (Some(good), None));
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
    let rotated = env.bus.messages().pop().unwrap();
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
async fn rollback_makes_previous_current_again_everywhere() {
    let env = TestEnv::new(true).await;
    env.rotator().rotate(WH, true).await.unwrap();
    let out = env.rotator().rollback(WH).await.unwrap();
    assert_eq!(out.result, NoticeEvent::RolledBack);
    assert_eq!((out.version, out.previous_version), (Some(1), Some(2)));
    let s = env.secret(WH).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert_eq!(s.aliases.get("previous"), Some(&2));
    // The emergency had disabled version 1: rollback re-enables it.
    assert_eq!(env.version(WH, 1).await.state, VersionState::Enabled);
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
async fn finish_ends_grace_and_retention_but_keeps_current_and_previous() {
    let env = TestEnv::new(false).await;
    let r = env.rotator();
    r.rotate(WH, false).await.unwrap(); // v2 current, v1 previous
    let report = r.finish().await.unwrap();
    assert!(report.disabled.is_empty(), "{report:?}");

    env.clock.advance(Duration::from_secs(2 * 3600));
    r.rotate(WH, false).await.unwrap(); // v3 current, v2 previous, v1 loose
    let report = r.finish().await.unwrap();
    let disabled: Vec<u64> = report.disabled.iter().map(|c| c.version).collect();
    assert_eq!(disabled, [1]);
    assert_eq!(env.version(WH, 2).await.state, VersionState::Enabled);

    env.clock.advance(Duration::from_secs(2 * 3600));
    let report = r.finish().await.unwrap();
    let disabled: Vec<u64> = report.disabled.iter().map(|c| c.version).collect();
    assert_eq!(disabled, [2], "grace over");
    assert!(report.destroyed.is_empty());

    env.clock.advance(Duration::from_secs(31 * 86400));
    let report = r.finish().await.unwrap();
    let destroyed: Vec<u64> = report.destroyed.iter().map(|c| c.version).collect();
    assert_eq!(destroyed, [1], "v2 is previous and is kept");
    assert_eq!(env.version(WH, 1).await.state, VersionState::Destroyed);
    assert_eq!(env.version(WH, 2).await.state, VersionState::Disabled);
    assert_eq!(env.version(WH, 3).await.state, VersionState::Enabled);
    let events: Vec<_> = env.bus.notices().iter().map(|n| n.event).collect();
    assert!(events.contains(&NoticeEvent::Disabled) && events.contains(&NoticeEvent::Destroyed));

    // Idempotent: a retry finds nothing more to do.
    let again = r.finish().await.unwrap();
    assert!(again.disabled.is_empty() && again.destroyed.is_empty() && again.errors.is_empty());
}

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
    let out = env.rotator().rotate(names::KMS_KEY, false).await.unwrap();
    assert_eq!(out.version, Some(before + 2));
    assert!(out.resumed);
    assert_eq!(
        env.kms.list_versions().await.unwrap().len() as u64,
        before + 2
    );
}

#[tokio::test]
async fn status_shows_versions_grace_due_and_the_kms_key() {
    let env = TestEnv::new(false).await;
    env.rotator().rotate(WH, false).await.unwrap();
    let status = env.rotator().status().await.unwrap();
    let wh = status.secrets.iter().find(|s| s.secret == WH).unwrap();
    assert!(wh.exists);
    assert_eq!(wh.current.as_ref().unwrap().number, 2);
    assert_eq!(wh.previous.as_ref().unwrap().number, 1);
    assert!(wh.pending.is_none() && wh.rotation.is_none());
    assert!(wh.in_grace);
    assert_eq!(
        wh.grace_until,
        Some(env.clock.now() + chrono::Duration::hours(1))
    );
    assert_eq!(
        wh.last_rotation.as_ref().unwrap().result,
        NoticeEvent::Rotated
    );
    assert!(!wh.due);
    let oidc = status
        .secrets
        .iter()
        .find(|s| s.secret == names::OIDC_CLIENT_SECRET)
        .unwrap();
    assert!(!oidc.exists);
    assert!(status.kms.primary_version.is_some() && status.kms.error.is_none());
    assert!(status.kms.name.as_deref().unwrap().contains("cryptoKeys"));
    // Serializes for `--json`.
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["secrets"][1]["current"]["number"], 2);

    env.clock.advance(Duration::from_secs(400 * 86400));
    let status = env.rotator().status().await.unwrap();
    let pk = status.secrets.iter().find(|s| s.secret == PK).unwrap();
    assert!(pk.due, "{pk:?}");
    assert!(pk.due_reason.as_deref().unwrap().contains("days old"));
    let wh = status.secrets.iter().find(|s| s.secret == WH).unwrap();
    assert!(!wh.in_grace);

    let due = env.rotator().due_check().await.unwrap();
    assert_eq!(due.due.len(), 1);
    assert_eq!(due.due[0].secret, PK);
    let notice = env.bus.notices().pop().unwrap();
    assert_eq!(
        (notice.event, notice.secret.as_str()),
        (NoticeEvent::Due, PK)
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

mod handlers {
    use super::*;
    use patchpanda_shared::runtime::events::PushFormat;
    use patchpanda_shared::runtime::{Context, Invocation, PushMessage, SchedulerJob};
    use rotation_worker::handlers::{events_handler, finish_handler, rotate_handler};
    use tower::ServiceExt;

    fn job(body: &str, key: Option<(&str, &str)>) -> Invocation<SchedulerJob> {
        Invocation::new(
            SchedulerJob {
                job_name: key.map(|k| k.0.to_string()),
                schedule_time: key.map(|k| k.1.to_string()),
                headers: Default::default(),
                body: bytes::Bytes::from(body.to_string()),
            },
            Context::for_test("rotation-worker"),
        )
    }

    fn push(attrs: &[(&str, String)]) -> Invocation<PushMessage> {
        Invocation::new(
            PushMessage {
                message_id: "1".into(),
                data: bytes::Bytes::new(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                ordering_key: None,
                publish_time: None,
                subscription: None,
                delivery_attempt: None,
                format: PushFormat::Wrapped,
            },
            Context::for_test("rotation-worker"),
        )
    }

    #[tokio::test]
    async fn rotate_route_answers_json_and_refuses_bad_bodies() {
        let env = TestEnv::new(false).await;
        let h = rotate_handler(Arc::new(env.rotator()));
        let reply = h
            .clone()
            .oneshot(job(r#"{"secret":"webhook-secret"}"#, None))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["result"], "rotated");
        assert_eq!(v["version"], 2);
        for bad in ["", "{", r#"{"secret":"webhook-secret","emergancy":true}"#] {
            let e = h.clone().oneshot(job(bad, None)).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        let e = h
            .oneshot(job(r#"{"secret":"nope"}"#, None))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(env.store.list_versions(&env.id(WH)).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn secret_manager_events_drive_rotations_and_promotions() {
        let env = TestEnv::new(true).await;
        let h = events_handler(Arc::new(env.rotator()));
        let name = |l: &str| format!("projects/123/secrets/{}", env.id(l));

        let reply = h
            .clone()
            .oneshot(push(&[("eventType", "TOPIC_CONFIGURED".into())]))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);

        let reply = h
            .clone()
            .oneshot(push(&[
                ("eventType", "SECRET_ROTATE".into()),
                ("secretId", name(WH)),
            ]))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(env.secret(WH).await.aliases.get("current"), Some(&2));

        let v = env.upload(PK, NEXT_KEY).await;
        let add = [
            ("eventType", "SECRET_VERSION_ADD".to_string()),
            ("secretId", name(PK)),
            ("versionId", format!("{}/versions/{v}", name(PK))),
        ];
        let reply = h.clone().oneshot(push(&add)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(env.secret(PK).await.aliases.get("current"), Some(&v));
        // Redelivered: acknowledged, nothing more.
        let reply = h.clone().oneshot(push(&add)).await.unwrap();
        assert_eq!(reply.status, StatusCode::NO_CONTENT);

        let bad = h
            .oneshot(push(&[
                ("eventType", "SECRET_ROTATE".into()),
                ("secretId", "x".into()),
            ]))
            .await
            .unwrap_err();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_retried_finish_run_gets_the_first_answer() {
        let env = TestEnv::new(false).await;
        let r = Arc::new(env.rotator());
        r.rotate(WH, false).await.unwrap();
        let h = finish_handler(r.clone());
        env.clock.advance(Duration::from_secs(2 * 3600));
        let key = Some(("projects/p/locations/l/jobs/finish", "2026-11-28T20:00:00Z"));
        let first = h.clone().oneshot(job("", key)).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(v["disabled"][0]["version"], 1);
        // Version 1 re-enabled by hand: a retry of the same run must not
        // disable it again, a new run does.
        env.store
            .set_state(
                &env.id(WH),
                1,
                patchpanda_shared::secrets::StateChange::Enable,
            )
            .await
            .unwrap();
        let retry = h.clone().oneshot(job("", key)).await.unwrap();
        assert_eq!(retry.body, first.body);
        assert_eq!(env.version(WH, 1).await.state, VersionState::Enabled);
        let next = Some(("projects/p/locations/l/jobs/finish", "2026-11-28T21:00:00Z"));
        h.oneshot(job("", next)).await.unwrap();
        assert_eq!(env.version(WH, 1).await.state, VersionState::Disabled);
    }
}

/// The same protocol against the real local backend (SQLite store sealed by
/// the local keyring, the durable local bus), as `patchpanda dev` runs it.
#[tokio::test]
async fn the_local_backend_rotates_resumes_and_rolls_back() {
    use patchpanda_shared::backends::Backends;
    use patchpanda_shared::config::{Config, Env};
    use patchpanda_shared::secrets::SecretUpdate;
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([("PATCHPANDA_HOME", dir.path().to_str().unwrap())]);
    let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
    let b = Backends::open(&config).await.unwrap();
    let id = config.secret_id(WH);
    b.secrets.create_secret(&id).await.unwrap();
    b.secrets
        .add_version(&id, b"seeded-webhook-secret")
        .await
        .unwrap();
    let current = SecretUpdate {
        aliases: Some(BTreeMap::from([("current".to_string(), 1)])),
        annotations: None,
    };
    b.secrets.update_secret(&id, current, None).await.unwrap();

    let clock = support::TestClock::new();
    let rotator = |crash: Option<CrashPoint>| {
        let mut s = rotation_worker::Settings::from_config(&config, &env).unwrap();
        let c = clock.clone();
        s.clock = Arc::new(move || c.now());
        s.crash_at = crash;
        rotation_worker::Rotator::new(b.secrets.clone(), b.kms.clone(), b.bus.clone(), s)
    };
    let err = rotator(Some(CrashPoint::VersionAdded))
        .rotate(WH, false)
        .await
        .unwrap_err();
    assert_eq!(err, RotationError::Crashed(CrashPoint::VersionAdded));
    clock.advance(Duration::from_secs(301));
    let out = rotator(None).rotate(WH, false).await.unwrap();
    assert!(out.resumed);
    assert_eq!((out.version, out.previous_version), (Some(2), Some(1)));
    assert_eq!(b.secrets.list_versions(&id).await.unwrap().len(), 2);

    let back = rotator(None).rollback(WH).await.unwrap();
    assert_eq!((back.version, back.previous_version), (Some(1), Some(2)));
    let s = b.secrets.get_secret(&id).await.unwrap();
    assert_eq!(s.aliases.get("current"), Some(&1));

    let local_bus = b.local.as_ref().unwrap().bus.clone();
    let events: Vec<String> = local_bus
        .messages(names::TOPIC_ROTATION_EVENTS)
        .unwrap()
        .iter()
        .map(|m| m.attributes["event"].clone())
        .collect();
    assert_eq!(events, ["started", "started", "rotated", "rolled_back"]);

    // The service itself builds on the same home.
    let app = rotation_worker::app(config.clone(), env.clone())
        .await
        .unwrap();
    assert_eq!(app.service(), "rotation-worker");
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
    env.clock.advance(Duration::from_secs(301));
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
    env.clock.advance(Duration::from_secs(301));
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
            NoticeEvent::RolledBack
        ]
    );
}

#[tokio::test]
async fn an_upload_during_a_rotation_waits_for_it() {
    let env = TestEnv::new(true).await;
    let crashing = env.rotator_with(|s| s.crash_at = Some(CrashPoint::Created));
    let first = env.upload(PK, NEXT_KEY).await;
    crashing.rotate(PK, false).await.unwrap_err();
    // A second upload while the first one's rotation holds the lease: the
    // event is refused (Pub/Sub redelivers it), nothing changes.
    let second = env.upload(PK, APP_KEY).await;
    let err = env.rotator().promote_upload(PK, second).await.unwrap_err();
    assert_eq!(HandlerError::from(err).status(), StatusCode::CONFLICT);
    // Once the lease lapsed, the redelivery finishes the first rotation,
    // then promotes the second upload.
    env.clock.advance(Duration::from_secs(301));
    let out = env
        .rotator()
        .promote_upload(PK, second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (out.version, out.previous_version),
        (Some(second), Some(first))
    );
    assert_eq!(env.secret(PK).await.aliases.get("current"), Some(&second));
}
