//! The local durable bus: Pub/Sub's topic and push-subscription model on one
//! SQLite database under `PATCHPANDA_HOME` (`bus.db`).
//!
//! - `publish` commits the message and one delivery row per subscription of
//!   the topic, and returns the id only after the commit (WAL fsynced), so
//!   an accepted message survives a crash or power loss. All database work
//!   of a process on one home goes through one writer thread ([`writer`]),
//!   which commits whatever queued up meanwhile in one transaction.
//! - Topics are created implicitly on first publish (the local stack is
//!   config-free); subscriptions are created with [`LocalBus::subscribe`] and
//!   receive messages published after they exist, like Pub/Sub's.
//! - Topics keep messages for 7 days, delivered or not ([`LocalBus::messages`]).
//! - The [`Dispatcher`] pushes pending deliveries; several processes may
//!   share one home because delivery rows are leased in the database.

mod checkpoint;
mod dispatcher;
mod envelope;
mod leases;
mod rows;
mod segments;
mod validate;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::bus::{Bus, Message, PublishedMessage};
use crate::local::Home;
use crate::local::sqlite_error as db_err;
use crate::{Error, Result};

pub use dispatcher::Dispatcher;
pub use envelope::PushEnvelope;
use rows::MESSAGE_COLUMNS;
use segments::{Segments, Stored};
use writer::Writer;

/// How long a topic keeps its messages (Pub/Sub's topic retention we mirror).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Pub/Sub's default `maxDeliveryAttempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The project part of local resource names.
pub const LOCAL_PROJECT: &str = "local";
/// Dead-lettered messages are copied to `<topic><DEAD_LETTER_SUFFIX>`.
pub const DEAD_LETTER_SUFFIX: &str = "-dead-letter";
/// Pruning is cheap but not free: at most once a minute per process.
const PRUNE_EVERY_MS: i64 = 60_000;
/// Statements the writer keeps prepared (every statement of the bus).
const STATEMENT_CACHE: usize = 64;

/// A push subscription of the local bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscription id; the envelope names it `projects/local/subscriptions/<name>`.
    pub name: String,
    pub topic: String,
    /// The http(s) URL messages are POSTed to.
    pub push_endpoint: String,
    /// The `aud` of the push token; None = the push endpoint (Pub/Sub's default).
    #[serde(default)]
    pub audience: Option<String>,
    /// Attempts before dead-lettering (Pub/Sub: 5-100, default 5).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl Subscription {
    pub fn new(
        name: impl Into<String>,
        topic: impl Into<String>,
        push_endpoint: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            topic: topic.into(),
            push_endpoint: push_endpoint.into(),
            audience: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The full resource name, as push envelopes carry it.
    pub fn resource_name(&self) -> String {
        subscription_resource_name(&self.name)
    }

    /// The audience push tokens are minted for.
    pub fn effective_audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(&self.push_endpoint)
    }
}

pub fn subscription_resource_name(name: &str) -> String {
    format!("projects/{LOCAL_PROJECT}/subscriptions/{name}")
}

