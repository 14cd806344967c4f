//! Who each part of `patchpanda dev` acts as. By default the local
//! identities (`*@patchpanda.local`). With GOOGLE_CLOUD_PROJECT=P the stack
//! acts as P's deployment: each function is the service account
//! infra/terraform/iam.tf creates for it (`patchpanda-<function>@P.iam.gserviceaccount.com`),
//! pushes come from `patchpanda-push@P...` and scheduled calls from
//! `patchpanda-scheduler@P...`, and the allow-lists infra/terraform/run.tf
//! sets are set the same way, so audit entries, notices and alerts carry
//! production's names.

use patchpanda_shared::bus::topology::Function;
use patchpanda_shared::config::Env;
use patchpanda_shared::names;

use crate::commands::Failure;

/// Variables infra/terraform/run.tf sets from the accounts below.
const ENV_PRINCIPAL: &str = "PATCHPANDA_PRINCIPAL";
const ENV_PUSH_ACCOUNTS: &str = "PATCHPANDA_PUSH_SERVICE_ACCOUNTS";
const ENV_READERS: &str = "PATCHPANDA_READER_PRINCIPALS";
const ENV_ROTATORS: &str = "PATCHPANDA_ROTATOR_PRINCIPALS";
/// audit-alerter's own variables (its settings.rs), set as run.tf does.
const ENV_GATEWAY_ACCOUNTS: &str = "PATCHPANDA_GATEWAY_SERVICE_ACCOUNTS";
const ENV_OPERATORS: &str = "PATCHPANDA_OPERATOR_PRINCIPALS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// The project whose deployment the stack acts as; None = local names.
    pub project: Option<String>,
    pub webhook_ingest: String,
    pub rotation_worker: String,
    pub audit_alerter: String,
    /// Who push tokens are minted as (Pub/Sub's push account).
    pub push: String,
    /// Who scheduled calls are signed as (Cloud Scheduler's account).
    pub scheduler: String,
}

impl Identities {
    /// The local identities, or P's when GOOGLE_CLOUD_PROJECT=P is set.
    pub fn from_env(env: &Env) -> Result<Self, Failure> {
        match env.get("GOOGLE_CLOUD_PROJECT").map(str::trim) {
            None => Ok(Self::local()),
            Some(p) => Self::deployment(p),
        }
    }

    pub fn local() -> Self {
        Self {
            project: None,
            webhook_ingest: names::PRINCIPAL_WEBHOOK_INGEST.into(),
            rotation_worker: names::PRINCIPAL_ROTATION_WORKER.into(),
            audit_alerter: names::PRINCIPAL_AUDIT_ALERTER.into(),
            push: names::PRINCIPAL_PUSH.into(),
            scheduler: names::PRINCIPAL_SCHEDULER.into(),
        }
    }

