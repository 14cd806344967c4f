//! Rates against their own history: reads of one secret, and webhook-ingest's
//! signature failures. Counts go in buckets of a fifth of the window, by the
//! entry's own time, so late entries land where they belong.
//!
//! webhook-ingest's entries are plain application logs written by
//! tracing-stackdriver, which camelCases field names into `jsonPayload`
//! (contract 7): `event == "signature_rejected"`, `reason`, `delivery`,
//! `remoteIp` (`remote_ip` accepted too), copied into the alert.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patchpanda_shared::audit_log::LogEntry;
use serde_json::Value;

use super::{AlertParts, Ctx, make_alert};
use crate::alert::{Alert, Rule};
use crate::capped::Capped;
use crate::settings::{Settings, SpikeSettings};

/// Buckets per window: finer is smoother, coarser is cheaper.
const BUCKETS_PER_WINDOW: i64 = 5;
/// Bounds memory when secrets keep being created with the prefix: the
/// secret tracked longest ago is forgotten first.
const MAX_TRACKED_SECRETS: usize = 1024;

/// Counts events and says when the last window crosses the threshold.
#[derive(Debug, Clone)]
pub struct SpikeCounter {
    settings: SpikeSettings,
    bucket_ms: i64,
    window_buckets: i64,
    baseline_buckets: i64,
    buckets: BTreeMap<i64, u64>,
    /// Bucket of the last alert: one alert per window, not one per event.
    fired_at: Option<i64>,
}

/// What the counter saw when it fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub count: u64,
    /// Average per window over the baseline.
    pub baseline: f64,
}

impl SpikeCounter {
    pub fn new(settings: SpikeSettings) -> Self {
        let window_ms = (settings.window.as_millis() as i64).max(BUCKETS_PER_WINDOW);
        let bucket_ms = (window_ms / BUCKETS_PER_WINDOW).max(1);
        let window_buckets = BUCKETS_PER_WINDOW;
        let baseline_buckets = ((settings.baseline.as_millis() as i64) / bucket_ms).max(1);
        Self {
            settings,
            bucket_ms,
            window_buckets,
            baseline_buckets,
            buckets: BTreeMap::new(),
            fired_at: None,
        }
    }

    /// Counts one event at `t`; Some when this event makes a spike.
    pub fn record(&mut self, t: DateTime<Utc>) -> Option<Spike> {
        let idx = t.timestamp_millis().div_euclid(self.bucket_ms);
        let newest = self
            .buckets
            .last_key_value()
            .map_or(idx, |(k, _)| (*k).max(idx));
        let horizon = newest - self.window_buckets - self.baseline_buckets;
        if idx <= horizon {
            return None;
        }
        *self.buckets.entry(idx).or_insert(0) += 1;
        while let Some((&k, _)) = self.buckets.first_key_value() {
            if k > horizon {
                break;
            }
            self.buckets.pop_first();
        }
        let window_start = idx - self.window_buckets + 1;
        let count: u64 = self.buckets.range(window_start..=idx).map(|(_, c)| c).sum();
        if count < self.settings.min_count {
            return None;
        }
        if self.fired_at.is_some_and(|f| idx < f + self.window_buckets) {
            return None;
        }
        let history: u64 = self
            .buckets
            .range(window_start - self.baseline_buckets..window_start)
            .map(|(_, c)| c)
            .sum();
        let baseline = history as f64 * self.window_buckets as f64 / self.baseline_buckets as f64;
        if (count as f64) <= self.settings.factor * baseline.max(1.0) {
            return None;
        }
        self.fired_at = Some(idx);
        Some(Spike { count, baseline })
    }
}

#[derive(Debug)]
pub(crate) struct Spikes {
    reads: Capped<String, SpikeCounter>,
    read_settings: SpikeSettings,
    signatures: SpikeCounter,
}

impl Spikes {
    pub fn new(settings: &Settings) -> Self {
        Self {
            reads: Capped::new(MAX_TRACKED_SECRETS),
            read_settings: settings.read_spike,
            signatures: SpikeCounter::new(settings.signature_spike),
        }
    }

