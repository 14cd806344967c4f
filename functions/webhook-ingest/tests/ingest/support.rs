//! In-memory fakes of the store and the bus, and a harness that calls the
//! handlers directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::runtime::events::PushFormat;
use patchpanda_shared::runtime::{
    Context, HandlerError, HttpRequest, Invocation, PushMessage, Reply, SchedulerJob,
};
use patchpanda_shared::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use patchpanda_shared::{Error, Result, SecretValue};
use tower::ServiceExt;
use webhook_ingest::{MemoryMark, Settings, WebhookIngest};

pub const WEBHOOK_ID: &str = "patchpanda-webhook-secret";
/// The webhook secret most tests seed.
pub const SECRET: &str = "first-webhook-secret";
pub const KEY_ID: &str = "patchpanda-github-private-key";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A delivery as GitHub sends it, signed with `secret`.
pub fn signed(event: &str, delivery: &str, body: &[u8], secret: &str) -> HttpRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-github-event", event.parse().unwrap());
    headers.insert("x-github-delivery", delivery.parse().unwrap());
    headers.insert("x-github-hook-id", "77".parse().unwrap());
    headers.insert(
        "x-github-hook-installation-target-type",
        "integration".parse().unwrap(),
    );
    headers.insert("user-agent", "GitHub-Hookshot/abc123".parse().unwrap());
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    headers.insert(
        signature::HEADER,
        signature::sign(secret.as_bytes(), body).parse().unwrap(),
    );
    HttpRequest {
        method: http::Method::POST,
        uri: "/webhook".parse().unwrap(),
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    }
}

pub fn assert_status(r: std::result::Result<Reply, HandlerError>, status: http::StatusCode) {
    match r {
        Ok(reply) => assert_eq!(reply.status, status, "got a reply: {reply:?}"),
        Err(e) => assert_eq!(e.status(), status, "{e}"),
    }
}

// ---------------------------------------------------------------------------

struct FakeSecret {
    versions: Vec<(VersionState, SecretValue)>,
    aliases: BTreeMap<String, u64>,
    annotations: BTreeMap<String, String>,
    etag: u64,
}

/// Secret Manager in a map; `failing` makes every call Unavailable.
#[derive(Default)]
pub struct FakeStore {
    secrets: Mutex<HashMap<String, FakeSecret>>,
    pub failing: AtomicBool,
    /// `AccessSecretVersion` calls: payload reads, audited as DATA_READ.
    pub accesses: AtomicUsize,
    /// `GetSecret` calls: metadata reads.
    pub metadata_reads: AtomicUsize,
}

impl FakeStore {
    /// A secret with versions 1..=n, `current` the last, `previous` the one
    /// before (no grace annotation).
    pub fn seed(&self, id: &str, values: &[&str]) {
        let n = values.len() as u64;
        let mut aliases = BTreeMap::from([(names::ALIAS_CURRENT.to_string(), n)]);
        if n > 1 {
            aliases.insert(names::ALIAS_PREVIOUS.to_string(), n - 1);
        }
        self.secrets.lock().unwrap().insert(
            id.to_string(),
            FakeSecret {
                versions: values
                    .iter()
                    .map(|v| (VersionState::Enabled, SecretValue::from(v.to_string())))
                    .collect(),
                aliases,
                annotations: BTreeMap::new(),
                etag: 1,
            },
        );
    }

    /// What the rotation worker does: a new version becomes `current`, the
    /// old one `previous`, with the grace annotation (or none: emergency).
    pub fn rotate(&self, id: &str, value: &str, grace_until: Option<&str>) {
        let mut all = self.secrets.lock().unwrap();
        let s = all.get_mut(id).unwrap();
        s.versions
            .push((VersionState::Enabled, SecretValue::from(value.to_string())));
        let n = s.versions.len() as u64;
        let old = s.aliases[names::ALIAS_CURRENT];
        s.aliases.insert(names::ALIAS_CURRENT.into(), n);
        s.aliases.insert(names::ALIAS_PREVIOUS.into(), old);
        s.etag += 1;
        drop(all);
        self.annotate(id, grace_until);
    }

    /// What the rotation worker does first: a new version, aliased
    /// `pending`, announced before GitHub signs with it.
    pub fn begin_rotation(&self, id: &str, value: &str) {
        let mut all = self.secrets.lock().unwrap();
        let s = all.get_mut(id).unwrap();
        s.versions
            .push((VersionState::Enabled, SecretValue::from(value.to_string())));
        let n = s.versions.len() as u64;
        s.aliases.insert(names::ALIAS_PENDING.into(), n);
        s.etag += 1;
    }

