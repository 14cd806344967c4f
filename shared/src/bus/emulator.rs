//! Emulator mode: the gcp bus code against Google's Pub/Sub emulator.
//!
//! Google's client libraries switch to the emulator when
//! `PUBSUB_EMULATOR_HOST` is set; google-cloud-pubsub (1.x) does not read
//! the variable itself, so this module does what the other libraries do:
//! plain-text HTTP/gRPC to that host, anonymous credentials, no retries
//! beyond the defaults. Only the local backend uses it (secrets and KMS stay
//! local); `Config` refuses the variable with `PATCHPANDA_BACKEND=gcp`, so a
//! Cloud Run service can never be pointed at an unauthenticated endpoint.
//!
//! [`EmulatorAdmin::provision`] creates the topology of
//! infra/terraform/pubsub.tf ([`super::topology`]) in the emulator.

use std::time::Duration;

use google_cloud_pubsub::client::{BasePublisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{
    DeadLetterPolicy, ExpirationPolicy, PushConfig, RetryPolicy, Subscription, Topic,
    push_config::OidcToken,
};

use super::gcp::{GcpBus, PubSubPublisher};
use super::topology::{self, PushSubscription};
use crate::config::{ConfigError, Env};
use crate::gcp::gax;
use crate::{Error, Result};

/// The variable every Google client library honours.
pub const ENV_EMULATOR_HOST: &str = "PUBSUB_EMULATOR_HOST";
/// The emulator's project, as Google's emulator samples name it; defaults
/// to GOOGLE_CLOUD_PROJECT, then [`DEFAULT_PROJECT`]. The emulator keeps
/// each project apart, so parallel stacks can share one emulator.
pub const ENV_EMULATOR_PROJECT: &str = "PUBSUB_PROJECT_ID";
pub const DEFAULT_PROJECT: &str = "patchpanda-local";

/// Where the emulator listens and which project the stack uses in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubEmulator {
    /// `host:port`, as in PUBSUB_EMULATOR_HOST.
    pub host: String,
    pub project: String,
}

impl PubsubEmulator {
    /// None when PUBSUB_EMULATOR_HOST is unset. `local` says whether the
    /// backend is local: on gcp the variable is refused.
    pub fn from_env(env: &Env, local: bool) -> std::result::Result<Option<Self>, ConfigError> {
        let Some(host) = env.get(ENV_EMULATOR_HOST).map(str::trim) else {
            return Ok(None);
        };
        if !local {
            return Err(ConfigError::new(
                ENV_EMULATOR_HOST,
                "to be unset with PATCHPANDA_BACKEND=gcp (the emulator is for the local backend)",
                host,
            ));
        }
        let valid = url::Url::parse(&format!("http://{host}"))
            .ok()
            .filter(|u| {
                u.port().is_some()
                    && u.path() == "/"
                    && u.username().is_empty()
                    && !host.contains('/')
            })
            .is_some();
        if !valid {
            return Err(ConfigError::new(
                ENV_EMULATOR_HOST,
                "the emulator's host:port, e.g. 127.0.0.1:8085",
                host,
            ));
        }
        let project = env
            .get(ENV_EMULATOR_PROJECT)
            .or_else(|| env.get("GOOGLE_CLOUD_PROJECT"))
            .unwrap_or(DEFAULT_PROJECT)
            .trim()
            .to_string();
        if gax::validate_project(&project).is_err() {
            return Err(ConfigError::new(
                ENV_EMULATOR_PROJECT,
                "a project id (letters, digits, hyphens)",
                &project,
            ));
        }
        Ok(Some(Self {
            host: host.to_string(),
            project,
        }))
    }

    /// The emulator speaks plain text.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host)
    }

    pub fn topic_name(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project)
    }

    pub fn subscription_name(&self, id: &str) -> String {
        format!("projects/{}/subscriptions/{id}", self.project)
    }

    /// The gcp bus, talking to the emulator.
    pub async fn bus(&self) -> Result<GcpBus> {
        let base = BasePublisher::builder()
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous())
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Pub/Sub emulator publisher"))?;
        let admin = TopicAdmin::builder()
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous())
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Pub/Sub emulator admin client"))?;
        Ok(GcpBus::with_publisher(
            &self.project,
            std::sync::Arc::new(PubSubPublisher::new(base)),
            admin,
        ))
    }

    /// Admin clients for creating the topology.
    pub async fn admin(&self) -> Result<EmulatorAdmin> {
        let topics = TopicAdmin::builder()
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous())
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Pub/Sub emulator admin client"))?;
        let subscriptions = SubscriptionAdmin::builder()
            .with_endpoint(self.endpoint())
            .with_credentials(anonymous())
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Pub/Sub emulator admin client"))?;
        Ok(EmulatorAdmin {
            emulator: self.clone(),
            topics,
            subscriptions,
        })
    }
}

fn anonymous() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
}

