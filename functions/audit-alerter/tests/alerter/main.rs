//! audit-alerter end to end through its handlers: realistic entries in
//! Google's documented shapes (and the local store's), every detection and
//! its negative case, rotation awareness, malformed input, duplicates,
//! suppression, and each sink against a stub HTTP server. One module per
//! topic; `harness` and `fixtures` are shared.

mod fixtures;
mod harness;

mod bounded;
mod durability;
mod iam;
mod identity;
mod input;
mod kms;
mod notices;
mod rotations;
mod routine;
mod safety;
mod secrets;
mod signatures;
mod sinks;
mod spikes;
mod tampering;
mod tick;
mod wiring;

/// What every topic module uses.
mod prelude {
    pub(crate) use std::collections::{BTreeMap, VecDeque};
    pub(crate) use std::net::SocketAddr;
    pub(crate) use std::sync::{Arc, Mutex};
    pub(crate) use std::time::Duration;

    pub(crate) use audit_alerter::settings::{self, Settings};
    pub(crate) use audit_alerter::{Alert, Alerter, Rule, Severity, handlers};
    pub(crate) use axum::Router;
    pub(crate) use axum::extract::State;
    pub(crate) use axum::routing::post;
    pub(crate) use bytes::Bytes;
    pub(crate) use chrono::{DateTime, TimeDelta, Utc};
    pub(crate) use http::{HeaderMap, StatusCode};
    pub(crate) use patchpanda_shared::audit_log::{
        AuditRecord, SERVICE_KMS, SERVICE_SECRET_MANAGER, code, kms, sm,
    };
    pub(crate) use patchpanda_shared::config::{Config, Env};
    pub(crate) use patchpanda_shared::names;
    pub(crate) use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
    pub(crate) use patchpanda_shared::runtime::events::PushFormat;
    pub(crate) use patchpanda_shared::runtime::{
        Context, Handler, HandlerError, Invocation, PushMessage, Reply,
    };
    pub(crate) use patchpanda_shared::testing::{ManualClock, RecordingBus};
    pub(crate) use serde_json::{Value, json};
    pub(crate) use tower::ServiceExt;

    pub(crate) use crate::fixtures::*;
    pub(crate) use crate::harness::*;
}
