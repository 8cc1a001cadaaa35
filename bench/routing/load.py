#!/usr/bin/env python3
"""Open-loop load generator for the routing-quality benchmark (bench/routing).

Sends streaming chat completions at scheduled (Poisson) arrival times to one URL (the gateway
or vllm-router in front of a simulated vLLM fleet) and writes one JSON result.

Open loop everywhere: every request has a *scheduled* time fixed independently of how fast the
server answers (multi-turn: a conversation's next turn is scheduled at the end of the previous
answer plus a think time), and TTFT and end-to-end latency are timed from that scheduled time,
not from when the request was actually sent. So a load generator that falls behind (event loop
busy, connection set-up, client queueing) shows up in the latencies instead of hiding them;
`generator_*_lag_ms` in the result says how far behind the sends were.

Workloads (all seeded and deterministic; the same seed gives the same prompts and arrivals):
  shared-prefix  GROUPS groups, each with its own long system prompt (800-1500 words, distinct
                 from the first word on); a request picks a group (uniform, or Zipf with
                 --zipf S) and adds a short unique user question.
  realistic      shared-prefix with mixed lengths and skewed popularity: --realistic-groups
                 groups (Zipf --realistic-zipf), system prompts of 100-3000 words and questions
                 of 10-400 words, both log-uniform (many short, a few long).
  multi-turn     conversations of 5-8 turns starting as a Poisson process (rate / mean turns
                 per second, so turns arrive at about --rate); turn 1 is a 400-800 word
                 document plus question, later turns 40-120 words, the history includes the
                 assistant text the server returned, sent with `x-session-id: <conversation>`.
                 The next turn is scheduled at the end of the previous answer + a think time
                 drawn from an exponential distribution (mean --think-mean s). A population of
                 conversations already under way at t=0 (--initial-conversations, default: the
                 steady-state number) avoids a long ramp-up.
  no-sharing     unique prompts of ~900-1100 words with no common prefix.

Only requests *scheduled* in the measured window [warmup, warmup + duration) count; warm-up
requests fill the caches. Arrivals stop at the end of the window, then in-flight requests are
awaited (up to --drain seconds; measured ones still running then count as errors).
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


def draw_len(rng, lo, hi, log=False):
    """An integer in [lo, hi]: uniform, or log-uniform (many short, a few long)."""
    if not log:
        return rng.randint(lo, hi)
    return min(hi, max(lo, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))


class SharedPrefix:
    name = "shared-prefix"

    def __init__(self, seed, groups, zipf, min_words, max_words, q_words=(12, 30), log_lengths=False):
        self.rng = random.Random(seed * 7919 + 1)
        vocab = make_vocab(seed)
        self.vocab = vocab
        self.q_words = q_words
        self.log_lengths = log_lengths
        self.prompts = []
        for g in range(groups):
            r = random.Random(seed * 1_000_003 + g)
            n = draw_len(r, min_words, max_words, log_lengths)
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
        q = f"Question {self.n}: " + sentences(
            self.rng, self.vocab, draw_len(self.rng, *self.q_words, self.log_lengths))
        msgs = [{"role": "system", "content": self.prompts[g]}, {"role": "user", "content": q}]
        return msgs, {}, g, None


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


class MultiTurn:
    """Conversations as independent open-loop users (see the module docstring)."""

    name = "multi-turn"

    def __init__(self, seed, first_min, first_max, turn_min, turn_max, min_turns, max_turns,
                 think_mean):
        self.seed = seed
        self.vocab = make_vocab(seed)
        self.first = (first_min, first_max)
        self.turn = (turn_min, turn_max)
        self.turns = (min_turns, max_turns)
        self.think_mean = think_mean
        self.next_id = 0

    def mean_turns(self):
        return (self.turns[0] + self.turns[1]) / 2

    def new_conversation(self):
        """(id, rng): each conversation's content and think times come from its own seed."""
        self.next_id += 1
        cid = f"conv-{self.next_id:05d}"
        return cid, random.Random(self.seed * 15485863 + self.next_id)

    def turns_of(self, rng):
        return rng.randint(*self.turns)

    def user_text(self, rng, cid, k):
        if k == 0:
            return (f"Conversation {cid}. Please read this document and answer my questions "
                    "about it. " + sentences(rng, self.vocab, rng.randint(*self.first)))
        return f"Turn {k + 1}: " + sentences(rng, self.vocab, rng.randint(*self.turn))

    def think(self, rng):
        return rng.expovariate(1.0 / self.think_mean) if self.think_mean > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# One request


