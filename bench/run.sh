#!/usr/bin/env bash
# bench/run.sh: direct-to-upstream vs through-Switchyard vs through two reference proxies
# (nginx as a reverse proxy, HAProxy), measured in the same run, interleaved.
#
#   bench/run.sh            full run (a few minutes)
#   bench/run.sh --quick    one short round, to check the harness itself
#   bench/run.sh --perf     also profile the gateway with `perf record -g` under saturation
#
# Knobs (environment): ROUNDS SECS CONNS RATE LAT_SECS LAT_CONNS LOAD_CPU SERVER_CPU
# READY_SPAWNS PERF=auto|1|0 PERF_CASE TOKENS TOKEN_GAP_US TARGETS=fail|report ALLOW_STRAY=1
# NO_BUILD=1
# CASES="chat chat+tel stream ai-chat ai-chat+tel ai-stream o2a o2a-stream mcp mcp-modern a2a
# stream-tokens".
# See bench/README.md for what is measured and how to read it.
# Exit status: 0 only if every target is met, no case saw an error answer and every reference
# proxy ran; 1 otherwise (the whole summary is printed first). TARGETS=report prints missed
# targets without failing the run (errors and missing references still fail it).
# Everything it generates goes to bench/out/; tools it builds are cached in bench/.tools/.
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME and printf must use '.' as the decimal point

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT=$BENCH/out
TOOLS=$BENCH/.tools
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GATEWAY_BIN=$TARGET_DIR/release/switchyard
HELPERS=$BENCH/helpers.py

ROUNDS=${ROUNDS:-3}             # interleaved direct/gateway rounds per case
SECS=${SECS:-6}                 # seconds per saturation run
CONNS=${CONNS:-32}              # wrk connections
RATE=${RATE:-200}               # fixed request rate for the latency case
LAT_SECS=${LAT_SECS:-8}         # seconds per latency run
LAT_CONNS=${LAT_CONNS:-8}       # oha connections for the latency case
LOAD_CPU=${LOAD_CPU:-0}         # wrk/oha/pollers run here ...
SERVER_CPU=${SERVER_CPU:-1}     # ... and the gateway and nginx here, so they never share a core
READY_SPAWNS=${READY_SPAWNS:-3} # start-up is timed over this many spawns; the last one is measured
PERF=${PERF:-auto}              # auto: profile only if a target is missed (and perf works)
PERF_CASE=${PERF_CASE:-chat}    # the case profiled under saturation
PERF_CALLGRAPH=${PERF_CALLGRAPH:-fp} # fp, or dwarf to see through libc (larger, slower to report)
TTFB_N=${TTFB_N:-300}           # sequential requests per time-to-first-byte run
TOKENS=${TOKENS:-16}            # content tokens per answer of the token-by-token upstream
TOKEN_GAP_US=${TOKEN_GAP_US:-1000} # microseconds between its events
TARGETS=${TARGETS:-fail}        # fail: a missed target fails the run; report: print only
ALLOW_STRAY=${ALLOW_STRAY:-0}   # 1: warn instead of refusing when a stray server is on the CPUs

case "${1:-}" in
  --quick) ROUNDS=1 SECS=3 LAT_SECS=3 READY_SPAWNS=1 TTFB_N=${TTFB_N_QUICK:-100} ;;
  --perf) PERF=1 ;;
  -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

case $TARGETS in fail | report) ;; *) echo "TARGETS must be fail or report" >&2; exit 2 ;; esac

RESULTS=$OUT/results.jsonl
# Every long-running process we start (upstream nginx, token upstream, nginx-proxy, haproxy,
# both gateways, the OTLP sink); cleanup() stops them, on any exit.
PIDS=()

