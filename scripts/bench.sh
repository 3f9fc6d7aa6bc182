#!/usr/bin/env bash
# Builds Ferrid in release mode and runs the benchmark harness against the real
# binaries. Pass --quick for a seconds-long smoke run. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ferrid -p ferrid-bench
exec target/release/ferrid-bench --ferrid target/release/ferrid "$@"
