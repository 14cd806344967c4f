//! GcpSecretStore against a recording stub: the exact requests it sends, and
//! what it makes of canned answers.

use std::sync::{Arc, Mutex};

use google_cloud_gax::error::rpc::{Code, Status};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;
use google_cloud_iam_v1::model as iam;
use google_cloud_secretmanager_v1::model;
use google_cloud_secretmanager_v1::model::secret_version::State;
use google_cloud_wkt::Timestamp;

use super::*;

type GResult<T> = google_cloud_secretmanager_v1::Result<Response<T>>;

const SECRET: &str = "projects/p1/secrets/patchpanda-webhook-secret";

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Create(model::CreateSecretRequest),
    Get(model::GetSecretRequest),
    Update(model::UpdateSecretRequest),
    Delete(model::DeleteSecretRequest),
    List(model::ListSecretsRequest),
    Add(model::AddSecretVersionRequest),
    GetVersion(model::GetSecretVersionRequest),
    Access(model::AccessSecretVersionRequest),
    ListVersions(model::ListSecretVersionsRequest),
    Enable(model::EnableSecretVersionRequest),
    Disable(model::DisableSecretVersionRequest),
    Destroy(model::DestroySecretVersionRequest),
    TestIam(iam::TestIamPermissionsRequest),
}

/// Canned answers; `fail` makes every call fail with that code.
#[derive(Debug, Default)]
struct Canned {
    calls: Vec<Call>,
    secret: Option<model::Secret>,
    version: Option<model::SecretVersion>,
    access: Option<model::AccessSecretVersionResponse>,
    version_pages: Vec<model::ListSecretVersionsResponse>,
    secret_pages: Vec<model::ListSecretsResponse>,
    fail: Option<Code>,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<Canned>>);

impl Fake {
    fn with(f: impl FnOnce(&mut Canned)) -> Self {
        let fake = Fake::default();
        f(&mut fake.0.lock().unwrap());
        fake
    }

