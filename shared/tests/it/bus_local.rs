//! The local bus end to end: publish, push to a real HTTP endpoint on
//! 127.0.0.1 that verifies the OIDC token, retries, dead-letters, ordering,
//! restarts and a second publishing process.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::auth::{PushVerifier, StaticKeys, VerifierSettings};
use patchpanda_shared::bus::local::{Dispatcher, LocalBus, Subscription};
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::local::Home;
use patchpanda_shared::names;
use patchpanda_shared::runtime::decode;
use patchpanda_shared::runtime::events::{PushFormat, PushMessage};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const TOPIC: &str = "patchpanda-test-events";
const SUB: &str = "test-push";
/// Only a guard against a hung test; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(10);

/// One request the endpoint received, with what it answered.
#[derive(Debug, Clone)]
struct Received {
    body: Value,
    /// What the functions' runtime makes of the same request.
    decoded: Option<PushMessage>,
    email: String,
    status: u16,
}

impl Received {
    fn message_id(&self) -> String {
        self.body["message"]["messageId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn attempt(&self) -> u64 {
        self.body["deliveryAttempt"].as_u64().unwrap()
    }

    fn data(&self) -> Vec<u8> {
        STANDARD
            .decode(self.body["message"]["data"].as_str().unwrap())
            .unwrap()
    }
}

/// How the endpoint answers: given the envelope and how many requests it
/// has seen before this one, a status, or None to never answer.
type Respond = Arc<dyn Fn(&Value, usize) -> Option<u16> + Send + Sync>;

#[derive(Clone)]
struct EndpointState {
    /// Accepts tokens of the local issuer for one audience, from the push
    /// account only.
    verifier: Arc<PushVerifier>,
    respond: Respond,
    seen: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Received>,
}

struct Endpoint {
    url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    server: JoinHandle<()>,
}

impl Endpoint {
    /// An endpoint that accepts tokens minted for its own URL.
    async fn start(
        issuer: Arc<LocalIssuer>,
        respond: impl Fn(&Value, usize) -> Option<u16> + Send + Sync + 'static,
    ) -> Endpoint {
        Self::start_for(issuer, None, respond).await
    }

    async fn start_for(
        issuer: Arc<LocalIssuer>,
        audience: Option<&str>,
        respond: impl Fn(&Value, usize) -> Option<u16> + Send + Sync + 'static,
    ) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events/test", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = StaticKeys::from_jwks(&issuer.jwks()).unwrap();
        let settings = VerifierSettings::local(
            Some(audience.unwrap_or(&url).to_string()),
            vec![names::PRINCIPAL_PUSH.to_string()],
        );
        let state = EndpointState {
            verifier: Arc::new(PushVerifier::new(Arc::new(keys), settings)),
            respond: Arc::new(respond),
            seen: Arc::new(AtomicUsize::new(0)),
            tx,
        };
        let app = Router::new()
            .route("/events/test", post(handle))
            .with_state(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Endpoint { url, rx, server }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("the endpoint got no push in time")
            .unwrap()
    }

    async fn take(&mut self, n: usize) -> Vec<Received> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            got.push(self.next().await);
        }
        got
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(state): State<EndpointState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // The functions' own verifier, fed the local issuer's published keys.
    let claims = match state.verifier.verify(&headers, "/events/test").await {
        Ok(caller) => caller,
        Err(_) => return StatusCode::UNAUTHORIZED,
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/json" {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    let decoded = decode::push_message(&headers, &body).ok();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let n = state.seen.fetch_add(1, AtomicOrdering::SeqCst);
    let answer = (state.respond)(&body, n);
    let status = answer.unwrap_or(0);
    let _ = state.tx.send(Received {
        body,
        decoded,
        email: claims.email,
        status,
    });
    match answer {
        Some(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        None => std::future::pending().await,
    }
}

struct Stack {
    _dir: tempfile::TempDir,
    home: Home,
    issuer: Arc<LocalIssuer>,
    bus: Arc<LocalBus>,
}

fn stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path()).unwrap();
    let issuer = Arc::new(LocalIssuer::open_or_create(home.path()).unwrap());
    let bus = Arc::new(LocalBus::open(&home).unwrap());
    Stack {
        _dir: dir,
        home,
        issuer,
        bus,
    }
}

