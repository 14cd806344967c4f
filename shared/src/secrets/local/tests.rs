//! The local store's own tests; the shared contract is tests/it/contract.rs.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::DateTime;
use serde_json::Value;

use super::*;
use crate::audit_log::sm;
use crate::bus::Bus;
use crate::kms::local::LocalKms;
use crate::secrets::{Secret, SecretStore, SecretUpdate, StateChange, VersionRef, VersionState};
use crate::testing::{Call, Flaky, RecordingBus};
use crate::{Error, names};

mod notifications;

const ID: &str = "patchpanda-webhook-secret";

struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
    kms: Arc<LocalKms>,
    bus: Arc<Flaky<RecordingBus>>,
    store: LocalSecretStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path()).unwrap();
    let bus = Arc::new(Flaky::new(RecordingBus::new()));
    let kms = Arc::new(LocalKms::open(&home, names::PRINCIPAL_OPERATOR_DEFAULT, None).unwrap());
    let store = reopen(&home, &kms, &bus);
    Fixture {
        _dir: dir,
        home,
        kms,
        bus,
        store,
    }
}

/// Another "process" on the same home.
fn reopen(home: &Home, kms: &Arc<LocalKms>, bus: &Arc<Flaky<RecordingBus>>) -> LocalSecretStore {
    LocalSecretStore::open(
        home,
        names::PRINCIPAL_OPERATOR_DEFAULT,
        kms.clone(),
        Some(bus.clone() as Arc<dyn Bus>),
    )
    .unwrap()
}

async fn value(store: &LocalSecretStore, v: VersionRef) -> Result<Vec<u8>> {
    store
        .access(ID, &v)
        .await
        .map(|a| a.value.expose().to_vec())
}

fn raw(home: &Home, sql: &str) {
    home.db("secrets").unwrap().execute_batch(sql).unwrap();
}

