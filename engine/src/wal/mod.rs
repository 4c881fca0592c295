//! The write-ahead log: every applied command, in apply order, made durable before it is
//! acknowledged. `format` is the bytes, `writer` the group commit, `reader` the scan that
//! recovery, `wal verify` and `wal dump` share, `replay` recovery's two-thread replay.

pub mod format;
pub mod reader;
pub mod replay;
pub mod writer;

pub use format::{RecordRef, segment_name};
pub use reader::{ScanReport, TornTail, WalDamage, scan};
pub use replay::replay;
pub use writer::{DurableAck, FsyncPolicy, LogTail, PREPARED_SEGMENT, Wal, WalFailed, WalOptions, WalStats};
