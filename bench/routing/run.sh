#!/usr/bin/env bash
# Routing-quality benchmark: Switchyard's endpoint-picking strategies (and PyPI vllm-router as
# an outside reference) in front of a simulated vLLM fleet. See bench/routing/README.md.
#
#   bench/routing/run.sh                      # default run (~15 min on a 2-core machine)
#   QUICK=1 bench/routing/run.sh              # smoke test (~2 min)
#   FULL=1 bench/routing/run.sh               # every config on every workload and rate
#
# Every run gets a fresh fleet (cold KV caches) and a fresh router. Results go to
# bench/routing/results/<timestamp>/ (git-ignored); report.py prints the tables and checks.
# Exit status: non-zero if a target is missed (TARGETS=report: printed only), a run did not
# start or failed, a run saw error answers, or vllm-router was asked for and could not run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

# ---- knobs -----------------------------------------------------------------------------------
QUICK="${QUICK:-0}"
FULL="${FULL:-0}"
WORKLOADS="${WORKLOADS:-shared-prefix realistic multi-turn no-sharing}"
# Main workload (shared-prefix): every config at every rate.
RATES="${RATES:-20 40 80}"
STRATEGIES="${STRATEGIES:-random least-request prefix-cache prefix-cache:2,least-request:1 least-kv-cache session-affinity}"
VLLM_ROUTER_POLICIES="${VLLM_ROUTER_POLICIES-round_robin cache_aware kv_aware}"
# Secondary workloads (multi-turn, no-sharing): a subset, at one rate, to keep the run short.
OTHER_RATES="${OTHER_RATES:-40}"
OTHER_STRATEGIES="${OTHER_STRATEGIES:-random least-request prefix-cache session-affinity}"
OTHER_VLLM_ROUTER_POLICIES="${OTHER_VLLM_ROUTER_POLICIES-round_robin cache_aware}"
# The realistic regime (workload `realistic`): a KV cache per pod that holds the whole working
# set, Zipf-popular prefixes, mixed prompt lengths. One rate, its own fleet size.
REAL_RATES="${REAL_RATES:-60}"
REAL_STRATEGIES="${REAL_STRATEGIES:-random least-request prefix-cache prefix-cache:2,least-request:1 least-kv-cache}"
REAL_VLLM_ROUTER_POLICIES="${REAL_VLLM_ROUTER_POLICIES-round_robin cache_aware}"
REAL_NUM_BLOCKS="${REAL_NUM_BLOCKS:-8192}"   # 131,072 tokens per pod (an A100 40GB holds ~150k for Llama-3.1-8B)
REAL_GROUPS="${REAL_GROUPS:-128}"
REAL_ZIPF="${REAL_ZIPF:-1.0}"
DURATION="${DURATION:-12}"
WARMUP="${WARMUP:-4}"
DRAIN="${DRAIN:-30}"
MAX_TOKENS="${MAX_TOKENS:-32}"
SEED="${SEED:-1}"
GROUPS_N="${GROUPS_N:-32}"          # shared-prefix groups
ZIPF="${ZIPF:-0}"                   # shared-prefix group popularity (0 = uniform)
THINK_MEAN="${THINK_MEAN:-1.0}"     # multi-turn: mean think time between turns, s (exponential)
# Fleet.
PODS="${PODS:-8}"
NUM_BLOCKS="${NUM_BLOCKS:-1024}"    # KV blocks per pod (x BLOCK_SIZE tokens); not for `realistic`
COST_MODEL="${COST_MODEL:-a100-llama8b}"  # vllm-fleet timing constants; `legacy` = the old model
BLOCK_SIZE="${BLOCK_SIZE:-16}"
MAX_NUM_SEQS="${MAX_NUM_SEQS:-64}"
MAX_BATCHED="${MAX_BATCHED:-2048}"
MAX_WAITING="${MAX_WAITING:-256}"
FLEET_EXTRA="${FLEET_EXTRA:-}"      # more vllm-fleet flags, e.g. "--prefill-us-per-token 80"
PREFIX_CACHE_YAML="${PREFIX_CACHE_YAML:-}"   # e.g. "{blockSize: 64}" for the gateway's prefixCache
NO_BUILD="${NO_BUILD:-0}"
VENV="${VENV:-$HERE/.venv}"
LOAD_CPU="${LOAD_CPU:-0}"
SERVER_CPU="${SERVER_CPU:-1}"
TARGETS="${TARGETS:-fail}"          # fail, or report: missed targets are printed, not failed on
ALLOW_STRAY="${ALLOW_STRAY:-0}"     # 1: warn instead of refusing when stray servers are found
HELPERS="$HERE/../helpers.py"

