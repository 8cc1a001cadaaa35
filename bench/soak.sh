#!/usr/bin/env bash
# bench/soak.sh: the long form of crates/switchyard/tests/reliability.rs. A steady mixed load
# (plain proxying, chat completions JSON and streamed, translated streams, MCP tool calls on the
# reference server over stdio, pool picks over two vLLM simulators) well below saturation
# through the release gateway for DURATION, with the config rewritten
# every RELOAD_EVERY (an invalid config, then the next valid generation) and the `east`
# upstream killed and restarted on its port every RESTART_EVERY; RSS, descriptors and tokio
# tasks sampled every SAMPLE_EVERY into bench/out/soak/samples.csv.
#
#   bench/soak.sh                  30 minutes
#   DURATION=5m bench/soak.sh      a shorter run (s, m or h; plain numbers are seconds)
#
# Knobs (environment): DURATION WARMUP SEGMENT SAMPLE_EVERY RELOAD_EVERY RESTART_EVERY DOWN_FOR
# CONNS PAUSE_MS ITL_MS LOAD_CPU SERVER_CPU RSS_LIMIT_PCT QUIET_SECS NO_BUILD=1 BIN_DIR. See
# bench/README.md ("Soak").
# Exit status 0 only if: RSS after warm-up grew less than RSS_LIMIT_PCT percent, descriptors
# came back to their count before the load once it stopped, no request failed outside the
# minutes with an upstream restart (and in those, at most one per connection), no answer was
# malformed and no client connection broke, every valid config was applied and every invalid
# one refused. Loopback only; everything it starts is stopped on exit.
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT=$BENCH/out/soak
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=${BIN_DIR:-$TARGET_DIR/release}            # e.g. target/debug with NO_BUILD=1
GATEWAY_BIN=$BIN_DIR/switchyard
SIM_BIN=$BIN_DIR/switchyard-sim
FLEET_BIN=$BIN_DIR/vllm-fleet
# The MCP reference server (npm install --prefix crates/switchyard/tests/mcp).
EVERYTHING=$ROOT/crates/switchyard/tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js

seconds() { # 90, 90s, 5m, 1h -> seconds
  local v=$1
  case $v in
    *h) echo $((${v%h} * 3600)) ;;
    *m) echo $((${v%m} * 60)) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}

DURATION=$(seconds "${DURATION:-30m}")
# Warm-up: a fifth of the run, between 30 s and 5 minutes.
_warm=$((DURATION / 5))
((_warm < 30)) && _warm=30
((_warm > 300)) && _warm=300
WARMUP=$(seconds "${WARMUP:-$_warm}")
SEGMENT=$(seconds "${SEGMENT:-60}")             # one wrk run per mode per segment
SAMPLE_EVERY=$(seconds "${SAMPLE_EVERY:-10}")
RELOAD_EVERY=$(seconds "${RELOAD_EVERY:-60}")
RESTART_EVERY=$(seconds "${RESTART_EVERY:-180}")
DOWN_FOR=$(seconds "${DOWN_FOR:-3}")             # how long the killed upstream stays down
CONNS=${CONNS:-4}                                # connections per mode (6 modes)
PAUSE_MS=${PAUSE_MS:-20}                         # each connection's pause between requests
ITL_MS=${ITL_MS:-2}                              # simulators' delay between streamed tokens
LOAD_CPU=${LOAD_CPU:-0}                          # wrk runs here ...
SERVER_CPU=${SERVER_CPU:-1}                      # ... the gateway and the simulators here
RSS_LIMIT_PCT=${RSS_LIMIT_PCT:-5}
QUIET_SECS=${QUIET_SECS:-30}                     # longest wait for descriptors after the load
MODES=(plain chat stream translated mcp pool)

case "${1:-}" in
  -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac
((WARMUP < DURATION)) || { echo "WARMUP ($WARMUP s) must be shorter than DURATION ($DURATION s)" >&2; exit 2; }

