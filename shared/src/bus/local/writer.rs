//! The bus database's single writer: one thread per home and process owns
//! the connection and runs every piece of database work sent to it. Work
//! that queues up while a commit is being fsynced is run together in the
//! next transaction (group commit), so concurrent publishes, claims and
//! acks share one fsync instead of queueing for one each, and nothing in
//! this process waits on SQLite's file lock (whose busy handler sleeps).
//!
//! Each piece of work runs inside its own savepoint: one that fails is
//! rolled back alone and gets its own error; the others commit. Nobody gets
//! an answer before the transaction holding their work has committed
//! (synchronous=FULL: the WAL is fsynced), so a publish's id means durable.
//! A publish's body goes to the segment log first ([`super::segments`]):
//! the batch's bodies are written and synced before the transaction that
//! names them begins, so no committed row points at bytes a crash can lose.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use bytes::Bytes;
use rusqlite::Connection;

use super::checkpoint::Checkpointer;
use super::segments::{INLINE_MAX, Segments, Stored};
use crate::local::sqlite_error as db_err;
use crate::{Error, Result};

/// Work items per transaction at most, so one commit's latency stays short.
const MAX_BATCH: usize = 512;
/// Message bytes per transaction at most (a 10 MB message still goes alone).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What a writer works on, opened by its bus: its connection, a second one
/// for checkpoints, and the segment log.
pub(super) struct Store {
    pub conn: Connection,
    pub checkpoint: Connection,
    pub segments: Segments,
}

/// A handle on the writer thread; the thread stops when the last handle drops.
pub(super) struct Writer {
    jobs: Sender<Box<dyn Job>>,
}

/// One piece of work: run inside the batch's transaction, then told whether
/// that transaction committed.
trait Job: Send {
    /// Bytes this work writes, roughly (batches are bounded by it).
    fn weight(&self) -> usize;
    /// Puts this work's body in the segment log, before the transaction.
    fn stage(&mut self, _segments: &mut Segments) -> Result<()> {
        Ok(())
    }
    fn run(&mut self, db: &Db<'_>);
    fn finish(self: Box<Self>, committed: &Result<()>);
}

/// What work runs on: the transaction's connection (it derefs to it) and
/// the segment log, for reading bodies back and removing old segments.
pub(super) struct Db<'a> {
    conn: &'a Connection,
    segments: &'a RefCell<Segments>,
    /// Segments to keep when unreferenced ones are removed after commit.
    keep_segments: RefCell<Option<HashSet<String>>>,
}

impl Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Db<'_> {
    /// A stored body, read back (from a segment: checked against its CRC).
    pub(super) fn body(&self, stored: Stored) -> Result<Vec<u8>> {
        match stored {
            Stored::Inline(data) => Ok(data.into()),
            Stored::Segment(at) => self.segments.borrow_mut().read(&at),
        }
    }

    /// Once this transaction commits, deletes the segments not in
    /// `referenced` (the ones its rows name) that no writer holds.
    pub(super) fn remove_unreferenced_segments_after_commit(&self, referenced: HashSet<String>) {
        *self.keep_segments.borrow_mut() = Some(referenced);
    }
}

enum Reply<T> {
    Blocking(SyncSender<Result<T>>),
    Async(tokio::sync::oneshot::Sender<Result<T>>),
    /// Nobody waits: housekeeping that reports its own outcome.
    Detached,
}

