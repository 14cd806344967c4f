//! Issue 14.8: service-account keys as a kind, against a stand-in IAM on
//! 127.0.0.1 that speaks the REST API (create key, delete key) and a token
//! endpoint that checks the JWT-bearer assertion like Google's does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{SecretStore, SecretUpdate, VersionState};
use rotation_worker::iam::{IamError, RestIam, ServiceAccountKeys, TokenSource};
use rotation_worker::kinds::SERVICE_ACCOUNT_KEY;
use rotation_worker::{RotationError, Rotator};
use serde_json::{Value, json};

use crate::support::{APP_KEY, APP_PUB, NEXT_KEY, NEXT_PUB, TestEnv};

const SA: &str = "ci-deployer@proj.iam.gserviceaccount.com";
const BEARER: &str = "worker-token";

struct StandInIam {
    url: String,
    next: Mutex<u32>,
    /// key id -> public key PEM, for keys that exist.
    live: Mutex<BTreeMap<String, &'static str>>,
    deleted: Mutex<BTreeSet<String>>,
    minted: Mutex<Vec<String>>,
    refuse_tokens: AtomicBool,
}

impl StandInIam {
    async fn start() -> Arc<StandInIam> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let iam = Arc::new(StandInIam {
            url: format!("http://{}", listener.local_addr().unwrap()),
            next: Mutex::new(0),
            live: Mutex::new(BTreeMap::new()),
            deleted: Mutex::new(BTreeSet::new()),
            minted: Mutex::new(Vec::new()),
            refuse_tokens: AtomicBool::new(false),
        });
        let router = axum::Router::new()
            .route("/v1/projects/-/serviceAccounts/{email}/keys", post(create))
            .route(
                "/v1/projects/-/serviceAccounts/{email}/keys/{id}",
                delete(remove),
            )
            .route("/token", post(token))
            .with_state(iam.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        iam
    }

    /// A key file as IAM hands it out, registering the key as live.
    fn issue(&self) -> (String, String) {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        let id = format!("key{n}");
        let (private, public) = if *n % 2 == 1 {
            (APP_KEY, APP_PUB)
        } else {
            (NEXT_KEY, NEXT_PUB)
        };
        self.live.lock().unwrap().insert(id.clone(), public);
        let file = json!({
            "type": "service_account", "client_email": SA, "private_key_id": id,
            "private_key": private, "token_uri": format!("{}/token", self.url),
        });
        (id, file.to_string())
    }

    fn is_live(&self, id: &str) -> bool {
        self.live.lock().unwrap().contains_key(id)
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {BEARER}"))
}

async fn create(
    State(iam): State<Arc<StandInIam>>,
    Path(email): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    if !authorized(&headers) || email != SA {
        return Err(StatusCode::FORBIDDEN);
    }
    let (id, file) = iam.issue();
    Ok(Json(json!({
        "name": format!("projects/proj/serviceAccounts/{SA}/keys/{id}"),
        "privateKeyData": base64::engine::general_purpose::STANDARD.encode(file),
        "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
    })))
}

async fn remove(
    State(iam): State<Arc<StandInIam>>,
    Path((_email, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    if !authorized(&headers) {
        return Err(StatusCode::FORBIDDEN);
    }
    match iam.live.lock().unwrap().remove(&id) {
        Some(_) => {
            iam.deleted.lock().unwrap().insert(id);
            Ok(Json(json!({})))
        }
        None => Err(StatusCode::NOT_FOUND),
    }
}

async fn token(
    State(iam): State<Arc<StandInIam>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let form = form_fields(&body);
    let refuse = || {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
    };
    if iam.refuse_tokens.load(Ordering::SeqCst)
        || form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err(refuse());
    }
    let assertion = form.get("assertion").ok_or_else(refuse)?;
    let kid = jsonwebtoken::decode_header(assertion)
        .ok()
        .and_then(|h| h.kid)
        .ok_or_else(refuse)?;
    let public = *iam.live.lock().unwrap().get(&kid).ok_or_else(refuse)?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[format!("{}/token", iam.url)]);
    v.set_issuer(&[SA]);
    jsonwebtoken::decode::<Value>(
        assertion,
        &DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
        &v,
    )
    .map_err(|_| refuse())?;
    iam.minted.lock().unwrap().push(kid);
    Ok(Json(
        json!({"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"}),
    ))
}

/// `application/x-www-form-urlencoded`, as reqwest writes it.
fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

struct StaticToken;

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<patchpanda_shared::SecretValue, IamError> {
        Ok(BEARER.to_string().into())
    }
}

