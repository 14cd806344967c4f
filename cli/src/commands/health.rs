//! `patchpanda health`: the runbook's health checks as one table. Secrets are
//! checked through metadata (and, on gcp, testIamPermissions), never by
//! reading their values, so a health check doesn't page the audit alerter.

use std::time::Duration;

use clap::Args;
use patchpanda_shared::backends::GcpParts;
use patchpanda_shared::names;
use patchpanda_shared::secrets::{VersionRef, VersionState};
use patchpanda_shared::{Error, kms::KeyVersionState};
use serde::Serialize;

use crate::context::Ctx;
use crate::failure::{Failure, Outcome};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// webhook-ingest's base URL (default: local stack, or PATCHPANDA_INGEST_URL).
    #[arg(long, env = "PATCHPANDA_INGEST_URL")]
    pub ingest_url: Option<String>,
    /// rotation-worker's base URL (default: local stack, or PATCHPANDA_WORKER_URL).
    #[arg(long, env = "PATCHPANDA_WORKER_URL")]
    pub worker_url: Option<String>,
    /// audit-alerter's base URL (default: local stack, or PATCHPANDA_ALERTER_URL).
    #[arg(long, env = "PATCHPANDA_ALERTER_URL")]
    pub alerter_url: Option<String>,
    /// The local stack's first port (as given to `patchpanda dev --port-base`).
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..=65533))]
    pub port_base: u16,
    /// The longest wait for any one check, so that an unreachable backend
    /// fails its row instead of hanging the command.
    #[arg(long, default_value = "20s", value_parser = check_timeout)]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
}

fn check_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration like 5s or 1m"))?;
    if d.is_zero() || d > Duration::from_secs(600) {
        return Err("the timeout must be between 1s and 10m".into());
    }
    Ok(d)
}

/// `fut`, or a failed check once `limit` has passed.
async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(no_answer(limit)))
}

fn no_answer(limit: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(limit))
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub result: Verdict,
    pub detail: String,
}

fn check(name: impl Into<String>, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            check: name.into(),
            result: Verdict::Ok,
            detail,
        },
        Err(detail) => Check {
            check: name.into(),
            result: Verdict::Fail,
            detail,
        },
    }
}

pub async fn run(ctx: &Ctx, a: HealthArgs) -> Outcome {
    let local = ctx.config.is_local();
    let base = |port: u16| local.then(|| format!("http://127.0.0.1:{port}"));
    let functions = [
        (
            "webhook-ingest",
            "--ingest-url",
            a.ingest_url.clone().or_else(|| base(a.port_base)),
        ),
        (
            "rotation-worker",
            "--worker-url",
            a.worker_url.clone().or_else(|| base(a.port_base + 1)),
        ),
        (
            "audit-alerter",
            "--alerter-url",
            a.alerter_url.clone().or_else(|| base(a.port_base + 2)),
        ),
    ];
    let mut checks = Vec::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Failure(format!("cannot build an HTTP client: {e}")))?;
    for (name, flag, url) in functions {
        let Some(url) = url else {
            checks.push(Check {
                check: format!("{name} /health"),
                result: Verdict::Skip,
                detail: format!("no URL: pass {flag}"),
            });
            continue;
        };
        // On gcp the private services admit only run.invoker holders, which
        // Cloud Run checks on an ID token for the service's URL.
        let token = if local {
            None
        } else {
            let token = within(a.timeout, async {
                crate::id_token::google_id_token(&audience(&url))
                    .await
                    .map_err(|f| f.0)
            });
            match token.await {
                Ok(t) => Some(t),
                Err(reason) => {
                    checks.push(check(format!("{name} /health"), Err(reason)));
                    continue;
                }
            }
        };
        let result = probe(&http, &url, token.as_deref()).await;
        checks.push(check(format!("{name} /health"), result));
    }

    let backends = within(a.timeout, async { ctx.backends().await.map_err(|f| f.0) });
    match backends.await {
        Err(reason) => checks.push(check("backends", Err(reason))),
        Ok(b) => {
            for logical in names::SECRETS {
                let id = ctx.config.secret_id(logical);
                let alias = VersionRef::alias(names::ALIAS_CURRENT);
                let current = b.secrets.get_version(&id, &alias);
                let result = match tokio::time::timeout(a.timeout, current).await {
                    Err(_) => Err(format!("{id}: {}", no_answer(a.timeout))),
                    Ok(Ok(v)) if v.state == VersionState::Enabled => {
                        Ok(format!("{id}: current is version {} (enabled)", v.number))
                    }
                    Ok(Ok(v)) => Err(format!("{id}: current version {} is {}", v.number, v.state)),
                    Ok(Err(Error::NotFound(_))) if logical == names::OIDC_CLIENT_SECRET => {
                        checks.push(Check {
                            check: format!("secret {logical}"),
                            result: Verdict::Skip,
                            detail: "optional; not configured".into(),
                        });
                        continue;
                    }
                    Ok(Err(e)) => Err(format!("{id}: {e}")),
                };
                checks.push(check(format!("secret {logical}"), result));
            }
            let kms = async {
                let info = b.kms.key_info().await.map_err(|e| e.to_string())?;
                let primary = info
                    .primary
                    .as_ref()
                    .ok_or("the key has no primary version")?;
                if primary.state != KeyVersionState::Enabled {
                    return Err(format!(
                        "primary version {} is {}",
                        primary.number, primary.state
                    ));
                }
                let probe: [u8; 16] = rand::random();
                let ct = b
                    .kms
                    .encrypt(&probe, b"patchpanda-health")
                    .await
                    .map_err(|e| format!("encrypt: {e}"))?;
                let pt = b
                    .kms
                    .decrypt(&ct, b"patchpanda-health")
                    .await
                    .map_err(|e| format!("decrypt: {e}"))?;
                if pt.expose() != probe {
                    return Err("decrypt did not return what was encrypted".into());
                }
                Ok(format!(
                    "{} primary {} enabled; encrypt/decrypt OK",
                    info.name, primary.number
                ))
            };
            checks.push(check("kms key", within(a.timeout, kms).await));
            let bus = within(a.timeout, async {
                b.bus
                    .check()
                    .await
                    .map(|_| "reachable".to_string())
                    .map_err(|e| e.to_string())
            });
            checks.push(check("bus", bus.await));
            if let Some(gcp) = &b.gcp {
                checks.extend(gcp_permissions(ctx, gcp, a.timeout).await);
            }
        }
    }

    if a.json {
        crate::output::print_json(&checks);
    } else {
        let mut t = Table::new(&["CHECK", "RESULT", "DETAIL"]);
        for c in &checks {
            let verdict = match c.result {
                Verdict::Ok => "OK",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "SKIP",
            };
            t.row(vec![c.check.clone(), verdict.into(), c.detail.clone()]);
        }
        t.print();
    }
    let failed = checks.iter().filter(|c| c.result == Verdict::Fail).count();
    if failed > 0 {
        return Err(Failure(format!(
            "{failed} of {} health checks failed",
            checks.len()
        )));
    }
    Ok(())
}

