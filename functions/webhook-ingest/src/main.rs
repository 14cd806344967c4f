//! webhook-ingest on Cloud Run (or locally): see the library for the routes.

use patchpanda_shared::names;
use patchpanda_shared::runtime::server::run;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(names::PRINCIPAL_WEBHOOK_INGEST, webhook_ingest::app).await
}
