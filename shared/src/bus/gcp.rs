//! The Pub/Sub backend (`google-cloud-pubsub`).
//!
//! The crate offers stubs for its admin clients but none for its `Publisher`
//! (the data-plane stub is private to the crate), so publishing goes through
//! [`TopicPublisher`], a one-method seam: [`PubSubPublisher`] in production,
//! a fake in tests. `check` uses the admin client, which has a real stub.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use google_cloud_pubsub::client::{BasePublisher, Publisher, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message as PubsubMessage;

use super::{Bus, Message};
use crate::gcp::gax;
use crate::{Error, Result, names};

/// Pub/Sub's limits on what one message may carry.
const MAX_DATA: usize = 10 * 1000 * 1000;
const MAX_ATTRIBUTES: usize = 100;
const MAX_ATTRIBUTE_KEY: usize = 256;
const MAX_ATTRIBUTE_VALUE: usize = 1024;
const MAX_ORDERING_KEY: usize = 1024;

/// Publishes one message to a topic (full name) and resolves once the server
/// has assigned it an id.
#[async_trait]
pub trait TopicPublisher: Send + Sync + 'static {
    async fn publish(
        &self,
        topic: &str,
        message: PubsubMessage,
    ) -> std::result::Result<String, PublishError>;
}

/// The crate's batching `Publisher`, one per topic over one shared
/// connection, created on first use and kept.
#[derive(Debug)]
pub struct PubSubPublisher {
    base: BasePublisher,
    publishers: RwLock<HashMap<String, Publisher>>,
}

impl PubSubPublisher {
    pub fn new(base: BasePublisher) -> Self {
        Self {
            base,
            publishers: RwLock::new(HashMap::new()),
        }
    }

    fn publisher(&self, topic: &str) -> Publisher {
        if let Ok(map) = self.publishers.read()
            && let Some(p) = map.get(topic)
        {
            return p.clone();
        }
        let mut map = match self.publishers.write() {
            Ok(m) => m,
            // A panic elsewhere while holding the lock leaves a map that is
            // still consistent (inserts are atomic), so keep using it.
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(topic.to_string())
            .or_insert_with(|| self.base.publisher(topic).build())
            .clone()
    }

    /// How many topics have a publisher (for tests of the cache).
    pub fn cached_topics(&self) -> usize {
        self.publishers.read().map(|m| m.len()).unwrap_or(0)
    }
}

#[async_trait]
impl TopicPublisher for PubSubPublisher {
    async fn publish(
        &self,
        topic: &str,
        message: PubsubMessage,
    ) -> std::result::Result<String, PublishError> {
        let publisher = self.publisher(topic);
        let key = message.ordering_key.clone();
        let result = publisher.publish(message).await;
        // After a failure the publisher pauses the ordering key so later
        // messages cannot overtake the failed one. Ours was not published and
        // the caller retries it, so there is nothing to protect: resume.
        if result.is_err() && !key.is_empty() {
            publisher.resume_publish(key);
        }
        result
    }
}

/// Pub/Sub in one project. Topics are named by id; the project is added here.
pub struct GcpBus {
    project: String,
    publisher: Arc<dyn TopicPublisher>,
    admin: TopicAdmin,
    /// The topic `check` reads; any topic the caller can see would do.
    check_topic: String,
}

impl std::fmt::Debug for GcpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpBus")
            .field("project", &self.project)
            .field("check_topic", &self.check_topic)
            .finish_non_exhaustive()
    }
}

impl GcpBus {
    /// Clients with Application Default Credentials.
    pub async fn new(project: &str) -> Result<Self> {
        gax::validate_project(project)?;
        let base = BasePublisher::builder()
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Pub/Sub publisher client"))?;
        let admin = TopicAdmin::builder()
            .build()
            .await
            .map_err(|e| gax::from_builder(&e, "Pub/Sub admin client"))?;
        Ok(Self::with_parts(
            project,
            Arc::new(PubSubPublisher::new(base)),
            admin,
        ))
    }

