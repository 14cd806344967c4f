//! Hand-made credentials: uploaded, proven, promoted or refused.

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
    env.clock.advance_std(Duration::from_secs(301));
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
