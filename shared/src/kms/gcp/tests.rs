use std::sync::{Arc, Mutex};

use google_cloud_gax::error::rpc::{Code, Status};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;
use google_cloud_iam_v1::model as iam;
use google_cloud_wkt::Timestamp;

use super::*;

type GResult<T> = google_cloud_kms_v1::Result<Response<T>>;

const KEY: &str =
    "projects/p1/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key";

// Recorded requests, compared whole; their size does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Encrypt(model::EncryptRequest),
    Decrypt(model::DecryptRequest),
    GetKey(model::GetCryptoKeyRequest),
    ListVersions(model::ListCryptoKeyVersionsRequest),
    CreateVersion(model::CreateCryptoKeyVersionRequest),
    GetVersion(model::GetCryptoKeyVersionRequest),
    SetPrimary(model::UpdateCryptoKeyPrimaryVersionRequest),
    UpdateVersion(model::UpdateCryptoKeyVersionRequest),
    TestIam(iam::TestIamPermissionsRequest),
}

#[derive(Debug, Default)]
struct Canned {
    calls: Vec<Call>,
    encrypt: Option<model::EncryptResponse>,
    decrypt: Option<model::DecryptResponse>,
    key: Option<model::CryptoKey>,
    /// Answers to CreateCryptoKeyVersion then GetCryptoKeyVersion, in turn.
    versions: Vec<model::CryptoKeyVersion>,
    pages: Vec<model::ListCryptoKeyVersionsResponse>,
    fail: Option<Code>,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<Canned>>);

