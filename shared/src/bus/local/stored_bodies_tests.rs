//! Where the bus keeps message bodies, seen through the bus: large ones in
//! segments (written once), small ones in their rows; dead-letter copies
//! share the body; a damaged body holds up nobody; an older home upgrades
//! in place; retention removes segments.

use std::path::Path;

use super::segments::SEGMENT_DIR;
use super::*;

const OWNER: &str = "owner-a";

fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path()).unwrap();
    (dir, home)
}

/// A bus with `sub-1` on `topic-a` (nothing listens at its endpoint).
fn subscribed(home: &Home) -> LocalBus {
    let bus = LocalBus::open(home).unwrap();
    bus.subscribe(Subscription::new(
        "sub-1",
        "topic-a",
        "http://127.0.0.1:9/p",
    ))
    .unwrap();
    bus
}

fn body(fill: u8, len: usize) -> Vec<u8> {
    vec![fill; len]
}

/// The segments on disk: (name, bytes).
fn segment_files(home: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(dir) = std::fs::read_dir(home.join(SEGMENT_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    out.sort();
    out
}

fn raw(home: &Path) -> Connection {
    Connection::open(home.join("bus.db")).unwrap()
}

#[test]
fn large_bodies_are_written_once_to_a_segment_small_ones_stay_in_their_row() {
    let (dir, home) = home();
    let bus = LocalBus::open(&home).unwrap();
    let now = now_ms();
    let big: Vec<Vec<u8>> = (0..20).map(|i| body(b'a' + i, 8192)).collect();
    for b in &big {
        bus.commit_message("topic-a", &Message::new(b.clone()), now)
            .unwrap();
    }
    let small = body(b's', segments::INLINE_MAX);
    bus.commit_message("topic-a", &Message::new(small.clone()), now)
        .unwrap();

    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1, 20 * 8192, "each large body written once");
    let db = raw(dir.path());
    let (inline_bytes, in_segments): (i64, i64) = db
        .query_row(
            "SELECT SUM(LENGTH(data)), COUNT(segment) FROM messages",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        inline_bytes,
        small.len() as i64,
        "only the small body is in SQLite"
    );
    assert_eq!(in_segments, 20);

    let listed = bus.messages("topic-a").unwrap();
    let mut want = big.clone();
    want.push(small);
    assert_eq!(
        listed.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
        want
    );
}

#[test]
fn a_dead_letter_copy_names_the_same_body() {
    let t0 = now_ms();
    let (dir, home) = home();
    let bus = subscribed(&home);
    let poison = body(b'p', 5000);
    let id = bus
        .commit_message("topic-a", &Message::new(poison.clone()), t0)
        .unwrap();
    let written = segment_files(dir.path())[0].1;
    for attempt in 0..i64::from(DEFAULT_MAX_ATTEMPTS) {
        let now = t0 + attempt;
        assert_eq!(bus.claim(OWNER, 1, now, now + 1000).unwrap().len(), 1);
        bus.nack(OWNER, "sub-1", id, now, now).unwrap();
    }
    let copies = bus.messages("topic-a-dead-letter").unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].data, poison);
    assert_eq!(bus.dead_letters("sub-1").unwrap()[0].data, poison);
    assert_eq!(
        segment_files(dir.path())[0].1,
        written,
        "no body was copied"
    );
}

#[test]
fn an_unreadable_body_spends_attempts_and_holds_up_nobody() {
    let t0 = now_ms();
    let (dir, home) = home();
    let bus = subscribed(&home);
    let damaged = bus
        .commit_message("topic-a", &Message::new(body(b'd', 4096)), t0)
        .unwrap();
    let fine = bus
        .commit_message("topic-a", &Message::new(body(b'f', 4096)), t0)
        .unwrap();
    // Damage the first body on disk (bit rot, or someone editing files).
    let (path, _) = segment_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let claimed = bus.claim(OWNER, 10, t0, t0 + 1000).unwrap();
    assert_eq!(claimed.len(), 1, "the readable message is still delivered");
    assert_eq!(claimed[0].message_seq, fine);
    let e = bus.messages("topic-a").unwrap_err();
    assert!(matches!(e, Error::DataLoss(_)), "{e:?}");
    assert!(e.to_string().contains(&format!("message {damaged}")), "{e}");

    bus.ack("sub-1", fine).unwrap();

    // It is retried later, each try an attempt, then dead-lettered.
    let mut now = t0;
    for _ in 0..DEFAULT_MAX_ATTEMPTS {
        now += 60_001;
        assert!(bus.claim(OWNER, 10, now, now + 1000).unwrap().is_empty());
    }
    assert_eq!(bus.pending("sub-1").unwrap(), 0);
    let e = bus.dead_letters("sub-1").unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    let copies: i64 = raw(dir.path())
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE topic = 'topic-a-dead-letter'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(copies, 1, "the dead-letter copy keeps what is left of it");
}

