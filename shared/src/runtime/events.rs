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

impl HttpRequest {
    /// The body as JSON of type `T`; see [`crate::runtime::json_body`].
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::runtime::HandlerError> {
        crate::runtime::json_body(
            &self.body,
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("body"),
        )
    }
}

impl PushMessage {
    /// The message data as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::runtime::HandlerError> {
        crate::runtime::json_body(
            &self.data,
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("message"),
        )
    }
}

impl SchedulerJob {
    /// The body as JSON of type `T`; an empty body reads as `{}` (Cloud
    /// Scheduler jobs and the CLI may send none).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::runtime::HandlerError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        crate::runtime::json_body(
            body,
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("body"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Body {
        name: String,
    }

    fn job(body: &'static str) -> SchedulerJob {
        SchedulerJob {
            job_name: None,
            schedule_time: None,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn typed_bodies_parse_and_refuse_with_a_400_that_does_not_echo_the_body() {
        let ok: Body = job(r#"{"name":"webhook-secret"}"#).json().unwrap();
        assert_eq!(ok.name, "webhook-secret");
        let err = job(r#"{"nome":"s3cr3t"}"#).json::<Body>().unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert!(!err.message().contains("s3cr3t"), "{}", err.message());
        assert!(err.message().contains("Body"), "{}", err.message());
    }

    #[test]
    fn an_empty_scheduler_body_reads_as_an_empty_object() {
        #[derive(serde::Deserialize, Default)]
        struct Opt {
            #[serde(default)]
            force: bool,
        }
        let o: Opt = job("").json().unwrap();
        assert!(!o.force);
    }
}
