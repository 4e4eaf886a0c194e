//! The ledger: appended records read back in order, rotation by size, a torn tail, one writer,
//! the cursor.

use std::collections::BTreeMap;

use wasm_sandbox_usage::{
    CpuSeconds, Ledger, Position, Shape, UsageRecord, cursor, ledger, read_all, read_from,
};

mod common;

/// Session `n`'s record with readings, `n` bash calls and a shape.
fn record(n: u32) -> UsageRecord {
    UsageRecord {
        active_ms: 1000 * u64::from(n),
        cpu: CpuSeconds::new(Some(1.5), 0.25, 0.0),
        memory_peak_bytes: Some(1 << 20),
        tool_calls: BTreeMap::from([("bash".to_owned(), u64::from(n))]),
        shape: Some(Shape {
            vcpus: 4.0,
            memory_bytes: Some(4 << 30),
        }),
        ..common::record(n)
    }
}

#[test]
fn appended_records_read_back_in_order_and_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let mut l = Ledger::open(&dir, 1 << 20).unwrap();
    let p1 = l.append(&record(1)).unwrap();
    let p2 = l.append(&record(2)).unwrap();
    assert!(p2 > p1);
    drop(l);
    let mut l = Ledger::open(&dir, 1 << 20).unwrap();
    l.append(&record(3)).unwrap();
    let all = read_all(&dir).unwrap();
    assert_eq!(all, vec![record(1), record(2), record(3)]);
    // From the position after the first: the other two.
    let (rest, end) = read_from(&dir, p1, 10).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].record, record(2));
    assert_eq!(rest[0].end, p2);
    assert_eq!(end, rest[1].end);
    // Nothing after the end.
    let (none, same) = read_from(&dir, end, 10).unwrap();
    assert!(none.is_empty());
    assert_eq!(same, end);
}

#[test]
fn rotation_by_size_opens_numbered_segments_and_keeps_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let line = serde_json::to_vec(&record(1)).unwrap().len() as u64 + 1;
    // Room for two records per segment.
    let mut l = Ledger::open(&dir, 2 * line + 5).unwrap();
    for n in 1..=5 {
        l.append(&record(n)).unwrap();
    }
    assert_eq!(l.segment(), 3);
    let segs: Vec<u64> = ledger::segments(&dir)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(segs, vec![1, 2, 3]);
    for (n, path) in ledger::segments(&dir).unwrap() {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len <= 2 * line + 5, "segment {n} is {len} bytes");
    }
    let ids: Vec<_> = read_all(&dir)
        .unwrap()
        .into_iter()
        .map(|r| r.work_id)
        .collect();
    assert_eq!(ids, ["work_1", "work_2", "work_3", "work_4", "work_5"]);
    // A reader resuming at the end of segment 1 goes on in segment 2.
    let (first, _) = read_from(&dir, Position::default(), 2).unwrap();
    let (next, _) = read_from(&dir, first[1].end, 1).unwrap();
    assert_eq!(first[1].end.segment, 1);
    assert_eq!(next[0].record.work_id, "work_3");
    assert_eq!(next[0].end.segment, 2);
    // Reopened, the writer goes on in the newest segment.
    drop(l);
    let l = Ledger::open(&dir, 2 * line + 5).unwrap();
    assert_eq!(l.segment(), 3);
}

#[test]
fn a_torn_tail_is_left_to_readers_and_ended_by_the_next_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let mut l = Ledger::open(&dir, 1 << 20).unwrap();
    let p1 = l.append(&record(1)).unwrap();
    drop(l);
    // A crash mid-write: half a record at the end.
    let seg = dir.join(ledger::segment_name(1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"{\"schema\":1,\"record_id\":\"to");
    std::fs::write(&seg, &bytes).unwrap();
    let (got, end) = read_from(&dir, Position::default(), 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(end, p1, "a reader stops before the torn line");
    let mut l = Ledger::open(&dir, 1 << 20).unwrap();
    l.append(&record(2)).unwrap();
    assert_eq!(read_all(&dir).unwrap(), vec![record(1), record(2)]);
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usage");
    let first = Ledger::open(&dir, 1 << 20).unwrap();
    let err = Ledger::open(&dir, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    Ledger::open(&dir, 1 << 20).unwrap();
}

#[test]
fn the_cursor_round_trips_and_starts_at_the_beginning() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(cursor::load(tmp.path()).unwrap(), Position::default());
    let p = Position {
        segment: 7,
        offset: 1234,
    };
    cursor::store(tmp.path(), p).unwrap();
    assert_eq!(cursor::load(tmp.path()).unwrap(), p);
    assert!(!tmp.path().join("sent.cursor.tmp").exists());
}

#[test]
fn the_fixture_ledger_reads_skipping_junk_and_the_torn_tail() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger");
    let all = read_all(&dir).unwrap();
    let ids: Vec<_> = all.iter().map(|r| r.work_id.as_str()).collect();
    assert_eq!(
        ids,
        ["work_1", "work_2", "work_3", "work_1", "work_9", "work_4"]
    );
}
