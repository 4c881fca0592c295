//! End-to-end smoke test of the durable engine on a real directory: load, hold, snapshot,
//! restart, compare digests.

use std::sync::Arc;

use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::durable::{DurableEngine, DurableOptions};
use promised_engine::storage::FsStorage;
use promised_engine::{Command, HoldLineRequest, NodeChoice, Quantity, RequestId, Timestamp};

#[test]
fn restart_reproduces_the_state_with_and_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsStorage::open(dir.path()).unwrap());
    let options = manual_snapshots();
    let spec = DataSetSpec::small();
    let ds = DataSet::generate(&spec);
    let now = spec.start_day.start();
    let db = DurableEngine::open(storage.clone(), options.clone()).unwrap();
    ds.load(db.engine(), now).unwrap();
    let hold = |db: &DurableEngine, i: u128| {
        let engine = db.engine();
        let sku = engine
            .sku_id(&ds.skus[(i as usize * 7) % ds.skus.len()].name)
            .unwrap();
        db.apply(
            now,
            &Command::Hold {
                hold: RequestId(i + 1),
                lines: vec![HoldLineRequest {
                    sku,
                    node: NodeChoice::Any,
                    quantity: Quantity::new(1).unwrap(),
                    need_day: None,
                }],
                ttl_ms: 60_000,
                partial: true,
            },
        )
        .unwrap();
    };
    for i in 0..200 {
        hold(&db, i);
    }
    let d1 = db.engine().state_digest();
    db.close().unwrap();
    drop(db);

    let db = DurableEngine::open(storage.clone(), options.clone()).unwrap();
    assert_eq!(db.engine().state_digest(), d1);
    assert!(db.recovery().snapshot.is_none());
    let info = db.snapshot().unwrap();
    for i in 200..300 {
        hold(&db, i);
    }
    let d2 = db.engine().state_digest();
    db.close().unwrap();
    drop(db);

    let db = DurableEngine::open(storage, options).unwrap();
    assert_eq!(db.recovery().snapshot.as_ref().map(|s| s.0), Some(info.lsn));
    assert_eq!(db.recovery().replayed, 100);
    assert_eq!(db.engine().state_digest(), d2);
    db.engine().check_invariants().unwrap();
}

/// Commands that write shards after the snapshot's barrier but before the snapshot thread reaches
/// them must copy them out first: the file is the state at the barrier. A storage wrapper runs
/// those commands exactly in that window (when the snapshot creates its file), deterministically.
#[test]
fn a_snapshot_is_the_state_at_its_barrier_whatever_commands_do_after_it() {
    use promised_engine::snapshot::{SnapshotFile, snapshot_name, write_snapshot};
    use promised_engine::storage::{SimStorage, Storage, StorageFile};
    use promised_engine::{Engine, EngineConfig};

    struct Meddler {
        inner: SimStorage,
        during: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }
    impl Storage for Meddler {
        fn list(&self) -> std::io::Result<Vec<String>> {
            self.inner.list()
        }
        fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
            self.inner.read(name)
        }
        fn create(&self, name: &str) -> std::io::Result<Box<dyn StorageFile>> {
            if let Some(f) = self.during.lock().unwrap().take() {
                f();
            }
            self.inner.create(name)
        }
        fn open_append(&self, name: &str) -> std::io::Result<Box<dyn StorageFile>> {
            self.inner.open_append(name)
        }
        fn truncate(&self, name: &str, len: u64) -> std::io::Result<()> {
            self.inner.truncate(name, len)
        }
        fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, name: &str) -> std::io::Result<()> {
            self.inner.remove(name)
        }
        fn sync_dir(&self) -> std::io::Result<()> {
            self.inner.sync_dir()
        }
        fn describe(&self, name: &str) -> String {
            self.inner.describe(name)
        }
    }

    let spec = DataSetSpec::small();
    let ds = DataSet::generate(&spec);
    let now = spec.start_day.start();
    // 'static so the storage can hold a closure that borrows it.
    let engine: &'static Engine = Box::leak(Box::new(Engine::new(EngineConfig::default())));
    ds.load(engine, now).unwrap();
    let skus: Vec<_> = ds.skus.iter().map(|s| engine.sku_id(&s.name).unwrap()).collect();
    let hold_all = move |base: u128| {
        // One hold per SKU: touches every SKU shard and, by id, most request shards.
        for (i, &sku) in skus.iter().enumerate() {
            let _ = engine.apply(
                now,
                &Command::Hold {
                    hold: RequestId(base + i as u128),
                    lines: vec![HoldLineRequest {
                        sku,
                        node: NodeChoice::Any,
                        quantity: Quantity::new(1).unwrap(),
                        need_day: None,
                    }],
                    ttl_ms: 60_000,
                    partial: true,
                },
            );
        }
    };
    hold_all(1 << 64);
    let at_barrier = engine.state_digest();
    let lsn = engine.next_seq() - 1;
    let hold_more = hold_all.clone();
    let storage = Meddler {
        inner: SimStorage::new(),
        during: std::sync::Mutex::new(Some(Box::new(move || hold_more(2 << 64)))),
    };
    let info = write_snapshot(engine, &storage).unwrap();
    assert_eq!(info.lsn, lsn);
    assert!(
        info.copied_by_writers > 500,
        "only {} shards were copied by commands",
        info.copied_by_writers
    );
    assert_ne!(
        engine.state_digest(),
        at_barrier,
        "the meddling commands changed nothing"
    );
    let bytes = storage.inner.read(&snapshot_name(lsn)).unwrap();
    let loaded = SnapshotFile::parse(&bytes).unwrap().load(None).unwrap();
    assert_eq!(loaded.state_digest(), at_barrier);
    loaded.check_invariants().unwrap();
}

