//! End-to-end: the three functions, the bus and the scheduler together, as
//! `patchpanda dev` runs them: on the local bus here, through Google's
//! Pub/Sub emulator in `emulator`, as a project's deployment in
//! `identities`.

/// One scenario as two tests: on the local bus (`$local`), and through
/// Google's Pub/Sub emulator (`$emulated`, skipped loudly without it).
macro_rules! local_and_emulator {
    (
        $(#[$local_doc:meta])* $local:ident,
        $(#[$emulated_doc:meta])* $emulated:ident,
        $scenario:ident
    ) => {
        $(#[$local_doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $local() {
            $scenario(None).await;
        }

        $(#[$emulated_doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $emulated() {
            let Some(host) = patchpanda_e2e::emulator_host(stringify!($emulated)) else {
                return;
            };
            $scenario(Some(host)).await;
        }
    };
}

mod emulator;
mod identities;
mod routine;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use patchpanda_e2e::{emulator_env, free_port_base, stack_env, start_stack, wait_for_messages};
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::secrets::VersionRef;

const CHILD_HOME: &str = "PATCHPANDA_E2E_CHILD_HOME";
const CHILD_PORT: &str = "PATCHPANDA_E2E_CHILD_PORT";
const CHILD_PUSH: &str = "PATCHPANDA_E2E_CHILD_PUSH";

/// Not a test on its own: the child process of `no_accepted_delivery_is_lost_across_kill_9`
/// runs the stack here until it is killed.
#[tokio::test]
#[ignore = "the child process of no_accepted_delivery_is_lost_across_kill_9"]
async fn child_stack_process() {
    let (Ok(home), Ok(port), Ok(push)) = (
        std::env::var(CHILD_HOME),
        std::env::var(CHILD_PORT),
        std::env::var(CHILD_PUSH),
    ) else {
        return;
    };
    let env = stack_env(std::path::Path::new(&home), &[]);
    let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT).unwrap();
    let args = patchpanda::dev::DevArgs {
        port_base: port.parse().unwrap(),
        push_github_events: vec![push],
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    patchpanda::dev::start(&env, &config, &args, rx)
        .await
        .map_err(|e| e.0)
        .unwrap();
    println!("CHILD READY");
    std::future::pending::<()>().await;
}

fn spawn_child(home: &std::path::Path, port: u16, push: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_stack_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_HOME, home)
        .env(CHILD_PORT, port.to_string())
        .env(CHILD_PUSH, push)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the stack child")
}

async fn wait_healthy(url: &str, limit: Duration) {
    let start = Instant::now();
    let client = reqwest::Client::new();
    while start.elapsed() < limit {
        if let Ok(r) = client.get(format!("{url}/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become ready within {limit:?}");
}

/// What the App's own worker would run: a push endpoint that checks the
/// bus's OIDC token and records the deliveries it got.
#[derive(Clone)]
struct Receiver {
    issuer: Arc<LocalIssuer>,
    audience: String,
    got: Arc<Mutex<BTreeSet<String>>>,
    bad_tokens: Arc<Mutex<usize>>,
}

/// The claims of a push's OIDC token, checked as a function checks them
/// (the stack's local issuer, this audience); `None` when it fails.
fn push_claims(
    issuer: &LocalIssuer,
    audience: &str,
    headers: &HeaderMap,
) -> Option<serde_json::Value> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&[names::LOCAL_ISSUER]);
    jsonwebtoken::decode::<serde_json::Value>(token, issuer.decoding_key(), &v)
        .ok()
        .map(|t| t.claims)
}

/// A push body: the envelope and its message's decoded data.
fn push_envelope(body: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let envelope: serde_json::Value = serde_json::from_slice(body).unwrap();
    let data = base64::engine::general_purpose::STANDARD
        .decode(envelope["message"]["data"].as_str().unwrap_or_default())
        .unwrap();
    (envelope, data)
}

/// The delivery id a pushed event carries.
fn pushed_delivery(envelope: &serde_json::Value) -> Option<&str> {
    envelope["message"]["attributes"]["github_delivery"].as_str()
}

/// A listener on a free local port, and its `http://` base URL.
async fn bind_local() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if push_claims(&r.issuer, &r.audience, &headers).is_none() {
        *r.bad_tokens.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let (envelope, data) = push_envelope(&body);
    let delivery = pushed_delivery(&envelope).unwrap_or_default().to_string();
    assert!(
        serde_json::from_slice::<serde_json::Value>(&data).is_ok(),
        "published data is the JSON payload"
    );
    r.got.lock().unwrap().insert(delivery);
    StatusCode::NO_CONTENT
}

async fn webhook_secret(home: &std::path::Path) -> Vec<u8> {
    let env = stack_env(home, &[]);
    let config = Config::from_env(&env, names::PRINCIPAL_WEBHOOK_INGEST).unwrap();
    let b = Backends::open(&config).await.unwrap();
    read_webhook_secret(&config, &b).await
}

/// An account no allow-list names.
const MALLORY: &str = "mallory@patchpanda.local";

/// Whether a published message's data mentions `who`.
fn mentions(data: &[u8], who: &str) -> bool {
    String::from_utf8_lossy(data).contains(who)
}

/// Backends acting as `principal` in the stack of `env`.
async fn backends_as(env: &Env, principal: &str) -> (Config, Backends) {
    let mut env = env.clone();
    env.set("PATCHPANDA_PRINCIPAL", principal);
    let config = Config::from_env(&env, principal).unwrap();
    let b = Backends::open(&config).await.unwrap();
    (config, b)
}

/// The environment of a project's deployment (GOOGLE_CLOUD_PROJECT) with the
/// operator, the fake GitHub App at `gh_url` and a 1 s rotation grace, plus
/// `more`; over the emulator at `emulator`, or local.
fn deployment_env(
    home: &std::path::Path,
    emulator: Option<&str>,
    project: &str,
    operator: &str,
    gh_url: &str,
    more: &[(&str, &str)],
) -> Env {
    let mut extra = vec![
        ("GOOGLE_CLOUD_PROJECT", project),
        ("PATCHPANDA_PRINCIPAL", operator),
        ("GITHUB_APP_ID", "4242"),
        ("GITHUB_API_URL", gh_url),
        ("PATCHPANDA_ROTATION_GRACE", "1s"),
    ];
    extra.extend_from_slice(more);
    scenario_env(home, emulator, &extra)
}

/// Reads the current webhook secret as whoever `b` acts as (an audited
/// access: the alerter judges the reader).
async fn read_webhook_secret(config: &Config, b: &Backends) -> Vec<u8> {
    let v = b
        .secrets
        .access(
            &config.secret_id(names::WEBHOOK_SECRET),
            &VersionRef::alias(names::ALIAS_CURRENT),
        )
        .await
        .unwrap();
    v.value.expose().to_vec()
}

/// The stack's environment: over the emulator at `emulator`, or local.
fn scenario_env(home: &std::path::Path, emulator: Option<&str>, extra: &[(&str, &str)]) -> Env {
    match emulator {
        Some(host) => emulator_env(home, host, extra),
        None => stack_env(home, extra),
    }
}

/// Asks the worker at `worker` (host:port) to rotate `secret` as `caller`;
/// the rotation must succeed.
async fn request_rotation(
    home: &std::path::Path,
    worker: impl std::fmt::Display,
    caller: &str,
    secret: &str,
) {
    let (status, body) = call_task(
        home,
        &format!("http://{worker}{}", rotation_worker::ROUTE_ROTATE),
        caller,
        serde_json::json!({"secret": secret, "emergency": false}),
    )
    .await;
    assert!(
        status.is_success(),
        "rotating {secret} failed: {status} {body}"
    );
}

async fn send_delivery(
    client: &reqwest::Client,
    url: &str,
    secret: &[u8],
    id: &str,
) -> reqwest::StatusCode {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"id": 1, "full_name": "octo/hello", "name": "hello", "owner": {"login": "octo"}},
        "sender": {"login": "octocat", "id": 1},
        "installation": {"id": 42},
        "commits": [],
    }))
    .unwrap();
    match client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", id)
        .header("x-github-hook-id", "7")
        .header("x-hub-signature-256", signature::sign(secret, &body))
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status(),
        Err(_) => reqwest::StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_delivery_is_lost_across_kill_9() {
    let home = tempfile::tempdir().unwrap();
    let issuer = Arc::new(LocalIssuer::open_or_create(home.path()).unwrap());
    let (listener, base) = bind_local().await;
    let push_url = format!("{base}/push");
    let receiver = Receiver {
        issuer,
        audience: push_url.clone(),
        got: Arc::default(),
        bad_tokens: Arc::default(),
    };
    serve(
        listener,
        axum::Router::new()
            .route("/push", post(receive))
            .with_state(receiver.clone()),
    );

    let port = free_port_base();
    let ingest = format!("http://127.0.0.1:{port}");
    let mut child = spawn_child(home.path(), port, &push_url);
    wait_healthy(&ingest, Duration::from_secs(60)).await;
    let secret = webhook_secret(home.path()).await;
    let client = reqwest::Client::new();
    let mut accepted = BTreeSet::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        if send_delivery(&client, &format!("{ingest}/webhook"), &secret, &id).await
            == reqwest::StatusCode::ACCEPTED
        {
            accepted.insert(id);
        }
    }
    assert_eq!(
        accepted.len(),
        20,
        "a healthy stack accepts every signed delivery"
    );
    child.kill().unwrap(); // SIGKILL: no graceful shutdown, deliveries may be mid-flight
    child.wait().unwrap();

    let mut child = spawn_child(home.path(), port, &push_url);
    wait_healthy(&ingest, Duration::from_secs(60)).await;
    for i in 0..10 {
        let id = format!("after-{i}");
        if send_delivery(&client, &format!("{ingest}/webhook"), &secret, &id).await
            == reqwest::StatusCode::ACCEPTED
        {
            accepted.insert(id);
        }
    }
    assert_eq!(accepted.len(), 30);

    let start = Instant::now();
    loop {
        let got = receiver.got.lock().unwrap().clone();
        if accepted.is_subset(&got) {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let missing: Vec<_> = accepted.difference(&got).collect();
            panic!("accepted deliveries never pushed: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *receiver.bad_tokens.lock().unwrap(),
        0,
        "every push carried a valid OIDC token"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reading_a_secret_raises_an_alert() {
    let home = tempfile::tempdir().unwrap();
    let running = start_stack(stack_env(home.path(), &[]), vec![]).await;
    // The stack seeded its secrets as the rotation worker; nothing alerts yet
    // for a read by a function identity.
    let (config, b) = backends_as(&running.env, MALLORY).await;
    read_webhook_secret(&config, &b).await;
    let alerts = wait_for_messages(
        home.path(),
        names::TOPIC_ALERTS,
        Duration::from_secs(30),
        |m| m.iter().any(|m| mentions(&m.data, MALLORY)),
    )
    .await;
    let alert = alerts.iter().find(|m| mentions(&m.data, MALLORY)).unwrap();
    assert!(
        alert.attributes.contains_key("severity"),
        "{:?}",
        alert.attributes
    );
    assert!(
        alert.attributes.contains_key("rule"),
        "{:?}",
        alert.attributes
    );
    assert!(
        String::from_utf8_lossy(&alert.data).contains("patchpanda-webhook-secret"),
        "the alert names the secret"
    );
    drop(running);
}

/// A GitHub stand-in for the rotation: it keeps the App's webhook secret,
/// which the worker changes with PATCH /app/hook/config, and which senders
/// sign with, as GitHub does.
#[derive(Clone, Default)]
struct FakeGitHub {
    secret: Arc<Mutex<Vec<u8>>>,
    patches: Arc<Mutex<usize>>,
}

async fn gh_app() -> axum::Json<serde_json::Value> {
    axum::Json(
        serde_json::json!({"id": 4242, "slug": "patchpanda-test", "name": "PatchPanda test", "client_id": "Iv1.test"}),
    )
}

async fn gh_hook_config() -> axum::Json<serde_json::Value> {
    axum::Json(
        serde_json::json!({"url": "https://example.invalid/webhook", "content_type": "json", "insecure_ssl": "0"}),
    )
}

async fn gh_patch_hook_config(
    State(gh): State<FakeGitHub>,
    body: axum::body::Bytes,
) -> axum::Json<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if let Some(s) = v["secret"].as_str() {
        *gh.secret.lock().unwrap() = s.as_bytes().to_vec();
        *gh.patches.lock().unwrap() += 1;
    }
    gh_hook_config().await
}

/// Starts a [`FakeGitHub`]; returns it and its base URL.
async fn start_fake_github() -> (FakeGitHub, String) {
    let gh = FakeGitHub::default();
    let (listener, gh_url) = bind_local().await;
    serve(
        listener,
        axum::Router::new()
            .route("/app", axum::routing::get(gh_app))
            .route(
                "/app/hook/config",
                axum::routing::get(gh_hook_config).patch(gh_patch_hook_config),
            )
            .with_state(gh.clone()),
    );
    (gh, gh_url)
}

/// POSTs `body` to a task route of the stack with a token minted by the
/// stack's local issuer as `caller`; returns the status and body.
async fn call_task(
    home: &std::path::Path,
    url: &str,
    caller: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, String) {
    let issuer = LocalIssuer::open_or_create(home).unwrap();
    let token = issuer.mint(url, caller, Duration::from_secs(300)).unwrap();
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_webhook_secret_under_load_rejects_no_valid_delivery() {
    let (gh, gh_url) = start_fake_github().await;

    let home = tempfile::tempdir().unwrap();
    let running = start_stack(
        stack_env(
            home.path(),
            &[("GITHUB_APP_ID", "4242"), ("GITHUB_API_URL", &gh_url)],
        ),
        vec![],
    )
    .await;
    *gh.secret.lock().unwrap() = webhook_secret(home.path()).await;
    let ingest = format!("http://{}/webhook", running.stack.ingest);

    // A steady stream of deliveries, each signed with whatever secret GitHub
    // holds at the moment it signs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (gh, stop, ingest) = (gh.clone(), stop.clone(), ingest.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut results = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let secret = gh.secret.lock().unwrap().clone();
                let status = send_delivery(&client, &ingest, &secret, &format!("load-{i}")).await;
                results.push(status);
                i += 1;
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let old_secret = gh.secret.lock().unwrap().clone();
    for _ in 0..2 {
        request_rotation(
            home.path(),
            &running.stack.worker,
            names::PRINCIPAL_OPERATOR_DEFAULT,
            names::WEBHOOK_SECRET,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = sender.await.unwrap();

    assert_eq!(
        *gh.patches.lock().unwrap(),
        2,
        "GitHub's hook secret was changed twice"
    );
    assert_ne!(*gh.secret.lock().unwrap(), old_secret);
    assert!(
        results.len() > 20,
        "the stream kept flowing ({} deliveries)",
        results.len()
    );
    let rejected: Vec<_> = results
        .iter()
        .filter(|s| **s != reqwest::StatusCode::ACCEPTED)
        .collect();
    assert!(
        rejected.is_empty(),
        "{} of {} valid deliveries were not accepted: {rejected:?}",
        rejected.len(),
        results.len()
    );
    drop(running);
}
