//! The alerter service: settings, rule engine, suppression, outbox and
//! sinks, built from injected parts with no I/O. Routes call its methods
//! (see [`crate::handlers`]); share it as an `Arc<Alerter>`.
//!
//! Nothing accepted is lost (contract 6): an audit entry's push is
//! acknowledged only once every working sink took every alert it raised
//! and its held changes are settled; otherwise the answer is 503 and the
//! work waits in the [`Outbox`] for the redelivery (or the next tick).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchpanda_shared::audit_log::LogEntry;
use patchpanda_shared::bus::Bus;
use patchpanda_shared::notice::RotationNotice;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::alert::{Alert, Rule};
use crate::clock::Clock;
use crate::delivery::Delivery;
use crate::entry::{self, Decoded, Malformed};
use crate::outbox::{Outbox, Pending};
use crate::rules::{AlertParts, Engine, Verdict, make_alert};
use crate::settings::Settings;
use crate::sinks::{self, Sink, log};
use crate::suppress::Suppressor;

/// What became of one audit-log message in [`Alerter::analyze`].
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

/// What became of one message end to end.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: these alerts were delivered (possibly none). Acknowledge.
    Delivered(Vec<Alert>),
    /// Done before. Acknowledge.
    Duplicate,
    /// Nothing to do. Acknowledge.
    Ignored(&'static str),
    /// Not done: an alert is still undelivered or a change is held for a
    /// late rotation notice. Answer 503 so it comes back.
    Pending(String),
}

/// What one tick did (the answer of `POST /tasks/tick`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickReport {
    /// Alerts this tick raised: released holds, summaries, self-check.
    pub raised: usize,
    /// Alerts delivered this tick, old and new.
    pub delivered: usize,
    /// Messages whose work is still pending afterwards.
    pub pending: usize,
}

struct State {
    engine: Engine,
    suppress: Suppressor,
    outbox: Outbox,
}

/// The alerter.
pub struct Alerter {
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    delivery: Delivery,
    state: Mutex<State>,
}

/// Pending work a tick delivers at most, so one tick stays short.
const TICK_BATCH: usize = 200;

