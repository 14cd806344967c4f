//! The redelivery sweeper and the shared GitHub App client against a stub
//! GitHub on 127.0.0.1 that checks the App JWT with the App's public key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use patchpanda_shared::SecretValue;
use patchpanda_shared::github::{GitHubApp, GitHubError, app_jwt};
use serde_json::{Value, json};

use super::support::*;

const APP_ID: &str = "5725";
const PAGE: usize = 2;

/// A fresh RSA key: (PKCS#1 PEM, PKCS#8 PEM, public key DER).
fn test_key() -> (String, String, Vec<u8>) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = pair.as_der().unwrap().as_ref().to_vec();
    let pkcs1 = pkcs1_from_pkcs8(&pkcs8);
    let public = pair.public_key().as_ref().to_vec();
    (
        pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1)),
        pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8)),
        public,
    )
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (its OCTET STRING).
fn pkcs1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    fn header(d: &[u8]) -> (u8, usize, usize) {
        if d[1] & 0x80 == 0 {
            return (d[0], 2, d[1] as usize);
        }
        let n = (d[1] & 0x7f) as usize;
        let len = d[2..2 + n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | *b as usize);
        (d[0], 2 + n, len)
    }
    let (_, hl, _) = header(der);
    let mut rest = &der[hl..];
    loop {
        let (tag, hl, len) = header(rest);
        if tag == 0x04 {
            return rest[hl..hl + len].to_vec();
        }
        rest = &rest[hl + len..];
    }
}

#[derive(Default)]
struct Stub {
    public: Vec<u8>,
    base: OnceLock<String>,
    /// Newest first, as GitHub lists them.
    deliveries: Mutex<Vec<Value>>,
    requests: Mutex<Vec<String>>,
    redelivered: Mutex<Vec<u64>>,
    /// Retry-After values to answer the next list calls with (429).
    throttle: Mutex<Vec<u64>>,
    token_calls: AtomicU32,
    token_ttl_secs: Mutex<i64>,
    hook_secret: Mutex<Option<String>>,
    /// When set, a redelivery fails with this status code (else it is OK).
    redeliveries_fail_with: Mutex<Option<u16>>,
}

fn delivery(id: u64, guid: &str, status: &str, at: DateTime<Utc>, redelivery: bool) -> Value {
    let code = if status == "OK" { 202 } else { 503 };
    delivery_with(id, guid, status, code, at, redelivery)
}

/// An attempt as GitHub lists it, with our answer's status code.
fn delivery_with(
    id: u64,
    guid: &str,
    status: &str,
    status_code: u16,
    at: DateTime<Utc>,
    redelivery: bool,
) -> Value {
    json!({
        "id": id, "guid": guid, "delivered_at": at.to_rfc3339(), "redelivery": redelivery,
        "duration": 0.27, "status": status, "status_code": status_code,
        "event": "push", "action": null, "installation_id": 2311213, "repository_id": 186853002
    })
}

impl Stub {
    async fn start(public: Vec<u8>) -> Arc<Stub> {
        let stub = Arc::new(Stub {
            public,
            token_ttl_secs: Mutex::new(3600),
            ..Default::default()
        });
        let app = Router::new()
            .route("/app", get(get_app))
            .route("/app/hook/config", get(get_config).patch(patch_config))
            .route("/app/hook/deliveries", get(list))
            .route("/app/hook/deliveries/{id}/attempts", post(attempt))
            .route("/app/installations/{id}/access_tokens", post(token))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        stub.base.set(base).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        stub
    }

    fn base(&self) -> String {
        self.base.get().unwrap().clone()
    }

