//! Doubles for one misbehaviour each: a Secret Manager that answers a
//! guarded write with FAILED_PRECONDITION once (as GCP answers a stale
//! etag), a KMS whose new primary fails its test, and a GitHub App that
//! takes its time.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use patchpanda_shared::kms::{KeyInfo, KeyVersion, Kms};
use patchpanda_shared::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
};
use patchpanda_shared::{Error, Result, SecretValue};
use rotation_worker::{AppApi, AppApiError, AppFactory};

use crate::support::MemStore;

/// Lets `skip` guarded writes through, then answers the next one with
/// FAILED_PRECONDITION without applying it, like Secret Manager when
/// another writer changed the secret in between.
pub struct StaleEtagOnce {
    pub inner: Arc<MemStore>,
    pub skip: usize,
    seen: AtomicUsize,
    pub fired: AtomicBool,
}

impl StaleEtagOnce {
    pub fn new(inner: Arc<MemStore>, skip: usize) -> Self {
        Self {
            inner,
            skip,
            seen: AtomicUsize::new(0),
            fired: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl SecretStore for StaleEtagOnce {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        self.inner.create_secret(id).await
    }
    async fn get_secret(&self, id: &str) -> Result<Secret> {
        self.inner.get_secret(id).await
    }
    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.inner.list_secrets().await
    }
    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.inner.delete_secret(id).await
    }
    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        self.inner.add_version(id, data).await
    }
    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        self.inner.access(id, version).await
    }
    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        self.inner.get_version(id, version).await
    }
    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        self.inner.list_versions(id).await
    }
    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        self.inner.set_state(id, number, change).await
    }
    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        if etag.is_some()
            && self.seen.fetch_add(1, Ordering::SeqCst) == self.skip
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            return Err(Error::FailedPrecondition(
                "The etag provided does not match the current etag".into(),
            ));
        }
        self.inner.update_secret(id, update, etag).await
    }
}

/// A KMS whose encrypt fails while `broken` is set (a new primary that
/// does not work), and whose set-primary is unavailable while
/// `set_primary_down` is; otherwise the wrapped one.
pub struct BrokenEncrypt {
    pub inner: Arc<dyn Kms>,
    pub broken: AtomicBool,
    pub set_primary_down: AtomicBool,
}

#[async_trait]
impl Kms for BrokenEncrypt {
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::FailedPrecondition(
                "The request cannot be fulfilled: key version is not enabled".into(),
            ));
        }
        self.inner.encrypt(plaintext, aad).await
    }
    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretValue> {
        self.inner.decrypt(ciphertext, aad).await
    }
    async fn key_info(&self) -> Result<KeyInfo> {
        self.inner.key_info().await
    }
    async fn list_versions(&self) -> Result<Vec<KeyVersion>> {
        self.inner.list_versions().await
    }
    async fn create_version(&self) -> Result<KeyVersion> {
        self.inner.create_version().await
    }
    async fn set_primary(&self, number: u64) -> Result<KeyInfo> {
        if self.set_primary_down.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "The service is currently unavailable.".into(),
            ));
        }
        self.inner.set_primary(number).await
    }
}

/// A GitHub App that answers PATCH /app/hook/config only after `delay`
/// (tokio time: paused in the tests that use it).
pub struct SlowApp {
    pub delay: Duration,
    pub hook: std::sync::Mutex<Option<String>>,
    pub app_id: u64,
}

pub struct SlowAppFactory(pub Arc<SlowApp>);

struct Handle(Arc<SlowApp>);

impl AppFactory for SlowAppFactory {
    fn connect(
        &self,
        _app_id: &str,
        _private_key: &SecretValue,
    ) -> std::result::Result<Arc<dyn AppApi>, AppApiError> {
        Ok(Arc::new(Handle(self.0.clone())))
    }
}

#[async_trait]
impl AppApi for Handle {
    async fn app_id(&self) -> std::result::Result<u64, AppApiError> {
        Ok(self.0.app_id)
    }
    async fn hook_config(&self) -> std::result::Result<(), AppApiError> {
        Ok(())
    }
    async fn update_hook_secret(
        &self,
        secret: &SecretValue,
    ) -> std::result::Result<(), AppApiError> {
        tokio::time::sleep(self.0.delay).await;
        *self.0.hook.lock().unwrap() = secret.expose_str().map(String::from);
        Ok(())
    }
}
