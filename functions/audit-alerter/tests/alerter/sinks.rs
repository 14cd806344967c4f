//! Sinks against stub HTTP servers.

use crate::prelude::*;

#[derive(Clone, Default)]
struct Stub {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn record(State(stub): State<Stub>, headers: HeaderMap, body: Bytes) -> StatusCode {
    stub.got.lock().unwrap().push((headers, body));
    let code = stub.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

async fn stub_server(script: &[u16]) -> (String, Stub) {
    let stub = Stub::default();
    stub.script.lock().unwrap().extend(script.iter().copied());
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (format!("http://{addr}"), stub)
}

impl Stub {
    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap_or(Value::Null))
            .collect()
    }
}

#[tokio::test]
async fn slack_gets_block_kit() {
    let (url, stub) = stub_server(&[]).await;
    let h = harness_with(test_settings(&[(
        settings::ENV_SLACK_URL,
        &format!("{url}/services/T0/B0/secret-token"),
    )]));
    h.ok(&access("slack-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let bodies = stub.bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert!(
        b["text"]
            .as_str()
            .unwrap()
            .starts_with("[P0] mallory@example.com read")
    );
    let blocks = b["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "P0 Secret read by an unexpected principal"
    );
    let fields = blocks[2]["fields"].as_array().unwrap();
    assert_eq!(fields[0]["text"], "*Principal:*\n`mallory@example.com`");
    assert!(fields.iter().any(|f| f["text"] == "*insertId:*\n`slack-1`"));
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    assert!(
        actions["elements"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://console.cloud.google.com/logs/query")
    );
}

#[tokio::test]
async fn pagerduty_gets_an_events_v2_trigger() {
    let (url, stub) = stub_server(&[202]).await;
    let key = "R0UT1NGK3Y0123456789abcdefabcdef";
    let h = harness_with(test_settings(&[
        (settings::ENV_PAGERDUTY_KEY, key),
        (settings::ENV_PAGERDUTY_URL, &format!("{url}/v2/enqueue")),
    ]));
    h.ok(&access("pd-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    h.ok(&kms_entry(
        "pd-2",
        kms::UPDATE_CRYPTO_KEY_VERSION,
        HUMAN,
        &v1,
        json!({"cryptoKeyVersion": {"state": "DISABLED"}, "updateMask": "state"}),
    ))
    .await;
    let bodies = stub.bodies();
    assert_eq!(bodies.len(), 2);
    let b = &bodies[0];
    assert_eq!(b["routing_key"], key);
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(
        b["dedup_key"],
        "secret-read-unexpected|mallory@example.com|patchpanda-webhook-secret/versions/3"
    );
    assert_eq!(b["payload"]["severity"], "critical");
    assert_eq!(
        b["payload"]["source"],
        "patchpanda-webhook-secret/versions/3"
    );
    assert_eq!(b["payload"]["class"], "secret-read-unexpected");
    assert_eq!(b["payload"]["custom_details"]["insertId"], "pd-1");
    assert!(b["payload"]["summary"].as_str().unwrap().len() <= 1024);
    assert_eq!(bodies[1]["payload"]["severity"], "error", "P1 -> error");
    // The routing key is in the body only: not in the alert on the bus.
    assert!(
        h.bus
            .messages()
            .iter()
            .all(|(_, m)| !String::from_utf8_lossy(&m.data).contains(key))
    );
}

#[tokio::test]
async fn the_generic_webhook_gets_signed_json() {
    let (url, stub) = stub_server(&[]).await;
    let h = harness_with(test_settings(&[
        (settings::ENV_WEBHOOK_URL, &format!("{url}/hook")),
        (settings::ENV_WEBHOOK_SECRET, "hook-secret"),
    ]));
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    h.ok(&sm_entry(
        "wh-1",
        sm::DELETE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.delete",
        json!({}),
        json!({}),
    ))
    .await;
    let got = stub.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (headers, raw) = &got[0];
    let body: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["rule"], "secret-deleted");
    assert_eq!(body["severity"], "P0");
    assert_eq!(body["insertId"], "wh-1");
    assert_eq!(body["principal"], HUMAN);
    let sig = headers[audit_alerter::sinks::webhook::SIGNATURE_HEADER]
        .to_str()
        .unwrap();
    assert_eq!(
        sig,
        audit_alerter::sinks::webhook::signature(b"hook-secret", raw)
    );
    assert_ne!(
        sig,
        audit_alerter::sinks::webhook::signature(b"other-secret", raw)
    );
}

#[tokio::test]
async fn a_sink_that_fails_with_500_is_retried_until_it_succeeds() {
    let (url, stub) = stub_server(&[500, 503]).await;
    let (ok_url, ok_stub) = stub_server(&[]).await;
    let h = harness_with(test_settings(&[
        (settings::ENV_WEBHOOK_URL, &format!("{url}/hook")),
        (settings::ENV_SLACK_URL, &format!("{ok_url}/services/x")),
    ]));
    h.ok(&access("retry-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let bodies = stub.bodies();
    assert_eq!(bodies.len(), 3, "two failures, then success");
    assert!(bodies.iter().all(|b| b["insertId"] == "retry-1"));
    assert_eq!(ok_stub.bodies().len(), 1, "the healthy sink got it once");
    assert_eq!(h.bus.alerts().len(), 1);
}

#[tokio::test]
async fn a_dead_sink_gets_the_entry_redelivered_without_repaging_the_others() {
    let (url, stub) = stub_server(&[500, 500, 500]).await;
    let mut s = test_settings(&[(settings::ENV_WEBHOOK_URL, &format!("{url}/hook"))]);
    s.delivery.attempts = 3;
    let h = harness_with(s);
    let e = access("dead-1", HUMAN, WEBHOOK_SECRET_ID);
    let why = h.nacked(&e).await;
    assert!(why.contains("webhook"), "{why}");
    assert_eq!(stub.bodies().len(), 3, "bounded attempts");
    assert_eq!(h.bus.alerts().len(), 1, "pubsub got it");
    // Pub/Sub redelivers: the webhook now answers, pubsub is not paged twice.
    h.ok(&e).await;
    assert_eq!(stub.bodies().len(), 4);
    assert_eq!(h.bus.alerts().len(), 1, "not re-paged");
    // Once done, a redelivery is a duplicate.
    h.ok(&e).await;
    assert_eq!(stub.bodies().len(), 4);
}

#[tokio::test]
async fn a_sink_refusing_with_4xx_is_reported_once_and_does_not_block() {
    let (url, stub) = stub_server(&[404, 404, 404]).await;
    let h = harness_with(test_settings(&[(
        settings::ENV_SLACK_URL,
        &format!("{url}/services/revoked"),
    )]));
    h.ok(&access("broken-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    assert_eq!(stub.bodies().len(), 1, "a 4xx is not retried");
    h.ok(&access("broken-2", "eve@example.com", WEBHOOK_SECRET_ID))
        .await;
    // The next tick reports it on the other sinks, once.
    h.alerter.tick().await;
    h.alerter.tick().await;
    let rules = h.bus.rules();
    assert_eq!(
        rules.iter().filter(|r| **r == Rule::SinkBroken).count(),
        1,
        "{rules:?}"
    );
    let broken = h
        .bus
        .alerts()
        .into_iter()
        .find(|a| a.rule == Rule::SinkBroken)
        .unwrap();
    assert_eq!(broken.resource, "slack");
    assert!(
        !broken.summary.contains("revoked"),
        "never the URL: {}",
        broken.summary
    );
}
