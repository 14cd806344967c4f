//! The shared doubles (`patchpanda_shared::testing`: Secret Manager in
//! memory and a recording bus, each behind `Flaky` so a test can take it
//! down and count its calls), the rotation worker's writes on them, and a
//! harness that calls the handlers directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use chrono::Utc;
use futures::FutureExt;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::runtime::events::PushFormat;
use patchpanda_shared::runtime::{
    Context, HandlerError, HttpRequest, Invocation, PushMessage, Reply, SchedulerJob,
};
use patchpanda_shared::secrets::{SecretStore, SecretUpdate};
pub use patchpanda_shared::testing::{Call, Flaky, MemorySecretStore, RecordingBus};
use patchpanda_shared::{Error, Result};
use tower::ServiceExt;
use webhook_ingest::{MemoryMark, Settings, WebhookIngest};

pub const WEBHOOK_ID: &str = "patchpanda-webhook-secret";
/// The webhook secret most tests seed.
pub const SECRET: &str = "first-webhook-secret";
pub const KEY_ID: &str = "patchpanda-github-private-key";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A delivery as GitHub sends it, signed with `secret`.
pub fn signed(event: &str, delivery: &str, body: &[u8], secret: &str) -> HttpRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-github-event", event.parse().unwrap());
    headers.insert("x-github-delivery", delivery.parse().unwrap());
    headers.insert("x-github-hook-id", "77".parse().unwrap());
    headers.insert(
        "x-github-hook-installation-target-type",
        "integration".parse().unwrap(),
    );
    headers.insert("user-agent", "GitHub-Hookshot/abc123".parse().unwrap());
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    headers.insert(
        signature::HEADER,
        signature::sign(secret.as_bytes(), body).parse().unwrap(),
    );
    HttpRequest {
        method: http::Method::POST,
        uri: "/webhook".parse().unwrap(),
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    }
}

pub fn assert_status(r: std::result::Result<Reply, HandlerError>, status: http::StatusCode) {
    match r {
        Ok(reply) => assert_eq!(reply.status, status, "got a reply: {reply:?}"),
        Err(e) => assert_eq!(e.status(), status, "{e}"),
    }
}

// ---------------------------------------------------------------------------

/// What the rotation worker writes, done on the store behind the `Flaky`
/// (so neither counted nor failed). The memory store never waits, so these
/// run to completion at once.
pub trait Rotations {
    /// A secret with versions 1..=n, `current` the last, `previous` the one
    /// before (no grace annotation).
    fn seed(&self, id: &str, values: &[&str]);
    /// What the rotation worker does: a new version becomes `current`, the
    /// old one `previous`, with the grace annotation (or none: emergency).
    fn rotate(&self, id: &str, value: &str, grace_until: Option<&str>);
    /// What the rotation worker does first: a new version, aliased
    /// `pending`, announced before GitHub signs with it.
    fn begin_rotation(&self, id: &str, value: &str);
    fn annotate(&self, id: &str, grace_until: Option<&str>);
}

fn at_once<T>(f: impl std::future::Future<Output = Result<T>>) -> T {
    f.now_or_never()
        .expect("the memory store never waits")
        .unwrap()
}

fn set_aliases(store: &MemorySecretStore, id: &str, aliases: BTreeMap<String, u64>) {
    let update = SecretUpdate {
        aliases: Some(aliases),
        annotations: None,
    };
    at_once(store.update_secret(id, update, None));
}

impl Rotations for Flaky<MemorySecretStore> {
    fn seed(&self, id: &str, values: &[&str]) {
        let store = self.inner();
        at_once(store.create_secret(id));
        for v in values {
            at_once(store.add_version(id, v.as_bytes()));
        }
        let n = values.len() as u64;
        let mut aliases = BTreeMap::from([(names::ALIAS_CURRENT.to_string(), n)]);
        if n > 1 {
            aliases.insert(names::ALIAS_PREVIOUS.to_string(), n - 1);
        }
        set_aliases(store, id, aliases);
    }

    fn rotate(&self, id: &str, value: &str, grace_until: Option<&str>) {
        let store = self.inner();
        let n = at_once(store.add_version(id, value.as_bytes())).number;
        let mut aliases = at_once(store.get_secret(id)).aliases;
        let old = aliases[names::ALIAS_CURRENT];
        aliases.insert(names::ALIAS_CURRENT.into(), n);
        aliases.insert(names::ALIAS_PREVIOUS.into(), old);
        set_aliases(store, id, aliases);
        self.annotate(id, grace_until);
    }

    fn begin_rotation(&self, id: &str, value: &str) {
        let store = self.inner();
        let n = at_once(store.add_version(id, value.as_bytes())).number;
        let mut aliases = at_once(store.get_secret(id)).aliases;
        aliases.insert(names::ALIAS_PENDING.into(), n);
        set_aliases(store, id, aliases);
    }

