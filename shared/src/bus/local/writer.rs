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

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use rusqlite::Connection;

use crate::local::sqlite_error as db_err;
use crate::{Error, Result};

/// Work items per transaction at most, so one commit's latency stays short.
const MAX_BATCH: usize = 512;
/// Message bytes per transaction at most (a 10 MB message still goes alone).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A handle on the writer thread; the thread stops when the last handle drops.
pub(super) struct Writer {
    jobs: Sender<Box<dyn Job>>,
}

/// One piece of work: run inside the batch's transaction, then told whether
/// that transaction committed.
trait Job: Send {
    /// Bytes this work writes, roughly (batches are bounded by it).
    fn weight(&self) -> usize;
    fn run(&mut self, conn: &Connection);
    fn finish(self: Box<Self>, committed: &Result<()>);
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
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn weight(&self) -> usize {
        self.weight
    }

    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else { return };
        self.result = Some(in_savepoint(conn, work));
    }

    fn finish(self: Box<Self>, committed: &Result<()>) {
        let result = match committed {
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(Error::Internal("local bus: work never ran".into()))),
            Err(e) => Err(e.clone()),
        };
        // The caller may have given up waiting; nothing to tell it then.
        match self.reply {
            Reply::Blocking(tx) => drop(tx.send(result)),
            Reply::Async(tx) => drop(tx.send(result)),
            Reply::Detached => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "local bus: background work was not committed");
                }
            }
        }
    }
}

/// Runs `work` so that its failure (or panic) undoes only its own writes.
fn in_savepoint<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    statement(conn, "SAVEPOINT work")?;
    let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
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
        open: impl FnOnce() -> Result<Connection>,
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

    fn start(conn: Connection) -> Result<Writer> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("local-bus-writer".into())
            .spawn(move || serve(conn, queue))
            .map_err(|e| Error::Internal(format!("cannot start the local bus writer: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `work` in the next transaction and waits for its commit,
    /// blocking this thread.
    pub(super) fn call<T, F>(&self, weight: usize, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(weight, work, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| lost())?
    }

    /// Runs `work` in the next transaction; resolves once it committed.
    pub(super) async fn run<T, F>(&self, weight: usize, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(weight, work, Reply::Async(tx))?;
        rx.await.map_err(|_| lost())?
    }

    /// Queues `work` without waiting for it; work queued later by this
    /// process runs after it.
    pub(super) fn detach<F>(&self, work: F)
    where
        F: FnOnce(&Connection) -> Result<()> + Send + 'static,
    {
        if let Err(e) = self.submit(0, work, Reply::Detached) {
            tracing::warn!(error = %e, "local bus: background work not queued");
        }
    }

    fn submit<T, F>(&self, weight: usize, work: F, reply: Reply<T>) -> Result<()>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let job = Box::new(Call {
            work: Some(work),
            weight,
            result: None,
            reply,
        });
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
fn serve(conn: Connection, queue: Receiver<Box<dyn Job>>) {
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
        let committed = run_batch(&conn, &mut batch);
        for job in batch {
            job.finish(&committed);
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<()> {
    statement(conn, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        job.run(conn);
    }
    match statement(conn, "COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            // A failed COMMIT may leave the transaction open; whatever it
            // held is not durable, and every caller is told so.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
