//! Watching the watcher: secret reads are only visible in Data Access logs,
//! which are off by default. The functions read their secrets at start and
//! on refresh, so a long silence means the logging (or the sink) is off.

use chrono::{DateTime, TimeDelta, Utc};

use super::{AlertParts, make_alert};
use crate::alert::{Alert, Rule};
use crate::settings::Settings;

#[derive(Debug)]
pub(crate) struct SelfCheck {
    /// The last Data Access entry for a gateway secret, or when we started.
    last: DateTime<Utc>,
    /// Warned for the current silence already.
    warned: bool,
}

impl SelfCheck {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            last: now,
            warned: false,
        }
    }

    pub fn saw_data_access(&mut self, now: DateTime<Utc>) {
        self.last = self.last.max(now);
        self.warned = false;
    }

    pub fn check(&mut self, settings: &Settings, now: DateTime<Utc>) -> Option<Alert> {
        let limit = TimeDelta::from_std(settings.data_access_max_silence).ok()?;
        if self.warned || limit.is_zero() || now - self.last < limit {
            return None;
        }
        self.warned = true;
        let silence = humantime::format_duration(settings.data_access_max_silence);
        let mut alert = make_alert(
            settings,
            Rule::DataAccessSilent,
            AlertParts {
                principal: "-",
                resource: "secretmanager.googleapis.com/data_access",
                method: "-",
                time: now,
                insert_id: "",
                log_name: "",
                summary: format!(
                    "No Data Access audit entries for the gateway's secrets in {silence} while the functions run: secret reads are going unseen. Check the project's audit config (DATA_READ for secretmanager.googleapis.com) and the log sink's filter"
                ),
                details: [(
                    "lastSeen".to_string(),
                    self.last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )]
                .into(),
            },
        );
        alert.id = format!("{}:{}", Rule::DataAccessSilent, self.last.timestamp());
        Some(alert)
    }
}