/// A snapshot from another format version is not damage: start-up refuses and names it, and
/// leaves the file where it is (no fallback that would quietly set it aside).
#[test]
fn a_snapshot_of_another_format_version_stops_start_up() {
    use promised_engine::durable::OpenError;
    use promised_engine::snapshot::snapshot_name;
    use promised_engine::storage::{SimStorage, Storage};

    let storage = SimStorage::new();
    let options = manual_snapshots();
    let db = DurableEngine::open(Arc::new(storage.clone()), options.clone()).unwrap();
    db.apply(
        Timestamp(1_000),
        &Command::UpsertNode(promised_engine::NodeSpec::open("DC-1")),
    )
    .unwrap();
    let lsn = db.snapshot().unwrap().lsn;
    db.close().unwrap();
    drop(db);
    let name = snapshot_name(lsn);
    let mut bytes = storage.read(&name).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = crc32c_of(&bytes[..64]);
    bytes[64..68].copy_from_slice(&crc.to_le_bytes());
    let mut f = storage.create(&name).unwrap();
    f.append(&bytes).unwrap();
    f.sync_data().unwrap();
    match DurableEngine::open(Arc::new(storage.clone()), options) {
        Err(OpenError::Corrupt(m)) => {
            assert!(m.contains("another version") && m.contains("format 99"), "{m}")
        }
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("started on a snapshot of another format version"),
    }
    assert!(storage.list().unwrap().contains(&name), "the file was moved");
}

/// CRC32C (Castagnoli), bit by bit: the test does not lean on the crate the engine uses.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// After `close`, writes are refused at once and nothing waits for a writer that is gone.
#[test]
fn a_closed_log_refuses_writes_instead_of_hanging() {
    use promised_engine::storage::SimStorage;

    let storage = SimStorage::new();
    let db = DurableEngine::open(Arc::new(storage), DurableOptions::default()).unwrap();
    let node = Command::UpsertNode(promised_engine::NodeSpec::open("DC-1"));
    db.apply(Timestamp(1_000), &node).unwrap();
    db.close().unwrap();
    let refused = db
        .submit(Timestamp(2_000), &node)
        .expect_err("a closed log takes no writes");
    assert!(refused.to_string().contains("closed"), "{refused}");
    // A command applied behind the log's back (through the engine) after the writer stopped: its
    // wait ends with an error instead of blocking forever.
    db.engine().apply(Timestamp(3_000), &node).unwrap();
    let lsn = db.engine().next_seq() - 1;
    let err = db.wal().wait_durable(lsn).expect_err("nobody will write it");
    assert!(err.to_string().contains("closed"), "{err}");
}

