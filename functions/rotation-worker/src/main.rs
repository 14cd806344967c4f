//! The rotation-worker binary: the runtime serves the library's routes.

use patchpanda_shared::names;
use patchpanda_shared::runtime::server::run;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run(names::PRINCIPAL_ROTATION_WORKER, rotation_worker::app).await
}
