//! Test doubles: a Secret Manager in memory that keeps its rules (etags
//! change on every update and guard it with FailedPrecondition, as Secret Manager does; aliases only name live
//! versions; aliased versions cannot be destroyed; only enabled versions can
//! be read), a bus that records, a clock tests move, and a stub GitHub that
//! checks the App JWT's signature, issuer and lifetime.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::kms::Kms;
use patchpanda_shared::kms::local::LocalKms;
use patchpanda_shared::local::Home;
use patchpanda_shared::notice::RotationNotice;
use patchpanda_shared::secrets::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
    VersionState,
};
use patchpanda_shared::{Error, Result, SecretValue, names};
use rotation_worker::{GitHubSettings, Rotator, Settings};
use serde_json::{Value, json};

pub const APP_KEY: &str = include_str!("fixtures/app-key.pem");
pub const APP_PUB: &str = include_str!("fixtures/app-key.pub.pem");
pub const NEXT_KEY: &str = include_str!("fixtures/next-key.pem");
pub const NEXT_PUB: &str = include_str!("fixtures/next-key.pub.pem");
pub const WEAK_KEY: &str = include_str!("fixtures/weak-1024.pem");
pub const APP_ID: &str = "12345";
pub const INITIAL_WEBHOOK_SECRET: &str = "initial-webhook-secret-for-tests";

// ---------------------------------------------------------------------------

#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Utc::now())))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(d).unwrap();
    }
}

// ---------------------------------------------------------------------------

struct MemVersion {
    meta: SecretVersion,
    value: Option<Vec<u8>>,
}

struct MemSecret {
    meta: Secret,
    versions: BTreeMap<u64, MemVersion>,
}

pub struct MemStore {
    clock: TestClock,
    etags: AtomicU64,
    secrets: Mutex<BTreeMap<String, MemSecret>>,
}

impl MemStore {
    pub fn new(clock: TestClock) -> Self {
        Self {
            clock,
            etags: AtomicU64::new(1),
            secrets: Mutex::new(BTreeMap::new()),
        }
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.etags.fetch_add(1, Ordering::SeqCst))
    }
}

fn not_found(what: &str) -> Error {
    Error::NotFound(what.to_string())
}

fn resolve(s: &MemSecret, v: &VersionRef) -> Result<u64> {
    match v {
        VersionRef::Number(n) if s.versions.contains_key(n) => Ok(*n),
        VersionRef::Number(n) => Err(not_found(&format!("version {n}"))),
        VersionRef::Alias(a) => s
            .meta
            .aliases
            .get(a)
            .copied()
            .ok_or_else(|| not_found(&format!("alias {a}"))),
        VersionRef::Latest => s
            .versions
            .keys()
            .max()
            .copied()
            .ok_or_else(|| not_found("latest")),
    }
}

#[async_trait]
impl SecretStore for MemStore {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        let mut all = self.secrets.lock().unwrap();
        if all.contains_key(id) {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let meta = Secret {
            id: id.to_string(),
            create_time: self.clock.now(),
            aliases: BTreeMap::new(),
            annotations: BTreeMap::new(),
            etag: self.etag(),
            next_rotation_time: None,
            rotation_period: None,
        };
        all.insert(
            id.to_string(),
            MemSecret {
                meta: meta.clone(),
                versions: BTreeMap::new(),
            },
        );
        Ok(meta)
    }

