//! End-to-end smoke test of the durable engine on a real directory: load, hold, snapshot,
//! restart, compare digests.

use std::sync::Arc;

use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::durable::{DurableEngine, DurableOptions};
use promised_engine::storage::FsStorage;
use promised_engine::{Command, HoldLineRequest, NodeChoice, Quantity, RequestId};

#[test]
fn restart_reproduces_the_state_with_and_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsStorage::open(dir.path()).unwrap());
    let options = DurableOptions {
        snapshot_every_records: 0,
        snapshot_every: None,
        ..DurableOptions::default()
    };
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
