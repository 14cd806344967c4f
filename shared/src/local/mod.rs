//! The local backends' home: one folder (`PATCHPANDA_HOME`) holding a SQLite
//! database per concern (`secrets.db`, `kms.db`, the bus's), shared safely by
//! every process of the local stack and the operator CLI.

pub(crate) mod audit;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::{Error, Result};

/// How long a connection waits for another process's write lock before the
/// call fails `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The local state folder.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Opens (creating with mode 0700 if needed) the folder, and checks now
    /// that it is writable, so a bad `PATCHPANDA_HOME` fails at start with one
    /// line rather than on the first write.
    pub fn open(path: &Path) -> Result<Home> {
        let shown = path.display();
        if path.as_os_str().is_empty() {
            return Err(Error::InvalidArgument(
                "PATCHPANDA_HOME is empty; expected a folder path".into(),
            ));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| {
                Error::FailedPrecondition(format!("PATCHPANDA_HOME {shown}: cannot create: {e}"))
            })?;
        if !path.is_dir() {
            return Err(Error::FailedPrecondition(format!(
                "PATCHPANDA_HOME {shown}: not a folder"
            )));
        }
        let probe = path.join(format!(".write-probe-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .map_err(|e| {
                Error::FailedPrecondition(format!("PATCHPANDA_HOME {shown}: not writable: {e}"))
            })?;
        // The probe proved writability; failing to remove it is harmless.
        let _ = std::fs::remove_file(&probe);
        Ok(Home {
            root: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens `<home>/<name>.db` in WAL mode with `synchronous=FULL` (every
    /// commit is on disk before it returns, so a crash or power cut loses no
    /// acknowledged write), a 5 s busy timeout (other processes write the same
    /// file) and foreign keys on. The file is created 0600; SQLite gives its
    /// `-wal` and `-shm` files the same mode.
    pub fn db(&self, name: &str) -> Result<Connection> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "database name {name:?}: expected 1-64 of [a-z0-9_-]"
            )));
        }
        let path = self.root.join(format!("{name}.db"));
        // Never open the database file with a plain file handle: closing any
        // descriptor of a file drops every POSIX lock this process holds on
        // it, SQLite's included, and another process would then checkpoint
        // and delete a WAL we are still writing ("How To Corrupt An SQLite
        // Database File", 2.2). SQLite creates it; chmod needs no descriptor.
        let conn = Connection::open(&path).map_err(sqlite_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            Error::FailedPrecondition(format!("cannot restrict {}: {e}", path.display()))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(sqlite_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Internal(format!(
                "{}: could not switch to WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(sqlite_error)?;
        Ok(conn)
    }
}

/// Maps a SQLite failure onto the canonical codes: lock contention that
/// outlasted the busy timeout is worth retrying, the rest is internal.
/// SQLite's messages name statements and files, never bound values.
pub fn sqlite_error(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            Error::Unavailable(format!("local database busy: {e}"))
        }
        _ => Error::Internal(format!("local database: {e}")),
    }
}

/// Runs blocking SQLite work off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("local database task failed: {e}")))?
}

/// One connection shared by a backend's calls, each run on the blocking pool.
/// Calls within a process take turns; other processes are kept out by
/// SQLite's own locking (every change runs in `BEGIN IMMEDIATE`).
#[derive(Clone)]
pub(crate) struct Db(Arc<Mutex<Connection>>);

impl Db {
    pub fn new(conn: Connection) -> Self {
        Self(Arc::new(Mutex::new(conn)))
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.0.clone();
        blocking(move || {
            // A panic mid-call cannot leave a half-applied change behind (the
            // transaction rolls back on drop), so a poisoned lock is usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_creates_a_private_folder() {
        let dir = tempfile::tempdir().unwrap();
        let home_path = dir.path().join("nested/home");
        let home = Home::open(&home_path).unwrap();
        assert_eq!(home.path(), home_path);
        let mode = std::fs::metadata(&home_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // No probe left behind.
        assert_eq!(std::fs::read_dir(&home_path).unwrap().count(), 0);
    }

    #[test]
    fn open_fails_clearly_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = Home::open(&file).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(err.to_string().contains("PATCHPANDA_HOME"), "{err}");
    }

    #[test]
    fn open_fails_clearly_when_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        let probe = ro.join("p");
        if std::fs::write(&probe, b"x").is_ok() {
            // Running as root: permissions are not enforced, nothing to check.
            return;
        }
        let err = Home::open(&ro).unwrap_err();
        assert!(err.to_string().contains("not writable"), "{err}");
    }

    #[test]
    fn db_is_wal_full_sync_private_and_named_safely() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let conn = home.db("things").unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let file_mode = std::fs::metadata(dir.path().join("things.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
        for bad in ["", "../x", "a/b", "UPPER", "x.db"] {
            assert!(
                matches!(home.db(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
