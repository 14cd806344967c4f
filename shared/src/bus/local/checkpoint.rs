//! The bus database's WAL checkpoints, off the commit path. SQLite's
//! automatic checkpoint runs inside the commit that crosses its threshold:
//! that commit copies the WAL's pages into `bus.db` and fsyncs it while
//! every publish of its batch waits (measured under load: 9 checkpoints in
//! 4 s, each ~170 page writes and a 1 ms fsync, inside 1 commit in 85:
//! the p99). Here the writer turns the automatic checkpoint off and, after
//! answering each batch, asks a thread of its own, on its own connection,
//! for a PASSIVE checkpoint every [`REQUEST_EVERY`] commits; PASSIVE never
//! blocks the writer.
//!
//! A PASSIVE checkpoint beside a busy writer may never catch up with it,
//! and SQLite restarts the WAL from its start only once one has; so when
//! the WAL passes [`WAL_FRAMES_LIMIT`] uncaught, the writer checkpoints
//! itself, between batches (its callers already answered), which lets the
//! next commit restart the WAL. The WAL stays bounded either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use rusqlite::Connection;

use crate::local::sqlite_error as db_err;
use crate::{Error, Result};

/// Commits between checkpoint requests (a commit appends ~10-25 frames).
const REQUEST_EVERY: u32 = 32;
/// WAL frames (4 KiB pages) past which the writer checkpoints itself.
const WAL_FRAMES_LIMIT: i64 = 4096;

/// The writer's side: counts commits and asks for checkpoints.
pub(super) struct Checkpointer {
    requests: Option<SyncSender<()>>,
    /// Frames in a WAL the last checkpoint could not wholly copy (0 when it
    /// did: the next commit restarts the WAL).
    wal_frames: Arc<AtomicI64>,
    commits: u32,
}

impl Checkpointer {
    /// Turns `writer`'s automatic checkpoint off and starts the thread that
    /// checkpoints on `conn`.
    pub(super) fn start(writer: &Connection, conn: Connection) -> Result<Checkpointer> {
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db_err)?;
        let (requests, queue) = std::sync::mpsc::sync_channel(1);
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = wal_frames.clone();
        std::thread::Builder::new()
            .name("local-bus-checkpoint".into())
            .spawn(move || serve(&conn, &queue, &frames))
            .map_err(|e| {
                Error::Internal(format!("cannot start the local bus checkpointer: {e}"))
            })?;
        Ok(Checkpointer {
            requests: Some(requests),
            wal_frames,
            commits: 0,
        })
    }

    /// After each commit of the writer (its callers answered), on the
    /// writer's connection.
    pub(super) fn committed(&mut self, writer: &Connection) {
        self.commits = self.commits.wrapping_add(1);
        if self.wal_frames.load(Ordering::Relaxed) > WAL_FRAMES_LIMIT {
            // The background checkpoints are not catching up: do what
            // SQLite's automatic checkpoint does, once, then hand back.
            checkpoint(writer, &self.wal_frames);
            return;
        }
        if !self.commits.is_multiple_of(REQUEST_EVERY) {
            return;
        }
        let asked = self.requests.as_ref().map(|r| r.try_send(()));
        match asked {
            // Full: a checkpoint is already asked for and will see our frames.
            Some(Ok(()) | Err(TrySendError::Full(()))) => {}
            // The thread is gone: checkpoint inline from now on.
            Some(Err(TrySendError::Disconnected(()))) | None => {
                self.requests = None;
                checkpoint(writer, &self.wal_frames);
            }
        }
    }
}

fn serve(conn: &Connection, queue: &Receiver<()>, frames: &AtomicI64) {
    while queue.recv().is_ok() {
        checkpoint(conn, frames);
    }
}

/// A PASSIVE checkpoint: copies what it can without waiting for anyone.
/// Its failure only delays the copy, so it is logged, not returned.
fn checkpoint(conn: &Connection, frames: &AtomicI64) {
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match done {
        Ok((log, copied)) => {
            let behind = if copied >= log { 0 } else { log };
            frames.store(behind, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %db_err(e), "local bus checkpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Home;

    fn db_bytes(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("bus.db")).map_or(0, |m| m.len())
    }

    fn writer_and_checkpointer() -> (tempfile::TempDir, Connection, Checkpointer) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let writer = home.db("bus").unwrap();
        writer.execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let cp = Checkpointer::start(&writer, home.db("bus").unwrap()).unwrap();
        (dir, writer, cp)
    }

    fn insert(writer: &Connection, cp: &mut Checkpointer, n: usize) {
        let row = vec![7u8; 3000];
        for _ in 0..n {
            writer
                .execute("INSERT INTO t (v) VALUES (?1)", [&row])
                .unwrap();
            cp.committed(writer);
        }
    }

    #[test]
    fn the_writer_never_checkpoints_its_thread_does() {
        let (dir, writer, mut cp) = writer_and_checkpointer();
        let auto: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "no checkpoint inside a commit");
        let before = db_bytes(dir.path());
        insert(&writer, &mut cp, 2 * REQUEST_EVERY as usize);
        // The rows reach bus.db itself: someone checkpointed, not the writer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while db_bytes(dir.path()) < before + 64 * 3000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn without_its_thread_the_writer_checkpoints_between_batches() {
        let (dir, writer, mut cp) = writer_and_checkpointer();
        cp.requests = None;
        let before = db_bytes(dir.path());
        insert(&writer, &mut cp, REQUEST_EVERY as usize);
        assert!(db_bytes(dir.path()) >= before + 32 * 3000);
        // And a WAL the thread could not catch up with is copied at once.
        cp.wal_frames.store(WAL_FRAMES_LIMIT + 1, Ordering::Relaxed);
        let before = db_bytes(dir.path());
        insert(&writer, &mut cp, 1);
        assert!(db_bytes(dir.path()) > before);
        assert_eq!(cp.wal_frames.load(Ordering::Relaxed), 0);
    }
}
