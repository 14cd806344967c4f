//! Helpers for the end-to-end tests: start the local stack in-process (or in
//! a child process that can be killed), send signed deliveries, and wait for
//! what the bus holds.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use patchpanda::dev::{self, DevArgs, Stack};
use patchpanda_shared::bus::PublishedMessage;
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
