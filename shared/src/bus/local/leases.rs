//! Delivery bookkeeping: who may push which row when. A dispatcher leases
//! due rows in one transaction; the lease expires on its own, so a row whose
//! dispatcher died is retried by whoever polls next (at-least-once).
//! Each operation is a function on the writer's connection; [`LocalBus`]
//! runs it there, blocking (these methods) or not (the dispatcher's).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, MESSAGE_COLUMNS, MessageRow};
use super::writer::Db;
use super::{DEAD_LETTER_SUFFIX, LocalBus, db_err, subscription_resource_name};
use crate::bus::PublishedMessage;
use crate::{Error, Result};

/// A delivery whose body cannot be read counts as a failed attempt and is
/// tried again this much later (a segment on a disk that comes back).
const UNREADABLE_RETRY_MS: i64 = 60_000;

/// One leased delivery, ready to push.
#[derive(Debug, Clone)]
pub(super) struct Claimed {
    pub subscription: String,
    pub push_endpoint: String,
    pub audience: Option<String>,
    /// 1 for the first attempt (Pub/Sub's deliveryAttempt).
    pub attempt: u32,
    pub message_seq: i64,
    pub message: PublishedMessage,
}

impl Claimed {
    pub fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(&self.push_endpoint)
    }
}

impl LocalBus {
    /// Runs one of this module's operations on the writer, without
    /// blocking a thread (the dispatcher's way).
    pub(super) async fn leases<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        self.writer.run(0, work).await
    }
}

/// The same operations, blocking, for tests that choose the time.
#[cfg(test)]
impl LocalBus {
    /// Leases up to `limit` due deliveries for `owner` until `lease_until`.
    /// A row whose attempts are used up (its last lease expired unanswered)
    /// is dead-lettered instead.
    pub(super) fn claim(
        &self,
        owner: &str,
        limit: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Claimed>> {
        let owner = owner.to_string();
        self.writer
            .call(0, move |c| claim(c, &owner, limit, now, lease_until))
    }

    /// The endpoint acked: the delivery is done, whoever holds the lease now.
    pub(super) fn ack(&self, subscription: &str, seq: i64) -> Result<()> {
        let subscription = subscription.to_string();
        self.writer.call(0, move |c| ack(c, &subscription, seq))
    }

    /// The endpoint nacked: retry at `retry_at`, or dead-letter when the
    /// attempts are used up. Returns true when dead-lettered. A row whose
    /// lease moved to another dispatcher is left alone.
    pub(super) fn nack(
        &self,
        owner: &str,
        subscription: &str,
        seq: i64,
        now: i64,
        retry_at: i64,
    ) -> Result<bool> {
        let (owner, subscription) = (owner.to_string(), subscription.to_string());
        self.writer.call(0, move |c| {
            nack(c, &owner, &subscription, seq, now, retry_at)
        })
    }

    /// Gives back this owner's leases (a clean stop) so a restart retries
    /// them at once instead of after the lease expires.
    pub(super) fn release(&self, owner: &str) -> Result<usize> {
        let owner = owner.to_string();
        self.writer.call(0, move |c| release(c, &owner))
    }

    /// When the next pending delivery could become due (ms), if any: the
    /// earliest retry time or lease expiry.
    pub(super) fn next_due(&self) -> Result<Option<i64>> {
        self.writer.call(0, |db| next_due(db))
    }
}

/// Leases up to `limit` due deliveries for `owner` until `lease_until`.
/// A row whose attempts are used up (its last lease expired unanswered)
/// is dead-lettered instead.
pub(super) fn claim(
    tx: &Db<'_>,
    owner: &str,
    limit: usize,
    now: i64,
    lease_until: i64,
) -> Result<Vec<Claimed>> {
    let rows = tx
        .prepare_cached(&format!(
            "SELECT d.subscription, d.attempts, s.max_attempts, s.push_endpoint, s.audience,
                    {MESSAGE_COLUMNS}
             FROM deliveries d
             JOIN subscriptions s ON s.name = d.subscription
             JOIN messages m ON m.id = d.message_id
             WHERE d.dead_ms IS NULL AND d.due_ms <= ?1
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?1)
               AND (d.ordering_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries e
                   WHERE e.subscription = d.subscription
                     AND e.ordering_key = d.ordering_key
                     AND e.dead_ms IS NULL AND e.message_id < d.message_id))
             ORDER BY d.due_ms, d.message_id
             LIMIT ?2"
        ))
        .and_then(|mut stmt| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            stmt.query_map(params![now, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    rows::message_row(r, 5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    let mut claimed = Vec::with_capacity(rows.len());
    for (sub, attempts, max, endpoint, audience, row) in rows {
        let seq = row.id;
        if attempts >= max {
            dead_letter(tx, &sub, seq, attempts, now)?;
            continue;
        }
        let message = match rows::published(tx, row) {
            Ok(message) => message,
            Err(e) => {
                unreadable(tx, &sub, seq, now, &e)?;
                continue;
            }
        };
        tx.prepare_cached(
            "UPDATE deliveries SET attempts = attempts + 1, lease_owner = ?1, lease_until_ms = ?2
                 WHERE subscription = ?3 AND message_id = ?4",
        )
        .and_then(|mut s| s.execute(params![owner, lease_until, sub, seq]))
        .map_err(db_err)?;
        claimed.push(Claimed {
            subscription: sub,
            push_endpoint: endpoint,
            audience,
            attempt: attempts + 1,
            message_seq: seq,
            message,
        });
    }
    Ok(claimed)
}

/// A delivery whose message cannot be read (its segment damaged or gone)
/// spends an attempt and waits, loudly, so it never holds up the others;
/// once its attempts are used up it is dead-lettered like any other.
fn unreadable(tx: &Connection, subscription: &str, seq: i64, now: i64, e: &Error) -> Result<()> {
    tracing::error!(
        subscription = %subscription_resource_name(subscription),
        message_id = seq,
        error = %e,
        "local bus cannot read a message it must deliver; it will be retried, then dead-lettered"
    );
    let retry_at = now.saturating_add(UNREADABLE_RETRY_MS);
    tx.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, due_ms = ?1,
             lease_owner = NULL, lease_until_ms = NULL
         WHERE subscription = ?2 AND message_id = ?3",
    )
    .and_then(|mut s| s.execute(params![retry_at, subscription, seq]))
    .map_err(db_err)
    .map(drop)
}

pub(super) fn ack(conn: &Connection, subscription: &str, seq: i64) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM deliveries WHERE subscription = ?1 AND message_id = ?2 AND dead_ms IS NULL",
    )
    .and_then(|mut s| s.execute(params![subscription, seq]))
    .map_err(db_err)
    .map(drop)
}

