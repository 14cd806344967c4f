//! The audit-alerter binary: everything is in the library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    patchpanda_shared::runtime::server::run(
        patchpanda_shared::names::PRINCIPAL_AUDIT_ALERTER,
        audit_alerter::app,
    )
    .await
}