if [[ -t 2 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD= PLAIN=; fi
log() { printf '%s==>%s %s\n' "$BOLD" "$PLAIN" "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Clean-up: stop what we started, by PID only, politely first.

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools: Debian packages, oha (built once into bench/.tools), the gateway itself.

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  # `apt-get update` only when something is actually missing: it is slow and needs the network.
  log "installing $*"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_packages() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  if ((${#missing[@]})); then
    # nginx-light is gone from newer Debian releases; plain nginx serves just as well here.
    apt_install "${missing[@]}" || apt_install "${missing[@]/nginx-light/nginx}"
  fi
  # HAProxy is a reference, not a requirement of the harness: if it cannot be installed the run
  # goes on and the summary reports it as a reference that could not run (a failure).
  if ! command -v haproxy >/dev/null; then
    apt_install haproxy || log "haproxy could not be installed; it will be reported as not run"
  fi
  if [[ $PERF != 0 ]] && ! command -v perf >/dev/null; then
    apt_install linux-perf || log "linux-perf not installable; profiling is off"
  fi
}

ensure_oha() {
  OHA=$TOOLS/bin/oha
  [[ -x $OHA ]] && return 0
  if command -v oha >/dev/null; then
    OHA=$(command -v oha)
    return 0
  fi
  # oha needs one TLS backend to compile. native-tls links the system OpenSSL, which is much
  # less to build on a 2-core machine than the default (rustls with aws-lc).
  local missing=()
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
  log "building oha into bench/.tools (once; several minutes)"
  cargo install oha --locked --no-default-features --features native-tls --root "$TOOLS" \
    >"$OUT/oha-build.log" 2>&1 || die "cargo install oha failed; see $OUT/oha-build.log"
}

# The token-by-token SSE upstream (bench/tokstream.c), rebuilt when its source changes.
build_tokstream() {
  TOKSTREAM=$TOOLS/tokstream
  if [[ ! -x $TOKSTREAM || $BENCH/tokstream.c -nt $TOKSTREAM ]]; then
    log "building bench/tokstream.c"
    gcc -O2 -Wall -o "$TOKSTREAM" "$BENCH/tokstream.c" || die "gcc failed on bench/tokstream.c"
  fi
}

build_gateway() {
  if [[ ${NO_BUILD:-0} == 1 ]]; then
    [[ -x $GATEWAY_BIN ]] || die "NO_BUILD=1 but no binary at $GATEWAY_BIN"
    log "NO_BUILD=1: using $GATEWAY_BIN as it is (built $(date -r "$GATEWAY_BIN" '+%F %T'))"
    return 0
  fi
  log "building switchyard (release)"
  (cd "$ROOT" && cargo build --release -p switchyard) || die "cargo build failed"
  [[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"
}

# ---------------------------------------------------------------------------------------------
# /proc accounting.

CLK_TCK=$(getconf CLK_TCK)

# utime+stime of the whole process (all threads), in clock ticks: fields 14 and 15 of
# /proc/PID/stat. The comm field (2) may contain spaces, so split after the last ')'.
cpu_ticks() {
  local stat rest f
  stat=$(</proc/"$1"/stat)
  rest=${stat##*) }
  read -ra f <<<"$rest" # f[0] is field 3
  echo $((f[11] + f[12]))
}

# utime alone: the process's own code, without the kernel's work on its behalf.
cpu_user_ticks() {
  local stat rest f
  stat=$(</proc/"$1"/stat)
  rest=${stat##*) }
  read -ra f <<<"$rest"
  echo $((f[11]))
}

# Connections nginx has accepted so far (first number of stub_status's third line).
nginx_accepts() {
  curl -fsS "http://127.0.0.1:$UP_PORT/nginx_status" | awk 'NR == 3 { print $1 }'
}

# A "VmXXX:   1234 kB" line of /proc/PID/status, in kB.
vm_kb() {
  awk -v k="$2:" '$1 == k { print $2 }' /proc/"$1"/status
}

# ---------------------------------------------------------------------------------------------
# Upstream: nginx, one worker, no master, no access log, everything under bench/out/nginx.

# About 600 bytes, the shape of a real non-streaming chat.completion.
CHAT_JSON='{"id":"chatcmpl-bench0000000000000000000000001","object":"chat.completion","created":1735689600,"model":"bench-model-2025-01-01","system_fingerprint":"fp_bench000001","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed benchmark completion from the nginx upstream. It is long enough to look like a short real answer, and short enough to be cheap to serve.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":36,"total_tokens":60,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}'

# The same answer as an Anthropic Messages response.
MCP_JSON='{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"nginx-mcp","version":"1"},"content":[{"type":"text","text":"Hello! This is a fixed benchmark tool result from the nginx upstream."}],"isError":false}}'
# A static A2A agent's answer to a v1.0 JSON-RPC SendMessage: a completed task with one artifact.
A2A_JSON='{"jsonrpc":"2.0","id":1,"result":{"task":{"id":"task-bench-0001","contextId":"ctx-bench-0001","status":{"state":"TASK_STATE_COMPLETED"},"artifacts":[{"artifactId":"art-bench-0001","name":"echo","parts":[{"text":"Hello! This is a fixed benchmark task result from the nginx upstream."}]}]}}}'
MESSAGES_JSON='{"id":"msg_bench0000000000000000000001","type":"message","role":"assistant","model":"bench-claude-2025-01-01","content":[{"type":"text","text":"Hello! This is a fixed benchmark completion from the nginx upstream. It is long enough to look like a short real answer, and short enough to be cheap to serve."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":24,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":36}}'

# The part of an nginx config both bench nginx processes share: one process (so its
# /proc/PID/stat is the whole server's CPU), no access log, temp paths under DIR (Debian's
# compiled-in ones are under /var/lib/nginx), and keep-alive long enough that wrk and the
# gateway never have to reconnect (the default is 1000 requests per connection). Opens the
# `http {` block the caller closes.
nginx_prelude() { # DIR
  cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
EOF
}

write_upstream() {
  local dir=$OUT/nginx i
  mkdir -p "$dir/tmp" "$dir/html/v1"
  # A short SSE stream: role chunk, a few content chunks, finish chunk, [DONE].
  {
    printf 'data: {"id":"chatcmpl-bench1","object":"chat.completion.chunk","created":1735689600,"model":"bench-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    for i in Hello there from the bench stream; do
      printf 'data: {"id":"chatcmpl-bench1","object":"chat.completion.chunk","created":1735689600,"model":"bench-model","choices":[{"index":0,"delta":{"content":"%s "},"finish_reason":null}]}\n\n' "$i"
    done
    printf 'data: {"id":"chatcmpl-bench1","object":"chat.completion.chunk","created":1735689600,"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    printf 'data: [DONE]\n\n'
  } >"$dir/html/v1/stream"
  CHAT_SSE=$(<"$dir/html/v1/stream")
  # The same answer as Anthropic Messages events, for the translated (OpenAI -> Anthropic) cases.
  ANTHROPIC_SSE=$(
    printf 'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_bench1","type":"message","role":"assistant","model":"bench-claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":24,"output_tokens":1}}}\n\n'
    printf 'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    printf 'event: ping\ndata: {"type":"ping"}\n\n'
    for i in Hello there from the bench stream; do
      printf 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s "}}\n\n' "$i"
    done
    printf 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    printf 'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}\n\n'
    printf 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
  )
  {
    echo "# Generated by bench/run.sh. A deliberately cheap upstream: the point is to measure the gateway."
    nginx_prelude "$dir"
    cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT;
    location = /v1/chat/completions {
      default_type application/json;
      return 200 '$CHAT_JSON';
    }
    location = /v1/messages {
      default_type application/json;
      return 200 '$MESSAGES_JSON';
    }
    # A static MCP server: one answer that is both an initialize result and a tool result.
    location = /mcp {
      default_type application/json;
      add_header Mcp-Session-Id bench-upstream-session;
      return 200 '$MCP_JSON';
    }
    # A static A2A agent: one JSON-RPC answer (a completed task) to any call.
    location = /a2a {
      default_type application/json;
      return 200 '$A2A_JSON';
    }
    # POSTed streams: return answers any method, unlike a static file.
    location = /v1/chat-stream {
      default_type text/event-stream;
      return 200 '$CHAT_SSE

';
    }
    location = /v1/messages-stream {
      default_type text/event-stream;
      return 200 '$ANTHROPIC_SSE

';
    }
    location = /v1/stream {
      types { }
      default_type text/event-stream;
      root $dir/html;
    }
    # Connections accepted so far: tells whether the gateway reuses its upstream connections.
    location = /nginx_status { stub_status; }
  }
}
EOF
  } >"$dir/nginx.conf"
}

start_upstream() {
  log "starting nginx on 127.0.0.1:$UP_PORT (CPU $SERVER_CPU)"
  taskset -c "$SERVER_CPU" nginx -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" \
    >"$OUT/nginx/stdout.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  local i
  for i in $(seq 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$UP_PORT/v1/stream" 2>/dev/null && return 0
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$OUT/nginx/error.log" "$OUT/nginx/stdout.log" >&2 2>/dev/null || true
  die "nginx did not come up"
}

# The token-by-token upstream: every answer is an OpenAI SSE stream of TOKENS one-token events,
# each its own chunk and write, TOKEN_GAP_US apart (bench/tokstream.c).
start_tokstream() {
  log "starting tokstream on 127.0.0.1:$TOK_PORT (CPU $SERVER_CPU; $TOKENS tokens, ${TOKEN_GAP_US} µs apart)"
  taskset -c "$SERVER_CPU" "$TOKSTREAM" "$TOK_PORT" "$TOKENS" "$TOKEN_GAP_US" >"$OUT/tokstream.log" 2>&1 &
  TOK_PID=$!
  PIDS+=("$TOK_PID")
  local i
  for i in $(seq 100); do
    curl -fsS -o /dev/null -X POST -d '{}' "http://127.0.0.1:$TOK_PORT/v1/chat/completions" 2>/dev/null && return 0
    kill -0 "$TOK_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$OUT/tokstream.log" >&2
  die "tokstream did not come up"
}

# ---------------------------------------------------------------------------------------------
# Reference proxies, on the plain path, in front of the same upstreams: nginx as a reverse
# proxy (a second nginx, one process, an upstream keepalive pool) and HAProxy (one thread).
# They are the yardstick for CPU per request. A reference that cannot be installed or started
# does not stop the run: it is recorded and the summary fails the run naming it.

REFS=(nginx-proxy haproxy)
declare -A REF_PID=()

ref_failed() { # NAME WHY
  log "reference $1 could not run: $2"
  python3 "$HELPERS" append "$RESULTS" kind=ref-fail ref="$1" why="$2"
}

write_refs() {
  local dir=$OUT/nginx-proxy
  mkdir -p "$dir/tmp" "$OUT/haproxy"
  {
    echo "# Generated by bench/run.sh: nginx as a reverse proxy in front of the same upstreams."
    nginx_prelude "$dir"
    cat <<EOF
  upstream up {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
  }
  upstream tokens {
    server 127.0.0.1:$TOK_PORT;
    keepalive 64;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
  }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server {
    listen 127.0.0.1:$NGXP_PORT;
    location / { proxy_pass http://up; }
    # Streams are passed on as they arrive (the gateway does the same), not buffered.
    location /v1/chat-stream { proxy_pass http://up; proxy_buffering off; }
    location /tokens/ { proxy_pass http://tokens; proxy_buffering off; }
  }
}
EOF
  } >"$dir/nginx.conf"
  cat >"$OUT/haproxy/haproxy.cfg" <<EOF
# Generated by bench/run.sh: HAProxy in front of the same upstreams.
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
  option http-keep-alive
  # Without it HAProxy merges the data of an incomplete response before sending, and a
  # streamed event waits (the first token arrived with the whole stream, ~20 ms): the gateway
  # and nginx-proxy (proxy_buffering off) pass each event on at once.
  option http-no-delay
frontend bench
  bind 127.0.0.1:$HA_PORT
  use_backend tokens if { path_beg /tokens/ }
  default_backend up
backend up
  http-reuse always
  server up 127.0.0.1:$UP_PORT
backend tokens
  http-reuse always
  server tokens 127.0.0.1:$TOK_PORT
EOF
}

start_ref() { # NAME
  local name=$1 port pid i
  case $name in
    nginx-proxy)
      port=$NGXP_PORT
      taskset -c "$SERVER_CPU" nginx -e "$OUT/nginx-proxy/error.log" -p "$OUT/nginx-proxy" \
        -c "$OUT/nginx-proxy/nginx.conf" >"$OUT/nginx-proxy/stdout.log" 2>&1 &
      pid=$! ;;
    haproxy)
      port=$HA_PORT
      if ! command -v haproxy >/dev/null; then ref_failed haproxy "haproxy is not installed"; return 0; fi
      if ! haproxy -c -q -f "$OUT/haproxy/haproxy.cfg" >"$OUT/haproxy/check.log" 2>&1; then
        ref_failed haproxy "config check failed: $(tr '\n' ' ' <"$OUT/haproxy/check.log")"; return 0
      fi
      # -db: stay in the foreground, one process, so its /proc/PID/stat is all of its CPU.
      taskset -c "$SERVER_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg" >"$OUT/haproxy/haproxy.log" 2>&1 &
      pid=$! ;;
  esac
  PIDS+=("$pid")
  for i in $(seq 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/stream" 2>/dev/null; then
      REF_PID[$name]=$pid
      log "$name ready on 127.0.0.1:$port (CPU $SERVER_CPU)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  stop_pid "$pid"
  ref_failed "$name" "did not answer on 127.0.0.1:$port; see $OUT/$name/"
}

start_refs() {
  local r
  for r in "${REFS[@]}"; do start_ref "$r"; done
}

ref_up() { [[ -n ${REF_PID[$1]:-} ]]; }
refs_up() { local r; for r in "${REFS[@]}"; do if ref_up "$r"; then echo "$r"; fi; done; }

# ---------------------------------------------------------------------------------------------
# Gateway: one bind, one listener, one route, one backend, no policies (the plain HTTP path).

write_gateway_config() {
  cat >"$OUT/gateway.yaml" <<EOF
# Generated by bench/run.sh.
config:
  adminAddr: 127.0.0.1:$ADMIN_PORT
  drainTimeout: 1s
binds:
- port: $GW_PORT
  address: 127.0.0.1
  listeners:
  - routes:
    # The LLM cases: an ai backend parses the body (model alias), injects the provider key,
    # reads usage from the answer, and for the o2a cases translates OpenAI <-> Anthropic.
    - matches: [{path: {pathPrefix: /ai}}]
      backends:
      - ai: {name: ai, hostOverride: 127.0.0.1:$UP_PORT, provider: {openAI: {}}, pathOverride: /v1/chat/completions, policies: {backendAuth: {key: sk-bench}, ai: {modelAliases: {bench-model: bench-model-2025}}}}
    - matches: [{path: {pathPrefix: /ai-stream}}]
      backends:
      - ai: {name: ai-stream, hostOverride: 127.0.0.1:$UP_PORT, provider: {openAI: {}}, pathOverride: /v1/chat-stream, policies: {backendAuth: {key: sk-bench}, ai: {modelAliases: {bench-model: bench-model-2025}}}}
    - matches: [{path: {pathPrefix: /o2a}}]
      backends:
      - ai: {name: o2a, hostOverride: 127.0.0.1:$UP_PORT, provider: {anthropic: {}}, pathOverride: /v1/messages, policies: {backendAuth: {key: sk-bench}}}
    - matches: [{path: {pathPrefix: /o2a-stream}}]
      backends:
      - ai: {name: o2a-stream, hostOverride: 127.0.0.1:$UP_PORT, provider: {anthropic: {}}, pathOverride: /v1/messages-stream, policies: {backendAuth: {key: sk-bench}}}
    # The token-by-token stream: an ai backend (as ai-stream) in front of bench/tokstream.c.
    - matches: [{path: {pathPrefix: /tokens}}]
      backends:
      - ai: {name: tokens, hostOverride: 127.0.0.1:$TOK_PORT, provider: {openAI: {}}, pathOverride: /v1/chat/completions, policies: {backendAuth: {key: sk-bench}, ai: {modelAliases: {bench-model: bench-model-2025}}}}
    # The MCP case: tools/call through the MCP gateway (sealed session, routing, relay).
    - matches: [{path: {exact: /mcp}}]
      backends:
      - mcp: {sessionKey: bench, targets: [{name: bench, mcp: {host: "http://127.0.0.1:$UP_PORT/mcp"}}]}
    # The A2A case: message/send through an a2a backend (JSON-RPC read and classified, the
    # answer observed for the task's id, state and artifacts).
    - matches: [{path: {exact: /a2a}}]
      backends:
      - a2a: {host: 127.0.0.1:$UP_PORT}
    # The plain HTTP path.
    - backends:
      - host: 127.0.0.1:$UP_PORT
EOF
  # The same gateway with the access log (JSON, a CEL field) and tracing (every request sampled,
  # OTLP/HTTP to a local sink) on: the "+tel" cases, to price telemetry within one run.
  {
    cat <<EOF
# Generated by bench/run.sh: gateway.yaml plus logging and tracing.
config:
  adminAddr: 127.0.0.1:$TEL_ADMIN_PORT
  statsAddr: 127.0.0.1:$TEL_STATS_PORT
  drainTimeout: 1s
  logging:
    format: json
    fields:
      add:
        llm.system: 'llm.provider'
  tracing:
    otlpEndpoint: http://127.0.0.1:$SINK_PORT
    otlpProtocol: http
    randomSampling: true
    fields:
      add:
        llm.system: 'llm.provider'
EOF
    sed -n '/^binds:/,$p' "$OUT/gateway.yaml" | sed "s/port: $GW_PORT/port: $TEL_PORT/"
  } >"$OUT/gateway-telemetry.yaml"
}

# The telemetry gateway and its OTLP sink (on the load CPU, like the clients).
start_telemetry_gateway() {
  # The access log goes outside the config's directory, which the gateway watches.
  mkdir -p "$OUT/logs"
  taskset -c "$LOAD_CPU" python3 "$HELPERS" otlp-sink "$SINK_PORT" >"$OUT/otlp-sink.log" 2>&1 &
  PIDS+=("$!")
  NO_COLOR=1 taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$OUT/gateway-telemetry.yaml" \
    >"$OUT/logs/access.log" 2>"$OUT/gateway-telemetry.log" &
  TEL_PID=$!
  PIDS+=("$TEL_PID")
  taskset -c "$LOAD_CPU" python3 "$HELPERS" wait-ready-now "127.0.0.1:$TEL_ADMIN_PORT" ||
    die "the telemetry gateway did not become ready; see $OUT/gateway-telemetry.log"
}

# Spawns the gateway and times spawn -> first 200 from /healthz/ready. A Python poller is started
# (and waits until it is "armed") before the spawn, so its own start-up is not on the clock.
# Sets GW_PID and READY_MS.
start_gateway() {
  local armed from_poll to_poll
  coproc POLL { taskset -c "$LOAD_CPU" python3 "$HELPERS" wait-ready "127.0.0.1:$ADMIN_PORT"; }
  local poll_pid=$POLL_PID
  # Private copies of the coprocess pipes: bash drops POLL[] as soon as the coprocess exits.
  exec {from_poll}<&"${POLL[0]}" {to_poll}>&"${POLL[1]}"
  read -r armed <&"$from_poll"
  [[ $armed == armed ]] || die "readiness poller did not start"
  local t0=$EPOCHREALTIME
  # (The gateway must not inherit the poller pipes, hence the closes.)
  NO_COLOR=1 taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$OUT/gateway.yaml" >"$OUT/gateway.log" 2>&1 \
    {from_poll}<&- {to_poll}>&- &
  GW_PID=$!
  PIDS+=("$GW_PID")
  echo "$t0" >&"$to_poll"
  read -r READY_MS <&"$from_poll" || READY_MS=timeout
  exec {from_poll}<&- {to_poll}>&-
  wait "$poll_pid" 2>/dev/null || true
  if [[ $READY_MS == timeout ]] || ! kill -0 "$GW_PID" 2>/dev/null; then
    cat "$OUT/gateway.log" >&2
    die "gateway did not become ready"
  fi
}

stop_gateway() {
  stop_pid "$GW_PID"
  local keep=() pid
  for pid in "${PIDS[@]}"; do [[ $pid == "$GW_PID" ]] || keep+=("$pid"); done
  PIDS=("${keep[@]}")
}

# The gateway's own view of start-up: its "ready elapsed_ms=N" log line (config loaded -> ready).
log_ready_ms() {
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/gateway.log" | grep -o 'elapsed_ms=[0-9]*' | head -1 | cut -d= -f2
}

# Start the gateway READY_SPAWNS times; keep the last one running for the load cases.
start_gateway_timed() {
  local i times=()
  for i in $(seq "$READY_SPAWNS"); do
    if ((i > 1)); then stop_gateway; fi
    start_gateway
    times+=("$READY_MS")
    LOG_READY_MS=$(log_ready_ms)
    log "gateway ready in $READY_MS ms (spawn $i/$READY_SPAWNS; its log says ${LOG_READY_MS:-?} ms)"
  done
  # Idle memory right after ready, before any request has been served.
  RSS_IDLE_KB=$(vm_kb "$GW_PID" VmRSS)
  HWM_IDLE_KB=$(vm_kb "$GW_PID" VmHWM)
  READY_TIMES=$(IFS=,; echo "${times[*]}")
  READY_MEDIAN=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
}

# ---------------------------------------------------------------------------------------------
# Sanity: both paths must answer 200 with exactly the upstream's bytes before we time anything.

fetch() { # TARGET CASE: print the response body
  local body='{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
  case $(mode_for "$2") in
    stream) curl -fsS "$(url_for "$1" "$2")" ;;
    mcp)
      mcp_session
      curl -fsS -X POST -H 'content-type: application/json' -H "mcp-session-id: $MCP_SESSION" \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{}}}' \
        "$(url_for "$1" "$2")" ;;
    mcp-modern)
      curl -fsS -X POST -H 'content-type: application/json' -H 'mcp-protocol-version: 2026-07-28' \
        -H 'mcp-method: tools/call' -H 'mcp-name: hello' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}' \
        "$(url_for "$1" "$2")" ;;
    a2a)
      curl -fsS -X POST -H 'content-type: application/json' -H 'a2a-version: 1.0' \
        -d '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"hi"}]}}}' \
        "$(url_for "$1" "$2")" ;;
    chat-stream) body='{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"hi"}]}' ;&
    *) curl -fsS -X POST -H 'content-type: application/json' -d "$body" "$(url_for "$1" "$2")" ;;
  esac
}

