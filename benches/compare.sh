#!/usr/bin/env bash
# Compares gatehouse with nginx as reverse proxies on this machine, in one run.
#
#   benches/compare.sh                 # 10 s per target, 64 connections
#   DURATION=20s CONNS=128 benches/compare.sh
#   GH=/tmp/gh-old GH_FULL=/tmp/gh-new TLS=0 benches/compare.sh   # two builds, no rebuild
#
# Targets (all on 127.0.0.1, one worker each): the upstream directly (an nginx returning a
# small body), nginx as a plain proxy, nginx_rules (nginx with the rules equivalent to the
# full chain: a geo block with the same 1,000 CIDRs, geoip2 with the same database and a map
# denying KP, a map of the same 1,500 User-Agent regexes with PCRE JIT, limit_req with a rate
# too high to reject), gatehouse passthrough, gatehouse with the full filter chain
# (gatehouse_full: ip_filter with 1,000 CIDRs, geofence, bot_detector with 1,500 patterns, a
# client rate limit too high to reject, a circuit breaker; every request passes all of them);
# then nginx and gatehouse passthrough again over HTTPS with the same certificate (ECDSA
# P-256, TLS 1.3), keep-alive over h1 and over h2 (oha --http2, 8 streams per connection).
# TLS=0 skips the HTTPS rows. Prints requests/s, p50, p99 and the CPU microseconds per
# request of each proxy process (utime+stime from /proc), and the ratios to nginx.
# Last, the latency at half of peak (HALF=0 skips it): the upstream directly, nginx and
# gatehouse_full, each paced at half of gatehouse_full's measured requests/s (oha -q with
# --latency-correction), and the p99 each proxy adds over the upstream's own.
# HAProxy as a plain proxy is one more row, and haproxy_rules, HAProxy with the rules
# equivalent to the full chain (`src -f` with the same CIDRs, the same User-Agent regexes
# from a `-f` file, a CIDR -> country map converted from the same GeoIP database, a
# stick-table rate limit too high to reject), at half of peak too (HAPROXY=0 skips them).
# After the HTTPS rows, TLS handshakes (HS=0 skips them; see below).
# gatehouse-h2c: gatehouse
# passthrough to the same nginx upstream over h2c (backend `protocol: h2c`, nginx `http2` on
# a plain listener), against the `gatehouse` row's HTTP/1.1 upstream. The gRPC rows (GRPC=0
# skips them): unary calls by a tonic load client (benches/grpc_load.rs, CONNS connections,
# one call at a time on each) to a tonic server, directly (grpc-upstream) and through
# gatehouse over h2c on both sides (gatehouse-grpc).
# Installs oha (cargo), nginx and its geoip2 module, haproxy (apt) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT

command -v oha >/dev/null || cargo install oha --locked
[ -e /usr/lib/nginx/modules/ngx_http_geoip2_module.so ] ||
  { apt-get update -qq && apt-get install -y -qq nginx libnginx-mod-http-geoip2; }
command -v cmake >/dev/null || apt-get install -y -qq cmake
if [ -z "${GH:-}" ]; then   # GH=path/to/gatehouse compares another build
  cargo build --release --quiet
  GH=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi

. benches/lib.sh
UP=$(free_port); NGX=$(free_port); GHP=$(free_port); NGXS=$(free_port); GHS=$(free_port)
GHF=$(free_port); NGXR=$(free_port); HAP=$(free_port); HAPR=$(free_port); UPH2=$(free_port); GRPCUP=$(free_port)
GRPC=${GRPC:-1}
GH_FULL=${GH_FULL:-$GH}   # the binary of the full-chain row (to compare two builds)
TLS=${TLS:-1}
HALF=${HALF:-1}