    async fn get_secret(&self, id: &str) -> Result<Secret> {
        let all = self.secrets.lock().unwrap();
        all.get(id)
            .map(|s| s.meta.clone())
            .ok_or_else(|| not_found(id))
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        Ok(self
            .secrets
            .lock()
            .unwrap()
            .values()
            .map(|s| s.meta.clone())
            .collect())
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.secrets
            .lock()
            .unwrap()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| not_found(id))
    }

    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        if data.is_empty() {
            return Err(Error::InvalidArgument(
                "Secret Payload cannot be empty.".into(),
            ));
        }
        let mut all = self.secrets.lock().unwrap();
        let s = all.get_mut(id).ok_or_else(|| not_found(id))?;
        let number = s.versions.keys().max().copied().unwrap_or(0) + 1;
        let meta = SecretVersion {
            secret: id.to_string(),
            number,
            state: VersionState::Enabled,
            create_time: self.clock.now(),
            destroy_time: None,
        };
        s.versions.insert(
            number,
            MemVersion {
                meta: meta.clone(),
                value: Some(data.to_vec()),
            },
        );
        Ok(meta)
    }

    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        let all = self.secrets.lock().unwrap();
        let s = all.get(id).ok_or_else(|| not_found(id))?;
        let v = &s.versions[&resolve(s, version)?];
        match (&v.value, v.meta.state) {
            (Some(value), VersionState::Enabled) => Ok(AccessedVersion {
                version: v.meta.clone(),
                value: SecretValue::from(value.clone()),
            }),
            _ => Err(Error::FailedPrecondition(format!(
                "version {} is {}",
                v.meta.number, v.meta.state
            ))),
        }
    }

    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        let all = self.secrets.lock().unwrap();
        let s = all.get(id).ok_or_else(|| not_found(id))?;
        Ok(s.versions[&resolve(s, version)?].meta.clone())
    }

    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        let all = self.secrets.lock().unwrap();
        let s = all.get(id).ok_or_else(|| not_found(id))?;
        Ok(s.versions.values().rev().map(|v| v.meta.clone()).collect())
    }

    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        let mut all = self.secrets.lock().unwrap();
        let s = all.get_mut(id).ok_or_else(|| not_found(id))?;
        let aliased = s.meta.aliases.values().any(|n| *n == number);
        let now = self.clock.now();
        let v = s
            .versions
            .get_mut(&number)
            .ok_or_else(|| not_found(&format!("version {number}")))?;
        if v.meta.state == VersionState::Destroyed {
            return Err(Error::FailedPrecondition(format!(
                "version {number} is destroyed"
            )));
        }
        match change {
            StateChange::Enable => v.meta.state = VersionState::Enabled,
            StateChange::Disable => v.meta.state = VersionState::Disabled,
            StateChange::Destroy if aliased => {
                return Err(Error::FailedPrecondition(format!(
                    "version {number} has an alias; move it first"
                )));
            }
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
        let new_etag = self.etag();
        let mut all = self.secrets.lock().unwrap();
        let s = all.get_mut(id).ok_or_else(|| not_found(id))?;
        if let Some(e) = etag
            && e != s.meta.etag
        {
            return Err(Error::FailedPrecondition(format!(
                "etag {e} does not match"
            )));
        }
        if let Some(aliases) = &update.aliases {
            for (alias, n) in aliases {
                match s.versions.get(n) {
                    Some(v) if v.meta.state != VersionState::Destroyed => {}
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "alias {alias} names version {n}, which does not exist or is destroyed"
                        )));
                    }
                }
            }
        }
        if let Some(a) = update.aliases {
            s.meta.aliases = a;
        }
        if let Some(a) = update.annotations {
            s.meta.annotations = a;
        }
        s.meta.etag = new_etag;
        Ok(s.meta.clone())
    }
}

// ---------------------------------------------------------------------------

#[derive(Default)]
pub struct RecordingBus {
    published: Mutex<Vec<(String, Message)>>,
}

impl RecordingBus {
    /// Messages on the rotation topic, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == names::TOPIC_ROTATION_EVENTS)
            .map(|(_, m)| m.clone())
            .collect()
    }

    pub fn notices(&self) -> Vec<RotationNotice> {
        self.messages()
            .iter()
            .map(|m| RotationNotice::from_data(&m.data).unwrap())
            .collect()
    }
}

