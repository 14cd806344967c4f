//! The local Secret Manager: `<home>/secrets.db`, mirroring Secret Manager's
//! semantics so the gcp backend passes the same contract suite.
//!
//! - Versions are numbered from 1 per secret and never reused; states are
//!   ENABLED, DISABLED, DESTROYED (terminal: the payload is erased, the
//!   metadata kept). Only ENABLED versions can be accessed.
//! - `latest` is the most recently created version, whatever its state (as
//!   in Secret Manager: if it is disabled, accessing `latest` fails).
//! - Aliases map to existing, not destroyed versions; a version an alias
//!   points to cannot be destroyed (move the alias first).
//! - The etag belongs to the secret resource: it changes when the secret's
//!   own fields change (create, UpdateSecret), not when versions are added or
//!   change state, which are separate resources in Secret Manager. A
//!   read-modify-write of aliases therefore survives a concurrent add.
//! - Every payload is sealed (envelope encryption through the KMS) with the
//!   version's full name as AAD, so payloads cannot be swapped between rows;
//!   a CRC32C of the plaintext is stored and verified on access.
//! - Every change is one `BEGIN IMMEDIATE` transaction in a WAL database with
//!   `synchronous=FULL`: a crash loses nothing committed, and several
//!   processes can share the home.
//! - Every call is audited onto `patchpanda-audit-logs`, and every change
//!   emits Secret Manager's event notification onto
//!   `patchpanda-secret-events`, both after the commit and without failing
//!   the call if the bus is down.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Value, json};

use super::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use crate::audit_log::{SERVICE_SECRET_MANAGER, sm};
use crate::bus::{Bus, Message};
use crate::kms::Kms;
use crate::kms::envelope::{self, Sealed};
use crate::local::audit::{Call, PROJECT, Publisher};
use crate::local::{Db, Home, sqlite_error};
use crate::{Error, Result, names};

/// Secret Manager's payload limit.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Secret Manager's limit of aliases per secret.
pub const MAX_ALIASES: usize = 50;
/// Secret Manager's limit on the total size of annotation keys and values.
pub const MAX_ANNOTATIONS_BYTES: usize = 16 * 1024;
/// How often `add_version` re-seals when another writer took its number.
const ADD_ATTEMPTS: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    id           TEXT PRIMARY KEY,
    create_time  TEXT NOT NULL,
    aliases      TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    etag         TEXT NOT NULL,
    next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    secret       TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('ENABLED','DISABLED','DESTROYED')),
    create_time  TEXT NOT NULL,
    destroy_time TEXT,
    crc32c       INTEGER,
    sealed       TEXT,
    PRIMARY KEY (secret, number)
);
";

/// The local Secret Manager.
pub struct LocalSecretStore {
    db: Db,
    kms: Arc<dyn Kms>,
    publisher: Publisher,
}

impl std::fmt::Debug for LocalSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSecretStore")
            .field("principal", &self.publisher.principal())
            .finish_non_exhaustive()
    }
}

impl LocalSecretStore {
    /// Opens `<home>/secrets.db`. Calls are audited as `principal`; audit
    /// entries and event notifications go to `bus` when there is one.
    pub fn open(
        home: &Home,
        principal: &str,
        kms: Arc<dyn Kms>,
        bus: Option<Arc<dyn Bus>>,
    ) -> Result<LocalSecretStore> {
        let conn = home.db("secrets")?;
        // Destroyed payloads and deleted secrets are overwritten, not just
        // unlinked from the b-tree (they are sealed anyway; this is depth).
        conn.execute_batch("PRAGMA secure_delete=ON;")
            .map_err(sqlite_error)?;
        conn.execute_batch(SCHEMA).map_err(sqlite_error)?;
        Ok(LocalSecretStore {
            db: Db::new(conn),
            kms,
            publisher: Publisher::new(bus, principal),
        })
    }

    async fn audit(&self, call: Call<'_>, outcome: Result<(), &Error>) {
        self.publisher.audit(call, outcome).await;
    }

