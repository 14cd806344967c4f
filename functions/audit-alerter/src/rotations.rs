//! Announced rotations: which changes the rotator was expected to make.
//!
//! A `started` notice opens a window for one secret (or the KMS key) and the
//! notice's principal; `rotated`, `rolled_back`, `failed` and `promoted`
//! close it. Audit entries are matched by their own timestamp, so entries
//! that arrive late still fall in the window; `grace` past the close absorbs
//! clock skew and steps the worker finishes just after announcing.
//! `disabled` / `destroyed` announce one change after the fact (the worker's
//! finish task), so they cover `grace` before their own time.

use chrono::{DateTime, TimeDelta, Utc};
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};

use crate::capped::Capped;
use crate::settings::{Settings, normalize_principal};

/// How far before a `started` notice an entry may be stamped: the worker's
/// clock and Google's are not the same clock.
const SKEW: TimeDelta = TimeDelta::seconds(30);
/// Windows older than this (after they close) are forgotten.
const KEEP: TimeDelta = TimeDelta::hours(24);
/// Per resource; a flood of notices cannot grow memory without bound.
const MAX_WINDOWS: usize = 64;
/// Resources with windows: notices name their secret freely, so the keys
/// are capped too (oldest forgotten first).
const MAX_KEYS: usize = 1024;

#[derive(Debug, Clone)]
struct Window {
    rotation_id: String,
    /// The rotator named by the notice; None = any configured rotator.
    principal: Option<String>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    /// An operator's announced change (contract 8), not a rotation.
    announced: bool,
}

#[derive(Debug)]
pub struct Rotations {
    windows: Capped<String, Vec<Window>>,
    grace: TimeDelta,
    max: TimeDelta,
}

/// The key of a secret's windows, from its Secret Manager id.
pub fn secret_key(secret_id: &str) -> String {
    format!("secret:{secret_id}")
}

/// The key of the gateway's KMS key.
pub fn kms_key(ring: &str, key: &str) -> String {
    format!("kms:{ring}/{key}")
}

impl Rotations {
    pub fn new(settings: &Settings) -> Self {
        Self {
            windows: Capped::new(MAX_KEYS),
            grace: TimeDelta::from_std(settings.rotation_grace).unwrap_or(TimeDelta::minutes(5)),
            max: TimeDelta::from_std(settings.rotation_max).unwrap_or(TimeDelta::hours(2)),
        }
    }

    /// How many resources have windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// An operator announced a change to `key` until `notice.until` (at
    /// most `rotation_max` after the notice, so an announcement cannot
    /// cover forever).
    pub fn announce(&mut self, key: String, principal: &str, notice: &RotationNotice) {
        let until = notice
            .until
            .unwrap_or(notice.time + self.grace)
            .min(notice.time + self.max);
        let list = self.windows.get_or_insert_with(key, Vec::new);
        list.push(Window {
            rotation_id: notice.rotation_id.clone(),
            principal: Some(principal.to_string()),
            start: notice.time,
            end: Some(until),
            announced: true,
        });
        trim(list);
    }

    /// Whether `principal` announced a change to `key` covering `t`.
    pub fn announced(&self, key: &str, principal: &str, t: DateTime<Utc>) -> bool {
        self.windows.get(key).is_some_and(|list| {
            list.iter().any(|w| {
                w.announced
                    && w.principal.as_deref() == Some(principal)
                    && t >= w.start - SKEW
                    && w.end.is_some_and(|end| t <= end)
            })
        })
    }

    /// The resource key a notice's logical name stands for.
    pub fn key_of(settings: &Settings, logical: &str) -> String {
        if logical == names::KMS_KEY {
            kms_key(&settings.kms_key_ring, &settings.kms_key)
        } else {
            secret_key(&names::secret_id(&settings.secret_prefix, logical))
        }
    }