if [[ "$QUICK" == 1 ]]; then
  RATES="${QUICK_RATES:-20}"; DURATION=8; WARMUP=3
  STRATEGIES="random prefix-cache"; VLLM_ROUTER_POLICIES="${VLLM_ROUTER_POLICIES:+cache_aware}"
  OTHER_STRATEGIES="prefix-cache"; OTHER_VLLM_ROUTER_POLICIES=""
  REAL_RATES="${QUICK_REAL_RATES:-40}"; REAL_STRATEGIES="random prefix-cache"; REAL_VLLM_ROUTER_POLICIES=""
fi
if [[ "$FULL" == 1 ]]; then
  OTHER_RATES="$RATES"; OTHER_STRATEGIES="$STRATEGIES"; OTHER_VLLM_ROUTER_POLICIES="$VLLM_ROUTER_POLICIES"
  REAL_RATES="$RATES"; REAL_STRATEGIES="$STRATEGIES"; REAL_VLLM_ROUTER_POLICIES="$VLLM_ROUTER_POLICIES"
fi

SWITCHYARD="${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}"  # with NO_BUILD=1, any build
FLEET="${FLEET_BIN:-$ROOT/target/release/vllm-fleet}"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="${OUT:-$HERE/results/$STAMP}"
mkdir -p "$OUT/logs"
T0=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- pinning -----------------------------------------------------------------------------------
PIN_LOAD=(); PIN_SERVER=()
if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  PIN_LOAD=(taskset -c "$LOAD_CPU"); PIN_SERVER=(taskset -c "$SERVER_CPU")
  log "pinning: load generator on CPU $LOAD_CPU, router + fleet on CPU $SERVER_CPU"
else
  log "pinning: off (taskset missing or a single CPU)"
fi

# ---- process bookkeeping -----------------------------------------------------------------------
PGIDS=()
start_group() { # start_group LOGFILE CMD...   -> sets STARTED_PID (= its process group)
  local logf="$1"; shift
  setsid "$@" >"$logf" 2>&1 </dev/null &
  STARTED_PID=$!
  PGIDS+=("$STARTED_PID")
}
stop_group() {
  local pg="$1" i
  kill -TERM -- "-$pg" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 -- "-$pg" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pg" 2>/dev/null || true
  wait "$pg" 2>/dev/null || true
}
stop_all() {
  local pg
  for pg in "${PGIDS[@]:-}"; do [[ -n "$pg" ]] && stop_group "$pg"; done
  PGIDS=()
}
trap 'stop_all' EXIT
trap 'log "interrupted"; exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A run that could not be made is a failure, not a skip: report.py fails on every line here.
cell_failed() { # NAME WORKLOAD ROUTER STRATEGY RATE WHY
  log "FAILED: $1: $6"
  python3 - "$OUT/cell-failures.jsonl" "$@" <<'PY'
import json, sys
path, cell, wl, router, strat, rate, why = sys.argv[1:8]
with open(path, "a") as f:
    f.write(json.dumps({"cell": cell, "workload": wl, "router": router, "strategy": strat,
                        "rate": float(rate), "why": why}) + "\n")
PY
}

wait_http() { # wait_http URL SECONDS [jq-filter-that-must-be-true]
  local url="$1" secs="$2" filter="${3:-}" i body
  for i in $(seq 1 $((secs * 10))); do
    if body="$(curl -fsS -m 1 "$url" 2>/dev/null)"; then
      if [[ -z "$filter" ]] || jq -e "$filter" >/dev/null 2>&1 <<<"$body"; then return 0; fi
    fi
    sleep 0.1
  done
  return 1
}

# ---- build -------------------------------------------------------------------------------------
if [[ "$NO_BUILD" != 1 ]]; then
  log "building (cargo build --release -p switchyard -p switchyard-sim --bins)"
  cargo build --release -p switchyard -p switchyard-sim --bins
