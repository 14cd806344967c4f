//! The [`Rotator`]: the backends and settings every rotation path shares, and
//! the two things each path does the same way (stamping and publishing a
//! notice, and the fault-injection hook tests use to stop an attempt dead).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use patchpanda_shared::bus::Bus;
use patchpanda_shared::kms::Kms;
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::secrets::SecretStore;
use serde::Serialize;

use crate::protocol::CrashPoint;
use crate::{RotationError, Settings};

/// How one rotation (or rollback) ended. The CLI prints it as a table or JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationOutcome {
    /// Logical name (`webhook-secret`, ..., `kms-key`).
    pub secret: String,
    pub rotation_id: String,
    /// `rotated` or `rolled_back`.
    pub result: NoticeEvent,
    /// The version now current (KMS: primary).
    pub version: Option<u64>,
    /// The version it replaced.
    pub previous_version: Option<u64>,
    pub emergency: bool,
    /// Until when the replaced version stays valid (none when emergency).
    pub grace_until: Option<DateTime<Utc>>,
    /// Whether this finished a rotation a crashed or paused attempt began.
    pub resumed: bool,
    /// What people should know: skipped steps, what to do next.
    pub detail: Option<String>,
}

/// Rotates, rolls back, finishes and reports on the gateway's secrets. Built
/// from settings and backends with no I/O.
pub struct Rotator {
    pub(crate) store: Arc<dyn SecretStore>,
    pub(crate) kms: Arc<dyn Kms>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) settings: Settings,
    /// Within one process this keeps two KMS rotations apart; across
    /// processes the KMS rotation record (see [`crate::kms`]) does.
    pub(crate) kms_lock: tokio::sync::Mutex<()>,
}

impl Rotator {
    pub fn new(
        store: Arc<dyn SecretStore>,
        kms: Arc<dyn Kms>,
        bus: Arc<dyn Bus>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            kms,
            bus,
            settings,
            kms_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.settings.now()
    }

    /// A notice stamped with our identity and clock.
    pub(crate) fn notice(
        &self,
        secret: &str,
        event: NoticeEvent,
        rotation_id: &str,
    ) -> RotationNotice {
        let mut n = RotationNotice::new(secret, event, rotation_id);
        n.principal = Some(self.settings.principal.clone());
        n.time = self.now();
        n
    }

    pub(crate) async fn publish(&self, notice: &RotationNotice) -> Result<(), RotationError> {
        self.bus
            .publish(names::TOPIC_ROTATION_EVENTS, notice.to_message())
            .await?;
        tracing::info!(
            secret = %notice.secret,
            event = %notice.event,
            version = ?notice.version,
            previous_version = ?notice.previous_version,
            rotation_id = %notice.rotation_id,
            detail = notice.detail.as_deref().unwrap_or(""),
            "rotation notice published"
        );
        Ok(())
    }

    /// Stops the attempt dead at `at` when the settings ask for it (tests).
    pub(crate) fn crash(&self, at: CrashPoint) -> Result<(), RotationError> {
        if self.settings.crash_at == Some(at) {
            tracing::warn!(?at, "injected crash");
            return Err(RotationError::Crashed(at));
        }
        Ok(())
    }
}
