//! Which failed deliveries the sweeper asks GitHub to redeliver, and why it
//! leaves the others: redelivery must terminate.
//!
//! - Success is any 2xx answer (`status_code`), not only `status == "OK"`.
//! - A delivery whose newest failure is a permanent refusal of ours (a 4xx
//!   other than 408, 409, 425 and 429: a bad signature, a malformed body, a
//!   payload too large) would fail again; it is left.
//! - A guid is tried at most `max_attempts` times, counted from GitHub's own
//!   list of its attempts: the sweeper keeps its mark at the first failure
//!   of every guid it retries, so that list is complete while it retries.
//! - A guid whose original attempt is no longer in the window was given up
//!   by an earlier sweep (or redelivered by hand); it is left too.

use chrono::{DateTime, Utc};
use patchpanda_shared::github::HookDelivery;
use serde::Serialize;

/// Why a failed delivery is not redelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its newest attempt was refused by us for good (4xx).
    PermanentRefusal,
    /// It has been tried `max_attempts` times.
    AttemptsExhausted,
    /// Its original attempt is older than this sweep's window.
    GivenUpEarlier,
}

/// One failed delivery left alone, for the sweep's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub guid: String,
    /// The newest failed attempt's id.
    pub delivery_id: u64,
    /// Our answer to it (0: none, e.g. a timeout).
    pub status_code: u16,
    /// Attempts seen in the window.
    pub attempts: u32,
    pub reason: SkipReason,
}

/// What one guid's attempts in the window add up to.
#[derive(Debug, Default)]
pub(crate) struct GuidState {
    ok: bool,
    attempts: u32,
    /// Whether the first delivery (not a redelivery) is in the window.
    original_seen: bool,
    /// The newest failed attempt: (when, delivery id, status code).
    newest_failure: Option<(DateTime<Utc>, u64, u16)>,
    /// The oldest failed attempt, where the next sweep must start to see
    /// every attempt of this guid.
    oldest_failure: Option<DateTime<Utc>>,
}

/// What to do with a guid that has no successful attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Redeliver {
        newest: DateTime<Utc>,
        delivery_id: u64,
        oldest: DateTime<Utc>,
    },
    Skip(Skipped),
    /// Not enough seen to decide (the listing stopped early).
    Later,
}

impl GuidState {
    pub fn record(&mut self, d: &HookDelivery) {
        if succeeded(d) {
            self.ok = true;
            return;
        }
        self.attempts += 1;
        self.original_seen |= !d.redelivery;
        if self
            .newest_failure
            .is_none_or(|(t, id, _)| (d.delivered_at, d.id) > (t, id))
        {
            self.newest_failure = Some((d.delivered_at, d.id, d.status_code));
        }
        if self.oldest_failure.is_none_or(|t| d.delivered_at < t) {
            self.oldest_failure = Some(d.delivered_at);
        }
    }

    pub fn ok(&self) -> bool {
        self.ok
    }

    /// The verdict on a guid; `complete` says whether the listing reached
    /// the start of the window.
    pub fn verdict(&self, guid: &str, max_attempts: u32, complete: bool) -> Verdict {
        let Some((newest, delivery_id, status_code)) = self.newest_failure else {
            return Verdict::Later;
        };
        if self.ok {
            return Verdict::Later;
        }
        let skip = |reason| {
            Verdict::Skip(Skipped {
                guid: guid.to_string(),
                delivery_id,
                status_code,
                attempts: self.attempts,
                reason,
            })
        };
        if permanent_refusal(status_code) {
            return skip(SkipReason::PermanentRefusal);
        }
        if !self.original_seen {
            return if complete {
                skip(SkipReason::GivenUpEarlier)
            } else {
                Verdict::Later
            };
        }
        if self.attempts >= max_attempts {
            return skip(SkipReason::AttemptsExhausted);
        }
        Verdict::Redeliver {
            newest,
            delivery_id,
            oldest: self.oldest_failure.unwrap_or(newest),
        }
    }
}

