//! What every command starts from: the validated config and, opened lazily,
//! the backends (so `webhook sign` works with no state at all).

use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::names;
use tokio::sync::OnceCell;

use crate::failure::Failure;

pub struct Ctx {
    pub config: Config,
    pub env: Env,
    backends: OnceCell<Backends>,
}

impl Ctx {
    pub fn from_env() -> Result<Ctx, Failure> {
        let env = Env::from_process();
        let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT)?;
        crate::logging::init(config.debug, "warn");
        Ok(Ctx {
            config,
            env,
            backends: OnceCell::new(),
        })
    }

    /// A context over a given config and environment (tests running
    /// commands in-process).
    pub fn new(config: Config, env: Env) -> Ctx {
        Ctx {
            config,
            env,
            backends: OnceCell::new(),
        }
    }

    /// A context whose backends are already open (unit tests running a
    /// command against a store they prepared, e.g. under a gcp config).
    #[cfg(test)]
    pub(crate) fn with_backends(config: Config, env: Env, backends: Backends) -> Ctx {
        Ctx {
            config,
            env,
            backends: OnceCell::new_with(Some(backends)),
        }
    }

    pub async fn backends(&self) -> Result<&Backends, Failure> {
        self.backends
            .get_or_try_init(|| {
                tracing::debug!(backend = self.backend_name(), principal = %self.config.principal, "opening backends");
                Backends::open(&self.config)
            })
            .await
            .map_err(|e| {
                Failure(format!(
                    "cannot open the {} backend: {e}",
                    self.backend_name()
                ))
            })
    }

    pub fn backend_name(&self) -> &'static str {
        if self.config.is_local() {
            "local"
        } else {
            "gcp"
        }
    }

    /// Secret Manager id of a logical name; ids given in full pass through.
    pub fn secret_id(&self, name: &str) -> String {
        if name.starts_with(&self.config.secret_prefix) {
            name.to_string()
        } else {
            self.config.secret_id(name)
        }
    }

    /// The logical name of an id, or the id itself when it has no prefix.
    pub fn logical<'a>(&self, id: &'a str) -> &'a str {
        names::logical_name(&self.config.secret_prefix, id).unwrap_or(id)
    }
}