/// One push subscription: where it delivers, and the OIDC token it asks
/// for. Debug shows the endpoint's origin only: in `patchpanda dev` its path
/// is the relay's secret capability.
#[derive(Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// The subscription id (`patchpanda-<key>`).
    pub id: String,
    pub topic: String,
    pub ack_deadline: Duration,
    /// Delivery attempts before dead-lettering (pubsub.tf's `max_attempts`).
    pub max_attempts: i32,
    pub endpoint: String,
    pub service_account: String,
    pub audience: String,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin = url::Url::parse(&self.endpoint)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| "?".into());
        f.debug_struct("PushTarget")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("ack_deadline", &self.ack_deadline)
            .field("max_attempts", &self.max_attempts)
            .field("endpoint", &format_args!("{origin}/[REDACTED]"))
            .field("service_account", &self.service_account)
            .field("audience", &self.audience)
            .finish()
    }
}

impl PushTarget {
    /// A subscription of pubsub.tf delivering to `endpoint`.
    pub fn of(
        sub: &PushSubscription,
        endpoint: String,
        service_account: &str,
        audience: String,
    ) -> Self {
        Self {
            id: sub.id(),
            topic: sub.topic.to_string(),
            ack_deadline: sub.ack_deadline,
            max_attempts: sub.max_attempts,
            endpoint,
            service_account: service_account.to_string(),
            audience,
        }
    }
}

/// Creates topics and subscriptions in the emulator.
#[derive(Debug)]
pub struct EmulatorAdmin {
    emulator: PubsubEmulator,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
}

impl EmulatorAdmin {
    /// Every topic, dead-letter topic and pull subscription of pubsub.tf,
    /// and the push subscriptions `pushes` (built with [`PushTarget::of`]
    /// from [`topology::PUSH_SUBSCRIPTIONS`], plus any extra github-events
    /// pushes, as pubsub.tf's `github_events_push`). Idempotent: what exists is kept,
    /// except that a push subscription's endpoint and token are updated to
    /// the given ones (the local endpoints change between starts).
    pub async fn provision(&self, pushes: &[PushTarget]) -> Result<()> {
        for topic in topology::TOPICS {
            self.create_topic(topic).await?;
            self.create_topic(&topology::dead_letter_topic(topic))
                .await?;
            let dlq = self.pull(
                &topology::dead_letter_subscription(topic),
                &topology::dead_letter_topic(topic),
                None,
            )?;
            self.create_subscription(dlq).await?;
        }
        for pull in topology::PULL_SUBSCRIPTIONS {
            let sub = self.pull(
                &pull.id(),
                pull.topic,
                Some(topology::PULL_MAX_DELIVERY_ATTEMPTS),
            )?;
            self.create_subscription(sub).await?;
        }
        for target in pushes {
            let push = push_config(target);
            let name = self.emulator.subscription_name(&target.id);
            let sub = Subscription::new()
                .set_name(name.clone())
                .set_topic(self.emulator.topic_name(&target.topic))
                .set_ack_deadline_seconds(target.ack_deadline.as_secs() as i32)
                .set_message_retention_duration(duration(topology::RETENTION)?)
                .set_retry_policy(retry_policy()?)
                .set_dead_letter_policy(
                    DeadLetterPolicy::new()
                        .set_dead_letter_topic(
                            self.emulator
                                .topic_name(&topology::dead_letter_topic(&target.topic)),
                        )
                        .set_max_delivery_attempts(target.max_attempts),
                )
                .set_expiration_policy(ExpirationPolicy::new())
                .set_push_config(push.clone());
            if !self.create_subscription(sub).await? {
                self.subscriptions
                    .modify_push_config()
                    .set_subscription(name.clone())
                    .set_push_config(push)
                    .send()
                    .await
                    .map_err(|e| gax::to_error(&e, &name))?;
            }
        }
        Ok(())
    }

    /// A subscription for tests and tools that read a topic.
    pub async fn create_pull_subscription(
        &self,
        id: &str,
        topic: &str,
        ordered: bool,
    ) -> Result<()> {
        let sub = self
            .pull(id, topic, None)?
            .set_enable_message_ordering(ordered);
        self.create_subscription(sub).await.map(|_| ())
    }

    fn pull(&self, id: &str, topic: &str, dead_letter_after: Option<i32>) -> Result<Subscription> {
        let mut sub = Subscription::new()
            .set_name(self.emulator.subscription_name(id))
            .set_topic(self.emulator.topic_name(topic))
            .set_ack_deadline_seconds(topology::PULL_ACK_DEADLINE.as_secs() as i32)
            .set_message_retention_duration(duration(topology::RETENTION)?)
            .set_expiration_policy(ExpirationPolicy::new());
        if let Some(attempts) = dead_letter_after {
            sub = sub
                .set_retry_policy(retry_policy()?)
                .set_dead_letter_policy(
                    DeadLetterPolicy::new()
                        .set_dead_letter_topic(
                            self.emulator
                                .topic_name(&topology::dead_letter_topic(topic)),
                        )
                        .set_max_delivery_attempts(attempts),
                );
        }
        Ok(sub)
    }

