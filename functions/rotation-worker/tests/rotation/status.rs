//! `status` and the due-check.

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

    env.clock.advance_std(Duration::from_secs(400 * 86400));
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
