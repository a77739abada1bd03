#!/usr/bin/env python3
"""The full filter chain of the performance comparison, for benches/compare.sh and benches/ab.sh.

Writes GATEHOUSE_YAML: ip_filter deny with 1,000 random CIDRs outside 127/8, geofence deny KP
with the GeoIP fixture, bot_detector with 1,500 sample crawler patterns, a client limit too
high to reject, a circuit breaker (with --passthrough: the same server and backend and nothing
else). Given NGINX_PORT, also rules.conf next to it: an nginx with the same rules (geo block,
geoip2 + map, a User-Agent regex map with PCRE JIT, limit_req). Given `haproxy` too,
haproxy_rules.frontend (the frontend lines for `start_haproxy` of benches/lib.sh) and its
pattern files next to it: HAProxy with the same rules (`src -f`
with the same CIDRs, the same User-Agent regexes from a `-f` file, a CIDR -> country map
converted from the same database with `map_ip`, a stick-table rate limit too high to reject).
The inputs are generated like benches/filters.rs does; oha's User-Agent matches no pattern
and 127.0.0.1 is in no list nor in the GeoIP database, so every request passes every filter.
"""
import os, random, sys
args = sys.argv[1:]
passthrough = args[:1] == ["--passthrough"]
if passthrough:
    args = args[1:]
# Knobs for A/B runs: --server LINE adds a line under `server:` (repeatable), --max-idle N
# sets the backend's max_idle_connections (default 256).
server_extra, max_idle = [], "256"
while args[:1] in (["--server"], ["--max-idle"]):
    if args[0] == "--server":
        server_extra.append(args[1])
    else:
        max_idle = args[1]
    args = args[2:]
if len(args) not in (4, 5, 6):
    sys.exit("usage: full_chain.py [--passthrough] [--server LINE]... [--max-idle N] GATEHOUSE_YAML GATEHOUSE_PORT UPSTREAM_PORT"
             " MMDB [NGINX_PORT [haproxy]]\n  --passthrough: the same server and backend, no filter,"
             " limit or breaker\n  NGINX_PORT: also write rules.conf next to GATEHOUSE_YAML")
