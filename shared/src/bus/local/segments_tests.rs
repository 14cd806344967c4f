//! The segment log on its own: bodies written once and read back checked,
//! damage reported as data loss, and only segments nobody names or holds
//! removed.

use super::*;

fn segments(dir: &Path) -> Segments {
    Segments::open(dir).unwrap()
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join(SEGMENT_DIR))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    out.sort();
    out
}

fn write(s: &mut Segments, bodies: &[&[u8]]) -> Vec<BodyRef> {
    s.begin();
    let refs = bodies.iter().map(|b| s.stage(b).unwrap()).collect();
    s.flush().unwrap();
    refs
}

#[test]
fn bodies_are_written_once_back_to_back_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = segments(dir.path());
    let a = vec![b'a'; 8192];
    let b = vec![b'b'; 3000];
    let first = write(&mut s, &[&a, &b]);
    let second = write(&mut s, &[b"third"]);
    assert_eq!(first[0].offset, 0);
    assert_eq!(first[1].offset, 8192);
    assert_eq!(second[0].offset, 8192 + 3000);
    assert_eq!(first[0].segment, second[0].segment);
    assert_eq!(first[0].crc, crc32fast::hash(&a));
    // One file holding exactly the bodies: nothing written twice.
    let listed = files(dir.path());
    assert_eq!(
        listed,
        vec![(format!("{}.seg", first[0].segment), 8192 + 3000 + 5)]
    );
    assert_eq!(s.read(&first[1]).unwrap(), b);
    assert_eq!(s.read(&second[0]).unwrap(), b"third");
    // Another writer of the same home (another process) reads them too.
    let mut other = segments(dir.path());
    assert_eq!(other.read(&first[0]).unwrap(), a);
}

#[test]
fn damage_is_data_loss_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = segments(dir.path());
    let at = write(&mut s, &[&[7u8; 2048]]).remove(0);
    let path = dir.path().join(SEGMENT_DIR).join(seg_file(&at.segment));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let mut reader = segments(dir.path());
    let e = reader.read(&at).unwrap_err();
    assert!(matches!(e, Error::DataLoss(_)), "{e:?}");
    assert!(e.to_string().contains("checksum"), "{e}");

    // A damaged row asking for more than any message holds allocates nothing.
    let huge = BodyRef {
        len: u64::MAX,
        ..at.clone()
    };
    let e = reader.read(&huge).unwrap_err();
    assert!(e.to_string().contains("larger than any message"), "{e}");
    let short = BodyRef {
        len: at.len + 1,
        ..at.clone()
    };
    assert!(matches!(reader.read(&short), Err(Error::DataLoss(_))));
    let missing = BodyRef {
        segment: "0000000000001-1-00000000".into(),
        ..at.clone()
    };
    assert!(matches!(reader.read(&missing), Err(Error::DataLoss(_))));
    // A name from a row is never joined onto a path unless it is ours.
    for bad in ["../bus", "/etc/passwd", "a.seg", ""] {
        let forged = BodyRef {
            segment: bad.into(),
            ..at.clone()
        };
        let e = reader.read(&forged).unwrap_err();
        assert!(e.to_string().contains("invalid segment"), "{bad}: {e}");
    }
}

#[test]
fn only_segments_nobody_names_or_holds_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    // A writer that went away (its lock released) left two segments.
    let (kept, gone) = {
        let mut old = segments(dir.path()).roll_at(1);
        let kept = write(&mut old, &[b"named by a row"]).remove(0);
        let gone = write(&mut old, &[b"named by nobody"]).remove(0);
        (kept, gone)
    };
    assert_ne!(
        kept.segment, gone.segment,
        "roll_at(1) starts a segment per batch"
    );
    // A live writer's segment that no row names yet (its batch is between
    // the flush and the commit).
    let mut live = segments(dir.path());
    let in_flight = write(&mut live, &[b"about to be committed"]).remove(0);
    // A creation that died between create and rename.
    std::fs::write(
        dir.path()
            .join(SEGMENT_DIR)
            .join("0000000000001-9-0000000a.tmp"),
        b"",
    )
    .unwrap();
    // Not ours: never touched.
    std::fs::write(dir.path().join(SEGMENT_DIR).join("notes.txt"), b"").unwrap();

    let mut pruner = segments(dir.path());
    let mine = write(&mut pruner, &[b"the pruner's own"]).remove(0);
    let referenced = HashSet::from([kept.segment.clone()]);
    assert_eq!(pruner.remove_unreferenced(&referenced).unwrap(), 2);
    let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
    let mut want = vec![
        seg_file(&kept.segment),
        seg_file(&in_flight.segment),
        seg_file(&mine.segment),
        "notes.txt".to_string(),
    ];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(pruner.read(&kept).unwrap(), b"named by a row");
    assert_eq!(live.read(&in_flight).unwrap(), b"about to be committed");

    // Once the live writer goes, its unnamed segment goes too.
    drop(live);
    assert_eq!(pruner.remove_unreferenced(&referenced).unwrap(), 1);
    assert!(pruner.read(&in_flight).is_err());
}

#[test]
fn a_failed_batch_leaves_nothing_staged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = segments(dir.path());
    s.begin();
    let lost = s.stage(b"never flushed").unwrap();
    s.discard_staged();
    let kept = write(&mut s, &[b"next batch"]).remove(0);
    assert_eq!(kept.offset, lost.offset, "the discarded bytes take no room");
    assert_eq!(s.read(&kept).unwrap(), b"next batch");
}
