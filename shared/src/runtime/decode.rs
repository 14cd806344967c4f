//! HTTP requests to typed events: every way Pub/Sub can push a message (the
//! JSON envelope, unwrapped, CloudEvents binary and structured) and Cloud
//! Scheduler calls. Malformed input is a 400 with one line, never a panic.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Deserialize;

use super::HandlerError;
use super::events::{PushFormat, PushMessage, SchedulerJob};

/// The CloudEvent type of a Pub/Sub message (Eventarc, Functions).
pub const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

const HEADER_MESSAGE_ID: &str = "x-goog-pubsub-message-id";
const HEADER_PUBLISH_TIME: &str = "x-goog-pubsub-publish-time";
const HEADER_SUBSCRIPTION: &str = "x-goog-pubsub-subscription-name";
const HEADER_ORDERING_KEY: &str = "x-goog-pubsub-ordering-key";
const HEADER_DELIVERY_ATTEMPT: &str = "x-goog-pubsub-delivery-attempt";

/// Decodes a pushed Pub/Sub message, whichever format it arrived in.
pub fn push_message(headers: &HeaderMap, body: &Bytes) -> Result<PushMessage, HandlerError> {
    if headers.contains_key("ce-type") || headers.contains_key("ce-specversion") {
        cloud_event_binary(headers, body)
    } else if content_type(headers).is_some_and(|t| t == "application/cloudevents+json") {
        cloud_event_structured(body)
    } else if headers.contains_key(HEADER_MESSAGE_ID) {
        unwrapped(headers, body)
    } else {
        wrapped(body)
    }
}

/// A Cloud Scheduler (or any task) call.
pub fn scheduler_job(headers: &HeaderMap, body: Bytes) -> Result<SchedulerJob, HandlerError> {
    Ok(SchedulerJob {
        job_name: header_str(headers, "x-cloudscheduler-jobname")?,
        schedule_time: header_str(headers, "x-cloudscheduler-scheduletime")?,
        headers: headers.clone(),
        body,
    })
}

/// The media type, lowercased, without parameters.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

/// A header as text; present but not visible ASCII is a 400.
fn header_str(headers: &HeaderMap, name: &str) -> Result<Option<String>, HandlerError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
            .map_err(|_| HandlerError::bad_request(format!("header {name} is not valid text"))),
    }
}

// ---------------------------------------------------------------------------
// The wire shapes. The push doc's own sample carries both camelCase and
// snake_case spellings in one object, so each spelling is its own field (a
// serde alias would reject the pair as a duplicate).

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time_camel: Option<String>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<String>,
    #[serde(default, rename = "orderingKey")]
    ordering_key_camel: Option<String>,
    #[serde(default, rename = "ordering_key")]
    ordering_key_snake: Option<String>,
}

#[derive(Deserialize)]
struct WireEnvelope {
    message: Option<WireMessage>,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default, rename = "deliveryAttempt")]
    delivery_attempt_camel: Option<i64>,
    #[serde(default, rename = "delivery_attempt")]
    delivery_attempt_snake: Option<i64>,
}

#[derive(Deserialize)]
struct WireStructuredEvent {
    specversion: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    id: Option<String>,
    time: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    data_base64: Option<String>,
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, HandlerError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's message names the field and position, never the content.
        HandlerError::bad_request(format!("malformed {what}: {e}"))
    })
}

/// Pub/Sub writes standard base64 with padding; tolerate missing padding
/// and the URL-safe alphabet rather than drop a message over it.
fn decode_base64(field: &str, value: &str) -> Result<Bytes, HandlerError> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let value = value.trim();
    standard
        .decode(value)
        .or_else(|_| url_safe.decode(value))
        .map(Bytes::from)
        .map_err(|_| HandlerError::bad_request(format!("{field} is not valid base64")))
}

fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, HandlerError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| HandlerError::bad_request(format!("{field} is not an RFC 3339 time")))
}

