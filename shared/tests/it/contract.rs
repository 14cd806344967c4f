//! The backend contract: one set of behavioural checks, written once against
//! `&dyn SecretStore` and `&dyn Kms`, run against the local backends and
//! against the gcp backends over in-memory fakes of Secret Manager and Cloud
//! KMS (stub implementations that follow the services' documented
//! semantics), and against real GCP when asked to:
//!
//! PATCHPANDA_LIVE_GCP_PROJECT=my-project [PATCHPANDA_LIVE_KMS_KEY=projects/.../cryptoKeys/K] \
//!   [PATCHPANDA_LIVE_KMS_SCRATCH_KEY=projects/.../cryptoKeys/SCRATCH] \
//!   [PATCHPANDA_LIVE_PUBSUB_TOPIC=topic-id] cargo test -p patchpanda-shared --test it contract -- --nocapture

mod fake_kms;
mod fake_secret_manager;

use std::collections::BTreeMap;
use std::sync::Arc;

use patchpanda_shared::Error;
use patchpanda_shared::bus::gcp::GcpBus;
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::kms::gcp::GcpKms;
use patchpanda_shared::kms::local::LocalKms;
use patchpanda_shared::kms::{KeyVersionState, Kms};
use patchpanda_shared::local::Home;
use patchpanda_shared::secrets::gcp::GcpSecretStore;
use patchpanda_shared::secrets::local::LocalSecretStore;
use patchpanda_shared::secrets::{
    SecretStore, SecretUpdate, StateChange, VersionRef, VersionState,
};

use fake_kms::FakeKms;
use fake_secret_manager::FakeSecretManager;

const PRINCIPAL: &str = "test@patchpanda.local";
const KEY_NAME: &str =
    "projects/p1/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key";

/// Asserts that a result failed with the given error variant.
macro_rules! assert_err {
    ($result:expr, $variant:ident) => {{
        match $result {
            Err(Error::$variant(_)) => {}
            other => panic!(
                "{}: expected {}, got {:?}",
                stringify!($result),
                stringify!($variant),
                other.map(|_| "Ok(..)")
            ),
        }
    }};
}

