#!/usr/bin/env python3
"""Prints the routing benchmark's tables and target checks from a results directory.

    report.py bench/routing/results/<timestamp>

Targets (from the routing issue), checked on the shared-prefix workload:
  1. gateway prefix-cache TTFT p90 at least 3x lower than gateway random, at each rate;
  2. gateway prefix-cache TTFT p90 no worse than the best vllm-router policy's p90, at each rate;
  3. mean pick time under 50 us for every gateway strategy (measured window, every run).

Per regime (workload x rate) it also states which router/strategy wins: the lowest TTFT p90
among the runs without errors, by how much it beats the runner-up and the load-blind baseline
(gateway `random` or vllm-router `round_robin`).

Besides the targets, these FAIL too: a run (cell) whose fleet, gateway or router did not start
or whose load generator failed (run.sh writes them to cell-failures.jsonl), a run with error
answers (non-200, broken or error-carrying streams, timeouts), a reference router (vllm-router)
that was asked for but could not run, and a check that cannot be made because results it needs
are missing. Exit status 1 on any FAIL; with TARGETS=report a missed target (1-3) is printed as
FAIL but does not fail the exit status (the other failures still do).
"""

import glob
import json
import os
import sys

WORKLOAD_ORDER = ["shared-prefix", "realistic", "multi-turn", "no-sharing"]
REGIME = {
    "shared-prefix": "small KV (working set > one pod), uniform groups",
    "realistic": "large KV (working set fits on a pod), Zipf prefixes, mixed lengths",
    "multi-turn": "open-loop conversations with think time",
    "no-sharing": "no common prefixes",
}
PICK_LIMIT_US = 50.0
SPEEDUP = 3.0


def fmt(x, nd=0):
    if x is None:
        return "-"
    return f"{x:.{nd}f}"


def load(d):
    res = []
    for p in sorted(glob.glob(os.path.join(d, "*.json"))):
        with open(p) as f:
            res.append(json.load(f))
    return res


def load_failures(d):
    p = os.path.join(d, "cell-failures.jsonl")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [json.loads(l) for l in f if l.strip()]


def table(rows):
    hdr = ["router/strategy", "rate", "ttft p50", "p90", "p99", "e2e p50", "p90", "req/s", "tok/s",
           "hit%", "err", "stick", "pick us", "lag p99", "per-pod requests"]
    lines = []
    for r in rows:
        t, e = r["ttft_ms"], r["e2e_ms"]
        lines.append([
            r["label"], f"{r['rate']:g}", fmt(t["p50"]), fmt(t["p90"]), fmt(t["p99"]), fmt(e["p50"]),
            fmt(e["p90"]), fmt(r["req_per_s"], 1), fmt(r["out_tok_per_s"]),
            fmt(100 * r["hit_rate"], 1) if r["hit_rate"] is not None else "-",
            str(r["errors"]), fmt(r.get("stickiness"), 2), fmt(r.get("pick_us"), 1),
            fmt(r.get("generator_p99_lag_ms"), 1),
            " ".join(str(v) for _, v in sorted(r["per_pod"].items(), key=lambda kv: pod_index(kv[0]))),
        ])
    w = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(hdr)]
    last = len(hdr) - 1
    out = ["  ".join(h.ljust(w[i]) if i in (0, last) else h.rjust(w[i]) for i, h in enumerate(hdr))]
    out.append("  ".join("-" * x for x in w))
    for l in lines:
        out.append("  ".join(c.ljust(w[i]) if i in (0, last) else c.rjust(w[i]) for i, c in enumerate(l)))
    return "\n".join(out)


def pod_index(name):
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 1 << 30


PREFERRED = ["random", "round_robin", "least-request", "least-kv-cache", "session-affinity",
             "prefix-cache", "prefix-cache:2,least-request:1", "cache_aware", "kv_aware"]


