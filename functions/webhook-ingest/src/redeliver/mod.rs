//! `POST /tasks/redeliver`: GitHub never retries a failed delivery, so every
//! few minutes the scheduler has us page back through the App's recent
//! deliveries and ask GitHub to redeliver each one (by guid) that failed and
//! has no successful attempt since: GitHub's own reference design
//! ("automatically redelivering failed deliveries for a GitHub App webhook").
//!
//! Which: see [`policy`]; redelivery terminates (a capped number of
//! attempts per guid, none for a permanent refusal of ours).
//!
//! How far back: to the start of the last complete sweep (less a small
//! overlap), or to the first failure of a guid it is still retrying, never
//! more than GitHub's 3-day retention. That mark is kept in
//! a [`SweepMark`]: a small file under PATCHPANDA_HOME on the local backend,
//! and the instance's memory on gcp. It is deliberately not an annotation on
//! a secret: writing one would need `secretmanager.secrets.update` for the
//! ingest identity (least privilege says no) and would make every sweep an
//! audited metadata change by a non-rotator, i.e. noise for audit-alerter.
//! A fresh instance without a mark simply scans the whole 3 days, which is
//! correct and only costs a few more API calls.

mod mark;
mod policy;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchpanda_shared::github::{GitHubApp, GitHubError};
use patchpanda_shared::runtime::HandlerError;
use patchpanda_shared::secrets::cache::SecretCache;
use serde::Serialize;

pub use mark::{FileMark, MemoryMark, SweepMark};
pub use policy::{SkipReason, Skipped, permanent_refusal, succeeded};

use policy::{GuidState, Verdict};

/// GitHub keeps deliveries for 3 days on github.com.
pub const RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// How many skipped deliveries one report lists.
pub const MAX_SKIPS_LISTED: usize = 50;
/// The note answered when no App is configured.
pub const NO_APP_NOTE: &str = "no GitHub App configured; nothing to sweep";

/// How the sweeper reaches GitHub as the App.
pub struct AppSettings {
    pub api_url: String,
    /// GITHUB_APP_ID: the numeric id or the client id (the JWT's `iss`).
    pub app_id: String,
    /// Where the App's private key is read, and the key's secret id.
    pub cache: Arc<SecretCache>,
    pub key_secret_id: String,
}

#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// How far back a sweep without a mark looks.
    pub window: Duration,
    /// Re-read this much before the mark, for deliveries recorded late.
    pub overlap: Duration,
    pub per_page: u32,
    /// Bounds one sweep's API calls; the rest waits for the next sweep.
    pub max_pages: u32,
    /// The longest rate-limit wait honoured within one sweep; a longer one
    /// ends the sweep early (the next one resumes).
    pub max_wait: Duration,
    /// Attempts per guid (the original included) after which it is left.
    pub max_attempts: u32,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            window: RETENTION,
            overlap: Duration::from_secs(120),
            per_page: 100,
            max_pages: 200,
            max_wait: Duration::from_secs(20),
            max_attempts: 5,
        }
    }
}

/// The sweep's answer (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Deliveries read from GitHub newer than `since`.
    pub listed: u32,
    pub pages: u32,
    /// Distinct guids among them.
    pub guids: u32,
    /// Guids with no successful attempt.
    pub failed: u32,
    pub redelivered: u32,
    /// Failed guids left alone; `skips` says which and why (the first
    /// [`MAX_SKIPS_LISTED`]).
    pub skipped: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<Skipped>,
    pub redeliver_errors: u32,
    /// How far back this sweep looked (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Whether the listing reached `since` and every failure was handled;
    /// only then does the next sweep start from here.
    pub complete: bool,
    /// Why the sweep ended early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SweepReport {
    fn note(note: &str) -> Self {
        Self {
            complete: true,
            note: Some(note.to_string()),
            ..Default::default()
        }
    }
}

/// Why a call to GitHub ended the sweep.
enum Stop {
    RateLimited(String),
    Failed(GitHubError),
}

pub struct Sweeper {
    app: Option<AppSettings>,
    built: Mutex<Option<(u64, Arc<GitHubApp>)>>,
    mark: Arc<dyn SweepMark>,
    settings: SweepSettings,
    running: tokio::sync::Mutex<()>,
}

