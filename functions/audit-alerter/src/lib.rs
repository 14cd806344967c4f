//! audit-alerter: Cloud Audit Logs entries (Secret Manager, Cloud KMS, IAM)
//! and rotation notices in, alerts out.
//!
//! [`Alerter`] holds everything: settings, the rule engine and its state
//! (dedup, announced rotations, spike counters, suppression) and the sinks.
//! [`handlers`] turns it into the two push routes; [`app`] wires it to the
//! runtime and the backends.

pub mod alert;
mod app;
pub mod clock;
pub mod dedup;
pub mod delivery;
pub mod entry;
pub mod handlers;
pub mod rotations;
pub mod rules;
pub mod settings;
pub mod sinks;
pub mod suppress;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use patchpanda_shared::bus::Bus;
use patchpanda_shared::notice::RotationNotice;

pub use alert::{Alert, Rule, Severity};
pub use app::{SERVICE, app, app_with};
pub use clock::{Clock, ManualClock, SystemClock};
pub use entry::Malformed;
pub use settings::Settings;

use dedup::Dedup;
use delivery::Delivery;
use entry::Decoded;
use rules::Engine;
use sinks::Sink;
use suppress::Suppressor;

/// How often time-driven work (held changes, summaries, the self-check)
/// runs: from a background ticker, and on any message when it is due
/// (Cloud Run may starve background tasks of CPU between requests).
pub const TICK_EVERY: Duration = Duration::from_secs(30);

/// What became of one audit-log message.
#[derive(Debug, Clone, PartialEq)]
pub enum Analysis {
    /// Processed; these alerts go out now (possibly none: no rule matched,
    /// or all were folded into earlier ones).
    Alerts(Vec<Alert>),
    /// Same logName + insertId as an entry already processed.
    Duplicate,
    /// A valid LogEntry no rule is about.
    Ignored(&'static str),
}

struct State {
    dedup: Dedup,
    engine: Engine,
    suppress: Suppressor,
    last_tick: DateTime<Utc>,
}

struct Inner {
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    delivery: Delivery,
    state: Mutex<State>,
}

/// The alerter; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

impl Alerter {
    /// With injected sinks and clock (tests, benchmarks, the local stack).
    /// The log always receives alerts; `sinks` are the others.
    pub fn new(settings: Settings, sinks: Vec<Arc<dyn Sink>>, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let settings = Arc::new(settings);
        let state = State {
            dedup: Dedup::new(settings.dedup_capacity),
            engine: Engine::new(Arc::clone(&settings), now),
            suppress: Suppressor::default(),
            last_tick: now,
        };
        Self {
            inner: Arc::new(Inner {
                delivery: Delivery::new(sinks, settings.delivery.clone()),
                settings,
                clock,
                state: Mutex::new(state),
            }),
        }
    }

    /// With the standard sinks: `patchpanda-alerts` on `bus`, and Slack,
    /// PagerDuty and the generic webhook when configured.
    pub fn with_bus(
        settings: Settings,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let client = sinks::http_client(&settings)?;
        let sinks = sinks::standard(&settings, bus, client);
        Ok(Self::new(settings, sinks, clock))
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The names of the sinks besides the log.
    pub fn sink_names(&self) -> Vec<&'static str> {
        self.inner.delivery.sink_names()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop alerting: the state stays usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decode, deduplicate, run the rules and fold repeats; no I/O. This is
    /// what the benchmark measures.
    pub fn analyze(&self, data: &[u8]) -> Result<Analysis, Malformed> {
        let decoded = entry::decode(data)?;
        let now = self.inner.clock.now();
        let mut state = self.state();
        let (entry, signature) = match decoded {
            Decoded::Ignored(why) => return Ok(Analysis::Ignored(why)),
            Decoded::Audit(e) => (e, false),
            Decoded::SignatureRejected(e) => (e, true),
        };
        if !entry.insert_id.is_empty() && !state.dedup.first_time(&entry.dedup_key()) {
            return Ok(Analysis::Duplicate);
        }
        let found = if signature {
            state.engine.signature_rejected(&entry, now)
        } else {
            state.engine.audit(&entry, now)
        };
        let out = self.admit(&mut state, found, now);
        Ok(Analysis::Alerts(out))
    }

    fn admit(&self, state: &mut State, found: Vec<Alert>, now: DateTime<Utc>) -> Vec<Alert> {
        found
            .into_iter()
            .filter_map(|a| {
                let window = a
                    .fold_window
                    .unwrap_or_else(|| self.inner.settings.window_for(a.rule));
                state.suppress.admit(a, window, now)
            })
            .collect()
    }

    /// Handles one audit-log message end to end; returns what was sent.
    pub async fn ingest_audit(&self, data: &[u8]) -> Result<Analysis, Malformed> {
        let analysis = self.analyze(data)?;
        let mut due = self.tick_if_due();
        if let Analysis::Alerts(alerts) = &analysis {
            due.extend(alerts.iter().cloned());
        }
        self.inner.delivery.deliver(due).await;
        Ok(analysis)
    }

    /// Records a rotation notice (the data of a patchpanda-rotation-events
    /// message).
    pub fn record_notice(&self, data: &[u8]) -> Result<RotationNotice, Malformed> {
        let notice = RotationNotice::from_data(data).map_err(|e| Malformed(e.to_string()))?;
        self.state().engine.notice(&notice);
        Ok(notice)
    }

    /// Time-driven work now: held rotator changes that no notice covered,
    /// suppression summaries, the Data Access self-check. Delivers and
    /// returns what went out.
    pub async fn tick(&self) -> Vec<Alert> {
        let out = self.collect_tick(self.inner.clock.now());
        self.inner.delivery.deliver(out.clone()).await;
        out
    }

    fn tick_if_due(&self) -> Vec<Alert> {
        let now = self.inner.clock.now();
        let due = {
            let state = self.state();
            now - state.last_tick >= TimeDelta::from_std(TICK_EVERY).unwrap_or_default()
        };
        if due {
            self.collect_tick(now)
        } else {
            Vec::new()
        }
    }

    fn collect_tick(&self, now: DateTime<Utc>) -> Vec<Alert> {
        let mut state = self.state();
        state.last_tick = now;
        let released = state.engine.tick(now);
        let mut out = self.admit(&mut state, released, now);
        out.extend(state.suppress.flush(now));
        out
    }

    /// Rotator changes waiting for a notice (for tests and /ready detail).
    pub fn held(&self) -> usize {
        self.state().engine.held()
    }

    /// Runs [`Alerter::tick`] every `every` until the alerter is dropped.
    pub fn spawn_ticker(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Alerter { inner }.tick().await;
            }
        })
    }
}
