//! A rotation's durable state: where it is ([`Step`]), the in-flight record
//! kept in the secret's own annotations ([`RotationState`]), how the last one
//! ended ([`LastRotation`]), and the bookkeeping annotations finish and
//! rollback read (disabled-at times, versions retired as compromised).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::Secret;
use serde::{Deserialize, Serialize};

/// The in-flight rotation (JSON). Absent when no rotation is in progress.
pub const ANNOTATION_ROTATION: &str = "patchpanda-rotation";
/// How the last rotation ended (JSON), for `status`.
pub const ANNOTATION_LAST_ROTATION: &str = "patchpanda-last-rotation";
/// Version -> when it was seen disabled (JSON), to time retention from.
pub const ANNOTATION_DISABLED_AT: &str = "patchpanda-disabled-at";
/// Versions an emergency rotation retired as compromised (JSON list): no
/// rollback makes them current again without `--force`.
pub const ANNOTATION_COMPROMISED: &str = "patchpanda-compromised";

/// Where a rotation is: the last step whose effect is durably recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Lease taken and `started` announced; nothing created yet.
    Started,
    /// The new version exists and carries the `pending` alias.
    Created,
    /// The new value was applied where it is used (GitHub).
    Set,
    /// The new value was proven to work.
    Tested,
    /// Aliases moved (`pending` -> `current` -> `previous`); the notice and
    /// clean-up remain.
    Finished,
    /// The automatic abort: GitHub restored, `pending` removed and disabled.
    RollingBack,
    /// An operator's rollback: making `previous` current again.
    Reverting,
    /// The operator's rollback moved the aliases; the notice remains.
    Reverted,
}

impl Step {
    /// The forward steps, before the aliases move: a rotation here can
    /// still be aborted without anyone having used the new value as current.
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            Step::Started | Step::Created | Step::Set | Step::Tested
        )
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// Fault injection points (see [`crate::Settings::crash_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// After the lease is taken and `started` announced.
    Started,
    /// After the new version is added, before `pending` points at it.
    VersionAdded,
    Created,
    Set,
    Tested,
    /// After the aliases moved, before the `rotated` notice.
    Finished,
    /// An operator's rollback: after GitHub was given the old secret, before
    /// the aliases move.
    RevertApplied,
    /// KMS: after the new version became primary, before it was tested and
    /// announced.
    KmsPrimarySet,
    /// KMS: after CreateCryptoKeyVersion answered, before the record noted
    /// the version (only the intent to create is on record).
    KmsVersionCreated,
}

/// The in-flight rotation, as stored in [`ANNOTATION_ROTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// Ties the rotation's notices together; survives takeovers.
    pub id: String,
    /// The attempt holding the lease; a takeover changes it.
    pub holder: String,
    pub lease_until: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub step: Step,
    #[serde(default)]
    pub emergency: bool,
    /// `current` when the rotation began.
    #[serde(default)]
    pub base: Option<u64>,
    /// The new version (or, for a revert, the version being restored).
    #[serde(default)]
    pub pending: Option<u64>,
    /// SHA-256 of a generated value, recorded before it is added: Secret
    /// Manager's add has no idempotency token, so this is how a resumed
    /// rotation recognises the version a crashed attempt added. A digest of
    /// 256 random bits reveals nothing usable.
    #[serde(default)]
    pub digest: Option<String>,
    /// Set before GitHub is asked to take the new value (for a revert: the
    /// old one); cleared once GitHub is known to hold the old one. An abort
    /// restores GitHub while set.
    #[serde(default)]
    pub github_may_have_pending: bool,
    #[serde(default)]
    pub grace_until: Option<DateTime<Utc>>,
    /// Why the rotation is being rolled back, or the last retryable failure.
    #[serde(default)]
    pub reason: Option<String>,
    /// Lines for the final notice (skipped steps, reminders).
    #[serde(default)]
    pub notes: Vec<String>,
    /// A revert the operator forced onto a version retired as compromised.
    #[serde(default)]
    pub forced: bool,
    /// A restore from backup: `pending` is an existing (restored) version,
    /// promoted like an upload whatever the kind.
    #[serde(default)]
    pub restoring: bool,
}

/// How the last rotation ended, as stored in [`ANNOTATION_LAST_ROTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRotation {
    pub id: String,
    /// `rotated`, `rolled_back` or `failed`.
    pub result: NoticeEvent,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub previous_version: Option<u64>,
    #[serde(default)]
    pub emergency: bool,
    #[serde(default)]
    pub detail: Option<String>,
}

pub(crate) fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The in-flight rotation recorded on a secret, if any. A value that does not
/// parse (edited by hand) counts as none and is overwritten by the next one.
pub fn rotation_state(secret: &Secret) -> Option<RotationState> {
    let raw = secret.annotations.get(ANNOTATION_ROTATION)?;
    match serde_json::from_str(raw) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(secret = %secret.id, error = %e, "unreadable rotation state ignored");
            None
        }
    }
}