pub(super) fn nack(
    tx: &Connection,
    owner: &str,
    subscription: &str,
    seq: i64,
    now: i64,
    retry_at: i64,
) -> Result<bool> {
    let row: Option<(u32, u32)> = tx
        .query_row(
            "SELECT d.attempts, s.max_attempts FROM deliveries d
                 JOIN subscriptions s ON s.name = d.subscription
                 WHERE d.subscription = ?1 AND d.message_id = ?2
                   AND d.dead_ms IS NULL AND d.lease_owner = ?3",
            params![subscription, seq, owner],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    let dead = match row {
        None => false,
        Some((attempts, max)) if attempts >= max => {
            dead_letter(tx, subscription, seq, attempts, now)?;
            true
        }
        Some(_) => {
            tx.execute(
                "UPDATE deliveries SET due_ms = ?1, lease_owner = NULL, lease_until_ms = NULL
                     WHERE subscription = ?2 AND message_id = ?3",
                params![retry_at, subscription, seq],
            )
            .map_err(db_err)?;
            false
        }
    };
    Ok(dead)
}

pub(super) fn release(conn: &Connection, owner: &str) -> Result<usize> {
    conn.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = ?1",
        [owner],
    )
    .map_err(db_err)
}

pub(super) fn next_due(conn: &Connection) -> Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MIN(MAX(due_ms, COALESCE(lease_until_ms, due_ms))) FROM deliveries
         WHERE dead_ms IS NULL",
    )
    .and_then(|mut s| s.query_row([], |r| r.get(0)))
    .map_err(db_err)
}

/// Marks the delivery dead and copies the message to `<topic>-dead-letter`
/// with Pub/Sub's dead-letter attributes, so nothing dead-lettered is lost.
fn dead_letter(
    tx: &Connection,
    subscription: &str,
    seq: i64,
    attempts: u32,
    now: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE deliveries SET dead_ms = ?1, lease_owner = NULL, lease_until_ms = NULL
         WHERE subscription = ?2 AND message_id = ?3",
        params![now, subscription, seq],
    )
    .map_err(db_err)?;
    let (topic, original): (String, MessageRow) = tx
        .query_row(
            &format!("SELECT m.topic, {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?1"),
            [seq],
            |r| Ok((r.get(0)?, rows::message_row(r, 1)?)),
        )
        .map_err(db_err)?;
    // The copy names the same body: dead-lettering writes no body twice,
    // and a body that cannot be read is still dead-lettered.
    let mut attributes: BTreeMap<String, String> = serde_json::from_str(&original.attributes)
        .map_err(|e| Error::DataLoss(format!("local bus message {seq}: bad attributes: {e}")))?;
    attributes.insert(
        "CloudPubSubDeadLetterSourceSubscription".into(),
        subscription.to_string(),
    );
    attributes.insert(
        "CloudPubSubDeadLetterSourceSubscriptionProject".into(),
        super::LOCAL_PROJECT.to_string(),
    );
    attributes.insert(
        "CloudPubSubDeadLetterSourceDeliveryCount".into(),
        attempts.to_string(),
    );
    attributes.insert(
        "CloudPubSubDeadLetterSourceTopicPublishTime".into(),
        super::millis_to_time(original.publish_ms)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let dead_topic = format!("{topic}{DEAD_LETTER_SUFFIX}");
    let copy = rows::insert_message(
        tx,
        &dead_topic,
        &original.stored,
        &attributes,
        original.ordering_key.as_deref(),
        now,
    )?;
    tracing::warn!(
        subscription = %subscription_resource_name(subscription),
        message_id = seq,
        attempts,
        dead_letter_topic = %dead_topic,
        dead_letter_message_id = copy,
        "local bus dead-lettered a message after its last delivery attempt"
    );
    Ok(())
}