/// The bus's schema before segments, as an older home has it.
const OLD_SCHEMA: &str = "
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
    data BLOB NOT NULL, attributes TEXT NOT NULL, ordering_key TEXT,
    publish_time_ms INTEGER NOT NULL);
CREATE TABLE subscriptions (name TEXT PRIMARY KEY, topic TEXT NOT NULL,
    push_endpoint TEXT NOT NULL, audience TEXT, max_attempts INTEGER NOT NULL);
CREATE TABLE deliveries (subscription TEXT NOT NULL, message_id INTEGER NOT NULL,
    ordering_key TEXT, attempts INTEGER NOT NULL DEFAULT 0, due_ms INTEGER NOT NULL,
    lease_owner TEXT, lease_until_ms INTEGER, dead_ms INTEGER,
    PRIMARY KEY (subscription, message_id)) WITHOUT ROWID;
INSERT INTO subscriptions VALUES ('sub-1', 'topic-a', 'http://127.0.0.1:9/p', NULL, 5);
";

#[test]
fn a_home_from_before_segments_is_upgraded_in_place() {
    let (dir, home) = home();
    let old_body = body(b'o', 8192);
    {
        let db = raw(dir.path());
        db.execute_batch(OLD_SCHEMA).unwrap();
        db.execute(
            "INSERT INTO messages (topic, data, attributes, publish_time_ms)
             VALUES ('topic-a', ?1, '{\"k\":\"v\"}', ?2)",
            params![old_body, now_ms()],
        )
        .unwrap();
        db.execute(
            "INSERT INTO deliveries (subscription, message_id, due_ms) VALUES ('sub-1', 1, 0)",
            [],
        )
        .unwrap();
    }
    let bus = LocalBus::open(&home).unwrap();
    let new_body = body(b'n', 8192);
    bus.commit_message("topic-a", &Message::new(new_body.clone()), now_ms())
        .unwrap();
    let listed = bus.messages("topic-a").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].data, old_body);
    assert_eq!(listed[0].attributes["k"], "v");
    assert_eq!(listed[1].data, new_body);
    let now = now_ms();
    let claimed = bus.claim(OWNER, 10, now, now + 1000).unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].message.data, old_body);
    // Opening again (another process, or a restart) changes nothing.
    drop(bus);
    let again = LocalBus::open(&home).unwrap();
    assert_eq!(again.messages("topic-a").unwrap().len(), 2);
}

#[test]
fn pruning_removes_a_segment_once_no_message_names_it() {
    let (dir, home) = home();
    let old = now_ms() - 8 * 24 * 3600 * 1000;
    {
        // A process that has since stopped wrote an old message.
        let bus = LocalBus::open(&home).unwrap();
        bus.commit_message("topic-a", &Message::new(body(b'o', 4096)), old)
            .unwrap();
    }
    let bus = LocalBus::open(&home).unwrap();
    let kept = body(b'k', 4096);
    bus.commit_message("topic-a", &Message::new(kept.clone()), now_ms())
        .unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    // The stopped writer's thread lets go of its segment shortly after.
    let cutoff = Utc::now() - chrono::Duration::days(7);
    let mut removed = false;
    for _ in 0..200 {
        bus.prune_older_than(cutoff).unwrap();
        if segment_files(dir.path()).len() == 1 {
            removed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(removed, "the old segment is still there");
    let listed = bus.messages("topic-a").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].data, kept);
}
