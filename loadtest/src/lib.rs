//! `promised-load`: the load generator and verifier for promised. Scenarios run as sessions
//! ([`workload`]) over raw connections ([`driver`]) to promised or to Redis + Lua
//! ([`target`]); [`stats`] keeps latency per operation, [`verify`] reconciles what was
//! acknowledged with the target's ledger, [`plot`] draws the results, [`noop`] is a server that
//! answers without doing anything (to measure the harness itself).

pub mod catalog;
pub mod cli;
pub mod driver;
pub mod noop;
pub mod plot;
pub mod stats;
pub mod target;
pub mod verify;
pub mod workload;

/// What the re-route scenario's batch re-route did, halfway through the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Midway {
    pub seconds: f64,
    pub orders: u64,
    /// Moves planned, applied, and skipped by the partial apply (stock moved under them).
    pub moves: u64,
    pub applied_moves: u64,
    pub skipped: usize,
    pub left_out: usize,
    pub gap: Option<f64>,
    pub applied: bool,
    #[serde(skip)]
    pub moved: Vec<(promised_client::RequestId, Vec<u32>)>,
}

/// Keeps this process on ordinary pages. A transparent huge page is zeroed whole by the fault
/// that first touches it (milliseconds on a small VM), and a harness that stalls on one charges
/// the stall to the server's latency.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only; it sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
