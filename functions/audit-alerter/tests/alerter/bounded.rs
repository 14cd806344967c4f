//! Bounded state (issue 11 item 7): flooding every map keyed by
//! attacker-chosen values with distinct keys leaves each at its cap.

use crate::prelude::*;

#[tokio::test]
async fn a_flood_of_distinct_keys_stays_within_the_caps() {
    let mut s = test_settings(&[]);
    s.state_capacity = 200;
    s.dedup_capacity = 300;
    s.read_spike.min_count = 1_000_000;
    let h = harness_with(s);
    let n = 1500;
    for i in 0..n {
        // Distinct principals: suppression slots (fingerprints).
        h.ok(&access(
            &format!("p-{i}"),
            &format!("m{i}@evil.example"),
            WEBHOOK_SECRET_ID,
        ))
        .await;
        // Distinct secrets read by a reader: spike counters.
        h.ok(&access(
            &format!("s-{i}"),
            GATEWAY_SA,
            &format!("patchpanda-flood-{i}"),
        ))
        .await;
        // Distinct held changes: the outbox.
        h.nacked(&version_change(
            &format!("h-{i}"),
            sm::ADD_SECRET_VERSION,
            ROTATOR_SA,
            &format!("patchpanda-held-{i}"),
            30,
        ))
        .await;
        // Distinct secrets in notices: rotation windows.
        h.notice(&notice(
            &format!("flood-{i}"),
            NoticeEvent::Started,
            &format!("r{i}"),
            ROTATOR_SA,
            0,
        ))
        .await;
    }
    let [outbox, slots, windows, counters] = h.alerter.tracked();
    assert!(outbox <= 200, "outbox {outbox}");
    assert!(slots <= 200, "suppression {slots}");
    assert!(windows <= 1024, "rotation windows {windows}");
    assert!(counters <= 1024, "read counters {counters}");
    assert!(outbox > 0 && slots > 0, "the maps were in use");
}
