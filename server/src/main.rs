//! `promised`: the server and admin CLI.
//!
//! `promised serve` runs the server (`serve/`); `promised demo` runs the engine in process on a
//! generated data set; `promised solve` runs the optimiser on a problem file; the other commands
//! inspect data directories and config files. `main` only
//! parses the command line and dispatches.

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;

mod demo;
mod serve;
mod solve;
mod storage_tools;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "promised",
    version,
    about = "Available-to-promise and order-routing engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Generate a data set, load it into an in-process engine, run a checkout simulation against
    /// it from several threads, and print what happened.
    Demo(demo::DemoArgs),
    /// Serve the binary protocol (schemas/PROTOCOL.md) over TCP or TLS from a data directory,
    /// with admin HTTP (/metrics, /health, /ready) beside it.
    Serve(Box<serve::ServeArgs>),
    /// Inspect the write-ahead log of a data directory (read only).
    #[command(subcommand)]
    Wal(storage_tools::WalCommand),
    /// Inspect snapshot files (read only).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Solve an assignment problem file offline (docs/solve-format.md): JSON summary on stdout,
    /// the plan to --out.
    Solve(solve::SolveArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a TOML config file and print the settings it gives.
    Check {
        /// The file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Check a snapshot's checksums, load it, and print what it holds.
    Inspect(storage_tools::InspectArgs),
}

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`promised demo | head`), as Unix tools do, instead of
    // panicking in `println!`.
    // SAFETY: restoring the default disposition of a signal is async-signal-safe and done
    // before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    promised::alloc::tune_allocator();
    let result = match Cli::parse().command {
        Commands::Demo(args) => demo::run(&args),
        Commands::Serve(args) => serve::run(&args),
        Commands::Wal(command) => storage_tools::run_wal(&command),
        Commands::Snapshot(SnapshotCommand::Inspect(args)) => storage_tools::inspect(&args),
        Commands::Config(ConfigCommand::Check { file }) => promised::config::check(&file),
        Commands::Solve(args) => solve::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("promised: error: {e:#}");
            if e.downcast_ref::<solve::Refused>().is_some() {
                // The input was wrong, as with a usage error.
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