/// A snapshot with every log segment gone: the records after it are lost, and start-up says so
/// instead of starting from the snapshot alone.
#[test]
fn a_snapshot_without_its_log_stops_start_up() {
    use promised_engine::durable::OpenError;
    use promised_engine::storage::{SimStorage, Storage};

    let storage = SimStorage::new();
    let options = manual_snapshots();
    let db = DurableEngine::open(Arc::new(storage.clone()), options.clone()).unwrap();
    for i in 0..5 {
        let node = promised_engine::NodeSpec::open(format!("DC-{i}"));
        db.apply(Timestamp(1_000), &Command::UpsertNode(node)).unwrap();
    }
    db.snapshot().unwrap();
    db.close().unwrap();
    drop(db);
    for name in storage.list().unwrap() {
        if name.ends_with(".log") {
            storage.remove(&name).unwrap();
        }
    }
    match DurableEngine::open(Arc::new(storage), options) {
        Err(OpenError::Damage(d)) => assert!(d.reason.contains("no log segment"), "{d}"),
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("started without the log after the snapshot"),
    }
}

/// A record that checks out but whose command no longer applies stops start-up at that record:
/// the message names its file, offset and LSN although replay applies on one thread while
/// another reads and decodes ahead. Several batches pass before it, and enough records follow
/// it that the reader is blocked on a full queue when the applier stops.
#[test]
fn a_command_that_no_longer_applies_stops_start_up_at_its_record() {
    use promised_engine::durable::OpenError;
    use promised_engine::storage::SimStorage;
    use promised_engine::wal::{self, Wal, WalOptions};
    use promised_engine::{Capabilities, CommandLog};

    let storage = SimStorage::new();
    let options = manual_snapshots();
    let db = DurableEngine::open(Arc::new(storage.clone()), options.clone()).unwrap();
    let sku = |i: usize| Command::UpsertSku {
        name: format!("SKU-{i}"),
        required: Capabilities::default(),
    };
    for i in 0..3_000 {
        db.apply(Timestamp(1_000), &sku(i)).unwrap();
    }
    db.close().unwrap();
    drop(db);

    // The log writer alone (in a new segment) appends good records, a commit of a hold that
    // never existed, then more good records than the replay queue holds.
    let tail = wal::scan(&storage, 1, |_| Ok(())).unwrap().tail;
    let segment = tail.next_lsn;
    let bad = segment + 1_500;
    let wal = Wal::open(Arc::new(storage.clone()), tail, WalOptions::default()).unwrap();
    for lsn in segment..bad {
        wal.append(lsn, Timestamp(2_000), &sku(lsn as usize));
    }
    let commit = Command::Commit {
        request: RequestId(7),
        hold: RequestId(99),
    };
    wal.append(bad, Timestamp(2_000), &commit);
    let last = bad + 12_000;
    for lsn in bad + 1..=last {
        wal.append(lsn, Timestamp(2_000), &sku(lsn as usize));
    }
    wal.wait_durable(last).unwrap();
    wal.close().unwrap();
    drop(wal);

    let mut offset = wal::format::SEGMENT_HEADER_LEN;
    wal::scan(&storage, segment, |r| {
        if r.lsn < bad {
            offset += r.framed_len();
        }
        Ok(())
    })
    .unwrap();
    match DurableEngine::open(Arc::new(storage), options) {
        Err(OpenError::Damage(d)) => {
            assert_eq!(d.lsn, bad, "{d}");
            assert!(d.reason.contains("no longer applies"), "{d}");
            assert!(d.file.ends_with(&wal::segment_name(segment)), "{d}");
            assert_eq!(d.offset, offset as u64, "{d}");
        }
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("started although a logged command does not apply"),
    }
}

