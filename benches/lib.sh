# Shared by the load scripts in benches/ (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU ticks (utime+stime) a process has used, all its threads included.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# start_upstream WORK PORT [H2C_PORT]: the upstream every proxy is measured against, an nginx
# with one worker answering 200 with a small body; its pid file is WORK/upstream.pid. With
# H2C_PORT, the same nginx also answers HTTP/2 by prior knowledge (h2c) there.
start_upstream() {
  local h2c=""
  [ -n "${3:-}" ] && h2c="server { listen 127.0.0.1:$3 http2; location / { return 200 \"hello from upstream\\n\"; } }"

  cat > "$1/upstream.conf" <<NGINX
worker_processes 1;
pid $1/upstream.pid;
error_log $1/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { return 200 "hello from upstream\n"; } }
  $h2c
}
NGINX
  nginx -c "$1/upstream.conf"
}

# start_haproxy WORK NAME PORT UPSTREAM_PORT [FRONTEND_FILE]: HAProxy as a plain proxy, the
# peer row of the load scripts: one thread, kept-alive upstream connections (`http-reuse
# always`), X-Forwarded-For like the others; its config is WORK/NAME.cfg and its pid file
# WORK/NAME.pid. FRONTEND_FILE's lines (rules: benches/full_chain.py) go into its frontend.
start_haproxy() {
  command -v haproxy >/dev/null || apt-get install -y -qq haproxy
  cat > "$1/$2.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
  pidfile $1/$2.pid
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:$3
$([ -n "${5:-}" ] && cat "$5")
  default_backend app
backend app
  server up 127.0.0.1:$4
HAP
  haproxy -D -f "$1/$2.cfg"
}
