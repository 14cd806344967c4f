//! The gateway's routine operations raise no alert, and attacks still do,
//! judged by the alerter of `patchpanda dev` acting as a project's deployment
//! (GOOGLE_CLOUD_PROJECT=P, so every function is its production service
//! account and run.tf's allow-lists apply).
//!
//! Routine: a webhook-secret rotation and the scheduler's finish, a KMS key
//! rotation, webhook-ingest's metadata checks, the operator's `patchpanda
//! health` and `patchpanda backup`, and the alerter's scheduled tick. The
//! alerter's hold (how long a rotator's unannounced change waits for a late
//! notice) is shortened so that anything unannounced pages within the test.

use std::time::Duration;

use clap::Parser as _;
use patchpanda::commands::{Cli, dispatch};
use patchpanda::context::Ctx;
use patchpanda_e2e::start_stack;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::Config;
use patchpanda_shared::names;
use patchpanda_shared::secrets::SecretUpdate;

use crate::identities::Published;
use crate::{
    backends_as, call_task, deployment_env, read_webhook_secret, request_rotation,
    start_fake_github,
};

const PROJECT: &str = "patchpanda-routine";
const OPERATOR: &str = "alice@acme.example";
const MALLORY: &str = "mallory@acme.example";

/// One alert as published on the alerts topic.
#[derive(Debug, Clone)]
struct Raised {
    rule: String,
    severity: String,
    text: String,
}

async fn alerts(published: &Published) -> Vec<Raised> {
    published
        .messages(names::TOPIC_ALERTS)
        .await
        .into_iter()
        .map(|m| Raised {
            rule: m.attributes.get("rule").cloned().unwrap_or_default(),
            severity: m.attributes.get("severity").cloned().unwrap_or_default(),
            text: m.text,
        })
        .collect()
}

async fn run_cli(env: &patchpanda_shared::config::Env, args: &[&str]) -> Result<(), String> {
    let mut op_env = env.clone();
    op_env.set("PATCHPANDA_PRINCIPAL", OPERATOR);
    let config = Config::from_env(&op_env, OPERATOR).unwrap();
    let cli = Cli::parse_from(std::iter::once("patchpanda").chain(args.iter().copied()));
    dispatch(&Ctx::new(config, op_env), cli.command)
        .await
        .map_err(|f| f.0)
}

/// Sets one annotation on secret `id` as whoever `b` acts as, guarded by
/// the etag it read.
async fn plant_annotation(b: &Backends, id: &str, key: &str, value: &str) {
    let s = b.secrets.get_secret(id).await.unwrap();
    let mut planted = s.annotations.clone();
    planted.insert(key.to_string(), value.to_string());
    b.secrets
        .update_secret(
            id,
            SecretUpdate {
                aliases: None,
                annotations: Some(planted),
            },
            Some(&s.etag),
        )
        .await
        .unwrap();
}

local_and_emulator!(
    as_a_deployment_routine_operations_raise_no_alert_and_attacks_do,
    /// The same through Google's Pub/Sub emulator (pubsub.tf's
    /// subscriptions, pushes signed as the project's push account).
    emulator_as_a_deployment_routine_operations_raise_no_alert_and_attacks_do,
    scenario
);