smoke_test() {
  local case direct via ref
  for case in $CASES; do
    direct=$(fetch direct "$case") || die "direct $case request failed"
    via=$(fetch gateway "$case") || die "gateway $case request failed; see $OUT/gateway.log"
    case $case in
      o2a*) # translated: OpenAI framing out of an Anthropic upstream
        [[ $via == *chat.completion* && $via == *"Hello"* ]] || die "the $case translation is wrong: $via" ;;
      mcp) # relayed message by message: same JSON-RPC answer, re-serialized
        [[ $via == *'"isError":false'* && $via == *"fixed benchmark tool result"* ]] || die "the MCP answer is wrong: $via" ;;
      mcp-modern) # the legacy answer completed for the 2026-07-28 revision
        [[ $via == *'"resultType":"complete"'* && $via == *"fixed benchmark tool result"* ]] || die "the modern MCP answer is wrong: $via" ;;
      *) [[ $direct == "$via" ]] || die "the gateway changed the $case response body" ;;
    esac
    # The references must pass the upstream's bytes through unchanged too; one that does not
    # is dropped from the run and reported as a reference that could not run.
    for ref in $(refs_for "$case"); do
      via=$(fetch "$ref" "$case") || { drop_ref "$ref" "its $case request failed"; continue; }
      [[ $direct == "$via" ]] || drop_ref "$ref" "it changed the $case response body"
    done
  done
  log "smoke test ok: same-dialect paths return the upstream's bytes; translated paths translate"
}

