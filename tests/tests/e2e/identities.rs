//! `patchpanda dev` as a project's deployment (GOOGLE_CLOUD_PROJECT=P): every
//! function acts as the service account infra/terraform/iam.tf creates for
//! it, with run.tf's allow-lists, so the alerter judges what production's
//! accounts do. Routine operations must not page.

use std::time::Duration;

use clap::Parser as _;
use patchpanda::commands::{Cli, dispatch};
use patchpanda::context::Ctx;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use patchpanda_e2e::{RunningStack, pull, start_stack};
use patchpanda_shared::bus::emulator::PubsubEmulator;
use patchpanda_shared::config::Config;
use patchpanda_shared::names;

use crate::{
    backends_as, call_task, deployment_env, read_webhook_secret, request_rotation,
    start_fake_github,
};

const PROJECT: &str = "patchpanda-e2e";
const OPERATOR: &str = "alice@acme.example";

fn sa(id: &str) -> String {
    format!("patchpanda-{id}@{PROJECT}.iam.gserviceaccount.com")
}

/// One published message, as the scenario judges it.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) attributes: BTreeMap<String, String>,
    pub(crate) text: String,
}

impl Msg {
    fn of(data: &[u8], attributes: BTreeMap<String, String>) -> Self {
        Msg {
            text: String::from_utf8_lossy(data).into_owned(),
            attributes,
        }
    }
}

/// Where the scenario reads what was published: the local bus, or its own
/// pull subscriptions in the emulator (made before anything it judges is
/// published; pulled messages are kept, since a pull acknowledges them).
pub(crate) enum Published {
    Local(PathBuf),
    Emulator {
        emulator: PubsubEmulator,
        seen: Mutex<HashMap<String, Vec<Msg>>>,
    },
}

impl Published {
    pub(crate) async fn of(running: &RunningStack, home: &Path) -> Self {
        let Some(e) = &running.stack.emulator else {
            return Published::Local(home.to_path_buf());
        };
        let admin = e.emulator.admin().await.unwrap();
        for topic in [
            names::TOPIC_ROTATION_EVENTS,
            names::TOPIC_AUDIT_LOGS,
            names::TOPIC_ALERTS,
        ] {
            admin
                .create_pull_subscription(&format!("e2e-{topic}"), topic, false)
                .await
                .unwrap();
        }
        Published::Emulator {
            emulator: e.emulator.clone(),
            seen: Mutex::default(),
        }
    }

    pub(crate) async fn messages(&self, topic: &str) -> Vec<Msg> {
        match self {
            Published::Local(home) => patchpanda_e2e::bus(home)
                .messages(topic)
                .unwrap()
                .into_iter()
                .map(|m| Msg::of(&m.data, m.attributes))
                .collect(),
            Published::Emulator { emulator, seen } => {
                let new: Vec<Msg> = pull(emulator, &format!("e2e-{topic}"))
                    .await
                    .into_iter()
                    .map(|m| Msg::of(&m.data, m.attributes))
                    .collect();
                let mut seen = seen.lock().unwrap();
                let all = seen.entry(topic.to_string()).or_default();
                all.extend(new);
                all.clone()
            }
        }
    }

