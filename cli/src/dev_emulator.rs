//! Emulator mode of `patchpanda dev` (PUBSUB_EMULATOR_HOST set): the topics
//! and subscriptions of infra/terraform/pubsub.tf are created in Google's
//! Pub/Sub emulator, and its pushes reach the functions with OIDC tokens.
//!
//! The emulator keeps a push subscription's `oidcToken` settings but sends
//! no token, and the functions refuse a push without one, in every mode.
//! So each push subscription's endpoint is this relay, at a path holding a
//! random 256-bit capability only the emulator is told: the relay checks it
//! (constant time), mints the token the subscription names (its push
//! account and audience) with the local issuer, and forwards the envelope
//! unchanged to the function, answering with the function's status so the
//! emulator's ack, retry and dead-letter behaviour stays Google's. The
//! functions trust the local issuer only with PATCHPANDA_BACKEND=local,
//! which Cloud Run never runs (auth/mod.rs); the relay exists only here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::bus::emulator::{PubsubEmulator, PushTarget};
use patchpanda_shared::bus::topology::{self, Function};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::commands::Failure;
use crate::dev_identity::Identities;

/// A base64-encoded 10 MB message in the JSON envelope fits (the runtime's
/// push limit).
const MAX_PUSH_BODY: usize = 16 * 1024 * 1024;
/// How long a minted push token lives; each push gets a fresh one.
const TOKEN_TTL: Duration = Duration::from_secs(600);

/// One push the relay forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The subscription id.
    pub subscription: String,
    /// The function's answer; 503 when it could not be reached.
    pub status: u16,
}

/// The last [`PUSH_LOG_LEN`] pushes the relay forwarded, oldest first
/// (for tests and troubleshooting).
#[derive(Debug, Clone, Default)]
pub struct PushLog(Arc<Mutex<VecDeque<Forwarded>>>);

/// A long-running `patchpanda dev` keeps only this many.
const PUSH_LOG_LEN: usize = 1000;

impl PushLog {
    pub fn all(&self) -> Vec<Forwarded> {
        self.0
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record(&self, f: Forwarded) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() == PUSH_LOG_LEN {
                v.pop_front();
            }
            v.push_back(f);
        }
    }
}

/// The emulator side of a running stack.
#[derive(Debug, Clone)]
pub struct EmulatorStack {
    pub emulator: PubsubEmulator,
    /// Where the relay listens.
    pub relay: SocketAddr,
    pub pushes: PushLog,
}

#[derive(Debug, Clone)]
struct Route {
    target: String,
    audience: String,
    service_account: String,
    timeout: Duration,
}

#[derive(Clone)]
struct Relay {
    capability: Arc<String>,
    routes: Arc<HashMap<String, Route>>,
    issuer: Arc<LocalIssuer>,
    client: reqwest::Client,
    log: PushLog,
}

/// Creates the topology in the emulator, pushing to the functions at
/// `functions` (their `http://addr`) and to `extra_github_pushes`, and
/// starts the relay. Returns once the emulator holds every subscription.
pub async fn start(
    emulator: &PubsubEmulator,
    functions: &dyn Fn(Function) -> SocketAddr,
    extra_github_pushes: &[String],
    identities: &Identities,
    issuer: Arc<LocalIssuer>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<EmulatorStack, Failure> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| Failure(format!("cannot listen for the emulator's pushes: {e}")))?;
    let relay_addr = listener.local_addr()?;
    let capability: [u8; 32] = rand::random();
    let capability = hex::encode(capability);

    let mut targets = Vec::new();
    let mut routes = HashMap::new();
    for sub in &topology::PUSH_SUBSCRIPTIONS {
        // The audience is the function's own URL, which the local verifier
        // expects when PATCHPANDA_PUSH_AUDIENCE is unset.
        let target = format!("http://{}{}", functions(sub.function), sub.path);
        targets.push(PushTarget::of(
            sub,
            format!("http://{relay_addr}/push/{capability}/{}", sub.id()),
            &identities.push,
            target.clone(),
        ));
        routes.insert(
            sub.id(),
            Route {
                audience: target.clone(),
                target,
                service_account: identities.push.clone(),
                timeout: sub.ack_deadline,
            },
        );
    }
    for (i, url) in extra_github_pushes.iter().enumerate() {
        // pubsub.tf's github_events_push: id github-events-push-<i>, the
        // endpoint is its own audience, ack deadline 60 s.
        let id = format!("patchpanda-github-events-push-{i}");
        targets.push(PushTarget {
            id: id.clone(),
            topic: patchpanda_shared::names::TOPIC_GITHUB_EVENTS.to_string(),
            ack_deadline: Duration::from_secs(60),
            max_attempts: topology::PUSH_MAX_DELIVERY_ATTEMPTS,
            endpoint: format!("http://{relay_addr}/push/{capability}/{id}"),
            service_account: identities.push.clone(),
            audience: url.clone(),
        });
        routes.insert(
            id,
            Route {
                target: url.clone(),
                audience: url.clone(),
                service_account: identities.push.clone(),
                timeout: Duration::from_secs(60),
            },
        );
    }

    let admin = emulator.admin().await?;
    admin.provision(&targets).await.map_err(|e| {
        Failure(format!(
            "cannot create the topics and subscriptions in the Pub/Sub emulator at {}: {e}",
            emulator.host
        ))
    })?;

    let log = PushLog::default();
    let relay = Relay {
        capability: Arc::new(capability),
        routes: Arc::new(routes),
        issuer,
        // Pushes go to this machine (or the URLs the operator named); a
        // proxy from the environment must not intercept them.
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default(),
        log: log.clone(),
    };
    let app = router(relay);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the emulator push relay stopped");
        }
    });
    Ok(EmulatorStack {
        emulator: emulator.clone(),
        relay: relay_addr,
        pushes: log,
    })
}