out, port, up, mmdb = args[:4]
nport = args[4] if len(args) >= 5 else None
haproxy = len(args) == 6 and args[5] == "haproxy"
work = os.path.dirname(os.path.abspath(out))
name = os.path.splitext(os.path.basename(out))[0]   # pid and upgrade socket names
rng = random.Random(7)
cidrs = []
while len(cidrs) < 1000:
    a = rng.randrange(1, 224)
    if a == 127:
        continue
    bits = rng.choice([16, 20, 24, 28, 32])
    ip = (a << 24) | rng.getrandbits(24)
    ip &= (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    cidrs.append(f"{ip>>24}.{(ip>>16)&255}.{(ip>>8)&255}.{ip&255}/{bits}")
stems = ["bot", "crawler", "spider", "scraper", "fetch", "archiver", "indexer", "checker",
         "monitor", "preview", "harvest", "slurp", "agent", "scan", "reader", "seo"]
vendors = ["acme", "blue", "quick", "deep", "open", "net", "web", "data", "sky", "metric",
           "link", "page", "site", "rank", "meta", "giga", "nova", "zeta", "orbit", "pixel",
           "alpha", "delta", "echo", "lumen", "terra", "vector", "quant", "hyper", "atlas",
           "cobalt"]
pats = []
for i in range(1500):
    v = vendors[i % len(vendors)]; s = stems[(i // len(vendors)) % len(stems)]
    k = i // (len(vendors) * len(stems))
    pats.append([f"(?i){v}{s}{k}", f"{v}-?{s}{k}/\\d+", f"(?i)^{v}{k}[ _]{s}",
                 f"{v}{s}{k}\\.(com|net|io)", f"(?i){v}{k} {s}/[0-9.]+"][i % 5])
q = lambda xs: "[" + ", ".join("'" + x + "'" for x in xs) + "]"   # single-quoted YAML: backslashes are literal
chain = "" if passthrough else f"""geoip:
  database: {mmdb}
security:
  ip_filter: {{ mode: deny, cidrs: {q(cidrs)} }}
  geofence: {{ deny_countries: [KP], unknown: allow }}
  bot_detector: {{ patterns: {q(pats)} }}
rate_limit: {{ client_max_rate: 100000000 }}
"""
breaker = "" if passthrough else "    circuit_breaker: { max_errors: 5 }\n"
open(out, "w").write(f"""version: 1
server:
  listen: ["127.0.0.1:{port}"]
  threads: 1
  access_log: false
  pid_file: {work}/{name}.pid
  upgrade_sock: {work}/{name}.sock
{"".join(f"  {l}{chr(10)}" for l in server_extra)}{chain}backends:
  app:
    discovery: {{ static: ["127.0.0.1:{up}"] }}
    max_idle_connections: {max_idle}
{breaker}endpoints:
  - {{ path: "/{{*rest}}", backend: app }}
""")
if nport is None or passthrough:
    sys.exit(0)
# nginx with the same rules: geo (a radix tree, nginx's fastest CIDR match) for the deny
# list, geoip2 + map for the geofence, a regex map for the User-Agents, limit_req per client.
nl = "\n"
geo = nl.join(f"    {c} 1;" for c in dict.fromkeys(cidrs))   # geo warns on duplicates
ua = nl.join(f'    "~{p}" 1;' for p in pats)
open(f"{work}/rules.conf", "w").write(f"""load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;
worker_processes 1;
pcre_jit on;
pid {work}/rules.pid;
error_log {work}/rules.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{up}; keepalive 256; }}
  geo $denied_ip {{
    default 0;
{geo}
  }}
  geoip2 {mmdb} {{ $country country iso_code; }}
  map $country $denied_country {{ default 0; KP 1; }}
  map $http_user_agent $bot {{
    default 0;
{ua}
  }}
  limit_req_zone $binary_remote_addr zone=clients:64m rate=100000000r/s;
  server {{
    listen 127.0.0.1:{nport};
    location / {{
      if ($denied_ip) {{ return 403; }}
      if ($denied_country) {{ return 403; }}
      if ($bot) {{ return 403; }}
      limit_req zone=clients burst=1000 nodelay;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
""")
if not haproxy:
    sys.exit(0)
# HAProxy (OSS has no MaxMind reader): the database becomes a CIDR -> country map file, IPv4
# networks (those of the IPv4 subtree too) and IPv6 ones.
import ipaddress
import maxminddb
v4 = ipaddress.ip_network("::/96")
lines = []
for net, rec in maxminddb.open_database(mmdb):
    cc = ((rec or {}).get("country") or {}).get("iso_code") if isinstance(rec, dict) else None
    if not cc:
        continue
    if net.version == 6 and net.subnet_of(v4) and net.prefixlen >= 96:
        net = ipaddress.ip_network(f"{ipaddress.ip_address(int(net.network_address))}/{net.prefixlen - 96}")
    lines.append(f"{net} {cc}")
open(f"{work}/country.map", "w").write(nl.join(lines) + nl)
open(f"{work}/ip.lst", "w").write(nl.join(cidrs) + nl)
open(f"{work}/ua.lst", "w").write(nl.join(pats) + nl)
open(f"{work}/haproxy_rules.frontend", "w").write(f"""\
  stick-table type ip size 1m expire 60s store http_req_rate(1s)
  acl denied_ip src -f {work}/ip.lst
  acl bot req.hdr(user-agent) -m reg -f {work}/ua.lst
  http-request deny if denied_ip
  http-request deny if {{ src,map_ip({work}/country.map,--) -m str KP }}
  http-request deny if bot
  http-request track-sc0 src
  http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 100000000 }}
""")