async def one(session, url, model, msgs, headers, max_tokens, timeout, t_sched):
    """One streamed request. `t_sched` is its scheduled arrival (a perf_counter time): TTFT and
    e2e are timed from it, so a late send counts; `lag` is how late the send was."""
    rec = {"ok": False, "status": 0, "ttft": None, "e2e": None, "lag": None, "out_tokens": 0,
           "prompt_tokens": 0, "cached_tokens": 0, "pod": None, "target": None, "error": None}
    body = {"model": model, "messages": msgs, "stream": True, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}}
    text = []
    t0 = t_sched
    rec["lag"] = max(0.0, time.perf_counter() - t_sched)
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
    elif a.workload == "realistic":
        wl = SharedPrefix(a.seed, a.realistic_groups, a.realistic_zipf, a.realistic_prefix_min_words,
                          a.realistic_prefix_max_words,
                          q_words=(a.realistic_question_min_words, a.realistic_question_max_words),
                          log_lengths=True)
    elif a.workload == "multi-turn":
        wl = MultiTurn(a.seed, a.first_min_words, a.first_max_words, a.turn_min_words,
                       a.turn_max_words, a.min_turns, a.max_turns, a.think_mean)
    elif a.workload == "no-sharing":
        wl = NoSharing(a.seed, a.ns_min_words, a.ns_max_words)
    else:
        sys.exit(f"unknown workload {a.workload}")

    url = a.url.rstrip("/") + "/v1/chat/completions"
    arr_rng = random.Random(a.seed * 31 + int(a.rate * 1000))
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    records, tasks = [], []
    lags = []  # measured requests: seconds between scheduled arrival and send
    picks0 = picks1 = None
    t_end = a.warmup + a.duration
    state = {"measuring": False, "cpu0": None, "sent": 0, "inflight": 0, "conversations": 0}
    async with aiohttp.ClientSession(connector=conn) as session:
        start = time.perf_counter()

        def rel():
            return time.perf_counter() - start

        async def at(t):
            """Sleeps until scheduled time t (seconds after start); marks the window's start."""
            d = t - rel()
            if d > 0:
                await asyncio.sleep(d)
            if not state["measuring"] and t >= a.warmup:
                state["measuring"] = True
                state["cpu0"] = cpu_times()

        async def send(msgs, headers, key, t):
            """Sends a request scheduled at t; returns (record, text)."""
            measured = a.warmup <= t < t_end
            state["sent"] += measured
            state["inflight"] += measured
            try:
                rec, text = await one(session, url, a.model, msgs, headers, a.max_tokens,
                                      a.timeout, start + t)
            finally:
                state["inflight"] -= measured
            if measured:
                lags.append(rec["lag"])
                rec["key"] = key
                rec["t"] = round(t, 4)
                records.append(rec)
            return rec, text

        if a.stats_url:
            # Scraped once the window starts (a task, so it does not delay arrivals).
            async def scrape_at_start():
                nonlocal picks0
                await asyncio.sleep(max(0.0, a.warmup - rel()))
                picks0 = await scrape_picks(session, a.stats_url)
            tasks.append(asyncio.create_task(scrape_at_start()))

        if isinstance(wl, MultiTurn):
            async def conversation(t, skip_think=False):
                cid, rng = wl.new_conversation()
                state["conversations"] += 1
                turns = wl.turns_of(rng)
                history = []
                if skip_think:
                    # Already under way at t=0: somewhere in its life (its remaining turns
                    # uniform, so this cohort dies out as the arriving one builds up), next
                    # turn after a think time. Its earlier history is not known: it starts
                    # with a document, like a new one.
                    turns = rng.randint(1, turns)
                    t += wl.think(rng)
                for k in range(turns):
                    if t >= t_end:
                        return
                    await at(t)
                    msgs = history + [{"role": "user", "content": wl.user_text(rng, cid, k)}]
                    rec, text = await send(msgs, {"x-session-id": cid}, cid, t)
                    if not rec["ok"]:
                        return  # a failed turn ends the conversation
                    history = msgs + [{"role": "assistant", "content": text}]
                    t = rel() + wl.think(rng)  # next turn: end of this answer + think time

            conv_rate = a.rate / wl.mean_turns()
            initial = a.initial_conversations
            if initial < 0:  # steady state: start rate x lifetime (turns x (think + ~0.5 s))
                initial = round(conv_rate * wl.mean_turns() * (a.think_mean + 0.5))
            for _ in range(initial):
                tasks.append(asyncio.create_task(conversation(0.0, skip_think=True)))
            next_t = 0.0
            while True:
                next_t += arr_rng.expovariate(conv_rate)
                if next_t >= t_end:
                    break
                await at(next_t)
                tasks.append(asyncio.create_task(conversation(next_t)))
            await asyncio.sleep(max(0.0, t_end - rel()))
        else:
            next_t = 0.0
            while True:
                next_t += arr_rng.expovariate(a.rate)
                if next_t >= t_end:
                    break
                await at(next_t)
                msgs, headers, key, _ = await wl.next()
                tasks.append(asyncio.create_task(send(msgs, headers, key, next_t)))
        send_end = rel()
        cpu0, cpu1 = state["cpu0"], cpu_times()
        pending = [t for t in tasks if not t.done()]
        n_cancel = 0
        if pending:
            done, still = await asyncio.wait(pending, timeout=a.drain)
            n_cancel = state["inflight"]  # measured requests still running: errors
            for t in still:
                t.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        if a.stats_url:
            picks1 = await scrape_picks(session, a.stats_url)
        wall = rel()
    sent_measured = state["sent"]

    ok = [r for r in records if r["ok"]]
    errs = [r for r in records if not r["ok"]]
    ttft = [r["ttft"] * 1000 for r in ok]
    ttft_send = [(r["ttft"] - r["lag"]) * 1000 for r in ok]
    lag_ms = [x * 1000 for x in lags]
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
        # For comparison only: TTFT timed from the actual send (the old, flattering clock).
        "ttft_from_send_ms": {"p50": r2(pct(ttft_send, 50)), "p90": r2(pct(ttft_send, 90)),
                              "p99": r2(pct(ttft_send, 99))},
        "timed_from": "scheduled arrival",
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
        "generator_max_lag_ms": r2(max(lag_ms)) if lag_ms else None,
        "generator_p99_lag_ms": r2(pct(lag_ms, 99)),
        "generator_p50_lag_ms": r2(pct(lag_ms, 50)),
        "cpu_busy": cpu_busy,
        "send_window_s": r2(send_end - a.warmup),
        "wall_s": r2(wall),
        "conversations": state["conversations"] if isinstance(wl, MultiTurn) else None,
        "think_mean_s": a.think_mean if isinstance(wl, MultiTurn) else None,
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
    p.add_argument("--workload", required=True,
                   choices=["shared-prefix", "realistic", "multi-turn", "no-sharing"])
    p.add_argument("--rate", type=float, required=True,
                   help="mean arrivals per second (Poisson; multi-turn: turns per second, about)")
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
    p.add_argument("--realistic-groups", type=int, default=128)
    p.add_argument("--realistic-zipf", type=float, default=1.0)
    p.add_argument("--realistic-prefix-min-words", type=int, default=100)
    p.add_argument("--realistic-prefix-max-words", type=int, default=3000)
    p.add_argument("--realistic-question-min-words", type=int, default=10)
    p.add_argument("--realistic-question-max-words", type=int, default=400)
    p.add_argument("--think-mean", type=float, default=1.0,
                   help="multi-turn: mean think time between an answer and the next turn, s (exponential)")
    p.add_argument("--initial-conversations", type=int, default=-1,
                   help="multi-turn: conversations under way at t=0 (-1: the steady-state number)")
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
