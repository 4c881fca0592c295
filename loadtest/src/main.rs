//! `promised-load`: the load generator and verifier. It needs the network server, which arrives
//! with the protocol issue; until then it says so and exits with status 2 rather than pretending.

fn main() {
    eprintln!(
        "promised-load: not built yet. It drives a running `promised serve` over the binary protocol, \
         which does not exist yet. For in-process engine numbers, run `cargo run --release -p promised -- demo` \
         or `cargo bench -p promised-benches`."
    );
    std::process::exit(2);
}
