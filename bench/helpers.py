#!/usr/bin/env python3
"""Small helpers for bench/run.sh: free ports, readiness timing, result records, the summary.

Standard library only. Every subcommand is called by run.sh; see `usage` below.
"""

import json
import os
import socket
import statistics
import sys
import time

USAGE = """usage:
  helpers.py freeports N                      print N free loopback TCP ports
  helpers.py wait-ready HOST:PORT             coprocess: see wait_ready()
  helpers.py wrk-record OUT.jsonl WRK.txt K=V...  append one wrk run (plus K=V fields)
  helpers.py oha-record OUT.jsonl OHA.json K=V... append one oha run (plus K=V fields)
  helpers.py side-by-side PLAIN.txt TEL.txt PLAIN_TICKS TEL_TICKS  print one side-by-side round
  helpers.py summary OUT.jsonl                print the summary table
"""


def kv_fields(args):
    out = {}
    for a in args:
        k, _, v = a.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def append(path, rec):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def freeports(n):
    # Hold all sockets open until every port is chosen so the same port is not handed out twice.
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def ready_status(host, port):
    """One GET /healthz/ready; returns the status code, or None if nothing listens yet."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"GET /healthz/ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            line = s.makefile("rb").readline()
            return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_ready(addr):
    """Coprocess protocol, so that Python's own start-up is not counted as gateway start-up:

    1. print "armed" once imports are done (run.sh waits for it before spawning the gateway);
    2. poll GET /healthz/ready about every millisecond until it answers 200 (give up after 15 s);
    3. read the spawn time (bash $EPOCHREALTIME, taken just before the spawn) from stdin;
    4. print the milliseconds from spawn to the first 200, or "timeout".
    """
    host, _, port = addr.rpartition(":")
    port = int(port)
    print("armed", flush=True)
    deadline = time.time() + 15
    ready_at = None
    while time.time() < deadline:
        if ready_status(host, port) == 200:
            ready_at = time.time()
            break
        time.sleep(0.001)
    t0 = float(sys.stdin.readline().strip() or "nan")
    if ready_at is None:
        print("timeout", flush=True)
    else:
        print(f"{(ready_at - t0) * 1000:.1f}", flush=True)


def wait_ready_now(addr):
    """Polls GET /healthz/ready until it answers 200; exits non-zero after 15 s."""
    host, _, port = addr.rpartition(":")
    deadline = time.time() + 15
    while time.time() < deadline:
        if ready_status(host, int(port)) == 200:
            return
        time.sleep(0.01)
    raise SystemExit(f"{addr} did not become ready")


def otlp_sink(port):
    """An OTLP/HTTP collector that accepts every export and keeps nothing (for pricing
    tracing, not for checking it: the test suite checks spans against a real receiver)."""
    import http.server

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Sink).serve_forever()


def wrk_record(out, path, extra):
    rec = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("WRKJSON "):
                rec = json.loads(line[len("WRKJSON "):])
    if rec is None:
        sys.exit(f"no WRKJSON line in {path}; wrk output follows:\n" + open(path).read())
    rec["tool"] = "wrk"
    rec["rps"] = rec["requests"] / (rec["duration_us"] / 1e6)
    rec["errors"] = sum(rec[k] for k in rec if k.startswith("err_"))
    rec.update(kv_fields(extra))
    append(out, rec)
    print(f"{rec['requests'] / (rec['duration_us'] / 1e6):10.0f} req/s  "
          f"errors={rec['errors']}  wrk p50={rec['lat_p50_us']}us p99={rec['lat_p99_us']}us")


def side_by_side(plain_path, tel_path, plain_ticks, tel_ticks):
    """One round of run.sh's side-by-side telemetry pricing: CPU per request of each gateway."""
    def requests(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("WRKJSON "):
                    return json.loads(line[len("WRKJSON "):])["requests"]
        sys.exit(f"no WRKJSON line in {path}")
    tick = os.sysconf("SC_CLK_TCK")
    off = int(plain_ticks) / tick / requests(plain_path) * 10000
    on = int(tel_ticks) / tick / requests(tel_path) * 10000
    print(f"plain {off:.3f} | telemetry {on:.3f} CPU-s/10k req  {100 * (on / off - 1):+.1f}%")


def oha_record(out, path, extra):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    pct = data.get("latencyPercentiles") or {}
    codes = data.get("statusCodeDistribution") or {}
    errors = dict(data.get("errorDistribution") or {})
    # Requests still in flight when -z runs out are cut off by oha itself, not failed.
    aborted = errors.pop("aborted due to deadline", 0)
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    rec = {
        "tool": "oha",
        # oha reports seconds; keep microseconds.
        "p50_us": pct["p50"] * 1e6 if pct.get("p50") is not None else None,
        "p99_us": pct["p99"] * 1e6 if pct.get("p99") is not None else None,
        "ok": ok,
        "non2xx": sum(codes.values()) - ok,
        "errors": sum(errors.values()),
        "aborted_at_deadline": aborted,
        "rps": (data.get("summary") or {}).get("requestsPerSec"),
    }
    rec.update(kv_fields(extra))
    append(out, rec)
    print(f"p50={rec['p50_us']:.0f}us p99={rec['p99_us']:.0f}us ok={ok} "
          f"non2xx={rec['non2xx']} errors={rec['errors']}")


def ttfb(out, url, n, extra):
    """Time to first byte of a streamed answer: sequential POSTs on one keep-alive connection,
    each timed from sending the request to the first byte of the body (the first event)."""
    import http.client
    import time
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    body = json.dumps({"model": "bench-model", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json"}
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    samples = []
    for i in range(int(n) + 20):  # the first 20 warm the connection and are not kept
        t0 = time.perf_counter()
        conn.request("POST", u.path, body=body, headers=headers)
        resp = conn.getresponse()
        first = resp.read1(65536)
        t1 = time.perf_counter()
        resp.read()
        if resp.status != 200 or not first:
            raise SystemExit(f"ttfb: {url} answered {resp.status}")
        if i >= 20:
            samples.append((t1 - t0) * 1e6)
    samples.sort()
    rec = {"tool": "ttfb", "n": len(samples),
           "p50_us": samples[len(samples) // 2],
           "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))]}
    rec.update(kv_fields(extra))
    append(out, rec)
    print(f"ttfb p50={rec['p50_us']:.0f}us p99={rec['p99_us']:.0f}us n={rec['n']}")


# ---------------------------------------------------------------------------------------------
# Summary

TARGET_CPU_PER_10K = 0.25  # CPU-seconds of the gateway per 10k requests, plain path
# (case, label, gateway CPU-s per 10k target). The LLM targets are the LLM issue's.
CASES = (
    ("chat", "chat (plain proxy)", TARGET_CPU_PER_10K),
    # None: priced against the case without "+tel" (the telemetry issue's budget).
    ("chat+tel", "chat + access log + tracing", None),
    ("stream", "stream (plain proxy)", TARGET_CPU_PER_10K),
    ("ai-chat", "ai completions", 0.35),
    ("ai-chat+tel", "ai completions + access log + tracing", None),
    ("ai-stream", "ai completions stream", 0.50),
    ("o2a", "ai OpenAI->Anthropic", 0.50),
    ("o2a-stream", "ai OpenAI->Anthropic stream", 0.50),
    # No issue sets an MCP budget; this is ours: about an ai completion's.
    ("mcp", "MCP tools/call", 0.35),
)
TARGET_TELEMETRY_OVERHEAD = 0.10  # gateway CPU with logging and tracing on, over off
TARGET_ADDED_P50_US = 150
TARGET_ADDED_P99_US = 400
TARGET_RSS_IDLE_MIB = 10
TARGET_RSS_LOAD_MIB = 20
TARGET_READY_MS = 50


def verdict(value, limit):
    if value is None:
        return "n/a"
    return "ok" if value <= limit else "MISS"


def fmt(v, spec="{:.0f}", unit=""):
    if v is None:
        return "-"
    return spec.format(v) + unit


def summary(path):
    recs = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    meta = next((r for r in recs if r.get("kind") == "meta"), {})
    runs = [r for r in recs if r.get("kind") == "run"]
    gw = next((r for r in recs if r.get("kind") == "gateway"), {})

    def sel(case, target):
        return [r for r in runs if r["case"] == case and r["target"] == target]

    def med(rs, key):
        vals = [r[key] for r in rs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def spread(rs, key):
        vals = [r[key] for r in rs if r.get(key) is not None]
        return f"{min(vals):.0f}..{max(vals):.0f}" if len(vals) > 1 else ""

    def cpu_per_10k(rs, ticks_key):
        # Pool all rounds: total CPU ticks over total requests, less tick-rounding noise.
        ticks = sum(r[ticks_key] for r in rs)
        reqs = sum(r["requests"] for r in rs)
        if not reqs:
            return None
        return ticks / meta.get("clk_tck", 100) / reqs * 10000

    rows = []  # (case, direct, gateway, ratio/added, target, verdict)
    notes = []
    misses = []

    def check(name, value, limit):
        v = verdict(value, limit)
        if v == "MISS":
            misses.append(name)
        return v

    for case, label, target in CASES:
        d, g = sel(case, "direct"), sel(case, "gateway")
        if not d and not g:
            continue
        rd, rg = med(d, "rps"), med(g, "rps")
        ratio = f"{rg / rd:.2f}x" if rd and rg else "-"
        rows.append((f"{label} RPS @{meta.get('conns', 32)}conn (median)", fmt(rd), fmt(rg), ratio, "", ""))
        rows.append(("  min..max over rounds", spread(d, "rps"), spread(g, "rps"), "", "", ""))
        cg = cpu_per_10k(g, "gw_ticks")
        if target is None:
            base = cpu_per_10k(sel(case.removesuffix("+tel"), "gateway"), "gw_ticks")
            over = cg / base - 1 if cg is not None and base else None
            # Sequential rounds of one gateway move by up to 20% on a shared VM; when the case
            # was also priced side by side (both gateways at once, within ~2%), that row is
            # the one held to the budget and this one is shown for reference.
            priced_side_by_side = all(
                any(r.get("base", "chat") == case.removesuffix("+tel") for r in sel(side, "gateway"))
                for side in ("side-plain", "side-tel"))
            rows.append((f"{label}: gateway CPU-s / 10k req", "-", fmt(cg, "{:.3f}"),
                         fmt(over * 100 if over is not None else None, "{:+.1f}", "% vs off"),
                         f"<= +{TARGET_TELEMETRY_OVERHEAD:.0%}",
                         "(judged side by side)" if priced_side_by_side else
                         check(f"{label} overhead", over, TARGET_TELEMETRY_OVERHEAD)))
        else:
            rows.append((f"{label}: gateway CPU-s / 10k req", "-", fmt(cg, "{:.3f}"), "",
                         f"<= {target}", check(f"{label} gateway CPU", cg, target)))
        rows.append((f"{label}: nginx CPU-s / 10k req", fmt(cpu_per_10k(d, "ng_ticks"), "{:.3f}"),
                     fmt(cpu_per_10k(g, "ng_ticks"), "{:.3f}"), "", "(reference)", ""))
        # Direct: wrk's own connections. Gateway: connections the gateway opened upstream; more
        # than the client's count means the upstream pool is not reusing connections.
        rows.append((f"{label}: conns nginx accepted / run", fmt(med(d, "upstream_conns")),
                     fmt(med(g, "upstream_conns")), "", "(diagnostic)", ""))
        errs = sum(r.get("errors", 0) for r in d + g)
        if errs:
            notes.append(f"{label}: wrk counted {errs} errors/non-2xx responses; RPS is suspect")

    # The same price with both gateways saturated at once (run.sh's run_tel_side_by_side), per
    # case priced that way.
    for base in ("chat", "ai-chat"):
        off = [r for r in sel("side-plain", "gateway") if r.get("base", "chat") == base]
        on = [r for r in sel("side-tel", "gateway") if r.get("base", "chat") == base]
        if not (off and on):
            continue
        c_off, c_on = cpu_per_10k(off, "gw_ticks"), cpu_per_10k(on, "gw_ticks")
        over = c_on / c_off - 1 if c_off and c_on else None
        label = f"{base} side by side: gateway CPU-s / 10k, telemetry off | on"
        rows.append((label, fmt(c_off, "{:.3f}"), fmt(c_on, "{:.3f}"),
                     fmt(over * 100 if over is not None else None, "{:+.1f}", "% vs off"),
                     f"<= +{TARGET_TELEMETRY_OVERHEAD:.0%}",
                     check(f"{base} telemetry overhead side by side", over,
                           TARGET_TELEMETRY_OVERHEAD)))
        # Throughput, the issue's own measure: the requests each gateway served in the same
        # seconds on the same CPU (pooled over rounds).
        n_off, n_on = sum(r["requests"] for r in off), sum(r["requests"] for r in on)
        loss = 1 - n_on / n_off if n_off else None
        rows.append((f"{base} side by side: requests served, telemetry off | on", fmt(n_off),
                     fmt(n_on), fmt(-loss * 100 if loss is not None else None, "{:+.1f}",
                                    "% vs off"),
                     f">= -{TARGET_TELEMETRY_OVERHEAD:.0%}",
                     check(f"{base} telemetry throughput side by side", loss,
                           TARGET_TELEMETRY_OVERHEAD)))
        rows.append(("  per-round CPU overhead", "", "", " ".join(
            f"{(b['gw_ticks'] / b['requests']) / (a['gw_ticks'] / a['requests']) - 1:+.0%}"
            for a, b in zip(sorted(off, key=lambda r: r["round"]), sorted(on, key=lambda r: r["round"]))
            if a["requests"] and b["requests"] and a["gw_ticks"]), "", ""))

    for case, label, _ in CASES:
        d, g = sel(f"ttfb-{case}", "direct"), sel(f"ttfb-{case}", "gateway")
        if not (d and g):
            continue
        for q in ("p50", "p99"):
            vd, vg = med(d, f"{q}_us"), med(g, f"{q}_us")
            added = vg - vd if vd is not None and vg is not None else None
            rows.append((f"{label}: time to first byte {q} (median)", fmt(vd, unit=" µs"),
                         fmt(vg, unit=" µs"), fmt(added, "{:+.0f}", " µs"), "(reference)", ""))

    d, g = sel("latency", "direct"), sel("latency", "gateway")
    if d and g:
        for q, limit in (("p50", TARGET_ADDED_P50_US), ("p99", TARGET_ADDED_P99_US)):
            vd, vg = med(d, f"{q}_us"), med(g, f"{q}_us")
            added = vg - vd if vd is not None and vg is not None else None
            rows.append((f"latency {q} @{meta.get('rate', 200)}rps (median)", fmt(vd, unit=" µs"),
                         fmt(vg, unit=" µs"), fmt(added, "{:+.0f}", " µs"),
                         f"added <= {limit} µs", check(f"added {q}", added, limit)))
        bad = sum(r.get("non2xx", 0) + r.get("errors", 0) for r in d + g)
        if bad:
            notes.append(f"latency: oha counted {bad} errors/non-2xx responses")

    mib = lambda kb: kb / 1024 if kb is not None else None
    idle = mib(gw.get("rss_idle_kb"))
    rows.append(("gateway RSS idle (VmRSS at ready)", "-", fmt(idle, "{:.1f}", " MiB"), "",
                 f"<= {TARGET_RSS_IDLE_MIB} MiB", check("RSS idle", idle, TARGET_RSS_IDLE_MIB)))
    load = mib(gw.get("hwm_end_kb"))
    rows.append(("gateway RSS peak (VmHWM at end)", "-", fmt(load, "{:.1f}", " MiB"), "",
                 f"<= {TARGET_RSS_LOAD_MIB} MiB", check("RSS after load", load, TARGET_RSS_LOAD_MIB)))
    if len(gw.get("ready_all_ms") or []) > 1:
        notes.append("start-to-ready per spawn: " + ", ".join(f"{v:g} ms" for v in gw["ready_all_ms"]))
    ready = gw.get("ready_ms")
    rows.append(("start-to-ready (spawn -> 200, median)", "-", fmt(ready, "{:.1f}", " ms"),
                 f"log {gw['log_ready_ms']} ms" if gw.get("log_ready_ms") is not None else "",
                 f"<= {TARGET_READY_MS} ms", check("start-to-ready", ready, TARGET_READY_MS)))

    header = ("case", "direct", "gateway", "gw vs direct", "target", "result")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()

    out = []
    out.append(f"Switchyard bench — {meta.get('date', '?')}  commit {meta.get('commit', '?')}"
               f"{' (dirty tree)' if meta.get('dirty') else ''}")
    out.append(f"{meta.get('rounds', '?')} interleaved rounds; saturation {meta.get('secs', '?')}s "
               f"wrk -t1 -c{meta.get('conns', '?')}; latency {meta.get('lat_secs', '?')}s oha "
               f"-q {meta.get('rate', '?')} -c {meta.get('lat_conns', '?')}; load generator on "
               f"CPU {meta.get('load_cpu', '?')}, gateway+nginx on CPU {meta.get('server_cpu', '?')}")
    out.append("")
    out.append(line(header))
    out.append(line(tuple("-" * w for w in widths)))
    out.extend(line(r) for r in rows)
    out.append("")
    out.append("targets missed: " + (", ".join(misses) if misses else "none"))
    for n in notes:
        out.append("note: " + n)
    print("\n".join(out))
    return 1 if misses else 0


def main(argv):
    if len(argv) < 2:
        sys.exit(USAGE)
    cmd, args = argv[1], argv[2:]
    if cmd == "freeports":
        freeports(int(args[0]))
    elif cmd == "wait-ready":
        wait_ready(args[0])
    elif cmd == "wrk-record":
        wrk_record(args[0], args[1], args[2:])
    elif cmd == "oha-record":
        oha_record(args[0], args[1], args[2:])
    elif cmd == "wait-ready-now":
        wait_ready_now(argv[2])
    elif cmd == "side-by-side":
        side_by_side(*argv[2:6])
    elif cmd == "otlp-sink":
        otlp_sink(argv[2])
    elif cmd == "ttfb":
        ttfb(argv[2], argv[3], argv[4], argv[5:])
    elif cmd == "summary":
        summary(args[0])
    else:
        sys.exit(USAGE)


if __name__ == "__main__":
    main(sys.argv)