fn router(relay: Relay) -> axum::Router {
    axum::Router::new()
        .route("/push/{capability}/{subscription}", post(forward))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
        .with_state(relay)
}

async fn forward(
    State(relay): State<Relay>,
    Path((capability, subscription)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let known: bool = capability
        .as_bytes()
        .ct_eq(relay.capability.as_bytes())
        .into();
    if !known {
        return StatusCode::NOT_FOUND;
    }
    let Some(route) = relay.routes.get(&subscription) else {
        return StatusCode::NOT_FOUND;
    };
    let token = match relay
        .issuer
        .mint(&route.audience, &route.service_account, TOKEN_TTL)
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(subscription, error = %e, "cannot mint a push token");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    };
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let status = match relay
        .client
        .post(&route.target)
        .bearer_auth(token)
        .header(http::header::CONTENT_TYPE, content_type)
        .timeout(route.timeout)
        .body(body)
        .send()
        .await
    {
        Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        Err(e) => {
            tracing::warn!(subscription, error = %e, "push target unreachable");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    relay.log.record(Forwarded {
        subscription,
        status: status.as_u16(),
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function stand-in: records the bearer token it got, answers 503
    /// for bodies saying "fail".
    async fn target(
        State(seen): State<Arc<Mutex<Vec<String>>>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        seen.lock().unwrap().push(token);
        if &body[..] == b"fail" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        }
    }

    async fn serve(app: axum::Router) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn the_relay_forwards_only_with_the_capability_and_signs_as_the_push_account() {
        let home = tempfile::tempdir().unwrap();
        let issuer = Arc::new(LocalIssuer::open_or_create(home.path()).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fn_addr = serve(
            axum::Router::new()
                .route("/events/rotation", post(target))
                .with_state(seen.clone()),
        )
        .await;
        let target_url = format!("http://{fn_addr}/events/rotation");
        let routes = HashMap::from([(
            "patchpanda-rotation-events-webhook-ingest".to_string(),
            Route {
                target: target_url.clone(),
                audience: target_url.clone(),
                service_account: "patchpanda-push@acme-prod.iam.gserviceaccount.com".into(),
                timeout: Duration::from_secs(5),
            },
        )]);
        let log = PushLog::default();
        let relay = Relay {
            capability: Arc::new("c".repeat(64)),
            routes: Arc::new(routes),
            issuer: issuer.clone(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            log: log.clone(),
        };
        let addr = serve(router(relay)).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let post = |path: String, body: &'static str| {
            let client = client.clone();
            async move {
                client
                    .post(format!("http://{addr}{path}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        let sub = "patchpanda-rotation-events-webhook-ingest";
        // A wrong or missing capability, or an unknown subscription, reaches
        // nothing.
        assert_eq!(
            post(format!("/push/{}/{sub}", "d".repeat(64)), "{}").await,
            404
        );
        assert_eq!(post(format!("/push/c/{sub}"), "{}").await, 404);
        assert_eq!(
            post(format!("/push/{}/other", "c".repeat(64)), "{}").await,
            404
        );
        assert!(seen.lock().unwrap().is_empty());
        assert!(log.all().is_empty());

        // The right one forwards with a token for the subscription's account
        // and audience, and answers with the function's status.
        assert_eq!(
            post(format!("/push/{}/{sub}", "c".repeat(64)), "{}").await,
            204
        );
        assert_eq!(
            post(format!("/push/{}/{sub}", "c".repeat(64)), "fail").await,
            503
        );
        let tokens = seen.lock().unwrap().clone();
        assert_eq!(tokens.len(), 2);
        let verifier = patchpanda_shared::auth::PushVerifier::new(
            Arc::new(
                patchpanda_shared::auth::StaticKeys::default()
                    .with_key(issuer.kid(), issuer.decoding_key().clone()),
            ),
            patchpanda_shared::auth::VerifierSettings::local(
                Some(target_url.clone()),
                vec!["patchpanda-push@acme-prod.iam.gserviceaccount.com".into()],
            ),
        );
        let caller = verifier
            .verify_token(tokens[0].strip_prefix("Bearer ").unwrap(), &[target_url])
            .await
            .unwrap();
        assert_eq!(
            caller.email,
            "patchpanda-push@acme-prod.iam.gserviceaccount.com"
        );
        let statuses: Vec<u16> = log.all().iter().map(|f| f.status).collect();
        assert_eq!(statuses, vec![204, 503]);
    }
}
