//! Recovery's replay: the log scanned and decoded on one thread, applied on another.
//!
//! Reading a segment, checking every record's checksum and chain link and decoding its command
//! is about a tenth of a replay; applying is the rest and is serial (the log order is the
//! order of the state). Splitting them puts the first part on a second core while the calling
//! thread applies: batches of decoded commands pass through a short bounded queue, and the emptied
//! batches go back to the reader to be filled again. The applier knows the commands ahead of the
//! one it applies, and starts fetching what a hold will read a few commands early
//! (`Engine::prefetch_hold`): applying is mostly waiting for memory.

use std::sync::mpsc;

use super::reader::{ScanReport, WalDamage, scan};
use crate::codec;
use crate::command::Command;
use crate::ids::Timestamp;
use crate::ledger::Engine;
use crate::storage::Storage;

/// Commands per batch: large enough that the queue is touched once per thousand records, small
/// enough that the applier starts at once.
const BATCH: usize = 1024;
/// Batches decoded ahead of the applier (memory: a few MB).
const QUEUE: usize = 8;
/// How many commands ahead of the one being applied each step of `Engine::prefetch_hold` runs.
const LOOK_AHEAD: [usize; 3] = [24, 12, 4];

struct Decoded {
    lsn: u64,
    time: u64,
    command: Command,
}

/// Applies every record from `from_lsn` on to `engine`, in log order; returns the scan's report
/// and the number of records applied. A record that does not decode or no longer applies is
/// damage at that record, and nothing after it is applied.
pub fn replay(storage: &dyn Storage, from_lsn: u64, engine: &Engine) -> Result<(ScanReport, u64), WalDamage> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<Decoded>>(QUEUE);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<Decoded>>();
    let (scanned, applied) = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("wal-replay-reader".into())
            .spawn_scoped(s, move || {
                let mut batch = Vec::with_capacity(BATCH);
                let scanned = scan(storage, from_lsn, |record| {
                    let command =
                        codec::decode(record.body).map_err(|e| format!("command does not decode: {e}"))?;
                    batch.push(Decoded {
                        lsn: record.lsn,
                        time: record.time,
                        command,
                    });
                    if batch.len() == BATCH {
                        let next = empty_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH));
                        // The applier hung up: it met a record that does not apply and will
                        // report it; the scan just stops.
                        full_tx
                            .send(std::mem::replace(&mut batch, next))
                            .map_err(|_| "replay stopped".to_string())?;
                    }
                    Ok(())
                });
                // The records before damage still apply (the caller reports the damage).
                if !batch.is_empty() {
                    let _ = full_tx.send(batch);
                }
                scanned
            })
            .expect("spawn the replay reader");
        let applied = apply_batches(engine, full_rx, empty_tx);
        let scanned = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (scanned, applied)
    });
    match applied {
        Ok(applied) => scanned.map(|report| (report, applied)),
        Err((lsn, reason)) => Err(damage_at(storage, lsn, reason)),
    }
}

/// Applies batches until the reader is done; on a command that no longer applies, returns its
/// LSN and why, and hangs up so that the reader stops.
fn apply_batches(
    engine: &Engine,
    full: mpsc::Receiver<Vec<Decoded>>,
    empty: mpsc::Sender<Vec<Decoded>>,
) -> Result<u64, (u64, String)> {
    let mut applied = 0u64;
    for mut batch in full {
        for i in 0..batch.len() {
            for (step, ahead) in LOOK_AHEAD.into_iter().enumerate() {
                if let Some(next) = batch.get(i + ahead) {
                    engine.prefetch_hold(&next.command, step as u8);
                }
            }
            let Decoded { lsn, time, command } = &batch[i];
            engine.apply(Timestamp(*time), command).map_err(|e| {
                (
                    *lsn,
                    format!("command no longer applies ({e}): the log and the snapshot disagree"),
                )
            })?;
            applied += 1;
        }
        batch.clear();
        let _ = empty.send(batch);
    }
    Ok(applied)
}

/// The damage report for the record at `lsn` (found by scanning to it again: the applier knows
/// only the LSN, the scan knows the file and the offset).
fn damage_at(storage: &dyn Storage, lsn: u64, reason: String) -> WalDamage {
    let located = scan(storage, lsn, |record| {
        if record.lsn == lsn {
            Err(reason.clone())
        } else {
            Ok(())
        }
    });
    match located {
        Err(damage) => damage,
        // Only if the log changed between the two scans (nothing writes it during recovery).
        Ok(_) => WalDamage {
            file: storage.describe(""),
            offset: 0,
            lsn,
            reason,
            version: None,
        },
    }
}