    async fn create_topic(&self, topic: &str) -> Result<()> {
        let name = self.emulator.topic_name(topic);
        let req = Topic::new()
            .set_name(name.clone())
            .set_message_retention_duration(duration(topology::RETENTION)?);
        match self.topics.create_topic().with_request(req).send().await {
            Ok(_) => Ok(()),
            Err(e) => match gax::to_error(&e, &name) {
                Error::AlreadyExists(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// True when created, false when it already existed.
    async fn create_subscription(&self, sub: Subscription) -> Result<bool> {
        let name = sub.name.clone();
        match self
            .subscriptions
            .create_subscription()
            .with_request(sub)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match gax::to_error(&e, &name) {
                Error::AlreadyExists(_) => Ok(false),
                other => Err(other),
            },
        }
    }
}

fn push_config(target: &PushTarget) -> PushConfig {
    PushConfig::new()
        .set_push_endpoint(target.endpoint.clone())
        .set_oidc_token(
            OidcToken::new()
                .set_service_account_email(target.service_account.clone())
                .set_audience(target.audience.clone()),
        )
}

fn retry_policy() -> Result<RetryPolicy> {
    Ok(RetryPolicy::new()
        .set_minimum_backoff(duration(topology::MIN_BACKOFF)?)
        .set_maximum_backoff(duration(topology::MAX_BACKOFF)?))
}

fn duration(d: Duration) -> Result<google_cloud_wkt::Duration> {
    google_cloud_wkt::Duration::try_from(d)
        .map_err(|e| Error::Internal(format!("duration {d:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn a_push_target_debug_hides_the_relay_capability() {
        let t = PushTarget {
            id: "patchpanda-x".into(),
            topic: "t".into(),
            ack_deadline: Duration::from_secs(10),
            max_attempts: 5,
            endpoint: "http://127.0.0.1:9/relay/0f1e2d3c4b5a69788796a5b4c3d2e1f0/x".into(),
            service_account: "push@p.iam.gserviceaccount.com".into(),
            audience: "http://127.0.0.1:8080/events/rotation".into(),
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("0f1e2d3c4b5a6978"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:9/[REDACTED]"), "{shown}");
    }

    #[test]
    fn unset_means_no_emulator() {
        assert_eq!(PubsubEmulator::from_env(&env(&[]), true).unwrap(), None);
    }

    #[test]
    fn the_host_and_project_are_read_and_checked() {
        let e = PubsubEmulator::from_env(&env(&[(ENV_EMULATOR_HOST, "127.0.0.1:8085")]), true)
            .unwrap()
            .unwrap();
        assert_eq!(e.host, "127.0.0.1:8085");
        assert_eq!(e.project, DEFAULT_PROJECT);
        assert_eq!(e.endpoint(), "http://127.0.0.1:8085");
        assert_eq!(
            e.topic_name("patchpanda-alerts"),
            "projects/patchpanda-local/topics/patchpanda-alerts"
        );
        let e = PubsubEmulator::from_env(
            &env(&[
                (ENV_EMULATOR_HOST, "localhost:9000"),
                ("GOOGLE_CLOUD_PROJECT", "p1"),
            ]),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.project, "p1");
        let e = PubsubEmulator::from_env(
            &env(&[
                (ENV_EMULATOR_HOST, "localhost:9000"),
                ("GOOGLE_CLOUD_PROJECT", "p1"),
                (ENV_EMULATOR_PROJECT, "e2e-7"),
            ]),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.project, "e2e-7");
        for bad in ["localhost", "http://x:1", "x:1/path", "a b:1", "u@x:1"] {
            let err =
                PubsubEmulator::from_env(&env(&[(ENV_EMULATOR_HOST, bad)]), true).unwrap_err();
            assert_eq!(err.variable, ENV_EMULATOR_HOST, "{bad}");
        }
        let err = PubsubEmulator::from_env(
            &env(&[(ENV_EMULATOR_HOST, "x:1"), (ENV_EMULATOR_PROJECT, "a/b")]),
            true,
        )
        .unwrap_err();
        assert_eq!(err.variable, ENV_EMULATOR_PROJECT);
    }

    /// Cloud Run runs the gcp backend: there the variable must not redirect
    /// the bus to an endpoint without credentials.
    #[test]
    fn the_gcp_backend_refuses_the_emulator() {
        let err = PubsubEmulator::from_env(&env(&[(ENV_EMULATOR_HOST, "127.0.0.1:8085")]), false)
            .unwrap_err();
        assert_eq!(err.variable, ENV_EMULATOR_HOST);
        assert!(err.to_string().contains("PATCHPANDA_BACKEND=gcp"), "{err}");
    }
}
