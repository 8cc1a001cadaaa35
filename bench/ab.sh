#!/usr/bin/env bash
# Side-by-side A/B of two gateway binaries (e.g. the last commit's and the working tree's):
# both gateways run at once, on the same core as one nginx upstream, each saturated by its own
# wrk on the load core, case by case and round by round. Whatever the machine does in those
# seconds lands on both, so the per-round ratio is the figure to read, not the absolutes.
#
#   bench/ab.sh A_BINARY B_BINARY        # CASES, ROUNDS, SECS, CONNS, MAX_RATIO from the env
#
# Prints gateway CPU per request (µs) for A and B per case and round, the B/A ratio, and the
# median ratio with its spread. Exits non-zero when a case sees non-2xx answers or socket
# errors, when a binary does not start, or when the median B/A ratio of a case exceeds
# MAX_RATIO (default 1.05: B may cost at most 5% more than A).
# PERF_B=1: B is profiled (perf, DWARF call graphs) through each case's first round; the
# data files are named at the end (their rounds are skewed by perf, and are not counted).
set -euo pipefail

A_BIN=${1:?usage: bench/ab.sh A_BINARY B_BINARY}
B_BIN=${2:?usage: bench/ab.sh A_BINARY B_BINARY}
CASES=${CASES:-"plain ai ai-stream o2a-stream"}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
CONNS=${CONNS:-16}
MAX_RATIO=${MAX_RATIO:-1.05}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}

OUT=$(mktemp -d /tmp/switchyard-ab.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

die() { echo "ab: $*" >&2; exit 1; }
for tool in nginx wrk taskset curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install nginx-light wrk util-linux curl)"
done
[ -x "$A_BIN" ] || die "A binary $A_BIN is not executable"
[ -x "$B_BIN" ] || die "B binary $B_BIN is not executable"

# A stray gateway or upstream on the measured core skews everything: refuse to run beside one.
if pgrep -f 'switchyard (-f|run)|nginx: worker|vllm-fleet|switchyard-sim' >/dev/null; then
  pgrep -af 'switchyard (-f|run)|nginx: worker|vllm-fleet|switchyard-sim' >&2
  die "processes from another run are alive (listed above); stop them first"
fi

# Free ports, checked by binding them.
read -r UP_PORT A_PORT B_PORT A_ADMIN B_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(5):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

CHAT_JSON='{"id":"chatcmpl-ab","object":"chat.completion","created":1735689600,"model":"bench-model-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed benchmark completion from the nginx upstream, long enough to look like a short real answer."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":36,"total_tokens":60}}'
CHAT_SSE=$(
  printf 'data: {"id":"chatcmpl-ab","object":"chat.completion.chunk","created":1735689600,"model":"bench-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
  for w in Hello there from the bench stream; do
    printf 'data: {"id":"chatcmpl-ab","object":"chat.completion.chunk","created":1735689600,"model":"bench-model","choices":[{"index":0,"delta":{"content":"%s "},"finish_reason":null}]}\n\n' "$w"
  done
  printf 'data: {"id":"chatcmpl-ab","object":"chat.completion.chunk","created":1735689600,"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":6,"total_tokens":30}}\n\n'
  printf 'data: [DONE]\n\n'
)
ANTHROPIC_SSE=$(
  printf 'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_ab","type":"message","role":"assistant","model":"bench-claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":24,"output_tokens":1}}}\n\n'
  printf 'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
  for w in Hello there from the bench stream; do
    printf 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s "}}\n\n' "$w"
  done
  printf 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
  printf 'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}\n\n'
  printf 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
mkdir -p "$OUT/nginx/tmp"
cat >"$OUT/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp/body;
  proxy_temp_path $OUT/nginx/tmp/proxy;
  fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
  uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
  scgi_temp_path $OUT/nginx/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$UP_PORT;
    location = /v1/chat/completions { default_type application/json; return 200 '$CHAT_JSON'; }
    location = /v1/chat-stream { default_type text/event-stream; return 200 '$CHAT_SSE

'; }
    location = /v1/messages-stream { default_type text/event-stream; return 200 '$ANTHROPIC_SSE

'; }
  }
}
EOF

gateway_config() { # PORT ADMIN_PORT
  cat <<EOF
config:
  adminAddr: 127.0.0.1:$2
  drainTimeout: 1s
binds:
- port: $1
  address: 127.0.0.1
  listeners:
  - routes:
    - matches: [{path: {exact: /ai}}]
      backends:
      - ai: {name: ai, hostOverride: 127.0.0.1:$UP_PORT, provider: {openAI: {}}, pathOverride: /v1/chat/completions, policies: {backendAuth: {key: sk-bench}, ai: {modelAliases: {bench-model: bench-model-2025}}}}
    - matches: [{path: {exact: /ai-stream}}]
      backends:
      - ai: {name: ai-stream, hostOverride: 127.0.0.1:$UP_PORT, provider: {openAI: {}}, pathOverride: /v1/chat-stream, policies: {backendAuth: {key: sk-bench}}}
    - matches: [{path: {exact: /o2a-stream}}]
      backends:
      - ai: {name: o2a-stream, hostOverride: 127.0.0.1:$UP_PORT, provider: {anthropic: {}}, pathOverride: /v1/messages-stream, policies: {backendAuth: {key: sk-bench}}}
    - backends:
      - host: 127.0.0.1:$UP_PORT
EOF
}
gateway_config "$A_PORT" "$A_ADMIN" >"$OUT/a.yaml"
gateway_config "$B_PORT" "$B_ADMIN" >"$OUT/b.yaml"

taskset -c "$SERVER_CPU" nginx -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" &
PIDS+=($!)
taskset -c "$SERVER_CPU" "$A_BIN" -f "$OUT/a.yaml" >"$OUT/a.log" 2>&1 &
A_PID=$!
PIDS+=("$A_PID")
taskset -c "$SERVER_CPU" "$B_BIN" -f "$OUT/b.yaml" >"$OUT/b.log" 2>&1 &
B_PID=$!
PIDS+=("$B_PID")
for port in "$A_ADMIN" "$B_ADMIN"; do
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz/ready" 2>/dev/null && break
    sleep 0.05
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz/ready" || { cat "$OUT"/*.log >&2; die "a gateway did not become ready (admin $port)"; }
done

cat >"$OUT/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local stream = os.getenv("AB_STREAM") == "1"
wrk.body = '{"model":"bench-model","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":64' .. (stream and ',"stream":true' or '') .. '}'
EOF

path_of() { case $1 in plain) echo /v1/chat/completions ;; *) echo "/$1" ;; esac; }
stream_of() { case $1 in *stream) echo 1 ;; *) echo 0 ;; esac; }
ticks() { local s; s=$(</proc/"$1"/stat); s=${s##*) }; set -- $s; echo $(( ${12} + ${13} )); }
requests_of() { awk '/requests in/ {print $1}' "$1"; }
errors_of() { # non-2xx answers plus socket errors
  awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",", ""); for (i=1;i<=NF;i++) if ($i ~ /^[0-9]+$/) n+=$i} END {print n+0}' "$1"
}

