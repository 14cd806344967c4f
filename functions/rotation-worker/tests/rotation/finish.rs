//! The hourly finish: grace, retention.

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
async fn finish_ends_grace_and_retention_but_keeps_current_and_previous() {
    let env = TestEnv::new(false).await;
    let r = env.rotator();
    r.rotate(WH, false).await.unwrap(); // v2 current, v1 previous
    let report = r.finish().await.unwrap();
    assert!(report.disabled.is_empty(), "{report:?}");

    env.clock.advance_std(Duration::from_secs(2 * 3600));
    r.rotate(WH, false).await.unwrap(); // v3 current, v2 previous, v1 loose
    let report = r.finish().await.unwrap();
    let disabled: Vec<u64> = report.disabled.iter().map(|c| c.version).collect();
    assert_eq!(disabled, [1]);
    assert_eq!(env.version(WH, 2).await.state, VersionState::Enabled);

    env.clock.advance_std(Duration::from_secs(2 * 3600));
    let report = r.finish().await.unwrap();
    let disabled: Vec<u64> = report.disabled.iter().map(|c| c.version).collect();
    assert_eq!(disabled, [2], "grace over");
    assert!(report.destroyed.is_empty());

    env.clock.advance_std(Duration::from_secs(31 * 86400));
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
