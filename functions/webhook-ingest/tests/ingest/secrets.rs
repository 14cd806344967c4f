//! The webhook secret's versions: rotation notices, the mismatch re-read,
//! and `previous` during its grace only.

use std::collections::BTreeMap;

use chrono::{Duration as ChronoDuration, Utc};
use http::StatusCode;
use webhook_ingest::message::*;

use super::support::*;

#[tokio::test]
async fn a_rotation_notice_reloads_the_secret_at_once() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    h.webhook(signed("push", "d-1", &body, SECRET))
        .await
        .unwrap();

    // Rotated behind the instance's back: the cache still holds v1, but a
    // mismatch re-reads the secret once, since the notice may be late.
    let grace = (Utc::now() + ChronoDuration::hours(1)).to_rfc3339();
    h.store
        .rotate(WEBHOOK_ID, "second-webhook-secret", Some(&grace));
    let reply = h
        .webhook(signed("push", "d-2", &body, "second-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let (_, m) = h.bus.published().pop().unwrap();
    assert_eq!(m.attributes[ATTR_SECRET_VERSION], "2");

    // Rotated again right away: mismatch re-reads are rate-limited, so it is
    // the notice that makes the third secret valid at once.
    h.store
        .rotate(WEBHOOK_ID, "third-webhook-secret", Some(&grace));
    let reply = h.rotation_notice("webhook-secret").await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = h
        .webhook(signed("push", "d-3", &body, "third-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let (_, m) = h.bus.published().pop().unwrap();
    assert_eq!(m.attributes[ATTR_SECRET_VERSION], "3");
    // A forged signature is still refused after the re-read.
    assert_status(
        h.webhook(signed("push", "d-4", &body, "not-the-secret"))
            .await,
        StatusCode::UNAUTHORIZED,
    );

    // A notice about someone else's secret changes nothing and is acked.
    let reply = h.rotation_notice("oidc-client-secret").await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // One that is not a notice at all is refused.
    let err = h
        .push_raw(b"not a notice", BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn previous_secret_is_accepted_during_grace_only() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    let grace = (Utc::now() + ChronoDuration::hours(1)).to_rfc3339();
    h.store
        .rotate(WEBHOOK_ID, "second-webhook-secret", Some(&grace));
    h.rotation_notice("webhook-secret").await.unwrap();

    // GitHub may still sign with the old secret for a while.
    let reply = h
        .webhook(signed("push", "old-1", &body, SECRET))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        h.bus.published().pop().unwrap().1.attributes[ATTR_SECRET_VERSION],
        "1"
    );
    let reply = h
        .webhook(signed("push", "new-1", &body, "second-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        h.bus.published().pop().unwrap().1.attributes[ATTR_SECRET_VERSION],
        "2"
    );

    // The grace is over: the old secret no longer opens the door.
    let ended = (Utc::now() - ChronoDuration::seconds(1)).to_rfc3339();
    h.store.annotate(WEBHOOK_ID, Some(&ended));
    h.rotation_notice("webhook-secret").await.unwrap();
    assert_status(
        h.webhook(signed("push", "old-2", &body, SECRET)).await,
        StatusCode::UNAUTHORIZED,
    );
    // Emergency rotation: no annotation, no grace.
    h.store.annotate(WEBHOOK_ID, None);
    h.rotation_notice("webhook-secret").await.unwrap();
    assert_status(
        h.webhook(signed("push", "old-3", &body, SECRET)).await,
        StatusCode::UNAUTHORIZED,
    );
    let reply = h
        .webhook(signed("push", "new-2", &body, "second-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}
