//! The signature-failure spike rule reads webhook-ingest's lines as
//! tracing-stackdriver 0.10 writes them (contract 7): fields camelCased
//! into jsonPayload, so `remote_ip` arrives as `remoteIp`.

use std::io::Write;

use crate::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines webhook-ingest's `log_rejected` (functions/webhook-ingest/src/
/// ingest.rs) writes, through the same layer the runtime installs.
fn ingest_lines(n: usize) -> Vec<Value> {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_stackdriver::layer().with_writer(move || writer.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..n {
            let delivery = format!("d-{i}");
            let event = "push";
            let reason = "mismatch";
            let remote_ip = "203.0.113.9";
            tracing::warn!(
                event = "signature_rejected",
                delivery = %delivery,
                github_event = %event,
                reason = reason,
                remote_ip = %remote_ip,
                "webhook signature rejected"
            );
        }
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What Cloud Run's logging agent makes of one stdout line: the JSON
/// becomes jsonPayload, minus the fields it lifts into the LogEntry.
fn as_log_entry(line: &Value, i: usize) -> Value {
    let mut payload = line.clone();
    let obj = payload.as_object_mut().unwrap();
    let severity = obj.remove("severity");
    let time = obj.remove("time");
    obj.retain(|k, _| !k.starts_with("logging.googleapis.com/"));
    json!({
        "insertId": format!("sig-{i}"),
        "logName": format!("projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"),
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": "patchpanda-webhook-ingest", "project_id": PROJECT}},
        "jsonPayload": payload,
        "severity": severity,
        "timestamp": time,
    })
}

#[tokio::test]
async fn a_spike_read_from_real_stackdriver_lines_names_the_remote_ip() {
    let lines = ingest_lines(8);
    assert_eq!(
        lines[0]["remoteIp"], "203.0.113.9",
        "camelCased: {}",
        lines[0]
    );
    assert!(lines[0].get("remote_ip").is_none());
    assert_eq!(lines[0]["event"], "signature_rejected");
    let mut s = test_settings(&[]);
    s.signature_spike.min_count = 5;
    let h = harness_with(s);
    for (i, line) in lines.iter().enumerate() {
        h.ok(&as_log_entry(line, i)).await;
    }
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SignatureFailureSpike);
    assert_eq!(a.details["callerIp"], "203.0.113.9");
    assert_eq!(a.details["reason"], "mismatch");
    assert_eq!(a.resource, "patchpanda-webhook-ingest");
}