    fn list_calls(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("GET /app/hook/deliveries"))
            .count()
    }

    /// Checks what GitHub checks: the JWT (RS256 under the App's public
    /// key, iss, iat in the past, exp at most 10 minutes ahead) and headers.
    fn authorize(&self, headers: &HeaderMap, what: String) -> Result<(), Box<Response>> {
        self.requests.lock().unwrap().push(what);
        let refuse = |m: &str| {
            Box::new((StatusCode::UNAUTHORIZED, Json(json!({"message": m}))).into_response())
        };
        if headers.get("user-agent").is_none() {
            return Err(Box::new(
                (StatusCode::FORBIDDEN, "User-Agent required").into_response(),
            ));
        }
        if headers.get("accept").and_then(|v| v.to_str().ok())
            != Some("application/vnd.github+json")
            || headers
                .get("x-github-api-version")
                .and_then(|v| v.to_str().ok())
                != Some("2022-11-28")
        {
            return Err(refuse("missing GitHub headers"));
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refuse("no bearer token"))?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[APP_ID]);
        v.set_required_spec_claims(&["exp", "iat", "iss"]);
        v.leeway = 0;
        let claims = jsonwebtoken::decode::<app_jwt::Claims>(
            token,
            &DecodingKey::from_rsa_der(&self.public),
            &v,
        )
        .map_err(|_| refuse("A JSON web token could not be decoded"))?
        .claims;
        let now = Utc::now().timestamp();
        if claims.exp - now > 600 || claims.iat > now - 30 || claims.exp <= claims.iat {
            return Err(refuse(
                "'Expiration time' claim ('exp') is too far in the future",
            ));
        }
        Ok(())
    }
}

use axum::Json;

async fn get_app(State(s): State<Arc<Stub>>, headers: HeaderMap) -> Response {
    if let Err(r) = s.authorize(&headers, "GET /app".into()) {
        return *r;
    }
    Json(json!({"id": 5725, "slug": "patchpanda", "name": "PatchPanda", "client_id": "Iv1.8a61f9b3a7aba766", "owner": {"login": "octo-org"}})).into_response()
}

async fn get_config(State(s): State<Arc<Stub>>, headers: HeaderMap) -> Response {
    if let Err(r) = s.authorize(&headers, "GET /app/hook/config".into()) {
        return *r;
    }
    Json(json!({"content_type": "json", "insecure_ssl": "0", "secret": "********", "url": "https://patchpanda.example.com/webhook"})).into_response()
}

async fn patch_config(
    State(s): State<Arc<Stub>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = s.authorize(&headers, "PATCH /app/hook/config".into()) {
        return *r;
    }
    *s.hook_secret.lock().unwrap() = body["secret"].as_str().map(String::from);
    Json(json!({"content_type": "json", "insecure_ssl": 0, "secret": "********", "url": "https://patchpanda.example.com/webhook"})).into_response()
}

