//! `promised wal verify`, `promised wal dump` and `promised snapshot inspect` on a real data
//! directory written by the durable engine: what an operator sees, and the exit statuses scripts
//! rely on.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use promised_engine::durable::{DurableEngine, DurableOptions};
use promised_engine::storage::FsStorage;
use promised_engine::wal::WalOptions;
use promised_engine::{
    Capabilities, Command as Cmd, HoldLineRequest, NodeChoice, NodeSpec, Quantity, RequestId, Timestamp,
};

const NOW: Timestamp = Timestamp(20_780 * 86_400_000 + 9 * 3_600_000);

fn promised(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .output()
        .expect("run promised")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory with a few hundred records over several segments and one snapshot in the middle.
fn write_dir(dir: &Path) -> (u64, String) {
    let options = DurableOptions {
        wal: WalOptions {
            segment_bytes: 4096,
            ..WalOptions::default()
        },
        snapshot_every_records: 0,
        snapshot_every: None,
        ..DurableOptions::default()
    };
    let db = DurableEngine::open(Arc::new(FsStorage::open(dir).unwrap()), options).unwrap();
    db.apply(NOW, &Cmd::UpsertNode(NodeSpec::open("DC-1"))).unwrap();
    db.apply(
        NOW,
        &Cmd::UpsertSku {
            name: "SKU-1".into(),
            required: Capabilities::default(),
        },
    )
    .unwrap();
    let (sku, node) = (
        db.engine().sku_id("SKU-1").unwrap(),
        db.engine().node_id("DC-1").unwrap(),
    );
    db.apply(
        NOW,
        &Cmd::SetOnHand {
            request: RequestId(1),
            node,
            feed_seq: 1,
            counts: vec![(sku, 1_000)],
        },
    )
    .unwrap();
    let hold = |i: u128| Cmd::Hold {
        hold: RequestId(100 + i),
        lines: vec![HoldLineRequest {
            sku,
            node: NodeChoice::Node(node),
            quantity: Quantity::new(1).unwrap(),
            need_day: None,
        }],
        ttl_ms: 60_000,
        partial: false,
    };
    for i in 0..150 {
        db.apply(NOW, &hold(i)).unwrap();
    }
    let snap = db.snapshot().unwrap();
    for i in 150..300 {
        db.apply(NOW, &hold(i)).unwrap();
    }
    let digest = db.engine().state_digest().to_string();
    db.close().unwrap();
    (snap.lsn, digest)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn verify_dump_and_inspect_a_healthy_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (snap_lsn, _) = write_dir(dir.path());
    let d = dir.path().to_str().unwrap();

    let out = promised(&["wal", "verify", "--data-dir", d]);
    assert!(
        out.status.success(),
        "verify failed on a healthy directory:\n{}",
        text(&out)
    );
    let t = text(&out);
    assert!(t.contains("303 record(s), LSN 1 to 303"), "{t}");
    assert!(t.contains("snapshot") && t.contains(": OK, LSN"), "{t}");

    let out = promised(&["wal", "dump", "--data-dir", d, "--from-lsn", "300"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("lsn=300 time=2026-11-23T09:00:00.000Z crc="),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" hold Hold {"), "{}", lines[0]);
    let out = promised(&["wal", "dump", "--data-dir", d]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 303);

    let snap = dir.path().join(format!("snap-{snap_lsn:020}.snap"));
    let out = promised(&["snapshot", "inspect", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&format!("lsn:             {snap_lsn}")), "{t}");
    assert!(t.contains("open holds:      150"), "{t}");
    assert!(t.contains("invariants:      OK"), "{t}");
}

#[test]
fn verify_fails_and_names_the_place_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (snap_lsn, _) = write_dir(dir.path());
    let d = dir.path().to_str().unwrap();
    let segs = segments(dir.path());
    let first_lsn = |p: &std::path::PathBuf| -> u64 {
        let name = p.file_name().unwrap().to_str().unwrap();
        name.trim_start_matches("wal-")
            .trim_end_matches(".log")
            .parse()
            .unwrap()
    };
    // Flip a byte in the middle of a segment that recovery replays and that is not the last:
    // damage before the tail.
    let victim = segs[..segs.len() - 1]
        .iter()
        .find(|p| first_lsn(p) > snap_lsn)
        .unwrap_or_else(|| panic!("no whole segment after the snapshot at {snap_lsn}: {segs:?}"));
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();

    let out = promised(&["wal", "verify", "--data-dir", d]);
    assert!(
        !out.status.success(),
        "verify passed a damaged log:\n{}",
        text(&out)
    );
    let t = text(&out);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        t.contains(name) && t.contains("at byte") && t.contains("expected LSN"),
        "{t}"
    );

    // The server refuses to start on it, with the same facts.
    let err = DurableEngine::open(
        Arc::new(FsStorage::open(dir.path()).unwrap()),
        DurableOptions::default(),
    )
    .err()
    .expect("recovery must refuse damage before the tail");
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn verify_reports_a_torn_tail_and_a_damaged_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (snap_lsn, _) = write_dir(dir.path());
    let d = dir.path().to_str().unwrap();
    let last = segments(dir.path()).pop().unwrap();
    // Into the last record (a prepared segment ends in zeros after its records).
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(end as u64 - 10)
        .unwrap();
    let out = promised(&["wal", "verify", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(text(&out).contains("torn tail"), "{}", text(&out));

    let snap = dir.path().join(format!("snap-{snap_lsn:020}.snap"));
    let mut bytes = std::fs::read(&snap).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    std::fs::write(&snap, &bytes).unwrap();
    let out = promised(&["snapshot", "inspect", snap.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("damaged"), "{}", text(&out));
}

#[test]
fn tools_refuse_a_missing_directory_clearly() {
    let out = promised(&["wal", "verify", "--data-dir", "/nonexistent/promised-data"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not a directory"), "{}", text(&out));
}

/// Checksums prove a snapshot holds the bytes written; `snapshot inspect` and `wal verify` also
/// check that those bytes describe a consistent ledger. A snapshot whose sections were rewritten
/// with valid checksums but a reserved count that no hold accounts for is refused.
#[test]
fn inspect_catches_an_inconsistent_state_behind_valid_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let (snap_lsn, _) = write_dir(dir.path());
    let snap = dir.path().join(format!("snap-{snap_lsn:020}.snap"));
    let mut bytes = std::fs::read(&snap).unwrap();
    // The position of SKU-1 at DC-1: on hand 1000, safety stock 0, reserved 150 (150 holds).
    let pattern: Vec<u8> = [1000u32, 0, 150].iter().flat_map(|v| v.to_le_bytes()).collect();
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .expect("the position is in the snapshot");
    bytes[at + 8..at + 12].copy_from_slice(&149u32.to_le_bytes());
    // Re-seal: every section's CRC, then the footer's CRC over them.
    let mut off = 68;
    let mut crcs = Vec::new();
    while &bytes[off..off + 8] != b"PROMSEND" {
        let len = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c(&bytes[off + 12..off + 12 + len]);
        bytes[off + 8..off + 12].copy_from_slice(&crc.to_le_bytes());
        crcs.extend_from_slice(&crc.to_le_bytes());
        off += 12 + len;
    }
    let footer_crc = crc32c::crc32c(&crcs);
    bytes[off + 12..off + 16].copy_from_slice(&footer_crc.to_le_bytes());
    std::fs::write(&snap, &bytes).unwrap();

    let out = promised(&["snapshot", "inspect", snap.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "inspect passed an inconsistent snapshot:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("invariants:      BROKEN"), "{}", text(&out));
    let out = promised(&["wal", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("breaks an invariant"), "{}", text(&out));
}