    /// The accounts iam.tf creates in `project` (account ids
    /// `patchpanda-<function>`, `patchpanda-push`, `patchpanda-scheduler`).
    pub fn deployment(project: &str) -> Result<Self, Failure> {
        // Google's rule for project ids: 6-30 characters, lower-case
        // letters, digits and hyphens, a letter first, no trailing hyphen.
        let valid = (6..=30).contains(&project.len())
            && project.starts_with(|c: char| c.is_ascii_lowercase())
            && !project.ends_with('-')
            && project
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Failure(format!(
                "GOOGLE_CLOUD_PROJECT: expected a project id (6-30 lower-case letters, digits, hyphens), got {:?}",
                project.chars().take(40).collect::<String>()
            )));
        }
        let sa = |id: &str| format!("patchpanda-{id}@{project}.iam.gserviceaccount.com");
        Ok(Self {
            project: Some(project.to_string()),
            webhook_ingest: sa(Function::WebhookIngest.name()),
            rotation_worker: sa(Function::RotationWorker.name()),
            audit_alerter: sa(Function::AuditAlerter.name()),
            push: sa("push"),
            scheduler: sa("scheduler"),
        })
    }

    pub fn of(&self, function: Function) -> &str {
        match function {
            Function::WebhookIngest => &self.webhook_ingest,
            Function::RotationWorker => &self.rotation_worker,
            Function::AuditAlerter => &self.audit_alerter,
        }
    }

    /// The environment of `function`: it acts as its identity and, as P's
    /// deployment, gets the allow-lists run.tf gives it. `operator` is who
    /// runs the stack (it may call task routes, as run.tf's operators may).
    /// `extra_push_callers` are other identities that sign pushes (the
    /// local bus's dispatcher signs as its own account). Lists already set
    /// in `env` are kept.
    pub fn function_env(
        &self,
        function: Function,
        env: &mut Env,
        operator: &str,
        extra_push_callers: &[&str],
    ) {
        env.set(ENV_PRINCIPAL, self.of(function));
        if self.project.is_none() {
            return;
        }
        let mut push_callers = vec![self.push.as_str(), self.scheduler.as_str(), operator];
        push_callers.extend_from_slice(extra_push_callers);
        let all_accounts = [
            self.webhook_ingest.as_str(),
            self.rotation_worker.as_str(),
            self.audit_alerter.as_str(),
            self.push.as_str(),
            self.scheduler.as_str(),
        ];
        let lists: [(&str, Vec<&str>); 5] = [
            (ENV_PUSH_ACCOUNTS, push_callers),
            (
                ENV_READERS,
                vec![self.webhook_ingest.as_str(), self.rotation_worker.as_str()],
            ),
            (ENV_ROTATORS, vec![self.rotation_worker.as_str()]),
            (ENV_GATEWAY_ACCOUNTS, all_accounts.to_vec()),
            (ENV_OPERATORS, vec![operator]),
        ];
        for (key, values) in lists {
            if env.get(key).is_none() {
                env.set(key, values.join(","));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_project_the_local_names_are_used() {
        let ids = Identities::from_env(&Env::default()).unwrap();
        assert_eq!(ids, Identities::local());
        let mut env = Env::default();
        ids.function_env(Function::AuditAlerter, &mut env, "op@x", &[]);
        assert_eq!(env.get(ENV_PRINCIPAL), Some(names::PRINCIPAL_AUDIT_ALERTER));
        assert_eq!(env.get(ENV_PUSH_ACCOUNTS), None);
    }

    #[test]
    fn a_project_gives_iam_tf_accounts_and_run_tf_lists() {
        let ids = Identities::from_env(&Env::from_pairs([("GOOGLE_CLOUD_PROJECT", "acme-prod")]))
            .unwrap();
        assert_eq!(
            ids.rotation_worker,
            "patchpanda-rotation-worker@acme-prod.iam.gserviceaccount.com"
        );
        assert_eq!(
            ids.push,
            "patchpanda-push@acme-prod.iam.gserviceaccount.com"
        );
        assert_eq!(
            ids.scheduler,
            "patchpanda-scheduler@acme-prod.iam.gserviceaccount.com"
        );
        let mut env = Env::from_pairs([(ENV_OPERATORS, "alice@acme.example")]);
        ids.function_env(Function::WebhookIngest, &mut env, "op@acme.example", &[]);
        assert_eq!(
            env.get(ENV_PRINCIPAL),
            Some("patchpanda-webhook-ingest@acme-prod.iam.gserviceaccount.com")
        );
        assert_eq!(
            env.list(ENV_PUSH_ACCOUNTS),
            vec![
                ids.push.clone(),
                ids.scheduler.clone(),
                "op@acme.example".into()
            ]
        );
        assert_eq!(
            env.list(ENV_READERS),
            vec![ids.webhook_ingest.clone(), ids.rotation_worker.clone()]
        );
        assert_eq!(env.list(ENV_ROTATORS), vec![ids.rotation_worker.clone()]);
        assert_eq!(env.list(ENV_GATEWAY_ACCOUNTS).len(), 5);
        // What the caller set is kept.
        assert_eq!(env.get(ENV_OPERATORS), Some("alice@acme.example"));
    }

    #[test]
    fn iam_tf_creates_these_account_ids() {
        let iam = include_str!("../../infra/terraform/iam.tf");
        assert!(iam.contains("account_id   = \"patchpanda-${each.key}\""));
        assert!(iam.contains("account_id   = \"patchpanda-push\""));
        assert!(iam.contains("account_id   = \"patchpanda-scheduler\""));
    }

    #[test]
    fn bad_project_ids_are_refused() {
        for p in ["abc", "Acme-prod", "acme_prod", "1acme-prod", "acme-prod-"] {
            assert!(Identities::deployment(p).is_err(), "{p}");
        }
    }
}
