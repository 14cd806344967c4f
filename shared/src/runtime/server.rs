//! (being written) The HTTP server: routes, event decoding, OIDC checks.

use std::sync::Arc;

/// Answers GET /ready: Ok when secrets are loaded and backends reachable.
#[async_trait::async_trait]
pub trait ReadyCheck: Send + Sync + 'static {
    async fn ready(&self) -> Result<(), String>;
}

/// A function's routes, ready to serve.
pub struct App {
    _ready: Option<Arc<dyn ReadyCheck>>,
}

pub struct AppBuilder;
