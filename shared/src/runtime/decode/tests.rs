use super::*;
use http::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn bytes(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn err(r: Result<PushMessage, HandlerError>) -> HandlerError {
    match r {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e,
    }
}

#[test]
fn wrapped_envelope_from_the_push_doc_with_both_spellings() {
    let body = bytes(
        r#"{"message":{"attributes":{"key":"value"},"data":"SGVsbG8gQ2xvdWQgUHViL1N1YiEgSGVyZSBpcyBteSBtZXNzYWdlIQ==",
        "messageId":"2070443601311540","message_id":"2070443601311540",
        "publishTime":"2021-02-26T19:13:55.749Z","publish_time":"2021-02-26T19:13:55.749Z"},
        "subscription":"projects/myproject/subscriptions/mysubscription","deliveryAttempt":3}"#,
    );
    let m = push_message(&HeaderMap::new(), &body).unwrap();
    assert_eq!(m.format, PushFormat::Wrapped);
    assert_eq!(m.message_id, "2070443601311540");
    assert_eq!(&m.data[..], b"Hello Cloud Pub/Sub! Here is my message!");
    assert_eq!(m.attributes.get("key").map(String::as_str), Some("value"));
    assert_eq!(
        m.publish_time.unwrap().to_rfc3339(),
        "2021-02-26T19:13:55.749+00:00"
    );
    assert_eq!(
        m.subscription.as_deref(),
        Some("projects/myproject/subscriptions/mysubscription")
    );
    assert_eq!(m.delivery_attempt, Some(3));
    assert_eq!(m.ordering_key, None);
}

#[test]
fn wrapped_envelope_in_snake_case_only() {
    let body = bytes(
        r#"{"message":{"data":"aGk","message_id":"7","publish_time":"2024-01-01T00:00:00Z","ordering_key":"o/r"},"delivery_attempt":0}"#,
    );
    let m = push_message(&HeaderMap::new(), &body).unwrap();
    assert_eq!(m.message_id, "7");
    assert_eq!(&m.data[..], b"hi");
    assert_eq!(m.ordering_key.as_deref(), Some("o/r"));
    assert_eq!(m.delivery_attempt, None);
    assert!(m.publish_time.is_some());
}

#[test]
fn wrapped_envelope_with_attributes_but_no_data() {
    let body = bytes(r#"{"message":{"attributes":{"a":"1"},"messageId":"9","orderingKey":"k"}}"#);
    let m = push_message(&HeaderMap::new(), &body).unwrap();
    assert!(m.data.is_empty());
    assert_eq!(m.ordering_key.as_deref(), Some("k"));
}

#[test]
fn malformed_envelopes_are_400_with_one_line() {
    let cases = [
        ("", "malformed push envelope"),
        ("not json", "malformed push envelope"),
        ("[]", "malformed push envelope"),
        ("{}", "no message"),
        (r#"{"message":{"data":"aGk="}}"#, "messageId is missing"),
        (
            r#"{"message":{"messageId":"1"}}"#,
            "neither data nor attributes",
        ),
        (
            r#"{"message":{"messageId":"1","data":"!!!"}}"#,
            "not valid base64",
        ),
        (
            r#"{"message":{"messageId":"1","data":"","publishTime":"yesterday"}}"#,
            "RFC 3339",
        ),
        (
            r#"{"message":{"messageId":"1","data":"","attributes":{"a":1}}}"#,
            "malformed push envelope",
        ),
        (
            r#"{"message":{"messageId":"1","data":""},"deliveryAttempt":-1}"#,
            "out of range",
        ),
    ];
    for (body, want) in cases {
        let e = err(push_message(&HeaderMap::new(), &bytes(body)));
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body}");
        assert!(e.message().contains(want), "{body}: {}", e.message());
        assert!(!e.message().contains('\n'), "{}", e.message());
    }
}

#[test]
fn unwrapped_takes_metadata_from_headers_and_keeps_the_body() {
    let h = headers(&[
        (HEADER_MESSAGE_ID, "42"),
        (HEADER_PUBLISH_TIME, "2021-02-26T19:13:55.749Z"),
        (HEADER_SUBSCRIPTION, "projects/p/subscriptions/s"),
        (HEADER_ORDERING_KEY, "owner/repo"),
        ("content-type", "application/json"),
        ("authorization", "Bearer x.y.z"),
        ("user-agent", "APIs-Google"),
        ("x-cloud-trace-context", "abc"),
        ("github_event", "push"),
        ("secret", "webhook-secret"),
    ]);
    let m = push_message(&h, &bytes("{\"raw\":true}")).unwrap();
    assert_eq!(m.format, PushFormat::Unwrapped);
    assert_eq!(m.message_id, "42");
    assert_eq!(&m.data[..], b"{\"raw\":true}");
    assert_eq!(
        m.subscription.as_deref(),
        Some("projects/p/subscriptions/s")
    );
    assert_eq!(m.ordering_key.as_deref(), Some("owner/repo"));
    assert!(m.publish_time.is_some());
    let keys: Vec<_> = m.attributes.keys().map(String::as_str).collect();
    assert_eq!(keys, ["github_event", "secret"]);
}

#[test]
fn unwrapped_with_bad_metadata_is_400() {
    let h = headers(&[(HEADER_MESSAGE_ID, "1"), (HEADER_PUBLISH_TIME, "soon")]);
    assert_eq!(err(push_message(&h, &bytes("x"))).status(), 400);
    let h = headers(&[(HEADER_MESSAGE_ID, "  ")]);
    assert!(
        err(push_message(&h, &bytes("x")))
            .message()
            .contains("empty")
    );
}

const PUBLISHED: &str = r#"{"message":{"data":"aGVsbG8=","attributes":{"k":"v"},"messageId":"m1","publishTime":"2020-09-29T11:32:00.000Z"},"subscription":"projects/sample-project/subscriptions/gcf-test"}"#;

#[test]
fn cloud_event_binary_mode() {
    let h = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-type", MESSAGE_PUBLISHED),
        ("ce-id", "aaaaaa-1111-bbbb-2222-cccccccccccc"),
        (
            "ce-source",
            "//pubsub.googleapis.com/projects/sample-project/topics/gcf-test",
        ),
        ("ce-time", "2020-09-29T11:32:00.123Z"),
        ("content-type", "application/json; charset=utf-8"),
    ]);
    let m = push_message(&h, &bytes(PUBLISHED)).unwrap();
    assert_eq!(m.format, PushFormat::CloudEventBinary);
    assert_eq!(m.message_id, "m1");
    assert_eq!(&m.data[..], b"hello");
    assert_eq!(m.attributes["k"], "v");
    assert_eq!(
        m.subscription.as_deref(),
        Some("projects/sample-project/subscriptions/gcf-test")
    );
    // Without a messageId in the data, the event id stands in.
    let m = push_message(&h, &bytes(r#"{"message":{"data":"aGk="}}"#)).unwrap();
    assert_eq!(m.message_id, "aaaaaa-1111-bbbb-2222-cccccccccccc");
    assert_eq!(m.publish_time.unwrap().timestamp_subsec_millis(), 123);
}

#[test]
fn cloud_event_binary_mode_refusals() {
    let mut h = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-type", "google.cloud.storage.object.v1.finalized"),
    ]);
    assert!(
        err(push_message(&h, &bytes(PUBLISHED)))
            .message()
            .contains("unsupported CloudEvent type")
    );
    h.insert("ce-type", HeaderValue::from_static(MESSAGE_PUBLISHED));
    h.insert("ce-specversion", HeaderValue::from_static("0.3"));
    assert!(
        err(push_message(&h, &bytes(PUBLISHED)))
            .message()
            .contains("specversion")
    );
    h.insert("ce-specversion", HeaderValue::from_static("1.0"));
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    assert!(
        err(push_message(&h, &bytes(PUBLISHED)))
            .message()
            .contains("must be JSON")
    );
    h.remove("content-type");
    assert!(
        err(push_message(&h, &bytes("{")))
            .message()
            .contains("malformed CloudEvent data")
    );
}

