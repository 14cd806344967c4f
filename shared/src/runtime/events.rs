//! Typed events: what a route's handler receives.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Uri};

/// A plain HTTP request, body read in full (within the route's limit).
/// Its Debug shows header names and the body's size only: an unverified
/// caller's `Authorization` or cookie, or a body holding a credential, must
/// not reach a log through `?event`.
#[derive(Clone)]
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

/// One Pub/Sub message delivered by push, whatever the format. Its Debug
/// shows the data's size, not the data, nor attribute values.
#[derive(Clone)]
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
/// CLI's `POST /rotate`). Its Debug shows header names and the body's size.
#[derive(Clone)]
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

/// Header names only: values may be credentials.
struct HeaderNames<'a>(&'a HeaderMap);

impl fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// A byte count in place of the bytes.
struct Size(usize);

impl fmt::Debug for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .field("headers", &HeaderNames(&self.headers))
            .field("body", &Size(self.body.len()))
            .finish()
    }
}

impl fmt::Debug for PushMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushMessage")
            .field("message_id", &self.message_id)
            .field("data", &Size(self.data.len()))
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .field("ordering_key", &self.ordering_key.is_some())
            .field("publish_time", &self.publish_time)
            .field("subscription", &self.subscription)
            .field("delivery_attempt", &self.delivery_attempt)
            .field("format", &self.format)
            .finish()
    }
}

impl fmt::Debug for SchedulerJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerJob")
            .field("job_name", &self.job_name)
            .field("schedule_time", &self.schedule_time)
            .field("headers", &HeaderNames(&self.headers))
            .field("body", &Size(self.body.len()))
            .finish()
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
    fn debug_prints_neither_header_values_nor_bodies() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer tok-s3cr3t".parse().unwrap());
        headers.insert("x-hub-signature-256", "sha256=sig-s3cr3t".parse().unwrap());
        let body = Bytes::from_static(br#"{"value":"body-s3cr3t"}"#);
        let http = HttpRequest {
            method: http::Method::POST,
            uri: "/webhook?token=q-s3cr3t".parse().unwrap(),
            headers: headers.clone(),
            body: body.clone(),
        };
        let push = PushMessage {
            message_id: "m-1".into(),
            data: body.clone(),
            attributes: BTreeMap::from([("k".to_string(), "attr-s3cr3t".to_string())]),
            ordering_key: Some("ok-s3cr3t".into()),
            publish_time: None,
            subscription: None,
            delivery_attempt: None,
            format: PushFormat::Wrapped,
        };
        let job = SchedulerJob {
            job_name: None,
            schedule_time: None,
            headers,
            body,
        };
        for shown in [
            format!("{http:?}"),
            format!("{push:?}"),
            format!("{job:?}"),
            format!("{http:#?}"),
        ] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("bytes"), "{shown}");
        }
        assert!(format!("{http:?}").contains("authorization"));
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
