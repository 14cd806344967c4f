//! The local keyring: Cloud KMS's model of one symmetric key (numbered
//! versions with states, one primary) in `<home>/kms.db`, AES-256-GCM with
//! `ring`.
//!
//! Key material is the root of the local backend's encryption at rest, so it
//! lives only in `kms.db` (mode 0600, in a 0700 home) and in memory only for
//! the duration of one call, zeroized afterwards. Ciphertexts are
//! self-describing (`ppk1` + version + nonce + ciphertext), so they decrypt
//! after the primary moves, as long as their version is enabled.

mod rows;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::json;
use zeroize::Zeroizing;

use self::rows::{
    SCHEMA, change_version, get_version, insert_version, key_info, parse_ts, purge_expired,
    rotate_if_due, state_str, to_version, ts, usable_material,
};
use super::{KeyInfo, KeyVersion, KeyVersionState, Kms};
use crate::audit_log::{SERVICE_KMS, kms as method};
use crate::bus::Bus;
use crate::local::audit::{Call, Publisher};
use crate::local::{Db, Home, sqlite_error};
use crate::{Error, Result, SecretValue};

/// The full resource name of the local key.
pub const KEY_NAME: &str = "projects/local/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key";
/// What `key_info` reports: CIS asks for rotation within 90 days.
pub const ROTATION_PERIOD: Duration = Duration::from_secs(90 * 24 * 3600);
/// Cloud KMS's default time between a destroy request and the destruction.
pub const DESTROY_SCHEDULED_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

const MAGIC: &[u8; 4] = b"ppk1";
const HEADER_LEN: usize = MAGIC.len() + 4;
pub(super) const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Cloud KMS's limit for Encrypt's plaintext and AAD.
const MAX_INPUT: usize = 64 * 1024;

/// The local Cloud KMS key.
pub struct LocalKms {
    db: Db,
    publisher: Publisher,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKms")
            .field("key", &KEY_NAME)
            .field("principal", &self.publisher.principal())
            .finish()
    }
}

impl LocalKms {
    /// Opens the keyring, creating the key with version 1 as primary on first
    /// use (safe when several processes do so at once). Admin operations are
    /// audited as `principal` onto `audit`; Encrypt/Decrypt are not, since the
    /// local store's own envelope use would flood the audit topic.
    pub fn open(
        home: &Home,
        principal: &str,
        audit: Option<std::sync::Arc<dyn Bus>>,
    ) -> Result<LocalKms> {
        let mut conn = home.db("kms")?;
        conn.execute_batch(SCHEMA).map_err(sqlite_error)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let exists: bool = tx
            .query_row("SELECT COUNT(*) > 0 FROM crypto_key", [], |r| r.get(0))
            .map_err(sqlite_error)?;
        if !exists {
            let now = Utc::now();
            insert_version(&tx, 1, now)?;
            let next = now + chrono::Duration::from_std(ROTATION_PERIOD).map_err(internal)?;
            tx.execute(
                "INSERT INTO crypto_key (id, primary_version, create_time, next_rotation_time) VALUES (1, 1, ?1, ?2)",
                params![ts(now), ts(next)],
            )
            .map_err(sqlite_error)?;
        }
        purge_expired(&tx, Utc::now())?;
        rotate_if_due(&tx, Utc::now())?;
        tx.commit().map_err(sqlite_error)?;
        Ok(LocalKms {
            db: Db::new(conn),
            publisher: Publisher::new(audit, principal),
        })
    }

    /// Enables or disables a version (Cloud KMS's UpdateCryptoKeyVersion with
    /// `updateMask=state`). A disabled version neither encrypts nor decrypts.
    pub async fn set_version_state(
        &self,
        number: u64,
        state: KeyVersionState,
    ) -> Result<KeyVersion> {
        let result = match state {
            KeyVersionState::Enabled | KeyVersionState::Disabled => {
                self.db
                    .run(move |c| {
                        change_version(c, number, |v, _| match v.state {
                            KeyVersionState::Enabled | KeyVersionState::Disabled => {
                                Ok((state, None))
                            }
                            other => Err(Error::FailedPrecondition(format!(
                                "key version {number} is {other}; restore it first"
                            ))),
                        })
                    })
                    .await
            }
            other => Err(Error::InvalidArgument(format!(
                "a key version can be set enabled or disabled, not {other}"
            ))),
        };
        let name = version_name(number);
        self.audit(
            method::UPDATE_CRYPTO_KEY_VERSION,
            &name,
            "cloudkms.cryptoKeyVersions.update",
            json!({"cryptoKeyVersion": {"name": name, "state": state_str(state)}, "updateMask": "state"}),
            &result,
        )
        .await;
        result
    }