fn fast(d: Dispatcher) -> Dispatcher {
    d.backoff(Duration::from_millis(1), Duration::from_millis(5))
        .poll_interval(Duration::from_millis(20))
}

/// A dispatcher running in the background until the returned sender fires.
fn spawn_run(d: Dispatcher) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(d.run(async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

async fn stop(stopper: (oneshot::Sender<()>, JoinHandle<()>)) {
    let _ = stopper.0.send(());
    stopper.1.await.unwrap();
}

#[tokio::test]
async fn pushes_a_real_signed_envelope_and_lists_history() {
    let s = stack();
    let mut ep = Endpoint::start(s.issuer.clone(), |_, _| Some(204)).await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    let id = s
        .bus
        .publish(
            TOPIC,
            Message::new(&b"{\"hello\":1}"[..])
                .attribute("eventType", "TEST")
                .attribute("k", "v"),
        )
        .await
        .unwrap();
    assert!(id.chars().all(|c| c.is_ascii_digit()), "{id}");
    assert_eq!(s.bus.pending(SUB).unwrap(), 1);

    let d = Dispatcher::new(s.bus.clone(), s.issuer.clone());
    assert_eq!(d.run_once().await.unwrap(), 1);
    let got = ep.next().await;
    assert_eq!(got.status, 204);
    assert_eq!(got.email, names::PRINCIPAL_PUSH);
    let m = &got.body["message"];
    assert_eq!(got.data(), b"{\"hello\":1}");
    assert_eq!(m["attributes"]["eventType"], "TEST");
    assert_eq!(m["attributes"]["k"], "v");
    assert_eq!(m["messageId"], id.as_str());
    assert_eq!(m["message_id"], id.as_str());
    let published = m["publishTime"].as_str().unwrap();
    assert_eq!(m["publish_time"], published);
    chrono::DateTime::parse_from_rfc3339(published).unwrap();
    assert!(m.get("orderingKey").is_none());
    assert_eq!(
        got.body["subscription"],
        format!("projects/local/subscriptions/{SUB}")
    );
    assert_eq!(got.attempt(), 1);
    // The functions' runtime reads it as a wrapped push, field for field.
    let decoded = got
        .decoded
        .as_ref()
        .expect("the runtime decodes the envelope");
    assert_eq!(decoded.format, PushFormat::Wrapped);
    assert_eq!(decoded.message_id, id);
    assert_eq!(&decoded.data[..], b"{\"hello\":1}");
    assert_eq!(decoded.attributes["eventType"], "TEST");
    assert_eq!(decoded.delivery_attempt, Some(1));
    assert_eq!(
        decoded.publish_time,
        Some(s.bus.messages(TOPIC).unwrap()[0].publish_time)
    );
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
    assert_eq!(d.run_once().await.unwrap(), 0);

    // Delivered or not, the topic keeps its history, oldest first.
    let id2 = s
        .bus
        .publish(TOPIC, Message::default().attribute("only", "attrs"))
        .await
        .unwrap();
    let history = s.bus.messages(TOPIC).unwrap();
    let ids: Vec<_> = history.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec![id, id2]);
    assert_eq!(history[0].attributes["k"], "v");
    assert_eq!(history[1].data, b"");
    assert_eq!(
        s.bus.subscriptions().unwrap(),
        vec![Subscription::new(SUB, TOPIC, &ep.url)]
    );
}

#[tokio::test]
async fn a_custom_audience_is_what_the_token_names() {
    const AUD: &str = "https://push.patchpanda.local/audit";
    let s = stack();
    // The endpoint accepts only tokens for AUD; others get 401 unrecorded.
    let mut ep = Endpoint::start_for(s.issuer.clone(), Some(AUD), |_, _| Some(204)).await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url).audience(AUD))
        .unwrap();
    s.bus.publish(TOPIC, Message::new("x")).await.unwrap();
    let d = Dispatcher::new(s.bus.clone(), s.issuer.clone());
    d.run_once().await.unwrap();
    assert_eq!(ep.next().await.status, 204);
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);

    // Without the audience the token names the endpoint URL: rejected,
    // so still pending for a retry.
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    s.bus.publish(TOPIC, Message::new("y")).await.unwrap();
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert!(ep.rx.try_recv().is_err());
    assert_eq!(s.bus.pending(SUB).unwrap(), 1);
}

