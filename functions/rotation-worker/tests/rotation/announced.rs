//! Every write the worker makes is announced on the rotation topic before
//! (or, for the lease, from the moment of) the write, so audit-alerter files
//! it as announced: the finish task's retention bookkeeping, and the lease
//! that precedes a rotation's `started` notice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use patchpanda_shared::{Error, Result};
use rotation_worker::Rotator;
use rotation_worker::protocol::{ANNOTATION_DISABLED_AT, ANNOTATION_ROTATION};

use crate::WH;
use crate::support::{Flaky, ManualClock, MemorySecretStore, TestEnv};

/// A bus that notes, with each notice, the webhook secret's retention
/// record at the moment the notice was published; it can refuse publishes.
struct WitnessBus {
    store: Arc<Flaky<MemorySecretStore>>,
    id: String,
    seen: Mutex<Vec<(RotationNotice, Option<String>)>>,
    down: bool,
}

#[async_trait]
impl Bus for WitnessBus {
    async fn publish(&self, _topic: &str, message: Message) -> Result<String> {
        if self.down {
            return Err(Error::Unavailable("bus down".into()));
        }
        let record = self
            .store
            .get_secret(&self.id)
            .await?
            .annotations
            .get(ANNOTATION_DISABLED_AT)
            .cloned();
        let n = RotationNotice::from_data(&message.data).unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.push((n, record));
        Ok(seen.len().to_string())
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// Version 2 of the webhook secret, added and disabled by someone else (an
/// operator at the console): the worker never saw it enabled.
async fn disabled_elsewhere(env: &TestEnv) {
    let id = env.id(WH);
    let v = env.store.add_version(&id, b"made elsewhere").await.unwrap();
    assert_eq!(v.number, 2);
    env.store
        .set_state(&id, 2, StateChange::Disable)
        .await
        .unwrap();
}

#[tokio::test]
async fn finish_announces_a_version_first_seen_disabled_before_recording_it() {
    let env = TestEnv::new(false).await;
    disabled_elsewhere(&env).await;
    let bus = Arc::new(WitnessBus {
        store: env.store.clone(),
        id: env.id(WH),
        seen: Mutex::default(),
        down: false,
    });
    let r = Rotator::new(
        env.store.clone(),
        env.kms.clone(),
        bus.clone(),
        env.settings(),
    );
    let report = r.finish().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let record = env.secret(WH).await.annotations[ANNOTATION_DISABLED_AT].clone();
    assert!(record.contains('2'), "retention starts now: {record}");

    let seen = bus.seen.lock().unwrap().clone();
    let (notice, record_then) = seen
        .iter()
        .find(|(n, _)| n.secret == WH)
        .expect("the bookkeeping write is announced");
    assert_eq!(notice.event, NoticeEvent::Disabled);
    assert_eq!(notice.version, Some(2));
    assert_eq!(
        notice.principal.as_deref(),
        Some(patchpanda_shared::names::PRINCIPAL_ROTATION_WORKER)
    );
    assert_eq!(record_then, &None, "announced before the write");

    // Nothing new the next time: no notice, no write.
    let before = bus.seen.lock().unwrap().len();
    r.finish().await.unwrap();
    assert_eq!(bus.seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn finish_writes_no_bookkeeping_it_could_not_announce() {
    let env = TestEnv::new(false).await;
    disabled_elsewhere(&env).await;
    let bus = Arc::new(WitnessBus {
        store: env.store.clone(),
        id: env.id(WH),
        seen: Mutex::default(),
        down: true,
    });
    let r = Rotator::new(env.store.clone(), env.kms.clone(), bus, env.settings());
    let report = r.finish().await.unwrap();
    assert!(
        report.errors.iter().any(|e| e.starts_with(WH)),
        "{report:?}"
    );
    assert!(
        !env.secret(WH)
            .await
            .annotations
            .contains_key(ANNOTATION_DISABLED_AT),
        "an unannounced write would page as a rotator's change outside a rotation"
    );
    assert_eq!(env.version(WH, 2).await.state, VersionState::Disabled);
}

/// A store whose writes of the rotation lease answer slowly: the clock moves
/// 45 s (more than the alerter's 30 s skew allowance) between the write and
/// its answer. Notes when each lease write was made.
struct SlowLeaseStore {
    inner: Arc<Flaky<MemorySecretStore>>,
    clock: ManualClock,
    lease_writes: Mutex<Vec<DateTime<Utc>>>,
}

#[async_trait]
impl SecretStore for SlowLeaseStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        self.inner.create_secret(id).await
    }
    async fn get_secret(&self, id: &str) -> Result<Secret> {
        self.inner.get_secret(id).await
    }
    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.inner.list_secrets().await
    }
    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.inner.delete_secret(id).await
    }
    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        self.inner.add_version(id, data).await
    }
    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        self.inner.access(id, version).await
    }
    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        self.inner.get_version(id, version).await
    }
    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        self.inner.list_versions(id).await
    }
    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        self.inner.set_state(id, number, change).await
    }
    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        let before = self.inner.get_secret(id).await?;
        let takes_lease = !before.annotations.contains_key(ANNOTATION_ROTATION)
            && update
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_ROTATION));
        let at = self.clock.now();
        let out = self.inner.update_secret(id, update, etag).await;
        if takes_lease && out.is_ok() {
            self.lease_writes.lock().unwrap().push(at);
            self.clock.advance_std(Duration::from_secs(45));
        }
        out
    }
}

#[tokio::test]
async fn the_started_notice_covers_the_lease_write_however_slow_its_answer() {
    let env = TestEnv::new(false).await;
    let store = Arc::new(SlowLeaseStore {
        inner: env.store.clone(),
        clock: env.clock.clone(),
        lease_writes: Mutex::default(),
    });
    let r = Rotator::new(
        store.clone(),
        env.kms.clone(),
        env.bus.clone(),
        env.settings(),
    );
    r.rotate(WH, false).await.unwrap();
    let lease_written = store.lease_writes.lock().unwrap()[0];
    let started = env
        .bus
        .notices()
        .into_iter()
        .find(|n| n.secret == WH && n.event == NoticeEvent::Started)
        .expect("a started notice");
    assert!(
        started.time <= lease_written,
        "the started notice ({}) must not postdate the lease write ({lease_written}): the alerter would file the write as unannounced",
        started.time
    );
}
