//! webhook-ingest's payload handling after the signature check:
//! `message::read_facts` (is this one JSON object, and what do the
//! attributes need from it) and `message::build` (the bus message).
//!
//! Input: optional `name: value` lines, a blank line, the payload.
//! Recognized names: `event`, `delivery`, `hook`, `repeat` (how many times
//! each header value is repeated, to cross the 1 KiB attribute limit),
//! `ordering` (any value: order by repository), `gzip` (any value: repeat
//! the payload past the gzip threshold).
//! Invariants: a payload is accepted iff it is a JSON object; facts agree
//! with a plain `serde_json::Value` reading; every attribute fits Pub/Sub's
//! 1 KiB and is a prefix of its source; gzipped data inflates back to the
//! payload.
#![no_main]

use std::io::Read;

use bytes::Bytes;
use chrono::DateTime;
use flate2::read::GzDecoder;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;
use webhook_ingest::message::{self, DeliveryMeta, PayloadError, PayloadFacts};

fuzz_target!(|data: &[u8]| {
    let (fields, payload) = patchpanda_fuzz::split_head(data);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let repeat = field("repeat")
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 2048);
    let long = |s: String| s.repeat(repeat);

    let facts = match message::read_facts(payload) {
        Ok(f) => f,
        Err(e) => {
            refused(payload, &e);
            return;
        }
    };
    accepted(payload, &facts);

    let meta = DeliveryMeta {
        event: long(field("event").unwrap_or_else(|| "push".into())),
        delivery: long(field("delivery").unwrap_or_else(|| "72d3162e-cc78-11e3-81ab".into())),
        hook_id: field("hook").map(long),
        received_at: DateTime::from_timestamp(1_763_287_200, 0).unwrap_or_default(),
        secret_version: 3,
    };
    let ordering = field("ordering").is_some();
    let payload = if field("gzip").is_some() && !payload.is_empty() {
        let times = message::GZIP_THRESHOLD / payload.len() + 1;
        Bytes::from(payload.repeat(times))
    } else {
        Bytes::copy_from_slice(payload)
    };
    let built = match message::build(payload.clone(), &facts, &meta, ordering) {
        Ok(m) => m,
        Err(e) => panic!("building the message failed: {e}"),
    };
    for (key, value) in &built.attributes {
        assert!(
            value.len() <= 1024,
            "attribute {key} is {} bytes",
            value.len()
        );
    }
    let attr = |k: &str| built.attributes.get(k).map(String::as_str);
    assert!(
        meta.event
            .starts_with(attr(message::ATTR_EVENT).unwrap_or("\0"))
    );
    assert!(
        meta.delivery
            .starts_with(attr(message::ATTR_DELIVERY).unwrap_or("\0"))
    );
    assert_eq!(attr(message::ATTR_SECRET_VERSION), Some("3"));
    if let Some(repo) = &facts.repository {
        assert!(repo.starts_with(attr(message::ATTR_REPOSITORY).unwrap_or("\0")));
        if ordering {
            assert_eq!(
                built.ordering_key.as_deref(),
                attr(message::ATTR_REPOSITORY)
            );
        }
    } else {
        assert_eq!(built.ordering_key, None);
    }
    if payload.len() > message::GZIP_THRESHOLD {
        assert_eq!(attr(message::ATTR_CONTENT_ENCODING), Some("gzip"));
        let mut inflated = Vec::new();
        GzDecoder::new(&built.data[..])
            .read_to_end(&mut inflated)
            .expect("our own gzip inflates");
        assert_eq!(inflated, payload);
    } else {
        assert_eq!(attr(message::ATTR_CONTENT_ENCODING), None);
        assert_eq!(built.data, payload);
    }
});

fn refused(payload: &[u8], e: &PayloadError) {
    if let Ok(Value::Object(_)) = serde_json::from_slice::<Value>(payload) {
        panic!("a JSON object was refused: {e}");
    }
    assert!(!e.to_string().contains('\n'));
}

fn accepted(payload: &[u8], facts: &PayloadFacts) {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    assert_eq!(first, Some(&b'{'), "accepted a non-object");
    assert!(
        serde_json::from_slice::<IgnoredAny>(payload).is_ok(),
        "accepted invalid JSON"
    );
    // With duplicate or odd-shaped known keys the facts are all dropped;
    // any fact that is reported must be what the JSON says.
    if *facts == PayloadFacts::default() {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    // serde also reads a struct from an array, by position; such shapes are
    // not compared.
    let positional = |container: &str| v.get(container).is_some_and(Value::is_array);
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let number = |p: &str| v.pointer(p).and_then(Value::as_u64);
    let oracle = PayloadFacts {
        action: text("/action"),
        installation_id: number("/installation/id"),
        repository: text("/repository/full_name"),
        sender: text("/sender/login"),
        hook_id: number("/hook_id"),
    };
    let mut facts = facts.clone();
    if positional("installation") {
        facts.installation_id = oracle.installation_id;
    }
    if positional("repository") {
        facts.repository = oracle.repository.clone();
    }
    if positional("sender") {
        facts.sender = oracle.sender.clone();
    }
    assert_eq!(facts, oracle);
}