    /// Publishes one event notification, after the change committed.
    async fn notify(&self, event: &str, id: &str, version: Option<u64>, data: Value) {
        let mut message = Message::new(data.to_string().into_bytes())
            .attribute("eventType", event)
            .attribute("secretId", secret_name(id))
            .attribute("dataFormat", "JSON_API_V1")
            .attribute(
                "timestamp",
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false),
            );
        if let Some(n) = version {
            message = message.attribute("versionId", version_name(id, n));
        }
        if event == "SECRET_DELETE" {
            message = message.attribute("deleteType", "REQUESTED");
        }
        self.publisher
            .publish(names::TOPIC_SECRET_EVENTS, message)
            .await;
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        let result = match validate_id(id) {
            Err(e) => Err(e),
            Ok(()) => {
                let id = id.to_string();
                self.db
                    .run(move |c| {
                        let tx = immediate(c)?;
                        if find_secret(&tx, &id)?.is_some() {
                            return Err(Error::AlreadyExists(format!(
                                "Secret [{}] already exists.",
                                secret_name(&id)
                            )));
                        }
                        let now = now();
                        let etag = new_etag();
                        tx.execute(
                            "INSERT INTO secrets (id, create_time, aliases, annotations, etag, next_version)
                             VALUES (?1, ?2, '{}', '{}', ?3, 1)",
                            params![id, ts(now), etag],
                        )
                        .map_err(sqlite_error)?;
                        let secret = load_secret(&tx, &id)?;
                        tx.commit().map_err(sqlite_error)?;
                        Ok(secret)
                    })
                    .await
            }
        };
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::CREATE_SECRET,
                &resource,
                "secretmanager.secrets.create",
                json!({"parent": format!("projects/{PROJECT}"), "secretId": shown(id)}),
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(s) = &result {
            self.notify("SECRET_CREATE", id, None, secret_json(s)).await;
        }
        result
    }

    async fn get_secret(&self, id: &str) -> Result<Secret> {
        let result = match validate_id(id) {
            Err(e) => Err(e),
            Ok(()) => {
                let id = id.to_string();
                self.db.run(move |c| load_secret(c, &id)).await
            }
        };
        let resource = secret_name(id);
        self.audit(
            read_call(sm::GET_SECRET, &resource, "secretmanager.secrets.get"),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        let result = self
            .db
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
            .await;
        let resource = format!("projects/{PROJECT}");
        self.audit(
            read_call(sm::LIST_SECRETS, &resource, "secretmanager.secrets.list"),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        let result = match validate_id(id) {
            Err(e) => Err(e),
            Ok(()) => {
                let id = id.to_string();
                self.db
                    .run(move |c| {
                        let tx = immediate(c)?;
                        let secret = load_secret(&tx, &id)?;
                        tx.execute("DELETE FROM secrets WHERE id = ?1", [&id])
                            .map_err(sqlite_error)?;
                        tx.commit().map_err(sqlite_error)?;
                        Ok(secret)
                    })
                    .await
            }
        };
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::DELETE_SECRET,
                &resource,
                "secretmanager.secrets.delete",
                json!({"name": resource}),
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        match result {
            Ok(s) => {
                self.notify("SECRET_DELETE", id, None, secret_json(&s))
                    .await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        let result = self.add_version_inner(id, data).await;
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::ADD_SECRET_VERSION,
                &resource,
                "secretmanager.versions.add",
                json!({"parent": resource}),
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(v) = &result {
            self.notify("SECRET_VERSION_ADD", id, Some(v.number), version_json(v))
                .await;
        }
        result
    }

    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        let (resolved, result) = self.access_inner(id, version).await;
        let requested = format!("{}/versions/{version}", secret_name(id));
        let resource = resolved.map_or_else(|| requested.clone(), |n| version_name(id, n));
        self.audit(
            Call {
                service: SERVICE_SECRET_MANAGER,
                method: sm::ACCESS_SECRET_VERSION,
                resource: &resource,
                permission: "secretmanager.versions.access",
                permission_type: "DATA_READ",
                request: Some(json!({"name": requested})),
            },
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        let result = match validate_id(id) {
            Err(e) => Err(e),
            Ok(()) => {
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
        };
        let resource = match &result {
            Ok(v) => version_name(id, v.number),
            Err(_) => format!("{}/versions/{version}", secret_name(id)),
        };
        self.audit(
            read_call(
                sm::GET_SECRET_VERSION,
                &resource,
                "secretmanager.versions.get",
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        let result = match validate_id(id) {
            Err(e) => Err(e),
            Ok(()) => {
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
        };
        let resource = secret_name(id);
        self.audit(
            read_call(
                sm::LIST_SECRET_VERSIONS,
                &resource,
                "secretmanager.versions.list",
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        let result = match validate_id(id) {
            Err(e) => Err(e),
            Ok(()) => {
                let id = id.to_string();
                self.db
                    .run(move |c| change_state(c, &id, number, change))
                    .await
            }
        };
        let (m, permission, event) = match change {
            StateChange::Enable => (
                sm::ENABLE_SECRET_VERSION,
                "secretmanager.versions.enable",
                "SECRET_VERSION_ENABLE",
            ),
            StateChange::Disable => (
                sm::DISABLE_SECRET_VERSION,
                "secretmanager.versions.disable",
                "SECRET_VERSION_DISABLE",
            ),
            StateChange::Destroy => (
                sm::DESTROY_SECRET_VERSION,
                "secretmanager.versions.destroy",
                "SECRET_VERSION_DESTROY",
            ),
        };
        let resource = version_name(id, number);
        self.audit(
            write_call(m, &resource, permission, json!({"name": resource})),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(v) = &result {
            self.notify(event, id, Some(number), version_json(v)).await;
        }
        result
    }

    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        let mask: Vec<&str> = [
            update.aliases.as_ref().map(|_| "versionAliases"),
            update.annotations.as_ref().map(|_| "annotations"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let request = json!({
            "secret": {
                "name": secret_name(id),
                "versionAliases": update.aliases.as_ref().map(aliases_json),
                "annotations": update.annotations,
                "etag": etag,
            },
            "updateMask": mask.join(","),
        });
        let result = match validate_id(id).and_then(|()| validate_update(&update)) {
            Err(e) => Err(e),
            Ok(()) => {
                let id = id.to_string();
                let etag = etag.map(str::to_string);
                self.db
                    .run(move |c| apply_update(c, &id, update, etag.as_deref()))
                    .await
            }
        };
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::UPDATE_SECRET,
                &resource,
                "secretmanager.secrets.update",
                request,
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(s) = &result {
            self.notify("SECRET_UPDATE", id, None, secret_json(s)).await;
        }
        result
    }
}

impl LocalSecretStore {
    async fn add_version_inner(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        validate_id(id)?;
        if data.is_empty() {
            return Err(Error::InvalidArgument(
                "Secret Payload cannot be empty.".into(),
            ));
        }
        if data.len() > MAX_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "Secret Payload is {} bytes; the limit is {MAX_PAYLOAD}",
                data.len()
            )));
        }
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
                    let now = now();
                    tx.execute(
                        "INSERT INTO versions (secret, number, state, create_time, crc32c, sealed)
                         VALUES (?1, ?2, 'ENABLED', ?3, ?4, ?5)",
                        params![owned, number, ts(now), crc, sealed],
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

    /// Returns the resolved version number (for the audit entry) and the
    /// outcome.
    async fn access_inner(
        &self,
        id: &str,
        version: &VersionRef,
    ) -> (Option<u64>, Result<AccessedVersion>) {
        if let Err(e) = validate_id(id) {
            return (None, Err(e));
        }
        let owned = id.to_string();
        let vref = version.clone();
        let row = self
            .db
            .run(move |c| {
                let tx = c.transaction().map_err(sqlite_error)?;
                let secret = load_secret(&tx, &owned)?;
                let n = resolve(&tx, &secret, &vref)?;
                Ok((n, load_version(&tx, &owned, n)))
            })
            .await;
        let (number, row) = match row {
            Ok((n, Ok(row))) => (n, row),
            Ok((n, Err(e))) => return (Some(n), Err(e)),
            Err(e) => return (None, Err(e)),
        };
        (Some(number), self.open_row(id, row).await)
    }

    async fn open_row(&self, id: &str, row: VersionRow) -> Result<AccessedVersion> {
        let name = version_name(id, row.version.number);
        if row.version.state != VersionState::Enabled {
            return Err(Error::FailedPrecondition(format!(
                "Secret Version [{name}] is in {} state.",
                state_str(row.version.state)
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

struct VersionRow {
    version: SecretVersion,
    crc32c: Option<u32>,
    sealed: Option<String>,
}

fn immediate(c: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)
}

fn read_call<'a>(method: &'a str, resource: &'a str, permission: &'a str) -> Call<'a> {
    Call {
        service: SERVICE_SECRET_MANAGER,
        method,
        resource,
        permission,
        permission_type: "ADMIN_READ",
        request: Some(json!({"name": resource})),
    }
}

fn write_call<'a>(
    method: &'a str,
    resource: &'a str,
    permission: &'a str,
    request: Value,
) -> Call<'a> {
    Call {
        service: SERVICE_SECRET_MANAGER,
        method,
        resource,
        permission,
        permission_type: "ADMIN_WRITE",
        request: Some(request),
    }
}

/// An id as it may appear in audit entries: invalid ids are cut short so a
/// huge bad argument cannot bloat the audit topic.
fn shown(id: &str) -> &str {
    match id.char_indices().nth(255) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

fn secret_name(id: &str) -> String {
    format!("projects/{PROJECT}/secrets/{}", shown(id))
}

fn version_name(id: &str, number: u64) -> String {
    format!("{}/versions/{number}", secret_name(id))
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "secret id {:?}: expected 1-255 of [A-Za-z0-9_-]",
            shown(id)
        )))
    }
}

fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 63
        && alias.starts_with(|c: char| c.is_ascii_alphabetic())
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && alias != "latest"
        && alias != "NEW";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "version alias {:?}: expected 1-63 of [A-Za-z0-9_-] starting with a letter, not `latest` or `NEW`",
            alias.chars().take(64).collect::<String>()
        )))
    }
}

fn validate_annotation_key(key: &str) -> Result<()> {
    let b = key.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "annotation key {:?}: expected 1-63 of [A-Za-z0-9._-], alphanumeric at both ends",
            key.chars().take(64).collect::<String>()
        )))
    }
}

