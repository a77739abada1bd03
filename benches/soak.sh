#!/usr/bin/env bash
# Reload soak: oha sends traffic for DURATION while a loop sends SIGHUP every second with
# alternating configs (a route added and removed, a backend's timeouts changed). Prints the
# status counts and fails on any status other than 200, or on any connection error.
#
#   benches/soak.sh               # 20 s, 32 connections
#   DURATION=60s CONNS=64 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
CONNS=${CONNS:-32}
WORK=$(mktemp -d)
cleanup() { kill "$GH_PID" "$UP_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

command -v oha >/dev/null || cargo install oha --locked
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
cargo build --release --quiet
GH=${CARGO_TARGET_DIR:-target}/release/gatehouse
. benches/lib.sh
P=$(free_port); A=$(free_port); U=$(free_port)

write_config() { # $1 = variant (a|b)
  local extra="" connect=1s
  if [ "$1" = b ]; then extra='  - { path: "/extra/{*rest}", backend: app }'; connect=2s; fi
  cat > "$WORK/gatehouse.yaml.tmp" <<YAML
version: 1
server:
  listen: ["127.0.0.1:$P"]
  admin: { listen: "127.0.0.1:$A" }
  threads: 2
  access_log: false
  pid_file: $WORK/gh.pid
  upgrade_sock: $WORK/gh.sock
demo: { listen: "127.0.0.1:$U" }
backends:
  app:
    discovery: { static: ["127.0.0.1:$U"] }
    timeouts: { connect: $connect }
endpoints:
  - { path: "/soak/{*rest}", backend: app }
$extra
YAML
  mv "$WORK/gatehouse.yaml.tmp" "$WORK/gatehouse.yaml"
}

write_config a
RUST_LOG=warn "$GH" -c "$WORK/gatehouse.yaml" 2>"$WORK/gh.err" &
GH_PID=$!
UP_PID=$GH_PID
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$A/ready" >/dev/null && break; sleep 0.1; done

oha -z "$DURATION" -c "$CONNS" --no-tui --output-format json "http://127.0.0.1:$P/soak/ping" > "$WORK/oha.json" &
OHA=$!
n=0
while kill -0 $OHA 2>/dev/null; do
  sleep 1
  if [ $((n % 2)) = 0 ]; then write_config b; else write_config a; fi
  kill -HUP "$GH_PID"; n=$((n + 1))
done
wait $OHA || true

reloads=$(curl -s "http://127.0.0.1:$A/metrics" | awk '/^gatehouse_reloads_total/ {print}')
python3 - "$WORK/oha.json" "$n" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); sent = int(sys.argv[2])
codes = d.get("statusCodeDistribution", {})
# oha cancels the requests in flight when its time is up: those are not failures.
errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
print(f"SIGHUPs sent: {sent}")
print("status counts:", dict(sorted(codes.items())))
print("errors:", errors or "none")
print(f"requests/s: {d['summary']['requestsPerSec']:.0f}")
bad = {k: v for k, v in codes.items() if k != "200"}
if bad or errors:
    print("FAIL: unexpected statuses or errors"); sys.exit(1)
print("OK: every request answered 200 across the reloads")
PY
echo "$reloads"
