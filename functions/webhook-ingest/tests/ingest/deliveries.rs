//! Deliveries through the handler on in-memory fakes: what is published,
//! with which attributes, and every refusal.

use std::io::Read;

use http::StatusCode;
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::runtime::HandlerError;
use webhook_ingest::message::*;

use super::support::*;

#[test]
fn githubs_documented_test_vector() {
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        signature::sign(b"It's a Secret to Everybody", b"Hello, World!"),
        expected
    );
    assert!(signature::verify(
        b"It's a Secret to Everybody",
        b"Hello, World!",
        expected
    ));
}

#[tokio::test]
async fn realistic_deliveries_are_published_with_their_attributes() {
    let h = Harness::new(&[SECRET], &[]);
    let cases = [
        ("push", "push.json", None, StatusCode::ACCEPTED),
        (
            "pull_request",
            "pull_request.opened.json",
            Some("opened"),
            StatusCode::ACCEPTED,
        ),
        (
            "installation",
            "installation.created.json",
            Some("created"),
            StatusCode::ACCEPTED,
        ),
        ("ping", "ping.json", None, StatusCode::OK),
    ];
    for (i, (event, file, action, status)) in cases.into_iter().enumerate() {
        let body = fixture(file);
        let delivery = format!("d-{i}");
        let mut req = signed(event, &delivery, &body, SECRET);
        if event == "ping" {
            // Without the header, the ping payload's own hook_id is used.
            req.headers.remove("x-github-hook-id");
        }
        let reply = h.webhook(req).await.unwrap();
        assert_eq!(reply.status, status, "{event}");
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer["status"], "published");
        let published = h.bus.inner().messages();
        let (topic, m) = published.last().unwrap();
        assert_eq!(topic, names::TOPIC_GITHUB_EVENTS);
        assert_eq!(
            answer["message_id"],
            serde_json::json!(published.len().to_string())
        );
        assert_eq!(
            m.data.as_ref(),
            body.as_slice(),
            "data is the payload as sent"
        );
        let a = &m.attributes;
        assert_eq!(a[ATTR_EVENT], event);
        assert_eq!(a[ATTR_DELIVERY], delivery);
        assert_eq!(a.get(ATTR_ACTION).map(String::as_str), action);
        assert_eq!(a[ATTR_SECRET_VERSION], "1");
        assert_eq!(
            a[ATTR_HOOK_ID],
            if event == "ping" { "109948940" } else { "77" }
        );
        assert!(chrono::DateTime::parse_from_rfc3339(&a[ATTR_RECEIVED_AT]).is_ok());
        assert!(!a.contains_key(ATTR_CONTENT_ENCODING));
        assert_eq!(m.ordering_key, None, "ordering is off by default");
        match event {
            "push" => {
                assert_eq!(a[ATTR_REPOSITORY], "Codertocat/Hello-World");
                assert_eq!(a[ATTR_SENDER], "Codertocat");
                assert_eq!(a[ATTR_INSTALLATION], "2311213");
            }
            "installation" => {
                assert_eq!(a[ATTR_INSTALLATION], "2311213");
                assert_eq!(a[ATTR_SENDER], "octocat");
                assert!(!a.contains_key(ATTR_REPOSITORY));
            }
            "ping" => assert!(!a.contains_key(ATTR_SENDER)),
            _ => {}
        }
    }
    assert_eq!(h.bus.inner().messages().len(), 4);
}

#[tokio::test]
async fn ordering_key_is_the_repository_when_asked() {
    let h = Harness::with_env(&[SECRET], &[], &[("PATCHPANDA_ORDERING", "repository")]);
    let body = fixture("push.json");
    h.webhook(signed("push", "d-1", &body, SECRET))
        .await
        .unwrap();
    let (_, m) = h.bus.inner().messages().pop().unwrap();
    assert_eq!(m.ordering_key.as_deref(), Some("Codertocat/Hello-World"));
}

#[tokio::test]
async fn bad_signatures_are_401_and_publish_nothing() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");

    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let mut req = signed("push", "d-1", &body, SECRET);
    req.body = tampered.into();
    assert_status(h.webhook(req).await, StatusCode::UNAUTHORIZED);

    let wrong = signed("push", "d-2", &body, "some-other-secret");
    assert_status(h.webhook(wrong).await, StatusCode::UNAUTHORIZED);

    let mut unsigned = signed("push", "d-3", &body, SECRET);
    unsigned.headers.remove(signature::HEADER);
    let err = h.webhook(unsigned).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert!(err.message().contains("X-Hub-Signature-256"), "{err}");

    // A legacy SHA-1 signature alone is not enough, even a correct one.
    let mut sha1_only = signed("push", "d-4", &body, SECRET);
    sha1_only.headers.remove(signature::HEADER);
    sha1_only.headers.insert(
        signature::LEGACY_HEADER,
        "sha1=0123456789abcdef0123456789abcdef01234567"
            .parse()
            .unwrap(),
    );
    let err = h.webhook(sha1_only).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    assert!(err.message().contains("SHA-1"), "{err}");

    let mut garbled = signed("push", "d-5", &body, SECRET);
    garbled
        .headers
        .insert(signature::HEADER, "sha256=nothex".parse().unwrap());
    assert_status(h.webhook(garbled).await, StatusCode::UNAUTHORIZED);

    assert!(h.bus.inner().messages().is_empty());
}