/// Re-evaluates `$result` until it matches `$expected` or `$settle` has
/// passed: Secret Manager documents that disabling or destroying a version
/// "takes time to propagate through the system", so the live run waits for
/// what the local store and the fakes do at once.
macro_rules! eventually {
    ($settle:expr, $result:expr, $expected:pat) => {{
        let deadline = std::time::Instant::now() + $settle;
        loop {
            let r = $result;
            #[allow(clippy::redundant_pattern_matching)]
            let done = matches!(r, $expected);
            if done || std::time::Instant::now() >= deadline {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }};
}

/// How long the contract waits for a version's state change to reach
/// accesses: nothing for local and fakes, a minute for real GCP.
const NO_SETTLING: std::time::Duration = std::time::Duration::ZERO;
const LIVE_SETTLING: std::time::Duration = std::time::Duration::from_secs(60);

// After the macros: the module uses them.
mod secret_store;
use secret_store::secret_store_contract;

fn aliases(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

/// Encrypt/decrypt as the envelope code relies on it. Changes nothing.
async fn kms_crypto_contract(kms: &dyn Kms) {
    let info = kms.key_info().await.unwrap();
    assert!(info.name.contains("/cryptoKeys/"), "{}", info.name);
    let primary = info.primary.expect("the key has a primary version");
    assert_eq!(primary.state, KeyVersionState::Enabled);

    let ct = kms
        .encrypt(b"data key bytes", b"projects/x/secrets/y/versions/1")
        .await
        .unwrap();
    assert!(
        !ct.windows(14).any(|w| w == b"data key bytes"),
        "ciphertext shows the plaintext"
    );
    let pt = kms
        .decrypt(&ct, b"projects/x/secrets/y/versions/1")
        .await
        .unwrap();
    assert_eq!(pt.expose(), b"data key bytes");

    // The AAD binds: a different one fails, so does none.
    assert_err!(
        kms.decrypt(&ct, b"projects/x/secrets/y/versions/2").await,
        InvalidArgument
    );
    assert_err!(kms.decrypt(&ct, b"").await, InvalidArgument);
    // Tampering fails.
    let mut tampered = ct.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert_err!(
        kms.decrypt(&tampered, b"projects/x/secrets/y/versions/1")
            .await,
        InvalidArgument
    );
    assert_err!(
        kms.decrypt(b"not a ciphertext at all", b"").await,
        InvalidArgument
    );

    // Encryption is randomized.
    let again = kms
        .encrypt(b"data key bytes", b"projects/x/secrets/y/versions/1")
        .await
        .unwrap();
    assert_ne!(ct, again);
    // Empty AAD is fine on both sides.
    let no_aad = kms.encrypt(b"k", b"").await.unwrap();
    assert_eq!(kms.decrypt(&no_aad, b"").await.unwrap().expose(), b"k");

    let listed = kms.list_versions().await.unwrap();
    assert!(listed.iter().any(|v| v.number == primary.number));
    assert!(
        listed.windows(2).all(|w| w[0].number < w[1].number),
        "{listed:?}"
    );
}

/// Key rotation as the rotation worker does it. Creates versions and moves
/// the primary: for fresh keys only.
async fn kms_rotation_contract(kms: &dyn Kms) {
    let before = kms.key_info().await.unwrap();
    let old_primary = before.primary.unwrap().number;
    let old_ct = kms
        .encrypt(b"sealed before rotation", b"aad")
        .await
        .unwrap();

    let new = kms.create_version().await.unwrap();
    assert!(new.number > old_primary);
    assert_eq!(new.state, KeyVersionState::Enabled);
    // A new version is not primary until made so.
    assert_eq!(
        kms.key_info().await.unwrap().primary.unwrap().number,
        old_primary
    );
    let numbers: Vec<u64> = kms
        .list_versions()
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    assert!(
        numbers.contains(&new.number) && numbers.contains(&old_primary),
        "{numbers:?}"
    );

    let after = kms.set_primary(new.number).await.unwrap();
    assert_eq!(after.primary.unwrap().number, new.number);
    assert_eq!(
        kms.key_info().await.unwrap().primary.unwrap().number,
        new.number
    );

    // Old ciphertexts still decrypt; new ones too.
    assert_eq!(
        kms.decrypt(&old_ct, b"aad").await.unwrap().expose(),
        b"sealed before rotation"
    );
    let new_ct = kms.encrypt(b"sealed after rotation", b"aad").await.unwrap();
    assert_eq!(
        kms.decrypt(&new_ct, b"aad").await.unwrap().expose(),
        b"sealed after rotation"
    );

    assert_err!(kms.set_primary(9_999).await, NotFound);
    assert_eq!(
        kms.key_info().await.unwrap().primary.unwrap().number,
        new.number
    );
}

/// Enables or disables one key version: the `Kms` trait has no such call
/// (the gateway never disables key versions), but what the service does
/// with disabled ones is what the envelope code meets when an operator
/// disables one.
enum KeySwitch<'a> {
    /// Through the client library (UpdateCryptoKeyVersion on `state`).
    Client(
        &'a google_cloud_kms_v1::client::KeyManagementService,
        &'a str,
    ),
    Local(&'a LocalKms),
}

impl KeySwitch<'_> {
    async fn set(&self, number: u64, enabled: bool) {
        use google_cloud_kms_v1::model;
        use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState as S;
        match self {
            KeySwitch::Client(client, key) => {
                let state = if enabled { S::Enabled } else { S::Disabled };
                client
                    .update_crypto_key_version()
                    .set_crypto_key_version(
                        model::CryptoKeyVersion::new()
                            .set_name(format!("{key}/cryptoKeyVersions/{number}"))
                            .set_state(state),
                    )
                    .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
                    .send()
                    .await
                    .unwrap();
            }
            KeySwitch::Local(kms) => {
                let state = if enabled {
                    KeyVersionState::Enabled
                } else {
                    KeyVersionState::Disabled
                };
                kms.set_version_state(number, state).await.unwrap();
            }
        }
    }
}

/// Cloud KMS with a disabled version: it can neither encrypt (as primary)
/// nor decrypt, nor become primary; FAILED_PRECONDITION each time (the docs
/// say only that "requests to use the key fail": unverified, live test).
/// Creates versions and moves the primary: for scratch keys only.
async fn kms_disabled_version_contract(
    kms: &dyn Kms,
    switch: KeySwitch<'_>,
    settle: std::time::Duration,
) {
    let n = kms.create_version().await.unwrap().number;
    kms.set_primary(n).await.unwrap();
    let ct = kms.encrypt(b"under n", b"aad").await.unwrap();
    switch.set(n, false).await;
    assert_err!(
        eventually!(
            settle,
            kms.decrypt(&ct, b"aad").await,
            Err(Error::FailedPrecondition(_))
        ),
        FailedPrecondition
    );
    assert_err!(
        eventually!(
            settle,
            kms.encrypt(b"x", b"").await,
            Err(Error::FailedPrecondition(_))
        ),
        FailedPrecondition
    );
    let m = kms.create_version().await.unwrap().number;
    kms.set_primary(m).await.unwrap();
    assert_err!(kms.set_primary(n).await, FailedPrecondition);
    // Re-enabled, it decrypts what it encrypted.
    switch.set(n, true).await;
    assert_eq!(
        eventually!(settle, kms.decrypt(&ct, b"aad").await, Ok(_))
            .unwrap()
            .expose(),
        b"under n"
    );
}

fn local_home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path()).unwrap();
    (dir, home)
}

