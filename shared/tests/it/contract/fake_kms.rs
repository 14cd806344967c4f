//! An in-memory Cloud KMS key behind the client library's stub trait, with
//! real AES-256-GCM, so GcpKms can run the same contract suite as LocalKms.
//!
//! What it follows (Cloud KMS's API reference and data-integrity guide):
//! - Encrypt on the CryptoKey uses its primary version; the ciphertext names
//!   the version, so Decrypt works after the primary moves;
//! - request checksums are verified (INVALID_ARGUMENT on mismatch) and
//!   reported through `verified_*`; responses carry checksums of their data;
//! - a wrong AAD or tampered ciphertext is INVALID_ARGUMENT; a version that
//!   is not enabled is FAILED_PRECONDITION;
//! - new versions are ENABLED and not primary; making a missing version
//!   primary is NOT_FOUND, a non-enabled one FAILED_PRECONDITION;
//! - plaintext and AAD are at most 64 KiB each (SOFTWARE keys), else
//!   INVALID_ARGUMENT;
//! - the key starts with version 1 as primary, as LocalKms does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, Status};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;
use google_cloud_kms_v1::model;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState as State;
use google_cloud_wkt::{Duration, Timestamp};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

type GResult<T> = google_cloud_kms_v1::Result<Response<T>>;

const MAGIC: &[u8] = b"fkms";
const PAGE_SIZE: usize = 2;
/// EncryptRequest: "the plaintext must be no larger than 64KiB", and so the
/// AAD, for SOFTWARE keys.
const MAX_INPUT: usize = 64 * 1024;

#[derive(Debug)]
struct FakeVersion {
    state: State,
    create_time: Timestamp,
    key: [u8; 32],
}

#[derive(Debug)]
struct World {
    versions: BTreeMap<u64, FakeVersion>,
    primary: u64,
    clock: i64,
}

/// The fake service for one key. Clones share one key.
#[derive(Debug, Clone)]
pub struct FakeKms {
    key_name: String,
    world: Arc<Mutex<World>>,
    rng: Arc<SystemRandom>,
}