impl Alerter {
    /// With injected sinks and clock (tests, benchmarks, the local stack).
    /// The log always receives alerts; `sinks` are the others.
    pub fn new(settings: Settings, sinks: Vec<Arc<dyn Sink>>, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let settings = Arc::new(settings);
        let state = State {
            engine: Engine::new(Arc::clone(&settings), now),
            suppress: Suppressor::new(settings.state_capacity),
            outbox: Outbox::new(settings.state_capacity, settings.dedup_capacity),
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

    /// Decode, deduplicate, run the rules and fold repeats; no I/O and no
    /// outbox (what the benchmark measures). Held changes are dropped.
    pub fn analyze(&self, data: &[u8]) -> Result<Analysis, Malformed> {
        let (entry, signature) = match entry::trusted(entry::decode(data)?) {
            Decoded::Ignored(why) => return Ok(Analysis::Ignored(why)),
            Decoded::Audit(e) => (e, false),
            Decoded::SignatureRejected(e) => (e, true),
        };
        let key = work_key(&entry, data);
        let now = self.clock.now();
        let mut state = self.state();
        if state.outbox.is_done(&key) || state.outbox.has(&key) {
            return Ok(Analysis::Duplicate);
        }
        state.outbox.finish(&key);
        let verdict = self.evaluate(&mut state, &entry, signature, now);
        Ok(Analysis::Alerts(self.admit(
            &mut state,
            verdict.alerts,
            now,
        )))
    }

    fn evaluate(
        &self,
        state: &mut State,
        entry: &LogEntry,
        signature: bool,
        now: DateTime<Utc>,
    ) -> Verdict {
        if signature {
            Verdict {
                alerts: state.engine.signature_rejected(entry, now),
                holds: Vec::new(),
            }
        } else {
            state.engine.audit(entry, now)
        }
    }

    /// Through suppression; what survives is logged (the first sink).
    fn admit(&self, state: &mut State, found: Vec<Alert>, now: DateTime<Utc>) -> Vec<Alert> {
        found
            .into_iter()
            .filter_map(|a| {
                let window = a
                    .fold_window
                    .unwrap_or_else(|| self.settings.window_for(a.rule));
                state.suppress.admit(a, window, now)
            })
            .inspect(log::record)
            .collect()
    }

    /// One audit-log message end to end.
    pub async fn ingest_audit(&self, data: &[u8]) -> Result<Outcome, Malformed> {
        let (entry, signature) = match entry::trusted(entry::decode(data)?) {
            Decoded::Ignored(why) => return Ok(Outcome::Ignored(why)),
            Decoded::Audit(e) => (e, false),
            Decoded::SignatureRejected(e) => (e, true),
        };
        let key = work_key(&entry, data);
        let now = self.clock.now();
        {
            let mut state = self.state();
            if state.outbox.is_done(&key) {
                return Ok(Outcome::Duplicate);
            }
            if !state.outbox.has(&key) {
                let verdict = self.evaluate(&mut state, &entry, signature, now);
                let alerts = self.admit(&mut state, verdict.alerts, now);
                state
                    .outbox
                    .insert(key.clone(), Pending::new(alerts, verdict.holds));
            }
            self.settle_holds(&mut state, now);
        }
        Ok(self.flush(&key).await)
    }

    /// One rotation notice end to end: recorded (windows, announcements),
    /// and its alert (`failed`, `rolled_back`, `due`) delivered.
    pub async fn ingest_notice(&self, notice: &RotationNotice) -> Outcome {
        let key = notice_key(notice);
        {
            let mut state = self.state();
            if state.outbox.is_done(&key) {
                return Outcome::Duplicate;
            }
            if !state.outbox.has(&key) {
                self.apply_notice(&mut state, notice, key.clone());
            }
        }
        self.flush(&key).await
    }

    /// Records a rotation notice (the data of a patchpanda-rotation-events
    /// message); its alert, if any, waits in the outbox for the next tick.
    pub fn record_notice(&self, data: &[u8]) -> Result<RotationNotice, Malformed> {
        let notice = RotationNotice::from_data(data).map_err(|e| Malformed(e.to_string()))?;
        let key = notice_key(&notice);
        let mut state = self.state();
        if !state.outbox.is_done(&key) && !state.outbox.has(&key) {
            self.apply_notice(&mut state, &notice, key);
        }
        Ok(notice)
    }

    fn apply_notice(&self, state: &mut State, notice: &RotationNotice, key: String) {
        let now = self.clock.now();
        let alert = state.engine.notice(notice);
        let alerts = self.admit(state, alert.into_iter().collect(), now);
        state.outbox.insert(key, Pending::new(alerts, Vec::new()));
        self.settle_holds(state, now);
    }

    /// Held changes: dropped when a notice now covers them, released as
    /// alerts when their hold ran out.
    fn settle_holds(&self, state: &mut State, now: DateTime<Utc>) -> Vec<Alert> {
        let State {
            engine,
            suppress,
            outbox,
        } = state;
        let mut released = Vec::new();
        for (_, pending) in outbox.iter_mut() {
            if pending.holds.is_empty() {
                continue;
            }
            let mut out = Vec::new();
            pending.holds.retain(|h| {
                if engine.covers(h) {
                    tracing::debug!(rule = %h.alert.rule, resource = %h.alert.resource, "a late rotation notice covers a held change");
                    return false;
                }
                if h.release_at <= now {
                    out.push(h.alert.clone());
                    return false;
                }
                true
            });
            for a in out {
                let window = self.settings.window_for(a.rule);
                if let Some(a) = suppress.admit(a, window, now) {
                    log::record(&a);
                    released.push(a.clone());
                    pending.alerts.push(crate::outbox::Queued {
                        alert: a,
                        delivered: 0,
                    });
                }
            }
        }
        released
    }

    /// Sends what `key` still owes and says whether it is done.
    async fn flush(&self, key: &str) -> Outcome {
        let batch: Vec<_> = {
            let mut state = self.state();
            let Some(p) = state.outbox.get_mut(key) else {
                return Outcome::Duplicate;
            };
            if p.sending {
                return Outcome::Pending("its alerts are being sent by another request".into());
            }
            let batch: Vec<_> = p
                .alerts
                .iter()
                .filter(|q| !self.delivery.complete(q.delivered))
                .map(|q| (q.alert.clone(), q.delivered))
                .collect();
            p.sending = !batch.is_empty();
            batch
        };
        let round = if batch.is_empty() {
            Default::default()
        } else {
            // Cleared however this ends, a dropped request included.
            let _sending = Sending { alerter: self, key };
            self.delivery.send(&batch).await
        };
        let now = self.clock.now();
        let mut state = self.state();
        self.report_broken(&mut state, &round.newly_broken, now);
        let Some(p) = state.outbox.get_mut(key) else {
            return Outcome::Duplicate;
        };
        for ((alert, _), mask) in batch.iter().zip(&round.masks) {
            if let Some(q) = p.alerts.iter_mut().find(|q| q.alert.id == alert.id) {
                q.delivered |= mask;
            }
        }
        if let Some(h) = p.holds.iter().map(|h| h.release_at).min() {
            return Outcome::Pending(format!(
                "a rotator's change is held for a late rotation notice until {}",
                h.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        let missing: Vec<&str> = p
            .alerts
            .iter()
            .flat_map(|q| self.delivery.missing(q.delivered))
            .collect();
        if !missing.is_empty() {
            let mut names = missing;
            names.sort_unstable();
            names.dedup();
            return Outcome::Pending(format!(
                "alert not yet delivered to {}; it stays queued",
                names.join(", ")
            ));
        }
        let alerts = p.alerts.iter().map(|q| q.alert.clone()).collect();
        state.outbox.finish(key);
        Outcome::Delivered(alerts)
    }

    /// A sink that broke is reported once: the log now, the other sinks
    /// from the outbox.
    fn report_broken(
        &self,
        state: &mut State,
        broken: &[(&'static str, String)],
        now: DateTime<Utc>,
    ) {
        for (name, why) in broken {
            tracing::error!(sink = name, error = %why, "ALERT SINK BROKEN: it refuses alerts (4xx); fix its settings. Other sinks keep receiving alerts");
            if !self.settings.enabled(Rule::SinkBroken) {
                continue;
            }
            let mut alert = make_alert(
                &self.settings,
                Rule::SinkBroken,
                AlertParts {
                    principal: "-",
                    resource: name,
                    method: "-",
                    time: now,
                    insert_id: "",
                    log_name: "",
                    summary: format!(
                        "The {name} alert sink refuses alerts ({why}); alerts reach the other sinks only until its URL or key is fixed"
                    ),
                    details: Default::default(),
                },
            );
            alert.id = format!("{}:{name}:{}", Rule::SinkBroken, now.timestamp());
            log::record(&alert);
            state.outbox.insert(
                format!("tick:{}", alert.id),
                Pending::new(vec![alert], Vec::new()),
            );
        }
    }

    /// Time-driven work now (`POST /tasks/tick`, and the local ticker):
    /// held changes released or settled, suppression summaries, the Data
    /// Access self-check, window expiry, then every pending alert sent
    /// again. Returns the alerts this tick raised.
    pub async fn tick(&self) -> Vec<Alert> {
        self.tick_report().await.0
    }

    pub async fn tick_report(&self) -> (Vec<Alert>, TickReport) {
        let now = self.clock.now();
        let (raised, keys) = {
            let mut state = self.state();
            let mut raised = self.settle_holds(&mut state, now);
            let found = state.engine.tick(now);
            let mut fresh = self.admit(&mut state, found, now);
            let summaries = state.suppress.flush(now);
            summaries.iter().for_each(log::record);
            fresh.extend(summaries);
            for a in &fresh {
                state.outbox.insert(
                    format!("tick:{}", a.id),
                    Pending::new(vec![a.clone()], Vec::new()),
                );
            }
            raised.extend(fresh);
            (raised, state.outbox.keys())
        };
        let mut report = TickReport {
            raised: raised.len(),
            ..Default::default()
        };
        for key in keys.into_iter().take(TICK_BATCH) {
            if let Outcome::Delivered(a) = self.flush(&key).await {
                report.delivered += a.len();
            }
        }
        report.pending = self.state().outbox.len();
        (raised, report)
    }

    /// Rotator changes waiting for a notice (for tests and /ready detail).
    pub fn held(&self) -> usize {
        self.state().outbox.holds()
    }

    /// Messages whose work is not finished.
    pub fn pending(&self) -> usize {
        self.state().outbox.len()
    }

    /// Sizes of the maps keyed by attacker-chosen values: (outbox,
    /// suppression slots, rotation windows' resources, read counters).
    pub fn tracked(&self) -> [usize; 4] {
        let state = self.state();
        let (windows, counters) = state.engine.tracked();
        [state.outbox.len(), state.suppress.len(), windows, counters]
    }

    /// Runs [`Alerter::tick`] every `every` until the alerter is dropped.
    /// Only a convenience for the local stack: on Cloud Run the scheduler's
    /// `POST /tasks/tick` does the same work (contract 5).
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

/// Clears a pending entry's `sending` flag when its send ends or is dropped.
struct Sending<'a> {
    alerter: &'a Alerter,
    key: &'a str,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.alerter.state().outbox.get_mut(self.key) {
            p.sending = false;
        }
    }
}

/// logName + insertId, the dedup key Cloud Logging documents; an entry
/// without an insertId is keyed by its bytes.
fn work_key(entry: &LogEntry, data: &[u8]) -> String {
    if entry.insert_id.is_empty() {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    } else {
        entry.dedup_key()
    }
}

/// One notice: its rotation, event, secret and time (bounded, since the
/// fields come from whoever published it).
fn notice_key(n: &RotationNotice) -> String {
    let clip = |s: &str| s.chars().take(120).collect::<String>();
    format!(
        "notice:{}:{}:{}:{}",
        clip(&n.secret),
        n.event,
        clip(&n.rotation_id),
        n.time.timestamp_nanos_opt().unwrap_or_default()
    )
}
