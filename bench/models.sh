#!/usr/bin/env bash
# Prices routing by model against routing by path, in one run, side by side: two gateways
# with a table of MODELS (100) `ai` routes each — one matched by `model` in the body (all on
# /v1), one by path prefix (/m0 ... /m99) — both saturated at once on the server CPU, each by
# its own wrk on the load CPU, calling the same route near the end of the table. Target: the
# model table costs at most TARGET_US (2) µs of gateway CPU per request more.
#
# Exits non-zero when the target is missed, an answer is an error, or a tool cannot run.
#
#   bench/models.sh                 # ROUNDS=3 SECS=5 CONNS=32 MODELS=100
#   NO_BUILD=1 bench/models.sh      # use target/release/switchyard as it is
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out/models
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/switchyard}
HELPERS=$BENCH/helpers.py
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-32}
MODELS=${MODELS:-100}
TARGET_US=${TARGET_US:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PICK=$((MODELS * 9 / 10))

NAME="models bench"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

for tool in nginx wrk taskset python3 curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install nginx wrk)"
done

rm -rf "$OUT" && mkdir -p "$OUT"
read -r UP BYPATH BYMODEL A1 A2 < <(python3 "$HELPERS" freeports 5)
python3 "$HELPERS" check-ports "$UP" "$BYPATH" "$BYMODEL" "$A1" "$A2" ||
  die "ports in use (a stray process from an earlier run?)"

if [[ ${NO_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p switchyard) >&2 || die "cargo build failed"
fi
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# The provider: nginx answering a fixed chat completion, on the server CPU.
fixed_upstream_conf "$UP" '{"id":"chatcmpl-bench","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}'
taskset -c "$SERVER_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" &
PIDS+=("$!")

# Starts a gateway over a route table made by ROUTE_OF (one YAML route per index); its PID is
# left in GW_STARTED (a $(...) subshell would keep it from the exit trap).
gateway() { # NAME PORT ADMIN ROUTE_OF
  {
    printf 'config:\n  adminAddr: 127.0.0.1:%s\nbinds:\n- port: %s\n  address: 127.0.0.1\n  listeners:\n  - routes:\n' "$3" "$2"
    for i in $(seq 0 $((MODELS - 1))); do "$4" "$i"; done
  } >"$OUT/$1.yaml"
  NO_COLOR=1 taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$OUT/$1.yaml" >"$OUT/$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  python3 "$HELPERS" wait-ready-now "127.0.0.1:$3" || die "gateway $1 did not become ready; see $OUT/$1.log"
  GW_STARTED=$pid
}
backend() { printf "      backends: [{ai: {name: d%s, hostOverride: '127.0.0.1:%s', provider: {openAI: {}}}}]\n" "$1" "$UP"; }
by_path() { printf '    - name: r%s\n      matches: [{path: {pathPrefix: /m%s/}}]\n' "$1" "$1"; backend "$1"; }
by_model() { printf '    - name: r%s\n      matches: [{path: {pathPrefix: /v1}, model: {exact: model-%s}}]\n' "$1" "$1"; backend "$1"; }

gateway bypath "$BYPATH" "$A1" by_path
PATH_PID=$GW_STARTED
gateway bymodel "$BYMODEL" "$A2" by_model
MODEL_PID=$GW_STARTED

PATH_URL="http://127.0.0.1:$BYPATH/m$PICK/v1/chat/completions"
MODEL_URL="http://127.0.0.1:$BYMODEL/v1/chat/completions"
body() { printf '{"model":"%s","messages":[{"role":"user","content":"hi"}]}' "$1"; }
for url in "$PATH_URL" "$MODEL_URL"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$(body "model-$PICK")" "$url")
  [[ $code == 200 ]] || die "$url answered $code"
done
code=$(curl -s -o "$OUT/unknown.json" -w '%{http_code}' -H 'content-type: application/json' -d "$(body nope)" "$MODEL_URL")
[[ $code == 404 ]] && grep -q model_not_found "$OUT/unknown.json" || die "an unknown model was answered $code, not 404 model_not_found"

export WRK_MODEL="model-$PICK"

diffs=() paths=() models=()
for round in $(seq "$ROUNDS"); do
  p0=$(ticks "$PATH_PID") m0=$(ticks "$MODEL_PID")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" "$PATH_URL" -- chat \
    >"$OUT/wrk-path-$round.txt" 2>&1 &
  wpid=$!
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" "$MODEL_URL" -- chat \
    >"$OUT/wrk-model-$round.txt" 2>&1 || die "wrk failed"
  wait "$wpid" || die "wrk failed"
  p1=$(ticks "$PATH_PID") m1=$(ticks "$MODEL_PID")
  read -r pr pb < <(requests_of "$OUT/wrk-path-$round.txt")
  read -r mr mb < <(requests_of "$OUT/wrk-model-$round.txt")
  ((pb == 0 && mb == 0)) || die "error answers in round $round: path $pb, model $mb"
  read -r pu mu d < <(python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); p=($p1-$p0)/t/$pr*1e6; m=($m1-$m0)/t/$mr*1e6; print(f'{p:.2f} {m:.2f} {m-p:.2f}')")
  paths+=("$pu") models+=("$mu") diffs+=("$d")
  log "  round $round: by path $pu µs/req ($pr req), by model $mu µs/req ($mr req): +$d µs"
done
med=$(printf '%s\n' "${diffs[@]}" | median)
log "routing by model on $MODELS routes: +$med µs of gateway CPU per request over routing by path (median of $ROUNDS; rounds ${diffs[*]}; by path $(printf '%s\n' "${paths[@]}" | median) µs, by model $(printf '%s\n' "${models[@]}" | median) µs)"
if python3 -c "import sys; sys.exit(0 if $med <= $TARGET_US else 1)"; then
  log "  target (at most +$TARGET_US µs): met"
else
  log "  target (at most +$TARGET_US µs): MISSED"
  exit 1
fi
