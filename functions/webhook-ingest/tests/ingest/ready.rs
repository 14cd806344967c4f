//! `GET /ready` is public: a cached verdict, and a body that names nothing.

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;

use super::support::*;

async fn probe(router: &axum::Router) -> (StatusCode, String) {
    let resp = router
        .clone()
        .oneshot(Request::get("/ready").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(start_paused = true)]
async fn ready_answers_from_a_short_lived_cache_with_a_generic_body() {
    let h = Harness::new(&[SECRET], &[]);
    let router = h.router();
    let checks = || h.bus.calls(Call::Check);

    for _ in 0..50 {
        assert_eq!(probe(&router).await.0, StatusCode::OK);
    }
    assert_eq!(checks(), 1, "fifty probes, one bus check");

    // The bus fails: the good verdict stands for its few seconds, then the
    // probe says not ready, without saying what.
    bus_down(&h.bus);
    assert_eq!(probe(&router).await.0, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(6)).await;
    let (status, body) = probe(&router).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: a dependency is unavailable\n");
    for word in ["bus", "topic", "secret", "patchpanda", "test"] {
        assert!(!body.contains(word), "{word} in {body:?}");
    }
    for _ in 0..20 {
        assert_eq!(probe(&router).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(checks(), 2);

    // Recovery shows within the short failure interval.
    h.bus.heal();
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(probe(&router).await.0, StatusCode::OK);
    assert_eq!(checks(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_secret_that_cannot_be_loaded_is_not_named_either() {
    let h = Harness::new(&[], &[]);
    let (status, body) = probe(&h.router()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains("webhook"), "{body}");
}
