//! Cloud Audit Logs entries: `serde_json::from_slice::<LogEntry>` and
//! audit-alerter's decoding (`entry::decode`, plain or wrapped once more in
//! a Pub/Sub envelope) and its pure helpers over what decoded.
//!
//! Input: the message data as-is (JSON).
//! Invariants: parse -> serialize -> parse gives the same entry; a decoded
//! audit entry has a service and method; a refusal is one line; the name
//! parsers return pieces of the name they were given.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use patchpanda_shared::audit_log::{AUDIT_LOG_TYPE, LogEntry};
use serde_json::Value;

use audit_alerter::entry::{self, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = serde_json::from_slice::<LogEntry>(data) {
        round_trips(&parsed);
        helpers(&parsed);
    }
    match entry::decode(data) {
        Ok(Decoded::Audit(e)) => {
            let audit = e
                .proto_payload
                .as_ref()
                .expect("an audit entry has a protoPayload");
            assert!(!audit.service_name.is_empty() && !audit.method_name.is_empty());
            assert!(
                audit
                    .type_url
                    .as_deref()
                    .is_none_or(|t| t == AUDIT_LOG_TYPE)
            );
            round_trips(&e);
            helpers(&e);
        }
        Ok(Decoded::SignatureRejected(e)) => {
            let j = e
                .json_payload
                .as_ref()
                .expect("a signature entry has a jsonPayload");
            let event = j
                .get("event")
                .and_then(Value::as_str)
                .or_else(|| j.get("message").and_then(Value::as_str));
            assert_eq!(event, Some(entry::SIGNATURE_REJECTED));
            round_trips(&e);
            helpers(&e);
        }
        Ok(Decoded::Ignored(why)) => assert!(!why.is_empty()),
        Err(m) => {
            assert!(!m.0.is_empty());
            assert!(!m.0.contains('\n'), "multi-line refusal: {m:?}");
        }
    }
});

fn round_trips(e: &LogEntry) {
    let bytes = serde_json::to_vec(e).expect("a LogEntry serializes");
    let again: LogEntry = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(err) => panic!("re-serialized entry does not parse: {err}"),
    };
    // serde_json parses floats to within an ulp unless its float_roundtrip
    // feature is on, so numbers inside free-form payloads compare nearly.
    let (a, b) = (
        serde_json::to_value(e).unwrap_or_default(),
        serde_json::to_value(&again).unwrap_or_default(),
    );
    assert!(same(&a, &b), "round trip changed the entry:\n{a}\n{b}");
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn helpers(e: &LogEntry) {
    let now = DateTime::from_timestamp(1_763_287_200, 0).unwrap_or_default();
    let _ = entry::entry_time(e, now);
    let _ = entry::principal_of(e);
    assert!(e.dedup_key().starts_with(&e.log_name));
    if let Some(p) = entry::log_project(&e.log_name) {
        assert!(e.log_name.starts_with(&format!("projects/{p}")));
        assert!(!p.is_empty() && !p.contains('/'));
    }
    let Some(audit) = &e.proto_payload else {
        return;
    };
    let short = entry::short_method(&audit.method_name);
    assert!(audit.method_name.ends_with(short) && !short.contains('.'));
    let _ = entry::status_code(audit);
    let _ = entry::caller(audit);
    for name in entry::resource_names(audit) {
        assert!(!name.is_empty());
        if let Some(s) = entry::parse_secret(name) {
            assert!(!s.id.is_empty() && !s.id.contains('/'));
            assert!(name.contains(&format!("secrets/{}", s.id)));
            if let Some(v) = s.version {
                assert!(!v.is_empty() && name.contains(&format!("/versions/{v}")));
            }
        }
        if let Some(k) = entry::parse_kms(name) {
            assert!(!k.ring.is_empty() && name.contains(&format!("keyRings/{}", k.ring)));
            if let Some(key) = k.key {
                assert!(name.contains(&format!("cryptoKeys/{key}")));
            }
        }
        if let Some(sa) = entry::parse_service_account(name) {
            assert_eq!(sa, sa.to_ascii_lowercase(), "not normalized");
        }
    }
    let accounts = entry::service_accounts(e, audit);
    assert!(
        accounts.windows(2).all(|w| w[0] < w[1]),
        "not sorted+deduped"
    );
}