fn validate_update(update: &SecretUpdate) -> Result<()> {
    if update.aliases.is_none() && update.annotations.is_none() {
        return Err(Error::InvalidArgument(
            "the update names no field (versionAliases or annotations)".into(),
        ));
    }
    if let Some(aliases) = &update.aliases {
        if aliases.len() > MAX_ALIASES {
            return Err(Error::InvalidArgument(format!(
                "{} version aliases; at most {MAX_ALIASES} are allowed",
                aliases.len()
            )));
        }
        for (alias, &n) in aliases {
            validate_alias(alias)?;
            if n == 0 {
                return Err(Error::InvalidArgument(format!(
                    "version alias {alias:?} points to version 0; versions start at 1"
                )));
            }
        }
    }
    if let Some(annotations) = &update.annotations {
        let mut total = 0usize;
        for (k, v) in annotations {
            validate_annotation_key(k)?;
            total += k.len() + v.len();
        }
        if total >= MAX_ANNOTATIONS_BYTES {
            return Err(Error::InvalidArgument(format!(
                "annotations total {total} bytes; they must be under {MAX_ANNOTATIONS_BYTES}"
            )));
        }
    }
    Ok(())
}

fn now() -> DateTime<Utc> {
    // Stored with microseconds; round now so returned values equal reloads.
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::DataLoss(format!("secrets.db holds a malformed time: {e}")))
}

