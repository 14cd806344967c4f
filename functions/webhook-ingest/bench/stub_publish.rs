//! Benchmark: webhook-ingest exactly as `main.rs` wires it (secrets from the
//! local home, every route, the runtime), but over a stub `Bus` whose
//! publish sleeps `STUB_PUBLISH_MS` (default 30) like a Pub/Sub round trip
//! and stores nothing. It shows whether the ingest path serializes while
//! publishes are in flight: with N concurrent deliveries and a 30 ms
//! publish, a path that does not serialize approaches N / 30 ms req/s.
//! Environment as for the binary (PORT, PATCHPANDA_BACKEND=local,
//! PATCHPANDA_HOME seeded by `seed_local`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::names;
use patchpanda_shared::runtime::server::run;
use webhook_ingest::{MemoryMark, SweepMark, WebhookIngest};

/// A publisher that takes a fixed time per publish and never fails.
struct SleepyBus {
    delay: Duration,
    next_id: AtomicU64,
}

#[async_trait]
impl Bus for SleepyBus {
    async fn publish(&self, _topic: &str, _message: Message) -> patchpanda_shared::Result<String> {
        tokio::time::sleep(self.delay).await;
        Ok(self.next_id.fetch_add(1, Ordering::Relaxed).to_string())
    }

    async fn check(&self) -> patchpanda_shared::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let ms: u64 = std::env::var("STUB_PUBLISH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    run(
        names::PRINCIPAL_WEBHOOK_INGEST,
        move |config, env| async move {
            let settings = webhook_ingest::Settings::from_env(&env)?;
            let backends = Backends::open(&config).await?;
            let bus: Arc<dyn Bus> = Arc::new(SleepyBus {
                delay: Duration::from_millis(ms),
                next_id: AtomicU64::new(1),
            });
            let mark: Arc<dyn SweepMark> = Arc::new(MemoryMark::default());
            let wi = WebhookIngest::new(&config, &settings, backends.secrets, bus, mark);
            wi.load().await;
            Ok(wi.app(&config)?)
        },
    )
    .await
}