    pub fn record(&mut self, key: String, notice: &RotationNotice) {
        let principal = notice.principal.as_deref().map(normalize_principal);
        let list = self.windows.get_or_insert_with(key, Vec::new);
        let existing = list
            .iter_mut()
            .find(|w| !w.announced && w.rotation_id == notice.rotation_id);
        match notice.event {
            NoticeEvent::Started => match existing {
                Some(w) => w.start = w.start.min(notice.time),
                None => list.push(Window {
                    rotation_id: notice.rotation_id.clone(),
                    principal,
                    start: notice.time,
                    end: None,
                    announced: false,
                }),
            },
            e if e.ends_rotation() => match existing {
                Some(w) => w.end = Some(notice.time),
                // The start was missed (the alerter restarted mid-rotation):
                // the notice still proves a rotation ran up to now.
                None => list.push(Window {
                    rotation_id: notice.rotation_id.clone(),
                    principal,
                    start: notice.time - self.max,
                    end: Some(notice.time),
                    announced: false,
                }),
            },
            NoticeEvent::Disabled | NoticeEvent::Destroyed => list.push(Window {
                rotation_id: notice.rotation_id.clone(),
                principal,
                start: notice.time - self.grace,
                end: Some(notice.time),
                announced: false,
            }),
            _ => {}
        }
        trim(list);
    }

    /// Whether `principal` changing `key` at `t` was announced.
    pub fn covers(&self, key: &str, principal: &str, t: DateTime<Utc>) -> bool {
        self.windows.get(key).is_some_and(|list| {
            list.iter().filter(|w| !w.announced).any(|w| {
                let who = w.principal.as_deref().is_none_or(|p| p == principal);
                let open_until = w.end.unwrap_or(w.start + self.max).min(w.start + self.max);
                who && t >= w.start - SKEW && t <= open_until + self.grace
            })
        })
    }

    pub fn prune(&mut self, now: DateTime<Utc>) {
        // (Announced windows always have an end.)
        let max = self.max;
        self.windows.retain(|_, list| {
            list.retain(|w| w.end.unwrap_or(w.start + max) + KEEP > now);
            !list.is_empty()
        });
    }
}

fn trim(list: &mut Vec<Window>) {
    if list.len() > MAX_WINDOWS {
        let excess = list.len() - MAX_WINDOWS;
        list.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotations(grace: u64, max: u64) -> Rotations {
        let config = patchpanda_shared::config::Config::from_env(
            &patchpanda_shared::config::Env::default(),
            names::PRINCIPAL_AUDIT_ALERTER,
        )
        .unwrap();
        let mut s = Settings::defaults(&config);
        s.rotation_grace = std::time::Duration::from_secs(grace);
        s.rotation_max = std::time::Duration::from_secs(max);
        Rotations::new(&s)
    }

    fn notice(event: NoticeEvent, id: &str, at: DateTime<Utc>) -> RotationNotice {
        let mut n = RotationNotice::new("webhook-secret", event, id);
        n.principal = Some("rotation-worker@patchpanda.local".into());
        n.time = at;
        n
    }

    #[test]
    fn a_started_rotation_covers_until_grace_after_it_ends() {
        let t0 = Utc::now();
        let mut r = rotations(300, 7200);
        let key = secret_key("patchpanda-webhook-secret");
        let who = "rotation-worker@patchpanda.local";
        assert!(!r.covers(&key, who, t0));
        r.record(key.clone(), &notice(NoticeEvent::Started, "r1", t0));
        assert!(r.covers(&key, who, t0 + TimeDelta::seconds(10)));
        assert!(!r.covers(&key, "mallory@x", t0 + TimeDelta::seconds(10)));
        assert!(!r.covers("secret:other", who, t0));
        assert!(!r.covers(&key, who, t0 - TimeDelta::minutes(5)));
        r.record(
            key.clone(),
            &notice(NoticeEvent::Rotated, "r1", t0 + TimeDelta::minutes(1)),
        );
        assert!(r.covers(&key, who, t0 + TimeDelta::minutes(5)));
        assert!(!r.covers(&key, who, t0 + TimeDelta::minutes(7)));
    }

    #[test]
    fn unclosed_rotations_expire_and_point_notices_cover_the_past() {
        let t0 = Utc::now();
        let mut r = rotations(60, 600);
        let key = secret_key("s");
        let who = "rotation-worker@patchpanda.local";
        r.record(key.clone(), &notice(NoticeEvent::Started, "r1", t0));
        assert!(r.covers(&key, who, t0 + TimeDelta::minutes(10)));
        assert!(!r.covers(&key, who, t0 + TimeDelta::minutes(12)));
        let t1 = t0 + TimeDelta::hours(1);
        r.record(key.clone(), &notice(NoticeEvent::Disabled, "finish", t1));
        assert!(r.covers(&key, who, t1 - TimeDelta::seconds(20)));
        assert!(!r.covers(&key, who, t1 - TimeDelta::minutes(3)));
        r.prune(t1 + TimeDelta::hours(48));
        assert!(!r.covers(&key, who, t1));
    }
}
