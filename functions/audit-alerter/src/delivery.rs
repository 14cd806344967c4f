//! Getting alerts out. Every alert goes to the log first (see
//! [`crate::sinks::log`]), then to every sink concurrently, each with a few
//! quick retries (exponential backoff, honouring Retry-After) inside one
//! push's budget (`ack_wait`). What is still undelivered then stays in the
//! outbox and its push is answered 503, so Pub/Sub redelivers it with its
//! own backoff; nothing depends on a background task surviving.
//!
//! Sinks are told apart: a sink that refuses an alert with a 4xx other than
//! 408/429 is broken (a revoked Slack hook, a wrong routing key). It is
//! reported once, loudly, and from then on it does not hold up the others:
//! an alert counts as delivered once every sink that is not broken took it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::alert::Alert;
use crate::settings::DeliverySettings;
use crate::sinks::{Sink, SinkError};

/// Which sinks took an alert: bit `i` for sink `i`.
pub type Mask = u64;

pub struct Delivery {
    sinks: Vec<Arc<dyn Sink>>,
    broken: Vec<AtomicBool>,
    settings: DeliverySettings,
}

/// What one round of sending did.
#[derive(Debug, Default)]
pub struct Round {
    /// The new mask of each alert of the batch, in order.
    pub masks: Vec<Mask>,
    /// Sinks that broke in this round: (name, what they answered).
    pub newly_broken: Vec<(&'static str, String)>,
}

enum Sent {
    Ok,
    Failed,
    Refused(String),
}

impl Delivery {
    pub fn new(sinks: Vec<Arc<dyn Sink>>, settings: DeliverySettings) -> Self {
        let sinks: Vec<_> = sinks.into_iter().take(Mask::BITS as usize).collect();
        Self {
            broken: sinks.iter().map(|_| AtomicBool::new(false)).collect(),
            sinks,
            settings,
        }
    }

    pub fn sink_names(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name()).collect()
    }

    /// The sinks currently known to be broken.
    #[cfg(test)]
    pub fn broken(&self) -> Vec<&'static str> {
        self.sinks
            .iter()
            .zip(&self.broken)
            .filter(|(_, b)| b.load(Ordering::Relaxed))
            .map(|(s, _)| s.name())
            .collect()
    }

    /// Whether an alert with `mask` needs nothing more: every sink took it
    /// or is broken.
    pub fn complete(&self, mask: Mask) -> bool {
        self.broken
            .iter()
            .enumerate()
            .all(|(i, b)| mask & (1 << i) != 0 || b.load(Ordering::Relaxed))
    }

    /// The names of the sinks an alert with `mask` still waits for.
    pub fn missing(&self, mask: Mask) -> Vec<&'static str> {
        self.sinks
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) == 0 && !self.broken[*i].load(Ordering::Relaxed))
            .map(|(_, s)| s.name())
            .collect()
    }

    /// Sends each alert to every sink its mask lacks, until all are done or
    /// `ack_wait` has passed; unfinished sends are dropped (their alerts
    /// stay undelivered and are sent again later).
    pub async fn send(&self, batch: &[(Alert, Mask)]) -> Round {
        let mut round = Round {
            masks: batch.iter().map(|(_, m)| *m).collect(),
            newly_broken: Vec::new(),
        };
        let mut sends = FuturesUnordered::new();
        for (ai, (alert, mask)) in batch.iter().enumerate() {
            for (si, sink) in self.sinks.iter().enumerate() {
                if mask & (1 << si) != 0 {
                    continue;
                }
                if !sink.takes(alert) {
                    round.masks[ai] |= 1 << si;
                    continue;
                }
                // A broken sink still gets one try (it may be fixed), but
                // no retries and no waiting on it.
                let attempts = if self.broken[si].load(Ordering::Relaxed) {
                    1
                } else {
                    self.settings.attempts
                };
                sends.push(async move {
                    (
                        ai,
                        si,
                        send_with_retry(sink.as_ref(), alert, &self.settings, attempts).await,
                    )
                });
            }
        }
        let deadline = tokio::time::sleep(self.settings.ack_wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = sends.next() => {
                    let Some((ai, si, sent)) = next else { break };
                    match sent {
                        Sent::Ok => {
                            round.masks[ai] |= 1 << si;
                            if self.broken[si].swap(false, Ordering::Relaxed) {
                                tracing::warn!(sink = self.sinks[si].name(), "alert sink accepts alerts again");
                            }
                        }
                        Sent::Refused(message) => {
                            if !self.broken[si].swap(true, Ordering::Relaxed) {
                                round.newly_broken.push((self.sinks[si].name(), message));
                            }
                        }
                        Sent::Failed => {}
                    }
                }
                _ = &mut deadline => {
                    tracing::warn!(
                        wait = %humantime::format_duration(self.settings.ack_wait),
                        unfinished = sends.len(),
                        "some alert sinks are slow; their alerts stay queued and are sent again"
                    );
                    break;
                }
            }
        }
        round
    }
}

