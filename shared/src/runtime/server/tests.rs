use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::auth::local::LocalIssuer;
use crate::auth::{StaticKeys, VerifierSettings};
use crate::names;
use crate::runtime::handler_fn;

const AUD: &str = "http://fn.test";

struct Fixture {
    _home: tempfile::TempDir,
    issuer: LocalIssuer,
    config: Config,
}

fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let home = crate::auth::local::test_keys::home_with_key(0);
    let mut env = Env::from_pairs([("PATCHPANDA_HOME", home.path().to_str().unwrap())]);
    for (k, v) in extra {
        env.set(*k, *v);
    }
    let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
    let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
    Fixture {
        _home: home,
        issuer,
        config,
    }
}

impl Fixture {
    fn verifier(&self) -> Arc<PushVerifier> {
        Arc::new(PushVerifier::new(
            Arc::new(StaticKeys::from_jwks(&self.issuer.jwks()).unwrap()),
            VerifierSettings::local(
                Some(AUD.to_string()),
                vec![
                    names::PRINCIPAL_PUSH.to_string(),
                    names::PRINCIPAL_SCHEDULER.to_string(),
                ],
            ),
        ))
    }

    fn bearer(&self, email: &str) -> String {
        let t = self
            .issuer
            .mint(AUD, email, Duration::from_secs(300))
            .unwrap();
        format!("Bearer {t}")
    }
}

