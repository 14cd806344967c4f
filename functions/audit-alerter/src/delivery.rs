//! Getting alerts out: the log inline, then every sink concurrently, each
//! with bounded retries and exponential backoff (honouring Retry-After).
//! The caller waits at most `ack_wait`; slower deliveries carry on in the
//! background, so one failing sink never holds up the others or the ack.

use std::sync::Arc;

use crate::alert::Alert;
use crate::settings::DeliverySettings;
use crate::sinks::{Sink, SinkError, log};

#[derive(Clone)]
pub struct Delivery {
    sinks: Arc<Vec<Arc<dyn Sink>>>,
    settings: DeliverySettings,
}

impl Delivery {
    pub fn new(sinks: Vec<Arc<dyn Sink>>, settings: DeliverySettings) -> Self {
        Self {
            sinks: Arc::new(sinks),
            settings,
        }
    }

    pub fn sink_names(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name()).collect()
    }

    /// Logs each alert, then sends it everywhere. Returns when all sends
    /// are done or `ack_wait` has passed, whichever is first.
    pub async fn deliver(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        let mut tasks = Vec::with_capacity(alerts.len() * self.sinks.len());
        for alert in alerts {
            log::record(&alert);
            let alert = Arc::new(alert);
            for sink in self.sinks.iter() {
                let (sink, alert, settings) =
                    (Arc::clone(sink), Arc::clone(&alert), self.settings.clone());
                tasks.push(tokio::spawn(async move {
                    send_with_retry(sink.as_ref(), &alert, &settings).await
                }));
            }
        }
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(self.settings.ack_wait, all)
            .await
            .is_err()
        {
            tracing::warn!(
                wait = %humantime::format_duration(self.settings.ack_wait),
                "some alert sinks are slow; acknowledging now, their retries go on in the background"
            );
        }
    }
}

/// One alert to one sink; true when it got there.
pub async fn send_with_retry(sink: &dyn Sink, alert: &Alert, settings: &DeliverySettings) -> bool {
    let attempts = settings.attempts.max(1);
    let mut backoff = settings.backoff;
    for attempt in 1..=attempts {
        match sink.send(alert).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(sink = sink.name(), alert.id = %alert.id, attempt, "alert delivered after retrying");
                }
                return true;
            }
            Err(SinkError::Permanent(message)) => {
                tracing::error!(sink = sink.name(), alert.id = %alert.id, error = %message, "alert sink refused the alert; not retrying");
                return false;
            }
            Err(SinkError::Retryable {
                message,
                retry_after,
            }) => {
                if attempt == attempts {
                    tracing::error!(sink = sink.name(), alert.id = %alert.id, attempts, error = %message, "alert sink failed; giving up (the alert is in the log)");
                    return false;
                }
                let wait = retry_after.unwrap_or(backoff).min(settings.backoff_max);
                tracing::warn!(sink = sink.name(), alert.id = %alert.id, attempt, error = %message, retry_in = %humantime::format_duration(wait), "alert sink failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::Utc;

    use super::*;
    use crate::alert::{Rule, Severity};

    struct Flaky {
        fail_first: u32,
        calls: AtomicU32,
        permanent: bool,
        got: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Sink for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= self.fail_first {
                return Err(if self.permanent {
                    SinkError::Permanent("no".into())
                } else {
                    SinkError::retryable("down")
                });
            }
            self.got.lock().unwrap().push(alert.id.clone());
            Ok(())
        }
    }

    fn settings(attempts: u32) -> DeliverySettings {
        DeliverySettings {
            ack_wait: Duration::from_secs(5),
            attempts,
            backoff: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            timeout: Duration::from_secs(1),
        }
    }

    fn alert() -> Alert {
        Alert {
            id: "a1".into(),
            rule: Rule::SecretDeleted,
            severity: Severity::P0,
            summary: "s".into(),
            principal: "p".into(),
            resource: "r".into(),
            method: "m".into(),
            time: Utc::now(),
            insert_id: "i".into(),
            log_name: "l".into(),
            fingerprint: "f".into(),
            folded: 0,
            details: Default::default(),
            link: None,
            fold_window: None,
        }
    }

    fn flaky(fail_first: u32, permanent: bool) -> Flaky {
        Flaky {
            fail_first,
            calls: AtomicU32::new(0),
            permanent,
            got: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn retries_until_success_within_the_bound() {
        let s = flaky(2, false);
        assert!(send_with_retry(&s, &alert(), &settings(3)).await);
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
        let s = flaky(5, false);
        assert!(!send_with_retry(&s, &alert(), &settings(3)).await);
        assert_eq!(s.calls.load(Ordering::SeqCst), 3, "bounded");
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let s = flaky(1, true);
        assert!(!send_with_retry(&s, &alert(), &settings(4)).await);
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn one_dead_sink_does_not_stop_another() {
        let dead = Arc::new(flaky(100, false));
        let good = Arc::new(flaky(0, false));
        let d = Delivery::new(vec![dead.clone(), good.clone()], settings(2));
        d.deliver(vec![alert()]).await;
        assert_eq!(good.got.lock().unwrap().as_slice(), ["a1"]);
        assert_eq!(dead.calls.load(Ordering::SeqCst), 2);
    }
}
