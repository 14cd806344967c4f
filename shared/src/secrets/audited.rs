//! Audit entries and event notifications as a decorator around any
//! [`SecretStore`] (the idea of google-cloud-rust's tracing wrappers): every
//! call is audited onto `patchpanda-audit-logs` as Cloud Audit Logs would
//! record it, and every change emits Secret Manager's event notification
//! onto `patchpanda-secret-events`. Both are published after the inner call
//! returned, and a bus that is down fails nothing: a lost audit entry is
//! logged, a lost change would be worse.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::local::rows::ts;
use super::local::{secret_name, version_name};
use super::rules::shown;
use super::{
    AccessedVersion, Secret, SecretStore, SecretUpdate, SecretVersion, StateChange, VersionRef,
};
use crate::audit_log::{SERVICE_SECRET_MANAGER, sm};
use crate::bus::{Bus, Message};
use crate::local::audit::{Call, PROJECT, Publisher};
use crate::{Error, Result, names};

/// A [`SecretStore`] that audits and announces what `inner` does.
pub struct Audited<S> {
    inner: S,
    publisher: Publisher,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Audited<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audited")
            .field("inner", &self.inner)
            .field("principal", &self.publisher.principal())
            .finish_non_exhaustive()
    }
}

impl<S: SecretStore> Audited<S> {
    /// Audits calls as the publisher's principal, onto its bus (if any).
    pub(crate) fn new(inner: S, publisher: Publisher) -> Self {
        Self { inner, publisher }
    }

    /// Audits calls to `inner` as `principal`, onto `bus` when there is
    /// one (e.g. a [`crate::testing::MemorySecretStore`] whose calls should
    /// leave the audit entries and notifications the local store leaves).
    pub fn with_bus(inner: S, principal: &str, bus: Option<Arc<dyn Bus>>) -> Self {
        Self::new(inner, Publisher::new(bus, principal))
    }

    /// The decorated store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn audit(&self, call: Call<'_>, outcome: Result<(), &Error>) {
        self.publisher.audit(call, outcome).await;
    }

    /// Publishes one event notification, after the change happened.
    async fn notify(&self, event: &str, id: &str, version: Option<u64>, data: Value) {
        let mut message = Message::new(data.to_string().into_bytes())
            .attribute("eventType", event)
            .attribute("secretId", secret_name(id))
            .attribute("dataFormat", "JSON_API_V1")
            .attribute(
                "timestamp",
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false),
            );
        if let Some(n) = version {
            message = message.attribute("versionId", version_name(id, n));
        }
        if event == "SECRET_DELETE" {
            message = message.attribute("deleteType", "REQUESTED");
        }
        self.publisher
            .publish(names::TOPIC_SECRET_EVENTS, message)
            .await;
    }

    /// The version an access named, for its audit entry: what was read, or,
    /// when the read failed on a version that exists (disabled, corrupt),
    /// that version, as the service names the resolved resource.
    async fn resolved(
        &self,
        id: &str,
        version: &VersionRef,
        result: &Result<AccessedVersion>,
    ) -> Option<u64> {
        match (result, version) {
            (Ok(v), _) => Some(v.version.number),
            (Err(_), VersionRef::Number(n)) => Some(*n),
            (Err(Error::NotFound(_) | Error::InvalidArgument(_)), _) => None,
            (Err(_), _) => self
                .inner
                .get_version(id, version)
                .await
                .ok()
                .map(|v| v.number),
        }
    }
}

/// `projects/P/secrets/S/versions/V` as requested, bounded for the audit.
fn requested(id: &str, version: &VersionRef) -> String {
    format!(
        "{}/versions/{}",
        secret_name(id),
        shown(&version.to_string())
    )
}

