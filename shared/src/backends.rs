//! The backend factory: picks local or gcp once, at start, from [`Config`],
//! and hands every function the same three trait objects.

use std::fmt;
use std::sync::Arc;

use crate::bus::Bus;
use crate::bus::emulator::PubsubEmulator;
use crate::bus::gcp::GcpBus;
use crate::bus::local::LocalBus;
use crate::config::{Backend, Config};
use crate::kms::Kms;
use crate::kms::gcp::GcpKms;
use crate::kms::local::LocalKms;
use crate::local::Home;
use crate::secrets::SecretStore;
use crate::secrets::gcp::GcpSecretStore;
use crate::secrets::local::LocalSecretStore;

/// The secrets store, KMS and bus this process uses.
#[derive(Clone)]
pub struct Backends {
    pub secrets: Arc<dyn SecretStore>,
    pub kms: Arc<dyn Kms>,
    pub bus: Arc<dyn Bus>,
    /// Set on the local backend: what only it has (bus listing, dispatcher).
    pub local: Option<LocalParts>,
    /// Set on the gcp backend: what only it has (testIamPermissions, for
    /// `patchpanda health`), so no caller opens its own gcp clients.
    pub gcp: Option<GcpParts>,
}

/// The gcp backend's own parts: the same clients as `secrets` and `kms`,
/// typed.
#[derive(Clone)]
pub struct GcpParts {
    pub secrets: Arc<GcpSecretStore>,
    pub kms: Arc<GcpKms>,
}

/// The local backend's own parts, for the CLI and the dev stack.
#[derive(Clone)]
pub struct LocalParts {
    pub home: Arc<Home>,
    /// The local bus. In emulator mode nothing publishes to it: `bus` above
    /// is the emulator.
    pub bus: Arc<LocalBus>,
    /// Set in emulator mode.
    pub emulator: Option<PubsubEmulator>,
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.local {
            Some(LocalParts {
                home,
                emulator: Some(e),
                ..
            }) => format!(
                "local at {}, Pub/Sub emulator at {}",
                home.path().display(),
                e.host
            ),
            Some(parts) => format!("local at {}", parts.home.path().display()),
            None => "gcp".to_string(),
        };
        f.debug_struct("Backends")
            .field("backend", &kind)
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// Opens the backends `config` names. Local: everything under the home,
    /// acting as `config.principal`, with the KMS's and the store's audit
    /// entries and event notifications going onto the local bus, or onto
    /// Pub/Sub's emulator through the gcp bus code when
    /// PUBSUB_EMULATOR_HOST is set (emulator mode). Gcp: Secret
    /// Manager, Cloud KMS and Pub/Sub of the project, with Application
    /// Default Credentials.
    pub async fn open(config: &Config) -> crate::Result<Backends> {
        match &config.backend {
            Backend::Local { home } => {
                let home = Arc::new(Home::open(home)?);
                let local_bus = Arc::new(LocalBus::open(&home)?);
                let bus: Arc<dyn Bus> = match &config.pubsub_emulator {
                    Some(emulator) => Arc::new(emulator.bus().await?),
                    None => local_bus.clone(),
                };
                let kms: Arc<dyn Kms> =
                    Arc::new(LocalKms::open(&home, &config.principal, Some(bus.clone()))?);
                let secrets: Arc<dyn SecretStore> = Arc::new(LocalSecretStore::open(
                    &home,
                    &config.principal,
                    kms.clone(),
                    Some(bus.clone()),
                )?);
                Ok(Backends {
                    secrets,
                    kms,
                    bus,
                    local: Some(LocalParts {
                        home,
                        bus: local_bus,
                        emulator: config.pubsub_emulator.clone(),
                    }),
                    gcp: None,
                })
            }
            Backend::Gcp { project } => {
                let key_name = kms_key_name(config, project);
                let (secrets, kms, bus) = futures::try_join!(
                    GcpSecretStore::new(project),
                    GcpKms::new(&key_name),
                    GcpBus::new(project),
                )?;
                let (secrets, kms) = (Arc::new(secrets), Arc::new(kms));
                Ok(Backends {
                    secrets: secrets.clone(),
                    kms: kms.clone(),
                    bus: Arc::new(bus),
                    local: None,
                    gcp: Some(GcpParts { secrets, kms }),
                })
            }
        }
    }
}

/// The Cloud KMS key's resource name from the configured location, key ring
/// and key.
pub fn kms_key_name(config: &Config, project: &str) -> String {
    format!(
        "projects/{project}/locations/{}/keyRings/{}/cryptoKeys/{}",
        config.kms_location, config.kms_key_ring, config.kms_key
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Message;
    use crate::config::Env;
    use crate::names;

    #[test]
    fn the_kms_key_name_follows_the_config() {
        let config = Config::from_env(
            &Env::from_pairs([
                ("PATCHPANDA_BACKEND", "gcp"),
                ("GOOGLE_CLOUD_PROJECT", "p1"),
                ("PATCHPANDA_KMS_KEY", "k2"),
            ]),
            names::PRINCIPAL_ROTATION_WORKER,
        )
        .unwrap();
        assert_eq!(
            kms_key_name(&config, config.project()),
            "projects/p1/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/k2"
        );
    }

    #[tokio::test]
    async fn local_backends_share_one_home_and_bus() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let config = Config::from_env(
            &Env::from_pairs([
                ("PATCHPANDA_BACKEND", "local"),
                ("PATCHPANDA_HOME", home.to_str().unwrap()),
            ]),
            names::PRINCIPAL_ROTATION_WORKER,
        )
        .unwrap();
        let b = Backends::open(&config).await.unwrap();
        let local = b.local.as_ref().expect("local parts on the local backend");
        assert_eq!(local.home.path(), home);
        assert!(home.join("bus.db").exists());
        b.bus.check().await.unwrap();
        b.kms.key_info().await.unwrap();
        let id = b
            .bus
            .publish("patchpanda-test", Message::new("x"))
            .await
            .unwrap();
        let listed = local.bus.messages("patchpanda-test").unwrap();
        assert_eq!(listed.last().map(|m| m.id.as_str()), Some(id.as_str()));
        // The store acts as the configured principal and audits onto the
        // same bus.
        assert!(b.secrets.list_secrets().await.unwrap().is_empty());
        b.secrets
            .create_secret(&config.secret_id(names::WEBHOOK_SECRET))
            .await
            .unwrap();
        let audit = local.bus.messages(names::TOPIC_AUDIT_LOGS).unwrap();
        assert!(!audit.is_empty());
        let last = String::from_utf8(audit.last().unwrap().data.clone()).unwrap();
        assert!(last.contains(names::PRINCIPAL_ROTATION_WORKER), "{last}");
        assert!(format!("{b:?}").contains("local at"));
    }
}
