#!/usr/bin/env bash
# Measures jsonwebtoken's aws_lc_rs and rust_crypto backends side by side (release
# builds, single thread) on RS256/ES256 verify and sign, and prints a Markdown table.
# Usage: bash scripts/bench-jwt-backends.sh [seconds per measurement, default 2]
set -euo pipefail
cd "$(dirname "$0")/../benches/jwt-backend"
secs="${1:-2}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for backend in aws_lc_rs rust_crypto; do
  echo "building and running the $backend backend ..." >&2
  cargo run --release --locked --quiet --no-default-features --features "$backend" \
    --target-dir ../../target/jwt-backend-bench -- "$secs" >> "$out"
done
python3 - "$out" <<'PY'
import sys, collections
rates = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    backend, op, r = line.split()
    rates[op][backend] = float(r)
print("| operation | aws_lc_rs (ops/s) | rust_crypto (ops/s) | aws_lc_rs / rust_crypto |")
print("| --- | --- | --- | --- |")
for op, r in rates.items():
    a, b = r["aws_lc_rs"], r["rust_crypto"]
    print(f"| {op} | {a:,.0f} | {b:,.0f} | {a / b:.1f}x |")
PY
