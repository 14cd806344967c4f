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

pub(crate) mod body_guard;
pub(crate) mod budget;
pub(crate) mod dedupe;
pub mod ingest;
pub mod message;
pub mod ready;
pub mod redeliver;
pub(crate) mod remote_ip;
pub mod rotation;
pub mod secrets;
pub mod settings;
pub(crate) mod watch;

use std::sync::Arc;

use http::{Method, StatusCode};
use patchpanda_shared::backends::Backends;
use patchpanda_shared::bus::Bus;
use patchpanda_shared::config::{Backend, Config, Env};
use patchpanda_shared::names;
use patchpanda_shared::runtime::server::BoxError;
use patchpanda_shared::runtime::{
    App, Handler, HttpRequest, PushMessage, Reply, SchedulerJob, handler_with,
};
use patchpanda_shared::secrets::SecretStore;
use patchpanda_shared::secrets::cache::{CacheOptions, SecretCache};

use crate::body_guard::BodyGuardLayer;

pub use budget::ByteBudget;
pub use ingest::Ingest;
pub use redeliver::{FileMark, MemoryMark, SweepMark, SweepReport, SweepSettings, Sweeper};
pub use settings::Settings;

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
    /// Bytes held for unverified bodies on `/webhook`, all requests together.
    pub budget: Arc<ByteBudget>,
    guard: BodyGuardLayer,
    cache: Arc<SecretCache>,
    load_ids: Vec<String>,
}

impl WebhookIngest {
    /// Wires the services on `secrets` and `bus`; nothing is read yet (see
    /// [`WebhookIngest::load`]).
    pub fn new(
        config: &Config,
        settings: &Settings,
        secrets: Arc<dyn SecretStore>,
        bus: Arc<dyn Bus>,
        mark: Arc<dyn SweepMark>,
    ) -> Self {
        let cache = Arc::new(SecretCache::new(secrets.clone(), CacheOptions::default()));
        let webhook_id = config.secret_id(names::WEBHOOK_SECRET);
        let keyring = Arc::new(secrets::WebhookKeyring::new(
            cache.clone(),
            secrets,
            webhook_id,
            settings,
        ));
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
        let sweep = SweepSettings {
            max_attempts: settings.redelivery_max_attempts,
            ..SweepSettings::default()
        };
        let sweeper = Arc::new(Sweeper::new(app, mark, sweep));
        let watched = rotation::watched(|l| config.secret_id(l), with_app);
        let load_ids = watched.iter().map(|(_, id)| id.clone()).collect();
        let reloader = Arc::new(rotation::Reloader::new(
            cache.clone(),
            watched,
            keyring.clone(),
        ));
        let ready = Arc::new(ready::Ready::new(keyring, bus));
        let budget = ByteBudget::new(
            settings.body_budget,
            settings.small_body,
            settings.small_reserve(),
        );
        let guard = BodyGuardLayer::new(body_guard::Guard::new(
            ROUTE_WEBHOOK,
            budget.clone(),
            settings.body_read_timeout,
            settings::BODY_LIMIT,
        ));
        Self {
            ingest,
            sweeper,
            reloader,
            ready,
            budget,
            guard,
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

    /// `POST /webhook`.
    pub fn webhook_handler(&self) -> Handler<HttpRequest> {
        handler_with(self.ingest.clone(), |s, inv| async move {
            s.webhook(inv.event).await
        })
    }

    /// `POST /events/rotation`.
    pub fn rotation_handler(&self) -> Handler<PushMessage> {
        handler_with(self.reloader.clone(), |s, inv| async move {
            s.handle(inv.event).await
        })
    }

    /// `POST /tasks/redeliver`.
    pub fn redeliver_handler(&self) -> Handler<SchedulerJob> {
        handler_with(self.sweeper.clone(), |s, inv| async move {
            let report = s.sweep(inv.ctx.deadline).await?;
            Ok(Reply::json(StatusCode::OK, &report))
        })
    }

    /// The routes, with GitHub's 25 MiB payload cap as `/webhook`'s body
    /// limit and its body read under the byte budget and read deadline.
    pub fn app(&self, config: &Config) -> Result<App, patchpanda_shared::Error> {
        let guard = self.guard.clone();
        App::builder(SERVICE, config)
            .http(
                Method::POST,
                ROUTE_WEBHOOK,
                settings::BODY_LIMIT,
                self.webhook_handler(),
            )
            .push(ROUTE_ROTATION, self.rotation_handler())
            .scheduler(ROUTE_REDELIVER, self.redeliver_handler())
            .ready(self.ready.clone())
            .wrap_router(move |router| router.layer(guard))
            .build()
    }
}

/// Production wiring: settings checked, the configured backends opened,
/// secrets loaded, routes built.
pub async fn app(config: Config, env: Env) -> Result<App, BoxError> {
    let settings = Settings::from_env(&env)?;
    let backends = Backends::open(&config).await?;
    let mark: Arc<dyn SweepMark> = match &config.backend {
        Backend::Local { home } => {
            Arc::new(FileMark::new(home.join(SERVICE).join("redelivery-sweep")))
        }
        Backend::Gcp { .. } => Arc::new(MemoryMark::default()),
    };
    let wi = WebhookIngest::new(&config, &settings, backends.secrets, backends.bus, mark);
    wi.load().await;
    Ok(wi.app(&config)?)
}
