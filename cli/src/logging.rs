//! The operator command logs to stderr in readable form (stdout carries the
//! command's output); DEBUG=true turns on debug logs, RUST_LOG overrides.

use tracing_subscriber::EnvFilter;

pub fn init(debug: bool, default_level: &str) {
    let level = if debug { "debug" } else { default_level };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(debug)
        .try_init();
}