drop_ref() { # NAME WHY
  stop_pid "${REF_PID[$1]}"
  unset 'REF_PID[$1]'
  ref_failed "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# Load cases.

# The cases: what wrk sends, and the direct and through-gateway URLs.
CASES=${CASES:-"chat chat+tel stream ai-chat ai-chat+tel ai-stream o2a o2a-stream mcp mcp-modern a2a stream-tokens"}

# Cases the reference proxies are measured on: the plain path (chat, a static stream), the
# upstream stream ai-stream relays, and the token-by-token stream. ai-chat's denominator is
# nginx-proxy's plain-path CPU per request, from the chat case, or measured within ai-chat
# (the same plain POST) when chat is not run.
REF_CASES="chat stream ai-stream stream-tokens"
[[ " $CASES " == *" chat "* ]] || REF_CASES+=" ai-chat"

refs_for() { # CASE -> the reference proxies that run on it (and are up)
  local r
  [[ " $REF_CASES " == *" $1 "* ]] || return 0
  for r in "${REFS[@]}"; do if ref_up "$r"; then echo "$r"; fi; done
}

targets_for() { # CASE -> direct, the references, the gateway: the order of every round
  # shellcheck disable=SC2046 # one word per reference, on purpose
  echo direct $(refs_for "$1") gateway
}

# The MCP case's session at the gateway (an initialize, once); wrk sends it as Mcp-Session-Id.
mcp_session() {
  [[ -n ${MCP_SESSION:-} ]] && return 0
  MCP_SESSION=$(curl -fsS -D - -o /dev/null -X POST -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' \
    "http://127.0.0.1:$GW_PORT/mcp" | tr -d '\r' | awk 'tolower($1) == "mcp-session-id:" { print $2 }')
  [[ -n $MCP_SESSION ]] || die "the MCP gateway issued no session; see $OUT/gateway.log"
  export MCP_SESSION
}

mode_for() { # CASE -> wrk mode
  case ${1%+tel} in
    stream) echo stream ;;
    ai-stream | o2a-stream | stream-tokens) echo chat-stream ;;
    mcp) echo mcp ;;
    mcp-modern) echo mcp-modern ;;
    a2a) echo a2a ;;
    *) echo chat ;;
  esac
}

