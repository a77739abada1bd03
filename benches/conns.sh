#!/usr/bin/env bash
# Memory per client connection: opens N connections (10,000 by default) to gatehouse, then to
# nginx, one server after the other (ephemeral ports and open files are limited), and prints
# the growth of each server's resident memory per connection (benches/conns.py), for:
#   idle      an idle keep-alive connection (one request answered, then nothing)
#   partial   a connection holding a partial request header
#   fresh     a connection that has sent nothing yet
# each over HTTP and HTTPS. Every measurement starts a fresh server process, one worker
# (gatehouse threads: 1, nginx worker_processes 1), behind one upstream.
#
#   benches/conns.sh                        # the release build of this checkout
#   N=5000 GH=/tmp/gh-before benches/conns.sh
#   MODES="idle partial" TLS=0 SKIP_NGINX=1 benches/conns.sh
#   LISTENER_BUFFER=64KB benches/conns.sh   # gatehouse with another server.listener_buffer
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
MODES=${MODES:-idle partial fresh}
TLS=${TLS:-1}
SKIP_NGINX=${SKIP_NGINX:-0}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Each connection is one open file on both ends, both in this shell's children.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((N + 1000)) ] ||
  { echo "conns.sh: the open-file limit $(ulimit -n) is too low for N=$N" >&2; exit 2; }
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx; }
if [ -z "${GH:-}" ]; then
  cargo build --release --quiet
  GH=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi

. benches/lib.sh
UP=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
start_upstream "$WORK" "$UP"

wait_port() {
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return
    sleep 0.1
  done
  echo "conns.sh: nothing listens on $1" >&2; exit 1
}

# gatehouse MODE TLS(0|1): one measurement on a fresh gatehouse.
gatehouse() {
  local port; port=$(free_port)
  {
    echo "version: 1"
    echo "server:"
    if [ "$2" = 1 ]; then
      echo "  listen: [\"127.0.0.1:$(free_port)\"]"
      echo "  tls: { listen: [\"127.0.0.1:$port\"], http2: false,"
      echo "         certificates: [{ cert: $WORK/cert.pem, key: $WORK/key.pem }] }"
    else
      echo "  listen: [\"127.0.0.1:$port\"]"
    fi
    echo "  threads: 1"
    echo "  access_log: false"
    echo "  header_read_timeout: 10m"
    [ -n "${LISTENER_BUFFER:-}" ] && echo "  listener_buffer: $LISTENER_BUFFER"
    echo "  pid_file: $WORK/gh.pid.file"
    echo "  upgrade_sock: $WORK/gh.sock"
    echo "backends: { app: { discovery: { static: [\"127.0.0.1:$UP\"] } } }"
    echo "endpoints: [{ path: \"/{*rest}\", backend: app }]"
  } > "$WORK/gh.yaml"
  RUST_LOG=warn "$GH" -c "$WORK/gh.yaml" 2>"$WORK/gh.err" &
  local pid=$!; echo $pid > "$WORK/gh.pid"
  wait_port "$port"
  echo -n "gatehouse "
  python3 benches/conns.py "$pid" "$port" "$N" "$1" $([ "$2" = 1 ] && echo --tls) || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# nginx MODE TLS(0|1): the same on a fresh nginx (its one worker's memory).
nginx_run() {
  local port; port=$(free_port)
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections $((N + 1000)); }
http {
  access_log off;
  keepalive_timeout 10m;
  client_header_timeout 10m;
  upstream app { server 127.0.0.1:$UP; keepalive 256; }
  server {
    listen 127.0.0.1:$port $([ "$2" = 1 ] && echo ssl);
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
  nginx -c "$WORK/nginx.conf"
  wait_port "$port"
  local worker; worker=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
  echo -n "nginx     "
  python3 benches/conns.py "$worker" "$port" "$N" "$1" $([ "$2" = 1 ] && echo --tls) || true
  kill "$(cat "$WORK/nginx.pid")"
  for _ in $(seq 50); do [ -e "$WORK/nginx.pid" ] || break; sleep 0.1; done
}

echo "N=$N gatehouse=$GH ($("$GH" --version)) $(nginx -v 2>&1)"
for tls in 0 $([ "$TLS" = 1 ] && echo 1); do
  for mode in $MODES; do
    gatehouse "$mode" "$tls"
    [ "$SKIP_NGINX" = 1 ] || nginx_run "$mode" "$tls"
  done
done
