//! The Cloud KMS backend (`google-cloud-kms-v1`): symmetric encrypt/decrypt
//! with one CryptoKey, and the version management the rotation worker needs.
//!
//! Every call carries CRC32C checksums both ways, as Cloud KMS's data
//! integrity guide asks: the server confirms it verified what we sent, and we
//! verify what it sent back.

use async_trait::async_trait;
use google_cloud_gax::paginator::ItemPaginator as _;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState as State;

use super::{KeyInfo, KeyVersion, KeyVersionState, Kms};
use crate::gcp::{gax, zeroize_bytes};
use crate::{Error, Result, SecretValue};

/// Cloud KMS's limit on plaintext and on additional authenticated data.
const MAX_INPUT: usize = 64 * 1024;
/// Ciphertexts are the plaintext plus Cloud KMS's framing; anything near this
/// size did not come from Encrypt.
const MAX_CIPHERTEXT: usize = 64 * 1024 + 1024;
/// How long `create_version` waits for an HSM version to finish generating.
const GENERATION_POLLS: u32 = 20;
const GENERATION_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// One Cloud KMS CryptoKey, by its full resource name.
pub struct GcpKms {
    client: KeyManagementService,
    key_name: String,
}

impl std::fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpKms")
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl GcpKms {
    /// A client with Application Default Credentials for
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    pub async fn new(key_name: &str) -> Result<Self> {
        validate_key_name(key_name)?;
        gax::refuse_payload_logging("Cloud KMS client")?;
        let client = KeyManagementService::builder()
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Cloud KMS client"))?;
        Ok(Self {
            client,
            key_name: key_name.to_string(),
        })
    }

    /// A KMS over a stub of the service, for tests.
    pub fn from_stub<T>(key_name: &str, stub: T) -> Self
    where
        T: google_cloud_kms_v1::stub::KeyManagementService + 'static,
    {
        Self {
            client: KeyManagementService::from_stub::<T>(stub),
            key_name: key_name.to_string(),
        }
    }

    /// The full resource name of the key.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Which of `permissions` the caller holds on the key (TestIamPermissions),
    /// for `patchpanda health`.
    pub async fn test_permissions(&self, permissions: &[&str]) -> Result<Vec<String>> {
        validate_key_name(&self.key_name)?;
        let resp = self
            .client
            .test_iam_permissions()
            .set_resource(self.key_name.clone())
            .set_permissions(permissions.iter().map(|p| p.to_string()))
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &self.key_name))?;
        Ok(resp.permissions)
    }

    fn version_name(&self, number: u64) -> String {
        format!("{}/cryptoKeyVersions/{number}", self.key_name)
    }

    /// The number of one of this key's versions, from its full name.
    fn version_number(&self, name: &str) -> Result<u64> {
        name.rsplit_once("/cryptoKeyVersions/")
            .filter(|(key, _)| same_key(key, &self.key_name))
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "{}: the service answered with version {name:?}",
                    self.key_name
                ))
            })
    }

    fn key_version(&self, v: &model::CryptoKeyVersion) -> Result<KeyVersion> {
        let number = self.version_number(&v.name)?;
        let state = match &v.state {
            State::Enabled => KeyVersionState::Enabled,
            State::Disabled => KeyVersionState::Disabled,
            State::DestroyScheduled => KeyVersionState::DestroyScheduled,
            State::Destroyed => KeyVersionState::Destroyed,
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "{}: version is {other:?}, not a usable state",
                    v.name
                )));
            }
        };
        Ok(KeyVersion {
            number,
            state,
            create_time: gax::required_time(v.create_time.as_ref(), "create_time", &v.name)?,
        })
    }

    fn info_from(&self, key: model::CryptoKey) -> Result<KeyInfo> {
        if !same_key(&key.name, &self.key_name) {
            return Err(Error::Internal(format!(
                "{}: the service answered with key {:?}",
                self.key_name, key.name
            )));
        }
        let primary = key
            .primary
            .as_ref()
            .map(|v| self.key_version(v))
            .transpose()?;
        Ok(KeyInfo {
            name: self.key_name.clone(),
            primary,
            rotation_period: key.rotation_period().and_then(|d| gax::duration(d)),
            next_rotation_time: key.next_rotation_time.as_ref().and_then(gax::time),
        })
    }

    fn err(&self, e: google_cloud_gax::error::Error) -> Error {
        gax::to_error(&e, &self.key_name)
    }
}