fi
[[ -x "$SWITCHYARD" && -x "$FLEET" ]] || { echo "missing $SWITCHYARD or $FLEET (build first)" >&2; exit 1; }

# ---- nothing stray on the measured CPUs ----------------------------------------------------------
# A gateway, fleet or router left over from an earlier run (or anyone's) would share the CPUs.
if ! python3 "$HELPERS" strays "$SERVER_CPU" "$LOAD_CPU"; then
  if [[ "$ALLOW_STRAY" == 1 ]]; then
    log "ALLOW_STRAY=1: going on anyway; the figures may be off"
  else
    echo "stray servers on CPU $SERVER_CPU/$LOAD_CPU (listed above); stop them, or ALLOW_STRAY=1" >&2
    exit 1
  fi
fi

# ---- venv --------------------------------------------------------------------------------------
VR_OK=1; VR_WHY=""
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]] || ! "$PY" -c 'import aiohttp' 2>/dev/null; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check aiohttp
fi
if [[ -n "$VLLM_ROUTER_POLICIES$OTHER_VLLM_ROUTER_POLICIES$REAL_VLLM_ROUTER_POLICIES" ]]; then
  if [[ ! -x "$VENV/bin/vllm-router" ]]; then
    log "installing vllm-router from PyPI into $VENV"
    if ! pip_err="$("$VENV/bin/pip" install -q --disable-pip-version-check vllm-router 2>&1)"; then
      VR_OK=0; VR_WHY="pip install vllm-router failed: $(tail -n 3 <<<"$pip_err" | tr '\n' ' ')"
    fi
  fi
  if [[ "$VR_OK" == 1 ]] && ! "$VENV/bin/vllm-router" --help >/dev/null 2>&1; then
    VR_OK=0; VR_WHY="vllm-router --help does not run"
  fi
  if [[ "$VR_OK" == 0 ]]; then
    log "vllm-router CANNOT RUN (the report will FAIL on it): $VR_WHY"
    echo "$VR_WHY" >"$OUT/vllm-router-skipped.txt"
  else
    "$VENV/bin/pip" show vllm-router 2>/dev/null | grep -i '^version' >"$OUT/vllm-router-version.txt" || true
  fi
fi

# ---- one run -----------------------------------------------------------------------------------
fleet_blocks() { # fleet_blocks WORKLOAD -> KV blocks per pod for that regime
  if [[ "$1" == realistic ]]; then echo "$REAL_NUM_BLOCKS"; else echo "$NUM_BLOCKS"; fi
}

start_fleet() { # start_fleet NAME WORKLOAD -> FLEET_PG, POD_ADDRS (array)
  local f="$OUT/logs/$1.fleet.out"
  start_group "$f" "${PIN_SERVER[@]}" "$FLEET" --pods "$PODS" --seed "$SEED" \
    --num-blocks "$(fleet_blocks "$2")" --block-size "$BLOCK_SIZE" --max-num-seqs "$MAX_NUM_SEQS" \
    --max-num-batched-tokens "$MAX_BATCHED" --max-waiting "$MAX_WAITING" \
    --cost-model "$COST_MODEL" $FLEET_EXTRA
  FLEET_PG=$STARTED_PID
  local i
  for i in $(seq 1 100); do
    [[ "$(grep -c '^pod-' "$f" 2>/dev/null || true)" -ge "$PODS" ]] && break
    kill -0 "$FLEET_PG" 2>/dev/null || { cat "$f" >&2; return 1; }
    sleep 0.1
  done
  mapfile -t POD_ADDRS < <(awk '/^pod-/{print $2}' "$f")
  [[ "${#POD_ADDRS[@]}" -eq "$PODS" ]] || { echo "fleet did not come up" >&2; cat "$f" >&2; return 1; }
  for a in "${POD_ADDRS[@]}"; do wait_http "http://$a/health" 10 || { echo "pod $a not healthy" >&2; return 1; }; done
}

