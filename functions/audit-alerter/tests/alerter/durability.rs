//! Nothing lost (contract 6): a stand-in Slack that is down for a while and
//! then comes back gets the alert, exactly once, after it is back.

use crate::prelude::*;

/// A port with nothing listening (connection refused), and a way to start
/// a stand-in Slack on it later.
async fn reserved_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn slack_on(addr: SocketAddr) -> Arc<Mutex<Vec<Value>>> {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/{*path}",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    got
}

fn with_slack(addr: SocketAddr) -> Settings {
    let mut s = test_settings(&[(
        settings::ENV_SLACK_URL,
        &format!("http://{addr}/services/T0/B0/token"),
    )]);
    s.delivery.attempts = 2;
    s.delivery.ack_wait = Duration::from_secs(2);
    s
}

#[tokio::test]
async fn an_alert_survives_a_slack_outage_and_is_delivered_once_it_is_back() {
    let addr = reserved_port().await;
    let h = harness_with(with_slack(addr));
    let e = access("outage-1", HUMAN, WEBHOOK_SECRET_ID);
    // Slack is down: every delivery of the entry is answered 503, as
    // Pub/Sub would redeliver it (with backoff) for as long as it takes.
    for _ in 0..3 {
        let why = h.nacked(&e).await;
        assert!(why.contains("slack"), "{why}");
    }
    assert_eq!(h.bus.alerts().len(), 1, "patchpanda-alerts took it once");
    assert_eq!(h.alerter.pending(), 1);
    // Slack comes back: the next redelivery delivers and is acknowledged.
    let slack = slack_on(addr).await;
    h.ok(&e).await;
    let got = slack.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]["text"]
            .as_str()
            .unwrap()
            .contains("mallory@example.com")
    );
    assert_eq!(h.bus.alerts().len(), 1, "the bus is not paged again");
    assert_eq!(h.alerter.pending(), 0);
    // Pub/Sub may still redeliver once more: a duplicate, nothing re-sent.
    h.ok(&e).await;
    assert_eq!(slack.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn alerts_raised_by_a_tick_wait_for_the_sink_too() {
    let addr = reserved_port().await;
    let h = harness_with(with_slack(addr));
    h.clock.advance(TimeDelta::hours(7));
    let out = h.alerter.tick().await;
    assert_eq!(out[0].rule, Rule::DataAccessSilent);
    assert_eq!(h.alerter.pending(), 1, "kept until Slack takes it");
    let slack = slack_on(addr).await;
    h.alerter.tick().await;
    assert_eq!(slack.lock().unwrap().len(), 1);
    assert_eq!(h.alerter.pending(), 0);
    h.alerter.tick().await;
    assert_eq!(slack.lock().unwrap().len(), 1, "once");
}

#[tokio::test]
async fn a_redelivery_racing_the_first_delivery_does_not_page_twice() {
    let got: Arc<Mutex<usize>> = Arc::default();
    let count = got.clone();
    let app = Router::new().route(
        "/{*path}",
        post(move || {
            let count = count.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                *count.lock().unwrap() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    let h = harness_with(with_slack(addr));
    let e = access("race-1", HUMAN, WEBHOOK_SECRET_ID);
    let (a, b) = tokio::join!(h.entry(&e), h.entry(&e));
    let statuses = [a.is_ok(), b.is_ok()];
    assert!(
        statuses.contains(&true),
        "one of them delivered: {a:?} {b:?}"
    );
    assert_eq!(*got.lock().unwrap(), 1, "Slack paged once");
    h.ok(&e).await;
    assert_eq!(*got.lock().unwrap(), 1);
    assert_eq!(h.bus.alerts().len(), 1);
}
