//! The local store's storage: `<home>/secrets.db`, one `BEGIN IMMEDIATE`
//! transaction per change, payloads sealed through the KMS. It publishes
//! nothing itself; [`super::LocalSecretStore`] wraps it in the audit and
//! notification decorator.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::params;

use super::rows::{
    SCHEMA, VersionRow, apply_update, change_state, immediate, load_secret, load_version,
    next_number, now, resolve, to_version, ts,
};
use super::{secret_name, version_name};
use crate::kms::Kms;
use crate::kms::envelope::{self, Sealed};
use crate::local::{Db, Home, sqlite_error};
use crate::secrets::rules::{
    validate_payload, validate_secret_id, validate_update, validate_version,
};
use crate::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use crate::{Error, Result};

/// How often `add_version` re-seals when another writer took its number.
const ADD_ATTEMPTS: usize = 16;

/// Secret Manager's semantics over SQLite, without audit entries or events.
pub struct SqlSecretStore {
    db: Db,
    kms: Arc<dyn Kms>,
}

impl std::fmt::Debug for SqlSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSecretStore").finish_non_exhaustive()
    }
}

impl SqlSecretStore {
    /// Opens (creating if needed) `<home>/secrets.db`.
    pub fn open(home: &Home, kms: Arc<dyn Kms>) -> Result<SqlSecretStore> {
        let conn = home.db("secrets")?;
        // Destroyed payloads and deleted secrets are overwritten, not just
        // unlinked from the b-tree (they are sealed anyway; this is depth).
        conn.execute_batch("PRAGMA secure_delete=ON;")
            .map_err(sqlite_error)?;
        conn.execute_batch(SCHEMA).map_err(sqlite_error)?;
        Ok(SqlSecretStore {
            db: Db::new(conn),
            kms,
        })
    }
}

