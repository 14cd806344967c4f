//! Pub/Sub's publish-side rules, so that what the local bus accepts Pub/Sub
//! accepts too (resource names, attributes, sizes).

use crate::bus::Message;
use crate::{Error, Result};

/// Pub/Sub's limit on one message (data plus attributes and ordering key).
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;
pub const MAX_ATTRIBUTES: usize = 100;
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
pub const MAX_ORDERING_KEY_BYTES: usize = 1024;
/// Pub/Sub's range for `maxDeliveryAttempts`.
pub const MIN_DELIVERY_ATTEMPTS: u32 = 5;
pub const MAX_DELIVERY_ATTEMPTS: u32 = 100;

/// A topic or subscription id: 3-255 characters, starting with a letter, of
/// letters, digits and `-_.~+%`, not starting with `goog`.
pub fn resource_id(kind: &str, id: &str) -> Result<()> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    let valid = (3..=255).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && ok_chars
        && !id.to_ascii_lowercase().starts_with("goog");
    if valid {
        Ok(())
    } else {
        let shown: String = id.chars().take(60).collect();
        Err(Error::InvalidArgument(format!(
            "{kind} id {shown:?} must be 3-255 characters of letters, digits and -_.~+%, start with a letter and not with \"goog\""
        )))
    }
}

/// The message as Pub/Sub would accept it; an empty ordering key means none.
pub fn message(message: &Message) -> Result<()> {
    if message.data.is_empty() && message.attributes.is_empty() {
        return Err(Error::InvalidArgument(
            "a message needs non-empty data or at least one attribute".into(),
        ));
    }
    if message.attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::InvalidArgument(format!(
            "a message has at most {MAX_ATTRIBUTES} attributes, got {}",
            message.attributes.len()
        )));
    }
    let mut size = message.data.len();
    for (key, value) in &message.attributes {
        let shown: String = key.chars().take(60).collect();
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "attribute key {shown:?} must be 1-{MAX_ATTRIBUTE_KEY_BYTES} bytes"
            )));
        }
        if key.to_ascii_lowercase().starts_with("goog") {
            return Err(Error::InvalidArgument(format!(
                "attribute key {shown:?} must not start with \"goog\" (reserved)"
            )));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "attribute {shown:?}: values are at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
            )));
        }
        size += key.len() + value.len();
    }
    if let Some(key) = &message.ordering_key {
        if key.len() > MAX_ORDERING_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "an ordering key is at most {MAX_ORDERING_KEY_BYTES} bytes"
            )));
        }
        size += key.len();
    }
    if size > MAX_MESSAGE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a message is at most {MAX_MESSAGE_BYTES} bytes, got {size}"
        )));
    }
    Ok(())
}

/// A push endpoint: an absolute http(s) URL.
pub fn push_endpoint(endpoint: &str) -> Result<()> {
    match url::Url::parse(endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => {
            let shown: String = endpoint.chars().take(120).collect();
            Err(Error::InvalidArgument(format!(
                "push endpoint {shown:?} must be an http(s) URL"
            )))
        }
    }
}

pub fn max_attempts(n: u32) -> Result<()> {
    if (MIN_DELIVERY_ATTEMPTS..=MAX_DELIVERY_ATTEMPTS).contains(&n) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "max delivery attempts must be {MIN_DELIVERY_ATTEMPTS}-{MAX_DELIVERY_ATTEMPTS}, got {n}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_follow_pubsub_rules() {
        for ok in ["patchpanda-github-events", "abc", "a.b~c+d%e_f"] {
            resource_id("topic", ok).unwrap();
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "ab",
            "1abc",
            "goog-topic",
            "has space",
            "slash/ed",
            long.as_str(),
        ] {
            let err = resource_id("topic", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}");
        }
    }

    #[test]
    fn messages_follow_pubsub_rules() {
        message(&Message::new("x")).unwrap();
        message(&Message::default().attribute("k", "v")).unwrap();
        assert!(message(&Message::default()).is_err());
        assert!(message(&Message::new("x").attribute("", "v")).is_err());
        assert!(message(&Message::new("x").attribute("googKey", "v")).is_err());
        assert!(message(&Message::new("x").attribute("k".repeat(257), "v")).is_err());
        assert!(message(&Message::new("x").attribute("k", "v".repeat(1025))).is_err());
        assert!(message(&Message::new("x").ordering_key("k".repeat(1025))).is_err());
        assert!(message(&Message::new(vec![0u8; MAX_MESSAGE_BYTES + 1])).is_err());
        let mut many = Message::new("x");
        for i in 0..=MAX_ATTRIBUTES {
            many = many.attribute(format!("k{i}"), "v");
        }
        assert!(message(&many).is_err());
    }

    #[test]
    fn endpoints_and_attempts() {
        push_endpoint("http://127.0.0.1:8081/events/x").unwrap();
        assert!(push_endpoint("ftp://x/y").is_err());
        assert!(push_endpoint("not a url").is_err());
        max_attempts(5).unwrap();
        assert!(max_attempts(4).is_err());
        assert!(max_attempts(101).is_err());
    }
}