async fn scenario(emulator: Option<String>) {
    let (gh, gh_url) = start_fake_github().await;
    let home = tempfile::tempdir().unwrap();
    let alerter_toml = home.path().join("alerter.toml");
    // A 3 s hold instead of 2 min, and a 2 s grace after a rotation's end:
    // an unannounced rotator change pages within seconds.
    std::fs::write(
        &alerter_toml,
        "announce_hold = \"3s\"\nrotation_grace = \"2s\"\n",
    )
    .unwrap();
    let env = deployment_env(
        home.path(),
        emulator.as_deref(),
        PROJECT,
        OPERATOR,
        &gh_url,
        &[("PATCHPANDA_ALERTER_CONFIG", alerter_toml.to_str().unwrap())],
    );
    let running = start_stack(env.clone(), vec![]).await;
    let published = Published::of(&running, home.path()).await;
    let ids = running.stack.identities.clone();
    let home = home.path();
    let worker = format!("http://{}", running.stack.worker);
    let alerter = format!("http://{}", running.stack.alerter);

    let (config, ingest) = backends_as(&env, &ids.webhook_ingest).await;
    let webhook_id = config.secret_id(names::WEBHOOK_SECRET);
    *gh.secret.lock().unwrap() = read_webhook_secret(&config, &ingest).await;

    // --- Routine ---
    let rotate = |secret| request_rotation(home, &running.stack.worker, OPERATOR, secret);
    rotate(names::WEBHOOK_SECRET).await;
    // The scheduler's finish once the 1 s grace is over, and again later
    // (outside every rotation window, as the hourly run is).
    for wait in [1500, 3000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (status, body) = call_task(
            home,
            &format!("{worker}{}", rotation_worker::ROUTE_FINISH),
            &ids.scheduler,
            serde_json::json!({}),
        )
        .await;
        assert!(status.is_success(), "finish failed: {status} {body}");
    }
    // The KMS key's rotation, once the webhook secret's windows are over
    // (its record lives on the webhook secret).
    tokio::time::sleep(Duration::from_secs(3)).await;
    rotate(names::KMS_KEY).await;
    // The operator's health check and backup.
    let _ = run_cli(
        &env,
        &[
            "health",
            "--ingest-url",
            &format!("http://{}", running.stack.ingest),
            "--worker-url",
            &worker,
            "--alerter-url",
            &alerter,
        ],
    )
    .await;
    let backup = home.join("routine.ppbk");
    run_cli(&env, &["backup", "--out", backup.to_str().unwrap()])
        .await
        .unwrap();
    // webhook-ingest's metadata checks (every ~10 s), then the alerter's
    // scheduled tick, once every hold has run out.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let tick = |caller: String| {
        let url = format!("{alerter}{}", audit_alerter::ROUTE_TICK);
        async move {
            let (status, body) = call_task(home, &url, &caller, serde_json::json!({})).await;
            assert!(status.is_success(), "tick failed: {status} {body}");
        }
    };
    tick(ids.scheduler.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let routine: Vec<Raised> = alerts(&published)
        .await
        .into_iter()
        // A listed operator's key use (health, backup) and announced reads
        // (backup) are recorded at P3, not paged
        // (functions/audit-alerter/README.md: kms-key-used,
        // secret-read-unexpected).
        .filter(|a| {
            !(["kms-key-used", "secret-read-unexpected"].contains(&a.rule.as_str())
                && a.severity == "P3"
                && a.text.contains(OPERATOR))
        })
        .collect();
    assert!(
        routine.is_empty(),
        "routine operations raised alerts: {routine:#?}"
    );

    // --- Attacks ---
    // 1. A read of the webhook secret by an unknown account.
    let (mconfig, mallory) = backends_as(&env, MALLORY).await;
    read_webhook_secret(&mconfig, &mallory).await;
    // 2. An unknown account plants an annotation (issue 11: a grace or lease
    //    annotation changes what the gateway accepts).
    plant_annotation(
        &mallory,
        &webhook_id,
        names::ANNOTATION_PREVIOUS_VALID_UNTIL,
        "2099-01-01T00:00:00Z",
    )
    .await;
    // 3. The rotator's account changing annotations with no rotation
    //    announced (a stolen credential).
    let (_, rotator) = backends_as(&env, &ids.rotation_worker).await;
    plant_annotation(
        &rotator,
        &webhook_id,
        "patchpanda-rotation",
        "{\"planted\":true}",
    )
    .await;
    // 4. An unknown account moves the KMS key's primary.
    let primary = mallory
        .kms
        .key_info()
        .await
        .unwrap()
        .primary
        .unwrap()
        .number;
    mallory.kms.set_primary(primary).await.unwrap();

    let expected = [
        ("secret-read-unexpected", MALLORY),
        ("secret-updated", MALLORY),
        ("rotator-outside-rotation", ids.rotation_worker.as_str()),
        ("kms-primary-changed", MALLORY),
    ];
    let start = std::time::Instant::now();
    loop {
        let got = alerts(&published).await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(rule, who)| !got.iter().any(|a| a.rule == *rule && a.text.contains(who)))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "attacks raised no alert: {missing:?}; alerts: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        if start.elapsed() > Duration::from_secs(5) {
            tick(ids.scheduler.clone()).await;
        }
    }
    // Held and nacked audit entries were redelivered, never dead-lettered
    // (pubsub.tf's 100 attempts on the audit feed, mirrored locally): a
    // restart of the alerter would not lose them.
    if emulator.is_none() {
        let dead = patchpanda_e2e::bus(home)
            .dead_letters("audit-alerter-audit-logs")
            .unwrap();
        assert!(
            dead.is_empty(),
            "{} audit entries were dead-lettered",
            dead.len()
        );
    }
    drop(running);
}
