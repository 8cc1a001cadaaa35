"""MCP client scenarios run by crates/switchyard/tests/mcp.rs against the gateway, with the
official `mcp` Python SDK (streamable HTTP transport).

usage: client.py federation|resume|legacy|callbacks|callbacks_stress|upgrade URL
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


async def upgrade(url):
    """A legacy session (the SDK at 2025-11-25) through the gateway to a target of the 2026-07-28
    revision only: plain calls, and the target's multi-round-trip questions asked of this client
    as sampling / elicitation / roots requests on its session."""
    from mcp import types

    seen = {"elicit": [], "sampling": []}

    async def sampling(ctx, params):
        prompt = params.messages[0].content.text
        seen["sampling"].append(prompt)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"re: {prompt}"), model="sim"
        )

    async def elicit(ctx, params):
        seen["elicit"].append(params.message)
        answers = {"color?": {"color": "teal"}, "name?": {"name": "Ada"}}
        return types.ElicitResult(action="accept", content=answers[params.message])

    async def roots(ctx):
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/project", name="project")])

    out = {}
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    async with streamablehttp_client(url, headers=trace) as (read, write, session_id):
        async with ClientSession(
            read, write, sampling_callback=sampling, elicitation_callback=elicit, list_roots_callback=roots
        ) as s:
            init = await s.initialize()
            out["version"] = init.protocolVersion
            out["has_session"] = bool(session_id())
            out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
            out["echo"] = text_of(await s.call_tool("modern_echo", {"text": "héllo"}))
            out["legacy_add"] = text_of(await s.call_tool("sim_add", {"a": 2, "b": 5}))
            out["color"] = text_of(await s.call_tool("modern_ask_color", {}))
            out["sample"] = text_of(await s.call_tool("modern_sample", {"prompt": "what is MCP?"}))
            out["roots"] = text_of(await s.call_tool("modern_roots", {}))
            out["two_step"] = text_of(await s.call_tool("modern_two_step", {}))
            out["route"] = text_of(await s.call_tool("modern_route", {"region": "zürich", "note": "n"}))
            progress = []

            async def on_progress(p, total, message):
                progress.append(p)

            r = await s.call_tool("modern_slow_count", {"n": 3}, progress_callback=on_progress)
            out["count"] = text_of(r)
            out["progress"] = progress
            p = await s.get_prompt("modern_haiku", {"topic": "gateways"})
            out["prompt"] = p.messages[0].content.text
            res = await s.list_resources()
            uris = sorted(str(r.uri) for r in res.resources)
            out["resources"] = uris
            modern_uri = next(u for u in uris if "readme" in u and "modern" in u)
            out["read"] = (await s.read_resource(modern_uri)).contents[0].text
    out.update(seen)
    print(json.dumps(out), flush=True)


async def openapi(url):
    """The OpenAPI target `inv` (tests/mcp/openapi_service.py, a FastAPI service) through the
    gateway: its generated operations as tools, called with path, query (an array among them),
    header and body arguments; an error status as an isError result."""
    out = {}
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools if t.name.startswith("inv_")}
            out["tools"] = sorted(tools)
            out["schemas"] = {n: t.inputSchema for n, t in tools.items()}
            out["descriptions"] = {n: t.description for n, t in tools.items()}

            def result(r):
                return {"text": text_of(r), "isError": r.isError, "structured": r.structuredContent}

            out["get"] = result(await s.call_tool("inv_getItem", {"item_id": 1, "fields": "name,price"}))
            out["get_null"] = result(await s.call_tool("inv_getItem", {"item_id": 1, "fields": None}))
            out["search"] = result(
                await s.call_tool(
                    "inv_search_items_items_get",
                    {"tag": ["home", "garden"], "limit": 3, "x-token": "t0k"},
                )
            )
            out["create"] = result(
                await s.call_tool(
                    "inv_createItem", {"body": {"name": "rake", "price": 9.5, "tags": ["garden"]}}
                )
            )
            out["missing"] = result(await s.call_tool("inv_getItem", {"item_id": 99}))
            out["invalid"] = result(await s.call_tool("inv_createItem", {"body": {"name": "x"}}))
            out["delete"] = result(await s.call_tool("inv_deleteItem", {"item_id": 2}))
            out["after_delete"] = result(await s.call_tool("inv_getItem", {"item_id": 2}))
    print(json.dumps(out), flush=True)


async def tasks(url, replica_url):
    """Tasks (2025-11-25) through the gateway, with the SDK's experimental tasks client:
    task-augmented calls to the reference server as a stdio target (`everything`) and as a
    streamable-HTTP target (`remote`), polling, the payload, cancel, list, forged handles; then
    the same session's task read over raw HTTP from a second gateway replica."""
    import httpx
    from mcp import types

    out = {}
    statuses_seen = []
    async with streamablehttp_client(url) as (read, write, session_id):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            caps = init.capabilities.tasks
            out["caps"] = caps.model_dump(mode="json", exclude_none=True) if caps else None
            tools = {t.name: t for t in (await s.list_tools()).tools}
            t = tools["remote_simulate-research-query"]
            out["task_support"] = t.execution.taskSupport if t.execution else None

            created = await s.experimental.call_tool_as_task(
                "remote_simulate-research-query", {"topic": "gateways"}, ttl=120000
            )
            tid = created.task.taskId
            out["tid"] = tid
            out["created_status"] = created.task.status
            out["poll_interval"] = created.task.pollInterval
            polled_ids = set()
            async for st in s.experimental.poll_task(tid):
                statuses_seen.append(st.status)
                polled_ids.add(st.taskId)
            out["statuses"] = statuses_seen
            out["polled_ids"] = sorted(polled_ids)
            result = await s.experimental.get_task_result(tid, types.CallToolResult)
            out["result"] = text_of(result)

            other = await s.experimental.call_tool_as_task(
                "everything_simulate-research-query", {"topic": "cancel me"}
            )
            oid = other.task.taskId
            out["oid"] = oid
            cancelled = await s.experimental.cancel_task(oid)
            out["cancelled"] = {"taskId": cancelled.taskId, "status": cancelled.status}
            out["after_cancel"] = (await s.experimental.get_task(oid)).status

            listed = await s.experimental.list_tasks()
            out["listed"] = {t.taskId: t.status for t in listed.tasks}

            forged = {}
            tampered = tid[:10] + ("A" if tid[10] != "A" else "B") + tid[11:]
            for name, handle in [("raw", "0123456789abcdef"), ("tampered", tampered)]:
                try:
                    await s.experimental.get_task(handle)
                    forged[name] = None
                except McpError as e:
                    forged[name] = {"code": e.error.code, "message": e.error.message}
            out["forged"] = forged

            # A task left running, read from the second replica in this same session.
            third = await s.experimental.call_tool_as_task(
                "remote_simulate-research-query", {"topic": "replicas"}, ttl=120000
            )
            third_id = third.task.taskId
            sid = session_id()
            headers = {
                "mcp-session-id": sid,
                "mcp-protocol-version": init.protocolVersion,
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
            }

            def rpc(client, i, method, params):
                r = client.post(
                    replica_url,
                    headers=headers,
                    json={"jsonrpc": "2.0", "id": i, "method": method, "params": params},
                    timeout=30,
                )
                body = r.text
                if r.headers.get("content-type", "").startswith("text/event-stream"):
                    datas = [l[5:].strip() for l in body.splitlines() if l.startswith("data:")]
                    msgs = [json.loads(d) for d in datas if d]
                    body = json.dumps(next(m for m in msgs if m.get("id") == i))
                return json.loads(body)

            replica = {}
            with httpx.Client() as c:
                first = rpc(c, 901, "tasks/get", {"taskId": third_id})
                replica["first_status"] = first.get("result", {}).get("status")
                replica["first_id"] = first.get("result", {}).get("taskId")
                for i in range(60):
                    st = rpc(c, 902 + i, "tasks/get", {"taskId": third_id})["result"]
                    if st["status"] in ("completed", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.3)
                replica["final_status"] = st["status"]
                payload = rpc(c, 999, "tasks/result", {"taskId": third_id})
                replica["result"] = " ".join(
                    x.get("text", "") for x in payload.get("result", {}).get("content", [])
                )
                listed = rpc(c, 1000, "tasks/list", {})
                replica["listed"] = [t["taskId"] for t in listed["result"]["tasks"]]
            out["replica"] = replica
            out["third_id"] = third_id
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    scenario, url = sys.argv[1], sys.argv[2]
    if scenario == "tasks":
        asyncio.run(tasks(url, sys.argv[3]))
        sys.exit(0)
    scenarios = {
        "federation": federation,
        "resume": resume,
        "legacy": legacy,
        "callbacks": callbacks,
        "callbacks_stress": callbacks_stress,
        "upgrade": upgrade,
        "openapi": openapi,
    }
    asyncio.run(scenarios[scenario](url))
