//! Pub/Sub push decoding (`runtime::decode::push_message`) over arbitrary
//! headers and body, in every format it dispatches on.
//!
//! Input: `name: value` header lines, a blank line, the body.
//! Invariants: a refusal is a 400 with one line; an accepted message has an
//! id, was decoded in the format its headers select, and survives being
//! written back as a standard push envelope and decoded again unchanged.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::SecondsFormat;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use patchpanda_shared::runtime::decode;
use patchpanda_shared::runtime::events::PushFormat;
use patchpanda_shared::runtime::{HandlerError, PushMessage};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let (fields, body) = patchpanda_fuzz::split_head(data);
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        // HeaderName lowercases, as hyper hands names to the runtime.
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(body);

    match decode::push_message(&headers, &body) {
        Ok(m) => accepted(&headers, &body, &m),
        Err(e) => refused(&e),
    }

    // The scheduler decoder only reads two headers; it must never panic and
    // must refuse only non-text values.
    match decode::scheduler_job(&headers, body.clone()) {
        Ok(job) => assert_eq!(job.body, body),
        Err(e) => refused(&e),
    }
});

fn refused(e: &HandlerError) {
    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
    assert!(!e.message().contains('\n'), "multi-line error: {e:?}");
    assert!(!e.message().is_empty());
}

fn accepted(headers: &HeaderMap, body: &Bytes, m: &PushMessage) {
    assert!(!m.message_id.trim().is_empty(), "empty message id: {m:?}");
    assert_ne!(m.delivery_attempt, Some(0), "0 means absent: {m:?}");
    assert_ne!(m.subscription.as_deref(), Some(""), "{m:?}");
    assert_ne!(m.ordering_key.as_deref(), Some(""), "{m:?}");

    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let expected = if headers.contains_key("ce-type") || headers.contains_key("ce-specversion") {
        PushFormat::CloudEventBinary
    } else if content_type.as_deref() == Some("application/cloudevents+json") {
        PushFormat::CloudEventStructured
    } else if headers.contains_key("x-goog-pubsub-message-id") {
        PushFormat::Unwrapped
    } else {
        PushFormat::Wrapped
    };
    assert_eq!(m.format, expected, "{m:?}");
    if m.format == PushFormat::Unwrapped {
        assert_eq!(&m.data, body, "an unwrapped body is the data as-is");
        for name in m.attributes.keys() {
            assert!(
                !name.starts_with("x-goog-") && !name.starts_with("ce-"),
                "transport header {name} taken for an attribute"
            );
        }
    }

    // Write the message back as the default push envelope: decoding that
    // must give the same message.
    let again = match decode::push_message(&HeaderMap::new(), &Bytes::from(envelope(m))) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded message refused: {e:?} (from {m:?})"),
    };
    assert_eq!(again.format, PushFormat::Wrapped);
    assert_eq!(again.message_id, m.message_id);
    assert_eq!(again.data, m.data);
    assert_eq!(again.attributes, m.attributes);
    assert_eq!(again.ordering_key, m.ordering_key);
    assert_eq!(again.publish_time, m.publish_time);
    assert_eq!(again.subscription, m.subscription);
    assert_eq!(again.delivery_attempt, m.delivery_attempt);
}

fn envelope(m: &PushMessage) -> Vec<u8> {
    let mut message = Map::new();
    message.insert("data".into(), Value::String(STANDARD.encode(&m.data)));
    message.insert("attributes".into(), json!(m.attributes));
    message.insert("messageId".into(), Value::String(m.message_id.clone()));
    if let Some(t) = m.publish_time {
        message.insert(
            "publishTime".into(),
            Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        );
    }
    if let Some(k) = &m.ordering_key {
        message.insert("orderingKey".into(), Value::String(k.clone()));
    }
    let mut env = Map::new();
    env.insert("message".into(), Value::Object(message));
    if let Some(s) = &m.subscription {
        env.insert("subscription".into(), Value::String(s.clone()));
    }
    if let Some(n) = m.delivery_attempt {
        env.insert("deliveryAttempt".into(), json!(n));
    }
    serde_json::to_vec(&Value::Object(env)).unwrap_or_default()
}