    pub fn secret_read(&mut self, ctx: &Ctx<'_>, secret_id: &str) -> Option<Alert> {
        if !ctx.settings.enabled(Rule::SecretReadSpike) {
            return None;
        }
        let settings = self.read_settings;
        let spike = self
            .reads
            .get_or_insert_with(secret_id.to_string(), || SpikeCounter::new(settings))
            .record(ctx.time)?;
        let window = humantime::format_duration(self.read_settings.window);
        let mut alert = ctx.alert(
            Rule::SecretReadSpike,
            secret_id,
            format!(
                "{} reads of secret {secret_id} in {window}, against {:.1} per {window} before; the latest by {}. Find the caller (a restart loop, a cache bypass, or exfiltration)",
                spike.count, spike.baseline, ctx.principal
            ),
        );
        alert.fingerprint = format!("{}|{secret_id}", Rule::SecretReadSpike);
        alert
            .details
            .insert("count".into(), spike.count.to_string());
        alert
            .details
            .insert("baselinePerWindow".into(), format!("{:.1}", spike.baseline));
        Some(alert)
    }

    /// How many secrets have read counters.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    pub fn signature_rejected(
        &mut self,
        settings: &Settings,
        entry: &LogEntry,
        time: DateTime<Utc>,
    ) -> Option<Alert> {
        if !settings.enabled(Rule::SignatureFailureSpike) {
            return None;
        }
        let spike = self.signatures.record(time)?;
        let payload = entry.json_payload.as_ref();
        let field = |k: &str| payload.and_then(|p| p.get(k)).and_then(Value::as_str);
        let remote_ip = field("remoteIp")
            .or_else(|| field("remote_ip"))
            .filter(|ip| !ip.is_empty());
        let service = entry
            .resource
            .as_ref()
            .and_then(|r| r.labels.get("service_name"))
            .map_or("webhook-ingest", String::as_str);
        let window = humantime::format_duration(settings.signature_spike.window);
        let mut details = BTreeMap::from([
            ("count".to_string(), spike.count.to_string()),
            (
                "baselinePerWindow".to_string(),
                format!("{:.1}", spike.baseline),
            ),
        ]);
        for (to, v) in [
            ("reason", field("reason")),
            ("delivery", field("delivery")),
            ("callerIp", remote_ip),
        ] {
            if let Some(v) = v {
                details.insert(to.to_string(), v.chars().take(200).collect());
            }
        }
        let mut alert = make_alert(
            settings,
            Rule::SignatureFailureSpike,
            AlertParts {
                principal: remote_ip.unwrap_or("-"),
                resource: service,
                method: "POST /webhook",
                time,
                insert_id: &entry.insert_id,
                log_name: &entry.log_name,
                summary: format!(
                    "{} webhook deliveries failed signature checks in {window}, against {:.1} per {window} before: someone may be forging deliveries, or GitHub's webhook secret and ours disagree (check the App's recent deliveries)",
                    spike.count, spike.baseline
                ),
                details,
            },
        );
        alert.fingerprint = format!("{}|{service}", Rule::SignatureFailureSpike);
        Some(alert)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;

    fn counter(min: u64) -> SpikeCounter {
        SpikeCounter::new(SpikeSettings {
            window: Duration::from_secs(300),
            baseline: Duration::from_secs(3600),
            factor: 5.0,
            min_count: min,
        })
    }

    #[test]
    fn a_steady_rate_never_fires_a_burst_does_once() {
        let mut c = counter(25);
        let t0 = Utc::now();
        // Four reads a minute for an hour: 20 per window, steady.
        for i in 0..240 {
            assert!(
                c.record(t0 + TimeDelta::seconds(i * 15)).is_none(),
                "steady at {i}"
            );
        }
        let t1 = t0 + TimeDelta::minutes(61);
        let fired: Vec<_> = (0..200)
            .filter_map(|i| c.record(t1 + TimeDelta::milliseconds(i * 100)))
            .collect();
        assert_eq!(fired.len(), 1, "one alert per window");
        assert!(fired[0].count as f64 > 5.0 * fired[0].baseline);
        assert!((fired[0].baseline - 20.0).abs() < 3.0, "{:?}", fired[0]);
        assert!(
            fired[0].count < 120,
            "fires as soon as it crosses: {:?}",
            fired[0]
        );
    }

    #[test]
    fn cold_start_needs_the_minimum() {
        let mut c = counter(30);
        let t0 = Utc::now();
        let fired = (0..29).filter_map(|_| c.record(t0)).count();
        assert_eq!(fired, 0);
        assert!(c.record(t0).is_some());
        assert!(
            c.record(t0 - TimeDelta::hours(3)).is_none(),
            "too old to count"
        );
    }
}