    async fn wait(&self, topic: &str, limit: Duration, pred: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        let start = std::time::Instant::now();
        loop {
            let msgs = self.messages(topic).await;
            if pred(&msgs) {
                return msgs;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting on {topic}; it holds {} messages",
                msgs.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

local_and_emulator!(
    as_a_deployment_routine_rotation_finish_and_key_upload_raise_no_rotator_alert,
    /// The same through the emulator: pushes carry tokens of the project's
    /// push account, the only push identity the functions accept in this mode.
    emulator_as_a_deployment_routine_operations_raise_no_rotator_alert,
    deployment_scenario
);

async fn deployment_scenario(emulator: Option<String>) {
    let (gh, gh_url) = start_fake_github().await;
    let home = tempfile::tempdir().unwrap();
    let env = deployment_env(
        home.path(),
        emulator.as_deref(),
        PROJECT,
        OPERATOR,
        &gh_url,
        &[],
    );
    let running = start_stack(env.clone(), vec![]).await;
    let published = Published::of(&running, home.path()).await;
    let ids = running.stack.identities.clone();
    assert_eq!(ids.webhook_ingest, sa("webhook-ingest"));
    assert_eq!(ids.rotation_worker, sa("rotation-worker"));
    assert_eq!(ids.audit_alerter, sa("audit-alerter"));
    assert_eq!(ids.push, sa("push"));
    assert_eq!(ids.scheduler, sa("scheduler"));
    let home = home.path();

    // GitHub holds the seeded webhook secret (read as webhook-ingest, an
    // expected reader).
    let (config, ingest) = backends_as(&env, &ids.webhook_ingest).await;
    *gh.secret.lock().unwrap() = read_webhook_secret(&config, &ingest).await;

    // A routine rotation, asked for by the operator.
    request_rotation(home, &running.stack.worker, OPERATOR, names::WEBHOOK_SECRET).await;

    // The scheduler's finish, once the 1 s grace is over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = call_task(
        home,
        &format!("http://{}/tasks/finish", running.stack.worker),
        &ids.scheduler,
        serde_json::json!({}),
    )
    .await;
    assert!(status.is_success(), "finish failed: {status} {body}");

    // The documented key upload (runbook: `patchpanda secrets add
    // github-private-key --data-file KEY.pem`), by the operator; the worker
    // then promotes it.
    let key_dir = tempfile::tempdir().unwrap();
    let pem = key_dir.path().join("app.private-key.pem");
    std::fs::write(&pem, patchpanda::dev::dev_private_key().unwrap().expose()).unwrap();
    let mut op_env = env.clone();
    op_env.set("PATCHPANDA_PRINCIPAL", OPERATOR);
    let op_config = Config::from_env(&op_env, OPERATOR).unwrap();
    let cli = Cli::parse_from([
        "patchpanda",
        "secrets",
        "add",
        names::GITHUB_PRIVATE_KEY,
        "--data-file",
        pem.to_str().unwrap(),
    ]);
    dispatch(&Ctx::new(op_config, op_env), cli.command)
        .await
        .map_err(|f| f.0)
        .unwrap();
    let (wconfig, worker) = backends_as(&env, &ids.rotation_worker).await;
    let key_id = wconfig.secret_id(names::GITHUB_PRIVATE_KEY);
    let start = std::time::Instant::now();
    loop {
        let s = worker.secrets.get_secret(&key_id).await.unwrap();
        if s.aliases.get(names::ALIAS_CURRENT) == Some(&2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the uploaded key was never promoted: {:?}",
            s.aliases
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Production's names travel: the worker's notices and its audit entries
    // carry its service account.
    let has_worker = |m: &[Msg]| m.iter().any(|m| m.text.contains(&ids.rotation_worker));
    published
        .wait(
            names::TOPIC_ROTATION_EVENTS,
            Duration::from_secs(10),
            has_worker,
        )
        .await;
    published
        .wait(names::TOPIC_AUDIT_LOGS, Duration::from_secs(10), has_worker)
        .await;

    // A control the alerter must catch: a read by an unknown account. Once
    // its alert is out, the alerter has seen the earlier entries too.
    let (mconfig, mallory) = backends_as(&env, "mallory@acme.example").await;
    read_webhook_secret(&mconfig, &mallory).await;
    published
        .wait(names::TOPIC_ALERTS, Duration::from_secs(30), |m| {
            m.iter().any(|m| m.text.contains("mallory@acme.example"))
        })
        .await;
    // Give entries still in flight a moment, then judge everything raised.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = published.messages(names::TOPIC_ALERTS).await;
    let rotator: Vec<String> = alerts
        .iter()
        .filter(|m| {
            m.attributes
                .get("rule")
                .is_some_and(|r| r.starts_with("rotator"))
                || m.text.contains(&ids.rotation_worker)
        })
        .map(|m| m.text.clone())
        .collect();
    assert!(
        rotator.is_empty(),
        "routine operations raised rotator alerts: {rotator:#?}"
    );
    drop(running);
}
