//! `patchpanda dev` as a project's deployment (GOOGLE_CLOUD_PROJECT=P): every
//! function acts as the service account infra/terraform/iam.tf creates for
//! it, with run.tf's allow-lists, so the alerter judges what production's
//! accounts do. Routine operations must not page.

use std::time::Duration;

use clap::Parser as _;
use patchpanda::commands::{Cli, dispatch};
use patchpanda::context::Ctx;
use patchpanda_e2e::{stack_env, start_stack, wait_for_messages};
use patchpanda_shared::backends::Backends;
use patchpanda_shared::bus::PublishedMessage;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::names;
use patchpanda_shared::secrets::VersionRef;

use crate::{call_task, start_fake_github};

const PROJECT: &str = "patchpanda-e2e";
const OPERATOR: &str = "alice@acme.example";

fn sa(id: &str) -> String {
    format!("patchpanda-{id}@{PROJECT}.iam.gserviceaccount.com")
}

async fn backends_as(env: &Env, principal: &str) -> (Config, Backends) {
    let mut env = env.clone();
    env.set("PATCHPANDA_PRINCIPAL", principal);
    let config = Config::from_env(&env, principal).unwrap();
    let b = Backends::open(&config).await.unwrap();
    (config, b)
}

fn text(m: &PublishedMessage) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_deployment_routine_rotation_finish_and_key_upload_raise_no_rotator_alert() {
    let (gh, gh_url) = start_fake_github().await;
    let home = tempfile::tempdir().unwrap();
    let env = stack_env(
        home.path(),
        &[
            ("GOOGLE_CLOUD_PROJECT", PROJECT),
            ("PATCHPANDA_PRINCIPAL", OPERATOR),
            ("GITHUB_APP_ID", "4242"),
            ("GITHUB_API_URL", &gh_url),
            ("PATCHPANDA_ROTATION_GRACE", "1s"),
        ],
    );
    let running = start_stack(env.clone(), vec![]).await;
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
    let current = ingest
        .secrets
        .access(
            &config.secret_id(names::WEBHOOK_SECRET),
            &VersionRef::alias(names::ALIAS_CURRENT),
        )
        .await
        .unwrap();
    *gh.secret.lock().unwrap() = current.value.expose().to_vec();

    // A routine rotation, asked for by the operator.
    let (status, body) = call_task(
        home,
        &format!("http://{}/rotate", running.stack.worker),
        OPERATOR,
        serde_json::json!({"secret": names::WEBHOOK_SECRET, "emergency": false}),
    )
    .await;
    assert!(status.is_success(), "rotation failed: {status} {body}");

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
    let notices = wait_for_messages(
        home,
        names::TOPIC_ROTATION_EVENTS,
        Duration::from_secs(10),
        |m| m.iter().any(|m| text(m).contains(&ids.rotation_worker)),
    )
    .await;
    assert!(!notices.is_empty());
    wait_for_messages(
        home,
        names::TOPIC_AUDIT_LOGS,
        Duration::from_secs(10),
        |m| m.iter().any(|m| text(m).contains(&ids.rotation_worker)),
    )
    .await;

    // A control the alerter must catch: a read by an unknown account. Once
    // its alert is out, the alerter has seen the earlier entries too.
    let (mconfig, mallory) = backends_as(&env, "mallory@acme.example").await;
    mallory
        .secrets
        .access(
            &mconfig.secret_id(names::WEBHOOK_SECRET),
            &VersionRef::alias(names::ALIAS_CURRENT),
        )
        .await
        .unwrap();
    let alerts = wait_for_messages(home, names::TOPIC_ALERTS, Duration::from_secs(30), |m| {
        m.iter().any(|m| text(m).contains("mallory@acme.example"))
    })
    .await;
    // Give entries still in flight a moment, then judge everything raised.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = wait_for_messages(home, names::TOPIC_ALERTS, Duration::from_secs(1), |m| {
        m.len() >= alerts.len()
    })
    .await;
    let rotator: Vec<String> = alerts
        .iter()
        .filter(|m| {
            m.attributes
                .get("rule")
                .is_some_and(|r| r.starts_with("rotator"))
                || text(m).contains(&ids.rotation_worker)
        })
        .map(text)
        .collect();
    assert!(
        rotator.is_empty(),
        "routine operations raised rotator alerts: {rotator:#?}"
    );
    drop(running);
}