/// The log writes into segments zero-filled ahead (`wal::PREPARED_SEGMENT`, renamed into place
/// when the log moves on): a segment then ends in zeros where its records end. That is the end of
/// its records, not a torn tail; bytes written after the last record (a torn write) are one.
#[test]
fn a_log_written_over_zero_filled_segments_restarts_exactly() {
    use promised_engine::storage::{SimStorage, Storage};
    use promised_engine::wal::{self, WalOptions};
    use promised_engine::{Capabilities, durable::DurableOptions};
    use std::time::{Duration, Instant};

    const SEGMENT: u64 = 4096;
    let storage = SimStorage::with_preallocation();
    let options = DurableOptions {
        wal: WalOptions {
            segment_bytes: SEGMENT,
            ..WalOptions::default()
        },
        ..manual_snapshots()
    };
    let db = DurableEngine::open(Arc::new(storage.clone()), options.clone()).unwrap();
    let prepared = || storage.list().unwrap().iter().any(|n| n == wal::PREPARED_SEGMENT);
    let wait_for_prepared = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !prepared() {
            assert!(Instant::now() < deadline, "no segment prepared within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Bytes in the segment being written (one record a batch here).
    let mut segment_len = wal::format::SEGMENT_HEADER_LEN as u64;
    let mut rotations = 0;
    for i in 0..400 {
        // The helper starts at open, then once the segment in use is half full; let it finish
        // before the write that moves the log on, so that every later segment is a prepared one.
        if i == 0 || segment_len >= SEGMENT {
            wait_for_prepared();
        }
        let before = db.wal_stats();
        let command = Command::UpsertSku {
            name: format!("SKU-{i}"),
            required: Capabilities::default(),
        };
        db.apply(Timestamp(1_000), &command).unwrap();
        let after = db.wal_stats();
        let written = after.bytes - before.bytes;
        if after.segments_prepared > before.segments_prepared {
            rotations += 1;
            segment_len = wal::format::SEGMENT_HEADER_LEN as u64 + written;
            // The next segment is not zero-filled while this one is under half full.
            assert!(
                !prepared(),
                "write {i}: a segment prepared right after a rotation"
            );
        } else {
            segment_len += written;
        }
    }
    assert!(rotations >= 5, "{rotations} rotations into prepared segments");
    let digest = db.engine().state_digest();
    db.close().unwrap();
    drop(db);

    let mut segments: Vec<(u64, String)> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter_map(|n| wal::format::parse_segment_name(&n).map(|lsn| (lsn, n)))
        .collect();
    segments.sort();
    let last = &segments.last().unwrap().1;
    let bytes = storage.read(last).unwrap();
    let sizes: Vec<usize> = segments
        .iter()
        .map(|(_, n)| storage.read(n).unwrap().len())
        .collect();
    // The first segment (appended to) gave way once a prepared one was ready; every later one
    // was prepared, so the last (not full) is still exactly its prepared size.
    assert!((sizes[0] as u64) < SEGMENT / 2, "{segments:?} {sizes:?}");
    assert!(sizes.iter().skip(1).all(|&s| s as u64 >= SEGMENT), "{sizes:?}");
    assert_eq!(bytes.len() as u64, SEGMENT, "the last segment is a prepared one");
    let mut end = wal::format::SEGMENT_HEADER_LEN;
    let report = wal::scan(&storage, 1, |r| {
        if r.lsn >= segments.last().unwrap().0 {
            end += r.framed_len();
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(report.torn, None);
    assert!(
        end < bytes.len() && bytes[end..].iter().all(|&b| b == 0),
        "a zero tail after {end}"
    );

    // A copy for the torn write below, before the restart starts a segment of its own.
    let dir = storage.power_loss(promised_engine::storage::PowerLoss::DropUnsynced);

    // A clean restart: no warning, the same state.
    let db = DurableEngine::open(Arc::new(storage.clone()), options.clone()).unwrap();
    assert_eq!(db.recovery().warnings, Vec::<String>::new());
    assert_eq!(db.engine().state_digest(), digest);
    db.close().unwrap();
    drop(db);

    // Bytes of a write that never completed, after the last record: a torn tail, cut there.
    dir.corrupt(last, end + 5);
    let db = DurableEngine::open(Arc::new(dir.clone()), options).unwrap();
    let warnings = &db.recovery().warnings;
    assert!(
        warnings.len() == 1 && warnings[0].contains(&format!("at byte {end} of")),
        "{warnings:?}"
    );
    assert_eq!(db.engine().state_digest(), digest);
    assert_eq!(dir.read(last).unwrap().len(), end, "cut where the records end");
}

/// Options with snapshots only on demand, so that each test decides where they fall.
fn manual_snapshots() -> DurableOptions {
    DurableOptions {
        snapshot_every_records: 0,
        snapshot_every: None,
        ..DurableOptions::default()
    }
}
