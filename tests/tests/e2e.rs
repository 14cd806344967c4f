//! End-to-end: the three functions, the bus and the scheduler together, as
//! `patchpanda dev` runs them.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use patchpanda_e2e::{free_port_base, stack_env, start_stack, wait_for_messages};
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
async fn child_stack_process() {
    let (Ok(home), Ok(port), Ok(push)) = (std::env::var(CHILD_HOME), std::env::var(CHILD_PORT), std::env::var(CHILD_PUSH))
    else {
        return;
    };
    let env = stack_env(std::path::Path::new(&home), &[]);
    let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT).unwrap();
    let args = patchpanda::dev::DevArgs { port_base: port.parse().unwrap(), push_github_events: vec![push] };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    patchpanda::dev::start(&env, &config, &args, rx).await.map_err(|e| e.0).unwrap();
    println!("CHILD READY");
    std::future::pending::<()>().await;
}

fn spawn_child(home: &std::path::Path, port: u16, push: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_stack_process", "--exact", "--nocapture", "--test-threads=1"])
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

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[&r.audience]);
    v.set_issuer(&[names::LOCAL_ISSUER]);
    if jsonwebtoken::decode::<serde_json::Value>(token, r.issuer.decoding_key(), &v).is_err() {
        *r.bad_tokens.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let delivery = envelope["message"]["attributes"]["github_delivery"].as_str().unwrap_or_default().to_string();
    let data = base64::engine::general_purpose::STANDARD.decode(envelope["message"]["data"].as_str().unwrap()).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&data).is_ok(), "published data is the JSON payload");
    r.got.lock().unwrap().insert(delivery);
    StatusCode::NO_CONTENT
}

async fn webhook_secret(home: &std::path::Path) -> Vec<u8> {
    let env = stack_env(home, &[]);
    let config = Config::from_env(&env, names::PRINCIPAL_WEBHOOK_INGEST).unwrap();
    let b = Backends::open(&config).await.unwrap();
    let v = b
        .secrets
        .access(&config.secret_id(names::WEBHOOK_SECRET), &VersionRef::alias(names::ALIAS_CURRENT))
        .await
        .unwrap();
    v.value.expose().to_vec()
}

async fn send_delivery(client: &reqwest::Client, url: &str, secret: &[u8], id: &str) -> reqwest::StatusCode {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_url = format!("http://{}/push", listener.local_addr().unwrap());
    let receiver = Receiver {
        issuer,
        audience: push_url.clone(),
        got: Arc::default(),
        bad_tokens: Arc::default(),
    };
    let app = axum::Router::new().route("/push", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = free_port_base();
    let ingest = format!("http://127.0.0.1:{port}");
    let mut child = spawn_child(home.path(), port, &push_url);
    wait_healthy(&ingest, Duration::from_secs(60)).await;
    let secret = webhook_secret(home.path()).await;
    let client = reqwest::Client::new();
    let mut accepted = BTreeSet::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        if send_delivery(&client, &format!("{ingest}/webhook"), &secret, &id).await == reqwest::StatusCode::ACCEPTED {
            accepted.insert(id);
        }
    }
    assert_eq!(accepted.len(), 20, "a healthy stack accepts every signed delivery");
    child.kill().unwrap(); // SIGKILL: no graceful shutdown, deliveries may be mid-flight
    child.wait().unwrap();

    let mut child = spawn_child(home.path(), port, &push_url);
    wait_healthy(&ingest, Duration::from_secs(60)).await;
    for i in 0..10 {
        let id = format!("after-{i}");
        if send_delivery(&client, &format!("{ingest}/webhook"), &secret, &id).await == reqwest::StatusCode::ACCEPTED {
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
    assert_eq!(*receiver.bad_tokens.lock().unwrap(), 0, "every push carried a valid OIDC token");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reading_a_secret_raises_an_alert() {
    let home = tempfile::tempdir().unwrap();
    let running = start_stack(stack_env(home.path(), &[]), vec![]).await;
    // The stack seeded its secrets as the rotation worker; nothing alerts yet
    // for a read by a function identity.
    let mut env: Env = running.env.clone();
    env.set("PATCHPANDA_PRINCIPAL", "mallory@patchpanda.local");
    let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT).unwrap();
    let b = Backends::open(&config).await.unwrap();
    b.secrets
        .access(&config.secret_id(names::WEBHOOK_SECRET), &VersionRef::alias(names::ALIAS_CURRENT))
        .await
        .unwrap();
    let alerts = wait_for_messages(home.path(), names::TOPIC_ALERTS, Duration::from_secs(30), |m| {
        m.iter().any(|m| String::from_utf8_lossy(&m.data).contains("mallory@patchpanda.local"))
    })
    .await;
    let alert = alerts
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains("mallory@patchpanda.local"))
        .unwrap();
    assert!(alert.attributes.contains_key("severity"), "{:?}", alert.attributes);
    assert!(alert.attributes.contains_key("rule"), "{:?}", alert.attributes);
    assert!(
        String::from_utf8_lossy(&alert.data).contains("patchpanda-webhook-secret"),
        "the alert names the secret"
    );
    drop(running);
}