/// The local bus. Cheap to clone; every bus of one home in a process
/// shares one writer thread and its connection.
#[derive(Clone)]
pub struct LocalBus {
    writer: Arc<Writer>,
    /// Wakes a dispatcher of this process on the same home right after a
    /// publish; other processes' publishes are found by polling.
    notify: Arc<Notify>,
    retention: Duration,
    last_prune_ms: Arc<AtomicI64>,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl LocalBus {
    pub fn open(home: &Home) -> Result<LocalBus> {
        let writer = Writer::for_home(home.path(), || {
            let conn = home.db("bus")?;
            rows::prepare(&conn)?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            Ok(writer::Store {
                conn,
                checkpoint: home.db("bus")?,
                segments: Segments::open(home.path())?,
            })
        })?;
        Ok(LocalBus {
            writer,
            notify: notifier_for(home.path()),
            retention: DEFAULT_RETENTION,
            last_prune_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Overrides the 7-day retention (tests, or a short-lived dev home).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// A topic's retained messages, oldest first.
    pub fn messages(&self, topic: &str) -> Result<Vec<PublishedMessage>> {
        validate::resource_id("topic", topic)?;
        let cutoff = now_ms().saturating_sub(duration_ms(self.retention));
        let topic = topic.to_string();
        self.writer.call(0, move |db| {
            let rows = db
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m
                     WHERE m.topic = ?1 AND m.publish_time_ms >= ?2 ORDER BY m.id"
                ))
                .and_then(|mut s| {
                    s.query_map(params![topic, cutoff], |r| rows::message_row(r, 0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            rows.into_iter()
                .map(|row| rows::published(db, row))
                .collect()
        })
    }

    /// Creates the subscription, or updates its endpoint, audience and
    /// attempts. Its topic cannot change (as in Pub/Sub).
    pub fn subscribe(&self, sub: Subscription) -> Result<()> {
        validate::resource_id("subscription", &sub.name)?;
        validate::resource_id("topic", &sub.topic)?;
        validate::push_endpoint(&sub.push_endpoint)?;
        if let Some(aud) = &sub.audience
            && aud.trim().is_empty()
        {
            return Err(Error::InvalidArgument(
                "a push audience, when set, must not be empty".into(),
            ));
        }
        validate::max_attempts(sub.max_attempts)?;
        self.writer
            .call(0, move |conn| upsert_subscription(conn, &sub))
    }

    pub fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.writer.call(0, |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, topic, push_endpoint, audience, max_attempts FROM subscriptions
                     ORDER BY name",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Subscription {
                        name: r.get(0)?,
                        topic: r.get(1)?,
                        push_endpoint: r.get(2)?,
                        audience: r.get(3)?,
                        max_attempts: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
    }

    /// Messages this subscription gave up on, oldest first.
    pub fn dead_letters(&self, subscription: &str) -> Result<Vec<PublishedMessage>> {
        validate::resource_id("subscription", subscription)?;
        let subscription = subscription.to_string();
        self.writer.call(0, move |db| {
            let rows = db
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS}
                     FROM deliveries d JOIN messages m ON m.id = d.message_id
                     WHERE d.subscription = ?1 AND d.dead_ms IS NOT NULL ORDER BY m.id"
                ))
                .and_then(|mut s| {
                    s.query_map([subscription], |r| rows::message_row(r, 0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            rows.into_iter()
                .map(|row| rows::published(db, row))
                .collect()
        })
    }

    /// How many messages this subscription has yet to deliver (in flight included).
    pub fn pending(&self, subscription: &str) -> Result<usize> {
        validate::resource_id("subscription", subscription)?;
        let subscription = subscription.to_string();
        let n: i64 = self.writer.call(0, move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM deliveries WHERE subscription = ?1 AND dead_ms IS NULL",
            )
            .and_then(|mut s| s.query_row([subscription], |r| r.get(0)))
            .map_err(db_err)
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Deletes messages published before `cutoff`, with their deliveries
    /// (Pub/Sub drops unacked messages past retention too). Returns how many.
    pub fn prune_older_than(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let cutoff_ms = cutoff.timestamp_millis();
        let n = self.writer.call(0, move |db| rows::prune(db, cutoff_ms))?;
        self.last_prune_ms.store(now_ms(), Ordering::Relaxed);
        Ok(n)
    }

    /// Prunes past retention, at most once a minute, without waiting for
    /// it: pruning is housekeeping and must neither slow nor fail a
    /// publish. Work queued after it (in this process) sees it done.
    fn maybe_prune(&self) {
        let now = now_ms();
        if now - self.last_prune_ms.load(Ordering::Relaxed) < PRUNE_EVERY_MS {
            return;
        }
        self.last_prune_ms.store(now, Ordering::Relaxed);
        let cutoff_ms = now.saturating_sub(duration_ms(self.retention));
        self.writer.detach(move |db| {
            match rows::prune(db, cutoff_ms) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pruned = n, "local bus pruned messages past retention"),
                Err(e) => tracing::warn!(error = %e, "local bus pruning failed"),
            }
            Ok(())
        });
    }

    #[cfg(test)]
    fn publish_blocking(&self, topic: &str, message: &Message, now: i64) -> Result<String> {
        let id = self.commit_message(topic, message, now)?;
        self.maybe_prune();
        Ok(id.to_string())
    }

    #[cfg(test)]
    /// Commits the message (with whatever else the writer has queued) and
    /// returns its id once it is durable. Blocks this thread.
    fn commit_message(&self, topic: &str, message: &Message, now: i64) -> Result<i64> {
        let (topic, mut message) = (topic.to_string(), message.clone());
        let body = std::mem::take(&mut message.data);
        self.writer.call_with_body(body, move |db, stored| {
            insert_message(db, &topic, &stored, &message, now)
        })
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<String> {
        validate::resource_id("topic", topic)?;
        let mut message = message;
        if message.ordering_key.as_deref() == Some("") {
            message.ordering_key = None;
        }
        validate::message(&message)?;
        let topic = topic.to_string();
        let now = now_ms();
        let body = std::mem::take(&mut message.data);
        // No thread waits here: the writer answers once the commit is durable.
        let id = self
            .writer
            .run_with_body(body, move |db, stored| {
                insert_message(db, &topic, &stored, &message, now)
            })
            .await?;
        self.maybe_prune();
        self.notify.notify_one();
        Ok(id.to_string())
    }

    async fn check(&self) -> Result<()> {
        self.writer
            .run(0, |conn| {
                conn.query_row("SELECT COUNT(*) FROM subscriptions", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(db_err)
                .map(drop)
            })
            .await
    }
}

fn upsert_subscription(conn: &Connection, sub: &Subscription) -> Result<()> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT topic FROM subscriptions WHERE name = ?1",
            [&sub.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    if let Some(topic) = existing
        && topic != sub.topic
    {
        return Err(Error::AlreadyExists(format!(
            "subscription {} exists on topic {topic}",
            sub.name
        )));
    }
    conn.execute(
        "INSERT INTO subscriptions (name, topic, push_endpoint, audience, max_attempts)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(name) DO UPDATE SET push_endpoint = excluded.push_endpoint,
             audience = excluded.audience, max_attempts = excluded.max_attempts",
        params![
            sub.name,
            sub.topic,
            sub.push_endpoint,
            sub.audience,
            sub.max_attempts
        ],
    )
    .map_err(db_err)
    .map(drop)
}

/// A published message's row (its body already stored as `stored`).
fn insert_message(
    conn: &Connection,
    topic: &str,
    stored: &Stored,
    message: &Message,
    now: i64,
) -> Result<i64> {
    rows::insert_message(
        conn,
        topic,
        stored,
        &message.attributes,
        message.ordering_key.as_deref(),
        now,
    )
}

/// One wake-up signal per home and process: the dev stack's functions each
/// open their own bus on the home the dispatcher delivers from.
fn notifier_for(home: &Path) -> Arc<Notify> {
    static NOTIFIERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Notify>>>> =
        LazyLock::new(Default::default);
    let key = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let mut map = NOTIFIERS.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, n| n.strong_count() > 0);
    if let Some(n) = map.get(&key).and_then(Weak::upgrade) {
        return n;
    }
    let n = Arc::new(Notify::new());
    map.insert(key, Arc::downgrade(&n));
    n
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
#[path = "stored_bodies_tests.rs"]
mod stored_bodies_tests;
#[cfg(test)]
mod tests;
