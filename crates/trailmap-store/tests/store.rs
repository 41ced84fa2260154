//! Segments and checkpoints round-trip; a damaged checkpoint is refused; segments written
//! after the last checkpoint are removed as orphans.

use arrow::array::RecordBatch;
use trailmap_model::IdentityKind;
use trailmap_model::schema::{EventBatchBuilder, EventRow};
use trailmap_store::{Checkpoint, Position, Store};

fn batch(customer: &str, n: usize) -> RecordBatch {
    let mut b = EventBatchBuilder::new();
    for i in 0..n {
        let id = format!("{customer}-{i}");
        let mut row = EventRow {
            event_id: Some(&id),
            source: "web",
            ts: 1_700_000_000_000_000 + i as i64,
            touchpoint: Some("home_view"),
            ..Default::default()
        };
        row.identities[IdentityKind::CustomerId.index()] = Some(customer);
        b.push(&row);
    }
    b.finish()
}

#[test]
fn segments_and_checkpoints_round_trip_in_a_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let store = Store::open(data.to_str().expect("utf-8")).expect("open");
    assert_eq!(store.read_checkpoint().expect("read"), None, "a new store");

    let feeds = vec![(0, batch("a", 3)), (2, batch("b", 5)), (0, batch("c", 1))];
    let segment = store.write_segment(1, &feeds).expect("segment");
    assert_eq!(segment.rows, 9);
    assert_eq!(segment.feeds, vec![(0, 3), (2, 5), (0, 1)]);
    let checkpoint = Checkpoint {
        segments: vec![segment.clone()],
        positions: vec![Position {
            topic: "web".into(),
            partition: 0,
            next_offset: 9,
        }],
        store: Checkpoint::new_store_name(),
    };
    store.write_checkpoint(&checkpoint).expect("checkpoint");

    // Reopened, as after a restart.
    let store = Store::open(data.to_str().expect("utf-8")).expect("reopen");
    let read = store
        .read_checkpoint()
        .expect("read")
        .expect("a checkpoint");
    assert_eq!(read, checkpoint);
    assert_eq!(read.next_seq(), 2);
    let back = store.read_segment(&segment).expect("segment back");
    assert_eq!(back.len(), 3);
    for ((p, b), (q, c)) in back.iter().zip(&feeds) {
        assert_eq!(p, q);
        assert_eq!(b, c, "the same rows, in the same order");
    }
    // A segment written after the checkpoint, then a crash: an orphan.
    store.write_segment(2, &feeds).expect("segment 2");
    assert_eq!(store.remove_orphans(&read).expect("orphans"), 1);
    assert_eq!(store.remove_orphans(&read).expect("orphans"), 0);
    assert!(store.read_segment(&segment).is_ok());
}

#[test]
fn a_damaged_checkpoint_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path().to_str().expect("utf-8")).expect("open");
    store
        .write_checkpoint(&Checkpoint::default())
        .expect("checkpoint");
    let path = dir.path().join("checkpoint.json");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("\"segments\":[]", "\"segments\":[ ]")).expect("write");
    let e = store.read_checkpoint().unwrap_err().to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains("data dir"),
        "{e}"
    );
    std::fs::write(&path, "{\"segments\":[]}").expect("write");
    let e = store.read_checkpoint().unwrap_err().to_string();
    assert!(e.contains("no checksum"), "{e}");
}

#[test]
fn memory_urls_work_and_unknown_schemes_say_why() {
    let store = Store::open("memory://test/").expect("memory store");
    let segment = store
        .write_segment(1, &[(0, batch("a", 2))])
        .expect("segment");
    assert_eq!(
        store.read_segment(&segment).expect("read")[0].1.num_rows(),
        2
    );
    let e = Store::open("s3://bucket/prefix")
        .err()
        .expect("no S3 in this build")
        .to_string();
    assert!(
        e.contains("data_dir") && e.contains("s3://bucket/prefix"),
        "{e}"
    );
}