def order_key(r):
    router_rank = 0 if r["router"] == "gateway" else 1
    s = r["strategy"]
    return (r["rate"], router_rank, PREFERRED.index(s) if s in PREFERRED else 99, s)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    res = load(d)
    failures = load_failures(d)
    report_only = os.environ.get("TARGETS", "fail") == "report"
    if not res and not failures:
        sys.exit(f"no results in {d}")
    params = os.path.join(d, "params.txt")
    if os.path.exists(params):
        print("Parameters:")
        with open(params) as f:
            for line in f:
                print("  " + line.rstrip())
        print()
    skipped = os.path.join(d, "vllm-router-skipped.txt")
    vr_missing = open(skipped).read().strip() if os.path.exists(skipped) else None
    if vr_missing:
        print("vllm-router DID NOT RUN: " + vr_missing + "\n")

    wls = sorted({r["workload"] for r in res}, key=lambda w: (WORKLOAD_ORDER.index(w) if w in WORKLOAD_ORDER else 99, w))
    for wl in wls:
        rows = [r for r in res if r["workload"] == wl]
        # Stable order: by rate, gateway before vllm-router, then the order the runs were made.
        rows.sort(key=order_key)
        print(f"== {wl} ==  [{REGIME.get(wl, '')}]  (TTFT/e2e in ms from the scheduled arrival; "
              f"hit% = cached/prompt tokens; stick = share of a group's/conversation's requests "
              f"on its most-used pod; lag p99 = how late the generator sent, ms)")
        print(table(rows))
        print()

    print("== winners ==  (per regime: lowest TTFT p90 among runs without errors)")
    for wl in wls:
        for rate in sorted({r["rate"] for r in res if r["workload"] == wl}):
            cell = [r for r in res if r["workload"] == wl and r["rate"] == rate]
            bad = [r["label"] for r in cell if r.get("errors") or r["ttft_ms"]["p90"] is None]
            bad += [f"{f.get('router')}:{f.get('strategy')}" for f in failures
                    if f.get("workload") == wl and f.get("rate") == rate]
            good = sorted((r for r in cell if not r.get("errors") and r["ttft_ms"]["p90"] is not None),
                          key=lambda r: r["ttft_ms"]["p90"])
            head = f"{wl} @ {rate:g} req/s:"
            if not good:
                print(f"NONE  {head} no run without errors")
                continue
            win = good[0]
            p90 = win["ttft_ms"]["p90"]
            msg = f"{head} {win['label']} wins, TTFT p90 {p90:.0f} ms"
            if len(good) > 1:
                ru = good[1]
                msg += (f"; runner-up {ru['label']} {ru['ttft_ms']['p90']:.0f} ms "
                        f"({ru['ttft_ms']['p90'] / p90:.2f}x)")
            base = [r for r in good[2:] if r["strategy"] in ("random", "round_robin")]
            if base:
                b = min(base, key=lambda r: r["ttft_ms"]["p90"])
                msg += f"; {b['label']} {b['ttft_ms']['p90']:.0f} ms ({b['ttft_ms']['p90'] / p90:.2f}x)"
            if bad:
                msg += f"; not ranked (errors or did not run): {', '.join(bad)}"
            print("WIN   " + msg)
    print()

    print("== runs ==")
    fails = 0  # everything that fails the exit status
    misses = 0  # missed targets (1-3): fail it unless TARGETS=report

    def fail(msg):
        nonlocal fails
        fails += 1
        print("FAIL  " + msg)

    for f in failures:
        fail(f"run {f.get('cell')} did not run: {f.get('why')}")
    for r in res:
        if r.get("errors"):
            fail(f"run {r['workload']} {r['label']} @ {r['rate']:g} req/s: {r['errors']} error answers "
                 f"({', '.join(f'{k} x{v}' for k, v in (r.get('error_kinds') or {}).items()) or 'see its JSON'})")
    if vr_missing:
        fail(f"reference vllm-router could not run: {vr_missing}")
    if not failures and not any(r.get("errors") for r in res) and not vr_missing:
        print(f"PASS  all {len(res)} runs started and completed without error answers")
    print()

    print("== targets ==")

    def line(ok, msg):
        nonlocal misses
        misses += 0 if ok else 1
        print(("PASS  " if ok else "FAIL  ") + msg)

    sp = [r for r in res if r["workload"] == "shared-prefix"]
    get = lambda router, strat, rate: next((r for r in sp if r["router"] == router and r["strategy"] == strat and r["rate"] == rate), None)
    rates = sorted({r["rate"] for r in sp} | {f["rate"] for f in failures if f.get("workload") == "shared-prefix"})
    vr_asked = any(f.get("router") == "vllm-router" for f in failures) or \
        any(r["router"] == "vllm-router" for r in res) or bool(vr_missing)
    if not sp:
        fail("no shared-prefix results: the targets cannot be checked")
    good_rates = []
    for rate in rates:
        pc, rnd = get("gateway", "prefix-cache", rate), get("gateway", "random", rate)
        if pc and rnd and pc["ttft_ms"]["p90"] and rnd["ttft_ms"]["p90"]:
            ratio = rnd["ttft_ms"]["p90"] / pc["ttft_ms"]["p90"]
            ok = ratio >= SPEEDUP and pc["errors"] == 0
            note = "" if pc["errors"] == 0 else f"; prefix-cache had {pc['errors']} errors"
            good_rates += [rate] if ok else []
            line(ok, f"shared-prefix @ {rate:g} req/s: prefix-cache TTFT p90 {pc['ttft_ms']['p90']:.0f} ms vs random "
                     f"{rnd['ttft_ms']['p90']:.0f} ms = {ratio:.1f}x lower (target >= {SPEEDUP:g}x{note})")
        else:
            fail(f"shared-prefix @ {rate:g} req/s: need gateway prefix-cache and random results "
                 f"(missing: {', '.join(n for n, x in (('prefix-cache', pc), ('random', rnd)) if not x)})")
        vr = [r for r in sp if r["router"] == "vllm-router" and r["rate"] == rate and r["ttft_ms"]["p90"] is not None]
        if pc and vr and pc["ttft_ms"]["p90"]:
            best = min(vr, key=lambda r: r["ttft_ms"]["p90"])
            ok = pc["ttft_ms"]["p90"] <= best["ttft_ms"]["p90"]
            line(ok, f"shared-prefix @ {rate:g} req/s: prefix-cache TTFT p90 {pc['ttft_ms']['p90']:.0f} ms vs best "
                     f"vllm-router policy ({best['strategy']}) {best['ttft_ms']['p90']:.0f} ms "
                     f"(target: no worse)")
        elif pc and vr_asked:
            fail(f"shared-prefix @ {rate:g} req/s: no vllm-router results to compare with")
        elif pc:
            print(f"SKIP  shared-prefix @ {rate:g} req/s: vllm-router not asked for (VLLM_ROUTER_POLICIES empty)")
    if rates:
        print(f"      3x target met at rates: {', '.join(f'{x:g}' for x in good_rates) or 'none'} "
              f"(of {', '.join(f'{x:g}' for x in rates)})")

    gw = [r for r in res if r["router"] == "gateway"]
    by_strat = {}
    for r in gw:
        by_strat.setdefault(r["strategy"], []).append(r)
    for s, rs in by_strat.items():
        vals = [r["pick_us"] for r in rs if r.get("pick_us") is not None]
        if not vals:
            fail(f"pick time for {s}: not scraped from the gateway's stats port")
            continue
        worst = max(vals)
        mean = sum(vals) / len(vals)
        line(worst < PICK_LIMIT_US, f"mean pick time {s}: {mean:.1f} us average over {len(vals)} runs, worst run "
                                     f"{worst:.1f} us (target < {PICK_LIMIT_US:g} us)")
    base = [r["pick_us"] for r in by_strat.get("random", []) if r.get("pick_us") is not None]
    if base:
        b = sum(base) / len(base)
        extra = ", ".join(f"{s} {sum(v) / len(v) - b:+.1f}" for s, rs in by_strat.items() if s != "random"
                          for v in [[r["pick_us"] for r in rs if r.get("pick_us") is not None]] if v)
        print(f"NOTE  pick time includes parsing the request body: random (no body use) averages {b:.1f} us; "
              f"strategy cost over random, us: {extra or '-'}")
    errs = sum(r["errors"] for r in res)
    if errs:
        print(f"NOTE  {errs} request errors in total; see error_kinds in the JSON files")
    print(f"\n{fails + misses} FAIL(s): {misses} missed target(s), {fails} other failure(s)")
    if misses and report_only and not fails:
        print("TARGETS=report: missed targets are printed but do not fail the exit status")
    return 1 if fails or (misses and not report_only) else 0


if __name__ == "__main__":
    sys.exit(main())