    fn only_call(&self) -> Call {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        calls.into_iter().next().unwrap()
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    fn answer<T>(&self, call: Call, pick: impl FnOnce(&mut Canned) -> Option<T>) -> GResult<T> {
        let mut c = self.0.lock().unwrap();
        c.calls.push(call);
        if let Some(code) = c.fail {
            return Err(google_cloud_gax::error::Error::service(
                Status::default()
                    .set_code(code)
                    .set_message("canned failure"),
            ));
        }
        Ok(Response::from(
            pick(&mut c).expect("test set no canned answer for this call"),
        ))
    }
}

impl google_cloud_secretmanager_v1::stub::SecretManagerService for Fake {
    async fn create_secret(
        &self,
        req: model::CreateSecretRequest,
        _: RequestOptions,
    ) -> GResult<model::Secret> {
        self.answer(Call::Create(req), |c| c.secret.clone())
    }
    async fn get_secret(
        &self,
        req: model::GetSecretRequest,
        _: RequestOptions,
    ) -> GResult<model::Secret> {
        self.answer(Call::Get(req), |c| c.secret.clone())
    }
    async fn update_secret(
        &self,
        req: model::UpdateSecretRequest,
        _: RequestOptions,
    ) -> GResult<model::Secret> {
        self.answer(Call::Update(req), |c| c.secret.clone())
    }
    async fn delete_secret(
        &self,
        req: model::DeleteSecretRequest,
        _: RequestOptions,
    ) -> GResult<()> {
        self.answer(Call::Delete(req), |_| Some(()))
    }
    async fn list_secrets(
        &self,
        req: model::ListSecretsRequest,
        _: RequestOptions,
    ) -> GResult<model::ListSecretsResponse> {
        self.answer(Call::List(req), |c| {
            (!c.secret_pages.is_empty()).then(|| c.secret_pages.remove(0))
        })
    }
    async fn add_secret_version(
        &self,
        req: model::AddSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.answer(Call::Add(req), |c| c.version.clone())
    }
    async fn get_secret_version(
        &self,
        req: model::GetSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.answer(Call::GetVersion(req), |c| c.version.clone())
    }
    async fn access_secret_version(
        &self,
        req: model::AccessSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::AccessSecretVersionResponse> {
        self.answer(Call::Access(req), |c| c.access.clone())
    }
    async fn list_secret_versions(
        &self,
        req: model::ListSecretVersionsRequest,
        _: RequestOptions,
    ) -> GResult<model::ListSecretVersionsResponse> {
        self.answer(Call::ListVersions(req), |c| {
            (!c.version_pages.is_empty()).then(|| c.version_pages.remove(0))
        })
    }
    async fn enable_secret_version(
        &self,
        req: model::EnableSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.answer(Call::Enable(req), |c| c.version.clone())
    }
    async fn disable_secret_version(
        &self,
        req: model::DisableSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.answer(Call::Disable(req), |c| c.version.clone())
    }
    async fn destroy_secret_version(
        &self,
        req: model::DestroySecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.answer(Call::Destroy(req), |c| c.version.clone())
    }
    async fn test_iam_permissions(
        &self,
        req: iam::TestIamPermissionsRequest,
        _: RequestOptions,
    ) -> GResult<iam::TestIamPermissionsResponse> {
        let granted: Vec<String> = req
            .permissions
            .iter()
            .filter(|p| p.ends_with(".access"))
            .cloned()
            .collect();
        self.answer(Call::TestIam(req), |_| {
            Some(iam::TestIamPermissionsResponse::new().set_permissions(granted))
        })
    }
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::new(secs, 0).unwrap()
}

fn secret_model() -> model::Secret {
    model::Secret::new()
        // The service answers with the project number, not the id.
        .set_name("projects/123456/secrets/patchpanda-webhook-secret")
        .set_create_time(ts(1_700_000_000))
        .set_etag("\"abc\"")
        .set_version_aliases([("current", 2i64), ("previous", 1i64)])
        .set_annotations([("patchpanda-step", "set")])
        .set_rotation(
            model::Rotation::new()
                .set_next_rotation_time(ts(1_800_000_000))
                .set_rotation_period(google_cloud_wkt::Duration::new(86_400 * 30, 0).unwrap()),
        )
}

fn version_model(n: u64, state: State) -> model::SecretVersion {
    model::SecretVersion::new()
        .set_name(format!(
            "projects/123456/secrets/patchpanda-webhook-secret/versions/{n}"
        ))
        .set_create_time(ts(1_700_000_000 + n as i64))
        .set_state(state)
        .set_client_specified_payload_checksum(true)
}

fn store(fake: &Fake) -> GcpSecretStore {
    GcpSecretStore::from_stub("p1", fake.clone())
}

#[tokio::test]
async fn create_secret_asks_for_automatic_replication() {
    let fake = Fake::with(|c| c.secret = Some(secret_model()));
    let s = store(&fake)
        .create_secret("patchpanda-webhook-secret")
        .await
        .unwrap();
    let Call::Create(req) = fake.only_call() else {
        panic!("{:?}", fake.calls())
    };
    assert_eq!(req.parent, "projects/p1");
    assert_eq!(req.secret_id, "patchpanda-webhook-secret");
    let sent = req.secret.unwrap();
    assert!(sent.replication.unwrap().automatic().is_some());
    assert!(sent.customer_managed_encryption.is_none());
    assert_eq!(s.id, "patchpanda-webhook-secret");
}

#[tokio::test]
async fn secrets_map_aliases_annotations_etag_and_rotation() {
    let fake = Fake::with(|c| c.secret = Some(secret_model()));
    let s = store(&fake)
        .get_secret("patchpanda-webhook-secret")
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![Call::Get(model::GetSecretRequest::new().set_name(SECRET))]
    );
    assert_eq!(s.aliases.get("current"), Some(&2));
    assert_eq!(s.aliases.get("previous"), Some(&1));
    assert_eq!(
        s.annotations.get("patchpanda-step").map(String::as_str),
        Some("set")
    );
    assert_eq!(s.etag, "\"abc\"");
    assert_eq!(s.create_time.timestamp(), 1_700_000_000);
    assert_eq!(
        s.next_rotation_time.map(|t| t.timestamp()),
        Some(1_800_000_000)
    );
    assert_eq!(
        s.rotation_period,
        Some(std::time::Duration::from_secs(86_400 * 30))
    );
}

#[tokio::test]
async fn add_version_sends_the_payload_with_its_crc32c() {
    let fake = Fake::with(|c| c.version = Some(version_model(3, State::Enabled)));
    let data = b"0123456789abcdef";
    let v = store(&fake)
        .add_version("patchpanda-webhook-secret", data)
        .await
        .unwrap();
    let Call::Add(req) = fake.only_call() else {
        panic!("{:?}", fake.calls())
    };
    assert_eq!(req.parent, SECRET);
    let payload = req.payload.unwrap();
    assert_eq!(&payload.data[..], data);
    assert_eq!(payload.data_crc32c, Some(i64::from(crc32c::crc32c(data))));
    assert_eq!(
        (v.secret.as_str(), v.number),
        ("patchpanda-webhook-secret", 3)
    );
    assert_eq!(v.state, VersionState::Enabled);
}

#[tokio::test]
async fn add_version_rejects_an_unconfirmed_checksum() {
    let fake = Fake::with(|c| {
        c.version =
            Some(version_model(3, State::Enabled).set_client_specified_payload_checksum(false))
    });
    let err = store(&fake)
        .add_version("patchpanda-webhook-secret", b"hunter2")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DataLoss(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn add_version_rejects_oversized_payloads_without_calling() {
    let fake = Fake::default();
    let err = store(&fake)
        .add_version("patchpanda-webhook-secret", &vec![0u8; 64 * 1024 + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(fake.calls().is_empty());
}

fn access_response(n: u64, data: &[u8], crc: Option<i64>) -> model::AccessSecretVersionResponse {
    model::AccessSecretVersionResponse::new()
        .set_name(format!(
            "projects/123456/secrets/patchpanda-webhook-secret/versions/{n}"
        ))
        .set_payload(
            model::SecretPayload::new()
                .set_data(bytes::Bytes::copy_from_slice(data))
                .set_or_clear_data_crc32c(crc),
        )
}

#[tokio::test]
async fn access_by_alias_verifies_the_checksum_and_reads_metadata_once() {
    let data = b"s3cr3t-value";
    let fake = Fake::with(|c| {
        c.access = Some(access_response(
            2,
            data,
            Some(i64::from(crc32c::crc32c(data))),
        ));
        c.version = Some(version_model(2, State::Enabled));
    });
    let store = store(&fake);
    let a = store
        .access("patchpanda-webhook-secret", &VersionRef::alias("current"))
        .await
        .unwrap();
    assert_eq!(a.value.expose(), data);
    assert_eq!(a.version.number, 2);
    assert_eq!(a.version.state, VersionState::Enabled);
    assert_eq!(a.version.create_time.timestamp(), 1_700_000_002);
    store
        .access("patchpanda-webhook-secret", &VersionRef::Latest)
        .await
        .unwrap();
    store
        .access("patchpanda-webhook-secret", &VersionRef::Number(2))
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::Access(
                model::AccessSecretVersionRequest::new()
                    .set_name(format!("{SECRET}/versions/current"))
            ),
            Call::GetVersion(
                model::GetSecretVersionRequest::new().set_name(format!("{SECRET}/versions/2"))
            ),
            Call::Access(
                model::AccessSecretVersionRequest::new()
                    .set_name(format!("{SECRET}/versions/latest"))
            ),
            Call::Access(
                model::AccessSecretVersionRequest::new().set_name(format!("{SECRET}/versions/2"))
            ),
        ]
    );
}

#[tokio::test]
async fn access_with_a_wrong_checksum_is_data_loss() {
    let fake = Fake::with(|c| {
        c.access = Some(access_response(
            2,
            b"hunter2",
            Some(i64::from(crc32c::crc32c(b"hunter3"))),
        ));
        c.version = Some(version_model(2, State::Enabled));
    });
    let err = store(&fake)
        .access("patchpanda-webhook-secret", &VersionRef::Number(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DataLoss(_)), "{err:?}");
    assert!(err.to_string().contains("versions/2"), "{err}");
    assert!(!err.to_string().contains("hunter"), "{err}");
}

#[tokio::test]
async fn access_without_a_payload_is_data_loss() {
    let fake = Fake::with(|c| {
        c.access = Some(
            model::AccessSecretVersionResponse::new()
                .set_name("projects/1/secrets/patchpanda-webhook-secret/versions/2"),
        )
    });
    let err = store(&fake)
        .access("patchpanda-webhook-secret", &VersionRef::Number(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DataLoss(_)), "{err:?}");
}

#[tokio::test]
async fn update_masks_exactly_the_fields_given_and_sends_the_etag() {
    let fake = Fake::with(|c| c.secret = Some(secret_model()));
    let store = store(&fake);
    let aliases = BTreeMap::from([("current".to_string(), 3u64), ("previous".to_string(), 2)]);
    store
        .update_secret(
            "patchpanda-webhook-secret",
            SecretUpdate {
                aliases: Some(aliases),
                annotations: None,
            },
            Some("\"abc\""),
        )
        .await
        .unwrap();
    store
        .update_secret(
            "patchpanda-webhook-secret",
            SecretUpdate {
                aliases: None,
                annotations: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
            },
            None,
        )
        .await
        .unwrap();
    let calls = fake.calls();
    let [Call::Update(first), Call::Update(second)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!(
        first.update_mask.as_ref().unwrap().paths,
        vec!["version_aliases".to_string()]
    );
    let sent = first.secret.as_ref().unwrap();
    assert_eq!(sent.name, SECRET);
    assert_eq!(sent.etag, "\"abc\"");
    assert_eq!(sent.version_aliases.get("current"), Some(&3));
    assert_eq!(sent.version_aliases.get("previous"), Some(&2));
    assert!(sent.annotations.is_empty());

    assert_eq!(
        second.update_mask.as_ref().unwrap().paths,
        vec!["annotations".to_string()]
    );
    let sent = second.secret.as_ref().unwrap();
    assert_eq!(sent.etag, "");
    assert_eq!(sent.annotations.get("k").map(String::as_str), Some("v"));
}

#[tokio::test]
async fn an_empty_update_is_refused_without_calling() {
    let fake = Fake::default();
    let err = store(&fake)
        .update_secret("patchpanda-webhook-secret", SecretUpdate::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn list_versions_follows_every_page_and_sorts_newest_first() {
    let fake = Fake::with(|c| {
        c.version_pages = vec![
            model::ListSecretVersionsResponse::new()
                .set_versions([
                    version_model(1, State::Destroyed),
                    version_model(3, State::Enabled),
                ])
                .set_next_page_token("page-2"),
            model::ListSecretVersionsResponse::new()
                .set_versions([version_model(2, State::Disabled)]),
        ]
    });
    let versions = store(&fake)
        .list_versions("patchpanda-webhook-secret")
        .await
        .unwrap();
    let numbers: Vec<_> = versions.iter().map(|v| (v.number, v.state)).collect();
    assert_eq!(
        numbers,
        vec![
            (3, VersionState::Enabled),
            (2, VersionState::Disabled),
            (1, VersionState::Destroyed)
        ]
    );
    let calls = fake.calls();
    let [Call::ListVersions(p1), Call::ListVersions(p2)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!((p1.parent.as_str(), p1.page_token.as_str()), (SECRET, ""));
    assert_eq!(
        (p2.parent.as_str(), p2.page_token.as_str()),
        (SECRET, "page-2")
    );
}

#[tokio::test]
async fn list_secrets_follows_every_page() {
    let other = model::Secret::new()
        .set_name("projects/123456/secrets/patchpanda-github-private-key")
        .set_create_time(ts(1));
    let fake = Fake::with(|c| {
        c.secret_pages = vec![
            model::ListSecretsResponse::new()
                .set_secrets([secret_model()])
                .set_next_page_token("t"),
            model::ListSecretsResponse::new().set_secrets([other]),
        ]
    });
    let ids: Vec<_> = store(&fake)
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        ids,
        vec!["patchpanda-github-private-key", "patchpanda-webhook-secret"]
    );
    assert!(
        matches!(fake.calls().as_slice(), [Call::List(a), Call::List(b)] if a.parent == "projects/p1" && b.page_token == "t")
    );
}

#[tokio::test]
async fn state_changes_call_the_matching_rpc_without_an_etag() {
    let fake = Fake::with(|c| c.version = Some(version_model(2, State::Disabled)));
    let store = store(&fake);
    for change in [
        StateChange::Enable,
        StateChange::Disable,
        StateChange::Destroy,
    ] {
        store
            .set_state("patchpanda-webhook-secret", 2, change)
            .await
            .unwrap();
    }
    let name = format!("{SECRET}/versions/2");
    assert_eq!(
        fake.calls(),
        vec![
            Call::Enable(model::EnableSecretVersionRequest::new().set_name(name.clone())),
            Call::Disable(model::DisableSecretVersionRequest::new().set_name(name.clone())),
            Call::Destroy(model::DestroySecretVersionRequest::new().set_name(name)),
        ]
    );
}

#[tokio::test]
async fn service_errors_map_to_canonical_codes_naming_the_resource() {
    let cases = [
        (Code::NotFound, "not found"),
        (Code::FailedPrecondition, "failed precondition"),
        (Code::Aborted, "aborted"),
        (Code::PermissionDenied, "permission denied"),
        (Code::Unavailable, "unavailable"),
    ];
    for (code, prefix) in cases {
        let fake = Fake::with(|c| c.fail = Some(code));
        let err = store(&fake)
            .access("patchpanda-webhook-secret", &VersionRef::Number(7))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(prefix), "{code:?}: {text}");
        assert!(text.contains(&format!("{SECRET}/versions/7")), "{text}");
    }
}

#[tokio::test]
async fn bad_ids_and_versions_are_refused_before_any_call() {
    let fake = Fake::default();
    let store = store(&fake);
    for id in ["", "a/b", "sp ace", &"x".repeat(256)] {
        let err = store.get_secret(id).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{id:?}: {err:?}");
    }
    for v in [VersionRef::Number(0), VersionRef::Alias("../x".into())] {
        let err = store.access("s", &v).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{v:?}: {err:?}");
    }
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn unknown_version_states_are_internal_errors() {
    let fake = Fake::with(|c| c.version = Some(version_model(1, State::Unspecified)));
    let err = store(&fake)
        .get_version("patchpanda-webhook-secret", &VersionRef::Number(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
}

#[tokio::test]
async fn test_permissions_returns_the_granted_subset() {
    let fake = Fake::default();
    let granted = store(&fake)
        .test_permissions(
            "patchpanda-webhook-secret",
            &[
                "secretmanager.versions.access",
                "secretmanager.versions.add",
            ],
        )
        .await
        .unwrap();
    assert_eq!(granted, vec!["secretmanager.versions.access".to_string()]);
    let Call::TestIam(req) = fake.only_call() else {
        panic!()
    };
    assert_eq!(req.resource, SECRET);
    assert_eq!(req.permissions.len(), 2);
}

#[tokio::test]
async fn delete_secret_names_the_secret() {
    let fake = Fake::default();
    store(&fake)
        .delete_secret("patchpanda-webhook-secret")
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![Call::Delete(
            model::DeleteSecretRequest::new().set_name(SECRET)
        )]
    );
}

#[tokio::test]
async fn deleting_a_secret_forgets_its_version_metadata() {
    let data = b"v";
    let fake = Fake::with(|c| {
        c.access = Some(access_response(
            1,
            data,
            Some(i64::from(crc32c::crc32c(data))),
        ));
        c.version = Some(version_model(1, State::Enabled));
    });
    let store = store(&fake);
    let id = "patchpanda-webhook-secret";
    store.access(id, &VersionRef::Number(1)).await.unwrap();
    store.delete_secret(id).await.unwrap();
    // A secret recreated under the same id has a new version 1.
    store.access(id, &VersionRef::Number(1)).await.unwrap();
    let reads = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::GetVersion(_)))
        .count();
    assert_eq!(reads, 2);
}
