// Drives the echo agent through the gateway with the official `@a2a-js/sdk` client, once per
// HTTP binding (JSON-RPC, HTTP+JSON) and protocol version (1.0, and 0.3 through the SDK's
// compat transports), from the card the gateway serves: send, stream (the first event must
// arrive well before the last), get, cancel. Prints one JSON line per check; exits non-zero
// on the first failure.
//
// Usage: node client.mjs GATEWAY_BASE AGENT_ORIGIN [BINDING:VERSION,...]
//   the third argument limits the combinations tried (default: all four)

import { randomUUID } from "node:crypto";
import {
  ClientFactory,
  ClientFactoryOptions,
  JsonRpcTransportFactory,
  RestTransportFactory,
} from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";

const [gateway, agent, only] = process.argv.slice(2);
const COMBOS = (only ?? "JSONRPC:1.0,HTTP+JSON:1.0,JSONRPC:0.3,HTTP+JSON:0.3")
  .split(",")
  .map((c) => c.split(":"));

function report(check, fields = {}) {
  console.log(JSON.stringify({ check, ...fields }));
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

function assert(cond, message) {
  if (!cond) fail(`assertion failed: ${message}`);
}

function message(text) {
  return {
    message: {
      messageId: randomUUID(),
      role: Role.ROLE_USER,
      parts: [{ content: { $case: "text", value: text } }],
    },
  };
}

function textOf(task) {
  return (task.artifacts ?? [])
    .flatMap((a) => a.parts ?? [])
    .map((p) => (p.content?.$case === "text" ? p.content.value : ""))
    .join("");
}

function taskOf(result) {
  // sendMessage answers a Task or a Message (both as plain objects).
  if (result && "status" in result && "id" in result) return result;
  if (result?.payload?.$case === "task") return result.payload.value;
  return null;
}

const cardText = await (await fetch(`${gateway}/.well-known/agent-card.json`)).text();
assert(!cardText.includes(agent), `the card names the agent's own origin: ${cardText}`);
const card = JSON.parse(cardText);

for (const [binding, version] of COMBOS) {
  // The card with just this interface, so the SDK speaks this binding and version.
  const only = structuredClone(card);
  only.supportedInterfaces = card.supportedInterfaces.filter(
    (i) => i.protocolBinding === binding && i.protocolVersion === version,
  );
  assert(only.supportedInterfaces.length === 1, `no ${binding} ${version} interface`);
  assert(only.supportedInterfaces[0].url.startsWith(gateway), "the interface is the gateway's");
  // The SDK speaks v0.3 to a v0.3 interface when its compat layer is on.
  const compat = { legacyCompat: { enabled: true } };
  const factory = new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [new JsonRpcTransportFactory(compat), new RestTransportFactory(compat)],
      preferredTransports: [binding],
    }),
  );
  const client = await factory.createFromAgentCard(only);
  const combo = { binding, version };

  // Send: the task comes back completed with the echo.
  const sent = taskOf(await client.sendMessage(message("hello from js")));
  assert(sent, `${binding} ${version}: send answered no task`);
  assert(sent.status.state === TaskState.TASK_STATE_COMPLETED, `state ${sent.status.state}`);
  assert(textOf(sent) === "echo: hello from js", `artifact ${textOf(sent)}`);
  report("send", combo);

  // Stream: events arrive as the agent makes them, not all at the end.
  const started = Date.now();
  const times = [];
  let last = null;
  let streamTask = "";
  for await (const event of client.sendMessageStream(message("slow 3"))) {
    times.push(Date.now() - started);
    const p = event.payload ?? event;
    const v = p.value ?? p;
    streamTask ||= v.taskId || v.id || "";
    if (p.$case === "statusUpdate" || p.$case === "task") last = v.status?.state;
  }
  assert(times.length >= 5, `${binding} ${version}: ${times.length} events`);
  assert(
    times[times.length - 1] - times[0] >= 800,
    `${binding} ${version}: events arrived together (${times})`,
  );
  assert(last === TaskState.TASK_STATE_COMPLETED, `final state ${last}`);
  report("stream", { ...combo, first_ms: times[0], last_ms: times[times.length - 1] });

  // Get: the streamed task, by the id the client saw.
  const got = await client.getTask({ id: streamTask });
  assert(got.id === streamTask, `get ${got.id} != ${streamTask}`);
  assert(got.status.state === TaskState.TASK_STATE_COMPLETED, `get state ${got.status.state}`);
  report("get", combo);

  // Cancel a task that would run for a minute.
  const waiting = taskOf(
    await client.sendMessage({ ...message("wait"), configuration: { returnImmediately: true } }),
  );
  assert(waiting, "wait answered no task");
  const canceled = await client.cancelTask({ id: waiting.id });
  assert(canceled.status.state === TaskState.TASK_STATE_CANCELED, `cancel ${canceled.status.state}`);
  report("cancel", combo);
}
report("done");