/// A pushed message's fields, whichever envelope carried them.
fn message_from_wire(
    m: WireMessage,
    fallback_id: Option<String>,
    fallback_time: Option<&str>,
    subscription: Option<String>,
    delivery_attempt: Option<i64>,
    format: PushFormat,
) -> Result<PushMessage, HandlerError> {
    let message_id = m
        .message_id_camel
        .or(m.message_id_snake)
        .filter(|s| !s.trim().is_empty())
        .or(fallback_id.filter(|s| !s.trim().is_empty()))
        .ok_or_else(|| HandlerError::bad_request("message.messageId is missing"))?;
    let data = match m.data.as_deref() {
        Some(d) => decode_base64("message.data", d)?,
        None => Bytes::new(),
    };
    let attributes = m.attributes.unwrap_or_default();
    if m.data.is_none() && attributes.is_empty() {
        return Err(HandlerError::bad_request(
            "message has neither data nor attributes",
        ));
    }
    let publish_time = match m
        .publish_time_camel
        .as_deref()
        .or(m.publish_time_snake.as_deref())
        .or(fallback_time)
    {
        Some(t) => Some(parse_time("message.publishTime", t)?),
        None => None,
    };
    let ordering_key = m
        .ordering_key_camel
        .or(m.ordering_key_snake)
        .filter(|k| !k.is_empty());
    Ok(PushMessage {
        message_id,
        data,
        attributes,
        ordering_key,
        publish_time,
        subscription: subscription.filter(|s| !s.is_empty()),
        delivery_attempt: delivery_attempt_of(delivery_attempt)?,
        format,
    })
}

/// Zero means "no dead-letter policy", the same as absent.
fn delivery_attempt_of(v: Option<i64>) -> Result<Option<u32>, HandlerError> {
    match v {
        None | Some(0) => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| HandlerError::bad_request("deliveryAttempt is out of range")),
    }
}

fn wrapped(body: &Bytes) -> Result<PushMessage, HandlerError> {
    let env: WireEnvelope = parse_json(body, "push envelope")?;
    let message = env
        .message
        .ok_or_else(|| HandlerError::bad_request("push envelope has no message"))?;
    message_from_wire(
        message,
        None,
        None,
        env.subscription,
        env.delivery_attempt_camel.or(env.delivery_attempt_snake),
        PushFormat::Wrapped,
    )
}

/// MessagePublishedData: the push envelope minus deliveryAttempt.
fn message_published(
    data: WireEnvelope,
    ce_id: Option<String>,
    ce_time: Option<&str>,
    format: PushFormat,
) -> Result<PushMessage, HandlerError> {
    let message = data
        .message
        .ok_or_else(|| HandlerError::bad_request("CloudEvent data has no message"))?;
    message_from_wire(
        message,
        ce_id,
        ce_time,
        data.subscription,
        data.delivery_attempt_camel.or(data.delivery_attempt_snake),
        format,
    )
}

