"""Connection and stream scale for bench/scale.sh: holds many client connections open against
one proxy and reports what they cost it.

  scale.py idle   ADDR PID N          N keep-alive connections, one request each, then held idle
  scale.py stream ADDR PID N EVENTS   N concurrent streams of EVENTS SSE events each

Prints one JSON line. Memory is the proxy's VmRSS (its own process, /proc/PID/status); CPU is
its utime+stime over the phase. Every answer is checked (status 200, a complete chunked body):
an error, a short stream or a refused connection makes the phase fail (exit 1).
"""

import asyncio
import json
import os
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def request(reader, writer, path, host):
    """One GET; returns the number of SSE events in its (chunked) body."""
    writer.write(f"GET {path} HTTP/1.1\r\nhost: {host}\r\naccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"status {status}")
    if b"transfer-encoding: chunked" not in head.lower():
        raise RuntimeError("not chunked")
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip().split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            break
        body += chunk[:-2]
    if not body.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError("stream did not end with [DONE]")
    return body.count(b"\n\n")


async def idle(addr, pid, n):
    host, port = addr.rsplit(":", 1)
    before, fds0 = rss_kb(pid), fds(pid)
    conns = []
    sem = asyncio.Semaphore(200)

    async def open_one(i):
        async with sem:
            r, w = await asyncio.open_connection(host, int(port))
            try:
                await request(r, w, "/idle", addr)
            except Exception as e:
                raise RuntimeError(f"connection {i} (after {len(conns)} held): {type(e).__name__}: {e}") from e
            conns.append((r, w))

    t = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    opened_s = time.monotonic() - t
    # Long enough for the allocator to hand back what the requests themselves used.
    await asyncio.sleep(3.0)
    held = rss_kb(pid)
    held_fds = fds(pid)
    # Still alive and usable: a second request on a sample of them.
    for r, w in conns[:: max(1, n // 50)]:
        await request(r, w, "/idle", addr)
    for _, w in conns:
        w.close()
    await asyncio.sleep(2.0)
    after, fds1 = rss_kb(pid), fds(pid)
    return {
        "phase": "idle", "conns": n, "open_s": round(opened_s, 2),
        "rss_before_kb": before, "rss_held_kb": held, "rss_after_kb": after,
        "kb_per_conn": round((held - before) / n, 2),
        "fds_before": fds0, "fds_held": held_fds, "fds_after": fds1,
    }


async def stream(addr, pid, n, events):
    host, port = addr.rsplit(":", 1)
    before, fds0, cpu0 = rss_kb(pid), fds(pid), cpu_s(pid)
    peak = before
    done = 0
    got = []

    async def one():
        nonlocal done
        r, w = await asyncio.open_connection(host, int(port))
        got.append(await request(r, w, "/stream", addr))
        w.close()
        done += 1

    async def sample():
        nonlocal peak
        while done < n:
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.1)

    t = time.monotonic()
    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(one() for _ in range(n)))
    wall = time.monotonic() - t
    await sampler
    cpu = cpu_s(pid) - cpu0
    short = [g for g in got if g < events]
    if short:
        raise RuntimeError(f"{len(short)} streams were short: {short[:5]}")
    await asyncio.sleep(3.0)
    after, fds1 = rss_kb(pid), fds(pid)
    chunks = n * events
    return {
        "phase": "stream", "streams": n, "events": events, "wall_s": round(wall, 2),
        "rss_before_kb": before, "rss_peak_kb": peak, "rss_after_kb": after,
        "kb_per_stream": round((peak - before) / n, 2),
        "cpu_s": round(cpu, 3), "us_per_chunk": round(cpu / chunks * 1e6, 3),
        "fds_before": fds0, "fds_after": fds1,
    }


def main():
    phase, addr, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    try:
        if phase == "idle":
            out = asyncio.run(idle(addr, pid, n))
        else:
            out = asyncio.run(stream(addr, pid, n, int(sys.argv[5])))
    except Exception as e:  # noqa: BLE001 - any failure fails the phase, with its reason
        print(json.dumps({"phase": phase, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
