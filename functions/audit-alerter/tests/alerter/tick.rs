//! `POST /tasks/tick` (contract 5): everything the background ticker did,
//! so correctness on Cloud Run does not depend on it.

use crate::prelude::*;
use patchpanda_shared::runtime::SchedulerJob;

async fn tick_route(h: &Harness, body: &'static str) -> Result<Reply, HandlerError> {
    let job = SchedulerJob {
        job_name: Some(
            "projects/my-proj/locations/us-central1/jobs/patchpanda-alerter-tick".into(),
        ),
        schedule_time: Some("2025-11-16T10:05:00Z".into()),
        headers: HeaderMap::new(),
        body: Bytes::from_static(body.as_bytes()),
    };
    handlers::tick(h.alerter.clone())
        .oneshot(Invocation::new(job, Context::for_test("audit-alerter")))
        .await
}

#[tokio::test]
async fn the_tick_route_releases_holds_summarises_and_checks_the_silence() {
    let h = harness();
    h.nacked(&version_change(
        "t-held",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    ))
    .await;
    h.clock.advance(TimeDelta::hours(7));
    let r = tick_route(&h, "").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["raised"], 2, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    let mut rules = h.bus.rules();
    rules.sort();
    assert_eq!(
        rules,
        vec![Rule::RotatorOutsideRotation, Rule::DataAccessSilent]
    );
    // A body it does not know is a 400, not a silent success.
    let err = tick_route(&h, r#"{"surprise":1}"#).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_app_builds_with_the_tick_route() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([("PATCHPANDA_HOME", dir.path().to_str().unwrap())]);
    let config = Config::from_env(&env, names::PRINCIPAL_AUDIT_ALERTER).unwrap();
    let h = harness();
    let app = h
        .alerter
        .app(&config, h.bus.clone())
        .expect("three routes, one each");
    assert_eq!(app.service(), audit_alerter::SERVICE);
}
