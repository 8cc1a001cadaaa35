#!/usr/bin/env bash
# Scale: what many connections and streams cost the gateway, against nginx as a reverse proxy
# in the same run (issue 23's memory targets).
#
#   idle     CONNS (10000) keep-alive client connections, one request each, then held open:
#            RSS per connection; descriptors back to where they were after they close.
#   streams  STREAMS (1000) concurrent slow streams from the token-by-token upstream
#            (bench/tokstream.c, TOKENS events TOKEN_GAP_US apart): peak RSS, RSS after they
#            end (is memory returned?), CPU per chunk.
#   rest     RSS right after ready.
#
# Targets (gateway): idle RSS <= 10 MiB, <= 4 KiB per idle connection, <= 40 MiB at STREAMS
# streams, RSS after the streams within 20% of the way back to where it started. nginx-proxy's
# figures are printed beside them. Exits non-zero on a missed target (TARGETS=report: only
# print), an error answer, a short stream, or a process that could not run.
#
#   bench/scale.sh            # CONNS=10000 STREAMS=1000 TOKENS=40 TOKEN_GAP_US=100000
#   NO_BUILD=1 bench/scale.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out/scale
TOOLS=$BENCH/.tools
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/switchyard}
HELPERS=$BENCH/helpers.py
CONNS=${CONNS:-10000}
STREAMS=${STREAMS:-1000}
TOKENS=${TOKENS:-40}
TOKEN_GAP_US=${TOKEN_GAP_US:-100000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TARGETS=${TARGETS:-fail}

NAME="scale bench"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

for tool in nginx gcc taskset python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install nginx gcc)"
done
need=$((CONNS + STREAMS + 200))
(($(ulimit -n) >= need)) || ulimit -n "$need" 2>/dev/null || die "open-file limit $(ulimit -n) is below $need (raise it: ulimit -n)"

rm -rf "$OUT" && mkdir -p "$OUT/nginx/tmp" "$TOOLS"
if [[ ! -x $TOOLS/tokstream || $BENCH/tokstream.c -nt $TOOLS/tokstream ]]; then
  gcc -O2 -Wall -o "$TOOLS/tokstream" "$BENCH/tokstream.c" || die "gcc failed on bench/tokstream.c"
fi
read -r FAST SLOW GW ADMIN NGX < <(python3 "$HELPERS" freeports 5)
python3 "$HELPERS" check-ports "$FAST" "$SLOW" "$GW" "$ADMIN" "$NGX" || die "ports in use (a stray process from an earlier run?)"

