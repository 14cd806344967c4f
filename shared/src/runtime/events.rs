//! Typed events: what a route's handler receives.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Uri};

/// A plain HTTP request, body read in full (within the route's limit).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a Pub/Sub message reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// The default JSON envelope {message, subscription, deliveryAttempt}.
    Wrapped,
    /// `noWrapper`: raw data as the body, metadata in x-goog-pubsub-* headers.
    Unwrapped,
    /// CloudEvent, binary content mode (ce-* headers, Eventarc).
    CloudEventBinary,
    /// CloudEvent, structured mode (application/cloudevents+json).
    CloudEventStructured,
}

/// One Pub/Sub message delivered by push, whatever the format.
#[derive(Debug, Clone)]
pub struct PushMessage {
    pub message_id: String,
    /// Decoded bytes (base64 already undone).
    pub data: Bytes,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: Option<String>,
    pub publish_time: Option<DateTime<Utc>>,
    pub subscription: Option<String>,
    /// Set only when the subscription has a dead-letter policy.
    pub delivery_attempt: Option<u32>,
    pub format: PushFormat,
}

/// A Cloud Scheduler call (or any OIDC-authenticated task call, such as the
/// CLI's `POST /rotate`).
#[derive(Debug, Clone)]
pub struct SchedulerJob {
    /// X-CloudScheduler-JobName, when the scheduler sent it.
    pub job_name: Option<String>,
    /// X-CloudScheduler-ScheduleTime (RFC 3339), when the scheduler sent it.
    pub schedule_time: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SchedulerJob {
    /// Scheduler delivery is at-least-once: job name + schedule time
    /// identifies one run.
    pub fn idempotency_key(&self) -> Option<String> {
        match (&self.job_name, &self.schedule_time) {
            (Some(j), Some(t)) => Some(format!("{j}@{t}")),
            _ => None,
        }
    }
}
