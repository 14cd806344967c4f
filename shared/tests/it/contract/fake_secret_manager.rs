//! An in-memory Secret Manager behind the client library's stub trait: a
//! small emulation of the server's documented semantics, so GcpSecretStore
//! can run the same contract suite as the local store.
//!
//! What it follows (resources.proto / service.proto, and errors as the
//! service reports them):
//! - version numbers start at 1 per secret and are never reused;
//! - `latest` is the most recently created version, whatever its state, so
//!   accessing it fails FAILED_PRECONDITION when that version is disabled;
//! - only ENABLED versions can be accessed; DESTROYED is terminal (enable,
//!   disable and destroy of it fail FAILED_PRECONDITION) and drops the data;
//! - an empty payload is INVALID_ARGUMENT ("Secret Payload cannot be empty."),
//!   so is one over 64 KiB, or one whose `data_crc32c` does not match;
//! - the stored CRC32C comes back with every access;
//! - UpdateSecret changes only the fields in `update_mask`; every update
//!   makes a new etag, even one that changes nothing;
//! - a non-empty etag that is not the resource's current one fails
//!   FAILED_PRECONDITION, on UpdateSecret, DeleteSecret and
//!   Enable/Disable/DestroySecretVersion alike
//!   (https://cloud.google.com/secret-manager/docs/etags); secrets and
//!   versions have etags of their own, and changing one leaves the other's;
//! - alias names: 1-63 of `[A-Za-z0-9_-]`, a letter first, not `latest` or
//!   `new` in any case; at most 50; annotations keys 1-63, total under 16 KiB;
//! - names in answers carry the project number, as the service's do;
//! - lists come in pages (of 2 here, to exercise paging), versions newest
//!   first.
//!
//! Assumed, not documented (the local store makes the same choice): an
//! alias must name an existing version (INVALID_ARGUMENT) that is not
//! destroyed (FAILED_PRECONDITION), and a version with an alias cannot be
//! destroyed (FAILED_PRECONDITION). The contract suite does not rely on these.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, Status};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;
use google_cloud_secretmanager_v1::model;
use google_cloud_secretmanager_v1::model::secret_version::State;
use google_cloud_wkt::Timestamp;

type GResult<T> = google_cloud_secretmanager_v1::Result<Response<T>>;

const PAGE_SIZE: usize = 2;
const PROJECT_NUMBER: &str = "123456789012";

#[derive(Debug)]
struct FakeVersion {
    state: State,
    create_time: Timestamp,
    destroy_time: Option<Timestamp>,
    data: Option<bytes::Bytes>,
    crc32c: i64,
    client_crc: bool,
    etag: String,
}

#[derive(Debug)]
struct FakeSecret {
    create_time: Timestamp,
    aliases: HashMap<String, i64>,
    annotations: HashMap<String, String>,
    etag: String,
    versions: BTreeMap<i64, FakeVersion>,
    next_version: i64,
}

#[derive(Debug, Default)]
struct World {
    secrets: BTreeMap<String, FakeSecret>,
    /// Creation order, for listing in an order the client must not rely on.
    order: Vec<String>,
    /// A logical clock, so create times strictly increase.
    clock: i64,
}

/// The fake service. Clones share one world.
#[derive(Debug, Clone)]
pub struct FakeSecretManager {
    project: String,
    world: Arc<Mutex<World>>,
}

impl FakeSecretManager {
    pub fn new(project: &str) -> Self {
        Self {
            project: project.to_string(),
            world: Arc::new(Mutex::new(World {
                clock: 1_750_000_000,
                ..Default::default()
            })),
        }
    }