if [[ -t 2 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD= PLAIN=; fi
log() { printf '%s==>%s [%s] %s\n' "$BOLD" "$PLAIN" "$(date +%T)" "$*" >&2; }
die() { printf 'soak: %s\n' "$*" >&2; exit 1; }

# Every process we start; cleanup() stops them by PID, on any exit.
PIDS=()
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

command -v wrk >/dev/null || die "wrk is needed (Debian package wrk; bench/run.sh installs it)"
command -v taskset >/dev/null || die "taskset is needed (util-linux)"
command -v curl >/dev/null || die "curl is needed"
command -v node >/dev/null || die "node is needed (the MCP reference server)"
[[ -f $EVERYTHING ]] || die "the MCP reference server is missing: npm install --prefix crates/switchyard/tests/mcp"

if [[ ${NO_BUILD:-0} == 1 ]]; then
  [[ -x $GATEWAY_BIN && -x $SIM_BIN && -x $FLEET_BIN ]] || die "NO_BUILD=1 but $GATEWAY_BIN, $SIM_BIN or $FLEET_BIN is missing"
else
  log "building switchyard and switchyard-sim (release)"
  (cd "$ROOT" && cargo build --release -p switchyard -p switchyard-sim) || die "cargo build failed"
fi

rm -rf "$OUT"
mkdir -p "$OUT/wrk"

free_ports() { # N -> N distinct free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r PORT ADMIN STATS EAST WEST ANTH <<<"$(free_ports 6)"

# ---------------------------------------------------------------------------------------------
# Upstreams: `east` (OpenAI simulator, restarted by the chaos), `west` (OpenAI and Anthropic).

EAST_PID=
start_east() {
  taskset -c "$SERVER_CPU" "$SIM_BIN" --openai "127.0.0.1:$EAST" --itl "$ITL_MS" \
    >>"$OUT/east.log" 2>&1 &
  EAST_PID=$!
  PIDS+=("$EAST_PID")
  wait_port "$EAST" || die "the east simulator did not start (see $OUT/east.log)"
}
wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
taskset -c "$SERVER_CPU" "$SIM_BIN" --openai "127.0.0.1:$WEST" --anthropic "127.0.0.1:$ANTH" \
  --itl "$ITL_MS" >"$OUT/west.log" 2>&1 &
PIDS+=($!)
wait_port "$WEST" && wait_port "$ANTH" || die "the west simulator did not start"
start_east
# Two vLLM pods for the pool (ephemeral ports, printed as `pod-<i> <addr>`).
taskset -c "$SERVER_CPU" "$FLEET_BIN" --pods 2 --step-base-us 200 >"$OUT/fleet.log" 2>&1 &
PIDS+=($!)
for i in $(seq 100); do
  (($(grep -c '^pod-' "$OUT/fleet.log") == 2)) && break
  sleep 0.1
done
read -r POD0 POD1 <<<"$(awk '/^pod-/ { printf "%s ", $2 }' "$OUT/fleet.log")"
[[ -n $POD0 && -n ${POD1:-} ]] || die "the vLLM pods did not start (see $OUT/fleet.log)"

# ---------------------------------------------------------------------------------------------
# The gateway: generation N of the config sets `x-generation: gen-N` on every route; even
# generations have an `/extra` route, odd ones do not. The invalid config misspells a key.

CONFIG=$OUT/gateway.yaml
config() { # GENERATION
  local n=$1 extra=
  if ((n % 2 == 0)); then
    extra="    - name: extra
      matches: [{path: {exact: /extra}}]
      policies:
        directResponse: {status: 200, body: extra-$n}
"
  fi
  cat <<EOF
config:
  adminAddr: 127.0.0.1:$ADMIN
  statsAddr: 127.0.0.1:$STATS
  limits: {upstreamPoolIdleTimeout: 5s}
pools:
- name: fleet
  endpoints: ["$POD0", "$POD1"]
  strategy: least-request
  metrics: {enabled: false}
binds:
- port: $PORT
  address: 127.0.0.1
  listeners:
  - routes:
${extra}    - name: plain
      matches: [{path: {pathPrefix: /plain}}]
      policies:
        responseHeaderModifier: {set: {x-generation: gen-$n}}
      backends:
      - host: 127.0.0.1:$EAST
      - host: 127.0.0.1:$WEST
    - name: translated
      matches: [{path: {pathPrefix: /v1}, headers: [{name: x-target, value: {exact: anthropic}}]}]
      policies:
        responseHeaderModifier: {set: {x-generation: gen-$n}}
      backends:
      - ai: {name: claude, hostOverride: '127.0.0.1:$ANTH', provider: {anthropic: {}}, policies: {ai: {modelAliases: {'*': claude-sim-1}}}}
    - name: chat
      matches: [{path: {pathPrefix: /v1}}]
      policies:
        responseHeaderModifier: {set: {x-generation: gen-$n}}
        failover: {on: [connect, timeout, serverError], circuit: {failures: 3, openFor: 2s}}
      backends:
      - ai: {name: east, hostOverride: '127.0.0.1:$EAST', provider: {openAI: {}}}
      - ai: {name: west, hostOverride: '127.0.0.1:$WEST', provider: {openAI: {}}}
    - name: pool
      matches: [{path: {pathPrefix: /pool}}]
      policies:
        responseHeaderModifier: {set: {x-generation: gen-$n}}
        urlRewrite: {path: {prefix: /}}
      backends: [{pool: fleet}]
    - name: mcp
      matches: [{path: {exact: /mcp}}]
      policies:
        responseHeaderModifier: {set: {x-generation: gen-$n}}
      backends:
      - mcp:
          sessionKey: soak-session-key-0123456789abcdef
          targets:
          - name: everything
            stdio: {cmd: node, args: ["$EVERYTHING", "stdio"]}
EOF
}
write_config() { # TEXT: written aside, then renamed over the file (as editors and Kubernetes do)
  printf '%s' "$1" >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
}
GEN=0
write_config "$(config 0)"

taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$CONFIG" >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
for i in $(seq 200); do
  curl -fsS "http://127.0.0.1:$ADMIN/healthz/ready" >/dev/null 2>&1 && break
  kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited (see $OUT/gateway.log)"
  sleep 0.05
done
curl -fsS "http://127.0.0.1:$ADMIN/healthz/ready" >/dev/null || die "the gateway is not ready"

# One MCP session for every tool call (sealed with the session key: it outlives reloads).
MCP_SESSION=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$PORT/mcp" \
  -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  --data '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"soak","version":"1"}}}' |
  tr -d '\r' | awk -F': ' 'tolower($1) == "mcp-session-id" { print $2 }')
[[ -n $MCP_SESSION ]] || die "MCP initialize gave no session id"
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/mcp" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' -H "mcp-session-id: $MCP_SESSION" \
  -H 'mcp-protocol-version: 2025-06-18' --data '{"jsonrpc":"2.0","method":"notifications/initialized"}' ||
  die "MCP notifications/initialized failed"

metrics() { curl -fsS --max-time 5 "http://127.0.0.1:$STATS/metrics" || true; }
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$GW_PID/status"; }
fd_count() { ls "/proc/$GW_PID/fd" | wc -l; }

# Smoke: each mode answers once.
for mode in "${MODES[@]}"; do
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c1 -d1s --timeout 10s -s "$BENCH/soak.lua" \
    "http://127.0.0.1:$PORT" -- "$mode" 100 "$MCP_SESSION" | grep '^WRKJSON' | sed 's/^WRKJSON //')
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["requests"] > 0 and r["non2xx"] + r["body_errors"] + r["bad"] + r["err_connect"] + r["err_read"] == 0 else 1)' "$out" \
    || die "smoke test of $mode failed: $out"