/// Echoes the body; `/fail?...` answers with the error named in the body.
fn test_app(f: &Fixture) -> AppBuilder {
    App::builder("test-fn", &f.config)
        .verifier(f.verifier())
        .http(
            Method::POST,
            "/echo",
            16,
            handler_fn(|inv: Invocation<HttpRequest>| async move {
                Ok(Reply {
                    status: StatusCode::OK,
                    content_type: "application/octet-stream",
                    body: inv.event.body,
                })
            }),
        )
        .http(
            Method::POST,
            "/fail",
            1024,
            handler_fn(|inv: Invocation<HttpRequest>| async move {
                match &inv.event.body[..] {
                    b"panic" => panic!("handler bug"),
                    b"retry" => Err(HandlerError::retryable("bus down\nsecond line")),
                    b"bad" => Err(HandlerError::bad_request("field x is missing")),
                    _ => Err(crate::Error::NotFound("secret y".into()).into()),
                }
            }),
        )
        .http(
            Method::GET,
            "/ctx",
            1024,
            handler_fn(|inv: Invocation<HttpRequest>| async move {
                let c = inv.ctx;
                Ok(Reply::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "service": c.service,
                        "revision": c.revision,
                        "request_id": c.request_id,
                        "trace": c.trace.as_ref().map(|t| t.trace_id.clone()),
                        "sampled": c.trace.as_ref().map(|t| t.sampled),
                        "deadline_ok": c.deadline > Instant::now(),
                        "caller": c.caller,
                    }),
                ))
            }),
        )
        .push(
            "/events/rotation",
            handler_fn(|inv: Invocation<PushMessage>| async move {
                Ok(Reply::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "id": inv.event.message_id,
                        "data": String::from_utf8_lossy(&inv.event.data),
                        "caller": inv.ctx.caller,
                    }),
                ))
            }),
        )
        .scheduler(
            "/tasks/finish",
            handler_fn(|inv: Invocation<SchedulerJob>| async move {
                assert!(
                    !inv.event.headers.contains_key(header::AUTHORIZATION),
                    "the credential must not reach the handler"
                );
                Ok(Reply::text(
                    StatusCode::OK,
                    inv.event.idempotency_key().unwrap_or_default(),
                ))
            }),
        )
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn req(method: &str, path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "fn.test")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn unknown_paths_and_methods_are_one_line_404_and_405() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    for path in ["/nope", "/robots.txt", "/favicon.ico", "/echo/extra"] {
        let (status, _, body) = send(&router, req("GET", path, Body::empty())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, "not found\n");
    }
    let (status, headers, body) = send(&router, req("GET", "/echo", Body::empty())).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, "method not allowed\n");
    assert_eq!(headers[header::ALLOW], "POST");
    let (status, _, _) = send(&router, req("POST", "/health", Body::empty())).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn health_is_cheap_and_ok() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let (status, headers, body) = send(&router, req("GET", "/health", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

struct Flag(AtomicBool);

#[async_trait::async_trait]
impl ReadyCheck for Flag {
    async fn ready(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("secrets not loaded yet".into())
        }
    }
}

#[tokio::test]
async fn ready_follows_the_check() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let (status, _, _) = send(&router, req("GET", "/ready", Body::empty())).await;
    assert_eq!(status, StatusCode::OK, "no check configured: ready");

    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let router = test_app(&f).ready(flag.clone()).build().unwrap().router();
    let (status, _, body) = send(&router, req("GET", "/ready", Body::empty())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: secrets not loaded yet\n");
    flag.0.store(true, Ordering::SeqCst);
    let (status, _, body) = send(&router, req("GET", "/ready", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ready\n");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_by_length_or_by_stream() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let (status, _, body) = send(&router, req("POST", "/echo", "sixteen bytes!!!")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "sixteen bytes!!!")
    );

    let (status, _, body) = send(&router, req("POST", "/echo", "seventeen bytes!!")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, "request body is larger than 16 bytes\n");

    // Declared too large: refused before any of the body is read.
    let never_read = Body::from_stream(futures::stream::once(async {
        panic!("the body must not be read when Content-Length is over the limit");
        #[allow(unreachable_code)]
        Ok::<Bytes, std::io::Error>(Bytes::new())
    }));
    let mut r = req("POST", "/echo", never_read);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000000"));
    let (status, _, _) = send(&router, r).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Chunked (no length): refused once it grows past the limit.
    let chunks = futures::stream::iter(
        (0..1000).map(|_| Ok::<Bytes, std::io::Error>(Bytes::from_static(b"0123456789"))),
    );
    let (status, _, body) = send(&router, req("POST", "/echo", Body::from_stream(chunks))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.ends_with("16 bytes\n"));
}

#[tokio::test]
async fn handler_errors_map_to_status_and_one_line() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let cases = [
        (
            "retry",
            StatusCode::SERVICE_UNAVAILABLE,
            "bus down second line\n",
        ),
        ("bad", StatusCode::BAD_REQUEST, "field x is missing\n"),
        ("other", StatusCode::NOT_FOUND, "not found: secret y\n"),
        (
            "panic",
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the handler panicked\n",
        ),
    ];
    for (input, status, line) in cases {
        let (got, headers, body) = send(&router, req("POST", "/fail", input)).await;
        assert_eq!(got, status, "{input}");
        assert_eq!(body, line);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
}

#[tokio::test]
async fn context_carries_service_trace_and_deadline() {
    let f = fixture(&[
        ("K_SERVICE", "rotation-worker"),
        ("K_REVISION", "rotation-worker-00007"),
    ]);
    let router = test_app(&f).build().unwrap().router();
    let mut r = req("GET", "/ctx", Body::empty());
    r.headers_mut().insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let (status, _, body) = send(&router, r).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service"], "rotation-worker");
    assert_eq!(v["revision"], "rotation-worker-00007");
    assert_eq!(v["trace"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(v["sampled"], true);
    assert_eq!(v["deadline_ok"], true);
    assert_eq!(v["caller"], serde_json::Value::Null);
    assert_eq!(v["request_id"].as_str().unwrap().len(), 36);

    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let (_, _, body) = send(&router, req("GET", "/ctx", Body::empty())).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["service"], "test-fn",
        "the builder's name without K_SERVICE"
    );
    assert_eq!(v["trace"], serde_json::Value::Null);
}

fn push_request(auth: Option<&str>) -> Request<Body> {
    let mut r = req(
        "POST",
        "/events/rotation",
        r#"{"message":{"data":"aGVsbG8=","messageId":"m-1"},"subscription":"projects/p/subscriptions/s"}"#,
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(a) = auth {
        r.headers_mut()
            .insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    r
}

#[tokio::test]
async fn push_routes_need_a_verified_caller() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let (status, _, body) = send(&router, push_request(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "missing bearer token (Authorization header)\n");

    let not_allowed = f.bearer(names::PRINCIPAL_AUDIT_ALERTER);
    let (status, _, body) = send(&router, push_request(Some(&not_allowed))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("not allowed"), "{body}");
    assert!(
        !body.contains(&not_allowed[7..]),
        "the token is never echoed"
    );

    let good = f.bearer(names::PRINCIPAL_PUSH);
    let (status, _, body) = send(&router, push_request(Some(&good))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "m-1");
    assert_eq!(v["data"], "hello");
    assert_eq!(v["caller"], names::PRINCIPAL_PUSH);

    // Authenticated but malformed: a 400 naming the problem.
    let mut r = req("POST", "/events/rotation", "{\"message\":{}}");
    r.headers_mut()
        .insert(header::AUTHORIZATION, HeaderValue::from_str(&good).unwrap());
    let (status, _, body) = send(&router, r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, "message.messageId is missing\n");
}

#[tokio::test]
async fn scheduler_routes_decode_the_job() {
    let f = fixture(&[]);
    let router = test_app(&f).build().unwrap().router();
    let mut r = req("POST", "/tasks/finish", "{}");
    r.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&f.bearer(names::PRINCIPAL_SCHEDULER)).unwrap(),
    );
    r.headers_mut().insert(
        "x-cloudscheduler-jobname",
        HeaderValue::from_static("jobs/finish"),
    );
    r.headers_mut().insert(
        "x-cloudscheduler-scheduletime",
        HeaderValue::from_static("2024-05-01T10:00:00Z"),
    );
    let (status, _, body) = send(&router, r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "jobs/finish@2024-05-01T10:00:00Z\n");
    let (status, _, _) = send(&router, req("POST", "/tasks/finish", "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_is_a_503() {
    let f = fixture(&[]);
    let router = App::builder("t", &f.config)
        .default_request_timeout(Duration::from_secs(5))
        .http(
            Method::GET,
            "/slow",
            1,
            handler_fn(|_inv: Invocation<HttpRequest>| async move {
                std::future::pending::<Result<Reply, HandlerError>>().await
            }),
        )
        .build()
        .unwrap()
        .router();
    let (status, _, body) = send(&router, req("GET", "/slow", Body::empty())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "request timed out after 5s\n");
}

/// A handler that takes 100 s (of paused time).
fn slow_app(config: &Config) -> AppBuilder {
    App::builder("t", config).http(
        Method::GET,
        "/slow",
        1,
        handler_fn(|_inv: Invocation<HttpRequest>| async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            Ok(Reply::no_content())
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn the_request_timeout_is_the_environments_then_the_functions_then_60s() {
    // The default: 60 s, so the 100 s handler is cut.
    let f = fixture(&[]);
    let router = slow_app(&f.config).build().unwrap().router();
    let (status, _, body) = send(&router, req("GET", "/slow", Body::empty())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "request timed out after 1m\n");

    // Infra's PATCHPANDA_REQUEST_TIMEOUT (rotation-worker: 600s) lets it finish.
    let f = fixture(&[("PATCHPANDA_REQUEST_TIMEOUT", "600s")]);
    let router = slow_app(&f.config).build().unwrap().router();
    let (status, _, body) = send(&router, req("GET", "/slow", Body::empty())).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // A function's own default does too...
    let f = fixture(&[]);
    let router = slow_app(&f.config)
        .default_request_timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .router();
    let (status, _, _) = send(&router, req("GET", "/slow", Body::empty())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // ...but the variable wins over it: Cloud Run cuts at its own timeout.
    let f = fixture(&[("PATCHPANDA_REQUEST_TIMEOUT", "30s")]);
    let router = slow_app(&f.config)
        .default_request_timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .router();
    let (status, _, body) = send(&router, req("GET", "/slow", Body::empty())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "request timed out after 30s\n");
}

#[tokio::test]
async fn a_push_of_pubsubs_largest_message_fits_the_body_limit() {
    use base64::Engine as _;
    let f = fixture(&[]);
    let router = App::builder("t", &f.config)
        .verifier(f.verifier())
        .push(
            "/events/big",
            handler_fn(|inv: Invocation<PushMessage>| async move {
                Ok(Reply::text(
                    StatusCode::OK,
                    inv.event.data.len().to_string(),
                ))
            }),
        )
        .build()
        .unwrap()
        .router();
    // Pub/Sub's limit: 10 MB per message (data and attributes); push sends
    // the data base64-encoded in the JSON envelope.
    let data = vec![0xA5u8; 10_000_000 - 1024];
    let attributes: serde_json::Map<String, serde_json::Value> = (0..16)
        .map(|i| {
            (
                format!("attr-{i:02}"),
                serde_json::Value::from("v".repeat(56)),
            )
        })
        .collect();
    let envelope = serde_json::json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(&data),
            "attributes": attributes,
            "messageId": "m-big",
            "message_id": "m-big",
            "publishTime": "2024-05-01T10:00:00Z",
            "publish_time": "2024-05-01T10:00:00Z",
        },
        "subscription": "projects/p/subscriptions/s",
    });
    let body = serde_json::to_vec(&envelope).unwrap();
    assert!(body.len() > 13_000_000, "{}", body.len());
    let mut r = req("POST", "/events/big", body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&f.bearer(names::PRINCIPAL_PUSH)).unwrap(),
    );
    let (status, _, reply) = send(&router, r).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply.trim(), data.len().to_string());
}

#[test]
fn bad_routes_are_refused_at_build() {
    let f = fixture(&[]);
    let h = || handler_fn(|_inv: Invocation<HttpRequest>| async { Ok(Reply::no_content()) });
    let cases = [
        App::builder("t", &f.config).http(Method::GET, "no-slash", 1, h()),
        App::builder("t", &f.config).http(Method::GET, "/{id}", 1, h()),
        App::builder("t", &f.config).http(Method::GET, "/health", 1, h()),
        App::builder("t", &f.config).http(Method::GET, "/x", 0, h()),
        App::builder("t", &f.config)
            .http(Method::GET, "/x", 1, h())
            .http(Method::GET, "/x", 1, h()),
    ];
    for builder in cases {
        assert!(matches!(
            builder.build(),
            Err(crate::Error::InvalidArgument(_))
        ));
    }
    // Two methods on one path is fine; 405 lists both.
    assert!(
        App::builder("t", &f.config)
            .http(Method::GET, "/x", 1, h())
            .http(Method::POST, "/x", 1, h())
            .build()
            .is_ok()
    );
}

#[test]
fn the_default_verifier_comes_from_config_only_when_needed() {
    let config_for = |home: &std::path::Path| {
        let env = Env::from_pairs([("PATCHPANDA_HOME", home.to_str().unwrap())]);
        Config::from_env(&env, "x").unwrap()
    };
    let h = || handler_fn(|_inv: Invocation<HttpRequest>| async { Ok(Reply::no_content()) });
    let empty = tempfile::tempdir().unwrap();
    let home = empty.path().join("h");
    let app = App::builder("t", &config_for(&home))
        .http(Method::POST, "/webhook", 1, h())
        .build()
        .unwrap();
    assert!(app.shared.verifier.is_none());
    assert!(!home.exists(), "no push route, no issuer key");
    let seeded = crate::auth::local::test_keys::home_with_key(1);
    let app = App::builder("t", &config_for(seeded.path()))
        .push(
            "/events/x",
            handler_fn(|_inv: Invocation<PushMessage>| async { Ok(Reply::no_content()) }),
        )
        .build()
        .unwrap();
    let verifier = app.shared.verifier.as_ref().unwrap();
    assert_eq!(verifier.settings().issuers, [names::LOCAL_ISSUER]);
}

/// A handler that signals when it starts and finishes when released.
fn gated_app(
    f: &Fixture,
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
) -> App {
    App::builder("t", &f.config)
        .http(
            Method::POST,
            "/wait",
            1024,
            handler_fn(move |_inv: Invocation<HttpRequest>| {
                let entered = entered.clone();
                let release = release.clone();
                async move {
                    entered.notify_one();
                    release.notified().await;
                    Ok(Reply::text(StatusCode::OK, "finished"))
                }
            }),
        )
        .build()
        .unwrap()
}

async fn raw_post(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /wait HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_request() {
    let f = fixture(&[]);
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let app = gated_app(&f, entered.clone(), release.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async move {
        let _ = stop_rx.await;
    }));
    let client = tokio::spawn(raw_post(addr));
    entered.notified().await;
    stop_tx.send(()).unwrap();
    // The server keeps waiting for the request in flight.
    tokio::task::yield_now().await;
    assert!(!server.is_finished());
    release.notify_one();
    let response = client.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("finished\n"), "{response}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_a_stuck_request_after_the_drain_deadline() {
    let f = fixture(&[]);
    let entered = Arc::new(tokio::sync::Notify::new());
    let never = Arc::new(tokio::sync::Notify::new());
    let app = gated_app(&f, entered.clone(), never);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_with_drain(
        listener,
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_millis(50),
    ));
    let _client = tokio::spawn(raw_post(addr));
    entered.notified().await;
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
