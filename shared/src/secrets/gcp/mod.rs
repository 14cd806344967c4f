//! The Secret Manager backend (`google-cloud-secretmanager-v1`).
//!
//! Payloads travel with a CRC32C both ways: the server verifies the one sent
//! with each new version and returns the stored one with each access, which is
//! checked here before the bytes are handed out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use google_cloud_gax::paginator::ItemPaginator as _;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model;
use google_cloud_secretmanager_v1::model::secret_version::State;

use super::rules::{self, validate_secret_id};
use super::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use crate::gcp::{gax, zeroize_bytes};
use crate::{Error, Result, SecretValue};

/// Secret Manager in one project. Secrets are named by id; the project is
/// added here.
pub struct GcpSecretStore {
    client: SecretManagerService,
    project: String,
    /// Version create times, which never change, so that an access (the hot
    /// path, with its own large quota) needs no metadata read after the first.
    create_times: Mutex<HashMap<(String, u64), DateTime<Utc>>>,
}

impl std::fmt::Debug for GcpSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSecretStore")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl GcpSecretStore {
    /// A client with Application Default Credentials.
    pub async fn new(project: &str) -> Result<Self> {
        gax::validate_project(project)?;
        gax::refuse_payload_logging("Secret Manager client")?;
        let client = SecretManagerService::builder()
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Secret Manager client"))?;
        Ok(Self::with_client(project, client))
    }

    /// A store over a stub of the service, for tests.
    pub fn from_stub<T>(project: &str, stub: T) -> Self
    where
        T: google_cloud_secretmanager_v1::stub::SecretManagerService + 'static,
    {
        Self::with_client(project, SecretManagerService::from_stub::<T>(stub))
    }

    fn with_client(project: &str, client: SecretManagerService) -> Self {
        Self {
            client,
            project: project.to_string(),
            create_times: Mutex::new(HashMap::new()),
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// Which of `permissions` the caller holds on a secret (TestIamPermissions),
    /// for `patchpanda health`.
    pub async fn test_permissions(
        &self,
        secret_id: &str,
        permissions: &[&str],
    ) -> Result<Vec<String>> {
        let name = self.secret_name(secret_id)?;
        let resp = self
            .client
            .test_iam_permissions()
            .set_resource(name.clone())
            .set_permissions(permissions.iter().map(|p| p.to_string()))
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        Ok(resp.permissions)
    }

    fn parent(&self) -> String {
        format!("projects/{}", self.project)
    }

    fn secret_name(&self, id: &str) -> Result<String> {
        validate_secret_id(id)?;
        Ok(format!("projects/{}/secrets/{id}", self.project))
    }

    fn version_name(&self, id: &str, version: &VersionRef) -> Result<String> {
        // Also keeps an alias from reaching into another path segment.
        rules::validate_version(version)?;
        Ok(format!("{}/versions/{version}", self.secret_name(id)?))
    }

    fn remember(&self, v: &SecretVersion) {
        if let Ok(mut m) = self.create_times.lock() {
            m.insert((v.secret.clone(), v.number), v.create_time);
        }
    }

    fn remembered(&self, id: &str, number: u64) -> Option<DateTime<Utc>> {
        self.create_times
            .lock()
            .ok()
            .and_then(|m| m.get(&(id.to_string(), number)).copied())
    }

    fn forget_secret(&self, id: &str) {
        if let Ok(mut m) = self.create_times.lock() {
            m.retain(|(s, _), _| s != id);
        }
    }
}

#[async_trait]
impl SecretStore for GcpSecretStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        let name = self.secret_name(id)?;
        // Automatic replication; the CMEK key is Terraform's to set.
        let secret = model::Secret::new().set_replication(
            model::Replication::new().set_automatic(model::replication::Automatic::default()),
        );
        let created = self
            .client
            .create_secret()
            .set_parent(self.parent())
            .set_secret_id(id)
            .set_secret(secret)
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        secret_from_model(created)
    }

    async fn get_secret(&self, id: &str) -> Result<Secret> {
        let name = self.secret_name(id)?;
        let s = self
            .client
            .get_secret()
            .set_name(name.clone())
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        secret_from_model(s)
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        let parent = self.parent();
        let mut items = self
            .client
            .list_secrets()
            .set_parent(parent.clone())
            .by_item();
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            let s = item.map_err(|e| gax::to_error(&e, &parent))?;
            out.push(secret_from_model(s)?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        let name = self.secret_name(id)?;
        self.client
            .delete_secret()
            .set_name(name.clone())
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        self.forget_secret(id);
        Ok(())
    }

    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        let name = self.secret_name(id)?;
        rules::validate_payload(data)?;
        let payload = model::SecretPayload::new()
            .set_data(bytes::Bytes::copy_from_slice(data))
            .set_data_crc32c(gax::crc32c(data));
        let v = self
            .client
            .add_secret_version()
            .set_parent(name.clone())
            .set_payload(payload)
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        // The server verified our checksum only if it says it received it;
        // otherwise something between us stripped it and the bytes stored are
        // unverified.
        if !v.client_specified_payload_checksum {
            return Err(Error::DataLoss(format!(
                "{}: the service did not confirm the payload checksum",
                v.name
            )));
        }
        let version = version_from_model(v)?;
        if version.secret != id {
            return Err(Error::Internal(format!(
                "{name}: the service answered with a version of {}",
                version.secret
            )));
        }
        self.remember(&version);
        Ok(version)
    }

    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        let name = self.version_name(id, version)?;
        let resp = self
            .client
            .access_secret_version()
            .set_name(name.clone())
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        let (secret, number) = parse_version_name(&resp.name)?;
        if secret != id {
            return Err(Error::Internal(format!(
                "{name}: the service answered with {}",
                resp.name
            )));
        }
        let payload = resp
            .payload
            .ok_or_else(|| Error::DataLoss(format!("{}: response has no payload", resp.name)))?;
        let value = SecretValue::new(payload.data.to_vec());
        match payload.data_crc32c {
            Some(c) if c != gax::crc32c(value.expose()) => {
                return Err(Error::DataLoss(format!(
                    "{}: payload checksum mismatch",
                    resp.name
                )));
            }
            Some(_) => {}
            // Versions written before checksums existed carry none.
            None => tracing::warn!(version = %resp.name, "accessed payload carries no checksum"),
        }
        zeroize_bytes(payload.data);
        // A successful access means the version was enabled; its create time
        // never changes, so one metadata read per version suffices.
        let create_time = match self.remembered(id, number) {
            Some(t) => t,
            None => {
                let meta = self.get_version(id, &VersionRef::Number(number)).await?;
                meta.create_time
            }
        };
        Ok(AccessedVersion {
            version: SecretVersion {
                secret: secret.to_string(),
                number,
                state: VersionState::Enabled,
                create_time,
                destroy_time: None,
            },
            value,
        })
    }

    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        let name = self.version_name(id, version)?;
        let v = self
            .client
            .get_secret_version()
            .set_name(name.clone())
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        let v = version_from_model(v)?;
        self.remember(&v);
        Ok(v)
    }

    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        let parent = self.secret_name(id)?;
        let mut items = self
            .client
            .list_secret_versions()
            .set_parent(parent.clone())
            .by_item();
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            let v = item.map_err(|e| gax::to_error(&e, &parent))?;
            out.push(version_from_model(v)?);
        }
        out.sort_by_key(|v| std::cmp::Reverse(v.number));
        Ok(out)
    }

    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        let name = self.version_name(id, &VersionRef::Number(number))?;
        // No etag: the caller decided on this version's state by number.
        let sent = match change {
            StateChange::Enable => {
                self.client
                    .enable_secret_version()
                    .set_name(name.clone())
                    .send()
                    .await
            }
            StateChange::Disable => {
                self.client
                    .disable_secret_version()
                    .set_name(name.clone())
                    .send()
                    .await
            }
            StateChange::Destroy => {
                self.client
                    .destroy_secret_version()
                    .set_name(name.clone())
                    .send()
                    .await
            }
        };
        version_from_model(sent.map_err(|e| gax::to_error(&e, &name))?)
    }

    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        let name = self.secret_name(id)?;
        rules::validate_update(&update)?;
        let mut secret = model::Secret::new().set_name(name.clone());
        let mut paths = Vec::new();
        if let Some(aliases) = update.aliases {
            let mut m = HashMap::with_capacity(aliases.len());
            for (alias, number) in aliases {
                let n = i64::try_from(number)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "{name}: alias {alias:?} -> version {number}"
                        ))
                    })?;
                m.insert(alias, n);
            }
            secret = secret.set_version_aliases(m);
            paths.push("version_aliases");
        }
        if let Some(annotations) = update.annotations {
            secret = secret.set_annotations(annotations);
            paths.push("annotations");
        }
        if paths.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{name}: an update must change aliases or annotations"
            )));
        }
        if let Some(etag) = etag {
            secret = secret.set_etag(etag);
        }
        let updated = self
            .client
            .update_secret()
            .set_secret(secret)
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(paths))
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        secret_from_model(updated)
    }
}

