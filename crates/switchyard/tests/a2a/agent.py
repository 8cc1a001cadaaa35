"""An echo agent on the official `a2a-sdk` server, for the gateway's A2A tests.

Serves v1.0 and (compat) v0.3 on both HTTP bindings: JSON-RPC at /jsonrpc, HTTP+JSON under
/rest (v0.3's under /rest/v1). Its card also lists a gRPC interface it does not serve (the
gateway must drop it), and is signed (HS256, `CARD_KEY`), so the gateway's rewrite
must remove the stale signature.

What it does with the text of a message:
- "slow N": a task; N artifact chunks 0.4 s apart, then completed (streams visibly);
- "wait": a task that works until canceled;
- "count": completed with the artifact "count: N", N the messages this agent process has
  seen in the message's context (so a test sees which agent holds a conversation);
- anything else: a task completed at once with the artifact "echo: <text>".

Usage: agent.py PORT [--v1-only]
  --v1-only: serves v1.0 alone (no v0.3 compat routes, no v0.3 interfaces in its card), for
             the gateway's version translation.
"""

import asyncio
import sys

import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events.event_queue_v2 import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
import httpx

from a2a.server.tasks import (
    BasePushNotificationSender,
    InMemoryPushNotificationConfigStore,
    InMemoryTaskStore,
    TaskUpdater,
)
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Task,
    TaskState,
    TaskStatus,
)
from a2a.utils.signing import create_agent_card_signer

CARD_KEY = "test-card-key-for-the-gateway-tests-0123456789"


CONTEXT_COUNTS: dict[str, int] = {}


class EchoExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input().strip()
        if text == "count":
            CONTEXT_COUNTS[context.context_id] = CONTEXT_COUNTS.get(context.context_id, 0) + 1
        task = context.current_task
        if task is None:
            task = Task(
                id=context.task_id,
                context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
            )
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        if text.startswith("slow"):
            n = int(text.split()[1]) if len(text.split()) > 1 else 3
            for i in range(n):
                await asyncio.sleep(0.4)
                await updater.add_artifact(
                    [new_text_part(f"chunk {i}")],
                    artifact_id="stream",
                    append=i > 0,
                    last_chunk=i == n - 1,
                )
            await updater.complete()
        elif text == "count":
            n = CONTEXT_COUNTS[context.context_id]
            await updater.add_artifact([new_text_part(f"count: {n}")], name="count")
            await updater.complete()
        elif text == "wait":
            await asyncio.sleep(60)
            await updater.complete()
        else:
            await updater.add_artifact([new_text_part(f"echo: {text}")], name="echo")
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


V1_ONLY = "--v1-only" in sys.argv


def card(port: int) -> AgentCard:
    base = f"http://127.0.0.1:{port}"
    c = AgentCard(
        name="Echo Agent",
        description="Echoes what it is told",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/jsonrpc", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
            AgentInterface(url="127.0.0.1:1", protocol_binding="GRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/jsonrpc", protocol_binding="JSONRPC", protocol_version="0.3"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="0.3"),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True, extended_agent_card=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="Echoes text", tags=["echo"])],
    )
    if V1_ONLY:
        keep = [i for i in c.supported_interfaces if i.protocol_version == "1.0"]
        del c.supported_interfaces[:]
        c.supported_interfaces.extend(keep)
    return c


def main() -> None:
    port = int(sys.argv[1])
    signer = create_agent_card_signer(CARD_KEY, {"alg": "HS256", "kid": "test", "typ": "JOSE"})
    public = signer(card(port))
    extended = card(port)
    extended.skills.append(AgentSkill(id="secret", name="Secret", description="Only for callers who authenticated", tags=["x"]))
    push_store = InMemoryPushNotificationConfigStore()
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(),
        task_store=InMemoryTaskStore(),
        push_config_store=push_store,
        push_sender=BasePushNotificationSender(httpx.AsyncClient(timeout=10), push_store),
        agent_card=public,
        extended_agent_card=extended,
    )
    routes = []
    routes += create_agent_card_routes(public)
    routes += create_jsonrpc_routes(handler, rpc_url="/jsonrpc", enable_v0_3_compat=not V1_ONLY)
    routes += create_rest_routes(handler, enable_v0_3_compat=not V1_ONLY, path_prefix="/rest")
    app = Starlette(routes=routes)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
