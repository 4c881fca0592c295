//! `promised wal verify`, `promised wal dump` and `promised snapshot inspect`: the tools an
//! operator reaches for when start-up reports damage. They only read; none changes a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use promised_engine::codec;
use promised_engine::ids::{MS_PER_DAY, civil_from_days};
use promised_engine::snapshot::{SnapshotFile, parse_snapshot_name};
use promised_engine::storage::{FsStorage, Storage};
use promised_engine::wal::{self, ScanReport, format::parse_segment_name};

#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Check every record of the log (checksums, the hash chain, LSN order, that each command
    /// decodes) and every snapshot. Exit status 0 only when all of it checks.
    Verify(DirArgs),
    /// Print one line per record: LSN, time, checksum, command.
    Dump(DumpArgs),
}

#[derive(Args, Debug)]
pub struct DirArgs {
    /// The server's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Start at this LSN (default: the oldest record on disk).
    #[arg(long)]
    pub from_lsn: Option<u64>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A snapshot file (`snap-<LSN>.snap` in the data directory).
    pub file: PathBuf,
}

fn open_dir(dir: &Path) -> anyhow::Result<FsStorage> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    FsStorage::open(dir).with_context(|| format!("cannot open {}", dir.display()))
}

/// The LSN of the oldest record still on disk (1 for a log never pruned).
fn oldest_lsn(storage: &FsStorage) -> anyhow::Result<u64> {
    let names = storage.list().context("cannot list the data directory")?;
    Ok(names
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .min()
        .unwrap_or(1))
}

pub fn run_wal(command: &WalCommand) -> anyhow::Result<()> {
    match command {
        WalCommand::Verify(args) => verify(&args.data_dir),
        WalCommand::Dump(args) => dump(&args.data_dir, args.from_lsn),
    }
}

fn verify(dir: &Path) -> anyhow::Result<()> {
    let storage = open_dir(dir)?;
    let from = oldest_lsn(&storage)?;
    let mut bad_commands = 0u64;
    let report: ScanReport = wal::scan(&storage, from, |record| {
        codec::decode(record.body)
            .map(|_| ())
            .map_err(|e| format!("the command does not decode: {e}"))
            .inspect_err(|_| bad_commands += 1)
    })
    .map_err(|d| anyhow::anyhow!("{d}"))?;
    let last = report.tail.next_lsn - 1;
    println!(
        "log: {} segment(s), {} record(s), LSN {from} to {last}: checksums, hash chain and order OK",
        report.segments.len(),
        report.records
    );
    let mut failed = false;
    if let Some(torn) = &report.torn {
        println!(
            "log: torn tail in {} at byte {} ({} bytes, {}): start-up will cut it",
            storage.describe(&torn.file),
            torn.offset,
            torn.bytes,
            torn.reason
        );
        failed = true;
    }
    let mut snaps: Vec<u64> = storage
        .list()?
        .iter()
        .filter_map(|n| parse_snapshot_name(n))
        .collect();
    snaps.sort_unstable();
    for lsn in snaps {
        let path = dir.join(promised_engine::snapshot::snapshot_name(lsn));
        match check_snapshot(&path) {
            Ok(summary) => println!("snapshot {}: OK, {summary}", path.display()),
            Err(e) => {
                println!("snapshot {}: DAMAGED: {e:#}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        bail!("verification found problems (see above)");
    }
    Ok(())
}

fn check_snapshot(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = SnapshotFile::parse(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = file
        .summary(bytes.len() as u64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Err(e) = &s.invariants {
        bail!("LSN {}: the state it holds breaks an invariant: {e}", s.lsn);
    }
    Ok(format!(
        "LSN {}, {} SKUs, {} nodes, {} positions, {} open holds and allocations, {} bytes",
        s.lsn, s.skus, s.nodes, s.positions, s.holds, s.bytes
    ))
}

fn dump(dir: &Path, from_lsn: Option<u64>) -> anyhow::Result<()> {
    let storage = open_dir(dir)?;
    let from = match from_lsn {
        Some(lsn) => lsn.max(oldest_lsn(&storage)?),
        None => oldest_lsn(&storage)?,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_error = None;
    let report = wal::scan(&storage, from, |record| {
        let command = match codec::decode(record.body) {
            Ok(c) => format!("{} {c:?}", c.kind()),
            Err(e) => format!("UNDECODABLE ({e})"),
        };
        let line = format!(
            "lsn={} time={} crc={:08x} synced={} {}",
            record.lsn,
            format_time(record.time),
            record.crc,
            record.synced_lsn,
            command
        );
        if let Err(e) = writeln!(out, "{line}") {
            write_error.get_or_insert(e);
        }
        Ok(())
    });
    out.flush()?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let report = report.map_err(|d| anyhow::anyhow!("{d}"))?;
    if let Some(torn) = report.torn {
        eprintln!(
            "torn tail in {} at byte {} ({} bytes): not shown",
            storage.describe(&torn.file),
            torn.offset,
            torn.bytes
        );
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn format_time(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / MS_PER_DAY) as i64);
    let in_day = ms % MS_PER_DAY;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let file =
        SnapshotFile::parse(&bytes).map_err(|e| anyhow::anyhow!("{} is damaged {e}", args.file.display()))?;
    let s = file
        .summary(bytes.len() as u64)
        .map_err(|e| anyhow::anyhow!("{} does not load: {e}", args.file.display()))?;
    println!("file:            {}", args.file.display());
    println!(
        "format:          promised snapshot v{}",
        promised_engine::snapshot::SNAPSHOT_VERSION
    );
    println!("lsn:             {}", s.lsn);
    println!("bytes:           {}", s.bytes);
    println!(
        "checksums:       OK (header, {} sections, footer)",
        1 + s.config.sku_shards + s.config.request_shards
    );
    println!("sku shards:      {}", s.config.sku_shards);
    println!("request shards:  {}", s.config.request_shards);
    println!(
        "retention:       {} ms, at most {} records",
        s.config.retention_ms, s.config.retained_records_max
    );
    println!("skus:            {}", s.skus);
    println!("nodes:           {}", s.nodes);
    println!("positions:       {}", s.positions);
    println!("open holds:      {} (held or committed)", s.holds);
    println!(
        "other records:   {} (finished holds and feed commands kept for retries)",
        s.done_records
    );
    println!("state digest:    {}", s.digest);
    match &s.invariants {
        Ok(()) => println!("invariants:      OK"),
        Err(e) => {
            println!("invariants:      BROKEN: {e}");
            bail!("{} holds an inconsistent state", args.file.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-23 09:30:15.250 UTC
        let day = 20_780u64;
        assert_eq!(
            format_time(day * 86_400_000 + (9 * 3600 + 30 * 60 + 15) * 1000 + 250),
            "2026-11-23T09:30:15.250Z"
        );
    }
}