#[async_trait]
impl SecretStore for SqlSecretStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        validate_secret_id(id)?;
        let id = id.to_string();
        self.db
            .run(move |c| {
                let tx = immediate(c)?;
                if super::rows::find_secret(&tx, &id)?.is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "Secret [{}] already exists.",
                        secret_name(&id)
                    )));
                }
                tx.execute(
                    "INSERT INTO secrets (id, create_time, aliases, annotations, etag, next_version)
                     VALUES (?1, ?2, '{}', '{}', ?3, 1)",
                    params![id, ts(now()), super::rows::new_etag()],
                )
                .map_err(sqlite_error)?;
                let secret = load_secret(&tx, &id)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(secret)
            })
            .await
    }

    async fn get_secret(&self, id: &str) -> Result<Secret> {
        validate_secret_id(id)?;
        let id = id.to_string();
        self.db.run(move |c| load_secret(c, &id)).await
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.db
            .run(|c| {
                let tx = c.transaction().map_err(sqlite_error)?;
                let ids: Vec<String> = {
                    let mut stmt = tx
                        .prepare("SELECT id FROM secrets ORDER BY id")
                        .map_err(sqlite_error)?;
                    stmt.query_map([], |r| r.get(0))
                        .map_err(sqlite_error)?
                        .collect::<rusqlite::Result<_>>()
                        .map_err(sqlite_error)?
                };
                ids.iter().map(|id| load_secret(&tx, id)).collect()
            })
            .await
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        validate_secret_id(id)?;
        let id = id.to_string();
        self.db
            .run(move |c| {
                let tx = immediate(c)?;
                load_secret(&tx, &id)?;
                tx.execute("DELETE FROM secrets WHERE id = ?1", [&id])
                    .map_err(sqlite_error)?;
                tx.commit().map_err(sqlite_error)
            })
            .await
    }

    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        validate_secret_id(id)?;
        validate_payload(data)?;
        let crc = crc32c::crc32c(data);
        // The number goes into the AAD, so it must be known before sealing,
        // and sealing (a KMS call) must not happen under the write lock:
        // seal for the next free number, then commit only if it is still
        // free, else seal again for the new one.
        for _ in 0..ADD_ATTEMPTS {
            let owned = id.to_string();
            let number = self.db.run(move |c| next_number(c, &owned)).await?;
            let sealed =
                envelope::seal(self.kms.as_ref(), data, version_name(id, number).as_bytes())
                    .await?;
            let sealed = serde_json::to_string(&sealed)
                .map_err(|e| Error::Internal(format!("cannot encode a sealed payload: {e}")))?;
            let owned = id.to_string();
            let added = self
                .db
                .run(move |c| {
                    let tx = immediate(c)?;
                    if next_number(&tx, &owned)? != number {
                        return Ok(None);
                    }
                    tx.execute(
                        "INSERT INTO versions (secret, number, state, create_time, crc32c, sealed)
                         VALUES (?1, ?2, 'ENABLED', ?3, ?4, ?5)",
                        params![owned, number, ts(now()), crc, sealed],
                    )
                    .map_err(sqlite_error)?;
                    tx.execute(
                        "UPDATE secrets SET next_version = ?1 WHERE id = ?2",
                        params![number + 1, owned],
                    )
                    .map_err(sqlite_error)?;
                    let v = load_version(&tx, &owned, number)?.version;
                    tx.commit().map_err(sqlite_error)?;
                    Ok(Some(v))
                })
                .await?;
            if let Some(v) = added {
                return Ok(v);
            }
        }
        Err(Error::Aborted(format!(
            "too many concurrent writers adding versions to {}",
            secret_name(id)
        )))
    }

    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        validate_secret_id(id)?;
        validate_version(version)?;
        let owned = id.to_string();
        let vref = version.clone();
        let row = self
            .db
            .run(move |c| {
                let tx = c.transaction().map_err(sqlite_error)?;
                let secret = load_secret(&tx, &owned)?;
                let n = resolve(&tx, &secret, &vref)?;
                load_version(&tx, &owned, n)
            })
            .await?;
        self.open_row(id, row).await
    }

    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        validate_secret_id(id)?;
        validate_version(version)?;
        let id = id.to_string();
        let version = version.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction().map_err(sqlite_error)?;
                let secret = load_secret(&tx, &id)?;
                let n = resolve(&tx, &secret, &version)?;
                Ok(load_version(&tx, &id, n)?.version)
            })
            .await
    }

    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        validate_secret_id(id)?;
        let id = id.to_string();
        self.db
            .run(move |c| {
                let tx = c.transaction().map_err(sqlite_error)?;
                load_secret(&tx, &id)?;
                let mut stmt = tx
                    .prepare(
                        "SELECT number, state, create_time, destroy_time FROM versions
                         WHERE secret = ?1 ORDER BY number DESC",
                    )
                    .map_err(sqlite_error)?;
                let rows = stmt
                    .query_map([&id], |r| {
                        Ok((
                            r.get::<_, u64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    })
                    .map_err(sqlite_error)?;
                rows.map(|row| {
                    let (n, s, t, d) = row.map_err(sqlite_error)?;
                    to_version(&id, n, &s, &t, d.as_deref())
                })
                .collect()
            })
            .await
    }

    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        validate_secret_id(id)?;
        let id = id.to_string();
        self.db
            .run(move |c| change_state(c, &id, number, change))
            .await
    }

    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        validate_secret_id(id)?;
        validate_update(&update)?;
        let id = id.to_string();
        let etag = etag.map(str::to_string);
        self.db
            .run(move |c| apply_update(c, &id, update, etag.as_deref()))
            .await
    }
}

impl SqlSecretStore {
    async fn open_row(&self, id: &str, row: VersionRow) -> Result<AccessedVersion> {
        let name = version_name(id, row.version.number);
        if row.version.state != VersionState::Enabled {
            return Err(Error::FailedPrecondition(format!(
                "Secret Version [{name}] is in {} state.",
                row.version.state.api_name()
            )));
        }
        let (Some(sealed), Some(crc)) = (row.sealed, row.crc32c) else {
            return Err(Error::DataLoss(format!("{name} has no stored payload")));
        };
        let sealed: Sealed = serde_json::from_str(&sealed)
            .map_err(|_| Error::DataLoss(format!("{name}: stored payload is malformed")))?;
        let value = envelope::open(self.kms.as_ref(), &sealed, name.as_bytes()).await?;
        if crc32c::crc32c(value.expose()) != crc {
            return Err(Error::DataLoss(format!(
                "{name}: payload failed its CRC32C check"
            )));
        }
        Ok(AccessedVersion {
            version: row.version,
            value,
        })
    }
}
