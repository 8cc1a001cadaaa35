#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets of fuzz/ (libFuzzer through libfuzzer-sys, built by
# the stable toolchain; see README.md here) for SECONDS each, one after the other.
#
#   bench/fuzz/run.sh SECONDS [TARGET...]     # no TARGET: all of them
#
# Prints, per target, executions, coverage (libFuzzer's `cov` = edges, `ft` = features),
# corpus size and crashes; exits 1 if any target crashed (or failed to start), 2 if the build
# failed. New inputs go to fuzz/work/<target> (not committed; the committed seeds in
# fuzz/corpus/<target> are read, never written); crashes to fuzz/artifacts/<target>/; logs to
# bench/out/fuzz/<time>/<target>.log. Extra libFuzzer flags: FUZZ_ARGS="-jobs=2 ...";
# FUZZ_BUILD=0 runs the binaries built last time without rebuilding. FUZZ_CPU=1 counts
# SECONDS as the fuzzer's CPU time instead of wall time, so a run may be paused for a
# benchmark (`pkill -STOP -f fuzz/target/`, later `-CONT`) and still fuzz its full budget.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

ALL=(config sse eventstream request_translate response_translate stream_translate
  picker_request vllm_metrics mcp_session mcp_jsonrpc mcp_serve cel)

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [TARGET...]   targets: ${ALL[*]}" >&2
  exit 2
fi
secs=$1
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "unknown target $t (targets: ${ALL[*]})" >&2; exit 2; }
done

# SanitizerCoverage through LLVM pass options the stable rustc accepts (what `cargo fuzz`
# passes, minus its nightly-only `-Zsanitizer`); `--target` keeps the flags off build
# scripts and proc macros.
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
if [ "${FUZZ_BUILD:-1}" = 0 ]; then
  echo "== FUZZ_BUILD=0: running the binaries already in fuzz/target/$triple/release"
else
  echo "== build (release, debug assertions, $triple)"
  if ! (cd fuzz && nice -n 10 cargo build --release --target "$triple" "${bins[@]}"); then
    echo "build failed" >&2
    exit 2
  fi
fi

out="bench/out/fuzz/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  marker="$out/.start-$t"
  touch "$marker"
  log="$out/$t.log"
  echo "== $t (${secs}s) -> $log"
  limit=(-max_total_time="$secs" -timeout=10)
  # libFuzzer's clocks are wall clocks: a run paused for a minute would report every input
  # as a timeout or slow unit, so a pausable run gives each input five minutes instead.
  [ "${FUZZ_CPU:-0}" = 1 ] && limit=(-timeout=300 -report_slow_units=300)
  # shellcheck disable=SC2086
  nice -n 10 "fuzz/target/$triple/release/$t" \
    "${limit[@]}" -print_final_stats=1 -rss_limit_mb=2048 \
    -max_len=16384 -artifact_prefix="fuzz/artifacts/$t/" ${FUZZ_ARGS:-} \
    "fuzz/work/$t" "fuzz/corpus/$t" >"$log" 2>&1 &
  pid=$!
  interrupted=0
  if [ "${FUZZ_CPU:-0}" = 1 ]; then
    tick=$(getconf CLK_TCK)
    while kill -0 "$pid" 2>/dev/null; do
      # utime + stime of the fuzzer, in clock ticks (fields 14 and 15 of /proc/PID/stat).
      used=$(awk -v t="$tick" '{print int(($14 + $15) / t)}' "/proc/$pid/stat" 2>/dev/null || echo 0)
      if [ "${used:-0}" -ge "$secs" ]; then
        interrupted=1
        kill -INT "$pid"
        break
      fi
      sleep 5
    done
  fi
  wait "$pid"
  rc=$?
  # libFuzzer ends an interrupted run with its -interrupted_exitcode (72), after its stats.
  [ "$interrupted" = 1 ] && [ "$rc" = 72 ] && rc=0
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E ' cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
  found=$(find "fuzz/artifacts/$t" -type f -newer "$marker")
  crashes=$(grep -c . <<<"$found")
  rm -f "$marker"
  status=ok
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    status="CRASH (exit $rc)"
    failed=1
    sed 's/^/   artifact: /' <<<"$found"
    grep -m1 -E "panicked at|ERROR: libFuzzer" "$log" | sed 's/^/   /'
  fi
  line=$(printf '%-20s execs=%-10s cov=%-6s ft=%-6s corpus=%-12s crashes=%-3s %s' \
    "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" "$status")
  echo "$line"
  summary+=("$line")
done

echo "== summary (${secs}s per target; logs in $out)"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
exit $failed
