//! `patchpanda status`: what is current, how old, what is due, what is in
//! grace, what is in flight, and the KMS key's primary and schedule.

use chrono::{DateTime, Utc};
use patchpanda_shared::Error;
use patchpanda_shared::kms::KeyVersionState;
use patchpanda_shared::names;
use patchpanda_shared::notice::NoticeEvent;
use patchpanda_shared::secrets::{Secret, SecretVersion, VersionState};
use serde::Serialize;

use crate::kinds::{self, Kind};
use crate::protocol::{self, LastRotation, Step};
use crate::{RotationError, Rotator, Settings};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    pub secrets: Vec<SecretStatus>,
    pub kms: KmsStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretStatus {
    /// Logical name.
    pub secret: String,
    /// Secret Manager id.
    pub id: String,
    /// False for a secret not created (the OIDC secret is optional).
    pub exists: bool,
    pub current: Option<VersionInfo>,
    pub previous: Option<VersionInfo>,
    pub pending: Option<VersionInfo>,
    /// Until when `previous` is accepted.
    pub grace_until: Option<DateTime<Utc>>,
    pub in_grace: bool,
    pub due: bool,
    pub due_reason: Option<String>,
    /// Secret Manager's rotation schedule, when one is set.
    pub next_rotation_time: Option<DateTime<Utc>>,
    pub rotation_period_seconds: Option<u64>,
    /// A rotation in flight (or left behind by a crash: `lapsed`).
    pub rotation: Option<InFlight>,
    pub last_rotation: Option<LastRotation>,
    /// An uploaded version waiting to be promoted.
    pub unpromoted_upload: Option<u64>,
    /// The current version came from an emergency rotation (or one is in
    /// flight): the versions before it are compromised.
    pub emergency: bool,
    /// Versions an emergency rotation retired as compromised; a rollback
    /// onto one needs `--force`.
    pub compromised: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub number: u64,
    pub state: VersionState,
    pub created: DateTime<Utc>,
    pub age_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub id: String,
    pub step: Step,
    pub started: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// The holder stopped renewing: the next trigger resumes or rolls back.
    pub lapsed: bool,
    pub emergency: bool,
    pub pending: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KmsStatus {
    pub name: Option<String>,
    pub primary_version: Option<u64>,
    pub primary_state: Option<KeyVersionState>,
    pub primary_created: Option<DateTime<Utc>>,
    pub primary_age_seconds: Option<i64>,
    pub rotation_period_seconds: Option<u64>,
    pub next_rotation_time: Option<DateTime<Utc>>,
    pub versions: usize,
    pub enabled_versions: usize,
    /// Why the key could not be read, when it could not.
    pub error: Option<String>,
}

/// Why a secret is due for rotation, if it is.
pub(crate) fn due_reason(
    settings: &Settings,
    kind: Kind,
    secret: &Secret,
    current: Option<&SecretVersion>,
    now: DateTime<Utc>,
) -> Option<String> {
    if let Some(t) = secret.next_rotation_time
        && t <= now
    {
        return Some(format!(
            "Secret Manager's rotation time {} has passed",
            t.to_rfc3339()
        ));
    }
    let Some(current) = current else {
        return Some("there is no current version".to_string());
    };
    let age = (now - current.create_time).to_std().unwrap_or_default();
    if kind.ages() && age > settings.key_max_age {
        return Some(format!(
            "the current version is {} days old (limit {} days)",
            age.as_secs() / 86400,
            settings.key_max_age.as_secs() / 86400
        ));
    }
    None
}

fn info(v: &SecretVersion, now: DateTime<Utc>) -> VersionInfo {
    VersionInfo {
        number: v.number,
        state: v.state,
        created: v.create_time,
        age_seconds: (now - v.create_time).num_seconds(),
    }
}

impl Rotator {
    pub async fn status(&self) -> Result<StatusReport, RotationError> {
        let now = self.now();
        let mut secrets = Vec::new();
        for kind in self.secret_kinds() {
            secrets.push(self.secret_status(kind, now).await?);
        }
        Ok(StatusReport {
            generated_at: now,
            secrets,
            kms: self.kms_status(now).await,
        })
    }

    async fn secret_status(
        &self,
        kind: Kind,
        now: DateTime<Utc>,
    ) -> Result<SecretStatus, RotationError> {
        let id = self.settings.secret_id(kind.logical());
        let mut st = SecretStatus {
            secret: kind.logical().to_string(),
            id: id.clone(),
            exists: false,
            current: None,
            previous: None,
            pending: None,
            grace_until: None,
            in_grace: false,
            due: false,
            due_reason: None,
            next_rotation_time: None,
            rotation_period_seconds: None,
            rotation: None,
            last_rotation: None,
            unpromoted_upload: None,
            emergency: false,
            compromised: Vec::new(),
        };
        let secret = match self.store.get_secret(&id).await {
            Ok(s) => s,
            Err(Error::NotFound(_)) => return Ok(st),
            Err(e) => return Err(e.into()),
        };
        st.exists = true;
        let versions = self.store.list_versions(&id).await?;
        let by_alias = |alias: &str| {
            let n = secret.aliases.get(alias)?;
            versions.iter().find(|v| v.number == *n)
        };
        let current = by_alias(names::ALIAS_CURRENT);
        st.current = current.map(|v| info(v, now));
        st.previous = by_alias(names::ALIAS_PREVIOUS).map(|v| info(v, now));
        st.pending = by_alias(names::ALIAS_PENDING).map(|v| info(v, now));
        st.grace_until = secret
            .annotations
            .get(names::ANNOTATION_PREVIOUS_VALID_UNTIL)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        st.in_grace = st.grace_until.is_some_and(|t| t > now)
            && st
                .previous
                .as_ref()
                .is_some_and(|p| p.state == VersionState::Enabled);
        st.due_reason = due_reason(&self.settings, kind, &secret, current, now);
        st.due = st.due_reason.is_some();
        st.next_rotation_time = secret.next_rotation_time;
        st.rotation_period_seconds = secret.rotation_period.map(|d| d.as_secs());
        st.rotation = protocol::rotation_state(&secret).map(|r| InFlight {
            lapsed: r.lease_until <= now,
            id: r.id,
            step: r.step,
            started: r.started,
            lease_until: r.lease_until,
            emergency: r.emergency,
            pending: r.pending,
            reason: r.reason,
        });
        st.last_rotation = protocol::last_rotation(&secret);
        st.compromised = protocol::compromised(&secret).into_iter().collect();
        let current_number = st.current.as_ref().map(|c| c.number);
        st.emergency = st.rotation.as_ref().is_some_and(|r| r.emergency)
            || st.last_rotation.as_ref().is_some_and(|l| {
                l.emergency && l.result == NoticeEvent::Rotated && l.version == current_number
            });
        if kind.is_upload() {
            st.unpromoted_upload = kinds::newest_upload(self.store.as_ref(), &id, &secret).await?;
        }
        Ok(st)
    }

    async fn kms_status(&self, now: DateTime<Utc>) -> KmsStatus {
        let mut st = KmsStatus {
            name: None,
            primary_version: None,
            primary_state: None,
            primary_created: None,
            primary_age_seconds: None,
            rotation_period_seconds: None,
            next_rotation_time: None,
            versions: 0,
            enabled_versions: 0,
            error: None,
        };
        let (info, versions) = match (self.kms.key_info().await, self.kms.list_versions().await) {
            (Ok(i), Ok(v)) => (i, v),
            (Err(e), _) | (_, Err(e)) => {
                // The secrets' status is still worth showing.
                st.error = Some(e.to_string());
                return st;
            }
        };
        st.name = Some(info.name);
        if let Some(p) = info.primary {
            st.primary_version = Some(p.number);
            st.primary_state = Some(p.state);
            st.primary_created = Some(p.create_time);
            st.primary_age_seconds = Some((now - p.create_time).num_seconds());
        }
        st.rotation_period_seconds = info.rotation_period.map(|d| d.as_secs());
        st.next_rotation_time = info.next_rotation_time;
        st.versions = versions.len();
        st.enabled_versions = versions
            .iter()
            .filter(|v| v.state == KeyVersionState::Enabled)
            .count();
        st
    }
}
