//! Secret Manager in memory, for tests: the same rules and answers as the
//! local store (`crate::secrets::local`), held to the same contract suite
//! (`tests/it/contract.rs`), without a disk, a KMS or a bus. Wrap it in
//! [`crate::secrets::audited::Audited::with_bus`] to see audit entries and
//! notifications, in [`super::Flaky`] to make it fail. Resource names say
//! `projects/local`, as the local store's do.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::ManualClock;
use crate::secrets::local::{secret_name, version_name};
use crate::secrets::rules;
use crate::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use crate::{Error, Result, SecretValue};

struct Version {
    meta: SecretVersion,
    value: Option<SecretValue>,
}

struct Entry {
    secret: Secret,
    versions: BTreeMap<u64, Version>,
    next_version: u64,
}

#[derive(Default)]
struct World {
    secrets: BTreeMap<String, Entry>,
    etags: u64,
}

/// An in-memory [`SecretStore`]. Times come from its [`ManualClock`].
pub struct MemorySecretStore {
    world: Mutex<World>,
    clock: ManualClock,
}

impl std::fmt::Debug for MemorySecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySecretStore").finish_non_exhaustive()
    }
}

impl Default for MemorySecretStore {
    fn default() -> Self {
        Self::with_clock(ManualClock::default())
    }
}

impl MemorySecretStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose create and destroy times follow `clock`.
    pub fn with_clock(clock: ManualClock) -> Self {
        Self {
            world: Mutex::new(World::default()),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "Secret [{}] not found or has no versions.",
        secret_name(id)
    ))
}

impl World {
    fn entry(&self, id: &str) -> Result<&Entry> {
        rules::validate_secret_id(id)?;
        self.secrets.get(id).ok_or_else(|| not_found(id))
    }

    fn entry_mut(&mut self, id: &str) -> Result<&mut Entry> {
        rules::validate_secret_id(id)?;
        self.secrets.get_mut(id).ok_or_else(|| not_found(id))
    }

    fn new_etag(&mut self) -> String {
        self.etags += 1;
        format!("\"m{:x}\"", self.etags)
    }
}

impl Entry {
    /// `latest` is the newest version, whatever its state.
    fn resolve(&self, version: &VersionRef) -> Result<u64> {
        rules::validate_version(version)?;
        let id = &self.secret.id;
        let n = match version {
            VersionRef::Number(n) => Some(*n),
            VersionRef::Alias(a) => self.secret.aliases.get(a).copied(),
            VersionRef::Latest => self.versions.keys().next_back().copied(),
        };
        match n {
            Some(n) if self.versions.contains_key(&n) => Ok(n),
            _ if matches!(version, VersionRef::Latest) => Err(not_found(id)),
            _ => Err(Error::NotFound(format!(
                "Secret Version [{}/versions/{version}] not found.",
                secret_name(id)
            ))),
        }
    }
}