    fn annotate(&self, id: &str, grace_until: Option<&str>) {
        let store = self.inner();
        let mut annotations = at_once(store.get_secret(id)).annotations;
        match grace_until {
            Some(t) => annotations.insert(names::ANNOTATION_PREVIOUS_VALID_UNTIL.into(), t.into()),
            None => annotations.remove(names::ANNOTATION_PREVIOUS_VALID_UNTIL),
        };
        let update = SecretUpdate {
            aliases: None,
            annotations: Some(annotations),
        };
        at_once(store.update_secret(id, update, None));
    }
}

/// Every call of the store fails Unavailable, as in an outage.
pub fn store_down(store: &Flaky<MemorySecretStore>) {
    store.fail_always_all(
        &Call::SECRET_STORE,
        Error::Unavailable("secret store down (test)".into()),
    );
}

/// Every publish and check of the bus fails Unavailable until healed.
pub fn bus_down(bus: &Flaky<RecordingBus>) {
    bus.fail_always_all(&Call::BUS, Error::Unavailable("bus down (test)".into()));
}

// ---------------------------------------------------------------------------

pub struct Harness {
    pub store: Arc<Flaky<MemorySecretStore>>,
    pub bus: Arc<Flaky<RecordingBus>>,
    pub wi: WebhookIngest,
    pub config: Config,
    /// PATCHPANDA_HOME, for the local token issuer the router's OIDC checks use.
    _home: tempfile::TempDir,
}

impl Harness {
    pub fn new(webhook_secrets: &[&str], env: &[(&str, &str)]) -> Self {
        Self::with_env(webhook_secrets, &[], env)
    }

    /// `key` seeds the App's private key, when a test needs one.
    pub fn with_env(webhook_secrets: &[&str], key: &[&str], env: &[(&str, &str)]) -> Self {
        let store = Arc::new(Flaky::new(MemorySecretStore::new()));
        if !webhook_secrets.is_empty() {
            store.seed(WEBHOOK_ID, webhook_secrets);
        }
        if !key.is_empty() {
            store.seed(KEY_ID, key);
        }
        let bus = Arc::new(Flaky::new(RecordingBus::new()));
        let home = tempfile::tempdir().unwrap();
        let mut env = Env::from_pairs(env.iter().copied());
        env.set("PATCHPANDA_HOME", home.path().display().to_string());
        let config = Config::from_env(&env, names::PRINCIPAL_WEBHOOK_INGEST).unwrap();
        let settings = Settings::from_env(&env).unwrap();
        let wi = WebhookIngest::new(
            &config,
            &settings,
            store.clone(),
            bus.clone(),
            Arc::new(MemoryMark::default()),
        );
        Self {
            store,
            bus,
            wi,
            config,
            _home: home,
        }
    }

    /// The routes through the HTTP router, as the runtime serves them.
    pub fn router(&self) -> axum::Router {
        self.wi.app(&self.config).unwrap().router()
    }

    pub fn ctx() -> Context {
        Context::for_test("webhook-ingest")
    }

    pub async fn webhook(&self, req: HttpRequest) -> std::result::Result<Reply, HandlerError> {
        self.wi
            .webhook_handler()
            .oneshot(Invocation::new(req, Self::ctx()))
            .await
    }

    pub async fn rotation_notice(&self, secret: &str) -> std::result::Result<Reply, HandlerError> {
        self.notice(secret, NoticeEvent::Rotated).await
    }

    pub async fn notice(
        &self,
        secret: &str,
        event: NoticeEvent,
    ) -> std::result::Result<Reply, HandlerError> {
        let mut n = RotationNotice::new(secret, event, "r-1");
        n.version = Some(2);
        let m = n.to_message();
        self.push_raw(&m.data, m.attributes).await
    }

    pub async fn push_raw(
        &self,
        data: &[u8],
        attributes: BTreeMap<String, String>,
    ) -> std::result::Result<Reply, HandlerError> {
        let msg = PushMessage {
            message_id: "1".into(),
            data: bytes::Bytes::copy_from_slice(data),
            attributes,
            ordering_key: None,
            publish_time: Some(Utc::now()),
            subscription: Some("projects/local/subscriptions/webhook-ingest".into()),
            delivery_attempt: None,
            format: PushFormat::Wrapped,
        };
        self.wi
            .rotation_handler()
            .oneshot(Invocation::new(msg, Self::ctx()))
            .await
    }

    pub async fn sweep(&self) -> serde_json::Value {
        let job = SchedulerJob {
            job_name: Some("redeliver".into()),
            schedule_time: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let reply = self
            .wi
            .redeliver_handler()
            .oneshot(Invocation::new(job, Self::ctx()))
            .await
            .unwrap_or_else(|e| panic!("sweep failed: {e}"));
        assert_eq!(reply.status, http::StatusCode::OK);
        serde_json::from_slice(&reply.body).unwrap()
    }
}

/// Base64 for push envelopes.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
