#!/usr/bin/env bash
# Flame graphs (SVG) of gatehouse passthrough and of the full filter chain under load.
#
#   benches/flame.sh                          # builds the release binary; writes docs/flame-*.svg
#   GH=/tmp/gh DURATION=8 OUT=/tmp benches/flame.sh
#
# Each config (benches/full_chain.py) runs behind the bench upstream with one worker; oha
# loads it with 64 kept-alive connections while `perf record -e cpu-clock` (a software clock:
# no hardware counters needed) samples its threads with DWARF call stacks; `perf script` is
# folded and drawn by benches/flamegraph.py. gatehouse's own frames are blue.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
OUT=${OUT:-docs}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v oha >/dev/null || cargo install oha --locked
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx; }
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
if [ -z "${GH:-}" ]; then
  cargo build --release --quiet
  GH=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi
. benches/lib.sh
UP=$(free_port)
start_upstream "$WORK" "$UP"
for kind in pass full; do
  port=$(free_port)
  python3 benches/full_chain.py $([ $kind = pass ] && echo --passthrough) \
    "$WORK/$kind.yaml" "$port" "$UP" "$PWD/geoip-fixtures/cities.mmdb"
  RUST_LOG=warn "$GH" -c "$WORK/$kind.yaml" 2>"$WORK/$kind.err" &
  pid=$!; echo $pid > "$WORK/$kind.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  oha -z "$((DURATION + 2))s" -c "$CONNS" --no-tui "http://127.0.0.1:$port/bench" >/dev/null &
  echo $! > "$WORK/oha.pid"
  sleep 1
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" -o "$WORK/$kind.data" \
    -- sleep "$DURATION" 2>/dev/null
  wait "$(cat "$WORK/oha.pid")" || true
  kill "$pid"
  perf script -i "$WORK/$kind.data" 2>/dev/null |
    python3 benches/flamegraph.py "gatehouse $([ $kind = pass ] && echo passthrough || echo 'full chain'), perf record -e cpu-clock, oha -c $CONNS" \
    > "$OUT/flame-$kind.svg"
  echo "$OUT/flame-$kind.svg"
done
