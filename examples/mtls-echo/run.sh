#!/usr/bin/env bash
# Walk-through of mutual TLS between two services with SVIDs from Ferrid's agent,
# checked by ferrid-validate's rustls verifiers: echo, rotation without dropping the
# connection, and a revoked (stolen) certificate refused at its next handshake.
# Everything runs locally; takes a few seconds once built.
#   bash examples/mtls-echo/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ferrid --bin ferrid --example mtls_echo
T=${CARGO_TARGET_DIR:-$PWD/target}
FERRID=$T/debug/ferrid
ECHO=$T/debug/examples/mtls_echo
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
TD=demo.example
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NODE=127.0.0.1:$(port)
HEALTH=127.0.0.1:$(port)
ECHO_ADDR=127.0.0.1:$(port)
SERVER_ID=spiffe://$TD/echo-server
CLIENT_ID=spiffe://$TD/echo-client

step() { printf '\n== %s\n' "$*"; }
# wait_for FILE PATTERN: until a line of FILE matches (20 s at most).
wait_for() {
  for _ in $(seq 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1:"; cat "$1"; exit 1
}
show() { grep -- "$2" "$1" | sed 's/^[^ ]* *[A-Z]* *//' | tail -n "${3:-3}" | sed "s/^/   [$(basename "$1" .log)] /"; }

step "1. A Ferrid server (revocation heartbeat every second)"
cat > "$W/server.toml" <<EOF
trust_domain = "$TD"
data_dir = "$W/server"
bind_address = "$NODE"
health_address = "$HEALTH"
admin_socket = "$W/admin.sock"
[log]
level = "warn"
[revocation]
heartbeat_interval = "1s"
EOF
"$FERRID" server --config "$W/server.toml" &
for _ in $(seq 200); do "$FERRID" healthcheck --address "$HEALTH" >/dev/null 2>&1 && break; sleep 0.1; done
export FERRID_ADMIN_SOCKET=$W/admin.sock
"$FERRID" bundle show > "$W/bundle.pem"

step "2. Two agents, one per service, each with one registration entry for this uid"
# The unix attestor tells processes apart by uid, gid, user, group, binary path and
# digest; two instances of one binary under one uid look the same, so each service
# talks to its own agent (on a real deployment they would run on different nodes or
# under different uids).
for svc in echo-server echo-client; do
  "$FERRID" token generate -o json > "$W/$svc.token.json"
  AGENT_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_id"])' "$W/$svc.token.json")
  TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$W/$svc.token.json")
  "$FERRID" entry create --spiffe-id "spiffe://$TD/$svc" --parent-id "$AGENT_ID" --selector "unix:uid:$(id -u)" > /dev/null
  cat > "$W/$svc.agent.toml" <<EOF
trust_domain = "$TD"
server_address = "$NODE"
data_dir = "$W/$svc-agent"
socket_path = "$W/$svc.sock"
join_token = "$TOKEN"
trust_bundle_file = "$W/bundle.pem"
[log]
level = "warn"
EOF
  "$FERRID" agent --config "$W/$svc.agent.toml" &
  echo "   $svc: agent $AGENT_ID, socket $W/$svc.sock"
done
for svc in echo-server echo-client; do
  for _ in $(seq 200); do [ -S "$W/$svc.sock" ] && break; sleep 0.1; done
done
FEED=(--feed "https://$NODE")

step "3. The echo server (accepts exactly $CLIENT_ID) and a client (expects $SERVER_ID)"
SPIFFE_ENDPOINT_SOCKET=unix://$W/echo-server.sock "$ECHO" server --listen "$ECHO_ADDR" --allow "$CLIENT_ID" "${FEED[@]}" 2> "$W/server.log" &
wait_for "$W/server.log" "echo server"
SPIFFE_ENDPOINT_SOCKET=unix://$W/echo-client.sock "$ECHO" client --connect "$ECHO_ADDR" --server-id "$SERVER_ID" \
  --interval 300 "${FEED[@]}" > "$W/client.out" 2> "$W/client.log" &
wait_for "$W/client.out" "echo: ping 2 "
SERIAL=$(sed -n 's/.*X.509-SVID from the Workload API: .* serial \([0-9a-f]*\).*/\1/p' "$W/client.log" | head -n 1)
show "$W/client.log" "handshake #1 ok"
show "$W/server.log" "accepted" 1
sed 's/^/   [client] /' "$W/client.out" | tail -n 2

step "4. A thief with a copy of that certificate: a client pinned to serial $SERIAL, reconnecting after every echo"
SPIFFE_ENDPOINT_SOCKET=unix://$W/echo-client.sock "$ECHO" client --connect "$ECHO_ADDR" --server-id "$SERVER_ID" \
  --interval 300 --pin-svid --reconnect-after 1 "${FEED[@]}" > "$W/thief.out" 2> "$W/thief.log" &
wait_for "$W/thief.log" "handshake #2 ok"
show "$W/thief.log" "handshake #. ok" 2

step "5. ferrid revoke --serial $SERIAL"
"$FERRID" revoke --serial "$SERIAL" --reason "certificate copied off the host"
wait_for "$W/server.log" "REFUSED"
wait_for "$W/client.log" "rotated"
wait_for "$W/thief.log" "FAILED"
echo "-- the agent gave the client a new SVID at once; its open connection keeps echoing:"
show "$W/client.log" "rotated" 1
BEFORE=$(grep -c "handshake #1 (serial $SERIAL)" "$W/client.out")
wait_for "$W/client.out" "echo: ping $((BEFORE + 2)) on handshake #1 (serial $SERIAL)"
sed 's/^/   [client] /' "$W/client.out" | tail -n 2
if grep -q "lost\|FAILED" "$W/client.log"; then echo "unexpected: the client's connection was lost"; exit 1; fi
echo "-- the thief's next handshake is refused by the server, because the certificate is revoked:"
show "$W/server.log" "REFUSED" 1
show "$W/thief.log" "FAILED" 1

step "6. A new connection with the client's current SVID is accepted"
NEW=$(sed -n 's/.*rotated: new handshakes present serial \([0-9a-f]*\).*/\1/p' "$W/client.log" | head -n 1)
SPIFFE_ENDPOINT_SOCKET=unix://$W/echo-client.sock timeout 30 "$ECHO" client --connect "$ECHO_ADDR" --server-id "$SERVER_ID" \
  --interval 100 --count 1 "${FEED[@]}" > "$W/fresh.out" 2> "$W/fresh.log"
show "$W/fresh.log" "handshake #1 ok" 1
grep -q "we presented serial $NEW" "$W/fresh.log" || { echo "unexpected: not the rotated serial $NEW"; exit 1; }
show "$W/server.log" "presented serial $NEW" 1

echo
echo "ok: echo over mTLS, rotation without a dropped connection, revoked certificate refused at its next handshake"
