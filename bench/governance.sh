#!/usr/bin/env bash
# Prices governance on the plain HTTP path, in one run, side by side:
#
#   keys   a route with apiKeyAuth + localRateLimit (per key) against the same route without
#          policies: both gateways saturated at once on the server CPU, each by its own wrk on
#          the load CPU, so whatever else the machine does lands on both. Target: at most
#          TARGET_PCT (10) % more gateway CPU per request.
#   redis  the same route with apiKeyAuth + a Redis-backed rateLimit: CPU per request side by
#          side with the plain route, Redis round trips per request (from Redis' own command
#          counters; target: one), and the added p50 at a fixed rate (oha, open loop).
#
# Exits non-zero when a target is missed, an answer is an error, or a tool cannot run.
#
#   bench/governance.sh                 # ROUNDS=3 SECS=5 CONNS=32 RATE=200 LAT_SECS=5
#   NO_BUILD=1 bench/governance.sh      # use target/release/switchyard as it is
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out/governance
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/switchyard}
HELPERS=$BENCH/helpers.py
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-32}
RATE=${RATE:-200}
LAT_SECS=${LAT_SECS:-5}
TARGET_PCT=${TARGET_PCT:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OHA=${OHA:-$BENCH/.tools/bin/oha}
KEY=sk-bench-governance

NAME="governance bench"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

for tool in nginx wrk redis-server redis-cli taskset python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install nginx wrk redis-server)"
done
command -v "$OHA" >/dev/null || OHA=$(command -v oha) || die "oha is not built: run bench/run.sh once (it builds bench/.tools/bin/oha)"

rm -rf "$OUT" && mkdir -p "$OUT"
read -r UP PLAIN KEYS REDISGW REDIS A1 A2 A3 < <(python3 "$HELPERS" freeports 8)
python3 "$HELPERS" check-ports "$UP" "$PLAIN" "$KEYS" "$REDISGW" "$REDIS" "$A1" "$A2" "$A3" ||
  die "ports in use (a stray process from an earlier run?)"

