//! The webhook secret's versions: rotation notices, the mismatch re-read,
//! the metadata check, and `previous` during its grace only.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use http::StatusCode;
use patchpanda_shared::notice::NoticeEvent;
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
    let (_, m) = h.bus.inner().messages().pop().unwrap();
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
    let (_, m) = h.bus.inner().messages().pop().unwrap();
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
        h.bus.inner().messages().pop().unwrap().1.attributes[ATTR_SECRET_VERSION],
        "1"
    );
    let reply = h
        .webhook(signed("push", "new-1", &body, "second-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        h.bus.inner().messages().pop().unwrap().1.attributes[ATTR_SECRET_VERSION],
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

fn forged(delivery: &str) -> patchpanda_shared::runtime::HttpRequest {
    signed("push", delivery, &fixture("push.json"), "not-the-secret")
}

#[tokio::test(start_paused = true)]
async fn forged_signatures_re_read_the_secret_at_most_once_a_minute_outside_a_rotation() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    h.webhook(signed("push", "ok-1", &body, SECRET))
        .await
        .unwrap();
    let reads = || h.store.calls(Call::Access);
    let loaded = reads();

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_status(h.webhook(forged("f-0")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reads(),
        loaded + 1,
        "the first mismatch re-reads: a notice may be late"
    );
    // A forged signature every 2 s for the next minute: no more reads.
    for i in 1..30 {
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_status(
            h.webhook(forged(&format!("f-{i}"))).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    assert_eq!(reads(), loaded + 1, "at most one re-read a minute");
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_status(h.webhook(forged("f-late")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(reads(), loaded + 2, "a minute later, one more");
    assert!(h.bus.inner().messages().len() == 1);
}

#[tokio::test(start_paused = true)]
async fn during_an_announced_rotation_a_mismatch_may_re_read_every_second() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    h.webhook(signed("push", "ok-1", &body, SECRET))
        .await
        .unwrap();
    let reads = || h.store.calls(Call::Access);

    // A `started` notice announces a rotation.
    h.notice("webhook-secret", NoticeEvent::Started)
        .await
        .unwrap();
    for i in 0..3 {
        let before = reads();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_status(
            h.webhook(forged(&format!("a-{i}"))).await,
            StatusCode::UNAUTHORIZED,
        );
        assert!(reads() > before, "announced: each mismatch may re-read");
    }
    // Its end: back to once a minute.
    h.notice("webhook-secret", NoticeEvent::Rotated)
        .await
        .unwrap();
    let before = reads();
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_status(h.webhook(forged("e-1")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(reads(), before, "the rotation ended: no re-read");

    // A `pending` version, seen by the metadata check, announces one too.
    h.store.begin_rotation(WEBHOOK_ID, "next-webhook-secret");
    tokio::time::advance(Duration::from_secs(11)).await;
    h.webhook(signed("push", "ok-2", &body, SECRET))
        .await
        .unwrap();
    let before = reads();
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_status(h.webhook(forged("p-1")).await, StatusCode::UNAUTHORIZED);
    assert!(reads() > before, "pending alias: the mismatch re-reads");
    // And GitHub may sign with the pending secret already.
    let reply = h
        .webhook(signed("push", "next-1", &body, "next-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

#[tokio::test(start_paused = true)]
async fn a_metadata_check_per_interval_catches_an_emergency_rotation() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    h.webhook(signed("push", "ok-0", &body, SECRET))
        .await
        .unwrap();
    let checks = || h.store.calls(Call::GetSecret);
    let accesses = || h.store.calls(Call::Access);
    let (c0, a0) = (checks(), accesses());

    // Within the 10 s interval of the read: no check at all.
    tokio::time::advance(Duration::from_secs(5)).await;
    let burst = (0..20).map(|i| h.webhook(signed("push", &format!("b-{i}"), &body, SECRET)));
    futures::future::join_all(burst).await;
    assert_eq!(checks(), c0);
    // Past it: one metadata read for a burst of deliveries, no payload read.
    tokio::time::advance(Duration::from_secs(6)).await;
    let burst = (0..20).map(|i| h.webhook(signed("push", &format!("c-{i}"), &body, SECRET)));
    for r in futures::future::join_all(burst).await {
        assert_eq!(r.unwrap().status, StatusCode::ACCEPTED);
    }
    assert_eq!(checks(), c0 + 1, "one GetSecret for the burst");
    assert_eq!(accesses(), a0, "unchanged: no AccessSecretVersion");

    // An emergency rotation behind this instance's back (its notice went
    // to another instance): no grace for the old secret.
    h.store.rotate(WEBHOOK_ID, "second-webhook-secret", None);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_status(
        h.webhook(signed("push", "old", &body, SECRET)).await,
        StatusCode::UNAUTHORIZED,
    );
    let reply = h
        .webhook(signed("push", "new", &body, "second-webhook-secret"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

#[tokio::test(start_paused = true)]
async fn while_secret_manager_is_down_the_held_secret_keeps_deliveries_flowing_but_not_once_it_is_gone()
 {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    h.webhook(signed("push", "ok-0", &body, SECRET))
        .await
        .unwrap();
    let checks = || h.store.calls(Call::GetSecret);
    store_down(&h.store);
    tokio::time::advance(Duration::from_secs(11)).await;
    let c0 = checks();
    for i in 0..5 {
        let reply = h
            .webhook(signed("push", &format!("down-{i}"), &body, SECRET))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    assert_eq!(
        checks(),
        c0 + 1,
        "one failed check, then the interval again"
    );
}
