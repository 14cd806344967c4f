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
use patchpanda_e2e::{emulator_env, emulator_host, stack_env, start_stack};
use patchpanda_shared::config::Config;
use patchpanda_shared::names;
use patchpanda_shared::secrets::{SecretUpdate, VersionRef};

use crate::identities::{Published, backends_as};
use crate::{call_task, start_fake_github};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_deployment_routine_operations_raise_no_alert_and_attacks_do() {
    scenario(None).await;
}

/// The same through Google's Pub/Sub emulator (pubsub.tf's subscriptions,
/// pushes signed as the project's push account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_as_a_deployment_routine_operations_raise_no_alert_and_attacks_do() {
    let Some(host) =
        emulator_host("emulator_as_a_deployment_routine_operations_raise_no_alert_and_attacks_do")
    else {
        return;
    };
    scenario(Some(host)).await;
}

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
    let extra = [
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("PATCHPANDA_PRINCIPAL", OPERATOR),
        ("GITHUB_APP_ID", "4242"),
        ("GITHUB_API_URL", gh_url.as_str()),
        ("PATCHPANDA_ROTATION_GRACE", "1s"),
        ("PATCHPANDA_ALERTER_CONFIG", alerter_toml.to_str().unwrap()),
    ];
    let env = match &emulator {
        Some(host) => emulator_env(home.path(), host, &extra),
        None => stack_env(home.path(), &extra),
    };
    let running = start_stack(env.clone(), vec![]).await;
    let published = Published::of(&running, home.path()).await;
    let ids = running.stack.identities.clone();
    let home = home.path();
    let worker = format!("http://{}", running.stack.worker);
    let alerter = format!("http://{}", running.stack.alerter);

    let (config, ingest) = backends_as(&env, &ids.webhook_ingest).await;
    let webhook_id = config.secret_id(names::WEBHOOK_SECRET);
    let current = ingest
        .secrets
        .access(&webhook_id, &VersionRef::alias(names::ALIAS_CURRENT))
        .await
        .unwrap();
    *gh.secret.lock().unwrap() = current.value.expose().to_vec();

    // --- Routine ---
    let rotate = |secret: &'static str| {
        let url = format!("{worker}{}", rotation_worker::ROUTE_ROTATE);
        async move {
            let (status, body) = call_task(
                home,
                &url,
                OPERATOR,
                serde_json::json!({"secret": secret, "emergency": false}),
            )
            .await;
            assert!(
                status.is_success(),
                "rotating {secret} failed: {status} {body}"
            );
        }
    };
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
    mallory
        .secrets
        .access(
            &mconfig.secret_id(names::WEBHOOK_SECRET),
            &VersionRef::alias(names::ALIAS_CURRENT),
        )
        .await
        .unwrap();
    // 2. An unknown account plants an annotation (issue 11: a grace or lease
    //    annotation changes what the gateway accepts).
    let s = mallory.secrets.get_secret(&webhook_id).await.unwrap();
    let mut planted = s.annotations.clone();
    planted.insert(
        names::ANNOTATION_PREVIOUS_VALID_UNTIL.to_string(),
        "2099-01-01T00:00:00Z".to_string(),
    );
    mallory
        .secrets
        .update_secret(
            &webhook_id,
            SecretUpdate {
                aliases: None,
                annotations: Some(planted),
            },
            Some(&s.etag),
        )
        .await
        .unwrap();
    // 3. The rotator's account changing annotations with no rotation
    //    announced (a stolen credential).
    let (_, rotator) = backends_as(&env, &ids.rotation_worker).await;
    let s = rotator.secrets.get_secret(&webhook_id).await.unwrap();
    let mut planted = s.annotations.clone();
    planted.insert(
        "patchpanda-rotation".to_string(),
        "{\"planted\":true}".to_string(),
    );
    rotator
        .secrets
        .update_secret(
            &webhook_id,
            SecretUpdate {
                aliases: None,
                annotations: Some(planted),
            },
            Some(&s.etag),
        )
        .await
        .unwrap();
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
