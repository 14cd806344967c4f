//! Rotations that need a person (contract 10): `failed`, `rolled_back` and
//! `due` notices become alerts, so an upload that fails validation or a key
//! past its age reaches Slack and PagerDuty, not only the bus. A failed
//! emergency rotation is P1 (the credential it was meant to replace is
//! presumed leaked and still current).

use patchpanda_shared::notice::{NoticeEvent, RotationNotice};

use super::{AlertParts, make_alert};
use crate::alert::{Alert, Rule, Severity};
use crate::settings::Settings;

pub(crate) fn alert(settings: &Settings, n: &RotationNotice) -> Option<Alert> {
    let rule = match n.event {
        NoticeEvent::Failed => Rule::RotationFailed,
        NoticeEvent::RolledBack => Rule::RotationRolledBack,
        NoticeEvent::Due => Rule::RotationDue,
        _ => return None,
    };
    let secret: String = n.secret.chars().take(100).collect();
    let detail = n
        .detail
        .as_deref()
        .map(|d| format!(": {}", d.chars().take(300).collect::<String>()))
        .unwrap_or_default();
    let emergency = if n.emergency { "emergency " } else { "" };
    let summary = match n.event {
        NoticeEvent::Failed => format!(
            "The {emergency}rotation of {secret} failed{detail}; the current version stays in use. Look at `patchpanda status {secret}` and retry: patchpanda rotate {secret}{}",
            if n.emergency { " --emergency" } else { "" }
        ),
        NoticeEvent::RolledBack => format!(
            "The rotation of {secret} was rolled back{detail}; the previous version is current again. Find out why before rotating again: patchpanda status {secret}"
        ),
        _ => format!("{secret} is due for rotation{detail}. Rotate it: patchpanda rotate {secret}"),
    };
    let mut details = std::collections::BTreeMap::from([
        (
            "rotationId".to_string(),
            n.rotation_id.chars().take(100).collect(),
        ),
        ("event".to_string(), n.event.as_str().to_string()),
    ]);
    if let Some(v) = n.version {
        details.insert("version".into(), v.to_string());
    }
    if let Some(v) = n.previous_version {
        details.insert("previousVersion".into(), v.to_string());
    }
    if n.emergency {
        details.insert("emergency".into(), "true".into());
    }
    let principal = n.principal.as_deref().unwrap_or("-");
    let mut alert = make_alert(
        settings,
        rule,
        AlertParts {
            principal,
            resource: &secret,
            method: n.event.as_str(),
            time: n.time,
            insert_id: "",
            log_name: "",
            summary,
            details,
        },
    );
    if n.event == NoticeEvent::Failed && n.emergency {
        alert.severity = alert.severity.min(Severity::P1);
    }
    // One alert per rotation and event, whatever redelivers it.
    alert.id = format!("{rule}:{}:{}", secret, details_id(n));
    alert.fingerprint = format!("{rule}|{secret}");
    Some(alert)
}

fn details_id(n: &RotationNotice) -> String {
    let id: String = n.rotation_id.chars().take(100).collect();
    if n.event == NoticeEvent::Due {
        // `due` repeats daily for one credential: one alert per day.
        format!("{id}:{}", n.time.format("%Y-%m-%d"))
    } else {
        id
    }
}
