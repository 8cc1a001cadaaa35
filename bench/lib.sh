# Shared by the side-by-side bench scripts (governance.sh, guardrails.sh, models.sh, scale.sh):
# logging, the exit trap that stops what a script started, an nginx that answers one fixed body,
# and the per-process CPU and wrk read-outs. Source it after setting OUT and NAME; start processes with
# `&` and add their PIDs to PIDS.

PIDS=()
log() { printf '%s\n' "$*" >&2; }
die() { log "$NAME: $*"; exit 1; }
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Writes $OUT/nginx/nginx.conf: one nginx process answering every request on 127.0.0.1:PORT
# with 200 and BODY (JSON), as the cheapest upstream there is. Extra `http` lines may follow.
fixed_upstream_conf() { # PORT BODY [EXTRA_HTTP_LINES]
  mkdir -p "$OUT/nginx/tmp"
  cat >"$OUT/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections ${NGINX_CONNECTIONS:-4096}; }
${NGINX_MAIN_EXTRA:-}
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp/body;
  proxy_temp_path $OUT/nginx/tmp/proxy;
  fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
  uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
  scgi_temp_path $OUT/nginx/tmp/scgi;
  keepalive_requests 10000000;
  ${3:-}
  server {
    listen 127.0.0.1:$1;
    location / {
      default_type application/json;
      return 200 '$2';
    }
  }
}
EOF
}

# A process's user+system CPU, in clock ticks.
ticks() { local s; s=$(</proc/"$1"/stat); s=${s##*) }; read -ra f <<<"$s"; echo $((f[11] + f[12])); }

# "REQUESTS BAD" from a wrk run with bench/wrk.lua (BAD: error answers and socket errors).
requests_of() { sed -n 's/^WRKJSON //p' "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); bad=d["non2xx"]+d["body_errors"]+d["err_connect"]+d["err_read"]+d["err_timeout"]; print(d["requests"], bad)'; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
