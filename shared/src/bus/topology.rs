//! The Pub/Sub topology infra/terraform/pubsub.tf deploys, in code: the
//! topics, their dead-letter topics, and the push and pull subscriptions
//! with their delivery settings. The emulator mode of `patchpanda dev`
//! creates exactly these; a test reads pubsub.tf and fails when the two
//! drift apart.

use std::time::Duration;

use crate::names;

/// The functions that receive pushes (terraform's `local.functions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    WebhookIngest,
    RotationWorker,
    AuditAlerter,
}

impl Function {
    pub const ALL: [Function; 3] = [
        Function::WebhookIngest,
        Function::RotationWorker,
        Function::AuditAlerter,
    ];

    /// The function's name, as terraform and the Cloud Run services use it.
    pub fn name(self) -> &'static str {
        match self {
            Function::WebhookIngest => "webhook-ingest",
            Function::RotationWorker => "rotation-worker",
            Function::AuditAlerter => "audit-alerter",
        }
    }
}

/// One push subscription (terraform's `local.push_subscriptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSubscription {
    /// Terraform's key; the subscription id is `patchpanda-<key>`.
    pub key: &'static str,
    pub topic: &'static str,
    pub function: Function,
    /// The route on the function that receives the pushes.
    pub path: &'static str,
    /// Also Pub/Sub's push request timeout.
    pub ack_deadline: Duration,
    /// Delivery attempts before the message goes to the dead-letter topic.
    pub max_attempts: i32,
}

impl PushSubscription {
    pub fn id(&self) -> String {
        format!("patchpanda-{}", self.key)
    }
}

/// A pull subscription (terraform's `local.pull_subscriptions`): kept for
/// the App's own workers and the on-call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSubscription {
    pub key: &'static str,
    pub topic: &'static str,
}

impl PullSubscription {
    pub fn id(&self) -> String {
        format!("patchpanda-{}", self.key)
    }
}

/// Every topic the deployment has (dead-letter topics aside).
pub const TOPICS: [&str; 5] = [
    names::TOPIC_GITHUB_EVENTS,
    names::TOPIC_ROTATION_EVENTS,
    names::TOPIC_SECRET_EVENTS,
    names::TOPIC_AUDIT_LOGS,
    names::TOPIC_ALERTS,
];

pub const PUSH_SUBSCRIPTIONS: [PushSubscription; 4] = [
    PushSubscription {
        key: "rotation-events-webhook-ingest",
        topic: names::TOPIC_ROTATION_EVENTS,
        function: Function::WebhookIngest,
        path: "/events/rotation",
        ack_deadline: Duration::from_secs(30),
        max_attempts: PUSH_MAX_DELIVERY_ATTEMPTS,
    },
    PushSubscription {
        key: "rotation-events-audit-alerter",
        topic: names::TOPIC_ROTATION_EVENTS,
        function: Function::AuditAlerter,
        path: "/events/rotation",
        ack_deadline: Duration::from_secs(30),
        max_attempts: PUSH_MAX_DELIVERY_ATTEMPTS,
    },
    PushSubscription {
        key: "audit-logs-audit-alerter",
        topic: names::TOPIC_AUDIT_LOGS,
        function: Function::AuditAlerter,
        path: "/events/audit-log",
        ack_deadline: Duration::from_secs(60),
        max_attempts: AUDIT_MAX_DELIVERY_ATTEMPTS,
    },
    PushSubscription {
        key: "secret-events-rotation-worker",
        topic: names::TOPIC_SECRET_EVENTS,
        function: Function::RotationWorker,
        path: "/events/secret-manager",
        ack_deadline: Duration::from_secs(600),
        max_attempts: PUSH_MAX_DELIVERY_ATTEMPTS,
    },
];

pub const PULL_SUBSCRIPTIONS: [PullSubscription; 2] = [
    PullSubscription {
        key: "github-events-pull",
        topic: names::TOPIC_GITHUB_EVENTS,
    },
    PullSubscription {
        key: "alerts-pull",
        topic: names::TOPIC_ALERTS,
    },
];

/// Delivery settings shared by the subscriptions.
pub const PUSH_MAX_DELIVERY_ATTEMPTS: i32 = 5;
/// The audit-log feed's attempts (Pub/Sub's maximum): audit-alerter nacks
/// an entry until a paging sink took its alerts, and a held change until
/// its hold ends (contract 6), so those must not be dead-lettered early.
pub const AUDIT_MAX_DELIVERY_ATTEMPTS: i32 = 100;
pub const PULL_MAX_DELIVERY_ATTEMPTS: i32 = 10;
pub const PULL_ACK_DEADLINE: Duration = Duration::from_secs(60);
pub const MIN_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Message retention of topics and subscriptions: a week.
pub const RETENTION: Duration = Duration::from_secs(604_800);