fn new_etag() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("\"{}\"", &u[..16])
}

fn state_str(s: VersionState) -> &'static str {
    match s {
        VersionState::Enabled => "ENABLED",
        VersionState::Disabled => "DISABLED",
        VersionState::Destroyed => "DESTROYED",
    }
}

fn parse_state(s: &str) -> Result<VersionState> {
    Ok(match s {
        "ENABLED" => VersionState::Enabled,
        "DISABLED" => VersionState::Disabled,
        "DESTROYED" => VersionState::Destroyed,
        other => {
            return Err(Error::DataLoss(format!(
                "secrets.db holds an unknown state {other:?}"
            )));
        }
    })
}

fn to_version(
    id: &str,
    number: u64,
    state: &str,
    create_time: &str,
    destroy_time: Option<&str>,
) -> Result<SecretVersion> {
    Ok(SecretVersion {
        secret: id.to_string(),
        number,
        state: parse_state(state)?,
        create_time: parse_ts(create_time)?,
        destroy_time: destroy_time.map(parse_ts).transpose()?,
    })
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "Secret [{}] not found or has no versions.",
        secret_name(id)
    ))
}

fn find_secret(c: &Connection, id: &str) -> Result<Option<Secret>> {
    let row: Option<(String, String, String, String)> = c
        .query_row(
            "SELECT create_time, aliases, annotations, etag FROM secrets WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let Some((create_time, aliases, annotations, etag)) = row else {
        return Ok(None);
    };
    let malformed = |what: &str| Error::DataLoss(format!("secrets.db: {id}: malformed {what}"));
    Ok(Some(Secret {
        id: id.to_string(),
        create_time: parse_ts(&create_time)?,
        aliases: serde_json::from_str(&aliases).map_err(|_| malformed("aliases"))?,
        annotations: serde_json::from_str(&annotations).map_err(|_| malformed("annotations"))?,
        etag,
        next_rotation_time: None,
        rotation_period: None,
    }))
}