    /// Corrupts the stored data of one version without touching its stored
    /// checksum, as a storage fault would.
    pub fn corrupt(&self, id: &str, number: i64) {
        let mut w = self.world.lock().unwrap();
        if let Some(v) = w
            .secrets
            .get_mut(id)
            .and_then(|s| s.versions.get_mut(&number))
            && let Some(d) = &v.data
        {
            let mut bytes = d.to_vec();
            bytes.push(b'!');
            v.data = Some(bytes.into());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        // A failed assertion elsewhere must not hide behind a poisoned lock.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The secret id of `projects/{id or number}/secrets/{id}`.
    fn secret_id(&self, name: &str) -> Result<String, GaxError> {
        match name.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", p, "secrets", id] => {
                self.check_project(p)?;
                Ok(id.to_string())
            }
            _ => Err(invalid(&format!("malformed secret name {name:?}"))),
        }
    }

    fn version_ref<'a>(&self, name: &'a str) -> Result<(String, &'a str), GaxError> {
        match name.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", p, "secrets", id, "versions", v] if !v.is_empty() => {
                self.check_project(p)?;
                Ok((id.to_string(), v))
            }
            _ => Err(invalid(&format!("malformed version name {name:?}"))),
        }
    }

    fn check_project(&self, p: &str) -> Result<(), GaxError> {
        if p == self.project || p == PROJECT_NUMBER {
            Ok(())
        } else {
            Err(status(
                Code::PermissionDenied,
                &format!("Permission denied on project {p}"),
            ))
        }
    }

    fn secret_name(id: &str) -> String {
        format!("projects/{PROJECT_NUMBER}/secrets/{id}")
    }

    fn version_name(id: &str, n: i64) -> String {
        format!("{}/versions/{n}", Self::secret_name(id))
    }

    fn secret_model(id: &str, s: &FakeSecret) -> model::Secret {
        model::Secret::new()
            .set_name(Self::secret_name(id))
            .set_replication(
                model::Replication::new().set_automatic(model::replication::Automatic::default()),
            )
            .set_create_time(s.create_time)
            .set_etag(s.etag.clone())
            .set_version_aliases(s.aliases.clone())
            .set_annotations(s.annotations.clone())
    }

    fn version_model(id: &str, n: i64, v: &FakeVersion) -> model::SecretVersion {
        model::SecretVersion::new()
            .set_name(Self::version_name(id, n))
            .set_create_time(v.create_time)
            .set_or_clear_destroy_time(v.destroy_time)
            .set_state(v.state.clone())
            .set_etag(v.etag.clone())
            .set_client_specified_payload_checksum(v.client_crc)
    }

    /// Resolves a version segment (number, alias or `latest`) to a number.
    fn resolve(id: &str, s: &FakeSecret, v: &str) -> Result<i64, GaxError> {
        let missing = || {
            status(
                Code::NotFound,
                &format!(
                    "Secret Version [{}/versions/{v}] not found.",
                    Self::secret_name(id)
                ),
            )
        };
        if v == "latest" {
            return s.versions.keys().next_back().copied().ok_or_else(missing);
        }
        if let Ok(n) = v.parse::<i64>() {
            if n < 1 {
                return Err(invalid(&format!("invalid version {v:?}")));
            }
            return s.versions.contains_key(&n).then_some(n).ok_or_else(missing);
        }
        s.aliases
            .get(v)
            .copied()
            .filter(|n| s.versions.contains_key(n))
            .ok_or_else(missing)
    }

    fn change_state(&self, name: &str, etag: &str, to: State) -> GResult<model::SecretVersion> {
        let (id, v) = self.version_ref(name)?;
        let mut w = self.lock();
        let w = &mut *w;
        w.clock += 1;
        let now = ts(w.clock);
        let s = w
            .secrets
            .get_mut(&id)
            .ok_or_else(|| secret_not_found(&id))?;
        let n = Self::resolve(&id, s, v)?;
        let aliased: Vec<String> = s
            .aliases
            .iter()
            .filter(|&(_, &m)| m == n)
            .map(|(a, _)| a.clone())
            .collect();
        let version = s
            .versions
            .get_mut(&n)
            .ok_or_else(|| secret_not_found(&id))?;
        if !etag.is_empty() && etag != version.etag {
            return Err(etag_mismatch(&Self::version_name(&id, n)));
        }
        if version.state == State::Destroyed {
            return Err(status(
                Code::FailedPrecondition,
                &format!(
                    "Secret Version [{}] is in DESTROYED state.",
                    Self::version_name(&id, n)
                ),
            ));
        }
        if to == State::Destroyed {
            if !aliased.is_empty() {
                return Err(status(
                    Code::FailedPrecondition,
                    &format!(
                        "Secret Version [{}] has aliases {aliased:?}",
                        Self::version_name(&id, n)
                    ),
                ));
            }
            version.data = None;
            version.destroy_time = Some(now);
        }
        version.state = to;
        // Every change makes a new etag, a no-op one too.
        version.etag = new_etag();
        Ok(Response::from(Self::version_model(&id, n, version)))
    }
}