/// What the caller may do on the secrets and the key, via testIamPermissions.
async fn gcp_permissions(ctx: &Ctx, gcp: &GcpParts, limit: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    let wanted = [
        "secretmanager.versions.access",
        "secretmanager.versions.add",
        "secretmanager.secrets.update",
    ];
    for logical in [names::WEBHOOK_SECRET, names::GITHUB_PRIVATE_KEY] {
        let id = ctx.config.secret_id(logical);
        let granted = within(limit, async {
            gcp.secrets
                .test_permissions(&id, &wanted)
                .await
                .map_err(|e| e.to_string())
        });
        let result = match granted.await {
            Ok(granted) => {
                let missing: Vec<&str> = wanted
                    .iter()
                    .copied()
                    .filter(|p| !granted.iter().any(|g| g == p))
                    .collect();
                if missing.is_empty() {
                    Ok("all granted".into())
                } else {
                    Err(format!("missing {}", missing.join(", ")))
                }
            }
            Err(e) => Err(e),
        };
        out.push(check(format!("iam {logical}"), result));
    }
    let kms_wanted = [
        "cloudkms.cryptoKeyVersions.useToEncrypt",
        "cloudkms.cryptoKeyVersions.useToDecrypt",
    ];
    let granted = within(limit, async {
        gcp.kms
            .test_permissions(&kms_wanted)
            .await
            .map_err(|e| e.to_string())
    });
    let result = match granted.await {
        Ok(granted) if kms_wanted.iter().all(|p| granted.iter().any(|g| g == p)) => {
            Ok("encrypt/decrypt granted".into())
        }
        Ok(granted) => Err(format!("granted only: {}", granted.join(", "))),
        Err(e) => Err(e),
    };
    out.push(check("iam kms key", result));
    out
}

/// GET `{base}/health`, with `Authorization: Bearer <token>` when given.
async fn probe(http: &reqwest::Client, base: &str, token: Option<&str>) -> Result<String, String> {
    let target = format!("{}/health", base.trim_end_matches('/'));
    let mut request = http.get(&target);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            Ok(format!("{target} answered {}", r.status().as_u16()))
        }
        Ok(r) => Err(format!("{target} answered {}", r.status().as_u16())),
        Err(e) => Err(format!("{target} unreachable: {}", root_cause(&e))),
    }
}

/// The ID token's audience for a service: its URL without a path, which
/// Cloud Run accepts by default (infra also lists it as the service's
/// custom audience).
fn audience(base: &str) -> String {
    match url::Url::parse(base) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => base.trim_end_matches('/').to_string(),
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id_token::tests::serve;

    #[tokio::test]
    async fn a_probe_presents_the_id_token_a_private_service_requires() {
        let (addr, mut seen) = serve(200, "ok".into(), Some("id-token-1".into())).await;
        let http = reqwest::Client::new();
        let base = format!("http://{addr}/");
        let ok = probe(&http, &base, Some("id-token-1")).await.unwrap();
        assert_eq!(ok, format!("http://{addr}/health answered 200"));
        let request = seen.recv().await.unwrap();
        assert!(request.starts_with("GET /health "), "{request}");
        // Without it (as before on gcp), Cloud Run's IAM check refuses.
        let err = probe(&http, &base, None).await.unwrap_err();
        assert!(err.ends_with("answered 401"), "{err}");
    }

    #[test]
    fn the_audience_is_the_service_url_without_a_path() {
        assert_eq!(
            audience("https://patchpanda-rotation-worker-123.us-central1.run.app/"),
            "https://patchpanda-rotation-worker-123.us-central1.run.app"
        );
        assert_eq!(audience("http://127.0.0.1:8081/x"), "http://127.0.0.1:8081");
    }
}