impl Fake {
    fn with(f: impl FnOnce(&mut Canned)) -> Self {
        let fake = Fake::default();
        f(&mut fake.0.lock().unwrap());
        fake
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    fn answer<T>(&self, call: Call, pick: impl FnOnce(&mut Canned) -> Option<T>) -> GResult<T> {
        let mut c = self.0.lock().unwrap();
        c.calls.push(call);
        if let Some(code) = c.fail {
            return Err(google_cloud_gax::error::Error::service(
                Status::default()
                    .set_code(code)
                    .set_message("canned failure"),
            ));
        }
        Ok(Response::from(
            pick(&mut c).expect("test set no canned answer for this call"),
        ))
    }
}

impl google_cloud_kms_v1::stub::KeyManagementService for Fake {
    async fn encrypt(
        &self,
        req: model::EncryptRequest,
        _: RequestOptions,
    ) -> GResult<model::EncryptResponse> {
        self.answer(Call::Encrypt(req), |c| c.encrypt.clone())
    }
    async fn decrypt(
        &self,
        req: model::DecryptRequest,
        _: RequestOptions,
    ) -> GResult<model::DecryptResponse> {
        self.answer(Call::Decrypt(req), |c| c.decrypt.clone())
    }
    async fn get_crypto_key(
        &self,
        req: model::GetCryptoKeyRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKey> {
        self.answer(Call::GetKey(req), |c| c.key.clone())
    }
    async fn list_crypto_key_versions(
        &self,
        req: model::ListCryptoKeyVersionsRequest,
        _: RequestOptions,
    ) -> GResult<model::ListCryptoKeyVersionsResponse> {
        self.answer(Call::ListVersions(req), |c| {
            (!c.pages.is_empty()).then(|| c.pages.remove(0))
        })
    }
    async fn create_crypto_key_version(
        &self,
        req: model::CreateCryptoKeyVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKeyVersion> {
        self.answer(Call::CreateVersion(req), |c| {
            (!c.versions.is_empty()).then(|| c.versions.remove(0))
        })
    }
    async fn get_crypto_key_version(
        &self,
        req: model::GetCryptoKeyVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKeyVersion> {
        self.answer(Call::GetVersion(req), |c| {
            (!c.versions.is_empty()).then(|| c.versions.remove(0))
        })
    }
    async fn update_crypto_key_primary_version(
        &self,
        req: model::UpdateCryptoKeyPrimaryVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKey> {
        self.answer(Call::SetPrimary(req), |c| c.key.clone())
    }
    async fn update_crypto_key_version(
        &self,
        req: model::UpdateCryptoKeyVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKeyVersion> {
        self.answer(Call::UpdateVersion(req), |c| {
            (!c.versions.is_empty()).then(|| c.versions.remove(0))
        })
    }
    async fn test_iam_permissions(
        &self,
        req: iam::TestIamPermissionsRequest,
        _: RequestOptions,
    ) -> GResult<iam::TestIamPermissionsResponse> {
        let granted: Vec<String> = req
            .permissions
            .iter()
            .filter(|p| p.contains("useToEncrypt"))
            .cloned()
            .collect();
        self.answer(Call::TestIam(req), |_| {
            Some(iam::TestIamPermissionsResponse::new().set_permissions(granted))
        })
    }
}

fn kms(fake: &Fake) -> GcpKms {
    GcpKms::from_stub(KEY, fake.clone())
}

fn version(n: u64, state: State) -> model::CryptoKeyVersion {
    model::CryptoKeyVersion::new()
        .set_name(format!("{KEY}/cryptoKeyVersions/{n}"))
        .set_state(state)
        .set_create_time(Timestamp::new(1_700_000_000 + n as i64, 0).unwrap())
}

fn good_encrypt(ct: &[u8]) -> model::EncryptResponse {
    model::EncryptResponse::new()
        .set_name(format!("{KEY}/cryptoKeyVersions/2"))
        .set_ciphertext(bytes::Bytes::copy_from_slice(ct))
        .set_ciphertext_crc32c(gax::crc32c(ct))
        .set_verified_plaintext_crc32c(true)
        .set_verified_additional_authenticated_data_crc32c(true)
}

#[tokio::test]
async fn encrypt_sends_the_key_name_aad_and_checksums() {
    let fake = Fake::with(|c| c.encrypt = Some(good_encrypt(b"opaque-ciphertext")));
    let ct = kms(&fake).encrypt(b"plain", b"aad-1").await.unwrap();
    assert_eq!(ct, b"opaque-ciphertext");
    let calls = fake.calls();
    let [Call::Encrypt(req)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!(req.name, KEY);
    assert_eq!(&req.plaintext[..], b"plain");
    assert_eq!(&req.additional_authenticated_data[..], b"aad-1");
    assert_eq!(
        req.plaintext_crc32c,
        Some(i64::from(crc32c::crc32c(b"plain")))
    );
    assert_eq!(
        req.additional_authenticated_data_crc32c,
        Some(i64::from(crc32c::crc32c(b"aad-1")))
    );
}

#[tokio::test]
async fn encrypt_rejects_unverified_or_corrupt_answers() {
    let cases = [
        good_encrypt(b"ct").set_verified_plaintext_crc32c(false),
        good_encrypt(b"ct").set_verified_additional_authenticated_data_crc32c(false),
        good_encrypt(b"ct").set_ciphertext_crc32c(gax::crc32c(b"other")),
        good_encrypt(b"ct").set_or_clear_ciphertext_crc32c(None::<i64>),
    ];
    for resp in cases {
        let fake = Fake::with(|c| c.encrypt = Some(resp.clone()));
        let err = kms(&fake).encrypt(b"hunter2", b"").await.unwrap_err();
        assert!(matches!(err, Error::DataLoss(_)), "{resp:?}: {err:?}");
        assert!(!err.to_string().contains("hunter2"));
    }
}

#[tokio::test]
async fn encrypt_rejects_a_version_of_another_key() {
    let fake = Fake::with(|c| {
        c.encrypt = Some(good_encrypt(b"ct").set_name(
            "projects/p1/locations/us-central1/keyRings/r/cryptoKeys/other/cryptoKeyVersions/1",
        ))
    });
    let err = kms(&fake).encrypt(b"x", b"").await.unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
}

#[tokio::test]
async fn decrypt_sends_checksums_and_verifies_the_plaintext() {
    let fake = Fake::with(|c| {
        c.decrypt = Some(
            model::DecryptResponse::new()
                .set_plaintext(bytes::Bytes::from_static(b"plain"))
                .set_plaintext_crc32c(gax::crc32c(b"plain")),
        )
    });
    let pt = kms(&fake).decrypt(b"ct-bytes", b"aad-1").await.unwrap();
    assert_eq!(pt.expose(), b"plain");
    let calls = fake.calls();
    let [Call::Decrypt(req)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!(req.name, KEY);
    assert_eq!(&req.ciphertext[..], b"ct-bytes");
    assert_eq!(req.ciphertext_crc32c, Some(gax::crc32c(b"ct-bytes")));
    assert_eq!(&req.additional_authenticated_data[..], b"aad-1");
    assert_eq!(
        req.additional_authenticated_data_crc32c,
        Some(gax::crc32c(b"aad-1"))
    );
}

#[tokio::test]
async fn decrypt_with_a_wrong_or_missing_checksum_is_data_loss() {
    for crc in [Some(gax::crc32c(b"hunter3")), None] {
        let fake = Fake::with(|c| {
            c.decrypt = Some(
                model::DecryptResponse::new()
                    .set_plaintext(bytes::Bytes::from_static(b"hunter2"))
                    .set_or_clear_plaintext_crc32c(crc),
            )
        });
        let err = kms(&fake).decrypt(b"ct", b"").await.unwrap_err();
        assert!(matches!(err, Error::DataLoss(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter"), "{err}");
    }
}

#[tokio::test]
async fn decrypt_errors_map_by_code() {
    let fake = Fake::with(|c| c.fail = Some(Code::InvalidArgument));
    let err = kms(&fake).decrypt(b"ct", b"wrong-aad").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains(KEY), "{err}");
    let fake = Fake::with(|c| c.fail = Some(Code::PermissionDenied));
    let err = kms(&fake).encrypt(b"x", b"").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
}

#[tokio::test]
async fn oversized_inputs_are_refused_without_calling() {
    let fake = Fake::default();
    let big = vec![0u8; MAX_INPUT + 1];
    assert!(matches!(
        kms(&fake).encrypt(&big, b"").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        kms(&fake).encrypt(b"x", &big).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn key_info_reads_primary_and_schedule() {
    let fake = Fake::with(|c| {
        c.key = Some(
            model::CryptoKey::new()
                .set_name(KEY)
                .set_primary(version(3, State::Enabled))
                .set_next_rotation_time(Timestamp::new(1_800_000_000, 0).unwrap())
                .set_rotation_period(google_cloud_wkt::Duration::new(90 * 86_400, 0).unwrap()),
        )
    });
    let info = kms(&fake).key_info().await.unwrap();
    assert_eq!(info.name, KEY);
    let primary = info.primary.unwrap();
    assert_eq!(
        (primary.number, primary.state),
        (3, KeyVersionState::Enabled)
    );
    assert_eq!(
        info.rotation_period,
        Some(std::time::Duration::from_secs(90 * 86_400))
    );
    assert_eq!(
        info.next_rotation_time.map(|t| t.timestamp()),
        Some(1_800_000_000)
    );
    assert_eq!(
        fake.calls(),
        vec![Call::GetKey(
            model::GetCryptoKeyRequest::new().set_name(KEY)
        )]
    );
}

#[tokio::test]
async fn list_versions_follows_pages() {
    let fake = Fake::with(|c| {
        c.pages = vec![
            model::ListCryptoKeyVersionsResponse::new()
                .set_crypto_key_versions([version(2, State::Enabled), version(1, State::Disabled)])
                .set_next_page_token("more"),
            model::ListCryptoKeyVersionsResponse::new().set_crypto_key_versions([
                version(3, State::DestroyScheduled),
                version(4, State::PendingGeneration),
            ]),
        ]
    });
    let versions = kms(&fake).list_versions().await.unwrap();
    let got: Vec<_> = versions.iter().map(|v| (v.number, v.state)).collect();
    assert_eq!(
        got,
        vec![
            (1, KeyVersionState::Disabled),
            (2, KeyVersionState::Enabled),
            (3, KeyVersionState::DestroyScheduled)
        ]
    );
    let calls = fake.calls();
    let [Call::ListVersions(a), Call::ListVersions(b)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!((a.parent.as_str(), a.page_token.as_str()), (KEY, ""));
    assert_eq!(b.page_token, "more");
}

#[tokio::test(start_paused = true)]
async fn create_version_waits_out_generation() {
    let fake = Fake::with(|c| {
        c.versions = vec![
            version(5, State::PendingGeneration),
            version(5, State::PendingGeneration),
            version(5, State::Enabled),
        ]
    });
    let v = kms(&fake).create_version().await.unwrap();
    assert_eq!((v.number, v.state), (5, KeyVersionState::Enabled));
    let calls = fake.calls();
    assert!(matches!(&calls[0], Call::CreateVersion(r) if r.parent == KEY));
    assert!(
        matches!(&calls[1..], [Call::GetVersion(a), Call::GetVersion(_)] if a.name == format!("{KEY}/cryptoKeyVersions/5"))
    );
}

#[tokio::test]
async fn answers_naming_the_project_by_number_are_the_same_key() {
    let by_number = KEY.replace("projects/p1/", "projects/123456/");
    let fake = Fake::with(|c| {
        c.encrypt = Some(good_encrypt(b"ct").set_name(format!("{by_number}/cryptoKeyVersions/2")));
        c.key = Some(
            model::CryptoKey::new()
                .set_name(by_number.clone())
                .set_primary(
                    version(2, State::Enabled).set_name(format!("{by_number}/cryptoKeyVersions/2")),
                ),
        );
    });
    kms(&fake).encrypt(b"x", b"").await.unwrap();
    let info = kms(&fake).key_info().await.unwrap();
    assert_eq!(info.name, KEY);
    assert_eq!(info.primary.map(|p| p.number), Some(2));
    assert!(!same_key(
        KEY,
        &KEY.replace("patchpanda-keys", "other-ring")
    ));
}

#[tokio::test]
async fn set_primary_names_the_version_id() {
    let fake = Fake::with(|c| {
        c.key = Some(
            model::CryptoKey::new()
                .set_name(KEY)
                .set_primary(version(4, State::Enabled)),
        )
    });
    let info = kms(&fake).set_primary(4).await.unwrap();
    assert_eq!(info.primary.map(|p| p.number), Some(4));
    assert_eq!(
        fake.calls(),
        vec![Call::SetPrimary(
            model::UpdateCryptoKeyPrimaryVersionRequest::new()
                .set_name(KEY)
                .set_crypto_key_version_id("4")
        )]
    );
    let fake = Fake::with(|c| c.fail = Some(Code::FailedPrecondition));
    let err = kms(&fake).set_primary(9).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert!(err.to_string().contains("cryptoKeyVersions/9"), "{err}");
}

#[tokio::test]
async fn disable_version_updates_only_its_state() {
    let fake = Fake::with(|c| c.versions = vec![version(3, State::Disabled)]);
    let v = kms(&fake).disable_version(3).await.unwrap();
    assert_eq!((v.number, v.state), (3, KeyVersionState::Disabled));
    assert_eq!(
        fake.calls(),
        vec![Call::UpdateVersion(
            model::UpdateCryptoKeyVersionRequest::new()
                .set_crypto_key_version(
                    model::CryptoKeyVersion::new()
                        .set_name(format!("{KEY}/cryptoKeyVersions/3"))
                        .set_state(State::Disabled)
                )
                .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
        )]
    );
    let fake = Fake::with(|c| c.fail = Some(Code::FailedPrecondition));
    let err = kms(&fake).disable_version(9).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert!(err.to_string().contains("cryptoKeyVersions/9"), "{err}");
    assert!(kms(&Fake::default()).disable_version(0).await.is_err());
}

#[tokio::test]
async fn bad_key_names_are_refused() {
    for name in [
        "",
        "projects/p/locations/l/keyRings/r",
        "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        "projects//locations/l/keyRings/r/cryptoKeys/k",
    ] {
        let fake = Fake::default();
        let err = GcpKms::from_stub(name, fake.clone())
            .encrypt(b"x", b"")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{name}: {err:?}");
        assert!(fake.calls().is_empty());
    }
}

#[tokio::test]
async fn test_permissions_returns_the_granted_subset() {
    let fake = Fake::default();
    let granted = kms(&fake)
        .test_permissions(&[
            "cloudkms.cryptoKeyVersions.useToEncrypt",
            "cloudkms.cryptoKeys.update",
        ])
        .await
        .unwrap();
    assert_eq!(granted, vec!["cloudkms.cryptoKeyVersions.useToEncrypt"]);
    assert!(matches!(fake.calls().as_slice(), [Call::TestIam(r)] if r.resource == KEY));
}