fn status(code: Code, message: &str) -> GaxError {
    GaxError::service(Status::default().set_code(code).set_message(message))
}

/// A stale etag, as the service answers it.
fn etag_mismatch(name: &str) -> GaxError {
    status(
        Code::FailedPrecondition,
        &format!("The etag provided does not match the current etag of [{name}]."),
    )
}

fn invalid(message: &str) -> GaxError {
    status(Code::InvalidArgument, message)
}

fn secret_not_found(id: &str) -> GaxError {
    status(
        Code::NotFound,
        &format!("Secret [{}] not found.", FakeSecretManager::secret_name(id)),
    )
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::clamp(secs, 0)
}

fn new_etag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0x5f0c_a11e_0000);
    format!("\"{:x}\"", NEXT.fetch_add(0x1f3, Ordering::Relaxed))
}

fn valid_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_alias(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 63
        && a.starts_with(|c: char| c.is_ascii_alphabetic())
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !a.eq_ignore_ascii_case("latest")
        && !a.eq_ignore_ascii_case("new")
}

fn valid_annotation_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The page of `items` a page token selects, and the next token.
fn page<T>(items: Vec<T>, token: &str) -> Result<(Vec<T>, String), GaxError> {
    let start: usize = if token.is_empty() {
        0
    } else {
        token
            .parse()
            .map_err(|_| invalid(&format!("invalid page token {token:?}")))?
    };
    let end = (start + PAGE_SIZE).min(items.len());
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((
        items
            .into_iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect(),
        next,
    ))
}