#[async_trait]
impl<S: SecretStore> SecretStore for Audited<S> {
    async fn create_secret(&self, id: &str) -> Result<Secret> {
        let result = self.inner.create_secret(id).await;
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::CREATE_SECRET,
                &resource,
                "secretmanager.secrets.create",
                json!({"parent": format!("projects/{PROJECT}"), "secretId": shown(id)}),
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(s) = &result {
            self.notify("SECRET_CREATE", id, None, secret_json(s)).await;
        }
        result
    }

    async fn get_secret(&self, id: &str) -> Result<Secret> {
        let result = self.inner.get_secret(id).await;
        let resource = secret_name(id);
        self.audit(
            read_call(sm::GET_SECRET, &resource, "secretmanager.secrets.get"),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        let result = self.inner.list_secrets().await;
        let resource = format!("projects/{PROJECT}");
        self.audit(
            read_call(sm::LIST_SECRETS, &resource, "secretmanager.secrets.list"),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        // The notification carries the deleted resource, so read it first
        // (unaudited: the caller asked for a delete, not a get).
        let before = self.inner.get_secret(id).await.ok();
        let result = self.inner.delete_secret(id).await;
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::DELETE_SECRET,
                &resource,
                "secretmanager.secrets.delete",
                json!({"name": resource}),
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if result.is_ok() {
            let data = before
                .as_ref()
                .map_or_else(|| json!({"name": resource}), secret_json);
            self.notify("SECRET_DELETE", id, None, data).await;
        }
        result
    }

    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion> {
        let result = self.inner.add_version(id, data).await;
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::ADD_SECRET_VERSION,
                &resource,
                "secretmanager.versions.add",
                json!({"parent": resource}),
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(v) = &result {
            self.notify("SECRET_VERSION_ADD", id, Some(v.number), version_json(v))
                .await;
        }
        result
    }

    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion> {
        let result = self.inner.access(id, version).await;
        let requested = requested(id, version);
        let resource = match self.resolved(id, version, &result).await {
            Some(n) => version_name(id, n),
            None => requested.clone(),
        };
        self.audit(
            Call {
                service: SERVICE_SECRET_MANAGER,
                method: sm::ACCESS_SECRET_VERSION,
                resource: &resource,
                permission: "secretmanager.versions.access",
                permission_type: "DATA_READ",
                request: Some(json!({"name": requested})),
            },
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion> {
        let result = self.inner.get_version(id, version).await;
        let resource = match &result {
            Ok(v) => version_name(id, v.number),
            Err(_) => requested(id, version),
        };
        self.audit(
            read_call(
                sm::GET_SECRET_VERSION,
                &resource,
                "secretmanager.versions.get",
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>> {
        let result = self.inner.list_versions(id).await;
        let resource = secret_name(id);
        self.audit(
            read_call(
                sm::LIST_SECRET_VERSIONS,
                &resource,
                "secretmanager.versions.list",
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion> {
        let result = self.inner.set_state(id, number, change).await;
        let (m, permission, event) = match change {
            StateChange::Enable => (
                sm::ENABLE_SECRET_VERSION,
                "secretmanager.versions.enable",
                "SECRET_VERSION_ENABLE",
            ),
            StateChange::Disable => (
                sm::DISABLE_SECRET_VERSION,
                "secretmanager.versions.disable",
                "SECRET_VERSION_DISABLE",
            ),
            StateChange::Destroy => (
                sm::DESTROY_SECRET_VERSION,
                "secretmanager.versions.destroy",
                "SECRET_VERSION_DESTROY",
            ),
        };
        let resource = version_name(id, number);
        self.audit(
            write_call(m, &resource, permission, json!({"name": resource})),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(v) = &result {
            self.notify(event, id, Some(number), version_json(v)).await;
        }
        result
    }

    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret> {
        let mask: Vec<&str> = [
            update.aliases.as_ref().map(|_| "versionAliases"),
            update.annotations.as_ref().map(|_| "annotations"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let request = json!({
            "secret": {
                "name": secret_name(id),
                "versionAliases": update.aliases.as_ref().map(aliases_json),
                "annotations": update.annotations,
                "etag": etag,
            },
            "updateMask": mask.join(","),
        });
        let result = self.inner.update_secret(id, update, etag).await;
        let resource = secret_name(id);
        self.audit(
            write_call(
                sm::UPDATE_SECRET,
                &resource,
                "secretmanager.secrets.update",
                request,
            ),
            result.as_ref().map(|_| ()),
        )
        .await;
        if let Ok(s) = &result {
            self.notify("SECRET_UPDATE", id, None, secret_json(s)).await;
        }
        result
    }
}

fn read_call<'a>(method: &'a str, resource: &'a str, permission: &'a str) -> Call<'a> {
    Call {
        service: SERVICE_SECRET_MANAGER,
        method,
        resource,
        permission,
        permission_type: "ADMIN_READ",
        request: Some(json!({"name": resource})),
    }
}

fn write_call<'a>(
    method: &'a str,
    resource: &'a str,
    permission: &'a str,
    request: Value,
) -> Call<'a> {
    Call {
        service: SERVICE_SECRET_MANAGER,
        method,
        resource,
        permission,
        permission_type: "ADMIN_WRITE",
        request: Some(request),
    }
}

/// proto3 JSON writes int64 as strings.
fn aliases_json(aliases: &BTreeMap<String, u64>) -> BTreeMap<String, String> {
    aliases
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// The Secret resource as Secret Manager's notifications carry it.
fn secret_json(s: &Secret) -> Value {
    let mut v = json!({
        "name": secret_name(&s.id),
        "replication": {"automatic": {}},
        "createTime": ts(s.create_time),
        "etag": s.etag,
        "topics": [{"name": format!("projects/{PROJECT}/topics/{}", names::TOPIC_SECRET_EVENTS)}],
    });
    if !s.aliases.is_empty() {
        v["versionAliases"] = json!(aliases_json(&s.aliases));
    }
    if !s.annotations.is_empty() {
        v["annotations"] = json!(s.annotations);
    }
    v
}

/// The SecretVersion resource as Secret Manager's notifications carry it
/// (metadata only, never the payload).
fn version_json(v: &SecretVersion) -> Value {
    let mut j = json!({
        "name": version_name(&v.secret, v.number),
        "createTime": ts(v.create_time),
        "state": v.state.api_name(),
        "replicationStatus": {"automatic": {}},
    });
    if let Some(d) = v.destroy_time {
        j["destroyTime"] = json!(ts(d));
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemorySecretStore, RecordingBus};

    #[tokio::test]
    async fn any_store_gets_audit_entries_and_notifications() {
        let bus = Arc::new(RecordingBus::new());
        let store = Audited::with_bus(
            MemorySecretStore::new(),
            names::PRINCIPAL_OPERATOR_DEFAULT,
            Some(bus.clone() as Arc<dyn Bus>),
        );
        store.create_secret("s").await.unwrap();
        store.add_version("s", b"v").await.unwrap();
        store.set_state("s", 1, StateChange::Disable).await.unwrap();
        // A failed access names the version it resolved to.
        assert!(store.access("s", &VersionRef::Latest).await.is_err());
        let entries = bus.audit_entries();
        let access = entries.last().unwrap().proto_payload.as_ref().unwrap();
        assert_eq!(access.method_name, sm::ACCESS_SECRET_VERSION);
        assert_eq!(access.resource_name, "projects/local/secrets/s/versions/1");
        assert_eq!(
            access.request.as_ref().unwrap()["name"],
            "projects/local/secrets/s/versions/latest"
        );
        let events: Vec<String> = bus
            .on(names::TOPIC_SECRET_EVENTS)
            .iter()
            .map(|m| m.attributes["eventType"].clone())
            .collect();
        assert_eq!(
            events,
            [
                "SECRET_CREATE",
                "SECRET_VERSION_ADD",
                "SECRET_VERSION_DISABLE"
            ]
        );
    }
}
