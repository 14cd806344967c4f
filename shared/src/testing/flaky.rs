//! A wrapper that makes a backend fail on demand, counts its calls, and can
//! hold calls at a hook (to prove coalescing or parallelism).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::bus::{Bus, Message};
use crate::kms::{KeyInfo, KeyVersion, Kms};
use crate::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
};
use crate::{Error, Result, SecretValue};

/// One kind of call, across the three backend traits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    // SecretStore
    CreateSecret,
    GetSecret,
    ListSecrets,
    DeleteSecret,
    AddVersion,
    Access,
    GetVersion,
    ListVersions,
    SetState,
    UpdateSecret,
    // Bus
    Publish,
    Check,
    // Kms
    Encrypt,
    Decrypt,
    KeyInfo,
    ListKeyVersions,
    CreateKeyVersion,
    SetPrimary,
    DisableKeyVersion,
}

impl Call {
    /// Every [`SecretStore`] call: fail them all to take a whole store down.
    pub const SECRET_STORE: [Call; 10] = [
        Call::CreateSecret,
        Call::GetSecret,
        Call::ListSecrets,
        Call::DeleteSecret,
        Call::AddVersion,
        Call::Access,
        Call::GetVersion,
        Call::ListVersions,
        Call::SetState,
        Call::UpdateSecret,
    ];
    /// Every [`Bus`] call.
    pub const BUS: [Call; 2] = [Call::Publish, Call::Check];
    /// Every [`Kms`] call.
    pub const KMS: [Call; 6] = [
        Call::Encrypt,
        Call::Decrypt,
        Call::KeyInfo,
        Call::ListKeyVersions,
        Call::CreateKeyVersion,
        Call::SetPrimary,
    ];
}

/// Runs before each call of its kind (after it is counted, before any
/// planned failure): wait at a barrier, a gate, signal a test...
pub type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Default)]
struct Plan {
    calls: HashMap<Call, usize>,
    /// Failures still to answer, per kind; `usize::MAX` means forever.
    faults: HashMap<Call, (usize, Error)>,
    hooks: HashMap<Call, Hook>,
}

/// Wraps a [`SecretStore`], [`Bus`] or [`Kms`].
pub struct Flaky<T> {
    inner: T,
    plan: Mutex<Plan>,
}

impl<T> std::fmt::Debug for Flaky<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flaky").finish_non_exhaustive()
    }
}

