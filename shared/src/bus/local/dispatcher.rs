//! Push delivery for the local bus, as Pub/Sub does it: POST the wrapped
//! envelope with an OIDC bearer token, ack on 102/200/201/202/204, otherwise
//! retry with exponential backoff and dead-letter after the last attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::envelope::PushEnvelope;
use super::leases::{self, Claimed};
use super::{LocalBus, duration_ms, now_ms, subscription_resource_name};
use crate::auth::local::LocalIssuer;
use crate::{Result, SecretValue, names};

/// Pushes in flight at once, across subscriptions and ordering keys.
pub const MAX_IN_FLIGHT: usize = 16;
/// Pub/Sub's push backoff range when a subscription has no RetryPolicy.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Pub/Sub's default ack deadline, which is also its push request timeout.
pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(10);
/// How often the database is polled for messages other processes published.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a stop waits for pushes in flight before abandoning them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Tokens are reused until this long before they expire.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Nacked,
    DeadLettered,
}

/// Delivers the pending messages of every subscription by push.
pub struct Dispatcher {
    bus: Arc<LocalBus>,
    issuer: Arc<LocalIssuer>,
    client: reqwest::Client,
    /// This dispatcher's lease owner id in the database.
    owner: String,
    min_backoff: Duration,
    max_backoff: Duration,
    ack_deadline: Duration,
    poll_interval: Duration,
    /// Push tokens by audience, with when they stop being reused.
    tokens: Mutex<HashMap<String, (SecretValue, Instant)>>,
    /// Claims and next-due reads made: each is work on the bus's writer,
    /// which publishes wait behind.
    lookups: Arc<AtomicUsize>,
}

impl Dispatcher {
    pub fn new(bus: Arc<LocalBus>, issuer: Arc<LocalIssuer>) -> Dispatcher {
        // The local bus only pushes to endpoints on this machine, so a proxy
        // from the environment must not intercept them.
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Dispatcher {
            bus,
            issuer,
            client,
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4()),
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            ack_deadline: DEFAULT_ACK_DEADLINE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            tokens: Mutex::new(HashMap::new()),
            lookups: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The retry backoff range (defaults 100 ms .. 60 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// The push request timeout (default 10 s). A delivery's lease lasts
    /// twice this, so a push whose dispatcher died is retried after that.
    pub fn ack_deadline(mut self, deadline: Duration) -> Self {
        self.ack_deadline = deadline;
        self
    }

    /// How often to look for messages published by other processes.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Delivers until `shutdown` completes. On shutdown, pushes in flight get
    /// [`SHUTDOWN_GRACE`] to finish; the rest are abandoned and their leases
    /// given back, so the next start retries them at once.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let this = Arc::new(self);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // With every slot busy there is nothing to claim, and a publish's
            // wake-up must not cost a database read: only a finished push
            // (or the poll timer) frees a slot.
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            let mut wait = this.poll_interval;
            if room > 0 {
                match this.claim(room).await {
                    Ok(batch) => {
                        // A full batch means more may be due: look again as
                        // soon as a slot frees, not at the next due time.
                        let short = batch.len() < room;
                        for claimed in batch {
                            let d = Arc::clone(&this);
                            in_flight.spawn(async move {
                                d.deliver(claimed).await;
                            });
                        }
                        if short {
                            wait = this.wait_time().await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "local bus: could not lease deliveries"),
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = this.bus.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    // Free every finished slot, so the next claim fills them at once.
                    for done in std::iter::once(done).chain(std::iter::from_fn(|| in_flight.try_join_next())) {
                        if let Err(e) = done && e.is_panic() {
                            tracing::error!(error = %e, "local bus: a push task panicked");
                        }
                    }
                }
            }
        }
        // Let pushes that are about to answer record their ack, but do not
        // hold a stop for a full ack deadline: the rest are retried later.
        let drain = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            in_flight.abort_all();
            while in_flight.join_next().await.is_some() {}
        }
        let owner = this.owner.clone();
        let released = this.bus.leases(move |c| leases::release(c, &owner)).await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "local bus: could not release leases; they expire on their own");
        }
    }

    /// Delivers everything due now, including messages that become eligible
    /// as earlier ones of their ordering key are acked. Returns the number of
    /// push attempts made.
    pub async fn run_once(&self) -> Result<usize> {
        let mut attempts = 0;
        loop {
            let batch = self.claim(MAX_IN_FLIGHT).await?;
            if batch.is_empty() {
                return Ok(attempts);
            }
            attempts += batch.len();
            futures::future::join_all(batch.into_iter().map(|c| self.deliver(c))).await;
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let owner = self.owner.clone();
        let lease = duration_ms(self.ack_deadline.saturating_mul(2));
        self.bus.maybe_prune();
        let now = now_ms();
        self.bus
            .leases(move |c| leases::claim(c, &owner, limit, now, now.saturating_add(lease)))
            .await
    }

    /// Until the next retry or lease expiry, at most one poll interval.
    async fn wait_time(&self) -> Duration {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        match self.bus.leases(|db| leases::next_due(db)).await {
            Ok(Some(due)) => {
                let ms = due.saturating_sub(now_ms());
                if ms > 0 {
                    self.poll_interval
                        .min(Duration::from_millis(ms.unsigned_abs()))
                } else {
                    // Due but not leasable: blocked behind an earlier message
                    // of its ordering key, or all slots are busy.
                    self.poll_interval
                }
            }
            Ok(None) => self.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "local bus: could not read the next due time");
                self.poll_interval
            }
        }
    }

    async fn deliver(&self, claimed: Claimed) -> Outcome {
        let result = self.push(&claimed).await;
        let subscription = claimed.subscription.clone();
        let seq = claimed.message_seq;
        match result {
            Ok(status) if is_ack(status) => {
                let done = self
                    .bus
                    .leases(move |c| leases::ack(c, &subscription, seq))
                    .await;
                if let Err(e) = done {
                    // The lease expires and the message is pushed again:
                    // a duplicate, which at-least-once allows.
                    tracing::warn!(error = %e, message_id = seq, "local bus: could not record an ack");
                }
                Outcome::Acked
            }
            failure => {
                let reason = match failure {
                    Ok(status) => format!("HTTP {status}"),
                    Err(e) => e,
                };
                tracing::info!(
                    subscription = %claimed.subscription,
                    message_id = seq,
                    attempt = claimed.attempt,
                    reason = %reason,
                    "local bus push nacked"
                );
                let owner = self.owner.clone();
                let now = now_ms();
                let retry_at = now.saturating_add(duration_ms(self.backoff_for(claimed.attempt)));
                let done = self
                    .bus
                    .leases(move |c| leases::nack(c, &owner, &subscription, seq, now, retry_at))
                    .await;
                match done {
                    Ok(true) => Outcome::DeadLettered,
                    Ok(false) => Outcome::Nacked,
                    Err(e) => {
                        tracing::warn!(error = %e, message_id = seq, "local bus: could not record a nack");
                        Outcome::Nacked
                    }
                }
            }
        }
    }

    /// One POST; the status code, or why there was none.
    async fn push(&self, claimed: &Claimed) -> std::result::Result<u16, String> {
        let token = self
            .token(claimed.audience())
            .map_err(|e| format!("could not mint the push token: {e}"))?;
        let bearer = token
            .expose_str()
            .ok_or_else(|| "the push token is not UTF-8".to_string())?;
        let envelope = PushEnvelope::new(
            &claimed.message,
            subscription_resource_name(&claimed.subscription),
            claimed.attempt,
        );
        let response = self
            .client
            .post(&claimed.push_endpoint)
            .bearer_auth(bearer)
            .json(&envelope)
            .timeout(self.ack_deadline)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "no response before the ack deadline".to_string()
                } else {
                    format!("transport error: {}", e.without_url())
                }
            })?;
        Ok(response.status().as_u16())
    }

    /// A push token for `audience` as Pub/Sub's push service account,
    /// reused while it has comfortably long to live.
    fn token(&self, audience: &str) -> Result<SecretValue> {
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, reuse_until)) = tokens.get(audience)
            && now < *reuse_until
        {
            return Ok(token.clone());
        }
        let token = SecretValue::from(self.issuer.mint(
            audience,
            names::PRINCIPAL_PUSH,
            TOKEN_TTL,
        )?);
        tokens.insert(
            audience.to_string(),
            (token.clone(), now + (TOKEN_TTL - TOKEN_REFRESH_MARGIN)),
        );
        Ok(token)
    }

    fn backoff_for(&self, attempt: u32) -> Duration {
        backoff_delay(
            self.min_backoff,
            self.max_backoff,
            attempt,
            rand::random::<f64>(),
        )
    }
}