#[test]
fn the_live_state_is_used_only_when_whole_of_this_store_and_covered_by_the_checkpoint() {
    use trailmap_store::StoredState;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let store = Store::open(data.to_str().expect("utf-8")).expect("open");
    let segment = store
        .write_segment(1, &[(0, batch("a", 2))])
        .expect("segment");
    let checkpoint = Checkpoint {
        segments: vec![segment],
        positions: Vec::new(),
        store: Checkpoint::new_store_name(),
    };
    assert_ne!(checkpoint.store, Checkpoint::new_store_name());
    assert_eq!(store.read_state(&checkpoint).expect("none yet"), None);

    let state = StoredState {
        through: 1,
        bytes: b"the pipeline's state".to_vec(),
    };
    store.write_state(&checkpoint.store, &state).expect("write");
    assert_eq!(
        store.read_state(&checkpoint).expect("read"),
        Some(state.clone())
    );

    // Of another history of the data dir (its checkpoint replaced): not used.
    let other = Checkpoint {
        store: Checkpoint::new_store_name(),
        ..checkpoint.clone()
    };
    let e = store.read_state(&other).unwrap_err().to_string();
    assert!(e.contains("another history"), "{e}");

    // Ahead of the checkpoint (a segment it does not name): not used.
    let ahead = StoredState {
        through: 2,
        bytes: vec![1, 2, 3],
    };
    store.write_state(&checkpoint.store, &ahead).expect("write");
    let e = store.read_state(&checkpoint).unwrap_err().to_string();
    assert!(e.contains("segment 2"), "{e}");

    // Damaged anywhere, the segment number included: refused.
    store.write_state(&checkpoint.store, &state).expect("write");
    let path = data.join("state.bin");
    let file = std::fs::read(&path).expect("file");
    for at in [9, file.len() / 2, file.len() - 1] {
        let mut damaged = file.clone();
        damaged[at] ^= 1;
        std::fs::write(&path, &damaged).expect("damage");
        let e = store.read_state(&checkpoint).unwrap_err().to_string();
        assert!(e.contains("damaged"), "byte {at}: {e}");
    }
    std::fs::write(&path, &file[..3]).expect("truncate");
    let e = store.read_state(&checkpoint).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn compacted_segments_hold_the_same_feeds_in_a_file_of_their_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let store = Store::open(data.to_str().expect("utf-8")).expect("open");
    let parts = [
        vec![(0, batch("a", 3)), (1, batch("b", 2))],
        vec![(1, batch("c", 4))],
        vec![(0, batch("d", 1)), (0, batch("e", 5))],
    ];
    let segments: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(i, feeds)| store.write_segment(i as u64 + 1, feeds).expect("segment"))
        .collect();
    let merged = store.compact(&segments[..2]).expect("compact");
    assert_eq!((merged.first, merged.seq, merged.rows), (Some(1), 2, 9));
    assert_eq!(merged.feeds, vec![(0, 3), (1, 2), (1, 4)]);
    assert_ne!(
        merged.file(),
        segments[1].file(),
        "never over a file a checkpoint names"
    );
    let back = store.read_segment(&merged).expect("read");
    let expected: Vec<_> = parts[..2].iter().flatten().cloned().collect();
    assert_eq!(back, expected);
    // Compacted again with the next: it spans from the first.
    let again = store
        .compact(&[merged.clone(), segments[2].clone()])
        .expect("compact again");
    assert_eq!((again.first, again.seq, again.rows), (Some(1), 3, 15));

    // Once a checkpoint names the compacted segment, the old files are orphans.
    let checkpoint = Checkpoint {
        segments: vec![again],
        ..Checkpoint::default()
    };
    store.write_checkpoint(&checkpoint).expect("checkpoint");
    assert_eq!(store.remove_orphans(&checkpoint).expect("orphans"), 4);
    let files = std::fs::read_dir(data.join("segments"))
        .expect("dir")
        .count();
    assert_eq!(files, 1);
}
