//! Helpers for the end-to-end tests: start the local stack in-process (or in
//! a child process that can be killed), send signed deliveries, and wait for
//! what the bus holds, on the local bus or in Google's Pub/Sub emulator.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;

use patchpanda::dev::{self, DevArgs, Stack};
use patchpanda_shared::bus::PublishedMessage;
use patchpanda_shared::bus::emulator::{ENV_EMULATOR_HOST, ENV_EMULATOR_PROJECT, PubsubEmulator};
use patchpanda_shared::bus::local::LocalBus;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::local::Home;
use patchpanda_shared::names;
use tokio::sync::watch;

/// A running in-process stack; dropping it stops it.
pub struct RunningStack {
    pub stack: Stack,
    pub env: Env,
    stop: watch::Sender<bool>,
}

impl Drop for RunningStack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The environment of a stack living in `home`, with extra variables.
pub fn stack_env(home: &Path, extra: &[(&str, &str)]) -> Env {
    let mut env = Env::from_pairs([
        ("PATCHPANDA_BACKEND", "local"),
        ("PATCHPANDA_HOME", home.to_str().expect("utf-8 temp path")),
        ("PATCHPANDA_ROTATION_GRACE", "1h"),
    ]);
    for (k, v) in extra {
        env.set(*k, *v);
    }
    env
}

/// Three consecutive free ports on 127.0.0.1.
pub fn free_port_base() -> u16 {
    for _ in 0..200 {
        let base: u16 = 20_000 + (rand_u16() % 40_000);
        let ok = (0..3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no three consecutive free ports found");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().rotate_left(7)) as u16
}

pub async fn start_stack(env: Env, extra_push: Vec<String>) -> RunningStack {
    // Visible with --nocapture; the test harness hides it otherwise.
    patchpanda::logging::init(false, "info");
    let config =
        Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT).expect("valid test config");
    let (tx, rx) = watch::channel(false);
    let mut last = None;
    for _ in 0..5 {
        let args = DevArgs {
            port_base: free_port_base(),
            push_github_events: extra_push.clone(),
        };
        match dev::start(&env, &config, &args, rx.clone()).await {
            Ok(stack) => {
                return RunningStack {
                    stack,
                    env,
                    stop: tx,
                };
            }
            Err(e) => last = Some(e.0),
        }
    }
    panic!("the stack did not start: {}", last.unwrap_or_default());
}

pub fn bus(home: &Path) -> LocalBus {
    LocalBus::open(&Home::open(home).expect("home")).expect("bus")
}

/// Polls `topic` until `pred` holds for its messages, or panics after `limit`.
pub async fn wait_for_messages(
    home: &Path,
    topic: &str,
    limit: Duration,
    pred: impl Fn(&[PublishedMessage]) -> bool,
) -> Vec<PublishedMessage> {
    let bus = bus(home);
    let start = Instant::now();
    loop {
        let msgs = bus.messages(topic).expect("list messages");
        if pred(&msgs) {
            return msgs;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting on {topic}; it holds {} messages",
                msgs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- emulator

/// Set to 1 (CI does) to fail, not skip, the emulator tests when
/// PUBSUB_EMULATOR_HOST is missing.
pub const ENV_REQUIRE_EMULATOR: &str = "PATCHPANDA_REQUIRE_EMULATOR";

/// The emulator's host:port, or None after printing SKIPPED where the test
/// harness does not hide it.
pub fn emulator_host(test: &str) -> Option<String> {
    if let Ok(h) = std::env::var(ENV_EMULATOR_HOST)
        && !h.trim().is_empty()
    {
        return Some(h.trim().to_string());
    }
    if std::env::var(ENV_REQUIRE_EMULATOR).is_ok_and(|v| v == "1") {
        panic!("{test}: {ENV_REQUIRE_EMULATOR}=1 but {ENV_EMULATOR_HOST} is not set");
    }
    // Straight to the process's stderr: the harness captures eprintln!.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: {ENV_EMULATOR_HOST} is not set. `make test` starts Google's \
         Pub/Sub emulator; or run: scripts/pubsub-emulator.sh run -- cargo test -p patchpanda-e2e ***\n"
    );
    None
}

/// A stack environment in emulator mode, in a project of its own so tests
/// sharing one emulator never see each other's messages.
pub fn emulator_env(home: &Path, host: &str, extra: &[(&str, &str)]) -> Env {
    let mut env = stack_env(home, extra);
    let project = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    env.set(ENV_EMULATOR_HOST, host)
        .set(ENV_EMULATOR_PROJECT, project);
    env
}

/// One message pulled from the emulator.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: Option<String>,
}

impl Pulled {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Pulls what `subscription` holds now (Pub/Sub's REST `pull`, which the
/// emulator serves) and acknowledges it.
pub async fn pull(emulator: &PubsubEmulator, subscription: &str) -> Vec<Pulled> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!(
        "{}/v1/{}",
        emulator.endpoint(),
        emulator.subscription_name(subscription)
    );
    let r: serde_json::Value = client
        .post(format!("{base}:pull"))
        .json(&serde_json::json!({"maxMessages": 100, "returnImmediately": true}))
        .send()
        .await
        .expect("pull from the emulator")
        .error_for_status()
        .expect("the emulator answers the pull")
        .json()
        .await
        .expect("a pull response");
    let received = r["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut ack_ids = Vec::new();
    let mut out = Vec::new();
    for m in received {
        ack_ids.push(m["ackId"].as_str().unwrap_or_default().to_string());
        let msg = &m["message"];
        out.push(Pulled {
            message_id: msg["messageId"].as_str().unwrap_or_default().to_string(),
            data: base64::engine::general_purpose::STANDARD
                .decode(msg["data"].as_str().unwrap_or_default())
                .expect("base64 data"),
            attributes: serde_json::from_value(msg["attributes"].clone()).unwrap_or_default(),
            ordering_key: msg["orderingKey"].as_str().map(String::from),
        });
    }
    if !ack_ids.is_empty() {
        client
            .post(format!("{base}:acknowledge"))
            .json(&serde_json::json!({"ackIds": ack_ids}))
            .send()
            .await
            .expect("acknowledge")
            .error_for_status()
            .expect("the emulator takes the ack");
    }
    out
}

/// Pulls from `subscription` until `pred` holds for everything pulled so
/// far, or panics after `limit`.
pub async fn pull_until(
    emulator: &PubsubEmulator,
    subscription: &str,
    limit: Duration,
    pred: impl Fn(&[Pulled]) -> bool,
) -> Vec<Pulled> {
    let start = Instant::now();
    let mut all = Vec::new();
    loop {
        all.extend(pull(emulator, subscription).await);
        if pred(&all) {
            return all;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} pulling {subscription}; got {} messages: {:?}",
                all.len(),
                all.iter().map(|m| &m.attributes).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
