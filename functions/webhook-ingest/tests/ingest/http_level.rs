//! The routes through the HTTP router, on the real local backend (SQLite
//! store and bus under a temporary PATCHPANDA_HOME), OIDC included.

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::secrets::{SecretUpdate, VersionRef};
use tower::ServiceExt;

use super::support::*;

const AUDIENCE: &str = "https://webhook-ingest.test";

struct Local {
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// The operator's view of the same home (rotation-worker identity).
    admin: Backends,
    router: axum::Router,
    home: std::path::PathBuf,
}

impl Local {
    async fn start() -> Local {
        Self::start_with(&[]).await
    }

    /// With `extra` settings for webhook-ingest.
    async fn start_with(extra: &[(&str, &str)]) -> Local {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let mut env: Vec<(String, String)> = vec![
            ("PATCHPANDA_BACKEND".into(), "local".into()),
            ("PATCHPANDA_HOME".into(), home.display().to_string()),
            ("PATCHPANDA_PUSH_AUDIENCE".into(), AUDIENCE.into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let admin_config = Config::from_env(
            &Env::from_pairs(env.clone()),
            names::PRINCIPAL_ROTATION_WORKER,
        )
        .unwrap();
        let admin = Backends::open(&admin_config).await.unwrap();
        admin.secrets.create_secret(WEBHOOK_ID).await.unwrap();
        admin
            .secrets
            .add_version(WEBHOOK_ID, b"local-secret-1")
            .await
            .unwrap();
        let router = Self::instance_on(&env).await;
        Local {
            _dir: dir,
            env,
            admin,
            router,
            home,
        }
    }

    async fn instance_on(env: &[(String, String)]) -> axum::Router {
        let config = Config::from_env(
            &Env::from_pairs(env.to_vec()),
            names::PRINCIPAL_WEBHOOK_INGEST,
        )
        .unwrap();
        webhook_ingest::app(config, Env::from_pairs(env.to_vec()))
            .await
            .unwrap()
            .router()
    }

    /// Another webhook-ingest instance on the same store and bus.
    async fn instance(&self) -> axum::Router {
        Self::instance_on(&self.env).await
    }

    async fn send_to(router: &axum::Router, req: Request<Body>) -> StatusCode {
        router.clone().oneshot(req).await.unwrap().status()
    }

    /// A rotation notice, pushed as Pub/Sub would, with the push identity.
    fn notice(&self, notice: &RotationNotice) -> Request<Body> {
        let m = notice.to_message();
        let envelope = serde_json::json!({
            "message": {
                "data": b64(&m.data),
                "attributes": m.attributes,
                "messageId": "43",
                "publishTime": chrono::Utc::now().to_rfc3339(),
            },
            "subscription": "projects/local/subscriptions/webhook-ingest-rotation",
        })
        .to_string();
        Request::post("/events/rotation")
            .header("content-type", "application/json")
            .header(
                "authorization",
                format!("Bearer {}", self.token(names::PRINCIPAL_PUSH)),
            )
            .body(Body::from(envelope))
            .unwrap()
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, String) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn delivery(&self, id: &str, body: Vec<u8>, secret: &str) -> Request<Body> {
        Request::post("/webhook")
            .header("x-github-event", "push")
            .header("x-github-delivery", id)
            .header("content-type", "application/json")
            .header(signature::HEADER, signature::sign(secret.as_bytes(), &body))
            .body(Body::from(body))
            .unwrap()
    }

    fn token(&self, email: &str) -> String {
        LocalIssuer::open_or_create(&self.home)
            .unwrap()
            .mint(AUDIENCE, email, Duration::from_secs(300))
            .unwrap()
    }

    fn published(&self) -> Vec<patchpanda_shared::bus::PublishedMessage> {
        self.admin
            .local
            .as_ref()
            .unwrap()
            .bus
            .messages(names::TOPIC_GITHUB_EVENTS)
            .unwrap()
    }
}

#[tokio::test]
async fn the_routes_on_the_local_backend() {
    let l = Local::start().await;
    let _ = &l.env;

    let (status, body) = l
        .send(Request::get("/ready").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let payload = fixture("push.json");
    let (status, body) = l
        .send(l.delivery("http-1", payload.clone(), "local-secret-1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let published = l.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].data, payload);
    assert_eq!(published[0].attributes["github_delivery"], "http-1");
    assert!(
        body.contains(&published[0].id),
        "the answer names the message: {body}"
    );

    let (status, _) = l
        .send(l.delivery("http-2", payload.clone(), "not-the-secret"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Over 25 MiB: refused from the declared length, nothing buffered or
    // published.
    let (status, body) = l
        .send(
            Request::post("/webhook")
                .header("x-github-event", "push")
                .header("x-github-delivery", "http-big")
                .header("content-length", (25 * 1024 * 1024 + 1).to_string())
                .header(signature::HEADER, "sha256=00")
                .body(Body::from(vec![b' '; 25 * 1024 * 1024 + 1]))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Exactly at the limit is accepted.
    let mut at_limit = format!("{{\"ref\":\"x\",\"pad\":\"{}", "a".repeat(25 * 1024 * 1024));
    at_limit.truncate(25 * 1024 * 1024 - 2);
    at_limit.push_str("\"}");
    let (status, body) = l
        .send(l.delivery("http-limit", at_limit.into_bytes(), "local-secret-1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let last = l.published().pop().unwrap();
    assert_eq!(last.attributes["content_encoding"], "gzip");
    assert_eq!(l.published().len(), 2);
}

#[tokio::test]
async fn rotation_notices_need_a_token_and_reload_the_secret() {
    let l = Local::start().await;
    // Rotate: v2 becomes current, v1 previous for an hour.
    let s = &l.admin.secrets;
    s.add_version(WEBHOOK_ID, b"local-secret-2").await.unwrap();
    let grace = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    s.update_secret(
        WEBHOOK_ID,
        SecretUpdate {
            aliases: Some(
                [
                    (names::ALIAS_CURRENT.to_string(), 2),
                    (names::ALIAS_PREVIOUS.to_string(), 1),
                ]
                .into(),
            ),
            annotations: Some([(names::ANNOTATION_PREVIOUS_VALID_UNTIL.to_string(), grace)].into()),
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_version(WEBHOOK_ID, &VersionRef::alias("current"))
            .await
            .unwrap()
            .number,
        2
    );
    let payload = fixture("push.json");
    let (status, _) = l
        .send(l.delivery("r-1", payload.clone(), "local-secret-2"))
        .await;
    // No notice yet, but a mismatch re-reads the secret once: accepted.
    assert_eq!(status, StatusCode::ACCEPTED, "re-read after a mismatch");

    let notice =
        RotationNotice::new(names::WEBHOOK_SECRET, NoticeEvent::Rotated, "rot-1").to_message();
    let envelope = serde_json::json!({
        "message": {
            "data": b64(&notice.data),
            "attributes": notice.attributes,
            "messageId": "42",
            "publishTime": chrono::Utc::now().to_rfc3339(),
        },
        "subscription": "projects/local/subscriptions/webhook-ingest-rotation",
    })
    .to_string();
    let push = |token: Option<String>| {
        let mut b = Request::post("/events/rotation").header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Body::from(envelope.clone())).unwrap()
    };
    let (status, _) = l.send(push(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = l.send(push(Some(l.token("stranger@example.com")))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = l.send(push(Some(l.token(names::PRINCIPAL_PUSH)))).await;
    assert!(status.is_success(), "{status} {body}");

    let (status, body) = l
        .send(l.delivery("r-2", payload.clone(), "local-secret-2"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = l.send(l.delivery("r-3", payload, "local-secret-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "previous, in grace: {body}");
    let versions: Vec<String> = l
        .published()
        .iter()
        .map(|m| m.attributes["secret_version"].clone())
        .collect();
    assert_eq!(versions, vec!["2", "2", "1"]);

    // The sweep, called as the scheduler would: no App here.
    let (status, body) = l
        .send(
            Request::post("/tasks/redeliver")
                .header(
                    "authorization",
                    format!("Bearer {}", l.token(names::PRINCIPAL_SCHEDULER)),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("no GitHub App configured; nothing to sweep"),
        "{body}"
    );
}

#[tokio::test]
async fn an_emergency_rotation_noticed_by_one_instance_reaches_the_other_within_the_interval() {
    // Two instances on one store and bus, checking the secret's metadata
    // every 300 ms (10 s in production), so the test need not wait 10 s.
    let l = Local::start_with(&[("PATCHPANDA_INGEST_SECRET_CHECK_INTERVAL", "300ms")]).await;
    let a = &l.router;
    let b = l.instance().await;
    let payload = fixture("push.json");
    for (i, r) in [a, &b].into_iter().enumerate() {
        let req = l.delivery(&format!("before-{i}"), payload.clone(), "local-secret-1");
        assert_eq!(Local::send_to(r, req).await, StatusCode::ACCEPTED);
    }

    // The secret leaked: an emergency rotation, no grace for the old one.
    let s = &l.admin.secrets;
    s.add_version(WEBHOOK_ID, b"local-secret-2").await.unwrap();
    s.update_secret(
        WEBHOOK_ID,
        SecretUpdate {
            aliases: Some(
                [
                    (names::ALIAS_CURRENT.to_string(), 2),
                    (names::ALIAS_PREVIOUS.to_string(), 1),
                ]
                .into(),
            ),
            annotations: Some(Default::default()),
        },
        None,
    )
    .await
    .unwrap();
    // Its notice reaches A only (a push subscription picks one instance).
    let mut n = RotationNotice::new(names::WEBHOOK_SECRET, NoticeEvent::Rotated, "rot-e");
    n.emergency = true;
    n.version = Some(2);
    assert!(Local::send_to(a, l.notice(&n)).await.is_success());
    let old = |id: &str| l.delivery(id, payload.clone(), "local-secret-1");
    assert_eq!(
        Local::send_to(a, old("a-old")).await,
        StatusCode::UNAUTHORIZED
    );

    // B heard nothing; once its interval has passed, the next delivery's
    // metadata check finds the change and B refuses the old secret too.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        Local::send_to(&b, old("b-old")).await,
        StatusCode::UNAUTHORIZED
    );
    let new = l.delivery("b-new", payload.clone(), "local-secret-2");
    assert_eq!(Local::send_to(&b, new).await, StatusCode::ACCEPTED);
    assert_eq!(
        Local::send_to(a, old("a-old-2")).await,
        StatusCode::UNAUTHORIZED
    );
}