url_for() { # TARGET CASE ("+tel": the telemetry gateway)
  local direct gateway port=$GW_PORT up=$UP_PORT
  [[ $2 == *+tel ]] && port=$TEL_PORT
  case ${2%+tel} in
    chat) direct=/v1/chat/completions gateway=/v1/chat/completions ;;
    stream) direct=/v1/stream gateway=/v1/stream ;;
    ai-chat) direct=/v1/chat/completions gateway=/ai/v1/chat/completions ;;
    ai-stream) direct=/v1/chat-stream gateway=/ai-stream/v1/chat/completions ;;
    o2a) direct=/v1/messages gateway=/o2a/v1/chat/completions ;;
    o2a-stream) direct=/v1/messages-stream gateway=/o2a-stream/v1/chat/completions ;;
    mcp | mcp-modern) direct=/mcp gateway=/mcp ;;
    a2a) direct=/a2a gateway=/a2a ;;
    # tokstream answers any path; the reference proxies route /tokens/ to it.
    stream-tokens) direct=/tokens/v1/chat/completions gateway=/tokens/v1/chat/completions up=$TOK_PORT ;;
    *) die "unknown case $2" ;;
  esac
  case $1 in
    gateway) echo "http://127.0.0.1:$port$gateway" ;;
    nginx-proxy) echo "http://127.0.0.1:$NGXP_PORT$direct" ;;
    haproxy) echo "http://127.0.0.1:$HA_PORT$direct" ;;
    direct) echo "http://127.0.0.1:$up$direct" ;;
    *) die "unknown target $1" ;;
  esac
}

