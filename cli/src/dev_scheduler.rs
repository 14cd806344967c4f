//! The local stand-in for Cloud Scheduler: calls the functions' task routes
//! on their schedules, with the headers and OIDC token Cloud Scheduler sends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use patchpanda_shared::auth::local::LocalIssuer;

use crate::dev::Stack;

#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub url: String,
    pub body: Option<String>,
    pub every: Duration,
}

/// The scheduler jobs of docs/design.md (Wiring): redelivery sweep (every 10 min, only with a GitHub App),
/// finish (hourly), rotation due-check (daily), and the alerter's tick
/// (every minute, contract 5: held alerts, the Data Access silence check,
/// window expiry), as infra's Cloud Scheduler jobs call them.
pub fn jobs(stack: &Stack, github_app: bool) -> Vec<Job> {
    let mut jobs = vec![
        Job {
            name: "finish",
            url: format!("http://{}{}", stack.worker, rotation_worker::ROUTE_FINISH),
            body: None,
            every: Duration::from_secs(3600),
        },
        Job {
            name: "due-check",
            url: format!(
                "http://{}{}",
                stack.worker,
                rotation_worker::ROUTE_DUE_CHECK
            ),
            body: None,
            every: Duration::from_secs(86_400),
        },
        Job {
            name: "alerter-tick",
            url: format!("http://{}{}", stack.alerter, audit_alerter::ROUTE_TICK),
            body: None,
            every: Duration::from_secs(60),
        },
    ];
    if github_app {
        jobs.push(Job {
            name: "redeliver",
            url: format!("http://{}{}", stack.ingest, webhook_ingest::ROUTE_REDELIVER),
            body: None,
            every: Duration::from_secs(600),
        });
    }
    jobs
}

/// Runs `jobs` until `shutdown`, signing each call as `identity` (Cloud
/// Scheduler's account).
pub async fn run(
    jobs: Vec<Job>,
    issuer: Arc<LocalIssuer>,
    identity: String,
    shutdown: impl Future<Output = ()> + Send,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap_or_default();
    let tasks = jobs.into_iter().map(|job| {
        let client = client.clone();
        let issuer = issuer.clone();
        let identity = identity.clone();
        async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + job.every, job.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                call(&client, &issuer, &identity, &job).await;
            }
        }
    });
    let all = futures::future::join_all(tasks);
    tokio::select! {
        _ = all => {}
        _ = shutdown => {}
    }
}

async fn call(client: &reqwest::Client, issuer: &LocalIssuer, identity: &str, job: &Job) {
    let token = match issuer.mint(&job.url, identity, Duration::from_secs(300)) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(job = job.name, error = %e, "cannot mint a scheduler token");
            return;
        }
    };
    let schedule_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut req = client
        .post(&job.url)
        .bearer_auth(token)
        .header("user-agent", "Google-Cloud-Scheduler")
        .header("x-cloudscheduler", "true")
        .header(
            "x-cloudscheduler-jobname",
            format!("projects/local/locations/local/jobs/{}", job.name),
        )
        .header("x-cloudscheduler-scheduletime", schedule_time);
    if let Some(body) = &job.body {
        req = req
            .header("content-type", "application/json")
            .body(body.clone());
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => tracing::info!(
            job = job.name,
            status = r.status().as_u16(),
            "scheduled job ran"
        ),
        Ok(r) => tracing::warn!(
            job = job.name,
            status = r.status().as_u16(),
            "scheduled job failed"
        ),
        Err(e) => tracing::warn!(job = job.name, error = %e, "scheduled job unreachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        Stack {
            home: std::path::PathBuf::from("/nonexistent"),
            ingest: addr(8080),
            worker: addr(8081),
            alerter: addr(8082),
            emulator: None,
            identities: crate::dev_identity::Identities::local(),
        }
    }

    /// As infra/terraform's Cloud Scheduler jobs: the alerter's tick every
    /// minute (contract 5), finish hourly, the due-check daily.
    #[test]
    fn the_alerter_is_ticked_every_minute_on_its_own_route() {
        let all = jobs(&stack(), false);
        let tick = all.iter().find(|j| j.name == "alerter-tick").unwrap();
        assert_eq!(tick.url, "http://127.0.0.1:8082/tasks/tick");
        assert_eq!(tick.every, Duration::from_secs(60));
        let finish = all.iter().find(|j| j.name == "finish").unwrap();
        assert_eq!(finish.url, "http://127.0.0.1:8081/tasks/finish");
        assert!(!all.iter().any(|j| j.name == "redeliver"));
        assert!(jobs(&stack(), true).iter().any(|j| j.name == "redeliver"));
    }
}