async fn list(
    State(s): State<Arc<Stub>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let cursor = q.get("cursor").cloned();
    let what = format!(
        "GET /app/hook/deliveries?cursor={}",
        cursor.clone().unwrap_or_default()
    );
    if let Err(r) = s.authorize(&headers, what) {
        return *r;
    }
    let throttled = {
        let mut t = s.throttle.lock().unwrap();
        (!t.is_empty()).then(|| t.remove(0))
    };
    if let Some(secs) = throttled {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"message": "You have exceeded a secondary rate limit."})),
        )
            .into_response();
    }
    let start: usize = cursor
        .as_deref()
        .and_then(|c| c.strip_prefix("v1_"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let all = s.deliveries.lock().unwrap().clone();
    let page: Vec<Value> = all.iter().skip(start).take(PAGE).cloned().collect();
    let mut resp = Json(page).into_response();
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", "5000".parse().unwrap());
    h.insert("x-ratelimit-remaining", "4999".parse().unwrap());
    if start + PAGE < all.len() {
        let link = format!(
            "<{}/app/hook/deliveries?per_page={PAGE}&cursor=v1_{}>; rel=\"next\"",
            s.base(),
            start + PAGE
        );
        h.insert("link", link.parse().unwrap());
    }
    resp
}

/// A redelivery is a new attempt with the same guid; here it succeeds.
async fn attempt(State(s): State<Arc<Stub>>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(r) = s.authorize(&headers, format!("POST /app/hook/deliveries/{id}/attempts")) {
        return *r;
    }
    let mut all = s.deliveries.lock().unwrap();
    let Some(guid) = all
        .iter()
        .find(|d| d["id"] == id)
        .map(|d| d["guid"].as_str().unwrap().to_string())
    else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    let next = all
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .max()
        .unwrap_or(0)
        + 1;
    let answer = match *s.redeliveries_fail_with.lock().unwrap() {
        Some(code) => delivery_with(
            next,
            &guid,
            &format!("Invalid HTTP Response: {code}"),
            code,
            Utc::now(),
            true,
        ),
        None => delivery(next, &guid, "OK", Utc::now(), true),
    };
    all.insert(0, answer);
    s.redelivered.lock().unwrap().push(id);
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn token(State(s): State<Arc<Stub>>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(r) = s.authorize(
        &headers,
        format!("POST /app/installations/{id}/access_tokens"),
    ) {
        return *r;
    }
    let n = s.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let ttl = *s.token_ttl_secs.lock().unwrap();
    // The new stateless format is long and has underscores; assume nothing.
    let token = format!("ghs_{APP_ID}_{}{n}", "x".repeat(300));
    (
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": (Utc::now() + ChronoDuration::seconds(ttl)).to_rfc3339(), "permissions": {"contents": "read"}})),
    )
        .into_response()
}

/// The scenario: A failed then was redelivered OK (leave it), B failed,
/// C is fine, D failed twice (redeliver its newest attempt once), E failed
/// four days ago (past GitHub's retention: leave it).
fn seed_deliveries(stub: &Stub) {
    let now = Utc::now();
    let m = |mins: i64| now - ChronoDuration::minutes(mins);
    *stub.deliveries.lock().unwrap() = vec![
        delivery(10, "guid-a", "OK", m(1), true),
        delivery(9, "guid-b", "Invalid HTTP Response: 503", m(3), false),
        delivery(8, "guid-a", "Invalid HTTP Response: 503", m(5), false),
        delivery(7, "guid-c", "OK", m(6), false),
        delivery(6, "guid-d", "timed out", m(7), true),
        delivery(5, "guid-d", "Invalid HTTP Response: 500", m(8), false),
        delivery(
            4,
            "guid-e",
            "Invalid HTTP Response: 503",
            now - ChronoDuration::days(4),
            false,
        ),
        delivery(3, "guid-f", "OK", now - ChronoDuration::days(5), false),
    ];
}

async fn setup() -> (Arc<Stub>, Harness) {
    let (pkcs1, _, public) = test_key();
    let stub = Stub::start(public).await;
    seed_deliveries(&stub);
    let base = stub.base();
    let h = Harness::with_env(
        &["webhook-secret-1"],
        &[&pkcs1],
        &[("GITHUB_APP_ID", APP_ID), ("GITHUB_API_URL", base.as_str())],
    );
    (stub, h)
}

#[tokio::test]
async fn sweep_redelivers_each_failed_guid_once() {
    let (stub, h) = setup().await;
    let report = h.sweep().await;
    assert_eq!(report["failed"], 2, "{report}");
    assert_eq!(report["redelivered"], 2, "{report}");
    assert_eq!(report["listed"], 6, "{report}");
    assert_eq!(report["guids"], 4, "{report}");
    assert_eq!(report["pages"], 4, "paged with the Link cursor: {report}");
    assert_eq!(report["complete"], true);
    let mut redelivered = stub.redelivered.lock().unwrap().clone();
    redelivered.sort();
    assert_eq!(
        redelivered,
        vec![6, 9],
        "B, and D's newest attempt; not A, C or E"
    );
    let cursors: Vec<String> = stub
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("GET"))
        .cloned()
        .collect();
    assert_eq!(cursors[1], "GET /app/hook/deliveries?cursor=v1_2");

    // The next sweep looks back to D's first failure (to count its
    // attempts, had it failed again); the redelivered guids now have a
    // successful attempt.
    let report = h.sweep().await;
    assert_eq!(report["redelivered"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["pages"], 5, "{report}");
    // Nothing left to retry: the one after starts near where that one did.
    let report = h.sweep().await;
    assert_eq!(report["pages"], 2, "{report}");
    assert_eq!(stub.redelivered.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let (stub, h) = setup().await;
    stub.throttle.lock().unwrap().push(1);
    let started = Instant::now();
    let report = h.sweep().await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "waited as asked"
    );
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["redelivered"], 2, "{report}");
    assert_eq!(stub.list_calls(), 5, "the throttled page was asked again");
}

#[tokio::test]
async fn a_long_retry_after_ends_the_sweep_without_advancing() {
    let (stub, h) = setup().await;
    stub.throttle.lock().unwrap().push(3600);
    let report = h.sweep().await;
    assert_eq!(report["complete"], false, "{report}");
    assert!(
        report["stopped"].as_str().unwrap().contains("3600"),
        "{report}"
    );
    assert_eq!(report["redelivered"], 0);
    assert_eq!(stub.list_calls(), 1, "no hammering while rate limited");

    // The next sweep still looks back the whole window.
    let report = h.sweep().await;
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["redelivered"], 2, "{report}");
}

