//! Message bodies of the local bus, written once: appended to segment files
//! under `<home>/bus-segments/`, while SQLite keeps each message's row with
//! the body's place (segment, offset, length, CRC-32). SQLite stored every
//! body twice (its WAL, then the database at checkpoint, as three 4 KiB
//! frames for an 8 KiB body); here a batch's bodies are one positioned
//! write and one `fdatasync`, before the transaction that names them
//! commits. So a committed row always points at durable bytes, and bytes
//! whose transaction never committed are garbage nobody reads.
//!
//! Several processes share one home: each writer appends only to its own
//! segment, holding an exclusive `flock` on it while it may still append.
//! A file appears under its final name only once locked (created as
//! `.tmp`, locked, renamed), so a pruner deletes a segment only when no row
//! names it and it can take the lock itself: its writer sealed it or died.
//! Written by hand: no crate offers a positioned, locked, group-synced
//! append log of this shape, and this one is small.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Error, Result};

/// The segment folder under the home.
pub(super) const SEGMENT_DIR: &str = "bus-segments";
/// Bodies up to this size stay in their SQLite row: they fit its page with
/// the row, so a segment would add a write and an fsync and save nothing.
pub(super) const INLINE_MAX: usize = 1024;
/// A writer starts a new segment once its current one holds this much or
/// is this old, so retention can delete old bodies file by file.
const ROLL_BYTES: u64 = 64 * 1024 * 1024;
const ROLL_AGE: Duration = Duration::from_secs(3600);
/// Segment files kept open for reading at most (they are cheap to reopen).
const MAX_READERS: usize = 32;
/// The staging buffer is given back past this size (after a 10 MB body).
const KEEP_BUFFER: usize = 1024 * 1024;

/// Where a message body lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stored {
    /// In the row itself (small bodies, and every body of a pre-segment home).
    Inline(Bytes),
    Segment(BodyRef),
}

/// A body's place in a segment, as its row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BodyRef {
    pub segment: String,
    pub offset: u64,
    pub len: u64,
    /// CRC-32 (IEEE, as Python's `zlib.crc32`) of the body.
    pub crc: u32,
}

/// The segment log of one writer (one per home and process).
pub(super) struct Segments {
    dir: PathBuf,
    active: Option<Active>,
    readers: HashMap<String, File>,
    /// Bodies staged for the next flush, in order, starting at `active.len`.
    staged: Vec<u8>,
    roll_bytes: u64,
}

/// The segment this writer appends to, locked while it is active.
struct Active {
    name: String,
    file: File,
    /// Bytes written and synced.
    len: u64,
    created: Instant,
}

impl Segments {
    /// The segment log in `home`; creates its folder (0700) when missing.
    pub(super) fn open(home: &Path) -> Result<Segments> {
        let dir = home.join(SEGMENT_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error("creating", &dir, &e))?;
        Ok(Segments {
            dir,
            active: None,
            readers: HashMap::new(),
            staged: Vec::new(),
            roll_bytes: ROLL_BYTES,
        })
    }

    /// Rolls over at `bytes` instead (tests).
    #[cfg(test)]
    pub(super) fn roll_at(mut self, bytes: u64) -> Segments {
        self.roll_bytes = bytes;
        self
    }

    /// Starts a batch: seals the active segment once it is full (between
    /// batches, so every body it holds is already committed or garbage).
    pub(super) fn begin(&mut self) {
        let full =
            |a: &Active| a.len >= self.roll_bytes || (a.len > 0 && a.created.elapsed() >= ROLL_AGE);
        if self.active.as_ref().is_some_and(full) {
            self.seal();
        }
    }

    /// Appends `body` to what the next [`flush`](Self::flush) writes and
    /// says where it will be.
    pub(super) fn stage(&mut self, body: &[u8]) -> Result<BodyRef> {
        if self.active.is_none() {
            self.active = Some(self.create()?);
        }
        let Some(active) = &self.active else {
            return Err(Error::Internal("local bus: no segment to stage in".into()));
        };
        let offset = active.len + self.staged.len() as u64;
        self.staged.extend_from_slice(body);
        Ok(BodyRef {
            segment: active.name.clone(),
            offset,
            len: body.len() as u64,
            crc: crc32fast::hash(body),
        })
    }