start_gateway() { # start_gateway NAME STRATEGY -> ROUTER_PG ROUTER_URL STATS_URL
  local name="$1" strat="$2" gw admin stats eps cfg
  gw=$(free_port); admin=$(free_port); stats=$(free_port)
  python3 "$HELPERS" check-ports "$gw" "$admin" "$stats" || { echo "gateway ports in use" >&2; return 1; }
  eps=$(printf '"%s", ' "${POD_ADDRS[@]}"); eps="[${eps%, }]"
  cfg="$OUT/logs/$name.gateway.yaml"
  cat >"$cfg" <<EOF
config:
  adminAddr: 127.0.0.1:$admin
  statsAddr: 127.0.0.1:$stats
pools:
  - name: fleet
    endpoints: $eps
    strategy: "$strat"
    metrics: {interval: 200ms, timeout: 150ms}
$( [[ -n "$PREFIX_CACHE_YAML" ]] && echo "    prefixCache: $PREFIX_CACHE_YAML" )
binds:
  - port: $gw
    listeners:
      - routes:
          - backends:
              - pool: fleet
EOF
  "$SWITCHYARD" validate -f "$cfg" >"$OUT/logs/$name.validate.out" 2>&1 || { cat "$OUT/logs/$name.validate.out" >&2; return 1; }
  start_group "$OUT/logs/$name.gateway.out" "${PIN_SERVER[@]}" "$SWITCHYARD" -f "$cfg"
  ROUTER_PG=$STARTED_PID
  ROUTER_URL="http://127.0.0.1:$gw"; STATS_URL="http://127.0.0.1:$stats/metrics"
  wait_http "http://127.0.0.1:$admin/healthz/ready" 30 || { echo "gateway not ready" >&2; tail -20 "$OUT/logs/$name.gateway.out" >&2; return 1; }
  sleep 0.5   # let the first metrics scrape land (least-kv-cache reads it)
}

start_vllm_router() { # start_vllm_router NAME POLICY -> ROUTER_PG ROUTER_URL
  local name="$1" policy="$2" port prom urls=()
  port=$(free_port); prom=$(free_port)
  python3 "$HELPERS" check-ports "$port" "$prom" || { echo "vllm-router ports in use" >&2; return 1; }
  for a in "${POD_ADDRS[@]}"; do urls+=("http://$a"); done
  # No --kv-event-source: the simulator publishes no ZMQ KV events, so kv_aware runs without
  # them (it renders the prompt on every worker and falls back to load; see README caveats).
  start_group "$OUT/logs/$name.router.out" "${PIN_SERVER[@]}" "$VENV/bin/vllm-router" \
    --host 127.0.0.1 --port "$port" --prometheus-port "$prom" --worker-urls "${urls[@]}" \
    --policy "$policy" --disable-retries --disable-circuit-breaker \
    --health-check-interval-secs 1 --log-level warning
  ROUTER_PG=$STARTED_PID; ROUTER_URL="http://127.0.0.1:$port"; STATS_URL=""
  wait_http "$ROUTER_URL/readiness" 60 ".healthy_workers == $PODS" || {
    echo "vllm-router ($policy) not ready" >&2; tail -20 "$OUT/logs/$name.router.out" >&2; return 1; }
}

run_one() { # run_one WORKLOAD ROUTER STRATEGY RATE
  local wl="$1" router="$2" strat="$3" rate="$4" name
  name="$wl.$router.$(tr ':,' '_-' <<<"$strat").r$rate"
  start_fleet "$name" "$wl" || { cell_failed "$name" "$wl" "$router" "$strat" "$rate" "the fleet did not start (logs/$name.fleet.out)"; stop_all; return 0; }
  if [[ "$router" == gateway ]]; then
    start_gateway "$name" "$strat" || { cell_failed "$name" "$wl" "$router" "$strat" "$rate" "the gateway did not start (logs/$name.gateway.out)"; stop_all; return 0; }
  else
    start_vllm_router "$name" "$strat" || { cell_failed "$name" "$wl" "$router" "$strat" "$rate" "vllm-router did not start (logs/$name.router.out)"; stop_all; return 0; }
  fi
  local stats_args=()
  [[ -n "$STATS_URL" ]] && stats_args=(--stats-url "$STATS_URL")
  "${PIN_LOAD[@]}" "$PY" "$HERE/load.py" --url "$ROUTER_URL" --workload "$wl" --rate "$rate" \
    --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" --seed "$SEED" \
    --max-tokens "$MAX_TOKENS" --groups "$GROUPS_N" --zipf "$ZIPF" --think-mean "$THINK_MEAN" \
    --realistic-groups "$REAL_GROUPS" --realistic-zipf "$REAL_ZIPF" \
    --router "$router" --strategy "$strat" "${stats_args[@]}" \
    --out "$OUT/$name.json" --raw "$OUT/logs/$name.requests.jsonl" \
    || cell_failed "$name" "$wl" "$router" "$strat" "$rate" "load.py failed"
  stop_all
}

