//! Input handling: malformed, ignored, duplicate, wrapped, folded; per-rule settings.

use crate::prelude::*;

#[tokio::test]
async fn malformed_messages_are_400_with_one_line_and_change_nothing() {
    let h = harness();
    let cases: [&[u8]; 8] = [
        b"",
        b"not json at all",
        b"[1,2,3]",
        b"{\"hello\":\"world\"}",
        br#"{"logName":"x","insertId":"1","protoPayload":{"serviceName":"secretmanager.googleapis.com"}}"#,
        br#"{"logName":"x","insertId":"2","protoPayload":{"methodName":["not","a","string"]}}"#,
        br#"{"logName":"x","insertId":"3","timestamp":12}"#,
        &[0xff, 0xfe, 0x00, 0x01],
    ];
    for data in cases {
        let err = call(&h.audit, data).await.unwrap_err();
        assert_eq!(
            err.status(),
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(data)
        );
        assert!(!err.message().contains('\n'), "one line: {}", err.message());
        assert!(!err.message().is_empty());
    }
    for data in [
        &b"{}"[..],
        b"not a notice",
        br#"{"secret":"webhook-secret","event":"exploded"}"#,
    ] {
        let err = call(&h.rotation, data).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
    h.none();
}

#[tokio::test]
async fn non_audit_entries_are_acknowledged_and_ignored() {
    let h = harness();
    h.ok(&json!({"logName": "projects/my-proj/logs/run.googleapis.com%2Fstdout", "insertId": "t1", "textPayload": "hello"})).await;
    h.ok(&json!({"logName": "projects/my-proj/logs/x", "insertId": "t2", "jsonPayload": {"event": "delivery_published"}})).await;
    h.ok(&json!({"logName": "projects/my-proj/logs/x", "insertId": "t3", "protoPayload": {"@type": "type.googleapis.com/google.appengine.logging.v1.RequestLog"}})).await;
    h.none();
}

#[tokio::test]
async fn the_same_entry_twice_alerts_once() {
    let h = harness();
    let e = access("dup-1", HUMAN, WEBHOOK_SECRET_ID);
    h.ok(&e).await;
    h.ok(&e).await;
    assert_eq!(h.bus.alerts().len(), 1);
    // Same insertId in another log is another entry (folded by suppression,
    // not dropped by dedup).
    let mut other = e.clone();
    other["logName"] = json!("projects/other-proj/logs/cloudaudit.googleapis.com%2Fdata_access");
    assert!(matches!(
        h.alerter
            .analyze(&serde_json::to_vec(&other).unwrap())
            .unwrap(),
        audit_alerter::Analysis::Alerts(_)
    ));
    assert_eq!(
        h.alerter
            .analyze(&serde_json::to_vec(&other).unwrap())
            .unwrap(),
        audit_alerter::Analysis::Duplicate
    );
}

#[tokio::test]
async fn a_wrapped_pubsub_message_in_a_cloudevent_is_unwrapped() {
    use base64::Engine;
    let h = harness();
    let inner = serde_json::to_vec(&access("ce-1", HUMAN, WEBHOOK_SECRET_ID)).unwrap();
    let ce_data = json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(inner), "messageId": "1"}, "subscription": "s"});
    h.ok(&ce_data).await;
    assert_eq!(h.only_alert().insert_id, "ce-1");
}

#[tokio::test]
async fn a_burst_goes_out_once_at_once_and_the_rest_is_counted() {
    let h = harness();
    for i in 0..6 {
        h.ok(&access(&format!("burst-{i}"), HUMAN, WEBHOOK_SECRET_ID))
            .await;
        if i == 0 {
            assert_eq!(h.bus.alerts().len(), 1, "the first goes out immediately");
        }
    }
    let a = h.only_alert();
    assert_eq!(a.insert_id, "burst-0");
    assert_eq!(a.folded, 0);
    // The next one after the window carries the count.
    h.clock
        .advance(TimeDelta::minutes(10) + TimeDelta::seconds(1));
    h.ok(&access("burst-late", HUMAN, WEBHOOK_SECRET_ID)).await;
    let alerts = h.bus.alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[1].insert_id, "burst-late");
    assert_eq!(alerts[1].folded, 5);
    // Another principal is another fingerprint.
    h.ok(&access("burst-eve", "eve@example.com", WEBHOOK_SECRET_ID))
        .await;
    assert_eq!(h.bus.alerts().len(), 3);
}

#[tokio::test]
async fn disabled_rules_and_severity_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerter.toml");
    std::fs::write(&path, "[rules.secret-read-unexpected]\nseverity = \"P2\"\n[rules.secret-deleted]\nenabled = false\n").unwrap();
    let h = harness_with(test_settings(&[(
        settings::ENV_CONFIG,
        path.to_str().unwrap(),
    )]));
    h.ok(&access("r", HUMAN, WEBHOOK_SECRET_ID)).await;
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    h.ok(&sm_entry(
        "d",
        sm::DELETE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.delete",
        json!({}),
        json!({}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(
        (a.rule, a.severity),
        (Rule::SecretReadUnexpected, Severity::P2)
    );
}