struct Call<T, F> {
    work: Option<F>,
    weight: usize,
    result: Option<Result<T>>,
    reply: Reply<T>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Db<'_>) -> Result<T> + Send,
{
    fn weight(&self) -> usize {
        self.weight
    }

    fn run(&mut self, db: &Db<'_>) {
        let Some(work) = self.work.take() else { return };
        self.result = Some(in_savepoint(db, work));
    }

    fn finish(self: Box<Self>, committed: &Result<()>) {
        answer(self.reply, self.result, committed);
    }
}

/// Work that writes a message body: the body is staged in the segment log
/// (or kept for the row when small) and the work gets where it went.
struct WithBody<T, F> {
    body: Option<Bytes>,
    stored: Option<Stored>,
    work: Option<F>,
    result: Option<Result<T>>,
    reply: Reply<T>,
}

impl<T, F> WithBody<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Db<'_>, Stored) -> Result<T> + Send + 'static,
{
    fn boxed(body: Bytes, work: F, reply: Reply<T>) -> Box<dyn Job> {
        Box::new(WithBody {
            body: Some(body),
            stored: None,
            work: Some(work),
            result: None,
            reply,
        })
    }
}

impl<T, F> Job for WithBody<T, F>
where
    T: Send,
    F: FnOnce(&Db<'_>, Stored) -> Result<T> + Send,
{
    fn weight(&self) -> usize {
        self.body.as_ref().map_or(0, Bytes::len)
    }

    fn stage(&mut self, segments: &mut Segments) -> Result<()> {
        let Some(body) = self.body.take() else {
            return Ok(());
        };
        self.stored = Some(if body.len() <= INLINE_MAX {
            Stored::Inline(body)
        } else {
            Stored::Segment(segments.stage(&body)?)
        });
        Ok(())
    }

    fn run(&mut self, db: &Db<'_>) {
        let (Some(work), Some(stored)) = (self.work.take(), self.stored.take()) else {
            return;
        };
        self.result = Some(in_savepoint(db, |db| work(db, stored)));
    }

    fn finish(self: Box<Self>, committed: &Result<()>) {
        answer(self.reply, self.result, committed);
    }
}

/// Tells the caller how its work ended, once its transaction did.
fn answer<T>(reply: Reply<T>, result: Option<Result<T>>, committed: &Result<()>) {
    let result = match committed {
        Ok(()) => {
            result.unwrap_or_else(|| Err(Error::Internal("local bus: work never ran".into())))
        }
        Err(e) => Err(e.clone()),
    };
    // The caller may have given up waiting; nothing to tell it then.
    match reply {
        Reply::Blocking(tx) => drop(tx.send(result)),
        Reply::Async(tx) => drop(tx.send(result)),
        Reply::Detached => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "local bus: background work was not committed");
            }
        }
    }
}

/// Runs `work` so that its failure (or panic) undoes only its own writes.
fn in_savepoint<'a, T>(db: &Db<'a>, work: impl FnOnce(&Db<'a>) -> Result<T>) -> Result<T> {
    let conn = db.conn;
    statement(conn, "SAVEPOINT work")?;
    let result = catch_unwind(AssertUnwindSafe(|| work(db))).unwrap_or_else(|_| {
        Err(Error::Internal(
            "local bus: database work panicked; its writes were rolled back".into(),
        ))
    });
    let ended = if result.is_ok() {
        statement(conn, "RELEASE work")
    } else {
        statement(conn, "ROLLBACK TO work").and_then(|()| statement(conn, "RELEASE work"))
    };
    ended.and(result)
}

/// One cached statement: these run for every piece of work, and parsing
/// them each time would cost more than most of the work itself.
fn statement(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(db_err)
}

impl Writer {
    /// The writer of `home`'s bus database in this process, started on
    /// `open()`'s connection when there is none yet.
    pub(super) fn for_home(
        home: &Path,
        open: impl FnOnce() -> Result<Store>,
    ) -> Result<Arc<Writer>> {
        static WRITERS: LazyLock<Mutex<HashMap<PathBuf, Weak<Writer>>>> =
            LazyLock::new(Default::default);
        let key = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        let mut map = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(w) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let writer = Arc::new(Writer::start(open()?)?);
        map.insert(key, Arc::downgrade(&writer));
        Ok(writer)
    }