# ---- the matrix --------------------------------------------------------------------------------
cat >"$OUT/params.txt" <<EOF
date=$STAMP
workloads=$WORKLOADS
rates=$RATES other_rates=$OTHER_RATES real_rates=$REAL_RATES
strategies=$STRATEGIES
other_strategies=$OTHER_STRATEGIES
real_strategies=$REAL_STRATEGIES
vllm_router_policies=$VLLM_ROUTER_POLICIES other_vllm_router_policies=$OTHER_VLLM_ROUTER_POLICIES real_vllm_router_policies=$REAL_VLLM_ROUTER_POLICIES
duration=$DURATION warmup=$WARMUP max_tokens=$MAX_TOKENS seed=$SEED groups=$GROUPS_N zipf=$ZIPF think_mean=${THINK_MEAN}s
realistic: groups=$REAL_GROUPS zipf=$REAL_ZIPF prompts 100-3000 words + questions 10-400 words (log-uniform) num_blocks=$REAL_NUM_BLOCKS ($((REAL_NUM_BLOCKS * BLOCK_SIZE)) tokens per pod)
fleet: pods=$PODS cost_model=$COST_MODEL num_blocks=$NUM_BLOCKS ($((NUM_BLOCKS * BLOCK_SIZE)) tokens per pod) block_size=$BLOCK_SIZE max_num_seqs=$MAX_NUM_SEQS max_num_batched_tokens=$MAX_BATCHED max_waiting=$MAX_WAITING extra=$FLEET_EXTRA
gateway prefixCache=${PREFIX_CACHE_YAML:-default}
pinning: load=${PIN_LOAD[*]:-none} servers=${PIN_SERVER[*]:-none}
binaries: switchyard $(date -r "$SWITCHYARD" +%F_%T), vllm-fleet $(date -r "$FLEET" +%F_%T) (mtime; the tree may have changed since)
git_at_run=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +dirty)
EOF
log "results -> $OUT"
sed 's/^/  /' "$OUT/params.txt" >&2

for wl in $WORKLOADS; do
  if [[ "$wl" == shared-prefix ]]; then
    rates="$RATES"; strats="$STRATEGIES"; pols="$VLLM_ROUTER_POLICIES"
  elif [[ "$wl" == realistic ]]; then
    rates="$REAL_RATES"; strats="$REAL_STRATEGIES"; pols="$REAL_VLLM_ROUTER_POLICIES"
  else
    rates="$OTHER_RATES"; strats="$OTHER_STRATEGIES"; pols="$OTHER_VLLM_ROUTER_POLICIES"
  fi
  log "workload $wl: rates [$rates], gateway [$strats], vllm-router [$pols]"
  for rate in $rates; do
    for s in $strats; do run_one "$wl" gateway "$s" "$rate"; done
    for p in $pols; do
      if [[ "$VR_OK" == 1 ]]; then
        run_one "$wl" vllm-router "$p" "$rate"
      else # each reference run that was asked for and cannot be made is a failure
        cell_failed "$wl.vllm-router.$p.r$rate" "$wl" vllm-router "$p" "$rate" "$VR_WHY"
      fi
    done
  done
done

T1=$(date +%s)
echo "wall_seconds=$((T1 - T0))" >>"$OUT/params.txt"
status=0
TARGETS="$TARGETS" "$PY" "$HERE/report.py" "$OUT" | tee "$OUT/report.txt" || status=$?
log "done in $((T1 - T0)) s; results in $OUT"
if ((status)); then log "FAILED (exit $status): see the FAIL lines in $OUT/report.txt"; fi
exit "$status"
