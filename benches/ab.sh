#!/usr/bin/env bash
# Before/after in one run: several gatehouse builds side by side behind one upstream, each
# with the passthrough config and with the full filter chain (benches/full_chain.py), one
# worker each; oha runs alternated round-robin over all of them so drift on the machine hits
# every build alike. Prints, per build and config, the median requests/s and CPU microseconds
# per request (utime+stime of the process from /proc) over the rounds.
#
#   benches/ab.sh /tmp/gh-before /tmp/gh-after
#   ROUNDS=5 DURATION=8s CONNS=64 benches/ab.sh /tmp/gh-before /tmp/gh-after
#   CEILING=target/release/examples/h1_ceiling HAPROXY=1 benches/ab.sh /tmp/gh
#   benches/ab.sh /tmp/gh /tmp/gh,max_idle=16           # one build, two settings
#   H2C=1 benches/ab.sh /tmp/gh "/tmp/gh,server=h2: { stream_window: 1MB }"
#
# A target is a binary, optionally with one knob after a comma: `max_idle=N` (the backend's
# max_idle_connections, which caps its idle connections and sizes Pingora's upstream
# keep-alive pool, at least 128; default 256) or `server=LINE` (a line added under
# `server:`, a key the bench config does not set already). H2C=1 sends the load over HTTP/2
# by prior knowledge (oha --http2, 8 streams per connection) to plain listeners with
# `server.h2c`; BODY=FILE makes every request a POST of that file. Neither applies to the
# CEILING and HAPROXY targets, which speak HTTP/1.1 and are left out when either is set.
#
# CEILING=path adds the h1_ceiling example (plain HTTP/1 passthrough on pingora-core alone)
# as one more target, HAPROXY=1 HAProxy as a plain proxy (one thread, kept-alive upstream
# connections, X-Forwarded-For), both in the same alternated rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: benches/ab.sh GATEHOUSE_BINARY[,max_idle=N|,server=LINE]..." >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v oha >/dev/null || cargo install oha --locked
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx; }

. benches/lib.sh
UP=$(free_port)
start_upstream "$WORK" "$UP"

declare -A PORT
TARGETS=()
i=0
H2C=${H2C:-0}
OHA_PROTO=()
[ "$H2C" = 1 ] && OHA_PROTO=(--http2 -p 8)
[ -n "${BODY:-}" ] && OHA_PROTO+=(-m POST -D "$BODY")
if [ "$H2C" = 1 ] || [ -n "${BODY:-}" ]; then CEILING=""; HAPROXY=0; fi
for target in "$@"; do
  i=$((i + 1))
  bin=${target%%,*}
  knob=(); [ "$bin" != "$target" ] && knob=("${target#*,}")
  extra=()
  [ "$H2C" = 1 ] && extra+=(--server "h2c: true")
  case "${knob[0]:-}" in
    "") ;;
    max_idle=*,* | server=*,*=*) echo "one knob per target: $target" >&2; exit 2 ;;
    max_idle=*) extra+=(--max-idle "${knob[0]#max_idle=}") ;;
    server=*) extra+=(--server "${knob[0]#server=}") ;;
    *) echo "unknown knob: ${knob[0]}" >&2; exit 2 ;;
  esac
  for kind in pass full; do
    name="b$i-$kind"; port=$(free_port); PORT[$name]=$port; TARGETS+=("$name")
    python3 benches/full_chain.py $([ $kind = pass ] && echo --passthrough) "${extra[@]}" \
      "$WORK/$name.yaml" "$port" "$UP" "$PWD/geoip-fixtures/cities.mmdb"
    RUST_LOG=warn "$bin" -c "$WORK/$name.yaml" 2>"$WORK/$name.err" &
    echo $! > "$WORK/$name.proc.pid"
  done
  echo "b$i = $target"
done
if [ -n "${CEILING:-}" ]; then
  port=$(free_port); PORT[ceiling]=$port; TARGETS+=(ceiling)
  "$CEILING" "127.0.0.1:$port" "127.0.0.1:$UP" 2>"$WORK/ceiling.err" &
  echo $! > "$WORK/ceiling.proc.pid"
  echo "ceiling = $CEILING"
fi
if [ "${HAPROXY:-0}" = 1 ]; then
  port=$(free_port); PORT[haproxy]=$port; TARGETS+=(haproxy)
  start_haproxy "$WORK" haproxy.proc "$port" "$UP"
fi
for t in "${TARGETS[@]}"; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:${PORT[$t]}/" >/dev/null && break; sleep 0.1; done
done

for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    pid=$(cat "$WORK/$t.proc.pid"); before=$(ticks "$pid")
    oha -z "$DURATION" -c "$CONNS" "${OHA_PROTO[@]}" --no-tui --output-format json "http://127.0.0.1:${PORT[$t]}/bench" > "$WORK/$t.$r.json"
    after=$(ticks "$pid")
    echo "$t $((after - before))" >> "$WORK/ticks"
  done
done
python3 - "$WORK" "$HZ" "$ROUNDS" "${TARGETS[@]}" <<'PY'
import json, statistics, sys
work, hz, rounds, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
ticks = {}
for line in open(f"{work}/ticks"):
    t, n = line.split(); ticks.setdefault(t, []).append(int(n))
print(f"{'target':10} {'req/s':>9} {'cpu_us/req':>11} {'p99_ms':>8}   (medians of {rounds} rounds)")
for t in targets:
    rps, cpu, p99 = [], [], []
    for r in range(rounds):
        d = json.load(open(f"{work}/{t}.{r + 1}.json"))
        n = sum(d.get("statusCodeDistribution", {}).values()) or 1
        bad = n - sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k.startswith("2"))
        if bad:
            print(f"{t}: {bad} of {n} responses were not 2xx", file=sys.stderr)
        rps.append(d["summary"]["requestsPerSec"])
        cpu.append(ticks[t][r] / hz * 1e6 / n)
        p99.append(d["latencyPercentiles"]["p99"] * 1000)
    m = statistics.median
    print(f"{t:10} {m(rps):9.0f} {m(cpu):11.1f} {m(p99):8.2f}")
PY