proxy_pid() { # TARGET CASE -> the PID of the proxy under test (none for direct)
  case $1 in
    gateway) if [[ $2 == *+tel ]]; then echo "$TEL_PID"; else echo "$GW_PID"; fi ;;
    nginx-proxy | haproxy) echo "${REF_PID[$1]}" ;;
  esac
}

# Closed-loop saturation with wrk, and the CPU the proxy and the upstream burned while it ran.
run_wrk() { # CASE TARGET ROUND
  local case=$1 target=$2 round=$3 px0=0 up0 px1=0 up1 acc0=0 acc1=1 uu0=0 uu1=0 extra=()
  local file=$OUT/wrk-$case-$target-$round.txt
  local pid up_pid=$NGINX_PID
  pid=$(proxy_pid "$target" "$case")
  printf '  %-13s %-11s round %s: ' "$case" "$target" "$round" >&2
  if [[ $case == stream-tokens ]]; then
    up_pid=$TOK_PID
    extra=(chunks_per_req=$((TOKENS + 3))) # role, the tokens, finish with usage, [DONE]
  else
    acc0=$(nginx_accepts)
  fi
  [[ -n $pid ]] && px0=$(cpu_ticks "$pid")
  up0=$(cpu_ticks "$up_pid") uu0=$(cpu_user_ticks "$up_pid")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" \
    "$(url_for "$target" "$case")" -- "$(mode_for "$case")" >"$file" 2>&1 || die "wrk failed: $(cat "$file")"
  [[ -n $pid ]] && px1=$(cpu_ticks "$pid")
  up1=$(cpu_ticks "$up_pid") uu1=$(cpu_user_ticks "$up_pid")
  # (acc1 - acc0 - 1: the status request itself is a connection too.)
  if [[ $case != stream-tokens ]]; then
    acc1=$(nginx_accepts)
    extra+=(upstream_conns=$((acc1 - acc0 - 1)))
  fi
  # gw_ticks: the proxy under test (gateway, nginx-proxy or haproxy); ng_ticks: the upstream.
  python3 "$HELPERS" wrk-record "$RESULTS" "$file" kind=run case="$case" target="$target" \
    round="$round" gw_ticks=$((px1 - px0)) ng_ticks=$((up1 - up0)) ng_user_ticks=$((uu1 - uu0)) \
    "${extra[@]}" >&2
}

