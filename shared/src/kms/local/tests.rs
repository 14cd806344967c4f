//! The local keyring's own tests; the shared contract is tests/it/contract.rs.

use std::sync::Arc;

use super::*;
use crate::names;
use crate::testing::RecordingBus;

fn open(dir: &std::path::Path, bus: Option<Arc<RecordingBus>>) -> LocalKms {
    let home = Home::open(dir).unwrap();
    LocalKms::open(
        &home,
        names::PRINCIPAL_ROTATION_WORKER,
        bus.map(|b| b as Arc<dyn Bus>),
    )
    .unwrap()
}

#[tokio::test]
async fn first_open_creates_version_one_as_primary() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path(), None);
    let info = kms.key_info().await.unwrap();
    assert_eq!(info.name, KEY_NAME);
    let primary = info.primary.unwrap();
    assert_eq!(primary.number, 1);
    assert_eq!(primary.state, KeyVersionState::Enabled);
    assert_eq!(info.rotation_period, Some(ROTATION_PERIOD));
    let next = info.next_rotation_time.unwrap();
    let days = (next - Utc::now()).num_days();
    assert!((89..=90).contains(&days), "{days}");
    // A second open (another process) finds the same key.
    let again = open(dir.path(), None);
    assert_eq!(again.list_versions().await.unwrap().len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("kms.db"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn round_trip_and_aad_binding() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path(), None);
    let ct = kms.encrypt(b"data key bytes", b"ctx-a").await.unwrap();
    assert_eq!(&ct[..4], MAGIC);
    assert!(!ct.windows(14).any(|w| w == b"data key bytes"));
    let pt = kms.decrypt(&ct, b"ctx-a").await.unwrap();
    assert_eq!(pt.expose(), b"data key bytes");
    assert!(matches!(
        kms.decrypt(&ct, b"ctx-b").await,
        Err(Error::InvalidArgument(_))
    ));
    let mut tampered = ct.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        kms.decrypt(&tampered, b"ctx-a").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        kms.decrypt(&ct[..10], b"ctx-a").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        kms.decrypt(b"", b"").await,
        Err(Error::InvalidArgument(_))
    ));
    // Relabelling the version makes it fail too.
    let mut relabelled = ct.clone();
    relabelled[7] = 9;
    assert!(matches!(
        kms.decrypt(&relabelled, b"ctx-a").await,
        Err(Error::InvalidArgument(_))
    ));
    let big = vec![0u8; MAX_INPUT + 1];
    assert!(matches!(
        kms.encrypt(&big, b"").await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn rotation_keeps_old_ciphertexts_readable_until_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(RecordingBus::new());
    let kms = open(dir.path(), Some(bus.clone()));
    let old = kms.encrypt(b"one", b"").await.unwrap();
    let v2 = kms.create_version().await.unwrap();
    assert_eq!(v2.number, 2);
    assert_eq!(v2.state, KeyVersionState::Enabled);
    // Created, not yet primary.
    assert_eq!(kms.key_info().await.unwrap().primary.unwrap().number, 1);
    let info = kms.set_primary(2).await.unwrap();
    assert_eq!(info.primary.unwrap().number, 2);
    let new = kms.encrypt(b"two", b"").await.unwrap();
    assert_eq!(&new[4..8], &2u32.to_be_bytes());
    assert_eq!(kms.decrypt(&old, b"").await.unwrap().expose(), b"one");
    assert_eq!(kms.decrypt(&new, b"").await.unwrap().expose(), b"two");

    kms.set_version_state(1, KeyVersionState::Disabled)
        .await
        .unwrap();
    assert!(matches!(
        kms.decrypt(&old, b"").await,
        Err(Error::FailedPrecondition(_))
    ));
    kms.set_version_state(1, KeyVersionState::Enabled)
        .await
        .unwrap();
    assert_eq!(kms.decrypt(&old, b"").await.unwrap().expose(), b"one");

    // The primary cannot be destroyed; another version can.
    assert!(matches!(
        kms.destroy_version(2).await,
        Err(Error::FailedPrecondition(_))
    ));
    let d = kms.destroy_version(1).await.unwrap();
    assert_eq!(d.state, KeyVersionState::DestroyScheduled);
    assert!(matches!(
        kms.decrypt(&old, b"").await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        kms.set_primary(1).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(kms.set_primary(7).await, Err(Error::NotFound(_))));
    let r = kms.restore_version(1).await.unwrap();
    assert_eq!(r.state, KeyVersionState::Disabled);

    // Audit: only admin operations, each with its Cloud KMS method name.
    let methods: Vec<String> = bus
        .audit_entries()
        .into_iter()
        .map(|e| e.proto_payload.unwrap().method_name)
        .collect();
    assert_eq!(
        methods,
        [
            method::CREATE_CRYPTO_KEY_VERSION,
            method::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
            method::UPDATE_CRYPTO_KEY_VERSION,
            method::UPDATE_CRYPTO_KEY_VERSION,
            method::DESTROY_CRYPTO_KEY_VERSION,
            method::DESTROY_CRYPTO_KEY_VERSION,
            method::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
            method::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
            method::RESTORE_CRYPTO_KEY_VERSION,
        ]
    );
    let entries = bus.audit_entries();
    let failed = &entries[4].proto_payload.as_ref().unwrap();
    assert_eq!(failed.status.as_ref().unwrap().code, 9);
    assert_eq!(
        entries[0].principal(),
        Some(names::PRINCIPAL_ROTATION_WORKER)
    );
    assert!(!entries[0].is_data_access());
}

#[tokio::test]
async fn expired_destruction_erases_material() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path(), None);
    kms.create_version().await.unwrap();
    let ct = {
        kms.set_primary(2).await.unwrap();
        let ct = kms.encrypt(b"x", b"").await.unwrap();
        kms.set_primary(1).await.unwrap();
        ct
    };
    kms.destroy_version(2).await.unwrap();
    kms.db
        .run(|c| purge_expired(c, Utc::now() + chrono::Duration::days(31)))
        .await
        .unwrap();
    let versions = kms.list_versions().await.unwrap();
    assert_eq!(versions[1].state, KeyVersionState::Destroyed);
    assert!(matches!(
        kms.decrypt(&ct, b"").await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        kms.restore_version(2).await,
        Err(Error::FailedPrecondition(_))
    ));
    let material: Option<Vec<u8>> = kms
        .db
        .run(|c| {
            c.query_row(
                "SELECT material FROM key_versions WHERE number = 2",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite_error)
        })
        .await
        .unwrap();
    assert!(material.is_none());
}

#[tokio::test]
async fn a_due_scheduled_rotation_makes_a_new_primary() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path(), None);
    let old = kms.encrypt(b"before", b"").await.unwrap();
    let past = ts(Utc::now() - chrono::Duration::days(1));
    kms.db
        .run(move |c| {
            c.execute("UPDATE crypto_key SET next_rotation_time = ?1", [past])
                .map_err(sqlite_error)
        })
        .await
        .unwrap();
    let info = kms.key_info().await.unwrap();
    assert_eq!(info.primary.unwrap().number, 2);
    let next = info.next_rotation_time.unwrap();
    assert!(next > Utc::now() + chrono::Duration::days(88), "{next}");
    // Idempotent until the next period, and old ciphertexts still open.
    assert_eq!(kms.key_info().await.unwrap().primary.unwrap().number, 2);
    assert_eq!(kms.list_versions().await.unwrap().len(), 2);
    assert_eq!(kms.decrypt(&old, b"").await.unwrap().expose(), b"before");
}

#[test]
fn debug_shows_no_material() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path(), None);
    let shown = format!("{kms:?}");
    assert!(shown.contains("patchpanda-crypto-key"));
    assert!(!shown.contains("material"));
}