impl FakeKms {
    pub fn new(key_name: &str) -> Self {
        let rng = SystemRandom::new();
        let mut versions = BTreeMap::new();
        versions.insert(
            1,
            FakeVersion {
                state: State::Enabled,
                create_time: Timestamp::clamp(1_750_000_000, 0),
                key: random_key(&rng),
            },
        );
        Self {
            key_name: key_name.to_string(),
            world: Arc::new(Mutex::new(World {
                versions,
                primary: 1,
                clock: 1_750_000_000,
            })),
            rng: Arc::new(rng),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_key(&self, name: &str) -> Result<(), GaxError> {
        if name == self.key_name {
            Ok(())
        } else {
            Err(status(Code::NotFound, &format!("{name} not found.")))
        }
    }

    fn version_name(&self, n: u64) -> String {
        format!("{}/cryptoKeyVersions/{n}", self.key_name)
    }

    fn version_model(&self, n: u64, v: &FakeVersion) -> model::CryptoKeyVersion {
        model::CryptoKeyVersion::new()
            .set_name(self.version_name(n))
            .set_state(v.state.clone())
            .set_create_time(v.create_time)
    }

    fn key_model(&self, w: &World) -> model::CryptoKey {
        let mut key = model::CryptoKey::new()
            .set_name(self.key_name.clone())
            .set_create_time(Timestamp::clamp(1_750_000_000, 0))
            .set_next_rotation_time(Timestamp::clamp(w.clock + 90 * 86_400, 0))
            .set_rotation_period(Duration::clamp(90 * 86_400, 0));
        if let Some(v) = w.versions.get(&w.primary) {
            key = key.set_primary(self.version_model(w.primary, v));
        }
        key
    }
}

fn random_key(rng: &SystemRandom) -> [u8; 32] {
    let mut k = [0u8; 32];
    rng.fill(&mut k).expect("system randomness");
    k
}

fn status(code: Code, message: &str) -> GaxError {
    GaxError::service(Status::default().set_code(code).set_message(message))
}

fn crc(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

fn check_crc(what: &str, data: &[u8], sent: Option<i64>) -> Result<bool, GaxError> {
    match sent {
        Some(c) if c != crc(data) => Err(status(
            Code::InvalidArgument,
            &format!("The checksum in field {what} did not match the data in field {what}."),
        )),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

fn not_enabled(name: &str, state: &State) -> GaxError {
    status(
        Code::FailedPrecondition,
        &format!("{name} is not enabled, current state is: {state:?}."),
    )
}

fn invalid_ciphertext() -> GaxError {
    status(
        Code::InvalidArgument,
        "Decryption failed: the ciphertext is invalid.",
    )
}

impl google_cloud_kms_v1::stub::KeyManagementService for FakeKms {
    async fn encrypt(
        &self,
        req: model::EncryptRequest,
        _: RequestOptions,
    ) -> GResult<model::EncryptResponse> {
        self.check_key(&req.name)?;
        if req.plaintext.len() > MAX_INPUT || req.additional_authenticated_data.len() > MAX_INPUT {
            return Err(status(
                Code::InvalidArgument,
                "plaintext and additional_authenticated_data must each be no larger than 64KiB",
            ));
        }
        let verified_pt = check_crc("plaintext", &req.plaintext, req.plaintext_crc32c)?;
        let verified_aad = check_crc(
            "additional_authenticated_data",
            &req.additional_authenticated_data,
            req.additional_authenticated_data_crc32c,
        )?;
        let w = self.lock();
        let n = w.primary;
        let v = &w.versions[&n];
        if v.state != State::Enabled {
            return Err(not_enabled(&self.version_name(n), &v.state));
        }
        let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &v.key).expect("key length"));
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut sealed = req.plaintext.to_vec();
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&req.additional_authenticated_data[..]),
                &mut sealed,
            )
            .expect("sealing");
        let mut ciphertext = MAGIC.to_vec();
        ciphertext.extend_from_slice(&(n as u32).to_be_bytes());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(Response::from(
            model::EncryptResponse::new()
                .set_name(self.version_name(n))
                .set_ciphertext_crc32c(crc(&ciphertext))
                .set_ciphertext(ciphertext)
                .set_verified_plaintext_crc32c(verified_pt)
                .set_verified_additional_authenticated_data_crc32c(verified_aad),
        ))
    }

    async fn decrypt(
        &self,
        req: model::DecryptRequest,
        _: RequestOptions,
    ) -> GResult<model::DecryptResponse> {
        self.check_key(&req.name)?;
        check_crc("ciphertext", &req.ciphertext, req.ciphertext_crc32c)?;
        check_crc(
            "additional_authenticated_data",
            &req.additional_authenticated_data,
            req.additional_authenticated_data_crc32c,
        )?;
        let ct = &req.ciphertext[..];
        let header = MAGIC.len() + 4 + NONCE_LEN;
        if ct.len() < header + AES_256_GCM.tag_len() || !ct.starts_with(MAGIC) {
            return Err(invalid_ciphertext());
        }
        let mut n4 = [0u8; 4];
        n4.copy_from_slice(&ct[MAGIC.len()..MAGIC.len() + 4]);
        let n = u64::from(u32::from_be_bytes(n4));
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&ct[MAGIC.len() + 4..header]);
        let w = self.lock();
        let v = w.versions.get(&n).ok_or_else(invalid_ciphertext)?;
        if v.state != State::Enabled {
            return Err(not_enabled(&self.version_name(n), &v.state));
        }
        let opening = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &v.key).expect("key length"));
        let mut buf = ct[header..].to_vec();
        let plain = opening
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&req.additional_authenticated_data[..]),
                &mut buf,
            )
            .map_err(|_| invalid_ciphertext())?
            .to_vec();
        Ok(Response::from(
            model::DecryptResponse::new()
                .set_plaintext_crc32c(crc(&plain))
                .set_plaintext(plain)
                .set_used_primary(n == w.primary),
        ))
    }

    async fn get_crypto_key(
        &self,
        req: model::GetCryptoKeyRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKey> {
        self.check_key(&req.name)?;
        Ok(Response::from(self.key_model(&self.lock())))
    }

    async fn list_crypto_key_versions(
        &self,
        req: model::ListCryptoKeyVersionsRequest,
        _: RequestOptions,
    ) -> GResult<model::ListCryptoKeyVersionsResponse> {
        self.check_key(&req.parent)?;
        let start: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| status(Code::InvalidArgument, "invalid page token"))?
        };
        let w = self.lock();
        let all: Vec<_> = w
            .versions
            .iter()
            .map(|(n, v)| self.version_model(*n, v))
            .collect();
        let end = (start + PAGE_SIZE).min(all.len());
        let next = if end < all.len() {
            end.to_string()
        } else {
            String::new()
        };
        let total = all.len();
        Ok(Response::from(
            model::ListCryptoKeyVersionsResponse::new()
                .set_crypto_key_versions(all.into_iter().skip(start).take(PAGE_SIZE))
                .set_next_page_token(next)
                .set_total_size(total as i32),
        ))
    }

    async fn get_crypto_key_version(
        &self,
        req: model::GetCryptoKeyVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKeyVersion> {
        let w = self.lock();
        let found = w
            .versions
            .iter()
            .find(|(n, _)| self.version_name(**n) == req.name);
        match found {
            Some((n, v)) => Ok(Response::from(self.version_model(*n, v))),
            None => Err(status(Code::NotFound, &format!("{} not found.", req.name))),
        }
    }

    async fn create_crypto_key_version(
        &self,
        req: model::CreateCryptoKeyVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKeyVersion> {
        self.check_key(&req.parent)?;
        let mut w = self.lock();
        w.clock += 1;
        let n = w.versions.keys().next_back().copied().unwrap_or(0) + 1;
        let v = FakeVersion {
            state: State::Enabled,
            create_time: Timestamp::clamp(w.clock, 0),
            key: random_key(&self.rng),
        };
        let out = self.version_model(n, &v);
        w.versions.insert(n, v);
        Ok(Response::from(out))
    }

    /// Only `state` between ENABLED and DISABLED, the transitions
    /// UpdateCryptoKeyVersion documents; others are FAILED_PRECONDITION.
    async fn update_crypto_key_version(
        &self,
        req: model::UpdateCryptoKeyVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKeyVersion> {
        let version = req
            .crypto_key_version
            .ok_or_else(|| status(Code::InvalidArgument, "crypto_key_version is required"))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths != ["state"] {
            return Err(status(Code::InvalidArgument, "only state can be updated"));
        }
        let n: u64 = version
            .name
            .strip_prefix(&format!("{}/cryptoKeyVersions/", self.key_name))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| status(Code::NotFound, &format!("{} not found.", version.name)))?;
        let mut w = self.lock();
        let name = self.version_name(n);
        let v = w
            .versions
            .get_mut(&n)
            .ok_or_else(|| status(Code::NotFound, &format!("{name} not found.")))?;
        let allowed = matches!(version.state, State::Enabled | State::Disabled)
            && matches!(v.state, State::Enabled | State::Disabled);
        if !allowed {
            return Err(status(
                Code::FailedPrecondition,
                &format!(
                    "{name}: cannot go from {:?} to {:?}",
                    v.state, version.state
                ),
            ));
        }
        v.state = version.state;
        let out = self.version_model(n, v);
        Ok(Response::from(out))
    }

    async fn update_crypto_key_primary_version(
        &self,
        req: model::UpdateCryptoKeyPrimaryVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::CryptoKey> {
        self.check_key(&req.name)?;
        let n: u64 = req
            .crypto_key_version_id
            .parse()
            .map_err(|_| status(Code::InvalidArgument, "invalid crypto_key_version_id"))?;
        let mut w = self.lock();
        let name = self.version_name(n);
        match w.versions.get(&n) {
            None => return Err(status(Code::NotFound, &format!("{name} not found."))),
            Some(v) if v.state != State::Enabled => return Err(not_enabled(&name, &v.state)),
            Some(_) => {}
        }
        w.primary = n;
        Ok(Response::from(self.key_model(&w)))
    }
}