#[async_trait]
impl Kms for GcpKms {
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        validate_key_name(&self.key_name)?;
        check_size("plaintext", plaintext.len(), MAX_INPUT, &self.key_name)?;
        check_size(
            "additional authenticated data",
            aad.len(),
            MAX_INPUT,
            &self.key_name,
        )?;
        // On the key, not a version: Cloud KMS encrypts with the primary and
        // the ciphertext names the version, so decrypt works after rotation.
        let resp = self
            .client
            .encrypt()
            .set_name(self.key_name.clone())
            .set_plaintext(bytes::Bytes::copy_from_slice(plaintext))
            .set_plaintext_crc32c(gax::crc32c(plaintext))
            .set_additional_authenticated_data(bytes::Bytes::copy_from_slice(aad))
            .set_additional_authenticated_data_crc32c(gax::crc32c(aad))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        self.version_number(&resp.name)?;
        if !resp.verified_plaintext_crc32c {
            return Err(Error::DataLoss(format!(
                "{}: the service did not verify the plaintext checksum",
                self.key_name
            )));
        }
        if !resp.verified_additional_authenticated_data_crc32c {
            return Err(Error::DataLoss(format!(
                "{}: the service did not verify the additional authenticated data checksum",
                self.key_name
            )));
        }
        if resp.ciphertext_crc32c != Some(gax::crc32c(&resp.ciphertext)) {
            return Err(Error::DataLoss(format!(
                "{}: ciphertext checksum mismatch in the encrypt response",
                self.key_name
            )));
        }
        Ok(resp.ciphertext.to_vec())
    }

    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretValue> {
        validate_key_name(&self.key_name)?;
        check_size(
            "ciphertext",
            ciphertext.len(),
            MAX_CIPHERTEXT,
            &self.key_name,
        )?;
        check_size(
            "additional authenticated data",
            aad.len(),
            MAX_INPUT,
            &self.key_name,
        )?;
        let resp = self
            .client
            .decrypt()
            .set_name(self.key_name.clone())
            .set_ciphertext(bytes::Bytes::copy_from_slice(ciphertext))
            .set_ciphertext_crc32c(gax::crc32c(ciphertext))
            .set_additional_authenticated_data(bytes::Bytes::copy_from_slice(aad))
            .set_additional_authenticated_data_crc32c(gax::crc32c(aad))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let value = SecretValue::new(resp.plaintext.to_vec());
        zeroize_bytes(resp.plaintext);
        if resp.plaintext_crc32c != Some(gax::crc32c(value.expose())) {
            return Err(Error::DataLoss(format!(
                "{}: plaintext checksum mismatch in the decrypt response",
                self.key_name
            )));
        }
        Ok(value)
    }

    async fn key_info(&self) -> Result<KeyInfo> {
        validate_key_name(&self.key_name)?;
        let key = self
            .client
            .get_crypto_key()
            .set_name(self.key_name.clone())
            .send()
            .await
            .map_err(|e| self.err(e))?;
        self.info_from(key)
    }

    async fn list_versions(&self) -> Result<Vec<KeyVersion>> {
        validate_key_name(&self.key_name)?;
        let mut items = self
            .client
            .list_crypto_key_versions()
            .set_parent(self.key_name.clone())
            .by_item();
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            let v = item.map_err(|e| self.err(e))?;
            match self.key_version(&v) {
                Ok(kv) => out.push(kv),
                // A version still generating (HSM) or whose import failed
                // holds no key material yet; it is not one of ours to list.
                Err(Error::FailedPrecondition(why)) => {
                    tracing::debug!(%why, "skipping key version")
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|v| v.number);
        Ok(out)
    }

    async fn create_version(&self) -> Result<KeyVersion> {
        validate_key_name(&self.key_name)?;
        let mut v = self
            .client
            .create_crypto_key_version()
            .set_parent(self.key_name.clone())
            .set_crypto_key_version(model::CryptoKeyVersion::new())
            .send()
            .await
            .map_err(|e| self.err(e))?;
        // Software keys are enabled at once; HSM keys generate for a moment.
        let mut polls = 0;
        while v.state == State::PendingGeneration && polls < GENERATION_POLLS {
            tokio::time::sleep(GENERATION_POLL_INTERVAL).await;
            polls += 1;
            v = self
                .client
                .get_crypto_key_version()
                .set_name(v.name.clone())
                .send()
                .await
                .map_err(|e| self.err(e))?;
        }
        if v.state == State::PendingGeneration {
            return Err(Error::Unavailable(format!(
                "{}: still generating; try again shortly",
                v.name
            )));
        }
        self.key_version(&v)
    }

    async fn set_primary(&self, number: u64) -> Result<KeyInfo> {
        validate_key_name(&self.key_name)?;
        if number == 0 {
            return Err(Error::InvalidArgument(
                "key version numbers start at 1".into(),
            ));
        }
        let key = self
            .client
            .update_crypto_key_primary_version()
            .set_name(self.key_name.clone())
            .set_crypto_key_version_id(number.to_string())
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &self.version_name(number)))?;
        self.info_from(key)
    }

    async fn disable_version(&self, number: u64) -> Result<KeyVersion> {
        validate_key_name(&self.key_name)?;
        if number == 0 {
            return Err(Error::InvalidArgument(
                "key version numbers start at 1".into(),
            ));
        }
        let name = self.version_name(number);
        let v = self
            .client
            .update_crypto_key_version()
            .set_crypto_key_version(
                model::CryptoKeyVersion::new()
                    .set_name(name.clone())
                    .set_state(State::Disabled),
            )
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["state"]))
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        self.key_version(&v)
    }
}

/// Whether two key names are the same key, whether each names the project
/// by id or by number.
fn same_key(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    a.len() == 8
        && a.len() == b.len()
        && a.iter()
            .zip(&b)
            .enumerate()
            .all(|(i, (x, y))| i == 1 || x == y)
}

fn check_size(what: &str, len: usize, max: usize, key: &str) -> Result<()> {
    if len > max {
        Err(Error::InvalidArgument(format!(
            "{key}: {what} is {len} bytes, over Cloud KMS's {max}"
        )))
    } else {
        Ok(())
    }
}

/// `projects/P/locations/L/keyRings/R/cryptoKeys/K`, each part a plain path
/// segment.
fn validate_key_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = matches!(
        parts.as_slice(),
        ["projects", p, "locations", l, "keyRings", r, "cryptoKeys", k]
            if [p, l, r, k].iter().all(|s| !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    );
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name:?} is not a key name (projects/P/locations/L/keyRings/R/cryptoKeys/K)"
        )))
    }
}

#[cfg(test)]
mod tests;
