//! webhook-ingest: GitHub webhooks in, Pub/Sub messages out.
//!
//! - `POST /webhook` ([`ingest`]): verify, publish, then 202.
//! - `POST /events/rotation` ([`rotation`]): reload secrets on a notice.
//! - `POST /tasks/redeliver` ([`redeliver`]): ask GitHub to redeliver what
//!   failed.
//!
//! [`WebhookIngest`] holds the services with their dependencies injected, so
//! tests and the local stack can build one on any store and bus; [`app`] is
//! the production wiring.

pub mod dedupe;
pub mod ingest;
pub mod message;
pub mod ready;
pub mod redeliver;
pub mod rotation;
pub mod secrets;

use std::sync::Arc;

use http::{Method, StatusCode};
use patchpanda_shared::backends::Backends;
use patchpanda_shared::bus::Bus;
use patchpanda_shared::config::{Backend, Config, Env};
use patchpanda_shared::names;
use patchpanda_shared::runtime::server::BoxError;
use patchpanda_shared::runtime::{
    App, Handler, HttpRequest, PushMessage, Reply, SchedulerJob, handler_fn,
};
use patchpanda_shared::secrets::SecretStore;
use patchpanda_shared::secrets::cache::{CacheOptions, SecretCache};

pub use ingest::{Ingest, IngestSettings};
pub use redeliver::{FileMark, MemoryMark, SweepMark, SweepReport, SweepSettings, Sweeper};

pub const SERVICE: &str = "webhook-ingest";
pub const ROUTE_WEBHOOK: &str = "/webhook";
pub const ROUTE_ROTATION: &str = "/events/rotation";
pub const ROUTE_REDELIVER: &str = "/tasks/redeliver";

/// webhook-ingest's services, sharing one secret cache.
pub struct WebhookIngest {
    pub ingest: Arc<Ingest>,
    pub sweeper: Arc<Sweeper>,
    pub reloader: Arc<rotation::Reloader>,
    pub ready: Arc<ready::Ready>,
    cache: Arc<SecretCache>,
    load_ids: Vec<String>,
}

impl WebhookIngest {
    /// Wires the services on `secrets` and `bus`; nothing is read yet (see
    /// [`WebhookIngest::load`]).
    pub fn new(
        config: &Config,
        secrets: Arc<dyn SecretStore>,
        bus: Arc<dyn Bus>,
        mark: Arc<dyn SweepMark>,
    ) -> Self {
        let cache = Arc::new(SecretCache::new(secrets, CacheOptions::default()));
        let webhook_id = config.secret_id(names::WEBHOOK_SECRET);
        let keyring = Arc::new(secrets::WebhookKeyring::new(
            cache.clone(),
            webhook_id.clone(),
        ));
        let settings = IngestSettings {
            ordering_by_repository: config.ordering_by_repository,
            ..IngestSettings::default()
        };
        let ingest = Arc::new(Ingest::new(keyring.clone(), bus.clone(), settings));
        let app = config
            .github_app_id
            .as_ref()
            .map(|app_id| redeliver::AppSettings {
                api_url: config.github_api_url.clone(),
                app_id: app_id.clone(),
                cache: cache.clone(),
                key_secret_id: config.secret_id(names::GITHUB_PRIVATE_KEY),
            });
        let with_app = app.is_some();
        let sweeper = Arc::new(Sweeper::new(app, mark, SweepSettings::default()));
        let watched = rotation::watched(|l| config.secret_id(l), with_app);
        let load_ids = watched.iter().map(|(_, id)| id.clone()).collect();
        let reloader = Arc::new(rotation::Reloader::new(cache.clone(), watched));
        let ready = Arc::new(ready::Ready::new(keyring, bus));
        Self {
            ingest,
            sweeper,
            reloader,
            ready,
            cache,
            load_ids,
        }
    }

    /// Cold start: reads the webhook secret (and the App key, when an App is
    /// configured) in parallel. A failure is logged, not fatal: /ready says
    /// not ready and deliveries get 503 until a later read succeeds.
    pub async fn load(&self) {
        let loads = self.load_ids.iter().map(|id| async move {
            if let Err(e) = self.cache.get(id).await {
                tracing::warn!(secret = %id, error = %e, "could not load a secret at start; will retry on demand");
            }
        });
        futures::future::join_all(loads).await;
    }

    pub fn webhook_handler(&self) -> Handler<HttpRequest> {
        let ingest = self.ingest.clone();
        handler_fn(
            move |inv: patchpanda_shared::runtime::Invocation<HttpRequest>| {
                let ingest = ingest.clone();
                async move { ingest.webhook(inv.event).await }
            },
        )
    }

    pub fn rotation_handler(&self) -> Handler<PushMessage> {
        let reloader = self.reloader.clone();
        handler_fn(
            move |inv: patchpanda_shared::runtime::Invocation<PushMessage>| {
                let reloader = reloader.clone();
                async move { reloader.handle(inv.event).await }
            },
        )
    }

    pub fn redeliver_handler(&self) -> Handler<SchedulerJob> {
        let sweeper = self.sweeper.clone();
        handler_fn(
            move |inv: patchpanda_shared::runtime::Invocation<SchedulerJob>| {
                let sweeper = sweeper.clone();
                async move {
                    let report = sweeper.sweep(inv.ctx.deadline).await?;
                    Ok(Reply::json(StatusCode::OK, &report))
                }
            },
        )
    }

    /// The routes, with the 25 MiB body limit on `/webhook`.
    pub fn app(&self, config: &Config) -> Result<App, patchpanda_shared::Error> {
        App::builder(SERVICE, config)
            .http(
                Method::POST,
                ROUTE_WEBHOOK,
                ingest::BODY_LIMIT,
                self.webhook_handler(),
            )
            .push(ROUTE_ROTATION, self.rotation_handler())
            .scheduler(ROUTE_REDELIVER, self.redeliver_handler())
            .ready(self.ready.clone())
            .build()
    }
}

/// Production wiring: the configured backends, secrets loaded, routes built.
pub async fn app(config: Config, _env: Env) -> Result<App, BoxError> {
    let backends = Backends::open(&config).await?;
    let mark: Arc<dyn SweepMark> = match &config.backend {
        Backend::Local { home } => {
            Arc::new(FileMark::new(home.join(SERVICE).join("redelivery-sweep")))
        }
        Backend::Gcp { .. } => Arc::new(MemoryMark::default()),
    };
    let wi = WebhookIngest::new(&config, backends.secrets, backends.bus, mark);
    wi.load().await;
    Ok(wi.app(&config)?)
}
