//! The local keyring: Cloud KMS's model of one symmetric key (numbered
//! versions with states, one primary) in `<home>/kms.db`, AES-256-GCM with
//! `ring`.
//!
//! Key material is the root of the local backend's encryption at rest, so it
//! lives only in `kms.db` (mode 0600, in a 0700 home) and in memory only for
//! the duration of one call, zeroized afterwards. Ciphertexts are
//! self-describing (`ppk1` + version + nonce + ciphertext), so they decrypt
//! after the primary moves, as long as their version is enabled.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::json;
use zeroize::Zeroizing;

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
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Cloud KMS's limit for Encrypt's plaintext and AAD.
const MAX_INPUT: usize = 64 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS key_versions (
    number       INTEGER PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('ENABLED','DISABLED','DESTROY_SCHEDULED','DESTROYED')),
    material     BLOB,
    create_time  TEXT NOT NULL,
    destroy_time TEXT
);
CREATE TABLE IF NOT EXISTS crypto_key (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    primary_version    INTEGER REFERENCES key_versions(number),
    create_time        TEXT NOT NULL,
    next_rotation_time TEXT NOT NULL
);
";

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
}

fn version_name(number: u64) -> String {
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

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::DataLoss(format!("kms.db holds a malformed time: {e}")))
}

fn state_str(s: KeyVersionState) -> &'static str {
    match s {
        KeyVersionState::Enabled => "ENABLED",
        KeyVersionState::Disabled => "DISABLED",
        KeyVersionState::DestroyScheduled => "DESTROY_SCHEDULED",
        KeyVersionState::Destroyed => "DESTROYED",
    }
}

fn parse_state(s: &str) -> Result<KeyVersionState> {
    Ok(match s {
        "ENABLED" => KeyVersionState::Enabled,
        "DISABLED" => KeyVersionState::Disabled,
        "DESTROY_SCHEDULED" => KeyVersionState::DestroyScheduled,
        "DESTROYED" => KeyVersionState::Destroyed,
        other => {
            return Err(Error::DataLoss(format!(
                "kms.db holds an unknown state {other:?}"
            )));
        }
    })
}

fn to_version(number: u64, state: &str, create_time: &str) -> Result<KeyVersion> {
    Ok(KeyVersion {
        number,
        state: parse_state(state)?,
        create_time: parse_ts(create_time)?,
    })
}

fn insert_version(c: &Connection, number: u64, now: DateTime<Utc>) -> Result<()> {
    let mut material = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut material[..])
        .map_err(|_| Error::Internal("no randomness for a new key version".into()))?;
    c.execute(
        "INSERT INTO key_versions (number, state, material, create_time) VALUES (?1, 'ENABLED', ?2, ?3)",
        params![number, &material[..], ts(now)],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

fn get_version(c: &Connection, number: u64) -> Result<KeyVersion> {
    let row: Option<(String, String)> = c
        .query_row(
            "SELECT state, create_time FROM key_versions WHERE number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let (s, t) = row.ok_or_else(|| Error::NotFound(version_name(number)))?;
    to_version(number, &s, &t)
}

/// The material of an enabled version; any other state is a precondition
/// failure, as Cloud KMS reports it.
fn usable_material(c: &Connection, number: u64) -> Result<Zeroizing<Vec<u8>>> {
    let (state, material): (String, Option<Vec<u8>>) = c
        .query_row(
            "SELECT state, material FROM key_versions WHERE number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sqlite_error)?;
    let material = material.map(Zeroizing::new);
    let state = parse_state(&state)?;
    if state != KeyVersionState::Enabled {
        return Err(Error::FailedPrecondition(format!(
            "{} is not enabled (state {})",
            version_name(number),
            state_str(state)
        )));
    }
    match material {
        Some(m) if m.len() == KEY_LEN => Ok(m),
        _ => Err(Error::DataLoss(format!(
            "{} has no key material",
            version_name(number)
        ))),
    }
}

fn key_info(c: &Connection) -> Result<KeyInfo> {
    let (primary, next): (Option<u64>, String) = c
        .query_row(
            "SELECT primary_version, next_rotation_time FROM crypto_key WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sqlite_error)?;
    let primary = primary.map(|n| get_version(c, n)).transpose()?;
    Ok(KeyInfo {
        name: KEY_NAME.to_string(),
        primary,
        rotation_period: Some(ROTATION_PERIOD),
        next_rotation_time: Some(parse_ts(&next)?),
    })
}

/// Applies a state transition to one version in its own transaction.
/// `decide` sees the version and the primary and returns the new state and
/// destroy time, or why the transition is not allowed.
fn change_version(
    c: &mut Connection,
    number: u64,
    decide: impl FnOnce(&KeyVersion, Option<u64>) -> Result<(KeyVersionState, Option<DateTime<Utc>>)>,
) -> Result<KeyVersion> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    purge_expired(&tx, Utc::now())?;
    let v = get_version(&tx, number)?;
    let primary: Option<u64> = tx
        .query_row(
            "SELECT primary_version FROM crypto_key WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    let (state, destroy_time) = decide(&v, primary)?;
    tx.execute(
        "UPDATE key_versions SET state = ?1, destroy_time = ?2 WHERE number = ?3",
        params![state_str(state), destroy_time.map(ts), number],
    )
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(KeyVersion { state, ..v })
}

/// Cloud KMS's automatic rotation: once `next_rotation_time` has passed, a
/// new version becomes primary and the time moves on by whole periods.
/// Runs inside the caller's write transaction.
fn rotate_if_due(c: &Connection, now: DateTime<Utc>) -> Result<Option<u64>> {
    let next: String = c
        .query_row(
            "SELECT next_rotation_time FROM crypto_key WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    let mut next = parse_ts(&next)?;
    if next > now {
        return Ok(None);
    }
    let period = chrono::Duration::from_std(ROTATION_PERIOD).map_err(internal)?;
    while next <= now {
        next += period;
    }
    let number: u64 = c
        .query_row(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM key_versions",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    insert_version(c, number, now)?;
    c.execute(
        "UPDATE crypto_key SET primary_version = ?1, next_rotation_time = ?2 WHERE id = 1",
        params![number, ts(next)],
    )
    .map_err(sqlite_error)?;
    tracing::info!(
        key = KEY_NAME,
        version = number,
        "scheduled key rotation: new primary version"
    );
    Ok(Some(number))
}

/// Versions whose scheduled destruction time has passed lose their material.
fn purge_expired(c: &Connection, now: DateTime<Utc>) -> Result<()> {
    c.execute(
        "UPDATE key_versions SET state = 'DESTROYED', material = NULL
         WHERE state = 'DESTROY_SCHEDULED' AND destroy_time <= ?1",
        [ts(now)],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::local::audit::memory::MemoryBus;
    use crate::names;

    fn open(dir: &std::path::Path, bus: Option<Arc<MemoryBus>>) -> LocalKms {
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
        let bus = Arc::new(MemoryBus::default());
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
}