#[tokio::test]
async fn a_nack_is_redelivered_with_the_next_attempt_number() {
    let s = stack();
    let mut ep = Endpoint::start(s.issuer.clone(), |_, n| {
        Some(if n == 0 { 503 } else { 200 })
    })
    .await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    let id = s
        .bus
        .publish(TOPIC, Message::new("retry me"))
        .await
        .unwrap();
    let running = spawn_run(fast(Dispatcher::new(s.bus.clone(), s.issuer.clone())));
    let got = ep.take(2).await;
    stop(running).await;
    assert_eq!((got[0].status, got[0].attempt()), (503, 1));
    assert_eq!((got[1].status, got[1].attempt()), (200, 2));
    assert_eq!(got[0].message_id(), id);
    assert_eq!(got[1].message_id(), id);
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
    assert!(s.bus.dead_letters(SUB).unwrap().is_empty());
    assert!(ep.rx.try_recv().is_err());
}

#[tokio::test]
async fn an_always_failing_endpoint_dead_letters_after_exactly_five_attempts() {
    let s = stack();
    let mut ep = Endpoint::start(s.issuer.clone(), |_, _| Some(500)).await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    let id = s
        .bus
        .publish(TOPIC, Message::new("poison").attribute("a", "b"))
        .await
        .unwrap();
    let d =
        Dispatcher::new(s.bus.clone(), s.issuer.clone()).backoff(Duration::ZERO, Duration::ZERO);
    // Zero backoff: every retry is due at once, so one call runs them all.
    assert_eq!(d.run_once().await.unwrap(), 5);
    let got = ep.take(5).await;
    let attempts: Vec<_> = got.iter().map(Received::attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4, 5]);
    assert!(ep.rx.try_recv().is_err());
    assert_eq!(d.run_once().await.unwrap(), 0);

    let dead = s.bus.dead_letters(SUB).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
    let copies = s.bus.messages(&format!("{TOPIC}-dead-letter")).unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].data, b"poison");
    assert_eq!(copies[0].attributes["a"], "b");
    assert_eq!(
        copies[0].attributes["CloudPubSubDeadLetterSourceSubscription"],
        SUB
    );
}