if [[ ${NO_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p switchyard) >&2 || die "cargo build failed"
fi
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# The upstream: nginx answering a fixed chat completion, on the server CPU (as in run.sh).
fixed_upstream_conf "$UP" '{"id":"chatcmpl-bench","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}'
taskset -c "$SERVER_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" &
PIDS+=("$!")
# Redis on the load CPU: in production it is another machine, not the gateway's core.
taskset -c "$LOAD_CPU" redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
PIDS+=("$!")

# Starts a gateway; its PID is left in GW_STARTED (not printed: a $(...) subshell would keep
# the PID out of PIDS, and the exit trap would leave the gateway running).
gateway() { # NAME PORT ADMIN POLICIES
  cat >"$OUT/$1.yaml" <<EOF
config:
  adminAddr: 127.0.0.1:$3
  redis: {url: 'redis://127.0.0.1:$REDIS'}
binds:
- port: $2
  address: 127.0.0.1
  listeners:
  - routes:
    - policies:
$4
      backends:
      - host: 127.0.0.1:$UP
EOF
  NO_COLOR=1 taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$OUT/$1.yaml" >"$OUT/$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  python3 "$HELPERS" wait-ready-now "127.0.0.1:$3" || die "gateway $1 did not become ready; see $OUT/$1.log"
  GW_STARTED=$pid
}

AUTH="        apiKeyAuth:
          keys: [{name: bench, key: $KEY}]"
gateway plain "$PLAIN" "$A1" "        timeout: {requestTimeout: 30s}"
PLAIN_PID=$GW_STARTED
gateway keys "$KEYS" "$A2" "$AUTH
        localRateLimit:
        - {key: apiKey.name, requests: {limit: 1000000000, per: 1s}}"
KEYS_PID=$GW_STARTED
gateway redis "$REDISGW" "$A3" "$AUTH
        rateLimit:
          limits: [{name: bench, key: apiKey.name, requests: 1000000000, window: 1h}]"
REDIS_PID=$GW_STARTED

for port in "$PLAIN" "$KEYS" "$REDISGW"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $KEY" "http://127.0.0.1:$port/v1/chat/completions")
  [[ $code == 200 ]] || die "the gateway on $port answered $code"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$KEYS/v1/chat/completions")
[[ $code == 401 ]] || die "the keyed route let a request without a key through ($code)"

export WRK_AUTH="Bearer $KEY"

# One side-by-side round: the plain gateway and OTHER saturated at once. Prints the CPU per
# request (µs) of each.
side_by_side() { # OTHER_NAME OTHER_PORT OTHER_PID ROUND
  local p0 o0 p1 o1 wpid pr pb or ob
  p0=$(ticks "$PLAIN_PID") o0=$(ticks "$3")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" \
    "http://127.0.0.1:$PLAIN/v1/chat/completions" -- chat >"$OUT/wrk-plain-$1-$4.txt" 2>&1 &
  wpid=$!
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" \
    "http://127.0.0.1:$2/v1/chat/completions" -- chat >"$OUT/wrk-$1-$4.txt" 2>&1 || die "wrk failed"
  wait "$wpid" || die "wrk failed"
  p1=$(ticks "$PLAIN_PID") o1=$(ticks "$3")
  read -r pr pb < <(requests_of "$OUT/wrk-plain-$1-$4.txt")
  read -r or ob < <(requests_of "$OUT/wrk-$1-$4.txt")
  ((pb == 0 && ob == 0)) || die "error answers in round $4 ($1): plain $pb, $1 $ob"
  python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); print(f'{($p1-$p0)/t/$pr*1e6:.2f} {($o1-$o0)/t/$or*1e6:.2f}')"
}

evalsha_calls() { redis-cli -p "$REDIS" info commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ {n+=$3} END {print n+0}'; }

fail=0
for other in keys redis; do
  port=$KEYS pid=$KEYS_PID
  [[ $other == redis ]] && port=$REDISGW pid=$REDIS_PID
  ratios=()
  calls0=$(evalsha_calls)
  for round in $(seq "$ROUNDS"); do
    read -r plain_us other_us < <(side_by_side "$other" "$port" "$pid" "$round")
    ratio=$(python3 -c "print(f'{$other_us / $plain_us:.3f}')")
    ratios+=("$ratio")
    log "  round $round: plain $plain_us µs/req, $other $other_us µs/req (x$ratio)"
  done
  med=$(printf '%s\n' "${ratios[@]}" | median)
  log "$other: gateway CPU per request x$med the plain route (median of $ROUNDS; rounds ${ratios[*]})"
  if [[ $other == keys ]]; then
    if python3 -c "import sys; sys.exit(0 if $med <= 1 + $TARGET_PCT / 100 else 1)"; then
      log "  target (at most +$TARGET_PCT%): met"
    else
      log "  target (at most +$TARGET_PCT%): MISSED"; fail=1
    fi
  else
    served=0
    for round in $(seq "$ROUNDS"); do
      read -r n _ < <(requests_of "$OUT/wrk-redis-$round.txt"); served=$((served + n))
    done
    calls=$(( $(evalsha_calls) - calls0 ))
    per=$(python3 -c "print(f'{$calls / $served:.3f}')")
    log "  Redis round trips on the request path: $calls scripts for $served requests = $per per request (target 1)"
    python3 -c "import sys; sys.exit(0 if abs($per - 1) < 0.01 else 1)" || { log "  MISSED"; fail=1; }
  fi
done

# PERF=1: a profile of the keyed gateway under load, top symbols to $OUT/perf-keys.txt.
if [[ ${PERF:-0} == 1 ]]; then
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$((SECS + 1))s" -s "$BENCH/wrk.lua" \
    "http://127.0.0.1:$KEYS/v1/chat/completions" -- chat >/dev/null 2>&1 &
  wpid=$!
  sleep 0.5
  perf record -F 2000 -g -p "$KEYS_PID" -o "$OUT/perf-keys.data" -- sleep "$SECS" >/dev/null 2>&1 || true
  wait "$wpid" || true
  perf report -i "$OUT/perf-keys.data" --no-children --percent-limit 1 --stdio 2>/dev/null |
    grep -v '^$' | head -80 >"$OUT/perf-keys.txt" || true
  log "profile of the keyed gateway: $OUT/perf-keys.txt"
fi

# Added latency at a fixed rate (open loop), plain vs Redis-limited, interleaved.
p50s_plain=() p50s_redis=()
for round in $(seq "$ROUNDS"); do
  for which in plain redis; do
    port=$PLAIN; [[ $which == redis ]] && port=$REDISGW
    taskset -c "$LOAD_CPU" "$OHA" --no-tui --output-format json --latency-correction -q "$RATE" \
      -z "${LAT_SECS}s" -c 8 -H "authorization: Bearer $KEY" "http://127.0.0.1:$port/v1/chat/completions" \
      >"$OUT/oha-$which-$round.json" 2>"$OUT/oha-$which-$round.err" || die "oha failed: $(cat "$OUT/oha-$which-$round.err")"
    p50=$(python3 -c "import json; d=json.load(open('$OUT/oha-$which-$round.json')); c=d.get('statusCodeDistribution') or {}; assert all(str(k).startswith('2') for k in c), c; print(f\"{d['latencyPercentiles']['p50']*1e6:.0f}\")") ||
      die "error answers at the fixed rate ($which)"
    if [[ $which == plain ]]; then p50s_plain+=("$p50"); else p50s_redis+=("$p50"); fi
  done
done
pp=$(printf '%s\n' "${p50s_plain[@]}" | median) rp=$(printf '%s\n' "${p50s_redis[@]}" | median)
log "p50 at $RATE req/s: plain $pp µs, Redis-limited $rp µs: +$((rp - pp)) µs (median of $ROUNDS rounds)"
exit $fail