/// The env with the secret seeded: version 1 = a key IAM already issued.
async fn setup(account: &str) -> (TestEnv, Arc<StandInIam>, Rotator) {
    let env = TestEnv::new(false).await;
    let iam = StandInIam::start().await;
    let (_, first) = iam.issue();
    let id = env.id(SERVICE_ACCOUNT_KEY);
    env.store.create_secret(&id).await.unwrap();
    let v = env.store.add_version(&id, first.as_bytes()).await.unwrap();
    let update = SecretUpdate {
        aliases: Some(BTreeMap::from([("current".to_string(), v.number)])),
        annotations: None,
    };
    env.store.update_secret(&id, update, None).await.unwrap();
    let mut s = env.settings();
    s.service_account_keys = Some(ServiceAccountKeys {
        account: account.to_string(),
        iam: Arc::new(RestIam::new(
            &iam.url,
            Arc::new(StaticToken),
            Duration::from_secs(10),
        )),
    });
    let r = Rotator::new(env.store.clone(), env.kms.clone(), env.bus.clone(), s);
    (env, iam, r)
}

#[tokio::test]
async fn a_service_account_key_is_created_proven_promoted_and_the_old_one_deleted() {
    let (env, iam, r) = setup(SA).await;
    let out = r.rotate(SERVICE_ACCOUNT_KEY, false).await.unwrap();
    assert_eq!((out.version, out.previous_version), (Some(2), Some(1)));
    assert!(out.detail.unwrap().contains("token was minted"));
    assert_eq!(iam.minted.lock().unwrap().clone(), ["key2"]);
    let stored: Value = serde_json::from_str(&env.value(SERVICE_ACCOUNT_KEY, 2).await).unwrap();
    assert_eq!(stored["private_key_id"], "key2");
    // Within the grace both keys live; after it finish deletes the old one
    // at IAM and disables its version.
    assert!(iam.is_live("key1") && iam.is_live("key2"));
    env.clock.advance_std(Duration::from_secs(2 * 3600));
    let report = r.finish().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!iam.is_live("key1"), "the old key was not deleted at IAM");
    assert!(iam.is_live("key2"));
    assert_eq!(
        env.version(SERVICE_ACCOUNT_KEY, 1).await.state,
        VersionState::Disabled
    );
    // Status lists it among the secrets.
    let status = r.status().await.unwrap();
    assert!(
        status
            .secrets
            .iter()
            .any(|s| s.secret == SERVICE_ACCOUNT_KEY)
    );
}

#[tokio::test]
async fn an_emergency_deletes_the_old_key_at_once() {
    let (env, iam, r) = setup(SA).await;
    r.rotate(SERVICE_ACCOUNT_KEY, true).await.unwrap();
    assert!(!iam.is_live("key1"));
    assert_eq!(
        env.version(SERVICE_ACCOUNT_KEY, 1).await.state,
        VersionState::Disabled
    );
}

#[tokio::test]
async fn a_key_google_refuses_is_rolled_back_and_deleted() {
    let (env, iam, r) = setup(SA).await;
    iam.refuse_tokens.store(true, Ordering::SeqCst);
    let err = r.rotate(SERVICE_ACCOUNT_KEY, false).await.unwrap_err();
    assert!(matches!(err, RotationError::RolledBack { .. }), "{err}");
    assert!(!iam.is_live("key2"), "the refused key was left at IAM");
    assert!(iam.is_live("key1"));
    let s = env.secret(SERVICE_ACCOUNT_KEY).await;
    assert_eq!(s.aliases.get("current"), Some(&1));
    assert_eq!(
        env.version(SERVICE_ACCOUNT_KEY, 2).await.state,
        VersionState::Disabled
    );
    assert_eq!(
        env.bus.notices().pop().unwrap().event,
        NoticeEvent::RolledBack
    );
}

#[tokio::test]
async fn the_gateways_own_accounts_and_unconfigured_deployments_are_refused() {
    let (env, iam, r) = setup("patchpanda-rotation-worker@proj.iam.gserviceaccount.com").await;
    let err = r.rotate(SERVICE_ACCOUNT_KEY, false).await.unwrap_err();
    assert!(matches!(err, RotationError::Precondition { .. }), "{err}");
    assert!(err.to_string().contains("keyless"), "{err}");
    assert_eq!(*iam.next.lock().unwrap(), 1, "IAM was asked for a key");
    assert!(env.bus.notices().is_empty());

    let err = env
        .rotator()
        .rotate(SERVICE_ACCOUNT_KEY, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keyless by default"), "{err}");
}
