#!/usr/bin/env bash
# Walk-through of delegation: alice signs in at an identity provider, a planner agent
# acts for her, hands the work to a researcher sub-agent, and a search service sees
# the whole chain. Everything runs locally; takes a minute on first build.
#   bash examples/delegation/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ferrid --bin ferrid --example delegation
FERRID=$PWD/target/debug/ferrid
EX=$PWD/target/debug/examples/delegation
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
TD=demo.example
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NODE=127.0.0.1:$(port)
HEALTH=127.0.0.1:$(port)
PLANNER=spiffe://$TD/agents/planner
RESEARCHER=spiffe://$TD/agents/researcher

step() { printf '\n== %s\n' "$*"; }

step "1. An identity provider signs alice's ID token; it names the planner in may_act"
"$EX" idp --out "$W/idp" --subject alice --may-act "$PLANNER" &
for _ in $(seq 100); do [ -s "$W/idp/issuer" ] && break; sleep 0.1; done
ISSUER=$(cat "$W/idp/issuer")

step "2. A Ferrid server that trusts that provider for delegation"
cat > "$W/server.toml" <<EOF
trust_domain = "$TD"
data_dir = "$W/server"
bind_address = "$NODE"
health_address = "$HEALTH"
admin_socket = "$W/admin.sock"
[log]
level = "warn"
[delegation]
max_chain_depth = 3
[[delegation.identity_providers]]
name = "corp"
issuer = "$ISSUER"
audience = "ferrid"
EOF
"$FERRID" server --config "$W/server.toml" &
for _ in $(seq 200); do "$FERRID" healthcheck --address "$HEALTH" >/dev/null 2>&1 && break; sleep 0.1; done
export FERRID_ADMIN_SOCKET=$W/admin.sock
"$FERRID" bundle show > "$W/bundle.pem"
"$FERRID" bundle show --format jwks > "$W/bundle.json"

step "3. Two delegated agents; their X.509-SVIDs (minted here by the operator; a real agent fetches them from the Workload API)"
for a in planner researcher; do
  "$FERRID" entry create --spiffe-id "spiffe://$TD/agents/$a" --parent-id "spiffe://$TD/ferrid/agent/demo/node-1" \
    --selector unix:uid:1000 --metadata authority_model=delegated -o json > /dev/null
  "$FERRID" x509 mint --spiffe-id "spiffe://$TD/agents/$a" --out-dir "$W/$a" > /dev/null
done
as() { local who=$1; shift; "$FERRID" token "$@" --server-address "$NODE" --trust-domain "$TD" \
  --trust-bundle "$W/bundle.pem" --cert "$W/$who/svid.pem" --key "$W/$who/key.pem"; }

step "4. The planner exchanges alice's ID token for a token addressed to the researcher (narrower scope)"
as planner exchange --subject-token-file "$W/idp/alice.idtoken" --subject-token-type id_token \
  --audience "$RESEARCHER" --scope "mail.read calendar.read" --may-act "$RESEARCHER" > "$W/to-researcher.jwt"
echo "ok: $(wc -c < "$W/to-researcher.jwt") bytes"

step "5. The researcher exchanges that for a token to the search service"
as researcher exchange --subject-token-file "$W/to-researcher.jwt" --audience search-api --scope mail.read > "$W/to-search.jwt"

step "6. The search service verifies it with the trust bundle and prints the chain"
"$EX" relying --bundle "$W/bundle.json" --audience search-api --token "$W/to-search.jwt"

step "7. What is refused"
if as researcher exchange --subject-token-file "$W/idp/alice.idtoken" --subject-token-type id_token --audience x 2>"$W/err"; then
  echo "unexpected: the researcher used alice's token directly"; exit 1
fi
echo "researcher with alice's own token: $(cat "$W/err")"
if as researcher exchange --subject-token-file "$W/to-researcher.jwt" --audience search-api --scope mail.send 2>"$W/err"; then
  echo "unexpected: scope grew"; exit 1
fi
echo "scope growth: $(cat "$W/err")"
