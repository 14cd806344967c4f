//! Folding repeats: the first alert of a fingerprint goes out at once; the
//! same fingerprint again within its window only bumps a count. The count
//! rides on the next alert after the window, or goes out as a summary when
//! the window ends quietly ([`Suppressor::flush`]).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::alert::Alert;
use crate::capped::Capped;

#[derive(Debug)]
struct Slot {
    window_end: DateTime<Utc>,
    window: Duration,
    folded: u64,
    /// The latest folded alert, the template of the summary.
    last: Option<Alert>,
}

/// Fingerprints carry principals and resources an attacker picks: the slots
/// are capped, oldest window first out (its folded count is lost, its
/// first alert went out already).
#[derive(Debug)]
pub struct Suppressor {
    slots: Capped<String, Slot>,
}

impl Default for Suppressor {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl Suppressor {
    pub fn new(cap: usize) -> Self {
        Self {
            slots: Capped::new(cap),
        }
    }

    /// Returns the alert to send now, or None when it was folded.
    pub fn admit(
        &mut self,
        mut alert: Alert,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Option<Alert> {
        if let Some(slot) = self.slots.get_mut(&alert.fingerprint)
            && now < slot.window_end
        {
            slot.folded += 1;
            slot.last = Some(alert);
            return None;
        }
        let earlier = self
            .slots
            .remove(&alert.fingerprint)
            .map_or(0, |s| s.folded);
        alert.folded += earlier;
        if !window.is_zero() {
            self.slots.insert(
                alert.fingerprint.clone(),
                Slot {
                    window_end: now + TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX),
                    window,
                    folded: 0,
                    last: None,
                },
            );
        }
        Some(alert)
    }

    /// Summaries of windows that ended with folded alerts; forgets ended windows.
    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        self.slots.retain(|_, slot| {
            if now < slot.window_end {
                return true;
            }
            if let Some(mut a) = slot.last.take()
                && slot.folded > 0
            {
                a.id = format!("{}:summary", a.id);
                a.summary = format!(
                    "{} more in the last {}: {}",
                    slot.folded,
                    humantime::format_duration(slot.window),
                    a.summary
                );
                a.folded = slot.folded;
                out.push(a);
            }
            false
        });
        out.sort_by_key(|a| a.time);
        out
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Rule, Severity};

    fn alert(fp: &str, id: &str) -> Alert {
        Alert {
            id: id.into(),
            rule: Rule::PermissionDenied,
            severity: Severity::P2,
            summary: "x was denied".into(),
            principal: "x".into(),
            resource: "r".into(),
            method: "m".into(),
            time: Utc::now(),
            insert_id: id.into(),
            log_name: "l".into(),
            fingerprint: fp.into(),
            folded: 0,
            details: Default::default(),
            link: None,
            fold_window: None,
        }
    }

    #[test]
    fn first_goes_out_repeats_fold_then_count_rides_on_the_next() {
        let mut s = Suppressor::default();
        let w = Duration::from_secs(600);
        let t0 = Utc::now();
        assert!(s.admit(alert("a", "1"), w, t0).is_some());
        for i in 2..=5 {
            assert!(
                s.admit(alert("a", &i.to_string()), w, t0 + TimeDelta::seconds(i))
                    .is_none()
            );
        }
        assert!(
            s.admit(alert("b", "x"), w, t0).is_some(),
            "other fingerprints pass"
        );
        let next = s
            .admit(alert("a", "6"), w, t0 + TimeDelta::minutes(11))
            .unwrap();
        assert_eq!(next.folded, 4);
        assert!(s.flush(t0 + TimeDelta::minutes(12)).is_empty());
    }

    #[test]
    fn quiet_windows_end_in_a_summary() {
        let mut s = Suppressor::default();
        let w = Duration::from_secs(60);
        let t0 = Utc::now();
        s.admit(alert("a", "1"), w, t0).unwrap();
        assert!(s.admit(alert("a", "2"), w, t0).is_none());
        assert!(s.admit(alert("a", "3"), w, t0).is_none());
        assert!(s.flush(t0 + TimeDelta::seconds(30)).is_empty());
        let out = s.flush(t0 + TimeDelta::seconds(61));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].folded, 2);
        assert_eq!(out[0].id, "3:summary");
        assert!(out[0].summary.starts_with("2 more in the last 1m"));
        assert_eq!(s.len(), 0);
        assert!(
            s.admit(alert("a", "4"), w, t0 + TimeDelta::seconds(62))
                .unwrap()
                .folded
                == 0
        );
    }
}
