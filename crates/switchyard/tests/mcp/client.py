"""MCP client scenarios run by crates/switchyard/tests/mcp.rs against the gateway, with the
official `mcp` Python SDK (streamable HTTP transport).

usage: client.py federation|resume|legacy|callbacks|callbacks_stress URL
Prints one JSON line of findings per scenario; exits non-zero on a failed expectation.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def federation(url):
    out = {}
    async with streamablehttp_client(url) as (read, write, session_id):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            out["server"] = init.serverInfo.name
            out["version"] = init.protocolVersion
            out["session"] = session_id()
            tools = await s.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            r = await s.call_tool("everything_echo", {"message": "hi from the sdk"})
            out["stdio_echo"] = text_of(r)
            r = await s.call_tool("sim_add", {"a": 2, "b": 3})
            out["http_add"] = text_of(r)

            progress = []

            async def on_progress(p, total, message):
                progress.append(p)

            r = await s.call_tool("sim_slow_count", {"n": 3}, progress_callback=on_progress)
            out["http_progress"] = list(progress)
            out["http_slow"] = text_of(r)
            progress.clear()
            r = await s.call_tool(
                "everything_trigger-long-running-operation",
                {"duration": 0.3, "steps": 3},
                progress_callback=on_progress,
            )
            out["stdio_progress"] = len(progress)
            try:
                await s.call_tool("everything_get-env", {})
                out["denied"] = None
            except McpError as e:
                out["denied"] = e.error.message
            prompts = await s.list_prompts()
            out["prompts"] = sorted(p.name for p in prompts.prompts)
            p = await s.get_prompt("sim_greeting", {"who": "ops"})
            out["prompt_text"] = p.messages[0].content.text
            res = await s.list_resources()
            out["resources"] = sorted(str(r.uri) for r in res.resources)
            read = await s.read_resource("sim+sim://readme")
            out["resource_text"] = read.contents[0].text
            out["resource_uri"] = str(read.contents[0].uri)
            try:
                await s.call_tool("nosuch_tool", {})
                out["unknown"] = None
            except McpError as e:
                out["unknown"] = e.error.message
    print(json.dumps(out), flush=True)


async def resume(url):
    out = {}
    async with streamablehttp_client(url) as (read, write, session_id):
        async with ClientSession(read, write) as s:
            await s.initialize()
            r = await s.call_tool("everything_echo", {"message": "before"})
            out["before"] = text_of(r)
            print("READY " + session_id(), flush=True)
            # The test restarts the gateway now, then lets us go on in the same session.
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            r = await s.call_tool("everything_echo", {"message": "after"})
            out["after"] = text_of(r)
            r = await s.call_tool("sim_add", {"a": 1, "b": 1})
            out["after_http"] = text_of(r)
            out["session_after"] = session_id()
    print(json.dumps(out), flush=True)


async def callbacks(url):
    """Requests the server sends the client (sampling, elicitation, roots) through the gateway."""
    from mcp import types

    seen = {}

    async def sampling(ctx, params):
        seen["sampling_prompt"] = params.messages[0].content.text
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled!"), model="sim"
        )

    async def elicit(ctx, params):
        seen["elicit_message"] = params.message
        return types.ElicitResult(action="accept", content={"color": "blue", "number": 7, "pets": ["cats"]})

    async def roots(ctx):
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/project", name="project")])

    out = {}
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(
            read, write, sampling_callback=sampling, elicitation_callback=elicit, list_roots_callback=roots
        ) as s:
            await s.initialize()
            names = [t.name for t in (await s.list_tools()).tools]
            out["has_sampling_tool"] = "everything_trigger-sampling-request" in names
            r = await s.call_tool("everything_trigger-sampling-request", {"prompt": "what is MCP?"})
            out["sampling"] = text_of(r)
            r = await s.call_tool("everything_get-roots-list", {})
            out["roots"] = text_of(r)
            r = await s.call_tool("everything_trigger-elicitation-request", {})
            out["elicitation"] = text_of(r)
    out.update(seen)
    print(json.dumps(out), flush=True)


async def legacy(url):
    from mcp.client.sse import sse_client

    out = {}
    async with sse_client(url) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = await s.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            out["old_echo"] = text_of(await s.call_tool("old_echo", {"message": "via sse"}))
            out["stdio_echo"] = text_of(await s.call_tool("everything_echo", {"message": "via stdio"}))
            out["http_add"] = text_of(await s.call_tool("sim_add", {"a": 3, "b": 4}))
    print(json.dumps(out), flush=True)


async def callbacks_stress(url):
    """Many sessions at once, each calling, round after round, the reference server's tools that
    ask the client back (sampling; elicitation plain, with defaults, titled and multi-select
    enums): every call must come back with the answer its session gave, within 10 s."""
    from mcp import types

    sessions, rounds = 6, 5
    answers = {
        "color?": {"color": "blue"},
        "defaults?": {"color": "green", "count": 2},
        "size?": {"size": "m"},
        "tags?": {"tags": ["a", "c"]},
    }
    expected = {
        "ref_sample": "sampled: from session {i}",
        "ref_elicit_plain": "accept: {'color': 'blue'}",
        "ref_elicit_defaults": "accept: {'color': 'green', 'count': 2}",
        "ref_elicit_titled": "accept: {'size': 'm'}",
        "ref_elicit_multi": "accept: {'tags': ['a', 'c']}",
    }

    async def one(i):
        async def sampling(ctx, params):
            text = types.TextContent(type="text", text=f"from session {i}")
            return types.CreateMessageResult(role="assistant", content=text, model="m", stopReason="endTurn")

        async def elicit(ctx, params):
            return types.ElicitResult(action="accept", content=answers[params.message])

        failures = []
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write, sampling_callback=sampling, elicitation_callback=elicit) as s:
                await s.initialize()
                for r in range(rounds):
                    for tool, want in expected.items():
                        args = {"prompt": "hi"} if tool == "ref_sample" else {}
                        try:
                            got = text_of(await asyncio.wait_for(s.call_tool(tool, args), 10))
                        except Exception as e:  # a timeout is the failure this scenario hunts
                            got = f"{type(e).__name__}: {e}"
                        if got != want.replace("{i}", str(i)):
                            failures.append(f"session {i} round {r} {tool}: {got}")
        return failures

    results = await asyncio.gather(*[one(i) for i in range(sessions)])
    failures = [f for r in results for f in r]
    print(json.dumps({"calls": sessions * rounds * len(expected), "failures": failures}), flush=True)


if __name__ == "__main__":
    scenario, url = sys.argv[1], sys.argv[2]
    scenarios = {
        "federation": federation,
        "resume": resume,
        "legacy": legacy,
        "callbacks": callbacks,
        "callbacks_stress": callbacks_stress,
    }
    asyncio.run(scenarios[scenario](url))
