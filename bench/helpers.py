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
  helpers.py check-ports PORT...              exit 1 (naming them) if any port is in use
  helpers.py strays CPU...                    exit 1 (listing them) if a switchyard, nginx,
                                              haproxy, tokstream, vllm-fleet, vllm-router, wrk
                                              or oha process may run on one of these CPUs
  helpers.py append OUT.jsonl K=V...          append one record
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


def check_ports(ports):
    """Every port must be free on 127.0.0.1: nothing answers on it and it can be bound."""
    busy = []
    for p in ports:
        p = int(p)
        with socket.socket() as c:
            c.settimeout(0.2)
            if c.connect_ex(("127.0.0.1", p)) == 0:
                busy.append(f"{p} (something answers on it)")
                continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError as e:
                busy.append(f"{p} ({e.strerror})")
    for b in busy:
        print(f"port in use: {b}", file=sys.stderr)
    return 1 if busy else 0


# Servers and load generators a benchmark run starts: one of them still running (from an
# earlier run, or anyone's) on a measured CPU would put its CPU into the figures.
STRAY_NAMES = {"switchyard", "nginx", "haproxy", "tokstream", "vllm-fleet", "vllm-router",
               "wrk", "oha"}


def parse_cpu_list(text):
    cpus = set()
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus.update(range(int(a), int(b) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def strays(cpus):
    cpus = {int(c) for c in cpus}
    me = os.getpid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm not in STRAY_NAMES:
                continue
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
            if "\nState:\tZ" in status:
                continue  # exited, not yet reaped: it runs nowhere
            allowed = next((l.split(":", 1)[1] for l in status.splitlines()
                            if l.startswith("Cpus_allowed_list:")), "")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        on = parse_cpu_list(allowed) & cpus
        if on:
            earlier = " (from an earlier bench run)" if ("/bench/out" in cmd or "/bench/routing/" in cmd) else ""
            found.append(f"stray {comm} pid {pid} may run on CPU {','.join(map(str, sorted(on)))}"
                         f"{earlier}: {cmd[:160]}")
    for f in found:
        print(f, file=sys.stderr)
    return 1 if found else 0


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
    # Error answers: socket errors, non-2xx answers, and 2xx answers carrying an error in the
    # body (wrk.lua's response()). wrk's own err_status (>= 400 only) is inside non2xx.
    if "non2xx" not in rec:  # an older wrk.lua without response()
        rec["non2xx"], rec["body_errors"] = rec.get("err_status", 0), 0
    rec["socket_errors"] = sum(rec.get(k, 0) for k in ("err_connect", "err_read", "err_write",
                                                        "err_timeout"))
    rec["errors"] = rec["socket_errors"] + rec["non2xx"] + rec["body_errors"]
    rec.update(kv_fields(extra))
    append(out, rec)
    print(f"{rec['requests'] / (rec['duration_us'] / 1e6):10.0f} req/s  "
          f"errors={rec['errors']} (non-2xx {rec['non2xx']}, error bodies {rec['body_errors']}, "
          f"socket {rec['socket_errors']})  wrk p50={rec['lat_p50_us']}us p99={rec['lat_p99_us']}us")


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
        rest = resp.read()
        if resp.status != 200 or not first:
            raise SystemExit(f"ttfb: {url} answered {resp.status}")
        if b'"error":' in first + rest or b"event: error" in first + rest:
            raise SystemExit(f"ttfb: {url} streamed an error: {(first + rest)[:300]!r}")
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

REF = "nginx-proxy"  # the yardstick the CPU targets are ratios to
TARGET_COLUMNS = ("direct", "nginx-proxy", "haproxy", "gateway")

# (case, label, check, expects_errors). The targets are ratios measured in the same run:
#   ("ref", REF_CASE, LIMIT)   gateway CPU per request <= LIMIT x nginx-proxy's on REF_CASE
#                              ("chat": its plain path; when chat is not run, the same plain
#                              POST measured within ai-chat)
#   ("case", CASE, LIMIT)      gateway CPU per request <= LIMIT x the gateway's on CASE
#   ("tel",)                   telemetry overhead over the same case without "+tel"
#   ("info", REF_CASE)         no target; the ratio to nginx-proxy's REF_CASE is shown
# expects_errors: a case that is meant to see error answers (none today); every other case
# fails on any.
CASES = (
    ("chat", "chat (plain proxy)", ("ref", "chat", 1.3), False),
    ("chat+tel", "chat + access log + tracing", ("tel",), False),
    ("stream", "stream (plain proxy, static SSE)", ("ref", "stream", 1.3), False),
    ("ai-chat", "ai completions", ("ref", "chat", 1.6), False),
    ("ai-chat+tel", "ai completions + access log + tracing", ("tel",), False),
    ("ai-stream", "ai completions stream", ("ref", "ai-stream", 1.5), False),
    ("o2a", "ai OpenAI->Anthropic", ("info", "chat"), False),
    ("o2a-stream", "ai OpenAI->Anthropic stream", ("case", "ai-stream", 2.0), False),
    ("mcp", "MCP tools/call", ("info", "chat"), False),
    # The MCP 2026-07-28 issue's bar: a stateless tools/call through the downgrade shim (pooled
    # upstream session) costs at most 1.5x a legacy-session tools/call.
    ("mcp-modern", "MCP tools/call, 2026-07-28 client", ("case", "mcp", 1.5), False),
    # The A2A issue's bar: a message/send costs no more than an MCP tools/call.
    ("a2a", "A2A message/send", ("case", "mcp", 1.0), False),
    ("stream-tokens", "token stream (one event per chunk)", ("ref", "stream-tokens", 1.5), False),
)
TARGET_TELEMETRY_OVERHEAD = 0.10  # gateway CPU with logging and tracing on, over off
TARGET_ADDED_P50_US = 100
TARGET_ADDED_P99_US = 300
TARGET_ADDED_OVER_REF_US = 50  # added latency no worse than nginx-proxy's added + this
TARGET_RSS_IDLE_MIB = 10
TARGET_RSS_LOAD_MIB = 20
TARGET_READY_MS = 50


def fmt(v, spec="{:.0f}", unit=""):
    if v is None:
        return "-"
    return spec.format(v) + unit


def summary(path):
    recs = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    meta = next((r for r in recs if r.get("kind") == "meta"), {})
    runs = [r for r in recs if r.get("kind") == "run"]
    gw = next((r for r in recs if r.get("kind") == "gateway"), {})
    ref_fails = [r for r in recs if r.get("kind") == "ref-fail"]
    clk = meta.get("clk_tck", 100)
    report_only = os.environ.get("TARGETS", "fail") == "report"

    def sel(case, target):
        return sorted((r for r in runs if r["case"] == case and r["target"] == target),
                      key=lambda r: r.get("round", 0))

    def med(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def span(vals, spec="{:.0f}"):
        vals = [v for v in vals if v is not None]
        return f"{spec.format(min(vals))}..{spec.format(max(vals))}" if vals else "-"

    def per_round_cpu(rs):
        # CPU-s of the proxy per 10k requests (or chunks), one value per round.
        out = []
        for r in rs:
            units = r["requests"] * r.get("chunks_per_req", 1)
            out.append(r["gw_ticks"] / clk / units * 10000 if units else None)
        return out

    def per_round_up_cpu(rs, key="ng_ticks"):
        out = []
        for r in rs:
            units = r["requests"] * r.get("chunks_per_req", 1)
            out.append(r[key] / clk / units * 10000 if units and key in r else None)
        return out

    def cpu_pooled(rs):
        ticks = sum(r["gw_ticks"] for r in rs)
        reqs = sum(r["requests"] for r in rs)
        return ticks / clk / reqs * 10000 if reqs else None

    def ref_cpu(ref_case, target=REF):
        """Median CPU per request of a reference on a case, with the per-round values."""
        cases = [ref_case] + (["ai-chat"] if ref_case == "chat" else [])
        for c in cases:
            rs = sel(c, target)
            if rs:
                vals = per_round_cpu(rs)
                return med(vals), vals, c
        return None, [], None

    rows = []  # (case, direct, nginx-proxy, haproxy, gateway, ratio, target, result)
    notes, misses, errored = [], [], []

    def row(name, cols=None, ratio="", target="", result=""):
        cols = cols or {}
        rows.append((name, *(cols.get(t, "") for t in TARGET_COLUMNS), ratio, target, result))

    def check(name, value, limit, figure):
        if value is None:
            return "n/a"
        if value <= limit:
            return "ok"
        misses.append(f"{name}: {figure}")
        return "FAIL"

    def error_rows(label, rs_by_target, expects):
        tot = {t: sum(r.get("errors", 0) for r in rs) for t, rs in rs_by_target.items()}
        if not any(tot.values()):
            return
        detail = {t: (f"{n} (non-2xx {sum(r.get('non2xx', 0) for r in rs_by_target[t])}, "
                      f"body {sum(r.get('body_errors', 0) for r in rs_by_target[t])}, "
                      f"socket {sum(r.get('socket_errors', 0) for r in rs_by_target[t])})")
                  if n else "0" for t, n in tot.items()}
        if expects:
            row(f"{label}: error answers", detail, "", "(expected)", "ok")
            return
        row(f"{label}: error answers", detail, "", "none", "FAIL")
        errored.append(f"{label} ({', '.join(f'{t} {n}' for t, n in tot.items() if n)})")

    for case, label, chk, expects in CASES:
        by_t = {t: sel(case, t) for t in TARGET_COLUMNS}
        by_t = {t: rs for t, rs in by_t.items() if rs}
        if not by_t:
            continue
        unit = "chunks" if any(r.get("chunks_per_req") for rs in by_t.values() for r in rs) else "req"
        rps = {t: med(r["rps"] for r in rs) for t, rs in by_t.items()}
        row(f"{label}: RPS @{meta.get('conns', 32)}conn (median)", {t: fmt(v) for t, v in rps.items()})
        row("  min..max over rounds", {t: span(r["rps"] for r in rs) for t, rs in by_t.items()})
        cpu_vals = {t: per_round_cpu(rs) for t, rs in by_t.items() if t != "direct"}
        cpu = {t: med(v) for t, v in cpu_vals.items()}
        g = cpu.get("gateway")
        spec = "{:.4f}" if unit == "chunks" else "{:.3f}"
        cols = {t: fmt(v, spec) for t, v in cpu.items()}
        after = []  # rows that follow the spread row
        cols["direct"] = "-"
        name = f"{label}: proxy CPU-s / 10k {unit} (median)"
        kind = chk[0]
        if kind in ("ref", "info"):
            d, d_rounds, d_case = ref_cpu(chk[1])
            ratio = g / d if g is not None and d else None
            what = f"{REF}'s" + ("" if chk[1] == case else f" {d_case or chk[1]}")
            if kind == "ref":
                limit = chk[2]
                row(name, cols, fmt(ratio, "{:.2f}x"), f"<= {limit:g}x {what}",
                    check(f"{label} CPU", ratio, limit,
                          f"{fmt(ratio, '{:.2f}x')} {what} ({fmt(g, spec)} vs "
                          f"{fmt(d, spec)} CPU-s/10k {unit}; target <= {limit:g}x)"))
            else:
                row(name, cols, fmt(ratio, "{:.2f}x"), f"(vs {what})", "")
            g_rounds = cpu_vals.get("gateway", [])
            if d_case == case and len(g_rounds) > 1:
                after.append((f"  gateway / {REF}, per round", {}, " ".join(
                    f"{a / b:.2f}" for a, b in zip(g_rounds, d_rounds) if a is not None and b)))
        elif kind == "case":
            other = med(per_round_cpu(sel(chk[1], "gateway")))
            ratio = g / other if g is not None and other else None
            limit = chk[2]
            row(name, cols, fmt(ratio, "{:.2f}x"), f"<= {limit:g}x gateway's {chk[1]}",
                check(f"{label} CPU", ratio, limit,
                      f"{fmt(ratio, '{:.2f}x')} the gateway's {chk[1]} ({fmt(g, '{:.3f}')} vs "
                      f"{fmt(other, '{:.3f}')} CPU-s/10k req; target <= {limit:g}x)"))
        elif kind == "tel":
            base = med(per_round_cpu(sel(case.removesuffix("+tel"), "gateway")))
            over = g / base - 1 if g is not None and base else None
            # Sequential rounds of one gateway move by up to 20% on a shared VM; when the case
            # was also priced side by side (both gateways at once, within ~2%), that row is
            # the one held to the budget and this one is shown for reference.
            priced_side_by_side = all(
                any(r.get("base", "chat") == case.removesuffix("+tel") for r in sel(side, "gateway"))
                for side in ("side-plain", "side-tel"))
            row(name, cols, fmt(over * 100 if over is not None else None, "{:+.1f}", "% vs off"),
                f"<= +{TARGET_TELEMETRY_OVERHEAD:.0%}",
                "(judged side by side)" if priced_side_by_side else
                check(f"{label} overhead", over, TARGET_TELEMETRY_OVERHEAD,
                      f"{fmt(over * 100 if over is not None else None, '{:+.1f}')}% CPU"))
        row("  min..max over rounds", {t: span(v, spec) for t, v in cpu_vals.items()})
        for a in after:
            row(*a)
        up = {t: med(per_round_up_cpu(rs)) for t, rs in by_t.items()}
        up_name = "tokstream" if unit == "chunks" else "nginx"
        row(f"{label}: upstream ({up_name}) CPU-s / 10k {unit}", {t: fmt(v, spec) for t, v in up.items()},
            "", "(reference)", "")
        if unit == "chunks":
            # tokstream's own code, without the kernel's loopback TCP work for its writes.
            upu = {t: med(per_round_up_cpu(rs, "ng_user_ticks")) for t, rs in by_t.items()}
            row(f"  of which {up_name} user space", {t: fmt(v, spec) for t, v in upu.items()},
                "", "(reference)", "")
        if any("upstream_conns" in r for rs in by_t.values() for r in rs):
            # Direct: wrk's own connections. Through a proxy: connections it opened upstream;
            # more than a handful means its upstream pool is not reusing connections.
            row(f"{label}: conns upstream accepted / run",
                {t: fmt(med(r.get("upstream_conns") for r in rs)) for t, rs in by_t.items()},
                "", "(diagnostic)", "")
        error_rows(label, by_t, expects)

    # Telemetry priced with both gateways saturated at once (run.sh's run_tel_side_by_side).
    for base in ("chat", "ai-chat"):
        off = [r for r in sel("side-plain", "gateway") if r.get("base", "chat") == base]
        on = [r for r in sel("side-tel", "gateway") if r.get("base", "chat") == base]
        if not (off and on):
            continue
        c_off, c_on = cpu_pooled(off), cpu_pooled(on)
        over = c_on / c_off - 1 if c_off and c_on else None
        row(f"{base} side by side: gateway CPU-s / 10k, telemetry off | on",
            {"direct": fmt(c_off, "{:.3f}"), "gateway": fmt(c_on, "{:.3f}")},
            fmt(over * 100 if over is not None else None, "{:+.1f}", "% vs off"),
            f"<= +{TARGET_TELEMETRY_OVERHEAD:.0%}",
            check(f"{base} telemetry overhead side by side", over, TARGET_TELEMETRY_OVERHEAD,
                  f"{fmt(over * 100 if over is not None else None, '{:+.1f}')}% CPU"))
        # Throughput, the telemetry issue's own measure: requests each gateway served in the
        # same seconds on the same CPU (pooled over rounds).
        n_off, n_on = sum(r["requests"] for r in off), sum(r["requests"] for r in on)
        loss = 1 - n_on / n_off if n_off else None
        row(f"{base} side by side: requests served, telemetry off | on",
            {"direct": fmt(n_off), "gateway": fmt(n_on)},
            fmt(-loss * 100 if loss is not None else None, "{:+.1f}", "% vs off"),
            f">= -{TARGET_TELEMETRY_OVERHEAD:.0%}",
            check(f"{base} telemetry throughput side by side", loss, TARGET_TELEMETRY_OVERHEAD,
                  f"{fmt(-loss * 100 if loss is not None else None, '{:+.1f}')}% requests"))
        row("  per-round CPU overhead", {}, " ".join(
            f"{(b['gw_ticks'] / b['requests']) / (a['gw_ticks'] / a['requests']) - 1:+.0%}"
            for a, b in zip(off, on) if a["requests"] and b["requests"] and a["gw_ticks"]))
        error_rows(f"{base} side by side", {"direct": off, "gateway": on}, False)
    if any(r["case"].startswith("side-") for r in runs):
        notes.append("side by side rows: the 'direct' column is the gateway without telemetry, "
                     "the 'gateway' column the one with it")

    for case, label, _, _ in CASES:
        by_t = {t: sel(f"ttfb-{case}", t) for t in TARGET_COLUMNS}
        by_t = {t: rs for t, rs in by_t.items() if rs}
        if not ("direct" in by_t and "gateway" in by_t):
            continue
        for q in ("p50", "p99"):
            v = {t: med(r[f"{q}_us"] for r in rs) for t, rs in by_t.items()}
            added = v["gateway"] - v["direct"] if None not in (v["gateway"], v["direct"]) else None
            row(f"{label}: time to first byte {q} (median)", {t: fmt(x, unit=" µs") for t, x in v.items()},
                fmt(added, "{:+.0f}", " µs added"), "(reference)", "")

    by_t = {t: sel("latency", t) for t in TARGET_COLUMNS}
    by_t = {t: rs for t, rs in by_t.items() if rs}
    if "direct" in by_t and "gateway" in by_t:
        for q, limit in (("p50", TARGET_ADDED_P50_US), ("p99", TARGET_ADDED_P99_US)):
            v = {t: med(r[f"{q}_us"] for r in rs) for t, rs in by_t.items()}
            added = {t: x - v["direct"] for t, x in v.items()
                     if t != "direct" and x is not None and v["direct"] is not None}
            a = added.get("gateway")
            row(f"latency {q} @{meta.get('rate', 200)}rps (median)", {t: fmt(x, unit=" µs") for t, x in v.items()},
                fmt(a, "{:+.0f}", " µs added"), f"added <= {limit} µs",
                check(f"added latency {q}", a, limit, f"{fmt(a, '{:+.0f}')} µs (target <= {limit} µs)"))
            r_ = added.get(REF)
            lim2 = r_ + TARGET_ADDED_OVER_REF_US if r_ is not None else None
            row(f"  {q} added over direct", {t: fmt(x, "{:+.0f}", " µs") for t, x in added.items()},
                fmt(a - r_ if a is not None and r_ is not None else None, "{:+.0f}", f" µs vs {REF}"),
                f"<= {REF}'s +{TARGET_ADDED_OVER_REF_US} µs",
                check(f"added latency {q} vs {REF}", a, lim2,
                      f"{fmt(a, '{:+.0f}')} µs vs {REF}'s {fmt(r_, '{:+.0f}')} µs "
                      f"(target <= +{TARGET_ADDED_OVER_REF_US} µs over it)")
                if lim2 is not None else "n/a")
        for t, rs in by_t.items():
            for r in rs:  # oha: non-2xx answers and transport errors are in the record
                r.setdefault("non2xx", 0)
                r["socket_errors"] = r.get("errors", 0)
                r["errors"] = r["non2xx"] + r["socket_errors"]
        error_rows("latency", by_t, False)

    mib = lambda kb: kb / 1024 if kb is not None else None
    idle = mib(gw.get("rss_idle_kb"))
    row("gateway RSS idle (VmRSS at ready)", {"gateway": fmt(idle, "{:.1f}", " MiB")}, "",
        f"<= {TARGET_RSS_IDLE_MIB} MiB",
        check("RSS idle", idle, TARGET_RSS_IDLE_MIB, f"{fmt(idle, '{:.1f}')} MiB"))
    load = mib(gw.get("hwm_end_kb"))
    row("gateway RSS peak (VmHWM at end)", {"gateway": fmt(load, "{:.1f}", " MiB")}, "",
        f"<= {TARGET_RSS_LOAD_MIB} MiB",
        check("RSS after load", load, TARGET_RSS_LOAD_MIB, f"{fmt(load, '{:.1f}')} MiB"))
    if len(gw.get("ready_all_ms") or []) > 1:
        notes.append("start-to-ready per spawn: " + ", ".join(f"{v:g} ms" for v in gw["ready_all_ms"]))
    ready = gw.get("ready_ms")
    row("start-to-ready (spawn -> 200, median)", {"gateway": fmt(ready, "{:.1f}", " ms")},
        f"log {gw['log_ready_ms']} ms" if gw.get("log_ready_ms") is not None else "",
        f"<= {TARGET_READY_MS} ms",
        check("start-to-ready", ready, TARGET_READY_MS, f"{fmt(ready, '{:.1f}')} ms"))

    header = ("case", *TARGET_COLUMNS, "ratio", "target", "result")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()

    out = []
    out.append(f"Switchyard bench — {meta.get('date', '?')}  commit {meta.get('commit', '?')}"
               f"{' (dirty tree)' if meta.get('dirty') else ''}")
    out.append(f"{meta.get('rounds', '?')} interleaved rounds (direct, nginx-proxy, haproxy, gateway); "
               f"saturation {meta.get('secs', '?')}s wrk -t1 -c{meta.get('conns', '?')}; latency "
               f"{meta.get('lat_secs', '?')}s oha -q {meta.get('rate', '?')} -c {meta.get('lat_conns', '?')}; "
               f"load generator on CPU {meta.get('load_cpu', '?')}, servers on CPU {meta.get('server_cpu', '?')}")
    if meta.get("tokens") is not None:
        out.append(f"token upstream: {meta['tokens']} tokens per answer ({meta['tokens'] + 3} events), "
                   f"{meta.get('token_gap_us')} µs apart; CPU-s / 10k chunks counts every event")
    out.append("")
    out.append(line(header))
    out.append(line(tuple("-" * w for w in widths)))
    out.extend(line(r) for r in rows)
    out.append("")
    out.append("targets missed: " + ("none" if not misses else f"{len(misses)}"))
    for m in misses:
        out.append(f"FAIL  {m}")
    out.append("cases with error answers: " + ("none" if not errored else f"{len(errored)}"))
    for e in errored:
        out.append(f"FAIL  {e}")
    out.append("references that could not run: " + ("none" if not ref_fails else f"{len(ref_fails)}"))
    for r in ref_fails:
        out.append(f"FAIL  reference {r.get('ref')}: {r.get('why')}")
    for n in notes:
        out.append("note: " + n)
    failed = bool(errored or ref_fails or (misses and not report_only))
    reasons = [f"{len(misses)} target(s) missed" if misses else "",
               f"{len(errored)} case(s) with error answers" if errored else "",
               f"{len(ref_fails)} reference(s) did not run" if ref_fails else ""]
    reasons = ", ".join(x for x in reasons if x)
    if failed:
        out.append(f"result: FAIL ({reasons})")
    elif misses:
        out.append(f"result: targets missed but not failing the run (TARGETS=report): {reasons}")
    else:
        out.append("result: PASS")
    print("\n".join(out))
    return 1 if failed else 0


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
        sys.exit(summary(args[0]))
    elif cmd == "check-ports":
        sys.exit(check_ports(args))
    elif cmd == "strays":
        sys.exit(strays(args))
    elif cmd == "append":
        append(args[0], kv_fields(args[1:]))
    else:
        sys.exit(USAGE)


if __name__ == "__main__":
    main(sys.argv)
