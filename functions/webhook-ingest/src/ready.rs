//! `GET /ready`: the webhook secret is loaded (loading it now if the cold
//! start could not) and the bus answers.
//!
//! The route is public, so it answers from a result at most [`READY_TTL`]
//! old (a failure, [`NOT_READY_TTL`]): a stranger polling it costs at most
//! one bus check and one secret read per interval, however fast they poll.
//! The body names no resource: the reason goes to the log, once per check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use patchpanda_shared::bus::Bus;
use patchpanda_shared::runtime::ReadyCheck;

use crate::secrets::WebhookKeyring;
use crate::watch::now;

/// How long a good answer is reused.
pub const READY_TTL: Duration = Duration::from_secs(5);
/// How long a bad answer is reused: short, so recovery shows quickly.
pub const NOT_READY_TTL: Duration = Duration::from_secs(2);
/// The one reason `/ready` gives out.
pub const NOT_READY: &str = "a dependency is unavailable";

pub struct Ready {
    keyring: Arc<WebhookKeyring>,
    bus: Arc<dyn Bus>,
    /// The last verdict and when it was reached. Held across a check, so
    /// probes arriving meanwhile wait for it instead of adding their own.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Ready {
    pub fn new(keyring: Arc<WebhookKeyring>, bus: Arc<dyn Bus>) -> Self {
        Self {
            keyring,
            bus,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The full check, with a reason naming what failed (for the log only).
    async fn check(&self) -> Result<(), String> {
        if !self.keyring.is_loaded() {
            self.keyring
                .snapshot()
                .await
                .map_err(|e| format!("webhook secret not loaded: {e}"))?;
        }
        self.bus
            .check()
            .await
            .map_err(|e| format!("bus unavailable: {e}"))
    }
}

#[async_trait::async_trait]
impl ReadyCheck for Ready {
    async fn ready(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last {
            let ttl = if ok { READY_TTL } else { NOT_READY_TTL };
            if now().saturating_duration_since(at) < ttl {
                return if ok { Ok(()) } else { Err(NOT_READY.into()) };
            }
        }
        let result = self.check().await;
        if let Err(reason) = &result {
            tracing::warn!(reason = %reason, "webhook-ingest is not ready");
        }
        *last = Some((now(), result.is_ok()));
        result.map_err(|_| NOT_READY.into())
    }
}