    fn start(store: Store) -> Result<Writer> {
        let Store {
            conn,
            checkpoint,
            segments,
        } = store;
        let checkpointer = Checkpointer::start(&conn, checkpoint)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("local-bus-writer".into())
            .spawn(move || serve(conn, segments, checkpointer, queue))
            .map_err(|e| Error::Internal(format!("cannot start the local bus writer: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `work` in the next transaction and waits for its commit,
    /// blocking this thread.
    pub(super) fn call<T, F>(&self, weight: usize, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(weight, work, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| lost())?
    }

    /// Runs `work` in the next transaction; resolves once it committed.
    pub(super) async fn run<T, F>(&self, weight: usize, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(weight, work, Reply::Async(tx))?;
        rx.await.map_err(|_| lost())?
    }

    /// Stores `body` (in the segment log, or for the row when small), then
    /// runs `work` with where it went in the next transaction; resolves
    /// once that committed.
    pub(super) async fn run_with_body<T, F>(&self, body: Bytes, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>, Stored) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WithBody::boxed(body, work, Reply::Async(tx)))?;
        rx.await.map_err(|_| lost())?
    }

    /// [`run_with_body`](Self::run_with_body), blocking this thread.
    #[cfg(test)]
    pub(super) fn call_with_body<T, F>(&self, body: Bytes, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>, Stored) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(WithBody::boxed(body, work, Reply::Blocking(tx)))?;
        rx.recv().map_err(|_| lost())?
    }

    /// Queues `work` without waiting for it; work queued later by this
    /// process runs after it.
    pub(super) fn detach<F>(&self, work: F)
    where
        F: FnOnce(&Db<'_>) -> Result<()> + Send + 'static,
    {
        if let Err(e) = self.submit(0, work, Reply::Detached) {
            tracing::warn!(error = %e, "local bus: background work not queued");
        }
    }

    fn submit<T, F>(&self, weight: usize, work: F, reply: Reply<T>) -> Result<()>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T> + Send + 'static,
    {
        self.send(Box::new(Call {
            work: Some(work),
            weight,
            result: None,
            reply,
        }))
    }

    fn send(&self, job: Box<dyn Job>) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| Error::Unavailable("the local bus writer has stopped".into()))
    }
}

fn lost() -> Error {
    Error::Internal("local bus: the writer dropped a piece of work unanswered".into())
}

/// The writer thread: take what is queued, run it in one transaction,
/// commit, answer everyone; until every handle is gone.
fn serve(
    conn: Connection,
    segments: Segments,
    mut checkpointer: Checkpointer,
    queue: Receiver<Box<dyn Job>>,
) {
    let segments = RefCell::new(segments);
    let db = Db {
        conn: &conn,
        segments: &segments,
        keep_segments: RefCell::new(None),
    };
    let mut held: Option<Box<dyn Job>> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut bytes = first.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(job) if bytes.saturating_add(job.weight()) > MAX_BATCH_BYTES => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    bytes = bytes.saturating_add(job.weight());
                    batch.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let committed = run_batch(&db, &mut batch);
        for job in batch {
            job.finish(&committed);
        }
        if committed.is_ok() {
            checkpointer.committed(&conn);
        }
    }
}

fn run_batch(db: &Db<'_>, batch: &mut [Box<dyn Job>]) -> Result<()> {
    stage_bodies(&mut db.segments.borrow_mut(), batch)?;
    let conn = db.conn;
    statement(conn, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        job.run(db);
    }
    let keep = db.keep_segments.borrow_mut().take();
    match statement(conn, "COMMIT") {
        Ok(()) => {
            if let Some(keep) = keep {
                remove_segments(&mut db.segments.borrow_mut(), &keep);
            }
            Ok(())
        }
        Err(e) => {
            // A failed COMMIT may leave the transaction open; whatever it
            // held is not durable, and every caller is told so.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Housekeeping after a prune committed: a failure only leaves files for
/// the next prune, so it is logged, never returned.
fn remove_segments(segments: &mut Segments, keep: &HashSet<String>) {
    match segments.remove_unreferenced(keep) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(segments = n, "local bus removed segments no message names"),
        Err(e) => tracing::warn!(error = %e, "local bus could not remove old segments"),
    }
}

/// Writes and syncs the batch's bodies. If that fails, nothing of the
/// batch runs: every caller is told, and the bytes are garbage no row names.
fn stage_bodies(segments: &mut Segments, batch: &mut [Box<dyn Job>]) -> Result<()> {
    segments.begin();
    let staged = batch.iter_mut().try_for_each(|job| job.stage(segments));
    if staged.is_err() {
        segments.discard_staged();
    }
    staged.and_then(|()| segments.flush())
}