# One certificate for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat > "$WORK/proxy.conf" <<NGINX
worker_processes 1;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 256; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
  server {
    listen 127.0.0.1:$NGXS ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
NGINX

cat > "$WORK/gatehouse.yaml" <<YAML
version: 1
server:
  listen: ["127.0.0.1:$GHP"]
  h2c: true
  threads: 1
  access_log: false
  pid_file: $WORK/gh.pid
  upgrade_sock: $WORK/gh.sock
  tls:
    listen: ["127.0.0.1:$GHS"]
    certificates: [{ cert: $WORK/cert.pem, key: $WORK/key.pem }]
    http2: true
backends:
  app:
    discovery: { static: ["127.0.0.1:$UP"] }
    max_idle_connections: 256
  app_h2c:
    discovery: { static: ["127.0.0.1:$UPH2"] }
    protocol: h2c
  grpc:
    discovery: { static: ["127.0.0.1:$GRPCUP"] }
    protocol: h2c
endpoints:
  - { path: "/{*rest}", backend: app }
  - { path: "/h2c/{*rest}", backend: app_h2c }
  - { path: "/bench.Echo/{*method}", backend: grpc }
YAML

# The full chain and nginx with the equivalent rules (benches/full_chain.py).
HAPROXY=${HAPROXY:-1}
[ "$HAPROXY" = 0 ] || python3 -c 'import maxminddb' 2>/dev/null || python3 -m pip install --quiet maxminddb
python3 benches/full_chain.py "$WORK/ghf.yaml" "$GHF" "$UP" "$PWD/geoip-fixtures/cities.mmdb" "$NGXR" \
  $([ "$HAPROXY" = 1 ] && echo haproxy)

start_upstream "$WORK" "$UP" "$UPH2"
nginx -c "$WORK/proxy.conf"
nginx -c "$WORK/rules.conf"
# HAProxy as a plain proxy too (HAPROXY=0 skips it): one thread, kept-alive upstream
# connections, X-Forwarded-For like the others; and haproxy_rules, HAProxy with the rules
# equivalent to the full chain (benches/full_chain.py).
if [ "$HAPROXY" = 1 ]; then
  start_haproxy "$WORK" haproxy "$HAP" "$UP"
  start_haproxy "$WORK" haproxy_rules "$HAPR" "$UP" "$WORK/haproxy_rules.frontend"
fi
RUST_LOG=warn $GH -c "$WORK/gatehouse.yaml" 2>"$WORK/gh.err" &
echo $! > "$WORK/gatehouse.pid"
RUST_LOG=warn $GH_FULL -c "$WORK/ghf.yaml" 2>"$WORK/ghf.err" &
echo $! > "$WORK/gatehouse_full.pid"
for p in $UP $NGX $NGXR $GHP $GHF $([ "$HAPROXY" = 1 ] && echo "$HAP $HAPR"); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
done

proxy_pids() { # $1 = name
  case $1 in
    nginx) pgrep -P "$(cat "$WORK/proxy.pid")" ;;
    nginx_rules) pgrep -P "$(cat "$WORK/rules.pid")" ;;
    haproxy) cat "$WORK/haproxy.pid" ;;
    haproxy_rules) cat "$WORK/haproxy_rules.pid" ;;
    gatehouse) cat "$WORK/gatehouse.pid" ;;
    gatehouse_full) cat "$WORK/gatehouse_full.pid" ;;
    *) echo "" ;;
  esac
}

