//! Emulator mode: the stack over Google's Pub/Sub emulator (PUBSUB_EMULATOR_HOST),
//! with the topics and subscriptions of infra/terraform/pubsub.tf. Each test
//! skips loudly without the emulator; `make test` and CI start it.

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use patchpanda_e2e::{Pulled, emulator_env, emulator_host, pull_until, start_stack};
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::bus::emulator::PubsubEmulator;
use patchpanda_shared::names;

use crate::{
    MALLORY, backends_as, bind_local, mentions, push_claims, push_envelope, pushed_delivery,
    read_webhook_secret, request_rotation, send_delivery, serve, start_fake_github, webhook_secret,
};

const GITHUB_EVENTS_PULL: &str = "patchpanda-github-events-pull";

/// One push the App's own worker got: the envelope (data replaced by its
/// decoded bytes) and who the token says sent it.
#[derive(Debug, Clone)]
struct Got {
    envelope: serde_json::Value,
    data: Vec<u8>,
    caller: String,
}

/// A push endpoint that checks the OIDC token like a function does.
#[derive(Clone)]
struct PushReceiver {
    issuer: Arc<LocalIssuer>,
    audience: String,
    got: Arc<Mutex<Vec<Got>>>,
    refused: Arc<Mutex<usize>>,
}

async fn receive(
    State(r): State<PushReceiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let Some(claims) = push_claims(&r.issuer, &r.audience, &headers) else {
        *r.refused.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    };
    let (mut envelope, data) = push_envelope(&body);
    envelope["message"]["data"] = serde_json::Value::Null;
    r.got.lock().unwrap().push(Got {
        envelope,
        data,
        caller: claims["email"].as_str().unwrap_or_default().to_string(),
    });
    StatusCode::NO_CONTENT
}