#[tokio::test]
async fn local_secret_store_meets_the_contract() {
    let (_dir, home) = local_home();
    let kms = LocalKms::open(&home, PRINCIPAL, None).unwrap();
    let store = LocalSecretStore::open(&home, PRINCIPAL, Arc::new(kms), None).unwrap();
    secret_store_contract(&store, "contract-", NO_SETTLING).await;
}

/// The test double other crates use answers as the real stores do.
#[tokio::test]
async fn memory_secret_store_meets_the_contract() {
    let store = patchpanda_shared::testing::MemorySecretStore::new();
    secret_store_contract(&store, "contract-", NO_SETTLING).await;
}

#[tokio::test]
async fn gcp_secret_store_meets_the_contract() {
    let store = GcpSecretStore::from_stub("p1", FakeSecretManager::new("p1"));
    secret_store_contract(&store, "contract-", NO_SETTLING).await;
}

#[tokio::test]
async fn local_kms_meets_the_contract() {
    let (_dir, home) = local_home();
    let kms = LocalKms::open(&home, PRINCIPAL, None).unwrap();
    kms_crypto_contract(&kms).await;
    kms_rotation_contract(&kms).await;
    kms_disabled_version_contract(&kms, KeySwitch::Local(&kms), NO_SETTLING).await;
}

#[tokio::test]
async fn gcp_kms_meets_the_contract() {
    let fake = FakeKms::new(KEY_NAME);
    let kms = GcpKms::from_stub(KEY_NAME, fake.clone());
    kms_crypto_contract(&kms).await;
    kms_rotation_contract(&kms).await;
    let client = google_cloud_kms_v1::client::KeyManagementService::from_stub(fake);
    kms_disabled_version_contract(&kms, KeySwitch::Client(&client, KEY_NAME), NO_SETTLING).await;
}

