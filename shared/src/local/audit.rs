//! What the local backends publish about themselves: Cloud Audit Logs entries
//! (onto `patchpanda-audit-logs`) and, for the store, Secret Manager's event
//! notifications. Publishing happens after the change committed and never
//! fails the call: a lost audit entry is logged, a lost change would be worse.

use std::sync::Arc;

use serde_json::Value;

use crate::Error;
use crate::audit_log::AuditRecord;
use crate::bus::{Bus, Message};
use crate::names;

/// The project the local backends pretend to live in.
pub(crate) const PROJECT: &str = "local";

/// One audited call: everything but the outcome.
pub(crate) struct Call<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub resource: &'a str,
    pub permission: &'a str,
    pub permission_type: &'a str,
    pub request: Option<Value>,
}

/// Publishes on behalf of one principal, if a bus is attached.
#[derive(Clone)]
pub(crate) struct Publisher {
    bus: Option<Arc<dyn Bus>>,
    principal: String,
}

impl Publisher {
    pub fn new(bus: Option<Arc<dyn Bus>>, principal: &str) -> Self {
        Self {
            bus,
            principal: principal.to_string(),
        }
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Publishes the audit entry of `call` with its outcome.
    pub async fn audit(&self, call: Call<'_>, outcome: Result<(), &Error>) {
        let Some(bus) = &self.bus else { return };
        let code = outcome.err().map_or(0, status_code);
        let mut entry = AuditRecord {
            project: PROJECT,
            service: call.service,
            method: call.method,
            principal: &self.principal,
            resource: call.resource,
            permission: call.permission,
            permission_type: call.permission_type,
            status_code: code,
            request: call.request,
        }
        .to_entry();
        // The shared model names only a few codes; name the rest here.
        if let Some(status) = entry.proto_payload.as_mut().and_then(|p| p.status.as_mut())
            && code != 0
        {
            status.message = Some(status_name(code).to_string());
        }
        let data = match serde_json::to_vec(&entry) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not serialize an audit entry");
                return;
            }
        };
        publish_or_warn(bus.as_ref(), names::TOPIC_AUDIT_LOGS, Message::new(data)).await;
    }

    /// Publishes any message, logging (not returning) a failure.
    pub async fn publish(&self, topic: &str, message: Message) {
        if let Some(bus) = &self.bus {
            publish_or_warn(bus.as_ref(), topic, message).await;
        }
    }
}

async fn publish_or_warn(bus: &dyn Bus, topic: &str, message: Message) {
    if let Err(e) = bus.publish(topic, message).await {
        tracing::warn!(topic, error = %e, "local backend could not publish; the change itself is committed");
    }
}

/// The gRPC code Google's services report for each error.
pub(crate) fn status_code(e: &Error) -> i32 {
    match e {
        Error::InvalidArgument(_) => 3,
        Error::NotFound(_) => 5,
        Error::AlreadyExists(_) => 6,
        Error::PermissionDenied(_) => 7,
        Error::FailedPrecondition(_) => 9,
        Error::Aborted(_) => 10,
        Error::Internal(_) => 13,
        Error::Unavailable(_) => 14,
        Error::DataLoss(_) => 15,
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        3 => "INVALID_ARGUMENT",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        _ => "UNKNOWN",
    }
}
