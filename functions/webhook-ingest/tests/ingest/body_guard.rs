//! The body guard on `POST /webhook`, through the HTTP router: the byte
//! budget for unverified bodies and the body-read deadline.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, StatusCode, header};
use tower::ServiceExt;
use webhook_ingest::settings::{ENV_BODY_BUDGET, ENV_SMALL_BODY};

use super::support::*;

const MIB: usize = 1024 * 1024;

/// `req` as the router receives it, with its Content-Length.
pub fn http(req: patchpanda_shared::runtime::HttpRequest) -> Request<Body> {
    let mut r = Request::post("/webhook");
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    r.header(header::CONTENT_LENGTH, req.body.len())
        .body(Body::from(req.body))
        .unwrap()
}

/// A made-up delivery whose body is `body`; `declared` as its length, or
/// chunked without one.
fn forged(delivery: &str, declared: Option<usize>, body: Body) -> Request<Body> {
    let mut r = Request::post("/webhook")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)));
    if let Some(n) = declared {
        r = r.header(header::CONTENT_LENGTH, n);
    }
    r.body(body).unwrap()
}

/// `first`, then whatever `rest` sends (the body stays open until then).
fn held_body(first: Bytes, rest: tokio::sync::oneshot::Receiver<Bytes>) -> Body {
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(first) });
    let rest = futures::stream::once(async move {
        rest.await
            .map_err(|_| std::io::Error::other("the test dropped the body"))
    });
    Body::from_stream(first.chain(rest))
}

/// `total` bytes of `fill` in `chunk`-sized pieces, `pause` apart.
fn paced_body(data: Bytes, chunk: usize, pause: Duration) -> Body {
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(chunk)
        .map(|i| data.slice(i..(i + chunk).min(data.len())))
        .collect();
    Body::from_stream(futures::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(pause).await;
        Ok::<_, std::io::Error>(p)
    }))
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn past_the_budget_large_bodies_get_a_quick_503_while_small_deliveries_flow() {
    // 29 MiB: large bodies may use 25 MiB, the last 4 MiB are for small
    // bodies (64 x 64 KiB).
    let h = Harness::new(
        &[SECRET],
        &[(ENV_BODY_BUDGET, "29MiB"), (ENV_SMALL_BODY, "64KiB")],
    );
    let router = h.router();

    // A forged 20 MiB body, all sent but its last byte: it holds 20 MiB.
    let (release, rest) = tokio::sync::oneshot::channel();
    let held = tokio::spawn(router.clone().oneshot(forged(
        "held",
        Some(20 * MIB),
        held_body(Bytes::from(vec![b' '; 20 * MIB - 1]), rest),
    )));
    wait_until("the held body is reserved", || {
        h.wi.budget.used() == 20 * MIB
    })
    .await;

    // Another large body with a declared length: refused before it is read.
    let resp = router
        .clone()
        .oneshot(forged(
            "big-declared",
            Some(6 * MIB),
            Body::from(vec![b' '; 6 * MIB]),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "10");
    assert_eq!(resp.headers()[header::CONNECTION], "close");
    assert_eq!(h.wi.budget.used(), 20 * MIB, "nothing of it was reserved");

    // A chunked one is read until it outgrows what is left for large bodies.
    let resp = router
        .clone()
        .oneshot(forged(
            "big-chunked",
            None,
            paced_body(Bytes::from(vec![b' '; 6 * MIB]), 64 * 1024, Duration::ZERO),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.wi.budget.used(), 20 * MIB, "its bytes were given back");

    // Ordinary deliveries still flow, declared or chunked.
    let body = fixture("push.json");
    let resp = router
        .clone()
        .oneshot(http(signed("push", "small-1", &body, SECRET)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut chunked = http(signed("push", "small-2", &body, SECRET));
    chunked.headers_mut().remove(header::CONTENT_LENGTH);
    assert_eq!(
        router.clone().oneshot(chunked).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(h.bus.inner().messages().len(), 2);

    // The held body ends: forged, so 401, and its 20 MiB are given back.
    release.send(Bytes::from_static(b" ")).unwrap();
    let resp = held.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.wi.budget.used(), 0);

    // A large valid delivery fits again.
    let big = format!(r#"{{"ref":"x","pad":"{}"}}"#, "a".repeat(6 * MIB));
    let resp = router
        .clone()
        .oneshot(http(signed("push", "big-valid", big.as_bytes(), SECRET)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(h.bus.inner().messages().len(), 3);
    assert_eq!(h.wi.budget.used(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_read_deadline_is_cut_off_and_a_normal_one_is_not() {
    let h = Harness::new(&[SECRET], &[]);
    let router = h.router();

    // One byte every 100 ms: the 1000 bytes would take 100 s.
    let started = tokio::time::Instant::now();
    let resp = router
        .clone()
        .oneshot(forged(
            "slow",
            Some(1000),
            paced_body(Bytes::from(vec![b' '; 1000]), 1, Duration::from_millis(100)),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(resp.headers()[header::CONNECTION], "close");
    // Tokio's clock is paused: this is the deadline, not a measured speed.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "cut off at the 10 s deadline, not the request timeout: {waited:?}"
    );
    assert_eq!(h.wi.budget.used(), 0);

    // 200 KiB in 8 KiB pieces 10 ms apart: a quarter second, accepted.
    let payload = format!(r#"{{"ref":"x","pad":"{}"}}"#, "b".repeat(200 * 1024));
    let mut req = http(signed("push", "paced", payload.as_bytes(), SECRET));
    *req.body_mut() = paced_body(Bytes::from(payload), 8 * 1024, Duration::from_millis(10));
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(h.bus.inner().messages().len(), 1);
}

/// A caller that gives up mid-body (the connection drops, so the request
/// future is dropped) or whose body breaks gives every reserved byte back,
/// and changes nothing else.
#[tokio::test]
async fn a_dropped_or_broken_body_gives_its_reservation_back() {
    let h = Harness::new(&[SECRET], &[]);
    let router = h.router();
    // Declared 20 MiB, 1 MiB sent, then the caller disappears.
    let (_release, rest) = tokio::sync::oneshot::channel::<Bytes>();
    let task = tokio::spawn(router.clone().oneshot(forged(
        "dropped",
        Some(20 * MIB),
        held_body(Bytes::from(vec![b' '; MIB]), rest),
    )));
    wait_until("the body is reserved", || h.wi.budget.used() == 20 * MIB).await;
    task.abort();
    wait_until("the reservation is given back", || h.wi.budget.used() == 0).await;
    // A chunked body whose stream fails midway: 400, nothing held.
    let (release, rest) = tokio::sync::oneshot::channel::<Bytes>();
    drop(release);
    let resp = router
        .clone()
        .oneshot(forged(
            "broken",
            None,
            held_body(Bytes::from(vec![b' '; 2 * MIB]), rest),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.wi.budget.used(), 0);
    assert!(h.bus.inner().messages().is_empty(), "nothing published");
}