fn check_cloud_event(
    specversion: Option<&str>,
    event_type: Option<&str>,
) -> Result<(), HandlerError> {
    match specversion {
        Some("1.0") => {}
        Some(v) => {
            return Err(HandlerError::bad_request(format!(
                "unsupported CloudEvents specversion {:?}",
                truncate(v)
            )));
        }
        None => return Err(HandlerError::bad_request("CloudEvent has no specversion")),
    }
    match event_type {
        Some(MESSAGE_PUBLISHED) => Ok(()),
        Some(t) => Err(HandlerError::bad_request(format!(
            "unsupported CloudEvent type {:?} (expected {MESSAGE_PUBLISHED})",
            truncate(t)
        ))),
        None => Err(HandlerError::bad_request("CloudEvent has no type")),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn cloud_event_binary(headers: &HeaderMap, body: &Bytes) -> Result<PushMessage, HandlerError> {
    let specversion = header_str(headers, "ce-specversion")?;
    let event_type = header_str(headers, "ce-type")?;
    check_cloud_event(specversion.as_deref(), event_type.as_deref())?;
    if let Some(t) = content_type(headers)
        && t != "application/json"
        && !t.ends_with("+json")
    {
        return Err(HandlerError::bad_request(format!(
            "CloudEvent data must be JSON, got content-type {}",
            truncate(&t)
        )));
    }
    let data: WireEnvelope = parse_json(body, "CloudEvent data")?;
    let ce_time = header_str(headers, "ce-time")?;
    message_published(
        data,
        header_str(headers, "ce-id")?,
        ce_time.as_deref(),
        PushFormat::CloudEventBinary,
    )
}

fn cloud_event_structured(body: &Bytes) -> Result<PushMessage, HandlerError> {
    let event: WireStructuredEvent = parse_json(body, "CloudEvent")?;
    check_cloud_event(event.specversion.as_deref(), event.event_type.as_deref())?;
    let data: WireEnvelope = match (event.data, event.data_base64) {
        (Some(_), Some(_)) => {
            return Err(HandlerError::bad_request(
                "CloudEvent has both data and data_base64",
            ));
        }
        (Some(serde_json::Value::String(s)), None) => parse_json(s.as_bytes(), "CloudEvent data")?,
        (Some(v), None) => serde_json::from_value(v)
            .map_err(|e| HandlerError::bad_request(format!("malformed CloudEvent data: {e}")))?,
        (None, Some(b64)) => parse_json(&decode_base64("data_base64", &b64)?, "CloudEvent data")?,
        (None, None) => return Err(HandlerError::bad_request("CloudEvent has no data")),
    };
    message_published(
        data,
        event.id,
        event.time.as_deref(),
        PushFormat::CloudEventStructured,
    )
}

/// Headers that HTTP, Google's front end or the push service itself set;
/// none of them is a message attribute.
fn is_transport_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "cookie",
        "expect",
        "forwarded",
        "from",
        "host",
        "keep-alive",
        "origin",
        "pragma",
        "priority",
        "proxy-authorization",
        "referer",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "via",
        "x-real-ip",
        "x-request-id",
    ];
    const PREFIXES: &[&str] = &[
        "x-goog-",
        "x-google-",
        "x-appengine-",
        "x-forwarded-",
        "x-envoy-",
        // X-Cloud-Trace-Context, X-CloudScheduler-*.
        "x-cloud",
        "x-b3-",
        "ce-",
        "sec-",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

fn unwrapped(headers: &HeaderMap, body: &Bytes) -> Result<PushMessage, HandlerError> {
    let message_id = header_str(headers, HEADER_MESSAGE_ID)?
        .ok_or_else(|| HandlerError::bad_request(format!("header {HEADER_MESSAGE_ID} is empty")))?;
    let publish_time = match header_str(headers, HEADER_PUBLISH_TIME)? {
        Some(t) => Some(parse_time(HEADER_PUBLISH_TIME, &t)?),
        None => None,
    };
    let delivery_attempt = match header_str(headers, HEADER_DELIVERY_ATTEMPT)? {
        Some(n) => Some(n.parse::<i64>().map_err(|_| {
            HandlerError::bad_request(format!("header {HEADER_DELIVERY_ATTEMPT} is not a number"))
        })?),
        None => None,
    };
    let mut attributes = BTreeMap::new();
    for (name, value) in headers {
        if is_transport_header(name.as_str()) {
            continue;
        }
        // An attribute that is not valid header text cannot have come from
        // Pub/Sub intact; skip it rather than guess at its bytes.
        if let Ok(v) = value.to_str() {
            attributes.insert(name.as_str().to_string(), v.to_string());
        }
    }
    Ok(PushMessage {
        message_id,
        data: body.clone(),
        attributes,
        ordering_key: header_str(headers, HEADER_ORDERING_KEY)?,
        publish_time,
        subscription: header_str(headers, HEADER_SUBSCRIPTION)?,
        delivery_attempt: delivery_attempt_of(delivery_attempt)?,
        format: PushFormat::Unwrapped,
    })
}

#[cfg(test)]
mod tests;
