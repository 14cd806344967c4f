//! Entries per second through decoding, dedup, the rules and suppression on
//! one core (no sinks: delivery is I/O and measured by nobody here).
//!
//! `cargo bench -p audit-alerter` — a realistic mix of ~10k entries, mostly
//! the gateway's own reads, with some of everything that alerts; each run
//! uses a fresh alerter (empty dedup), and the median of the runs is
//! reported. Optional argument: the number of runs (default 15).

use std::sync::Arc;
use std::time::Instant;

use audit_alerter::settings::Settings;
use audit_alerter::{Alerter, Analysis, ManualClock};
use chrono::{DateTime, TimeDelta, Utc};
use patchpanda_shared::audit_log::{iam, iamcredentials, kms, sm};
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use serde_json::{Value, json};

const ENTRIES: usize = 10_000;
const GATEWAY: &str = "gateway@my-proj.iam.gserviceaccount.com";
const ROTATOR: &str = "rotator@my-proj.iam.gserviceaccount.com";
const SECRETS: [&str; 3] = [
    "patchpanda-webhook-secret",
    "patchpanda-github-private-key",
    "patchpanda-oidc-client-secret",
];
const KEY: &str = "projects/my-proj/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key";

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-16T10:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
}

fn audit(
    i: usize,
    (log, service, method): (&str, &str, &str),
    principal: &str,
    resource: &str,
    status: Value,
    request: Value,
) -> Value {
    let t = start() + TimeDelta::milliseconds(i as i64 * 360);
    json!({
        "insertId": format!("{i:012x}"),
        "logName": format!("projects/my-proj/logs/cloudaudit.googleapis.com%2F{log}"),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": service,
            "methodName": method,
            "resourceName": resource,
            "authenticationInfo": {"principalEmail": principal, "principalSubject": format!("serviceAccount:{principal}")},
            "authorizationInfo": [{"permission": "secretmanager.versions.access", "granted": true, "resource": resource, "permissionType": "DATA_READ"}],
            "requestMetadata": {"callerIp": "35.192.45.123", "callerSuppliedUserAgent": "google-cloud-rust/1.0 gl-rust/1.88",
                "requestAttributes": {"time": t.to_rfc3339(), "auth": {}}, "destinationAttributes": {}},
            "request": request,
            "status": status,
        },
        "resource": {"type": "audited_resource", "labels": {"project_id": "my-proj", "service": service, "method": method}},
        "severity": "INFO",
        "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "receiveTimestamp": (t + TimeDelta::milliseconds(1200)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    })
}

/// The mix: 60% allowed reads, 12% KMS use, and the rest spread over
/// everything the rules look at.
fn entry(i: usize) -> Value {
    let secret = SECRETS[i % SECRETS.len()];
    let version = format!(
        "projects/907234637394/secrets/{secret}/versions/{}",
        1 + i % 4
    );
    let ok = json!({});
    match i % 50 {
        0..=29 => audit(
            i,
            (
                "data_access",
                "secretmanager.googleapis.com",
                sm::ACCESS_SECRET_VERSION,
            ),
            GATEWAY,
            &version,
            ok,
            json!({"name": version}),
        ),
        30..=35 => audit(
            i,
            (
                "data_access",
                "cloudkms.googleapis.com",
                if i.is_multiple_of(2) {
                    kms::ENCRYPT
                } else {
                    kms::DECRYPT
                },
            ),
            GATEWAY,
            KEY,
            ok,
            json!({"name": KEY}),
        ),
        36..=37 => audit(
            i,
            (
                "data_access",
                "secretmanager.googleapis.com",
                sm::ACCESS_SECRET_VERSION,
            ),
            &format!("user{}@example.com", i % 7),
            &version,
            ok,
            json!({"name": version}),
        ),
        38..=39 => audit(
            i,
            (
                "data_access",
                "secretmanager.googleapis.com",
                sm::ACCESS_SECRET_VERSION,
            ),
            "prober@example.com",
            &version,
            json!({"code": 7, "message": "PERMISSION_DENIED"}),
            json!({"name": version}),
        ),
        40 => audit(
            i,
            (
                "activity",
                "secretmanager.googleapis.com",
                sm::ADD_SECRET_VERSION,
            ),
            ROTATOR,
            &format!("projects/907234637394/secrets/{secret}"),
            ok,
            json!({}),
        ),
        41 => audit(
            i,
            (
                "activity",
                "secretmanager.googleapis.com",
                sm::DISABLE_SECRET_VERSION,
            ),
            "ops@example.com",
            &version,
            ok,
            json!({"name": version}),
        ),
        42 => audit(
            i,
            (
                "activity",
                "cloudkms.googleapis.com",
                kms::UPDATE_CRYPTO_KEY_VERSION,
            ),
            "ops@example.com",
            &format!("{KEY}/cryptoKeyVersions/1"),
            ok,
            json!({"cryptoKeyVersion": {"state": "DISABLED"}, "updateMask": "state"}),
        ),
        43 => audit(
            i,
            (
                "activity",
                "iam.googleapis.com",
                iam::CREATE_SERVICE_ACCOUNT_KEY,
            ),
            "ops@example.com",
            &format!("projects/-/serviceAccounts/{GATEWAY}"),
            ok,
            json!({"name": format!("projects/-/serviceAccounts/{GATEWAY}")}),
        ),
        44 => audit(
            i,
            (
                "data_access",
                "iamcredentials.googleapis.com",
                iamcredentials::GENERATE_ACCESS_TOKEN,
            ),
            "ci@my-proj.iam.gserviceaccount.com",
            "projects/-/serviceAccounts/1234",
            ok,
            json!({"name": format!("projects/-/serviceAccounts/{GATEWAY}")}),
        ),
        45 => audit(
            i,
            (
                "activity",
                "secretmanager.googleapis.com",
                sm::SET_IAM_POLICY,
            ),
            "ops@example.com",
            &format!("projects/907234637394/secrets/{secret}"),
            ok,
            json!({}),
        ),
        46 => audit(
            i,
            (
                "activity",
                "compute.googleapis.com",
                "v1.compute.instances.insert",
            ),
            "ops@example.com",
            "projects/my-proj/zones/us-central1-a/instances/vm",
            ok,
            json!({}),
        ),
        47..=48 => json!({
            "insertId": format!("{i:012x}"),
            "logName": "projects/my-proj/logs/run.googleapis.com%2Fstdout",
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "webhook-ingest"}},
            "jsonPayload": {"event": "signature_rejected", "reason": "mismatch", "delivery": format!("d-{i}"), "remote_ip": "203.0.113.9"},
            "timestamp": (start() + TimeDelta::milliseconds(i as i64 * 360)).to_rfc3339(),
        }),
        _ => {
            json!({"insertId": format!("{i:012x}"), "logName": "projects/my-proj/logs/run.googleapis.com%2Fstderr", "textPayload": "listening on :8080"})
        }
    }
}

