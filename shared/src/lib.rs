//! patchpanda-shared: what two or more PatchPanda Gateway functions use.
//!
//! The runtime turns Cloud Run requests into typed events for `tower::Service`
//! handlers; the backends (secrets, KMS, bus) each sit behind one trait with a
//! local and a gcp implementation, chosen once at start by [`backends`].
//!
//! A function needs little more than the re-exports below: its settings come
//! from [`Env`] (the shared part as [`Config`]), its backends from
//! [`Backends::open`], and its routes are an [`App`] of handlers made with
//! [`handler_with`] over typed events ([`HttpRequest`], [`PushMessage`],
//! [`SchedulerJob`]) answering a [`Reply`] or a [`HandlerError`].

pub mod audit_log;
pub mod auth;
pub mod backends;
pub mod bus;
pub mod config;
pub mod error;
pub(crate) mod gcp;
pub mod github;
pub mod kms;
pub mod local;
pub mod names;
pub mod notice;
pub mod runtime;
pub mod secret_value;
pub mod secrets;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backends::Backends;
pub use config::{Config, Env};
pub use error::{Error, Result};
pub use runtime::{
    App, HandlerError, HttpRequest, Invocation, PushMessage, Reply, SchedulerJob, handler_with,
};
pub use secret_value::SecretValue;