HZ=$(getconf CLK_TCK)
FAILED=0
printf '%-11s %5s %12s %12s %8s\n' case round "A µs/req" "B µs/req" "B/A"
for case in $CASES; do
  path=$(path_of "$case")
  ratios=()
  for round in $(seq "$ROUNDS"); do
    a0=$(ticks "$A_PID") b0=$(ticks "$B_PID")
    AB_STREAM=$(stream_of "$case") taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$OUT/post.lua" "http://127.0.0.1:$A_PORT$path" >"$OUT/wrk-a-$case-$round.txt" &
    wa=$!
    AB_STREAM=$(stream_of "$case") taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$OUT/post.lua" "http://127.0.0.1:$B_PORT$path" >"$OUT/wrk-b-$case-$round.txt" &
    wb=$!
    perf_pid=
    if [ "${PERF_B:-0}" = 1 ] && [ "$round" = 1 ]; then
      perf record -F 1999 --call-graph dwarf,16384 -p "$B_PID" -o "$OUT/perf-$case.data" -- sleep "$SECS" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    wait "$wa" "$wb"
    if [ -n "$perf_pid" ]; then
      wait "$perf_pid" || true
      echo "profile of B, $case: $OUT/perf-$case.data"
      continue
    fi
    a1=$(ticks "$A_PID") b1=$(ticks "$B_PID")
    ra=$(requests_of "$OUT/wrk-a-$case-$round.txt") rb=$(requests_of "$OUT/wrk-b-$case-$round.txt")
    ea=$(errors_of "$OUT/wrk-a-$case-$round.txt") eb=$(errors_of "$OUT/wrk-b-$case-$round.txt")
    if [ "$ea" != 0 ] || [ "$eb" != 0 ] || [ "${ra:-0}" = 0 ] || [ "${rb:-0}" = 0 ]; then
      echo "FAIL $case round $round: errors A=$ea B=$eb, requests A=${ra:-0} B=${rb:-0}" >&2
      FAILED=1
      continue
    fi
    read -r ua ub ratio < <(python3 -c "
a=($a1-$a0)/$HZ/$ra*1e6; b=($b1-$b0)/$HZ/$rb*1e6
print(f'{a:.2f} {b:.2f} {b/a:.3f}')")
    ratios+=("$ratio")
    printf '%-11s %5s %12s %12s %8s\n' "$case" "$round" "$ua" "$ub" "$ratio"
  done
  [ "${#ratios[@]}" -gt 0 ] || continue
  verdict=$(python3 -c "
import statistics, sys
r=[float(x) for x in sys.argv[2:]]
m=statistics.median(r)
print(f'{m:.3f} (min {min(r):.3f}, max {max(r):.3f}, {len(r)} rounds)', 'ok' if m <= float(sys.argv[1]) else 'FAIL')
" "$MAX_RATIO" "${ratios[@]}")
  echo "== $case: median B/A $verdict"
  [[ $verdict == *FAIL ]] && FAILED=1
done
exit "$FAILED"
