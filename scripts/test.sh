#!/usr/bin/env bash
# Runs every check Ferrid's CI runs: formatting, clippy with warnings denied, and the
# whole test suite (unit, contract and end-to-end tests against the real binary).
# Needs the Rust toolchain and Python 3.11+ with venv and pip; everything else is
# fetched by cargo and pip (the Python tools into target/), and PostgreSQL's server
# binaries come from Debian's `postgresql` package (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> rustfmt"
cargo fmt --all -- --check

echo "==> clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> fuzz targets build"
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet

echo "==> PostgreSQL server binaries (the PostgreSQL datastore's tests start their own servers)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql > /dev/null
fi

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "==> deploy manifests and Helm chart"
bash scripts/validate-deploy.sh

echo "==> delegation walk-through (examples/delegation)"
bash examples/delegation/run.sh > /dev/null

echo "==> mutual TLS walk-through (examples/mtls-echo)"
bash examples/mtls-echo/run.sh > /dev/null

echo "==> benchmark harness smoke run (figures are not checked; see docs/benchmarks.md)"
cargo build --locked --quiet -p ferrid -p ferrid-bench
target/debug/ferrid-bench --quick --ferrid target/debug/ferrid > /dev/null
