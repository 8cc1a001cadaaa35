"""Drives the echo agent through the gateway with the official `a2a-sdk` client, once per
binding and protocol version the SDK speaks (JSON-RPC and HTTP+JSON, v1.0 and v0.3), and
checks what a client sees. Prints one JSON line per check; exits non-zero on the first
failure (the assertion says what).

Usage: client.py GATEWAY_BASE AGENT_ORIGIN
  GATEWAY_BASE: the agent's URL through the gateway, e.g. http://127.0.0.1:8080/agents/echo
  AGENT_ORIGIN: the agent's own origin, which must appear nowhere in what the client sees
"""

import asyncio
import json
import sys
import time

import httpx

from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_artifact_text, new_text_message
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetExtendedAgentCardRequest,
    GetTaskRequest,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)

GATEWAY, AGENT = sys.argv[1], sys.argv[2]
COMBOS = [("JSONRPC", "1.0"), ("HTTP+JSON", "1.0"), ("JSONRPC", "0.3"), ("HTTP+JSON", "0.3")]
TERMINAL = {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_CANCELED}


def report(check: str, **fields) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def only(card: AgentCard, binding: str, version: str) -> AgentCard:
    """The card with just one interface, so the SDK speaks that binding and version."""
    out = AgentCard()
    out.CopyFrom(card)
    del out.supported_interfaces[:]
    for i in card.supported_interfaces:
        if i.protocol_binding == binding and i.protocol_version == version:
            out.supported_interfaces.append(i)
    assert len(out.supported_interfaces) == 1, f"no {binding} {version} interface in {card}"
    return out


def client(card: AgentCard, binding: str, streaming: bool):
    config = ClientConfig(streaming=streaming, supported_protocol_bindings=[binding])
    return ClientFactory(config).create(card)


def send(text: str, immediately: bool = False) -> SendMessageRequest:
    return SendMessageRequest(
        message=new_text_message(text, role=Role.ROLE_USER),
        configuration=SendMessageConfiguration(return_immediately=immediately),
    )


def state_of(event):
    if event.HasField("task"):
        return event.task.status.state
    if event.HasField("status_update"):
        return event.status_update.status.state
    return None


def task_id_of(event) -> str:
    if event.HasField("task"):
        return event.task.id
    if event.HasField("status_update"):
        return event.status_update.task_id
    if event.HasField("artifact_update"):
        return event.artifact_update.task_id
    return ""


async def check_card(http: httpx.AsyncClient) -> AgentCard:
    raw = (await http.get(f"{GATEWAY}/.well-known/agent-card.json")).json()
    urls = [i["url"] for i in raw["supportedInterfaces"]]
    assert all(u.startswith(GATEWAY) for u in urls), urls
    assert [i["protocolBinding"] for i in raw["supportedInterfaces"]].count("GRPC") == 0, raw
    assert raw["url"].startswith(GATEWAY), raw["url"]
    assert all(i["url"].startswith(GATEWAY) for i in raw.get("additionalInterfaces", [])), raw
    assert "signatures" not in raw, "a rewritten card must not carry the agent's signature"
    assert AGENT not in json.dumps(raw), raw
    direct = (await http.get(f"{AGENT}/.well-known/agent-card.json")).json()
    assert direct.get("signatures"), "the agent signs its card"
    report("card", interfaces=urls)
    return await A2ACardResolver(http, GATEWAY).get_agent_card()


async def check_combo(card: AgentCard, binding: str, version: str) -> None:
    c = only(card, binding, version)
    tag = f"{binding} {version}"

    # Send: the echo comes back.
    plain = client(c, binding, streaming=False)
    events = [e async for e in plain.send_message(send("hello"))]
    task = events[-1].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, (tag, task)
    assert get_artifact_text(task.artifacts[0]) == "echo: hello", (tag, task)
    report("send", binding=binding, version=version, task=task.id)

    # Stream: the first event arrives while the agent is still working (it takes 1.2 s); a
    # gateway that held the stream would hand it over only at the end.
    streamer = client(c, binding, streaming=True)
    start = time.monotonic()
    first = None
    events = []
    async for e in streamer.send_message(send("slow 3")):
        if first is None:
            first = time.monotonic() - start
        events.append(e)
    total = time.monotonic() - start
    assert first is not None and total >= 1.1 and first < total - 0.6, (tag, first, total)
    assert state_of(events[-1]) == TaskState.TASK_STATE_COMPLETED, (tag, events[-1])
    artifacts = sum(1 for e in events if e.HasField("artifact_update"))
    assert artifacts == 3, (tag, events)
    task_id = task_id_of(events[0])
    report("stream", binding=binding, version=version, task=task_id, first_event_s=round(first, 3), total_s=round(total, 3), events=len(events))

    # Get: the streamed task, completed, with its artifact.
    got = await plain.get_task(GetTaskRequest(id=task_id))
    assert got.status.state == TaskState.TASK_STATE_COMPLETED, (tag, got)
    assert "chunk 2" in get_artifact_text(got.artifacts[0]), (tag, got)
    report("get", binding=binding, version=version, task=task_id)

    # Cancel: a task that would work for a minute.
    started = [e async for e in plain.send_message(send("wait", immediately=True))]
    waiting = started[-1].task
    assert waiting.status.state not in TERMINAL, (tag, waiting)
    canceled = await plain.cancel_task(CancelTaskRequest(id=waiting.id))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED, (tag, canceled)
    report("cancel", binding=binding, version=version, task=waiting.id)

    # Resubscribe: a running task's remaining events, streamed through the gateway.
    started = [e async for e in plain.send_message(send("slow 2", immediately=True))]
    running = started[-1].task
    seen = [e async for e in streamer.subscribe(SubscribeToTaskRequest(id=running.id))]
    assert seen and state_of(seen[-1]) == TaskState.TASK_STATE_COMPLETED, (tag, seen)
    report("resubscribe", binding=binding, version=version, task=running.id, events=len(seen))
    await plain.close()
    await streamer.close()


async def check_extended_card(card: AgentCard) -> None:
    for binding in ("JSONRPC", "HTTP+JSON"):
        c = client(only(card, binding, "1.0"), binding, streaming=False)
        ext = await c.get_extended_agent_card(GetExtendedAgentCardRequest())
        assert [s.id for s in ext.skills] == ["echo", "secret"], ext
        urls = [i.url for i in ext.supported_interfaces]
        assert urls and all(u.startswith(GATEWAY) for u in urls), (binding, urls)
        report("extended_card", binding=binding, interfaces=urls)
        await c.close()


async def main() -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        card = await check_card(http)
    # The four clients run at once: the agent and the gateway serve them concurrently.
    await asyncio.gather(*(check_combo(card, b, v) for b, v in COMBOS))
    await check_extended_card(card)
    report("done")


asyncio.run(main())
