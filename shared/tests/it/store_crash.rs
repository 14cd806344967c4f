//! kill -9 in the middle of writes: a child process (this test binary, re-run
//! on one ignored test) adds versions in a loop and prints each committed
//! number; the parent SIGKILLs it mid-stream, then checks that every version
//! the child reported is readable with its value and the database is sound.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use patchpanda_shared::kms::local::LocalKms;
use patchpanda_shared::local::Home;
use patchpanda_shared::secrets::local::LocalSecretStore;
use patchpanda_shared::secrets::{SecretStore, VersionRef};

/// Set in the child: the home to write into.
const CHILD_HOME: &str = "PATCHPANDA_STORE_CRASH_CHILD_HOME";
const SECRET: &str = "patchpanda-crash-test";
/// Reports to wait for before the kill, so it lands mid-stream.
const KILL_AFTER: usize = 25;

fn value_of(i: u64) -> String {
    // Varied sizes, so pages split and the kill hits different write shapes.
    format!("value-{i}-{}", "x".repeat((i as usize * 37) % 3000))
}

fn open_store(home: &Path) -> LocalSecretStore {
    let home = Home::open(home).expect("home");
    let kms = Arc::new(LocalKms::open(&home, "crash@patchpanda.local", None).expect("kms"));
    LocalSecretStore::open(&home, "crash@patchpanda.local", kms, None).expect("store")
}

/// `committed <version> <i>` -> (version, i).
fn parse_committed(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("committed ")?;
    let (n, i) = rest.split_once(' ')?;
    Some((n.parse().ok()?, i.parse().ok()?))
}

/// The child: writes until killed. Does nothing in a normal `--ignored` run.
#[tokio::test]
#[ignore = "run only as the child of kill_9_mid_write_loses_nothing_committed"]
async fn child_writes_versions_until_killed() {
    let Some(home) = std::env::var_os(CHILD_HOME) else {
        return;
    };
    let store = open_store(Path::new(&home));
    store.create_secret(SECRET).await.expect("create");
    println!("ready");
    for i in 1u64.. {
        let v = store
            .add_version(SECRET, value_of(i).as_bytes())
            .await
            .expect("add");
        // Printed only after the commit returned: every line is a promise.
        println!("committed {} {i}", v.number);
        if i > 100_000 {
            break;
        }
    }
}

#[tokio::test]
async fn kill_9_mid_write_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "store_crash::child_writes_versions_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_HOME, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut committed: Vec<(u64, u64)> = Vec::new();
    let mut ready = false;
    let mut killed = false;
    let mut line = String::new();
    // Reads on after the kill: whatever the child printed before dying was
    // committed too. A last line without its newline was cut short by the
    // kill and promises nothing.
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        if line.ends_with('\n') {
            let l = line.trim_end();
            // libtest prints the test's name on the line of its first output.
            if l.ends_with("ready") {
                ready = true;
            } else if let Some(c) = parse_committed(l) {
                committed.push(c);
            }
        }
        line.clear();
        if !killed && committed.len() >= KILL_AFTER {
            // Child::kill is SIGKILL on Unix: no destructors, no flush.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(ready, "the child never started writing");
    assert!(
        !status.success(),
        "the child must have been killed, got {status}"
    );
    assert!(committed.len() >= KILL_AFTER, "{}", committed.len());

    let home = Home::open(dir.path()).unwrap();
    let conn = home.db("secrets").unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    let store = open_store(dir.path());
    for (number, i) in &committed {
        let got = store
            .access(SECRET, &VersionRef::Number(*number))
            .await
            .unwrap_or_else(|e| panic!("committed version {number} lost: {e}"));
        assert!(
            got.value.expose() == value_of(*i).as_bytes(),
            "version {number} has the wrong value"
        );
    }
    // Numbering carries on after the last committed (or half-written) one.
    let last = committed.iter().map(|(n, _)| *n).max().unwrap();
    let next = store.add_version(SECRET, b"after the crash").await.unwrap();
    assert!(next.number > last);
}