pub fn last_rotation(secret: &Secret) -> Option<LastRotation> {
    serde_json::from_str(secret.annotations.get(ANNOTATION_LAST_ROTATION)?).ok()
}

/// Versions retired as compromised by an emergency rotation.
pub fn compromised(secret: &Secret) -> BTreeSet<u64> {
    compromised_in(&secret.annotations)
}

fn compromised_in(annotations: &BTreeMap<String, String>) -> BTreeSet<u64> {
    annotations
        .get(ANNOTATION_COMPROMISED)
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default()
}

/// Adds `versions` to the compromised record.
pub(crate) fn note_compromised(annotations: &mut BTreeMap<String, String>, versions: &[u64]) {
    let mut set = compromised_in(annotations);
    set.extend(versions.iter().copied());
    if !set.is_empty() {
        annotations.insert(ANNOTATION_COMPROMISED.to_string(), json(&set));
    }
}

pub fn disabled_at(secret: &Secret) -> BTreeMap<u64, DateTime<Utc>> {
    disabled_at_in(&secret.annotations)
}

fn disabled_at_in(annotations: &BTreeMap<String, String>) -> BTreeMap<u64, DateTime<Utc>> {
    annotations
        .get(ANNOTATION_DISABLED_AT)
        .and_then(|raw| serde_json::from_str::<BTreeMap<String, DateTime<Utc>>>(raw).ok())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_disabled_at(
    annotations: &mut BTreeMap<String, String>,
    map: &BTreeMap<u64, DateTime<Utc>>,
) {
    if map.is_empty() {
        annotations.remove(ANNOTATION_DISABLED_AT);
        return;
    }
    let m: BTreeMap<String, DateTime<Utc>> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    annotations.insert(ANNOTATION_DISABLED_AT.to_string(), json(&m));
}

/// Adds `versions` to the disabled-at record, keeping earlier times.
pub(crate) fn note_disabled(
    annotations: &mut BTreeMap<String, String>,
    versions: &[u64],
    at: DateTime<Utc>,
) {
    if versions.is_empty() {
        return;
    }
    let mut map = disabled_at_in(annotations);
    for v in versions {
        map.entry(*v).or_insert(at);
    }
    set_disabled_at(annotations, &map);
}

pub(crate) fn push_note(st: &mut RotationState, note: Option<&str>) {
    if let Some(n) = note
        && !st.notes.iter().any(|x| x == n)
    {
        st.notes.push(n.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_with(annotations: BTreeMap<String, String>) -> Secret {
        Secret {
            id: "s".into(),
            create_time: Utc::now(),
            aliases: BTreeMap::new(),
            annotations,
            etag: "e".into(),
            next_rotation_time: None,
            rotation_period: None,
        }
    }

    #[test]
    fn state_round_trips_and_old_fields_default() {
        let now = Utc::now();
        let s = RotationState {
            id: "r".into(),
            holder: "h".into(),
            lease_until: now,
            started: now,
            step: Step::RollingBack,
            emergency: true,
            base: Some(3),
            pending: Some(4),
            digest: Some("ab".into()),
            github_may_have_pending: true,
            grace_until: None,
            reason: Some("x".into()),
            notes: vec!["n".into()],
            forced: true,
            restoring: false,
        };
        let back: RotationState = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(back, s);
        let minimal = format!(
            r#"{{"id":"r","holder":"h","lease_until":"{0}","started":"{0}","step":"created"}}"#,
            now.to_rfc3339()
        );
        let m: RotationState = serde_json::from_str(&minimal).unwrap();
        assert_eq!(m.step, Step::Created);
        assert!(!m.github_may_have_pending && !m.forced);
        assert_eq!(Step::RollingBack.to_string(), "rolling_back");
    }

    #[test]
    fn disabled_at_keeps_the_first_time() {
        let t1 = Utc::now();
        let t2 = t1 + chrono::Duration::hours(1);
        let mut ann = BTreeMap::new();
        note_disabled(&mut ann, &[3, 4], t1);
        note_disabled(&mut ann, &[4, 5], t2);
        let m = disabled_at(&secret_with(ann));
        assert_eq!(m[&3], t1);
        assert_eq!(m[&4], t1);
        assert_eq!(m[&5], t2);
    }

    #[test]
    fn compromised_versions_accumulate() {
        let mut ann = BTreeMap::new();
        note_compromised(&mut ann, &[1]);
        note_compromised(&mut ann, &[2, 1]);
        assert_eq!(compromised(&secret_with(ann)), BTreeSet::from([1, 2]));
    }

    #[test]
    fn unreadable_state_counts_as_none() {
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_ROTATION.to_string(), "{not json".to_string());
        assert!(rotation_state(&secret_with(annotations)).is_none());
    }
}
