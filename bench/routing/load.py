#!/usr/bin/env python3
"""Open-loop load generator for the routing-quality benchmark (bench/routing).

Sends streaming chat completions at Poisson arrival times to one URL (the gateway or
vllm-router in front of a simulated vLLM fleet) and writes one JSON result.

Workloads (all seeded and deterministic; the same seed gives the same prompts and arrivals):
  shared-prefix  GROUPS groups, each with its own long system prompt (800-1500 words, distinct
                 from the first word on); a request picks a group (uniform, or Zipf with
                 --zipf S) and adds a short unique user question.
  multi-turn     CONVERSATIONS concurrent conversations of 5-8 turns; each request is the next
                 turn of an idle conversation (history = earlier user turns + the assistant text
                 the server returned), sent with `x-session-id: <conversation id>`; a finished
                 conversation is replaced by a new one.
  no-sharing     unique prompts of ~900-1100 words with no common prefix.

Only requests *started* in the measured window [warmup, warmup + duration) count; warm-up
requests fill the caches. Arrivals stop at the end of the window, then in-flight requests are
awaited (up to --drain seconds; the rest count as errors).
"""

import argparse
import asyncio
import json
import math
import random
import re
import sys
import time

import aiohttp

# ---------------------------------------------------------------------------------------------
# Text generation


def make_vocab(seed, n=6000):
    """n distinct lowercase pseudo-words (2-4 syllables)."""
    rng = random.Random(seed)
    cons = "bcdfghjklmnprstvwz"
    vows = "aeiou"
    words, seen = [], set()
    while len(words) < n:
        w = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def sentences(rng, vocab, n_words):
    """n_words words with a period every 8-16 words (each period is one more token)."""
    out, left = [], n_words
    while left > 0:
        k = min(left, rng.randint(8, 16))
        out.append(" ".join(rng.choice(vocab) for _ in range(k)) + ".")
        left -= k
    return " ".join(out)


class SharedPrefix:
    name = "shared-prefix"

    def __init__(self, seed, groups, zipf, min_words, max_words):
        self.rng = random.Random(seed * 7919 + 1)
        vocab = make_vocab(seed)
        self.vocab = vocab
        self.prompts = []
        for g in range(groups):
            r = random.Random(seed * 1_000_003 + g)
            n = r.randint(min_words, max_words)
            # The first word names the tenant, so prefixes differ from the first token on.
            self.prompts.append(f"Tenant{g:03d} operations manual. " + sentences(r, vocab, n))
        if zipf > 0:
            w = [1.0 / (i + 1) ** zipf for i in range(groups)]
        else:
            w = [1.0] * groups
        total = sum(w)
        self.cum = []
        acc = 0.0
        for x in w:
            acc += x / total
            self.cum.append(acc)
        self.n = 0

    def pick_group(self):
        u = self.rng.random()
        for i, c in enumerate(self.cum):
            if u <= c:
                return i
        return len(self.cum) - 1

    async def next(self):
        g = self.pick_group()
        self.n += 1
        q = f"Question {self.n}: " + sentences(self.rng, self.vocab, self.rng.randint(12, 30))
        msgs = [{"role": "system", "content": self.prompts[g]}, {"role": "user", "content": q}]
        return msgs, {}, g, None

    def done(self, ctx, ok, text):
        pass


class NoSharing:
    name = "no-sharing"

    def __init__(self, seed, min_words, max_words):
        self.rng = random.Random(seed * 104729 + 3)
        self.vocab = make_vocab(seed)
        self.words = (min_words, max_words)
        self.n = 0

    async def next(self):
        self.n += 1
        n = self.rng.randint(*self.words)
        text = f"Request{self.n:06d} {self.rng.getrandbits(48):012x}. " + sentences(self.rng, self.vocab, n)
        return [{"role": "user", "content": text}], {}, None, None

    def done(self, ctx, ok, text):
        pass