printf "%-16s %10s %9s %9s %12s\n" target rps p50_ms p99_ms cpu_us/req
declare -A RPS CPU P99
run() { # name port [scheme [oha args...]]; the process is the name up to a - or @
  # (nginx-h2 -> nginx; gatehouse_full@half, the half-of-peak phase -> gatehouse_full)
  local name=$1 port=$2 scheme=${3:-http} pids before=0 after=0
  shift $(( $# < 3 ? $# : 3 ))
  pids=$(proxy_pids "${name%%[@-]*}")
  for p in $pids; do before=$((before + $(ticks "$p"))); done
  oha -z "$DURATION" -c "$CONNS" --no-tui --output-format json --insecure "$@" "$scheme://127.0.0.1:$port${RUN_PATH:-/bench}" > "$WORK/$name.json"
  for p in $pids; do after=$((after + $(ticks "$p"))); done
  python3 - "$WORK/$name.json" "$name" $((after - before)) "$HZ" <<'PY' > "$WORK/$name.line"
import json, sys
d = json.load(open(sys.argv[1])); name = sys.argv[2]; ticks = int(sys.argv[3]); hz = int(sys.argv[4])
s = d["summary"]; lat = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values()) or 1
rps = s["requestsPerSec"]
cpu = (ticks / hz * 1e6 / total) if not name.startswith("upstream") else float("nan")
print(f"{name} {rps:.0f} {lat['p50']*1000:.3f} {lat['p99']*1000:.3f} {cpu:.1f} {ok}/{total}")
PY
  read -r n rps p50 p99 cpu okc < "$WORK/$name.line"
  printf "%-16s %10s %9s %9s %12s   (%s 2xx)\n" "$n" "$rps" "$p50" "$p99" "$cpu" "$okc"
  RPS[$name]=$rps; CPU[$name]=$cpu; P99[$name]=$p99
}
run upstream "$UP"
run nginx "$NGX"
run nginx_rules "$NGXR"
if [ "$HAPROXY" = 1 ]; then
  run haproxy "$HAP"
  run haproxy_rules "$HAPR"
  # The rules do refuse: a listed User-Agent gets 403.
  echo "haproxy_rules, a listed User-Agent: $(curl -s -o /dev/null -w '%{http_code}' -A acmebot0 "http://127.0.0.1:$HAPR/")," \
    "gatehouse_full: $(curl -s -o /dev/null -w '%{http_code}' -A acmebot0 "http://127.0.0.1:$GHF/")"
fi
run gatehouse "$GHP"
RUN_PATH=/h2c/bench run gatehouse-h2c "$GHP"
run gatehouse_full "$GHF"
if [ "$GRPC" = 1 ]; then
  # GL=path/to/grpc_load runs a load client built before.
  [ -n "${GL:-}" ] || GL=$(cargo bench --quiet --bench grpc_load --no-run --message-format=json |
    python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
  "$GL" serve "$GRPCUP" &
  echo $! > "$WORK/grpc_upstream.pid"
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$GRPCUP") 2>/dev/null && break; sleep 0.1; done
  SECS=$(python3 -c 'import sys; d = sys.argv[1]; print(float(d[:-1]) * {"s": 1, "m": 60}[d[-1]])' "$DURATION")
  grpc_run() { # name addr: the same columns as `run`
    local name=$1 addr=$2 pids before=0 after=0 rps p50 p99 ok total cpu
    pids=$(proxy_pids "${name%%[@-]*}")
    for p in $pids; do before=$((before + $(ticks "$p"))); done
    read -r rps p50 p99 ok total < <("$GL" load "$addr" "$SECS" "$CONNS")
    for p in $pids; do after=$((after + $(ticks "$p"))); done
    cpu=$(python3 -c 'import sys; t, hz, n, up = sys.argv[1:]; print("nan" if up == "1" else f"{int(t) / int(hz) * 1e6 / max(1, int(n)):.1f}")' \
      $((after - before)) "$HZ" "$total" "$([ -z "$pids" ] && echo 1 || echo 0)")
    printf "%-16s %10s %9s %9s %12s   (%s OK)\n" "$name" "$rps" "$p50" "$p99" "$cpu" "$ok/$total"
    RPS[$name]=$rps; CPU[$name]=$cpu; P99[$name]=$p99
  }
  grpc_run grpc-upstream "127.0.0.1:$GRPCUP"
  grpc_run gatehouse-grpc "127.0.0.1:$GHP"
fi
if [ "$TLS" = 1 ]; then
  for p in $NGXS $GHS; do
    for _ in $(seq 100); do curl -sfk "https://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
  done
  run nginx-https "$NGXS" https
  run gatehouse-https "$GHS" https
  run nginx-h2 "$NGXS" https --http2 -p 8
  run gatehouse-h2 "$GHS" https --http2 -p 8
fi
# TLS handshakes (HS=0 skips them; with TLS=1 only): new and resumed handshakes per second and
# the server's CPU microseconds per handshake, HS_CLIENTS openssl s_time clients at once for
# HS_TIME seconds. openssl here is the system's (a classical client: X25519 key shares); the
# same certificate on both proxies (ECDSA P-256).
#   -hs-new        TLS 1.3, a full handshake per connection, no request
#   -hs-new-req    the same, plus one HTTP/1.0 request (s_time -www /bench)
#   -hs-resumed    TLS 1.3 resumed with a session ticket, plus one request: s_time reads the
#                  ticket only with a request; compare with -hs-new-req
#   -hs-resumed12  TLS 1.2 abbreviated handshakes (s_time -reuse -tls1_2), no request
# Then a post-quantum hybrid client, gatehouse alone (nginx's system OpenSSL has no ML-KEM):
# oha without keep-alive (rustls, which offers X25519MLKEM768 first), a new connection, full
# handshake and one request each; -conn-http is the same without TLS, so the difference is
# the handshake; nginx-hs-oha is nginx with the same client, classical (it picks X25519).
# benches/tls_group.py prints the group each server picks for such a client.
HS=${HS:-1}
HS_TIME=${HS_TIME:-10}
HS_CLIENTS=${HS_CLIENTS:-4}
declare -A HSR HSC
hs_run() { # name port s_time args...; the process is the name up to the first -
  local name=$1 port=$2 pids before=0 after=0 t0 t1 c cl=()
  shift 2
  pids=$(proxy_pids "${name%%-*}")
  for p in $pids; do before=$((before + $(ticks "$p"))); done
  t0=$(date +%s.%N)
  for c in $(seq "$HS_CLIENTS"); do
    openssl s_time -connect "127.0.0.1:$port" -time "$HS_TIME" "$@" > "$WORK/$name.$c.stime" 2>&1 &
    cl+=($!)
  done
  wait "${cl[@]}"
  t1=$(date +%s.%N)
  for p in $pids; do after=$((after + $(ticks "$p"))); done
  python3 - "$WORK" "$name" "$HS_CLIENTS" $((after - before)) "$HZ" "$t0" "$t1" <<'PY' > "$WORK/$name.line"
import re, sys
work, name, n, ticks, hz, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
conns = reused = full = 0
for c in range(1, n + 1):
    out = open(f"{work}/{name}.{c}.stime").read()
    m = re.findall(r"^(\d+) connections in [\d.]+s;", out, re.M)
    conns += int(m[-1]) if m else 0
    for marks in re.findall(r"^[*r]+$", out, re.M):   # s_time: r resumed, * full
        reused += marks.count("r"); full += marks.count("*")
print(f"{name} {conns / (t1 - t0):.0f} {ticks / hz * 1e6 / max(conns, 1):.1f} {reused / max(reused + full, 1):.2f} {conns}")
PY
  read -r n hps cpu rfrac total < "$WORK/$name.line"
  printf "%-22s %10s %12s %9s   (%s connections)\n" "$n" "$hps" "$cpu" "$rfrac" "$total"
  HSR[$name]=$hps; HSC[$name]=$cpu
}
if [ "$TLS" = 1 ] && [ "$HS" = 1 ]; then
  echo
  printf "%-22s %10s %12s %9s\n" handshakes hs/s cpu_us/hs resumed
  for proxy in nginx gatehouse; do
    port=$([ $proxy = nginx ] && echo "$NGXS" || echo "$GHS")
    hs_run $proxy-hs-new "$port" -new -tls1_3
    hs_run $proxy-hs-new-req "$port" -new -tls1_3 -www /bench
    hs_run $proxy-hs-resumed "$port" -reuse -tls1_3 -www /bench
    hs_run $proxy-hs-resumed12 "$port" -reuse -tls1_2
  done
  echo "key-exchange group picked for a PQ-hybrid client: nginx $(python3 benches/tls_group.py 127.0.0.1 "$NGXS" 2>&1)," \
    "gatehouse $(python3 benches/tls_group.py 127.0.0.1 "$GHS" 2>&1)"
  run gatehouse-hs-pq "$GHS" https --disable-keepalive
  run gatehouse-conn-http "$GHP" http --disable-keepalive
  run nginx-hs-oha "$NGXS" https --disable-keepalive
  run nginx-conn-http "$NGX" http --disable-keepalive
fi

ratio() { # label target reference
  python3 - "$1" "${RPS[$2]}" "${RPS[$3]}" "${CPU[$2]}" "${CPU[$3]}" <<'PY'
import sys
label = sys.argv[1]
g, n, gc, nc = map(float, sys.argv[2:])
print(f"{label:26} throughput x{g/n:.2f}, cpu per request x{gc/nc:.2f}")
PY
}
echo
ratio "gatehouse/nginx http" gatehouse nginx
ratio "gatehouse/nginx full" gatehouse_full nginx
ratio "gatehouse/nginx rules" gatehouse_full nginx_rules
if [ "$HAPROXY" = 1 ]; then
  ratio "gatehouse/haproxy http" gatehouse haproxy
  ratio "gatehouse/haproxy rules" gatehouse_full haproxy_rules
fi
ratio "full chain / passthrough" gatehouse_full gatehouse
ratio "h2c upstream / h1 upstream" gatehouse-h2c gatehouse
if [ "$GRPC" = 1 ]; then
  python3 -c 'import sys; print(f"{sys.argv[1]:26} throughput x{float(sys.argv[2]) / float(sys.argv[3]):.2f}")' \
    "gatehouse-grpc/upstream" "${RPS[gatehouse-grpc]}" "${RPS[grpc-upstream]}"
fi
if [ "$TLS" = 1 ]; then
  ratio "gatehouse/nginx https" gatehouse-https nginx-https
  ratio "gatehouse/nginx h2" gatehouse-h2 nginx-h2
fi
if [ "$TLS" = 1 ] && [ "$HS" = 1 ]; then
  for k in hs-new hs-new-req hs-resumed hs-resumed12; do
    python3 -c "import sys; l, g, n, gc, nc = sys.argv[1:]; print(f'{l:26} handshakes/s x{float(g)/float(n):.2f}, cpu per handshake x{float(gc)/float(nc):.2f}')" \
      "gatehouse/nginx $k" "${HSR[gatehouse-$k]}" "${HSR[nginx-$k]}" "${HSC[gatehouse-$k]}" "${HSC[nginx-$k]}"
  done
  python3 -c "import sys; a, b, c, d = map(float, sys.argv[1:]); print(f'handshake cpu, oha client: gatehouse PQ-hybrid {a - b:.1f} us, nginx classical {c - d:.1f} us (https minus http, no keep-alive)')" \
    "${CPU[gatehouse-hs-pq]}" "${CPU[gatehouse-conn-http]}" "${CPU[nginx-hs-oha]}" "${CPU[nginx-conn-http]}"
fi
if [ "$HALF" = 1 ]; then
  RATE=$(python3 -c "print(max(1, int(float('${RPS[gatehouse_full]}') / 2)))")
  echo
  echo "at half of gatehouse_full's peak: $RATE requests/s"
  run upstream@half "$UP" http -q "$RATE" --latency-correction
  run nginx@half "$NGX" http -q "$RATE" --latency-correction
  run gatehouse_full@half "$GHF" http -q "$RATE" --latency-correction
  [ "$HAPROXY" = 1 ] && run haproxy_rules@half "$HAPR" http -q "$RATE" --latency-correction
  for t in nginx gatehouse_full $([ "$HAPROXY" = 1 ] && echo haproxy_rules); do
    python3 -c "import sys; print(f'{sys.argv[1]} adds {float(sys.argv[2]) - float(sys.argv[3]):.3f} ms p99 at half of peak')" \
      "$t" "${P99[$t@half]}" "${P99[upstream@half]}"
  done
fi