#[async_trait]
impl SecretStore for MemorySecretStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        rules::validate_secret_id(id)?;
        let mut w = self.lock();
        if w.secrets.contains_key(id) {
            return Err(Error::AlreadyExists(format!(
                "Secret [{}] already exists.",
                secret_name(id)
            )));
        }
        let secret = Secret {
            id: id.to_string(),
            create_time: self.clock.now(),
            aliases: BTreeMap::new(),
            annotations: BTreeMap::new(),
            etag: w.new_etag(),
            next_rotation_time: None,
            rotation_period: None,
        };
        w.secrets.insert(
            id.to_string(),
            Entry {
                secret: secret.clone(),
                versions: BTreeMap::new(),
                next_version: 1,
            },
        );
        Ok(secret)
    }

    async fn get_secret(&self, id: &str) -> Result<Secret> {
        Ok(self.lock().entry(id)?.secret.clone())
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        Ok(self
            .lock()
            .secrets
            .values()
            .map(|e| e.secret.clone())
            .collect())
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        let mut w = self.lock();
        w.entry(id)?;
        w.secrets.remove(id);
        Ok(())
    }

    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        rules::validate_payload(data)?;
        let now = self.clock.now();
        let mut w = self.lock();
        let e = w.entry_mut(id)?;
        let number = e.next_version;
        e.next_version += 1;
        let meta = SecretVersion {
            secret: id.to_string(),
            number,
            state: VersionState::Enabled,
            create_time: now,
            destroy_time: None,
        };
        e.versions.insert(
            number,
            Version {
                meta: meta.clone(),
                value: Some(SecretValue::from(data)),
            },
        );
        Ok(meta)
    }

    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        let w = self.lock();
        let e = w.entry(id)?;
        let v = &e.versions[&e.resolve(version)?];
        match (&v.meta.state, &v.value) {
            (VersionState::Enabled, Some(value)) => Ok(AccessedVersion {
                version: v.meta.clone(),
                value: value.clone(),
            }),
            (state, _) => Err(Error::FailedPrecondition(format!(
                "Secret Version [{}] is in {} state.",
                version_name(id, v.meta.number),
                state.api_name()
            ))),
        }
    }

    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        let w = self.lock();
        let e = w.entry(id)?;
        Ok(e.versions[&e.resolve(version)?].meta.clone())
    }

    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        let w = self.lock();
        Ok(w.entry(id)?
            .versions
            .values()
            .rev()
            .map(|v| v.meta.clone())
            .collect())
    }

    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        let now = self.clock.now();
        let mut w = self.lock();
        let e = w.entry_mut(id)?;
        let n = e.resolve(&VersionRef::Number(number))?;
        let name = version_name(id, n);
        if e.versions[&n].meta.state == VersionState::Destroyed {
            return Err(Error::FailedPrecondition(format!(
                "Secret Version [{name}] is in DESTROYED state."
            )));
        }
        if change == StateChange::Destroy && e.secret.aliases.values().any(|&a| a == n) {
            return Err(Error::FailedPrecondition(format!(
                "Secret Version [{name}] has aliases; move them before destroying it"
            )));
        }
        let v = e.versions.get_mut(&n).expect("resolved");
        match change {
            StateChange::Enable => v.meta.state = VersionState::Enabled,
            StateChange::Disable => v.meta.state = VersionState::Disabled,
            StateChange::Destroy => {
                v.meta.state = VersionState::Destroyed;
                v.meta.destroy_time = Some(now);
                v.value = None;
            }
        }
        Ok(v.meta.clone())
    }

    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        rules::validate_update(&update)?;
        let mut w = self.lock();
        let e = w.entry(id)?;
        if let Some(expected) = etag
            && expected != e.secret.etag
        {
            return Err(Error::FailedPrecondition(format!(
                "The etag provided does not match the current etag of Secret [{}].",
                secret_name(id)
            )));
        }
        for (alias, n) in update.aliases.iter().flatten() {
            match e.versions.get(n) {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "version alias {alias:?} points to {}, which does not exist",
                        version_name(id, *n)
                    )));
                }
                Some(v) if v.meta.state == VersionState::Destroyed => {
                    return Err(Error::FailedPrecondition(format!(
                        "version alias {alias:?} points to {}, which is destroyed",
                        version_name(id, *n)
                    )));
                }
                Some(_) => {}
            }
        }
        let etag = w.new_etag();
        let e = w.entry_mut(id)?;
        if let Some(aliases) = update.aliases {
            e.secret.aliases = aliases;
        }
        if let Some(annotations) = update.annotations {
            e.secret.annotations = annotations;
        }
        e.secret.etag = etag;
        Ok(e.secret.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn times_follow_the_clock() {
        let clock = ManualClock::default();
        let s = MemorySecretStore::with_clock(clock.clone());
        s.create_secret("s").await.unwrap();
        let v1 = s.add_version("s", b"one").await.unwrap();
        clock.advance(chrono::TimeDelta::hours(1));
        let v2 = s.add_version("s", b"two").await.unwrap();
        assert_eq!(v2.create_time - v1.create_time, chrono::TimeDelta::hours(1));
        let d = s.set_state("s", 1, StateChange::Destroy).await.unwrap();
        assert_eq!(d.destroy_time, Some(clock.now()));
        assert!(!format!("{s:?}").contains("two"));
    }
}
