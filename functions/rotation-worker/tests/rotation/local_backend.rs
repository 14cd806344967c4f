//! The same protocol against the real local backend.

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

    let clock = support::ManualClock::default();
    let rotator = |crash: Option<CrashPoint>| {
        let mut s = rotation_worker::Settings::from_config(&config, &env).unwrap();
        s.clock = clock.as_fn();
        s.crash_at = crash;
        rotation_worker::Rotator::new(b.secrets.clone(), b.kms.clone(), b.bus.clone(), s)
    };
    let err = rotator(Some(CrashPoint::VersionAdded))
        .rotate(WH, false)
        .await
        .unwrap_err();
    assert_eq!(err, RotationError::Crashed(CrashPoint::VersionAdded));
    clock.advance_std(Duration::from_secs(301));
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
    // The rollback announces its target (`started`) before GitHub gets it.
    assert_eq!(
        events,
        ["started", "started", "rotated", "started", "rolled_back"]
    );

    // The service itself builds on the same home.
    let app = rotation_worker::app(config.clone(), env.clone())
        .await
        .unwrap();
    assert_eq!(app.service(), "rotation-worker");
}
