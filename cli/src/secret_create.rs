//! Creating a secret that does not exist yet, for `secrets add` and
//! `restore`.
//!
//! On the local backend the command creates it, as it always has. On gcp it
//! refuses: infra/terraform creates each secret with what a bare create
//! cannot give it — CMEK replication under the secrets key, the rotation
//! period that makes Secret Manager send SECRET_ROTATE, and the
//! secret-events topic that carries those events to rotation-worker. A
//! secret made here would lack all three without anyone noticing, so the
//! operator is sent to `terraform apply` instead (docs/design.md, Commands).

use patchpanda_shared::Error;
use patchpanda_shared::config::Backend;
use patchpanda_shared::secrets::SecretStore;

use crate::failure::Failure;

/// Makes sure the secret `id` exists. Ok(true) when this call created it
/// (local backend only), Ok(false) when it was already there.
pub async fn ensure_secret(
    backend: &Backend,
    store: &dyn SecretStore,
    id: &str,
) -> Result<bool, Failure> {
    match backend {
        Backend::Local { .. } => match store.create_secret(id).await {
            Ok(_) => Ok(true),
            Err(Error::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Backend::Gcp { project } => match store.get_secret(id).await {
            Ok(_) => Ok(false),
            Err(Error::NotFound(_)) => Err(refusal(project, id)),
            Err(e) => Err(e.into()),
        },
    }
}

fn refusal(project: &str, id: &str) -> Failure {
    Failure(format!(
        "secret {id} does not exist in project {project}; on gcp secrets are created by infra \
         (`terraform apply` in infra/terraform creates them with CMEK, a rotation schedule and the \
         secret-events topic), not by this command; nothing was changed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchpanda_shared::backends::Backends;
    use patchpanda_shared::config::{Config, Env};
    use patchpanda_shared::names;

    async fn local_store() -> (tempfile::TempDir, Backends) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_env(
            &Env::from_pairs([("PATCHPANDA_HOME", dir.path().to_str().unwrap())]),
            names::PRINCIPAL_OPERATOR_DEFAULT,
        )
        .unwrap();
        let b = Backends::open(&config).await.unwrap();
        (dir, b)
    }

    #[tokio::test]
    async fn local_creates_a_missing_secret_once() {
        let (dir, b) = local_store().await;
        let local = Backend::Local {
            home: dir.path().to_path_buf(),
        };
        let id = "patchpanda-webhook-secret";
        assert!(ensure_secret(&local, b.secrets.as_ref(), id).await.unwrap());
        assert!(!ensure_secret(&local, b.secrets.as_ref(), id).await.unwrap());
        assert!(b.secrets.get_secret(id).await.is_ok());
    }

    #[tokio::test]
    async fn gcp_refuses_to_create_and_points_at_infra() {
        let (_dir, b) = local_store().await;
        let gcp = Backend::Gcp {
            project: "p1".into(),
        };
        let id = "patchpanda-webhook-secret";
        let err = ensure_secret(&gcp, b.secrets.as_ref(), id)
            .await
            .unwrap_err();
        assert!(err.0.contains("terraform apply"), "{}", err.0);
        assert!(err.0.contains("CMEK"), "{}", err.0);
        assert!(!err.0.contains('\n'));
        assert!(
            matches!(b.secrets.get_secret(id).await, Err(Error::NotFound(_))),
            "nothing was created"
        );
        // An existing secret (made by infra) is used as it is.
        b.secrets.create_secret(id).await.unwrap();
        assert!(!ensure_secret(&gcp, b.secrets.as_ref(), id).await.unwrap());
    }
}