impl Sweeper {
    /// `app` None: no GitHub App is configured, and a sweep says so.
    pub fn new(
        app: Option<AppSettings>,
        mark: Arc<dyn SweepMark>,
        settings: SweepSettings,
    ) -> Self {
        Self {
            app,
            built: Mutex::new(None),
            mark,
            settings,
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.app.is_some()
    }

    /// The key secret to load at cold start and reload on a rotation notice.
    pub fn key_secret_id(&self) -> Option<&str> {
        self.app.as_ref().map(|a| a.key_secret_id.as_str())
    }

    /// One sweep, finished before `deadline` (the request's).
    pub async fn sweep(&self, deadline: Instant) -> Result<SweepReport, HandlerError> {
        let Some(app) = self.client().await? else {
            return Ok(SweepReport::note(NO_APP_NOTE));
        };
        // Scheduler calls may overlap (a retry while one is still running);
        // two sweeps would redeliver the same failures twice.
        let Ok(_running) = self.running.try_lock() else {
            return Ok(SweepReport::note(
                "a sweep is already running on this instance",
            ));
        };
        let started = Utc::now();
        let floor = started - chrono_duration(self.settings.window);
        let since = match self.mark.load().await {
            Some(mark) => (mark - chrono_duration(self.settings.overlap)).max(floor),
            None => floor,
        };
        let mut report = SweepReport {
            since: Some(since.to_rfc3339()),
            ..Default::default()
        };

        let mut guids: HashMap<String, GuidState> = HashMap::new();
        let mut cursor: Option<String> = None;
        let mut listing_complete = false;
        loop {
            if report.pages >= self.settings.max_pages {
                report.stopped = Some(format!(
                    "read {} pages; the rest waits for the next sweep",
                    report.pages
                ));
                break;
            }
            let per_page = self.settings.per_page;
            let page = match self
                .call(&app, deadline, || {
                    app.list_deliveries(per_page, cursor.as_deref())
                })
                .await
            {
                Ok(p) => p,
                // Nothing read at all: say so with the error's own status.
                Err(Stop::Failed(e)) if report.pages == 0 => {
                    return Err(HandlerError::from(patchpanda_shared::Error::from(e)));
                }
                Err(Stop::Failed(e)) => {
                    report.stopped = Some(format!("listing deliveries failed: {e}"));
                    break;
                }
                Err(Stop::RateLimited(m)) => {
                    report.stopped = Some(m);
                    break;
                }
            };
            report.pages += 1;
            let mut reached_since = false;
            for d in page.deliveries {
                if d.delivered_at < since {
                    reached_since = true;
                    continue;
                }
                report.listed += 1;
                guids.entry(d.guid.clone()).or_default().record(&d);
            }
            match page.next_cursor {
                Some(next) if !reached_since => cursor = Some(next),
                _ => {
                    listing_complete = true;
                    break;
                }
            }
        }
        report.guids = count(guids.len());

        let mut failed: Vec<(DateTime<Utc>, u64, DateTime<Utc>)> = Vec::new();
        for (guid, st) in &guids {
            if st.ok() {
                continue;
            }
            report.failed += 1;
            match st.verdict(guid, self.settings.max_attempts, listing_complete) {
                Verdict::Redeliver {
                    newest,
                    delivery_id,
                    oldest,
                } => failed.push((newest, delivery_id, oldest)),
                Verdict::Skip(skip) => {
                    if skip.reason != SkipReason::GivenUpEarlier {
                        tracing::warn!(
                            guid = %skip.guid,
                            delivery_id = skip.delivery_id,
                            status_code = skip.status_code,
                            attempts = skip.attempts,
                            reason = ?skip.reason,
                            "not redelivering a failed delivery"
                        );
                    }
                    report.skipped += 1;
                    report.skips.push(skip);
                }
                Verdict::Later => {}
            }
        }
        report
            .skips
            .sort_by_key(|s| std::cmp::Reverse(s.delivery_id));
        report.skips.truncate(MAX_SKIPS_LISTED);
        // Newest first, as GitHub lists them; ties broken by id for a stable
        // order.
        failed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));