impl google_cloud_secretmanager_v1::stub::SecretManagerService for FakeSecretManager {
    async fn create_secret(
        &self,
        req: model::CreateSecretRequest,
        _: RequestOptions,
    ) -> GResult<model::Secret> {
        match req.parent.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", p] => self.check_project(p)?,
            _ => return Err(invalid("malformed parent")),
        }
        if !valid_secret_id(&req.secret_id) {
            return Err(invalid(&format!("invalid secret id {:?}", req.secret_id)));
        }
        let secret = req.secret.ok_or_else(|| invalid("secret is required"))?;
        if secret
            .replication
            .as_ref()
            .and_then(|r| r.replication.as_ref())
            .is_none()
        {
            return Err(invalid("Secret.replication is required"));
        }
        let mut w = self.lock();
        if w.secrets.contains_key(&req.secret_id) {
            return Err(status(
                Code::AlreadyExists,
                &format!(
                    "Secret [{}] already exists.",
                    Self::secret_name(&req.secret_id)
                ),
            ));
        }
        w.clock += 1;
        let s = FakeSecret {
            create_time: ts(w.clock),
            aliases: HashMap::new(),
            annotations: secret.annotations,
            etag: new_etag(),
            versions: BTreeMap::new(),
            next_version: 1,
        };
        let out = Self::secret_model(&req.secret_id, &s);
        w.secrets.insert(req.secret_id.clone(), s);
        w.order.push(req.secret_id);
        Ok(Response::from(out))
    }

    async fn get_secret(
        &self,
        req: model::GetSecretRequest,
        _: RequestOptions,
    ) -> GResult<model::Secret> {
        let id = self.secret_id(&req.name)?;
        let w = self.lock();
        let s = w.secrets.get(&id).ok_or_else(|| secret_not_found(&id))?;
        Ok(Response::from(Self::secret_model(&id, s)))
    }

    async fn list_secrets(
        &self,
        req: model::ListSecretsRequest,
        _: RequestOptions,
    ) -> GResult<model::ListSecretsResponse> {
        match req.parent.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", p] => self.check_project(p)?,
            _ => return Err(invalid("malformed parent")),
        }
        let w = self.lock();
        // Newest first: an order the client must not take for sorted.
        let all: Vec<model::Secret> = w
            .order
            .iter()
            .rev()
            .filter_map(|id| w.secrets.get(id).map(|s| Self::secret_model(id, s)))
            .collect();
        let total = all.len();
        let (items, next) = page(all, &req.page_token)?;
        Ok(Response::from(
            model::ListSecretsResponse::new()
                .set_secrets(items)
                .set_next_page_token(next)
                .set_total_size(total as i32),
        ))
    }

    async fn delete_secret(
        &self,
        req: model::DeleteSecretRequest,
        _: RequestOptions,
    ) -> GResult<()> {
        let id = self.secret_id(&req.name)?;
        let mut w = self.lock();
        let s = w.secrets.get(&id).ok_or_else(|| secret_not_found(&id))?;
        if !req.etag.is_empty() && req.etag != s.etag {
            return Err(etag_mismatch(&Self::secret_name(&id)));
        }
        w.secrets.remove(&id);
        w.order.retain(|o| o != &id);
        Ok(Response::from(()))
    }

    async fn update_secret(
        &self,
        req: model::UpdateSecretRequest,
        _: RequestOptions,
    ) -> GResult<model::Secret> {
        let secret = req.secret.ok_or_else(|| invalid("secret is required"))?;
        let id = self.secret_id(&secret.name)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(invalid("update_mask is required"));
        }
        let mut w = self.lock();
        let s = w
            .secrets
            .get_mut(&id)
            .ok_or_else(|| secret_not_found(&id))?;
        if !secret.etag.is_empty() && secret.etag != s.etag {
            return Err(etag_mismatch(&Self::secret_name(&id)));
        }
        // Validate everything before changing anything.
        for path in &paths {
            match path.as_str() {
                "version_aliases" => {
                    if secret.version_aliases.len() > 50 {
                        return Err(invalid("at most 50 version aliases"));
                    }
                    for (alias, n) in &secret.version_aliases {
                        if !valid_alias(alias) {
                            return Err(invalid(&format!("invalid alias {alias:?}")));
                        }
                        match s.versions.get(n) {
                            None => {
                                return Err(invalid(&format!(
                                    "alias {alias:?}: version {n} does not exist"
                                )));
                            }
                            Some(v) if v.state == State::Destroyed => {
                                return Err(status(
                                    Code::FailedPrecondition,
                                    &format!("alias {alias:?}: version {n} is destroyed"),
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                }
                "annotations" => {
                    let mut total = 0;
                    for (k, v) in &secret.annotations {
                        if !valid_annotation_key(k) {
                            return Err(invalid(&format!("invalid annotation key {k:?}")));
                        }
                        total += k.len() + v.len();
                    }
                    if total >= 16 * 1024 {
                        return Err(invalid("annotations must total under 16 KiB"));
                    }
                }
                other => return Err(invalid(&format!("unsupported update_mask path {other:?}"))),
            }
        }
        for path in &paths {
            match path.as_str() {
                "version_aliases" => s.aliases = secret.version_aliases.clone(),
                _ => s.annotations = secret.annotations.clone(),
            }
        }
        s.etag = new_etag();
        Ok(Response::from(Self::secret_model(&id, s)))
    }

    async fn add_secret_version(
        &self,
        req: model::AddSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        let id = self.secret_id(&req.parent)?;
        let payload = req.payload.ok_or_else(|| invalid("payload is required"))?;
        if payload.data.is_empty() {
            return Err(invalid("Secret Payload cannot be empty."));
        }
        if payload.data.len() > 64 * 1024 {
            return Err(invalid("Secret Payload is larger than 64 KiB."));
        }
        let crc = i64::from(crc32c::crc32c(&payload.data));
        if let Some(sent) = payload.data_crc32c
            && sent != crc
        {
            return Err(invalid(
                "Checksum mismatch: the payload was corrupted in transit.",
            ));
        }
        let mut w = self.lock();
        let w = &mut *w;
        w.clock += 1;
        let now = ts(w.clock);
        let s = w
            .secrets
            .get_mut(&id)
            .ok_or_else(|| secret_not_found(&id))?;
        let n = s.next_version;
        s.next_version += 1;
        let v = FakeVersion {
            state: State::Enabled,
            create_time: now,
            destroy_time: None,
            data: Some(payload.data),
            crc32c: crc,
            client_crc: payload.data_crc32c.is_some(),
            etag: new_etag(),
        };
        let out = Self::version_model(&id, n, &v);
        s.versions.insert(n, v);
        Ok(Response::from(out))
    }

    async fn get_secret_version(
        &self,
        req: model::GetSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        let (id, v) = self.version_ref(&req.name)?;
        let w = self.lock();
        let s = w.secrets.get(&id).ok_or_else(|| secret_not_found(&id))?;
        let n = Self::resolve(&id, s, v)?;
        let version = &s.versions[&n];
        Ok(Response::from(Self::version_model(&id, n, version)))
    }

    async fn access_secret_version(
        &self,
        req: model::AccessSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::AccessSecretVersionResponse> {
        let (id, v) = self.version_ref(&req.name)?;
        let w = self.lock();
        let s = w.secrets.get(&id).ok_or_else(|| secret_not_found(&id))?;
        let n = Self::resolve(&id, s, v)?;
        let version = &s.versions[&n];
        if version.state != State::Enabled {
            let state = if version.state == State::Disabled {
                "DISABLED"
            } else {
                "DESTROYED"
            };
            return Err(status(
                Code::FailedPrecondition,
                &format!(
                    "Secret Version [{}] is in {state} state.",
                    Self::version_name(&id, n)
                ),
            ));
        }
        let data = version.data.clone().unwrap_or_default();
        Ok(Response::from(
            model::AccessSecretVersionResponse::new()
                .set_name(Self::version_name(&id, n))
                .set_payload(
                    model::SecretPayload::new()
                        .set_data(data)
                        .set_data_crc32c(version.crc32c),
                ),
        ))
    }

    async fn list_secret_versions(
        &self,
        req: model::ListSecretVersionsRequest,
        _: RequestOptions,
    ) -> GResult<model::ListSecretVersionsResponse> {
        let id = self.secret_id(&req.parent)?;
        let w = self.lock();
        let s = w.secrets.get(&id).ok_or_else(|| secret_not_found(&id))?;
        let all: Vec<model::SecretVersion> = s
            .versions
            .iter()
            .rev()
            .map(|(n, v)| Self::version_model(&id, *n, v))
            .collect();
        let total = all.len();
        let (items, next) = page(all, &req.page_token)?;
        Ok(Response::from(
            model::ListSecretVersionsResponse::new()
                .set_versions(items)
                .set_next_page_token(next)
                .set_total_size(total as i32),
        ))
    }

    async fn enable_secret_version(
        &self,
        req: model::EnableSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.change_state(&req.name, &req.etag, State::Enabled)
    }

    async fn disable_secret_version(
        &self,
        req: model::DisableSecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.change_state(&req.name, &req.etag, State::Disabled)
    }

    async fn destroy_secret_version(
        &self,
        req: model::DestroySecretVersionRequest,
        _: RequestOptions,
    ) -> GResult<model::SecretVersion> {
        self.change_state(&req.name, &req.etag, State::Destroyed)
    }
}