done
# The smoke test's upstream connections are idle in the pool for 5 s; the baseline is after.
sleep 7
BASE_FDS=$(fd_count)
BASE_RSS=$(rss_kb)
log "gateway pid $GW_PID on 127.0.0.1:$PORT; upstreams east $EAST, west $WEST, anthropic $ANTH, pods $POD0 $POD1"
log "$((DURATION / 60))m$((DURATION % 60))s of load (warm-up ${WARMUP}s), ${#MODES[@]} modes x $CONNS connections, ${PAUSE_MS} ms pauses; reload every ${RELOAD_EVERY}s, east restarted every ${RESTART_EVERY}s (down ${DOWN_FOR}s)"
log "before the load: RSS ${BASE_RSS} kB, ${BASE_FDS} descriptors"

# ---------------------------------------------------------------------------------------------
# The run: segments of SEGMENT seconds (one wrk per mode), a 1 s tick for samples, reloads
# and restarts.

CSV=$OUT/samples.csv
echo "elapsed_s,phase,rss_kb,fds,tasks,downstream_open,requests_total,reloads_ok,reloads_refused,failovers" >"$CSV"
sample() { # PHASE
  local m
  m=$(metrics)
  local get='BEGIN { s = 0 } index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") && (l == "" || index($0, l)) { s += $NF } END { printf "%d", s }'
  printf '%d,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$(($(date +%s) - T0))" "$1" "$(rss_kb)" "$(fd_count)" \
    "$(awk -v n=switchyard_runtime_alive_tasks -v l= "$get" <<<"$m")" \
    "$(awk -v n=switchyard_downstream_connections_open -v l= "$get" <<<"$m")" \
    "$(awk -v n=switchyard_requests_total -v l= "$get" <<<"$m")" \
    "$(awk -v n=switchyard_config_reloads_total -v l='outcome="success"' "$get" <<<"$m")" \
    "$(awk -v n=switchyard_config_reloads_total -v l='outcome="failure"' "$get" <<<"$m")" \
    "$(awk -v n=switchyard_failovers_total -v l= "$get" <<<"$m")" >>"$CSV"
}