/// One alert to one sink, up to `attempts` times.
async fn send_with_retry(
    sink: &dyn Sink,
    alert: &Alert,
    settings: &DeliverySettings,
    attempts: u32,
) -> Sent {
    let attempts = attempts.max(1);
    let mut backoff = settings.backoff;
    for attempt in 1..=attempts {
        match sink.send(alert).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(sink = sink.name(), alert.id = %alert.id, attempt, "alert delivered after retrying");
                }
                return Sent::Ok;
            }
            Err(SinkError::Permanent(message)) => {
                tracing::error!(sink = sink.name(), alert.id = %alert.id, error = %message, "alert sink refused the alert; treating the sink as broken until it accepts one again");
                return Sent::Refused(message);
            }
            Err(SinkError::Retryable {
                message,
                retry_after,
            }) => {
                if attempt == attempts {
                    tracing::warn!(sink = sink.name(), alert.id = %alert.id, attempts, error = %message, "alert sink failed; the alert stays queued");
                    return Sent::Failed;
                }
                let wait = retry_after.unwrap_or(backoff).min(settings.backoff_max);
                tracing::warn!(sink = sink.name(), alert.id = %alert.id, attempt, error = %message, retry_in = %humantime::format_duration(wait), "alert sink failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
    }
    Sent::Failed
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;
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

    fn flaky(fail_first: u32, permanent: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail_first,
            calls: AtomicU32::new(0),
            permanent,
            got: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn retries_until_success_within_the_bound() {
        let s = flaky(2, false);
        assert!(matches!(
            send_with_retry(s.as_ref(), &alert(), &settings(3), 3).await,
            Sent::Ok
        ));
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
        let s = flaky(5, false);
        assert!(matches!(
            send_with_retry(s.as_ref(), &alert(), &settings(3), 3).await,
            Sent::Failed
        ));
        assert_eq!(s.calls.load(Ordering::SeqCst), 3, "bounded");
    }

    #[tokio::test]
    async fn pagerduty_below_its_severity_is_neither_called_nor_waited_for() {
        use crate::sinks::pagerduty::PagerDutySink;
        // An unroutable URL: a call would fail, so only a skip completes.
        let pd: Arc<dyn Sink> = Arc::new(PagerDutySink::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9/v2/enqueue".into(),
            patchpanda_shared::SecretValue::from("k".to_string()),
            Severity::P2,
        ));
        let good = flaky(0, false);
        let d = Delivery::new(vec![pd, good.clone()], settings(1));
        let mut routine = alert();
        routine.severity = Severity::P3;
        let round = d.send(&[(routine, 0)]).await;
        assert_eq!(
            round.masks,
            vec![0b11],
            "P3 counts as delivered to PagerDuty"
        );
        assert!(d.complete(round.masks[0]));
        assert_eq!(
            good.got.lock().unwrap().len(),
            1,
            "still recorded elsewhere"
        );
        let mut page = alert();
        page.severity = Severity::P2;
        let round = d.send(&[(page, 0b10)]).await;
        assert_eq!(round.masks, vec![0b10], "P2 waits for PagerDuty");
        assert!(!d.complete(round.masks[0]));
    }

    #[tokio::test]
    async fn a_dead_sink_leaves_the_alert_incomplete_and_a_good_one_marked() {
        let dead = flaky(100, false);
        let good = flaky(0, false);
        let d = Delivery::new(vec![dead.clone(), good.clone()], settings(2));
        let round = d.send(&[(alert(), 0)]).await;
        assert_eq!(good.got.lock().unwrap().as_slice(), ["a1"]);
        assert_eq!(dead.calls.load(Ordering::SeqCst), 2);
        assert_eq!(round.masks, vec![0b10]);
        assert!(!d.complete(round.masks[0]));
        assert_eq!(d.missing(round.masks[0]), vec!["flaky"]);
        // Sent again, only the sink that lacks it is called.
        let round = d.send(&[(alert(), 0b10)]).await;
        assert_eq!(good.got.lock().unwrap().len(), 1, "not paged twice");
        assert_eq!(round.masks, vec![0b10]);
    }

    #[tokio::test]
    async fn a_refusing_sink_is_broken_once_and_stops_blocking() {
        let refusing = flaky(1, true);
        let good = flaky(0, false);
        let d = Delivery::new(vec![refusing.clone(), good.clone()], settings(4));
        let round = d.send(&[(alert(), 0)]).await;
        assert_eq!(
            refusing.calls.load(Ordering::SeqCst),
            1,
            "a 4xx is not retried"
        );
        assert_eq!(round.newly_broken.len(), 1);
        assert!(d.complete(round.masks[0]), "the broken sink does not block");
        assert_eq!(d.broken(), vec!["flaky"]);
        // Fixed: it takes the next one and is no longer broken.
        let round = d.send(&[(alert(), 0b10)]).await;
        assert!(round.newly_broken.is_empty());
        assert_eq!(round.masks, vec![0b11]);
        assert!(d.broken().is_empty());
    }
}