    /// Schedules a version for destruction in 30 days (Cloud KMS's default);
    /// it is unusable at once and its material is erased when the time comes.
    /// The primary cannot be destroyed.
    pub async fn destroy_version(&self, number: u64) -> Result<KeyVersion> {
        let result = self
            .db
            .run(move |c| {
                change_version(c, number, |v, primary| {
                    if primary == Some(number) {
                        return Err(Error::FailedPrecondition(format!(
                            "key version {number} is the primary; make another version primary first"
                        )));
                    }
                    match v.state {
                        KeyVersionState::Enabled | KeyVersionState::Disabled => {
                            let at = Utc::now()
                                + chrono::Duration::from_std(DESTROY_SCHEDULED_DURATION).map_err(internal)?;
                            Ok((KeyVersionState::DestroyScheduled, Some(at)))
                        }
                        other => Err(Error::FailedPrecondition(format!("key version {number} is already {other}"))),
                    }
                })
            })
            .await;
        let name = version_name(number);
        self.audit(
            method::DESTROY_CRYPTO_KEY_VERSION,
            &name,
            "cloudkms.cryptoKeyVersions.destroy",
            json!({"name": name}),
            &result,
        )
        .await;
        result
    }

    /// Cancels a scheduled destruction; the version comes back disabled.
    pub async fn restore_version(&self, number: u64) -> Result<KeyVersion> {
        let result = self
            .db
            .run(move |c| {
                change_version(c, number, |v, _| match v.state {
                    KeyVersionState::DestroyScheduled => Ok((KeyVersionState::Disabled, None)),
                    other => Err(Error::FailedPrecondition(format!(
                        "key version {number} is {other}, not scheduled for destruction"
                    ))),
                })
            })
            .await;
        let name = version_name(number);
        self.audit(
            method::RESTORE_CRYPTO_KEY_VERSION,
            &name,
            "cloudkms.cryptoKeyVersions.restore",
            json!({"name": name}),
            &result,
        )
        .await;
        result
    }

    async fn audit<T>(
        &self,
        m: &str,
        resource: &str,
        permission: &str,
        request: serde_json::Value,
        result: &Result<T>,
    ) {
        self.publisher
            .audit(
                Call {
                    service: SERVICE_KMS,
                    method: m,
                    resource,
                    permission,
                    permission_type: "ADMIN_WRITE",
                    request: Some(request),
                },
                result.as_ref().map(|_| ()),
            )
            .await;
    }
}

#[async_trait]
impl Kms for LocalKms {
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_INPUT || aad.len() > MAX_INPUT {
            return Err(Error::InvalidArgument(format!(
                "plaintext and additional authenticated data are limited to {MAX_INPUT} bytes each"
            )));
        }
        let (number, material) = self
            .db
            .run(|c| {
                let primary: Option<u64> = c
                    .query_row(
                        "SELECT primary_version FROM crypto_key WHERE id = 1",
                        [],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sqlite_error)?
                    .flatten();
                let number = primary.ok_or_else(|| {
                    Error::FailedPrecondition(format!("{KEY_NAME} has no primary version"))
                })?;
                Ok((number, usable_material(c, number)?))
            })
            .await?;
        let version = u32::try_from(number).map_err(|_| {
            Error::Internal(format!(
                "key version {number} does not fit the ciphertext format"
            ))
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("no randomness for a nonce".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        let full_aad = bound_aad(&out, aad);
        let mut body = plaintext.to_vec();
        key(&material)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&full_aad[..]),
                &mut body,
            )
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretValue> {
        let invalid =
            || Error::InvalidArgument("decryption failed: the ciphertext is invalid".into());
        if ciphertext.len() < HEADER_LEN + NONCE_LEN + TAG_LEN
            || &ciphertext[..MAGIC.len()] != MAGIC
        {
            return Err(invalid());
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&ciphertext[MAGIC.len()..HEADER_LEN]);
        let number = u64::from(u32::from_be_bytes(v));
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&ciphertext[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        let material = self
            .db
            .run(move |c| {
                let known: bool = c
                    .query_row(
                        "SELECT COUNT(*) > 0 FROM key_versions WHERE number = ?1",
                        [number],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_error)?;
                if !known {
                    return Err(Error::InvalidArgument(
                        "decryption failed: the ciphertext names no version of this key".into(),
                    ));
                }
                usable_material(c, number)
            })
            .await?;
        let full_aad = bound_aad(&ciphertext[..HEADER_LEN], aad);
        let mut body = Zeroizing::new(ciphertext[HEADER_LEN + NONCE_LEN..].to_vec());
        let len = key(&material)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&full_aad[..]),
                &mut body,
            )
            .map_err(|_| {
                Error::InvalidArgument(
                    "decryption failed: the ciphertext or additional authenticated data is invalid"
                        .into(),
                )
            })?
            .len();
        body.truncate(len);
        Ok(SecretValue::new(std::mem::take(&mut *body)))
    }