    pub fn annotate(&self, id: &str, grace_until: Option<&str>) {
        let mut all = self.secrets.lock().unwrap();
        let s = all.get_mut(id).unwrap();
        match grace_until {
            Some(t) => s
                .annotations
                .insert(names::ANNOTATION_PREVIOUS_VALID_UNTIL.into(), t.into()),
            None => s.annotations.remove(names::ANNOTATION_PREVIOUS_VALID_UNTIL),
        };
        s.etag += 1;
    }

    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("secret store down (test)".into()));
        }
        Ok(())
    }

    fn meta(id: &str, s: &FakeSecret) -> Secret {
        Secret {
            id: id.to_string(),
            create_time: Utc::now(),
            aliases: s.aliases.clone(),
            annotations: s.annotations.clone(),
            etag: s.etag.to_string(),
            next_rotation_time: None,
            rotation_period: None,
        }
    }

    fn version(id: &str, n: u64, state: VersionState) -> SecretVersion {
        SecretVersion {
            secret: id.to_string(),
            number: n,
            state,
            create_time: Utc::now(),
            destroy_time: None,
        }
    }
}

#[async_trait]
impl SecretStore for FakeStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        self.check()?;
        self.seed(id, &[]);
        self.get_secret(id).await
    }
    async fn get_secret(&self, id: &str) -> Result<Secret> {
        self.metadata_reads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let all = self.secrets.lock().unwrap();
        let s = all.get(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(Self::meta(id, s))
    }
    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.check()?;
        let all = self.secrets.lock().unwrap();
        Ok(all.iter().map(|(id, s)| Self::meta(id, s)).collect())
    }
    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.check()?;
        self.secrets.lock().unwrap().remove(id);
        Ok(())
    }
    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        self.check()?;
        let mut all = self.secrets.lock().unwrap();
        let s = all
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        s.versions
            .push((VersionState::Enabled, SecretValue::from(data)));
        Ok(Self::version(
            id,
            s.versions.len() as u64,
            VersionState::Enabled,
        ))
    }
    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let all = self.secrets.lock().unwrap();
        let s = all.get(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        let n = match version {
            VersionRef::Number(n) => *n,
            VersionRef::Alias(a) => *s
                .aliases
                .get(a)
                .ok_or_else(|| Error::NotFound(format!("alias {a}")))?,
            VersionRef::Latest => s.versions.len() as u64,
        };
        let (state, value) = s
            .versions
            .get((n as usize).wrapping_sub(1))
            .ok_or_else(|| Error::NotFound(format!("{id}/{n}")))?;
        if *state != VersionState::Enabled {
            return Err(Error::FailedPrecondition(format!("{id}/{n} is {state}")));
        }
        Ok(AccessedVersion {
            version: Self::version(id, n, *state),
            value: value.clone(),
        })
    }
    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        self.access(id, version).await.map(|a| a.version)
    }
    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        self.check()?;
        let all = self.secrets.lock().unwrap();
        let s = all.get(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(s.versions
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (state, _))| Self::version(id, i as u64 + 1, *state))
            .collect())
    }
    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        self.check()?;
        let mut all = self.secrets.lock().unwrap();
        let s = all
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let v = s
            .versions
            .get_mut((number as usize).wrapping_sub(1))
            .ok_or_else(|| Error::NotFound(format!("{id}/{number}")))?;
        v.0 = match change {
            StateChange::Enable => VersionState::Enabled,
            StateChange::Disable => VersionState::Disabled,
            StateChange::Destroy => VersionState::Destroyed,
        };
        Ok(Self::version(id, number, v.0))
    }
    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        _etag: Option<&str>,
    ) -> Result<Secret> {
        self.check()?;
        let mut all = self.secrets.lock().unwrap();
        let s = all
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        if let Some(a) = update.aliases {
            s.aliases = a;
        }
        if let Some(a) = update.annotations {
            s.annotations = a;
        }
        s.etag += 1;
        Ok(Self::meta(id, s))
    }
}