class MultiTurn:
    name = "multi-turn"

    def __init__(self, seed, conversations, first_min, first_max, turn_min, turn_max,
                 min_turns, max_turns):
        self.rng = random.Random(seed * 15485863 + 5)
        self.vocab = make_vocab(seed)
        self.first = (first_min, first_max)
        self.turn = (turn_min, turn_max)
        self.turns = (min_turns, max_turns)
        self.next_id = 0
        self.slots = [self.new_conv() for _ in range(conversations)]
        self.idle = list(range(conversations))
        self.cond = asyncio.Condition()
        self.waited = 0

    def new_conv(self):
        self.next_id += 1
        return {
            "id": f"conv-{self.next_id:05d}",
            "turns": self.rng.randint(*self.turns),
            "done": 0,
            "messages": [],
        }

    async def next(self):
        async with self.cond:
            if not self.idle:
                self.waited += 1
            while not self.idle:
                await self.cond.wait()
            s = self.idle.pop(self.rng.randrange(len(self.idle)))
        conv = self.slots[s]
        if not conv["messages"]:
            text = (f"Conversation {conv['id']}. Please read this document and answer my "
                    "questions about it. " + sentences(self.rng, self.vocab, self.rng.randint(*self.first)))
        else:
            text = f"Turn {conv['done'] + 1}: " + sentences(self.rng, self.vocab, self.rng.randint(*self.turn))
        msgs = conv["messages"] + [{"role": "user", "content": text}]
        return msgs, {"x-session-id": conv["id"]}, conv["id"], (s, msgs)

    def done(self, ctx, ok, text):
        s, msgs = ctx
        conv = self.slots[s]
        if ok:
            conv["messages"] = msgs + [{"role": "assistant", "content": text}]
            conv["done"] += 1
        if not ok or conv["done"] >= conv["turns"]:
            self.slots[s] = self.new_conv()
        self.idle.append(s)

        async def notify():
            async with self.cond:
                self.cond.notify()

        asyncio.get_running_loop().create_task(notify())


# ---------------------------------------------------------------------------------------------
# One request


async def one(session, url, model, msgs, headers, max_tokens, timeout):
    rec = {"ok": False, "status": 0, "ttft": None, "e2e": None, "out_tokens": 0,
           "prompt_tokens": 0, "cached_tokens": 0, "pod": None, "target": None, "error": None}
    body = {"model": model, "messages": msgs, "stream": True, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}
    text = []
    t0 = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            rec["status"] = resp.status
            rec["pod"] = resp.headers.get("x-sim-pod")
            rec["target"] = resp.headers.get("target-pod")
            if resp.status != 200:
                rec["error"] = f"http {resp.status}: {(await resp.text())[:200]}"
                return rec, ""
            saw_done = False
            stream_error = None
            async for raw in resp.content:
                line = raw.strip()
                if line.startswith(b"event:") and line[6:].strip() == b"error":
                    stream_error = "stream error event"
                    continue
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    saw_done = True
                    break
                ev = json.loads(data)
                if stream_error or (isinstance(ev, dict) and ev.get("error")):
                    # An error inside a 200 stream is an error answer, not a served request.
                    stream_error = f"stream error event: {json.dumps(ev)[:160]}"
                    break
                for ch in ev.get("choices") or []:
                    c = (ch.get("delta") or {}).get("content")
                    if c:
                        if rec["ttft"] is None:
                            rec["ttft"] = time.perf_counter() - t0
                        text.append(c)
                u = ev.get("usage")
                if u:
                    rec["out_tokens"] = u.get("completion_tokens") or 0
                    rec["prompt_tokens"] = u.get("prompt_tokens") or 0
                    rec["cached_tokens"] = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            rec["e2e"] = time.perf_counter() - t0
            if stream_error:
                rec["error"] = stream_error
            elif not saw_done:
                rec["error"] = "stream ended without [DONE]"
            elif rec["ttft"] is None:
                rec["error"] = "no content"
            else:
                rec["ok"] = True
    except asyncio.TimeoutError:
        rec["error"] = "timeout"
    except Exception as e:  # connection reset, bad JSON...
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
    return rec, "".join(text)


# ---------------------------------------------------------------------------------------------
# Stats scraping (gateway only)

PICK_RE = re.compile(r'^switchyard_pool_pick_duration_seconds_(sum|count)\{([^}]*)\}\s+(\S+)', re.M)