#[test]
fn cloud_event_structured_mode_inline_and_base64() {
    let h = headers(&[(
        "content-type",
        "application/cloudevents+json; charset=utf-8",
    )]);
    let inline = format!(
        r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","source":"//pubsub","id":"e1","time":"2020-09-29T11:32:00.123Z","datacontenttype":"application/json","data":{PUBLISHED}}}"#
    );
    let m = push_message(&h, &bytes(&inline)).unwrap();
    assert_eq!(m.format, PushFormat::CloudEventStructured);
    assert_eq!(m.message_id, "m1");
    assert_eq!(&m.data[..], b"hello");

    let b64 = base64::engine::general_purpose::STANDARD.encode(PUBLISHED);
    let encoded = format!(
        r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","source":"//pubsub","id":"e1","data_base64":"{b64}"}}"#
    );
    let m = push_message(&h, &bytes(&encoded)).unwrap();
    assert_eq!(m.attributes["k"], "v");
}

#[test]
fn cloud_event_structured_mode_refusals() {
    let h = headers(&[("content-type", "application/cloudevents+json")]);
    let cases = [
        ("{", "malformed CloudEvent"),
        (r#"{"specversion":"1.0","id":"1"}"#, "no type"),
        (
            &format!(r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","id":"1"}}"#),
            "no data",
        ),
        (
            &format!(
                r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","id":"1","data":{{}},"data_base64":"e30="}}"#
            ),
            "both data",
        ),
        (
            &format!(
                r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","id":"1","data_base64":"%%"}}"#
            ),
            "not valid base64",
        ),
        (
            &format!(r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","id":"1","data":[1]}}"#),
            "malformed CloudEvent data",
        ),
        // A blank event id cannot stand in for a missing messageId.
        (
            &format!(
                r#"{{"specversion":"1.0","type":"{MESSAGE_PUBLISHED}","id":" ","data":{{"message":{{"data":"aGk="}}}}}}"#
            ),
            "messageId is missing",
        ),
    ];
    for (body, want) in cases {
        let e = err(push_message(&h, &bytes(body)));
        assert_eq!(e.status(), 400);
        assert!(e.message().contains(want), "{body}: {}", e.message());
    }
}

#[test]
fn scheduler_job_reads_its_headers() {
    let h = headers(&[
        (
            "x-cloudscheduler-jobname",
            "projects/p/locations/l/jobs/finish",
        ),
        ("x-cloudscheduler-scheduletime", "2024-05-01T10:00:00Z"),
    ]);
    let job = scheduler_job(&h, bytes("{}")).unwrap();
    assert_eq!(
        job.idempotency_key().as_deref(),
        Some("projects/p/locations/l/jobs/finish@2024-05-01T10:00:00Z")
    );
    assert_eq!(&job.body[..], b"{}");
    let job = scheduler_job(&HeaderMap::new(), Bytes::new()).unwrap();
    assert_eq!(job.idempotency_key(), None);
    let mut h = HeaderMap::new();
    h.insert(
        "x-cloudscheduler-jobname",
        HeaderValue::from_bytes(b"\xffbad").unwrap(),
    );
    assert!(scheduler_job(&h, Bytes::new()).is_err());
}
