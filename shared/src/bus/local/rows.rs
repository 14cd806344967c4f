//! The bus's tables: their schema (and the step that brings an older home
//! up to it), and messages to and from rows. A message's row holds its
//! metadata and where its body is ([`Stored`]): in the row, or in a segment.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use rusqlite::{Connection, params};

use super::segments::{BodyRef, Stored};
use super::writer::Db;
use super::{db_err, millis_to_time};
use crate::bus::PublishedMessage;
use crate::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    ordering_key TEXT,
    publish_time_ms INTEGER NOT NULL,
    segment TEXT,
    seg_offset INTEGER,
    seg_len INTEGER,
    seg_crc INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages(topic, id);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(publish_time_ms);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    push_endpoint TEXT NOT NULL,
    audience TEXT,
    max_attempts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS subscriptions_by_topic ON subscriptions(topic);
CREATE TABLE IF NOT EXISTS deliveries (
    subscription TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    ordering_key TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_ms INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until_ms INTEGER,
    dead_ms INTEGER,
    PRIMARY KEY (subscription, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_due ON deliveries(dead_ms, due_ms);
CREATE INDEX IF NOT EXISTS deliveries_by_key ON deliveries(subscription, ordering_key, message_id);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries(message_id);
";

/// The columns a body's place takes, added to a home made before segments.
const SEGMENT_COLUMNS: [&str; 4] = [
    "segment TEXT",
    "seg_offset INTEGER",
    "seg_len INTEGER",
    "seg_crc INTEGER",
];

/// The columns [`message_row`] reads, in its order, for a query whose
/// messages table is named `m`.
pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.data, m.segment, m.seg_offset, m.seg_len, \
     m.seg_crc, m.attributes, m.ordering_key, m.publish_time_ms";

/// Creates the tables, or brings an older home's up to date. Another
/// process may be doing the same: the check and the change share one
/// write transaction.
pub(super) fn prepare(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA).map_err(db_err)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let migrated = add_segment_columns(conn);
    let ended = if migrated.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    conn.execute_batch(ended).map_err(db_err)?;
    migrated?;
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_by_segment ON messages(segment)
         WHERE segment IS NOT NULL",
    )
    .map_err(db_err)
}

fn add_segment_columns(conn: &Connection) -> Result<()> {
    let has = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'segment'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db_err)?;
    if has == 0 {
        for column in SEGMENT_COLUMNS {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {column}"))
                .map_err(db_err)?;
        }
    }
    Ok(())
}

/// A message as its row has it; the body is read by [`published`].
pub(super) struct MessageRow {
    pub id: i64,
    pub stored: Stored,
    pub attributes: String,
    pub ordering_key: Option<String>,
    pub publish_ms: i64,
}

/// Reads [`MESSAGE_COLUMNS`] from `r`, starting at column `at`.
pub(super) fn message_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<MessageRow> {
    let segment: Option<String> = r.get(at + 2)?;
    let stored = match segment {
        None => Stored::Inline(Bytes::from(r.get::<_, Vec<u8>>(at + 1)?)),
        Some(segment) => Stored::Segment(BodyRef {
            segment,
            offset: r.get(at + 3)?,
            len: r.get(at + 4)?,
            crc: r.get(at + 5)?,
        }),
    };
    Ok(MessageRow {
        id: r.get(at)?,
        stored,
        attributes: r.get(at + 6)?,
        ordering_key: r.get(at + 7)?,
        publish_ms: r.get(at + 8)?,
    })
}

/// The message of a row, its body read back.
pub(super) fn published(db: &Db<'_>, row: MessageRow) -> Result<PublishedMessage> {
    let id = row.id;
    let attributes = serde_json::from_str(&row.attributes)
        .map_err(|e| Error::DataLoss(format!("local bus message {id}: bad attributes: {e}")))?;
    let data = db
        .body(row.stored)
        .map_err(|e| Error::DataLoss(format!("local bus message {id}: {e}")))?;
    Ok(PublishedMessage {
        id: id.to_string(),
        data,
        attributes,
        ordering_key: row.ordering_key,
        publish_time: millis_to_time(row.publish_ms),
    })
}

/// Inserts a message and a pending delivery for each subscription of its
/// topic; the writer commits.
pub(super) fn insert_message(
    conn: &Connection,
    topic: &str,
    stored: &Stored,
    attributes: &BTreeMap<String, String>,
    ordering_key: Option<&str>,
    now: i64,
) -> Result<i64> {
    let attributes = serde_json::to_string(attributes)
        .map_err(|e| Error::Internal(format!("encoding attributes: {e}")))?;
    let (data, at): (&[u8], Option<&BodyRef>) = match stored {
        Stored::Inline(data) => (data, None),
        Stored::Segment(at) => (&[], Some(at)),
    };
    conn.prepare_cached(
        "INSERT INTO messages (topic, data, attributes, ordering_key, publish_time_ms,
                               segment, seg_offset, seg_len, seg_crc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            topic,
            data,
            attributes,
            ordering_key,
            now,
            at.map(|a| &a.segment),
            at.map(|a| a.offset),
            at.map(|a| a.len),
            at.map(|a| a.crc),
        ])
    })
    .map_err(db_err)?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO deliveries (subscription, message_id, ordering_key, attempts, due_ms)
         SELECT name, ?1, ?2, 0, ?3 FROM subscriptions WHERE topic = ?4",
    )
    .and_then(|mut s| s.execute(params![id, ordering_key, now, topic]))
    .map_err(db_err)?;
    Ok(id)
}

/// Deletes messages published before `cutoff`, with their deliveries, then
/// the segments no message names any more (once this commits). Returns
/// how many messages.
pub(super) fn prune(db: &Db<'_>, cutoff_ms: i64) -> Result<usize> {
    db.execute(
        "DELETE FROM deliveries WHERE message_id IN
             (SELECT id FROM messages WHERE publish_time_ms < ?1)",
        [cutoff_ms],
    )
    .map_err(db_err)?;
    let pruned = db
        .execute(
            "DELETE FROM messages WHERE publish_time_ms < ?1",
            [cutoff_ms],
        )
        .map_err(db_err)?;
    let referenced = db
        .prepare_cached("SELECT DISTINCT segment FROM messages WHERE segment IS NOT NULL")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<HashSet<String>>>()
        })
        .map_err(db_err)?;
    // Files are not part of the transaction: they go once it committed,
    // so a rollback can never leave a row naming a deleted segment.
    db.remove_unreferenced_segments_after_commit(referenced);
    Ok(pruned)
}