SEG=0
SEG_PIDS=()
SEG_CHAOS=0
declare -a SEG_LOG=()
start_segment() { # SECONDS
  local mode
  SEG=$((SEG + 1))
  SEG_PIDS=()
  SEG_CHAOS=0
  for mode in "${MODES[@]}"; do
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$1"s --timeout 10s -s "$BENCH/soak.lua" \
      "http://127.0.0.1:$PORT" -- "$mode" "$PAUSE_MS" "$MCP_SESSION" >"$OUT/wrk/seg$SEG-$mode.txt" 2>&1 &
    SEG_PIDS+=($!)
    PIDS+=($!)
  done
}
segment_running() {
  local pid
  for pid in "${SEG_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}
finish_segment() {
  local pid
  for pid in "${SEG_PIDS[@]}"; do wait "$pid" || die "wrk failed in segment $SEG (see $OUT/wrk/)"; done
  SEG_LOG+=("$SEG $SEG_CHAOS")
}

VALID=1 INVALID=0 RESTARTS=0
RELOAD_STEP=
T0=$(date +%s)
END=$((T0 + DURATION))
NEXT_SAMPLE=$T0
NEXT_RELOAD=$((T0 + RELOAD_EVERY))
NEXT_RESTART=$((T0 + RESTART_EVERY))
RESTART_AT=
WARM_SAMPLED=0
start_segment "$((SEGMENT < DURATION ? SEGMENT : DURATION))"
while :; do
  now=$(date +%s)
  if ! segment_running; then
    finish_segment
    ((now < END)) || break
    left=$((END - now))
    start_segment "$((SEGMENT < left ? SEGMENT : left))"
  fi
  if ((now >= NEXT_SAMPLE)); then
    if ((now - T0 < WARMUP)); then sample warmup; else sample load; fi
    NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE_EVERY))
  fi
  # A reload is two writes 2 s apart: an invalid config (refused), then the next generation.
  if ((now >= NEXT_RELOAD && now < END - 5)); then
    write_config "$(config "$GEN" | sed 's/responseHeaderModifier/responseHeaderModifer/')"
    INVALID=$((INVALID + 1))
    RELOAD_STEP=$((now + 2))
    NEXT_RELOAD=$((NEXT_RELOAD + RELOAD_EVERY))
  fi
  if [[ -n $RELOAD_STEP ]] && ((now >= RELOAD_STEP)); then
    GEN=$((GEN + 1))
    write_config "$(config "$GEN")"
    VALID=$((VALID + 1))
    RELOAD_STEP=
  fi
  if ((now >= NEXT_RESTART && now < END - DOWN_FOR - 5)); then
    log "killing east (pid $EAST_PID) for ${DOWN_FOR}s"
    kill -KILL "$EAST_PID" 2>/dev/null || true
    wait "$EAST_PID" 2>/dev/null || true
    SEG_CHAOS=1
    RESTART_AT=$((now + DOWN_FOR))
    NEXT_RESTART=$((NEXT_RESTART + RESTART_EVERY))
  fi
  if [[ -n $RESTART_AT ]] && ((now >= RESTART_AT)); then
    start_east
    RESTARTS=$((RESTARTS + 1))
    RESTART_AT=
  fi
  sleep 1
done
[[ -n $RESTART_AT ]] && start_east
sample load
LOAD_END=$(date +%s)

# After the load: client connections close, idle upstream connections are dropped after the
# pool's 5 s idle timeout; descriptors must come back to their count before the load.
QUIET_FDS=$(fd_count)
for i in $(seq $((QUIET_SECS * 2))); do
  QUIET_FDS=$(fd_count)
  ((QUIET_FDS <= BASE_FDS)) && break
  sleep 0.5
done
sleep 1
sample after
QUIET_FDS=$(fd_count)
QUIET_RSS=$(rss_kb)

# ---------------------------------------------------------------------------------------------
# Summary.

python3 - "$OUT" "$CSV" "$WARMUP" "$RSS_LIMIT_PCT" "$BASE_FDS" "$QUIET_FDS" "$BASE_RSS" \
  "$QUIET_RSS" "$CONNS" "${#MODES[@]}" "$VALID" "$INVALID" "$RESTARTS" "${SEG_LOG[@]}" <<'EOF' | tee "$OUT/summary.txt"
import csv, glob, json, os, sys
out, path, warmup, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
base_fds, quiet_fds, base_rss, quiet_rss = map(int, sys.argv[5:9])
conns, modes, valid, invalid, restarts = map(int, sys.argv[9:14])
segs = [tuple(map(int, s.split())) for s in sys.argv[14:]]
rows = list(csv.DictReader(open(path)))
load = [r for r in rows if r["phase"] == "load"]
fails = []
warm = load[0] if load else None
end = load[-1] if load else None
if warm is None:
    fails.append("no sample after the warm-up (DURATION too short?)")
