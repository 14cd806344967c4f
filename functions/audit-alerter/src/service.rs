//! The alerter service: settings, rule engine, suppression and sinks, built
//! from injected parts with no I/O. Routes call its methods (see
//! [`crate::handlers`]); share it as an `Arc<Alerter>`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use patchpanda_shared::bus::Bus;
use patchpanda_shared::notice::RotationNotice;

use crate::TICK_EVERY;
use crate::alert::Alert;
use crate::clock::Clock;
use crate::dedup::Dedup;
use crate::delivery::Delivery;
use crate::entry::{self, Decoded, Malformed};
use crate::rules::Engine;
use crate::settings::Settings;
use crate::sinks::{self, Sink};
use crate::suppress::Suppressor;

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

/// The alerter.
pub struct Alerter {
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    delivery: Delivery,
    state: Mutex<State>,
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
            delivery: Delivery::new(sinks, settings.delivery.clone()),
            settings,
            clock,
            state: Mutex::new(state),
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
        &self.settings
    }

    /// The names of the sinks besides the log.
    pub fn sink_names(&self) -> Vec<&'static str> {
        self.delivery.sink_names()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop alerting: the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decode, deduplicate, run the rules and fold repeats; no I/O. This is
    /// what the benchmark measures.
    pub fn analyze(&self, data: &[u8]) -> Result<Analysis, Malformed> {
        let decoded = entry::decode(data)?;
        let now = self.clock.now();
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
                    .unwrap_or_else(|| self.settings.window_for(a.rule));
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
        self.delivery.deliver(due).await;
        Ok(analysis)
    }

    /// Records a rotation notice (the data of a patchpanda-rotation-events
    /// message).
    pub fn record_notice(&self, data: &[u8]) -> Result<RotationNotice, Malformed> {
        let notice = RotationNotice::from_data(data).map_err(|e| Malformed(e.to_string()))?;
        self.notice(&notice);
        Ok(notice)
    }

    /// Records a parsed rotation notice.
    pub fn notice(&self, notice: &RotationNotice) {
        self.state().engine.notice(notice);
    }

    /// Time-driven work now: held rotator changes that no notice covered,
    /// suppression summaries, the Data Access self-check. Delivers and
    /// returns what went out.
    pub async fn tick(&self) -> Vec<Alert> {
        let out = self.collect_tick(self.clock.now());
        self.delivery.deliver(out.clone()).await;
        out
    }

    fn tick_if_due(&self) -> Vec<Alert> {
        let now = self.clock.now();
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
    /// Only a convenience for the local stack: on Cloud Run the scheduler's
    /// `POST /tasks/tick` does the same work.
    pub fn spawn_ticker(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(alerter) = weak.upgrade() else {
                    return;
                };
                alerter.tick().await;
            }
        })
    }
}