fn load_secret(c: &Connection, id: &str) -> Result<Secret> {
    find_secret(c, id)?.ok_or_else(|| not_found(id))
}

fn next_number(c: &Connection, id: &str) -> Result<u64> {
    c.query_row(
        "SELECT next_version FROM secrets WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
    .map_err(sqlite_error)?
    .ok_or_else(|| not_found(id))
}

fn load_version(c: &Connection, id: &str, number: u64) -> Result<VersionRow> {
    type Row = (String, String, Option<String>, Option<u32>, Option<String>);
    let row: Option<Row> = c
        .query_row(
            "SELECT state, create_time, destroy_time, crc32c, sealed FROM versions
             WHERE secret = ?1 AND number = ?2",
            params![id, number],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let (state, create_time, destroy_time, crc32c, sealed) = row.ok_or_else(|| {
        Error::NotFound(format!(
            "Secret Version [{}] not found.",
            version_name(id, number)
        ))
    })?;
    Ok(VersionRow {
        version: to_version(id, number, &state, &create_time, destroy_time.as_deref())?,
        crc32c,
        sealed,
    })
}

/// The version number a reference names. `latest` is the most recently
/// created version, whatever its state.
fn resolve(c: &Connection, secret: &Secret, version: &VersionRef) -> Result<u64> {
    match version {
        VersionRef::Number(n) => Ok(*n),
        VersionRef::Alias(a) => secret.aliases.get(a).copied().ok_or_else(|| {
            Error::NotFound(format!(
                "Secret Version [{}/versions/{}] not found.",
                secret_name(&secret.id),
                a.chars().take(64).collect::<String>()
            ))
        }),
        VersionRef::Latest => c
            .query_row(
                "SELECT MAX(number) FROM versions WHERE secret = ?1",
                [&secret.id],
                |r| r.get::<_, Option<u64>>(0),
            )
            .map_err(sqlite_error)?
            .ok_or_else(|| not_found(&secret.id)),
    }
}

fn change_state(
    c: &mut Connection,
    id: &str,
    number: u64,
    change: StateChange,
) -> Result<SecretVersion> {
    let tx = immediate(c)?;
    let secret = load_secret(&tx, id)?;
    let current = load_version(&tx, id, number)?.version;
    let name = version_name(id, number);
    if current.state == VersionState::Destroyed {
        return Err(Error::FailedPrecondition(format!(
            "Secret Version [{name}] is in DESTROYED state."
        )));
    }
    match change {
        StateChange::Enable | StateChange::Disable => {
            let state = if change == StateChange::Enable {
                VersionState::Enabled
            } else {
                VersionState::Disabled
            };
            tx.execute(
                "UPDATE versions SET state = ?1 WHERE secret = ?2 AND number = ?3",
                params![state_str(state), id, number],
            )
            .map_err(sqlite_error)?;
        }
        StateChange::Destroy => {
            let aliases: Vec<&str> = secret
                .aliases
                .iter()
                .filter(|&(_, &n)| n == number)
                .map(|(a, _)| a.as_str())
                .collect();
            if !aliases.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "Secret Version [{name}] has aliases ({}); move them before destroying it",
                    aliases.join(", ")
                )));
            }
            tx.execute(
                "UPDATE versions SET state = 'DESTROYED', destroy_time = ?1, sealed = NULL, crc32c = NULL
                 WHERE secret = ?2 AND number = ?3",
                params![ts(now()), id, number],
            )
            .map_err(sqlite_error)?;
        }
    }
    let v = load_version(&tx, id, number)?.version;
    tx.commit().map_err(sqlite_error)?;
    Ok(v)
}

