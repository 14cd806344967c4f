//! How a command fails: one line for stderr and exit status 1. Its own
//! module so that the context, the commands and the dev stack can all return
//! it without importing each other.

/// A command failure: one line for stderr. Never carries a secret value.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// What every command returns.
pub type Outcome = Result<(), Failure>;