# Time to the first streamed byte, sequential requests (no queueing): what the gateway adds
# before the first event reaches the client.
run_ttfb() { # CASE TARGET ROUND
  printf '  %-13s %-11s round %s: ' "$1" "$2" "$3" >&2
  taskset -c "$LOAD_CPU" python3 "$HELPERS" ttfb "$RESULTS" "$(url_for "$2" "$1")" "$TTFB_N" \
    kind=run case="ttfb-$1" target="$2" round="$3" >&2
}

# Short unrecorded run of every case so each route's upstream pool (one per backend) and the
# page caches are warm before anything is timed.
warm_up() {
  local case target
  for case in $CASES; do
    for target in $(targets_for "$case"); do
      taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s -s "$BENCH/wrk.lua" \
        "$(url_for "$target" "$case")" -- "$(mode_for "$case")" >/dev/null 2>&1 || true
    done
  done
}

# Open-loop latency at a fixed rate with oha. --latency-correction times each request from when
# it was scheduled, so a stall shows up as latency instead of silently lowering the rate.
run_oha() { # TARGET ROUND
  local target=$1 round=$2 file=$OUT/oha-$1-$2.json
  printf '  latency %-11s round %s: ' "$target" "$round" >&2
  taskset -c "$LOAD_CPU" "$OHA" --no-tui --output-format json --latency-correction \
    -q "$RATE" -z "${LAT_SECS}s" -c "$LAT_CONNS" -m POST -T application/json \
    -d '{"model":"bench-model","messages":[{"role":"user","content":"Say hello in one word."}]}' \
    "$(url_for "$target" chat)" >"$file" 2>"$OUT/oha-$1-$2.err" || die "oha failed: $(cat "$OUT/oha-$1-$2.err")"
  python3 "$HELPERS" oha-record "$RESULTS" "$file" kind=run case=latency target="$target" \
    round="$round" >&2
}

# Telemetry priced side by side: the plain and the telemetry gateway saturated at the same time,
# each by its own wrk, both on the server CPU. Whatever else the machine is doing in those
# seconds (a VM's neighbours, frequency, page cache) lands on both, which sequential runs cannot
# promise: on the 2-core VM two identical gateways priced this way agreed within ~2%, where
# sequential rounds of one and the same gateway differed by up to 20%.
run_tel_side_by_side() { # CASE ROUND (CASE: chat or ai-chat)
  local case=$1 round=$2 p0 t0 p1 t1 wrk_pid
  local plain_file=$OUT/wrk-side-plain-$case-$round.txt tel_file=$OUT/wrk-side-tel-$case-$round.txt
  printf '  side by side  %-7s round %s: ' "$case" "$round" >&2
  p0=$(cpu_ticks "$GW_PID") t0=$(cpu_ticks "$TEL_PID")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" \
    "$(url_for gateway "$case")" -- chat >"$plain_file" 2>&1 &
  wrk_pid=$!
  PIDS+=("$wrk_pid") # (bounded by -d; listed so that an early exit stops it too)
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" \
    "$(url_for gateway "$case+tel")" -- chat >"$tel_file" 2>&1 || die "wrk failed: $(cat "$tel_file")"
  wait "$wrk_pid" || die "wrk failed: $(cat "$plain_file")"
  p1=$(cpu_ticks "$GW_PID") t1=$(cpu_ticks "$TEL_PID")
  python3 "$HELPERS" wrk-record "$RESULTS" "$plain_file" kind=run case=side-plain base="$case" \
    target=gateway round="$round" gw_ticks=$((p1 - p0)) >/dev/null
  python3 "$HELPERS" wrk-record "$RESULTS" "$tel_file" kind=run case=side-tel base="$case" \
    target=gateway round="$round" gw_ticks=$((t1 - t0)) >/dev/null
  python3 "$HELPERS" side-by-side "$plain_file" "$tel_file" $((p1 - p0)) $((t1 - t0)) >&2
}

# perf profile of the gateway while wrk saturates it; top of `perf report` to bench/out.
run_perf() {
  if ! perf record -e cpu-clock -o /dev/null true >/dev/null 2>&1; then
    log "perf does not work here; skipping the profile"
    return 0
  fi
  log "profiling the gateway (perf record -g, ${SECS}s $PERF_CASE saturation)"
  local pid=$GW_PID
  [[ $PERF_CASE == *+tel ]] && pid=$TEL_PID
  taskset -c "$LOAD_CPU" perf record -e cpu-clock -F 999 --call-graph "$PERF_CALLGRAPH" -p "$pid" -o "$OUT/perf.data" \
    -- sleep "$SECS" >"$OUT/perf-record.log" 2>&1 &
  local perf_pid=$!
  PIDS+=("$perf_pid")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" \
    "$(url_for gateway "$PERF_CASE")" -- "$(mode_for "$PERF_CASE")" >"$OUT/wrk-perf.txt" 2>&1 || true
  wait "$perf_pid" || true
  # The call-graph view (as asked for by `perf report --no-children --stdio | head -60`), a flat
  # top-of-symbols list, and the split between kernel, libc and the gateway's own code.
  perf report -i "$OUT/perf.data" --no-children --stdio 2>/dev/null | head -60 >"$OUT/perf-report.txt" || true
  perf report -i "$OUT/perf.data" --no-children --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -40 >"$OUT/perf-top.txt" || true
  perf report -i "$OUT/perf.data" --no-children --stdio -g none --sort dso 2>/dev/null |
    grep -E '^ +[0-9.]+%' >"$OUT/perf-dso.txt" || true
  log "gateway CPU by binary (perf report --sort dso):"
  sed 's/ *$//' "$OUT/perf-dso.txt" >&2
  log "top gateway symbols, self time (all: $OUT/perf-top.txt; call graphs: $OUT/perf-report.txt):"
  head -15 "$OUT/perf-top.txt" | cut -c1-160 >&2
}