async fn start_receiver(home: &std::path::Path) -> PushReceiver {
    let issuer = Arc::new(LocalIssuer::open_or_create(home).unwrap());
    let (listener, base) = bind_local().await;
    let r = PushReceiver {
        issuer,
        audience: format!("{base}/push"),
        got: Arc::default(),
        refused: Arc::default(),
    };
    serve(
        listener,
        axum::Router::new()
            .route("/push", axum::routing::post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
            .with_state(r.clone()),
    );
    r
}

/// A stack over the emulator at `host` pushing GitHub events to a fresh
/// [`PushReceiver`], and the webhook secret it seeded.
struct PushedStack {
    _home: tempfile::TempDir,
    receiver: PushReceiver,
    running: patchpanda_e2e::RunningStack,
    emu: PubsubEmulator,
    secret: Vec<u8>,
}

async fn start_pushed_stack(host: &str) -> PushedStack {
    let home = tempfile::tempdir().unwrap();
    let receiver = start_receiver(home.path()).await;
    let running = start_stack(
        emulator_env(home.path(), host, &[]),
        vec![receiver.audience.clone()],
    )
    .await;
    let emu = emulator_of(&running);
    let secret = webhook_secret(home.path()).await;
    PushedStack {
        _home: home,
        receiver,
        running,
        emu,
        secret,
    }
}

/// webhook-ingest's webhook URL in a running stack.
fn ingest_url(running: &patchpanda_e2e::RunningStack) -> String {
    format!(
        "http://{}{}",
        running.stack.ingest,
        webhook_ingest::ROUTE_WEBHOOK
    )
}

async fn wait_for_push(r: &PushReceiver, delivery: &str) -> Got {
    let start = std::time::Instant::now();
    loop {
        let hit = r
            .got
            .lock()
            .unwrap()
            .iter()
            .find(|g| pushed_delivery(&g.envelope) == Some(delivery))
            .cloned();
        if let Some(g) = hit {
            return g;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{delivery} was never pushed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn delivery(pulled: &[Pulled], id: &str) -> Option<Pulled> {
    pulled
        .iter()
        .find(|m| m.attr("github_delivery") == Some(id))
        .cloned()
}

fn emulator_of(running: &patchpanda_e2e::RunningStack) -> PubsubEmulator {
    running
        .stack
        .emulator
        .as_ref()
        .expect("PUBSUB_EMULATOR_HOST puts the stack in emulator mode")
        .emulator
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_a_delivery_is_published_and_read_back_with_its_attributes() {
    let Some(host) =
        emulator_host("emulator_a_delivery_is_published_and_read_back_with_its_attributes")
    else {
        return;
    };
    let s = start_pushed_stack(&host).await;
    let ingest = ingest_url(&s.running);
    let client = reqwest::Client::new();
    assert_eq!(
        send_delivery(&client, &ingest, &s.secret, "emu-attrs-1").await,
        reqwest::StatusCode::ACCEPTED
    );

    let pulled = pull_until(&s.emu, GITHUB_EVENTS_PULL, Duration::from_secs(30), |m| {
        delivery(m, "emu-attrs-1").is_some()
    })
    .await;
    let m = delivery(&pulled, "emu-attrs-1").unwrap();
    assert_eq!(m.attr("github_event"), Some("push"));
    assert_eq!(m.attr("github_hook_id"), Some("7"));
    assert_eq!(m.attr("repository"), Some("octo/hello"));
    assert_eq!(m.attr("installation_id"), Some("42"));
    assert_eq!(m.attr("sender"), Some("octocat"));
    assert!(m.attr("received_at").is_some(), "{:?}", m.attributes);
    assert!(m.attr("secret_version").is_some(), "{:?}", m.attributes);
    let body: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
    assert_eq!(body["ref"], "refs/heads/main");
    // Ordering is off by default: no key.
    assert_eq!(m.ordering_key, None);

    // The same message, pushed by the emulator through the relay: the
    // envelope Pub/Sub sends, with a token from the push account.
    let got = wait_for_push(&s.receiver, "emu-attrs-1").await;
    assert_eq!(got.caller, s.running.stack.identities.push);
    assert_eq!(
        got.envelope["subscription"],
        s.emu.subscription_name("patchpanda-github-events-push-0")
    );
    let msg = &got.envelope["message"];
    assert_eq!(msg["messageId"], m.message_id.as_str());
    assert_eq!(msg["message_id"], m.message_id.as_str());
    assert!(
        msg["publishTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(msg["publishTime"], msg["publish_time"]);
    let attrs: std::collections::BTreeMap<String, String> =
        serde_json::from_value(msg["attributes"].clone()).unwrap();
    assert_eq!(attrs, m.attributes);
    assert_eq!(got.data, m.data);
    assert_eq!(*s.receiver.refused.lock().unwrap(), 0);
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_a_message_over_1_mib_is_published_pulled_and_pushed() {
    let Some(host) = emulator_host("emulator_a_message_over_1_mib_is_published_pulled_and_pushed")
    else {
        return;
    };
    let s = start_pushed_stack(&host).await;
    // Random hex gzips to about half: a 3 MiB payload stays well over 1 MiB
    // after webhook-ingest compresses it.
    let blob: Vec<u8> = (0..3 * 1024 * 1024 / 2).map(|_| rand::random()).collect();
    let payload = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"id": 1, "full_name": "octo/hello", "name": "hello", "owner": {"login": "octo"}},
        "sender": {"login": "octocat", "id": 1},
        "blob": hex::encode(&blob),
    }))
    .unwrap();
    let r = reqwest::Client::new()
        .post(ingest_url(&s.running))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "emu-big-1")
        .header(
            "x-hub-signature-256",
            patchpanda_shared::github::signature::sign(&s.secret, &payload),
        )
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);

    let pulled = pull_until(&s.emu, GITHUB_EVENTS_PULL, Duration::from_secs(60), |m| {
        delivery(m, "emu-big-1").is_some()
    })
    .await;
    let m = delivery(&pulled, "emu-big-1").unwrap();
    assert!(
        m.data.len() > 1024 * 1024,
        "the published message is {} bytes",
        m.data.len()
    );
    assert_eq!(m.attr("content_encoding"), Some("gzip"));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&m.data[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, payload);

    let got = wait_for_push(&s.receiver, "emu-big-1").await;
    assert_eq!(got.data, m.data, "the push carries the whole message");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_ordering_keys_travel_and_keep_order() {
    let Some(host) = emulator_host("emulator_ordering_keys_travel_and_keep_order") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let running = start_stack(
        emulator_env(home.path(), &host, &[("PATCHPANDA_ORDERING", "repository")]),
        vec![],
    )
    .await;
    let emu = emulator_of(&running);
    // An ordered subscription, as the App's own worker would have.
    emu.admin()
        .await
        .unwrap()
        .create_pull_subscription("e2e-ordered", names::TOPIC_GITHUB_EVENTS, true)
        .await
        .unwrap();
    let secret = webhook_secret(home.path()).await;
    let ingest = ingest_url(&running);
    let client = reqwest::Client::new();
    let sent: Vec<String> = (0..12).map(|i| format!("emu-order-{i:02}")).collect();
    for id in &sent {
        assert_eq!(
            send_delivery(&client, &ingest, &secret, id).await,
            reqwest::StatusCode::ACCEPTED
        );
    }
    let pulled = pull_until(&emu, "e2e-ordered", Duration::from_secs(30), |m| {
        m.len() >= sent.len()
    })
    .await;
    let order: Vec<String> = pulled
        .iter()
        .map(|m| m.attr("github_delivery").unwrap_or_default().to_string())
        .collect();
    assert_eq!(order, sent, "one repository's deliveries arrive in order");
    assert!(
        pulled
            .iter()
            .all(|m| m.ordering_key.as_deref() == Some("octo/hello")),
        "{:?}",
        pulled.iter().map(|m| &m.ordering_key).collect::<Vec<_>>()
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_a_rotation_notice_reaches_ingest() {
    let Some(host) = emulator_host("emulator_a_rotation_notice_reaches_ingest") else {
        return;
    };
    let (gh, gh_url) = start_fake_github().await;
    let home = tempfile::tempdir().unwrap();
    let running = start_stack(
        emulator_env(
            home.path(),
            &host,
            &[("GITHUB_APP_ID", "4242"), ("GITHUB_API_URL", &gh_url)],
        ),
        vec![],
    )
    .await;
    let emu = emulator_of(&running);
    let emulated = running.stack.emulator.clone().unwrap();
    emu.admin()
        .await
        .unwrap()
        .create_pull_subscription("e2e-notices", names::TOPIC_ROTATION_EVENTS, false)
        .await
        .unwrap();
    *gh.secret.lock().unwrap() = webhook_secret(home.path()).await;

    request_rotation(
        home.path(),
        &running.stack.worker,
        names::PRINCIPAL_OPERATOR_DEFAULT,
        names::WEBHOOK_SECRET,
    )
    .await;

    // The worker's notice is in the emulator...
    let notices = pull_until(&emu, "e2e-notices", Duration::from_secs(30), |m| {
        m.iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains("webhook-secret"))
    })
    .await;
    assert!(!notices.is_empty());
    // ...and the emulator pushed it to webhook-ingest, which took it.
    let start = std::time::Instant::now();
    loop {
        let pushes = emulated.pushes.all();
        let to_ingest = pushes
            .iter()
            .find(|p| p.subscription == "patchpanda-rotation-events-webhook-ingest");
        if let Some(p) = to_ingest {
            assert!((200..300).contains(&p.status), "ingest answered {p:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no rotation notice pushed to webhook-ingest: {pushes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A delivery signed with the new secret GitHub now holds is accepted.
    let new_secret = gh.secret.lock().unwrap().clone();
    assert_eq!(
        send_delivery(
            &reqwest::Client::new(),
            &ingest_url(&running),
            &new_secret,
            "emu-after-rotation"
        )
        .await,
        reqwest::StatusCode::ACCEPTED
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_audit_entries_and_alerts_travel_through_it() {
    let Some(host) = emulator_host("emulator_audit_entries_and_alerts_travel_through_it") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let running = start_stack(emulator_env(home.path(), &host, &[]), vec![]).await;
    let emu = emulator_of(&running);
    let (config, b) = backends_as(&running.env, MALLORY).await;
    assert!(format!("{b:?}").contains("Pub/Sub emulator"), "{b:?}");
    read_webhook_secret(&config, &b).await;
    let alerts = pull_until(
        &emu,
        "patchpanda-alerts-pull",
        Duration::from_secs(30),
        |m| m.iter().any(|m| mentions(&m.data, MALLORY)),
    )
    .await;
    let alert = alerts.iter().find(|m| mentions(&m.data, MALLORY)).unwrap();
    assert!(alert.attr("severity").is_some(), "{:?}", alert.attributes);
    assert!(alert.attr("rule").is_some(), "{:?}", alert.attributes);
    // The audit entry came to the alerter by the emulator's push.
    let pushes = running.stack.emulator.as_ref().unwrap().pushes.all();
    assert!(
        pushes
            .iter()
            .any(|p| p.subscription == "patchpanda-audit-logs-audit-alerter"
                && (200..300).contains(&p.status)),
        "{pushes:?}"
    );
    drop(running);
}

async fn get_json(url: String) -> serde_json::Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_holds_pubsub_tf_topology_and_a_restart_repoints_the_pushes() {
    use patchpanda_shared::bus::topology;
    let Some(host) =
        emulator_host("emulator_holds_pubsub_tf_topology_and_a_restart_repoints_the_pushes")
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let env = emulator_env(home.path(), &host, &[]);
    drop(start_stack(env.clone(), vec![]).await);
    // A second start in the same project: what exists is kept, the pushes
    // now go to this stack's relay.
    let running = start_stack(env, vec![]).await;
    let emu = emulator_of(&running);
    let relay = running.stack.emulator.as_ref().unwrap().relay;
    let get = |name: String| get_json(format!("{}/v1/{name}", emu.endpoint()));

    for topic in topology::TOPICS {
        get(emu.topic_name(topic)).await;
        get(emu.topic_name(&topology::dead_letter_topic(topic))).await;
        let dlq = get(emu.subscription_name(&topology::dead_letter_subscription(topic))).await;
        assert_eq!(
            dlq["topic"],
            emu.topic_name(&topology::dead_letter_topic(topic))
        );
    }
    for s in topology::PUSH_SUBSCRIPTIONS {
        let sub = get(emu.subscription_name(&s.id())).await;
        assert_eq!(sub["topic"], emu.topic_name(s.topic), "{}", s.key);
        assert_eq!(
            sub["ackDeadlineSeconds"],
            s.ack_deadline.as_secs(),
            "{}",
            s.key
        );
        assert_eq!(sub["retryPolicy"]["minimumBackoff"], "10s");
        assert_eq!(sub["retryPolicy"]["maximumBackoff"], "600s");
        assert_eq!(
            sub["deadLetterPolicy"]["maxDeliveryAttempts"], s.max_attempts,
            "{}",
            s.key
        );
        assert_eq!(
            sub["deadLetterPolicy"]["deadLetterTopic"],
            emu.topic_name(&topology::dead_letter_topic(s.topic))
        );
        let push = &sub["pushConfig"];
        assert!(
            push["pushEndpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("http://{relay}/push/"))
                    && e.ends_with(&format!("/{}", s.id()))),
            "{push}"
        );
        assert_eq!(
            push["oidcToken"]["serviceAccountEmail"],
            running.stack.identities.push.as_str()
        );
        assert_eq!(
            push["oidcToken"]["audience"],
            format!("http://{}{}", running.stack.addr(s.function), s.path)
        );
    }
    for s in topology::PULL_SUBSCRIPTIONS {
        let sub = get(emu.subscription_name(&s.id())).await;
        assert_eq!(sub["topic"], emu.topic_name(s.topic));
        assert_eq!(sub["deadLetterPolicy"]["maxDeliveryAttempts"], 10);
    }
    drop(running);
}
