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