# ---------------------------------------------------------------------------------------------

main() {
  mkdir -p "$OUT" "$TOOLS"
  rm -f "$RESULTS" "$OUT"/wrk-*.txt "$OUT"/oha-*.json "$OUT"/oha-*.err
  ((SERVER_CPU < $(nproc) && LOAD_CPU < $(nproc))) || die "needs CPUs $LOAD_CPU and $SERVER_CPU"

  ensure_packages
  ensure_oha
  build_tokstream
  build_gateway

  # Nothing left over from an earlier run (or anything else of the kind) may be on the CPUs
  # we measure: its CPU would land in the figures, and it may hold a port.
  if ! python3 "$HELPERS" strays "$SERVER_CPU" "$LOAD_CPU" >&2; then
    if [[ $ALLOW_STRAY == 1 ]]; then
      log "ALLOW_STRAY=1: going on anyway; the figures may be off"
    else
      die "stray servers on CPU $SERVER_CPU/$LOAD_CPU (listed above); stop them, or ALLOW_STRAY=1"
    fi
  fi
  read -r UP_PORT GW_PORT ADMIN_PORT TEL_PORT TEL_ADMIN_PORT TEL_STATS_PORT SINK_PORT \
    NGXP_PORT HA_PORT TOK_PORT < <(python3 "$HELPERS" freeports 10)
  # Chosen free a moment ago; checked again now, since something may have taken one since.
  python3 "$HELPERS" check-ports "$UP_PORT" "$GW_PORT" "$ADMIN_PORT" "$TEL_PORT" \
    "$TEL_ADMIN_PORT" "$TEL_STATS_PORT" "$SINK_PORT" "$NGXP_PORT" "$HA_PORT" "$TOK_PORT" ||
    die "a port the run needs is in use (see above)"
  write_upstream
  write_refs
  write_gateway_config
  start_upstream
  start_tokstream
  start_refs
  start_gateway_timed
  start_telemetry_gateway
  if [[ " $CASES " == *" mcp "* ]]; then mcp_session; fi
  smoke_test

  local commit dirty=0
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || dirty=1
  python3 - "$RESULTS" <<EOF
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"kind": "meta", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
        "commit": "$commit", "dirty": $dirty, "rounds": $ROUNDS, "secs": $SECS, "conns": $CONNS,
        "rate": $RATE, "lat_secs": $LAT_SECS, "lat_conns": $LAT_CONNS, "load_cpu": $LOAD_CPU,
        "server_cpu": $SERVER_CPU, "clk_tck": $CLK_TCK, "tokens": $TOKENS,
        "token_gap_us": $TOKEN_GAP_US, "ttfb_n": $TTFB_N, "refs": "${REFS[*]}"}) + "\n")
EOF

  log "warming up"
  warm_up
  # Interleave direct, the references and the gateway inside every round (direct, nginx-proxy,
  # haproxy, switchyard; then the same again next round) so that drift on the machine (other
  # work, thermal, page cache) lands on all of them instead of biasing one.
  local round case target
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS"
    for case in $CASES; do
      for target in $(targets_for "$case"); do run_wrk "$case" "$target" "$round"; done
      if [[ $(mode_for "$case") == chat-stream ]]; then
        local ttfb_targets="direct gateway"
        [[ $case == stream-tokens ]] && ttfb_targets=$(targets_for "$case")
        for target in $ttfb_targets; do run_ttfb "$case" "$target" "$round"; done
      fi
    done
    for target in direct $(refs_up) gateway; do
      run_oha "$target" "$round"
    done
    for case in chat ai-chat; do
      if [[ " $CASES " == *" $case+tel "* ]]; then run_tel_side_by_side "$case" "$round"; fi
    done
  done

  local hwm_end
  hwm_end=$(vm_kb "$GW_PID" VmHWM)
  python3 - "$RESULTS" <<EOF
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"kind": "gateway", "ready_ms": $READY_MEDIAN, "ready_all_ms": [$READY_TIMES],
        "log_ready_ms": ${LOG_READY_MS:-None}, "rss_idle_kb": $RSS_IDLE_KB,
        "hwm_idle_kb": $HWM_IDLE_KB, "rss_end_kb": $(vm_kb "$GW_PID" VmRSS),
        "hwm_end_kb": $hwm_end}) + "\n")
EOF

  echo >&2
  # The summary's exit status is the run's: non-zero on a missed target (unless
  # TARGETS=report), on a case with error answers, or on a reference that could not run.
  local status=0
  if TARGETS=$TARGETS python3 "$HELPERS" summary "$RESULTS" | tee "$OUT/summary.txt"; then
    status=0
  else
    status=$?
  fi

  if [[ $PERF == 1 ]] || { [[ $PERF == auto ]] && ! grep -q '^targets missed: none' "$OUT/summary.txt"; }; then
    if command -v perf >/dev/null; then run_perf; else log "perf not installed; no profile"; fi
  fi
  log "results: $OUT/summary.txt (raw: $RESULTS)"
  if ((status)); then log "FAILED (exit $status): see the FAIL lines at the end of the summary"; fi
  exit "$status"
}

main "$@"