/// A bus that keeps what it is given; `failing` makes publish fail.
#[derive(Default)]
pub struct FakeBus {
    messages: Mutex<Vec<(String, Message)>>,
    next: AtomicU64,
    pub failing: AtomicBool,
    /// `check` calls (what /ready asks).
    pub checks: AtomicUsize,
}

impl FakeBus {
    pub fn published(&self) -> Vec<(String, Message)> {
        self.messages.lock().unwrap().clone()
    }
}

#[async_trait]
impl Bus for FakeBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("bus down (test)".into()));
        }
        self.messages
            .lock()
            .unwrap()
            .push((topic.to_string(), message));
        Ok(format!(
            "m-{}",
            self.next.fetch_add(1, Ordering::SeqCst) + 1
        ))
    }
    async fn check(&self) -> Result<()> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("bus down (test)".into()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------

pub struct Harness {
    pub store: Arc<FakeStore>,
    pub bus: Arc<FakeBus>,
    pub wi: WebhookIngest,
    pub config: Config,
    /// PATCHPANDA_HOME, for the local token issuer the router's OIDC checks use.
    _home: tempfile::TempDir,
}

impl Harness {
    pub fn new(webhook_secrets: &[&str], env: &[(&str, &str)]) -> Self {
        Self::with_env(webhook_secrets, &[], env)
    }

    /// `key` seeds the App's private key, when a test needs one.
    pub fn with_env(webhook_secrets: &[&str], key: &[&str], env: &[(&str, &str)]) -> Self {
        let store = Arc::new(FakeStore::default());
        if !webhook_secrets.is_empty() {
            store.seed(WEBHOOK_ID, webhook_secrets);
        }
        if !key.is_empty() {
            store.seed(KEY_ID, key);
        }
        let bus = Arc::new(FakeBus::default());
        let home = tempfile::tempdir().unwrap();
        let mut env = Env::from_pairs(env.iter().copied());
        env.set("PATCHPANDA_HOME", home.path().display().to_string());
        let config = Config::from_env(&env, names::PRINCIPAL_WEBHOOK_INGEST).unwrap();
        let settings = Settings::from_env(&env).unwrap();
        let wi = WebhookIngest::new(
            &config,
            &settings,
            store.clone(),
            bus.clone(),
            Arc::new(MemoryMark::default()),
        );
        Self {
            store,
            bus,
            wi,
            config,
            _home: home,
        }
    }

    /// The routes through the HTTP router, as the runtime serves them.
    pub fn router(&self) -> axum::Router {
        self.wi.app(&self.config).unwrap().router()
    }

    pub fn ctx() -> Context {
        Context::for_test("webhook-ingest")
    }

    pub async fn webhook(&self, req: HttpRequest) -> std::result::Result<Reply, HandlerError> {
        self.wi
            .webhook_handler()
            .oneshot(Invocation::new(req, Self::ctx()))
            .await
    }

    pub async fn rotation_notice(&self, secret: &str) -> std::result::Result<Reply, HandlerError> {
        self.notice(secret, NoticeEvent::Rotated).await
    }

    pub async fn notice(
        &self,
        secret: &str,
        event: NoticeEvent,
    ) -> std::result::Result<Reply, HandlerError> {
        let mut n = RotationNotice::new(secret, event, "r-1");
        n.version = Some(2);
        let m = n.to_message();
        self.push_raw(&m.data, m.attributes).await
    }

    pub async fn push_raw(
        &self,
        data: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> std::result::Result<Reply, HandlerError> {
        let msg = PushMessage {
            message_id: "1".into(),
            data: bytes::Bytes::copy_from_slice(data),
            attributes,
            ordering_key: None,
            publish_time: Some(Utc::now()),
            subscription: Some("projects/local/subscriptions/webhook-ingest".into()),
            delivery_attempt: None,
            format: PushFormat::Wrapped,
        };
        self.wi
            .rotation_handler()
            .oneshot(Invocation::new(msg, Self::ctx()))
            .await
    }

    pub async fn sweep(&self) -> serde_json::Value {
        let job = SchedulerJob {
            job_name: Some("redeliver".into()),
            schedule_time: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let reply = self
            .wi
            .redeliver_handler()
            .oneshot(Invocation::new(job, Self::ctx()))
            .await
            .unwrap_or_else(|e| panic!("sweep failed: {e}"));
        assert_eq!(reply.status, http::StatusCode::OK);
        serde_json::from_slice(&reply.body).unwrap()
    }
}

/// Base64 for push envelopes.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