if [[ ${NO_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p switchyard) >&2 || die "cargo build failed"
fi
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# Upstreams on the server CPU: one answering at once (idle connections' one request), one
# trickling TOKENS events.
taskset -c "$SERVER_CPU" "$TOOLS/tokstream" "$FAST" 1 0 >"$OUT/tok-fast.log" 2>&1 &
PIDS+=("$!")
taskset -c "$SERVER_CPU" "$TOOLS/tokstream" "$SLOW" "$TOKENS" "$TOKEN_GAP_US" >"$OUT/tok-slow.log" 2>&1 &
PIDS+=("$!")

cat >"$OUT/gateway.yaml" <<EOF
config:
  adminAddr: 127.0.0.1:$ADMIN
  limits: {maxConnections: $((need * 2))}
binds:
- port: $GW
  address: 127.0.0.1
  listeners:
  - routes:
    - matches: [{path: {pathPrefix: /stream}}]
      backends: [{host: 127.0.0.1:$SLOW}]
    - backends: [{host: 127.0.0.1:$FAST}]
EOF
NO_COLOR=1 taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$OUT/gateway.yaml" >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
python3 "$HELPERS" wait-ready-now "127.0.0.1:$ADMIN" || die "the gateway did not become ready; see $OUT/gateway.log"

cat >"$OUT/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $((need * 2));
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections $((need * 2)); }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp/body;
  proxy_temp_path $OUT/nginx/tmp/proxy;
  fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
  uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
  scgi_temp_path $OUT/nginx/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream fast { server 127.0.0.1:$FAST; keepalive 64; }
  upstream slow { server 127.0.0.1:$SLOW; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /stream { proxy_pass http://slow; proxy_buffering off; }
    location / { proxy_pass http://fast; proxy_buffering off; }
  }
}
EOF
taskset -c "$SERVER_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" &
NGX_PID=$!
PIDS+=("$NGX_PID")
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$NGX) 2>/dev/null && break; sleep 0.1; done

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
GW_REST=$(rss "$GW_PID")
NGX_REST=$(rss "$NGX_PID")
EVENTS=$((TOKENS + 3))

phase() { # NAME ADDR PID ARGS...
  local name=$1; shift
  taskset -c "$LOAD_CPU" python3 "$BENCH/scale.py" "$@" >"$OUT/$name.json" ||
    die "$name failed: $(cat "$OUT/$name.json")"
  cat "$OUT/$name.json" >&2
}
# Streams first, from rest: their peak is the process's total at STREAMS streams.
phase gw-streams stream "127.0.0.1:$GW" "$GW_PID" "$STREAMS" "$EVENTS"
phase ngx-streams stream "127.0.0.1:$NGX" "$NGX_PID" "$STREAMS" "$EVENTS"
phase gw-idle idle "127.0.0.1:$GW" "$GW_PID" "$CONNS"
phase ngx-idle idle "127.0.0.1:$NGX" "$NGX_PID" "$CONNS"

python3 - "$OUT" "$GW_REST" "$NGX_REST" "$TARGETS" <<'EOF'
import json, sys
out, gw_rest, ngx_rest, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = {n: json.load(open(f"{out}/{n}.json")) for n in ["gw-idle", "ngx-idle", "gw-streams", "ngx-streams"]}
gi, ni, gs, ns = r["gw-idle"], r["ngx-idle"], r["gw-streams"], r["ngx-streams"]
mib = lambda kb: kb / 1024
fails = []
def row(what, gw, ngx, target, ok):
    mark = "" if ok else "  MISSED"
    print(f"{what:<44} gateway {gw:>12}   nginx-proxy {ngx:>12}   target {target}{mark}")
    if not ok:
        fails.append(what)
row("RSS at rest", f"{mib(gw_rest):.1f} MiB", f"{mib(ngx_rest):.1f} MiB", "<= 10 MiB", mib(gw_rest) <= 10)
row(f"RSS per idle keep-alive connection ({gi['conns']})", f"{gi['kb_per_conn']:.2f} KiB",
    f"{ni['kb_per_conn']:.2f} KiB", "<= 4 KiB", gi["kb_per_conn"] <= 4)
# Both keep up to 64 idle upstream connections for later requests (the gateway's
# `config.limits.poolMaxIdle` default, nginx's `keepalive 64`); nothing else may stay open.
row("descriptors after the idle connections close", f"{gi['fds_after']} (was {gi['fds_before']})",
    f"{ni['fds_after']} (was {ni['fds_before']})", "back to start + upstream pool (64)",
    gi["fds_after"] <= gi["fds_before"] + 64)
row(f"RSS peak at {gs['streams']} streams", f"{mib(gs['rss_peak_kb']):.1f} MiB", f"{mib(ns['rss_peak_kb']):.1f} MiB",
    "<= 40 MiB", mib(gs["rss_peak_kb"]) <= 40)
row("RSS per stream", f"{gs['kb_per_stream']:.1f} KiB", f"{ns['kb_per_stream']:.1f} KiB", "(reported)", True)
back = gs["rss_after_kb"] - gs["rss_before_kb"] <= 0.2 * max(1, gs["rss_peak_kb"] - gs["rss_before_kb"])
row("RSS 3 s after the streams end", f"{mib(gs['rss_after_kb']):.1f} MiB", f"{mib(ns['rss_after_kb']):.1f} MiB",
    "returned (<= 20% of the rise left)", back)
row("CPU per chunk (user+sys)", f"{gs['us_per_chunk']:.2f} µs", f"{ns['us_per_chunk']:.2f} µs",
    f"(x{gs['us_per_chunk'] / ns['us_per_chunk']:.2f} nginx-proxy)", True)
for f in fails:
    print(f"FAIL {f}")
sys.exit(1 if fails and targets != "report" else 0)
EOF
