//! What the local store tells others: Cloud Audit Logs entries in Secret
//! Manager's shape and event notifications, and that a failing bus fails
//! none of the store's own work.

use super::*;

#[tokio::test]
async fn audit_entries_and_event_notifications() {
    let f = fixture();
    let s = &f.store;
    s.create_secret(ID).await.unwrap();
    s.add_version(ID, b"v1").await.unwrap();
    s.add_version(ID, b"v2").await.unwrap();
    let secret = s.get_secret(ID).await.unwrap();
    s.update_secret(
        ID,
        SecretUpdate {
            aliases: Some(BTreeMap::from([("current".to_string(), 2)])),
            annotations: None,
        },
        Some(&secret.etag),
    )
    .await
    .unwrap();
    s.access(ID, &VersionRef::alias("current")).await.unwrap();
    s.set_state(ID, 1, StateChange::Disable).await.unwrap();
    assert!(s.access(ID, &VersionRef::Number(1)).await.is_err());
    s.set_state(ID, 1, StateChange::Enable).await.unwrap();
    s.set_state(ID, 1, StateChange::Destroy).await.unwrap();
    s.list_versions(ID).await.unwrap();
    s.get_version(ID, &VersionRef::Latest).await.unwrap();
    s.list_secrets().await.unwrap();
    s.delete_secret(ID).await.unwrap();

    let entries = f.bus.inner().audit_entries();
    let seen: Vec<(String, String, String, i32)> = entries
        .iter()
        .map(|e| {
            let p = e.proto_payload.as_ref().unwrap();
            let a = &p.authorization_info[0];
            (
                p.method_name.clone(),
                p.resource_name.clone(),
                format!("{} {}", a.permission, a.permission_type.clone().unwrap()),
                p.status.as_ref().unwrap().code,
            )
        })
        .collect();
    let sec = format!("projects/local/secrets/{ID}");
    let ver = |n: u64| format!("{sec}/versions/{n}");
    let expected: Vec<(&str, String, &str, i32)> = vec![
        (
            sm::CREATE_SECRET,
            sec.clone(),
            "secretmanager.secrets.create ADMIN_WRITE",
            0,
        ),
        (
            sm::ADD_SECRET_VERSION,
            sec.clone(),
            "secretmanager.versions.add ADMIN_WRITE",
            0,
        ),
        (
            sm::ADD_SECRET_VERSION,
            sec.clone(),
            "secretmanager.versions.add ADMIN_WRITE",
            0,
        ),
        (
            sm::GET_SECRET,
            sec.clone(),
            "secretmanager.secrets.get ADMIN_READ",
            0,
        ),
        (
            sm::UPDATE_SECRET,
            sec.clone(),
            "secretmanager.secrets.update ADMIN_WRITE",
            0,
        ),
        (
            sm::ACCESS_SECRET_VERSION,
            ver(2),
            "secretmanager.versions.access DATA_READ",
            0,
        ),
        (
            sm::DISABLE_SECRET_VERSION,
            ver(1),
            "secretmanager.versions.disable ADMIN_WRITE",
            0,
        ),
        (
            sm::ACCESS_SECRET_VERSION,
            ver(1),
            "secretmanager.versions.access DATA_READ",
            9,
        ),
        (
            sm::ENABLE_SECRET_VERSION,
            ver(1),
            "secretmanager.versions.enable ADMIN_WRITE",
            0,
        ),
        (
            sm::DESTROY_SECRET_VERSION,
            ver(1),
            "secretmanager.versions.destroy ADMIN_WRITE",
            0,
        ),
        (
            sm::LIST_SECRET_VERSIONS,
            sec.clone(),
            "secretmanager.versions.list ADMIN_READ",
            0,
        ),
        (
            sm::GET_SECRET_VERSION,
            ver(2),
            "secretmanager.versions.get ADMIN_READ",
            0,
        ),
        (
            sm::LIST_SECRETS,
            "projects/local".to_string(),
            "secretmanager.secrets.list ADMIN_READ",
            0,
        ),
        (
            sm::DELETE_SECRET,
            sec.clone(),
            "secretmanager.secrets.delete ADMIN_WRITE",
            0,
        ),
    ];
    let expected: Vec<(String, String, String, i32)> = expected
        .into_iter()
        .map(|(m, r, p, c)| (m.to_string(), r, p.to_string(), c))
        .collect();
    assert_eq!(seen, expected);
    let access = &entries[5];
    assert!(access.is_data_access());
    assert_eq!(access.principal(), Some(names::PRINCIPAL_OPERATOR_DEFAULT));
    assert_eq!(
        access
            .proto_payload
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()["name"],
        format!("{sec}/versions/current")
    );
    let failed = entries[7]
        .proto_payload
        .as_ref()
        .unwrap()
        .status
        .clone()
        .unwrap();
    assert_eq!(failed.message.as_deref(), Some("FAILED_PRECONDITION"));
    assert!(!entries[0].is_data_access());

    let events = f.bus.inner().on(names::TOPIC_SECRET_EVENTS);
    let types: Vec<&str> = events
        .iter()
        .map(|m| m.attributes["eventType"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "SECRET_CREATE",
            "SECRET_VERSION_ADD",
            "SECRET_VERSION_ADD",
            "SECRET_UPDATE",
            "SECRET_VERSION_DISABLE",
            "SECRET_VERSION_ENABLE",
            "SECRET_VERSION_DESTROY",
            "SECRET_DELETE",
        ]
    );
    for m in &events {
        assert_eq!(m.attributes["secretId"], sec);
        assert_eq!(m.attributes["dataFormat"], "JSON_API_V1");
        assert!(DateTime::parse_from_rfc3339(&m.attributes["timestamp"]).is_ok());
        let is_version = m.attributes["eventType"].starts_with("SECRET_VERSION_");
        assert_eq!(m.attributes.contains_key("versionId"), is_version);
    }
    assert_eq!(events[2].attributes["versionId"], ver(2));
    let add: Value = serde_json::from_slice(&events[2].data).unwrap();
    assert_eq!(add["name"], ver(2));
    assert_eq!(add["state"], "ENABLED");
    let update: Value = serde_json::from_slice(&events[3].data).unwrap();
    assert_eq!(update["name"], sec);
    assert_eq!(update["versionAliases"]["current"], "2");
    let destroy: Value = serde_json::from_slice(&events[6].data).unwrap();
    assert_eq!(destroy["state"], "DESTROYED");
    assert!(destroy["destroyTime"].is_string());
    assert_eq!(events[7].attributes["deleteType"], "REQUESTED");
}

#[tokio::test]
async fn a_failing_bus_fails_nothing() {
    let f = fixture();
    f.bus
        .fail_always(Call::Publish, Error::Unavailable("test bus is down".into()));
    let s = &f.store;
    s.create_secret(ID).await.unwrap();
    s.add_version(ID, b"kept").await.unwrap();
    assert_eq!(value(s, VersionRef::Latest).await.unwrap(), b"kept");
    assert!(f.bus.inner().is_empty());
    assert!(f.bus.calls(Call::Publish) > 0, "it was asked");
}