#[tokio::test]
async fn an_ordering_key_holds_later_messages_until_earlier_ones_are_acked() {
    let s = stack();
    let failed_once = Arc::new(Mutex::new(None::<String>));
    let mut ep = Endpoint::start(s.issuer.clone(), move |body, _| {
        let data = body["message"]["data"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut failed = failed_once.lock().unwrap();
        if data == STANDARD.encode("k1") && failed.is_none() {
            *failed = Some(data);
            return Some(503);
        }
        Some(204)
    })
    .await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    s.bus
        .publish(TOPIC, Message::new("k1").ordering_key("K"))
        .await
        .unwrap();
    s.bus
        .publish(TOPIC, Message::new("k2").ordering_key("K"))
        .await
        .unwrap();
    s.bus.publish(TOPIC, Message::new("free")).await.unwrap();
    let running = spawn_run(fast(Dispatcher::new(s.bus.clone(), s.issuer.clone())));
    let got = ep.take(4).await;
    stop(running).await;

    let order: Vec<(Vec<u8>, u16)> = got.iter().map(|r| (r.data(), r.status)).collect();
    let pos = |data: &[u8], status: u16| {
        order
            .iter()
            .position(|(d, s)| d == data && *s == status)
            .unwrap_or_else(|| panic!("{order:?}"))
    };
    assert!(pos(b"k1", 503) < pos(b"k1", 204), "{order:?}");
    assert!(pos(b"k1", 204) < pos(b"k2", 204), "{order:?}");
    pos(b"free", 204);
    let k2 = got.iter().find(|r| r.data() == b"k2").unwrap();
    assert_eq!(k2.body["message"]["orderingKey"], "K");
    let decoded = k2.decoded.as_ref().unwrap();
    assert_eq!(decoded.ordering_key.as_deref(), Some("K"));
    assert_eq!(k2.attempt(), 1);
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
}

#[tokio::test]
async fn pushes_in_flight_at_a_crash_are_delivered_after_restart() {
    const N: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let issuer = Arc::new(LocalIssuer::open_or_create(dir.path()).unwrap());
    let ack_deadline = Duration::from_millis(300);
    let mut ids = Vec::new();
    {
        let home = Home::open(dir.path()).unwrap();
        let bus = Arc::new(LocalBus::open(&home).unwrap());
        // An endpoint that takes the pushes and never answers.
        let mut hung = Endpoint::start(issuer.clone(), |_, _| None).await;
        bus.subscribe(Subscription::new(SUB, TOPIC, &hung.url))
            .unwrap();
        for i in 0..N {
            ids.push(
                bus.publish(TOPIC, Message::new(format!("m{i}")))
                    .await
                    .unwrap(),
            );
        }
        // The process "dies" while all N pushes are in flight: the run
        // future is dropped, so nothing gives the leases back.
        let d = fast(Dispatcher::new(bus.clone(), issuer.clone())).ack_deadline(ack_deadline);
        let run = d.run(std::future::pending::<()>());
        tokio::select! {
            _ = run => unreachable!("run never ends without shutdown"),
            got = hung.take(N) => assert_eq!(got.len(), N),
        }
        assert_eq!(bus.pending(SUB).unwrap(), N);
    }

    let home = Home::open(dir.path()).unwrap();
    let bus = Arc::new(LocalBus::open(&home).unwrap());
    assert_eq!(bus.pending(SUB).unwrap(), N);
    let mut ep = Endpoint::start(issuer.clone(), |_, _| Some(204)).await;
    // The restarted stack comes up on a new port.
    bus.subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    let running =
        spawn_run(fast(Dispatcher::new(bus.clone(), issuer.clone())).ack_deadline(ack_deadline));
    let got = ep.take(N).await;
    stop(running).await;
    let mut delivered: Vec<_> = got.iter().map(Received::message_id).collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected);
    // The lost attempt counts, as an expired ack deadline does in Pub/Sub.
    assert!(got.iter().all(|r| r.attempt() == 2), "{got:?}");
    assert_eq!(bus.pending(SUB).unwrap(), 0);
}

#[tokio::test]
async fn a_stopped_dispatcher_leaves_undelivered_messages_for_the_next_start() {
    const N: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let issuer = Arc::new(LocalIssuer::open_or_create(dir.path()).unwrap());
    // A port with nothing listening: pushes fail fast (endpoint down).
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/events/test", l.local_addr().unwrap())
    };
    {
        let home = Home::open(dir.path()).unwrap();
        let bus = Arc::new(LocalBus::open(&home).unwrap());
        bus.subscribe(Subscription::new(SUB, TOPIC, &down)).unwrap();
        for i in 0..N {
            bus.publish(TOPIC, Message::new(format!("m{i}")))
                .await
                .unwrap();
        }
        let d = Dispatcher::new(bus.clone(), issuer.clone());
        assert_eq!(d.run_once().await.unwrap(), N);
        assert_eq!(bus.pending(SUB).unwrap(), N);
    }
    let home = Home::open(dir.path()).unwrap();
    let bus = Arc::new(LocalBus::open(&home).unwrap());
    let mut ep = Endpoint::start(issuer.clone(), |_, _| Some(204)).await;
    bus.subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    let running = spawn_run(fast(Dispatcher::new(bus.clone(), issuer.clone())));
    let got = ep.take(N).await;
    stop(running).await;
    let mut data: Vec<_> = got.iter().map(Received::data).collect();
    data.sort();
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(data, expected);
    assert_eq!(bus.pending(SUB).unwrap(), 0);
    assert_eq!(bus.messages(TOPIC).unwrap().len(), N);
}

