//! Misbehaviours beyond what `Flaky` plans by itself: another writer that
//! changes a secret just before one of the rotation's guarded writes (so
//! Secret Manager's etag check answers it FAILED_PRECONDITION), and a GitHub
//! App that takes its time.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use patchpanda_shared::SecretValue;
use patchpanda_shared::secrets::{SecretStore, SecretUpdate};
use rotation_worker::{AppApi, AppApiError, AppFactory};

use crate::support::{Call, Flaky, MemorySecretStore};

/// From now on, lets `skip` secret updates through, then, just before the
/// next one reaches the store, another writer rewrites every secret's
/// annotations unchanged: the store gives each a new etag, so that update
/// (made with the etag its writer read) is refused FAILED_PRECONDITION by
/// the store's own check, as Secret Manager refuses a stale etag. Once only.
/// The returned flag says whether it happened.
pub fn stale_etag_before_update(
    store: &Arc<Flaky<MemorySecretStore>>,
    skip: usize,
) -> Arc<AtomicBool> {
    let fired = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let weak: Weak<Flaky<MemorySecretStore>> = Arc::downgrade(store);
    let flag = fired.clone();
    store.before(
        Call::UpdateSecret,
        Arc::new(move || {
            let due = seen.fetch_add(1, Ordering::SeqCst) == skip;
            let (weak, flag) = (weak.clone(), flag.clone());
            Box::pin(async move {
                let Some(store) = weak.upgrade().filter(|_| due) else {
                    return;
                };
                let other = store.inner();
                for secret in other.list_secrets().await.unwrap() {
                    let touch = SecretUpdate {
                        aliases: None,
                        annotations: Some(secret.annotations),
                    };
                    other.update_secret(&secret.id, touch, None).await.unwrap();
                }
                flag.store(true, Ordering::SeqCst);
            })
        }),
    );
    fired
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