#[async_trait]
impl Bus for RecordingBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<String> {
        let mut p = self.published.lock().unwrap();
        p.push((topic.to_string(), message));
        Ok(p.len().to_string())
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------

/// GitHub's App endpoints, authenticating the App JWT as GitHub does.
pub struct StubGitHub {
    pub url: String,
    hook: Mutex<String>,
    /// Non-zero: PATCH /app/hook/config answers this status.
    pub patch_status: AtomicU16,
    /// How a successful PATCH answers: 0 JSON (github.com), 1 204 with no
    /// body (GitHub Enterprise, some proxies), 2 200 with an HTML page.
    pub patch_answer: std::sync::atomic::AtomicU8,
    /// Non-zero: GET /app/hook/config answers this status.
    pub hook_get_status: AtomicU16,
    pub patches: AtomicUsize,
    pub patch_entered: tokio::sync::Notify,
    gate: Arc<tokio::sync::Mutex<()>>,
    seen: Mutex<Vec<&'static str>>,
    keys: Vec<(&'static str, DecodingKey)>,
}

#[derive(serde::Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
}

impl StubGitHub {
    pub async fn start(initial_secret: &str) -> Arc<StubGitHub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Arc::new(StubGitHub {
            url: format!("http://{}", listener.local_addr().unwrap()),
            hook: Mutex::new(initial_secret.to_string()),
            patch_status: AtomicU16::new(0),
            patch_answer: std::sync::atomic::AtomicU8::new(0),
            hook_get_status: AtomicU16::new(0),
            patches: AtomicUsize::new(0),
            patch_entered: tokio::sync::Notify::new(),
            gate: Arc::new(tokio::sync::Mutex::new(())),
            seen: Mutex::new(Vec::new()),
            // The App's registered keys: both halves of a rotation.
            keys: vec![
                (
                    "app",
                    DecodingKey::from_rsa_pem(APP_PUB.as_bytes()).unwrap(),
                ),
                (
                    "next",
                    DecodingKey::from_rsa_pem(NEXT_PUB.as_bytes()).unwrap(),
                ),
            ],
        });
        let router = axum::Router::new()
            .route("/app", get(get_app))
            .route("/app/hook/config", get(get_hook).patch(patch_hook))
            .with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        stub
    }

    pub fn hook_secret(&self) -> String {
        self.hook.lock().unwrap().clone()
    }

    pub fn keys_seen(&self) -> Vec<&'static str> {
        self.seen.lock().unwrap().clone()
    }

    /// While held, PATCH /app/hook/config waits (after `patch_entered`).
    pub async fn hold_patches(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }

    fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> std::result::Result<(), (StatusCode, Json<Value>)> {
        let refuse = || {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "A JSON web token could not be decoded"})),
            )
        };
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(refuse)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[APP_ID]);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        for (name, key) in &self.keys {
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &validation) {
                if data.claims.exp - data.claims.iat > 600 {
                    return Err(refuse());
                }
                self.seen.lock().unwrap().push(name);
                return Ok(());
            }
        }
        Err(refuse())
    }
}

type Answer = std::result::Result<Json<Value>, (StatusCode, Json<Value>)>;

fn hook_config() -> Value {
    json!({"url": "https://gateway.example/webhook", "content_type": "json", "insecure_ssl": "0", "secret": "********"})
}

async fn get_app(State(stub): State<Arc<StubGitHub>>, headers: HeaderMap) -> Answer {
    stub.authenticate(&headers)?;
    Ok(Json(
        json!({"id": 12345, "slug": "patchpanda", "name": "PatchPanda"}),
    ))
}

async fn get_hook(State(stub): State<Arc<StubGitHub>>, headers: HeaderMap) -> Answer {
    stub.authenticate(&headers)?;
    match stub.hook_get_status.load(Ordering::SeqCst) {
        0 => Ok(Json(hook_config())),
        s => Err((
            StatusCode::from_u16(s).unwrap(),
            Json(json!({"message": "Resource not accessible by integration"})),
        )),
    }
}

async fn patch_hook(
    State(stub): State<Arc<StubGitHub>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let answer = stub.patch_answer.load(Ordering::SeqCst);
    match patch_hook_json(stub, headers, body).await {
        Ok(_) if answer == 1 => StatusCode::NO_CONTENT.into_response(),
        Ok(_) if answer == 2 => (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>OK</body></html>",
        )
            .into_response(),
        other => other.into_response(),
    }
}

