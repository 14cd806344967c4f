//! Rates and the Data Access self-check.

use crate::prelude::*;

#[tokio::test]
async fn a_spike_in_reads_of_one_secret_alerts_once() {
    let mut s = test_settings(&[]);
    s.read_spike.min_count = 10;
    let h = harness_with(s);
    for i in 0..40 {
        let mut e = access(&format!("spike-{i}"), GATEWAY_SA, WEBHOOK_SECRET_ID);
        e["timestamp"] = json!(ts(i));
        h.ok(&e).await;
    }
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretReadSpike);
    assert_eq!(a.details["count"], "10");
    assert_eq!(a.resource, WEBHOOK_SECRET_ID);
}

#[tokio::test]
async fn a_spike_in_signature_failures_alerts() {
    let mut s = test_settings(&[]);
    s.signature_spike.min_count = 5;
    let h = harness_with(s);
    for i in 0..8 {
        let e = json!({
            "insertId": format!("sig-{i}"),
            "logName": "projects/my-proj/logs/run.googleapis.com%2Fstdout",
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "webhook-ingest", "project_id": PROJECT}},
            "jsonPayload": {"event": "signature_rejected", "reason": "mismatch", "delivery": format!("d-{i}"), "remote_ip": "203.0.113.9", "message": "signature rejected"},
            "severity": "WARNING",
            "timestamp": ts(i),
        });
        h.ok(&e).await;
    }
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SignatureFailureSpike);
    assert_eq!(a.resource, "webhook-ingest");
    assert_eq!(a.details["reason"], "mismatch");
}

#[tokio::test]
async fn silence_in_data_access_logs_raises_a_warning_once() {
    let h = harness();
    h.clock.advance(TimeDelta::hours(5));
    assert!(h.alerter.tick().await.is_empty());
    h.clock.advance(TimeDelta::hours(2));
    let out = h.alerter.tick().await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, Rule::DataAccessSilent);
    assert!(out[0].summary.contains("Data Access"));
    h.clock.advance(TimeDelta::hours(1));
    assert!(h.alerter.tick().await.is_empty(), "once per silence");
    // A data_access entry for a secret re-arms the check.
    h.ok(&access("da-1", GATEWAY_SA, WEBHOOK_SECRET_ID)).await;
    h.clock.advance(TimeDelta::hours(5));
    assert!(h.alerter.tick().await.is_empty());
    h.clock.advance(TimeDelta::hours(2));
    assert_eq!(h.alerter.tick().await.len(), 1);
}

/// Someone who may write log entries forges Data Access entries into a log
/// of their own naming (the sink's `logName:"cloudaudit.googleapis.com"` is
/// a substring match): they neither re-arm the silence check nor alert.
#[tokio::test]
async fn forged_audit_entries_outside_cloud_audit_logs_neither_silence_nor_alert() {
    let h = harness();
    h.clock.advance(TimeDelta::hours(5));
    for (i, log) in [
        format!("projects/{PROJECT}/logs/x-cloudaudit.googleapis.com%2Fdata_access"),
        format!("projects/{PROJECT}/logs/my-app"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = access(&format!("forged-{i}"), HUMAN, WEBHOOK_SECRET_ID);
        e["logName"] = json!(log);
        h.ok(&e).await;
    }
    h.none();
    h.clock.advance(TimeDelta::hours(2));
    let out = h.alerter.tick().await;
    assert_eq!(out.len(), 1, "the forged entries did not re-arm the check");
    assert_eq!(out[0].rule, Rule::DataAccessSilent);
    // A signature rejection written outside Cloud Run's container logs.
    let mut s = test_settings(&[]);
    s.signature_spike.min_count = 2;
    let h = harness_with(s);
    for i in 0..5 {
        h.ok(&json!({
            "insertId": format!("fsig-{i}"),
            "logName": format!("projects/{PROJECT}/logs/my-app"),
            "jsonPayload": {"event": "signature_rejected", "reason": "mismatch", "remote_ip": "203.0.113.9"},
            "timestamp": ts(i),
        }))
        .await;
    }
    h.none();
}
