//! The alerter behind its push handlers, the shared recording bus and
//! hand-moved clock (`patchpanda_shared::testing`).

use crate::prelude::*;

/// What the alerter published on `patchpanda-alerts`, read back.
pub(crate) trait Alerts {
    fn alerts(&self) -> Vec<Alert>;
    fn rules(&self) -> Vec<Rule>;
}

impl Alerts for RecordingBus {
    fn alerts(&self) -> Vec<Alert> {
        self.on(names::TOPIC_ALERTS)
            .iter()
            .map(|m| serde_json::from_slice(&m.data).unwrap())
            .collect()
    }

    fn rules(&self) -> Vec<Rule> {
        self.alerts().iter().map(|a| a.rule).collect()
    }
}

pub(crate) const PROJECT: &str = "my-proj";
pub(crate) const PROJECT_NUMBER: &str = "907234637394";
pub(crate) const GATEWAY_SA: &str = "gateway@my-proj.iam.gserviceaccount.com";
pub(crate) const ROTATOR_SA: &str = "rotator@my-proj.iam.gserviceaccount.com";
pub(crate) const HUMAN: &str = "mallory@example.com";

pub(crate) struct Harness {
    pub(crate) alerter: Arc<Alerter>,
    pub(crate) bus: Arc<RecordingBus>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) audit: Handler<PushMessage>,
    pub(crate) rotation: Handler<PushMessage>,
}

pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-16T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub(crate) fn local_config() -> Config {
    Config::from_env(&Env::default(), names::PRINCIPAL_AUDIT_ALERTER).unwrap()
}

/// Local defaults plus the production-shaped identities the fixtures use.
pub(crate) fn test_settings(env: &[(&str, &str)]) -> Settings {
    let env = Env::from_pairs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut s = Settings::from_env(&local_config(), &env).unwrap();
    s.readers.extend([GATEWAY_SA]);
    s.rotators.extend([ROTATOR_SA]);
    s.gateway_accounts.extend([GATEWAY_SA]);
    s.delivery.backoff = Duration::from_millis(10);
    s.delivery.backoff_max = Duration::from_millis(50);
    s
}

pub(crate) fn harness_with(settings: Settings) -> Harness {
    let bus = Arc::new(RecordingBus::new());
    let clock = Arc::new(ManualClock::new(t0() + TimeDelta::minutes(1)));
    let alerter = Arc::new(Alerter::with_bus(settings, bus.clone(), clock.clone()).unwrap());
    Harness {
        audit: handlers::audit_log(alerter.clone()),
        rotation: handlers::rotation(alerter.clone()),
        alerter,
        bus,
        clock,
    }
}

pub(crate) fn harness() -> Harness {
    harness_with(test_settings(&[]))
}

pub(crate) fn push_message(data: &[u8]) -> PushMessage {
    PushMessage {
        message_id: "5187581549398349".into(),
        data: Bytes::copy_from_slice(data),
        attributes: BTreeMap::from([(
            "logging.googleapis.com/timestamp".to_string(),
            "2025-11-16T10:00:00Z".to_string(),
        )]),
        ordering_key: None,
        publish_time: None,
        subscription: Some("projects/my-proj/subscriptions/audit".into()),
        delivery_attempt: None,
        format: PushFormat::Wrapped,
    }
}

pub(crate) async fn call(h: &Handler<PushMessage>, data: &[u8]) -> Result<Reply, HandlerError> {
    h.clone()
        .oneshot(Invocation::new(
            push_message(data),
            Context::for_test("audit-alerter"),
        ))
        .await
}

impl Harness {
    pub(crate) async fn entry(&self, entry: &Value) -> Result<Reply, HandlerError> {
        call(&self.audit, &serde_json::to_vec(entry).unwrap()).await
    }

    pub(crate) async fn ok(&self, entry: &Value) {
        let r = self.entry(entry).await.expect("accepted");
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }

    /// Not done yet: answered 503 (so Pub/Sub redelivers); returns why.
    pub(crate) async fn nacked(&self, entry: &Value) -> String {
        let e = self.entry(entry).await.expect_err("answered 503");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
        e.message().to_string()
    }

    pub(crate) async fn notice(&self, n: &RotationNotice) {
        let r = call(&self.rotation, &n.to_message().data).await.unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }

    pub(crate) fn only_alert(&self) -> Alert {
        let alerts = self.bus.alerts();
        assert_eq!(alerts.len(), 1, "expected one alert, got {alerts:#?}");
        alerts.into_iter().next().unwrap()
    }

    pub(crate) fn none(&self) {
        let alerts = self.bus.alerts();
        assert!(alerts.is_empty(), "expected no alert, got {alerts:#?}");
    }
}
