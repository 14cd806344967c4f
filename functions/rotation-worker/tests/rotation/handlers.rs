//! The routes: typed bodies, events, retried scheduler runs.

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

use patchpanda_shared::runtime::events::PushFormat;
use patchpanda_shared::runtime::{Context, Invocation, PushMessage, SchedulerJob};
use rotation_worker::RotationWorker;
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
    let h = Arc::new(RotationWorker::new(env.rotator())).rotate_handler();
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
    let h = Arc::new(RotationWorker::new(env.rotator())).events_handler();
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
    let h = Arc::new(RotationWorker::shared(r.clone())).finish_handler();
    env.clock.advance_std(Duration::from_secs(2 * 3600));
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

/// Issue 14.4: a step waiting on a slow GitHub (here 70 s, paused tokio
/// time) is not cut in half when the request times out (60 s): the rotation
/// goes on detached, finishes, and reports by notice; meanwhile Pub/Sub's
/// retry is rightly told a rotation is in progress.
#[tokio::test(start_paused = true)]
async fn a_rotation_outlives_a_request_timeout_while_github_is_slow() {
    use crate::doubles::{SlowApp, SlowAppFactory};
    let env = TestEnv::new(false).await;
    let app = Arc::new(SlowApp {
        delay: Duration::from_secs(70),
        hook: std::sync::Mutex::new(None),
        app_id: 12345,
    });
    let mut settings = env.settings();
    settings.github = Some(rotation_worker::GitHubSettings {
        app_id: support::APP_ID.to_string(),
        factory: Arc::new(SlowAppFactory(app.clone())),
    });
    let rotator = rotation_worker::Rotator::new(
        env.store.clone(),
        env.kms.clone(),
        env.bus.clone(),
        settings,
    );
    let worker = Arc::new(RotationWorker::new(rotator));
    // What the runtime does at the request timeout: drop the handler.
    let cut = tokio::time::timeout(
        Duration::from_secs(60),
        worker
            .rotate_handler()
            .oneshot(job(r#"{"secret":"webhook-secret"}"#, None)),
    )
    .await;
    assert!(cut.is_err(), "the request was expected to time out");
    let name = format!("projects/1/secrets/{}", env.id(WH));
    let retry = worker
        .events_handler()
        .oneshot(push(&[
            ("eventType", "SECRET_ROTATE".into()),
            ("secretId", name),
        ]))
        .await
        .unwrap();
    assert_eq!(retry.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&retry.body).contains("in progress"));

    tokio::time::sleep(Duration::from_secs(30)).await;
    let s = env.secret(WH).await;
    assert_eq!(
        s.aliases.get("current"),
        Some(&2),
        "the rotation did not finish"
    );
    assert!(!s.annotations.contains_key(ANNOTATION_ROTATION));
    let expected = env.value(WH, 2).await;
    let held = app.hook.lock().unwrap().clone();
    assert_eq!(held, Some(expected));
    let rotated = env.bus.notices().pop().unwrap();
    assert_eq!(
        (rotated.event, rotated.version),
        (NoticeEvent::Rotated, Some(2))
    );
}