fn apply_update(
    c: &mut Connection,
    id: &str,
    update: SecretUpdate,
    etag: Option<&str>,
) -> Result<Secret> {
    let tx = immediate(c)?;
    let mut secret = load_secret(&tx, id)?;
    if let Some(expected) = etag
        && expected != secret.etag
    {
        return Err(Error::Aborted(format!(
            "Secret [{}] changed since etag {expected} was read (now {})",
            secret_name(id),
            secret.etag
        )));
    }
    if let Some(aliases) = update.aliases {
        for (alias, &n) in &aliases {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM versions WHERE secret = ?1 AND number = ?2",
                    params![id, n],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sqlite_error)?;
            match state.as_deref() {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "version alias {alias:?} points to {}, which does not exist",
                        version_name(id, n)
                    )));
                }
                Some("DESTROYED") => {
                    return Err(Error::FailedPrecondition(format!(
                        "version alias {alias:?} points to {}, which is destroyed",
                        version_name(id, n)
                    )));
                }
                Some(_) => {}
            }
        }
        secret.aliases = aliases;
    }
    if let Some(annotations) = update.annotations {
        secret.annotations = annotations;
    }
    secret.etag = new_etag();
    tx.execute(
        "UPDATE secrets SET aliases = ?1, annotations = ?2, etag = ?3 WHERE id = ?4",
        params![
            to_json(&secret.aliases)?,
            to_json(&secret.annotations)?,
            secret.etag,
            id
        ],
    )
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(secret)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("cannot encode metadata: {e}")))
}

