#!/usr/bin/env bash
# Prices response guardrails on a streamed answer, in one run, side by side: two gateways (the
# same binary), one with a route masking with every built-in detector (email, phone,
# creditCard, ssn, iban, ip, secrets), one with the same route unguarded, both in front of
# bench/tokstream.c (an OpenAI chat stream of TOKENS one-token chunks, each its own write).
#
#   cpu   both gateways saturated at once on the server CPU, each by its own wrk on the load
#         CPU (so whatever else the machine does lands on both), chunks sent back to back.
#         Gateway CPU per chunk = CPU ticks / (requests x TOKENS). Target: the guarded one
#         costs at most TARGET_CPU_NS (2000) ns more per chunk (median over rounds).
#   ttft  time to the first content token, sequential requests, chunks TOKEN_GAP_US apart. A
#         guard holds back only what could still start a match: the first word waits for the
#         next chunk at most. Target: p50 added at most one chunk gap + 10%, the gap being the
#         one the client sees between the first two tokens unguarded (at least TOKEN_GAP_US).
#
# Exits non-zero when a target is missed, an answer is an error, or a tool cannot run. Figures
# taken while other work runs on the machine are noisy: the side-by-side ratio is the one to
# read.
#
#   bench/guardrails.sh                 # ROUNDS=3 SECS=5 CONNS=16 TOKENS=100 TOKEN_GAP_US=1000
#   NO_BUILD=1 bench/guardrails.sh      # use target/release/switchyard as it is
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out/guardrails
TOOLS=$BENCH/.tools
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/switchyard}
HELPERS=$BENCH/helpers.py
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-16}
TOKENS=${TOKENS:-100}
TOKEN_GAP_US=${TOKEN_GAP_US:-1000}
TTFT_N=${TTFT_N:-200}
TARGET_CPU_NS=${TARGET_CPU_NS:-2000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

NAME="guardrails bench"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

for tool in wrk taskset python3 gcc; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install wrk util-linux gcc)"
done

rm -rf "$OUT" && mkdir -p "$OUT" "$TOOLS"
read -r FAST SLOW PLAIN GUARD PLAIN_SLOW GUARD_SLOW A1 A2 < <(python3 "$HELPERS" freeports 8)
python3 "$HELPERS" check-ports "$FAST" "$SLOW" "$PLAIN" "$GUARD" "$PLAIN_SLOW" "$GUARD_SLOW" "$A1" "$A2" ||
  die "ports in use (a stray process from an earlier run?)"