    /// Also performs a scheduled rotation that has come due, as Cloud KMS
    /// does on its own: long-running local stacks see the key rotate.
    async fn key_info(&self) -> Result<KeyInfo> {
        self.db
            .run(|c| {
                let info = key_info(c)?;
                if info.next_rotation_time.is_some_and(|t| t > Utc::now()) {
                    return Ok(info);
                }
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                rotate_if_due(&tx, Utc::now())?;
                let info = key_info(&tx)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(info)
            })
            .await
    }

    async fn list_versions(&self) -> Result<Vec<KeyVersion>> {
        self.db
            .run(|c| {
                let mut stmt = c
                    .prepare("SELECT number, state, create_time FROM key_versions ORDER BY number")
                    .map_err(sqlite_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, u64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(sqlite_error)?;
                rows.map(|row| {
                    let (n, s, t) = row.map_err(sqlite_error)?;
                    to_version(n, &s, &t)
                })
                .collect()
            })
            .await
    }

    async fn create_version(&self) -> Result<KeyVersion> {
        let result = self
            .db
            .run(|c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                let now = Utc::now();
                purge_expired(&tx, now)?;
                let next: u64 = tx
                    .query_row(
                        "SELECT COALESCE(MAX(number), 0) + 1 FROM key_versions",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_error)?;
                if next > u64::from(u32::MAX) {
                    return Err(Error::FailedPrecondition(
                        "the key has no version numbers left".into(),
                    ));
                }
                insert_version(&tx, next, now)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(KeyVersion {
                    number: next,
                    state: KeyVersionState::Enabled,
                    create_time: parse_ts(&ts(now))?,
                })
            })
            .await;
        self.audit(
            method::CREATE_CRYPTO_KEY_VERSION,
            KEY_NAME,
            "cloudkms.cryptoKeyVersions.create",
            json!({"parent": KEY_NAME, "cryptoKeyVersion": {}}),
            &result,
        )
        .await;
        result
    }

    async fn set_primary(&self, number: u64) -> Result<KeyInfo> {
        let result = self
            .db
            .run(move |c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                purge_expired(&tx, Utc::now())?;
                let v = get_version(&tx, number)?;
                if v.state != KeyVersionState::Enabled {
                    return Err(Error::FailedPrecondition(format!(
                        "key version {number} is {}; only an enabled version can be primary",
                        v.state
                    )));
                }
                tx.execute(
                    "UPDATE crypto_key SET primary_version = ?1 WHERE id = 1",
                    [number],
                )
                .map_err(sqlite_error)?;
                let info = key_info(&tx)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(info)
            })
            .await;
        self.audit(
            method::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
            KEY_NAME,
            "cloudkms.cryptoKeys.update",
            json!({"name": KEY_NAME, "cryptoKeyVersionId": number.to_string()}),
            &result,
        )
        .await;
        result
    }

    async fn disable_version(&self, number: u64) -> Result<KeyVersion> {
        self.set_version_state(number, KeyVersionState::Disabled)
            .await
    }
}

pub(super) fn version_name(number: u64) -> String {
    format!("{KEY_NAME}/cryptoKeyVersions/{number}")
}

/// Binds the ciphertext header (magic and version) into the AAD, so a
/// ciphertext cannot be relabelled with another version.
fn bound_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + aad.len());
    v.extend_from_slice(header);
    v.extend_from_slice(aad);
    v
}

fn key(material: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, material)
        .map(LessSafeKey::new)
        .map_err(|_| Error::DataLoss("local key material is malformed".into()))
}

pub(super) fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