print("samples (every row in %s):" % path)
print("  %8s %8s %6s %6s %10s" % ("elapsed", "rss_kb", "fds", "tasks", "requests"))
step = max(1, len(rows) // 40)
for i, r in enumerate(rows):
    if i % step == 0 or i == len(rows) - 1 or r is warm:
        print("  %7ss %8s %6s %6s %10s  %s" % (r["elapsed_s"], r["rss_kb"], r["fds"], r["tasks"], r["requests_total"], r["phase"]))
if warm:
    w, e = int(warm["rss_kb"]), int(end["rss_kb"])
    peak = max(int(r["rss_kb"]) for r in load)
    growth = (e - w) * 100.0 / w
    print(f"RSS: {base_rss} kB before the load, {w} kB after the warm-up ({warm['elapsed_s']} s), "
          f"{e} kB at the end of the load (peak {peak} kB), {quiet_rss} kB after it: "
          f"{growth:+.2f}% after warm-up (limit {limit}%)")
    if growth > limit:
        fails.append(f"RSS grew {growth:.2f}% after warm-up")
    tw, te = int(warm["tasks"]), int(end["tasks"])
    print(f"tokio tasks: {tw} after warm-up, {te} at the end, {rows[-1]['tasks']} after the load")
print(f"descriptors: {base_fds} before the load, {end['fds'] if end else '?'} at the end of it, {quiet_fds} after it")
if quiet_fds > base_fds:
    fails.append(f"descriptors did not come back: {base_fds} before, {quiet_fds} after the load")
tot = {}
chaos_fail = calm_fail = 0
for seg, chaos in segs:
    seg_fail = 0
    for f in glob.glob(os.path.join(out, "wrk", f"seg{seg}-*.txt")):
        line = [l for l in open(f) if l.startswith("WRKJSON ")]
        if not line:
            fails.append(f"no wrk result in {f}")
            continue
        r = json.loads(line[0][8:])
        r["mode"] = os.path.basename(f)[:-4].split("-", 1)[1]  # wrk's done() has no script args
        m = tot.setdefault(r["mode"], {})
        for k, v in r.items():
            if k != "mode" and not k.startswith("lat") and k != "duration_us":
                m[k] = m.get(k, 0) + v
        if r["bad"]:
            fails.append(f"segment {seg} {r['mode']}: {r['bad']} malformed answers")
        sock = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
        if sock:
            fails.append(f"segment {seg} {r['mode']}: {sock} socket errors (connect {r['err_connect']}, read {r['err_read']}, write {r['err_write']}, timeout {r['err_timeout']})")
        seg_fail += r["non2xx"] + r["body_errors"]
    if chaos:
        chaos_fail += seg_fail
        if seg_fail > conns * modes:
            fails.append(f"segment {seg} (upstream restart): {seg_fail} failed requests, more than the {conns * modes} connections")
    else:
        calm_fail += seg_fail
        if seg_fail:
            fails.append(f"segment {seg} (no restart): {seg_fail} failed requests")
print("requests by mode:")
for mode, m in sorted(tot.items()):
    print(f"  {mode:10s} {m['requests']:8d} requests, non-2xx {m['non2xx']}, error events/bodies {m['body_errors']}, "
          f"malformed {m['bad']}, socket errors {m['err_connect'] + m['err_read'] + m['err_write'] + m['err_timeout']}")
print(f"failed requests: {calm_fail} in minutes without a restart, {chaos_fail} in minutes with one ({restarts} restarts of east)")
last = rows[-1]
ok, refused = int(last["reloads_ok"]), int(last["reloads_refused"])
print(f"reloads: {valid - 1} valid configs written, {ok} applied; {invalid} invalid, {refused} refused")
if ok != valid - 1 or refused != invalid:
    fails.append(f"reloads: {ok} applied of {valid - 1}, {refused} refused of {invalid}")
if fails:
    for f in fails:
        print("FAIL", f)
    sys.exit(1)
print("PASS")
EOF
status=${PIPESTATUS[0]}
# The config in force is the last generation.
got=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$PORT/plain/v1/models" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-generation" { print $2 }')
if [[ $got != "gen-$GEN" ]]; then
  echo "FAIL the last generation gen-$GEN is not served (x-generation: $got)" | tee -a "$OUT/summary.txt"
  status=1
fi
exit "$status"