/// What only a fake can show: a payload corrupted at rest is caught by the
/// CRC32C the service returns, not handed out.
#[tokio::test]
async fn gcp_secret_store_refuses_a_payload_that_fails_its_checksum() {
    let fake = FakeSecretManager::new("p1");
    let store = GcpSecretStore::from_stub("p1", fake.clone());
    store
        .create_secret("patchpanda-webhook-secret")
        .await
        .unwrap();
    store
        .add_version("patchpanda-webhook-secret", b"hunter2")
        .await
        .unwrap();
    fake.corrupt("patchpanda-webhook-secret", 1);
    let err = store
        .access("patchpanda-webhook-secret", &VersionRef::Number(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DataLoss(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Requests for another project are the service's to refuse; the store
/// only ever names its own.
#[tokio::test]
async fn gcp_secret_store_names_only_its_own_project() {
    let store = GcpSecretStore::from_stub("p2", FakeSecretManager::new("p1"));
    assert_err!(
        store.get_secret("patchpanda-webhook-secret").await,
        PermissionDenied
    );
    assert_err!(store.list_secrets().await, PermissionDenied);
}

fn live_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Real Secret Manager (and Cloud KMS) with Application Default Credentials.
/// Uses unique secret ids and deletes them, also when a check fails. The KMS
/// part only encrypts and decrypts: it never creates versions or moves the
/// primary of a real key.
#[tokio::test]
async fn live_gcp_meets_the_contract() {
    let Some(project) = live_var("PATCHPANDA_LIVE_GCP_PROJECT") else {
        eprintln!(
            "SKIPPED live GCP test: set PATCHPANDA_LIVE_GCP_PROJECT (and optionally PATCHPANDA_LIVE_KMS_KEY=projects/P/locations/L/keyRings/R/cryptoKeys/K, PATCHPANDA_LIVE_PUBSUB_TOPIC=topic-id) to run it against real Secret Manager, Cloud KMS and Pub/Sub"
        );
        return;
    };
    let store = Arc::new(GcpSecretStore::new(&project).await.unwrap());
    let prefix = format!("patchpanda-contract-{}-", uuid::Uuid::new_v4().simple());
    let run = {
        let store = store.clone();
        let prefix = prefix.clone();
        tokio::spawn(
            async move { secret_store_contract(store.as_ref(), &prefix, LIVE_SETTLING).await },
        )
    };
    let outcome = run.await;
    // Clean up whatever a failed run left behind before reporting it.
    for suffix in ["a", "b", "c"] {
        let _ = store.delete_secret(&format!("{prefix}{suffix}")).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }

    // Publishing puts a real message on the topic: opt in by naming one.
    match live_var("PATCHPANDA_LIVE_PUBSUB_TOPIC") {
        Some(topic) => {
            let bus = GcpBus::new(&project)
                .await
                .unwrap()
                .with_check_topic(&topic);
            bus.check().await.unwrap();
            let id = bus
                .publish(
                    &topic,
                    Message::new(&b"{\"patchpanda\":\"contract test\"}"[..])
                        .attribute("source", "patchpanda-contract-test")
                        .ordering_key("contract"),
                )
                .await
                .unwrap();
            assert!(!id.is_empty());
            assert_err!(
                bus.publish(
                    "patchpanda-no-such-topic-for-contract",
                    Message::new(&b"x"[..])
                )
                .await,
                NotFound
            );
        }
        None => eprintln!("SKIPPED live Pub/Sub part: set PATCHPANDA_LIVE_PUBSUB_TOPIC"),
    }

    match live_var("PATCHPANDA_LIVE_KMS_KEY") {
        Some(key) => {
            let kms = GcpKms::new(&key).await.unwrap();
            kms_crypto_contract(&kms).await;
        }
        None => eprintln!("SKIPPED live Cloud KMS part: set PATCHPANDA_LIVE_KMS_KEY"),
    }

    // Key-version management changes the key for good (versions cannot be
    // deleted): only on a key made for this test.
    match live_var("PATCHPANDA_LIVE_KMS_SCRATCH_KEY") {
        Some(key) => {
            let kms = GcpKms::new(&key).await.unwrap();
            kms_crypto_contract(&kms).await;
            kms_rotation_contract(&kms).await;
            let client = google_cloud_kms_v1::client::KeyManagementService::builder()
                .build()
                .await
                .unwrap();
            kms_disabled_version_contract(&kms, KeySwitch::Client(&client, &key), LIVE_SETTLING)
                .await;
        }
        None => eprintln!(
            "SKIPPED live Cloud KMS key-version part: set PATCHPANDA_LIVE_KMS_SCRATCH_KEY to a key made for this test (it creates versions, moves the primary and disables a version)"
        ),
    }
}

/// Secret Manager's version etags, through the client library against the
/// fake (the store itself sends none): a change that changes nothing still
/// makes a new etag, and a stale one fails FAILED_PRECONDITION
/// (https://cloud.google.com/secret-manager/docs/etags).
#[tokio::test]
async fn fake_secret_manager_version_etags_follow_the_docs() {
    use google_cloud_gax::error::rpc::Code;
    use google_cloud_secretmanager_v1::client::SecretManagerService;
    use google_cloud_secretmanager_v1::model;

    let fake = FakeSecretManager::new("p1");
    let client = SecretManagerService::from_stub(fake.clone());
    let store = GcpSecretStore::from_stub("p1", fake);
    store.create_secret("s").await.unwrap();
    store.add_version("s", b"v").await.unwrap();
    let name = "projects/p1/secrets/s/versions/1";
    let first: model::SecretVersion = client
        .get_secret_version()
        .set_name(name)
        .send()
        .await
        .unwrap();
    assert!(!first.etag.is_empty());
    // Enabling an enabled version changes nothing but its etag.
    let again = client
        .enable_secret_version()
        .set_name(name)
        .set_etag(first.etag.clone())
        .send()
        .await
        .unwrap();
    assert_ne!(again.etag, first.etag);
    let stale = client
        .disable_secret_version()
        .set_name(name)
        .set_etag(first.etag.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        stale.status().map(|s| s.code),
        Some(Code::FailedPrecondition)
    );
    // The secret's own etag guards DeleteSecret the same way.
    let stale = client
        .delete_secret()
        .set_name("projects/p1/secrets/s")
        .set_etag("\"stale\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        stale.status().map(|s| s.code),
        Some(Code::FailedPrecondition)
    );
    store.get_secret("s").await.unwrap();
}

/// Cloud KMS's input limits, through the client library against the fake
/// (GcpKms refuses oversized inputs before calling): 64 KiB of plaintext and
/// of AAD for SOFTWARE keys.
#[tokio::test]
async fn fake_kms_enforces_the_documented_input_limits() {
    use google_cloud_gax::error::rpc::Code;
    use google_cloud_kms_v1::client::KeyManagementService;

    let client = KeyManagementService::from_stub(FakeKms::new(KEY_NAME));
    let max = bytes::Bytes::from(vec![1u8; 64 * 1024]);
    let over = bytes::Bytes::from(vec![1u8; 64 * 1024 + 1]);
    client
        .encrypt()
        .set_name(KEY_NAME)
        .set_plaintext(max.clone())
        .set_additional_authenticated_data(max)
        .send()
        .await
        .unwrap();
    for (pt, aad) in [
        (over.clone(), bytes::Bytes::new()),
        (bytes::Bytes::from_static(b"k"), over),
    ] {
        let err = client
            .encrypt()
            .set_name(KEY_NAME)
            .set_plaintext(pt)
            .set_additional_authenticated_data(aad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.code), Some(Code::InvalidArgument));
    }
}