#[tokio::test]
async fn versions_states_and_latest() {
    let f = fixture();
    let s = &f.store;
    let created = s.create_secret(ID).await.unwrap();
    assert_eq!(created.id, ID);
    assert!(created.aliases.is_empty());
    assert!(matches!(
        s.create_secret(ID).await,
        Err(Error::AlreadyExists(_))
    ));
    // No versions yet: latest is not found.
    assert!(matches!(
        value(s, VersionRef::Latest).await,
        Err(Error::NotFound(_))
    ));
    for (i, v) in [b"one", b"two", b"3rd"].iter().enumerate() {
        let added = s.add_version(ID, *v).await.unwrap();
        assert_eq!(added.number, i as u64 + 1);
        assert_eq!(added.state, VersionState::Enabled);
        assert_eq!(added.secret, ID);
    }
    assert_eq!(value(s, VersionRef::Number(2)).await.unwrap(), b"two");
    assert_eq!(value(s, VersionRef::Latest).await.unwrap(), b"3rd");
    let got = s.access(ID, &VersionRef::Latest).await.unwrap();
    assert_eq!(got.version.number, 3);

    // `latest` is the newest version even when it is disabled.
    let d = s.set_state(ID, 3, StateChange::Disable).await.unwrap();
    assert_eq!(d.state, VersionState::Disabled);
    match value(s, VersionRef::Latest).await {
        Err(Error::FailedPrecondition(m)) => {
            assert!(m.contains("versions/3] is in DISABLED state"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(
        s.get_version(ID, &VersionRef::Latest).await.unwrap().number,
        3
    );
    s.set_state(ID, 3, StateChange::Enable).await.unwrap();
    assert_eq!(value(s, VersionRef::Number(3)).await.unwrap(), b"3rd");

    // Destroy: terminal, payload erased, metadata kept.
    let destroyed = s.set_state(ID, 1, StateChange::Destroy).await.unwrap();
    assert_eq!(destroyed.state, VersionState::Destroyed);
    assert!(destroyed.destroy_time.is_some());
    assert!(matches!(
        value(s, VersionRef::Number(1)).await,
        Err(Error::FailedPrecondition(_))
    ));
    for change in [
        StateChange::Enable,
        StateChange::Disable,
        StateChange::Destroy,
    ] {
        assert!(matches!(
            s.set_state(ID, 1, change).await,
            Err(Error::FailedPrecondition(_))
        ));
    }
    let (sealed, crc): (Option<String>, Option<u32>) = f
        .home
        .db("secrets")
        .unwrap()
        .query_row(
            "SELECT sealed, crc32c FROM versions WHERE secret = ?1 AND number = 1",
            [ID],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(sealed.is_none() && crc.is_none());
    let listed = s.list_versions(ID).await.unwrap();
    let numbers: Vec<u64> = listed.iter().map(|v| v.number).collect();
    assert_eq!(numbers, [3, 2, 1]);
    assert_eq!(listed[2].state, VersionState::Destroyed);

    // Unknown things.
    assert!(matches!(
        value(s, VersionRef::Number(9)).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        value(s, VersionRef::alias("nope")).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.set_state(ID, 9, StateChange::Disable).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.get_secret("missing").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.add_version("missing", b"x").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.list_versions("missing").await,
        Err(Error::NotFound(_))
    ));

    // Numbers are never reused, even after destroy.
    assert_eq!(s.add_version(ID, b"four").await.unwrap().number, 4);

    // Delete removes everything; a new secret of the same id starts over.
    s.create_secret("other").await.unwrap();
    let ids: Vec<String> = s
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ids, ["other", ID]);
    s.delete_secret(ID).await.unwrap();
    assert!(matches!(s.delete_secret(ID).await, Err(Error::NotFound(_))));
    assert!(matches!(
        value(s, VersionRef::Number(2)).await,
        Err(Error::NotFound(_))
    ));
    s.create_secret(ID).await.unwrap();
    assert_eq!(s.add_version(ID, b"again").await.unwrap().number, 1);
}

#[tokio::test]
async fn aliases_and_etags() {
    let f = fixture();
    let s = &f.store;
    let first = s.create_secret(ID).await.unwrap();
    s.add_version(ID, b"v1").await.unwrap();
    s.add_version(ID, b"v2").await.unwrap();
    // Adding versions does not change the secret's etag.
    let before = s.get_secret(ID).await.unwrap();
    assert_eq!(before.etag, first.etag);
    assert!(before.etag.starts_with('"') && before.etag.ends_with('"'));

    let aliases = BTreeMap::from([
        (names::ALIAS_CURRENT.to_string(), 2),
        (names::ALIAS_PREVIOUS.to_string(), 1),
    ]);
    let update = SecretUpdate {
        aliases: Some(aliases.clone()),
        annotations: Some(BTreeMap::from([("step".to_string(), "set".to_string())])),
    };
    let updated = s
        .update_secret(ID, update.clone(), Some(&before.etag))
        .await
        .unwrap();
    assert_eq!(updated.aliases, aliases);
    assert_eq!(updated.annotations["step"], "set");
    assert_ne!(updated.etag, before.etag);
    assert_eq!(s.get_secret(ID).await.unwrap(), updated);
    assert_eq!(value(s, VersionRef::alias("current")).await.unwrap(), b"v2");
    assert_eq!(
        value(s, VersionRef::alias("previous")).await.unwrap(),
        b"v1"
    );

    // A stale etag is FailedPrecondition and changes nothing.
    let stale = SecretUpdate {
        aliases: Some(BTreeMap::new()),
        annotations: None,
    };
    assert!(matches!(
        s.update_secret(ID, stale.clone(), Some(&before.etag)).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(s.get_secret(ID).await.unwrap(), updated);
    // Without an etag the update always applies.
    let cleared = s.update_secret(ID, stale, None).await.unwrap();
    assert!(cleared.aliases.is_empty());
    assert_eq!(cleared.annotations["step"], "set", "annotations untouched");

    let with = |pairs: &[(&str, u64)]| SecretUpdate {
        aliases: Some(pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()),
        annotations: None,
    };
    let invalid = |r: Result<Secret>| {
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{:?}",
            r.map(|_| ())
        )
    };
    invalid(s.update_secret(ID, with(&[("current", 7)]), None).await);
    invalid(s.update_secret(ID, with(&[("current", 0)]), None).await);
    for bad in ["latest", "NEW", "1abc", "", "has space", &"a".repeat(64)] {
        invalid(s.update_secret(ID, with(&[(bad, 1)]), None).await);
    }
    let many: Vec<(String, u64)> = (0..51).map(|i| (format!("a{i}"), 1)).collect();
    invalid(
        s.update_secret(
            ID,
            SecretUpdate {
                aliases: Some(many.into_iter().collect()),
                annotations: None,
            },
            None,
        )
        .await,
    );
    for bad in ["-x", "x-", "", "a/b", &"k".repeat(64)] {
        invalid(
            s.update_secret(
                ID,
                SecretUpdate {
                    aliases: None,
                    annotations: Some(BTreeMap::from([(bad.to_string(), "v".to_string())])),
                },
                None,
            )
            .await,
        );
    }
    invalid(
        s.update_secret(
            ID,
            SecretUpdate {
                aliases: None,
                annotations: Some(BTreeMap::from([(
                    "big".to_string(),
                    "v".repeat(MAX_ANNOTATIONS_BYTES),
                )])),
            },
            None,
        )
        .await,
    );
    invalid(s.update_secret(ID, SecretUpdate::default(), None).await);
    invalid(
        s.update_secret("bad/id", with(&[("current", 1)]), None)
            .await,
    );
    assert!(matches!(
        s.update_secret("missing", with(&[("current", 1)]), None)
            .await,
        Err(Error::NotFound(_))
    ));
    // Nothing above changed the secret.
    assert_eq!(s.get_secret(ID).await.unwrap(), cleared);

    // Aliases may point to a disabled version, never to a destroyed one,
    // and an aliased version cannot be destroyed.
    s.set_state(ID, 1, StateChange::Disable).await.unwrap();
    s.update_secret(ID, with(&[("previous", 1), ("current", 2)]), None)
        .await
        .unwrap();
    assert!(matches!(
        value(s, VersionRef::alias("previous")).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        s.set_state(ID, 1, StateChange::Destroy).await,
        Err(Error::FailedPrecondition(_))
    ));
    s.update_secret(ID, with(&[("current", 2)]), None)
        .await
        .unwrap();
    s.set_state(ID, 1, StateChange::Destroy).await.unwrap();
    assert!(matches!(
        s.update_secret(ID, with(&[("previous", 1)]), None).await,
        Err(Error::FailedPrecondition(_))
    ));
}

#[tokio::test]
async fn ids_and_payload_sizes() {
    let f = fixture();
    let s = &f.store;
    for bad in ["", "a/b", "with space", "dot.ted", "ünï", &"x".repeat(256)] {
        assert!(
            matches!(s.create_secret(bad).await, Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
        assert!(matches!(
            s.access(bad, &VersionRef::Latest).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    let longest = "A_z-9".repeat(51);
    assert_eq!(longest.len(), 255);
    s.create_secret(&longest).await.unwrap();
    s.create_secret(ID).await.unwrap();
    let max = vec![7u8; MAX_PAYLOAD];
    assert_eq!(s.add_version(ID, &max).await.unwrap().number, 1);
    assert_eq!(value(s, VersionRef::Number(1)).await.unwrap(), max);
    assert!(matches!(
        s.add_version(ID, &vec![7u8; MAX_PAYLOAD + 1]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.add_version(ID, b"").await,
        Err(Error::InvalidArgument(_))
    ));
    // Rejected adds consumed no number.
    assert_eq!(s.add_version(ID, b"x").await.unwrap().number, 2);
}

#[tokio::test]
async fn crc_and_row_swaps_are_data_loss() {
    let f = fixture();
    let s = &f.store;
    s.create_secret(ID).await.unwrap();
    s.add_version(ID, b"first value").await.unwrap();
    s.add_version(ID, b"second value").await.unwrap();
    raw(
        &f.home,
        &format!("UPDATE versions SET crc32c = crc32c + 1 WHERE secret = '{ID}' AND number = 1"),
    );
    match value(s, VersionRef::Number(1)).await {
        Err(Error::DataLoss(m)) => assert!(m.contains("CRC32C"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Moving version 2's sealed payload into version 1's row fails the
    // AAD binding, even with a matching checksum.
    raw(
        &f.home,
        &format!(
            "UPDATE versions SET (sealed, crc32c) = (SELECT sealed, crc32c FROM versions WHERE secret = '{ID}' AND number = 2)
             WHERE secret = '{ID}' AND number = 1"
        ),
    );
    match value(s, VersionRef::Number(1)).await {
        Err(Error::DataLoss(m)) => assert!(m.contains("integrity"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    raw(
        &f.home,
        &format!("UPDATE versions SET sealed = 'garbage' WHERE secret = '{ID}' AND number = 2"),
    );
    assert!(matches!(
        value(s, VersionRef::Number(2)).await,
        Err(Error::DataLoss(_))
    ));
}

#[tokio::test]
async fn kms_version_disabled_blocks_access() {
    let f = fixture();
    let s = &f.store;
    s.create_secret(ID).await.unwrap();
    s.add_version(ID, b"under key 1").await.unwrap();
    let v2 = f.kms.create_version().await.unwrap();
    f.kms.set_primary(v2.number).await.unwrap();
    s.add_version(ID, b"under key 2").await.unwrap();
    assert_eq!(
        value(s, VersionRef::Number(1)).await.unwrap(),
        b"under key 1"
    );
    f.kms
        .set_version_state(1, crate::kms::KeyVersionState::Disabled)
        .await
        .unwrap();
    assert!(matches!(
        value(s, VersionRef::Number(1)).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(
        value(s, VersionRef::Number(2)).await.unwrap(),
        b"under key 2"
    );
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn no_plaintext_on_disk() {
    let f = fixture();
    let s = &f.store;
    let marker = b"PLAINTEXT-MARKER-4f1c9a2e-do-not-store";
    s.create_secret(ID).await.unwrap();
    for _ in 0..3 {
        s.add_version(ID, marker).await.unwrap();
    }
    s.update_secret(
        ID,
        SecretUpdate {
            aliases: Some(BTreeMap::from([("current".to_string(), 3)])),
            annotations: None,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        value(s, VersionRef::alias("current")).await.unwrap(),
        marker
    );
    let files = files_under(f.home.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "secrets.db-wal"), "{names:?}");
    assert!(names.iter().any(|n| n == "secrets.db"), "{names:?}");
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "plaintext in {}",
            p.display()
        );
    }
    // Nor in what the bus was given.
    for (_, m) in f.bus.inner().messages().iter() {
        assert!(!m.data.windows(marker.len()).any(|w| w == marker));
    }
}

#[tokio::test]
async fn two_processes_share_a_home() {
    let f = fixture();
    let other = reopen(&f.home, &f.kms, &f.bus);
    f.store.create_secret(ID).await.unwrap();
    let a = &f.store;
    let b = &other;
    let adds = (0..10).map(|i| async move {
        let s = if i % 2 == 0 { a } else { b };
        s.add_version(ID, format!("value-{i}").as_bytes())
            .await
            .unwrap()
            .number
    });
    let mut numbers = futures::future::join_all(adds).await;
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=10).collect::<Vec<u64>>());
    for n in 1..=10u64 {
        let v = b.access(ID, &VersionRef::Number(n)).await.unwrap();
        assert!(v.value.expose_str().unwrap().starts_with("value-"));
    }
    f.bus.inner().clear();
}