/// proto3 JSON writes int64 as strings.
fn aliases_json(aliases: &BTreeMap<String, u64>) -> BTreeMap<String, String> {
    aliases
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// The Secret resource as Secret Manager's notifications carry it.
fn secret_json(s: &Secret) -> Value {
    let mut v = json!({
        "name": secret_name(&s.id),
        "replication": {"automatic": {}},
        "createTime": ts(s.create_time),
        "etag": s.etag,
        "topics": [{"name": format!("projects/{PROJECT}/topics/{}", names::TOPIC_SECRET_EVENTS)}],
    });
    if !s.aliases.is_empty() {
        v["versionAliases"] = json!(aliases_json(&s.aliases));
    }
    if !s.annotations.is_empty() {
        v["annotations"] = json!(s.annotations);
    }
    v
}

/// The SecretVersion resource as Secret Manager's notifications carry it
/// (metadata only, never the payload).
fn version_json(v: &SecretVersion) -> Value {
    let mut j = json!({
        "name": version_name(&v.secret, v.number),
        "createTime": ts(v.create_time),
        "state": state_str(v.state),
        "replicationStatus": {"automatic": {}},
    });
    if let Some(d) = v.destroy_time {
        j["destroyTime"] = json!(ts(d));
    }
    j
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::kms::local::LocalKms;
    use crate::local::audit::memory::MemoryBus;

    const ID: &str = "patchpanda-webhook-secret";

    struct Fixture {
        _dir: tempfile::TempDir,
        home: Home,
        kms: Arc<LocalKms>,
        bus: Arc<MemoryBus>,
        store: LocalSecretStore,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let bus = Arc::new(MemoryBus::default());
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
    fn reopen(home: &Home, kms: &Arc<LocalKms>, bus: &Arc<MemoryBus>) -> LocalSecretStore {
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

        // A stale etag is Aborted and changes nothing.
        let stale = SecretUpdate {
            aliases: Some(BTreeMap::new()),
            annotations: None,
        };
        assert!(matches!(
            s.update_secret(ID, stale.clone(), Some(&before.etag)).await,
            Err(Error::Aborted(_))
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
            &format!(
                "UPDATE versions SET crc32c = crc32c + 1 WHERE secret = '{ID}' AND number = 1"
            ),
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
        for (_, m) in f.bus.messages.lock().unwrap().iter() {
            assert!(!m.data.windows(marker.len()).any(|w| w == marker));
        }
    }

    #[tokio::test]
    async fn audit_entries_and_event_notifications() {
        let f = fixture();
        let s = &f.store;
        s.create_secret(ID).await.unwrap();
        s.add_version(ID, b"v1").await.unwrap();
        s.add_version(ID, b"v2").await.unwrap();
        let secret = s.get_secret(ID).await.unwrap();
        s.update_secret(
            ID,
            SecretUpdate {
                aliases: Some(BTreeMap::from([("current".to_string(), 2)])),
                annotations: None,
            },
            Some(&secret.etag),
        )
        .await
        .unwrap();
        s.access(ID, &VersionRef::alias("current")).await.unwrap();
        s.set_state(ID, 1, StateChange::Disable).await.unwrap();
        assert!(s.access(ID, &VersionRef::Number(1)).await.is_err());
        s.set_state(ID, 1, StateChange::Enable).await.unwrap();
        s.set_state(ID, 1, StateChange::Destroy).await.unwrap();
        s.list_versions(ID).await.unwrap();
        s.get_version(ID, &VersionRef::Latest).await.unwrap();
        s.list_secrets().await.unwrap();
        s.delete_secret(ID).await.unwrap();

        let entries = f.bus.audit_entries();
        let seen: Vec<(String, String, String, i32)> = entries
            .iter()
            .map(|e| {
                let p = e.proto_payload.as_ref().unwrap();
                let a = &p.authorization_info[0];
                (
                    p.method_name.clone(),
                    p.resource_name.clone(),
                    format!("{} {}", a.permission, a.permission_type.clone().unwrap()),
                    p.status.as_ref().unwrap().code,
                )
            })
            .collect();
        let sec = format!("projects/local/secrets/{ID}");
        let ver = |n: u64| format!("{sec}/versions/{n}");
        let expected: Vec<(&str, String, &str, i32)> = vec![
            (
                sm::CREATE_SECRET,
                sec.clone(),
                "secretmanager.secrets.create ADMIN_WRITE",
                0,
            ),
            (
                sm::ADD_SECRET_VERSION,
                sec.clone(),
                "secretmanager.versions.add ADMIN_WRITE",
                0,
            ),
            (
                sm::ADD_SECRET_VERSION,
                sec.clone(),
                "secretmanager.versions.add ADMIN_WRITE",
                0,
            ),
            (
                sm::GET_SECRET,
                sec.clone(),
                "secretmanager.secrets.get ADMIN_READ",
                0,
            ),
            (
                sm::UPDATE_SECRET,
                sec.clone(),
                "secretmanager.secrets.update ADMIN_WRITE",
                0,
            ),
            (
                sm::ACCESS_SECRET_VERSION,
                ver(2),
                "secretmanager.versions.access DATA_READ",
                0,
            ),
            (
                sm::DISABLE_SECRET_VERSION,
                ver(1),
                "secretmanager.versions.disable ADMIN_WRITE",
                0,
            ),
            (
                sm::ACCESS_SECRET_VERSION,
                ver(1),
                "secretmanager.versions.access DATA_READ",
                9,
            ),
            (
                sm::ENABLE_SECRET_VERSION,
                ver(1),
                "secretmanager.versions.enable ADMIN_WRITE",
                0,
            ),
            (
                sm::DESTROY_SECRET_VERSION,
                ver(1),
                "secretmanager.versions.destroy ADMIN_WRITE",
                0,
            ),
            (
                sm::LIST_SECRET_VERSIONS,
                sec.clone(),
                "secretmanager.versions.list ADMIN_READ",
                0,
            ),
            (
                sm::GET_SECRET_VERSION,
                ver(2),
                "secretmanager.versions.get ADMIN_READ",
                0,
            ),
            (
                sm::LIST_SECRETS,
                "projects/local".to_string(),
                "secretmanager.secrets.list ADMIN_READ",
                0,
            ),
            (
                sm::DELETE_SECRET,
                sec.clone(),
                "secretmanager.secrets.delete ADMIN_WRITE",
                0,
            ),
        ];
        let expected: Vec<(String, String, String, i32)> = expected
            .into_iter()
            .map(|(m, r, p, c)| (m.to_string(), r, p.to_string(), c))
            .collect();
        assert_eq!(seen, expected);
        let access = &entries[5];
        assert!(access.is_data_access());
        assert_eq!(access.principal(), Some(names::PRINCIPAL_OPERATOR_DEFAULT));
        assert_eq!(
            access
                .proto_payload
                .as_ref()
                .unwrap()
                .request
                .as_ref()
                .unwrap()["name"],
            format!("{sec}/versions/current")
        );
        let failed = entries[7]
            .proto_payload
            .as_ref()
            .unwrap()
            .status
            .clone()
            .unwrap();
        assert_eq!(failed.message.as_deref(), Some("FAILED_PRECONDITION"));
        assert!(!entries[0].is_data_access());

        let events = f.bus.on(names::TOPIC_SECRET_EVENTS);
        let types: Vec<&str> = events
            .iter()
            .map(|m| m.attributes["eventType"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "SECRET_CREATE",
                "SECRET_VERSION_ADD",
                "SECRET_VERSION_ADD",
                "SECRET_UPDATE",
                "SECRET_VERSION_DISABLE",
                "SECRET_VERSION_ENABLE",
                "SECRET_VERSION_DESTROY",
                "SECRET_DELETE",
            ]
        );
        for m in &events {
            assert_eq!(m.attributes["secretId"], sec);
            assert_eq!(m.attributes["dataFormat"], "JSON_API_V1");
            assert!(DateTime::parse_from_rfc3339(&m.attributes["timestamp"]).is_ok());
            let is_version = m.attributes["eventType"].starts_with("SECRET_VERSION_");
            assert_eq!(m.attributes.contains_key("versionId"), is_version);
        }
        assert_eq!(events[2].attributes["versionId"], ver(2));
        let add: Value = serde_json::from_slice(&events[2].data).unwrap();
        assert_eq!(add["name"], ver(2));
        assert_eq!(add["state"], "ENABLED");
        let update: Value = serde_json::from_slice(&events[3].data).unwrap();
        assert_eq!(update["name"], sec);
        assert_eq!(update["versionAliases"]["current"], "2");
        let destroy: Value = serde_json::from_slice(&events[6].data).unwrap();
        assert_eq!(destroy["state"], "DESTROYED");
        assert!(destroy["destroyTime"].is_string());
        assert_eq!(events[7].attributes["deleteType"], "REQUESTED");
    }

    #[tokio::test]
    async fn a_failing_bus_fails_nothing() {
        let f = fixture();
        f.bus.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let s = &f.store;
        s.create_secret(ID).await.unwrap();
        s.add_version(ID, b"kept").await.unwrap();
        assert_eq!(value(s, VersionRef::Latest).await.unwrap(), b"kept");
        assert!(f.bus.messages.lock().unwrap().is_empty());
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
        f.bus.clear();
    }
}