impl<T> Flaky<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            plan: Mutex::new(Plan::default()),
        }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` calls of kind `call` fail with `error` (without reaching
    /// the inner backend); `usize::MAX` fails them until [`Flaky::heal`].
    pub fn fail_next(&self, call: Call, n: usize, error: Error) {
        let mut plan = self.plan();
        if n == 0 {
            plan.faults.remove(&call);
        } else {
            plan.faults.insert(call, (n, error));
        }
    }

    /// Every call of kind `call` fails with `error` until healed.
    pub fn fail_always(&self, call: Call, error: Error) {
        self.fail_next(call, usize::MAX, error);
    }

    /// Every call of each kind in `calls` fails with `error` until healed
    /// (e.g. [`Call::SECRET_STORE`]: the whole store is down).
    pub fn fail_always_all(&self, calls: &[Call], error: Error) {
        for &call in calls {
            self.fail_always(call, error.clone());
        }
    }

    /// Cancels every planned failure.
    pub fn heal(&self) {
        self.plan().faults.clear();
    }

    /// Runs `hook` before every call of kind `call`.
    pub fn before(&self, call: Call, hook: Hook) {
        self.plan().hooks.insert(call, hook);
    }

    /// How many calls of kind `call` were made (failed ones included).
    pub fn calls(&self, call: Call) -> usize {
        self.plan().calls.get(&call).copied().unwrap_or(0)
    }

    /// Counts the call, runs its hook, then answers a planned failure if
    /// one is due.
    async fn enter(&self, call: Call) -> Result<()> {
        let hook = {
            let mut plan = self.plan();
            *plan.calls.entry(call).or_insert(0) += 1;
            plan.hooks.get(&call).cloned()
        };
        if let Some(hook) = hook {
            hook().await;
        }
        let mut plan = self.plan();
        let Some((left, error)) = plan.faults.get_mut(&call) else {
            return Ok(());
        };
        let error = error.clone();
        if *left != usize::MAX {
            *left -= 1;
        }
        if *left == 0 {
            plan.faults.remove(&call);
        }
        Err(error)
    }
}

#[async_trait]
impl<T: SecretStore> SecretStore for Flaky<T> {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        self.enter(Call::CreateSecret).await?;
        self.inner.create_secret(id).await
    }
    async fn get_secret(&self, id: &str) -> Result<Secret> {
        self.enter(Call::GetSecret).await?;
        self.inner.get_secret(id).await
    }
    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.enter(Call::ListSecrets).await?;
        self.inner.list_secrets().await
    }
    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.enter(Call::DeleteSecret).await?;
        self.inner.delete_secret(id).await
    }
    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        self.enter(Call::AddVersion).await?;
        self.inner.add_version(id, data).await
    }
    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        self.enter(Call::Access).await?;
        self.inner.access(id, version).await
    }
    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        self.enter(Call::GetVersion).await?;
        self.inner.get_version(id, version).await
    }
    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        self.enter(Call::ListVersions).await?;
        self.inner.list_versions(id).await
    }
    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        self.enter(Call::SetState).await?;
        self.inner.set_state(id, number, change).await
    }
    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        self.enter(Call::UpdateSecret).await?;
        self.inner.update_secret(id, update, etag).await
    }
}

#[async_trait]
impl<T: Bus> Bus for Flaky<T> {
    async fn publish(&self, topic: &str, message: Message) -> Result<String> {
        self.enter(Call::Publish).await?;
        self.inner.publish(topic, message).await
    }
    async fn check(&self) -> Result<()> {
        self.enter(Call::Check).await?;
        self.inner.check().await
    }
}

#[async_trait]
impl<T: Kms> Kms for Flaky<T> {
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.enter(Call::Encrypt).await?;
        self.inner.encrypt(plaintext, aad).await
    }
    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretValue> {
        self.enter(Call::Decrypt).await?;
        self.inner.decrypt(ciphertext, aad).await
    }
    async fn key_info(&self) -> Result<KeyInfo> {
        self.enter(Call::KeyInfo).await?;
        self.inner.key_info().await
    }
    async fn list_versions(&self) -> Result<Vec<KeyVersion>> {
        self.enter(Call::ListKeyVersions).await?;
        self.inner.list_versions().await
    }
    async fn create_version(&self) -> Result<KeyVersion> {
        self.enter(Call::CreateKeyVersion).await?;
        self.inner.create_version().await
    }
    async fn set_primary(&self, number: u64) -> Result<KeyInfo> {
        self.enter(Call::SetPrimary).await?;
        self.inner.set_primary(number).await
    }
    async fn disable_version(&self, number: u64) -> Result<KeyVersion> {
        self.enter(Call::DisableKeyVersion).await?;
        self.inner.disable_version(number).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::RecordingBus;

    #[tokio::test]
    async fn fails_exactly_the_next_n_calls_of_one_kind() {
        let bus = Flaky::new(RecordingBus::new());
        bus.fail_next(Call::Publish, 2, Error::Unavailable("down".into()));
        for _ in 0..2 {
            assert_eq!(
                bus.publish("t", Message::new("x")).await,
                Err(Error::Unavailable("down".into()))
            );
        }
        bus.check().await.unwrap();
        bus.publish("t", Message::new("y")).await.unwrap();
        bus.fail_next(Call::Publish, 0, Error::Internal("never".into()));
        bus.publish("t", Message::new("z")).await.unwrap();
        assert_eq!(bus.calls(Call::Publish), 4);
        assert_eq!(bus.calls(Call::Check), 1);
        assert_eq!(
            bus.inner().on("t").len(),
            2,
            "failed calls never reached it"
        );
    }

    #[tokio::test]
    async fn fails_until_healed_and_runs_hooks() {
        let bus = Flaky::new(RecordingBus::new());
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        bus.before(
            Call::Check,
            Arc::new(move || {
                s.fetch_add(1, Ordering::SeqCst);
                Box::pin(async {})
            }),
        );
        bus.fail_always(Call::Check, Error::Internal("x".into()));
        for _ in 0..5 {
            assert!(bus.check().await.is_err());
        }
        bus.heal();
        bus.check().await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn takes_a_whole_backend_down_until_healed() {
        let bus = Flaky::new(RecordingBus::new());
        bus.fail_always_all(&Call::BUS, Error::Unavailable("down".into()));
        for _ in 0..3 {
            assert!(bus.publish("t", Message::new("x")).await.is_err());
            assert!(bus.check().await.is_err());
        }
        bus.heal();
        bus.publish("t", Message::new("y")).await.unwrap();
        bus.check().await.unwrap();
        assert_eq!(bus.inner().len(), 1);
    }
}