if [[ ${NO_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p switchyard) >&2 || die "cargo build failed"
fi
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"
if [[ ! -x $TOOLS/tokstream || $BENCH/tokstream.c -nt $TOOLS/tokstream ]]; then
  gcc -O2 -Wall -o "$TOOLS/tokstream" "$BENCH/tokstream.c" || die "gcc failed on bench/tokstream.c"
fi

# Two upstreams: chunks back to back (CPU), and TOKEN_GAP_US apart (time to first token).
taskset -c "$SERVER_CPU" "$TOOLS/tokstream" "$FAST" "$TOKENS" 0 >"$OUT/tok-fast.log" 2>&1 &
PIDS+=($!)
taskset -c "$SERVER_CPU" "$TOOLS/tokstream" "$SLOW" "$TOKENS" "$TOKEN_GAP_US" >"$OUT/tok-slow.log" 2>&1 &
PIDS+=($!)

# gateway NAME ADMIN_PORT "PORT:UPSTREAM ..." GUARDED(0|1)
gateway() {
  local name=$1 admin=$2 pairs=$3 guarded=$4 yaml=$OUT/$1.yaml pair port up
  {
    printf 'config:\n  adminAddr: 127.0.0.1:%s\nbinds:\n' "$admin"
    for pair in $pairs; do
      port=${pair%%:*} up=${pair##*:}
      printf -- '- port: %s\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - ' "$port"
      if [[ $guarded == 1 ]]; then
        printf 'policies:\n        guardrails:\n          response:\n'
        printf '          - {name: all, regex: {builtins: [email, phone, creditCard, ssn, iban, ip, secrets]}, action: mask}\n      '
      fi
      printf 'backends:\n      - ai: {name: tok, hostOverride: 127.0.0.1:%s, provider: {openAI: {}}, pathOverride: /v1/chat/completions, policies: {backendAuth: {key: sk-bench}}}\n' "$up"
    done
  } >"$yaml"
  # Started here, not in a $(...) subshell, so that the exit trap knows to stop it.
  taskset -c "$SERVER_CPU" "$GATEWAY_BIN" -f "$yaml" >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}
gateway plain "$A1" "$PLAIN:$FAST $PLAIN_SLOW:$SLOW" 0
PLAIN_PID=$LAST_PID
gateway guarded "$A2" "$GUARD:$FAST $GUARD_SLOW:$SLOW" 1
GUARD_PID=$LAST_PID
for admin in "$A1" "$A2"; do
  python3 "$HELPERS" wait-ready-now "127.0.0.1:$admin" || { cat "$OUT"/*.log >&2; die "a gateway did not start"; }
done

CLK_TCK=$(getconf CLK_TCK)
url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }

# The guarded stream must actually be guarded (and neither may be an error).
python3 - "$(url "$PLAIN")" "$(url "$GUARD")" "$TOKENS" <<'EOF' || die "the streams do not look right"
import json, sys, urllib.request
body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
texts = []
for u in sys.argv[1:3]:
    req = urllib.request.Request(u, data=body, headers={"content-type": "application/json"})
    raw = urllib.request.urlopen(req, timeout=10).read().decode()
    assert '"error"' not in raw, raw[:500]
    t = ""
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices", []):
                t += (c.get("delta") or {}).get("content") or ""
    texts.append(t)
assert texts[0] == texts[1] and len(texts[0]) > int(sys.argv[3]), texts
EOF

# --- CPU per chunk, side by side --------------------------------------------------------------
log "cpu per chunk: $ROUNDS rounds of ${SECS}s, $CONNS connections each, $TOKENS chunks per answer"
RATIOS=()
DIFFS=()
for round in $(seq "$ROUNDS"); do
  p0=$(ticks "$PLAIN_PID") g0=$(ticks "$GUARD_PID")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" "$(url "$PLAIN")" -- chat-stream >"$OUT/wrk-plain-$round.txt" 2>&1 &
  w1=$!
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH/wrk.lua" "$(url "$GUARD")" -- chat-stream >"$OUT/wrk-guarded-$round.txt" 2>&1 &
  w2=$!
  wait "$w1" "$w2"
  p1=$(ticks "$PLAIN_PID") g1=$(ticks "$GUARD_PID")
  read -r line < <(python3 - "$OUT/wrk-plain-$round.txt" "$OUT/wrk-guarded-$round.txt" $((p1 - p0)) $((g1 - g0)) "$CLK_TCK" "$TOKENS" <<'EOF'
import json, sys
def rec(path):
    for l in open(path):
        if l.startswith("WRKJSON "):
            r = json.loads(l[8:])
            bad = r["non2xx"] + r["body_errors"] + r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
            if bad or not r["requests"]:
                raise SystemExit(f"{path}: errors or no requests: {r}")
            return r["requests"]
    raise SystemExit(f"{path}: no WRKJSON line")
pr, gr = rec(sys.argv[1]), rec(sys.argv[2])
pt, gt, tck, tokens = (int(x) for x in sys.argv[3:7])
pns = pt / tck * 1e9 / (pr * tokens)
gns = gt / tck * 1e9 / (gr * tokens)
print(f"{pns:.0f} {gns:.0f} {gns - pns:.0f} {gns / pns:.3f} {pr} {gr}")
EOF
  ) || die "round $round failed"
  read -r pns gns diff ratio preq greq <<<"$line"
  log "  round $round: plain ${pns} ns/chunk ($preq answers), guarded ${gns} ns/chunk ($greq answers): +${diff} ns, x${ratio}"
  RATIOS+=("$ratio")
  DIFFS+=("$diff")
done
MED_DIFF=$(printf '%s\n' "${DIFFS[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
MED_RATIO=$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

# --- Time to first content token ---------------------------------------------------------------
log "time to first content token: $TTFT_N sequential answers each, chunks ${TOKEN_GAP_US} µs apart"
read -r TTFT_PLAIN TTFT_GUARD GAP_SEEN < <(taskset -c "$LOAD_CPU" python3 - "$PLAIN_SLOW" "$GUARD_SLOW" "$TTFT_N" <<'EOF'
import http.client, json, sys, time
body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
def content_times(port, n):
    """Median time to the first content token, and median gap between the first two."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    firsts, gaps = [], []
    for i in range(n + 10):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        buf, seen, times = b"", 0, []
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            if len(times) < 2:
                lines = buf.split(b"\n")
                for line in lines[seen:-1]:
                    if line.startswith(b"data: {"):
                        for c in json.loads(line[6:]).get("choices", []):
                            if (c.get("delta") or {}).get("content"):
                                times.append(now)
                seen = len(lines) - 1
        if resp.status != 200 or len(times) < 2 or b'"error"' in buf:
            raise SystemExit(f"port {port}: status {resp.status}, fewer than two content tokens: {buf[:300]!r}")
        if i >= 10:
            firsts.append((times[0] - t0) * 1e6)
            gaps.append((times[1] - times[0]) * 1e6)
    firsts.sort(); gaps.sort()
    return firsts[len(firsts) // 2], gaps[len(gaps) // 2]
# Interleaved, so drift lands on both.
a, b, g = [], [], []
for _ in range(4):
    first, gap = content_times(sys.argv[1], int(sys.argv[3]) // 4)
    a.append(first); g.append(gap)
    b.append(content_times(sys.argv[2], int(sys.argv[3]) // 4)[0])
a.sort(); b.sort(); g.sort()
print(f"{(a[1] + a[2]) / 2:.0f} {(b[1] + b[2]) / 2:.0f} {(g[1] + g[2]) / 2:.0f}")
EOF
) || die "time to first token failed"
ADDED_TTFT=$((TTFT_GUARD - TTFT_PLAIN))
# "One chunk's worth" is the gap the client sees between the first two tokens unguarded (the
# upstream's timer and two loopback hops make it a little longer than TOKEN_GAP_US).
CHUNK_GAP=$((GAP_SEEN > TOKEN_GAP_US ? GAP_SEEN : TOKEN_GAP_US))
TTFT_LIMIT=$((CHUNK_GAP * 11 / 10))

log ""
log "guardrails (every built-in detector, mask), side by side in one run:"
log "  gateway CPU per chunk: +${MED_DIFF} ns median (x${MED_RATIO}); target <= ${TARGET_CPU_NS} ns"
log "  time to first token:   plain ${TTFT_PLAIN} µs, guarded ${TTFT_GUARD} µs: +${ADDED_TTFT} µs; target <= ${TTFT_LIMIT} µs (one chunk gap + 10%; gap seen unguarded ${GAP_SEEN} µs, asked ${TOKEN_GAP_US} µs)"
fail=0
if (( MED_DIFF > TARGET_CPU_NS )); then log "MISSED: CPU per chunk"; fail=1; fi
if (( ADDED_TTFT > TTFT_LIMIT )); then log "MISSED: time to first token"; fail=1; fi
exit $fail