/// The dead-letter topic of a topic.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}-dlq")
}

/// The pull subscription that keeps a dead-letter topic's messages.
pub fn dead_letter_subscription(topic: &str) -> String {
    format!("{topic}-dlq-pull")
}

/// A topic's terraform key (`github-events` for `patchpanda-github-events`).
pub fn topic_key(topic: &str) -> &str {
    topic.strip_prefix("patchpanda-").unwrap_or(topic)
}

/// The push subscriptions that deliver to `function`.
pub fn pushes_to(function: Function) -> impl Iterator<Item = &'static PushSubscription> {
    PUSH_SUBSCRIPTIONS
        .iter()
        .filter(move |s| s.function == function)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const PUBSUB_TF: &str = include_str!("../../../infra/terraform/pubsub.tf");

    /// The `"key" = value` lines of one `name = { ... }` block of locals.
    fn block(name: &str) -> BTreeMap<String, String> {
        let start = PUBSUB_TF
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{name} = {{")))
            .unwrap_or_else(|| panic!("pubsub.tf has no `{name}` block"));
        PUBSUB_TF
            .lines()
            .skip(start + 1)
            .take_while(|l| l.trim() != "}")
            .filter_map(|l| {
                let l = l.trim();
                let (k, v) = l.split_once('=')?;
                let k = k.trim().strip_prefix('"')?.strip_suffix('"')?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect()
    }

    /// `field = "x"` or `field = 30` inside `{ ... }`.
    fn field<'a>(object: &'a str, name: &str) -> &'a str {
        let at = object
            .find(&format!("{name} ="))
            .unwrap_or_else(|| panic!("no {name} in {object}"));
        let rest = object[at + name.len() + 2..].trim_start();
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().trim_matches('"')
    }

    #[test]
    fn topics_match_pubsub_tf() {
        let tf = block("topics");
        let tf: Vec<&str> = tf.values().map(|v| v.trim_matches('"')).collect();
        let mut ours = TOPICS.to_vec();
        ours.sort();
        let mut theirs = tf.clone();
        theirs.sort();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn push_subscriptions_match_pubsub_tf() {
        let tf = block("push_subscriptions");
        assert_eq!(tf.len(), PUSH_SUBSCRIPTIONS.len(), "{tf:?}");
        for s in PUSH_SUBSCRIPTIONS {
            let object = tf
                .get(s.key)
                .unwrap_or_else(|| panic!("pubsub.tf lacks {}", s.key));
            assert_eq!(field(object, "topic"), topic_key(s.topic), "{}", s.key);
            assert_eq!(field(object, "service"), s.function.name(), "{}", s.key);
            assert_eq!(field(object, "path"), s.path, "{}", s.key);
            assert_eq!(
                field(object, "ack_deadline"),
                s.ack_deadline.as_secs().to_string(),
                "{}",
                s.key
            );
            assert_eq!(
                field(object, "max_attempts"),
                s.max_attempts.to_string(),
                "{}",
                s.key
            );
        }
        assert!(
            PUBSUB_TF.contains("max_delivery_attempts = each.value.max_attempts"),
            "pubsub.tf's push subscriptions take max_attempts from their entry"
        );
    }

    #[test]
    fn pull_subscriptions_match_pubsub_tf() {
        let tf = block("pull_subscriptions");
        assert_eq!(tf.len(), PULL_SUBSCRIPTIONS.len(), "{tf:?}");
        for s in PULL_SUBSCRIPTIONS {
            assert_eq!(
                tf.get(s.key).map(|v| v.trim_matches('"')),
                Some(topic_key(s.topic))
            );
        }
    }

    #[test]
    fn delivery_settings_match_pubsub_tf() {
        let has = |needle: &str| {
            assert!(PUBSUB_TF.contains(needle), "pubsub.tf lacks {needle:?}");
        };
        has(&format!(
            "max_delivery_attempts = {PUSH_MAX_DELIVERY_ATTEMPTS}"
        ));
        has(&format!(
            "max_delivery_attempts = {PULL_MAX_DELIVERY_ATTEMPTS}"
        ));
        has(&format!("minimum_backoff = \"{}s\"", MIN_BACKOFF.as_secs()));
        has(&format!("maximum_backoff = \"{}s\"", MAX_BACKOFF.as_secs()));
        has(&format!("week = \"{}s\"", RETENTION.as_secs()));
        has("name                       = \"${each.value}-dlq\"");
        has("name                       = \"${each.value}-dlq-pull\"");
        has(&format!(
            "ack_deadline_seconds       = {}",
            PULL_ACK_DEADLINE.as_secs()
        ));
    }
}