fn settings() -> Settings {
    let config = match Config::from_env(&Env::default(), names::PRINCIPAL_AUDIT_ALERTER) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    };
    let mut s = Settings::defaults(&config);
    s.readers.extend([GATEWAY]);
    s.rotators.extend([ROTATOR]);
    s.gateway_accounts.extend([GATEWAY]);
    s
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number is the run count.
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15)
        .max(1);
    let data: Vec<Vec<u8>> = (0..ENTRIES)
        .map(|i| serde_json::to_vec(&entry(i)).unwrap_or_default())
        .collect();
    let bytes: usize = data.iter().map(Vec::len).sum();
    let mut rotation = RotationNotice::new(names::WEBHOOK_SECRET, NoticeEvent::Started, "bench");
    rotation.principal = Some(ROTATOR.to_string());
    rotation.time = start();
    let rotation = serde_json::to_vec(&rotation).unwrap_or_default();

    let mut rates = Vec::with_capacity(runs);
    // The baseline, measured in the same runs: decoding the same entries
    // into `LogEntry` and nothing else, so the ratio shows what the rules,
    // dedup, rotation windows and suppression cost on top of parsing.
    let mut baseline = Vec::with_capacity(runs);
    let mut alerts = 0;
    for _ in 0..runs {
        let t = Instant::now();
        for d in &data {
            let parsed = serde_json::from_slice::<patchpanda_shared::audit_log::LogEntry>(
                std::hint::black_box(d),
            );
            std::hint::black_box(parsed.is_ok());
        }
        baseline.push(ENTRIES as f64 / t.elapsed().as_secs_f64());
        let clock = Arc::new(ManualClock::new(start()));
        let alerter = Alerter::new(settings(), Vec::new(), clock);
        if alerter.record_notice(&rotation).is_err() {
            eprintln!("bench: the rotation notice did not parse");
            std::process::exit(1);
        }
        alerts = 0;
        let t = Instant::now();
        for d in &data {
            match alerter.analyze(std::hint::black_box(d)) {
                Ok(Analysis::Alerts(a)) => alerts += a.len(),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("bench: a fixture was rejected: {e}");
                    std::process::exit(1);
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        rates.push(ENTRIES as f64 / secs);
    }
    rates.sort_by(f64::total_cmp);
    baseline.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let base = baseline[baseline.len() / 2];
    println!(
        "audit-alerter analyze: {ENTRIES} entries ({:.0} bytes avg), {runs} runs, one core",
        bytes as f64 / ENTRIES as f64
    );
    println!(
        "  median {median:.0} entries/s  (min {:.0}, max {:.0}); {alerts} alerts per run after folding",
        rates[0],
        rates[rates.len() - 1]
    );
    println!(
        "  baseline (parse only) median {base:.0} entries/s; full analysis runs at {:.0}% of it",
        100.0 * median / base
    );
}