async def scrape_picks(session, stats_url):
    """{strategy: [sum_seconds, count]} from the gateway's stats port."""
    out = {}
    try:
        async with session.get(stats_url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
    except Exception as e:
        print(f"load.py: cannot scrape {stats_url}: {e}", file=sys.stderr)
        return None
    for kind, labels, val in PICK_RE.findall(text):
        m = re.search(r'strategy="([^"]*)"', labels)
        strat = m.group(1) if m else "?"
        e = out.setdefault(strat, [0.0, 0.0])
        e[0 if kind == "sum" else 1] += float(val)
    return out


def cpu_times():
    """{cpu: (busy, total)} jiffies from /proc/stat (None where unavailable)."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    parts = line.split()
                    v = [int(x) for x in parts[1:]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    out[parts[0]] = (sum(v) - idle, sum(v))
    except OSError:
        return None
    return out


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------------


async def main(a):
    if a.workload == "shared-prefix":
        wl = SharedPrefix(a.seed, a.groups, a.zipf, a.prefix_min_words, a.prefix_max_words)
    elif a.workload == "multi-turn":
        wl = MultiTurn(a.seed, a.conversations, a.first_min_words, a.first_max_words,
                       a.turn_min_words, a.turn_max_words, a.min_turns, a.max_turns)
    elif a.workload == "no-sharing":
        wl = NoSharing(a.seed, a.ns_min_words, a.ns_max_words)
    else:
        sys.exit(f"unknown workload {a.workload}")

    url = a.url.rstrip("/") + "/v1/chat/completions"
    arr_rng = random.Random(a.seed * 31 + int(a.rate * 1000))
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    records, tasks = [], []
    picks0 = picks1 = None
    async with aiohttp.ClientSession(connector=conn) as session:
        start = time.perf_counter()
        t_end = a.warmup + a.duration
        next_t = 0.0
        lag_max = 0.0
        sent_measured = 0

        async def run(msgs, headers, key, ctx, t_sched, measured):
            rec, text = await one(session, url, a.model, msgs, headers, a.max_tokens, a.timeout)
            wl.done(ctx, rec["ok"], text) if ctx is not None else None
            if measured:
                rec["key"] = key
                rec["t"] = t_sched
                records.append(rec)

        measuring = False
        cpu0 = cpu1 = None
        while True:
            next_t += arr_rng.expovariate(a.rate)
            if next_t >= t_end:
                break
            now = time.perf_counter() - start
            if next_t > now:
                await asyncio.sleep(next_t - now)
            if not measuring and next_t >= a.warmup:
                measuring = True
                cpu0 = cpu_times()
                if a.stats_url:
                    picks0 = await scrape_picks(session, a.stats_url)
            msgs, headers, key, ctx = await wl.next()
            now = time.perf_counter() - start
            if next_t >= a.warmup:
                lag_max = max(lag_max, now - next_t)
            measured = next_t >= a.warmup
            sent_measured += measured
            tasks.append(asyncio.create_task(run(msgs, headers, key, ctx, next_t, measured)))
        send_end = time.perf_counter() - start
        cpu1 = cpu_times()
        pending = [t for t in tasks if not t.done()]
        if pending:
            done, still = await asyncio.wait(pending, timeout=a.drain)
            for t in still:
                t.cancel()
            n_cancel = len(still)
        else:
            n_cancel = 0
        if a.stats_url:
            picks1 = await scrape_picks(session, a.stats_url)
        wall = time.perf_counter() - start

    ok = [r for r in records if r["ok"]]
    errs = [r for r in records if not r["ok"]]
    ttft = [r["ttft"] * 1000 for r in ok]
    e2e = [r["e2e"] * 1000 for r in ok]
    prompt = sum(r["prompt_tokens"] for r in ok)
    cached = sum(r["cached_tokens"] for r in ok)
    pods = {}
    for r in ok:
        p = r["pod"] or r["target"] or "?"
        pods[p] = pods.get(p, 0) + 1
    err_kinds = {}
    for r in errs:
        k = (r["error"] or "?")[:60]
        err_kinds[k] = err_kinds.get(k, 0) + 1
    # How concentrated each key (group / conversation) is: mean share of its requests that
    # went to its most-used pod (1.0 = perfectly sticky; ~1/pods for random).
    by_key = {}
    for r in ok:
        if r.get("key") is None:
            continue
        by_key.setdefault(r["key"], {}).setdefault(r["pod"], 0)
        by_key[r["key"]][r["pod"]] += 1
    stick = None
    if by_key:
        tot = sum(sum(v.values()) for v in by_key.values())
        stick = sum(max(v.values()) for v in by_key.values()) / tot
    pick_us = None
    picks = None
    if picks1 is not None:
        picks = {}
        for s, (sm, ct) in picks1.items():
            s0, c0 = (picks0 or {}).get(s, [0.0, 0.0])
            picks[s] = {"sum_s": sm - s0, "count": ct - c0, "total_sum_s": sm, "total_count": ct}
        tsum = sum(v["sum_s"] for v in picks.values())
        tcnt = sum(v["count"] for v in picks.values())
        if tcnt > 0:
            pick_us = tsum / tcnt * 1e6
    r2 = lambda x: None if x is None else round(x, 2)
    cpu_busy = None
    if cpu0 and cpu1:
        cpu_busy = {c: round((cpu1[c][0] - cpu0[c][0]) / max(1, cpu1[c][1] - cpu0[c][1]), 3)
                    for c in cpu1 if c in cpu0}
    res = {
        "workload": a.workload,
        "router": a.router,
        "strategy": a.strategy,
        "label": a.label or f"{a.router}:{a.strategy}",
        "rate": a.rate,
        "duration": a.duration,
        "warmup": a.warmup,
        "max_tokens": a.max_tokens,
        "seed": a.seed,
        "sent": sent_measured,
        "completed": len(ok),
        "errors": len(errs) + n_cancel,
        "error_kinds": err_kinds,
        "ttft_ms": {"p50": r2(pct(ttft, 50)), "p90": r2(pct(ttft, 90)), "p99": r2(pct(ttft, 99)),
                    "mean": r2(sum(ttft) / len(ttft)) if ttft else None},
        "e2e_ms": {"p50": r2(pct(e2e, 50)), "p90": r2(pct(e2e, 90)), "p99": r2(pct(e2e, 99))},
        "req_per_s": r2(len(ok) / a.duration),
        "out_tok_per_s": r2(sum(r["out_tokens"] for r in ok) / a.duration),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_rate": round(cached / prompt, 4) if prompt else None,
        "mean_prompt_tokens": round(prompt / len(ok), 1) if ok else None,
        "per_pod": dict(sorted(pods.items())),
        "stickiness": round(stick, 3) if stick is not None else None,
        "pick_us": r2(pick_us),
        "picks": picks,
        "generator_max_lag_ms": r2(lag_max * 1000),
        "cpu_busy": cpu_busy,
        "send_window_s": r2(send_end - a.warmup),
        "wall_s": r2(wall),
        "multi_turn_waited": getattr(wl, "waited", None),
    }
    if a.raw:
        with open(a.raw, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    js = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(js + "\n")
    t = res["ttft_ms"]
    print(f"  {res['label']:<34} rate={a.rate:<5g} ttft p50/p90/p99={t['p50']}/{t['p90']}/{t['p99']} ms "
          f"req/s={res['req_per_s']} hit={res['hit_rate']} err={res['errors']} "
          f"pods={list(pods.values())} pick_us={res['pick_us']} cpu={cpu_busy} lag_ms={res['generator_max_lag_ms']}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--workload", required=True, choices=["shared-prefix", "multi-turn", "no-sharing"])
    p.add_argument("--rate", type=float, required=True, help="mean arrivals per second (Poisson)")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--drain", type=float, default=30, help="seconds to wait for in-flight requests")
    p.add_argument("--timeout", type=float, default=60, help="per-request timeout, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", default="sim-llama")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent for group popularity (0 = uniform)")
    p.add_argument("--prefix-min-words", type=int, default=800)
    p.add_argument("--prefix-max-words", type=int, default=1500)
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--first-min-words", type=int, default=400)
    p.add_argument("--first-max-words", type=int, default=800)
    p.add_argument("--turn-min-words", type=int, default=40)
    p.add_argument("--turn-max-words", type=int, default=120)
    p.add_argument("--min-turns", type=int, default=5)
    p.add_argument("--max-turns", type=int, default=8)
    p.add_argument("--ns-min-words", type=int, default=900)
    p.add_argument("--ns-max-words", type=int, default=1100)
    p.add_argument("--router", default="?", help="label: gateway or vllm-router")
    p.add_argument("--strategy", default="?", help="label: strategy or policy")
    p.add_argument("--label", default=None)
    p.add_argument("--stats-url", default=None, help="gateway stats /metrics URL to scrape pick times from")
    p.add_argument("--out", default=None, help="write the JSON result here")
    p.add_argument("--raw", default=None, help="write per-request records (JSONL) here")
    asyncio.run(main(p.parse_args()))