async fn patch_hook_json(stub: Arc<StubGitHub>, headers: HeaderMap, body: Value) -> Answer {
    stub.authenticate(&headers)?;
    stub.patches.fetch_add(1, Ordering::SeqCst);
    stub.patch_entered.notify_one();
    let _wait = stub.gate.lock().await;
    match stub.patch_status.load(Ordering::SeqCst) {
        0 => {}
        s => {
            return Err((
                StatusCode::from_u16(s).unwrap(),
                Json(json!({"message": "Validation Failed"})),
            ));
        }
    }
    let Some(secret) = body.get("secret").and_then(Value::as_str) else {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "no secret"})),
        ));
    };
    *stub.hook.lock().unwrap() = secret.to_string();
    Ok(Json(hook_config()))
}

// ---------------------------------------------------------------------------

pub struct TestEnv {
    pub store: Arc<MemStore>,
    pub kms: Arc<dyn Kms>,
    pub bus: Arc<RecordingBus>,
    pub clock: TestClock,
    pub github: Option<Arc<StubGitHub>>,
    _home: tempfile::TempDir,
}

impl TestEnv {
    /// The App's key and a webhook secret, each at version 1 = `current`.
    pub async fn new(with_github: bool) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let kms: Arc<dyn Kms> =
            Arc::new(LocalKms::open(&home, names::PRINCIPAL_ROTATION_WORKER, None).unwrap());
        let clock = TestClock::new();
        let store = Arc::new(MemStore::new(clock.clone()));
        let github = match with_github {
            true => Some(StubGitHub::start(INITIAL_WEBHOOK_SECRET).await),
            false => None,
        };
        let env = TestEnv {
            store,
            kms,
            bus: Arc::new(RecordingBus::default()),
            clock,
            github,
            _home: dir,
        };
        env.seed(names::GITHUB_PRIVATE_KEY, APP_KEY).await;
        env.seed(names::WEBHOOK_SECRET, INITIAL_WEBHOOK_SECRET)
            .await;
        env
    }

    async fn seed(&self, logical: &str, value: &str) {
        let id = self.id(logical);
        self.store.create_secret(&id).await.unwrap();
        let v = self.store.add_version(&id, value.as_bytes()).await.unwrap();
        let update = SecretUpdate {
            aliases: Some(BTreeMap::from([(
                names::ALIAS_CURRENT.to_string(),
                v.number,
            )])),
            annotations: None,
        };
        self.store.update_secret(&id, update, None).await.unwrap();
    }

    pub fn id(&self, logical: &str) -> String {
        names::secret_id(names::DEFAULT_SECRET_PREFIX, logical)
    }

    pub fn github(&self) -> Arc<StubGitHub> {
        self.github.clone().expect("this test has a GitHub")
    }

    pub fn settings(&self) -> Settings {
        let mut s = Settings::new(
            names::DEFAULT_SECRET_PREFIX,
            names::PRINCIPAL_ROTATION_WORKER,
        );
        let clock = self.clock.clone();
        s.clock = Arc::new(move || clock.now());
        s.github = self
            .github
            .as_ref()
            .map(|g| GitHubSettings::rest(&g.url, APP_ID));
        s
    }

    pub fn rotator(&self) -> Rotator {
        self.rotator_with(|_| {})
    }

    pub fn rotator_with(&self, f: impl FnOnce(&mut Settings)) -> Rotator {
        let mut s = self.settings();
        f(&mut s);
        Rotator::new(self.store.clone(), self.kms.clone(), self.bus.clone(), s)
    }

    pub async fn secret(&self, logical: &str) -> Secret {
        self.store.get_secret(&self.id(logical)).await.unwrap()
    }

    pub async fn version(&self, logical: &str, n: u64) -> SecretVersion {
        self.store
            .get_version(&self.id(logical), &VersionRef::Number(n))
            .await
            .unwrap()
    }

    pub async fn value(&self, logical: &str, n: u64) -> String {
        let v = self
            .store
            .access(&self.id(logical), &VersionRef::Number(n))
            .await
            .unwrap();
        v.value.expose_str().unwrap().to_string()
    }

    /// A person's upload: a new version, no alias.
    pub async fn upload(&self, logical: &str, value: &str) -> u64 {
        self.store
            .add_version(&self.id(logical), value.as_bytes())
            .await
            .unwrap()
            .number
    }
}
