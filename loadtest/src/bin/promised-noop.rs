//! `promised-noop [--listen ADDR]`: a server that answers without doing anything, to measure
//! `promised-load` itself. Runs until killed.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    about = "A promised-protocol server that grants everything and stores nothing (for measuring the load generator)"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7499")]
    listen: String,
}

fn main() -> anyhow::Result<()> {
    promised_load::no_huge_pages();
    let args = Args::parse();
    let listener = std::net::TcpListener::bind(&args.listen)?;
    println!("promised-noop listening on {}", listener.local_addr()?);
    promised_load::noop::serve(listener)?;
    Ok(())
}