/// Whether the receiver took the delivery: any 2xx. Without a status code
/// (an old record), GitHub's own `OK`.
pub fn succeeded(d: &HookDelivery) -> bool {
    if d.status_code != 0 {
        (200..300).contains(&d.status_code)
    } else {
        d.status.eq_ignore_ascii_case("OK")
    }
}

/// A refusal that a redelivery would meet again: a 4xx, except those that
/// say "not now" (408 slow body, 409 conflict, 425 too early, 429 busy).
pub fn permanent_refusal(status_code: u16) -> bool {
    (400..500).contains(&status_code) && !matches!(status_code, 408 | 409 | 425 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: u64, mins_ago: i64, code: u16, redelivery: bool) -> HookDelivery {
        HookDelivery {
            id,
            guid: "g".into(),
            delivered_at: Utc::now() - chrono::Duration::minutes(mins_ago),
            redelivery,
            status: if (200..300).contains(&code) {
                "OK".into()
            } else {
                format!("Invalid HTTP Response: {code}")
            },
            status_code: code,
            event: "push".into(),
            action: None,
        }
    }

    fn state(attempts: &[HookDelivery]) -> GuidState {
        let mut s = GuidState::default();
        for a in attempts {
            s.record(a);
        }
        s
    }

    #[test]
    fn any_2xx_is_success() {
        for code in [200, 201, 202, 204, 299] {
            assert!(succeeded(&attempt(1, 1, code, false)), "{code}");
        }
        let mut odd = attempt(1, 1, 204, false);
        odd.status = "No Content".into();
        assert!(succeeded(&odd), "the code decides, not the text");
        let mut old = attempt(1, 1, 0, false);
        old.status = "OK".into();
        assert!(succeeded(&old));
        for code in [0, 301, 400, 503] {
            assert!(!succeeded(&attempt(1, 1, code, false)), "{code}");
        }
    }

    #[test]
    fn which_refusals_are_permanent() {
        for code in [400, 401, 403, 404, 405, 413, 415, 422] {
            assert!(permanent_refusal(code), "{code}");
        }
        for code in [0, 200, 408, 409, 425, 429, 500, 502, 503, 504] {
            assert!(!permanent_refusal(code), "{code}");
        }
    }

    #[test]
    fn verdicts() {
        let v = |s: &GuidState| s.verdict("g", 3, true);
        // A transient failure: redelivered, its newest attempt.
        let s = state(&[attempt(1, 9, 503, false), attempt(2, 5, 0, true)]);
        assert!(matches!(v(&s), Verdict::Redeliver { delivery_id: 2, .. }));
        // Newest failure permanent: left, whatever came before.
        let s = state(&[attempt(1, 9, 503, false), attempt(2, 5, 401, true)]);
        assert!(matches!(
            v(&s),
            Verdict::Skip(Skipped {
                reason: SkipReason::PermanentRefusal,
                status_code: 401,
                ..
            })
        ));
        // Three attempts with a cap of three: left.
        let s = state(&[
            attempt(1, 9, 503, false),
            attempt(2, 5, 503, true),
            attempt(3, 2, 500, true),
        ]);
        assert!(matches!(
            v(&s),
            Verdict::Skip(Skipped {
                reason: SkipReason::AttemptsExhausted,
                attempts: 3,
                delivery_id: 3,
                ..
            })
        ));
        // Only redeliveries in the window: an earlier sweep gave up.
        let s = state(&[attempt(3, 2, 503, true)]);
        assert!(matches!(
            v(&s),
            Verdict::Skip(Skipped {
                reason: SkipReason::GivenUpEarlier,
                ..
            })
        ));
        assert_eq!(
            s.verdict("g", 3, false),
            Verdict::Later,
            "unless the listing stopped early"
        );
        // Any success settles it.
        let s = state(&[attempt(1, 9, 503, false), attempt(2, 5, 204, true)]);
        assert!(s.ok());
    }
}