/// Exponential from the minimum, capped, scaled by `jitter` in [0, 1) to
/// [half, full] so retries of many messages spread out; never below the
/// minimum.
fn backoff_delay(min: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = min.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let full = exp.min(max);
    full.mul_f64(0.5 + jitter.clamp(0.0, 1.0) * 0.5).max(min)
}

fn is_ack(status: u16) -> bool {
    matches!(status, 102 | 200 | 201 | 202 | 204)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, Message};
    use crate::local::Home;

    /// With every slot taken by a push that hangs, publishes must not make
    /// the dispatcher read the database (those reads run on the writer that
    /// publishes wait behind): it has no room to claim anything anyway.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_dispatcher_does_no_database_work_per_publish() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let bus = Arc::new(LocalBus::open(&home).unwrap());
        let issuer = Arc::new(LocalIssuer::open_or_create(dir.path()).unwrap());
        // An endpoint that takes every push and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        bus.subscribe(super::super::Subscription::new("sub-1", "topic-a", &url))
            .unwrap();
        for i in 0..MAX_IN_FLIGHT {
            bus.publish("topic-a", Message::new(format!("m{i}")))
                .await
                .unwrap();
        }
        let d = Dispatcher::new(bus.clone(), issuer).poll_interval(Duration::from_secs(3600));
        let lookups = d.lookups.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(d.run(async move {
            let _ = stopped.await;
        }));
        let patience = Instant::now();
        while accepted.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
            assert!(
                patience.elapsed() < Duration::from_secs(10),
                "pushes never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = lookups.load(Ordering::SeqCst);
        for i in 0..40 {
            bus.publish("topic-a", Message::new(format!("more{i}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(lookups.load(Ordering::SeqCst), before);
        let _ = stop.send(());
        running.abort();
    }

    #[test]
    fn ack_codes_are_pubsubs() {
        for ok in [102, 200, 201, 202, 204] {
            assert!(is_ack(ok), "{ok}");
        }
        for nack in [203, 301, 400, 401, 404, 429, 500, 503] {
            assert!(!is_ack(nack), "{nack}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(60));
        assert_eq!(backoff_delay(min, max, 1, 0.999_999), min);
        assert_eq!(backoff_delay(min, max, 1, 0.0), min);
        let third = backoff_delay(min, max, 3, 0.999_999);
        assert!(third > Duration::from_millis(390) && third <= Duration::from_millis(400));
        assert_eq!(backoff_delay(min, max, 3, 0.0), Duration::from_millis(200));
        assert!(backoff_delay(min, max, 40, 0.999_999) <= max);
        assert_eq!(backoff_delay(min, max, 40, 0.0), Duration::from_secs(30));
    }
}
