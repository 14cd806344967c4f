//! `GET /ready`: the webhook secret is loaded (loading it now if the cold
//! start could not) and the bus answers.

use std::sync::Arc;

use patchpanda_shared::bus::Bus;
use patchpanda_shared::runtime::ReadyCheck;

use crate::secrets::WebhookKeyring;

pub struct Ready {
    keyring: Arc<WebhookKeyring>,
    bus: Arc<dyn Bus>,
}

impl Ready {
    pub fn new(keyring: Arc<WebhookKeyring>, bus: Arc<dyn Bus>) -> Self {
        Self { keyring, bus }
    }
}

#[async_trait::async_trait]
impl ReadyCheck for Ready {
    async fn ready(&self) -> Result<(), String> {
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
