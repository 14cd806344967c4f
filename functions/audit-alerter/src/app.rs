//! Production wiring for Cloud Run and the local stack: settings, backends,
//! sinks, the routes, readiness, and the background ticker.

use std::sync::Arc;

use patchpanda_shared::backends::Backends;
use patchpanda_shared::bus::Bus;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::runtime::server::{App, BoxError, ReadyCheck};

use crate::settings::Settings;
use crate::{
    Alerter, ROUTE_AUDIT_LOG, ROUTE_ROTATION, ROUTE_TICK, SERVICE, SystemClock, TICK_EVERY,
    handlers,
};

/// Reads the settings, opens the backends and builds the routes.
pub async fn app(config: Config, env: Env) -> Result<App, BoxError> {
    let settings = Settings::from_env(&config, &env)?;
    let backends = Backends::open(&config).await?;
    let alerter = Arc::new(Alerter::with_bus(
        settings,
        Arc::clone(&backends.bus),
        Arc::new(SystemClock),
    )?);
    describe(&alerter);
    alerter.spawn_ticker(TICK_EVERY);
    Ok(alerter.app(&config, backends.bus)?)
}

impl Alerter {
    /// The routes around this alerter; `bus` answers readiness.
    pub fn app(
        self: &Arc<Self>,
        config: &Config,
        bus: Arc<dyn Bus>,
    ) -> Result<App, patchpanda_shared::Error> {
        App::builder(SERVICE, config)
            .push(ROUTE_AUDIT_LOG, handlers::audit_log(Arc::clone(self)))
            .push(ROUTE_ROTATION, handlers::rotation(Arc::clone(self)))
            .scheduler(ROUTE_TICK, handlers::tick(Arc::clone(self)))
            .ready(Arc::new(BusReady(bus)))
            .build()
    }
}

/// One line at start saying what is watched and where alerts go; it names
/// sinks, never their URLs or keys.
fn describe(alerter: &Alerter) {
    let s = alerter.settings();
    let disabled: Vec<&str> = crate::Rule::ALL
        .iter()
        .filter(|r| !s.enabled(**r))
        .map(|r| r.id())
        .collect();
    tracing::info!(
        secret_prefix = %s.secret_prefix,
        kms_key = %format!("{}/{}", s.kms_key_ring, s.kms_key),
        readers = s.readers.len(),
        rotators = s.rotators.len(),
        gateway_accounts = s.gateway_accounts.len(),
        sinks = %alerter.sink_names().join(","),
        disabled = %disabled.join(","),
        suppress_window = %humantime::format_duration(s.suppress_window),
        "audit-alerter ready"
    );
    if s.readers.is_empty() {
        tracing::warn!("PATCHPANDA_READER_PRINCIPALS is empty: every secret read will alert");
    }
    if s.gateway_accounts.is_empty() {
        tracing::warn!(
            "no gateway service accounts (PATCHPANDA_GATEWAY_SERVICE_ACCOUNTS): the key and token rules watch nothing"
        );
    }
}

struct BusReady(Arc<dyn Bus>);

#[async_trait::async_trait]
impl ReadyCheck for BusReady {
    async fn ready(&self) -> Result<(), String> {
        self.0.check().await.map_err(|e| format!("bus: {e}"))
    }
}