#[tokio::test]
async fn without_an_app_the_sweep_is_a_note() {
    let h = Harness::new(&["webhook-secret-1"], &[]);
    let report = h.sweep().await;
    assert_eq!(report["note"], "no GitHub App configured; nothing to sweep");
    assert_eq!(report["redelivered"], 0);
}

#[tokio::test]
async fn a_key_github_does_not_know_is_refused() {
    let (_, _, public) = test_key();
    let (other_key, _, _) = test_key();
    let stub = Stub::start(public).await;
    seed_deliveries(&stub);
    let base = stub.base();
    let h = Harness::with_env(
        &["webhook-secret-1"],
        &[&other_key],
        &[("GITHUB_APP_ID", APP_ID), ("GITHUB_API_URL", base.as_str())],
    );
    let job = patchpanda_shared::runtime::SchedulerJob {
        job_name: None,
        schedule_time: None,
        headers: HeaderMap::new(),
        body: bytes::Bytes::new(),
    };
    use tower::ServiceExt;
    let err =
        h.wi.redeliver_handler()
            .oneshot(patchpanda_shared::runtime::Invocation::new(
                job,
                Harness::ctx(),
            ))
            .await
            .unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN, "{err}");
    assert!(stub.redelivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_app_client_speaks_githubs_api() {
    let (pkcs1, pkcs8, public) = test_key();
    let stub = Stub::start(public).await;
    // GitHub Enterprise style base with a trailing slash works the same.
    for pem in [&pkcs1, &pkcs8] {
        let app = GitHubApp::new(
            &format!("{}/", stub.base()),
            APP_ID,
            &SecretValue::from(pem.clone()),
        )
        .unwrap();
        let info = app.get_app().await.unwrap();
        assert_eq!(info.id, 5725);
        assert_eq!(info.slug.as_deref(), Some("patchpanda"));
        let config = app.hook_config().await.unwrap();
        assert_eq!(
            config.url.as_deref(),
            Some("https://patchpanda.example.com/webhook")
        );
        let config = app
            .update_hook_secret(&SecretValue::from("rotated-secret".to_string()))
            .await
            .unwrap();
        assert_eq!(config.insecure_ssl.as_deref(), Some("0"));
        assert_eq!(
            stub.hook_secret.lock().unwrap().as_deref(),
            Some("rotated-secret")
        );
        assert!(!format!("{app:?}").contains("PRIVATE"));
    }

    // Installation tokens are cached until 5 minutes before they expire.
    let app = GitHubApp::new(&stub.base(), APP_ID, &SecretValue::from(pkcs1.clone())).unwrap();
    let t1 = app.installation_token(2311213).await.unwrap();
    let t2 = app.installation_token(2311213).await.unwrap();
    assert_eq!(t1, t2);
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1);
    assert!(t1.len() > 300, "long tokens are kept whole");
    *stub.token_ttl_secs.lock().unwrap() = 120;
    let other = app.installation_token(99).await.unwrap();
    let again = app.installation_token(99).await.unwrap();
    assert_ne!(other, again, "a token 2 minutes from expiry is not reused");
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 3);
    assert_eq!(app.rate_limit(), None, "the stub sends no limits on tokens");

    // Errors are typed and carry nothing secret.
    assert_eq!(app.redeliver(424242).await, Err(GitHubError::NotFound));
    stub.throttle.lock().unwrap().push(7);
    match app.list_deliveries(100, None).await {
        Err(GitHubError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, std::time::Duration::from_secs(7))
        }
        other => panic!("{other:?}"),
    }
    let (stranger, _, _) = test_key();
    let bad = GitHubApp::new(&stub.base(), APP_ID, &SecretValue::from(stranger)).unwrap();
    let err = bad.get_app().await.unwrap_err();
    assert_eq!(err, GitHubError::Unauthorized);
    assert!(
        !err.to_string().contains("ey"),
        "no token in the message: {err}"
    );
}