/// The secret id of `projects/P/secrets/ID` (P may be the project number).
fn parse_secret_name(name: &str) -> Result<&str> {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", _, "secrets", id] if !id.is_empty() => Ok(id),
        _ => Err(Error::Internal(format!(
            "unexpected secret name {name:?} from the service"
        ))),
    }
}

/// The secret id and number of `projects/P/secrets/ID/versions/N`.
fn parse_version_name(name: &str) -> Result<(&str, u64)> {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", _, "secrets", id, "versions", n] if !id.is_empty() => n
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| (*id, n))
            .ok_or_else(|| {
                Error::Internal(format!("unexpected version name {name:?} from the service"))
            }),
        _ => Err(Error::Internal(format!(
            "unexpected version name {name:?} from the service"
        ))),
    }
}

fn secret_from_model(s: model::Secret) -> Result<Secret> {
    let id = parse_secret_name(&s.name)?.to_string();
    let create_time = gax::required_time(s.create_time.as_ref(), "create_time", &s.name)?;
    let mut aliases = BTreeMap::new();
    for (alias, n) in s.version_aliases {
        let n = u64::try_from(n)
            .map_err(|_| Error::Internal(format!("{}: alias {alias:?} -> version {n}", s.name)))?;
        aliases.insert(alias, n);
    }
    let (next_rotation_time, rotation_period) = match &s.rotation {
        Some(r) => (
            r.next_rotation_time.as_ref().and_then(gax::time),
            r.rotation_period.as_ref().and_then(gax::duration),
        ),
        None => (None, None),
    };
    Ok(Secret {
        id,
        create_time,
        aliases,
        annotations: s.annotations.into_iter().collect(),
        etag: s.etag,
        next_rotation_time,
        rotation_period,
    })
}

fn version_from_model(v: model::SecretVersion) -> Result<SecretVersion> {
    let (secret, number) = parse_version_name(&v.name)?;
    let state = match v.state {
        State::Enabled => VersionState::Enabled,
        State::Disabled => VersionState::Disabled,
        State::Destroyed => VersionState::Destroyed,
        other => {
            return Err(Error::Internal(format!(
                "{}: unknown version state {other:?}",
                v.name
            )));
        }
    };
    Ok(SecretVersion {
        secret: secret.to_string(),
        number,
        state,
        create_time: gax::required_time(v.create_time.as_ref(), "create_time", &v.name)?,
        destroy_time: v.destroy_time.as_ref().and_then(gax::time),
    })
}

#[cfg(test)]
mod tests;
