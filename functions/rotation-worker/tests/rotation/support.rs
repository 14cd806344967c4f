//! The test environment: the shared doubles (`patchpanda_shared::testing`:
//! Secret Manager in memory, which answers a stale etag FAILED_PRECONDITION
//! as Secret Manager does; a recording bus; a hand-moved clock), each store
//! and KMS wrapped in `Flaky` so a test can make it misbehave, the local KMS
//! keyring, and a stub GitHub that checks the App JWT's signature, issuer
//! and lifetime.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use patchpanda_shared::kms::local::LocalKms;
use patchpanda_shared::local::Home;
use patchpanda_shared::names;
use patchpanda_shared::secrets::{Secret, SecretStore, SecretUpdate, SecretVersion, VersionRef};
pub use patchpanda_shared::testing::{Call, Flaky, ManualClock, MemorySecretStore, RecordingBus};
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
    /// Healthy until a test plans a failure or a hook on it.
    pub store: Arc<Flaky<MemorySecretStore>>,
    /// The local KMS keyring; healthy until a test plans a failure.
    pub kms: Arc<Flaky<LocalKms>>,
    pub bus: Arc<RecordingBus>,
    pub clock: ManualClock,
    pub github: Option<Arc<StubGitHub>>,
    _home: tempfile::TempDir,
}

impl TestEnv {
    /// The App's key and a webhook secret, each at version 1 = `current`.
    pub async fn new(with_github: bool) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let kms = Arc::new(Flaky::new(
            LocalKms::open(&home, names::PRINCIPAL_ROTATION_WORKER, None).unwrap(),
        ));
        let clock = ManualClock::default();
        let store = Arc::new(Flaky::new(MemorySecretStore::with_clock(clock.clone())));
        let github = match with_github {
            true => Some(StubGitHub::start(INITIAL_WEBHOOK_SECRET).await),
            false => None,
        };
        let env = TestEnv {
            store,
            kms,
            bus: Arc::new(RecordingBus::new()),
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
        s.clock = self.clock.as_fn();
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