    /// Writes everything staged in one positioned write and syncs it. On
    /// failure the segment is abandoned (after a failed fsync the page
    /// cache's state is unknown) and the next batch starts a new one.
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let written = match &self.active {
            Some(a) => a
                .file
                .write_all_at(&self.staged, a.len)
                .and_then(|()| a.file.sync_data())
                .map_err(|e| io_error("writing", &self.dir.join(seg_file(&a.name)), &e)),
            None => Err(Error::Internal(
                "local bus: bodies staged without a segment".into(),
            )),
        };
        let n = self.staged.len() as u64;
        self.discard_staged();
        match written {
            Ok(()) => {
                if let Some(a) = &mut self.active {
                    a.len += n;
                }
                Ok(())
            }
            Err(e) => {
                self.active = None;
                Err(e)
            }
        }
    }

    /// Drops what was staged (its batch failed before the flush).
    pub(super) fn discard_staged(&mut self) {
        self.staged.clear();
        if self.staged.capacity() > KEEP_BUFFER {
            self.staged = Vec::new();
        }
    }

    /// Reads a body back and checks it against its row.
    pub(super) fn read(&mut self, at: &BodyRef) -> Result<Vec<u8>> {
        let lost = |why: String| {
            Error::DataLoss(format!(
                "local bus: the body in segment {} at {} ({} bytes) {why}",
                at.segment, at.offset, at.len
            ))
        };
        if !valid_name(&at.segment) {
            return Err(lost("names an invalid segment".into()));
        }
        // A row says how much to allocate: never more than a message can hold.
        let len = usize::try_from(at.len)
            .ok()
            .filter(|&n| n <= super::validate::MAX_MESSAGE_BYTES)
            .ok_or_else(|| lost("is larger than any message".into()))?;
        let mut body = vec![0; len];
        let read = match &self.active {
            Some(a) if a.name == at.segment => a.file.read_exact_at(&mut body, at.offset),
            _ => self
                .reader(&at.segment)?
                .read_exact_at(&mut body, at.offset),
        };
        read.map_err(|e| lost(format!("cannot be read: {e}")))?;
        if crc32fast::hash(&body) != at.crc {
            return Err(lost("does not match its checksum".into()));
        }
        Ok(body)
    }

    fn reader(&mut self, name: &str) -> Result<&File> {
        if !self.readers.contains_key(name) {
            if self.readers.len() >= MAX_READERS {
                self.readers.clear();
            }
            let path = self.dir.join(seg_file(name));
            let file = File::open(&path).map_err(|e| {
                Error::DataLoss(format!(
                    "local bus: segment {} is missing or unreadable: {e}",
                    path.display()
                ))
            })?;
            self.readers.insert(name.to_string(), file);
        }
        Ok(&self.readers[name])
    }

    /// Deletes every segment no row names (`referenced`) that no writer
    /// holds: sealed ones whose messages are past retention, and a dead
    /// writer's leftovers. Returns how many files went.
    pub(super) fn remove_unreferenced(&mut self, referenced: &HashSet<String>) -> Result<usize> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| io_error("listing", &self.dir, &e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let (name, sealed_name) = match file_name.rsplit_once('.') {
                Some((n, "seg")) => (n, true),
                Some((n, "tmp")) => (n, false),
                _ => continue,
            };
            let ours = self.active.as_ref().is_some_and(|a| a.name == name);
            if !valid_name(name) || ours || (sealed_name && referenced.contains(name)) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // Held: its writer is alive and may still append. Try next time.
            if file.try_lock().is_err() {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                self.readers.remove(name);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A new segment, locked before it is visible under its final name,
    /// with the name itself made durable before any row can point at it.
    fn create(&mut self) -> Result<Active> {
        let name = format!(
            "{:013}-{}-{:08x}",
            chrono::Utc::now().timestamp_millis().max(0),
            std::process::id(),
            rand::random::<u32>()
        );
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error("creating", &tmp, &e))?;
        file.try_lock()
            .map_err(|e| Error::Internal(format!("local bus: locking {}: {e}", tmp.display())))?;
        let path = self.dir.join(seg_file(&name));
        std::fs::rename(&tmp, &path).map_err(|e| io_error("naming", &path, &e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing", &self.dir, &e))?;
        Ok(Active {
            name,
            file,
            len: 0,
            created: Instant::now(),
        })
    }

    /// Stops appending to the active segment and lets others delete it
    /// once no row names it.
    fn seal(&mut self) {
        if let Some(a) = self.active.take() {
            // Unlocking cannot fail on a file we locked; if it did, closing
            // the descriptor (when the reader cache drops it) unlocks too.
            let _ = a.file.unlock();
            if self.readers.len() >= MAX_READERS {
                self.readers.clear();
            }
            self.readers.insert(a.name, a.file);
        }
    }
}

fn seg_file(name: &str) -> String {
    format!("{name}.seg")
}

/// Segment names this code makes: digits, dashes and hex. Anything else
/// read from a row is refused rather than joined onto a path.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Disk trouble (full, read-only, gone) is worth retrying: the publisher
/// answers 503 and GitHub redelivers, as for a busy database.
fn io_error(doing: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::Unavailable(format!("local bus: {doing} {}: {e}", path.display()))
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