    /// A bus over a publisher seam and a stub of the topic admin service,
    /// for tests.
    pub fn from_stubs<P, A>(project: &str, publisher: P, admin: A) -> Self
    where
        P: TopicPublisher,
        A: google_cloud_pubsub::stub::TopicAdmin + 'static,
    {
        Self::with_parts(
            project,
            Arc::new(publisher),
            TopicAdmin::from_stub::<A>(admin),
        )
    }

    /// A bus over a publisher and an admin client built elsewhere (the
    /// emulator's, with its endpoint and anonymous credentials).
    pub(crate) fn with_publisher(
        project: &str,
        publisher: Arc<dyn TopicPublisher>,
        admin: TopicAdmin,
    ) -> Self {
        Self::with_parts(project, publisher, admin)
    }

    fn with_parts(project: &str, publisher: Arc<dyn TopicPublisher>, admin: TopicAdmin) -> Self {
        Self {
            project: project.to_string(),
            publisher,
            admin,
            check_topic: names::TOPIC_GITHUB_EVENTS.to_string(),
        }
    }

    /// Makes `check` read this topic (by id) instead of
    /// `patchpanda-github-events`: pick one the function's identity may get.
    pub fn with_check_topic(mut self, topic: &str) -> Self {
        self.check_topic = topic.to_string();
        self
    }

    fn topic_name(&self, topic: &str) -> Result<String> {
        gax::validate_project(&self.project)?;
        validate_topic_id(topic)?;
        Ok(format!("projects/{}/topics/{topic}", self.project))
    }
}

#[async_trait]
impl Bus for GcpBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<String> {
        let name = self.topic_name(topic)?;
        validate_message(&message, &name)?;
        let mut msg = PubsubMessage::new()
            .set_data(message.data)
            .set_attributes(message.attributes);
        if let Some(key) = message.ordering_key {
            msg = msg.set_ordering_key(key);
        }
        let id = self
            .publisher
            .publish(&name, msg)
            .await
            .map_err(|e| publish_error(&e, &name))?;
        if id.is_empty() {
            return Err(Error::Internal(format!(
                "{name}: the service returned no message id"
            )));
        }
        Ok(id)
    }

    async fn check(&self) -> Result<()> {
        let name = self.topic_name(&self.check_topic)?;
        self.admin
            .get_topic()
            .set_topic(name.clone())
            .send()
            .await
            .map_err(|e| gax::to_error(&e, &name))?;
        Ok(())
    }
}

fn publish_error(err: &PublishError, topic: &str) -> Error {
    match err {
        PublishError::Rpc(e) => gax::to_error(e, topic),
        // The key resumes right after the failure that paused it; a retry
        // goes through.
        PublishError::OrderingKeyPaused => {
            Error::Unavailable(format!("{topic}: publishing paused for the ordering key"))
        }
        PublishError::Shutdown => Error::Unavailable(format!("{topic}: the publisher shut down")),
        other => Error::Internal(format!("{topic}: {other}")),
    }
}

/// Pub/Sub's rule: 3-255 characters, a letter first, then letters, digits
/// and `-_.~+%`, not starting with `goog`.
fn validate_topic_id(topic: &str) -> Result<()> {
    let ok = (3..=255).contains(&topic.len())
        && topic.starts_with(|c: char| c.is_ascii_alphabetic())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%'))
        && !topic.to_ascii_lowercase().starts_with("goog");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{topic:?} is not a topic id"
        )))
    }
}