#[tokio::test]
async fn redelivery_skips_what_would_fail_again_and_counts_any_2xx_as_success() {
    let (stub, h) = setup().await;
    let now = Utc::now();
    let m = |mins: i64| now - ChronoDuration::minutes(mins);
    let fail = |code: u16| format!("Invalid HTTP Response: {code}");
    *stub.deliveries.lock().unwrap() = vec![
        // Refused by us for good: a bad signature, a body too large.
        delivery_with(20, "guid-sig", &fail(401), 401, m(1), false),
        delivery_with(19, "guid-big", &fail(413), 413, m(2), false),
        // A 204, whatever GitHub's text says, is a success.
        delivery_with(18, "guid-204", "No Content", 204, m(3), false),
        // Cut off as too slow: worth another try.
        delivery_with(17, "guid-slow", &fail(408), 408, m(4), false),
        // Tried five times already.
        delivery_with(16, "guid-tired", &fail(503), 503, m(5), true),
        delivery_with(15, "guid-tired", &fail(503), 503, m(6), true),
        delivery_with(14, "guid-tired", &fail(503), 503, m(7), true),
        delivery_with(13, "guid-tired", &fail(503), 503, m(8), true),
        delivery_with(12, "guid-tired", &fail(503), 503, m(9), false),
        // Its original is past the window: given up before.
        delivery_with(11, "guid-old", &fail(503), 503, m(10), true),
        delivery_with(
            10,
            "guid-old",
            &fail(503),
            503,
            now - ChronoDuration::days(4),
            false,
        ),
    ];
    let report = h.sweep().await;
    assert_eq!(*stub.redelivered.lock().unwrap(), vec![17], "{report}");
    assert_eq!(report["failed"], 5, "{report}");
    assert_eq!(report["skipped"], 4, "{report}");
    let reasons: Vec<(String, String)> = report["skips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["guid"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |guid: &str, reason: &str| (guid.to_string(), reason.to_string());
    assert_eq!(
        reasons,
        vec![
            expect("guid-sig", "permanent_refusal"),
            expect("guid-big", "permanent_refusal"),
            expect("guid-tired", "attempts_exhausted"),
            expect("guid-old", "given_up_earlier"),
        ],
        "{report}"
    );
    assert_eq!(report["skips"][0]["status_code"], 401);
    assert_eq!(report["skips"][2]["attempts"], 5);
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_is_redelivered_a_bounded_number_of_times() {
    let (stub, h) = setup().await;
    *stub.deliveries.lock().unwrap() = vec![delivery(
        1,
        "guid-doomed",
        "Invalid HTTP Response: 503",
        Utc::now() - ChronoDuration::minutes(1),
        false,
    )];
    *stub.redeliveries_fail_with.lock().unwrap() = Some(503);
    let mut reports = Vec::new();
    for _ in 0..8 {
        reports.push(h.sweep().await);
    }
    let redelivered = stub.redelivered.lock().unwrap().len();
    assert_eq!(
        redelivered, 4,
        "five attempts in all, the original included: {reports:#?}"
    );
    let last = reports.last().unwrap();
    assert_eq!(last["redelivered"], 0, "{last}");
    assert_eq!(last["skipped"], 1, "{last}");
    assert_eq!(last["complete"], true, "{last}");
}
