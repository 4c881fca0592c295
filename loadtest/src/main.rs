//! `promised-load`: drives promised (or Redis + Lua) with a scenario, closed loop or open loop,
//! and reports throughput and latency per operation; `--verify` reconciles every acknowledged
//! write with the target's ledger afterwards. See `loadtest/README.md`.
//!
//! Exit status: 0 when the run completed (and verified, with `--verify`); 1 when a connection
//! broke or verification found a mismatch; 2 when the run could not start.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    promised_load::no_huge_pages();
    match promised_load::cli::run(promised_load::cli::Args::parse()) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("promised-load: {e:#}");
            std::process::exit(2);
        }
    }
}