#[tokio::test]
async fn a_second_bus_on_the_same_home_wakes_the_dispatcher() {
    let s = stack();
    let mut ep = Endpoint::start(s.issuer.clone(), |_, _| Some(204)).await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    // Polling is effectively off: only the in-process wake-up can deliver.
    let d = fast(Dispatcher::new(s.bus.clone(), s.issuer.clone()))
        .poll_interval(Duration::from_secs(3600));
    let running = spawn_run(d);
    // As the dev stack's functions do: their own bus on the same home.
    let other = LocalBus::open(&s.home).unwrap();
    let id = other
        .publish(TOPIC, Message::new("from a function"))
        .await
        .unwrap();
    let got = ep.next().await;
    stop(running).await;
    assert_eq!(got.message_id(), id);
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
}

fn cli_body() -> Vec<u8> {
    let mut body = b"from the cli ".to_vec();
    body.resize(8192, b'!');
    body
}

/// Set for the child process of `a_publish_from_another_process_is_picked_up`.
const CHILD_HOME_ENV: &str = "PATCHPANDA_TEST_BUS_CHILD_HOME";

/// Not a test on its own: the second process (like the CLI publishing while
/// `patchpanda dev` runs), started by the test below.
#[tokio::test]
#[ignore = "run as a child process by a_publish_from_another_process_is_picked_up"]
async fn child_process_publisher() {
    let Ok(home) = std::env::var(CHILD_HOME_ENV) else {
        return;
    };
    let home = Home::open(std::path::Path::new(&home)).unwrap();
    let bus = LocalBus::open(&home).unwrap();
    let id = bus.publish(TOPIC, Message::new(cli_body())).await.unwrap();
    println!("published-id={id};");
}

#[tokio::test]
async fn a_publish_from_another_process_is_picked_up() {
    let s = stack();
    let mut ep = Endpoint::start(s.issuer.clone(), |_, _| Some(204)).await;
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, &ep.url))
        .unwrap();
    let running = spawn_run(fast(Dispatcher::new(s.bus.clone(), s.issuer.clone())));
    let home = s.home.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "bus_local::child_process_publisher",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_HOME_ENV, home)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let id = stdout
        .split("published-id=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("the child did not publish: {stdout}"))
        .to_string();
    let got = ep.next().await;
    stop(running).await;
    assert_eq!(got.message_id(), id);
    // Large enough for the child's own segment: read across processes.
    assert_eq!(got.data(), cli_body());
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
}

#[tokio::test]
async fn pruning_drops_old_messages_and_their_deliveries() {
    let s = stack();
    s.bus
        .subscribe(Subscription::new(SUB, TOPIC, "http://127.0.0.1:9/x"))
        .unwrap();
    s.bus.publish(TOPIC, Message::new("a")).await.unwrap();
    s.bus.publish(TOPIC, Message::new("b")).await.unwrap();
    assert_eq!(
        s.bus
            .prune_older_than(chrono::Utc::now() - chrono::Duration::days(7))
            .unwrap(),
        0
    );
    assert_eq!(s.bus.messages(TOPIC).unwrap().len(), 2);
    let pruned = s
        .bus
        .prune_older_than(chrono::Utc::now() + chrono::Duration::seconds(1))
        .unwrap();
    assert_eq!(pruned, 2);
    assert!(s.bus.messages(TOPIC).unwrap().is_empty());
    assert_eq!(s.bus.pending(SUB).unwrap(), 0);
    // Ids keep increasing after a prune (never reused).
    let next: u64 = s
        .bus
        .publish(TOPIC, Message::new("c"))
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(next > 2);
}