        // The next sweep must look back to the first failure of every guid
        // handed to GitHub again (to count its attempts) or not handed over.
        let mut next_mark = started;
        for (i, &(_, id, oldest)) in failed.iter().enumerate() {
            match self.call(&app, deadline, || app.redeliver(id)).await {
                Ok(()) => {
                    report.redelivered += 1;
                    next_mark = next_mark.min(oldest);
                }
                Err(Stop::Failed(e)) => {
                    tracing::warn!(delivery_id = id, error = %e, "asking GitHub to redeliver failed");
                    report.redeliver_errors += 1;
                    next_mark = next_mark.min(oldest);
                }
                Err(Stop::RateLimited(m)) => {
                    report.stopped = Some(m);
                    for &(_, _, oldest) in &failed[i..] {
                        next_mark = next_mark.min(oldest);
                    }
                    break;
                }
            }
        }

        report.complete =
            listing_complete && report.stopped.is_none() && report.redeliver_errors == 0;
        if listing_complete && let Err(e) = self.mark.save(next_mark).await {
            tracing::warn!(error = %e, "could not remember the sweep; the next one looks back further");
        }
        tracing::info!(
            listed = report.listed,
            pages = report.pages,
            failed = report.failed,
            redelivered = report.redelivered,
            skipped = report.skipped,
            redeliver_errors = report.redeliver_errors,
            complete = report.complete,
            "redelivery sweep done"
        );
        Ok(report)
    }

    /// The App client for the current private key, rebuilt when the key's
    /// version changes.
    async fn client(&self) -> Result<Option<Arc<GitHubApp>>, HandlerError> {
        let Some(settings) = &self.app else {
            return Ok(None);
        };
        let snapshot = settings
            .cache
            .get(&settings.key_secret_id)
            .await
            .map_err(|e| {
                HandlerError::retryable(format!("the GitHub App private key is unavailable: {e}"))
            })?;
        let version = snapshot.current.version.number;
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, app)) = built.as_ref()
            && *v == version
        {
            return Ok(Some(app.clone()));
        }
        let app = GitHubApp::new(&settings.api_url, &settings.app_id, &snapshot.current.value)
            .map_err(|e| HandlerError::retryable(format!("cannot act as the GitHub App: {e}")))?;
        let app = Arc::new(app);
        *built = Some((version, app.clone()));
        Ok(Some(app))
    }

    /// One GitHub call, honouring `Retry-After` and an exhausted
    /// `X-RateLimit-Remaining` by waiting, as long as the wait fits in
    /// `max_wait` and before `deadline`.
    async fn call<T, F, Fut>(&self, app: &GitHubApp, deadline: Instant, mut f: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GitHubError>>,
    {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            if let Some(limit) = app.rate_limit()
                && limit.remaining == 0
                && let Some(reset) = limit.reset
            {
                let wait = (reset - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                if !wait.is_zero() {
                    self.wait(
                        wait,
                        deadline,
                        &format!(
                            "GitHub's rate limit is exhausted until {}",
                            reset.to_rfc3339()
                        ),
                    )
                    .await?;
                }
            }
            match f().await {
                Err(GitHubError::RateLimited { retry_after }) if attempt < ATTEMPTS => {
                    self.wait(
                        retry_after,
                        deadline,
                        &format!(
                            "rate limited by GitHub; retry after {}s",
                            retry_after.as_secs()
                        ),
                    )
                    .await?;
                }
                Err(GitHubError::RateLimited { retry_after }) => {
                    return Err(Stop::RateLimited(format!(
                        "still rate limited by GitHub after {ATTEMPTS} attempts; retry after {}s",
                        retry_after.as_secs()
                    )));
                }
                Err(e) => return Err(Stop::Failed(e)),
                Ok(v) => return Ok(v),
            }
        }
        Err(Stop::RateLimited("rate limited by GitHub".into()))
    }

    /// Sleeps `wait` if it fits, else ends the sweep with `why`.
    async fn wait(&self, wait: Duration, deadline: Instant, why: &str) -> Result<(), Stop> {
        // Leave time to answer before the request's own deadline.
        let room = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_secs(5));
        if wait > self.settings.max_wait || wait > room {
            return Err(Stop::RateLimited(why.to_string()));
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_an_app_there_is_nothing_to_sweep() {
        let s = Sweeper::new(
            None,
            Arc::new(MemoryMark::default()),
            SweepSettings::default(),
        );
        let r = s
            .sweep(Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(r.note.as_deref(), Some(NO_APP_NOTE));
        assert_eq!(r.redelivered, 0);
        assert!(!s.is_configured());
    }
}
