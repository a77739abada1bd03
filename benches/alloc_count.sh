#!/usr/bin/env bash
# Heap allocations per request, counted, with the call sites that make them.
#
#   benches/alloc_count.sh                 # builds the counting binary (debug, alloc-count)
#   GH=/tmp/gh-alloc N=2000 benches/alloc_count.sh
#
# A build with `--features alloc-count` swaps the global allocator for a counting wrapper
# around mimalloc (src/alloc_count.rs). This script starts it behind one upstream with the
# passthrough config, the passthrough config with the access log on, and the full filter
# chain (benches/full_chain.py), warms each up, then opens a counting window (SIGUSR1),
# sends N requests on one kept-alive connection, closes the window (SIGUSR2) and prints the
# allocations and bytes per request, and the call sites with their count per request.
# The debug build is used (it builds in a minute and its stacks are easier to read; pass a
# release build with the feature as GH=). The full reports are kept in $OUT (default
# /tmp/alloc-count).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
OUT=${OUT:-/tmp/alloc-count}
TOP=${TOP:-25}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx; }
if [ -z "${GH:-}" ]; then
  cargo build --quiet --features alloc-count
  GH=${CARGO_TARGET_DIR:-target}/debug/gatehouse
fi
. benches/lib.sh
UP=$(free_port)
start_upstream "$WORK" "$UP"

# requests PORT COUNT: COUNT GETs of /bench on one kept-alive connection.
requests() {
  python3 - "$1" "$2" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    c.request("GET", "/bench", headers={"User-Agent": "alloc-count/1"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}

for kind in pass pass-log full; do
  port=$(free_port)
  python3 benches/full_chain.py $([ $kind != full ] && echo --passthrough) \
    "$WORK/$kind.yaml" "$port" "$UP" "$PWD/geoip-fixtures/cities.mmdb"
  [ $kind = pass-log ] && sed -i 's/access_log: false/access_log: true/' "$WORK/$kind.yaml"
  GATEHOUSE_ALLOC_REPORT="$OUT/$kind.txt" RUST_LOG=info "$GH" -c "$WORK/$kind.yaml" \
    2>"$WORK/$kind.err" >/dev/null &
  pid=$!; echo $pid > "$WORK/$kind.pid"
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  requests "$port" 500
  rm -f "$OUT/$kind.txt"
  kill -USR1 "$pid"; sleep 0.5
  requests "$port" "$N"
  kill -USR2 "$pid"
  for _ in $(seq 600); do [ -s "$OUT/$kind.txt" ] && break; sleep 0.1; done
  kill "$pid"
  python3 - "$OUT/$kind.txt" "$N" "$kind" "$TOP" <<'PY'
import sys
path, n, kind, top = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
text = open(path).read().split("\n\n")
_, count, _, size = text[0].split()
# Who asked: gatehouse's own code; a Pingora header insert that gatehouse called; the boxed
# future of a ProxyHttp hook (async-trait: one per hook per request, whoever implements it);
# Pingora's timers (they depend on time, not on requests); everything else (Pingora, tokio).
def category(frames):
    site = frames[0] if frames else ""
    near = frames[:4]
    if "pingora_timeout" in site:
        return "pingora timers (time-driven)"
    if site.startswith("<gatehouse::proxy::Gatehouse as pingora_proxy::proxy_trait::ProxyHttp>::") and "{{closure}}" not in site.split(" (")[0]:
        return "ProxyHttp hook futures (boxed)"
    if site.startswith("pingora_http::") and any("gatehouse::" in f for f in near):
        return "Pingora header insert for gatehouse"
    if site.startswith("gatehouse::") or site.startswith("<gatehouse::"):
        return "gatehouse"
    return "Pingora, tokio (rest)"
rows, cats = [], {}
for block in text[1:]:
    lines = block.strip().split("\n")
    c, b = map(int, lines[0].split())
    frames = [l.strip() for l in lines[1:]]
    k = category(frames)
    cats.setdefault(k, [0, 0]); cats[k][0] += c; cats[k][1] += b
    rows.append((c, b, k, frames))
print(f"\n== {kind}: {int(count) / n:.2f} allocations, {int(size) / n:.0f} bytes per request ({n} requests)")
for k, (c, b) in sorted(cats.items(), key=lambda x: -x[1][0]):
    print(f"   {c / n:7.2f} allocations {b / n:8.0f} bytes  {k}")
print(f"{'per_req':>8} {'bytes':>7}  call site; caller")
shown = [r for r in rows if r[2] not in ("Pingora, tokio (rest)", "pingora timers (time-driven)")]
shown += [r for r in rows if r[2] == "Pingora, tokio (rest)"][:top]
for c, b, k, frames in shown:
    if c / n < 0.05:
        continue
    site = frames[0] if frames else "?"
    caller = frames[1] if len(frames) > 1 else ""
    print(f"{c / n:8.2f} {b / max(c, 1):7.0f}  [{k}] {site[:100]}\n{'':18}<- {caller[:100]}")
PY
done
echo
echo "full reports (every call stack, 8 frames): $OUT/{pass,pass-log,full}.txt"