#[tokio::test]
async fn missing_github_headers_are_400() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    for header in ["x-github-event", "x-github-delivery"] {
        let mut req = signed("push", "d-1", &body, SECRET);
        req.headers.remove(header);
        let err = h.webhook(req).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{header}");
        assert!(err.message().to_ascii_lowercase().contains(header), "{err}");
    }
    assert!(h.bus.inner().messages().is_empty());
}

#[tokio::test]
async fn form_encoded_deliveries_publish_the_json_payload() {
    let h = Harness::new(&[SECRET], &[]);
    let json = fixture("pull_request.opened.json");
    let form = serde_urlencoded::to_string([("payload", std::str::from_utf8(&json).unwrap())])
        .unwrap()
        .into_bytes();
    let mut req = signed("pull_request", "d-form", &form, SECRET);
    req.headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let reply = h.webhook(req).await.unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let (_, m) = h.bus.inner().messages().pop().unwrap();
    assert_eq!(m.data.as_ref(), json.as_slice());
    assert_eq!(m.attributes[ATTR_ACTION], "opened");

    // Signed, but a form without `payload`.
    let mut req = signed("push", "d-form-2", b"other=1", SECRET);
    req.headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    assert_status(h.webhook(req).await, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn json_that_does_not_parse_is_400() {
    let h = Harness::new(&[SECRET], &[]);
    for body in [&b"{\"ref\": "[..], b"not json", b"[1,2,3]", b"{} {}"] {
        let err = h
            .webhook(signed("push", "d-bad", body, SECRET))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body:?}");
    }
    let mut req = signed("push", "d-ct", b"{}", SECRET);
    req.headers
        .insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_status(h.webhook(req).await, StatusCode::BAD_REQUEST);
    assert!(h.bus.inner().messages().is_empty());
}

#[tokio::test]
async fn a_delivery_seen_twice_is_published_once() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    let first = h
        .webhook(signed("push", "dup", &body, SECRET))
        .await
        .unwrap();
    let second = h
        .webhook(signed("push", "dup", &body, SECRET))
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    let answer: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(answer["status"], "duplicate");
    assert_eq!(h.bus.inner().messages().len(), 1);

    // Concurrent copies too.
    let reqs = (0..8).map(|_| h.webhook(signed("push", "dup-2", &body, SECRET)));
    let replies = futures::future::join_all(reqs).await;
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status == StatusCode::ACCEPTED))
    );
    assert_eq!(h.bus.inner().messages().len(), 2);
}

#[tokio::test]
async fn bus_failure_is_503_and_the_retry_publishes() {
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");
    bus_down(&h.bus);
    let err = h
        .webhook(signed("push", "d-retry", &body, SECRET))
        .await
        .unwrap_err();
    assert!(matches!(err, HandlerError::Retryable(_)), "{err:?}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.bus.inner().messages().is_empty());
    assert!(
        !h.wi.ingest.seen("d-retry"),
        "a failed publish is not remembered"
    );

    // GitHub's redelivery (same id) goes through once the bus is back.
    h.bus.heal();
    let reply = h
        .webhook(signed("push", "d-retry", &body, SECRET))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(h.bus.inner().messages().len(), 1);
    assert!(h.wi.ingest.seen("d-retry"));
}

#[tokio::test]
async fn secrets_unavailable_is_503() {
    let h = Harness::new(&[SECRET], &[]);
    store_down(&h.store);
    // Never loaded, so there is no last good value to fall back on.
    let err = h
        .webhook(signed("push", "d-1", b"{}", SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.bus.inner().messages().is_empty());
}

#[tokio::test]
async fn big_payloads_are_gzipped() {
    let h = Harness::new(&[SECRET], &[]);
    let body = format!(
        r#"{{"ref":"refs/heads/main","repository":{{"full_name":"o/r"}},"pad":"{}"}}"#,
        "abc".repeat(600_000)
    )
    .into_bytes();
    let reply = h
        .webhook(signed("push", "d-big", &body, SECRET))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let (_, m) = h.bus.inner().messages().pop().unwrap();
    assert_eq!(m.attributes[ATTR_CONTENT_ENCODING], "gzip");
    assert_eq!(m.attributes[ATTR_REPOSITORY], "o/r");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(m.data.as_ref())
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, body);
}