fn validate_message(m: &Message, topic: &str) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidArgument(format!("{topic}: {why}")));
    if m.data.is_empty() && m.attributes.is_empty() {
        return bad("a message needs data or at least one attribute".into());
    }
    if m.data.len() > MAX_DATA {
        return bad(format!(
            "data is {} bytes, over Pub/Sub's {MAX_DATA}",
            m.data.len()
        ));
    }
    if m.attributes.len() > MAX_ATTRIBUTES {
        return bad(format!(
            "{} attributes, over Pub/Sub's {MAX_ATTRIBUTES}",
            m.attributes.len()
        ));
    }
    for (k, v) in &m.attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY || k.starts_with("goog") {
            return bad(format!("attribute key {k:?} is not allowed"));
        }
        if v.len() > MAX_ATTRIBUTE_VALUE {
            return bad(format!(
                "attribute {k:?} is {} bytes, over Pub/Sub's {MAX_ATTRIBUTE_VALUE}",
                v.len()
            ));
        }
    }
    if let Some(key) = &m.ordering_key
        && (key.is_empty() || key.len() > MAX_ORDERING_KEY)
    {
        return bad(format!(
            "an ordering key must be 1-{MAX_ORDERING_KEY} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use google_cloud_gax::error::rpc::{Code, Status};
    use google_cloud_gax::options::RequestOptions;
    use google_cloud_gax::response::Response;
    use google_cloud_pubsub::model::{GetTopicRequest, Topic};

    use super::*;

    /// Records what it is asked to publish; answers ids in turn, or fails.
    #[derive(Debug, Clone, Default)]
    struct FakePublisher {
        sent: Arc<Mutex<Vec<(String, PubsubMessage)>>>,
        fail: Option<Code>,
        paused: bool,
    }

    #[async_trait]
    impl TopicPublisher for FakePublisher {
        async fn publish(
            &self,
            topic: &str,
            message: PubsubMessage,
        ) -> std::result::Result<String, PublishError> {
            let mut sent = self.sent.lock().unwrap();
            sent.push((topic.to_string(), message));
            if self.paused {
                return Err(PublishError::OrderingKeyPaused);
            }
            if let Some(code) = self.fail {
                return Err(PublishError::Rpc(Arc::new(
                    google_cloud_gax::error::Error::service(
                        Status::default().set_code(code).set_message("canned"),
                    ),
                )));
            }
            Ok(format!("msg-{}", sent.len()))
        }
    }

    #[derive(Debug, Clone, Default)]
    struct FakeAdmin {
        gets: Arc<Mutex<Vec<GetTopicRequest>>>,
        fail: Option<Code>,
    }

    impl google_cloud_pubsub::stub::TopicAdmin for FakeAdmin {
        async fn get_topic(
            &self,
            req: GetTopicRequest,
            _: RequestOptions,
        ) -> google_cloud_pubsub::Result<Response<Topic>> {
            let name = req.topic.clone();
            self.gets.lock().unwrap().push(req);
            match self.fail {
                Some(code) => Err(google_cloud_gax::error::Error::service(
                    Status::default().set_code(code).set_message("canned"),
                )),
                None => Ok(Response::from(Topic::new().set_name(name))),
            }
        }
    }

    fn bus(publisher: &FakePublisher, admin: &FakeAdmin) -> GcpBus {
        GcpBus::from_stubs("p1", publisher.clone(), admin.clone())
    }

    #[tokio::test]
    async fn publish_sends_data_attributes_and_ordering_key_to_the_full_topic() {
        let publisher = FakePublisher::default();
        let bus = bus(&publisher, &FakeAdmin::default());
        let id = bus
            .publish(
                "patchpanda-github-events",
                Message::new(&b"{\"zen\":\"hi\"}"[..])
                    .attribute("github_event", "ping")
                    .attribute("repository", "o/r")
                    .ordering_key("o/r"),
            )
            .await
            .unwrap();
        assert_eq!(id, "msg-1");
        let id2 = bus
            .publish("patchpanda-alerts", Message::new(&b"x"[..]))
            .await
            .unwrap();
        assert_eq!(id2, "msg-2");
        let sent = publisher.sent.lock().unwrap();
        let (topic, msg) = &sent[0];
        assert_eq!(topic, "projects/p1/topics/patchpanda-github-events");
        assert_eq!(&msg.data[..], b"{\"zen\":\"hi\"}");
        assert_eq!(
            msg.attributes.get("github_event").map(String::as_str),
            Some("ping")
        );
        assert_eq!(
            msg.attributes.get("repository").map(String::as_str),
            Some("o/r")
        );
        assert_eq!(msg.ordering_key, "o/r");
        assert_eq!(sent[1].0, "projects/p1/topics/patchpanda-alerts");
        assert_eq!(sent[1].1.ordering_key, "");
    }

    #[tokio::test]
    async fn publish_failures_map_to_canonical_errors() {
        for (code, want) in [
            (Code::NotFound, "not found"),
            (Code::PermissionDenied, "permission denied"),
            (Code::Unavailable, "unavailable"),
            (Code::DeadlineExceeded, "unavailable"),
        ] {
            let publisher = FakePublisher {
                fail: Some(code),
                ..Default::default()
            };
            let err = bus(&publisher, &FakeAdmin::default())
                .publish("patchpanda-github-events", Message::new(&b"x"[..]))
                .await
                .unwrap_err();
            assert!(err.to_string().starts_with(want), "{code:?}: {err}");
            assert!(
                err.to_string()
                    .contains("projects/p1/topics/patchpanda-github-events"),
                "{err}"
            );
        }
        let paused = FakePublisher {
            paused: true,
            ..Default::default()
        };
        let err = bus(&paused, &FakeAdmin::default())
            .publish(
                "patchpanda-github-events",
                Message::new(&b"x"[..]).ordering_key("k"),
            )
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }

    #[tokio::test]
    async fn bad_topics_and_messages_are_refused_before_publishing() {
        let publisher = FakePublisher::default();
        let bus = bus(&publisher, &FakeAdmin::default());
        for topic in ["", "ab", "1abc", "a/b/c", "goog-topic", "has space"] {
            let err = bus
                .publish(topic, Message::new(&b"x"[..]))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(_)),
                "{topic:?}: {err:?}"
            );
        }
        let bad_messages = [
            Message::default(),
            Message::new(vec![0u8; MAX_DATA + 1]),
            Message::new(&b"x"[..]).attribute("", "v"),
            Message::new(&b"x"[..]).attribute("googfoo", "v"),
            Message::new(&b"x"[..]).attribute("k", "v".repeat(MAX_ATTRIBUTE_VALUE + 1)),
            Message::new(&b"x"[..]).ordering_key(""),
        ];
        for m in bad_messages {
            let err = bus.publish("patchpanda-alerts", m).await.unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        }
        assert!(publisher.sent.lock().unwrap().is_empty());
        // Attributes alone make a valid message.
        bus.publish("patchpanda-alerts", Message::default().attribute("k", "v"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn check_gets_the_check_topic() {
        let admin = FakeAdmin::default();
        let b = bus(&FakePublisher::default(), &admin);
        b.check().await.unwrap();
        let b = b.with_check_topic("patchpanda-rotation-events");
        b.check().await.unwrap();
        let gets: Vec<String> = admin
            .gets
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.topic.clone())
            .collect();
        assert_eq!(
            gets,
            vec![
                "projects/p1/topics/patchpanda-github-events",
                "projects/p1/topics/patchpanda-rotation-events"
            ]
        );
        let failing = FakeAdmin {
            fail: Some(Code::Unavailable),
            ..Default::default()
        };
        let err = bus(&FakePublisher::default(), &failing)
            .check()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    }

    /// The real publisher against a closed local port: one cached publisher
    /// per topic, and a connection failure surfaces as a retryable error.
    #[tokio::test]
    async fn real_publisher_caches_per_topic_and_reports_unreachable_as_unavailable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let base = BasePublisher::builder()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
            .build()
            .await
            .unwrap();
        let real = Arc::new(PubSubPublisher::new(base));
        struct Shared(Arc<PubSubPublisher>);
        #[async_trait]
        impl TopicPublisher for Shared {
            async fn publish(
                &self,
                topic: &str,
                message: PubsubMessage,
            ) -> std::result::Result<String, PublishError> {
                self.0.publish(topic, message).await
            }
        }
        let bus = GcpBus::from_stubs("p1", Shared(real.clone()), FakeAdmin::default());
        for topic in [
            "patchpanda-alerts",
            "patchpanda-alerts",
            "patchpanda-github-events",
        ] {
            let err = bus
                .publish(topic, Message::new(&b"x"[..]).ordering_key("k"))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        }
        assert_eq!(real.cached_topics(), 2);
    }
}
